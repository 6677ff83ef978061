//! The Bittensor axon wire protocol, as `bittensor` 10.x's `Synapse`, `Dendrite` and `Axon` speak
//! it (`docs/protocols.md` §8).
//!
//! A request is `POST /{SynapseName}` with the synapse's terminal info in `bt_header_dendrite_*` /
//! `bt_header_axon_*` headers and the synapse's fields (`model_dump()`) as the JSON body. The
//! dendrite signs `nonce.dendrite_hotkey.axon_hotkey.uuid.body_hash`; the body hash is *not* a hash
//! of the HTTP body but of the synapse's `required_hash_fields`. The answer carries the synapse as
//! JSON again, with the axon's terminal info (status, process time, signature) in the headers.
//!
//! This module only parses and formats; who may call is `gate`, what runs is `axon`.

use std::fmt::Write as _;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};
use sha3::{Digest, Sha3_256};

/// The synapse we serve: SN34 BitMind classic's `ImageSynapse`.
pub const IMAGE_SYNAPSE: &str = "ImageSynapse";

/// `ImageSynapse` has no `required_hash_fields`.
pub const IMAGE_SYNAPSE_HASH_FIELDS: &[&str] = &[];

/// `bittensor.__version__` we announce as (`version_as_int` of 10.5.0).
pub const AXON_VERSION: u64 = 10_005_000;

/// Dendrites at or above 7.2.0 put a wall-clock nonce in every request.
pub const V_7_2_0: u64 = 7_002_000;

/// Wall-clock nanoseconds since the epoch: what nonces are (`time.time_ns()`).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `hashlib.sha3_256(s.encode()).hexdigest()`.
pub fn sha3_hex(s: &str) -> String {
    hex::encode(Sha3_256::digest(s.as_bytes()))
}

/// The synapse body hash: `sha3(concat(sha3(str(field)) for field in required_hash_fields))`.
/// `str()` of a JSON string is the string itself; other values would need Python's `repr`, which
/// no synapse we serve hashes.
pub fn body_hash(body: &Map<String, Value>, fields: &[&str]) -> String {
    let mut joined = String::new();
    for field in fields {
        let text = match body.get(*field) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "None".to_string(),
        };
        joined.push_str(&sha3_hex(&text));
    }
    sha3_hex(&joined)
}

/// What a dendrite says about itself in `bt_header_dendrite_*`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dendrite {
    pub hotkey: String,
    pub nonce: u64,
    pub uuid: String,
    /// `0x` + 128 hex digits, as sent.
    pub signature: Option<String>,
    pub version: Option<u64>,
    pub ip: Option<String>,
}

/// The parts of the request headers the axon needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHead {
    pub dendrite: Dendrite,
    /// Seconds the caller waits; `None` when absent or not a number.
    pub timeout: Option<f64>,
    /// The `computed_body_hash` header.
    pub body_hash: String,
}

/// The longest hotkey or uuid header taken.
pub const MAX_ID_BYTES: usize = 64;

/// Why headers could not be read as a synapse (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHead(pub String);

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Reads the dendrite's terminal info, timeout and body hash from the request headers.
pub fn parse_head(headers: &HeaderMap) -> Result<RequestHead, BadHead> {
    let need = |name: &str| {
        header(headers, name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| BadHead(format!("missing header {name}")))
    };
    // Both are keys of the nonce table: an SS58 address is 48 characters, a dendrite's uuid 36.
    let short = |name: &str| {
        need(name).and_then(|v| {
            if v.len() <= MAX_ID_BYTES {
                Ok(v.to_string())
            } else {
                Err(BadHead(format!("{name} is over {MAX_ID_BYTES} bytes")))
            }
        })
    };
    let hotkey = short("bt_header_dendrite_hotkey")?;
    let nonce = need("bt_header_dendrite_nonce")?
        .parse::<u64>()
        .map_err(|_| BadHead("bt_header_dendrite_nonce is not an integer".into()))?;
    let uuid = short("bt_header_dendrite_uuid")?;
    let version = match header(headers, "bt_header_dendrite_version") {
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| BadHead("bt_header_dendrite_version is not an integer".into()))?,
        ),
        None => None,
    };
    Ok(RequestHead {
        dendrite: Dendrite {
            hotkey,
            nonce,
            uuid,
            signature: header(headers, "bt_header_dendrite_signature").map(str::to_string),
            version,
            ip: header(headers, "bt_header_dendrite_ip").map(str::to_string),
        },
        timeout: header(headers, "timeout")
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|t| t.is_finite() && *t > 0.0),
        body_hash: header(headers, "computed_body_hash")
            .unwrap_or_default()
            .to_string(),
    })
}

/// The message a dendrite signs for the axon `axon_hotkey`.
pub fn request_message(d: &Dendrite, axon_hotkey: &str, body_hash: &str) -> String {
    format!(
        "{}.{}.{}.{}.{}",
        d.nonce, d.hotkey, axon_hotkey, d.uuid, body_hash
    )
}

/// The message the axon signs in its answer.
pub fn response_message(
    axon_nonce: u64,
    dendrite_hotkey: &str,
    axon_hotkey: &str,
    axon_uuid: &str,
) -> String {
    format!("{axon_nonce}.{dendrite_hotkey}.{axon_hotkey}.{axon_uuid}")
}

/// Decodes `0x…` (or bare) hex into a 64-byte signature.
pub fn parse_signature(text: &str) -> Option<[u8; 64]> {
    let hex_part = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(hex_part).ok()?;
    bytes.try_into().ok()
}

/// The axon's terminal info in an answer.
#[derive(Debug, Clone)]
pub struct AxonInfo {
    pub status_code: u16,
    pub status_message: String,
    pub process_time: f64,
    pub hotkey: String,
    pub uuid: String,
    pub nonce: u64,
    pub signature: String,
    pub ip: Option<String>,
    pub port: Option<u16>,
}

impl AxonInfo {
    fn to_json(&self) -> Value {
        json!({
            "status_code": self.status_code,
            "status_message": self.status_message,
            "process_time": self.process_time,
            "ip": self.ip,
            "port": self.port,
            "version": AXON_VERSION,
            "nonce": self.nonce,
            "uuid": self.uuid,
            "hotkey": self.hotkey,
            "signature": self.signature,
        })
    }
}

/// Python's `str(float)` for the values we print (shortest round-trip, `.0` on integers).
fn py_float(v: f64) -> String {
    let s = format!("{v:?}");
    if s.contains('e') || s.contains('.') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// The answer's headers: `name`, `timeout`, `bt_header_axon_*`, `bt_header_dendrite_*` (echoed),
/// `computed_body_hash`, as `synapse.to_headers()` makes them.
pub fn response_headers(
    name: &str,
    timeout: Option<f64>,
    axon: &AxonInfo,
    dendrite: Option<&Dendrite>,
    body_hash: &str,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out: Vec<(String, String)> = vec![("name".into(), name.into())];
    out.push(("timeout".into(), py_float(timeout.unwrap_or(12.0))));
    let axon_fields = [
        ("status_code", Some(axon.status_code.to_string())),
        ("status_message", Some(axon.status_message.clone())),
        ("process_time", Some(py_float(axon.process_time))),
        ("ip", axon.ip.clone()),
        ("port", axon.port.map(|p| p.to_string())),
        ("version", Some(AXON_VERSION.to_string())),
        ("nonce", Some(axon.nonce.to_string())),
        ("uuid", Some(axon.uuid.clone())),
        ("hotkey", Some(axon.hotkey.clone())),
        ("signature", Some(axon.signature.clone())),
    ];
    for (k, v) in axon_fields {
        if let Some(v) = v {
            out.push((format!("bt_header_axon_{k}"), v));
        }
    }
    if let Some(d) = dendrite {
        let fields = [
            ("ip", d.ip.clone()),
            ("version", d.version.map(|v| v.to_string())),
            ("nonce", Some(d.nonce.to_string())),
            ("uuid", Some(d.uuid.clone())),
            ("hotkey", Some(d.hotkey.clone())),
            ("signature", d.signature.clone()),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                out.push((format!("bt_header_dendrite_{k}"), v));
            }
        }
    }
    out.push(("computed_body_hash".into(), body_hash.into()));
    out.into_iter()
        .filter_map(|(k, v)| {
            // Header values must be visible ASCII; a status message is ours, the echoed dendrite
            // fields were valid headers on the way in.
            let v = HeaderValue::from_str(&sanitize(&v)).ok()?;
            Some((HeaderName::from_bytes(k.as_bytes()).ok()?, v))
        })
        .collect()
}

fn sanitize(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if c == '\t' || (' '..='~').contains(&c) {
            s.push(c);
        } else {
            let _ = write!(s, "?");
        }
    }
    s
}

/// The JSON body of a successful answer: the synapse's common fields, the terminal infos, and
/// the synapse's own `fields` (for `ImageSynapse` the prediction with an empty image: upstream
/// echoes the whole request, the dendrite only reads the fields it copies, and an empty `image`
/// validates).
pub fn synapse_body(
    name: &str,
    timeout: Option<f64>,
    axon: &AxonInfo,
    dendrite: &Dendrite,
    fields: Map<String, Value>,
) -> Value {
    let mut body = json!({
        "name": name,
        "timeout": timeout.unwrap_or(12.0),
        "total_size": 0,
        "header_size": 0,
        "dendrite": {
            "status_code": null,
            "status_message": null,
            "process_time": null,
            "ip": dendrite.ip,
            "port": null,
            "version": dendrite.version,
            "nonce": dendrite.nonce,
            "uuid": dendrite.uuid,
            "hotkey": dendrite.hotkey,
            "signature": dendrite.signature,
        },
        "axon": axon.to_json(),
        "computed_body_hash": sha3_hex(""),
    });
    if let Value::Object(map) = &mut body {
        map.extend(fields);
    }
    body
}

/// `ImageSynapse`'s own answer fields.
pub fn image_synapse_fields(prediction: f64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("image".into(), Value::String(String::new()));
    m.insert("prediction".into(), json!(prediction));
    m
}

/// `{"message": …}`, the body of every error answer.
pub fn error_body(message: &str) -> Value {
    json!({ "message": message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_hash_fields_hash_to_sha3_of_nothing() {
        // The value every ImageSynapse request carries in computed_body_hash.
        assert_eq!(
            body_hash(&Map::new(), IMAGE_SYNAPSE_HASH_FIELDS),
            "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"
        );
    }

    #[test]
    fn hash_fields_hash_each_string_then_the_concatenation() {
        let mut body = Map::new();
        body.insert("a".into(), Value::String("x".into()));
        body.insert("b".into(), Value::String("y".into()));
        let expect = sha3_hex(&(sha3_hex("x") + &sha3_hex("y")));
        assert_eq!(body_hash(&body, &["a", "b"]), expect);
    }

    #[test]
    fn request_head_needs_hotkey_nonce_and_uuid() {
        let mut h = HeaderMap::new();
        h.insert("bt_header_dendrite_hotkey", HeaderValue::from_static("5F"));
        h.insert("bt_header_dendrite_uuid", HeaderValue::from_static("u"));
        assert!(parse_head(&h).unwrap_err().0.contains("nonce"));
        h.insert("bt_header_dendrite_nonce", HeaderValue::from_static("12"));
        h.insert("timeout", HeaderValue::from_static("12.0"));
        let head = parse_head(&h).unwrap();
        assert_eq!(head.dendrite.nonce, 12);
        assert_eq!(head.timeout, Some(12.0));
        assert_eq!(request_message(&head.dendrite, "5A", "hh"), "12.5F.5A.u.hh");
    }

    #[test]
    fn signatures_parse_with_or_without_0x() {
        let hex64 = "ab".repeat(64);
        assert_eq!(parse_signature(&format!("0x{hex64}")), Some([0xab; 64]));
        assert_eq!(parse_signature(&hex64), Some([0xab; 64]));
        assert_eq!(parse_signature("0x1234"), None);
    }

    #[test]
    fn python_float_strings() {
        assert_eq!(py_float(12.0), "12.0");
        assert_eq!(py_float(0.25), "0.25");
    }
}
