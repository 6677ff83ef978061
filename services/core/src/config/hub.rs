//! `[hub]`: where the Hugging Face Hub is and which token opens it. Shared because two daemons talk
//! to the Hub: the publisher uploads there, the trainer downloads other miners' models and datasets
//! from there. One section, so that neither daemon reads the other's settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[hub]`: the Hub's address and the token sent to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// The Hub's base URL (what `HF_ENDPOINT` sets for the Python client). Must be `https://`:
    /// the token travels to it.
    pub endpoint: String,
    /// Accept an `http://` endpoint (a local test Hub). Never in production: the token and the
    /// models would cross the network in clear.
    pub allow_insecure: bool,
    /// File holding the Hugging Face token; `$CREDENTIALS_DIRECTORY/hf-token` when unset. The
    /// token itself never goes in this file: the TOML is world-readable, credentials are not.
    pub token_file: Option<PathBuf>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            endpoint: "https://huggingface.co".into(),
            allow_insecure: false,
            token_file: None,
        }
    }
}

impl HubConfig {
    /// The Hub base URL without a trailing slash.
    pub fn endpoint(&self) -> &str {
        self.endpoint.trim_end_matches('/')
    }

    /// Where the Hugging Face token is read from: `token_file`, else the systemd credential
    /// `hf-token`. `None`: no token is configured (public repositories only).
    pub fn token_path(&self) -> Option<PathBuf> {
        self.token_file.clone().or_else(|| {
            std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|d| !d.is_empty())
                .map(|d| PathBuf::from(d).join("hf-token"))
        })
    }

    /// The endpoint is a URL, and `https://` unless a test Hub is allowed explicitly.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let endpoint = &self.endpoint;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.len() <= "https://".len()
        {
            return Err(ConfigError::new(
                "hub.endpoint",
                format!("{endpoint:?}"),
                "an http:// or https:// URL such as https://huggingface.co",
            ));
        }
        if endpoint.starts_with("http://") && !self.allow_insecure {
            return Err(ConfigError::new(
                "hub.endpoint",
                format!("{endpoint:?}"),
                "an https:// URL: the Hugging Face token is sent to it (for a local test Hub only, set hub.allow_insecure = true)",
            ));
        }
        Ok(())
    }
}
