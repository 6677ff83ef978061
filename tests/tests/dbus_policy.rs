//! The system-bus policy in `units/org.taominer.conf`, enforced by a real `dbus-daemon`: a bus
//! configured like Debian's system bus (its default policy: no names, no method calls) that
//! includes the policy file as installed, the real committer and publisher binaries running as
//! their own users (`taominer-committer`, `taominer-publisher`), and clients run with `setpriv`
//! as each daemon's user, an operator (group `taominer-ops`), a stranger and root.
//!
//! Proves, against the real binaries:
//! * `Committer1.Commit` is refused (`AccessDenied`) from the predictor's and the trainer's users
//!   and from root, and reaches the committer only from the publisher's user;
//! * `Committer1.ServeAxon` reaches the committer only from the predictor's user;
//! * `Publisher1.Publish` of the credentials directory from the predictor's user (which holds the
//!   hotkey) is refused and makes no job; from the trainer's user a model is published, and the
//!   publisher hands it to the committer (its `Commit`, under the policy) until it is committed;
//! * `Publisher1.MakePublic` is refused from the predictor's and trainer's users and reaches the
//!   publisher from an operator;
//! * read-only calls work for the daemons' group and not for a stranger;
//! * a daemon's user cannot own another daemon's name (the committer binary run as the
//!   predictor's user fails to start).
//!
//! On the tree before the per-user change every daemon ran as `taominer` and the policy let that
//! user and its group call everything: these users had no rights, and the refusals it checks
//! were all allowed to `taominer`.
//!
//! Needs root (it creates the system users of `units/taominer.sysusers` when they are missing,
//! plus `taominer-test-op` in `taominer-ops`, and switches users with `setpriv`); CI runs as root.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use taominer_tests::*;

/// `units/taominer.sysusers`' accounts, created here as `systemd-sysusers` would.
const DAEMONS: [&str; 4] = [
    "taominer-trainer",
    "taominer-predictor",
    "taominer-publisher",
    "taominer-committer",
];
/// An operator for the test, member of `taominer-ops`.
const OPERATOR: &str = "taominer-test-op";
/// Someone with no taominer group at all.
const STRANGER: &str = "nobody";

const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";

fn ensure_group(name: &str) {
    let known = Command::new("getent")
        .args(["group", name])
        .output()
        .is_ok_and(|o| o.status.success());
    if !known {
        run_ok(
            Command::new("groupadd").args(["--system", name]),
            "groupadd",
        );
    }
}

fn ensure_user(name: &str, group: &str, extra: Option<&str>) {
    let known = Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success());
    if !known {
        let mut cmd = Command::new("useradd");
        cmd.args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .args(["--gid", group]);
        if let Some(g) = extra {
            cmd.args(["--groups", g]);
        }
        run_ok(cmd.arg(name), "useradd");
    }
}

fn id(flag: &str, user: &str) -> u32 {
    let out = run_ok(Command::new("id").arg(flag).arg(user), "id");
    String::from_utf8_lossy(&out).trim().parse().expect("an id")
}

/// `setpriv` prefix running a command as `user` with its groups, as systemd's `User=` does.
fn as_user(user: &str, program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", id("-u", user)))
        .arg(format!("--regid={}", id("-g", user)))
        .arg("--init-groups")
        .arg("--reset-env")
        .arg("--")
        .arg(program);
    cmd
}

/// A bus like Debian's system bus: `system.conf`'s default policy, then the policy under test.
struct SystemBus {
    child: Child,
    address: String,
}

impl SystemBus {
    fn start(dir: &Path) -> SystemBus {
        let policy = repo_root().join("units/org.taominer.conf");
        let config = dir.join("system.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <!-- dbus's own system.conf default policy -->
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Containers1"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <include>{}</include>
</busconfig>"#,
                dir.display(),
                policy.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            // Its refusals ("Rejected send message, …") are expected here: kept in a file.
            .stderr(std::fs::File::create(dir.join("bus.log")).unwrap())
            .spawn()
            .expect("dbus-daemon (Debian dbus)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon: {address:?}");
        SystemBus { child, address }
    }

    /// Whether `name` has an owner (asked as root; the bus driver answers anyone).
    fn has_owner(&self, name: &str) -> bool {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", self.address))
            .args([
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
            ])
            .arg(format!("string:{name}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("boolean true")
    }
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon binary run as `user` on the bus, with a state directory that user owns.
struct AsUser {
    child: Child,
}

impl AsUser {
    fn start(part: &str, user: &str, bus: &SystemBus, state: &Path, log: &Path) -> AsUser {
        std::fs::create_dir_all(state).unwrap();
        run_ok(
            Command::new("chown")
                .arg(format!("{user}:taominer"))
                .arg(state),
            "chown the state directory",
        );
        let mut cmd = as_user(user, &bin_dir().join(format!("miner-{part}")));
        cmd.arg("--bus")
            .arg(&bus.address)
            .arg("--state-dir")
            .arg(state)
            .args(TINY_LIMITS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        // TINY_LIMITS lets the tiny fixture model pass the publisher's pre-flight; every daemon
        // reads the whole configuration, so the committer accepts it too.
        AsUser {
            child: cmd.spawn().expect("setpriv (util-linux)"),
        }
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dbus-send` as `user` (None: root); the reply or the error.
fn call(bus: &SystemBus, user: Option<&str>, dest: &str, method: &str, args: &[&str]) -> Output {
    let dbus_send = Path::new("/usr/bin/dbus-send");
    let mut cmd = match user {
        Some(u) => as_user(u, dbus_send),
        None => Command::new(dbus_send),
    };
    let path = format!("/{}", dest.replace('.', "/"));
    cmd.arg(format!("--bus={}", bus.address))
        .args(["--print-reply", "--reply-timeout=10000"])
        .arg(format!("--dest={dest}"))
        .arg(path)
        .arg(format!("{dest}.{method}"))
        .args(args);
    cmd.output().expect("dbus-send (Debian dbus-bin)")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The policy refused the call before it reached the daemon.
fn assert_denied(out: &Output, what: &str) {
    assert!(
        !out.status.success() && stderr(out).contains(ACCESS_DENIED),
        "{what} should be refused by the bus: status {:?}, {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// The call reached the daemon: it answered, with a result or with its own error.
fn assert_reached(out: &Output, what: &str) {
    let err = stderr(out);
    assert!(
        out.status.success()
            || (err.contains("org.taominer.Error.") && !err.contains(ACCESS_DENIED)),
        "{what} should reach the daemon: status {:?}, {}{err}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A pretraining commitment naming the offline publisher's repository.
fn commitment(n: u32) -> String {
    format!("offline:model:{n:040x}:{}:2", "h".repeat(44))
}

#[test]
fn the_bus_gives_each_daemon_user_only_its_own_rights() {
    // SAFETY: geteuid(2) has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the D-Bus policy test creates system users and switches to them: run it as root (CI does)"
    );
    ensure_group("taominer");
    ensure_group("taominer-ops");
    for user in DAEMONS {
        ensure_user(user, "taominer", None);
    }
    ensure_user(OPERATOR, "nogroup", Some("taominer-ops"));

    let work = tempfile::tempdir().unwrap();
    // The other users reach the bus socket, their state and the model through it.
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bus = SystemBus::start(work.path());
    let logs = work.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = |n: &str| logs.join(format!("{n}.log"));
    let dump = || {
        let mut s = String::new();
        s.push_str(&format!(
            "--- dbus-daemon\n{}\n",
            std::fs::read_to_string(work.path().join("bus.log")).unwrap_or_default()
        ));
        for n in ["committer", "publisher", "intruder"] {
            s.push_str(&format!(
                "--- {n}\n{}\n",
                std::fs::read_to_string(log(n)).unwrap_or_default()
            ));
        }
        s
    };

    // A daemon's user cannot take another daemon's name.
    let mut intruder = AsUser::start(
        "committer",
        "taominer-predictor",
        &bus,
        &work.path().join("intruder"),
        &log("intruder"),
    );
    let exited = eventually(Duration::from_secs(20), || {
        matches!(intruder.child.try_wait(), Ok(Some(_)))
    });
    let said = std::fs::read_to_string(log("intruder")).unwrap_or_default();
    assert!(
        exited && !bus.has_owner("org.taominer.Committer1") && said.contains(ACCESS_DENIED),
        "the committer binary run as taominer-predictor was not refused org.taominer.Committer1\n{}",
        dump()
    );
    drop(intruder);

    let _committer = AsUser::start(
        "committer",
        "taominer-committer",
        &bus,
        &work.path().join("committer"),
        &log("committer"),
    );
    let _publisher = AsUser::start(
        "publisher",
        "taominer-publisher",
        &bus,
        &work.path().join("publisher"),
        &log("publisher"),
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            bus.has_owner("org.taominer.Committer1") && bus.has_owner("org.taominer.Publisher1")
        }),
        "the daemons did not take their names as their own users\n{}",
        dump()
    );

    let committer = "org.taominer.Committer1";
    let publisher = "org.taominer.Publisher1";

    // Commit: only the publisher's user.
    let c1 = commitment(1);
    let commit_args = ["string:manual-1", &*format!("string:{c1}")].map(String::from);
    let commit_args: Vec<&str> = commit_args.iter().map(String::as_str).collect();
    for user in [
        Some("taominer-predictor"),
        Some("taominer-trainer"),
        Some(OPERATOR),
        None,
    ] {
        let out = call(&bus, user, committer, "Commit", &commit_args);
        assert_denied(&out, &format!("Commit from {user:?}"));
    }
    let out = call(
        &bus,
        Some("taominer-publisher"),
        committer,
        "Commit",
        &commit_args,
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("queued"),
        "Commit from the publisher's user: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out),
        dump()
    );

    // ServeAxon: only the predictor's user (offline, the committer itself then says no).
    let axon = ["string:203.0.113.7", "uint16:8091"];
    for user in [
        Some("taominer-trainer"),
        Some("taominer-publisher"),
        Some(OPERATOR),
        None,
    ] {
        let out = call(&bus, user, committer, "ServeAxon", &axon);
        assert_denied(&out, &format!("ServeAxon from {user:?}"));
    }
    let out = call(
        &bus,
        Some("taominer-predictor"),
        committer,
        "ServeAxon",
        &axon,
    );
    assert_reached(&out, "ServeAxon from the predictor's user");

    // Publish of a credentials directory from the predictor's user (it holds the hotkey): the
    // bus refuses it before the publisher reads anything; no job is made.
    let creds = work.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    write_seed7_hotkey(&creds.join("hotkey"));
    let creds_arg = format!("string:{}", creds.display());
    for user in [
        Some("taominer-predictor"),
        Some("taominer-committer"),
        Some(STRANGER),
    ] {
        let out = call(
            &bus,
            user,
            publisher,
            "Publish",
            &[&creds_arg, "string:", "string:"],
        );
        assert_denied(&out, &format!("Publish from {user:?}"));
    }
    let jobs = call(&bus, None, publisher, "Jobs", &[]);
    assert!(jobs.status.success(), "{}", stderr(&jobs));
    assert!(
        !String::from_utf8_lossy(&jobs.stdout).contains("credentials"),
        "a refused Publish made a job: {}",
        String::from_utf8_lossy(&jobs.stdout)
    );

    // MakePublic: operators (and root), not the daemons that have no business with it.
    let repo = ["string:offline/model"];
    for user in [
        Some("taominer-predictor"),
        Some("taominer-trainer"),
        Some(STRANGER),
    ] {
        let out = call(&bus, user, publisher, "MakePublic", &repo);
        assert_denied(&out, &format!("MakePublic from {user:?}"));
    }
    for user in [Some(OPERATOR), None] {
        let out = call(&bus, user, publisher, "MakePublic", &repo);
        assert_reached(&out, &format!("MakePublic from {user:?}"));
    }

    // Read-only calls: the daemons' group and operators, not strangers.
    for user in [
        Some("taominer-predictor"),
        Some("taominer-trainer"),
        Some(OPERATOR),
    ] {
        assert_reached(
            &call(&bus, user, committer, "Status", &[]),
            &format!("Status from {user:?}"),
        );
    }
    assert_reached(
        &call(
            &bus,
            Some("taominer-predictor"),
            committer,
            "Metagraph",
            &[],
        ),
        "Metagraph from the predictor's user",
    );
    assert_denied(
        &call(&bus, Some(STRANGER), committer, "Status", &[]),
        "Status from a stranger",
    );
    assert_denied(
        &call(&bus, Some(STRANGER), committer, "Commitments", &[]),
        "Commitments from a stranger",
    );

    // The trainer's hand-off: Publish from its user is accepted, and the publisher's own Commit
    // (as taominer-publisher) carries the job to the committer's ledger.
    let model = work.path().join("model");
    make_model(&model, 3);
    run_ok(
        Command::new("chmod").args(["-R", "a+rX"]).arg(&model),
        "chmod the model",
    );
    let out = call(
        &bus,
        Some("taominer-trainer"),
        publisher,
        "Publish",
        &[&format!("string:{}", model.display()), "string:", "string:"],
    );
    assert!(
        out.status.success(),
        "Publish from the trainer's user: {}\n{}",
        stderr(&out),
        dump()
    );
    let reply = String::from_utf8_lossy(&out.stdout).into_owned();
    let job = reply
        .split('"')
        .nth(1)
        .unwrap_or_else(|| panic!("no job id in {reply}"))
        .to_string();
    let committed = eventually(Duration::from_secs(60), || {
        let out = call(&bus, None, committer, "Commitments", &[]);
        String::from_utf8_lossy(&out.stdout).contains(&job)
    });
    assert!(
        committed,
        "job {job} did not reach the committer's ledger\n{}",
        dump()
    );
}
