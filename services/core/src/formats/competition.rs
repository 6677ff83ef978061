//! Competitions per profile: which ids exist and how each is written in a commitment.
//!
//! Competitions are data (docs/architecture.md §6): this built-in table follows the upstream
//! repositories at the commits named in `docs/protocols.md`, and `[miner] competitions` replaces
//! it.
//!
//! Each active LLM competition also has [`Limits`]: what a validator checks before it evaluates a
//! model (total bytes, architecture, parameter count, tokenizer). The publisher checks them before
//! uploading anything, so a commitment never points at a model validators will reject.
//! `[publisher.limits."<id>"]` overrides them field by field.

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

/// GiB, as upstream writes its byte limits (`15 * 1024**3`).
const GIB: u64 = 1 << 30;

/// What the validators of a competition require of a model before they evaluate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The sum of the sizes of every file in the repository at the committed revision
    /// (`sum(s.size for s in model_info.siblings)`), `.gitattributes` and README included.
    pub max_bytes: u64,
    /// Smallest allowed parameter count (`min_model_parameter_size`).
    pub min_parameters: u64,
    /// Largest allowed parameter count (`max_model_parameter_size`).
    pub max_parameters: u64,
    /// Allowed `config.json` `architectures[0]` values (transformers class names).
    pub architectures: Vec<String>,
    /// What the competition expects of the tokenizer.
    pub tokenizer: TokenizerRule,
}

/// How a competition treats the tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerRule {
    /// Validators evaluate with this tokenizer, whatever the repository holds (SN9, SN37).
    Fixed(String),
    /// The repository must carry its own tokenizer (coldint: `free_tokenizer`, pushed first).
    Required,
    /// No rule.
    Any,
}

impl TokenizerRule {
    /// Reads the configuration form: `"required"`, `"any"`, or the name of a fixed tokenizer.
    pub fn parse(s: &str) -> TokenizerRule {
        match s {
            "required" => TokenizerRule::Required,
            "any" | "" => TokenizerRule::Any,
            other => TokenizerRule::Fixed(other.to_string()),
        }
    }
}

impl std::fmt::Display for TokenizerRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerRule::Fixed(name) => write!(f, "fixed ({name}, set by validators)"),
            TokenizerRule::Required => f.write_str("required in the repository"),
            TokenizerRule::Any => f.write_str("any"),
        }
    }
}

/// taoverse SN9 `ALLOWED_MODEL_TYPES_2`.
const SN9_LLM: &[&str] = &[
    "MistralForCausalLM",
    "LlamaForCausalLM",
    "BartForCausalLM",
    "FalconForCausalLM",
    "GPTNeoXForCausalLM",
    "PhiForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Qwen2ForCausalLM",
];

/// SN37 DISTILLED_REASONING_3B's allowed architectures.
const SN37_LLM: &[&str] = &[
    "BartForCausalLM",
    "FalconForCausalLM",
    "Gemma2ForCausalLM",
    "GemmaForCausalLM",
    "GPTNeoXForCausalLM",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Phi3ForCausalLM",
    "PhiForCausalLM",
];

fn limits(
    max_bytes: u64,
    params: (u64, u64),
    architectures: &[&str],
    tokenizer: TokenizerRule,
) -> Limits {
    Limits {
        max_bytes,
        min_parameters: params.0,
        max_parameters: params.1,
        architectures: architectures.iter().map(|a| a.to_string()).collect(),
        tokenizer,
    }
}

/// The built-in limits of a profile's active competitions (upstream constants at the commits
/// in `docs/protocols.md` §3–§5); `None` for retired competitions and SoundsRight, whose
/// models are containers rather than transformers checkpoints.
pub fn builtin_limits(profile: Profile, id: &str) -> Option<Limits> {
    let gpt4 = || TokenizerRule::Fixed("Xenova/gpt-4".into());
    Some(match (profile, id) {
        // SN9 B3_MODEL: 3.2B–3.4B parameters, 15 GiB.
        (Profile::Pretraining, "2") => {
            limits(15 * GIB, (3_200_000_000, 3_400_000_000), SN9_LLM, gpt4())
        }
        // SN9 B14_MODEL: 13.7B–13.9B parameters, 29 GiB.
        (Profile::Pretraining, "4") => {
            limits(29 * GIB, (13_700_000_000, 13_900_000_000), SN9_LLM, gpt4())
        }
        // SN9 TTS_V0: E2TTS, 350M–400M parameters, 2 GiB.
        (Profile::Pretraining, "6") => limits(
            2 * GIB,
            (350_000_000, 400_000_000),
            &["E2TTS"],
            TokenizerRule::Fixed("e2tts".into()),
        ),
        // SN37 DISTILLED_REASONING_3B: 3.2B–3.4B parameters, 15 GiB.
        (Profile::Finetuning, "4") => {
            limits(15 * GIB, (3_200_000_000, 3_400_000_000), SN37_LLM, gpt4())
        }
        // coldint c00 / c01: at most 20.1e9 parameters, model_size 42e9 bytes, free tokenizer.
        (Profile::Coldint, "c00") => limits(
            42_000_000_000,
            (0, 20_100_000_000),
            &["LlamaForCausalLM", "SlicedLlamaForCausalLM"],
            TokenizerRule::Required,
        ),
        (Profile::Coldint, "c01") => limits(
            42_000_000_000,
            (0, 20_100_000_000),
            &["Phi3ForCausalLM", "SlicedPhi3ForCausalLM"],
            TokenizerRule::Required,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_competition_has_limits() {
        for p in [Profile::Pretraining, Profile::Finetuning, Profile::Coldint] {
            let id = default_for(p).unwrap();
            let l = builtin_limits(p, id).unwrap();
            assert!(l.min_parameters < l.max_parameters && l.max_bytes > 0);
            assert!(!l.architectures.is_empty());
        }
        assert_eq!(builtin_limits(Profile::Pretraining, "0"), None);
        assert_eq!(
            TokenizerRule::parse("Xenova/gpt-4"),
            TokenizerRule::Fixed("Xenova/gpt-4".into())
        );
        assert_eq!(TokenizerRule::parse("required"), TokenizerRule::Required);
    }
}
