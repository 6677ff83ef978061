//! The predictor's error type.

use taominer_core::bus::BusError;

/// Result alias for the predictor.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong loading a model or answering a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ONNX Runtime library could not be loaded or initialised.
    #[error("ONNX Runtime library {path}: {message}")]
    Runtime { path: String, message: String },
    /// A model file was refused; the model serving before it (if any) keeps serving.
    #[error("model {path}: {message}")]
    Model { path: String, message: String },
    /// The request's image could not be turned into a tensor (answered with 400).
    #[error("{0}")]
    BadImage(String),
    /// Inference failed on a model that loaded.
    #[error("inference failed: {0}")]
    Inference(String),
    /// Nothing is loaded yet, or the predictor is not configured to serve.
    #[error("{0}")]
    NotServing(String),
    /// A request or argument that makes no sense here.
    #[error("{0}")]
    Invalid(String),
    /// A shared-library operation failed (disk, state file, format).
    #[error(transparent)]
    Core(#[from] taominer_core::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl From<Error> for BusError {
    fn from(e: Error) -> BusError {
        match e {
            Error::NotServing(m) => BusError::Unavailable(m),
            Error::Invalid(m) => BusError::InvalidInput(m),
            other => BusError::Failed(other.to_string()),
        }
    }
}
