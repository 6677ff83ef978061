//! Fuzz targets for every parser that takes outside input, and a stable driver for CI.
//!
//! Each target in [`targets`] is a plain `fn(&[u8]) -> bool` (whether the input was accepted), so
//! the same code runs under two engines:
//!
//! * libFuzzer (`fuzz/`, cargo-fuzz layout, nightly): coverage-guided, for long runs by hand;
//! * [`driver`] (stable, `scripts/fuzz`, CI): replays the seed corpus under `fuzz/corpus/<target>/`,
//!   then mutates it (bit flips, byte inserts and deletes, splices, interesting integers) with a
//!   seeded generator for a bounded time, catching panics and saving the input of any crash. It
//!   is *not* coverage-guided: its only feedback is that inputs a parser accepted join the pool.
//!
//! A target panics (a crash) when the parser panics, or when a property that must hold for every
//! accepted input breaks (a parsed id that does not round-trip, an SS58 address that re-encodes
//! to another key).

pub mod driver;
pub mod mutate;
pub mod seeds;
pub mod targets;
