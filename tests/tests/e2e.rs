//! The whole appliance, end to end: a real dbus-daemon, the four daemons online, the local Hub
//! server (`tests/hub/hub_server.py`) and the dev chain (`tests/devchain/`), each held to the real
//! protocol by its own peer test.
//!
//! Proves, in one run: the trainer trains a tiny LLaMA past its upload threshold → each candidate
//! becomes exactly one publish job → uploaded, re-downloaded and hashed → committed exactly once
//! (one extrinsic per candidate) → a validator using only the official clients
//! (`tests/e2e/validator.py`: the `bittensor` SDK reads the commitment, `huggingface_hub`
//! downloads the model at that commit, taoverse's hash code recomputes the secure hash,
//! `transformers` loads the model and computes its loss) accepts the last one; meanwhile the
//! predictor, gated by the committer's metagraph, has a new ONNX model swapped in and answers the
//! official `Dendrite` with the new model's prediction.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use taominer_tests::axon::{
    dendrite_wallets, make_images, make_model, official_dendrite_check, ort_library, predict_cli,
};
use taominer_tests::*;

const REPO: &str = "alice/tiny-e2e";

fn config(dir: &Path, chain: &DevChain, hub: &HubServer) -> PathBuf {
    let extra = format!(
        r#"eval_sequences = 16
max_steps = 60
eval_every = 20
checkpoint_every = 20
avg_loss_upload_threshold = 5.5

[predictor]
model_path = "{model}"
ort_library = "{ort}"
listen = "127.0.0.1:0"
max_body_bytes = 300000
watch_interval_ms = 200
metagraph_refresh_s = 2
"#,
        model = dir.join("model.onnx").display(),
        ort = ort_library().display(),
    );
    online_config(dir, chain, hub, REPO, &extra)
}

fn logs(dir: &Path) -> String {
    ["trainer", "publisher", "committer", "predictor"]
        .iter()
        .map(|p| {
            format!(
                "--- {p}.log\n{}",
                std::fs::read_to_string(dir.join(format!("{p}.log"))).unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn trained_published_committed_accepted_and_served() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Fixtures: a corpus and its tokenizer, two ONNX models, an image, the validator's wallet.
    make_training_data(d);
    make_model(&d.join("model.onnx"), 3, &[]);
    make_model(&d.join("model-b.onnx"), 11, &[]);
    make_images(&d.join("images"));
    let wallets = d.join("wallets");
    let (validator, _) = dendrite_wallets(&wallets);

    let chain = DevChain::start(
        &serde_json::json!({"subnets": [{"netuid": 1, "tempo": 360, "neurons": [
            {"hotkey": SEED7_SS58, "coldkey": ALICE, "stake": 1_000_000_000u64, "validator_permit": false},
            {"hotkey": validator.as_str(), "coldkey": ALICE, "stake": 5_000_000_000_000u64, "validator_permit": true}
        ]}]}),
        100,
    );
    let hub = HubServer::start(&[]);
    let config = config(d, &chain, &hub);
    let bus = Bus::start();
    let _committer = start_configured("committer", &bus, d, &config);
    let _publisher = start_configured("publisher", &bus, d, &config);
    let _predictor = start_configured("predictor", &bus, d, &config);
    let predictor_status = || json(&minerctl(&bus, &["predictor", "status", "--json"]));
    assert!(
        eventually(Duration::from_secs(30), || predictor_status()["state"]
            == "serving"),
        "{}",
        logs(d)
    );
    let version_a = predictor_status()["model_version"].clone();
    let mut trainer = start_configured("trainer", &bus, d, &config);

    // While the trainer runs: a new model for the axon.
    let incoming = d.join("model.incoming");
    std::fs::copy(d.join("model-b.onnx"), &incoming).unwrap();
    std::fs::rename(&incoming, d.join("model.onnx")).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || predictor_status()
            ["model_version"]
            != version_a),
        "model B never served: {}",
        logs(d)
    );

    let finished = eventually(Duration::from_secs(300), || {
        json(&minerctl(&bus, &["train", "status", "--json"]))["state"] == "finished"
    });
    assert!(finished, "training did not finish: {}", logs(d));
    let candidates = json(&minerctl(&bus, &["train", "status", "--json"]))["candidates"]
        .as_u64()
        .unwrap();
    assert!(candidates >= 1, "no candidate: {}", logs(d));
    let mut jobs = Vec::new();
    let settled = eventually(Duration::from_secs(240), || {
        jobs = json(&minerctl(&bus, &["jobs", "--json"]))
            .as_array()
            .cloned()
            .unwrap_or_default();
        jobs.len() as u64 == candidates && jobs.iter().all(|j| j["state"] == "committed")
    });
    assert!(settled, "jobs {jobs:?}\n{}", logs(d));
    // Exactly once: one extrinsic per candidate, each at its own block.
    assert_eq!(
        chain.rpc("dev_extrinsicCount", serde_json::json!([])),
        candidates
    );
    assert!(jobs.iter().all(|j| j["block"].as_u64().unwrap_or(0) > 0));
    let _ = trainer.terminate();

    // A validator accepts what the chain holds (the last candidate).
    let last = jobs.last().unwrap();
    let out = d.join("validator");
    let text = run_ok(
        Command::new(venv_python())
            .arg(repo_root().join("tests/e2e/validator.py"))
            .args(["--chain", &chain.url, "--netuid", "1", "--uid", "0"])
            .args(["--hotkey", SEED7_SS58, "--token", HUB_USERS[0].1])
            .arg("--out")
            .arg(&out)
            .arg("--text")
            .arg(d.join("corpus.txt"))
            .env("HF_ENDPOINT", &hub.url)
            .env("HF_HUB_DISABLE_XET", "1")
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HOME", d.join("hf-home")),
        "tests/e2e/validator.py",
    );
    let text = String::from_utf8_lossy(&text);
    println!("{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
    assert!(
        text.contains(last["commit"].as_str().unwrap()),
        "the chain holds the last candidate: {text} vs {last}"
    );

    // The axon answers the official Dendrite with model B's prediction, and only validators.
    let port: u16 = predictor_status()["listen"]
        .as_str()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            std::fs::read_to_string(d.join("predictor.log"))
                .unwrap_or_default()
                .split("axon listening on 127.0.0.1:")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse().ok())
                .expect("the axon's port in its log")
        });
    let image = d.join("images/wide.jpg");
    let expect = predict_cli(&d.join("model-b.onnx"), std::slice::from_ref(&image), None)[0];
    official_dendrite_check(&wallets, port, SEED7_SS58, &image, expect, 300_000);
    // No secret in any log.
    let all = logs(d);
    assert!(
        !all.contains(HUB_USERS[0].1),
        "the HF token leaked into a log"
    );
}
