//! # taominer-core
//!
//! The library that every taominer daemon and `minerctl` share, so that no daemon carries its own
//! copy of a contract. Its layers depend one way: `error` ← `subnet` (with `formats`) ← `config`
//! ← `daemon`.
//!
//! * [`config`]: the one TOML file, layered with environment and flags, validated into typed
//!   sections; bad input exits 78 naming the key.
//! * [`daemon`]: what every daemon process does the same way: [`daemon::runtime`] (journald
//!   logging, `sd_notify` readiness, watchdog and stopping, signals, the state directory),
//!   [`daemon::store`] (atomic files and the durable job store each daemon keeps its hand-offs
//!   in), [`daemon::backoff`] (the one capped exponential backoff every retry waits with) and
//!   [`daemon::fault`] (named crash points used by the fault-injection tests).
//! * [`bus`]: the D-Bus names, object paths, proxies, error names and reply types of
//!   docs/architecture.md §3.
//! * [`subnet`]: one module per subnet (its competitions, limits, commitment and hash), behind the
//!   one `Subnet` trait that [`subnet::Profile::rules`] returns.
//! * [`formats`]: the machinery the subnets share: model identities, the hashes validators
//!   recompute, safetensors headers, the pre-flight engine.
//! * [`hub_names`]: the check on file names a Hub lists, before any is joined to a directory.
//! * [`wallet`]: the hotkey keyfile, sr25519 signing and verification.

pub mod bus;
pub mod config;
pub mod daemon;
pub mod error;
pub mod formats;
pub mod hub_names;
pub mod subnet;
pub mod wallet;

pub use error::{Error, Result};
