//! The axon: an HTTP/1.1 server that answers Bittensor dendrites.
//!
//! A request goes through the same stages as upstream's `AxonMiddleware`, each with upstream's
//! status code, cheapest first: route (404) → size (413) → headers (400) → blacklist (403) →
//! signature and nonce over the header's body hash (401) → body and its hash (413, 400) → image
//! (400) → the synapse: for `ImageSynapse` queue (503, 408) → model (500) → 200 with the
//! prediction; for SoundsRight's synapses the model ids or the stored feedback. Every answer
//! carries the axon's terminal info in the `bt_header_axon_*` headers, signed by our hotkey, so the
//! official `Dendrite` reads the status from it. `GET /healthz` is for local probes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use taominer_core::wallet::Hotkey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::gate::{Caller, Denied, Gate};
use crate::protocol::{self, AxonInfo, RequestHead};
use crate::queue::{Queue, Refusal};
use crate::serving::{Slot, Stats};
use crate::soundsright::{self, SoundsRight};

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 2048;

/// The synapses this axon serves, by subnet.
pub enum Synapses {
    /// SN34 BitMind: `ImageSynapse` through the ONNX model.
    Image { queue: Arc<Queue>, slot: Arc<Slot> },
    /// SN105 SoundsRight: the competition synapses and `FeedbackProtocol`.
    SoundsRight(Arc<SoundsRight>),
}

impl Synapses {
    fn serves(&self, name: &str) -> bool {
        match self {
            Synapses::Image { .. } => name == protocol::IMAGE_SYNAPSE,
            Synapses::SoundsRight(_) => soundsright::is_synapse(name),
        }
    }

    fn names(&self) -> String {
        let names = match self {
            Synapses::Image { .. } => vec![protocol::IMAGE_SYNAPSE],
            Synapses::SoundsRight(_) => soundsright::synapse_names(),
        };
        let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        format!("[{}]", quoted.join(", "))
    }

    fn hash_fields(&self) -> &'static [&'static str] {
        match self {
            Synapses::Image { .. } => protocol::IMAGE_SYNAPSE_HASH_FIELDS,
            Synapses::SoundsRight(_) => soundsright::HASH_FIELDS,
        }
    }
}

/// What every request handler shares.
pub struct Axon {
    pub hotkey: Hotkey,
    /// This axon's uuid, in every answer (upstream: one per axon instance).
    pub uuid: String,
    pub gate: Arc<Gate>,
    pub synapses: Synapses,
    pub stats: Arc<Stats>,
    pub max_body_bytes: u64,
    pub max_timeout_s: f64,
    /// Our address as announced (for the `bt_header_axon_ip/port` fields).
    pub external: Option<SocketAddr>,
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, axon: Arc<Axon>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let axon = axon.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let axon = axon.clone();
                async move { Ok::<_, Infallible>(handle(&axon, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
}

/// An answer before it is signed and sent.
struct Answer {
    status: StatusCode,
    message: String,
    /// The success body's synapse fields.
    fields: Option<serde_json::Map<String, Value>>,
}

impl Answer {
    fn error(status: StatusCode, message: impl Into<String>) -> Answer {
        Answer {
            status,
            message: message.into(),
            fields: None,
        }
    }

    fn ok(fields: serde_json::Map<String, Value>) -> Answer {
        Answer {
            status: StatusCode::OK,
            message: String::new(),
            fields: Some(fields),
        }
    }
}

/// A request that passed the gate, with its body read and its hash checked.
struct Admitted {
    caller: Caller,
    hotkey: String,
    fields: serde_json::Map<String, Value>,
    deadline: Instant,
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn handle(axon: &Axon, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let path = parts.uri.path().to_string();
    if path == "/healthz" && parts.method == Method::GET {
        return health(axon);
    }
    let name = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let parsed = protocol::parse_head(&parts.headers);
    let head = parsed.as_ref().ok();
    let answer = if !axon.synapses.serves(&name) {
        Answer::error(
            StatusCode::NOT_FOUND,
            format!(
                "Synapse name '{name}' not found. Available synapses {}",
                axon.synapses.names()
            ),
        )
    } else if !(parts.method == Method::POST || parts.method == Method::GET) {
        Answer::error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
    } else {
        match admit(axon, &parts, &parsed, &mut body, start).await {
            Err(refused) => refused,
            Ok(admitted) => match &axon.synapses {
                Synapses::Image { queue, slot } => predict(queue, slot, admitted).await,
                Synapses::SoundsRight(sr) => {
                    match sr.answer(&name, &admitted.hotkey, admitted.fields) {
                        Ok(fields) => Answer::ok(fields),
                        Err(e) => Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                    }
                }
            },
        }
    };
    // Answered before the body was read (404, 403, …): read it anyway, within the size and time
    // limits, so a client still sending it gets the answer instead of a broken pipe.
    let mut close = false;
    if let Some(b) = body {
        close = answer.status == StatusCode::PAYLOAD_TOO_LARGE;
        if !close {
            let limited = Limited::new(b, axon.max_body_bytes as usize);
            let drained = tokio::time::timeout(Duration::from_secs(5), limited.collect()).await;
            close = !matches!(drained, Ok(Ok(_)));
        }
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
    let mut response = finish(axon, &name, head, answer, start);
    if close {
        // The rest of the body is unread: the connection cannot carry another request, and a
        // client that pools connections must be told.
        response
            .headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Signs and formats an answer as upstream's `synapse_to_response` / `create_error_response`.
fn finish(
    axon: &Axon,
    name: &str,
    head: Option<&RequestHead>,
    answer: Answer,
    start: Instant,
) -> Response<Full<Bytes>> {
    let dendrite = head.map(|h| &h.dendrite);
    let nonce = protocol::now_ns();
    let dendrite_hotkey = dendrite.map_or("", |d| d.hotkey.as_str());
    let message =
        protocol::response_message(nonce, dendrite_hotkey, axon.hotkey.ss58(), &axon.uuid);
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
        signature: format!("0x{}", hex::encode(axon.hotkey.sign(message.as_bytes()))),
        ip: axon.external.map(|a| a.ip().to_string()),
        port: axon.external.map(|a| a.port()),
    };
    let timeout = head.and_then(|h| h.timeout);
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

fn health(axon: &Axon) -> Response<Full<Bytes>> {
    let (queue, slot) = match &axon.synapses {
        Synapses::Image { queue, slot } => (queue, slot),
        Synapses::SoundsRight(sr) => {
            return json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "state": if sr.served().is_some() { "serving" } else { "idle" },
                    "current_models": sr.current_models(),
                    "served": axon.stats.served.load(Ordering::Relaxed),
                    "rejected": axon.stats.rejected.load(Ordering::Relaxed),
                }),
            )
        }
    };
    match slot.current() {
        Some(m) => json_response(
            StatusCode::OK,
            &serde_json::json!({
                "state": "serving",
                "model_path": m.path.display().to_string(),
                "model_version": m.version,
                "queued": queue.len(),
                "served": axon.stats.served.load(Ordering::Relaxed),
                "rejected": axon.stats.rejected.load(Ordering::Relaxed),
            }),
        ),
        None => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({
                "state": "no-model",
                "last_reload_error": axon.stats.last_reload_error(),
            }),
        ),
    }
}

/// The stages every synapse shares: size, headers, blacklist, signature, body and its hash.
async fn admit(
    axon: &Axon,
    parts: &hyper::http::request::Parts,
    head: &Result<RequestHead, protocol::BadHead>,
    body: &mut Option<Incoming>,
    start: Instant,
) -> Result<Admitted, Answer> {
    let too_large = || {
        Answer::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {} bytes", axon.max_body_bytes),
        )
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > axon.max_body_bytes) {
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
    let timeout = head.timeout.unwrap_or(12.0).min(axon.max_timeout_s);
    let deadline = start + Duration::from_secs_f64(timeout);

    let Some(incoming) = body.take() else {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "request body already read",
        ));
    };
    let limited = Limited::new(incoming, axon.max_body_bytes as usize);
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
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "Improperly formatted request: the body is not a JSON object",
        ));
    };
    let recomputed = protocol::body_hash(&fields, axon.synapses.hash_fields());
    if recomputed != head.body_hash {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "Hash mismatch between header body hash and request body hash",
        ));
    }
    Ok(Admitted {
        caller,
        hotkey: head.dendrite.hotkey.clone(),
        fields,
        deadline,
    })
}

/// `ImageSynapse`: decode and preprocess off the runtime, then queue for the model.
async fn predict(queue: &Queue, slot: &Slot, admitted: Admitted) -> Answer {
    let Admitted {
        caller,
        mut fields,
        deadline,
        ..
    } = admitted;
    let Some(model) = slot.current() else {
        return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "no model loaded");
    };
    let image = match fields.remove("image") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Answer::error(StatusCode::BAD_REQUEST, "ImageSynapse.image is empty"),
    };
    let prep = model.preprocess.clone();
    drop(model);
    let tensor = match tokio::task::spawn_blocking(move || prep.from_base64(&image)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Answer::error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let rx = queue.submit(caller.priority, tensor, deadline);
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(Ok(p))) => Answer::ok(protocol::image_synapse_fields(p)),
        Ok(Ok(Err(Refusal::Overloaded))) => Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service at capacity; request shed",
        ),
        Ok(Ok(Err(Refusal::TimedOut))) | Err(_) => {
            Answer::error(StatusCode::REQUEST_TIMEOUT, "Timeout waiting for the model")
        }
        Ok(Ok(Err(Refusal::Failed(e)))) => Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Ok(Err(_)) => Answer::error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}
