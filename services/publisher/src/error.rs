//! The publisher's error type: refusals of bad input (nothing changed) apart from failures.

use taominer_core::bus::BusError;

use crate::hub::HubError;

/// Result alias for the publisher.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while accepting or processing a publish job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or the model directory is not acceptable; nothing was staged.
    #[error("{0}")]
    Invalid(String),
    /// The competition's limits refuse the model; nothing is uploaded or committed.
    #[error("{0}")]
    Rejected(String),
    /// The Hub refused, or the token was rejected (transient errors are retried, not returned).
    #[error(transparent)]
    Hub(#[from] HubError),
    /// A shared-library operation failed (disk, state file, format).
    #[error(transparent)]
    Core(#[from] taominer_core::Error),
    /// A fact the configuration's validation guarantees is missing: a bug, never bad input.
    #[error("internal: {0}")]
    Internal(String),
    /// The bus failed.
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
}

impl From<Error> for BusError {
    fn from(e: Error) -> BusError {
        match e {
            Error::Invalid(m) | Error::Rejected(m) => BusError::InvalidInput(m),
            Error::Core(taominer_core::Error::Model(m))
            | Error::Core(taominer_core::Error::Format(m)) => BusError::InvalidInput(m),
            other => BusError::Failed(other.to_string()),
        }
    }
}
