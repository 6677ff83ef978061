//! The predictor: the real ONNX Runtime library (from the PyPI `onnxruntime` wheel in the test
//! venv), models the tests build with the `onnx` package (`tests/predictor/make_model.py`), the
//! official `bittensor` Dendrite, and our signed Rust client (`taominer_tests::axon`) for load.
//!
//! Proves: preprocessing equals torchvision's bit for bit on the same pixels and ONNX Runtime runs
//! equal Python `onnxruntime`'s (1e-5); the official Dendrite gets predictions and the right
//! status for strangers (403), tampered signatures (401), replays (401), large bodies (413) and
//! unknown synapses (404); a model replaced under load swaps exactly once with no failed request
//! and a corrupt or wrong-shaped file is refused while the old model serves; a flood of unsigned,
//! badly signed and unknown callers is refused while a validator's queries are all answered;
//! online, the validator set comes from the committer's metagraph (permit, stake; unregistered
//! refused), survives the committer going away through the disk cache, and the axon is announced.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taominer_tests::axon::{
    dendrite_wallets, make_images, make_model, official_dendrite_check, ort_library, predict_cli,
    Spoil,
};
use taominer_tests::predictor::{key, Setup, AXON};
use taominer_tests::*;

fn python(args: &[&str], what: &str) -> String {
    let out = run_ok(
        Command::new(venv_python())
            .args(args)
            .current_dir(repo_root()),
        what,
    );
    String::from_utf8_lossy(&out).into_owned()
}

fn script(name: &str) -> String {
    repo_root()
        .join("tests/predictor")
        .join(name)
        .display()
        .to_string()
}

fn base64_of(path: &Path) -> String {
    taominer_tests::axon::base64(&std::fs::read(path).unwrap())
}

/// Replaces a file atomically, as `mv` does.
fn replace(path: &Path, from: &Path) {
    let tmp = path.with_extension("incoming");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn preprocessing_and_inference_match_torchvision_and_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    make_images(&images);
    let model = dir.path().join("m.onnx");
    make_model(&model, 1, &["--size", "96", "128"]);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let tensors = dir.path().join("tensors");
    let mut cmd = Command::new(bin_dir().join("miner-predictor"));
    cmd.arg("predict")
        .arg("--model")
        .arg(&model)
        .arg("--ort-library")
        .arg(ort_library())
        .arg("--tensor-out")
        .arg(&tensors)
        .args(&files);
    let ours = dir.path().join("ours.jsonl");
    std::fs::write(&ours, run_ok(&mut cmd, "miner-predictor predict")).unwrap();
    let report = python(
        &[
            &script("reference.py"),
            "check",
            "--model",
            model.to_str().unwrap(),
            "--ours",
            ours.to_str().unwrap(),
            "--tensors",
            tensors.to_str().unwrap(),
            "--images",
            images.to_str().unwrap(),
        ],
        "reference.py check (torchvision + onnxruntime)",
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["rows"].as_array().unwrap().len(), files.len());
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");

    // The same tensor through --tensor gives the same prediction as through the image.
    let wide = tensors.join("wide.jpg.f32");
    let mut cmd = Command::new(bin_dir().join("miner-predictor"));
    cmd.args(["predict", "--model"])
        .arg(&model)
        .arg("--ort-library")
        .arg(ort_library())
        .arg("--tensor")
        .arg(&wide);
    let via_tensor: serde_json::Value =
        serde_json::from_slice(&run_ok(&mut cmd, "predict --tensor")).unwrap();
    let via_image = predict_cli(&model, &[images.join("wide.jpg")], None)[0];
    assert_eq!(via_tensor["prediction"].as_f64().unwrap(), via_image);
}

#[test]
fn models_that_do_not_fit_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let run = |model: &Path, sets: &[&str]| {
        let mut cmd = Command::new(bin_dir().join("miner-predictor"));
        cmd.args([
            "--set",
            &format!(
                "predictor.ort_library={:?}",
                ort_library().display().to_string()
            ),
        ]);
        for s in sets {
            cmd.args(["--set", s]);
        }
        cmd.arg("predict")
            .arg("--model")
            .arg(model)
            .output()
            .unwrap()
    };
    let two = dir.path().join("two.onnx");
    make_model(&two, 1, &["--two-inputs"]);
    let out = run(&two, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has 2 inputs"),
        "{out:?}"
    );

    let m = dir.path().join("m.onnx");
    make_model(&m, 1, &["--size", "64", "64"]);
    let out = run(&m, &["predictor.image_size=[32, 32]"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("predictor.image_size is [32, 32]"),
        "{out:?}"
    );

    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let out = run(&junk, &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a usable ONNX model"),
        "{out:?}"
    );

    let out = run(
        &m,
        &["predictor.ort_library=\"/nonexistent/libonnxruntime.so\""],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ONNX Runtime library /nonexistent"),
        "{out:?}"
    );

    // A bad [predictor] value exits 78 naming the key.
    let out = run(&m, &["predictor.output=\"odds\""]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("predictor.output"),
        "{out:?}"
    );

    // A model whose output is already a probability, with the output configured so.
    let p = dir.path().join("p.onnx");
    make_model(&p, 1, &["--probability"]);
    let l = dir.path().join("l.onnx");
    make_model(&l, 1, &[]);
    let img = dir.path().join("images");
    make_images(&img);
    let probability = {
        let mut cmd = Command::new(bin_dir().join("miner-predictor"));
        cmd.args([
            "--set",
            "predictor.output=\"probability\"",
            "predict",
            "--model",
        ])
        .arg(&p)
        .arg("--ort-library")
        .arg(ort_library())
        .arg(img.join("square.png"));
        let v: serde_json::Value = serde_json::from_slice(&run_ok(&mut cmd, "predict")).unwrap();
        v["prediction"].as_f64().unwrap()
    };
    let logit = predict_cli(&l, &[img.join("square.png")], None)[0];
    assert!(
        (probability - logit).abs() < 1e-6,
        "{probability} vs {logit}"
    );
}

#[test]
fn the_official_dendrite_is_answered_and_refused_with_upstream_status_codes() {
    let mut s = Setup::new();
    make_model(&s.model, 3, &[]);
    let images = s.path("images");
    make_images(&images);
    let wallets = s.path("wallets");
    let (validator, _) = dendrite_wallets(&wallets);
    let max_body = 300_000;
    s.start(&[
        format!("predictor.allow=[{validator:?}]"),
        format!("predictor.max_body_bytes={max_body}"),
    ]);
    let expect = predict_cli(&s.model, &[images.join("wide.jpg")], None)[0];
    official_dendrite_check(
        &wallets,
        s.port,
        AXON,
        &images.join("wide.jpg"),
        expect,
        max_body,
    );
    // Counters: the good query and the first of the replayed pair were served.
    assert_eq!(s.status()["served"], 2);
    assert_eq!(s.prop("State"), "variant       serving");
    // The public probe says the state and nothing else (the counters are on D-Bus).
    let health = s.get("/healthz");
    assert!(health.ends_with("{\"state\":\"serving\"}"), "{health}");
}

#[test]
fn a_model_replaced_under_load_swaps_once_and_a_corrupt_one_is_refused() {
    let mut s = Setup::new();
    let (a, b, bad_shape) = (s.path("a.onnx"), s.path("b.onnx"), s.path("big.onnx"));
    make_model(&a, 11, &[]);
    make_model(&b, 12, &[]);
    make_model(&bad_shape, 13, &["--size", "32", "32"]);
    let images = s.path("images");
    make_images(&images);
    let image = images.join("wide.jpg");
    let (pa, pb) = (
        predict_cli(&a, std::slice::from_ref(&image), None)[0],
        predict_cli(&b, std::slice::from_ref(&image), None)[0],
    );
    assert!(
        (pa - pb).abs() > 1e-4,
        "the two models must differ: {pa} {pb}"
    );
    replace(&s.model, &a);
    let v = 21;
    s.start(&[format!("predictor.allow=[{:?}]", key(v).ss58())]);
    assert!(s.get("/healthz").contains("\"state\":\"serving\""));
    let version_a = s.status()["model_version"].clone();

    let b64 = Arc::new(base64_of(&image));
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, f64)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let mut c = s.client(v, &format!("load-{i}"));
            let (b64, stop, seen, failures) =
                (b64.clone(), stop.clone(), seen.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match c.query(&b64, Spoil::None) {
                        Ok(a) if a.status == 200 => seen
                            .lock()
                            .unwrap()
                            .push((Instant::now(), a.prediction().unwrap())),
                        Ok(a) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", a.status, a.body)),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    // Signals on the bus, to count ModelSwapped.
    let mut monitor = Command::new("dbus-monitor")
        .args([
            "--address",
            &s.bus.address,
            "type='signal',interface='org.taominer.Predictor1'",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dbus-monitor (Debian dbus-bin)");
    std::thread::sleep(Duration::from_millis(800));
    replace(&s.model, &b);
    assert!(
        eventually(Duration::from_secs(20), || s.status()["model_version"]
            != version_a),
        "B never served: {}",
        s.log()
    );
    let version_b = s.status()["model_version"].clone();
    std::thread::sleep(Duration::from_millis(500));
    // A corrupt file (truncated B): refused, B keeps serving.
    let bytes = std::fs::read(&b).unwrap();
    let corrupt = s.path("corrupt.onnx");
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    replace(&s.model, &corrupt);
    assert!(
        eventually(Duration::from_secs(20), || s.status()["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("not a usable ONNX model"))),
        "corrupt model not refused: {}",
        s.log()
    );
    // Reload() says the same, over D-Bus and through minerctl, while serving goes on.
    let (ok, err) = s.reload();
    assert!(!ok && err.contains("not a usable ONNX model"), "{err}");
    let out = minerctl(&s.bus, &["predictor", "reload"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a usable ONNX model"),
        "{out:?}"
    );
    let status = json(&minerctl(&s.bus, &["predictor", "status", "--json"]));
    assert_eq!(status["model_version"], version_b);
    assert_eq!(status["state"], "serving");
    // Another input size is refused too: requests in flight are prepared for the serving size.
    replace(&s.model, &bad_shape);
    let (ok, err) = s.reload();
    assert!(!ok && err.contains("restart the predictor"), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(s.status()["model_version"], version_b);
    let _ = monitor.kill();
    let signals = {
        use std::io::Read;
        let mut out = String::new();
        monitor
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let _ = monitor.wait();
        out
    };
    assert_eq!(
        signals.matches("member=ModelSwapped").count(),
        1,
        "one swap, one ModelSwapped: {signals}"
    );
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|(t, _)| *t);
    assert!(seen.len() > 10, "too few answers: {}", seen.len());
    let mut switches = 0;
    for pair in seen.windows(2) {
        if (pair[0].1 - pair[1].1).abs() > 1e-9 {
            switches += 1;
        }
    }
    assert!(
        (seen[0].1 - pa).abs() < 1e-9,
        "first answer is not model A's"
    );
    assert!(
        (seen[seen.len() - 1].1 - pb).abs() < 1e-9,
        "last answer is not model B's"
    );
    assert_eq!(switches, 1, "predictions switched {switches} times");
    assert!(s.log().contains("keeps serving"), "{}", s.log());
}

#[test]
fn a_flood_of_bad_requests_is_refused_while_the_validator_is_answered() {
    let mut s = Setup::new();
    make_model(&s.model, 5, &[]);
    let images = s.path("images");
    make_images(&images);
    let b64 = Arc::new(base64_of(&images.join("square.jpg")));
    let (validator, stranger) = (31, 32);
    s.start(&[format!("predictor.allow=[{:?}]", key(validator).ss58())]);

    let stop = Arc::new(AtomicBool::new(false));
    let bad_answers: Arc<Mutex<Vec<u16>>> = Arc::default();
    let attackers: Vec<_> = (0..4)
        .map(|i| {
            // Unsigned and badly signed with the validator's hotkey, and a stranger's valid ones.
            let (k, spoil) = match i {
                0 => (validator, Spoil::Unsigned),
                1 => (validator, Spoil::BadSignature),
                _ => (stranger, Spoil::None),
            };
            let mut c = s.client(k, &format!("flood-{i}"));
            let (b64, stop, bad) = (b64.clone(), stop.clone(), bad_answers.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(a) = c.query(&b64, spoil) {
                        bad.lock().unwrap().push(a.status);
                    }
                }
            })
        })
        .collect();
    let mut good = s.client(validator, "validator");
    let answered = AtomicUsize::new(0);
    for _ in 0..40 {
        let a = good.query(&b64, Spoil::None).expect("validator query");
        assert_eq!(a.status, 200, "{}", a.body);
        answered.fetch_add(1, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    for t in attackers {
        t.join().unwrap();
    }
    let bad = bad_answers.lock().unwrap();
    assert!(bad.len() > 40, "flood too small: {}", bad.len());
    assert!(
        bad.iter().all(|&c| c == 401 || c == 403),
        "{:?}",
        bad.iter()
            .filter(|&&c| c != 401 && c != 403)
            .collect::<Vec<_>>()
    );
    assert!(bad.contains(&401) && bad.contains(&403));
    assert_eq!(answered.load(Ordering::Relaxed), 40);
}

#[test]
fn online_the_metagraph_decides_and_its_cache_outlives_the_committer() {
    let (validator, no_permit, poor, stranger) = (41, 42, 43, 44);
    let fixture = serde_json::json!({
        "max_space": 3100,
        "subnets": [{"netuid": 1, "tempo": 100, "serving_rate_limit": 0, "neurons": [
            {"hotkey": SEED7_SS58, "coldkey": ALICE, "stake": 1_000_000_000u64, "validator_permit": false},
            {"hotkey": key(validator).ss58(), "coldkey": ALICE, "stake": 50_000_000_000u64, "validator_permit": true},
            {"hotkey": key(no_permit).ss58(), "coldkey": ALICE, "stake": 50_000_000_000u64, "validator_permit": false},
            {"hotkey": key(poor).ss58(), "coldkey": ALICE, "stake": 1_000_000_000u64, "validator_permit": true},
        ]}]
    });
    let chain = DevChain::start(&fixture, 100);
    let mut s = Setup::new();
    make_model(&s.model, 7, &[]);
    let images = s.path("images");
    make_images(&images);
    let b64 = base64_of(&images.join("square.jpg"));
    let config = s.path("miner.toml");
    std::fs::write(
        &config,
        format!(
            "[miner]\noffline = false\nprofile = \"bitmind\"\nnetuid = 1\nchain_endpoint = \"{}\"\n\
             hotkey_ss58 = \"{SEED7_SS58}\"\nhotkey_file = \"{}\"\n",
            chain.url,
            s.path("hotkey").display()
        ),
    )
    .unwrap();
    let mut committer = Spawn::new("committer", &s.bus, &s.path("committer"))
        .log_to(&s.path("committer.log"))
        .arg("--config")
        .arg(config.to_str().unwrap())
        .start();
    committer.assert_ready();
    let sets = |s: &Setup| {
        vec![
            "predictor.min_stake_tao=10".to_string(),
            "predictor.metagraph_refresh_s=1".to_string(),
            "predictor.announce_ip=\"10.1.2.3\"".to_string(),
            format!("miner.netuid=1"),
            format!("miner.offline=false"),
            format!("miner.chain_endpoint={:?}", chain.url),
            format!("miner.hotkey_ss58={SEED7_SS58:?}"),
            format!("predictor.model_path={:?}", s.model.display().to_string()),
        ]
    };
    s.start(&sets(&s));
    let status = |s: &Setup, k: u8, uuid: &str| {
        s.client(k, uuid)
            .query(&b64, Spoil::None)
            .map(|a| (a.status, a.body.to_string()))
            .unwrap()
    };
    let mut last = (0, String::new());
    assert!(
        eventually(Duration::from_secs(20), || {
            last = status(&s, validator, "v0");
            last.0 == 200
        }),
        "validator never admitted: {last:?}\n{}\n{}",
        s.log(),
        String::from_utf8_lossy(&minerctl(&s.bus, &["metagraph", "--json"]).stdout)
    );
    let (code, body) = status(&s, no_permit, "n");
    assert!(
        code == 403 && body.contains("no validator permit"),
        "{code} {body}"
    );
    let (code, body) = status(&s, poor, "p");
    assert!(code == 403 && body.contains("TAO staked"), "{code} {body}");
    let (code, body) = status(&s, stranger, "s");
    assert!(
        code == 403 && body.contains("not registered on netuid 1"),
        "{code} {body}"
    );

    // The axon was announced on chain through the committer.
    assert!(
        eventually(Duration::from_secs(20), || {
            let out = minerctl(&s.bus, &["metagraph", "--json"]);
            String::from_utf8_lossy(&out.stdout).contains(&format!("10.1.2.3:{}", s.port))
        }),
        "axon not announced: {}",
        s.log()
    );

    // The committer goes away, the predictor restarts: the cached metagraph keeps the door as
    // it was (open to the validator, shut to the rest).
    committer.terminate();
    if let Some(mut p) = s.predictor.take() {
        p.terminate();
    }
    s.start(&sets(&s));
    assert_eq!(status(&s, validator, "v1").0, 200, "{}", s.log());
    assert_eq!(status(&s, stranger, "s1").0, 403);
    assert!(s.log().contains("cached metagraph"), "{}", s.log());
}

#[test]
fn serving_without_a_hotkey_exits_78_naming_the_key() {
    let s = Setup::new();
    make_model(&s.model, 1, &[]);
    let mut d = Spawn::new("predictor", &s.bus, &s.path("state"))
        .arg("--set")
        .arg(&format!(
            "predictor.model_path={:?}",
            s.model.display().to_string()
        ))
        .arg("--set")
        .arg("miner.hotkey_file=\"/nonexistent/hotkey\"")
        .log_to(&s.path("predictor.log"))
        .start();
    let status = d.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(78));
    assert!(s.log().contains("miner.hotkey_file"), "{}", s.log());
}
