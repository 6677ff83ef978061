//! # taominer-core
//!
//! The library that every taominer daemon and `minerctl` share, so that no daemon carries its own
//! copy of a contract:
//!
//! * [`backoff`]: the one capped exponential backoff (optionally jittered) every retry waits with.
//! * [`config`]: the one TOML file, layered with environment and flags, validated into typed
//!   sections; bad input exits 78 naming the key.
//! * [`runtime`]: what makes a process a well-behaved systemd daemon (journald logging, `sd_notify`
//!   readiness, watchdog and stopping, signal handling, the state directory).
//! * [`bus`]: the D-Bus names, object paths, proxies, error names and reply types of
//!   docs/architecture.md §3.
//! * [`store`]: atomic files and the durable job store each daemon keeps its hand-offs in.
//! * [`subnet`]: one module per subnet (its competitions, limits, commitment and hash), behind the
//!   one `Subnet` trait that [`subnet::Profile::rules`] returns.
//! * [`formats`]: the machinery the subnets share: model identities, the hashes validators
//!   recompute, safetensors headers, the pre-flight engine.
//! * [`fault`]: named crash points used by the fault-injection tests.
//! * [`hub_names`]: the check on file names a Hub lists, before any is joined to a directory.
//! * [`wallet`]: the hotkey keyfile, sr25519 signing and verification.

pub mod backoff;
pub mod bus;
pub mod config;
pub mod error;
pub mod fault;
pub mod formats;
pub mod hub_names;
pub mod runtime;
pub mod store;
pub mod subnet;
pub mod wallet;

pub use error::{Error, Result};
