//! SN29 coldint (`coldint/sn29`): string competitions, a free tokenizer, and a 5-field
//! commitment `ns:name:commit:hash:competition` whose hash already binds the hotkey.

use super::Subnet;
use crate::formats::competition::{c, limits, Competition, Limits, TokenizerRule};
use crate::formats::hash;
use crate::formats::model_id::CommitmentInput;
use crate::formats::preflight::Layout;
use crate::{Error, Result};

/// The SN29 rules.
pub(super) struct Coldint;

/// SN29 `coldint/sn29 competitions.json`.
const COMPETITIONS: &[Competition] = &[c("c00", "Llama", true), c("c01", "Phi3", true)];

impl Subnet for Coldint {
    fn name(&self) -> &'static str {
        "coldint"
    }

    fn default_netuid(&self) -> u16 {
        29
    }

    fn layout(&self) -> Layout {
        Layout::Transformers
    }

    fn make_public_after_commit(&self) -> bool {
        true
    }

    fn competitions(&self) -> &'static [Competition] {
        COMPETITIONS
    }

    fn default_competition(&self) -> Option<&'static str> {
        Some("c00")
    }

    /// A string field of the ':'-joined id.
    fn competition_syntax_ok(&self, id: &str) -> bool {
        !id.is_empty() && !id.contains(':') && id.bytes().all(|b| b.is_ascii_graphic())
    }

    fn competition_shape(&self) -> &'static str {
        "a short string without ':' such as c00"
    }

    /// c00 / c01: at most 20.1e9 parameters, model_size 42e9 bytes, free tokenizer.
    fn builtin_limits(&self, competition: &str) -> Option<Limits> {
        let architectures: &[&str] = match competition {
            "c00" => &["LlamaForCausalLM", "SlicedLlamaForCausalLM"],
            "c01" => &["Phi3ForCausalLM", "SlicedPhi3ForCausalLM"],
            _ => return None,
        };
        Some(limits(
            42_000_000_000,
            (0, 20_100_000_000),
            architectures,
            TokenizerRule::Required,
        ))
    }

    fn format_commitment(
        &self,
        ns: String,
        name: String,
        input: &CommitmentInput<'_>,
    ) -> Result<String> {
        Ok(format!(
            "{ns}:{name}:{}:{}:{}",
            input.commit,
            hash::secure_hash(input.model_hash, input.hotkey_ss58),
            input.competition
        ))
    }

    fn check_commitment_shape(&self, s: &str) -> Result<()> {
        if s.split(':').count() != 5 {
            return Err(Error::Format(format!(
                "coldint commitment {s:?} must have exactly 5 ':'-separated fields"
            )));
        }
        Ok(())
    }

    fn commits_in_clear(&self) -> bool {
        true
    }
}
