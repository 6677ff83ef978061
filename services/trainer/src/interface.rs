//! The trainer's D-Bus object, `org.taominer.Trainer1`.
//!
//! Training itself is its own issue ("Trainer"). Until it lands, the daemon owns its name and
//! answers `Status` and its properties truthfully (idle, nothing trained), and `Start`/`Pause`
//! answer `org.taominer.Error.NotImplemented` rather than pretending to train.

use taominer_core::bus::BusError;
use zbus::object_server::SignalEmitter;

pub struct TrainerService;

/// What `Status` and `STATUS=` say until training exists.
pub const STATUS: &str = "idle: training is not built yet (issue: Trainer)";

#[zbus::interface(name = "org.taominer.Trainer1")]
impl TrainerService {
    async fn start(&self) -> Result<(), BusError> {
        Err(BusError::NotImplemented(
            "training is not built yet (issue: Trainer); publish a model trained elsewhere with `minerctl publish DIR`".into(),
        ))
    }

    async fn pause(&self) -> Result<(), BusError> {
        Err(BusError::NotImplemented(
            "training is not built yet (issue: Trainer)".into(),
        ))
    }

    async fn status(&self) -> String {
        STATUS.into()
    }

    #[zbus(property)]
    async fn state(&self) -> String {
        "idle".into()
    }

    #[zbus(property)]
    async fn step(&self) -> u64 {
        0
    }

    /// No loss yet: NaN, not a made-up number.
    #[zbus(property)]
    async fn loss(&self) -> f64 {
        f64::NAN
    }

    #[zbus(property)]
    async fn best_loss(&self) -> f64 {
        f64::NAN
    }

    #[zbus(property)]
    async fn tokens_per_second(&self) -> f64 {
        0.0
    }

    #[zbus(signal)]
    pub async fn candidate_ready(
        emitter: &SignalEmitter<'_>,
        path: &str,
        avg_loss: f64,
        competition: &str,
    ) -> zbus::Result<()>;
}
