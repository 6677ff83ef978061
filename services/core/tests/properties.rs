//! Property tests of the formats that cross a trust boundary (chain, Hub files, operators' flags):
//! where the structure matters, random *well-formed* values must round-trip exactly, and random
//! *ill-formed* ones must be refused without a panic. The byte-level fuzzing of the same parsers
//! is `tests/fuzz` (docs/fuzzing.md); these tests reach the deep, valid cases that random bytes
//! rarely hit.

use proptest::prelude::*;
use taominer_core::config::{Config, Profile, Sources};
use taominer_core::formats::model_id::{self, CommitmentInput, ModelId};
use taominer_core::formats::{safetensors as st, ss58};

/// A Hub namespace or name part (the Hub's characters, never ':' or '/').
fn part(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9._-]{{1,{max}}}")).expect("regex")
}

fn commit() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[0-9a-f]{40}").expect("regex")
}

/// A taoverse secure hash: base64 of 32 bytes (44 characters, never ':').
fn b64_hash() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9+/]{43}=").expect("regex")
}

fn hotkey() -> impl Strategy<Value = String> {
    any::<[u8; 32]>().prop_map(|k| ss58::encode(42, &k))
}

proptest! {
    /// `ModelId` as SN9/SN37 commit it: format then parse gives the same id, for every
    /// namespace, name, revision (or `None`), secure hash (or `None`) and competition.
    #[test]
    fn model_id_round_trips(
        namespace in part(20),
        name in part(20),
        commit in proptest::option::of(commit()),
        secure_hash in proptest::option::of(b64_hash()),
        competition_id in any::<u8>(),
    ) {
        let id = ModelId { namespace, name, commit, hash: None, secure_hash, competition_id };
        let s = id.to_compressed_str();
        prop_assert_eq!(ModelId::from_compressed_str(&s).expect("parses"), id);
    }

    /// The taoverse commitment of any valid repo, revision, hash, hotkey and competition is
    /// accepted by the check the committer runs, and parses back to the same repo, revision and
    /// competition; a repo over 38 characters is refused, not truncated.
    #[test]
    fn taoverse_commitments_round_trip(
        ns in part(19),
        name in part(19),
        commit in commit(),
        model_hash in b64_hash(),
        hotkey in hotkey(),
        competition in 0u8..100,
        finetuning in any::<bool>(),
    ) {
        let profile = if finetuning { Profile::Finetuning } else { Profile::Pretraining };
        let repo = format!("{ns}/{name}");
        let competition = competition.to_string();
        let input = CommitmentInput {
            repo: &repo, commit: &commit, model_hash: &model_hash, hotkey_ss58: &hotkey,
            competition: &competition,
        };
        let made = profile.rules().commitment(&input);
        if repo.len() <= model_id::MAX_REPO_ID_LENGTH && repo.len() > 3 {
            let s = made.expect("a valid commitment");
            prop_assert!(s.len() <= model_id::MAX_COMMITMENT_BYTES);
            prop_assert!(profile.rules().check_commitment(&s).is_ok());
            let id = ModelId::from_compressed_str(&s).expect("parses");
            prop_assert_eq!(format!("{}/{}", id.namespace, id.name), repo);
            prop_assert_eq!(id.commit.as_deref(), Some(commit.as_str()));
            prop_assert_eq!(id.competition_id.to_string(), competition);
        } else {
            prop_assert!(made.is_err());
        }
    }

    /// coldint's commitment keeps its string competition as the fifth field, and is refused
    /// exactly when it would not fit the chain's 128 bytes.
    #[test]
    fn coldint_commitments_round_trip(
        ns in part(30),
        name in part(30),
        commit in commit(),
        model_hash in b64_hash(),
        hotkey in hotkey(),
        competition in proptest::string::string_regex("[!-9;-~]{1,10}").expect("regex"),
    ) {
        let repo = format!("{ns}/{name}");
        let input = CommitmentInput {
            repo: &repo, commit: &commit, model_hash: &model_hash, hotkey_ss58: &hotkey,
            competition: &competition,
        };
        let fits = repo.len() + 1 + 40 + 1 + 44 + 1 + competition.len() <= model_id::MAX_COMMITMENT_BYTES;
        match Profile::Coldint.rules().commitment(&input) {
            Ok(s) => {
                prop_assert!(fits);
                let fields: Vec<&str> = s.split(':').collect();
                prop_assert_eq!(fields.len(), 5);
                prop_assert_eq!(format!("{}/{}", fields[0], fields[1]), repo);
                prop_assert_eq!(fields[2], commit.as_str());
                prop_assert_eq!(fields[4], competition.as_str());
                prop_assert!(Profile::Coldint.rules().check_commitment(&s).is_ok());
            }
            Err(_) => prop_assert!(!fits),
        }
    }

    /// Commitment checks and the model-id parser refuse arbitrary strings without panicking.
    #[test]
    fn commitment_parsers_never_panic(s in any::<String>()) {
        for p in Profile::ALL {
            let _ = p.rules().check_commitment(&s);
            let _ = p.rules().check_repo_id(&s);
        }
        let _ = ModelId::from_compressed_str(&s);
    }

    /// SS58: every prefix of the registry (0..16384) and every key encode and decode back.
    #[test]
    fn ss58_round_trips(prefix in 0u16..16384, key in any::<[u8; 32]>()) {
        let address = ss58::encode(prefix, &key);
        prop_assert_eq!(ss58::decode(&address).expect("decodes"), (prefix, key));
    }

    /// SS58: one changed character of a valid address is refused (base58 alphabet, length or
    /// checksum) or, rarely, decodes to another key; it never panics and never yields the
    /// original key under another address.
    #[test]
    fn ss58_typos_are_refused(key in any::<[u8; 32]>(), at in 0usize..48, c in proptest::char::range('1', 'z')) {
        let address = ss58::encode(42, &key);
        let mut chars: Vec<char> = address.chars().collect();
        let at = at % chars.len();
        prop_assume!(chars[at] != c);
        chars[at] = c;
        let typo: String = chars.into_iter().collect();
        if let Ok((_, k)) = ss58::decode(&typo) {
            prop_assert_ne!(k, key);
        }
    }

    /// A header written by the `safetensors` crate (the reference writer, as the trainer and
    /// transformers write checkpoints) reads back with the same names, dtypes and shapes, and the
    /// parameter count is the sum of the shapes' products.
    #[test]
    fn safetensors_headers_round_trip(
        tensors in proptest::collection::btree_map(
            "[a-z][a-z0-9_.]{0,12}",
            (0usize..3, proptest::collection::vec(1usize..5, 0..4)),
            1..6,
        ),
    ) {
        use safetensors::tensor::{Dtype, TensorView};
        let dtypes = [(Dtype::F32, "F32", 4), (Dtype::BF16, "BF16", 2), (Dtype::I64, "I64", 8)];
        let data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(name, (d, shape))| {
                let (dtype, _, size) = dtypes[*d];
                let n: usize = shape.iter().product();
                (name.clone(), dtype, shape.clone(), vec![0u8; n * size])
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = data
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("view")))
            .collect();
        let bytes = safetensors::serialize(views, None).expect("serialize");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("model.safetensors"), bytes).expect("write");
        let read = st::read_header(&dir.path().join("model.safetensors")).expect("reads");
        prop_assert_eq!(read.len(), tensors.len());
        for (name, (d, shape)) in &tensors {
            let info = &read[name];
            prop_assert_eq!(info.dtype.as_str(), dtypes[*d].1);
            prop_assert_eq!(&info.shape, &shape.iter().map(|&x| x as u64).collect::<Vec<_>>());
        }
        let want: u64 = tensors.values().map(|(_, s)| s.iter().product::<usize>() as u64).sum();
        prop_assert_eq!(st::parameter_count(dir.path()).expect("counts"), want);
    }

    /// Hostile headers (any shape, any offsets: a downloaded model is another miner's file)
    /// are refused or counted without a panic, and an accepted tensor's byte range is exactly
    /// its shape's size: a shape whose element count overflows 64 bits is refused, not wrapped
    /// to a small count.
    #[test]
    fn safetensors_hostile_headers_never_panic(
        shape in proptest::collection::vec(prop_oneof![any::<u64>(), 0u64..4, Just(1u64 << 32)], 0..4),
        begin in prop_oneof![any::<u64>(), 0u64..16],
        len in prop_oneof![any::<u64>(), 0u64..16],
        data in 0usize..64,
    ) {
        let header = format!(
            "{{\"t\":{{\"dtype\":\"U8\",\"shape\":{shape:?},\"data_offsets\":[{begin},{}]}}}}",
            begin.wrapping_add(len)
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, bytes).expect("write");
        if let Ok(read) = st::read_header(&path) {
            let info = &read["t"];
            let elements = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            prop_assert_eq!(elements, Some(info.data_offsets.1 - info.data_offsets.0));
            prop_assert_eq!(st::parameter_count(dir.path()).expect("counts"), info.numel());
        }
    }

    /// `--set KEY=VALUE` with any key and any value is applied or refused with a
    /// configuration error (exit 78 in the daemons), never a panic.
    #[test]
    fn config_set_never_panics(
        key in prop_oneof![
            Just("miner.netuid".to_string()), Just("miner.profile".to_string()),
            Just("miner.competitions".to_string()), Just("publisher.limits.2.min_parameters".to_string()),
            Just("predictor.max_timeout_s".to_string()), Just("trainer.lr".to_string()),
            "[a-z._]{0,24}",
        ],
        value in prop_oneof![
            any::<String>(), any::<i64>().prop_map(|v| v.to_string()), any::<f64>().prop_map(|v| v.to_string()),
            "\\[[0-9\", ]{0,20}\\]", "\\{[a-z =0-9]{0,20}\\}",
        ],
        raw in any::<String>(),
    ) {
        for overrides in [vec![format!("{key}={value}")], vec![raw.clone()]] {
            let _ = Config::load(&Sources { file: None, overrides, env: false });
        }
    }
}
