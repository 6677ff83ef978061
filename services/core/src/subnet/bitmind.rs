//! SN34 BitMind, classic axon: the miner serves predictions and commits nothing, so it has no
//! competitions and no commitment format; every commitment operation refuses with a message
//! saying so.

use super::Subnet;
use crate::formats::competition::Competition;
use crate::formats::model_id::CommitmentInput;
use crate::formats::preflight::Layout;
use crate::{Error, Result};

/// The SN34 rules.
pub(super) struct Bitmind;

impl Subnet for Bitmind {
    fn name(&self) -> &'static str {
        "bitmind"
    }

    fn default_netuid(&self) -> u16 {
        34
    }

    fn commits(&self) -> bool {
        false
    }

    fn layout(&self) -> Layout {
        Layout::Unchecked
    }

    fn make_public_after_commit(&self) -> bool {
        false
    }

    fn competitions(&self) -> &'static [Competition] {
        &[]
    }

    fn default_competition(&self) -> Option<&'static str> {
        None
    }

    fn competition_syntax_ok(&self, _id: &str) -> bool {
        false
    }

    fn competition_shape(&self) -> &'static str {
        "nothing: the bitmind profile has no competitions"
    }

    fn secure_hash(&self, _model_hash: &str, _hotkey_ss58: &str) -> Option<String> {
        None
    }

    fn format_commitment(
        &self,
        _ns: String,
        _name: String,
        _input: &CommitmentInput<'_>,
    ) -> Result<String> {
        Err(Error::Format(
            "the bitmind profile serves on the axon and commits nothing to the chain".into(),
        ))
    }

    fn check_commitment_shape(&self, _s: &str) -> Result<()> {
        Err(Error::Format(
            "the bitmind profile commits nothing to the chain".into(),
        ))
    }
}
