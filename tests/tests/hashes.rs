//! `minerctl hash` against the Python reference implementations (taoverse and SoundsRight code,
//! run by python3) and git, on generated directories with nesting, empty files, executables,
//! non-ASCII names and files larger than the hash block size.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use taominer_tests::*;

fn hash_json(dir: &std::path::Path, profile: &str) -> serde_json::Value {
    let out = Command::new(bin_dir().join("minerctl"))
        .args([
            "hash",
            dir.to_str().unwrap(),
            "--hotkey",
            ALICE,
            "--profile",
            profile,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // stderr is a pipe here: the progress bar is not drawn, nothing but the result is printed.
    assert!(
        out.stderr.is_empty(),
        "no progress off a terminal: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn hashes_match_the_python_reference_and_git() {
    for seed in 0..4u64 {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        make_model(r, seed);
        std::fs::create_dir_all(r.join("b/a")).unwrap();
        std::fs::create_dir_all(r.join("A")).unwrap();
        std::fs::write(r.join("empty"), b"").unwrap();
        std::fs::write(r.join("b/a/ünïcode.bin"), vec![seed as u8; 200_000]).unwrap();
        std::fs::write(r.join("A/Z"), b"upper").unwrap();
        std::fs::write(r.join("b/z"), b"z").unwrap();
        std::fs::write(r.join(".lock"), b"skipped by soundsright").unwrap();
        let exe = r.join("run.sh");
        std::fs::write(&exe, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

        let (model_hash, secure_hash, content_hash) = python_hashes(r, ALICE);
        let ours = hash_json(r, "pretraining");
        assert_eq!(ours["model_hash"], model_hash.as_str(), "seed {seed}");
        assert_eq!(ours["secure_hash"], secure_hash.as_str(), "seed {seed}");
        let ours = hash_json(r, "soundsright");
        assert_eq!(ours["model_hash"], content_hash.as_str(), "seed {seed}");
        assert!(ours["secure_hash"].is_null());

        // The revision of an offline snapshot is git's tree id: check against git itself.
        assert_eq!(
            taominer_core::formats::hash::git_tree_id(r).unwrap(),
            git_tree_id(r),
            "seed {seed}"
        );
    }
}

#[test]
fn hash_refuses_a_bad_hotkey() {
    let d = tempfile::tempdir().unwrap();
    make_model(d.path(), 0);
    let out = Command::new(bin_dir().join("minerctl"))
        .args([
            "hash",
            d.path().to_str().unwrap(),
            "--hotkey",
            "5Grwva-typo",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SS58"));
}
