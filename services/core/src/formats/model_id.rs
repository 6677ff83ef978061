//! Model identities and the commitment string each profile writes on chain.
//!
//! | profile | commitment |
//! |---|---|
//! | pretraining, finetuning | `ns:name:commit:secure_hash:competition_id` (taoverse `ModelId.to_compressed_str`) |
//! | coldint | `ns:name:commit:hash:competition` with the hotkey already in `hash` |
//! | soundsright | `sha256_hex(f"{ns}:{name}:{rev}:{hotkey}:{competition_id}")` |
//! | bitmind | none |
//!
//! Limits are enforced here with clear errors, not discovered by a failed extrinsic: a commitment
//! is at most 128 bytes (the largest `Raw` variant), and a taoverse repo id at most 38 characters
//! (`MAX_REPO_ID_LENGTH = 128 - 40 - 44 - 2 - 4`).

use sha2::{Digest, Sha256};

use crate::config::Profile;
use crate::formats::competition;
use crate::{Error, Result};

/// The most bytes a commitment may have (`Data::Raw128`).
pub const MAX_COMMITMENT_BYTES: usize = 128;
/// taoverse `MAX_REPO_ID_LENGTH`.
pub const MAX_REPO_ID_LENGTH: usize = 38;
/// A git commit id in hex.
pub const GIT_COMMIT_LENGTH: usize = 40;

/// Checks a Hugging Face repo id `namespace/name` (taoverse `validate_hf_repo_id` for taoverse
/// profiles; the Hub's character rules for all).
pub fn check_repo_id(profile: Profile, repo: &str) -> Result<(String, String)> {
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
    if matches!(profile, Profile::Pretraining | Profile::Finetuning)
        && !(repo.len() > 3 && repo.len() <= MAX_REPO_ID_LENGTH)
    {
        return Err(bad(format!(
            "Hugging Face repo id must be between 3 and {MAX_REPO_ID_LENGTH} characters (it has {})",
            repo.len()
        )));
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

/// Formats the string a profile commits, enforcing every limit.
pub fn commitment(profile: Profile, input: &CommitmentInput<'_>) -> Result<String> {
    let (ns, name) = check_repo_id(profile, input.repo)?;
    check_commit(input.commit)?;
    competition::check_syntax(profile, input.competition)?;
    let out = match profile {
        Profile::Pretraining | Profile::Finetuning => ModelId {
            namespace: ns,
            name,
            commit: Some(input.commit.to_string()),
            hash: None,
            secure_hash: Some(super::hash::secure_hash(
                input.model_hash,
                input.hotkey_ss58,
            )),
            competition_id: input.competition.parse().map_err(|_| {
                Error::Format(format!(
                    "competition {:?} is not an integer",
                    input.competition
                ))
            })?,
        }
        .to_compressed_str(),
        Profile::Coldint => format!(
            "{ns}:{name}:{}:{}:{}",
            input.commit,
            super::hash::secure_hash(input.model_hash, input.hotkey_ss58),
            input.competition
        ),
        Profile::Soundsright => {
            let number = competition::soundsright_number(input.competition)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "None".into());
            let unhashed = format!(
                "{ns}:{name}:{}:{}:{number}",
                input.commit, input.hotkey_ss58
            );
            hex::encode(Sha256::digest(unhashed.as_bytes()))
        }
        Profile::Bitmind => {
            return Err(Error::Format(
                "the bitmind profile serves on the axon and commits nothing to the chain".into(),
            ))
        }
    };
    check_commitment(profile, &out)?;
    Ok(out)
}

/// Checks a commitment string before it is written: size, and shape for the profile.
pub fn check_commitment(profile: Profile, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_COMMITMENT_BYTES {
        return Err(Error::Format(format!(
            "commitment is {} bytes; the chain takes 1 to {MAX_COMMITMENT_BYTES}",
            s.len()
        )));
    }
    match profile {
        Profile::Pretraining | Profile::Finetuning => {
            let id = ModelId::from_compressed_str(s)?;
            check_repo_id(profile, &format!("{}/{}", id.namespace, id.name))?;
        }
        Profile::Coldint => {
            if s.split(':').count() != 5 {
                return Err(Error::Format(format!(
                    "coldint commitment {s:?} must have exactly 5 ':'-separated fields"
                )));
            }
        }
        Profile::Soundsright => {
            if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Format(format!(
                    "soundsright commitment {s:?} must be 64 hex digits (a sha256)"
                )));
            }
        }
        Profile::Bitmind => {
            return Err(Error::Format(
                "the bitmind profile commits nothing to the chain".into(),
            ))
        }
    }
    Ok(())
}

/// A model named by another miner's commitment, read back from chain: what to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedModel {
    pub namespace: String,
    pub name: String,
    /// The Hub revision: a 40-digit lowercase hex commit id.
    pub commit: String,
    /// The competition as the profile writes it (`"2"`, `"c00"`).
    pub competition: String,
}

impl CommittedModel {
    /// `namespace/name`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Reads a commitment that names a model (the LLM profiles) with the rules it is written with
/// ([`commitment`], [`check_commitment`]): the same field count, repo id rules, a 40-digit
/// lowercase hex revision (what the Hub answers and what we write; another case names no
/// revision a validator downloads), and a competition of the profile's shape. Anything else (no
/// commitment, the legacy 4-field form that names no competition, a revision of `None`, a
/// SoundsRight hash that names no model) is an error saying which rule it broke.
pub fn parse_commitment(profile: Profile, s: &str) -> Result<CommittedModel> {
    let s = s.trim();
    let bad = |why: String| Error::Format(format!("commitment {s:?}: {why}"));
    let [ns, name, commit, _hash, competition] = s.split(':').collect::<Vec<_>>()[..] else {
        return Err(bad(
            "expected 5 ':'-separated fields ns:name:commit:hash:competition".into(),
        ));
    };
    let competition = match profile {
        Profile::Pretraining | Profile::Finetuning => {
            ModelId::from_compressed_str(s)?.competition_id.to_string()
        }
        Profile::Coldint => competition.to_string(),
        Profile::Soundsright | Profile::Bitmind => {
            return Err(bad(format!(
                "profile {profile} does not commit a model id that can be read back"
            )))
        }
    };
    check_commitment(profile, s)?;
    check_repo_id(profile, &format!("{ns}/{name}"))?;
    check_commit(commit).map_err(|e| bad(e.to_string()))?;
    competition::check_syntax(profile, &competition)?;
    Ok(CommittedModel {
        namespace: ns.to_string(),
        name: name.to_string(),
        commit: commit.to_string(),
        competition,
    })
}

fn check_commit(commit: &str) -> Result<()> {
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

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    const HOTKEY: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

    fn input<'a>(repo: &'a str, competition: &'a str) -> CommitmentInput<'a> {
        CommitmentInput {
            repo,
            commit: COMMIT,
            model_hash: "k2oYXKqiZrucvpgengXLeM1zKwsygOuURBK7b4+PB68=",
            hotkey_ss58: HOTKEY,
            competition,
        }
    }

    #[test]
    fn taoverse_round_trip() {
        let s = commitment(Profile::Pretraining, &input("me/model", "2")).unwrap();
        let secure = crate::formats::hash::secure_hash(
            "k2oYXKqiZrucvpgengXLeM1zKwsygOuURBK7b4+PB68=",
            HOTKEY,
        );
        assert_eq!(s, format!("me:model:{COMMIT}:{secure}:2"));
        let id = ModelId::from_compressed_str(&s).unwrap();
        assert_eq!(id.to_compressed_str(), s);
        assert_eq!(id.competition_id, 2);
    }

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
    fn the_longest_taoverse_id_fits_in_128_bytes() {
        let repo = format!("{}/{}", "n".repeat(18), "m".repeat(19));
        assert_eq!(repo.len(), 38);
        let s = commitment(Profile::Pretraining, &input(&repo, "99")).unwrap();
        // 38 + 40 + 44 + 2 characters and four ':' (one of them replacing the '/').
        assert_eq!(s.len(), 127);
        let repo = format!("{}/{}", "n".repeat(19), "m".repeat(19));
        let err = commitment(Profile::Pretraining, &input(&repo, "2")).unwrap_err();
        assert!(err.to_string().contains("between 3 and 38"), "{err}");
    }

    #[test]
    fn repo_ids_are_checked() {
        for bad in ["noslash", "a/b/c", "/x", "x/", "a:b/c", "ns/na me"] {
            assert!(check_repo_id(Profile::Pretraining, bad).is_err(), "{bad}");
        }
        assert!(
            check_repo_id(Profile::Pretraining, "a/b").is_err(),
            "3 chars is too short"
        );
        assert!(check_repo_id(Profile::Coldint, "a/b").is_ok());
    }

    #[test]
    fn coldint_has_string_competitions() {
        let s = commitment(Profile::Coldint, &input("me/model", "c00")).unwrap();
        assert!(s.starts_with(&format!("me:model:{COMMIT}:")));
        assert!(s.ends_with(":c00"));
        assert!(commitment(Profile::Coldint, &input("me/model", "c:0")).is_err());
    }

    #[test]
    fn soundsright_is_sha256_of_the_ids_with_none_for_48k() {
        let s = commitment(
            Profile::Soundsright,
            &input("me/model", "DENOISING_16000HZ"),
        )
        .unwrap();
        let want = hex::encode(Sha256::digest(format!("me:model:{COMMIT}:{HOTKEY}:1")));
        assert_eq!(s, want);
        let s = commitment(
            Profile::Soundsright,
            &input("me/model", "DENOISING_48000HZ"),
        )
        .unwrap();
        let want = hex::encode(Sha256::digest(format!("me:model:{COMMIT}:{HOTKEY}:None")));
        assert_eq!(s, want);
    }

    #[test]
    fn what_is_written_is_read_back() {
        let s = commitment(Profile::Pretraining, &input("me/model", "2")).unwrap();
        let m = parse_commitment(Profile::Pretraining, &s).unwrap();
        assert_eq!(m.repo(), "me/model");
        assert_eq!(m.commit, COMMIT);
        assert_eq!(m.competition, "2");
        let s = commitment(Profile::Coldint, &input("a/b", "c00")).unwrap();
        let m = parse_commitment(Profile::Coldint, &s).unwrap();
        assert_eq!((m.repo().as_str(), m.competition.as_str()), ("a/b", "c00"));
    }

    /// The case the trainer's own parser used to accept: a revision in upper case (or mixed).
    /// We never write one and the Hub never answers one, so it names no model to download.
    #[test]
    fn an_uppercase_revision_is_refused_when_read() {
        let upper = COMMIT.to_ascii_uppercase();
        let s = format!("alice:tiny:{upper}:aGFzaA==:2");
        let err = parse_commitment(Profile::Pretraining, &s).unwrap_err();
        assert!(err.to_string().contains("lowercase hex"), "{err}");
        assert!(parse_commitment(
            Profile::Pretraining,
            &format!("alice:tiny:{COMMIT}:aGFzaA==:2")
        )
        .is_ok());
    }

    #[test]
    fn commitments_that_name_no_model_are_errors() {
        for (profile, s) in [
            (Profile::Pretraining, String::new()),
            (Profile::Pretraining, "alice:tiny:None:h:2".into()),
            (Profile::Pretraining, format!("alice:tiny:{COMMIT}:h")),
            (Profile::Pretraining, format!("alice:tiny:{COMMIT}:h:c00")),
            (Profile::Pretraining, format!("alice:tiny:{COMMIT}:h:123")),
            (Profile::Pretraining, format!("a:b:{COMMIT}:h:2")),
            (Profile::Coldint, format!("a:b:{}:h:c00", &COMMIT[1..])),
            (Profile::Coldint, format!("a b:c:{COMMIT}:h:c00")),
            (Profile::Soundsright, "ab".repeat(32)),
        ] {
            assert!(parse_commitment(profile, &s).is_err(), "{profile} {s:?}");
        }
    }

    #[test]
    fn bad_revisions_and_bitmind_are_refused() {
        let mut i = input("me/model", "2");
        i.commit = "main";
        assert!(commitment(Profile::Pretraining, &i).is_err());
        assert!(commitment(Profile::Bitmind, &input("me/model", "2")).is_err());
        assert!(check_commitment(Profile::Pretraining, &"x".repeat(129)).is_err());
    }
}
