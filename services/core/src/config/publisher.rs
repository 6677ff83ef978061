//! `[publisher]`: the repository models go to, when it is made public, and the competition limits
//! the pre-flight checks. Only the publisher reads it; the Hub's address and token are shared with
//! the trainer and live in `[hub]` (hub.rs), the retry delays in `[retry]` (retry.rs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, MinerConfig, Profile};
use crate::formats::competition;

/// Repository id used in offline mode when `publisher.repo` is not set.
pub const OFFLINE_REPO: &str = "offline/model";

/// `[publisher]`: staging, pre-flight, Hugging Face uploads and the validator-identical hash.
/// Where the Hub is and the token are `[hub]`'s; how long to wait between tries is `[retry]`'s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublisherConfig {
    /// Hugging Face repository id `namespace/name` models are published to.
    pub repo: Option<String>,
    /// Make the repository public once the commitment is on chain. Default per profile, as
    /// upstream: on for finetuning, coldint and soundsright (validators must be able to fetch),
    /// off for pretraining (`--update_repo_visibility` is opt-in there).
    pub make_public_after_commit: Option<bool>,
    /// Overrides of the built-in competition limits, by competition id, field by field.
    pub limits: BTreeMap<String, LimitsConfig>,
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

    /// Whether to make the repository public after the commitment is written.
    pub fn make_public_after_commit(&self, profile: Profile) -> bool {
        self.make_public_after_commit
            .unwrap_or(profile.rules().make_public_after_commit())
    }

    /// The limits validators of `competition` apply: the built-in ones with the configured
    /// fields replaced. `None` when neither exists (SoundsRight, retired competitions).
    pub fn limits_for(&self, profile: Profile, competition: &str) -> Option<competition::Limits> {
        let over = self.limits.get(competition);
        let mut limits = match (profile.rules().builtin_limits(competition), over) {
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

    /// The publisher's own checks: the repository id and the limit overrides.
    pub(super) fn validate(&self, miner: &MinerConfig) -> Result<(), ConfigError> {
        let m = miner;
        if let Some(repo) = &self.repo {
            m.profile.rules().check_repo_id(repo).map_err(|e| {
                ConfigError::new("publisher.repo", format!("{repo:?}"), e.to_string())
            })?;
        } else if !m.offline && m.profile.commits() {
            return Err(ConfigError::new(
                "publisher.repo",
                "(unset)",
                "required when miner.offline = false: the Hugging Face repo id \"namespace/name\"",
            ));
        }
        for (id, over) in &self.limits {
            let key = |field: &str| format!("publisher.limits.{id:?}.{field}");
            if m.profile.is_llm()
                && m.profile.rules().builtin_limits(id).is_none()
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
        Ok(())
    }
}
