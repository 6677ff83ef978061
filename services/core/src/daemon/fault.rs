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

/// The environment variable that names points at which to pause: `name=/path/flag[,...]`.
pub const PAUSE_AT_ENV: &str = "MINERTEST_PAUSE_AT";
/// How long a paused daemon waits for the test before carrying on.
const PAUSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Races need a window that a test can hold open: at `name`, if `MINERTEST_PAUSE_AT` names it
/// with a flag path, this creates `<flag>.reached` and blocks (this thread only) until `<flag>`
/// exists, so the test can change the world between two steps (e.g. staging's scan and copy).
/// Blocking: call it only off the async threads.
pub fn pause_point(name: &str) {
    let Ok(spec) = std::env::var(PAUSE_AT_ENV) else {
        return;
    };
    let Some(flag) = spec.split(',').find_map(|p| {
        let (point, flag) = p.trim().split_once('=')?;
        (point == name).then(|| std::path::PathBuf::from(flag))
    }) else {
        return;
    };
    let mut reached = flag.clone().into_os_string();
    reached.push(".reached");
    if let Err(e) = std::fs::write(&reached, b"") {
        tracing::warn!(point = name, "pause point: cannot signal the test: {e}");
    }
    tracing::warn!(
        point = name,
        "pause point reached: waiting for {}",
        flag.display()
    );
    let start = std::time::Instant::now();
    while !flag.exists() && start.elapsed() < PAUSE_LIMIT {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
