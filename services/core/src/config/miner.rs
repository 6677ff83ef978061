//! `[miner]`: what every daemon needs to know about the miner as a whole (offline or not, which
//! subnet, the competition, the chain endpoint, the hotkey), and [`Profile`], the subnet whose
//! formats it speaks. Its own file because every other section is read in its light.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::string_or_int;
use crate::formats::competition;

/// The hotkey used in offline mode when none is configured: the well-known development account
/// `//Alice`. Offline mode never signs anything; the address only enters the secure hash.
pub const DEV_HOTKEY_SS58: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

/// Which subnet's formats the miner speaks (docs/architecture.md §6).
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
