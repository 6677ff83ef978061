//! The files in `units/` are accepted by the real tools: `systemd-analyze verify` (which only
//! warns on bad lines, so any output fails the test) and `dbus-daemon`, which refuses to start
//! on a malformed policy file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use taominer_tests::bin_dir;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../units")
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(units_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !(name.ends_with(".service") || name.ends_with(".target")) {
            continue;
        }
        // verify checks that ExecStart= exists: point it at the binaries just built.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin", bin_dir().to_str().unwrap());
        let copy = tmp.path().join(&name);
        std::fs::write(&copy, text).unwrap();
        files.push(copy);
    }
    assert_eq!(files.len(), 5, "four services and miner.target");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&files)
        .output()
        .expect("systemd-analyze (Debian systemd) must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn dbus_policy_is_accepted_by_dbus_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bus.conf");
    let policy = units_dir()
        .join("org.taominer.conf")
        .canonicalize()
        .unwrap();
    std::fs::write(
        &cfg,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <include>{}</include>
</busconfig>"#,
            tmp.path().display(),
            policy.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", cfg.display()))
        .args(["--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        line.starts_with("unix:"),
        "dbus-daemon refused the policy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The exposure `systemd-analyze security --offline=true` gives each unit stays within the
/// appliance's limits: publisher and committer ≤ 2.0; trainer and predictor ≤ 3.0 (they keep GPU
/// device access, executable JIT memory and the thread-affinity calls).
#[test]
fn units_stay_within_the_exposure_limits() {
    for (unit, limit) in [
        ("miner-publisher.service", 2.0),
        ("miner-committer.service", 2.0),
        ("miner-trainer.service", 3.0),
        ("miner-predictor.service", 3.0),
    ] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(units_dir().join(unit))
            .output()
            .expect("systemd-analyze (Debian systemd) must be installed");
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}: {text}"));
        assert!(level <= limit, "{unit}: exposure {level} > {limit}\n{text}");
    }
}

/// One user per daemon: each unit runs as its own `taominer-<part>` user in group `taominer`,
/// every one of those users is created by `taominer.sysusers` (with group `taominer`), no two
/// units share a user, and no unit can dump core (the hotkey and the HF token live in memory).
/// The trainer's state alone is group-readable (the publisher stages its checkpoints).
#[test]
fn each_daemon_has_its_own_user_and_no_core_dumps() {
    let sysusers = std::fs::read_to_string(units_dir().join("taominer.sysusers")).unwrap();
    let mut users = Vec::new();
    for part in ["trainer", "predictor", "publisher", "committer"] {
        let unit = format!("miner-{part}.service");
        let text = std::fs::read_to_string(units_dir().join(&unit)).unwrap();
        let value = |key: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::to_string)
                .collect()
        };
        let user = format!("taominer-{part}");
        assert_eq!(value("User"), [user.as_str()], "{unit}");
        assert_eq!(value("Group"), ["taominer"], "{unit}");
        assert_eq!(value("LimitCORE"), ["0"], "{unit}");
        assert!(
            sysusers.lines().any(|l| l.split_whitespace().take(3).eq([
                "u",
                user.as_str(),
                "-:taominer"
            ])),
            "{user} is not created by taominer.sysusers with group taominer"
        );
        let (mode, umask) = if part == "trainer" {
            ("0750", "0027")
        } else {
            ("0700", "0077")
        };
        assert_eq!(value("StateDirectoryMode"), [mode], "{unit}");
        assert_eq!(value("UMask"), [umask], "{unit}");
        users.push(user);
    }
    users.dedup();
    assert_eq!(users.len(), 4);
}
