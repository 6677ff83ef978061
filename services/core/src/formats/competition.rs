//! Competitions per profile: which ids exist and how each is written in a commitment.
//!
//! Competitions are data (design §6): this built-in table follows the upstream repositories at the
//! commits named in `reference/subnet-protocols.md`, and `[miner] competitions` replaces it.

use crate::config::Profile;
use crate::{Error, Result};

/// One competition of a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Competition {
    /// The id as configured and as written in the commitment (taoverse integers, coldint strings,
    /// SoundsRight task names).
    pub id: &'static str,
    /// Upstream's name for it.
    pub name: &'static str,
    /// Whether validators still score it.
    pub active: bool,
}

const fn c(id: &'static str, name: &'static str, active: bool) -> Competition {
    Competition { id, name, active }
}

/// SN9 `competitions/data.py` (active from BLOCK_TTS = 5_177_981: B3, B14, TTS).
const PRETRAINING: &[Competition] = &[
    c("0", "B7_MODEL", false),
    c("1", "M772_MODEL", false),
    c("2", "B3_MODEL", true),
    c("3", "B7_MODEL_LOWER_EPSILON", false),
    c("4", "B14_MODEL", true),
    c("5", "B14_MODEL_MULTI_DATASET", false),
    c("6", "TTS_V0", true),
];

/// SN37 `competitions/data.py` (only DISTILLED_REASONING_3B is active).
const FINETUNING: &[Competition] = &[
    c("1", "SN9_MODEL", false),
    c("2", "B7_MULTI_CHOICE", false),
    c("3", "INSTRUCT_8B", false),
    c("4", "DISTILLED_REASONING_3B", true),
];

/// SN29 `coldint/sn29 competitions.json`.
const COLDINT: &[Competition] = &[c("c00", "Llama", true), c("c01", "Phi3", true)];

/// SN105 task names; the number each maps to is in [`soundsright_number`].
const SOUNDSRIGHT: &[Competition] = &[
    c("DENOISING_16000HZ", "Denoising 16 kHz", true),
    c("DEREVERBERATION_16000HZ", "Dereverberation 16 kHz", true),
    c("DENOISING_48000HZ", "Denoising 48 kHz", true),
    c("DEREVERBERATION_48000HZ", "Dereverberation 48 kHz", true),
];

/// The built-in table of a profile.
pub fn builtin(profile: Profile) -> &'static [Competition] {
    match profile {
        Profile::Pretraining => PRETRAINING,
        Profile::Finetuning => FINETUNING,
        Profile::Coldint => COLDINT,
        Profile::Soundsright => SOUNDSRIGHT,
        Profile::Bitmind => &[],
    }
}

/// The competition used when none is configured: the profile's current main one.
pub fn default_for(profile: Profile) -> Option<&'static str> {
    match profile {
        Profile::Pretraining => Some("2"),
        Profile::Finetuning => Some("4"),
        Profile::Coldint => Some("c00"),
        Profile::Soundsright => Some("DENOISING_16000HZ"),
        Profile::Bitmind => None,
    }
}

/// Checks that an id has the shape its profile writes on chain.
pub fn check_syntax(profile: Profile, id: &str) -> Result<()> {
    let ok = match profile {
        // taoverse: MAX_COMPETITION_ID_LENGTH = 2 characters, parsed with int().
        Profile::Pretraining | Profile::Finetuning => {
            !id.is_empty() && id.len() <= 2 && id.bytes().all(|b| b.is_ascii_digit())
        }
        // coldint: a string field of the ':'-joined id.
        Profile::Coldint => {
            !id.is_empty() && !id.contains(':') && id.bytes().all(|b| b.is_ascii_graphic())
        }
        Profile::Soundsright => SOUNDSRIGHT.iter().any(|c| c.id == id),
        Profile::Bitmind => false,
    };
    if ok {
        Ok(())
    } else {
        let shape = match profile {
            Profile::Pretraining | Profile::Finetuning => "an integer of at most 2 digits",
            Profile::Coldint => "a short string without ':' such as c00",
            Profile::Soundsright => "one of DENOISING_16000HZ, DEREVERBERATION_16000HZ, DENOISING_48000HZ, DEREVERBERATION_48000HZ",
            Profile::Bitmind => "nothing: the bitmind profile has no competitions",
        };
        Err(Error::Format(format!(
            "competition {id:?} is not valid for profile {profile}: expected {shape}"
        )))
    }
}

/// Checks an id against its profile's syntax and the allowed list.
pub fn check(profile: Profile, id: &str, allowed: &[String]) -> Result<()> {
    check_syntax(profile, id)?;
    if allowed.iter().any(|a| a == id) {
        Ok(())
    } else {
        Err(Error::Format(format!(
            "unknown competition {id:?} for profile {profile}; allowed: {}",
            allowed.join(", ")
        )))
    }
}

/// SoundsRight's `competition_id` for the commitment hash: 1 and 2 for the 16 kHz tasks and
/// Python's `None` for the 48 kHz ones (upstream maps only the 16 kHz names).
pub fn soundsright_number(task: &str) -> Option<u8> {
    match task {
        "DENOISING_16000HZ" => Some(1),
        "DEREVERBERATION_16000HZ" => Some(2),
        _ => None,
    }
}
