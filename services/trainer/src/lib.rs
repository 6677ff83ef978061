//! taominer's trainer: a LLaMA decoder in candle that trains on local text and writes checkpoints
//! transformers loads as `LlamaForCausalLM`, with a resumable loop and candidate hand-off to the
//! publisher. The daemon is `miner-trainer`; `miner-eval` scores a model directory on text;
//! `miner-gpu-bench` runs the GPU check's in-process measurements (`gpu_check.rs`).

pub mod alloc;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod external;
#[cfg(feature = "flash-attn")]
pub mod flash;
pub mod gpu_check;
pub mod handoff;
pub mod interface;
pub mod kernel_check;
pub mod model;
pub mod ops;
pub mod optim;
pub mod plan;
pub mod progress;
pub mod remote;
pub mod rng;
pub mod throughput;
pub mod train;
