//! `[soundsright]`: the SN105 miner's model (one competition per hotkey) and its side services,
//! read by the predictor (the axon's answers, the healthcheck API) and the publisher (the
//! commitment of the model's ids). Its own file because only profile `soundsright` uses it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, MinerConfig, Profile};

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

    pub(super) fn validate(&self, miner: &MinerConfig) -> Result<(), ConfigError> {
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
            miner
                .profile
                .rules()
                .check_competition(comp, &miner.allowed_competitions())
                .map_err(|e| {
                    ConfigError::new("soundsright.models", format!("{comp:?}"), e.to_string())
                })?;
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
            miner.profile.rules().check_repo_id(&repo).map_err(|e| {
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
