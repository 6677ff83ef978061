//! How far each upload has got, for `Jobs()`' `uploaded_bytes`/`total_bytes` (the byte bar of
//! `minerctl publish --wait`).
//!
//! The upload already counts the bytes it streams into its requests on the step's watchdog
//! counter, which nothing else moves during an upload (it now adds the objects the Hub already
//! holds too); a transfer remembers that counter's value when an attempt starts and the bytes the
//! attempt owes, so reading the progress costs a lock and an atomic load, and the upload itself
//! keeps no second count.
//! Not durable: after a restart a job shows 0/0 until its next attempt starts counting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One upload attempt: the watchdog counter and where it stood at the start.
struct Attempt {
    counter: Arc<AtomicU64>,
    start: u64,
    total: u64,
}

/// Every upload in progress, by job id.
#[derive(Default)]
pub struct Transfers {
    by_job: Mutex<HashMap<String, Attempt>>,
}

impl Transfers {
    /// An attempt of `job`'s upload starts: `total` bytes of LFS objects, counted on `counter`.
    /// A new attempt starts from zero again (a retry sends everything again).
    pub fn begin(&self, job: &str, counter: &Arc<AtomicU64>, total: u64) {
        if let Ok(mut m) = self.by_job.lock() {
            m.insert(
                job.to_string(),
                Attempt {
                    counter: counter.clone(),
                    start: counter.load(Ordering::Relaxed),
                    total,
                },
            );
        }
    }

    /// The upload of `job` is over (done or given up): it no longer reports bytes.
    pub fn end(&self, job: &str) {
        if let Ok(mut m) = self.by_job.lock() {
            m.remove(job);
        }
    }

    /// (uploaded, total) bytes of `job`'s current upload attempt; (0, 0) when none runs.
    pub fn progress(&self, job: &str) -> (u64, u64) {
        let Ok(m) = self.by_job.lock() else {
            return (0, 0);
        };
        match m.get(job) {
            Some(a) => {
                let sent = a.counter.load(Ordering::Relaxed).saturating_sub(a.start);
                (sent.min(a.total), a.total)
            }
            None => (0, 0),
        }
    }
}

/// Ends a job's transfer when the upload returns, however it returns.
pub struct Tracked<'a> {
    pub transfers: &'a Transfers,
    pub job: &'a str,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.transfers.end(self.job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_from_the_attempt_start_and_ends_with_the_upload() {
        let t = Transfers::default();
        let counter = Arc::new(AtomicU64::new(500));
        assert_eq!(t.progress("J1"), (0, 0));
        {
            let _tracked = Tracked {
                transfers: &t,
                job: "J1",
            };
            t.begin("J1", &counter, 1000);
            counter.fetch_add(300, Ordering::Relaxed);
            assert_eq!(t.progress("J1"), (300, 1000));
            // A retry counts again from zero; never more than the total.
            t.begin("J1", &counter, 1000);
            assert_eq!(t.progress("J1"), (0, 1000));
            counter.fetch_add(5000, Ordering::Relaxed);
            assert_eq!(t.progress("J1"), (1000, 1000));
            assert_eq!(t.progress("J2"), (0, 0));
        }
        assert_eq!(t.progress("J1"), (0, 0), "gone once the upload returned");
    }
}
