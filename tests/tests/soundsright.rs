//! The `soundsright` profile (SN105) end to end: the axon, the healthcheck API, the feedback
//! store, and the configured model's commitment.
//!
//! Proves:
//! * the official `bittensor` `Dendrite`, with the subnet's own synapse classes, gets the
//!   configured model ids for our competition and `None` for the other three, signed, status
//!   codes as upstream (403 for a hotkey not allowed); `FeedbackProtocol` is stored durably
//!   (survives a restart), announced with `FeedbackReceived` on the bus and shown newest first by
//!   `minerctl feedback`; the healthcheck API answers upstream's routes in upstream's shape
//!   (`tests/soundsright/miner_check.py axon`);
//! * online, the configured model is checked on the Hub (the commit exists, the validators'
//!   container checks pass), hashed as validators hash it, and its commitment
//!   `sha256(ns:name:rev:hotkey:competition_id)` is written to the dev chain, where the official
//!   SDK reads exactly what the validator's check recomputes (`miner_check.py commitment`); a
//!   restart writes nothing more, a new revision writes once more, a revision the Hub does not
//!   have fails with the reason, and a Dockerfile that runs as root is refused before anything is
//!   committed; a model directory published with `minerctl publish` is uploaded, checked and
//!   committed the same way; the axon names whichever model the chain holds for us, whatever
//!   revision its configuration started with;
//! * two competitions, or a branch name instead of a commit, stop the daemons with exit 78 and the
//!   key named.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use taominer_tests::axon::dendrite_wallets;
use taominer_tests::*;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";
const COMPETITION: &str = "DEREVERBERATION_16000HZ";

fn script() -> PathBuf {
    repo_root().join("tests/soundsright/miner_check.py")
}

/// `--set` values naming alice/dereverb at `rev` as the model for our competition.
fn model_sets(rev: &str) -> [String; 3] {
    [
        format!("soundsright.models.{COMPETITION}.namespace=\"alice\""),
        format!("soundsright.models.{COMPETITION}.name=\"dereverb\""),
        format!("soundsright.models.{COMPETITION}.revision=\"{rev}\""),
    ]
}

/// The first `prefix<port>` in a log, once it is there.
fn port_in_log(log: &Path, prefix: &str) -> u16 {
    let mut port = 0;
    assert!(
        eventually(Duration::from_secs(20), || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            port = text
                .split(prefix)
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            port != 0
        }),
        "no {prefix:?} in {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    port
}

fn start_predictor(bus: &Bus, dir: &Path, validator: &str) -> (Daemon, u16, u16) {
    let log = dir.join("predictor.log");
    let _ = std::fs::remove_file(&log);
    let sets = [
        "miner.profile=\"soundsright\"".to_string(),
        format!(
            "miner.hotkey_file={:?}",
            dir.join("hotkey").display().to_string()
        ),
        "predictor.listen=\"127.0.0.1:0\"".into(),
        format!("predictor.allow=[{validator:?}]"),
        "soundsright.healthcheck_listen=\"127.0.0.1:0\"".into(),
    ]
    .into_iter()
    .chain(model_sets(REV));
    let state = dir.join("state");
    let mut spawn = Spawn::new("predictor", bus, &state).log_to(&log);
    for s in sets {
        spawn = spawn.arg("--set").arg(&s);
    }
    let mut d = spawn.start();
    d.assert_ready();
    let axon = port_in_log(&log, "axon listening on 127.0.0.1:");
    let health = port_in_log(&log, "healthcheck API on 127.0.0.1:");
    (d, axon, health)
}

#[test]
fn validators_get_the_model_ids_and_their_feedback_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_seed7_hotkey(&d.join("hotkey"));
    let (validator, _stranger) = dendrite_wallets(&d.join("wallets"));
    let bus = Bus::start();
    let mut monitor = Command::new("dbus-monitor")
        .args([
            "--address",
            &bus.address,
            "type='signal',interface='org.taominer.Predictor1',member='FeedbackReceived'",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("dbus-monitor (Debian dbus-bin)");
    let (mut predictor, axon, health) = start_predictor(&bus, d, &validator);
    assert_python_checks_pass(
        &script(),
        &[
            "axon".as_ref(),
            "--wallets".as_ref(),
            d.join("wallets").as_os_str(),
            "--port".as_ref(),
            axon.to_string().as_ref(),
            "--axon-hotkey".as_ref(),
            SEED7_SS58.as_ref(),
            "--health-port".as_ref(),
            health.to_string().as_ref(),
            "--competition".as_ref(),
            COMPETITION.as_ref(),
            "--ns".as_ref(),
            "alice".as_ref(),
            "--name".as_ref(),
            "dereverb".as_ref(),
            "--rev".as_ref(),
            REV.as_ref(),
        ],
    );
    // The signal went out once, naming the competition and the validator.
    std::thread::sleep(Duration::from_millis(500));
    let _ = monitor.kill();
    let out = monitor.wait_with_output().unwrap();
    let signals = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        signals.matches("member=FeedbackReceived").count(),
        1,
        "{signals}"
    );
    assert!(
        signals.contains(COMPETITION) && signals.contains(&validator),
        "{signals}"
    );

    // Kept across a restart, shown newest first.
    predictor.terminate();
    let (_predictor, _, _) = start_predictor(&bus, d, &validator);
    let shown = json(&minerctl(&bus, &["feedback", "--json"]));
    let records = shown.as_array().unwrap();
    assert_eq!(records.len(), 1, "{shown}");
    assert_eq!(records[0]["validator"], validator.as_str());
    assert_eq!(records[0]["competition"], COMPETITION);
    assert_eq!(records[0]["data"]["data"]["PESQ"]["average"], 2.25);
    assert_eq!(records[0]["subnet_version"], 2014);
    let table = minerctl(&bus, &["feedback"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    assert!(
        text.contains("RECEIVED (UTC)")
            && text.contains("PESQ 2.250")
            && text.contains("ESTOI 0.810"),
        "{text}"
    );
    let status = String::from_utf8_lossy(&minerctl(&bus, &["status"]).stdout).to_string();
    assert!(
        status.contains(&format!(
            "serving alice/dereverb@{} for {COMPETITION} (config)",
            &REV[..12]
        )) && status.contains("1 feedback"),
        "{status}"
    );
}

/// A model repository as SoundsRight validators expect it: a Dockerfile that runs as an
/// unprivileged user, the container API on 6500.
fn model_repo(dir: &Path, dockerfile: &str, seed: u64) {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(
        dir.join("app/main.py"),
        "import uvicorn\nuvicorn.run('api:app', host='0.0.0.0', port=6500)\n",
    )
    .unwrap();
    std::fs::write(dir.join("model.ckpt"), pseudo_random(seed, 4096)).unwrap();
}

const GOOD_DOCKERFILE: &str =
    "FROM python:3.11-slim\nCOPY . /app\nUSER 10002:10002\nEXPOSE 6500\nCMD [\"python\", \"/app/app/main.py\"]\n";

struct Online {
    bus: Bus,
    dir: tempfile::TempDir,
    config: PathBuf,
    publisher: Option<Daemon>,
    _committer: Daemon,
}

impl Online {
    fn new(hub: &HubServer, chain: &DevChain) -> Online {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_seed7_hotkey(&d.join("hotkey"));
        std::fs::write(d.join("hf-token"), HUB_USERS[0].1).unwrap();
        let config = d.join("miner.toml");
        std::fs::write(
            &config,
            format!(
                "[miner]\noffline = false\nprofile = \"soundsright\"\nnetuid = 1\n\
                 chain_endpoint = \"{}\"\nhotkey_ss58 = \"{SEED7_SS58}\"\nhotkey_file = \"{}\"\n\
                 [publisher]\nrepo = \"alice/dereverb\"\nmake_public_after_commit = false\n\
                 [hub]\nendpoint = \"{}\"\nallow_insecure = true\ntoken_file = \"{}\"\n\
                 [retry]\ninitial_ms = 50\nmax_ms = 400\n",
                chain.url,
                d.join("hotkey").display(),
                hub.url,
                d.join("hf-token").display()
            ),
        )
        .unwrap();
        let bus = Bus::start();
        let mut committer = Spawn::new("committer", &bus, &d.join("committer"))
            .arg("--config")
            .arg(config.to_str().unwrap())
            .log_to(&d.join("committer.log"))
            .start();
        committer.assert_ready();
        Online {
            bus,
            dir,
            config,
            publisher: None,
            _committer: committer,
        }
    }

    /// (Re)starts the publisher with the model at `rev` configured.
    fn serve_revision(&mut self, rev: &str) {
        if let Some(mut p) = self.publisher.take() {
            p.terminate();
        }
        let state = self.dir.path().join("publisher");
        let mut spawn = Spawn::new("publisher", &self.bus, &state)
            .arg("--config")
            .arg(self.config.to_str().unwrap())
            .log_to(&self.dir.path().join("publisher.log"));
        for set in model_sets(rev) {
            spawn = spawn.arg("--set").arg(&set);
        }
        let mut p = spawn.start();
        p.assert_ready();
        self.publisher = Some(p);
    }

    fn jobs(&self) -> Vec<serde_json::Value> {
        json(&minerctl(&self.bus, &["jobs", "--json"]))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the predictor names `rev` (from `source`).
    fn assert_serving(&self, rev: &str, source: &str, log: &Path) {
        let want = format!("alice/dereverb@{} for {COMPETITION} ({source})", &rev[..12]);
        let mut status = String::new();
        assert!(
            eventually(Duration::from_secs(40), || {
                status =
                    String::from_utf8_lossy(&minerctl(&self.bus, &["status"]).stdout).into_owned();
                status.contains(&want)
            }),
            "predictor never served {want}: {status}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// Waits until the job for `rev` ends; returns it.
    fn job_for(&self, rev: &str) -> serde_json::Value {
        let mut found = serde_json::Value::Null;
        let done = eventually(Duration::from_secs(120), || {
            found = self
                .jobs()
                .into_iter()
                .find(|j| {
                    j["commit"] == rev || j["source"].as_str().is_some_and(|s| s.ends_with(rev))
                })
                .unwrap_or_default();
            matches!(
                found["state"].as_str(),
                Some("committed" | "failed" | "rejected")
            )
        });
        assert!(
            done,
            "job for {rev} did not end: {found}\n{}",
            std::fs::read_to_string(self.dir.path().join("publisher.log")).unwrap_or_default()
        );
        found
    }
}

fn commitment_check(chain: &DevChain, rev: &str) {
    assert_python_checks_pass(
        &script(),
        &[
            "commitment".as_ref(),
            "--chain".as_ref(),
            chain.url.as_ref(),
            "--netuid".as_ref(),
            "1".as_ref(),
            "--uid".as_ref(),
            "0".as_ref(),
            "--hotkey".as_ref(),
            SEED7_SS58.as_ref(),
            "--competition".as_ref(),
            COMPETITION.as_ref(),
            "--ns".as_ref(),
            "alice".as_ref(),
            "--name".as_ref(),
            "dereverb".as_ref(),
            "--rev".as_ref(),
            rev.as_ref(),
        ],
    );
}

#[test]
fn the_configured_model_is_checked_on_the_hub_and_committed_once_per_revision() {
    let hub = HubServer::start(&[]);
    let chain = DevChain::start(
        &serde_json::json!({"subnets": [{"netuid": 1, "tempo": 360, "neurons": [
            {"hotkey": SEED7_SS58, "coldkey": ALICE, "stake": 1_000_000_000u64, "validator_permit": false}
        ]}]}),
        100,
    );
    let mut s = Online::new(&hub, &chain);
    let d = s.dir.path().to_path_buf();
    let home = d.join("hf-home");
    model_repo(&d.join("v1"), GOOD_DOCKERFILE, 1);
    let rev1 = hub.upload_folder(&home, "alice/dereverb", &d.join("v1"));
    assert!(taominer_core::config::is_commit_id(&rev1), "{rev1}");

    s.serve_revision(&rev1);
    let job = s.job_for(&rev1);
    assert_eq!(job["state"], "committed", "{job}");
    // The hash validators compute of the repository as they fetch it (with the `.gitattributes`
    // the Hub adds), by upstream's own function.
    let snapshot = hub.python(
        &home,
        &[
            "-c",
            "import sys\nfrom huggingface_hub import snapshot_download\n\
             print(snapshot_download(sys.argv[1], revision=sys.argv[2], token=sys.argv[3], cache_dir=sys.argv[4]))",
            "alice/dereverb",
            &rev1,
            HUB_USERS[0].1,
            d.join("clone").to_str().unwrap(),
        ],
    );
    let (_, _, content) = python_hashes(Path::new(snapshot.lines().last().unwrap()), SEED7_SS58);
    assert_eq!(job["model_hash"], content.as_str(), "{job}");
    commitment_check(&chain, &rev1);
    assert_eq!(chain.rpc("dev_extrinsicCount", serde_json::json!([])), 1);

    // Restarted with the same model: nothing new, nothing written.
    s.serve_revision(&rev1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.jobs().len(), 1);
    assert_eq!(chain.rpc("dev_extrinsicCount", serde_json::json!([])), 1);

    // A new revision: committed once more.
    model_repo(&d.join("v1"), GOOD_DOCKERFILE, 2);
    let rev2 = hub.upload_folder(&home, "alice/dereverb", &d.join("v1"));
    s.serve_revision(&rev2);
    assert_eq!(s.job_for(&rev2)["state"], "committed");
    commitment_check(&chain, &rev2);
    assert_eq!(chain.rpc("dev_extrinsicCount", serde_json::json!([])), 2);

    // The axon, configured with the first revision, names the one the chain holds.
    let predictor_log = d.join("predictor.log");
    let predictor_state = d.join("predictor");
    let mut spawn = Spawn::new("predictor", &s.bus, &predictor_state)
        .arg("--config")
        .arg(s.config.to_str().unwrap())
        .arg("--set")
        .arg("predictor.listen=\"127.0.0.1:0\"")
        .log_to(&predictor_log);
    for set in model_sets(&rev1) {
        spawn = spawn.arg("--set").arg(&set);
    }
    let mut predictor = spawn.start();
    predictor.assert_ready();
    s.assert_serving(&rev2, "chain", &predictor_log);

    // A commit the Hub does not have.
    let missing = "ffffffffffffffffffffffffffffffffffffffff";
    s.serve_revision(missing);
    let job = s.job_for(missing);
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("has no revision"),
        "{job}"
    );

    // A container that would run as root is refused before the committer hears of it.
    model_repo(&d.join("v1"), "FROM python:3.11-slim\nEXPOSE 6500\n", 3);
    let rev3 = hub.upload_folder(&home, "alice/dereverb", &d.join("v1"));
    s.serve_revision(&rev3);
    let job = s.job_for(&rev3);
    assert_eq!(job["state"], "rejected", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("run as root"),
        "{job}"
    );
    assert_eq!(chain.rpc("dev_extrinsicCount", serde_json::json!([])), 2);
    commitment_check(&chain, &rev2);

    // A model repository published from a local directory: uploaded, checked, committed, and
    // the axon names it.
    model_repo(&d.join("v4"), GOOD_DOCKERFILE, 4);
    let out = minerctl(
        &s.bus,
        &["publish", d.join("v4").to_str().unwrap(), "--wait", "120"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = s
        .jobs()
        .into_iter()
        .find(|j| j["source"].as_str() == d.join("v4").to_str())
        .unwrap();
    assert_eq!(job["state"], "committed", "{job}");
    let rev4 = job["commit"].as_str().unwrap().to_string();
    commitment_check(&chain, &rev4);
    assert_eq!(chain.rpc("dev_extrinsicCount", serde_json::json!([])), 3);
    s.assert_serving(&rev4, "chain", &predictor_log);
}

#[test]
fn two_competitions_or_a_branch_name_stop_the_daemons_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = |comp: &str, rev: &str| {
        format!("[soundsright.models.{comp}]\nnamespace = \"alice\"\nname = \"m\"\nrevision = \"{rev}\"\n")
    };
    let cases = [
        (
            format!(
                "{}{}",
                model("DENOISING_16000HZ", REV),
                model("DEREVERBERATION_16000HZ", REV)
            ),
            "soundsright.models",
            "one competition per hotkey",
        ),
        (
            model("DENOISING_16000HZ", "main"),
            "soundsright.models.DENOISING_16000HZ.revision",
            "40-hex-digit commit id",
        ),
    ];
    for (i, (models, key, why)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("miner{i}.toml"));
        std::fs::write(
            &config,
            format!("[miner]\nprofile = \"soundsright\"\n{models}"),
        )
        .unwrap();
        for part in ["predictor", "publisher"] {
            let out = Command::new(bin_dir().join(format!("miner-{part}")))
                .args(["--bus", "unix:path=/nonexistent", "--config"])
                .arg(&config)
                .arg("--state-dir")
                .arg(dir.path().join(part))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{part}: {err}");
            assert!(err.contains(key) && err.contains(why), "{part}: {err}");
        }
    }
}
