//! The trainer's D-Bus object, `org.taominer.Trainer1`: start and pause the run, and read its
//! progress. The loop itself lives in `train.rs`; this only reads [`Shared`] (`progress.rs`) and
//! flips its switch.

use std::sync::Arc;

use taominer_core::bus::{BusError, TrainerState, TrainerStatus};
use taominer_core::config::Engine;
use zbus::object_server::SignalEmitter;

use crate::progress::{Control, Shared};

pub struct TrainerService {
    pub shared: Arc<Shared>,
    /// Which engine runs: what ends a run, and so what to change to go on, differs.
    pub engine: Engine,
}

/// Why `Start` is refused after the run finished, and what the operator changes to go on.
fn finished_reason(engine: Engine, step: u64) -> String {
    match engine {
        Engine::Candle => format!(
            "the run finished at step {step}; raise trainer.max_steps or trainer.num_epochs and restart miner-trainer to go on"
        ),
        // The engine decides when it is done (its own step limit, e.g. the recipe's
        // --max-steps); a restarted daemon starts it again, resuming its newest checkpoint.
        Engine::External => format!(
            "the external engine exited 0 at step {step}: its run is over; raise its own step limit in trainer.external.command (the recipe's --max-steps) and restart miner-trainer to resume it"
        ),
    }
}

#[zbus::interface(name = "org.taominer.Trainer1")]
impl TrainerService {
    /// Starts (or resumes) training. Refused, with the reason, when the run failed or finished.
    async fn start(&self) -> Result<(), BusError> {
        let p = self.shared.progress();
        match p.state {
            TrainerState::Failed => Err(BusError::Unavailable(format!(
                "the run failed: {}; fix it and restart miner-trainer",
                p.last_error
            ))),
            TrainerState::Idle => Err(BusError::InvalidInput(p.last_error)),
            TrainerState::Finished => {
                Err(BusError::InvalidInput(finished_reason(self.engine, p.step)))
            }
            _ => {
                self.shared.set_control(Control::Run);
                tracing::info!("start requested");
                Ok(())
            }
        }
    }

    /// Pauses after the current step, with a checkpoint, so a paused trainer loses nothing.
    async fn pause(&self) -> Result<(), BusError> {
        let p = self.shared.progress();
        if p.state.is_over() {
            return Err(BusError::InvalidInput(format!(
                "nothing to pause: the run is {}",
                p.state
            )));
        }
        self.shared.set_control(Control::Pause);
        if p.state == TrainerState::Training {
            self.shared.update_state(TrainerState::Pausing);
        }
        tracing::info!("pause requested");
        Ok(())
    }

    /// Every figure at once, with the one-line summary (`minerctl status`, `minerctl train
    /// status`, `minerctl top`).
    async fn status(&self) -> TrainerStatus {
        self.shared.progress().status()
    }

    /// The loss history: (step, mean training loss since the previous evaluation) and
    /// (step, eval loss), one entry per evaluation, oldest first.
    async fn history(&self) -> (Vec<(u64, f64)>, Vec<(u64, f64)>) {
        let p = self.shared.progress();
        (p.train_history, p.eval_history)
    }

    /// The training speed: (step, tokens/s), oldest first, at most
    /// [`crate::throughput::CAPACITY`] points evenly spread over the run (this process's).
    async fn throughput(&self) -> Vec<(u64, f64)> {
        self.shared.progress().throughput.points().to_vec()
    }

    /// `idle` (nothing configured to train), `starting`, `training`, `pausing`, `paused`,
    /// `finished` or `failed`.
    #[zbus(property)]
    async fn state(&self) -> TrainerState {
        self.shared.progress().state
    }

    /// A checkpoint's model directory beat the threshold (and the last candidate); the
    /// trainer hands it to the publisher itself, durably. The signal is for watchers.
    #[zbus(signal)]
    pub async fn candidate_ready(
        emitter: &SignalEmitter<'_>,
        path: &str,
        avg_loss: f64,
        competition: &str,
    ) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves: a refused `Start` after a finished run names what ends that engine's run: the
    /// built-in one's `trainer.max_steps`, the external one's own step limit in its command
    /// (never `trainer.max_steps`, which the external engine does not read).
    #[test]
    fn the_finished_reason_fits_the_engine() {
        let candle = finished_reason(Engine::Candle, 150);
        assert!(candle.contains("step 150") && candle.contains("trainer.max_steps"));
        let external = finished_reason(Engine::External, 16);
        assert!(external.contains("step 16"), "{external}");
        assert!(external.contains("trainer.external.command"), "{external}");
        assert!(!external.contains("trainer.max_steps"), "{external}");
    }
}
