//! The subnets a miner can speak, each in its own module, behind one trait.
//!
//! What differs from one subnet to the next (its name and mainnet netuid, whether it commits,
//! the competitions it runs and the limits its validators apply, the repository ids it accepts,
//! the commitment it writes and how it is read back, the model hash that goes into it, the
//! layout the pre-flight checks) lives in that subnet's file and nowhere else. The rest of the
//! tree asks [`Profile::rules`] instead of matching on the profile, so adding a subnet is one
//! new file here plus a variant of [`Profile`].
//!
//! The machinery every subnet shares (the hash algorithms, safetensors parsing, the pre-flight
//! engine, taoverse's `ModelId`) stays in [`crate::formats`]; this module only chooses among it.
//! It depends on `formats` and `error`, never on `config` (which reads the profile from it).

use std::fmt;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use serde::{Deserialize, Serialize};

use crate::formats::competition::{Competition, Limits};
use crate::formats::hash;
use crate::formats::model_id::{self, CommitmentInput, CommittedModel};
use crate::formats::preflight::{self, Layout, Report};
use crate::{Error, Result};

mod bitmind;
mod coldint;
mod finetuning;
mod pretraining;
mod soundsright;
mod taoverse;

pub use soundsright::soundsright_number;

/// Which subnet's formats the miner speaks (docs/architecture.md §6). The one list of subnets;
/// each variant's rules are [`Profile::rules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// SN9 pretraining (taoverse commitments).
    Pretraining,
    /// SN37 finetuning (taoverse commitments).
    Finetuning,
    /// SN29 coldint (5-field commitments, string competitions).
    Coldint,
    /// SN105 SoundsRight (sha256 of the ids as the commitment).
    Soundsright,
    /// SN34 BitMind classic axon (no commitment).
    Bitmind,
}

impl Profile {
    /// Every profile, in the order shown to users.
    pub const ALL: [Profile; 5] = [
        Profile::Pretraining,
        Profile::Finetuning,
        Profile::Coldint,
        Profile::Soundsright,
        Profile::Bitmind,
    ];

    /// The rules of this profile's subnet: the one place a profile is mapped to its module.
    pub fn rules(self) -> &'static dyn Subnet {
        match self {
            Profile::Pretraining => &pretraining::Pretraining,
            Profile::Finetuning => &finetuning::Finetuning,
            Profile::Coldint => &coldint::Coldint,
            Profile::Soundsright => &soundsright::Soundsright,
            Profile::Bitmind => &bitmind::Bitmind,
        }
    }

    /// The name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        self.rules().name()
    }

    /// Whether models of this profile are transformers directories that need a `config.json`.
    pub fn is_llm(self) -> bool {
        self.rules().layout() == Layout::Transformers
    }

    /// Whether this profile publishes models and commits their identity to the chain.
    pub fn commits(self) -> bool {
        self.rules().commits()
    }

    /// The netuid this profile's subnet has on mainnet.
    pub fn default_netuid(self) -> u16 {
        self.rules().default_netuid()
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown profile {s:?}; allowed: {}",
                    Profile::ALL.map(Profile::as_str).join(", ")
                )
            })
    }
}

/// Which model hash a subnet's validators recompute (both algorithms are in [`hash`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelHash {
    /// taoverse `get_hash_of_directory` over the files validators download ([`hash::model_hash`]).
    Taoverse,
    /// SoundsRight `get_directory_content_hash` over the whole repository ([`hash::content_hash`]).
    Content,
}

/// What one subnet decides. The required methods are the subnet's own facts; the provided ones
/// are the shared steps built from them (checks in a fixed order, so every subnet's errors read
/// the same way).
pub trait Subnet: Sync {
    /// The profile's name in configuration, on the command line and in messages.
    fn name(&self) -> &'static str;

    /// The subnet's netuid on mainnet (`[miner] netuid` overrides it).
    fn default_netuid(&self) -> u16;

    /// Whether the profile publishes models and commits their identity to the chain.
    fn commits(&self) -> bool {
        true
    }

    /// What a published model directory is, which decides the pre-flight's structural checks
    /// and which files validators download.
    fn layout(&self) -> Layout;

    /// Whether the repository is made public once the commitment is written, when
    /// `publisher.make_public_after_commit` is not set.
    fn make_public_after_commit(&self) -> bool;

    /// The built-in competition table (`[miner] competitions` replaces it).
    fn competitions(&self) -> &'static [Competition];

    /// The competition used when none is configured: the subnet's current main one.
    fn default_competition(&self) -> Option<&'static str>;

    /// Whether `id` has the shape this subnet writes on chain.
    fn competition_syntax_ok(&self, id: &str) -> bool;

    /// That shape, in words, for the error when an id does not have it.
    fn competition_shape(&self) -> &'static str;

    /// The built-in limits of an active competition (upstream constants at the commits in
    /// `docs/protocols.md`); `None` for retired competitions and subnets without any.
    fn builtin_limits(&self, _competition: &str) -> Option<Limits> {
        None
    }

    /// The subnet's own rules on a repository id, beyond the Hub's characters that
    /// [`Subnet::check_repo_id`] checks for every subnet.
    fn check_repo_id_rules(&self, _repo: &str) -> Result<()> {
        Ok(())
    }

    /// The model hash its validators recompute.
    fn model_hash_kind(&self) -> ModelHash {
        ModelHash::Taoverse
    }

    /// The hotkey-bound hash the commitment carries, if it carries one.
    fn secure_hash(&self, model_hash: &str, hotkey_ss58: &str) -> Option<String> {
        Some(hash::secure_hash(model_hash, hotkey_ss58))
    }

    /// The commitment string, from an input whose repository id (`ns`, `name`), revision and
    /// competition syntax have already been checked.
    fn format_commitment(
        &self,
        ns: String,
        name: String,
        input: &CommitmentInput<'_>,
    ) -> Result<String>;

    /// Checks the shape of a commitment of at most [`model_id::MAX_COMMITMENT_BYTES`] bytes.
    fn check_commitment_shape(&self, s: &str) -> Result<()>;

    /// Whether the commitment names its model in clear (`ns:name:commit:hash:competition`);
    /// SoundsRight's sha256 hides it and BitMind commits nothing.
    fn commits_in_clear(&self) -> bool {
        false
    }

    /// The competition id as validators read it from a commitment's last field (taoverse reads
    /// it with `int()`, so `"02"` is competition `"2"`).
    fn canonical_competition(&self, field: &str) -> String {
        field.to_string()
    }

    /// The Hub repository a commitment names, `namespace/name`: its first two fields, however
    /// malformed the rest (the committer refuses a commitment naming someone else's repository
    /// before anything else about it is checked). `None` when the subnet does not commit in clear.
    fn named_repo(&self, commitment: &str) -> Option<String> {
        if !self.commits_in_clear() {
            return None;
        }
        let mut fields = commitment.split(':');
        Some(format!("{}/{}", fields.next()?, fields.next()?))
    }

    /// Reads another miner's commitment with the rules ours are written with (the one parser of
    /// commitments in the tree; the trainer downloads what it names): five fields, the size and
    /// shape [`Subnet::check_commitment`] enforces, the repository id rules, a 40-digit
    /// lowercase hex revision (what the Hub answers; any other names nothing a validator
    /// downloads) and a competition of this subnet's shape. Anything else (no commitment, the
    /// legacy 4-field form that names no competition, a revision of `None`, a hash that hides the
    /// model) is an error saying which rule it broke.
    fn read_commitment(&self, s: &str) -> Result<CommittedModel> {
        let s = s.trim();
        let bad = |why: String| Error::Format(format!("commitment {s:?}: {why}"));
        if !self.commits_in_clear() {
            return Err(bad(format!(
                "profile {} does not commit a model id that can be read back",
                self.name()
            )));
        }
        let [ns, name, commit, _hash, competition] = s.split(':').collect::<Vec<_>>()[..] else {
            return Err(bad(
                "expected 5 ':'-separated fields ns:name:commit:hash:competition".into(),
            ));
        };
        self.check_commitment(s)?;
        self.check_repo_id(&format!("{ns}/{name}"))?;
        model_id::check_commit(commit).map_err(|e| bad(e.to_string()))?;
        self.check_competition_syntax(competition)?;
        Ok(CommittedModel {
            namespace: ns.to_string(),
            name: name.to_string(),
            commit: commit.to_string(),
            competition: self.canonical_competition(competition),
        })
    }

    /// Checks that an id has the shape this subnet writes on chain.
    fn check_competition_syntax(&self, id: &str) -> Result<()> {
        if self.competition_syntax_ok(id) {
            Ok(())
        } else {
            Err(Error::Format(format!(
                "competition {id:?} is not valid for profile {}: expected {}",
                self.name(),
                self.competition_shape()
            )))
        }
    }

    /// Checks an id against this subnet's syntax and the allowed list.
    fn check_competition(&self, id: &str, allowed: &[String]) -> Result<()> {
        self.check_competition_syntax(id)?;
        if allowed.iter().any(|a| a == id) {
            Ok(())
        } else {
            Err(Error::Format(format!(
                "unknown competition {id:?} for profile {}; allowed: {}",
                self.name(),
                allowed.join(", ")
            )))
        }
    }

    /// Checks a Hugging Face repo id `namespace/name`: the Hub's character rules, then the
    /// subnet's own. Returns the two halves.
    fn check_repo_id(&self, repo: &str) -> Result<(String, String)> {
        let parts = model_id::split_repo_id(repo)?;
        self.check_repo_id_rules(repo)?;
        Ok(parts)
    }

    /// Formats the string this subnet commits, enforcing every limit.
    fn commitment(&self, input: &CommitmentInput<'_>) -> Result<String> {
        let (ns, name) = self.check_repo_id(input.repo)?;
        model_id::check_commit(input.commit)?;
        self.check_competition_syntax(input.competition)?;
        let out = self.format_commitment(ns, name, input)?;
        self.check_commitment(&out)?;
        Ok(out)
    }

    /// Checks a commitment string before it is written: size, and shape for the subnet.
    fn check_commitment(&self, s: &str) -> Result<()> {
        model_id::check_commitment_size(s)?;
        self.check_commitment_shape(s)
    }

    /// The model hash of `dir` as this subnet's validators compute it, counting the bytes
    /// hashed into `progress`.
    fn model_hash(&self, dir: &Path, progress: &AtomicU64) -> Result<String> {
        match self.model_hash_kind() {
            ModelHash::Taoverse => hash::model_hash_with(dir, progress),
            ModelHash::Content => hash::content_hash_with(dir, progress),
        }
    }

    /// Runs the pre-flight for publishing `dir` to `repo` in `competition`: the repository id
    /// and this subnet's layout, and `limits` when the competition has any.
    fn preflight(
        &self,
        dir: &Path,
        repo: &str,
        competition: &str,
        limits: Option<&Limits>,
    ) -> Result<Report> {
        let earlier: Vec<String> = self
            .check_repo_id(repo)
            .err()
            .map(|e| e.to_string())
            .into_iter()
            .collect();
        preflight::check(dir, self.layout(), repo, competition, limits, earlier)
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::formats::competition::TokenizerRule;

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

    /// Configuration reads a profile by its serde name and prints it by `name()`: they agree.
    #[test]
    fn serde_names_are_the_subnet_names() {
        for p in Profile::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.rules().name()));
            assert_eq!(p.as_str().parse::<Profile>(), Ok(p));
        }
        let netuids: Vec<u16> = Profile::ALL.map(Profile::default_netuid).to_vec();
        assert_eq!(netuids, vec![9, 37, 29, 105, 34]);
        assert!("sn99"
            .parse::<Profile>()
            .unwrap_err()
            .contains("pretraining, finetuning"));
    }

    #[test]
    fn every_default_competition_has_limits() {
        for p in [Profile::Pretraining, Profile::Finetuning, Profile::Coldint] {
            let r = p.rules();
            let id = r.default_competition().unwrap();
            assert!(r.competitions().iter().any(|c| c.id == id && c.active));
            let l = r.builtin_limits(id).unwrap();
            assert!(l.min_parameters < l.max_parameters && l.max_bytes > 0);
            assert!(!l.architectures.is_empty());
        }
        assert_eq!(Profile::Pretraining.rules().builtin_limits("0"), None);
        assert_eq!(
            TokenizerRule::parse("Xenova/gpt-4"),
            TokenizerRule::Fixed("Xenova/gpt-4".into())
        );
        assert_eq!(TokenizerRule::parse("required"), TokenizerRule::Required);
    }

    #[test]
    fn taoverse_round_trip() {
        let s = Profile::Pretraining
            .rules()
            .commitment(&input("me/model", "2"))
            .unwrap();
        let secure = hash::secure_hash("k2oYXKqiZrucvpgengXLeM1zKwsygOuURBK7b4+PB68=", HOTKEY);
        assert_eq!(s, format!("me:model:{COMMIT}:{secure}:2"));
        let id = model_id::ModelId::from_compressed_str(&s).unwrap();
        assert_eq!(id.to_compressed_str(), s);
        assert_eq!(id.competition_id, 2);
        assert_eq!(
            Profile::Finetuning.rules().named_repo(&s).as_deref(),
            Some("me/model")
        );
    }

    #[test]
    fn the_longest_taoverse_id_fits_in_128_bytes() {
        let rules = Profile::Pretraining.rules();
        let repo = format!("{}/{}", "n".repeat(18), "m".repeat(19));
        assert_eq!(repo.len(), 38);
        let s = rules.commitment(&input(&repo, "99")).unwrap();
        // 38 + 40 + 44 + 2 characters and four ':' (one of them replacing the '/').
        assert_eq!(s.len(), 127);
        let repo = format!("{}/{}", "n".repeat(19), "m".repeat(19));
        let err = rules.commitment(&input(&repo, "2")).unwrap_err();
        assert!(err.to_string().contains("between 3 and 38"), "{err}");
    }

    #[test]
    fn repo_ids_are_checked() {
        let rules = Profile::Pretraining.rules();
        for bad in ["noslash", "a/b/c", "/x", "x/", "a:b/c", "ns/na me"] {
            assert!(rules.check_repo_id(bad).is_err(), "{bad}");
        }
        assert!(rules.check_repo_id("a/b").is_err(), "3 chars is too short");
        assert!(Profile::Coldint.rules().check_repo_id("a/b").is_ok());
    }

    #[test]
    fn coldint_has_string_competitions() {
        let rules = Profile::Coldint.rules();
        let s = rules.commitment(&input("me/model", "c00")).unwrap();
        assert!(s.starts_with(&format!("me:model:{COMMIT}:")));
        assert!(s.ends_with(":c00"));
        assert_eq!(rules.named_repo(&s).as_deref(), Some("me/model"));
        assert!(rules.commitment(&input("me/model", "c:0")).is_err());
    }

    #[test]
    fn soundsright_is_sha256_of_the_ids_with_none_for_48k() {
        let rules = Profile::Soundsright.rules();
        let s = rules
            .commitment(&input("me/model", "DENOISING_16000HZ"))
            .unwrap();
        let want = hex::encode(Sha256::digest(format!("me:model:{COMMIT}:{HOTKEY}:1")));
        assert_eq!(s, want);
        let s = rules
            .commitment(&input("me/model", "DENOISING_48000HZ"))
            .unwrap();
        let want = hex::encode(Sha256::digest(format!("me:model:{COMMIT}:{HOTKEY}:None")));
        assert_eq!(s, want);
        assert_eq!(
            rules.named_repo(&s),
            None,
            "the sha256 hides the repository"
        );
        assert_eq!(rules.secure_hash("h", HOTKEY), None);
        assert_eq!(rules.model_hash_kind(), ModelHash::Content);
    }

    #[test]
    fn bad_revisions_and_bitmind_are_refused() {
        let mut i = input("me/model", "2");
        i.commit = "main";
        assert!(Profile::Pretraining.rules().commitment(&i).is_err());
        let bitmind = Profile::Bitmind.rules();
        assert!(bitmind.commitment(&input("me/model", "2")).is_err());
        assert!(bitmind.check_commitment("a:b").is_err());
        assert!(!bitmind.commits() && bitmind.secure_hash("h", HOTKEY).is_none());
        assert!(Profile::Pretraining
            .rules()
            .check_commitment(&"x".repeat(129))
            .is_err());
    }

    #[test]
    fn what_is_written_is_read_back() {
        let rules = Profile::Pretraining.rules();
        let s = rules.commitment(&input("me/model", "2")).unwrap();
        let m = rules.read_commitment(&s).unwrap();
        assert_eq!(m.repo(), "me/model");
        assert_eq!(m.commit, COMMIT);
        assert_eq!(m.competition, "2");
        let coldint = Profile::Coldint.rules();
        let s = coldint.commitment(&input("a/b", "c00")).unwrap();
        let m = coldint.read_commitment(&s).unwrap();
        assert_eq!((m.repo().as_str(), m.competition.as_str()), ("a/b", "c00"));
        // taoverse reads the competition with int(): "02" is competition 2.
        let m = rules
            .read_commitment(&format!("me:model:{COMMIT}:h:02"))
            .unwrap();
        assert_eq!(m.competition, "2");
    }

    /// The case the trainer's own parser used to accept: a revision in upper case (or mixed).
    /// We never write one and the Hub never answers one, so it names no model to download.
    #[test]
    fn an_uppercase_revision_is_refused_when_read() {
        let rules = Profile::Pretraining.rules();
        let upper = COMMIT.to_ascii_uppercase();
        let err = rules
            .read_commitment(&format!("alice:tiny:{upper}:aGFzaA==:2"))
            .unwrap_err();
        assert!(err.to_string().contains("lowercase hex"), "{err}");
        assert!(rules
            .read_commitment(&format!("alice:tiny:{COMMIT}:aGFzaA==:2"))
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
            (Profile::Bitmind, format!("alice:tiny:{COMMIT}:h:2")),
        ] {
            assert!(
                profile.rules().read_commitment(&s).is_err(),
                "{profile} {s:?}"
            );
        }
    }

    /// The committer's guard reads the repository even from a commitment that is otherwise
    /// malformed, so no shape of string slips someone else's repository past it.
    #[test]
    fn the_named_repo_is_read_from_any_commitment_in_clear() {
        let rules = Profile::Pretraining.rules();
        assert_eq!(rules.named_repo("bob:m:None:h:2").as_deref(), Some("bob/m"));
        assert_eq!(rules.named_repo("bob"), None);
    }

    /// The errors name the profile and the shape it expects.
    #[test]
    fn competition_errors_name_the_profile_and_the_shape() {
        let e = Profile::Pretraining
            .rules()
            .check_competition_syntax("123")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("not valid for profile pretraining: expected an integer"),
            "{e}"
        );
        let e = Profile::Coldint
            .rules()
            .check_competition("c02", &["c00".into()])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown competition \"c02\" for profile coldint; allowed: c00"),
            "{e}"
        );
    }
}
