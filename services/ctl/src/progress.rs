//! Progress lines for foreground work (`minerctl hash`, `minerctl publish --wait`), on stderr and
//! only when stderr is a terminal: scripts and logs get the plain output, people watching get to
//! see that a 15 GB hash or an upload is moving.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether progress should be drawn at all.
pub fn wanted() -> bool {
    std::io::stderr().is_terminal()
}

/// `[#####.....] 1.20/2.00 GiB  60%  2.9 GiB/s`.
pub fn bar(done: u64, total: u64, elapsed: Duration) -> String {
    const WIDTH: usize = 30;
    let frac = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let filled = (frac * WIDTH as f64).round() as usize;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let rate = gib(done) / elapsed.as_secs_f64().max(1e-3);
    format!(
        "[{}{}] {:.2}/{:.2} GiB {:>4.0}%  {:.2} GiB/s",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        gib(done),
        gib(total),
        frac * 100.0,
        rate
    )
}

/// Draws `label bar` every 200 ms from `done` until dropped, then clears the line.
pub struct Bar {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bar {
    pub fn start(label: &'static str, total: u64, done: Arc<AtomicU64>) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let line = bar(done.load(Ordering::Relaxed), total, started.elapsed());
                eprint!("\r{label} {line}");
                let _ = std::io::stderr().flush();
                std::thread::sleep(Duration::from_millis(200));
            }
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        });
        Bar {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_the_fraction_and_the_rate() {
        let half = 1u64 << 30;
        let b = bar(half, 2 * half, Duration::from_secs(1));
        assert!(
            b.starts_with(&format!("[{}{}]", "#".repeat(15), ".".repeat(15))),
            "{b}"
        );
        assert!(
            b.contains("1.00/2.00 GiB") && b.contains("50%") && b.contains("1.00 GiB/s"),
            "{b}"
        );
        assert!(bar(0, 0, Duration::ZERO).contains("100%"));
    }
}
