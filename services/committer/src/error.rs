//! The committer's error type.

use taominer_core::bus::BusError;

/// Result alias for the committer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while queueing or writing a commitment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is not acceptable; nothing was queued.
    #[error("{0}")]
    Invalid(String),
    /// The ledger is damaged before its last record; the committer must not start (exit 65).
    #[error("{0}")]
    LedgerCorrupt(String),
    /// The chain refused or could not be reached (see `ChainError` for which).
    #[error(transparent)]
    Chain(#[from] crate::chain::ChainError),
    /// A shared-library operation failed (disk, state file, format).
    #[error(transparent)]
    Core(#[from] taominer_core::Error),
    /// The bus failed.
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
}

impl From<Error> for BusError {
    fn from(e: Error) -> BusError {
        match e {
            Error::Invalid(m) | Error::Core(taominer_core::Error::Format(m)) => {
                BusError::InvalidInput(m)
            }
            other => BusError::Failed(other.to_string()),
        }
    }
}
