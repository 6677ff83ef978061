//! The publisher online, against the local Hub server (`tests/hub/hub_server.py`, itself checked
//! against the official `huggingface_hub` client by `hub_peer.rs`).
//!
//! Proves:
//! * publish → upload → re-download → hash → `Published` carries the commit the server assigned,
//!   and the commitment handed to the committer is exactly what a validator computes: the
//!   official Python client downloads the revision as `from_pretrained` would and taoverse's own
//!   hash code hashes it (`tests/hub/validator_check.py`); the files are byte-identical;
//! * LFS objects uploaded by `huggingface_hub` are recognised (not re-sent) and the bytes it
//!   uploaded are what our download verifies;
//! * sharded checkpoints and tokenizer files are downloaded and hashed as `from_pretrained`
//!   fetches them, and a later model's commit removes the earlier one's files;
//! * the pre-flight refuses too large, wrong architecture, parameter count out of range and
//!   missing weights before any request reaches the Hub, and a too-long repo id stops the daemon;
//! * 500s, a connection dropped mid-upload and a kill -9 mid-upload cost retries, never a second
//!   commit; a wrong token fails the job with "HF token rejected" and never shows the token;
//! * `make_public_after_commit` flips the repository public after the commitment;
//! * `Jobs()` reports the upload's bytes while it runs (never more than its total, the LFS
//!   bytes), and none once the job has moved on.
//!
//! The committer runs offline here (its ledger stands in for the chain, which is another issue).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use taominer_tests::*;

const REPO: &str = "alice/tiny";

/// A configuration for an online publisher talking to `hub` as alice.
fn write_config(dir: &Path, hub: &HubServer, token: &str, extra: &str) -> PathBuf {
    let token_file = dir.join("hf-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let config = dir.join("miner.toml");
    std::fs::write(
        &config,
        format!(
            r#"[miner]
offline = false
hotkey_ss58 = "{ALICE}"

[publisher]
repo = "{REPO}"

[hub]
endpoint = "{}"
allow_insecure = true
token_file = "{}"

[retry]
initial_ms = 50
max_ms = 400

[publisher.limits."2"]
min_parameters = 0
{extra}
"#,
            hub.url,
            token_file.display()
        ),
    )
    .unwrap();
    config
}

/// A bus, an online publisher and an offline committer.
struct Setup {
    bus: Bus,
    state: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    publisher: Option<Daemon>,
    _committer: Daemon,
}

impl Setup {
    fn new(hub: &HubServer, token: &str, extra: &str) -> Setup {
        let bus = Bus::start();
        let state = tempfile::tempdir().unwrap();
        let config = write_config(state.path(), hub, token, extra);
        let log = state.path().join("publisher.log");
        let mut committer = Spawn::new("committer", &bus, &state.path().join("committer"))
            .arg("--config")
            .arg(config.to_str().unwrap())
            .arg("--set")
            .arg("miner.offline=true")
            .start();
        committer.assert_ready();
        let mut s = Setup {
            bus,
            state,
            config,
            log,
            publisher: None,
            _committer: committer,
        };
        s.start_publisher(None);
        s
    }

    fn start_publisher(&mut self, crash_at: Option<&str>) {
        let dir = self.state.path().join("publisher");
        let mut spawn = Spawn::new("publisher", &self.bus, &dir)
            .arg("--config")
            .arg(self.config.to_str().unwrap())
            .env("RUST_LOG", "debug")
            .log_to(&self.log);
        if let Some(point) = crash_at {
            spawn = spawn.env("MINERTEST_CRASH_AT", point);
        }
        let mut p = spawn.start();
        p.assert_ready();
        self.publisher = Some(p);
    }

    fn model(&self, name: &str, seed: u64) -> PathBuf {
        let dir = self.state.path().join(name);
        make_model(&dir, seed);
        dir
    }

    fn publish(&self, dir: &Path) -> std::process::Output {
        minerctl(
            &self.bus,
            &["publish", dir.to_str().unwrap(), "--wait", "60"],
        )
    }

    fn jobs(&self) -> Vec<serde_json::Value> {
        json(&minerctl(&self.bus, &["jobs", "--json"]))
            .as_array()
            .cloned()
            .unwrap()
    }

    /// One job, by id, as `minerctl jobs` shows it.
    fn job(&self, id: &str) -> serde_json::Value {
        self.jobs()
            .into_iter()
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("no job {id}"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "minerctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the validator-side check (official client + taoverse hash) on a revision.
fn validator_check(hub: &HubServer, repo: &str, revision: &str, out: &Path) -> serde_json::Value {
    let script = repo_root().join("tests/hub/validator_check.py");
    let text = hf_python(
        hub,
        &out.join("hf-home"),
        &[
            script.to_str().unwrap(),
            "--repo",
            repo,
            "--revision",
            revision,
            "--hotkey",
            ALICE,
            "--out",
            out.to_str().unwrap(),
            "--token",
            HUB_USERS[0].1,
        ],
    );
    serde_json::from_str(&text).expect("JSON from validator_check.py")
}

/// Runs the venv's Python with the official client pointed at `hub` (Xet off: this server speaks
/// Git LFS, as the Hub does for clients without Xet); returns its stdout, trimmed.
fn hf_python(hub: &HubServer, hf_home: &Path, args: &[&str]) -> String {
    hub.python(hf_home, args)
}

/// Commits of a repository on the server, oldest first (the first is the Hub's initial commit).
fn commits(hub: &HubServer, repo: &str) -> Vec<String> {
    hub.repos()[repo]["commits"]
        .as_array()
        .map(|a| a.iter().map(|c| c.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn publish_uploads_and_commits_what_validators_compute() {
    // Small multipart threshold: model.safetensors (70 kB) goes up in 20 kB parts.
    let hub = HubServer::start(&["--multipart-threshold", "50000", "--chunk-size", "20000"]);
    let setup = Setup::new(&hub, HUB_USERS[0].1, "");
    let model = setup.model("model", 1);
    std::fs::write(model.join("training_args.bin"), pseudo_random(9, 3000)).unwrap();

    let mut monitor = Command::new("dbus-monitor")
        .arg("--address")
        .arg(&setup.bus.address)
        .arg("type='signal',interface='org.taominer.Publisher1',member='Published'")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-monitor (Debian dbus-bin)");
    std::thread::sleep(Duration::from_millis(300));

    let job_id = ok(&setup.publish(&model));
    let jobs = setup.jobs();
    let job = &jobs[0];
    assert_eq!(job["id"], job_id.as_str());
    assert_eq!(job["state"], "committed", "{job}");
    let commit = job["commit"].as_str().unwrap().to_string();
    assert!(commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()));

    // The server assigned it, it is the head, and there is exactly one commit of ours.
    let repos = hub.repos();
    assert_eq!(repos[REPO]["head"], commit.as_str(), "{repos}");
    assert_eq!(repos[REPO]["private"], true, "created private");
    assert_eq!(commits(&hub, REPO).len(), 2, "initial commit + ours");

    // What a validator computes from that revision, with the official client and taoverse code.
    let out = setup.state.path().join("validator");
    let v = validator_check(&hub, REPO, &commit, &out);
    assert_eq!(v["sha"], commit.as_str());
    assert_eq!(v["model_hash"], job["model_hash"], "{v}");
    assert_eq!(v["secure_hash"], job["secure_hash"], "{v}");
    // Byte-identical: every file a validator fetched equals the source.
    for f in v["files"].as_array().unwrap() {
        let f = f.as_str().unwrap();
        let snap = Path::new(v["snapshot"].as_str().unwrap()).join(f);
        assert_eq!(
            std::fs::read(&snap).unwrap(),
            std::fs::read(model.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        v["files"],
        serde_json::json!(["config.json", "generation_config.json", "model.safetensors"])
    );
    // The whole revision, as huggingface_hub's snapshot_download gets it, is the source tree
    // byte for byte (plus the .gitattributes the Hub creates).
    let snap = setup.state.path().join("snapshot");
    hf_python(
        &hub,
        &setup.state.path().join("hf-home"),
        &[
            "-c",
            "import sys; from huggingface_hub import snapshot_download\n\
             snapshot_download(sys.argv[1], revision=sys.argv[2], token=sys.argv[3], local_dir=sys.argv[4])",
            REPO,
            &commit,
            HUB_USERS[0].1,
            snap.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(snap.join(".gitattributes")).unwrap();
    let _ = std::fs::remove_dir_all(snap.join(".cache"));
    assert_eq!(
        git_tree_id(&snap),
        git_tree_id(&model),
        "snapshot_download differs from the source"
    );
    // Validators sum every file of the revision; we reported the same.
    assert_eq!(v["total_size"], job_bytes(&setup, &job_id));

    // The committer got exactly the taoverse commitment.
    let ledger = json(&minerctl(&setup.bus, &["commitments", "--json"]));
    let expected = format!(
        "alice:tiny:{commit}:{}:2",
        v["secure_hash"].as_str().unwrap()
    );
    assert_eq!(ledger[0]["commitment"], expected.as_str());
    assert_eq!(job["commitment"], expected.as_str());

    // Published(job_id, repo, commit, model_hash, secure_hash) went out with the server's commit.
    let _ = monitor.kill();
    let signals = monitor.wait_with_output().unwrap();
    let signals = String::from_utf8_lossy(&signals.stdout);
    assert!(
        signals.contains(&format!("string \"{commit}\"")),
        "{signals}"
    );
    assert!(
        signals.contains(&format!("string \"{job_id}\"")),
        "{signals}"
    );

    // The large file went up in parts, the small binary in one PUT; nothing carried the token
    // into the log.
    let log = hub.log();
    assert!(
        log.iter()
            .any(|e| e["path"].as_str().unwrap().contains("/part/")),
        "{log:?}"
    );
    assert!(!setup.log_text().contains(HUB_USERS[0].1));
    // The verify download is gone; the staged copy too (the Hub holds the bytes now).
    assert!(!setup
        .state
        .path()
        .join("publisher/verify")
        .join(&job_id)
        .exists());
    assert!(!setup
        .state
        .path()
        .join("publisher/staged")
        .join(&job_id)
        .exists());
}

#[test]
fn sharded_models_with_tokenizers_hash_as_validators_download_them() {
    let hub = HubServer::start(&[]);
    let setup = Setup::new(&hub, HUB_USERS[0].1, "");
    let model = setup.state.path().join("sharded");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("config.json"),
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}"#,
    )
    .unwrap();
    std::fs::write(
        model.join("model-00001-of-00002.safetensors"),
        safetensors_bytes("a", 5000, 31),
    )
    .unwrap();
    std::fs::write(
        model.join("model-00002-of-00002.safetensors"),
        safetensors_bytes("b", 3000, 32),
    )
    .unwrap();
    std::fs::write(
        model.join("model.safetensors.index.json"),
        r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    std::fs::write(model.join("tokenizer.json"), r#"{"version": "1.0"}"#).unwrap();
    std::fs::write(model.join("tokenizer_config.json"), "{}").unwrap();
    // Uploaded and counted against max_bytes, but not fetched by from_pretrained, so not hashed.
    std::fs::write(model.join("README.md"), "# tiny\n").unwrap();
    std::fs::write(model.join("training_args.bin"), pseudo_random(3, 100)).unwrap();

    let job_id = ok(&setup.publish(&model));
    let job = setup.job(&job_id);
    assert_eq!(job["state"], "committed", "{job}");
    let commit = job["commit"].as_str().unwrap();
    let v = validator_check(&hub, REPO, commit, &setup.state.path().join("validator"));
    assert_eq!(
        v["files"],
        serde_json::json!([
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "tokenizer_config.json"
        ])
    );
    assert_eq!(v["model_hash"], job["model_hash"], "{v}");
    assert_eq!(v["secure_hash"], job["secure_hash"], "{v}");
    assert_eq!(v["total_size"], job_bytes(&setup, &job_id));

    // The next model replaces this one: its commit deletes the old shards, so validators see
    // (and sum) only the new model's files.
    let single = setup.model("single", 33);
    let next_id = ok(&setup.publish(&single));
    let next = setup.job(&next_id);
    let (status, body) = hub.request(
        "GET",
        &format!(
            "/api/models/{REPO}/tree/{}?recursive=true",
            next["commit"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(status, 401, "private: anonymous reads are refused");
    let listing = hf_python(
        &hub,
        &setup.state.path().join("hf-home"),
        &[
            "-c",
            "import sys; from huggingface_hub import HfApi\n\
             print(' '.join(sorted(HfApi(token=sys.argv[3]).list_repo_files(sys.argv[1], revision=sys.argv[2]))))",
            REPO,
            next["commit"].as_str().unwrap(),
            HUB_USERS[0].1,
        ],
    );
    assert_eq!(
        listing,
        ".gitattributes config.json generation_config.json model.safetensors nested/tokenizer.json",
        "{body}"
    );
}

/// Total bytes of a job's snapshot as the publisher recorded it (from its job file).
fn job_bytes(setup: &Setup, job_id: &str) -> serde_json::Value {
    let path = setup
        .state
        .path()
        .join("publisher/jobs")
        .join(format!("{job_id}.json"));
    let job: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    job["snapshot"]["bytes"].clone()
}

#[test]
fn objects_uploaded_by_huggingface_hub_are_reused_and_verified() {
    let hub = HubServer::start(&[]);
    let setup = Setup::new(&hub, HUB_USERS[0].1, "");
    let model = setup.model("model", 2);
    // huggingface_hub creates the repo and uploads the folder (LFS objects and all).
    let python_commit = hf_python(
        &hub,
        &setup.state.path().join("hf-home"),
        &[
            "-c",
            "import sys; from huggingface_hub import HfApi\n\
             api = HfApi(token=sys.argv[3]); api.create_repo(sys.argv[1], private=True, exist_ok=True)\n\
             print(api.upload_folder(repo_id=sys.argv[1], folder_path=sys.argv[2]).oid)",
            REPO,
            model.to_str().unwrap(),
            HUB_USERS[0].1,
        ],
    );
    hub.clear_log();

    let job_id = ok(&setup.publish(&model));
    let job = setup.job(&job_id);
    assert_eq!(job["state"], "committed", "{job}");
    assert_ne!(
        job["commit"],
        python_commit.as_str(),
        "our own commit, with our job marker"
    );
    // The Hub had every LFS object: nothing was re-sent, and our download verified the bytes
    // huggingface_hub uploaded against the local files' sha256.
    let log = hub.log();
    assert!(
        !log.iter()
            .any(|e| e["path"].as_str().unwrap().starts_with("/_lfs/")),
        "{log:?}"
    );
    assert!(log
        .iter()
        .any(|e| e["path"].as_str().unwrap().contains("/resolve/")));
    let (model_hash, secure_hash, _) = python_hashes_of(
        &model,
        &["config.json", "generation_config.json", "model.safetensors"],
    );
    assert_eq!(job["model_hash"], model_hash.as_str());
    assert_eq!(job["secure_hash"], secure_hash.as_str());
}

/// The taoverse hashes (Python reference) of a subset of a directory's files.
fn python_hashes_of(dir: &Path, files: &[&str]) -> (String, String, String) {
    let subset = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(dir.join(f), subset.path().join(f)).unwrap();
    }
    python_hashes(subset.path(), ALICE)
}

/// Turns a good fixture model into a bad one.
type Change = Box<dyn Fn(&Path)>;

#[test]
fn pre_flight_rejections_upload_nothing() {
    let hub = HubServer::start(&[]);
    let setup = Setup::new(
        &hub,
        HUB_USERS[0].1,
        "max_parameters = 20000\nmax_bytes = 200000\n",
    );
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "too-large",
            Box::new(|d: &Path| std::fs::write(d.join("extra.bin"), vec![1u8; 250_000]).unwrap()),
            "too large: 320",
        ),
        (
            "wrong-arch",
            Box::new(|d: &Path| {
                std::fs::write(
                    d.join("config.json"),
                    br#"{"architectures": ["GPT2LMHeadModel"]}"#,
                )
                .unwrap()
            }),
            "architecture GPT2LMHeadModel is not allowed",
        ),
        (
            "too-many-params",
            Box::new(|d: &Path| {
                std::fs::write(
                    d.join("model.safetensors"),
                    safetensors_bytes("w", 30_000, 1),
                )
                .unwrap()
            }),
            "parameter count 30000 is outside the allowed range 0..=20000",
        ),
        (
            "no-weights",
            Box::new(|d: &Path| std::fs::remove_file(d.join("model.safetensors")).unwrap()),
            "no model.safetensors and no model.safetensors.index.json",
        ),
    ];
    for (i, (name, change, message)) in cases.iter().enumerate() {
        let model = setup.model(name, 10 + i as u64);
        change(&model);
        // The dry run says the same, locally, without a daemon.
        let dry = Command::new(bin_dir().join("minerctl"))
            .args(["publish", "--dry-run", "--config"])
            .arg(&setup.config)
            .arg(&model)
            .output()
            .unwrap();
        assert_eq!(dry.status.code(), Some(65), "{name}");
        assert!(
            String::from_utf8_lossy(&dry.stderr).contains(message),
            "{name}: {}",
            String::from_utf8_lossy(&dry.stderr)
        );

        let out = setup.publish(&model);
        assert_eq!(out.status.code(), Some(65), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("rejected") && err.contains(message),
            "{name}: {err}"
        );
    }
    assert!(setup.jobs().iter().all(|j| j["state"] == "rejected"));
    // Not one request reached the Hub.
    assert_eq!(hub.log(), Vec::<serde_json::Value>::new());

    // A good model passes the dry run, which prints what would be uploaded.
    let good = setup.model("good", 20);
    let dry = Command::new(bin_dir().join("minerctl"))
        .args(["publish", "--dry-run", "--config"])
        .arg(&setup.config)
        .arg(&good)
        .output()
        .unwrap();
    let text = ok(&dry);
    assert!(
        text.contains("parameters   17500 (allowed 0..=20000)"),
        "{text}"
    );
    assert!(
        text.contains("model.safetensors") && text.contains("local model hash"),
        "{text}"
    );
    assert_eq!(hub.log(), Vec::<serde_json::Value>::new());

    // A repo id validators would refuse stops the daemon with the key and the measured length.
    let p2 = setup.state.path().join("p2");
    let long = Spawn::new("publisher", &setup.bus, &p2)
        .arg("--config")
        .arg(setup.config.to_str().unwrap())
        .arg("--set")
        .arg("publisher.repo=alice/abcdefghijklmnopqrstuvwxyzabcdefghij")
        .log_to(&setup.state.path().join("p2.log"));
    let mut d = long.start();
    let st = d.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(st.code(), Some(78));
    let log = std::fs::read_to_string(setup.state.path().join("p2.log")).unwrap();
    assert!(
        log.contains("publisher.repo") && log.contains("between 3 and 38 characters (it has 42)"),
        "{log}"
    );
}

#[test]
fn server_errors_and_dropped_connections_are_retried_without_a_second_commit() {
    let hub = HubServer::start(&[]);
    let setup = Setup::new(&hub, HUB_USERS[0].1, "");
    let model = setup.model("model", 3);
    hub.faults(serde_json::json!([
        {"method": "POST", "path_regex": "/commit/", "status": 500, "count": 2},
        {"method": "PUT", "path_regex": "^/_lfs/", "drop_after_bytes": 1000, "count": 1},
    ]));
    let job_id = ok(&setup.publish(&model));
    let job = setup.job(&job_id);
    assert_eq!(job["state"], "committed", "{job}");
    assert_eq!(job["error"], "", "no error left once it succeeded");
    let log = hub.log();
    let commit_500s = log
        .iter()
        .filter(|e| e["path"].as_str().unwrap().contains("/commit/") && e["status"] == 500)
        .count();
    assert_eq!(commit_500s, 2, "{log:?}");
    assert_eq!(
        commits(&hub, REPO).len(),
        2,
        "initial commit + exactly one of ours"
    );
    assert_eq!(hub.repos()[REPO]["head"], job["commit"]);
    assert!(setup.log_text().contains("retrying"), "retries are logged");
}

#[test]
fn killed_mid_upload_resumes_and_commits_once() {
    for point in ["publisher.lfs-uploaded", "publisher.hub-committed"] {
        let hub = HubServer::start(&[]);
        let mut setup = Setup::new(&hub, HUB_USERS[0].1, "");
        // Replace the running publisher with one that dies at `point`.
        setup.publisher.take().unwrap().kill9();
        setup.start_publisher(Some(point));
        let model = setup.model("model", 4);
        let id = ok(&minerctl(&setup.bus, &["publish", model.to_str().unwrap()]));
        let st = setup
            .publisher
            .as_mut()
            .unwrap()
            .wait_exit(Duration::from_secs(30))
            .expect("the publisher kills itself at the crash point");
        assert!(!st.success(), "{point}");
        setup.start_publisher(None);
        assert!(
            eventually(Duration::from_secs(60), || setup
                .jobs()
                .iter()
                .any(|j| j["id"] == id.as_str() && j["state"] == "committed")),
            "{point}: {:?}",
            setup.jobs()
        );
        assert_eq!(commits(&hub, REPO).len(), 2, "{point}: one commit of ours");
        let job = setup.job(&id);
        assert_eq!(hub.repos()[REPO]["head"], job["commit"], "{point}");
    }
}

#[test]
fn jobs_report_the_upload_bytes_while_it_runs_and_none_after() {
    let hub = HubServer::start(&[]);
    let setup = Setup::new(&hub, HUB_USERS[0].1, "");
    let model = setup.model("model", 6);
    // model.safetensors is the only LFS file (by the Hub's patterns); its bytes are the total.
    let total = std::fs::metadata(model.join("model.safetensors"))
        .unwrap()
        .len();
    // The Hub refuses the LFS verify a few times: between the retries the upload has sent
    // every byte and waits, long enough for `minerctl jobs` to see it.
    hub.faults(serde_json::json!([
        {"method": "POST", "path_regex": "^/_lfs/.*/verify", "status": 500, "count": 4},
    ]));
    let id = ok(&minerctl(&setup.bus, &["publish", model.to_str().unwrap()]));
    let mut seen = Vec::new();
    let committed = eventually(Duration::from_secs(60), || {
        let job = setup.job(&id);
        let (up, of) = (
            job["uploaded_bytes"].as_u64().unwrap(),
            job["total_bytes"].as_u64().unwrap(),
        );
        seen.push((job["state"].as_str().unwrap().to_string(), up, of));
        job["state"] == "committed"
    });
    assert!(committed, "{seen:?}");
    assert!(
        seen.iter().all(|(_, up, of)| up <= of),
        "never more than the total: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|(state, _, of)| state == "staged" || *of == 0),
        "bytes only while uploading: {seen:?}"
    );
    assert!(
        seen.contains(&("staged".to_string(), total, total)),
        "all {total} bytes seen sent while the verify was retried: {seen:?}"
    );
}

#[test]
fn a_wrong_token_fails_the_job_and_never_shows() {
    let hub = HubServer::start(&[]);
    let secret = "tok-WRONG-not-for-logs-31337";
    let setup = Setup::new(&hub, secret, "");
    let model = setup.model("model", 5);
    let out = setup.publish(&model);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed") && err.contains("HF token rejected"),
        "{err}"
    );
    let jobs = minerctl(&setup.bus, &["jobs", "--json"]);
    let status = minerctl(&setup.bus, &["status"]);
    for text in [
        setup.log_text(),
        String::from_utf8_lossy(&jobs.stdout).into_owned(),
        String::from_utf8_lossy(&status.stdout).into_owned(),
        err.into_owned(),
    ] {
        assert!(!text.contains(secret), "the token leaked: {text}");
    }
    assert!(setup.log_text().contains("HF token rejected"));
    assert!(hub.repos().get(REPO).is_none(), "nothing was created");
}

#[test]
fn the_repository_is_made_public_after_the_commitment() {
    let hub = HubServer::start(&[]);
    let setup =
        Setup::new(&hub, HUB_USERS[0].1, "").restart_with("make_public_after_commit = true");
    let model = setup.model("model", 6);
    ok(&setup.publish(&model));
    assert!(
        eventually(Duration::from_secs(20), || hub.repos()[REPO]["private"]
            == false),
        "{}",
        hub.repos()
    );
}

impl Setup {
    /// The same setup with a line added to `[publisher]` and the publisher restarted.
    fn restart_with(mut self, line: &str) -> Setup {
        self.publisher.take().unwrap().kill9();
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replacen("[publisher]\n", &format!("[publisher]\n{line}\n"), 1);
        std::fs::write(&self.config, text).unwrap();
        self.start_publisher(None);
        self
    }
}
