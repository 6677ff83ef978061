//! The units under a real systemd: a minimal Debian booted with `systemd-nspawn --boot`, with
//! the built binaries, `units/`, the D-Bus policy and the sysusers/tmpfiles snippets installed as
//! the README says. `tests/systemd/check.sh` runs inside as a unit and reports; this test asserts
//! every line.
//!
//! Proves: each daemon reaches `active` only through READY=1 and shows its STATUS=; `systemctl
//! start miner-trainer` works; a `minerctl publish` job is committed and the publisher's journal
//! carries `SYSLOG_IDENTIFIER` and the job's `JOB_ID`; `kill -9` of the committer mid-hand-off is
//! restarted by systemd and the job completes; a trainer frozen with SIGSTOP is killed by the
//! watchdog and restarted; `systemctl stop miner.target` stops all four on SIGTERM (no SIGKILL)
//! — all with the hardening in `units/` in force, each daemon as its own user (the publisher's
//! able to read the trainer's state, as the checkpoint hand-off needs).
//!
//! Needs root, `systemd-nspawn` and `debootstrap` (scripts/setup installs both); the root
//! filesystem is built once and cached outside the repository (`tests/systemd/rootfs.sh`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use taominer_tests::*;

fn copy_tree(from: &Path, to: &Path) {
    run_ok(
        Command::new("cp").arg("-a").arg(from).arg(to),
        "copy the cached root filesystem",
    );
}

fn install(root: &Path, rel: &str, contents: &[u8], mode: u32) {
    let path = root.join(rel.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_units_boot_restart_and_stop_under_systemd() {
    // SAFETY: geteuid(2) has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the systemd boot test runs systemd-nspawn and debootstrap: run it as root (CI does)"
    );
    let repo = repo_root();
    let cached = String::from_utf8(run_ok(
        Command::new("bash").arg(repo.join("tests/systemd/rootfs.sh")),
        "tests/systemd/rootfs.sh (debootstrap)",
    ))
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    copy_tree(Path::new(cached.trim()), &root);

    // Installed as the README says for non-NixOS machines.
    for entry in std::fs::read_dir(repo.join("units")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let target = match name.as_str() {
            n if n.ends_with(".service") || n.ends_with(".target") => {
                format!("/etc/systemd/system/{n}")
            }
            "org.taominer.conf" => "/etc/dbus-1/system.d/org.taominer.conf".into(),
            "taominer.sysusers" => "/etc/sysusers.d/taominer.conf".into(),
            "taominer.tmpfiles" => "/etc/tmpfiles.d/taominer.conf".into(),
            _ => continue,
        };
        install(&root, &target, &std::fs::read(&path).unwrap(), 0o644);
    }
    install(
        &root,
        "/etc/taominer/miner.toml",
        b"[miner]\noffline = true\n[publisher.limits.2]\nmin_parameters = 0\n",
        0o644,
    );
    // The credentials the units load (offline they are loaded, not used).
    let hotkey = work.path().join("hotkey");
    write_seed7_hotkey(&hotkey);
    install(
        &root,
        "/etc/taominer/hotkey",
        &std::fs::read(&hotkey).unwrap(),
        0o600,
    );
    install(
        &root,
        "/etc/taominer/hf-token",
        b"hf_unused_offline\n",
        0o600,
    );
    // A short watchdog for the trainer, so the SIGSTOP check takes seconds, not a minute.
    install(
        &root,
        "/etc/systemd/system/miner-trainer.service.d/test-watchdog.conf",
        b"[Service]\nWatchdogSec=3s\nTimeoutAbortSec=5s\n",
        0o644,
    );
    for (n, seed) in [("model1", 1), ("model2", 2)] {
        let dir = root.join("srv").join(n);
        std::fs::create_dir_all(&dir).unwrap();
        make_model(&dir, seed);
    }
    // Readable by the daemons' user, as a model directory a user hands to `minerctl publish`.
    run_ok(
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(root.join("srv")),
        "chmod the models",
    );
    install(
        &root,
        "/usr/local/sbin/taominer-check",
        &std::fs::read(repo.join("tests/systemd/check.sh")).unwrap(),
        0o755,
    );
    install(
        &root,
        "/etc/systemd/system/taominer-check.service",
        b"[Unit]\nDescription=taominer boot test driver\nAfter=multi-user.target dbus.service\n\
          [Service]\nType=oneshot\nExecStart=/usr/local/sbin/taominer-check\n\
          ExecStopPost=/bin/systemctl poweroff --no-block\n\
          [Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    std::os::unix::fs::symlink(
        "/etc/systemd/system/taominer-check.service",
        root.join("etc/systemd/system/multi-user.target.wants/taominer-check.service"),
    )
    .unwrap();

    // TAOMINER_BOOT_RESULT keeps the report and journals for a look after a failure.
    let result = std::env::var_os("TAOMINER_BOOT_RESULT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| work.path().join("result"));
    std::fs::create_dir_all(&result).unwrap();
    let out = Command::new("timeout")
        .args([
            "300",
            "systemd-nspawn",
            "--quiet",
            "--keep-unit",
            "--register=no",
            "--boot",
        ])
        .arg("--console=pipe")
        .arg("-D")
        .arg(&root)
        .arg(format!("--bind={}:/result", result.display()))
        .arg(format!("--bind-ro={}:/usr/local/bin", bin_dir().display()))
        .output()
        .expect("systemd-nspawn (Debian systemd-container; scripts/setup installs it)");
    let report = std::fs::read_to_string(result.join("report")).unwrap_or_default();
    let journal = std::fs::read_to_string(result.join("journal.txt")).unwrap_or_default();
    let tail: String = journal
        .lines()
        .rev()
        .take(80)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    let context = format!(
        "report:\n{report}\nnspawn: {:?} {}\njournal (end):\n{tail}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.lines().any(|l| l == "DONE"),
        "the check did not finish\n{context}"
    );
    let failed: Vec<&str> = report.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "{}\n{context}", failed.join("\n"));
    let passed = report.lines().filter(|l| l.starts_with("PASS")).count();
    assert!(passed >= 24, "{passed} checks passed\n{context}");
}
