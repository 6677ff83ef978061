//! A Bittensor dendrite in a few lines of std Rust: signs `ImageSynapse` requests with a hotkey
//! exactly as `bittensor.Dendrite` does and reads the answers, over keep-alive HTTP/1.1.
//!
//! The tests use it where the official Python `Dendrite` is too slow to make load (hot swap under
//! load, floods, the benchmark). It is held to the protocol by the Python `bt.Axon` accepting its
//! requests in the benchmark, and by our axon accepting both it and the official client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use taominer_core::wallet::Hotkey;

/// `sha3_256("")`: the body hash of a synapse without hash fields, as `ImageSynapse`.
pub const EMPTY_BODY_HASH: &str =
    "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a";

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn prediction(&self) -> Option<f64> {
        self.body.get("prediction").and_then(|p| p.as_f64())
    }
}

/// How to spoil a request (for the negative tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoil {
    None,
    /// No signature header.
    Unsigned,
    /// One bit of the signature flipped.
    BadSignature,
}

/// A client with its own uuid and a keep-alive connection.
pub struct Client {
    pub hotkey: Hotkey,
    pub axon_hotkey: String,
    pub addr: String,
    pub uuid: String,
    last_nonce: u64,
    conn: Option<BufReader<TcpStream>>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

impl Client {
    pub fn new(hotkey: Hotkey, axon_hotkey: &str, addr: &str, uuid: &str) -> Client {
        Client {
            hotkey,
            axon_hotkey: axon_hotkey.to_string(),
            addr: addr.to_string(),
            uuid: uuid.to_string(),
            last_nonce: 0,
            conn: None,
        }
    }

    /// A fresh nonce, strictly increasing for this client.
    pub fn nonce(&mut self) -> u64 {
        self.last_nonce = now_ns().max(self.last_nonce + 1);
        self.last_nonce
    }

    /// The headers and body of a signed `ImageSynapse` request with `nonce`.
    pub fn request(
        &self,
        image_b64: &str,
        nonce: u64,
        spoil: Spoil,
    ) -> (Vec<(String, String)>, Vec<u8>) {
        let me = self.hotkey.ss58().to_string();
        let message = format!(
            "{nonce}.{me}.{}.{}.{EMPTY_BODY_HASH}",
            self.axon_hotkey, self.uuid
        );
        let mut sig = self.hotkey.sign(message.as_bytes());
        if spoil == Spoil::BadSignature {
            sig[10] ^= 1;
        }
        let mut headers = vec![
            ("name".to_string(), "ImageSynapse".to_string()),
            ("timeout".to_string(), "12.0".to_string()),
            (
                "bt_header_axon_hotkey".to_string(),
                self.axon_hotkey.clone(),
            ),
            ("bt_header_dendrite_ip".to_string(), "127.0.0.1".to_string()),
            (
                "bt_header_dendrite_version".to_string(),
                "10005000".to_string(),
            ),
            ("bt_header_dendrite_nonce".to_string(), nonce.to_string()),
            ("bt_header_dendrite_uuid".to_string(), self.uuid.clone()),
            ("bt_header_dendrite_hotkey".to_string(), me.clone()),
            (
                "computed_body_hash".to_string(),
                EMPTY_BODY_HASH.to_string(),
            ),
        ];
        if spoil != Spoil::Unsigned {
            headers.push((
                "bt_header_dendrite_signature".to_string(),
                format!("0x{}", hex::encode(sig)),
            ));
        }
        let body = serde_json::json!({
            "name": "ImageSynapse", "timeout": 12.0, "total_size": 0, "header_size": 0,
            "dendrite": {"ip": "127.0.0.1", "version": 10005000, "nonce": nonce, "uuid": self.uuid, "hotkey": me},
            "axon": {"hotkey": self.axon_hotkey},
            "computed_body_hash": EMPTY_BODY_HASH,
            "image": image_b64, "prediction": -1.0,
        });
        (headers, body.to_string().into_bytes())
    }

    /// Drops the kept-alive connection: the next query connects anew.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Sends a signed query; reconnects once if a kept-alive connection was closed.
    pub fn query(&mut self, image_b64: &str, spoil: Spoil) -> std::io::Result<Answer> {
        let nonce = self.nonce();
        let (headers, body) = self.request(image_b64, nonce, spoil);
        self.send("/ImageSynapse", &headers, &body)
    }

    /// Sends raw headers and body to `path`.
    pub fn send(
        &mut self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> std::io::Result<Answer> {
        let mut head = format!("POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", self.addr, body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        for attempt in 0..2 {
            if self.conn.is_none() {
                let s = TcpStream::connect(&self.addr)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                self.conn = Some(BufReader::new(s));
            }
            let conn = self.conn.as_mut().expect("connected");
            let sent = conn
                .get_mut()
                .write_all(head.as_bytes())
                .and_then(|_| conn.get_mut().write_all(body));
            match sent.and_then(|_| read_answer(conn)) {
                Ok(a) => {
                    if a.header("connection")
                        .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                    {
                        self.conn = None;
                    }
                    return Ok(a);
                }
                // A kept-alive connection the server closed: reconnect once.
                Err(_) if attempt == 0 => self.conn = None,
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }
}

fn read_answer(r: &mut BufReader<TcpStream>) -> std::io::Result<Answer> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut headers = Vec::new();
    let mut length = None;
    let mut chunked = false;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            }
            if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
            headers.push((k, v));
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("bad chunk"))?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body = vec![0u8; length.unwrap_or(0)];
        r.read_exact(&mut body)?;
    }
    Ok(Answer {
        status,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    })
}

/// The ONNX Runtime library of the test venv's `onnxruntime` wheel.
pub fn ort_library() -> std::path::PathBuf {
    let lib = crate::repo_root().join(".venv/lib");
    for py in std::fs::read_dir(&lib).expect("venv lib").flatten() {
        let capi = py.path().join("site-packages/onnxruntime/capi");
        if let Ok(entries) = std::fs::read_dir(&capi) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("libonnxruntime.so.") {
                    return e.path();
                }
            }
        }
    }
    panic!("no libonnxruntime.so.* in the venv's onnxruntime wheel; run scripts/setup")
}

/// Standard base64, as the synapse's `image` field carries an encoded image.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Runs the venv's Python in the repository root; returns stdout.
fn predictor_python(args: &[&str], what: &str) -> String {
    let out = crate::run_ok(
        std::process::Command::new(crate::venv_python())
            .args(args)
            .current_dir(crate::repo_root()),
        what,
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// A script under `tests/predictor/`.
fn predictor_script(name: &str) -> String {
    crate::repo_root()
        .join("tests/predictor")
        .join(name)
        .display()
        .to_string()
}

/// Builds a test model; `extra` are make_model.py flags.
pub fn make_model(path: &Path, seed: u64, extra: &[&str]) {
    let mut args = vec![
        predictor_script("make_model.py"),
        path.display().to_string(),
        "--seed".into(),
        seed.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    predictor_python(&refs, "make_model.py");
}

/// Test images (JPEG as validators send them, PNG of PIL's decoded pixels).
pub fn make_images(dir: &Path) {
    predictor_python(
        &[
            &predictor_script("reference.py"),
            "images",
            dir.to_str().unwrap(),
        ],
        "reference.py images",
    );
}

/// `miner-predictor predict` on images; returns the predictions in order.
pub fn predict_cli(model: &Path, images: &[PathBuf], tensor_out: Option<&Path>) -> Vec<f64> {
    let mut cmd = Command::new(crate::bin_dir().join("miner-predictor"));
    cmd.arg("predict")
        .arg("--model")
        .arg(model)
        .arg("--ort-library")
        .arg(ort_library())
        .args(images);
    if let Some(d) = tensor_out {
        cmd.arg("--tensor-out").arg(d);
    }
    let out = String::from_utf8(crate::run_ok(&mut cmd, "miner-predictor predict")).unwrap();
    out.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["prediction"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// Creates the wallets `validator` and `stranger` under `dir` with the official
/// `bittensor_wallet` (`tests/predictor/dendrite_check.py wallets`); returns their SS58 addresses.
pub fn dendrite_wallets(dir: &Path) -> (String, String) {
    let out = predictor_python(
        &[
            &predictor_script("dendrite_check.py"),
            "wallets",
            dir.to_str().expect("UTF-8 path"),
        ],
        "dendrite_check.py wallets",
    );
    let keys: serde_json::Value = serde_json::from_str(&out).expect("JSON from dendrite_check.py");
    let get = |k: &str| keys[k].as_str().expect("an SS58 address").to_string();
    (get("validator"), get("stranger"))
}

/// The official `Dendrite` against our axon (`tests/predictor/dendrite_check.py check`): the
/// validator's `ImageSynapse` on `image` is answered 200 with `expect`, signed; a stranger 403,
/// a tampered signature and a replay 401, a body over `max_body` 413, an unknown synapse 404.
pub fn official_dendrite_check(
    wallets: &Path,
    port: u16,
    axon_hotkey: &str,
    image: &Path,
    expect: f64,
    max_body: u64,
) {
    crate::assert_python_checks_pass(
        &crate::repo_root().join("tests/predictor/dendrite_check.py"),
        &[
            "check".as_ref(),
            "--wallets".as_ref(),
            wallets.as_os_str(),
            "--port".as_ref(),
            port.to_string().as_ref(),
            "--axon-hotkey".as_ref(),
            axon_hotkey.as_ref(),
            "--image".as_ref(),
            image.as_os_str(),
            "--expect".as_ref(),
            expect.to_string().as_ref(),
            "--max-body".as_ref(),
            max_body.to_string().as_ref(),
        ],
    );
}
