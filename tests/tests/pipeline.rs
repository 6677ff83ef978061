//! The offline pipeline end to end over a real `dbus-daemon`, with the four real daemon binaries.
//!
//! Proves: each daemon sends READY=1 once its name is owned; `minerctl publish` carries a model
//! through publisher and committer; the ledger holds exactly the commitment validators would
//! expect, where the expected string is computed independently — the model hash by taoverse's
//! own Python code and the revision by git itself; a trainer without data and a predictor
//! without a model answer `org.taominer.Error.InvalidInput`, naming the key to set, to a plain
//! `dbus-send` client; SIGTERM gives STOPPING=1 and a clean exit.

use std::process::Command;
use std::time::Duration;

use taominer_tests::*;

#[test]
fn offline_pipeline_commits_the_expected_string() {
    let bus = Bus::start();
    let state = tempfile::tempdir().unwrap();
    let mut daemons: Vec<Daemon> = ["trainer", "predictor", "publisher", "committer"]
        .into_iter()
        .map(|p| Spawn::new(p, &bus, &state.path().join(p)).start())
        .collect();
    for d in &mut daemons {
        d.assert_ready();
    }

    let status = json(&minerctl(&bus, &["status", "--json"]));
    let rows = status.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["up"] == true), "{status}");

    let model = state.path().join("model");
    make_model(&model, 1);
    let out = minerctl(&bus, &["publish", model.to_str().unwrap(), "--wait", "60"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job_id = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let (model_hash, secure_hash, _) = python_hashes(&model, ALICE);
    let tree = git_tree_id(&model);
    let expected = format!("offline:model:{tree}:{secure_hash}:2");

    let ledger = json(&minerctl(&bus, &["commitments", "--json"]));
    let entries = ledger.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{ledger}");
    assert_eq!(entries[0]["commitment"], expected.as_str());
    assert_eq!(entries[0]["job_id"], job_id.as_str());
    assert_eq!(
        entries[0]["data_type"],
        format!("Raw{}", expected.len()).as_str()
    );
    assert_eq!(entries[0]["netuid"], 9);

    let jobs = json(&minerctl(&bus, &["jobs", "--json"]));
    assert_eq!(jobs[0]["state"], "committed");
    assert_eq!(jobs[0]["model_hash"], model_hash.as_str());
    assert_eq!(jobs[0]["secure_hash"], secure_hash.as_str());
    assert_eq!(jobs[0]["commit"], tree.as_str());

    // The staged snapshot is a byte-identical, read-only copy.
    let staged = state.path().join("publisher/staged").join(&job_id);
    assert_eq!(git_tree_id(&staged), tree);

    // With no [trainer] data and no predictor model configured, Start and Reload say what to set.
    for (dest, path, method, error) in [
        (
            "org.taominer.Trainer1",
            "/org/taominer/Trainer1",
            "org.taominer.Trainer1.Start",
            "org.taominer.Error.InvalidInput",
        ),
        (
            "org.taominer.Predictor1",
            "/org/taominer/Predictor1",
            "org.taominer.Predictor1.Reload",
            "org.taominer.Error.InvalidInput",
        ),
    ] {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", bus.address))
            .args(["--print-reply", &format!("--dest={dest}"), path, method])
            .output()
            .expect("dbus-send (Debian dbus-bin)");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(error), "{err}");
        if dest.contains("Trainer") {
            assert!(err.contains("trainer.data"), "{err}");
        } else {
            assert!(err.contains("predictor.model_path"), "{err}");
        }
    }

    for d in &mut daemons {
        let st = d.terminate().expect("exits on SIGTERM");
        assert!(st.success(), "{} exited with {st}", d.name);
        assert!(
            d.wait_notify("STOPPING=1", Duration::from_secs(1)),
            "{}: {:?}",
            d.name,
            d.messages
        );
    }
}

#[test]
fn minerctl_says_which_daemon_to_start() {
    let bus = Bus::start();
    let out = minerctl(&bus, &["publish", "/tmp"]);
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("publisher is not running: systemctl start miner-publisher"),
        "{err}"
    );
    let status = json(&minerctl(&bus, &["status", "--json"]));
    assert!(status.as_array().unwrap().iter().all(|r| r["up"] == false));
}

#[test]
fn a_second_instance_refuses_the_same_state_and_name() {
    let bus = Bus::start();
    let state = tempfile::tempdir().unwrap();
    let mut first = Spawn::new("committer", &bus, state.path()).start();
    first.assert_ready();
    let other_state = tempfile::tempdir().unwrap();
    for dir in [state.path(), other_state.path()] {
        let mut second = Spawn::new("committer", &bus, dir).start();
        let st = second
            .wait_exit(Duration::from_secs(10))
            .expect("second instance exits");
        assert!(!st.success());
        assert!(!second.messages.iter().any(|m| m.contains("READY=1")));
    }
}

#[test]
fn working_loops_pet_the_watchdog_and_report_status() {
    let bus = Bus::start();
    let state = tempfile::tempdir().unwrap();
    for part in ["trainer", "predictor", "publisher", "committer"] {
        // 200 ms: the loop must send WATCHDOG=1 about every 100 ms.
        let mut d = Spawn::new(part, &bus, &state.path().join(part))
            .env("WATCHDOG_USEC", "200000")
            .start();
        d.assert_ready();
        assert!(
            d.wait_notify("WATCHDOG=1", Duration::from_secs(5)),
            "{part}: {:?}",
            d.messages
        );
        let before = d
            .messages
            .iter()
            .filter(|m| m.contains("WATCHDOG=1"))
            .count();
        std::thread::sleep(Duration::from_millis(600));
        let _ = d.wait_notify("never", Duration::from_millis(300));
        let after = d
            .messages
            .iter()
            .filter(|m| m.contains("WATCHDOG=1"))
            .count();
        assert!(after >= before + 3, "{part}: {before} then {after} pings");
        assert!(
            d.messages
                .iter()
                .any(|m| m.starts_with("STATUS=") || m.contains("\nSTATUS=")),
            "{part}"
        );
    }
}

/// Proves `Publish` is idempotent on its key: the same key again answers with the first job
/// (even once the directory is gone: a staged candidate may be pruned), never a second job; the
/// same key for another directory is refused as bad input; no key queues a job per call.
#[test]
fn publish_with_a_key_makes_one_job() {
    let bus = Bus::start();
    let state = tempfile::tempdir().unwrap();
    let mut publisher = Spawn::new("publisher", &bus, &state.path().join("publisher")).start();
    publisher.assert_ready();
    let model = state.path().join("model");
    make_model(&model, 1);
    let other = state.path().join("other");
    make_model(&other, 2);
    let publish = |dir: &std::path::Path, key: &[&str]| {
        let mut args = vec!["publish", dir.to_str().unwrap()];
        args.extend_from_slice(key);
        minerctl(&bus, &args)
    };
    let id_of = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let job_count = || {
        json(&minerctl(&bus, &["jobs", "--json"]))
            .as_array()
            .unwrap()
            .len()
    };

    let first = id_of(publish(&model, &["--key", "run-1/step-00000010"]));
    let again = id_of(publish(&model, &["--key", "run-1/step-00000010"]));
    assert_eq!(again, first, "the same key answers with the same job");
    assert_eq!(job_count(), 1);

    // Once staged the source may be pruned; the repeat is still answered, not refused.
    let staged = eventually(Duration::from_secs(30), || {
        json(&minerctl(&bus, &["jobs", "--json"]))[0]["state"] != "received"
    });
    assert!(staged, "the job was never staged");
    let moved = state.path().join("model.moved");
    std::fs::rename(&model, &moved).unwrap();
    let after = id_of(publish(&model, &["--key", "run-1/step-00000010"]));
    assert_eq!(after, first);
    std::fs::rename(&moved, &model).unwrap();

    let out = publish(&other, &["--key", "run-1/step-00000010"]);
    assert!(!out.status.success(), "a reused key for another directory");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already names job"), "{err}");
    assert_eq!(job_count(), 1);

    // Without a key every call is a new job, as before.
    let a = id_of(publish(&other, &[]));
    let b = id_of(publish(&other, &[]));
    assert_ne!(a, b);
    assert_eq!(job_count(), 3);
    publisher.terminate();
}
