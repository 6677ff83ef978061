//! Progress bars for foreground work (`minerctl hash`, the upload of `minerctl publish --wait`),
//! drawn by `indicatif` on stderr and only when stderr is a terminal: scripts, tests and journald
//! get the plain output and no escape codes; people watching see that a 15 GB hash or an upload
//! is moving, how fast, and how long is left.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress should be drawn at all.
pub fn wanted() -> bool {
    std::io::stderr().is_terminal()
}

/// Where bars go: stderr on a terminal, nowhere otherwise.
pub fn target() -> ProgressDrawTarget {
    target_for(wanted())
}

fn target_for(terminal: bool) -> ProgressDrawTarget {
    if terminal {
        ProgressDrawTarget::stderr_with_hz(5)
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// `hashing [#####>....] 1.20 GiB/2.00 GiB  60%  2.90 GiB/s  ETA 0s`.
pub fn style() -> ProgressStyle {
    const TEMPLATE: &str = "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {percent:>3}%  {binary_bytes_per_sec}  ETA {eta}";
    // The template is a constant the tests render; the default bar is the fallback if a
    // future indicatif ever refused it.
    ProgressStyle::with_template(TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#>.")
}

/// A byte bar labelled `label` over `total` bytes, drawn to `target`.
pub fn bytes(label: &'static str, total: u64, target: ProgressDrawTarget) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(style());
    bar.set_prefix(label);
    bar
}

/// Follows a counter that other code advances (the hasher's byte count) until dropped, then
/// clears the bar.
pub struct Bar {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bar {
    pub fn start(
        label: &'static str,
        total: u64,
        done: Arc<AtomicU64>,
        target: ProgressDrawTarget,
    ) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let bar = bytes(label, total, target);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                bar.set_position(done.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
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
    use std::sync::Mutex;

    /// A terminal that records what is written to it.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<String>>);

    impl Screen {
        fn text(&self) -> String {
            self.0.lock().unwrap().clone()
        }
        fn put(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.put(s)?;
            self.put("\n")
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.put(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.put("<clear>")
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn on_a_terminal_the_bar_shows_bytes_fraction_and_rate() {
        let screen = Screen::default();
        let gib = 1u64 << 30;
        let bar = bytes(
            "hashing",
            2 * gib,
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_position(gib);
        bar.tick();
        let text = screen.text();
        // Each redraw clears the line first: the last frame is what the user sees.
        let last = text.rsplit("<clear>").next().unwrap_or_default();
        assert!(
            last.starts_with(&format!(
                "hashing [{}>{}] 1.00 GiB/2.00 GiB  50%  ",
                "#".repeat(15),
                ".".repeat(14)
            )),
            "{text}"
        );
        assert!(last.contains("/s  ETA "), "{text}");
    }

    #[test]
    fn off_a_terminal_nothing_is_drawn() {
        // What `target()` gives when stderr is a pipe or journald.
        assert!(target_for(false).is_hidden());
        let bar = bytes("hashing", 10, target_for(false));
        bar.set_position(5);
        assert!(bar.is_hidden());
        // The follower stops and returns when dropped.
        let done = Arc::new(AtomicU64::new(0));
        drop(Bar::start("hashing", 10, done, target_for(false)));
    }
}
