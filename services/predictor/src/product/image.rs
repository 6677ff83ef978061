//! SN34 BitMind's `ImageSynapse` on the axon: the image is decoded and preprocessed off the
//! runtime (one per decoder at a time), queued by the caller's stake for the ONNX model on the
//! inference thread, and answered with the prediction. The model file is watched and swapped in
//! when it changes (`serving`); until one loads, the axon answers 503 before reading a body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;
use serde::Deserialize;
use taominer_core::bus::PredictorState;
use taominer_core::config::PredictorConfig;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use zbus::object_server::SignalEmitter;

use super::{Admitted, Answering, Product};
use crate::axon::{parse_body, Answer};
use crate::gate::Caller;
use crate::interface::{PredictorService, Shared};
use crate::model::{self, LoadOptions};
use crate::protocol;
use crate::queue::{self, Queue, Refusal};
use crate::serving::{self, Loader, Slot, Stats};

/// The one synapse this product answers.
const SYNAPSES: &[&str] = &[protocol::IMAGE_SYNAPSE];

/// `ImageSynapse`'s request: only the field we use is kept; the rest of the synapse's
/// `model_dump()` (terminal infos, `prediction`) is skipped without being built.
#[derive(Deserialize)]
struct ImageRequest {
    #[serde(default)]
    image: String,
}

/// The image classifier: its model, the queue in front of it and the decoders before that.
pub struct ImageProduct {
    loader: Arc<Loader>,
    slot: Arc<Slot>,
    queue: Arc<Queue>,
    /// Images decoded at once (about one per core): decoding is the costly step an admitted
    /// caller can ask for, and its memory grows with the image.
    decoders: Arc<Semaphore>,
    /// The inference thread, joined at [`Product::stop`].
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// How often the model file is looked at.
    watch_every: Duration,
}

impl ImageProduct {
    /// Loads the configured model (before D-Bus answers, so `Status` is true from the start) and
    /// starts the inference thread; also returns what D-Bus reports on. A refused first model is
    /// not fatal: the axon answers 503 and the watcher takes the next good file.
    pub async fn start(
        cfg: &PredictorConfig,
        stats: Arc<Stats>,
        listen: String,
    ) -> std::io::Result<(Arc<ImageProduct>, Shared)> {
        let model_path = cfg.model_path.clone().unwrap_or_default();
        let slot = Arc::new(Slot::default());
        let loader = Arc::new(Loader::new(
            model::runtime_library(cfg),
            model_path,
            LoadOptions::from_config(cfg),
            slot.clone(),
            stats.clone(),
        ));
        {
            let l = loader.clone();
            let _ = tokio::task::spawn_blocking(move || l.reload()).await;
        }
        let queue = Queue::new(cfg.queue_capacity);
        let worker = {
            let (q, s) = (queue.clone(), slot.clone());
            std::thread::Builder::new()
                .name("inference".into())
                .spawn(move || queue::run_worker(q, s))?
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let image = Arc::new(ImageProduct {
            loader: loader.clone(),
            slot: slot.clone(),
            queue: queue.clone(),
            decoders: Arc::new(Semaphore::new(cores)),
            worker: Mutex::new(Some(worker)),
            watch_every: Duration::from_millis(cfg.watch_interval_ms),
        });
        let shared = Shared {
            product: Some(image.clone()),
            loader: Some(loader),
            slot,
            stats,
            queue: Some(queue),
            listen,
            soundsright: None,
        };
        Ok((image, shared))
    }

    /// Decodes and preprocesses off the runtime (one image per decoder at a time), then queues
    /// for the model.
    async fn predict(&self, request: Admitted) -> Answer {
        let Admitted {
            caller,
            body,
            deadline,
        } = request;
        let request: ImageRequest = match parse_body(&body, protocol::IMAGE_SYNAPSE) {
            Ok(r) => r,
            Err(refused) => return refused,
        };
        drop(body);
        if request.image.is_empty() {
            return Answer::error(StatusCode::BAD_REQUEST, "ImageSynapse.image is empty");
        }
        let Some(model) = self.slot.current() else {
            return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "no model loaded");
        };
        let prep = model.preprocess.clone();
        drop(model);
        let decoder =
            match tokio::time::timeout_at(deadline.into(), self.decoders.clone().acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => {
                    return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                }
                Err(_) => {
                    return Answer::error(
                        StatusCode::REQUEST_TIMEOUT,
                        "Timeout waiting for a decoder",
                    )
                }
            };
        let image = request.image;
        let decoded = tokio::task::spawn_blocking(move || {
            let t = prep.from_base64(&image);
            drop(decoder);
            t
        })
        .await;
        let tensor = match decoded {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Answer::error(StatusCode::BAD_REQUEST, e.to_string()),
            Err(e) => return Answer::internal("image decoding", e),
        };
        let rx = self.queue.submit(caller.priority, tensor, deadline);
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(Ok(p))) => Answer::ok(protocol::image_synapse_fields(p)),
            Ok(Ok(Err(Refusal::Overloaded))) => Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service at capacity; request shed",
            ),
            Ok(Ok(Err(Refusal::TimedOut))) | Err(_) => {
                Answer::error(StatusCode::REQUEST_TIMEOUT, "Timeout waiting for the model")
            }
            Ok(Ok(Err(Refusal::Failed(e)))) => Answer::internal("inference", e),
            Ok(Err(_)) => Answer::error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        }
    }
}

impl Product for ImageProduct {
    fn synapses(&self) -> &[&'static str] {
        SYNAPSES
    }

    fn hash_fields(&self) -> &'static [&'static str] {
        protocol::IMAGE_SYNAPSE_HASH_FIELDS
    }

    /// `predictor.max_body_bytes` is sized for `ImageSynapse`'s images.
    fn max_body(&self, configured: u64) -> u64 {
        configured
    }

    fn state(&self) -> PredictorState {
        match self.slot.current() {
            Some(_) => PredictorState::Serving,
            None => PredictorState::NoModel,
        }
    }

    fn summary(&self, listen: &str, counts: &str) -> String {
        match self.slot.current() {
            Some(m) => format!(
                "serving {} ({}) on {listen}; {counts}",
                m.path.display(),
                m.version
            ),
            None => format!(
                "no model: {} ({}); axon on {listen} answers 503",
                self.loader.path.display(),
                self.loader.stats.last_reload_error()
            ),
        }
    }

    /// A model to run and a queue place for the caller's stake.
    fn room(&self, caller: &Caller) -> Result<(), Answer> {
        if self.slot.current().is_none() {
            return Err(Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no model loaded",
            ));
        }
        if self.queue.is_full_for(caller.priority) {
            return Err(Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service at capacity; request shed",
            ));
        }
        Ok(())
    }

    fn answer<'a>(&'a self, _synapse: &'a str, request: Admitted) -> Answering<'a> {
        Box::pin(self.predict(request))
    }

    /// Watches the model file, emitting `ModelSwapped(path)` after each swap.
    fn follow(
        self: Arc<Self>,
        _conn: &zbus::Connection,
        emitter: SignalEmitter<'static>,
        tasks: &mut JoinSet<()>,
    ) {
        let path = self.loader.path.display().to_string();
        tasks.spawn(serving::watch(
            self.loader.clone(),
            self.watch_every,
            move |_version| {
                let (emitter, path) = (emitter.clone(), path.clone());
                async move {
                    if let Err(e) = PredictorService::model_swapped(&emitter, &path).await {
                        tracing::warn!("cannot emit ModelSwapped: {e}");
                    }
                }
            },
        ));
    }

    /// Closes the queue (waiting requests are answered 503) and joins the inference thread.
    fn stop(&self) {
        self.queue.close();
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = worker {
            let _ = worker.join();
        }
    }
}
