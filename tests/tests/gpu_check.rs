//! The CPU rehearsal of `scripts/gpu-check`: the GPU check's whole flow (its binaries, the
//! Python driver `tests/gpu/check.py`, the table) on the CPU in f32 with tiny sizes, so that CI
//! keeps the check runnable for the session that has a GPU (docs/trainer.md, "Checking a GPU
//! machine"). The binaries are the debug builds in `target/debug/`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use taominer_tests::*;

/// Runs `scripts/gpu-check --cpu target/debug` with `envs`, returning its exit success and
/// the rows of `$OUT/gpu-check.json`.
fn rehearse(out: &Path, envs: &[(&str, &str)]) -> (bool, Vec<serde_json::Value>) {
    let started = Instant::now();
    let mut cmd = Command::new(repo_root().join("scripts/gpu-check"));
    cmd.arg("--cpu")
        .arg(bin_dir())
        .env("OUT", out)
        .env("GPU_CHECK_PYTHON", venv_python());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("run scripts/gpu-check");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!(
        "gpu-check --cpu {envs:?}: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("gpu-check.json")).expect("gpu-check.json written"),
    )
    .expect("gpu-check.json is JSON");
    let rows = report["rows"].as_array().expect("rows").clone();
    assert_eq!(
        report["ok"].as_bool(),
        Some(output.status.success()),
        "the exit status agrees with the report"
    );
    (output.status.success(), rows)
}

fn part<'a>(rows: &'a [serde_json::Value], prefix: &str) -> Vec<&'a serde_json::Value> {
    rows.iter()
        .filter(|r| r["part"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .collect()
}

/// Proves: the GPU check's flow runs end to end on the CPU and every row is present and ok:
/// the kernel checks of `miner-kernel-check --device cpu` (two ops: every op's CPU check is
/// `services/trainer/tests/kernel_check.rs`), one
/// micro-batch's gradients and loss against `LlamaForCausalLM` (1e-4 / 1e-5), 100 steps of the
/// real loop with a falling eval loss and its checkpoint scoring the same in `miner-eval` and
/// transformers, the throughput rows (ours and transformers' tokens/s) and the peak memory
/// within 1.10 × `miner-trainer plan`'s prediction, and the ONNX row answered by onnxruntime's
/// CPU provider. Then, with one gradient scaled by 1.01 (`GPU_CHECK_PERTURB=grads`), the check
/// fails on the gradients row and exits 1: the table can say FAIL.
#[test]
fn cpu_rehearsal_of_the_gpu_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let (ok, rows) = rehearse(&out, &[]);
    let wanted = [
        "grads (",
        "grads: loss",
        "train: 100 steps",
        "train: checkpoint in transformers",
        "throughput tokens/s",
        "peak memory vs miner-trainer plan",
        "onnx: CPUExecutionProvider",
        "kernel rms_norm",
        "kernel swiglu",
    ];
    for w in &wanted {
        let found = part(&rows, w);
        assert!(!found.is_empty(), "no row {w:?} in {rows:#?}");
        for r in found {
            assert_eq!(r["ok"], serde_json::json!(true), "row not ok: {r}");
        }
    }
    for r in &rows {
        assert_eq!(r["ok"], serde_json::json!(true), "row not ok: {r}");
    }
    assert!(ok, "gpu-check --cpu failed");

    let bad = dir.path().join("bad");
    let (ok, rows) = rehearse(
        &bad,
        &[("GPU_CHECK_PARTS", "grads"), ("GPU_CHECK_PERTURB", "grads")],
    );
    assert!(!ok, "a perturbed gradient must fail the check");
    let grads = part(&rows, "grads (");
    assert_eq!(grads.len(), 1, "{rows:#?}");
    assert_eq!(grads[0]["ok"], serde_json::json!(false), "{}", grads[0]);
}
