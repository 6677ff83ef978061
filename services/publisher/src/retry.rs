//! Retrying transient failures of the Hub, waiting with core's jittered [`Backoff`].
//!
//! A publish job must survive a flaky network and a Hub having a bad minute without anyone
//! watching, so transient errors (network, 408, 429, 5xx) are retried for as long as it takes,
//! each wait longer than the last up to `retry.max_ms`, and randomised so that many
//! miners knocked off by the same outage do not come back in lockstep. Anything else (a rejected
//! token, a refused request) is returned at once: waiting cannot fix it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use taominer_core::daemon::backoff::Backoff;

use crate::hub::HubError;

/// Runs `op` until it succeeds or fails with a non-transient error. Each transient failure is
/// reported to `on_retry` (which records it as the job's last error) before the wait. While
/// waiting, `alive` is bumped every second so the daemon's watchdog can tell waiting from hanging.
pub async fn retry<T, F, Fut>(
    what: &str,
    backoff: &mut Backoff,
    alive: &AtomicU64,
    on_retry: &(dyn Fn(&HubError) + Send + Sync),
    mut op: F,
) -> Result<T, HubError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, HubError>>,
{
    loop {
        alive.fetch_add(1, Ordering::Relaxed);
        match op().await {
            Ok(v) => {
                backoff.reset();
                return Ok(v);
            }
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!("{what} failed, retrying in {} ms: {e}", delay.as_millis());
                on_retry(&e);
                let until = tokio::time::Instant::now() + delay;
                while tokio::time::Instant::now() < until {
                    tokio::time::sleep_until(
                        until.min(tokio::time::Instant::now() + Duration::from_secs(1)),
                    )
                    .await;
                    alive.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transient_errors_are_retried_and_others_are_not() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let alive = AtomicU64::new(0);
        let seen = std::sync::Mutex::new(0);
        let mut calls = 0;
        let r = retry("x", &mut b, &alive, &|_| *seen.lock().unwrap() += 1, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(HubError::Transient("503".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(*seen.lock().unwrap(), 2);
        let r: Result<(), _> = retry("x", &mut b, &alive, &|_| {}, || async {
            Err(HubError::TokenRejected("401".into()))
        })
        .await;
        assert!(matches!(r, Err(HubError::TokenRejected(_))));
    }
}
