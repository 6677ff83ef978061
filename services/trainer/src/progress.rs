//! What the training loop and the daemon share: the progress the D-Bus properties and
//! `STATUS=` read, the run/pause/stop switch, the heartbeat the watchdog checks, and the channel
//! of candidates. Its own module so the D-Bus object (`interface.rs`) and the hand-off loop
//! (`handoff.rs`) depend on this small vocabulary, not on the training loop (`train.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use taominer_core::bus::{TrainerState, TrainerStatus};

use crate::checkpoint::Candidate;
use crate::throughput::Throughput;

/// What the D-Bus properties and `STATUS=` show.
#[derive(Debug, Clone)]
pub struct Progress {
    pub state: TrainerState,
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub eval_loss: f64,
    pub best_loss: f64,
    pub tokens_per_second: f64,
    /// Seconds left, or -1 when the run has no end (`max_steps = 0`, `num_epochs = -1`).
    pub eta_seconds: f64,
    pub parameters: u64,
    pub last_error: String,
    pub candidates: u64,
    /// (step, eval loss) of every evaluation, and (step, mean training loss since the one
    /// before) recorded with it: `minerctl plot loss`.
    pub eval_history: Vec<(u64, f64)>,
    pub train_history: Vec<(u64, f64)>,
    /// (step, tokens/s), bounded: the speed panel of `minerctl plot`.
    pub throughput: Throughput,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            state: TrainerState::Starting,
            step: 0,
            epoch: 0,
            loss: f64::NAN,
            eval_loss: f64::NAN,
            best_loss: f64::NAN,
            tokens_per_second: 0.0,
            eta_seconds: -1.0,
            parameters: 0,
            last_error: String::new(),
            candidates: 0,
            eval_history: Vec::new(),
            train_history: Vec::new(),
            throughput: Default::default(),
        }
    }
}

impl Progress {
    /// The D-Bus reply: every figure and the one-line summary.
    pub fn status(&self) -> TrainerStatus {
        TrainerStatus {
            state: self.state,
            line: self.line(),
            step: self.step,
            epoch: self.epoch,
            loss: self.loss,
            eval_loss: self.eval_loss,
            best_loss: self.best_loss,
            tokens_per_second: self.tokens_per_second,
            eta_seconds: self.eta_seconds,
            parameters: self.parameters,
            candidates: self.candidates,
            last_error: self.last_error.clone(),
        }
    }

    /// The one-line `STATUS=` / `Status()` text, e.g. `step 1200 loss 3.41 8.1k tok/s`.
    pub fn line(&self) -> String {
        match self.state {
            TrainerState::Training | TrainerState::Pausing => {
                let mut s = format!(
                    "step {} loss {:.3} {} tok/s",
                    self.step,
                    self.loss,
                    human(self.tokens_per_second)
                );
                if self.best_loss.is_finite() {
                    s.push_str(&format!(" best {:.3}", self.best_loss));
                }
                if self.eta_seconds >= 0.0 {
                    s.push_str(&format!(" eta {}", duration(self.eta_seconds)));
                }
                s
            }
            TrainerState::Failed | TrainerState::Idle => {
                format!("{}: {}", self.state, self.last_error)
            }
            TrainerState::Paused => {
                format!("paused at step {} (best {:.3})", self.step, self.best_loss)
            }
            TrainerState::Finished => format!(
                "finished at step {} (best {:.3})",
                self.step, self.best_loss
            ),
            TrainerState::Starting => self.state.to_string(),
        }
    }
}

fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn duration(secs: f64) -> String {
    let s = secs as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// What the daemon asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Run,
    Pause,
    Stop,
}

/// A candidate announced to the daemon (which emits `CandidateReady` and hands it to the
/// publisher).
#[derive(Debug, Clone)]
pub struct CandidateEvent {
    pub candidate: Candidate,
}

/// State shared between the loop thread and the daemon.
pub struct Shared {
    pub progress: Mutex<Progress>,
    control: Mutex<Control>,
    wake: Condvar,
    /// Bumped whenever the loop makes progress (a micro-batch, an eval batch, a file written).
    pub heartbeat: AtomicU64,
    pub(crate) candidates: tokio::sync::mpsc::UnboundedSender<CandidateEvent>,
}

impl Shared {
    pub fn new(
        autostart: bool,
        candidates: tokio::sync::mpsc::UnboundedSender<CandidateEvent>,
    ) -> Shared {
        let progress = Progress {
            state: if autostart {
                TrainerState::Starting
            } else {
                TrainerState::Paused
            },
            ..Default::default()
        };
        Shared {
            progress: Mutex::new(progress),
            control: Mutex::new(if autostart {
                Control::Run
            } else {
                Control::Pause
            }),
            wake: Condvar::new(),
            heartbeat: AtomicU64::new(0),
            candidates,
        }
    }

    pub fn progress(&self) -> Progress {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Progress)) {
        if let Ok(mut p) = self.progress.lock() {
            f(&mut p);
        }
        self.beat();
    }

    pub fn update_state(&self, state: TrainerState) {
        self.update(|p| p.state = state);
    }

    pub fn beat(&self) {
        self.heartbeat.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_control(&self, c: Control) {
        if let Ok(mut g) = self.control.lock() {
            // A stop is final.
            if *g != Control::Stop {
                *g = c;
            }
        }
        self.wake.notify_all();
    }

    pub fn control(&self) -> Control {
        self.control.lock().map(|g| *g).unwrap_or(Control::Stop)
    }

    /// Blocks while paused (beating, so the watchdog knows the thread is alive); returns the
    /// control that ended the wait.
    pub(crate) fn wait_while_paused(&self) -> Control {
        let Ok(mut g) = self.control.lock() else {
            return Control::Stop;
        };
        if *g == Control::Pause {
            // Paused before the run began (a `Pause` while the daemon was starting): say so, or
            // the state would read `starting` for as long as the pause lasts.
            self.update(|p| {
                if p.state == TrainerState::Starting {
                    p.state = TrainerState::Paused;
                }
            });
        }
        while *g == Control::Pause {
            self.beat();
            g = match self.wake.wait_timeout(g, Duration::from_millis(500)) {
                Ok((g, _)) => g,
                Err(_) => return Control::Stop,
            };
        }
        *g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line() {
        let p = Progress {
            state: TrainerState::Training,
            step: 1200,
            loss: 3.41,
            tokens_per_second: 8100.0,
            ..Default::default()
        };
        assert_eq!(p.line(), "step 1200 loss 3.410 8.1k tok/s");
    }
}
