//! `miner-kernel-check` as scripts/gpu-check runs it: its JSON lines, its exit codes, and that
//! its comparison fails a wrong kernel. On a machine without a GPU it checks the CPU kernels
//! against the composed reference, which proves the harness the CUDA run relies on.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use serde_json::Value;

fn run(args: &[&str]) -> (Output, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_miner-kernel-check"))
        .args(args)
        .output()
        .expect("run miner-kernel-check");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (out, lines)
}

const KEYS: [&str; 8] = [
    "op",
    "dtype",
    "pass",
    "shape",
    "max_abs_err",
    "max_rel_err",
    "tol",
    "ok",
];

/// `--device cpu`: a line in the documented format for every op × dtype × pass (each op on
/// several shapes), every one ok, and exit 0.
#[test]
fn every_check_passes_on_the_cpu() {
    let (out, lines) = run(&["--device", "cpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The keys in the documented order (the unit test `line_format` checks the whole line).
    for raw in String::from_utf8_lossy(&out.stdout).lines() {
        let at: Vec<usize> = KEYS
            .iter()
            .map(|k| raw.find(&format!("\"{k}\":")).unwrap_or(usize::MAX))
            .collect();
        assert!(at.is_sorted() && at[7] != usize::MAX, "{raw}");
    }
    for l in &lines {
        let keys: BTreeSet<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(KEYS), "{l}");
        assert_eq!(l["ok"], true, "{l}");
        assert!(l["max_rel_err"].as_f64().unwrap() <= l["tol"].as_f64().unwrap());
    }
    let mut seen = BTreeSet::new();
    for l in &lines {
        seen.insert((
            l["op"].as_str().unwrap().to_string(),
            l["dtype"].as_str().unwrap().to_string(),
            l["pass"].as_str().unwrap().to_string(),
        ));
    }
    for op in [
        "rms_norm",
        "rope",
        "swiglu",
        "causal_lm_loss",
        "adamw",
        "attention",
    ] {
        for dtype in ["f32", "bf16"] {
            for pass in ["forward", "backward"] {
                assert!(
                    seen.contains(&(op.into(), dtype.into(), pass.into())),
                    "no {op} {dtype} {pass} line in:\n{lines:#?}"
                );
            }
        }
    }
    assert!(lines.len() > seen.len(), "several shapes per op");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// A wrong result (the hidden `--perturb`: every tested result off by 10 %) fails every check
/// and the run exits 1.
#[test]
fn a_wrong_kernel_fails() {
    let (out, lines) = run(&["--device", "cpu", "--op", "swiglu", "--perturb"]);
    assert!(!lines.is_empty());
    for l in &lines {
        assert_eq!(l["ok"], false, "{l}");
        assert!(l["max_rel_err"].as_f64().unwrap() > l["tol"].as_f64().unwrap());
    }
    assert_eq!(out.status.code(), Some(1));
}

/// A device that cannot be set up (CUDA in a build without it, an unknown op) is exit 2 with
/// no lines.
#[test]
fn setup_errors_exit_2() {
    if !cfg!(feature = "cuda") {
        let (out, lines) = run(&["--device", "cuda"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(lines.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("without CUDA"));
    }
    let (out, lines) = run(&["--device", "cpu", "--op", "no_such_op"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(lines.is_empty());
}
