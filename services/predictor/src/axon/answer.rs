//! Answers, as upstream's axon sends them: the status and message the products and stages
//! decide, formatted as `synapse_to_response` / `create_error_response` with the axon's terminal
//! info, signed by our hotkey once the caller proved who it is.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Axon;
use crate::limits;
use crate::protocol::{self, AxonInfo, RequestHead};

/// An answer before it is signed and sent.
pub struct Answer {
    pub(super) status: StatusCode,
    pub(super) message: String,
    /// The success body's synapse fields.
    fields: Option<Map<String, Value>>,
}

impl Answer {
    /// A refusal with upstream's status and a message for the caller.
    pub fn error(status: StatusCode, message: impl Into<String>) -> Answer {
        Answer {
            status,
            message: message.into(),
            fields: None,
        }
    }

    /// A 500: the detail goes to the journal, the caller learns only that it was ours.
    pub fn internal(what: &str, detail: impl std::fmt::Display) -> Answer {
        tracing::warn!("{what}: {detail}");
        Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    }

    /// A 200 with the synapse's answer fields.
    pub fn ok(fields: Map<String, Value>) -> Answer {
        Answer {
            status: StatusCode::OK,
            message: String::new(),
            fields: Some(fields),
        }
    }
}

/// The body as the synapse's typed request; 400 when it is not one.
pub fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8], synapse: &str) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| {
        Answer::error(
            StatusCode::BAD_REQUEST,
            format!(
                "Improperly formatted request: the body is not a {synapse}: {}",
                limits::echo(&e.to_string(), 120)
            ),
        )
    })
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Formats an answer as upstream's `synapse_to_response` / `create_error_response`, signed by
/// our hotkey once the caller proved who it is (`signed`); refusals before that carry the status
/// unsigned, so that a stranger's request never costs a signature.
pub(super) fn finish(
    axon: &Axon,
    name: &str,
    head: Option<&RequestHead>,
    answer: Answer,
    start: Instant,
    signed: bool,
) -> Response<Full<Bytes>> {
    let dendrite = if signed {
        head.map(|h| &h.dendrite)
    } else {
        None
    };
    let nonce = protocol::now_ns();
    let signature = if signed {
        let dendrite_hotkey = dendrite.map_or("", |d| d.hotkey.as_str());
        let message =
            protocol::response_message(nonce, dendrite_hotkey, axon.hotkey.ss58(), &axon.uuid);
        format!("0x{}", hex::encode(axon.hotkey.sign(message.as_bytes())))
    } else {
        String::new()
    };
    let info = AxonInfo {
        status_code: answer.status.as_u16(),
        status_message: if answer.status == StatusCode::OK {
            "Success".into()
        } else {
            answer.message.clone()
        },
        process_time: start.elapsed().as_secs_f64(),
        hotkey: axon.hotkey.ss58().to_string(),
        uuid: axon.uuid.clone(),
        nonce,
        signature,
        ip: axon.external.map(|a| a.ip().to_string()),
        port: axon.external.map(|a| a.port()),
    };
    let timeout = head
        .and_then(|h| h.timeout)
        .map(|t| t.min(axon.max_timeout_s));
    let body = match (answer.fields, dendrite) {
        (Some(fields), Some(d)) => protocol::synapse_body(name, timeout, &info, d, fields),
        _ => protocol::error_body(&info.status_message),
    };
    let mut response = json_response(answer.status, &body);
    let hash = protocol::sha3_hex("");
    for (k, v) in protocol::response_headers(name, timeout, &info, dendrite, &hash) {
        response.headers_mut().insert(k, v);
    }
    response
}
