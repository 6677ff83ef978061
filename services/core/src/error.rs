//! The one error type of `taominer-core`. Every variant carries enough context to be shown to a
//! user as it is: which file, which key, which directory. It is the bottom layer of the crate
//! (`error` ← `subnet` ← `config` ← `daemon`): it depends on no other module, so the
//! configuration's own error is defined here and re-exported by [`crate::config`].

use std::fmt;
use std::path::{Path, PathBuf};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A configuration problem, shown to the user as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key} = {value}{origin}: {allowed}")]
pub struct ConfigError {
    /// Dotted key, e.g. `miner.netuid`.
    pub key: String,
    /// The offending value as written (or a description of it).
    pub value: String,
    /// What is allowed.
    pub allowed: String,
    /// Where the value came from, formatted as ` (from …)`, or empty.
    pub origin: String,
}

impl ConfigError {
    /// A problem with a value that parsed but does not make sense.
    pub fn new(key: &str, value: impl fmt::Display, allowed: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            value: value.to_string(),
            allowed: allowed.into(),
            origin: String::new(),
        }
    }
}

/// Everything that can go wrong in the shared library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the daemon must exit 78 (EX_CONFIG).
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A stored state file could not be parsed.
    #[error("state file {path} is not valid: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A model directory is not acceptable for publishing or hashing.
    #[error("{0}")]
    Model(String),

    /// A value does not follow a protocol format (model id, commitment, SS58 address, ...).
    #[error("{0}")]
    Format(String),

    /// A secret file others can read (the message says which and the `chmod` that fixes it).
    #[error("{0}")]
    Exposed(String),

    /// Another process holds the state directory.
    #[error("state directory {0} is in use by another process (is the daemon already running?)")]
    Locked(PathBuf),

    /// The daemon could not serve its interface or own its name.
    #[error("cannot serve {name} on {bus}: {source}")]
    Serve {
        name: &'static str,
        bus: String,
        #[source]
        source: zbus::Error,
    },

    /// The D-Bus connection failed.
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
}

impl Error {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Adds the action and path to an I/O result.
pub(crate) trait IoContext<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
