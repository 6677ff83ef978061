//! The axon: an HTTP/1.1 server that answers Bittensor dendrites.
//!
//! A request goes through the same stages as upstream's `AxonMiddleware`, each with upstream's
//! status code, cheapest first: route (404) → size (413) → headers (400) → blacklist (403) →
//! signature and nonce over the header's body hash (401) → body and its hash (413, 400) → image
//! (400) → the synapse: for `ImageSynapse` queue (503, 408) → model (500) → 200 with the
//! prediction; for SoundsRight's synapses the model ids or the stored feedback. Every answer
//! carries the axon's terminal info in the `bt_header_axon_*` headers, signed by our hotkey, so the
//! official `Dendrite` reads the status from it. `GET /healthz` is for local probes.
//!
//! The port is open to the internet, so before any of that the connection itself is bounded
//! (`limits`): a place per address and in all, a header deadline, a write-stall deadline, a
//! lifetime and a request count per connection. Refusals before the signature check are cheap on
//! purpose: unsigned answers, no body buffered (at most [`limits::DRAIN_BYTES`] read and dropped),
//! names echoed short. After it, a validator's requests in flight are capped, bodies are read only
//! into a reserved share of a fixed memory budget, and parsed into the synapse's own fields.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Map, Value};
use taominer_core::bus::PredictorState;
use taominer_core::config::PredictorConfig;
use taominer_core::wallet::Hotkey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::gate::{Caller, Denied, Gate};
use crate::limits::{self, BodyBudget, Connections, InFlight, StallGuardedIo};
use crate::protocol::{self, AxonInfo, RequestHead};
use crate::queue::{Queue, Refusal};
use crate::serving::{Slot, Stats};
use crate::soundsright::{self, SoundsRight};

/// The most characters of a requested name an answer echoes.
const ECHO_CHARS: usize = 48;

/// Bodies of the SoundsRight synapses at most: they carry a few ids or a page of benchmark
/// results, never megabytes (`max_body_bytes` is sized for `ImageSynapse`'s images).
const SOUNDSRIGHT_MAX_BODY: u64 = 64 * 1024;

/// Request bodies held in memory at once, as a multiple of the largest one allowed.
const BODIES_IN_MEMORY: u64 = 16;

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

    /// The body hash every request must carry. None of the synapses served has
    /// `required_hash_fields` (upstream), so it is the hash of no fields; a synapse that has them
    /// must add them to its typed request below.
    fn expected_body_hash(&self) -> String {
        let fields = match self {
            Synapses::Image { .. } => protocol::IMAGE_SYNAPSE_HASH_FIELDS,
            Synapses::SoundsRight(_) => soundsright::HASH_FIELDS,
        };
        protocol::body_hash(&Map::new(), fields)
    }

    /// The largest body this synapse takes.
    fn max_body(&self, configured: u64) -> u64 {
        match self {
            Synapses::Image { .. } => configured,
            Synapses::SoundsRight(_) => configured.min(SOUNDSRIGHT_MAX_BODY),
        }
    }
}

/// `ImageSynapse`'s request: only the field we use is kept; the rest of the synapse's
/// `model_dump()` (terminal infos, `prediction`) is skipped without being built.
#[derive(Deserialize)]
struct ImageRequest {
    #[serde(default)]
    image: String,
}

/// A SoundsRight synapse's request fields (the competition synapses send only
/// `subnet_version`; `FeedbackProtocol` the rest).
#[derive(Deserialize)]
struct SoundsRightRequest {
    #[serde(default)]
    competition: Option<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    best_models: Value,
    #[serde(default)]
    subnet_version: Option<i64>,
}

impl SoundsRightRequest {
    fn into_fields(self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(c) = self.competition {
            m.insert("competition".into(), Value::String(c));
        }
        m.insert("data".into(), self.data);
        m.insert("best_models".into(), self.best_models);
        if let Some(v) = self.subnet_version {
            m.insert("subnet_version".into(), v.into());
        }
        m
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
    /// Requests in flight per caller hotkey, and how many each may have (429 beyond): one
    /// validator cannot hold every decoder and every queue place.
    pub in_flight: Arc<InFlight>,
    pub in_flight_per_hotkey: usize,
    /// Connections one address may hold.
    pub connections_per_address: usize,
    /// Bodies in memory.
    pub bodies: BodyBudget,
    /// Images decoded at once (about one per core): decoding is the costly step an admitted
    /// caller can ask for, and its memory grows with the image.
    pub decoders: Arc<Semaphore>,
    /// The synapses' body hash, computed once.
    body_hash: String,
}

impl Axon {
    /// An axon with the limits that follow from its settings.
    pub fn new(
        hotkey: Hotkey,
        uuid: String,
        gate: Arc<Gate>,
        synapses: Synapses,
        stats: Arc<Stats>,
        cfg: &PredictorConfig,
        external: Option<SocketAddr>,
    ) -> Axon {
        let max_body_bytes = cfg.max_body_bytes;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Axon {
            hotkey,
            uuid,
            gate,
            bodies: BodyBudget::new(synapses.max_body(max_body_bytes) * BODIES_IN_MEMORY),
            body_hash: synapses.expected_body_hash(),
            synapses,
            stats,
            max_body_bytes,
            max_timeout_s: cfg.max_timeout_s,
            external,
            in_flight: InFlight::new(),
            in_flight_per_hotkey: cfg.in_flight_per_hotkey,
            connections_per_address: cfg.connections_per_address,
            decoders: Arc::new(Semaphore::new(cores)),
        }
    }
}

/// Accepts connections until the task is dropped. A connection over the caps is closed as soon
/// as it is accepted (cheapest refusal: no byte read, no task spawned).
pub async fn serve(listener: TcpListener, axon: Arc<Axon>) {
    let connections = Connections::new(limits::connection_cap(), axon.connections_per_address);
    tracing::info!(
        "axon: at most {} connections, {} per address",
        connections.cap(),
        axon.connections_per_address
    );
    let mut last_warning: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let guard = match connections.enter(peer.ip()) {
            Ok(g) => g,
            Err(why) => {
                axon.stats.turned_away.fetch_add(1, Ordering::Relaxed);
                // One line a minute at most: a flood must not flood the journal.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        "axon: turning connections away ({why:?}, {} open; latest from {})",
                        connections.open(),
                        peer.ip()
                    );
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let axon = axon.clone();
        tokio::spawn(async move {
            serve_connection(axon, stream, peer).await;
            drop(guard);
        });
    }
}

/// One connection, within its deadlines and request count.
async fn serve_connection(axon: Arc<Axon>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let count = Arc::new(AtomicU32::new(0));
    let service = hyper::service::service_fn(move |req| {
        let (axon, count) = (axon.clone(), count.clone());
        async move {
            let n = count.fetch_add(1, Ordering::Relaxed) + 1;
            let mut response = handle(&axon, req, peer).await;
            if n >= limits::REQUESTS_PER_CONNECTION {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(StallGuardedIo::new(stream, limits::WRITE_STALL));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits::HEADER_TIMEOUT)
        .max_buf_size(limits::MAX_HEADER_BYTES.max(8192))
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = tokio::time::sleep(limits::CONNECTION_LIFETIME) => {
            // Finish the request in progress, then close; a peer that will not let it finish
            // is dropped after the grace period.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits::CLOSE_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!("connection from {peer} dropped at the end of its lifetime");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection from {peer}: {e}");
    }
}

/// An answer before it is signed and sent.
struct Answer {
    status: StatusCode,
    message: String,
    /// The success body's synapse fields.
    fields: Option<Map<String, Value>>,
}

impl Answer {
    fn error(status: StatusCode, message: impl Into<String>) -> Answer {
        Answer {
            status,
            message: message.into(),
            fields: None,
        }
    }

    /// A 500: the detail goes to the journal, the caller learns only that it was ours.
    fn internal(what: &str, detail: impl std::fmt::Display) -> Answer {
        tracing::warn!("{what}: {detail}");
        Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    }

    fn ok(fields: Map<String, Value>) -> Answer {
        Answer {
            status: StatusCode::OK,
            message: String::new(),
            fields: Some(fields),
        }
    }
}

/// A request that passed the gate, with its body read and parsed.
struct Admitted {
    caller: Caller,
    hotkey: String,
    body: Bytes,
    deadline: Instant,
    /// Holds the caller's place in flight until the answer is made.
    _in_flight: limits::Place<String>,
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
    let path = parts.uri.path();
    if path == "/healthz" && parts.method == Method::GET {
        return health(axon);
    }
    let name = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let served = axon.synapses.serves(name);
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
                axon.synapses.names()
            ),
        )
    } else if !(parts.method == Method::POST || parts.method == Method::GET) {
        Answer::error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
    } else {
        match admit(axon, &parts, &parsed, &mut body, start, &mut verified).await {
            Err(refused) => refused,
            Ok(admitted) => match &axon.synapses {
                Synapses::Image { queue, slot } => predict(axon, queue, slot, admitted).await,
                Synapses::SoundsRight(sr) => answer_soundsright(sr, &name, admitted).await,
            },
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

/// Formats an answer as upstream's `synapse_to_response` / `create_error_response`, signed by
/// our hotkey once the caller proved who it is (`signed`); refusals before that carry the status
/// unsigned, so that a stranger's request never costs a signature.
fn finish(
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

/// `GET /healthz`: the state only, for local probes and load balancers. Everything else
/// (model path, counters, the last reload error) is on D-Bus, for the operator alone.
fn health(axon: &Axon) -> Response<Full<Bytes>> {
    let (status, state) = match &axon.synapses {
        Synapses::SoundsRight(sr) => (StatusCode::OK, sr.state()),
        Synapses::Image { slot, .. } => match slot.current() {
            Some(_) => (StatusCode::OK, PredictorState::Serving),
            None => (StatusCode::SERVICE_UNAVAILABLE, PredictorState::NoModel),
        },
    };
    json_response(status, &serde_json::json!({ "state": state }))
}

/// The stages every synapse shares, cheapest first: size, headers, blacklist, signature, the
/// caller's requests in flight, room for the work, then the body within its budget and
/// deadline. Sets `verified` once the signature holds.
async fn admit(
    axon: &Axon,
    parts: &hyper::http::request::Parts,
    head: &Result<RequestHead, protocol::BadHead>,
    body: &mut Option<Incoming>,
    start: Instant,
    verified: &mut bool,
) -> Result<Admitted, Answer> {
    let max_body = axon.synapses.max_body(axon.max_body_bytes);
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
    if let Synapses::Image { queue, slot } = &axon.synapses {
        if slot.current().is_none() {
            return Err(Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no model loaded",
            ));
        }
        if queue.is_full_for(caller.priority) {
            return Err(Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service at capacity; request shed",
            ));
        }
    }
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
    Ok(Admitted {
        caller,
        hotkey: head.dendrite.hotkey.clone(),
        body: bytes,
        deadline,
        _in_flight: in_flight,
    })
}

/// The body as the synapse's typed request; 400 when it is not one.
fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8], synapse: &str) -> Result<T, Answer> {
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

/// A SoundsRight synapse: the model ids, or the feedback stored (its disk write off the
/// runtime's threads).
async fn answer_soundsright(sr: &Arc<SoundsRight>, name: &str, admitted: Admitted) -> Answer {
    let request: SoundsRightRequest = match parse_body(&admitted.body, name) {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    let (sr, name, hotkey) = (sr.clone(), name.to_string(), admitted.hotkey.clone());
    let fields = request.into_fields();
    match tokio::task::spawn_blocking(move || sr.answer(&name, &hotkey, fields)).await {
        Ok(Ok(fields)) => Answer::ok(fields),
        Ok(Err(crate::error::Error::Invalid(why))) => Answer::error(StatusCode::BAD_REQUEST, why),
        Ok(Err(e)) => Answer::internal("SoundsRight answer", e),
        Err(e) => Answer::internal("SoundsRight answer", e),
    }
}

/// `ImageSynapse`: decode and preprocess off the runtime (one image per decoder at a time),
/// then queue for the model.
async fn predict(axon: &Axon, queue: &Queue, slot: &Slot, admitted: Admitted) -> Answer {
    let Admitted {
        caller,
        body,
        deadline,
        ..
    } = admitted;
    let request: ImageRequest = match parse_body(&body, protocol::IMAGE_SYNAPSE) {
        Ok(r) => r,
        Err(refused) => return refused,
    };
    drop(body);
    if request.image.is_empty() {
        return Answer::error(StatusCode::BAD_REQUEST, "ImageSynapse.image is empty");
    }
    let Some(model) = slot.current() else {
        return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "no model loaded");
    };
    let prep = model.preprocess.clone();
    drop(model);
    let decoder =
        match tokio::time::timeout_at(deadline.into(), axon.decoders.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            Err(_) => {
                return Answer::error(StatusCode::REQUEST_TIMEOUT, "Timeout waiting for a decoder")
            }
        };
    let image = request.image;
    let decoded = tokio::task::spawn_blocking(move || {
        let t = prep.from_base64(&image);
        drop(decoder);
        t
    })
    .await;
    let tensor = match decoded {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Answer::error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return Answer::internal("image decoding", e),
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
        Ok(Ok(Err(Refusal::Failed(e)))) => Answer::internal("inference", e),
        Ok(Err(_)) => Answer::error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}
