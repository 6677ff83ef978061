//! `[predictor]`: the ONNX model, the device it runs on and the axon that serves it, read only by
//! the predictor. `device` and `output` are typed here, once, so that the predictor matches on
//! values instead of comparing strings.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Device};
use crate::formats::ss58;

/// `predictor.output`: what the model's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// A logit: the probability is its sigmoid.
    Logit,
    /// Already a probability.
    Probability,
}

impl Output {
    /// Every value, in the order shown to users.
    pub const ALL: [Output; 2] = [Output::Logit, Output::Probability];

    /// The word used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Output::Logit => "logit",
            Output::Probability => "probability",
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Output::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown output {s:?}; allowed: {}",
                    Output::ALL.map(Output::as_str).join(", ")
                )
            })
    }
}

/// The largest `predictor.max_timeout_s` (seconds): longer than any validator waits.
pub const MAX_TIMEOUT_S: f64 = 600.0;

/// `[predictor]`: the ONNX model served on the Bittensor axon (SN34 `ImageSynapse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictorConfig {
    /// The ONNX model file; unset: the predictor stays idle and says so. Watched: a new file is
    /// loaded, checked and swapped in while requests keep being served.
    pub model_path: Option<PathBuf>,
    /// The ONNX Runtime shared library; unset: `$ORT_DYLIB_PATH`, else `libonnxruntime.so` from the
    /// dynamic loader's path.
    pub ort_library: Option<PathBuf>,
    /// `cpu`, or `cuda` / `cuda:N` (needs the `cuda` build; never falls back to the CPU).
    pub device: Device,
    /// ONNX Runtime intra-op threads; 0: ONNX Runtime's default (one per core).
    pub threads: usize,
    /// Where the axon listens.
    pub listen: String,
    /// Announce the axon on chain at this IP through the committer (`ServeAxon`); unset: don't.
    pub announce_ip: Option<String>,
    /// The port announced; unset: the port of `listen`.
    pub announce_port: Option<u16>,
    /// Model input height and width; unset: read from the model.
    pub image_size: Option<[u32; 2]>,
    /// Per-channel normalization after scaling to [0, 1]; unset: none (the base miner's NPR
    /// transform). Set both or neither.
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    /// What the model outputs: `logit` (sigmoid applied) or `probability`.
    pub output: Output,
    /// Hotkeys always allowed to query (SS58), in addition to the metagraph's validators.
    pub allow: Vec<String>,
    /// Callers from the metagraph need a validator permit.
    pub require_validator_permit: bool,
    /// Callers from the metagraph need at least this stake, in TAO. The default, 1000, is
    /// SoundsRight's upstream `--validator_min_stake`; it also keeps a hotkey that only holds a
    /// permit on a thin subnet from being "a validator" here. 0 admits any permit holder.
    pub min_stake_tao: f64,
    /// Request bodies above this are refused with 413.
    pub max_body_bytes: u64,
    /// Requests waiting for the model at most; beyond it the lowest stake is shed (503).
    pub queue_capacity: usize,
    /// Most requests run together in one ONNX Runtime call (models with a dynamic batch axis).
    pub max_batch: usize,
    /// A synapse `timeout` above this is treated as this (seconds): it bounds queueing and the
    /// nonce window, and the header is not signed.
    pub max_timeout_s: f64,
    /// How often the validator set is refreshed from the committer's metagraph (seconds).
    pub metagraph_refresh_s: u64,
    /// Connections one address (IPv4, or IPv6 /64) may hold open; more are closed at accept.
    /// Raise it behind a reverse proxy, where every connection comes from the proxy.
    pub connections_per_address: usize,
    /// Requests one validator hotkey may have in flight; more are answered 429.
    pub in_flight_per_hotkey: usize,
    /// How often the model file is checked for a new version (milliseconds).
    pub watch_interval_ms: u64,
}

impl Default for PredictorConfig {
    fn default() -> Self {
        PredictorConfig {
            model_path: None,
            ort_library: None,
            device: Device::Cpu,
            threads: 0,
            listen: "0.0.0.0:8091".into(),
            announce_ip: None,
            announce_port: None,
            image_size: None,
            mean: None,
            std: None,
            output: Output::Logit,
            allow: Vec::new(),
            require_validator_permit: true,
            min_stake_tao: 1000.0,
            max_body_bytes: 8 * 1024 * 1024,
            queue_capacity: 256,
            max_batch: 8,
            max_timeout_s: 60.0,
            connections_per_address: 16,
            in_flight_per_hotkey: 8,
            metagraph_refresh_s: 120,
            watch_interval_ms: 1000,
        }
    }
}

impl PredictorConfig {
    /// The checks the predictor needs before it opens a socket or loads a library.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = |k: &str| format!("predictor.{k}");
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                &p("listen"),
                format!("{:?}", self.listen),
                "an IP address and port, e.g. \"0.0.0.0:8091\"",
            ));
        }
        if let Some(ip) = &self.announce_ip {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::new(
                    &p("announce_ip"),
                    format!("{ip:?}"),
                    "the public IPv4 or IPv6 address validators reach the axon at",
                ));
            }
        }
        if let Some([h, w]) = self.image_size {
            if h == 0 || w == 0 || h > 8192 || w > 8192 {
                return Err(ConfigError::new(
                    &p("image_size"),
                    format!("[{h}, {w}]"),
                    "[height, width], each 1 to 8192",
                ));
            }
        }
        match (&self.mean, &self.std) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::new(
                    &p(if self.mean.is_some() { "std" } else { "mean" }),
                    "(unset)",
                    "set predictor.mean and predictor.std together",
                ))
            }
            (_, Some(std)) if std.iter().any(|v| !v.is_finite() || *v <= 0.0) => {
                return Err(ConfigError::new(
                    &p("std"),
                    format!("{std:?}"),
                    "three positive numbers",
                ))
            }
            _ => {}
        }
        for h in &self.allow {
            ss58::decode(h)
                .map_err(|e| ConfigError::new(&p("allow"), format!("{h:?}"), e.to_string()))?;
        }
        if !(self.min_stake_tao.is_finite() && self.min_stake_tao >= 0.0) {
            return Err(ConfigError::new(
                &p("min_stake_tao"),
                self.min_stake_tao,
                "a stake in TAO, 0 or more",
            ));
        }
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("queue_capacity", self.queue_capacity as u64),
            ("max_batch", self.max_batch as u64),
            ("metagraph_refresh_s", self.metagraph_refresh_s),
            ("watch_interval_ms", self.watch_interval_ms),
            (
                "connections_per_address",
                self.connections_per_address as u64,
            ),
            ("in_flight_per_hotkey", self.in_flight_per_hotkey as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(&p(key), value, "at least 1"));
            }
        }
        // Bounded: it sizes the nonce window and the nonce table's generations, and a request
        // may hold its place in the queue this long.
        if !(self.max_timeout_s.is_finite()
            && self.max_timeout_s > 0.0
            && self.max_timeout_s <= MAX_TIMEOUT_S)
        {
            return Err(ConfigError::new(
                &p("max_timeout_s"),
                self.max_timeout_s,
                format!("a positive number of seconds, at most {MAX_TIMEOUT_S}"),
            ));
        }
        Ok(())
    }
}
