//! The one error type of `taominer-core`. Every variant carries enough context to be shown to a
//! user as it is: which file, which key, which directory.

use std::path::{Path, PathBuf};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the shared library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the daemon must exit 78 (EX_CONFIG).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

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
