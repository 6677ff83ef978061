//! A predictor under test: a private bus, a state directory, the daemon started with `--set`
//! overrides, and the ways tests talk to it (signed clients, plain HTTP, D-Bus properties).
//! Shared by the predictor's functional tests and its attack tests.

use std::path::PathBuf;
use std::process::Command;

use taominer_core::wallet::Hotkey;

use crate::axon::{ort_library, Client};
use crate::*;

/// A running predictor with its bus and state.
pub struct Setup {
    pub bus: Bus,
    pub dir: tempfile::TempDir,
    pub model: PathBuf,
    pub predictor: Option<Daemon>,
    pub port: u16,
}

/// The axon's hotkey (the predictor's keyfile is the seed-7 test key).
pub const AXON: &str = SEED7_SS58;

impl Default for Setup {
    fn default() -> Self {
        Setup::new()
    }
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        write_seed7_hotkey(&dir.path().join("hotkey"));
        let model = dir.path().join("model.onnx");
        Setup {
            bus: Bus::start(),
            dir,
            model,
            predictor: None,
            port: 0,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the predictor with `extra` `--set` overrides and waits until it serves.
    pub fn start(&mut self, extra: &[String]) {
        let state = self.dir.path().join("state");
        let mut spawn = Spawn::new("predictor", &self.bus, &state)
            .log_to(&self.path("predictor.log"))
            .arg("--set")
            .arg("miner.profile=\"bitmind\"");
        let mut sets = vec![
            format!(
                "predictor.model_path={:?}",
                self.model.display().to_string()
            ),
            format!(
                "predictor.ort_library={:?}",
                ort_library().display().to_string()
            ),
            "predictor.listen=\"127.0.0.1:0\"".to_string(),
            format!(
                "miner.hotkey_file={:?}",
                self.path("hotkey").display().to_string()
            ),
            "predictor.watch_interval_ms=100".to_string(),
        ];
        sets.extend(extra.iter().cloned());
        for s in sets {
            spawn = spawn.arg("--set").arg(&s);
        }
        let mut d = spawn.start();
        d.assert_ready();
        self.port = axon_port(&d).unwrap_or_else(|| panic!("no port\n{}", self.log()));
        self.predictor = Some(d);
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A signed client for the key of `seed` (see [`key`]).
    pub fn client(&self, seed: u8, uuid: &str) -> Client {
        Client::new(key(seed), AXON, &self.addr(), uuid)
    }

    pub fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(self.addr()).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    /// `Predictor1.Status()`'s figures, through `minerctl predictor status --json`.
    pub fn status(&self) -> serde_json::Value {
        json(&minerctl(&self.bus, &["predictor", "status", "--json"]))
    }

    pub fn prop(&self, name: &str) -> String {
        let out = Command::new("dbus-send")
            .args([
                &format!("--bus={}", self.bus.address),
                "--print-reply=literal",
                "--dest=org.taominer.Predictor1",
                "/org/taominer/Predictor1",
                "org.freedesktop.DBus.Properties.Get",
                "string:org.taominer.Predictor1",
                &format!("string:{name}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn reload(&self) -> (bool, String) {
        let out = Command::new("dbus-send")
            .args([
                &format!("--bus={}", self.bus.address),
                "--print-reply",
                "--dest=org.taominer.Predictor1",
                "/org/taominer/Predictor1",
                "org.taominer.Predictor1.Reload",
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("predictor.log")).unwrap_or_default()
    }
}

/// The port a started predictor's axon listens on, from its `STATUS=` (`… on 127.0.0.1:PORT`).
pub fn axon_port(predictor: &Daemon) -> Option<u16> {
    let status = predictor.messages.join("\n");
    status
        .split("on 127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
}

/// The test key with seed `[seed; 32]`.
pub fn key(seed: u8) -> Hotkey {
    Hotkey::from_seed([seed; 32]).unwrap()
}
