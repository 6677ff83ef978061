//! `[trainer]` and `[trainer.model]`: the training run, read only by the trainer. Names follow
//! upstream's miner flags where one exists. `start` and `device` are typed here, once, so that the
//! trainer matches on values instead of comparing strings (and never falls back silently).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Device};

/// `trainer.start`: where the first weights come from, as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartFrom {
    /// A new model with `[trainer.model]`'s sizes.
    Scratch,
    /// The Hugging Face model directory `trainer.load_model_dir`.
    ModelDir,
    /// The model UID `trainer.load_uid` committed (online).
    Uid,
    /// The competition's best model (online).
    Best,
}

impl StartFrom {
    /// Every value, in the order shown to users.
    pub const ALL: [StartFrom; 4] = [
        StartFrom::Scratch,
        StartFrom::ModelDir,
        StartFrom::Uid,
        StartFrom::Best,
    ];

    /// The word used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            StartFrom::Scratch => "scratch",
            StartFrom::ModelDir => "model-dir",
            StartFrom::Uid => "uid",
            StartFrom::Best => "best",
        }
    }

    /// Whether this start reads another miner's model (the chain and the Hub: online only).
    pub fn is_remote(self) -> bool {
        matches!(self, StartFrom::Uid | StartFrom::Best)
    }
}

impl fmt::Display for StartFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StartFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        StartFrom::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown start {s:?}; allowed: {}",
                    StartFrom::ALL.map(StartFrom::as_str).join(", ")
                )
            })
    }
}

/// Where the first weights come from, with what that needs: `trainer.start` resolved against
/// `load_model_dir` and `load_uid` ([`TrainerConfig::resolve_start`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Scratch,
    ModelDir(PathBuf),
    Uid(u16),
    Best,
}

/// `trainer.engine`: who trains. The daemon's own candle loop, or an external engine (torchrun +
/// FSDP, DeepSpeed, …) it supervises, scoring its checkpoints as validators do
/// (`[trainer.external]`, docs/trainer.md "External engine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// The built-in candle loop.
    #[default]
    Candle,
    /// `[trainer.external].command`, run as the daemon's child.
    External,
}

/// `[trainer.external]`: the engine `trainer.engine = "external"` runs, and the checkpoints it
/// writes. The contract between the daemon and the engine is in docs/trainer.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExternalConfig {
    /// The engine's argv (no shell), e.g. `["torchrun", "--nproc-per-node", "8", "train.py"]`.
    pub command: Vec<String>,
    /// Its working directory (unset: `<state>/external`).
    pub workdir: Option<PathBuf>,
    /// Variables added to its environment (never logged: they may hold secrets).
    pub environment: BTreeMap<String, String>,
    /// Where the engine writes checkpoints, one directory each (absolute).
    pub checkpoint_dir: Option<PathBuf>,
    /// The file the engine writes last into a checkpoint; empty: a checkpoint is complete once its
    /// files parse and their sizes have not changed for `settle_seconds`.
    pub complete_marker: String,
    /// Without a marker: how long a checkpoint's file sizes must stay unchanged.
    pub settle_seconds: u64,
    /// The flag that tells the command which checkpoint to resume from (unset: none is passed).
    pub resume_flag: Option<String>,
    /// The JSON-lines file the engine appends its progress to (unset: `<state>/external/metrics.jsonl`).
    pub metrics_file: Option<PathBuf>,
    /// After SIGTERM to the engine's process group, how long before SIGKILL.
    pub stop_grace_seconds: u64,
    /// Where checkpoints are scored (unset: `trainer.device`).
    pub score_device: Option<Device>,
    /// Crashes in a row (each within a minute of its start) before the run is `failed`.
    pub max_restarts: u32,
    /// The first delay before a restart; it doubles per crash in a row up to `restart_max_ms`.
    pub restart_initial_ms: u64,
    pub restart_max_ms: u64,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        ExternalConfig {
            command: Vec::new(),
            workdir: None,
            environment: BTreeMap::new(),
            checkpoint_dir: None,
            complete_marker: "COMPLETE".into(),
            settle_seconds: 30,
            resume_flag: None,
            metrics_file: None,
            stop_grace_seconds: 20,
            score_device: None,
            max_restarts: 5,
            restart_initial_ms: 5_000,
            restart_max_ms: 300_000,
        }
    }
}

impl ExternalConfig {
    /// The marker file, when one is configured.
    pub fn marker(&self) -> Option<&str> {
        (!self.complete_marker.is_empty()).then_some(self.complete_marker.as_str())
    }

    /// Checks `[trainer.external]` for `trainer.engine = "external"`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(ConfigError::new(
                "trainer.external.command",
                format!("{:?}", self.command),
                "the engine's argv, a non-empty list (e.g. [\"torchrun\", \"--nproc-per-node\", \"8\", \"train.py\"])",
            ));
        }
        match &self.checkpoint_dir {
            Some(d) if d.is_absolute() => {}
            other => {
                return Err(ConfigError::new(
                    "trainer.external.checkpoint_dir",
                    other
                        .as_ref()
                        .map_or("(unset)".into(), |d| d.display().to_string()),
                    "an absolute path: where the engine writes its checkpoints",
                ))
            }
        }
        let m = &self.complete_marker;
        if m.contains('/') || m == "." || m == ".." || m.len() > 255 {
            return Err(ConfigError::new(
                "trainer.external.complete_marker",
                m,
                "a file name (no '/'), or empty for completion by settled sizes",
            ));
        }
        if self.marker().is_none() && self.settle_seconds == 0 {
            return Err(ConfigError::new(
                "trainer.external.settle_seconds",
                0,
                "a positive number of seconds when no complete_marker is set",
            ));
        }
        if self.resume_flag.as_ref().is_some_and(|f| f.is_empty()) {
            return Err(ConfigError::new(
                "trainer.external.resume_flag",
                "\"\"",
                "a flag such as \"--resume\", or unset",
            ));
        }
        for k in self.environment.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(ConfigError::new(
                    "trainer.external.environment",
                    k,
                    "variable names without '=' or NUL",
                ));
            }
        }
        if self.restart_initial_ms == 0 || self.restart_max_ms < self.restart_initial_ms {
            return Err(ConfigError::new(
                "trainer.external.restart_max_ms",
                self.restart_max_ms,
                format!(
                    "at least restart_initial_ms ({}), which must be positive",
                    self.restart_initial_ms
                ),
            ));
        }
        if self.stop_grace_seconds > 3600 {
            return Err(ConfigError::new(
                "trainer.external.stop_grace_seconds",
                self.stop_grace_seconds,
                "at most 3600",
            ));
        }
        Ok(())
    }
}

/// `[trainer]`: the training run. Names follow upstream's miner flags where one exists
/// (`lr`, `accumulation_steps`, `pages_per_epoch`, `avg_loss_upload_threshold`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    /// Who trains: `candle` (the built-in loop) or `external` (`[trainer.external]`).
    pub engine: Engine,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with the `cuda` feature).
    pub device: Device,
    /// Start training when the daemon starts (else wait for `minerctl train start`).
    pub autostart: bool,
    /// Where the first weights come from: `scratch` (sizes in `[trainer.model]`), `model-dir`
    /// (`load_model_dir`), `uid` (`load_uid`'s committed model) or `best` (the competition's best).
    pub start: StartFrom,
    /// The model directory for `start = "model-dir"`.
    pub load_model_dir: Option<PathBuf>,
    /// The UID whose committed model `start = "uid"` trains on.
    pub load_uid: Option<u16>,
    /// `tokenizer.json`; unset: the model directory's tokenizer, else the built-in byte tokenizer.
    pub tokenizer: Option<PathBuf>,
    /// Local training text: files or directories of `.txt`, `.jsonl` and `.parquet`.
    pub data: Vec<PathBuf>,
    /// A Hugging Face dataset repo whose Parquet shards are trained on too (online mode).
    pub dataset_repo: Option<String>,
    /// Its branch or commit.
    pub dataset_revision: String,
    /// Parquet shards drawn from it, seeded (0: all).
    pub dataset_files: usize,
    /// The text column of JSONL and Parquet sources.
    pub text_field: String,
    /// Parts per thousand of documents held out for evaluation (chosen by content hash).
    pub eval_permille: u32,
    /// Most eval sequences scored per evaluation (0: all).
    pub eval_sequences: usize,
    pub sequence_length: usize,
    pub batch_size: usize,
    pub accumulation_steps: usize,
    pub lr: f64,
    pub min_lr_ratio: f64,
    pub warmup_steps: u64,
    /// Steps of the cosine schedule and of the run (0: until `num_epochs`).
    pub max_steps: u64,
    /// Epochs to train (-1: no limit, as upstream).
    pub num_epochs: i64,
    /// Sequences per page; each epoch draws `pages_per_epoch` pages (0: all).
    pub page_sequences: usize,
    pub pages_per_epoch: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clip (0: off).
    pub grad_clip: f64,
    pub seed: u64,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    /// Checkpoints kept besides the best one and pending candidates.
    pub keep_checkpoints: usize,
    /// A checkpoint whose eval loss is below this becomes a candidate (0: never, as upstream).
    pub avg_loss_upload_threshold: f64,
    /// Emit a candidate only when it beats the competition's current best model.
    pub gate_on_best: bool,
    /// How much better than the best model a gated candidate must be: its loss below
    /// `best * (1 - gate_epsilon)` (SN9's starting epsilon; validators favour the older model).
    pub gate_epsilon: f64,
    /// Safetensors shard size above which the checkpoint is sharded with an index.
    pub max_shard_bytes: u64,
    /// Keep only each decoder layer's input through the forward pass and recompute the layer in
    /// the backward pass (activation checkpointing): activations shrink from every layer's
    /// intermediates to one `[batch, seq, hidden]` per layer, for about a third more compute.
    /// Unset: on for CUDA (memory is what limits a GPU run), off on the CPU.
    pub checkpoint_activations: Option<bool>,
    /// Model sizes for `start = "scratch"`.
    pub model: TrainerModelConfig,
    /// The external engine (`engine = "external"`).
    pub external: ExternalConfig,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            engine: Engine::Candle,
            device: Device::Cpu,
            autostart: true,
            start: StartFrom::Scratch,
            load_model_dir: None,
            load_uid: None,
            tokenizer: None,
            data: Vec::new(),
            dataset_repo: None,
            dataset_revision: "main".into(),
            dataset_files: 0,
            text_field: "text".into(),
            eval_permille: 50,
            eval_sequences: 64,
            sequence_length: 256,
            batch_size: 4,
            accumulation_steps: 1,
            lr: 3e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 20,
            max_steps: 0,
            num_epochs: -1,
            page_sequences: 100,
            pages_per_epoch: 0,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            seed: 42,
            eval_every: 50,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            avg_loss_upload_threshold: 0.0,
            gate_on_best: false,
            gate_epsilon: 0.005,
            max_shard_bytes: 5 * 1024 * 1024 * 1024,
            checkpoint_activations: None,
            model: TrainerModelConfig::default(),
            external: ExternalConfig::default(),
        }
    }
}

/// `[trainer.model]`: a LLaMA configuration in transformers' terms, for training from scratch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerModelConfig {
    /// 0: the tokenizer's vocabulary size.
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
}

impl Default for TrainerModelConfig {
    fn default() -> Self {
        TrainerModelConfig {
            vocab_size: 0,
            hidden_size: 128,
            intermediate_size: 352,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 2048,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: false,
        }
    }
}

impl TrainerConfig {
    /// Where the first weights come from, with the setting `start` needs.
    pub fn resolve_start(&self) -> Result<Start, ConfigError> {
        match self.start {
            StartFrom::Scratch => Ok(Start::Scratch),
            StartFrom::Best => Ok(Start::Best),
            StartFrom::ModelDir => match &self.load_model_dir {
                Some(dir) => Ok(Start::ModelDir(dir.clone())),
                None => Err(ConfigError::new(
                    "trainer.load_model_dir",
                    "(unset)",
                    "a model directory when trainer.start = \"model-dir\"",
                )),
            },
            StartFrom::Uid => match self.load_uid {
                Some(uid) => Ok(Start::Uid(uid)),
                None => Err(ConfigError::new(
                    "trainer.load_uid",
                    "(unset)",
                    "a UID when trainer.start = \"uid\"",
                )),
            },
        }
    }

    /// The checks the trainer needs before it touches a device or a file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("trainer.sequence_length", self.sequence_length),
            ("trainer.batch_size", self.batch_size),
            ("trainer.accumulation_steps", self.accumulation_steps),
            ("trainer.page_sequences", self.page_sequences),
            ("trainer.model.hidden_size", self.model.hidden_size),
            (
                "trainer.model.intermediate_size",
                self.model.intermediate_size,
            ),
            (
                "trainer.model.num_hidden_layers",
                self.model.num_hidden_layers,
            ),
            (
                "trainer.model.num_attention_heads",
                self.model.num_attention_heads,
            ),
            (
                "trainer.model.num_key_value_heads",
                self.model.num_key_value_heads,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(ConfigError::new(key, 0, "a positive integer"));
            }
        }
        if self.sequence_length < 2 {
            return Err(ConfigError::new(
                "trainer.sequence_length",
                self.sequence_length,
                "at least 2 (a token and the one after it)",
            ));
        }
        let m = &self.model;
        if !m.hidden_size.is_multiple_of(m.num_attention_heads)
            || !m.num_attention_heads.is_multiple_of(m.num_key_value_heads)
            || !(m.hidden_size / m.num_attention_heads).is_multiple_of(2)
        {
            return Err(ConfigError::new(
                "trainer.model.num_attention_heads",
                m.num_attention_heads,
                format!(
                    "a divisor of hidden_size ({}) giving an even head size, and a multiple of num_key_value_heads ({})",
                    m.hidden_size, m.num_key_value_heads
                ),
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(ConfigError::new("trainer.lr", self.lr, "a positive number"));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(ConfigError::new(
                "trainer.min_lr_ratio",
                self.min_lr_ratio,
                "between 0 and 1",
            ));
        }
        for (key, v) in [("trainer.beta1", self.beta1), ("trainer.beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(ConfigError::new(key, v, "at least 0 and below 1"));
            }
        }
        if !(0.0..1.0).contains(&self.gate_epsilon) {
            return Err(ConfigError::new(
                "trainer.gate_epsilon",
                self.gate_epsilon,
                "at least 0 and below 1",
            ));
        }
        if self.eval_permille == 0 || self.eval_permille >= 1000 {
            return Err(ConfigError::new(
                "trainer.eval_permille",
                self.eval_permille,
                "between 1 and 999 (parts per thousand of documents held out for evaluation)",
            ));
        }
        if self.eval_every == 0 || self.checkpoint_every == 0 {
            return Err(ConfigError::new(
                if self.eval_every == 0 {
                    "trainer.eval_every"
                } else {
                    "trainer.checkpoint_every"
                },
                0,
                "a positive number of steps",
            ));
        }
        if self.num_epochs == 0 || self.num_epochs < -1 {
            return Err(ConfigError::new(
                "trainer.num_epochs",
                self.num_epochs,
                "-1 (no limit) or a positive number",
            ));
        }
        self.resolve_start()?;
        if self.engine == Engine::External {
            self.external.validate()?;
            if self.start.is_remote() {
                return Err(ConfigError::new(
                    "trainer.start",
                    self.start,
                    "scratch or model-dir with trainer.engine = \"external\" (the engine starts from TAOMINER_MODEL_CONFIG)",
                ));
            }
        }
        Ok(())
    }
}
