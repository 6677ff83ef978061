//! taominer's predictor: the Bittensor axon that only registered validators can use. It serves an
//! ONNX model (SN34 BitMind classic, `ImageSynapse`), or SoundsRight's synapses (SN105: the model
//! ids this hotkey entered, validators' feedback) with upstream's healthcheck API.
//!
//! * [`protocol`]: the axon wire format (headers, body hash, signed messages).
//! * [`gate`]: who may query (metagraph or allow-list) and whether a request is really theirs.
//! * [`preprocess`]: base64 image → tensor, as the subnet's base miner (Pillow-exact resize).
//! * [`model`]: ONNX Runtime loaded at run time; models checked at load.
//! * [`queue`]: bounded, stake-ordered, batched inference on one thread.
//! * [`serving`]: the serving model and its hot swap (file watch, `Reload()`).
//! * [`soundsright`]: SN105's synapses and the feedback store; [`healthcheck`]: its HTTP API.
//! * [`axon`]: the HTTP server (protocol, gate, budgets, answers), within [`limits`], whatever
//!   the subnet; [`product`]: the subnet's side behind one trait (`ImageSynapse`, SoundsRight);
//!   [`committer`]: metagraph and `ServeAxon`.
//! * [`interface`]: `org.taominer.Predictor1`; [`daemon`]: wiring; [`cli`]: `predict`.

pub mod axon;
pub mod cli;
pub mod committer;
pub mod daemon;
pub mod error;
pub mod gate;
pub mod healthcheck;
pub mod interface;
pub mod limits;
pub mod model;
pub mod preprocess;
pub mod product;
pub mod protocol;
pub mod queue;
pub mod serving;
pub mod soundsright;
