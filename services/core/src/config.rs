//! Configuration: one TOML file shared by all daemons, layered and validated.
//!
//! Layers, later wins (design §5): built-in defaults < the TOML file (`--config FILE`) <
//! `TAOMINER_*` environment variables (`__` separates levels: `TAOMINER_MINER__NETUID=9`) <
//! `--set key=value` flags. Every daemon extracts the whole file, so a typo in any section is caught
//! by whichever daemon starts first, and unknown keys are errors rather than silently ignored.
//!
//! A bad value becomes a [`ConfigError`] whose one-line message names the key, the value, where it
//! came from and what is allowed; daemons print it and exit 78 (EX_CONFIG), which systemd shows
//! as "configuration error" and does not restart in a loop (`RestartPreventExitStatus=78`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};

use crate::formats::{competition, ss58};

/// Exit status for configuration errors (sysexits.h EX_CONFIG).
pub const EX_CONFIG: i32 = 78;

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "TAOMINER_";

/// The hotkey used in offline mode when none is configured: the well-known development account
/// `//Alice`. Offline mode never signs anything; the address only enters the secure hash.
pub const DEV_HOTKEY_SS58: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

/// Repository id used in offline mode when `publisher.repo` is not set.
pub const OFFLINE_REPO: &str = "offline/model";

/// Which subnet's formats the miner speaks (design §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// SN9 pretraining (taoverse commitments).
    Pretraining,
    /// SN37 finetuning (taoverse commitments).
    Finetuning,
    /// SN29 coldint (5-field commitments, string competitions).
    Coldint,
    /// SN105 SoundsRight (sha256 of the ids as the commitment).
    Soundsright,
    /// SN34 BitMind classic axon (no commitment).
    Bitmind,
}

impl Profile {
    /// Every profile, in the order shown to users.
    pub const ALL: [Profile; 5] = [
        Profile::Pretraining,
        Profile::Finetuning,
        Profile::Coldint,
        Profile::Soundsright,
        Profile::Bitmind,
    ];

    /// The name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Pretraining => "pretraining",
            Profile::Finetuning => "finetuning",
            Profile::Coldint => "coldint",
            Profile::Soundsright => "soundsright",
            Profile::Bitmind => "bitmind",
        }
    }

    /// Whether models of this profile are transformers directories that need a `config.json`.
    pub fn is_llm(self) -> bool {
        matches!(
            self,
            Profile::Pretraining | Profile::Finetuning | Profile::Coldint
        )
    }

    /// Whether this profile publishes models and commits their identity to the chain.
    pub fn commits(self) -> bool {
        !matches!(self, Profile::Bitmind)
    }

    /// The netuid this profile's subnet has on mainnet.
    pub fn default_netuid(self) -> u16 {
        match self {
            Profile::Pretraining => 9,
            Profile::Finetuning => 37,
            Profile::Coldint => 29,
            Profile::Soundsright => 105,
            Profile::Bitmind => 34,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown profile {s:?}; allowed: {}",
                    Profile::ALL.map(Profile::as_str).join(", ")
                )
            })
    }
}

/// `[miner]`: what every daemon needs to know about the miner as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinerConfig {
    /// Offline mode: no Hub, no chain; commitments go to a local ledger. The embedded default.
    pub offline: bool,
    /// Subnet id; defaults to the profile's mainnet netuid.
    pub netuid: Option<u16>,
    /// Which subnet's formats to speak.
    pub profile: Profile,
    /// Default competition for published models; defaults to the profile's current one.
    #[serde(deserialize_with = "string_or_int")]
    pub competition: Option<String>,
    /// Replaces the built-in list of competitions this profile accepts.
    pub competitions: Option<Vec<String>>,
    /// Substrate WebSocket endpoint of the chain.
    pub chain_endpoint: String,
    /// The hotkey's public SS58 address (enters the secure hash). Not a secret.
    pub hotkey_ss58: Option<String>,
    /// Path to the hotkey keyfile; `$CREDENTIALS_DIRECTORY/hotkey` is used when unset.
    pub hotkey_file: Option<PathBuf>,
    /// Accept a hotkey file that other users (its group, everyone) may read. Off: the daemon
    /// refuses to start and says which `chmod` to run (a readable key is a stolen key).
    pub allow_readable_hotkey: bool,
}

impl Default for MinerConfig {
    fn default() -> Self {
        MinerConfig {
            offline: true,
            netuid: None,
            profile: Profile::Pretraining,
            competition: None,
            competitions: None,
            chain_endpoint: "wss://entrypoint-finney.opentensor.ai:443".into(),
            hotkey_ss58: None,
            hotkey_file: None,
            allow_readable_hotkey: false,
        }
    }
}

impl MinerConfig {
    /// The netuid in effect.
    pub fn netuid(&self) -> u16 {
        self.netuid.unwrap_or(self.profile.default_netuid())
    }

    /// The competitions this miner accepts: the `competitions` override or the built-in table.
    pub fn allowed_competitions(&self) -> Vec<String> {
        match &self.competitions {
            Some(list) => list.clone(),
            None => competition::builtin(self.profile)
                .iter()
                .map(|c| c.id.to_string())
                .collect(),
        }
    }

    /// The default competition in effect.
    pub fn competition(&self) -> Option<String> {
        self.competition
            .clone()
            .or_else(|| competition::default_for(self.profile).map(str::to_string))
    }

    /// Where the hotkey keyfile is read from: `hotkey_file`, else the systemd credential.
    pub fn hotkey_path(&self) -> Option<PathBuf> {
        self.hotkey_file.clone().or_else(|| {
            std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|d| !d.is_empty())
                .map(|d| PathBuf::from(d).join("hotkey"))
        })
    }

    /// The hotkey address in effect: the configured one, or the development account offline.
    pub fn hotkey(&self) -> Option<&str> {
        match &self.hotkey_ss58 {
            Some(h) => Some(h),
            None if self.offline => Some(DEV_HOTKEY_SS58),
            None => None,
        }
    }
}

/// `[publisher]`: staging, pre-flight, Hugging Face uploads and the validator-identical hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublisherConfig {
    /// Hugging Face repository id `namespace/name` models are published to.
    pub repo: Option<String>,
    /// The Hub's base URL (what `HF_ENDPOINT` sets for the Python client). Must be `https://`:
    /// the token travels to it.
    pub endpoint: String,
    /// Accept an `http://` endpoint (a local test Hub). Never in production: the token and the
    /// models would cross the network in clear.
    pub allow_insecure: bool,
    /// File holding the Hugging Face token; `$CREDENTIALS_DIRECTORY/hf-token` when unset. The
    /// token itself never goes in this file: the TOML is world-readable, credentials are not.
    pub token_file: Option<PathBuf>,
    /// Make the repository public once the commitment is on chain. Default per profile, as
    /// upstream: on for finetuning, coldint and soundsright (validators must be able to fetch),
    /// off for pretraining (`--update_repo_visibility` is opt-in there).
    pub make_public_after_commit: Option<bool>,
    /// First retry delay (Hub requests and committer hand-offs), in milliseconds.
    pub retry_initial_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// Overrides of the built-in competition limits, by competition id, field by field.
    pub limits: BTreeMap<String, LimitsConfig>,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            repo: None,
            endpoint: "https://huggingface.co".into(),
            allow_insecure: false,
            token_file: None,
            make_public_after_commit: None,
            retry_initial_ms: 250,
            retry_max_ms: 30_000,
            limits: BTreeMap::new(),
        }
    }
}

/// `[publisher.limits."<competition>"]`: any field given replaces the built-in value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_bytes: Option<u64>,
    pub min_parameters: Option<u64>,
    pub max_parameters: Option<u64>,
    pub architectures: Option<Vec<String>>,
    /// `"required"`, `"any"`, or the name of the tokenizer validators impose.
    pub tokenizer: Option<String>,
}

impl PublisherConfig {
    /// The repository id in effect.
    pub fn repo(&self, miner: &MinerConfig) -> Option<String> {
        match &self.repo {
            Some(r) => Some(r.clone()),
            None if miner.offline => Some(OFFLINE_REPO.to_string()),
            None => None,
        }
    }

    /// The Hub base URL without a trailing slash.
    pub fn endpoint(&self) -> &str {
        self.endpoint.trim_end_matches('/')
    }

    /// Where the Hugging Face token is read from: `token_file`, else the systemd credential.
    pub fn token_path(&self) -> Option<PathBuf> {
        self.token_file.clone().or_else(|| {
            std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|d| !d.is_empty())
                .map(|d| PathBuf::from(d).join("hf-token"))
        })
    }

    /// Whether to make the repository public after the commitment is written.
    pub fn make_public_after_commit(&self, profile: Profile) -> bool {
        self.make_public_after_commit.unwrap_or(matches!(
            profile,
            Profile::Finetuning | Profile::Coldint | Profile::Soundsright
        ))
    }

    /// The limits validators of `competition` apply: the built-in ones with the configured
    /// fields replaced. `None` when neither exists (SoundsRight, retired competitions).
    pub fn limits_for(&self, profile: Profile, competition: &str) -> Option<competition::Limits> {
        let over = self.limits.get(competition);
        let mut limits = match (competition::builtin_limits(profile, competition), over) {
            (Some(l), _) => l,
            (None, Some(o)) => competition::Limits {
                max_bytes: o.max_bytes?,
                min_parameters: 0,
                max_parameters: o.max_parameters?,
                architectures: o.architectures.clone()?,
                tokenizer: competition::TokenizerRule::Any,
            },
            (None, None) => return None,
        };
        if let Some(o) = over {
            if let Some(v) = o.max_bytes {
                limits.max_bytes = v;
            }
            if let Some(v) = o.min_parameters {
                limits.min_parameters = v;
            }
            if let Some(v) = o.max_parameters {
                limits.max_parameters = v;
            }
            if let Some(v) = &o.architectures {
                limits.architectures = v.clone();
            }
            if let Some(v) = &o.tokenizer {
                limits.tokenizer = competition::TokenizerRule::parse(v);
            }
        }
        Some(limits)
    }
}

/// `[committer]`: the chain writer. Its chain settings arrive with the chain issue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitterConfig {}

/// `[trainer]`: the training run. Names follow upstream's miner flags where one exists
/// (`lr`, `accumulation_steps`, `pages_per_epoch`, `avg_loss_upload_threshold`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with the `cuda` feature).
    pub device: String,
    /// Start training when the daemon starts (else wait for `minerctl train start`).
    pub autostart: bool,
    /// Where the first weights come from: `scratch` (sizes in `[trainer.model]`), `model-dir`
    /// (`load_model_dir`), `uid` (`load_uid`'s committed model) or `best` (the competition's best).
    pub start: String,
    pub load_model_dir: Option<PathBuf>,
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
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            device: "cpu".into(),
            autostart: true,
            start: "scratch".into(),
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
        let device_ok = self.device == "cpu"
            || self.device == "cuda"
            || self
                .device
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<usize>().is_ok());
        if !device_ok {
            return Err(ConfigError::new(
                "trainer.device",
                format!("{:?}", self.device),
                "\"cpu\", \"cuda\" or \"cuda:N\"",
            ));
        }
        match self.start.as_str() {
            "scratch" | "best" => {}
            "model-dir" if self.load_model_dir.is_none() => {
                return Err(ConfigError::new(
                    "trainer.load_model_dir",
                    "(unset)",
                    "a model directory when trainer.start = \"model-dir\"",
                ))
            }
            "uid" if self.load_uid.is_none() => {
                return Err(ConfigError::new(
                    "trainer.load_uid",
                    "(unset)",
                    "a UID when trainer.start = \"uid\"",
                ))
            }
            "model-dir" | "uid" => {}
            other => {
                return Err(ConfigError::new(
                    "trainer.start",
                    format!("{other:?}"),
                    "\"scratch\", \"model-dir\", \"uid\" or \"best\"",
                ))
            }
        }
        Ok(())
    }
}

/// `[soundsright]`: the SN105 miner's model and its side services (profile `soundsright`).
///
/// The axon answers the competition synapses with `models.<COMPETITION>`'s ids, the publisher
/// commits `sha256(ns:name:rev:hotkey:competition)` for them, and the healthcheck API reports on
/// the miner. Upstream allows one competition per hotkey; so do we.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoundsrightConfig {
    /// The model this hotkey serves, under its competition id (`DENOISING_16000HZ`, …): upstream's
    /// `{TASK}_{RATE}_HF_MODEL_NAMESPACE/NAME/REVISION`. At most one entry.
    pub models: BTreeMap<String, SoundsrightModel>,
    /// The healthcheck HTTP API (`/healthcheck/*`); unset: off. Upstream listens on 0.0.0.0:6000.
    pub healthcheck_listen: Option<String>,
    /// Validator feedback records kept (oldest dropped first).
    pub feedback_keep: usize,
}

/// `[soundsright.models.<COMPETITION>]`: a model on the Hub at one commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoundsrightModel {
    pub namespace: String,
    pub name: String,
    /// A 40-hex commit id (validators refuse branch names).
    pub revision: String,
}

impl Default for SoundsrightConfig {
    fn default() -> Self {
        SoundsrightConfig {
            models: BTreeMap::new(),
            healthcheck_listen: None,
            feedback_keep: 1000,
        }
    }
}

impl SoundsrightConfig {
    /// The one competition served and its model, if configured.
    pub fn model(&self) -> Option<(&str, &SoundsrightModel)> {
        self.models.iter().next().map(|(c, m)| (c.as_str(), m))
    }

    fn validate(&self, miner: &MinerConfig) -> Result<(), ConfigError> {
        if self.models.len() > 1 {
            let names: Vec<&str> = self.models.keys().map(String::as_str).collect();
            return Err(ConfigError::new(
                "soundsright.models",
                names.join(", "),
                "one competition per hotkey (validators score a hotkey in one competition)",
            ));
        }
        if let Some((comp, model)) = self.model() {
            let key = |f: &str| format!("soundsright.models.{comp}.{f}");
            if miner.profile != Profile::Soundsright {
                return Err(ConfigError::new(
                    &format!("soundsright.models.{comp}"),
                    format!("(set with miner.profile = {:?})", miner.profile.as_str()),
                    "only with miner.profile = \"soundsright\"",
                ));
            }
            competition::check(miner.profile, comp, &miner.allowed_competitions()).map_err(
                |e| ConfigError::new("soundsright.models", format!("{comp:?}"), e.to_string()),
            )?;
            if let Some(c) = &miner.competition {
                if c != comp {
                    return Err(ConfigError::new(
                        "miner.competition",
                        format!("{c:?}"),
                        format!("the competition of soundsright.models ({comp:?}), or unset"),
                    ));
                }
            }
            let repo = format!("{}/{}", model.namespace, model.name);
            crate::formats::model_id::check_repo_id(miner.profile, &repo).map_err(|e| {
                ConfigError::new(&key("namespace"), format!("{repo:?}"), e.to_string())
            })?;
            if !is_commit_id(&model.revision) {
                return Err(ConfigError::new(
                    &key("revision"),
                    format!("{:?}", model.revision),
                    "a 40-hex-digit commit id (validators refuse branches and tags)",
                ));
            }
        }
        if let Some(listen) = &self.healthcheck_listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::new(
                    "soundsright.healthcheck_listen",
                    format!("{listen:?}"),
                    "an address and port such as 127.0.0.1:6000",
                ));
            }
        }
        if self.feedback_keep == 0 {
            return Err(ConfigError::new(
                "soundsright.feedback_keep",
                0,
                "at least 1",
            ));
        }
        Ok(())
    }
}

/// A full git commit id as the Hub and validators write it: 40 lowercase hex digits.
pub fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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
    pub device: String,
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
    pub output: String,
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
            device: "cpu".into(),
            threads: 0,
            listen: "0.0.0.0:8091".into(),
            announce_ip: None,
            announce_port: None,
            image_size: None,
            mean: None,
            std: None,
            output: "logit".into(),
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
        let device_ok = self.device == "cpu"
            || self.device == "cuda"
            || self
                .device
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<u32>().is_ok());
        if !device_ok {
            return Err(ConfigError::new(
                &p("device"),
                format!("{:?}", self.device),
                "\"cpu\", \"cuda\" or \"cuda:N\"",
            ));
        }
        if !matches!(self.output.as_str(), "logit" | "probability") {
            return Err(ConfigError::new(
                &p("output"),
                format!("{:?}", self.output),
                "\"logit\" (sigmoid is applied) or \"probability\"",
            ));
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

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub miner: MinerConfig,
    pub trainer: TrainerConfig,
    pub predictor: PredictorConfig,
    pub soundsright: SoundsrightConfig,
    pub publisher: PublisherConfig,
    pub committer: CommitterConfig,
}

/// A configuration problem, shown to the user as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key} = {value}{origin}: {allowed}")]
pub struct ConfigError {
    /// Dotted key, e.g. `miner.netuid`.
    pub key: String,
    /// The offending value as written (or a description of it).
    pub value: String,
    /// What is allowed.
    pub allowed: String,
    /// Where the value came from, formatted as ` (from …)`, or empty.
    pub origin: String,
}

impl ConfigError {
    /// A problem with a value that parsed but does not make sense.
    pub fn new(key: &str, value: impl fmt::Display, allowed: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            value: value.to_string(),
            allowed: allowed.into(),
            origin: String::new(),
        }
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file, if any. A named file that does not exist is an error.
    pub file: Option<PathBuf>,
    /// `key=value` overrides from the command line; values are TOML (`9`, `true`, `"x"`), and a
    /// value that is not valid TOML is taken as a string.
    pub overrides: Vec<String>,
    /// Read `TAOMINER_*` variables from the environment (off in tests that must be hermetic).
    pub env: bool,
}

impl Config {
    /// Loads and validates the configuration from all layers.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = &sources.file {
            if !file.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    file.display(),
                    "the file does not exist or is not a regular file",
                ));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        if sources.env {
            figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        }
        for item in &sources.overrides {
            let (key, value) = parse_override(item)?;
            figment = figment.merge(Serialized::default(&key, value));
        }
        let mut config: Config = figment.extract().map_err(from_figment)?;
        // A SoundsRight model names its competition; it is the miner's unless one is set
        // (validate() refuses a different one).
        if config.miner.profile == Profile::Soundsright && config.miner.competition.is_none() {
            config.miner.competition = config.soundsright.model().map(|(c, _)| c.to_string());
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot: formats of ids and addresses, and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.miner;
        if let Some(h) = &m.hotkey_ss58 {
            ss58::decode(h).map_err(|e| ConfigError::new("miner.hotkey_ss58", h, e.to_string()))?;
        } else if !m.offline {
            return Err(ConfigError::new(
                "miner.hotkey_ss58",
                "(unset)",
                "required when miner.offline = false: the hotkey's SS58 address",
            ));
        }
        // Before the competition check: a SoundsRight model's key became miner.competition.
        self.soundsright.validate(m)?;
        if let Some(list) = &m.competitions {
            if list.is_empty() {
                return Err(ConfigError::new(
                    "miner.competitions",
                    "[]",
                    "at least one competition",
                ));
            }
            for c in list {
                competition::check_syntax(m.profile, c).map_err(|e| {
                    ConfigError::new("miner.competitions", format!("{c:?}"), e.to_string())
                })?;
            }
        }
        if m.profile.commits() {
            match m.competition() {
                Some(c) => {
                    competition::check(m.profile, &c, &m.allowed_competitions()).map_err(|e| {
                        ConfigError::new("miner.competition", format!("{c:?}"), e.to_string())
                    })?
                }
                None => {
                    return Err(ConfigError::new(
                        "miner.competition",
                        "(unset)",
                        "a competition id for this profile",
                    ))
                }
            }
        }
        if let Some(repo) = &self.publisher.repo {
            crate::formats::model_id::check_repo_id(m.profile, repo).map_err(|e| {
                ConfigError::new("publisher.repo", format!("{repo:?}"), e.to_string())
            })?;
        } else if !m.offline && m.profile.commits() {
            return Err(ConfigError::new(
                "publisher.repo",
                "(unset)",
                "required when miner.offline = false: the Hugging Face repo id \"namespace/name\"",
            ));
        }
        let endpoint = &self.publisher.endpoint;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.len() <= "https://".len()
        {
            return Err(ConfigError::new(
                "publisher.endpoint",
                format!("{endpoint:?}"),
                "an http:// or https:// URL such as https://huggingface.co",
            ));
        }
        if endpoint.starts_with("http://") && !self.publisher.allow_insecure {
            return Err(ConfigError::new(
                "publisher.endpoint",
                format!("{endpoint:?}"),
                "an https:// URL: the Hugging Face token is sent to it (for a local test Hub only, set publisher.allow_insecure = true)",
            ));
        }
        for (id, over) in &self.publisher.limits {
            let key = |field: &str| format!("publisher.limits.{id:?}.{field}");
            if m.profile.is_llm()
                && competition::builtin_limits(m.profile, id).is_none()
                && (over.max_bytes.is_none()
                    || over.max_parameters.is_none()
                    || over.architectures.is_none())
            {
                return Err(ConfigError::new(
                    &key("max_bytes"),
                    "(unset)",
                    "max_bytes, max_parameters and architectures are all required for a competition without built-in limits",
                ));
            }
            if let (Some(lo), Some(hi)) = (over.min_parameters, over.max_parameters) {
                if lo > hi {
                    return Err(ConfigError::new(
                        &key("min_parameters"),
                        lo,
                        "at most max_parameters",
                    ));
                }
            }
        }
        self.trainer.validate()?;
        self.predictor.validate()?;
        if m.offline && matches!(self.trainer.start.as_str(), "uid" | "best") {
            return Err(ConfigError::new(
                "trainer.start",
                format!("{:?}", self.trainer.start),
                "\"scratch\" or \"model-dir\" in offline mode (a miner's committed model is on the chain and the Hub)",
            ));
        }
        if let Some(repo) = &self.trainer.dataset_repo {
            if m.offline {
                return Err(ConfigError::new(
                    "trainer.dataset_repo",
                    format!("{repo:?}"),
                    "unset in offline mode (it is downloaded from the Hub); list local files in trainer.data",
                ));
            }
            if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
                return Err(ConfigError::new(
                    "trainer.dataset_repo",
                    format!("{repo:?}"),
                    "a Hugging Face dataset id \"namespace/name\"",
                ));
            }
        }
        if m.offline && self.trainer.gate_on_best {
            return Err(ConfigError::new(
                "trainer.gate_on_best",
                true,
                "false in offline mode (the competition's best model is on the chain and the Hub)",
            ));
        }
        if self.publisher.retry_initial_ms == 0
            || self.publisher.retry_max_ms < self.publisher.retry_initial_ms
        {
            return Err(ConfigError::new(
                "publisher.retry_initial_ms",
                self.publisher.retry_initial_ms,
                "at least 1 and not more than publisher.retry_max_ms",
            ));
        }
        Ok(())
    }
}

/// Splits `key=value` and reads the value as TOML, falling back to a plain string.
fn parse_override(item: &str) -> Result<(String, toml::Value), ConfigError> {
    let Some((key, raw)) = item.split_once('=') else {
        return Err(ConfigError::new(
            "--set",
            format!("{item:?}"),
            "KEY=VALUE with a dotted key, e.g. --set miner.netuid=9",
        ));
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(ConfigError::new(
            "--set",
            format!("{item:?}"),
            "a dotted key such as miner.netuid",
        ));
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    Ok((key.to_string(), value))
}

/// Turns figment's error into our one-line form.
fn from_figment(err: figment::Error) -> ConfigError {
    let origin = match &err.metadata {
        Some(md) => match &md.source {
            Some(figment::Source::File(p)) => format!(" (from {})", p.display()),
            _ if md.name.contains("environment") => format!(
                " (from environment variable {ENV_PREFIX}{})",
                err.path.join("__").to_uppercase()
            ),
            _ if md.name.contains("Serialized") => " (from --set)".to_string(),
            _ => format!(" (from {})", md.name),
        },
        None => String::new(),
    };
    let mut key = err.path.join(".");
    let (value, allowed) = match &err.kind {
        Kind::InvalidType(actual, expected) => (actual.to_string(), format!("expected {expected}")),
        Kind::InvalidValue(actual, expected) => {
            (actual.to_string(), format!("expected {expected}"))
        }
        Kind::InvalidLength(len, expected) => {
            (format!("{len} elements"), format!("expected {expected}"))
        }
        Kind::UnknownVariant(v, allowed) => {
            (format!("{v:?}"), format!("allowed: {}", allowed.join(", ")))
        }
        Kind::UnknownField(field, allowed) => {
            // figment's path already ends with the field for unknown keys; add it if not.
            if err.path.last() != Some(field) {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(field);
            }
            (
                "(present)".to_string(),
                format!("unknown key; allowed here: {}", allowed.join(", ")),
            )
        }
        Kind::MissingField(f) => ("(missing)".to_string(), format!("required field {f}")),
        other => ("?".to_string(), other.to_string()),
    };
    ConfigError {
        key: if key.is_empty() { "(file)".into() } else { key },
        value,
        allowed,
        origin,
    }
}

/// Accepts `competition = 2` as well as `competition = "c00"`.
fn string_or_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Str(String),
    }
    let raw: Option<Raw> = Option::deserialize(d).map_err(|_| {
        serde::de::Error::custom("a competition id: an integer (taoverse) or a string (\"c00\")")
    })?;
    Ok(raw.map(|r| match r {
        Raw::Int(i) => i.to_string(),
        Raw::Str(s) => s,
    }))
}

/// Convenience for binaries: where the state directory is, from the flag or systemd.
///
/// An explicit `--state-dir` wins over `$STATE_DIRECTORY` so that a developer running a daemon
/// by hand inside a systemd session gets what they typed.
pub fn state_dir(flag: Option<&Path>, part: &str) -> Result<PathBuf, ConfigError> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    match std::env::var_os("STATE_DIRECTORY") {
        // systemd passes a colon-separated list when several directories are configured.
        Some(v) if !v.is_empty() => {
            let first = v.to_string_lossy().split(':').next().unwrap_or("").to_string();
            Ok(PathBuf::from(first))
        }
        _ => Err(ConfigError::new(
            "--state-dir",
            "(unset)",
            format!(
                "a directory for {part}'s state: run under systemd (StateDirectory=) or pass --state-dir DIR"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("miner.toml");
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        p
    }

    fn load(file: Option<PathBuf>, overrides: &[&str]) -> Result<Config, ConfigError> {
        Config::load(&Sources {
            file,
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            env: false,
        })
    }

    #[test]
    fn trainer_settings_are_checked_and_name_their_key() {
        let c = load(None, &["trainer.lr=0.001", "trainer.model.hidden_size=256"]).unwrap();
        assert_eq!(c.trainer.lr, 0.001);
        assert_eq!(c.trainer.model.hidden_size, 256);
        let key_of = |o: &[&str]| load(None, o).unwrap_err().key;
        assert_eq!(
            key_of(&["trainer.sequence_length=0"]),
            "trainer.sequence_length"
        );
        assert_eq!(key_of(&["trainer.lr=-1"]), "trainer.lr");
        assert_eq!(key_of(&["trainer.device=\"tpu\""]), "trainer.device");
        assert_eq!(
            key_of(&["trainer.model.num_attention_heads=3"]),
            "trainer.model.num_attention_heads"
        );
        assert_eq!(
            key_of(&["trainer.start=\"model-dir\""]),
            "trainer.load_model_dir"
        );
        // Reading other miners' models needs the chain and the Hub.
        assert_eq!(key_of(&["trainer.start=\"best\""]), "trainer.start");
        assert_eq!(
            key_of(&["trainer.gate_on_best=true"]),
            "trainer.gate_on_best"
        );
        assert_eq!(
            key_of(&["trainer.dataset_repo=\"a/b\""]),
            "trainer.dataset_repo"
        );
        assert_eq!(key_of(&["trainer.nonsense=1"]), "trainer.nonsense");
    }

    #[test]
    fn soundsright_serves_one_competition_at_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let rev = "0123456789abcdef0123456789abcdef01234567";
        let one = format!(
            "[miner]\nprofile = \"soundsright\"\n[soundsright.models.DEREVERBERATION_16000HZ]\nnamespace = \"alice\"\nname = \"dereverb\"\nrevision = \"{rev}\"\n"
        );
        let c = load(Some(write(&dir, &one)), &[]).unwrap();
        // The model's competition is the miner's.
        assert_eq!(
            c.miner.competition().as_deref(),
            Some("DEREVERBERATION_16000HZ")
        );
        assert_eq!(c.soundsright.model().unwrap().1.revision, rev);
        let two = format!(
            "{one}[soundsright.models.DENOISING_16000HZ]\nnamespace = \"alice\"\nname = \"denoise\"\nrevision = \"{rev}\"\n"
        );
        let e = load(Some(write(&dir, &two)), &[]).unwrap_err();
        assert_eq!(e.key, "soundsright.models");
        assert!(e.to_string().contains("one competition per hotkey"), "{e}");
        let e = load(Some(write(&dir, &one.replace(rev, "main"))), &[]).unwrap_err();
        assert_eq!(e.key, "soundsright.models.DEREVERBERATION_16000HZ.revision");
        let e = load(
            Some(write(&dir, &one)),
            &["miner.competition=\"DENOISING_16000HZ\""],
        )
        .unwrap_err();
        assert_eq!(e.key, "miner.competition");
        let e = load(
            Some(write(
                &dir,
                &one.replace("DEREVERBERATION_16000HZ", "SINGING_8000HZ"),
            )),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "soundsright.models");
        let e = load(
            Some(write(&dir, &one.replace("soundsright\"", "pretraining\""))),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "soundsright.models.DEREVERBERATION_16000HZ");
    }

    #[test]
    fn defaults_are_offline_pretraining() {
        let c = load(None, &[]).unwrap();
        assert!(c.miner.offline);
        assert_eq!(c.miner.profile, Profile::Pretraining);
        assert_eq!(c.miner.netuid(), 9);
        assert_eq!(c.miner.hotkey(), Some(DEV_HOTKEY_SS58));
        assert_eq!(c.miner.competition().as_deref(), Some("2"));
        assert_eq!(c.publisher.repo(&c.miner).as_deref(), Some(OFFLINE_REPO));
    }

    #[test]
    fn file_overrides_defaults_and_flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            &dir,
            "[miner]\nprofile = \"finetuning\"\nnetuid = 200\ncompetition = 4\n[publisher]\nrepo = \"me/model\"\n",
        );
        let c = load(Some(f.clone()), &[]).unwrap();
        assert_eq!(c.miner.profile, Profile::Finetuning);
        assert_eq!(c.miner.netuid(), 200);
        assert_eq!(c.miner.competition().as_deref(), Some("4"));
        assert_eq!(c.publisher.repo.as_deref(), Some("me/model"));

        let c = load(Some(f), &["miner.netuid=37", "publisher.repo=other/model"]).unwrap();
        assert_eq!(c.miner.netuid(), 37);
        assert_eq!(c.publisher.repo.as_deref(), Some("other/model"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
    fn environment_sits_between_file_and_flags() {
        // figment::Jail isolates the process environment for this closure.
        figment::Jail::expect_with(|jail| {
            jail.create_file("miner.toml", "[miner]\nnetuid = 1\n")?;
            jail.set_env("TAOMINER_MINER__NETUID", "2");
            let path = jail.directory().join("miner.toml");
            let sources = |o: &[&str]| Sources {
                file: Some(path.clone()),
                overrides: o.iter().map(|s| s.to_string()).collect(),
                env: true,
            };
            let c = Config::load(&sources(&[])).unwrap();
            assert_eq!(c.miner.netuid(), 2);
            let c = Config::load(&sources(&["miner.netuid=3"])).unwrap();
            assert_eq!(c.miner.netuid(), 3);
            jail.set_env("TAOMINER_MINER__NETUID", "many");
            let e = Config::load(&sources(&[])).unwrap_err();
            assert_eq!(e.key, "miner.netuid");
            assert!(e.origin.contains("TAOMINER_MINER__NETUID"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn wrong_type_names_key_value_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, "[miner]\nnetuid = \"nine\"\n");
        let e = load(Some(f.clone()), &[]).unwrap_err();
        assert_eq!(e.key, "miner.netuid");
        let line = e.to_string();
        assert!(line.contains("\"nine\""), "{line}");
        assert!(line.contains("u16"), "{line}");
        assert!(line.contains(&f.display().to_string()), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn unknown_profile_lists_the_allowed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, "[miner]\nprofile = \"sn99\"\n");
        let e = load(Some(f), &[]).unwrap_err();
        assert_eq!(e.key, "miner.profile");
        assert!(e.value.contains("sn99"));
        for p in Profile::ALL {
            assert!(e.allowed.contains(p.as_str()), "{e}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, "[miner]\nnetuidd = 9\n");
        let e = load(Some(f), &[]).unwrap_err();
        assert_eq!(e.key, "miner.netuidd");
        assert!(e.allowed.contains("netuid"), "{e}");
        let f = write(&dir, "[minner]\n");
        assert_eq!(load(Some(f), &[]).unwrap_err().key, "minner");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let e = load(None, &["miner.hotkey_ss58=5notanaddress"]).unwrap_err();
        assert_eq!(e.key, "miner.hotkey_ss58");
        let e = load(None, &["miner.competition=77"]).unwrap_err();
        assert_eq!(e.key, "miner.competition");
        let e = load(None, &["publisher.repo=no-slash"]).unwrap_err();
        assert_eq!(e.key, "publisher.repo");
        let e = load(
            None,
            &["publisher.repo=abcdefghijklmnopqrst/uvwxyzabcdefghijklmn"],
        )
        .unwrap_err();
        assert_eq!(e.key, "publisher.repo");
        let e = load(None, &["miner.offline=false"]).unwrap_err();
        assert_eq!(e.key, "miner.hotkey_ss58");
        let e = load(None, &["miner.profile=coldint", "miner.competition=2"]).unwrap_err();
        assert_eq!(e.key, "miner.competition");
        let c = load(None, &["miner.profile=coldint"]).unwrap();
        assert_eq!(c.miner.competition().as_deref(), Some("c00"));
        let c = load(None, &["miner.competitions=[\"7\"]", "miner.competition=7"]).unwrap();
        assert_eq!(c.miner.allowed_competitions(), vec!["7".to_string()]);
    }

    #[test]
    fn competition_limits_are_built_in_and_overridable_field_by_field() {
        let c = load(None, &["publisher.limits.2.min_parameters=0"]).unwrap();
        let l = c.publisher.limits_for(Profile::Pretraining, "2").unwrap();
        assert_eq!(l.min_parameters, 0);
        assert_eq!(
            l.max_parameters, 3_400_000_000,
            "other fields stay built in"
        );
        assert!(l.architectures.iter().any(|a| a == "LlamaForCausalLM"));
        assert_eq!(c.publisher.limits_for(Profile::Pretraining, "0"), None);
        // A competition with no built-in limits needs the three that matter.
        let e = load(
            None,
            &[
                "miner.competitions=[\"7\"]",
                "miner.competition=7",
                "publisher.limits.7.max_bytes=100",
            ],
        )
        .unwrap_err();
        assert_eq!(e.key, "publisher.limits.\"7\".max_bytes");
        let c = load(
            None,
            &[
                "miner.competitions=[\"7\"]",
                "miner.competition=7",
                "publisher.limits.7.max_bytes=100",
                "publisher.limits.7.max_parameters=10",
                "publisher.limits.7.architectures=[\"LlamaForCausalLM\"]",
            ],
        )
        .unwrap();
        assert_eq!(
            c.publisher
                .limits_for(Profile::Pretraining, "7")
                .unwrap()
                .max_bytes,
            100
        );
        let e = load(None, &["publisher.endpoint=ftp://hub"]).unwrap_err();
        assert_eq!(e.key, "publisher.endpoint");
        assert!(!c.publisher.make_public_after_commit(Profile::Pretraining));
        assert!(c.publisher.make_public_after_commit(Profile::Finetuning));
    }

    #[test]
    fn missing_file_and_bad_override_are_errors() {
        let e = load(Some(PathBuf::from("/nonexistent/miner.toml")), &[]).unwrap_err();
        assert_eq!(e.key, "--config");
        let e = load(None, &["justakey"]).unwrap_err();
        assert_eq!(e.key, "--set");
    }

    #[test]
    fn malformed_toml_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, "[miner\nnetuid = 9\n");
        let e = load(Some(f.clone()), &[]).unwrap_err();
        assert!(e.to_string().contains(&f.display().to_string()), "{e}");
    }
}
