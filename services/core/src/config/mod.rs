//! Configuration: one TOML file shared by all daemons, layered and validated.
//!
//! Layers, later wins (docs/architecture.md §5): built-in defaults < the TOML file (`--config FILE`) <
//! `TAOMINER_*` environment variables (`__` separates levels: `TAOMINER_MINER__NETUID=9`) <
//! `--set key=value` flags. Every daemon extracts the whole file, so a typo in any section is caught
//! by whichever daemon starts first, and unknown keys are errors rather than silently ignored.
//!
//! A bad value becomes a [`ConfigError`] whose one-line message names the key, the value, where it
//! came from and what is allowed; daemons print it and exit 78 (EX_CONFIG), which systemd shows
//! as "configuration error" and does not restart in a loop (`RestartPreventExitStatus=78`).
//!
//! One file per section, each read by the daemons named in docs/configuration.md: `miner`
//! (everyone), `trainer`, `predictor`, `publisher`, `soundsright`, `committer`, and the two shared
//! ones, `hub` (the Hub's address and token: publisher and trainer) and `retry` (delays between
//! tries: publisher and committer). A section never reads another; what needs two sections
//! (offline mode against a remote start, a SoundsRight model against the miner's competition) is
//! checked here, in [`Config::validate`].

use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};

use crate::formats::ss58;

mod committer;
mod device;
mod hub;
mod miner;
mod predictor;
mod publisher;
mod retry;
mod soundsright;
mod trainer;

pub use committer::CommitterConfig;
pub use device::Device;
pub use hub::HubConfig;
pub use miner::{MinerConfig, Profile, DEV_HOTKEY_SS58};
pub use predictor::{Output, PredictorConfig, MAX_TIMEOUT_S};
pub use publisher::{LimitsConfig, PublisherConfig, OFFLINE_REPO};
pub use retry::RetryConfig;
pub use soundsright::{is_commit_id, SoundsrightConfig, SoundsrightModel};
pub use trainer::{Engine, ExternalConfig, Start, StartFrom, TrainerConfig, TrainerModelConfig};

/// Exit status for configuration errors (sysexits.h EX_CONFIG).
pub const EX_CONFIG: i32 = 78;

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "TAOMINER_";

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
    pub hub: HubConfig,
    pub retry: RetryConfig,
}

/// A configuration problem (defined with the crate's other errors, which carry it).
pub use crate::error::ConfigError;

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
        refuse_moved_keys(&figment)?;
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
                m.profile.rules().check_competition_syntax(c).map_err(|e| {
                    ConfigError::new("miner.competitions", format!("{c:?}"), e.to_string())
                })?;
            }
        }
        if m.profile.commits() {
            match m.competition() {
                Some(c) => m
                    .profile
                    .rules()
                    .check_competition(&c, &m.allowed_competitions())
                    .map_err(|e| {
                        ConfigError::new("miner.competition", format!("{c:?}"), e.to_string())
                    })?,
                None => {
                    return Err(ConfigError::new(
                        "miner.competition",
                        "(unset)",
                        "a competition id for this profile",
                    ))
                }
            }
        }
        self.publisher.validate(m)?;
        self.hub.validate()?;
        self.retry.validate()?;
        self.trainer.validate()?;
        self.predictor.validate()?;
        if m.offline && self.trainer.start.is_remote() {
            return Err(ConfigError::new(
                "trainer.start",
                format!("{:?}", self.trainer.start.as_str()),
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

/// Keys that moved to a shared section, and where they went. A file written for the old layout
/// is refused naming the new key, never read with the setting silently dropped.
pub const MOVED_KEYS: [(&str, &str); 5] = [
    ("publisher.endpoint", "hub.endpoint"),
    ("publisher.allow_insecure", "hub.allow_insecure"),
    ("publisher.token_file", "hub.token_file"),
    ("publisher.retry_initial_ms", "retry.initial_ms"),
    ("publisher.retry_max_ms", "retry.max_ms"),
];

/// Refuses any key of [`MOVED_KEYS`], from whichever layer set it.
fn refuse_moved_keys(figment: &Figment) -> Result<(), ConfigError> {
    for (old, new) in MOVED_KEYS {
        if figment.find_value(old).is_ok() {
            let path: Vec<String> = old.split('.').map(str::to_string).collect();
            return Err(ConfigError {
                key: old.to_string(),
                value: "(present)".to_string(),
                allowed: format!("moved to {new}: rename the key (the value stays the same)"),
                origin: origin(figment.find_metadata(old), &path),
            });
        }
    }
    Ok(())
}

/// ` (from …)`: the layer a value came from, for the one-line error.
fn origin(metadata: Option<&figment::Metadata>, path: &[String]) -> String {
    match metadata {
        Some(md) => match &md.source {
            Some(figment::Source::File(p)) => format!(" (from {})", p.display()),
            _ if md.name.contains("environment") => format!(
                " (from environment variable {ENV_PREFIX}{})",
                path.join("__").to_uppercase()
            ),
            _ if md.name.contains("Serialized") => " (from --set)".to_string(),
            _ => format!(" (from {})", md.name),
        },
        None => String::new(),
    }
}

/// Turns figment's error into our one-line form.
fn from_figment(err: figment::Error) -> ConfigError {
    let origin = origin(err.metadata.as_ref(), &err.path);
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
        let e = load(None, &["hub.endpoint=ftp://hub"]).unwrap_err();
        assert_eq!(e.key, "hub.endpoint");
        assert!(!c.publisher.make_public_after_commit(Profile::Pretraining));
        assert!(c.publisher.make_public_after_commit(Profile::Finetuning));
    }

    #[test]
    fn moved_keys_are_refused_naming_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        for (old, new) in MOVED_KEYS {
            let (section, field) = old.split_once('.').unwrap();
            let value = if field == "allow_insecure" {
                "true"
            } else if field.starts_with("retry_") {
                "1000"
            } else {
                "\"https://hub.example\""
            };
            // From the file (its path named as the origin) and from --set.
            let f = write(&dir, &format!("[{section}]\n{field} = {value}\n"));
            let e = load(Some(f.clone()), &[]).unwrap_err();
            assert_eq!(e.key, old);
            assert!(e.allowed.contains(&format!("moved to {new}")), "{e}");
            assert!(e.origin.contains(&f.display().to_string()), "{e}");
            let e = load(None, &[&format!("{old}={value}")]).unwrap_err();
            assert_eq!(e.key, old);
            assert!(e.to_string().contains(new), "{e}");
            // The new key takes the same value.
            let c = load(None, &[&format!("{new}={value}")]);
            assert!(c.is_ok(), "{new}={value}: {c:?}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
    fn a_moved_key_in_the_environment_is_refused_naming_the_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TAOMINER_PUBLISHER__RETRY_INITIAL_MS", "100");
            let e = Config::load(&Sources {
                env: true,
                ..Sources::default()
            })
            .unwrap_err();
            assert_eq!(e.key, "publisher.retry_initial_ms");
            assert!(e.allowed.contains("moved to retry.initial_ms"), "{e}");
            assert!(
                e.origin.contains("TAOMINER_PUBLISHER__RETRY_INITIAL_MS"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn shared_sections_hold_the_hub_and_the_retry_delays() {
        let c = load(
            None,
            &[
                "hub.endpoint=\"http://127.0.0.1:9/\"",
                "hub.allow_insecure=true",
                "hub.token_file=\"/run/keys/hf\"",
                "retry.initial_ms=10",
                "retry.max_ms=20",
            ],
        )
        .unwrap();
        assert_eq!(c.hub.endpoint(), "http://127.0.0.1:9");
        assert_eq!(c.hub.token_path(), Some(PathBuf::from("/run/keys/hf")));
        assert_eq!(c.retry.initial(), std::time::Duration::from_millis(10));
        assert_eq!(c.retry.max(), std::time::Duration::from_millis(20));
        let e = load(None, &["hub.endpoint=\"http://127.0.0.1:9\""]).unwrap_err();
        assert_eq!(e.key, "hub.endpoint");
        assert!(e.allowed.contains("hub.allow_insecure"), "{e}");
        let e = load(None, &["retry.initial_ms=0"]).unwrap_err();
        assert_eq!(e.key, "retry.initial_ms");
        let e = load(None, &["retry.initial_ms=100", "retry.max_ms=99"]).unwrap_err();
        assert_eq!(e.key, "retry.initial_ms");
        assert!(e.allowed.contains("retry.max_ms"), "{e}");
    }

    #[test]
    fn start_device_and_output_are_parsed_once_into_values() {
        let c = load(
            None,
            &[
                "trainer.device=\"cuda:1\"",
                "trainer.start=\"model-dir\"",
                "trainer.load_model_dir=\"/srv/m\"",
                "predictor.device=\"cuda\"",
                "predictor.output=\"probability\"",
            ],
        )
        .unwrap();
        assert_eq!(c.trainer.device, Device::Cuda(Some(1)));
        assert_eq!(c.trainer.start, StartFrom::ModelDir);
        assert_eq!(
            c.trainer.resolve_start(),
            Ok(Start::ModelDir(PathBuf::from("/srv/m")))
        );
        assert_eq!(c.predictor.device, Device::Cuda(None));
        assert_eq!(c.predictor.output, Output::Probability);
        let d = Config::default();
        assert_eq!(d.trainer.device, Device::Cpu);
        assert_eq!(d.trainer.resolve_start(), Ok(Start::Scratch));
        assert_eq!(d.predictor.output, Output::Logit);
        // Display gives back the words of the file.
        for s in StartFrom::ALL {
            assert_eq!(s.to_string().parse::<StartFrom>(), Ok(s));
        }
        for o in Output::ALL {
            assert_eq!(o.to_string().parse::<Output>(), Ok(o));
        }
        // A bad value names its key and what is allowed (exit 78 in the daemons).
        let bad = |o: &str| load(None, &[o]).unwrap_err();
        let e = bad("trainer.start=\"resume\"");
        assert_eq!(e.key, "trainer.start");
        assert!(
            e.allowed.contains("model-dir") && e.value.contains("resume"),
            "{e}"
        );
        let e = bad("trainer.device=\"cuda:x\"");
        assert_eq!(e.key, "trainer.device");
        assert!(
            e.allowed.contains("cuda:N") && e.value.contains("cuda:x"),
            "{e}"
        );
        let e = bad("predictor.device=\"gpu\"");
        assert_eq!(e.key, "predictor.device");
        let e = bad("predictor.output=\"odds\"");
        assert_eq!(e.key, "predictor.output");
        assert!(e.allowed.contains("probability"), "{e}");
        let e = bad("trainer.start=\"uid\"");
        assert_eq!(e.key, "trainer.load_uid");
    }

    /// Proves: `trainer.engine = "external"` is typed (a misspelt engine is refused), needs a
    /// command and an absolute checkpoint_dir, refuses a marker that is a path, a settle time of
    /// 0 without a marker, a remote start and restart delays out of order, each naming its key;
    /// a good one loads with the documented defaults.
    #[test]
    fn the_external_engine_is_checked() {
        let ext = |extra: &[&str]| {
            let mut o = vec![
                "trainer.engine=\"external\"",
                "trainer.external.command=[\"torchrun\", \"train.py\"]",
                "trainer.external.checkpoint_dir=\"/srv/ckpt\"",
            ];
            o.extend_from_slice(extra);
            load(None, &o)
        };
        let c = ext(&[]).unwrap();
        assert_eq!(c.trainer.engine, Engine::External);
        assert_eq!(c.trainer.external.marker(), Some("COMPLETE"));
        assert_eq!(c.trainer.external.resume_flag, None);
        let key = |extra: &[&str]| ext(extra).unwrap_err().key;
        assert_eq!(
            load(None, &["trainer.engine=\"fsdp\""]).unwrap_err().key,
            "trainer.engine"
        );
        assert_eq!(
            key(&["trainer.external.command=[]"]),
            "trainer.external.command"
        );
        assert_eq!(
            key(&["trainer.external.checkpoint_dir=\"ckpt\""]),
            "trainer.external.checkpoint_dir"
        );
        assert_eq!(
            key(&["trainer.external.complete_marker=\"a/b\""]),
            "trainer.external.complete_marker"
        );
        assert_eq!(
            key(&[
                "trainer.external.complete_marker=\"\"",
                "trainer.external.settle_seconds=0"
            ]),
            "trainer.external.settle_seconds"
        );
        assert_eq!(
            key(&["trainer.external.restart_max_ms=10"]),
            "trainer.external.restart_max_ms"
        );
        assert_eq!(key(&["trainer.start=\"best\""]), "trainer.start");
        // The candle engine ignores [trainer.external].
        assert!(load(None, &["trainer.external.command=[]"]).is_ok());
    }

    /// Every key's dotted name, from the structs themselves (`None` fields serialize as null, so
    /// unset keys count too); maps' entries as `<id>` / `<COMPETITION>`.
    fn every_key() -> Vec<String> {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(fields) if !fields.is_empty() => {
                    for (k, v) in fields {
                        walk(&format!("{prefix}.{k}"), v, out);
                    }
                }
                _ => out.push(prefix.trim_start_matches('.').to_string()),
            }
        }
        fn json<T: Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).expect("a configuration serializes to JSON")
        }
        let mut keys = Vec::new();
        walk("", &json(&Config::default()), &mut keys);
        walk(
            "publisher.limits.<id>",
            &json(&LimitsConfig::default()),
            &mut keys,
        );
        let model = SoundsrightModel {
            namespace: String::new(),
            name: String::new(),
            revision: String::new(),
        };
        walk("soundsright.models.<COMPETITION>", &json(&model), &mut keys);
        // A section without keys of its own, documented as a heading.
        keys.retain(|k| k != "committer");
        keys
    }

    #[test]
    fn every_key_is_documented_and_every_documented_key_exists() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
        )
        .expect("docs/configuration.md");
        // The first column of the tables: `key`.
        let documented: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let keys = every_key();
        assert!(keys.len() > 80, "{keys:?}");
        for key in &keys {
            assert!(
                documented.contains(&key.as_str()),
                "{key} is not in docs/configuration.md"
            );
        }
        for (old, _) in MOVED_KEYS {
            assert!(documented.contains(&old), "moved key {old} is not listed");
        }
        for d in documented {
            assert!(
                keys.iter().any(|k| k == d) || MOVED_KEYS.iter().any(|(old, _)| *old == d),
                "docs/configuration.md documents {d}, which is no key"
            );
        }
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
