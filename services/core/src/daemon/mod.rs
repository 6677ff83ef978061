//! What every daemon process does the same way, apart from what it is for: the systemd life
//! cycle ([`runtime`]), durable files and job stores ([`store`]), the one retry schedule
//! ([`backoff`]) and the named crash points of the fault tests ([`fault`]).
//!
//! It sits on top of the rest of `core` (`error` ← `subnet` ← `config` ← `daemon`): the daemon
//! layer reads the configuration and the bus names; nothing below it reads the daemon layer.

pub mod backoff;
pub mod fault;
pub mod runtime;
pub mod store;
