//! What SN9 (pretraining) and SN37 (finetuning) share: both are taoverse subnets, so they write
//! the same `ModelId` commitment, accept the same competition ids and repository ids. Kept apart
//! from either subnet's file so neither owns the other's format.

use crate::formats::hash;
use crate::formats::model_id::{CommitmentInput, ModelId, MAX_REPO_ID_LENGTH};
use crate::{Error, Result};

/// taoverse `MAX_COMPETITION_ID_LENGTH = 2` characters, parsed with `int()`.
pub(super) fn competition_syntax_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 2 && id.bytes().all(|b| b.is_ascii_digit())
}

pub(super) const COMPETITION_SHAPE: &str = "an integer of at most 2 digits";

/// taoverse `validate_hf_repo_id`: between 3 (exclusive) and `MAX_REPO_ID_LENGTH` characters.
pub(super) fn check_repo_id_length(repo: &str) -> Result<()> {
    if repo.len() > 3 && repo.len() <= MAX_REPO_ID_LENGTH {
        Ok(())
    } else {
        Err(Error::Format(format!(
            "repo id {repo:?}: Hugging Face repo id must be between 3 and {MAX_REPO_ID_LENGTH} characters (it has {})",
            repo.len()
        )))
    }
}

/// `ModelId.to_compressed_str`: `ns:name:commit:secure_hash:competition_id`.
pub(super) fn format_commitment(
    ns: String,
    name: String,
    input: &CommitmentInput<'_>,
) -> Result<String> {
    Ok(ModelId {
        namespace: ns,
        name,
        commit: Some(input.commit.to_string()),
        hash: None,
        secure_hash: Some(hash::secure_hash(input.model_hash, input.hotkey_ss58)),
        competition_id: input.competition.parse().map_err(|_| {
            Error::Format(format!(
                "competition {:?} is not an integer",
                input.competition
            ))
        })?,
    }
    .to_compressed_str())
}

/// `ModelId.from_compressed_str` parses, and the repository id it names is valid.
pub(super) fn check_commitment_shape(s: &str) -> Result<()> {
    let id = ModelId::from_compressed_str(s)?;
    crate::formats::model_id::split_repo_id(&format!("{}/{}", id.namespace, id.name))?;
    check_repo_id_length(&format!("{}/{}", id.namespace, id.name))
}

/// `int(competition_id)`: leading zeros name the same competition.
pub(super) fn canonical_competition(field: &str) -> String {
    field
        .parse::<u8>()
        .map_or_else(|_| field.to_string(), |n| n.to_string())
}
