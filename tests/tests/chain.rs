//! The committer online, against the local subtensor dev chain (`tests/devchain/`, itself
//! checked against the official `bittensor` SDK by `devchain_peer.rs`).
//!
//! Proves: `minerctl publish` (publisher offline: no Hub here) → committer → a signed
//! `Commitments.set_commitment` in a finalized block, which the official SDK's `get_commitment`
//! reads back as exactly our string, and a commitment the SDK writes is what `minerctl
//! commitment` reads; `Metagraph()` lists the neurons with stake and permit; `ServeAxon`
//! announces once (an unchanged address sends nothing) and the SDK's metagraph shows it; an unregistered hotkey fails the job with "not registered";
//! a committer killed after submitting and before recording writes one extrinsic in total; the
//! space limit defers the next commitment to the next epoch, where it succeeds; a node that drops
//! every connection is reconnected to and the job finishes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use taominer_tests::*;

const NETUID: u16 = 1;

/// One dev chain at a time: each parses the 300 kB metadata in Python at start, and several at
/// once on a 2-core machine only make every test slower.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn fixture(registered: bool, max_space: u64, tempo: u64) -> serde_json::Value {
    let neurons = if registered {
        serde_json::json!([{
            "hotkey": SEED7_SS58,
            "coldkey": ALICE,
            "stake": 1_000_000_000u64,
            "validator_permit": true
        }])
    } else {
        // Someone else is registered; our hotkey is not.
        serde_json::json!([{"hotkey": ALICE, "coldkey": ALICE, "stake": 1, "validator_permit": false}])
    };
    serde_json::json!({
        "max_space": max_space,
        "subnets": [{"netuid": NETUID, "tempo": tempo, "serving_rate_limit": 50, "neurons": neurons}]
    })
}

struct Setup {
    bus: Bus,
    state: tempfile::TempDir,
    config: PathBuf,
    _publisher: Daemon,
    committer: Option<Daemon>,
}

impl Setup {
    fn new(chain: &DevChain) -> Setup {
        let bus = Bus::start();
        let state = tempfile::tempdir().unwrap();
        let hotkey = state.path().join("hotkey");
        write_seed7_hotkey(&hotkey);
        let config = state.path().join("miner.toml");
        std::fs::write(
            &config,
            format!(
                "[miner]\noffline = false\nnetuid = {NETUID}\nchain_endpoint = \"{}\"\n\
                 hotkey_ss58 = \"{SEED7_SS58}\"\nhotkey_file = \"{}\"\n\
                 [publisher]\nrepo = \"alice/tiny\"\n[retry]\ninitial_ms = 50\nmax_ms = 500\n",
                chain.url,
                hotkey.display()
            ),
        )
        .unwrap();
        // The publisher stays offline: this test is about the chain, not the Hub.
        let mut publisher = Spawn::new("publisher", &bus, &state.path().join("publisher"))
            .arg("--config")
            .arg(config.to_str().unwrap())
            .arg("--set")
            .arg("miner.offline=true")
            .start();
        publisher.assert_ready();
        let mut s = Setup {
            bus,
            state,
            config,
            _publisher: publisher,
            committer: None,
        };
        s.start_committer(None);
        s
    }

    fn start_committer(&mut self, crash_at: Option<&str>) {
        let dir = self.state.path().join("committer");
        let mut spawn = Spawn::new("committer", &self.bus, &dir)
            .arg("--config")
            .arg(self.config.to_str().unwrap())
            .log_to(&self.state.path().join("committer.log"));
        if let Some(point) = crash_at {
            spawn = spawn.env("MINERTEST_CRASH_AT", point);
        }
        let mut c = spawn.start();
        c.assert_ready();
        self.committer = Some(c);
    }

    fn model(&self, name: &str, seed: u64) -> PathBuf {
        let dir = self.state.path().join(name);
        make_model(&dir, seed);
        dir
    }

    fn publish(&self, dir: &Path, wait: bool) -> std::process::Output {
        let mut args = vec!["publish", dir.to_str().unwrap()];
        if wait {
            args.extend(["--wait", "90"]);
        }
        minerctl(&self.bus, &args)
    }

    fn jobs(&self) -> Vec<serde_json::Value> {
        json(&minerctl(&self.bus, &["jobs", "--json"]))
            .as_array()
            .cloned()
            .unwrap()
    }

    fn committer_log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("committer.log")).unwrap_or_default()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // A failing test shows what the committer said.
        if std::thread::panicking() {
            eprintln!("--- committer log ---\n{}", self.committer_log());
            let jobs = minerctl(&self.bus, &["jobs"]);
            eprintln!(
                "--- minerctl jobs ---\n{}",
                String::from_utf8_lossy(&jobs.stdout)
            );
            let status = minerctl(&self.bus, &["status"]);
            eprintln!(
                "--- minerctl status ---\n{}",
                String::from_utf8_lossy(&status.stdout)
            );
        }
    }
}

/// `get_commitment(netuid, uid)` through the official SDK.
fn sdk_commitment(chain: &DevChain, uid: u16) -> String {
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(
            "import sys, bittensor as bt\n\
             st = bt.Subtensor(network=sys.argv[1])\n\
             print(st.get_commitment(int(sys.argv[2]), int(sys.argv[3])))",
        )
        .args([&chain.url, &NETUID.to_string(), &uid.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().lines().last().unwrap_or("").to_string()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "minerctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_published_model_is_committed_on_chain_and_the_sdk_reads_it() {
    let _serial = serial();
    let chain = DevChain::start(&fixture(true, 3100, 100), 100);
    let setup = Setup::new(&chain);
    let model = setup.model("model", 1);
    let job_id = ok(&setup.publish(&model, true));

    let ledger = json(&minerctl(&setup.bus, &["commitments", "--json"]));
    let entry = &ledger[0];
    assert_eq!(entry["job_id"], job_id.as_str());
    assert_eq!(entry["hotkey"], SEED7_SS58);
    let commitment = entry["commitment"].as_str().unwrap().to_string();
    assert!(commitment.starts_with("alice:tiny:"), "{commitment}");
    assert!(entry["block"].as_u64().unwrap() > 0);
    let jobs = setup.jobs();
    assert_eq!(jobs[0]["state"], "committed");
    assert_eq!(jobs[0]["block"], entry["block"]);

    // The official client reads exactly our string at our uid.
    assert_eq!(sdk_commitment(&chain, 0), commitment);
    // And one extrinsic was applied for it.
    assert_eq!(chain.rpc("dev_extrinsicCount", serde_json::json!([])), 1);
    let ours = json(&minerctl(&setup.bus, &["commitment", SEED7_SS58, "--json"]));
    assert_eq!(ours["commitment"], commitment.as_str());
    let by_uid = json(&minerctl(
        &setup.bus,
        &["commitment", "--uid", "0", "--json"],
    ));
    assert_eq!(by_uid["commitment"], commitment.as_str());

    // The other way round: a commitment the SDK writes for another miner is what our
    // `minerctl commitment` reads.
    let other = Command::new(venv_python())
        .arg("-c")
        .arg(
            "import sys, json, bittensor as bt\n\
             from bittensor_wallet import Wallet\n\
             from websockets.sync.client import connect\n\
             w = Wallet(name='o', hotkey='h', path=sys.argv[2])\n\
             w.create_new_coldkey(use_password=False, overwrite=True, suppress=True)\n\
             w.create_new_hotkey(use_password=False, overwrite=True, suppress=True)\n\
             with connect(sys.argv[1]) as ws:\n\
             \x20   ws.send(json.dumps({'jsonrpc': '2.0', 'id': 1, 'method': 'dev_register', 'params': [1, w.hotkey.ss58_address, w.coldkeypub.ss58_address, 1000, False]}))\n\
             \x20   ws.recv()\n\
             st = bt.Subtensor(network=sys.argv[1])\n\
             assert st.set_commitment(w, 1, 'sdk:written:by:the:official:client', mev_protection=False)\n\
             print(w.hotkey.ss58_address)",
        )
        .args([&chain.url, setup.state.path().join("wallets").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let other_hotkey = String::from_utf8_lossy(&other.stdout);
    let other_hotkey = other_hotkey.trim().lines().last().unwrap();
    let theirs = json(&minerctl(
        &setup.bus,
        &["commitment", other_hotkey, "--json"],
    ));
    assert_eq!(theirs["commitment"], "sdk:written:by:the:official:client");
}

#[test]
fn an_unregistered_hotkey_fails_the_job_with_the_reason() {
    let _serial = serial();
    let chain = DevChain::start(&fixture(false, 3100, 100), 100);
    let setup = Setup::new(&chain);
    let model = setup.model("model", 2);
    let out = setup.publish(&model, true);
    assert_eq!(out.status.code(), Some(65), "{}", setup.committer_log());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not registered on netuid 1") && err.contains("AccountNotAllowedCommit"),
        "{err}"
    );
}

#[test]
fn killed_after_submitting_commits_exactly_once() {
    let _serial = serial();
    let chain = DevChain::start(&fixture(true, 3100, 100), 100);
    let mut setup = Setup::new(&chain);
    setup.committer.take().unwrap().kill9();
    setup.start_committer(Some("committer.chain-submitted"));
    let model = setup.model("model", 3);
    let id = ok(&setup.publish(&model, false));
    let st = setup
        .committer
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(60))
        .expect("the committer kills itself after submitting");
    assert!(!st.success());
    setup.start_committer(None);
    assert!(
        eventually(Duration::from_secs(60), || setup
            .jobs()
            .iter()
            .any(|j| j["id"] == id.as_str() && j["state"] == "committed")),
        "{}",
        setup.committer_log()
    );
    assert_eq!(
        chain.rpc("dev_extrinsicCount", serde_json::json!([])),
        1,
        "one extrinsic in total"
    );
    assert!(setup
        .committer_log()
        .contains("already holds this commitment"));
}

#[test]
fn the_space_limit_defers_to_the_next_epoch() {
    let _serial = serial();
    // 100 bytes of commitment space per epoch: one commitment each; epochs of 21 blocks.
    let chain = DevChain::start(&fixture(true, 100, 20), 100);
    let setup = Setup::new(&chain);
    let first = ok(&setup.publish(&setup.model("one", 4), true));
    let second = ok(&setup.publish(&setup.model("two", 5), true));
    let ledger = json(&minerctl(&setup.bus, &["commitments", "--json"]));
    let blocks: Vec<u64> = ledger
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["block"].as_u64().unwrap())
        .collect();
    assert_eq!(ledger[0]["job_id"], first.as_str());
    assert_eq!(ledger[1]["job_id"], second.as_str());
    let epoch = |b: u64| (b + u64::from(NETUID) + 1) / 21;
    assert!(epoch(blocks[1]) > epoch(blocks[0]), "{blocks:?}");
    assert!(setup.committer_log().contains("SpaceLimitExceeded"));
    assert_eq!(
        sdk_commitment(&chain, 0),
        ledger[1]["commitment"].as_str().unwrap()
    );
}

#[test]
fn the_committer_reconnects_when_the_node_drops_it() {
    let _serial = serial();
    let chain = DevChain::start(&fixture(true, 3100, 100), 100);
    let setup = Setup::new(&chain);
    ok(&setup.publish(&setup.model("one", 6), true));
    chain.rpc("dev_dropConnections", serde_json::json!([]));
    ok(&setup.publish(&setup.model("two", 7), true));
    assert_eq!(chain.rpc("dev_extrinsicCount", serde_json::json!([])), 2);
    let _ = chain.log();
}
