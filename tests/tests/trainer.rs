//! The trainer against real peers: a real dbus-daemon, the `miner-trainer` binary, `minerctl`,
//! the publisher for candidates, and HF `transformers` (CPU torch, in the test venv) loading
//! what it writes.
//!
//! Fixtures are made here: `tests/trainer/transformers_check.py make-data` writes a generated
//! corpus as text, JSONL and Parquet and trains a byte-level BPE tokenizer on it with the
//! `tokenizers` library. Nothing is downloaded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use taominer_tests::*;

/// The generated corpus and tokenizer, in a temp dir.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        make_training_data(dir.path());
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `--set` overrides for a small, fast run over all three source formats.
    fn sets(&self, extra: &[&str]) -> Vec<String> {
        let data = format!(
            "trainer.data=[{:?},{:?},{:?}]",
            self.path("corpus.txt"),
            self.path("corpus.jsonl"),
            self.path("corpus.parquet")
        );
        let mut sets = vec![
            data,
            format!("trainer.tokenizer={:?}", self.path("tokenizer.json")),
            "trainer.sequence_length=64".into(),
            "trainer.batch_size=4".into(),
            "trainer.lr=0.003".into(),
            "trainer.warmup_steps=5".into(),
            "trainer.eval_sequences=16".into(),
        ];
        sets.extend(extra.iter().map(|s| s.to_string()));
        sets
    }

    fn trainer<'a>(&self, bus: &'a Bus, state: &'a Path, extra: &[&str]) -> Spawn<'a> {
        let mut spawn = Spawn::new("trainer", bus, state);
        for s in self.sets(extra) {
            spawn = spawn.arg("--set").arg(&s);
        }
        spawn
    }
}

fn train_status(bus: &Bus) -> Value {
    json(&minerctl(bus, &["train", "status", "--json"]))
}

/// Waits until the trainer reports `state`; panics with its status otherwise.
fn wait_state(bus: &Bus, state: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let ok = eventually(timeout, || {
        let out = minerctl(bus, &["train", "status", "--json"]);
        if out.status.success() {
            last = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        }
        last["state"] == state
    });
    assert!(ok, "trainer never reached {state}: {last}");
    last
}

fn run_index(state: &Path) -> Value {
    let text = std::fs::read_to_string(state.join("run.json")).unwrap_or_else(|_| "{}".into());
    serde_json::from_str(&text).expect("run.json is JSON")
}

fn checkpoint_dir(state: &Path, step: u64) -> PathBuf {
    state.join(format!("checkpoints/step-{step:08}"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Proves: the checkpoint is a transformers model directory (sharded with an index here), its
/// tokenizer loads in `PreTrainedTokenizerFast` and tokenizes as ours, and transformers' loss
/// and logits on a prompt equal ours (1e-4). Trains on text, JSONL and Parquet at once.
#[test]
fn transformers_loads_our_checkpoint_and_computes_the_same_loss() {
    let fx = Fixture::new();
    let bus = Bus::start();
    let state = fx.path("state");
    let mut d = fx
        .trainer(
            &bus,
            &state,
            &[
                "trainer.max_steps=20",
                "trainer.eval_every=10",
                // ~1.9 MB of f32 weights: sharded, as a 15 GB model would be at 5 GB.
                "trainer.max_shard_bytes=400000",
            ],
        )
        .start();
    d.assert_ready();
    wait_state(&bus, "finished", Duration::from_secs(120));
    let model = checkpoint_dir(&state, 20).join("model");
    assert!(model.join("model.safetensors.index.json").exists());
    assert!(
        model.join("model-00001-of-00005.safetensors").exists() || {
            std::fs::read_dir(&model)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("model-0000"))
                .count()
                > 1
        }
    );

    let scored = run_ok(
        Command::new(bin_dir().join("miner-eval"))
            .arg(&model)
            .args([
                "--text",
                "The miner trains a checkpoint with a fixed seed. A validator hashes every shard.",
                "--logits",
            ]),
        "miner-eval",
    );
    let ours = fx.path("ours.json");
    std::fs::write(&ours, scored).unwrap();
    assert_python_checks_pass(
        &repo_root().join("tests/trainer/transformers_check.py"),
        &["check".as_ref(), model.as_os_str(), ours.as_os_str()],
    );
}

/// Proves a real training signal: 200 steps lower the held-out eval loss from the untrained
/// model's (~ln 400 = 6.0) by at least 2 nats. Also drives pause/start over D-Bus.
#[test]
fn two_hundred_steps_lower_the_eval_loss_and_the_live_views_show_it() {
    let fx = Fixture::new();
    let bus = Bus::start();
    let state = fx.path("state");
    let mut d = fx
        .trainer(
            &bus,
            &state,
            &[
                "trainer.max_steps=200",
                "trainer.eval_every=50",
                "trainer.autostart=false",
            ],
        )
        .start();
    d.assert_ready();
    assert_eq!(
        train_status(&bus)["state"],
        "paused",
        "autostart = false waits"
    );
    let out = minerctl(&bus, &["train", "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(eventually(Duration::from_secs(60), || {
        train_status(&bus)["step"].as_u64().unwrap_or(0) >= 20
    }));
    let out = minerctl(&bus, &["train", "pause"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paused = wait_state(&bus, "paused", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        train_status(&bus)["step"],
        paused["step"],
        "no steps while paused"
    );
    assert!(minerctl(&bus, &["train", "start"]).status.success());
    let done = wait_state(&bus, "finished", Duration::from_secs(300));
    assert_eq!(done["step"], 200);

    let history = run_index(&state)["history"].as_array().cloned().unwrap();
    let first = history.first().unwrap()[1].as_f64().unwrap();
    let last = history.last().unwrap()[1].as_f64().unwrap();
    assert_eq!(history.first().unwrap()[0], 0);
    assert_eq!(history.last().unwrap()[0], 200);
    println!("eval loss {first:.3} -> {last:.3}");
    assert!(
        last < first - 2.0,
        "eval loss {first:.3} -> {last:.3}: expected a drop of at least 2 nats"
    );
    let best = done["best_loss"].as_f64().unwrap();
    assert!(best <= last + 1e-12);

    // The live views read the same run: the loss curve and the speed as a PNG (a training
    // point per evaluation after the first), `top` and the Prometheus exposition.
    let png = fx.path("loss.png");
    let out = minerctl(&bus, &["plot", "loss", "--out", png.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evals = history.len();
    assert!(
        said.contains(&format!(
            "{} training and {evals} evaluation points",
            evals - 1
        )),
        "{said} vs run.json {history:?}"
    );
    // The speed panel: one (step, tokens/s) point per step of this process's run.
    assert!(said.contains(", 200 tokens/s points"), "{said}");
    assert_eq!(
        run_index(&state)["train_history"].as_array().map(Vec::len),
        Some(evals - 1)
    );
    let bytes = read(&png);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&bytes[16..24], &[0, 0, 3, 132, 0, 0, 2, 8], "900x520");
    let top = String::from_utf8_lossy(&minerctl(&bus, &["top", "--once"]).stdout).into_owned();
    assert!(top.contains("trainer    finished   step 200"), "{top}");
    assert!(top.contains("publisher  down"), "{top}");
    let metrics = String::from_utf8_lossy(&minerctl(&bus, &["metrics"]).stdout).into_owned();
    assert!(metrics.contains("taominer_trainer_step 200\n"), "{metrics}");
    assert!(
        metrics.contains("taominer_up{daemon=\"trainer\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("taominer_trainer_best_loss {best}\n")),
        "{metrics}"
    );
    assert_eq!(d.terminate().map(|s| s.success()), Some(true));
}

/// Proves resume: a run killed with SIGKILL and restarted continues from its checkpoint with the
/// same optimiser state and data position (its tokens from the cache), ending bit-identical
/// (weights and AdamW moments) to an uninterrupted run with the same seed.
#[test]
fn kill9_and_resume_ends_bit_identical_to_an_uninterrupted_run() {
    let fx = Fixture::new();
    let bus = Bus::start();
    let sets = [
        "trainer.max_steps=40",
        "trainer.checkpoint_every=10",
        "trainer.eval_every=1000",
        "trainer.accumulation_steps=2",
    ];

    let straight = fx.path("straight");
    let mut a = fx.trainer(&bus, &straight, &sets).start();
    a.assert_ready();
    wait_state(&bus, "finished", Duration::from_secs(120));
    a.terminate();

    let resumed = fx.path("resumed");
    let mut b = fx.trainer(&bus, &resumed, &sets).start();
    b.assert_ready();
    assert!(eventually(Duration::from_secs(60), || {
        run_index(&resumed)["checkpoints"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["step"].as_u64() >= Some(20)))
    }));
    b.kill9();
    let at_kill = run_index(&resumed)["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["step"].as_u64())
        .max()
        .unwrap();
    assert!((20..40).contains(&at_kill), "killed after step {at_kill}");

    let log = fx.path("resumed.log");
    let mut b = fx.trainer(&bus, &resumed, &sets).log_to(&log).start();
    b.assert_ready();
    let done = wait_state(&bus, "finished", Duration::from_secs(120));
    assert_eq!(done["step"], 40);
    // The restart read its packed data from the token cache instead of tokenizing again.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("from the token cache"), "{text}");
    for file in [
        "model/model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ] {
        let x = read(&checkpoint_dir(&straight, 40).join(file));
        let y = read(&checkpoint_dir(&resumed, 40).join(file));
        assert!(x == y, "{file} differs after resuming from step {at_kill}");
    }
    b.terminate();
}

/// Proves a checkpoint killed half-way (model written but not renamed; renamed but not yet
/// recorded) is never loaded: the restarted trainer removes it and starts from what was
/// recorded, and no candidate ever points into it.
#[test]
fn a_half_written_checkpoint_is_never_loaded() {
    let fx = Fixture::new();
    let bus = Bus::start();
    let state = fx.path("state");
    let sets = [
        "trainer.max_steps=20",
        "trainer.checkpoint_every=10",
        "trainer.eval_every=10",
        "trainer.avg_loss_upload_threshold=100",
    ];
    for point in [
        "trainer.checkpoint-model-written",
        "trainer.checkpoint-renamed",
    ] {
        let _ = std::fs::remove_dir_all(&state);
        let mut d = fx
            .trainer(&bus, &state, &sets)
            .env("MINERTEST_CRASH_AT", point)
            .start();
        d.assert_ready();
        assert!(
            d.wait_exit(Duration::from_secs(60)).is_some(),
            "{point}: the trainer did not crash"
        );
        let leftovers: Vec<String> = std::fs::read_dir(state.join("checkpoints"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(leftovers.len(), 1, "{point}: {leftovers:?}");
        let index = run_index(&state);
        assert!(
            index["checkpoints"].as_array().is_none_or(|c| c.is_empty()),
            "{point}: recorded {index}"
        );

        let mut d = fx.trainer(&bus, &state, &sets).start();
        d.assert_ready();
        wait_state(&bus, "finished", Duration::from_secs(60));
        let names: Vec<String> = std::fs::read_dir(state.join("checkpoints"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n.starts_with("step-")),
            "{point}: {names:?}"
        );
        let log = String::from_utf8_lossy(&read(&state.join("run.json"))).into_owned();
        assert!(!log.contains(".tmp-"), "{point}: {log}");
        // Started over from step 0 (nothing recorded to resume), so step 10 was evaluated anew.
        let history = run_index(&state)["history"].as_array().cloned().unwrap();
        assert_eq!(
            history
                .iter()
                .map(|h| h[0].as_u64().unwrap())
                .collect::<Vec<_>>(),
            vec![0, 10, 20],
            "{point}"
        );
        d.terminate();
    }
}

/// Proves the candidate rule end to end: every evaluation below the threshold that beats the
/// last candidate becomes one (and no other), each is handed to the real publisher exactly once
/// even when the trainer dies right after recording one, and `CandidateReady` is emitted for
/// each announced candidate and never again after a restart.
#[test]
fn candidates_follow_the_threshold_rule_and_are_handed_off_once() {
    let fx = Fixture::new();
    let bus = Bus::start();
    let monitor_log = fx.path("monitor.log");
    let mut monitor = Command::new("dbus-monitor")
        .arg("--address")
        .arg(&bus.address)
        .arg("type='signal',interface='org.taominer.Trainer1'")
        .stdout(std::fs::File::create(&monitor_log).unwrap())
        .spawn()
        .expect("dbus-monitor");
    let pub_state = fx.path("publisher");
    let mut publisher = Spawn::new("publisher", &bus, &pub_state).start();
    publisher.assert_ready();

    let state = fx.path("state");
    let threshold = 5.3;
    let sets = [
        "trainer.max_steps=60",
        "trainer.eval_every=10",
        "trainer.checkpoint_every=10",
        "trainer.avg_loss_upload_threshold=5.3",
    ];
    let mut d = fx
        .trainer(&bus, &state, &sets)
        .env("MINERTEST_CRASH_AT", "trainer.candidate-recorded")
        .start();
    d.assert_ready();
    assert!(d.wait_exit(Duration::from_secs(60)).is_some(), "no crash");
    assert_eq!(run_index(&state)["candidates"].as_array().unwrap().len(), 1);

    let mut d = fx.trainer(&bus, &state, &sets).start();
    d.assert_ready();
    wait_state(&bus, "finished", Duration::from_secs(120));

    let index = run_index(&state);
    let candidates = index["candidates"].as_array().cloned().unwrap();
    // Replay the rule over the recorded evaluations.
    let mut expected = Vec::new();
    let mut last: Option<f64> = None;
    for h in index["history"].as_array().unwrap().iter().skip(1) {
        let (step, loss) = (h[0].as_u64().unwrap(), h[1].as_f64().unwrap());
        if loss < threshold && last.is_none_or(|l| loss < l) {
            expected.push(step);
            last = Some(loss);
        }
    }
    let got: Vec<u64> = candidates
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        got, expected,
        "candidates vs the rule over {}",
        index["history"]
    );
    assert!(
        got.len() >= 2,
        "the run should produce several candidates: {got:?}"
    );

    // Each candidate reaches the publisher exactly once.
    let mut jobs = Vec::new();
    assert!(eventually(Duration::from_secs(30), || {
        jobs = json(&minerctl(&bus, &["jobs", "--json"]))
            .as_array()
            .cloned()
            .unwrap_or_default();
        jobs.len() >= got.len()
    }));
    std::thread::sleep(Duration::from_millis(500));
    let jobs = json(&minerctl(&bus, &["jobs", "--json"]));
    let sources: Vec<String> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["source"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sources.len(), candidates.len(), "{sources:?}");
    for c in &candidates {
        // Old candidates' checkpoints are pruned once handed off; compare the paths as given.
        let path = Path::new(c["path"].as_str().unwrap());
        let n = sources.iter().filter(|s| Path::new(s) == path).count();
        assert_eq!(n, 1, "{} handed off {n} times", path.display());
    }

    // Signals: one per candidate announced by the second process; the first candidate was
    // recorded but its announcement died with the process, and it is not announced again.
    std::thread::sleep(Duration::from_millis(300));
    let _ = monitor.kill();
    let _ = monitor.wait();
    let log = std::fs::read_to_string(&monitor_log).unwrap();
    let signals = log.matches("member=CandidateReady").count();
    assert_eq!(signals, candidates.len() - 1, "{log}");
    d.terminate();
    publisher.terminate();
}

/// Proves bad input is refused with a message that names the problem: an unknown architecture,
/// tensors whose shapes disagree with config.json, a tokenizer larger than the model's
/// vocabulary (each reported by `minerctl train status`, the daemon still serving), and a bad
/// `[trainer]` value (exit 78 naming the key).
#[test]
fn bad_models_tokenizers_and_settings_get_clear_errors() {
    let fx = Fixture::new();
    let bus = Bus::start();
    // A good model dir to break: a short run with the built-in byte tokenizer (257 tokens).
    let state = fx.path("state");
    let mut d = Spawn::new("trainer", &bus, &state)
        .arg("--set")
        .arg(&format!("trainer.data=[{:?}]", fx.path("corpus.txt")))
        .arg("--set")
        .arg("trainer.max_steps=2")
        .arg("--set")
        .arg("trainer.sequence_length=32")
        .start();
    d.assert_ready();
    wait_state(&bus, "finished", Duration::from_secs(60));
    d.terminate();
    let good = checkpoint_dir(&state, 2).join("model");

    let copy = |name: &str| -> PathBuf {
        let dir = fx.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&good).unwrap().flatten() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        dir
    };
    let edit_config = |dir: &Path, f: &dyn Fn(&mut Value)| {
        let p = dir.join("config.json");
        let mut v: Value = serde_json::from_slice(&read(&p)).unwrap();
        f(&mut v);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    };

    let gpt2 = copy("gpt2");
    edit_config(&gpt2, &|v| {
        v["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
        v["model_type"] = "gpt2".into();
    });
    let shapes = copy("shapes");
    edit_config(&shapes, &|v| v["intermediate_size"] = 300.into());
    let vocab = copy("vocab");
    std::fs::copy(fx.path("tokenizer.json"), vocab.join("tokenizer.json")).unwrap();

    let cases: [(&Path, &str); 3] = [
        (&gpt2, "GPT2LMHeadModel"),
        (
            &shapes,
            "gate_proj.weight has shape [352, 128] but config.json implies [300, 128]",
        ),
        (
            &vocab,
            "the tokenizer has 400 tokens but the model's vocab_size is 257",
        ),
    ];
    for (dir, needle) in cases {
        let st = fx.path(&format!(
            "state-{}",
            dir.file_name().unwrap().to_string_lossy()
        ));
        let mut d = Spawn::new("trainer", &bus, &st)
            .arg("--load-model-dir")
            .arg(dir.to_str().unwrap())
            .arg("--set")
            .arg(&format!("trainer.data=[{:?}]", fx.path("corpus.txt")))
            .start();
        d.assert_ready();
        let status = wait_state(&bus, "failed", Duration::from_secs(30));
        let err = status["last_error"].as_str().unwrap();
        assert!(err.contains(needle), "{}: {err}", dir.display());
        // The daemon still answers, and says why it will not start.
        let out = minerctl(&bus, &["train", "start"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle));
        d.terminate();
    }

    let mut d = Spawn::new("trainer", &bus, &fx.path("state-bad"))
        .arg("--set")
        .arg("trainer.sequence_length=0")
        .start();
    let st = d.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(st.code(), Some(78));
}

/// Other miners as the trainer finds them online, the way validators do: through the committer
/// (online, against the dev chain with the real subtensor metadata) and the Hub (the local
/// server, private repos, token from `hub.token_file`). "Their" model is 20 steps offline with
/// the same data and seed ours will use, uploaded with the official `huggingface_hub` and
/// committed with the official `bittensor` SDK by UID 1 in competition 2; UID 2 has more
/// incentive but commits in competition 4.
struct OtherMiners {
    fx: Fixture,
    bus: Bus,
    _hub: HubServer,
    _chain: DevChain,
    _committer: Daemon,
    config: PathBuf,
    /// The Hub revision of their model.
    revision: String,
    /// Their model's eval loss at its last evaluation (step 20).
    their_loss: f64,
}

impl OtherMiners {
    fn start() -> OtherMiners {
        let fx = Fixture::new();
        let bus = Bus::start();
        let theirs_state = fx.path("theirs");
        let mut d = fx
            .trainer(
                &bus,
                &theirs_state,
                // A constant learning rate after warm-up: the trajectory does not depend on max_steps.
                &[
                    "trainer.max_steps=20",
                    "trainer.eval_every=10",
                    "trainer.min_lr_ratio=1",
                ],
            )
            .start();
        d.assert_ready();
        wait_state(&bus, "finished", Duration::from_secs(120));
        d.terminate();
        let their_model = checkpoint_dir(&theirs_state, 20).join("model");
        let their_history = run_index(&theirs_state)["history"].clone();
        let their_loss = their_history.as_array().unwrap().last().unwrap()[1]
            .as_f64()
            .unwrap();

        let hub = HubServer::start(&[]);
        let revision = py(
            &hub,
            &fx,
            &[
                "-c",
                "import sys; from huggingface_hub import HfApi\n\
                 api = HfApi(token=sys.argv[3]); api.create_repo(sys.argv[1], private=True, exist_ok=True)\n\
                 print(api.upload_folder(repo_id=sys.argv[1], folder_path=sys.argv[2]).oid)",
                "alice/their-model",
                their_model.to_str().unwrap(),
                HUB_USERS[0].1,
            ],
        );
        assert_eq!(revision.len(), 40, "{revision}");

        // The chain: we are UID 0; two other miners registered with incentive, committing with the SDK.
        let chain = DevChain::start(
            &serde_json::json!({"subnets": [{"netuid": 1, "tempo": 100, "neurons": [
                {"hotkey": SEED7_SS58, "coldkey": ALICE, "stake": 1000, "incentive": 10}]}]}),
            200,
        );
        let wallets = fx.path("wallets");
        let committed = py(
            &hub,
            &fx,
            &[
                "-c",
                "import sys, json, bittensor as bt\n\
                 from bittensor_wallet import Wallet\n\
                 from websockets.sync.client import connect\n\
                 url, path, rev = sys.argv[1], sys.argv[2], sys.argv[3]\n\
                 st = bt.Subtensor(network=url)\n\
                 for name, incentive, text in [('a', 30000, f'alice:their-model:{rev}:aGFzaA==:2'),\n\
                 \x20                             ('b', 60000, f'bob:other-model:{rev}:aGFzaA==:4')]:\n\
                 \x20   w = Wallet(name=name, hotkey='h', path=path)\n\
                 \x20   w.create_new_coldkey(use_password=False, overwrite=True, suppress=True)\n\
                 \x20   w.create_new_hotkey(use_password=False, overwrite=True, suppress=True)\n\
                 \x20   with connect(url) as ws:\n\
                 \x20       ws.send(json.dumps({'jsonrpc': '2.0', 'id': 1, 'method': 'dev_register', 'params': [1, w.hotkey.ss58_address, w.coldkeypub.ss58_address, 1000, False, None, incentive]}))\n\
                 \x20       ws.recv()\n\
                 \x20   assert st.set_commitment(w, 1, text, mev_protection=False)\n\
                 print('ok')",
                &chain.url,
                wallets.to_str().unwrap(),
                &revision,
            ],
        );
        assert!(committed.ends_with("ok"), "{committed}");

        let config = online_config(&fx, &hub, &chain.url);
        let mut committer = Spawn::new("committer", &bus, &fx.path("committer"))
            .arg("--config")
            .arg(config.to_str().unwrap())
            .start();
        committer.assert_ready();
        OtherMiners {
            fx,
            bus,
            _hub: hub,
            _chain: chain,
            _committer: committer,
            config,
            revision,
            their_loss,
        }
    }

    /// Our trainer, online with [`online_config`], in `<fixture>/<name>` (its log beside it).
    fn trainer<'a>(&'a self, state: &'a Path, log: &Path, extra: &[&str]) -> Spawn<'a> {
        self.fx
            .trainer(&self.bus, state, extra)
            .arg("--config")
            .arg(self.config.to_str().unwrap())
            .log_to(log)
    }
}

/// Runs Python in the test venv with `HF_HOME` in the fixture, against `hub`.
fn py(hub: &HubServer, fx: &Fixture, args: &[&str]) -> String {
    hub.python(&fx.path("hf-home"), args)
}

/// Our online configuration: UID 0 on netuid 1 of the chain at `chain_url`, competition 2, the
/// Hub at `hub` with user 0's token from a file.
fn online_config(fx: &Fixture, hub: &HubServer, chain_url: &str) -> PathBuf {
    let hotkey = fx.path("hotkey");
    write_seed7_hotkey(&hotkey);
    let token = fx.path("hf-token");
    std::fs::write(&token, HUB_USERS[0].1).unwrap();
    let config = fx.path("miner.toml");
    std::fs::write(
        &config,
        format!(
            "[miner]\noffline = false\nnetuid = 1\ncompetition = 2\nchain_endpoint = \"{}\"\n\
             hotkey_ss58 = \"{SEED7_SS58}\"\nhotkey_file = \"{}\"\n\
             [publisher]\nrepo = \"alice/ours\"\n\
             [hub]\nendpoint = \"{}\"\nallow_insecure = true\ntoken_file = \"{}\"\n",
            chain_url,
            hotkey.display(),
            hub.url,
            token.display()
        ),
    )
    .unwrap();
    config
}

/// Proves `--load-uid 1` downloads the model UID 1 committed, at its committed revision, and
/// training starts from it: the eval loss before the first step equals that model's own. The
/// token never reaches the log.
#[test]
fn load_uid_starts_from_the_model_that_uid_committed() {
    let w = OtherMiners::start();
    let (st, log) = (w.fx.path("by-uid"), w.fx.path("by-uid.log"));
    let mut d = w
        .trainer(
            &st,
            &log,
            &["trainer.max_steps=2", "trainer.eval_every=100"],
        )
        .arg("--load-uid")
        .arg("1")
        .start();
    d.assert_ready();
    let status = wait_state(&w.bus, "finished", Duration::from_secs(120));
    assert_eq!(status["step"], 2, "{status}");
    let start_loss = run_index(&st)["history"][0][1].as_f64().unwrap();
    assert!(
        (start_loss - w.their_loss).abs() < 1e-9,
        "started at eval loss {start_loss}, their model's is {}",
        w.their_loss
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("alice/their-model at {}", w.revision)),
        "{text}"
    );
    assert!(!text.contains(HUB_USERS[0].1), "the token is in the log");
    d.terminate();
}

/// Proves `--load-best` takes the highest-incentive UID *whose commitment is in our
/// competition*: UID 2 has more incentive, but its model is in competition 4, so UID 1's wins.
#[test]
fn load_best_takes_the_best_uid_of_our_competition() {
    let w = OtherMiners::start();
    let (st, log) = (w.fx.path("best"), w.fx.path("best.log"));
    let mut d = w
        .trainer(
            &st,
            &log,
            &["trainer.max_steps=1", "trainer.eval_every=100"],
        )
        .arg("--load-best")
        .start();
    d.assert_ready();
    wait_state(&w.bus, "finished", Duration::from_secs(120));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("starting from the best model of competition 2: UID 1 alice/their-model"),
        "{text}"
    );
    d.terminate();
}

/// Proves `trainer.dataset_repo` trains on the Parquet shards of a private dataset repo at its
/// revision (two shards uploaded with the official client; the second made from the JSONL part
/// of the corpus), and only on them, through a Hub having a bad minute: the listing and a
/// shard's download fail first, and the trainer's client (the publisher's) retries them. No chain
/// is needed: the trainer asks the committer only for other miners' models.
#[test]
fn a_dataset_repo_is_read_through_a_flaky_hub() {
    let fx = Fixture::new();
    let bus = Bus::start();
    let hub = HubServer::start(&[]);
    // Nothing listens at this chain endpoint, and nothing here asks it.
    let config = online_config(&fx, &hub, "ws://127.0.0.1:9");
    let dataset_rev = py(
        &hub,
        &fx,
        &[
            "-c",
            "import sys, json, pyarrow as pa, pyarrow.parquet as pq, pathlib, shutil\n\
             from huggingface_hub import HfApi\n\
             fx, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])\n\
             (out / 'data').mkdir(parents=True)\n\
             shutil.copy(fx / 'corpus.parquet', out / 'data/train-00000-of-00002.parquet')\n\
             rows = [json.loads(l)['text'] for l in open(fx / 'corpus.jsonl')]\n\
             pq.write_table(pa.table({'text': rows}), out / 'data/train-00001-of-00002.parquet')\n\
             api = HfApi(token=sys.argv[3])\n\
             api.create_repo('alice/corpus', repo_type='dataset', private=True, exist_ok=True)\n\
             print(api.upload_folder(repo_id='alice/corpus', repo_type='dataset', folder_path=out).oid)",
            fx.path("").to_str().unwrap(),
            fx.path("dataset-upload").to_str().unwrap(),
            HUB_USERS[0].1,
        ],
    );
    hub.clear_log();
    hub.faults(serde_json::json!([
        {"method": "GET", "path_regex": "^/api/datasets/alice/corpus/revision/", "status": 503, "count": 2},
        {"method": "GET", "path_regex": "^/datasets/alice/corpus/resolve/", "status": 502, "count": 1},
    ]));
    let (st, log) = (fx.path("dataset"), fx.path("dataset.log"));
    let mut d = fx
        .trainer(
            &bus,
            &st,
            &[
                "trainer.data=[]",
                "trainer.dataset_repo=\"alice/corpus\"",
                "trainer.max_steps=2",
                "trainer.eval_every=100",
            ],
        )
        .arg("--config")
        .arg(config.to_str().unwrap())
        .log_to(&log)
        .start();
    d.assert_ready();
    wait_state(&bus, "finished", Duration::from_secs(120));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!(
            "dataset alice/corpus at {dataset_rev}: 2 Parquet files"
        )),
        "{text}"
    );
    // 200 documents in each shard: both were read, and nothing else.
    let line = text
        .lines()
        .find(|l| l.contains("training documents"))
        .unwrap();
    let count_before = |what: &str| -> u64 {
        let head = &line[..line.find(what).unwrap()];
        head.split_whitespace().last().unwrap().parse().unwrap()
    };
    let (train_docs, eval_docs) = (
        count_before(" training documents"),
        count_before(" eval documents"),
    );
    assert_eq!(train_docs + eval_docs, 400, "{line}");
    let failed: Vec<_> = hub
        .log()
        .into_iter()
        .filter(|e| e["status"].as_u64().is_some_and(|s| s >= 500))
        .collect();
    assert_eq!(
        failed.len(),
        3,
        "the injected failures were met: {failed:?}"
    );
    assert!(text.contains("retrying"), "retries are logged: {text}");
    d.terminate();
}

/// Proves `gate_on_best` holds candidates back until ours beats the best model's loss on our
/// eval data by `gate_epsilon`: with the same seed and data, our run equals theirs at step 20
/// (so the gate holds until then), and the candidates are exactly the later evaluations below
/// their loss less 0.5 %. The threshold is set high so only the gate decides.
#[test]
fn gate_on_best_holds_candidates_until_ours_beats_the_best() {
    let w = OtherMiners::start();
    let (st, log) = (w.fx.path("gated"), w.fx.path("gated.log"));
    let mut d = w
        .trainer(
            &st,
            &log,
            &[
                "trainer.max_steps=40",
                "trainer.eval_every=10",
                "trainer.avg_loss_upload_threshold=100",
                "trainer.gate_on_best=true",
                "trainer.min_lr_ratio=1",
            ],
        )
        .start();
    d.assert_ready();
    wait_state(&w.bus, "finished", Duration::from_secs(180));
    let index = run_index(&st);
    let history = index["history"].as_array().unwrap();
    let at20 = history.iter().find(|h| h[0] == 20).unwrap()[1]
        .as_f64()
        .unwrap();
    assert!(
        (at20 - w.their_loss).abs() < 1e-9,
        "same seed and data: {at20} vs {}",
        w.their_loss
    );
    let steps: Vec<u64> = index["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = history
        .iter()
        .skip(1)
        .filter(|h| h[1].as_f64().unwrap() < w.their_loss * (1.0 - 0.005))
        .map(|h| h[0].as_u64().unwrap())
        .collect();
    assert!(
        !steps.is_empty() && steps.iter().all(|s| *s > 20),
        "{steps:?}"
    );
    assert_eq!(steps, expected, "{}", index["history"]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("held back"), "{text}");
    d.terminate();
}

/// sha256 (hex) of every file under a candidate's model directory, by relative path: what the
/// publisher records as a staged job's `digests`.
fn dir_digests(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let digest = taominer_core::formats::hash::file_digests(&[&path]).unwrap()[0];
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, hex::encode(digest));
        }
    }
    out
}

/// Proves no candidate is lost when staging queues behind a slow upload: with a Hub that answers
/// every commit with 503 until the test lets it go, the first job sits in its upload and the
/// later ones wait `received` (at least three of them), while the trainer, keeping one
/// checkpoint, prunes as it goes. Every queued candidate's directory must still be there
/// (pruning waits for its job to be staged), and once the Hub answers, every job reaches staged
/// with exactly the candidate's files. Hand-offs are keyed: one job per candidate.
#[test]
fn candidates_queued_behind_a_slow_hub_are_pruned_only_once_staged() {
    let fx = Fixture::new();
    let hub = HubServer::start(&[]);
    hub.faults(serde_json::json!([
        {"method": "POST", "path_regex": "/commit/", "status": 503, "count": 1_000_000},
    ]));
    let token = fx.path("hf-token");
    std::fs::write(&token, HUB_USERS[0].1).unwrap();
    let config = fx.path("publisher.toml");
    std::fs::write(
        &config,
        format!(
            r#"[miner]
offline = false
hotkey_ss58 = "{ALICE}"

[publisher]
repo = "alice/queued"

[hub]
endpoint = "{}"
allow_insecure = true
token_file = "{}"

[retry]
initial_ms = 50
max_ms = 200

[publisher.limits."2"]
min_parameters = 0
"#,
            hub.url,
            token.display()
        ),
    )
    .unwrap();
    let bus = Bus::start();
    let pub_state = fx.path("publisher");
    let pub_log = fx.path("publisher.log");
    let mut publisher = Spawn::new("publisher", &bus, &pub_state)
        .arg("--config")
        .arg(config.to_str().unwrap())
        .log_to(&pub_log)
        .start();
    publisher.assert_ready();
    let logs = || std::fs::read_to_string(&pub_log).unwrap_or_default();

    let state = fx.path("state");
    let sets = [
        "trainer.max_steps=50",
        "trainer.eval_every=5",
        "trainer.checkpoint_every=5",
        "trainer.keep_checkpoints=1",
        "trainer.avg_loss_upload_threshold=100.0",
    ];
    let mut d = fx.trainer(&bus, &state, &sets).start();
    d.assert_ready();
    wait_state(&bus, "finished", Duration::from_secs(180));
    let candidates = run_index(&state)["candidates"].as_array().cloned().unwrap();
    assert!(
        candidates.len() >= 4,
        "one uploading and three queued need four candidates: {candidates:?}"
    );

    // Every candidate handed off once, under its key.
    let handoffs = || -> Value {
        serde_json::from_slice(&std::fs::read(state.join("handoffs.json")).unwrap_or_default())
            .unwrap_or(Value::Null)
    };
    assert!(eventually(Duration::from_secs(30), || handoffs()["jobs"]
        .as_object()
        .is_some_and(|j| j.len() == candidates.len())));
    let job_of: std::collections::BTreeMap<String, String> = handoffs()["jobs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, id)| (p.clone(), id.as_str().unwrap().to_string()))
        .collect();
    let jobs = json(&minerctl(&bus, &["jobs", "--json"]));
    let jobs = jobs.as_array().unwrap();
    assert_eq!(
        jobs.len(),
        candidates.len(),
        "one job per candidate: {jobs:?}"
    );
    let state_of = |id: &str| -> String {
        let jobs = json(&minerctl(&bus, &["jobs", "--json"]));
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .map(|j| j["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };

    // The Hub still refuses: the first job is stuck uploading, the rest wait unstaged, and
    // each of those still has its directory.
    let mut queued = 0;
    let mut expected = Vec::new();
    for c in &candidates {
        let path = c["path"].as_str().unwrap();
        let id = &job_of[path];
        let st = state_of(id);
        if st == "received" {
            queued += 1;
            assert!(
                Path::new(path).join("config.json").exists(),
                "candidate at step {} was pruned before its job was staged",
                c["step"]
            );
        }
        if Path::new(path).exists() {
            expected.push((id.clone(), dir_digests(Path::new(path))));
        }
    }
    assert!(queued >= 3, "three candidates should be queued: {jobs:?}");

    // The Hub answers again: every job gets staged with the candidate's own files.
    hub.faults(serde_json::json!([]));
    let all_staged = eventually(Duration::from_secs(120), || {
        job_of
            .values()
            .all(|id| !matches!(state_of(id).as_str(), "received" | "staged" | "uploaded"))
    });
    assert!(all_staged, "{}", logs());
    for id in job_of.values() {
        assert_eq!(state_of(id), "hashed", "job {id}: {}", logs());
    }
    for (id, files) in &expected {
        let job: Value = serde_json::from_slice(
            &std::fs::read(pub_state.join("jobs").join(format!("{id}.json"))).unwrap(),
        )
        .unwrap();
        let digests: std::collections::BTreeMap<String, String> =
            serde_json::from_value(job["digests"].clone()).unwrap();
        assert_eq!(&digests, files, "job {id} staged other files");
    }
    assert!(
        expected.len() >= queued,
        "every queued candidate's content was checked"
    );
    d.terminate();
    publisher.terminate();
}
