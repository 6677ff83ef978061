//! Named crash points for the fault-injection tests.
//!
//! The durability promise ("kill -9 any daemon at any moment and nothing is lost or done twice")
//! is only worth something if it is tested at the worst moments: right after a job is persisted
//! but before the caller hears about it, right after a ledger write but before the job is marked
//! done. A test sets `MINERTEST_CRASH_AT=publisher.job-persisted` (a comma-separated list) and the
//! daemon sends itself SIGKILL when it reaches that point, which is exactly `kill -9` at that
//! instant. The variable has its own prefix so that it never mixes with `TAOMINER_` configuration.

use std::sync::OnceLock;

/// The environment variable that names the points at which to crash.
pub const CRASH_AT_ENV: &str = "MINERTEST_CRASH_AT";

fn points() -> &'static [String] {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var(CRASH_AT_ENV)
            .map(|v| {
                v.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Kills this process with SIGKILL if `name` is one of the configured crash points.
pub fn crash_point(name: &str) {
    if points().iter().any(|p| p == name) {
        tracing::warn!(point = name, "crash point reached: sending SIGKILL to self");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        // SIGKILL cannot be caught; this is only reached if kill(2) itself failed.
        std::process::abort();
    }
}
