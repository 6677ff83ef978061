//! The predictor's D-Bus object, `org.taominer.Predictor1`.
//!
//! ONNX serving on the axon is its own issue ("Predictor"). Until it lands, the daemon owns its
//! name and reports that no model is loaded; `Reload` answers
//! `org.taominer.Error.NotImplemented` rather than pretending to load one.

use taominer_core::bus::BusError;
use zbus::object_server::SignalEmitter;

pub struct PredictorService;

/// What `Status` and `STATUS=` say until serving exists.
pub const STATUS: &str = "idle: no model loaded; ONNX serving is not built yet (issue: Predictor)";

#[zbus::interface(name = "org.taominer.Predictor1")]
impl PredictorService {
    async fn reload(&self) -> Result<(), BusError> {
        Err(BusError::NotImplemented(
            "ONNX serving is not built yet (issue: Predictor)".into(),
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
    async fn model_path(&self) -> String {
        String::new()
    }

    #[zbus(property)]
    async fn model_version(&self) -> String {
        String::new()
    }

    #[zbus(property)]
    async fn served(&self) -> u64 {
        0
    }

    #[zbus(property)]
    async fn rejected(&self) -> u64 {
        0
    }

    #[zbus(signal)]
    pub async fn model_swapped(emitter: &SignalEmitter<'_>, path: &str) -> zbus::Result<()>;
}
