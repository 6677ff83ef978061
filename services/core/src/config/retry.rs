//! `[retry]`: how long a daemon waits between tries of something that may succeed later (a Hub
//! request, a hand-off to the committer, a chain call). Shared because the publisher and the
//! committer both retry, with the same delays, and neither should read the other's section.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[retry]`: the bounds of the exponential backoff (the wait doubles from `initial_ms` up to
/// `max_ms`, jittered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First retry delay, in milliseconds.
    pub initial_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_ms: 250,
            max_ms: 30_000,
        }
    }
}

impl RetryConfig {
    /// The first delay as a duration.
    pub fn initial(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.initial_ms)
    }

    /// The longest delay as a duration.
    pub fn max(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_ms)
    }

    /// A zero first delay would spin; a longest delay below the first makes no schedule.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.initial_ms == 0 || self.max_ms < self.initial_ms {
            return Err(ConfigError::new(
                "retry.initial_ms",
                self.initial_ms,
                "at least 1 and not more than retry.max_ms",
            ));
        }
        Ok(())
    }
}
