//! `[miner]`: what every daemon needs to know about the miner as a whole (offline or not, which
//! subnet, the competition, the chain endpoint, the hotkey); [`Profile`], the subnet whose formats
//! it speaks, is [`crate::subnet`]'s. Its own file because every other section is read in its
//! light.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::string_or_int;
/// The profile is the subnet's (`crate::subnet`); re-exported so `config::Profile` keeps working.
pub use crate::subnet::Profile;

/// The hotkey used in offline mode when none is configured: the well-known development account
/// `//Alice`. Offline mode never signs anything; the address only enters the secure hash.
pub const DEV_HOTKEY_SS58: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

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
            None => self
                .profile
                .rules()
                .competitions()
                .iter()
                .map(|c| c.id.to_string())
                .collect(),
        }
    }

    /// The default competition in effect.
    pub fn competition(&self) -> Option<String> {
        self.competition.clone().or_else(|| {
            self.profile
                .rules()
                .default_competition()
                .map(str::to_string)
        })
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
