//! The axon core against a product of its own (not a subnet's): proves that the core serves any
//! [`Product`] through the trait alone (its routes, its body bound, its room, its answer, its
//! state on `/healthz`) and that the product is asked for its answer only once the request is
//! admitted. The subnets' products are proved end to end in tests/tests/{predictor,
//! soundsright,axon_attacks}.rs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper::StatusCode;
use serde_json::{Map, Value};
use taominer_core::bus::PredictorState;
use taominer_core::config::PredictorConfig;
use taominer_core::wallet::Hotkey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use zbus::object_server::SignalEmitter;

use super::{serve, Answer, Axon};
use crate::gate::{Caller, Gate, Rules};
use crate::product::{Admitted, Answering, Product};
use crate::protocol::{self, Dendrite};
use crate::serving::Stats;

/// A product answering `Echo` with the body's length and the caller.
#[derive(Default)]
struct Echo {
    /// Refuse room for any work (as a product without a model does).
    full: AtomicBool,
    /// Answers made, with the synapse asked.
    answered: Mutex<Vec<String>>,
    /// `/healthz` reads.
    state_reads: AtomicUsize,
}

const ECHO_MAX_BODY: u64 = 1024;

impl Product for Echo {
    fn synapses(&self) -> &[&'static str] {
        &["Echo"]
    }

    fn hash_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn max_body(&self, configured: u64) -> u64 {
        configured.min(ECHO_MAX_BODY)
    }

    fn state(&self) -> PredictorState {
        self.state_reads.fetch_add(1, Ordering::Relaxed);
        if self.full.load(Ordering::Relaxed) {
            PredictorState::NoModel
        } else {
            PredictorState::Serving
        }
    }

    fn summary(&self, listen: &str, counts: &str) -> String {
        format!("echo on {listen}; {counts}")
    }

    fn room(&self, _caller: &Caller) -> Result<(), Answer> {
        if self.full.load(Ordering::Relaxed) {
            return Err(Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "echo is full",
            ));
        }
        Ok(())
    }

    fn answer<'a>(&'a self, synapse: &'a str, request: Admitted) -> Answering<'a> {
        Box::pin(async move {
            self.answered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(synapse.to_string());
            let mut fields = Map::new();
            fields.insert("length".into(), request.body.len().into());
            fields.insert("caller".into(), Value::String(request.caller.hotkey));
            Answer::ok(fields)
        })
    }

    fn follow(
        self: Arc<Self>,
        _conn: &zbus::Connection,
        _emitter: SignalEmitter<'static>,
        _tasks: &mut JoinSet<()>,
    ) {
    }
}

fn key(seed: u8) -> Hotkey {
    Hotkey::from_seed([seed; 32]).unwrap()
}

/// An axon serving `product` on a local port, `validator` allowed; its address.
async fn start(product: Arc<Echo>, validator: &Hotkey) -> std::net::SocketAddr {
    let hotkey = key(1);
    let rules = Rules {
        netuid: 34,
        allow: vec![validator.ss58().to_string()],
        require_validator_permit: true,
        min_stake_tao: 10.0,
        max_timeout_s: 60.0,
    };
    let gate = Arc::new(Gate::new(hotkey.ss58(), rules, None));
    let axon = Axon::new(
        hotkey,
        "axon-uuid".into(),
        gate,
        product,
        Arc::new(Stats::default()),
        &PredictorConfig::default(),
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, Arc::new(axon)));
    addr
}

/// Sends one request signed by `caller` for axon key 1, declaring `declared` body bytes and
/// sending `body`; the status and the response's body.
async fn send(
    addr: std::net::SocketAddr,
    caller: &Hotkey,
    route: &str,
    declared: usize,
    body: &[u8],
) -> (u16, String) {
    let mut d = Dendrite {
        hotkey: caller.ss58().to_string(),
        nonce: protocol::now_ns(),
        uuid: "dendrite-uuid".into(),
        ..Default::default()
    };
    let hash = protocol::body_hash(&Map::new(), &[]);
    let message = protocol::request_message(&d, key(1).ss58(), &hash);
    d.signature = Some(format!(
        "0x{}",
        hex::encode(caller.sign(message.as_bytes()))
    ));
    let head = format!(
        "POST /{route} HTTP/1.1\r\nhost: axon\r\nconnection: close\r\ncontent-length: {declared}\r\n\
         bt_header_dendrite_hotkey: {}\r\nbt_header_dendrite_nonce: {}\r\n\
         bt_header_dendrite_uuid: {}\r\nbt_header_dendrite_signature: {}\r\n\
         timeout: 12\r\ncomputed_body_hash: {hash}\r\n\r\n",
        d.hotkey,
        d.nonce,
        d.uuid,
        d.signature.as_deref().unwrap_or_default(),
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

async fn healthz(addr: std::net::SocketAddr) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: axon\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn an_admitted_request_gets_the_products_answer_and_other_routes_a_404() {
    let (product, validator) = (Arc::new(Echo::default()), key(2));
    let addr = start(product.clone(), &validator).await;
    let (status, body) = send(addr, &validator, "Echo", 5, b"hello").await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["length"], 5, "{body}");
    assert_eq!(answer["caller"], validator.ss58(), "{body}");

    let (status, body) = send(addr, &validator, "ImageSynapse", 5, b"hello").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("Available synapses ['Echo']"), "{body}");
    assert_eq!(
        *product.answered.lock().unwrap(),
        vec!["Echo".to_string()],
        "asked once, for its own synapse"
    );
}

#[tokio::test]
async fn the_products_body_bound_and_room_refuse_before_it_is_asked() {
    let (product, validator) = (Arc::new(Echo::default()), key(2));
    let addr = start(product.clone(), &validator).await;
    // Over the product's bound (not the configured one): 413 from the declared length.
    let (status, body) = send(addr, &validator, "Echo", 2048, b"").await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains(&format!("over {ECHO_MAX_BODY} bytes")),
        "{body}"
    );
    // No room: the product's 503, and its answer is never asked for.
    product.full.store(true, Ordering::Relaxed);
    let (status, body) = send(addr, &validator, "Echo", 5, b"hello").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("echo is full"), "{body}");
    // A stranger is refused by the gate first, whatever the product says.
    let (status, body) = send(addr, &key(3), "Echo", 5, b"hello").await;
    assert_eq!(status, 403, "{body}");
    assert!(product.answered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn healthz_reports_the_products_state_and_503_without_a_model() {
    let (product, validator) = (Arc::new(Echo::default()), key(2));
    let addr = start(product.clone(), &validator).await;
    assert_eq!(
        healthz(addr).await,
        (200, "{\"state\":\"serving\"}".to_string())
    );
    product.full.store(true, Ordering::Relaxed);
    assert_eq!(
        healthz(addr).await,
        (503, "{\"state\":\"no-model\"}".to_string())
    );
    assert_eq!(product.state_reads.load(Ordering::Relaxed), 2);
}
