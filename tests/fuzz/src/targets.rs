//! The fuzz targets: one per parser that reads bytes an outsider controls, through the crates'
//! public entry points (the same functions the daemons call).
//!
//! Parsers that read files (safetensors headers, shard indexes, keyfiles, the config file) get the
//! input written to a scratch file first: the file is the interface, and a bytes-only variant
//! would not be the code the daemons run.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use taominer_core::config::{Config, Profile, Sources};
use taominer_core::formats::{competition, model_id, safetensors, ss58};
use taominer_core::wallet::{self, Hotkey};
use taominer_predictor::preprocess::Preprocess;
use taominer_predictor::{protocol, soundsright};

/// A target: parses `data`, returns whether it was accepted, panics only on a bug.
pub type Target = fn(&[u8]) -> bool;

/// Every target, by the name its corpus directory and the cargo-fuzz binary carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("axon_head", axon_head),
    ("synapse_body", synapse_body),
    ("image", image),
    ("safetensors_header", safetensors_header),
    ("shard_index", shard_index),
    ("config_toml", config_toml),
    ("config_set", config_set),
    ("keyfile", keyfile),
    ("commitment", commitment),
    ("ss58", ss58_address),
];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// A scratch directory for this thread (libFuzzer and the driver run one input at a time; the
/// tests run targets on several threads at once, which must not share files).
fn scratch() -> PathBuf {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::Builder::new()
            .prefix("taominer-fuzz-")
            .tempdir()
            .expect("a scratch directory for the fuzz targets");
    }
    DIR.with(|d| d.path().to_path_buf())
}

/// Writes `data` to `scratch()/sub/name` (mode 0600, as a hotkey file must be) and returns it.
fn scratch_file(sub: &str, name: &str, data: &[u8]) -> PathBuf {
    let dir = scratch().join(sub);
    std::fs::create_dir_all(&dir).expect("scratch subdirectory");
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .expect("scratch file");
    f.write_all(data).expect("write scratch file");
    path
}

/// The axon's request headers (`bt_header_dendrite_*`, `timeout`, `computed_body_hash`): one
/// `name: value` per line, as on the wire. An accepted head then goes through everything the
/// axon does with it before the gate: the signature parse, the signed message, the SS58 key and
/// the sr25519 check, and the echo into the answer's headers and body.
pub fn axon_head(data: &[u8]) -> bool {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        // What hyper would refuse never reaches the axon.
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let Ok(head) = protocol::parse_head(&headers) else {
        return false;
    };
    let d = &head.dendrite;
    let axon_hotkey = "5EsNLFaGe9XK5LzWH3i6eC2Wqv6YqZS1442N1C4yeSdP6uxy";
    let message = protocol::request_message(d, axon_hotkey, &head.body_hash);
    let verified = match (
        d.signature.as_deref().and_then(protocol::parse_signature),
        ss58::decode(&d.hotkey),
    ) {
        (Some(sig), Ok((_, key))) => wallet::verify(&sig, message.as_bytes(), &key),
        _ => false,
    };
    let axon = protocol::AxonInfo {
        status_code: 200,
        status_message: "Success".into(),
        process_time: 0.01,
        hotkey: axon_hotkey.into(),
        uuid: "fuzz".into(),
        nonce: d.nonce,
        signature: "0x00".into(),
        ip: None,
        port: None,
    };
    let echoed = protocol::response_headers(
        protocol::IMAGE_SYNAPSE,
        head.timeout,
        &axon,
        Some(d),
        &head.body_hash,
    );
    // Every echoed header must be a valid header again (hyper would refuse to send it).
    assert!(echoed.iter().all(|(_, v)| v.to_str().is_ok()));
    let body = protocol::synapse_body(
        protocol::IMAGE_SYNAPSE,
        head.timeout,
        &axon,
        d,
        protocol::image_synapse_fields(0.5),
    );
    assert!(serde_json::to_vec(&body).is_ok());
    let _ = verified;
    true
}

/// A synapse's JSON body: parsed as the axon parses it, the body hash over the hash fields of
/// each synapse we serve, and the `image` field decoded as `ImageSynapse`'s preprocessing does.
pub fn synapse_body(data: &[u8]) -> bool {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(data) else {
        return false;
    };
    for hash_fields in [
        protocol::IMAGE_SYNAPSE_HASH_FIELDS,
        soundsright::HASH_FIELDS,
        &["image", "competition", "data"][..],
    ] {
        let h = protocol::body_hash(&fields, hash_fields);
        assert_eq!(h.len(), 64, "a body hash is 64 hex digits");
    }
    match fields.get("image") {
        Some(Value::String(b64)) => preprocess().from_base64(b64).is_ok(),
        _ => true,
    }
}

/// A small preprocessing, so that decoding dominates (the model's size does not matter here).
fn preprocess() -> Preprocess {
    Preprocess {
        height: 8,
        width: 8,
        mean: Some([0.485, 0.456, 0.406]),
        std: Some([0.229, 0.224, 0.225]),
    }
}

/// Encoded image bytes (JPEG, PNG) to a tensor, as the axon does after base64.
pub fn image(data: &[u8]) -> bool {
    match preprocess().from_encoded(data) {
        Ok(t) => {
            assert_eq!(t.len(), 3 * 8 * 8);
            true
        }
        Err(_) => false,
    }
}

/// A safetensors file: its header as the publisher's pre-flight and the trainer read it, and the
/// parameter count of a model directory holding it.
pub fn safetensors_header(data: &[u8]) -> bool {
    let path = scratch_file("st", "model.safetensors", data);
    let accepted = safetensors::read_header(&path).is_ok();
    let counted = safetensors::parameter_count(path.parent().expect("scratch dir")).is_ok();
    assert_eq!(
        accepted, counted,
        "one file: the header and the count agree"
    );
    accepted
}

/// `model.safetensors.index.json`: the shard list of a sharded checkpoint.
pub fn shard_index(data: &[u8]) -> bool {
    let path = scratch_file("index", "model.safetensors.index.json", data);
    let Ok(shards) = safetensors::index_shards(&path) else {
        return false;
    };
    for s in &shards {
        assert!(
            !s.contains('/') && !s.starts_with('.'),
            "shard {s:?} escapes the model directory"
        );
    }
    // The shards do not exist: the model must be refused, not panic.
    let _ = safetensors::model_tensors(path.parent().expect("scratch dir"));
    true
}

/// The configuration file (`miner.toml`), loaded and validated as every daemon does at start.
pub fn config_toml(data: &[u8]) -> bool {
    let path = scratch_file("config", "miner.toml", data);
    Config::load(&Sources {
        file: Some(path),
        overrides: Vec::new(),
        env: false,
    })
    .is_ok()
}

/// `--set KEY=VALUE` overrides, one per line.
pub fn config_set(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    Config::load(&Sources {
        file: None,
        overrides: text.lines().map(str::to_string).collect(),
        env: false,
    })
    .is_ok()
}

/// A hotkey keyfile as `bittensor_wallet` writes it.
pub fn keyfile(data: &[u8]) -> bool {
    let path = scratch_file("wallet", "hotkey", data);
    match Hotkey::load_with_source(&path) {
        Ok((key, _)) => {
            // A loaded key's address decodes to its own public key.
            let (_, public) = ss58::decode(key.ss58()).expect("our own address decodes");
            assert_eq!(public, key.public_key());
            true
        }
        Err(_) => false,
    }
}

/// A commitment string read from the chain (another miner's, for `start = "uid"`/`"best"`) or
/// given to `Commit`: every profile's check, the taoverse model id and the trainer's reader.
pub fn commitment(data: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(data) else {
        return false;
    };
    let mut accepted = false;
    for p in Profile::ALL {
        let rules = p.rules();
        accepted |= rules.check_commitment(s).is_ok();
        let _ = rules.check_competition_syntax(s);
        let _ = rules.check_repo_id(s);
    }
    let _ = taominer_core::subnet::soundsright_number(s);
    let _ = competition::TokenizerRule::parse(s);
    if let Ok(id) = model_id::ModelId::from_compressed_str(s) {
        // The 5-field form is what we write: parse ∘ format is the identity on parsed ids.
        if s.split(':').count() == 5 {
            let again = model_id::ModelId::from_compressed_str(&id.to_compressed_str())
                .expect("a formatted model id parses");
            assert_eq!(again, id, "model id {s:?} does not round-trip");
        }
    }
    for p in Profile::ALL {
        // What the trainer reads from chain: it names a repo and a revision, and it is a
        // commitment we would write ourselves.
        if let Ok(m) = p.rules().read_commitment(s) {
            assert_eq!(m.commit.len(), 40);
            assert!(m.repo().contains('/'));
            assert!(p.rules().check_commitment(s.trim()).is_ok());
            accepted = true;
        }
    }
    accepted
}

/// An SS58 address (config, `minerctl`, the axon's `bt_header_dendrite_hotkey`, the chain).
pub fn ss58_address(data: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(data) else {
        return false;
    };
    match ss58::decode(s) {
        Ok((prefix, key)) => {
            let again = ss58::decode(&ss58::encode(prefix, &key)).expect("re-encoded decodes");
            assert_eq!(again, (prefix, key), "{s:?} does not round-trip");
            true
        }
        Err(_) => false,
    }
}
