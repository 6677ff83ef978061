//! The predictor's D-Bus object, `org.taominer.Predictor1` (docs/dbus.md).
//!
//! `Reload()` loads the model file now (off the bus thread) and answers once it serves or was
//! refused; the watcher does the same on its own when the file changes. Both emit
//! `ModelSwapped(path)` after a swap.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use taominer_core::bus::{BusError, PredictorState, PredictorStatus};
use zbus::object_server::SignalEmitter;

use crate::product::Product;
use crate::queue::Queue;
use crate::serving::{Loader, Slot, Stats, Swap};
use crate::soundsright::SoundsRight;

/// What the interface reports on.
pub struct Shared {
    /// The product served; `None` when nothing is configured.
    pub product: Option<Arc<dyn Product>>,
    /// The image classifier's loader (for `Reload()`); `None` for other products.
    pub loader: Option<Arc<Loader>>,
    pub slot: Arc<Slot>,
    pub stats: Arc<Stats>,
    pub queue: Option<Arc<Queue>>,
    /// Where the axon listens, for the status line.
    pub listen: String,
    /// The SoundsRight miner, when the profile is `soundsright`.
    pub soundsright: Option<Arc<SoundsRight>>,
}

/// Status line when no model is configured.
pub const NOT_CONFIGURED: &str = "idle: no model configured; set predictor.model_path";

impl Shared {
    /// The product's state; `idle` when there is none.
    pub fn state(&self) -> PredictorState {
        self.product
            .as_ref()
            .map_or(PredictorState::Idle, |p| p.state())
    }

    /// The figures `Status()` answers with.
    pub fn status(&self) -> PredictorStatus {
        let current = self.slot.current();
        PredictorStatus {
            state: self.state(),
            line: self.summary(),
            model_path: current
                .as_ref()
                .map(|m| m.path.display().to_string())
                .unwrap_or_default(),
            model_version: current.map(|m| m.version.clone()).unwrap_or_default(),
            served: self.stats.served.load(Ordering::Relaxed),
            rejected: self.stats.rejected.load(Ordering::Relaxed),
            turned_away: self.stats.turned_away.load(Ordering::Relaxed),
            last_reload_error: self.stats.last_reload_error(),
            queued: self.queue.as_ref().map_or(0, |q| q.len() as u64),
        }
    }

    /// One line for `minerctl status` and `STATUS=`.
    pub fn summary(&self) -> String {
        let Some(product) = &self.product else {
            return NOT_CONFIGURED.to_string();
        };
        let counts = format!(
            "served {} rejected {}",
            self.stats.served.load(Ordering::Relaxed),
            self.stats.rejected.load(Ordering::Relaxed)
        );
        product.summary(&self.listen, &counts)
    }
}

pub struct PredictorService {
    pub shared: Arc<Shared>,
}

#[zbus::interface(name = "org.taominer.Predictor1")]
impl PredictorService {
    /// Loads the model file now; an error says why it was refused (the old model keeps serving).
    async fn reload(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), BusError> {
        let Some(loader) = self.shared.loader.clone() else {
            // Like the trainer without data: nothing to do until the configuration names a model.
            return Err(BusError::InvalidInput(NOT_CONFIGURED.into()));
        };
        let outcome = tokio::task::spawn_blocking(move || loader.reload())
            .await
            .map_err(|e| BusError::Failed(format!("loader stopped: {e}")))?;
        match outcome {
            Ok(Swap::Swapped { .. }) => {
                if let Some(l) = &self.shared.loader {
                    let path = l.path.display().to_string();
                    if let Err(e) = Self::model_swapped(&emitter, &path).await {
                        tracing::warn!("cannot emit ModelSwapped: {e}");
                    }
                }
                Ok(())
            }
            Ok(Swap::Unchanged) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every figure at once: one consistent reading for `minerctl`.
    async fn status(&self) -> PredictorStatus {
        self.shared.status()
    }

    /// `idle` (no model configured), `no-model` (configured, none loaded yet) or `serving`:
    /// a property, so a watcher can read it alone.
    #[zbus(property)]
    async fn state(&self) -> PredictorState {
        self.shared.state()
    }

    /// SoundsRight validators' feedback, newest first, as a JSON array of
    /// `{id, received, validator, competition, data, best_models, subnet_version}`.
    async fn feedback(&self) -> Result<String, BusError> {
        let Some(sr) = &self.shared.soundsright else {
            return Err(BusError::InvalidInput(
                "feedback is a SoundsRight thing: this predictor runs another profile".into(),
            ));
        };
        serde_json::to_string(&sr.feedback()).map_err(|e| BusError::Failed(e.to_string()))
    }

    #[zbus(signal)]
    pub async fn model_swapped(emitter: &SignalEmitter<'_>, path: &str) -> zbus::Result<()>;

    /// A SoundsRight validator's feedback was stored.
    #[zbus(signal)]
    pub async fn feedback_received(
        emitter: &SignalEmitter<'_>,
        competition: &str,
        validator: &str,
    ) -> zbus::Result<()>;
}
