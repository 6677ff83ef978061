//! What a subnet's side of the predictor is, to the axon and to the daemon: one trait, so that
//! the axon core (protocol, gate, budgets, answers) never names a subnet, and adding one means a
//! new file here plus its line in `daemon::start_product`.
//!
//! * [`image`]: SN34 BitMind's `ImageSynapse`, classified by the ONNX model.
//! * [`soundsright`]: SN105 SoundsRight's competition synapses and `FeedbackProtocol`.

pub mod image;
pub mod soundsright;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use taominer_core::bus::PredictorState;
use tokio::task::JoinSet;
use zbus::object_server::SignalEmitter;

use crate::axon::Answer;
use crate::gate::Caller;

/// A request the axon admitted: the caller passed the gate and proved who it is, has a place
/// in flight (held by the axon until the answer is made), and its body was read within budget.
pub struct Admitted {
    pub caller: Caller,
    pub body: Bytes,
    /// When the caller stops waiting: the product's own waits end here (408).
    pub deadline: Instant,
}

/// The answer being made, off the axon's hands.
pub type Answering<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// A subnet's synapses, as the axon serves them and the daemon runs them.
pub trait Product: Send + Sync + 'static {
    /// The synapse names (routes) this product answers; anything else is a 404.
    fn synapses(&self) -> &[&'static str];

    /// The fields upstream's synapses list in `required_hash_fields`: the header's body hash
    /// must be theirs (none of today's synapses has any, so it is the hash of no fields).
    fn hash_fields(&self) -> &'static [&'static str];

    /// The largest body any of its synapses takes, given `predictor.max_body_bytes`.
    fn max_body(&self, configured: u64) -> u64;

    /// The state `/healthz` (and D-Bus) reports; the axon answers `/healthz` with 503 exactly
    /// when it is [`PredictorState::NoModel`].
    fn state(&self) -> PredictorState;

    /// One line for `minerctl status` and `STATUS=`: what is served, on `listen`, with the
    /// axon's `counts` where they say something.
    fn summary(&self, listen: &str, counts: &str) -> String;

    /// Whether there is room for `caller`'s work now; asked after the caller's place in flight
    /// is taken and before its body is read, so that a refusal (503) costs no body.
    fn room(&self, _caller: &Caller) -> Result<(), Answer> {
        Ok(())
    }

    /// The answer to `synapse` (one of [`Product::synapses`]) for an admitted request.
    fn answer<'a>(&'a self, synapse: &'a str, request: Admitted) -> Answering<'a>;

    /// Starts the work that follows D-Bus (file watch, live model, signals) into `tasks`.
    fn follow(
        self: Arc<Self>,
        conn: &zbus::Connection,
        emitter: SignalEmitter<'static>,
        tasks: &mut JoinSet<()>,
    );

    /// Stops what the product runs outside `tasks` (threads), after the axon stopped; may block.
    fn stop(&self) {}
}
