//! SN105 SoundsRight on the axon: the competition synapses answer with the model ids this hotkey
//! entered, `FeedbackProtocol` stores a validator's results (both in `crate::soundsright`); the
//! model named follows the publisher's live model, and upstream's healthcheck API runs beside.
//! Its bodies are small, so it takes far less than `predictor.max_body_bytes`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use taominer_core::bus::PredictorState;
use taominer_core::config::SoundsrightConfig;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use zbus::object_server::SignalEmitter;

use super::{Admitted, Answering, Product};
use crate::axon::{self, parse_body, Answer};
use crate::healthcheck::{self, Health};
use crate::interface::{PredictorService, Shared};
use crate::serving::{Slot, Stats};
use crate::soundsright::{self, SoundsRight};

/// Bodies of the SoundsRight synapses at most: they carry a few ids or a page of benchmark
/// results, never megabytes (`max_body_bytes` is sized for `ImageSynapse`'s images).
const SOUNDSRIGHT_MAX_BODY: u64 = 64 * 1024;

/// A SoundsRight synapse's request fields (the competition synapses send only
/// `subnet_version`; `FeedbackProtocol` the rest).
#[derive(Deserialize)]
struct SoundsRightRequest {
    #[serde(default)]
    competition: Option<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    best_models: Value,
    #[serde(default)]
    subnet_version: Option<i64>,
}

impl SoundsRightRequest {
    fn into_fields(self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(c) = self.competition {
            m.insert("competition".into(), Value::String(c));
        }
        m.insert("data".into(), self.data);
        m.insert("best_models".into(), self.best_models);
        if let Some(v) = self.subnet_version {
            m.insert("subnet_version".into(), v.into());
        }
        m
    }
}

/// SoundsRight's synapses, as the axon serves them.
pub struct SoundsRightProduct {
    miner: Arc<SoundsRight>,
    synapses: Vec<&'static str>,
    /// Stored feedback, to be announced on D-Bus; taken by [`Product::follow`].
    feedback: Mutex<Option<mpsc::Receiver<(String, String)>>>,
}

impl SoundsRightProduct {
    /// Opens the feedback store under `state_dir` and starts the healthcheck API (into `tasks`)
    /// when `soundsright.healthcheck_listen` is set; also returns what D-Bus reports on.
    pub async fn start(
        config: SoundsrightConfig,
        hotkey: &str,
        state_dir: &Path,
        stats: Arc<Stats>,
        listen: String,
        tasks: &mut JoinSet<()>,
    ) -> anyhow::Result<(Arc<SoundsRightProduct>, Shared)> {
        let (arrived, feedback) = mpsc::channel(soundsright::FEEDBACK_SIGNALS_QUEUED);
        let healthcheck_listen = config.healthcheck_listen.clone();
        let miner = Arc::new(
            SoundsRight::open(config, hotkey.to_string(), state_dir, arrived)
                .context("cannot open the feedback store")?,
        );
        if let Some(listen) = &healthcheck_listen {
            let health = Arc::new(Health {
                miner: miner.clone(),
                stats: stats.clone(),
            });
            let listener = axon::bind(listen, "soundsright.healthcheck_listen").await?;
            tracing::info!("healthcheck API on {}", listener.local_addr()?);
            tasks.spawn(healthcheck::serve(listener, health));
        }
        let product = Arc::new(SoundsRightProduct {
            miner: miner.clone(),
            synapses: soundsright::synapse_names(),
            feedback: Mutex::new(Some(feedback)),
        });
        let shared = Shared {
            product: Some(product.clone()),
            loader: None,
            slot: Arc::new(Slot::default()),
            stats,
            queue: None,
            listen,
            soundsright: Some(miner),
        };
        Ok((product, shared))
    }

    /// The model ids, or the feedback stored (its disk write off the runtime's threads).
    async fn answer_synapse(&self, synapse: &str, request: Admitted) -> Answer {
        let fields = match parse_body::<SoundsRightRequest>(&request.body, synapse) {
            Ok(r) => r.into_fields(),
            Err(refused) => return refused,
        };
        let (miner, name, hotkey) = (
            self.miner.clone(),
            synapse.to_string(),
            request.caller.hotkey.clone(),
        );
        match tokio::task::spawn_blocking(move || miner.answer(&name, &hotkey, fields)).await {
            Ok(Ok(fields)) => Answer::ok(fields),
            Ok(Err(crate::error::Error::Invalid(why))) => {
                Answer::error(StatusCode::BAD_REQUEST, why)
            }
            Ok(Err(e)) => Answer::internal("SoundsRight answer", e),
            Err(e) => Answer::internal("SoundsRight answer", e),
        }
    }
}

impl Product for SoundsRightProduct {
    fn synapses(&self) -> &[&'static str] {
        &self.synapses
    }

    fn hash_fields(&self) -> &'static [&'static str] {
        soundsright::HASH_FIELDS
    }

    fn max_body(&self, configured: u64) -> u64 {
        configured.min(SOUNDSRIGHT_MAX_BODY)
    }

    fn state(&self) -> PredictorState {
        self.miner.state()
    }

    fn summary(&self, listen: &str, counts: &str) -> String {
        let feedback = self.miner.feedback_count();
        match self.miner.served() {
            Some(s) => format!(
                "serving {}/{}@{} for {} ({}) on {listen}; {counts}; {feedback} feedback",
                s.model.namespace,
                s.model.name,
                &s.model.revision[..s.model.revision.len().min(12)],
                s.competition,
                s.source,
            ),
            None => format!(
                "idle: no model configured (set soundsright.models.<COMPETITION>); axon on {listen} answers data = null; {counts}; {feedback} feedback"
            ),
        }
    }

    fn answer<'a>(&'a self, synapse: &'a str, request: Admitted) -> Answering<'a> {
        Box::pin(self.answer_synapse(synapse, request))
    }

    /// Follows the publisher's live model, and emits `FeedbackReceived` for each feedback
    /// stored.
    fn follow(
        self: Arc<Self>,
        conn: &zbus::Connection,
        emitter: SignalEmitter<'static>,
        tasks: &mut JoinSet<()>,
    ) {
        tasks.spawn(soundsright::follow_live_model(
            conn.clone(),
            self.miner.clone(),
        ));
        let feedback = self
            .feedback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut feedback) = feedback {
            tasks.spawn(async move {
                while let Some((competition, validator)) = feedback.recv().await {
                    if let Err(e) =
                        PredictorService::feedback_received(&emitter, &competition, &validator)
                            .await
                    {
                        tracing::warn!("cannot emit FeedbackReceived: {e}");
                    }
                }
            });
        }
    }
}
