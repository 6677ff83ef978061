//! Model identities and the rules every commitment shares; each subnet's own commitment string
//! is built and checked in its module under [`crate::subnet`] (`Subnet::commitment`).
//!
//! | profile | commitment |
//! |---|---|
//! | pretraining, finetuning | `ns:name:commit:secure_hash:competition_id` (taoverse `ModelId.to_compressed_str`) |
//! | coldint | `ns:name:commit:hash:competition` with the hotkey already in `hash` |
//! | soundsright | `sha256_hex(f"{ns}:{name}:{rev}:{hotkey}:{competition_id}")` |
//! | bitmind | none |
//!
//! Limits are enforced with clear errors, not discovered by a failed extrinsic: a commitment is
//! at most 128 bytes (the largest `Raw` variant), and a taoverse repo id at most 38 characters
//! (`MAX_REPO_ID_LENGTH = 128 - 40 - 44 - 2 - 4`).

use crate::{Error, Result};

/// The most bytes a commitment may have (`Data::Raw128`).
pub const MAX_COMMITMENT_BYTES: usize = 128;
/// taoverse `MAX_REPO_ID_LENGTH`.
pub const MAX_REPO_ID_LENGTH: usize = 38;
/// A git commit id in hex.
pub const GIT_COMMIT_LENGTH: usize = 40;

/// Splits a Hugging Face repo id `namespace/name`, checking the Hub's character rules (every
/// subnet's; a subnet adds its own in `Subnet::check_repo_id_rules`).
pub fn split_repo_id(repo: &str) -> Result<(String, String)> {
    let bad = |why: String| Error::Format(format!("repo id {repo:?}: {why}"));
    let Some((ns, name)) = repo.split_once('/') else {
        return Err(bad("must be \"namespace/name\" with exactly one '/'".into()));
    };
    if name.contains('/') || ns.is_empty() || name.is_empty() {
        return Err(bad("must be \"namespace/name\" with exactly one '/'".into()));
    }
    let allowed = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if !allowed(ns) || !allowed(name) {
        return Err(bad(
            "only letters, digits, '-', '_' and '.' are allowed (and never ':')".into(),
        ));
    }
    Ok((ns.to_string(), name.to_string()))
}

/// taoverse `ModelId`, as committed by SN9 and SN37.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    pub namespace: String,
    pub name: String,
    /// The Hub commit (revision); `None` is written as the string `None`.
    pub commit: Option<String>,
    /// The plain model hash, only present in the legacy 4-field form.
    pub hash: Option<String>,
    /// The hotkey-bound hash.
    pub secure_hash: Option<String>,
    pub competition_id: u8,
}

impl ModelId {
    /// `to_compressed_str`: `ns:name:commit:secure_hash:competition_id`.
    pub fn to_compressed_str(&self) -> String {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "None".into());
        format!(
            "{}:{}:{}:{}:{}",
            self.namespace,
            self.name,
            opt(&self.commit),
            opt(&self.secure_hash),
            self.competition_id
        )
    }

    /// `from_compressed_str`; four tokens are the legacy form with the plain hash and competition 0.
    pub fn from_compressed_str(s: &str) -> Result<ModelId> {
        let tokens: Vec<&str> = s.split(':').collect();
        let none = |t: &str| (t != "None").then(|| t.to_string());
        match tokens.as_slice() {
            [ns, name, commit, hash] => Ok(ModelId {
                namespace: ns.to_string(),
                name: name.to_string(),
                commit: none(commit),
                hash: none(hash),
                secure_hash: none(hash),
                competition_id: 0,
            }),
            [ns, name, commit, secure, comp] => Ok(ModelId {
                namespace: ns.to_string(),
                name: name.to_string(),
                commit: none(commit),
                hash: None,
                secure_hash: none(secure),
                competition_id: comp.parse().map_err(|_| {
                    Error::Format(format!(
                        "model id {s:?}: competition {comp:?} is not an integer"
                    ))
                })?,
            }),
            _ => Err(Error::Format(format!(
                "model id {s:?}: expected 5 ':'-separated fields (or the legacy 4)"
            ))),
        }
    }
}

/// Everything a commitment is made from.
#[derive(Debug, Clone)]
pub struct CommitmentInput<'a> {
    pub repo: &'a str,
    /// The revision on the Hub (offline: the snapshot's git tree id).
    pub commit: &'a str,
    /// The model hash of the snapshot (taoverse hash for LLM profiles).
    pub model_hash: &'a str,
    pub hotkey_ss58: &'a str,
    pub competition: &'a str,
}

/// A model named by another miner's commitment, read back from chain: what to download
/// (`Subnet::read_commitment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedModel {
    pub namespace: String,
    pub name: String,
    /// The Hub revision: a 40-digit lowercase hex commit id.
    pub commit: String,
    /// The competition as the subnet writes it (`"2"`, `"c00"`).
    pub competition: String,
}

impl CommittedModel {
    /// `namespace/name`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Checks the size every commitment shares: 1 to [`MAX_COMMITMENT_BYTES`] bytes.
pub fn check_commitment_size(s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_COMMITMENT_BYTES {
        return Err(Error::Format(format!(
            "commitment is {} bytes; the chain takes 1 to {MAX_COMMITMENT_BYTES}",
            s.len()
        )));
    }
    Ok(())
}

/// Checks a revision: a 40-digit lowercase hex git commit id, as the Hub answers.
pub fn check_commit(commit: &str) -> Result<()> {
    if commit.len() == GIT_COMMIT_LENGTH
        && commit
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Error::Format(format!(
            "revision {commit:?} must be a 40-digit lowercase hex commit id"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_four_fields_parse_with_competition_zero() {
        let id = ModelId::from_compressed_str("a:b:None:h").unwrap();
        assert_eq!(id.commit, None);
        assert_eq!(id.hash.as_deref(), Some("h"));
        assert_eq!(id.competition_id, 0);
        assert!(ModelId::from_compressed_str("a:b:c").is_err());
        assert!(ModelId::from_compressed_str("a:b:c:d:x").is_err());
    }

    #[test]
    fn the_shared_rules_hold_for_every_subnet() {
        assert!(split_repo_id("a/b").is_ok(), "length is a subnet's rule");
        for bad in ["noslash", "a/b/c", "/x", "x/", "a:b/c", "ns/na me"] {
            assert!(split_repo_id(bad).is_err(), "{bad}");
        }
        assert!(check_commit("main").is_err());
        assert!(check_commit(&"A".repeat(40)).is_err(), "lowercase only");
        assert!(check_commit(&"a".repeat(40)).is_ok());
        assert!(check_commitment_size("").is_err());
        assert!(check_commitment_size(&"x".repeat(129)).is_err());
        assert!(check_commitment_size(&"x".repeat(128)).is_ok());
    }
}
