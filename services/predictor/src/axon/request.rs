//! One request through the axon's stages, cheapest refusal first (see the module above): the
//! stages every synapse shares live here, and the product is asked only twice: whether there is
//! room for the work (before the body is read) and for the answer (after).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH};
use hyper::{Method, Request, Response, StatusCode};
use taominer_core::bus::PredictorState;

use super::answer::{finish, json_response, Answer};
use super::Axon;
use crate::gate::Denied;
use crate::limits;
use crate::product::Admitted;
use crate::protocol::{self, RequestHead};

/// The most characters of a requested name an answer echoes.
const ECHO_CHARS: usize = 48;

pub(super) async fn handle(
    axon: &Axon,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let path = parts.uri.path();
    if path == "/healthz" && parts.method == Method::GET {
        return health(axon);
    }
    let name = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let served = axon.product.synapses().contains(&name);
    // What an answer may repeat of the route: the name when it is ours, else a short, printable
    // prefix.
    let name = if served {
        name.to_string()
    } else {
        limits::echo(name, ECHO_CHARS)
    };
    let parsed = protocol::parse_head(&parts.headers);
    let head = parsed.as_ref().ok();
    let mut verified = false;
    let answer = if !served {
        Answer::error(
            StatusCode::NOT_FOUND,
            format!(
                "Synapse name '{name}' not found. Available synapses {}",
                axon.synapse_list()
            ),
        )
    } else if !(parts.method == Method::POST || parts.method == Method::GET) {
        Answer::error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
    } else {
        match admit(axon, &parts, &parsed, &mut body, start, &mut verified).await {
            Err(refused) => refused,
            Ok((request, in_flight)) => {
                let answer = axon.product.answer(&name, request).await;
                // The caller's place in flight is held until its answer is made.
                drop(in_flight);
                answer
            }
        }
    };
    // Answered before the body was read (404, 403, 429, …): read a little of it and throw it
    // away, so that a client still sending a small body gets the answer instead of a broken pipe;
    // a larger one closes the connection instead of being read.
    let mut close = false;
    if let Some(b) = body {
        close = answer.status == StatusCode::PAYLOAD_TOO_LARGE || !drain(b).await;
    }
    if answer.status == StatusCode::OK {
        axon.stats.served.fetch_add(1, Ordering::Relaxed);
    } else {
        axon.stats.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            "{peer} {name} {}: {} {}",
            head.map_or("-", |h| h.dendrite.hotkey.as_str()),
            answer.status.as_u16(),
            answer.message
        );
    }
    let mut response = finish(axon, &name, head, answer, start, verified);
    if close {
        // The rest of the body is unread: the connection cannot carry another request, and a
        // client that pools connections must be told.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads and drops at most [`limits::DRAIN_BYTES`] of a body within [`limits::DRAIN_TIME`];
/// whether the body ended within those.
async fn drain(mut body: Incoming) -> bool {
    if body.is_end_stream() {
        return true;
    }
    if body
        .size_hint()
        .exact()
        .is_some_and(|n| n > limits::DRAIN_BYTES as u64)
    {
        return false;
    }
    let read = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > limits::DRAIN_BYTES {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(limits::DRAIN_TIME, read)
        .await
        .unwrap_or(false)
}

/// `GET /healthz`: the state only, for local probes and load balancers. Everything else
/// (model path, counters, the last reload error) is on D-Bus, for the operator alone.
fn health(axon: &Axon) -> Response<Full<Bytes>> {
    let state = axon.product.state();
    let status = if state == PredictorState::NoModel {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(status, &serde_json::json!({ "state": state }))
}

/// The stages every synapse shares, cheapest first: size, headers, blacklist, signature, the
/// caller's requests in flight, room for the work, then the body within its budget and
/// deadline. Sets `verified` once the signature holds. The admitted request comes with the
/// caller's place in flight.
async fn admit(
    axon: &Axon,
    parts: &hyper::http::request::Parts,
    head: &Result<RequestHead, protocol::BadHead>,
    body: &mut Option<Incoming>,
    start: Instant,
    verified: &mut bool,
) -> Result<(Admitted, limits::Place<String>), Answer> {
    let max_body = axon.max_body();
    let too_large = || {
        Answer::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {max_body} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Err(too_large());
    }
    let head = head.as_ref().map_err(|e| {
        Answer::error(
            StatusCode::BAD_REQUEST,
            format!("Improperly formatted request: {}", e.0),
        )
    })?;
    let caller = axon
        .gate
        .blacklist(&head.dendrite.hotkey)
        .map_err(|denied| {
            let (Denied::Forbidden(why) | Denied::Unverified(why)) = denied;
            Answer::error(
                StatusCode::FORBIDDEN,
                format!("Forbidden. Key is blacklisted: {why}."),
            )
        })?;
    // The signature covers the header's body hash, so it is checked before the body is read: a
    // stranger claiming a validator's hotkey cannot make us buffer megabytes.
    if let Err(Denied::Unverified(why)) | Err(Denied::Forbidden(why)) = axon.gate.verify(head) {
        return Err(Answer::error(
            StatusCode::UNAUTHORIZED,
            format!("Not Verified: {why}"),
        ));
    }
    *verified = true;
    if head.body_hash != axon.body_hash {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "Hash mismatch between header body hash and request body hash",
        ));
    }
    let in_flight = axon
        .in_flight
        .enter(
            head.dendrite.hotkey.clone(),
            axon.in_flight_per_hotkey,
            usize::MAX,
        )
        .map_err(|_| {
            Answer::error(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "at most {} requests in flight per hotkey",
                    axon.in_flight_per_hotkey
                ),
            )
        })?;
    // No room for the work: say so before the body is read.
    axon.product.room(&caller)?;
    let timeout = head.timeout.unwrap_or(12.0).min(axon.max_timeout_s);
    let deadline = start + Duration::try_from_secs_f64(timeout).unwrap_or(Duration::ZERO);

    let Some(incoming) = body.take() else {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "request body already read",
        ));
    };
    // Room in memory for the whole body before a byte of it is read (a chunked body reserves the
    // largest allowed).
    let Some(_reserved) = axon.bodies.reserve(declared.unwrap_or(max_body)) else {
        *body = Some(incoming);
        return Err(Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service at capacity; request shed",
        ));
    };
    let limited = Limited::new(incoming, max_body as usize);
    let bytes = match tokio::time::timeout_at(deadline.into(), limited.collect()).await {
        Err(_) => {
            return Err(Answer::error(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ))
        }
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(too_large())
        }
        Ok(Err(e)) => {
            return Err(Answer::error(
                StatusCode::BAD_REQUEST,
                format!("request body: {e}"),
            ))
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    let request = Admitted {
        caller,
        body: bytes,
        deadline,
    };
    Ok((request, in_flight))
}
