//! Harness for the cross-process tests: a real `dbus-daemon` on a private address, the real
//! daemon binaries with a `NOTIFY_SOCKET` the test reads, and `minerctl`.
//!
//! Binaries are the ones `cargo build --workspace` put next to the test executable
//! (`target/<profile>/`); the README test command builds them first.

pub mod axon;
pub mod external;
pub mod predictor;

pub use external::*;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    assert!(
        dir.join("minerctl").exists(),
        "{} has no minerctl: run `cargo build --workspace` before the tests (see README)",
        dir.display()
    );
    dir
}

/// A private `dbus-daemon`, killed on drop.
pub struct Bus {
    child: Child,
    pub address: String,
}

impl Bus {
    pub fn start() -> Bus {
        Bus::spawn(&["--session"])
    }

    /// A private bus that any local user may connect to (a session bus admits only its own
    /// uid), for tests that call a daemon as another user.
    pub fn start_multi_user() -> Bus {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
        )
        .expect("write the bus configuration");
        // The daemon has read its configuration once it prints its address.
        Bus::spawn(&[&format!("--config-file={}", conf.display())])
    }

    fn spawn(args: &[&str]) -> Bus {
        let mut child = Command::new("dbus-daemon")
            .args(args)
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon must be installed (scripts/setup installs Debian's dbus)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("dbus-daemon address");
        let address = line.trim().to_string();
        assert!(
            address.starts_with("unix:"),
            "unexpected address {address:?}"
        );
        Bus { child, address }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One of the four daemons, running.
pub struct Daemon {
    pub name: &'static str,
    child: Option<Child>,
    notify: UnixDatagram,
    _notify_dir: tempfile::TempDir,
    pub messages: Vec<String>,
}

/// How to start a daemon.
pub struct Spawn<'a> {
    pub part: &'static str,
    pub bus: &'a str,
    pub state_dir: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Append the daemon's stderr (its log) to this file instead of the test's output.
    pub log: Option<PathBuf>,
}

impl<'a> Spawn<'a> {
    /// A daemon with the test defaults. The publisher gets competition 2's minimum parameter
    /// count lowered to 0, so the tiny fixture models pass its pre-flight (a later `--set`
    /// restores a limit where a test wants it).
    pub fn new(part: &'static str, bus: &'a Bus, state_dir: &'a Path) -> Spawn<'a> {
        let args = if part == "publisher" {
            TINY_LIMITS.iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        };
        Spawn {
            part,
            bus: &bus.address,
            state_dir,
            args,
            env: Vec::new(),
            log: None,
        }
    }

    /// Sends the daemon's log (stderr) to `path`, appending.
    pub fn log_to(mut self, path: &Path) -> Self {
        self.log = Some(path.to_path_buf());
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Starts the daemon with its own notify socket.
    pub fn start(self) -> Daemon {
        let notify_dir = tempfile::tempdir().expect("tempdir");
        let sock = notify_dir.path().join("notify");
        let notify = UnixDatagram::bind(&sock).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut cmd = Command::new(bin_dir().join(format!("miner-{}", self.part)));
        cmd.arg("--bus")
            .arg(self.bus)
            .arg("--state-dir")
            .arg(self.state_dir)
            .args(&self.args)
            .env("NOTIFY_SOCKET", &sock)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(log) = &self.log {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("open daemon log");
            cmd.stderr(f);
        }
        let child = cmd.spawn().expect("spawn daemon");
        Daemon {
            name: self.part,
            child: Some(child),
            notify,
            _notify_dir: notify_dir,
            messages: Vec::new(),
        }
    }
}

impl Daemon {
    /// Reads notify messages until one contains `needle` (e.g. `READY=1`).
    pub fn wait_notify(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if self.messages.iter().any(|m| m.lines().any(|l| l == needle)) {
                return true;
            }
            if let Ok(n) = self.notify.recv(&mut buf) {
                self.messages
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                // Exited; drain what it sent and give up.
                while let Ok(n) = self.notify.recv(&mut buf) {
                    self.messages
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                return self.messages.iter().any(|m| m.lines().any(|l| l == needle));
            }
        }
        false
    }

    /// Asserts `READY=1` arrives.
    pub fn assert_ready(&mut self) {
        assert!(
            self.wait_notify("READY=1", Duration::from_secs(20)),
            "{} did not send READY=1; got {:?}",
            self.name,
            self.messages
        );
    }

    /// The daemon's process id while it runs (for /proc figures in the attack tests).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself (e.g. a crash point); returns whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            } else {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on a child we own.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        self.wait_exit(Duration::from_secs(10))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `minerctl --bus <bus> args…`.
pub fn minerctl(bus: &Bus, args: &[&str]) -> Output {
    Command::new(bin_dir().join("minerctl"))
        .arg("--bus")
        .arg(&bus.address)
        .args(args)
        .output()
        .expect("run minerctl")
}

/// Parses `minerctl … --json` output.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "minerctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from minerctl")
}

/// Lets the tiny fixture models through competition 2's pre-flight (see [`Spawn::new`]).
pub const TINY_LIMITS: [&str; 2] = ["--set", "publisher.limits.2.min_parameters=0"];

/// Bytes that depend only on `seed`.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 33) as u8
        })
        .collect()
}

/// A valid safetensors file with one F32 tensor of `params` elements (pseudo-random data).
pub fn safetensors_bytes(name: &str, params: u64, seed: u64) -> Vec<u8> {
    let mut header = format!(
        "{{\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{params}],\"data_offsets\":[0,{}]}}}}",
        params * 4
    )
    .into_bytes();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&pseudo_random(seed, (params * 4) as usize));
    out
}

/// Writes a small transformers-like model directory whose bytes depend on `seed`: a LLaMA
/// `config.json`, a real safetensors file (17,500 parameters), a generation config, and a nested
/// file.
pub fn make_model(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir.join("nested")).expect("mkdir");
    std::fs::write(
        dir.join("config.json"),
        format!("{{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"seed\": {seed}}}"),
    )
    .expect("write");
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors_bytes("model.embed_tokens.weight", 17_500, seed),
    )
    .expect("write");
    std::fs::write(
        dir.join("nested/tokenizer.json"),
        format!("{{\"v\":{seed}}}"),
    )
    .expect("write");
    std::fs::write(dir.join("generation_config.json"), b"{}").expect("write");
}

/// The model hash and secure hash of `dir` computed by the Python reference (taoverse's code,
/// verbatim, run by python3).
pub fn python_hashes(dir: &Path, hotkey: &str) -> (String, String, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY_REFERENCE)
        .arg(dir)
        .arg(hotkey)
        .output()
        .expect("python3 must be installed (scripts/setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let mut it = text.lines().map(str::to_string);
    (
        it.next().expect("model hash"),
        it.next().expect("secure hash"),
        it.next().expect("content hash"),
    )
}

/// The reference implementations in upstream's own Python (`tests/reference/hashes.py`).
pub const PY_REFERENCE: &str = include_str!("../reference/hashes.py");

/// The git tree id of `dir`, computed by git itself.
pub fn git_tree_id(dir: &Path) -> String {
    let gitdir = tempfile::tempdir().expect("tempdir");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(gitdir.path())
            .arg("--work-tree")
            .arg(dir)
            .args(args)
            .output()
            .expect("git must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["write-tree"])
}

/// Waits until `f` returns true.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The Alice development address, the offline default hotkey.
pub const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The test venv's Python (`scripts/setup` creates `.venv` with `tests/requirements.txt`).
pub fn venv_python() -> PathBuf {
    let py = repo_root().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup (it creates the test venv with huggingface_hub)",
        py.display()
    );
    py
}

/// Users of the test Hub: `alice` (the miner) and `mallory` (someone else).
pub const HUB_USERS: [(&str, &str); 2] = [
    ("alice", "tok-alice-0123456789"),
    ("mallory", "tok-mallory-9876543210"),
];

/// The local Hub server (`tests/hub/hub_server.py`), killed on drop.
pub struct HubServer {
    child: Child,
    pub port: u16,
    pub url: String,
    _data: tempfile::TempDir,
}

/// Runs a command to its end and returns its stdout; panics with `what` and its stderr unless it
/// exited 0.
pub fn run_ok(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl HubServer {
    /// Runs the venv's Python with `args`, its Hugging Face client pointed at this server (no
    /// Xet, no telemetry, `HF_HOME` at `hf_home`); returns stdout, trimmed.
    pub fn python(&self, hf_home: &Path, args: &[&str]) -> String {
        let out = run_ok(
            Command::new(venv_python())
                .args(args)
                .env("HF_ENDPOINT", &self.url)
                .env("HF_HUB_DISABLE_XET", "1")
                .env("HF_HUB_DISABLE_TELEMETRY", "1")
                .env("HF_HOME", hf_home),
            "python with huggingface_hub",
        );
        String::from_utf8_lossy(&out).trim().to_string()
    }

    /// Uploads `dir` to `repo` (created if missing) with the official client as the first test
    /// user; returns the commit id.
    pub fn upload_folder(&self, hf_home: &Path, repo: &str, dir: &Path) -> String {
        self.python(
            hf_home,
            &[
                "-c",
                "import sys\nfrom huggingface_hub import HfApi\n\
                 api = HfApi(token=sys.argv[1])\n\
                 api.create_repo(sys.argv[2], exist_ok=True)\n\
                 print(api.upload_folder(folder_path=sys.argv[3], repo_id=sys.argv[2]).oid)",
                HUB_USERS[0].1,
                repo,
                dir.to_str().expect("UTF-8 path"),
            ],
        )
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
    }

    /// Starts the server with the two users and any extra flags (`--multipart-threshold N`, ...).
    pub fn start(extra: &[&str]) -> HubServer {
        let data = tempfile::tempdir().expect("tempdir");
        let port_file = data.path().join("port");
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/hub/hub_server.py"))
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--data")
            .arg(data.path().join("store"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (user, token) in HUB_USERS {
            cmd.arg("--user").arg(format!("{user}:{token}"));
        }
        let child = cmd.spawn().expect("python3 runs the test Hub server");
        let mut port = 0u16;
        assert!(
            eventually(Duration::from_secs(20), || {
                port = std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                port != 0
            }),
            "the test Hub server did not start"
        );
        HubServer {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            _data: data,
        }
    }

    /// A plain HTTP request to the server; returns (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))
            .expect("connect to the test Hub");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        (status, body)
    }

    fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> serde_json::Value {
        let (status, text) = self.request(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// Every request the server handled: `{method, path, status, bytes_in, user}`.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.json("GET", "/_test/log", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn clear_log(&self) {
        self.json("POST", "/_test/log/clear", None);
    }

    /// `{repo: {private, head, commits: [oldest first]}}`.
    pub fn repos(&self) -> serde_json::Value {
        self.json("GET", "/_test/repos", None)
    }

    /// Replaces the fault rules (see tests/hub/README.md).
    pub fn faults(&self, rules: serde_json::Value) {
        self.json(
            "POST",
            "/_test/faults",
            Some(&serde_json::json!({ "rules": rules })),
        );
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for HubServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real finney runtime metadata (V16) the dev chain serves, kept in the repository so a clone
/// runs every test (`tests/testdata/subtensor/README.md` says where it came from).
pub fn finney_metadata() -> PathBuf {
    repo_root().join("tests/testdata/subtensor/finney-metadata.scale")
}

/// The local subtensor dev chain (`tests/devchain/devchain.py`, checked against the official
/// `bittensor` SDK by `devchain_peer.rs`), killed on drop.
pub struct DevChain {
    child: Child,
    pub url: String,
    dir: tempfile::TempDir,
}

impl DevChain {
    /// Starts the chain with the real finney metadata, a fixture (`{"max_space", "subnets":
    /// [{"netuid", "tempo", "neurons": [{"hotkey", "coldkey", "stake", "validator_permit"}]}]}`)
    /// and a block every `block_ms`.
    pub fn start(fixture: &serde_json::Value, block_ms: u64) -> DevChain {
        let metadata = finney_metadata();
        assert!(
            metadata.is_file(),
            "{} is missing: the tests read the real subtensor metadata from tests/testdata/",
            metadata.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture_path = dir.path().join("fixture.json");
        std::fs::write(&fixture_path, fixture.to_string()).expect("write fixture");
        let port_file = dir.path().join("port");
        let log = std::fs::File::create(dir.path().join("devchain.log")).expect("log");
        let child = Command::new(venv_python())
            .arg(repo_root().join("tests/devchain/devchain.py"))
            .arg("--metadata")
            .arg(&metadata)
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--fixture")
            .arg(&fixture_path)
            .args(["--block-ms", &block_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the dev chain");
        let mut port = 0u16;
        assert!(
            eventually(Duration::from_secs(120), || {
                port = std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                port != 0
            }),
            "the dev chain did not start"
        );
        DevChain {
            child,
            url: format!("ws://127.0.0.1:{port}"),
            dir,
        }
    }

    /// Calls a JSON-RPC method (e.g. the `dev_*` test controls) and returns its result.
    pub fn rpc(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let out = Command::new(venv_python())
            .arg("-c")
            .arg(
                "import json, sys\n\
                 from websockets.sync.client import connect\n\
                 with connect(sys.argv[1]) as ws:\n\
                 \x20   ws.send(json.dumps({'jsonrpc': '2.0', 'id': 1, 'method': sys.argv[2], 'params': json.loads(sys.argv[3])}))\n\
                 \x20   print(json.dumps(json.loads(ws.recv()).get('result')))",
            )
            .args([&self.url, method, &params.to_string()])
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON result")
    }

    /// The chain's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("devchain.log")).unwrap_or_default()
    }
}

impl Drop for DevChain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hotkey keyfile with a fixed seed (`0x07…07`), whose address is [`SEED7_SS58`].
pub fn write_seed7_hotkey(path: &Path) {
    std::fs::write(
        path,
        format!("{{\"secretSeed\": \"0x{}\"}}", "07".repeat(32)),
    )
    .expect("write hotkey");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// The address of [`write_seed7_hotkey`]'s key (checked against `bittensor_wallet` in
/// `taominer_core::wallet`'s tests).
pub const SEED7_SS58: &str = "5EsNLFaGe9XK5LzWH3i6eC2Wqv6YqZS1442N1C4yeSdP6uxy";

/// Runs one of the Python proof scripts (`tests/hub/check_hub_server.py`,
/// `tests/devchain/check_devchain.py`) with the venv's official clients and asserts that it
/// passed every check: exit 0 and a closing `N passed, 0 failed` line.
pub fn assert_python_checks_pass(script: &Path, args: &[&std::ffi::OsStr]) {
    let out = Command::new(venv_python())
        .arg(script)
        .args(args)
        .output()
        .expect("run the Python checks");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "{text}"
    );
    // Shown with --nocapture: what was checked.
    println!("{text}");
}

/// Writes the trainer fixtures into `dir` (`tests/trainer/transformers_check.py make-data`): a
/// generated corpus as corpus.txt/.jsonl/.parquet and a byte-level BPE `tokenizer.json`.
pub fn make_training_data(dir: &Path) {
    run_ok(
        Command::new(venv_python())
            .arg(repo_root().join("tests/trainer/transformers_check.py"))
            .arg("make-data")
            .arg(dir),
        "make-data",
    );
}

/// An online configuration for the whole pipeline against the dev chain (netuid 1) and the local
/// Hub: the seed-7 hotkey, alice's token (both written into `dir`), `repo`, fast retries, the tiny
/// models' competition-2 minimum lifted, and a small trainer on `dir`'s generated corpus
/// (`transformers_check.py make-data`). `extra` is appended: more keys for `[trainer]` first
/// (it is the last table), then other tables. Returns the file's path.
pub fn online_config(
    dir: &Path,
    chain: &DevChain,
    hub: &HubServer,
    repo: &str,
    extra: &str,
) -> PathBuf {
    std::fs::write(dir.join("hf-token"), HUB_USERS[0].1).expect("write the token");
    write_seed7_hotkey(&dir.join("hotkey"));
    let path = dir.join("miner.toml");
    std::fs::write(
        &path,
        format!(
            r#"[miner]
offline = false
netuid = 1
chain_endpoint = "{chain}"
hotkey_ss58 = "{SEED7_SS58}"
hotkey_file = "{hotkey}"

[publisher]
repo = "{repo}"

[hub]
endpoint = "{hub}"
allow_insecure = true
token_file = "{token}"

[retry]
initial_ms = 50
max_ms = 500

[publisher.limits."2"]
min_parameters = 0

[trainer]
data = ["{corpus}"]
tokenizer = "{tokenizer}"
sequence_length = 64
batch_size = 4
lr = 0.003
warmup_steps = 5
{extra}
"#,
            chain = chain.url,
            hotkey = dir.join("hotkey").display(),
            hub = hub.url,
            token = dir.join("hf-token").display(),
            corpus = dir.join("corpus.txt").display(),
            tokenizer = dir.join("tokenizer.json").display(),
        ),
    )
    .expect("write miner.toml");
    path
}

/// Starts `miner-<part>` with `--config`, its state in `dir/<part>` and its log in
/// `dir/<part>.log`; panics with that log if it does not get to READY=1.
pub fn start_configured(part: &'static str, bus: &Bus, dir: &Path, config: &Path) -> Daemon {
    let mut daemon = Spawn::new(part, bus, &dir.join(part))
        .arg("--config")
        .arg(config.to_str().expect("UTF-8 path"))
        .log_to(&dir.join(format!("{part}.log")))
        .start();
    if !daemon.wait_notify("READY=1", Duration::from_secs(60)) {
        panic!(
            "{part} did not start: {}",
            std::fs::read_to_string(dir.join(format!("{part}.log"))).unwrap_or_default()
        );
    }
    daemon
}
