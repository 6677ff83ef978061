//! SN105 SoundsRight (`synapsec-ai/SoundsRightSubnet`): speech-enhancement tasks, models that are
//! container repositories, the directory content hash, and a commitment that is the sha256 of the
//! ids (so it names no repository in clear).

use sha2::{Digest, Sha256};

use super::{ModelHash, Subnet};
use crate::formats::competition::{c, Competition};
use crate::formats::model_id::CommitmentInput;
use crate::formats::preflight::Layout;
use crate::{Error, Result};

/// The SN105 rules.
pub(super) struct Soundsright;

/// SN105 task names; the number each maps to is in [`soundsright_number`].
const COMPETITIONS: &[Competition] = &[
    c("DENOISING_16000HZ", "Denoising 16 kHz", true),
    c("DEREVERBERATION_16000HZ", "Dereverberation 16 kHz", true),
    c("DENOISING_48000HZ", "Denoising 48 kHz", true),
    c("DEREVERBERATION_48000HZ", "Dereverberation 48 kHz", true),
];

/// SoundsRight's `competition_id` for the commitment hash: 1 and 2 for the 16 kHz tasks and
/// Python's `None` for the 48 kHz ones (upstream maps only the 16 kHz names).
pub fn soundsright_number(task: &str) -> Option<u8> {
    match task {
        "DENOISING_16000HZ" => Some(1),
        "DEREVERBERATION_16000HZ" => Some(2),
        _ => None,
    }
}

impl Subnet for Soundsright {
    fn name(&self) -> &'static str {
        "soundsright"
    }

    fn default_netuid(&self) -> u16 {
        105
    }

    fn layout(&self) -> Layout {
        Layout::Container
    }

    fn make_public_after_commit(&self) -> bool {
        true
    }

    fn competitions(&self) -> &'static [Competition] {
        COMPETITIONS
    }

    fn default_competition(&self) -> Option<&'static str> {
        Some("DENOISING_16000HZ")
    }

    fn competition_syntax_ok(&self, id: &str) -> bool {
        COMPETITIONS.iter().any(|c| c.id == id)
    }

    fn competition_shape(&self) -> &'static str {
        "one of DENOISING_16000HZ, DEREVERBERATION_16000HZ, DENOISING_48000HZ, DEREVERBERATION_48000HZ"
    }

    fn model_hash_kind(&self) -> ModelHash {
        ModelHash::Content
    }

    /// The commitment hashes the ids instead.
    fn secure_hash(&self, _model_hash: &str, _hotkey_ss58: &str) -> Option<String> {
        None
    }

    /// `sha256_hex(f"{ns}:{name}:{rev}:{hotkey}:{competition_id}")`.
    fn format_commitment(
        &self,
        ns: String,
        name: String,
        input: &CommitmentInput<'_>,
    ) -> Result<String> {
        let number = soundsright_number(input.competition)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "None".into());
        let unhashed = format!(
            "{ns}:{name}:{}:{}:{number}",
            input.commit, input.hotkey_ss58
        );
        Ok(hex::encode(Sha256::digest(unhashed.as_bytes())))
    }

    fn check_commitment_shape(&self, s: &str) -> Result<()> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Format(format!(
                "soundsright commitment {s:?} must be 64 hex digits (a sha256)"
            )));
        }
        Ok(())
    }
}
