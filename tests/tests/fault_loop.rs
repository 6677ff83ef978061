//! A seeded fault loop over the online pipeline while candidates flow: the trainer trains and
//! offers candidates, the publisher uploads them to the local Hub server, the committer commits
//! them to the dev chain, and every round one fault strikes at a random moment:
//! `kill -9` of the trainer, the publisher or the committer (restarted at once), the Hub failing
//! commits with 500s or dropping an upload mid-body, or the chain dropping every connection.
//!
//! After each round: no checkpoint the trainer lists is corrupt (each model directory has its
//! config and a safetensors file whose header parses; a candidate's checkpoint may be pruned once
//! a newer one exists, the publisher stages its own copy), no candidate has two jobs, no job was
//! committed twice, and neither the HF token nor the hotkey's secret is in any log. At the end
//! (training paused, faults off): every candidate is one job, every job is committed exactly once
//! (one extrinsic each), and none is stuck. The counts are printed.
//!
//! Faults are paced by progress: each round first waits until the pipeline has moved since the
//! last fault (a new candidate, a new job or a new commitment; at most `MINERTEST_FAULT_WAIT_S`,
//! default 60 s), then strikes at a random moment up to 1.5 s later. Unpaced, faults outran the
//! pipeline on a busy machine (100 faults, 1 candidate), so exactly-once was proven on one
//! candidate; paced, every round lands between hand-offs of a different candidate. The run
//! asserts at least one candidate per three rounds (the goal of issue 17), less the rounds
//! whose wait timed out (printed, so a slow machine shows as stalls, not as a silent pass).
//!
//! `MINERTEST_FAULT_ROUNDS` (default 30) and `MINERTEST_FAULT_SEED` (default below) choose the run;
//! a failure prints the seed so the same sequence can be replayed. The predictor is left out: it
//! holds no hand-off (its hot swap under load and restarts are covered by `predictor.rs`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use taominer_tests::*;

const DEFAULT_SEED: u64 = 0x7a0_2026_1128;

/// xorshift64*: a small seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    /// Seeds through splitmix64, so that nearby seeds give unrelated sequences (and 0 works).
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether a safetensors file's header parses (the 8-byte length, then that much JSON).
fn safetensors_ok(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    if bytes.len() < 8 {
        return false;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes.len() >= 8 + n && serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + n]).is_ok()
}

fn model_dir_ok(dir: &Path) -> bool {
    dir.join("config.json").is_file() && safetensors_ok(&dir.join("model.safetensors"))
}

fn run_index(d: &Path) -> serde_json::Value {
    std::fs::read(d.join("trainer/run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn jobs(bus: &Bus) -> Vec<serde_json::Value> {
    let out = minerctl(bus, &["jobs", "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// How far the pipeline has got: candidates the trainer offered, jobs the publisher holds, and
/// commitments in the committer's ledger. A daemon being restarted reads as 0 for its part, so
/// progress is measured against the highest value seen, never a drop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    candidates: usize,
    jobs: usize,
    commitments: usize,
}

impl Progress {
    fn read(d: &Path, bus: &Bus) -> Progress {
        Progress {
            candidates: run_index(d)["candidates"].as_array().map_or(0, Vec::len),
            jobs: jobs(bus).len(),
            commitments: json(&minerctl(bus, &["commitments", "--json"]))
                .as_array()
                .map_or(0, Vec::len),
        }
    }

    fn max(self, o: Progress) -> Progress {
        Progress {
            candidates: self.candidates.max(o.candidates),
            jobs: self.jobs.max(o.jobs),
            commitments: self.commitments.max(o.commitments),
        }
    }

    /// Whether any part moved past `since`.
    fn moved_past(self, since: Progress) -> bool {
        self.candidates > since.candidates
            || self.jobs > since.jobs
            || self.commitments > since.commitments
    }
}

/// Waits until the pipeline moves past `since` (or `timeout`); returns the new high-water mark
/// and whether it moved.
fn wait_for_progress(d: &Path, bus: &Bus, since: Progress, timeout: Duration) -> (Progress, bool) {
    let deadline = Instant::now() + timeout;
    let mut seen = since;
    loop {
        seen = seen.max(Progress::read(d, bus));
        if seen.moved_past(since) {
            return (seen, true);
        }
        if Instant::now() >= deadline {
            return (seen, false);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The invariants that hold at any moment; `Err` says which broke.
fn check_invariants(d: &Path, bus: &Bus, secrets: &[&str]) -> Result<(), String> {
    let index = run_index(d);
    for c in index["checkpoints"].as_array().cloned().unwrap_or_default() {
        let name = c["name"].as_str().unwrap_or_default();
        let dir = d.join("trainer/checkpoints").join(name).join("model");
        if !model_dir_ok(&dir) {
            return Err(format!(
                "checkpoint {name} is listed but corrupt or missing"
            ));
        }
    }
    let all = jobs(bus);
    let mut sources = HashSet::new();
    for j in &all {
        if !sources.insert(j["source"].as_str().unwrap_or_default().to_string()) {
            return Err(format!("two jobs for candidate {}", j["source"]));
        }
    }
    let ledger = json(&minerctl(bus, &["commitments", "--json"]));
    let mut ids = HashSet::new();
    for r in ledger.as_array().cloned().unwrap_or_default() {
        if !ids.insert(r["job_id"].as_str().unwrap_or_default().to_string()) {
            return Err(format!("job {} committed twice", r["job_id"]));
        }
    }
    for part in ["trainer", "publisher", "committer"] {
        let log = std::fs::read_to_string(d.join(format!("{part}.log"))).unwrap_or_default();
        for s in secrets {
            if log.contains(s) {
                return Err(format!("a secret is in {part}.log"));
            }
        }
    }
    Ok(())
}

#[test]
fn seeded_faults_while_candidates_flow_lose_nothing_and_double_nothing() {
    let rounds = env_u64("MINERTEST_FAULT_ROUNDS", 30);
    let seed = env_u64("MINERTEST_FAULT_SEED", DEFAULT_SEED);
    let wait = Duration::from_secs(env_u64("MINERTEST_FAULT_WAIT_S", 60));
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make_training_data(d);
    let chain = DevChain::start(
        &serde_json::json!({"max_space": 1_000_000u64, "subnets": [{"netuid": 1, "tempo": 360, "neurons": [
            {"hotkey": SEED7_SS58, "coldkey": ALICE, "stake": 1_000_000_000u64, "validator_permit": false}
        ]}]}),
        100,
    );
    let hub = HubServer::start(&[]);
    let config = online_config(
        d,
        &chain,
        &hub,
        "alice/faults",
        "eval_sequences = 8\nmax_steps = 100000\neval_every = 15\ncheckpoint_every = 15\nkeep_checkpoints = 3\navg_loss_upload_threshold = 100.0\n",
    );
    // Candidates must keep flowing (each must beat the last candidate's eval loss). With the
    // shared settings (lr 0.003, corpus.txt only: a third of the generated text) the eval loss
    // reaches its floor in ~200 steps (10 candidates) and then rises as the model overfits, so
    // no candidate follows however long the loop runs. A slow learning rate on all three
    // generated files keeps it falling for ~4000 steps (~170 candidates; the 300-round run is in
    // BENCHMARKS.md, "Fuzzing and the fault loop").
    let corpus = d.join("corpus.txt").display().to_string();
    let all_data = format!(
        "{corpus:?}, {:?}, {:?}",
        d.join("corpus.jsonl").display().to_string(),
        d.join("corpus.parquet").display().to_string()
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let (lr, data) = ("\nlr = 0.003\n", format!("data = [{corpus:?}]"));
    assert!(
        text.contains(lr) && text.contains(&data),
        "online_config's lr or data moved"
    );
    let slow = text
        .replace(lr, "\nlr = 0.00003\n")
        .replace(&data, &format!("data = [{all_data}]"));
    std::fs::write(&config, slow).unwrap();
    let bus = Bus::start();
    let mut daemons: BTreeMap<&str, Daemon> = BTreeMap::new();
    for part in ["committer", "publisher", "trainer"] {
        daemons.insert(part, start_configured(part, &bus, d, &config));
    }
    // The hotkey's secret (its seed, as hex) and the HF token must never be logged.
    let seed_hex = hex::encode([7u8; 32]);
    let secrets = [HUB_USERS[0].1, seed_hex.as_str()];
    let fail = |msg: String| -> ! {
        panic!("seed {seed:#x}: {msg}\n(replay: MINERTEST_FAULT_SEED={seed} MINERTEST_FAULT_ROUNDS={rounds})")
    };

    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut progress = Progress::default();
    let mut stalls = 0u64;
    for round in 0..rounds {
        // Paced by progress: the next fault only once something new is in flight.
        let (now, moved) = wait_for_progress(d, &bus, progress, wait);
        progress = now;
        if !moved {
            stalls += 1;
            eprintln!(
                "round {round}: no progress in {}s ({progress:?}); faulting anyway",
                wait.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
        let kind = match rng.below(6) {
            0 | 1 => "kill trainer",
            2 => "kill publisher",
            3 => "kill committer",
            4 => "hub errors",
            _ => "chain drop",
        };
        *counts.entry(kind).or_default() += 1;
        match kind {
            "hub errors" => {
                if rng.below(2) == 0 {
                    hub.faults(serde_json::json!([
                        {"method": "POST", "path_regex": "/commit/", "status": 500, "count": 2}
                    ]));
                } else {
                    hub.faults(serde_json::json!([
                        {"method": "PUT", "path_regex": "^/_lfs/", "drop_after_bytes": 1000, "count": 1}
                    ]));
                }
            }
            "chain drop" => {
                chain.rpc("dev_dropConnections", serde_json::json!([]));
            }
            kill => {
                let part = kill.trim_start_matches("kill ");
                if let Some(mut victim) = daemons.remove(part) {
                    victim.kill9();
                }
                daemons.insert(part, start_configured(part, &bus, d, &config));
            }
        }
        if let Err(e) = check_invariants(d, &bus, &secrets) {
            fail(format!("after round {round} ({kind}): {e}"));
        }
    }

    // Quiesce: no new candidates, no more faults; everything in flight must land.
    hub.faults(serde_json::json!([]));
    let mut status = serde_json::Value::Null;
    let paused = eventually(Duration::from_secs(60), || {
        let _ = minerctl(&bus, &["train", "pause"]);
        status = json(&minerctl(&bus, &["train", "status", "--json"]));
        matches!(status["state"].as_str(), Some("paused" | "finished"))
    });
    if !paused {
        let log = std::fs::read_to_string(d.join("trainer.log")).unwrap_or_default();
        let tail: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("pause requested"))
            .rev()
            .take(30)
            .collect();
        fail(format!(
            "the trainer did not pause: {status}\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let candidates: Vec<String> = run_index(d)["candidates"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| c["path"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut all = Vec::new();
    let settled = eventually(Duration::from_secs(240), || {
        all = jobs(&bus);
        all.len() == candidates.len() && all.iter().all(|j| j["state"] == "committed")
    });
    if !settled {
        fail(format!(
            "not every candidate was committed: {} candidates, jobs {:#?}",
            candidates.len(),
            all
        ));
    }
    let sources: HashSet<String> = all
        .iter()
        .map(|j| j["source"].as_str().unwrap_or_default().to_string())
        .collect();
    for c in &candidates {
        if !sources.contains(c) {
            fail(format!("candidate {c} has no job"));
        }
    }
    let extrinsics = chain.rpc("dev_extrinsicCount", serde_json::json!([]));
    if extrinsics.as_u64() != Some(all.len() as u64) {
        fail(format!(
            "{extrinsics} extrinsics for {} committed jobs",
            all.len()
        ));
    }
    if let Err(e) = check_invariants(d, &bus, &secrets) {
        fail(format!("at the end: {e}"));
    }
    let failures = all.iter().filter(|j| j["state"] == "failed").count();
    let faults: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "fault loop (seed {seed:#x}): {rounds} faults injected ({}); {} candidates, {} jobs, {} committed once each, {failures} failures; {stalls} rounds without progress; {:.0} s",
        faults.join(", "),
        candidates.len(),
        all.len(),
        extrinsics,
        started.elapsed().as_secs_f64()
    );
    if candidates.is_empty() {
        fail("no candidate flowed: the loop tested nothing".into());
    }
    // The point of pacing: exactly-once proven on many candidates, at least one per 3 rounds
    // (a round whose wait timed out is excused: it is printed above as a stall).
    let paced = rounds.saturating_sub(stalls);
    if (candidates.len() as u64) * 3 < paced {
        fail(format!(
            "{} candidates in {rounds} rounds ({stalls} stalls): fewer than one per 3 paced rounds",
            candidates.len()
        ));
    }
}
