//! The axon: an HTTP/1.1 server that answers Bittensor dendrites, whatever the subnet.
//!
//! A request goes through the same stages as upstream's `AxonMiddleware`, each with upstream's
//! status code, cheapest first: route (404) → size (413) → headers (400) → blacklist (403) →
//! signature and nonce over the header's body hash (401) → the caller's requests in flight (429)
//! → room for the work (503) → body and its hash (413, 400) → the product's answer (see
//! [`crate::product`]: 200 with the synapse's fields, or the product's refusal). Every answer
//! carries the axon's terminal info in the `bt_header_axon_*` headers, signed by our hotkey, so
//! the official `Dendrite` reads the status from it. `GET /healthz` is for local probes.
//!
//! The port is open to the internet, so before any of that the connection itself is bounded
//! (`limits`): a place per address and in all, a header deadline, a write-stall deadline, a
//! lifetime and a request count per connection. Refusals before the signature check are cheap on
//! purpose: unsigned answers, no body buffered (at most [`limits::DRAIN_BYTES`] read and dropped),
//! names echoed short. After it, a validator's requests in flight are capped, bodies are read only
//! into a reserved share of a fixed memory budget, and parsed into the synapse's own fields.
//!
//! * [`connection`]: accepting connections and bounding each one.
//! * [`request`]: one request through the stages above.
//! * [`answer`]: answers, signed and formatted as upstream's.

mod answer;
mod connection;
mod request;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use serde_json::Map;
use taominer_core::config::PredictorConfig;
use taominer_core::wallet::Hotkey;

pub use answer::{parse_body, Answer};
pub use connection::serve;

use crate::gate::Gate;
use crate::limits::{BodyBudget, InFlight};
use crate::product::Product;
use crate::protocol;
use crate::serving::Stats;

/// Request bodies held in memory at once, as a multiple of the largest one allowed.
const BODIES_IN_MEMORY: u64 = 16;

/// What every request handler shares.
pub struct Axon {
    pub hotkey: Hotkey,
    /// This axon's uuid, in every answer (upstream: one per axon instance).
    pub uuid: String,
    pub gate: Arc<Gate>,
    /// The subnet's synapses.
    pub product: Arc<dyn Product>,
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
    /// The synapses' body hash, computed once.
    body_hash: String,
}

impl Axon {
    /// An axon with the limits that follow from its settings.
    pub fn new(
        hotkey: Hotkey,
        uuid: String,
        gate: Arc<Gate>,
        product: Arc<dyn Product>,
        stats: Arc<Stats>,
        cfg: &PredictorConfig,
        external: Option<SocketAddr>,
    ) -> Axon {
        let max_body_bytes = cfg.max_body_bytes;
        Axon {
            hotkey,
            uuid,
            gate,
            bodies: BodyBudget::new(product.max_body(max_body_bytes) * BODIES_IN_MEMORY),
            // The hash every request must carry: of the product's `required_hash_fields`, none
            // of which a body has before it is read (a synapse that has them must add them to
            // its typed request).
            body_hash: protocol::body_hash(&Map::new(), product.hash_fields()),
            product,
            stats,
            max_body_bytes,
            max_timeout_s: cfg.max_timeout_s,
            external,
            in_flight: InFlight::new(),
            in_flight_per_hotkey: cfg.in_flight_per_hotkey,
            connections_per_address: cfg.connections_per_address,
        }
    }

    /// The largest body the product takes.
    fn max_body(&self) -> u64 {
        self.product.max_body(self.max_body_bytes)
    }

    /// The synapses served, as the 404 lists them: `['A', 'B']`.
    fn synapse_list(&self) -> String {
        let quoted: Vec<String> = self
            .product
            .synapses()
            .iter()
            .map(|n| format!("'{n}'"))
            .collect();
        format!("[{}]", quoted.join(", "))
    }
}

/// Binds a listening socket; the error names the config key.
pub async fn bind(listen: &str, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("{key} = {listen:?}"))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({key})"))
}

#[cfg(test)]
mod tests;
