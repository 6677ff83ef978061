//! Bad input gets a clear error and changes nothing: malformed configuration exits 78 naming
//! the key; publishing a missing directory, a file, or a directory with a symlink escaping it is
//! refused with a message and stages nothing.

use std::process::Command;
use std::time::Duration;

use taominer_tests::*;

fn run_with_config(part: &str, toml: &str) -> std::process::Output {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("miner.toml");
    std::fs::write(&cfg, toml).unwrap();
    Command::new(bin_dir().join(format!("miner-{part}")))
        .args(["--bus", "unix:path=/nonexistent/bus", "--state-dir"])
        .arg(d.path().join("state"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap()
}

#[test]
fn bad_configuration_exits_78_naming_the_key() {
    for part in ["trainer", "predictor", "publisher", "committer"] {
        let out = run_with_config(part, "[miner]\nnetuid = \"nine\"\n");
        assert_eq!(out.status.code(), Some(78), "{part}");
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().last().unwrap_or("");
        assert!(
            line.contains("miner.netuid") && line.contains("\"nine\""),
            "{part}: {err}"
        );

        let out = run_with_config(part, "[miner]\nprofile = \"sn99\"\n");
        assert_eq!(out.status.code(), Some(78), "{part}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("miner.profile") && err.contains("pretraining"),
            "{part}: {err}"
        );
    }
    // An unbounded timeout would size the nonce table's generations and overflow durations.
    let out = run_with_config("predictor", "[predictor]\nmax_timeout_s = 1e300\n");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("predictor.max_timeout_s") && err.contains("at most 600"),
        "{err}"
    );
    // Environment and flags are checked the same way.
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(bin_dir().join("miner-committer"))
        .args(["--bus", "unix:path=/nonexistent/bus", "--state-dir"])
        .arg(d.path())
        .env("TAOMINER_MINER__PROFILE", "nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TAOMINER_MINER__PROFILE"));
    let out = Command::new(bin_dir().join("miner-committer"))
        .args([
            "--bus",
            "unix:path=/nonexistent/bus",
            "--set",
            "miner.offline=false",
            "--state-dir",
        ])
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("miner.hotkey_ss58"));
}

/// Keys that moved to the shared `[hub]` and `[retry]` sections are refused by every daemon,
/// naming the new key, rather than ignored (a file written for the old layout would otherwise
/// send the token to the default Hub or retry at the default pace without a word).
#[test]
fn moved_keys_exit_78_naming_the_new_key() {
    for (old, new, line) in [
        (
            "publisher.endpoint",
            "hub.endpoint",
            "endpoint = \"https://hub.example\"",
        ),
        (
            "publisher.token_file",
            "hub.token_file",
            "token_file = \"/run/keys/t\"",
        ),
        (
            "publisher.retry_max_ms",
            "retry.max_ms",
            "retry_max_ms = 1000",
        ),
    ] {
        for part in ["trainer", "predictor", "publisher", "committer"] {
            let out = run_with_config(part, &format!("[publisher]\n{line}\n"));
            assert_eq!(out.status.code(), Some(78), "{part} {old}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(old) && err.contains(&format!("moved to {new}")),
                "{part}: {err}"
            );
        }
    }
}

#[test]
fn online_daemons_refuse_missing_or_wrong_secrets_with_78() {
    let d = tempfile::tempdir().unwrap();
    let online = format!(
        "[miner]\noffline = false\nhotkey_ss58 = \"{ALICE}\"\n[publisher]\nrepo = \"alice/m\"\n"
    );
    // No credential and no configured file: the key to set is named.
    for (part, key) in [
        ("committer", "miner.hotkey_file"),
        ("publisher", "hub.token_file"),
    ] {
        let out = run_with_config(part, &online);
        assert_eq!(out.status.code(), Some(78), "{part}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(key) && err.contains("LoadCredential"),
            "{part}: {err}"
        );
    }
    // The trainer needs no token (public models), but one that is configured and cannot be
    // read is a configuration error naming the key, not a download that fails later.
    let missing = d.path().join("no-such-token");
    let out = run_with_config(
        "trainer",
        &format!("{online}[hub]\ntoken_file = \"{}\"\n", missing.display()),
    );
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hub.token_file") && err.contains(&missing.display().to_string()),
        "{err}"
    );

    // 0600: a key others can read is refused before anything else, below).
    use std::os::unix::fs::PermissionsExt;
    let private = |p: &std::path::Path| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap()
    };
    let enc = d.path().join("enc");
    std::fs::write(&enc, "$NACL...").unwrap();
    private(&enc);
    let other = d.path().join("other");
    write_seed7_hotkey(&other);
    // The same good key, readable by everyone: the daemon refuses it with the chmod to run and
    // the key that would accept it, and never prints the secret.
    let exposed = d.path().join("exposed");
    std::fs::copy(&other, &exposed).unwrap();
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let chmod = format!("chmod 600 {}", exposed.display());
    for (file, expected) in [
        (&enc, "encrypted"),
        (
            &other,
            "is 5EsNLFaGe9XK5LzWH3i6eC2Wqv6YqZS1442N1C4yeSdP6uxy",
        ),
        (&exposed, chmod.as_str()),
        (&exposed, "miner.allow_readable_hotkey"),
    ] {
        let config = format!(
            "[miner]\noffline = false\nhotkey_ss58 = \"{ALICE}\"\nhotkey_file = \"{}\"\n\
             [publisher]\nrepo = \"alice/m\"\n",
            file.display()
        );
        let out = run_with_config("committer", &config);
        assert_eq!(out.status.code(), Some(78));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains(&"07".repeat(32)), "the secret leaked: {err}");
    }
}

#[test]
fn bad_publishes_are_refused_and_stage_nothing() {
    let bus = Bus::start();
    let state = tempfile::tempdir().unwrap();
    let pub_dir = state.path().join("publisher");
    let mut p = Spawn::new("publisher", &bus, &pub_dir).start();
    let mut c = Spawn::new("committer", &bus, &state.path().join("committer")).start();
    p.assert_ready();
    c.assert_ready();

    let outside = state.path().join("secret.txt");
    std::fs::write(&outside, b"not part of the model").unwrap();
    let escaping = state.path().join("escaping");
    make_model(&escaping, 3);
    std::os::unix::fs::symlink(&outside, escaping.join("leak.txt")).unwrap();
    let no_config = state.path().join("noconfig");
    std::fs::create_dir(&no_config).unwrap();
    std::fs::write(no_config.join("model.safetensors"), b"x").unwrap();
    let good = state.path().join("good");
    make_model(&good, 4);

    let cases: [(&str, Vec<String>, &str); 5] = [
        (
            "missing",
            vec![state.path().join("missing").display().to_string()],
            "no such directory",
        ),
        (
            "file",
            vec![outside.display().to_string()],
            "not a directory",
        ),
        (
            "escaping",
            vec![escaping.display().to_string()],
            "outside the model directory",
        ),
        (
            "no config",
            vec![no_config.display().to_string()],
            "config.json",
        ),
        (
            "competition",
            vec![
                good.display().to_string(),
                "--competition".into(),
                "77".into(),
            ],
            "unknown competition",
        ),
    ];
    for (name, args, needle) in cases {
        let mut argv = vec!["publish"];
        argv.extend(args.iter().map(String::as_str));
        let out = minerctl(&bus, &argv);
        assert_eq!(out.status.code(), Some(65), "{name}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{name}: {err}");
    }
    assert!(json(&minerctl(&bus, &["jobs", "--json"]))
        .as_array()
        .unwrap()
        .is_empty());
    for sub in ["staging", "staged"] {
        let d = pub_dir.join(sub);
        assert!(
            !d.exists() || std::fs::read_dir(&d).unwrap().next().is_none(),
            "{sub}"
        );
    }
    // The daemons are still up and a good model still goes through.
    let out = minerctl(&bus, &["publish", good.to_str().unwrap(), "--wait", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(p.wait_exit(Duration::from_millis(10)).is_none());
}

/// The example configuration shipped in `units/` is accepted by every daemon, so it stays true.
#[test]
fn the_example_configuration_loads() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../units/miner.toml.example");
    let config = taominer_core::config::Config::load(&taominer_core::config::Sources {
        file: Some(example),
        overrides: Vec::new(),
        env: false,
    })
    .expect("units/miner.toml.example must load");
    assert_eq!(config, taominer_core::config::Config::default());
}

/// The committer's state after a crash and after damage, against the real binary: a torn last
/// record (a crash mid-append) is cut off and the committer serves the records before it; a
/// damaged record before the end stops it with exit 65 (which its unit does not restart),
/// naming the file and line, and leaves the file as it was (before the append-only log, a
/// damaged `ledger.json` stopped the committer, restart after restart, with a parse error).
#[test]
fn the_committer_cuts_a_torn_ledger_tail_and_refuses_a_damaged_ledger() {
    let record = |n: u64| {
        format!(
            "{{\"block\":{n},\"job_id\":\"j{n}\",\"netuid\":9,\"hotkey\":\"{ALICE}\",\
             \"commitment\":\"c{n}\",\"data_type\":\"Raw2\",\"time\":0}}\n"
        )
    };
    let bus = Bus::start();
    let state = tempfile::tempdir().unwrap();
    let torn = format!(
        "{}{}{{\"block\":3,\"job_id\":\"j3\",\"net",
        record(1),
        record(2)
    );
    std::fs::write(state.path().join("ledger.jsonl"), &torn).unwrap();
    // And a job entry that cannot be read at all (a directory: EISDIR, an I/O error that used
    // to stop the job store, and the daemon with it): moved aside, the committer starts.
    std::fs::create_dir_all(state.path().join("jobs/unreadable.json")).unwrap();
    let mut c = Spawn::new("committer", &bus, state.path()).start();
    c.assert_ready();
    assert!(state.path().join("jobs/unreadable.json.corrupt").is_dir());
    let ledger = json(&minerctl(&bus, &["commitments", "--json"]));
    let ids: Vec<&str> = ledger
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["j1", "j2"]);
    assert_eq!(
        std::fs::read_to_string(state.path().join("ledger.jsonl")).unwrap(),
        format!("{}{}", record(1), record(2))
    );
    drop(c);

    let damaged = format!("{}{{\"block\":2,garbage}}\n{}", record(1), record(3));
    std::fs::write(state.path().join("ledger.jsonl"), &damaged).unwrap();
    let out = Command::new(bin_dir().join("miner-committer"))
        .args(["--bus", &bus.address, "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ledger.jsonl line 2"), "{err}");
    assert_eq!(
        std::fs::read_to_string(state.path().join("ledger.jsonl")).unwrap(),
        damaged
    );
}
