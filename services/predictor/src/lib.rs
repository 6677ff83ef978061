//! taominer's predictor: an ONNX model served on a Bittensor axon that only registered validators
//! can use (SN34 BitMind classic, `ImageSynapse`).
//!
//! * [`protocol`]: the axon wire format (headers, body hash, signed messages).
//! * [`gate`]: who may query (metagraph or allow-list) and whether a request is really theirs.
//! * [`preprocess`]: base64 image → tensor, as the subnet's base miner (Pillow-exact resize).
//! * [`model`]: ONNX Runtime loaded at run time; models checked at load.
//! * [`queue`]: bounded, stake-ordered, batched inference on one thread.
//! * [`serving`]: the serving model and its hot swap (file watch, `Reload()`).
//! * [`axon`]: the HTTP server tying these together; [`committer`]: metagraph and `ServeAxon`.
//! * [`interface`]: `org.taominer.Predictor1`; [`daemon`]: wiring; [`cli`]: `predict`.

pub mod axon;
pub mod cli;
pub mod committer;
pub mod daemon;
pub mod error;
pub mod gate;
pub mod interface;
pub mod model;
pub mod preprocess;
pub mod protocol;
pub mod queue;
pub mod serving;
