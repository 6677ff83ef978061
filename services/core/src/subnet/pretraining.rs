//! SN9 pretraining: a taoverse subnet (`macrocosm-os/pretraining`). Its competitions, their
//! limits, and the taoverse commitment it writes.

use super::{taoverse, Subnet};
use crate::formats::competition::{c, limits, Competition, Limits, TokenizerRule, GIB};
use crate::formats::model_id::CommitmentInput;
use crate::formats::preflight::Layout;
use crate::Result;

/// The SN9 rules.
pub(super) struct Pretraining;

/// SN9 `competitions/data.py` (active from BLOCK_TTS = 5_177_981: B3, B14, TTS).
const COMPETITIONS: &[Competition] = &[
    c("0", "B7_MODEL", false),
    c("1", "M772_MODEL", false),
    c("2", "B3_MODEL", true),
    c("3", "B7_MODEL_LOWER_EPSILON", false),
    c("4", "B14_MODEL", true),
    c("5", "B14_MODEL_MULTI_DATASET", false),
    c("6", "TTS_V0", true),
];

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

impl Subnet for Pretraining {
    fn name(&self) -> &'static str {
        "pretraining"
    }

    fn default_netuid(&self) -> u16 {
        9
    }

    fn layout(&self) -> Layout {
        Layout::Transformers
    }

    fn make_public_after_commit(&self) -> bool {
        false
    }

    fn competitions(&self) -> &'static [Competition] {
        COMPETITIONS
    }

    fn default_competition(&self) -> Option<&'static str> {
        Some("2")
    }

    fn competition_syntax_ok(&self, id: &str) -> bool {
        taoverse::competition_syntax_ok(id)
    }

    fn competition_shape(&self) -> &'static str {
        taoverse::COMPETITION_SHAPE
    }

    fn builtin_limits(&self, competition: &str) -> Option<Limits> {
        let gpt4 = || TokenizerRule::Fixed("Xenova/gpt-4".into());
        Some(match competition {
            // B3_MODEL: 3.2B–3.4B parameters, 15 GiB.
            "2" => limits(15 * GIB, (3_200_000_000, 3_400_000_000), SN9_LLM, gpt4()),
            // B14_MODEL: 13.7B–13.9B parameters, 29 GiB.
            "4" => limits(29 * GIB, (13_700_000_000, 13_900_000_000), SN9_LLM, gpt4()),
            // TTS_V0: E2TTS, 350M–400M parameters, 2 GiB.
            "6" => limits(
                2 * GIB,
                (350_000_000, 400_000_000),
                &["E2TTS"],
                TokenizerRule::Fixed("e2tts".into()),
            ),
            _ => return None,
        })
    }

    fn check_repo_id_rules(&self, repo: &str) -> Result<()> {
        taoverse::check_repo_id_length(repo)
    }

    fn format_commitment(
        &self,
        ns: String,
        name: String,
        input: &CommitmentInput<'_>,
    ) -> Result<String> {
        taoverse::format_commitment(ns, name, input)
    }

    fn check_commitment_shape(&self, s: &str) -> Result<()> {
        taoverse::check_commitment_shape(s)
    }

    fn commits_in_clear(&self) -> bool {
        true
    }

    fn canonical_competition(&self, field: &str) -> String {
        taoverse::canonical_competition(field)
    }
}
