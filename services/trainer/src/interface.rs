//! The trainer's D-Bus object, `org.taominer.Trainer1`: start and pause the run, and read its
//! progress. The loop itself lives in `train.rs`; this only reads [`Shared`] (`progress.rs`) and
//! flips its switch.

use std::sync::Arc;

use taominer_core::bus::{BusError, TrainerState};
use zbus::object_server::SignalEmitter;

use crate::progress::{Control, Shared};

pub struct TrainerService {
    pub shared: Arc<Shared>,
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
            TrainerState::Finished => Err(BusError::InvalidInput(format!(
                "the run finished at step {}; raise trainer.max_steps or trainer.num_epochs and restart miner-trainer to go on",
                p.step
            ))),
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

    /// One line: `step 1200 loss 3.410 8.1k tok/s best 3.380 eta 1h05m`, or the state.
    async fn status(&self) -> String {
        self.shared.progress().line()
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

    #[zbus(property)]
    async fn step(&self) -> u64 {
        self.shared.progress().step
    }

    #[zbus(property)]
    async fn epoch(&self) -> u64 {
        self.shared.progress().epoch
    }

    /// The last step's training loss (NaN before the first step).
    #[zbus(property)]
    async fn loss(&self) -> f64 {
        self.shared.progress().loss
    }

    /// The last evaluation's loss (NaN before the first).
    #[zbus(property)]
    async fn eval_loss(&self) -> f64 {
        self.shared.progress().eval_loss
    }

    /// The best eval loss of the run (NaN before the first evaluation).
    #[zbus(property)]
    async fn best_loss(&self) -> f64 {
        self.shared.progress().best_loss
    }

    #[zbus(property)]
    async fn tokens_per_second(&self) -> f64 {
        self.shared.progress().tokens_per_second
    }

    /// Seconds until the run ends; -1 when it has no end.
    #[zbus(property)]
    async fn eta(&self) -> f64 {
        self.shared.progress().eta_seconds
    }

    #[zbus(property)]
    async fn parameters(&self) -> u64 {
        self.shared.progress().parameters
    }

    /// Candidates recorded in this run.
    #[zbus(property)]
    async fn candidates(&self) -> u64 {
        self.shared.progress().candidates
    }

    /// Why the run failed; empty otherwise.
    #[zbus(property)]
    async fn last_error(&self) -> String {
        self.shared.progress().last_error
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
