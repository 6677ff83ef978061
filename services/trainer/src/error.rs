//! The trainer's one error type. Each variant says which input was wrong, so a user reading
//! `minerctl train status` or the journal knows what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model that this trainer cannot train or a checkpoint that does not match its config.
    #[error("{0}")]
    Model(String),
    /// The tokenizer, or its fit with the model.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Training data that cannot be read or is too small.
    #[error("data: {0}")]
    Data(String),
    #[error("{context}: {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("state: {0}")]
    Store(#[from] taominer_core::Error),
    /// Another miner's committed model: the chain side or the Hub side.
    #[error("{0}")]
    Remote(String),
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("device: {0}")]
    Device(String),
    /// A run that does not fit in the device's memory (see `plan.rs`), with the knobs to turn.
    #[error("memory: {0}")]
    Memory(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }

    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Error {
        Error::File {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
