//! SN37 finetuning: a taoverse subnet (`macrocosm-os/finetuning`). Its competitions, their
//! limits, and the taoverse commitment it writes.

use super::{taoverse, Subnet};
use crate::formats::competition::{c, limits, Competition, Limits, TokenizerRule, GIB};
use crate::formats::model_id::CommitmentInput;
use crate::formats::preflight::Layout;
use crate::Result;

/// The SN37 rules.
pub(super) struct Finetuning;

/// SN37 `competitions/data.py` (only DISTILLED_REASONING_3B is active).
const COMPETITIONS: &[Competition] = &[
    c("1", "SN9_MODEL", false),
    c("2", "B7_MULTI_CHOICE", false),
    c("3", "INSTRUCT_8B", false),
    c("4", "DISTILLED_REASONING_3B", true),
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

impl Subnet for Finetuning {
    fn name(&self) -> &'static str {
        "finetuning"
    }

    fn default_netuid(&self) -> u16 {
        37
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
        Some("4")
    }

    fn competition_syntax_ok(&self, id: &str) -> bool {
        taoverse::competition_syntax_ok(id)
    }

    fn competition_shape(&self) -> &'static str {
        taoverse::COMPETITION_SHAPE
    }

    fn builtin_limits(&self, competition: &str) -> Option<Limits> {
        match competition {
            // DISTILLED_REASONING_3B: 3.2B–3.4B parameters, 15 GiB.
            "4" => Some(limits(
                15 * GIB,
                (3_200_000_000, 3_400_000_000),
                SN37_LLM,
                TokenizerRule::Fixed("Xenova/gpt-4".into()),
            )),
            _ => None,
        }
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
