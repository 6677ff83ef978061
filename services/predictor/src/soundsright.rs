//! SoundsRight (SN105) on the axon: the miner's side of the subnet's synapses.
//!
//! SoundsRight validators do not send audio to miners. They ask each miner which model it entered
//! (`Denoising_16kHz_Protocol` and its three siblings, one per competition), check the answer
//! against the sha256 the miner committed, then build and benchmark the model themselves; later
//! they send the results back in `FeedbackProtocol`. So this module answers with the configured
//! model's ids, for the one competition this hotkey serves, and keeps every feedback durably for
//! `minerctl feedback`. The same gate as `ImageSynapse` decides who may ask.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use taominer_core::bus::{LiveModel, PredictorState, PublisherProxy};
use taominer_core::config::{SoundsrightConfig, SoundsrightModel};
use taominer_core::daemon::store::{Civil, Job, JobStore};

use crate::error::{Error, Result};

/// The competition synapses (upstream `soundsright/base/protocol.py`) and the competition each
/// one asks about.
pub const COMPETITION_SYNAPSES: [(&str, &str); 4] = [
    ("Denoising_16kHz_Protocol", "DENOISING_16000HZ"),
    ("Dereverberation_16kHz_Protocol", "DEREVERBERATION_16000HZ"),
    ("Denoising_48kHz_Protocol", "DENOISING_48000HZ"),
    ("Dereverberation_48kHz_Protocol", "DEREVERBERATION_48000HZ"),
];

/// Validators' benchmark results for miners.
pub const FEEDBACK_SYNAPSE: &str = "FeedbackProtocol";

/// No SoundsRight synapse sets `required_hash_fields`.
pub const HASH_FIELDS: &[&str] = &[];

/// Events kept per level for the healthcheck API (upstream keeps 250; the journal has them all).
const EVENTS_KEPT: usize = 250;

/// An event's message at most (characters): with [`EVENTS_KEPT`] a level, the ring's bytes are
/// bounded whatever callers send.
const EVENT_CHARS: usize = 200;

/// Bytes of feedback kept on disk at most (as stored), beside the `feedback_keep` count: the
/// oldest records go first when either is reached.
pub const FEEDBACK_STORE_BYTES: u64 = 16 * 1024 * 1024;

/// Feedback signals waiting for the D-Bus side; more are dropped (the records are stored).
pub const FEEDBACK_SIGNALS_QUEUED: usize = 64;

/// The event levels upstream's healthcheck API reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Success = 0,
    Warning = 1,
    Error = 2,
}

/// Every route, for the 404 message.
pub fn synapse_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = COMPETITION_SYNAPSES.iter().map(|(s, _)| *s).collect();
    v.push(FEEDBACK_SYNAPSE);
    v
}

/// One `FeedbackProtocol` as received, kept in `feedback/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// Sorts by arrival (`new_job_id`).
    pub id: String,
    /// Unix seconds.
    pub received: u64,
    /// The validator's hotkey (authenticated by the gate).
    pub validator: String,
    pub competition: Option<String>,
    /// Our model's benchmark results.
    pub data: Value,
    /// The competition's best models and their results.
    pub best_models: Value,
    pub subnet_version: Option<i64>,
}

impl Job for Feedback {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The feedback records on disk, with their sizes in arrival order so that the byte budget is
/// kept without reading them back.
struct FeedbackStore {
    store: JobStore<Feedback>,
    sizes: VecDeque<(String, u64)>,
    bytes: u64,
}

impl FeedbackStore {
    fn open(dir: &Path) -> Result<FeedbackStore> {
        let store = JobStore::<Feedback>::open(dir)?;
        let sizes: VecDeque<(String, u64)> = store
            .all()
            .map(|f| (f.id.clone(), stored_size(f)))
            .collect();
        let bytes = sizes.iter().map(|(_, n)| n).sum();
        Ok(FeedbackStore {
            store,
            sizes,
            bytes,
        })
    }

    /// Stores `record`, then drops the oldest past `keep` records or [`FEEDBACK_STORE_BYTES`].
    fn put(&mut self, record: Feedback, keep: usize) -> Result<()> {
        let size = stored_size(&record);
        let id = record.id.clone();
        self.store.put(record)?;
        self.sizes.push_back((id, size));
        self.bytes += size;
        while self.sizes.len() > keep.max(1)
            || (self.bytes > FEEDBACK_STORE_BYTES && self.sizes.len() > 1)
        {
            let Some((old, n)) = self.sizes.pop_front() else {
                break;
            };
            self.store.remove(&old)?;
            self.bytes -= n;
        }
        Ok(())
    }
}

/// A record's size as stored (its JSON).
fn stored_size(f: &Feedback) -> u64 {
    serde_json::to_vec(f).map_or(0, |v| v.len() as u64)
}

/// The model the axon names, and where that came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub competition: String,
    pub model: SoundsrightModel,
    /// `config` (soundsright.models), or `chain` (the publisher's job whose commitment the chain
    /// holds for our hotkey).
    pub source: &'static str,
}

/// The SoundsRight side of the predictor, shared by the axon, the healthcheck API and D-Bus.
pub struct SoundsRight {
    pub config: SoundsrightConfig,
    served: std::sync::RwLock<Option<Served>>,
    pub hotkey: String,
    feedback: Mutex<FeedbackStore>,
    events: Mutex<[VecDeque<Value>; 3]>,
    /// Events recorded since start, by level (the lists above keep only the latest).
    counts: [AtomicU64; 3],
    /// Wakes the D-Bus side to emit `FeedbackReceived(competition, validator)`.
    arrived: tokio::sync::mpsc::Sender<(String, String)>,
    /// Unix seconds, for `start_time` in the metrics.
    pub started: f64,
}

impl SoundsRight {
    /// Opens the feedback store under `state_dir`.
    pub fn open(
        config: SoundsrightConfig,
        hotkey: String,
        state_dir: &Path,
        arrived: tokio::sync::mpsc::Sender<(String, String)>,
    ) -> Result<SoundsRight> {
        let feedback = FeedbackStore::open(&state_dir.join("feedback"))?;
        let served = config.model().map(|(c, m)| Served {
            competition: c.to_string(),
            model: m.clone(),
            source: "config",
        });
        Ok(SoundsRight {
            served: std::sync::RwLock::new(served),
            config,
            hotkey,
            feedback: Mutex::new(feedback),
            events: Mutex::new(Default::default()),
            counts: Default::default(),
            arrived,
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        })
    }

    /// The model the axon names now.
    pub fn served(&self) -> Option<Served> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Names `next` from now on; returns whether that changed anything.
    pub fn serve(&self, next: Served) -> bool {
        let mut served = self.served.write().unwrap_or_else(|p| p.into_inner());
        if served.as_ref() == Some(&next) {
            return false;
        }
        *served = Some(next);
        true
    }

    /// The competition this hotkey serves, if it has a model.
    /// `serving` once a model is named (configured or committed), else `idle`.
    pub fn state(&self) -> PredictorState {
        if self.served().is_some() {
            PredictorState::Serving
        } else {
            PredictorState::Idle
        }
    }

    pub fn competition(&self) -> Option<String> {
        self.served().map(|s| s.competition)
    }

    /// The answer fields for `synapse` from `caller`: the model ids when it asks about our
    /// competition, `data: null` for the others (as upstream, whose unset models are `None`).
    pub fn answer(
        &self,
        synapse: &str,
        caller: &str,
        request: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        if synapse == FEEDBACK_SYNAPSE {
            return self.store_feedback(caller, request);
        }
        let asked = COMPETITION_SYNAPSES
            .iter()
            .find(|(s, _)| *s == synapse)
            .map(|(_, c)| *c)
            .ok_or_else(|| Error::Invalid(format!("not a SoundsRight synapse: {synapse}")))?;
        let data = match self.served() {
            Some(s) if s.competition == asked => json!({
                "hf_model_namespace": s.model.namespace,
                "hf_model_name": s.model.name,
                "hf_model_revision": s.model.revision,
            }),
            _ => Value::Null,
        };
        let level = if data.is_null() {
            Level::Warning
        } else {
            Level::Success
        };
        self.event(
            level,
            format!("{synapse} from {caller}: answered {}", short(&data)),
        );
        // Upstream sets only `data`; `subnet_version` goes back as the validator sent it.
        let mut out = Map::new();
        out.insert("data".into(), data);
        if let Some(v) = request.get("subnet_version") {
            out.insert("subnet_version".into(), v.clone());
        }
        Ok(out)
    }

    /// Stores a validator's feedback durably (a blocking write: the axon calls this off the
    /// runtime's threads), within the store's count and byte budget.
    fn store_feedback(
        &self,
        caller: &str,
        mut request: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        // Only the subnet's competitions: the id goes to the journal, the events, the store and
        // a D-Bus signal.
        let competition = match request.remove("competition") {
            Some(Value::String(s)) => {
                if !COMPETITION_SYNAPSES.iter().any(|(_, c)| *c == s) {
                    return Err(Error::Invalid(format!(
                        "unknown competition {:?}; one of {}",
                        crate::limits::echo(&s, 40),
                        COMPETITION_SYNAPSES
                            .iter()
                            .map(|(_, c)| *c)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Some(s)
            }
            _ => None,
        };
        let record = Feedback {
            id: taominer_core::daemon::store::new_job_id(),
            received: taominer_core::daemon::store::unix_now(),
            validator: caller.to_string(),
            competition: competition.clone(),
            data: request.remove("data").unwrap_or(Value::Null),
            best_models: request.remove("best_models").unwrap_or(Value::Null),
            subnet_version: request.get("subnet_version").and_then(Value::as_i64),
        };
        self.feedback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(record.clone(), self.config.feedback_keep)?;
        let comp = competition.unwrap_or_default();
        tracing::info!(
            VALIDATOR = caller,
            COMPETITION = comp.as_str(),
            "feedback received from {caller} for {comp}"
        );
        self.event(Level::Success, format!("feedback from {caller} for {comp}"));
        if self
            .arrived
            .try_send((comp.clone(), caller.to_string()))
            .is_err()
        {
            tracing::debug!("FeedbackReceived signal dropped: the D-Bus side is behind");
        }
        // Upstream stores nothing and returns the synapse as received.
        let mut out = Map::new();
        out.insert("competition".into(), json!(record.competition));
        out.insert("data".into(), record.data);
        out.insert("best_models".into(), record.best_models);
        if let Some(v) = record.subnet_version {
            out.insert("subnet_version".into(), json!(v));
        }
        Ok(out)
    }

    /// How many feedback records are kept.
    pub fn feedback_count(&self) -> usize {
        self.feedback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .store
            .len()
    }

    /// Bytes of feedback stored.
    pub fn feedback_bytes(&self) -> u64 {
        self.feedback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bytes
    }

    /// Every stored feedback, newest first.
    pub fn feedback(&self) -> Vec<Feedback> {
        let feedback = self.feedback.lock().unwrap_or_else(|p| p.into_inner());
        feedback.store.all().rev().cloned().collect()
    }

    /// Records an event for `/healthcheck/events` under `success`, `warning` or `error`, as
    /// upstream's logger does, the latest [`EVENTS_KEPT`] of each.
    pub fn event(&self, level: Level, message: String) {
        self.counts[level as usize].fetch_add(1, Ordering::Relaxed);
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let list = &mut events[level as usize];
        if list.len() == EVENTS_KEPT {
            list.pop_front();
        }
        list.push_back(json!({
            "timestamp": Civil::now().python_str(),
            "message": crate::limits::echo(&message, EVENT_CHARS),
        }));
    }

    /// `{"warning": [...], "error": [...], "success": [...]}`, oldest first.
    pub fn events(&self) -> Value {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let list = |l: Level| Value::Array(events[l as usize].iter().cloned().collect());
        json!({
            "warning": list(Level::Warning),
            "error": list(Level::Error),
            "success": list(Level::Success),
        })
    }

    /// How many events of `level` were recorded since start.
    pub fn event_count(&self, level: Level) -> u64 {
        self.counts[level as usize].load(Ordering::Relaxed)
    }

    /// `{competition: {hf_model_namespace, …}}` for the model served.
    pub fn current_models(&self) -> Value {
        let mut m = Map::new();
        if let Some(s) = self.served() {
            m.insert(
                s.competition,
                json!({
                    "hf_model_namespace": s.model.namespace,
                    "hf_model_name": s.model.name,
                    "hf_model_revision": s.model.revision,
                }),
            );
        }
        Value::Object(m)
    }
}

/// Keeps the axon naming the model whose commitment the chain holds for our hotkey.
///
/// Validators hash the ids we answer with and compare them with our commitment, so the ids must
/// be the committed ones: after `minerctl publish` of a new model, or while a newly configured
/// model is still being checked, the chain holds another model than `soundsright.models` names.
/// The publisher owns that fact (`LiveModel`, the newest job the committer reports written) and
/// announces each change (`ModelWentLive`); this reads it once at start and whenever the
/// publisher (re)appears on the bus, and otherwise waits for the signal: nothing is polled.
/// While no job of ours is committed, the configured model is served.
pub async fn follow_live_model(conn: zbus::Connection, miner: Arc<SoundsRight>) {
    loop {
        if let Err(e) = follow_publisher(&conn, &miner).await {
            tracing::warn!(
                "cannot follow the publisher's live model ({}); trying again in {RESUBSCRIBE:?}",
                taominer_core::bus::error_message(&e)
            );
        }
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

/// How long to wait before subscribing again after the bus refused a subscription.
const RESUBSCRIBE: Duration = Duration::from_secs(5);

/// Subscribes to the publisher's `ModelWentLive` and to its owner changes, then serves what
/// they say; returns only if a subscription ends or cannot be made.
async fn follow_publisher(conn: &zbus::Connection, miner: &SoundsRight) -> zbus::Result<()> {
    let publisher = PublisherProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    // Subscribed before the first read, so a change between the two is not missed.
    let mut went_live = publisher.receive_model_went_live().await?;
    let mut owners = publisher.inner().receive_owner_changed().await?;
    match publisher.live_model().await {
        Ok(model) => serve_live(miner, &model),
        // Not running yet: its start shows up as an owner change.
        Err(e) => tracing::debug!(
            "the publisher's live model is not readable yet: {}",
            taominer_core::bus::error_message(&e)
        ),
    }
    loop {
        tokio::select! {
            signal = went_live.next() => {
                let Some(signal) = signal else { return Ok(()) };
                match signal.args() {
                    Ok(args) => serve_live(miner, &args.model),
                    Err(e) => tracing::warn!("malformed ModelWentLive: {e}"),
                }
            }
            owner = owners.next() => {
                match owner {
                    None => return Ok(()),
                    Some(None) => {} // the publisher left; keep serving what it said last
                    Some(Some(_)) => serve_live(miner, &publisher.live_model().await?),
                }
            }
        }
    }
}

/// Switches the axon to the publisher's live model, if there is one and it is new.
fn serve_live(miner: &SoundsRight, live: &LiveModel) {
    let Some(next) = served_from(live) else {
        return;
    };
    let label = format!(
        "{}/{}@{} for {}",
        next.model.namespace, next.model.name, next.model.revision, next.competition
    );
    if miner.serve(next) {
        tracing::info!("serving the committed model {label}");
        miner.event(
            Level::Success,
            format!("serving the committed model {label}"),
        );
    }
}

/// The ids to answer with for a live model; `None` when nothing of ours is committed.
fn served_from(live: &LiveModel) -> Option<Served> {
    if !live.is_some() {
        return None;
    }
    let (namespace, name) = live.repo.split_once('/')?;
    Some(Served {
        competition: live.competition.clone(),
        model: SoundsrightModel {
            namespace: namespace.to_string(),
            name: name.to_string(),
            revision: live.commit.clone(),
        },
        source: "chain",
    })
}

/// A one-line form of an answer for logs.
fn short(data: &Value) -> String {
    match data {
        Value::Null => "no model".into(),
        Value::Object(m) => format!(
            "{}/{}@{}",
            m.get("hf_model_namespace")
                .and_then(Value::as_str)
                .unwrap_or(""),
            m.get("hf_model_name").and_then(Value::as_str).unwrap_or(""),
            m.get("hf_model_revision")
                .and_then(Value::as_str)
                .unwrap_or("")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miner(
        dir: &Path,
        keep: usize,
    ) -> (SoundsRight, tokio::sync::mpsc::Receiver<(String, String)>) {
        let mut config = SoundsrightConfig {
            feedback_keep: keep,
            ..Default::default()
        };
        config.models.insert(
            "DEREVERBERATION_16000HZ".into(),
            SoundsrightModel {
                namespace: "alice".into(),
                name: "dereverb".into(),
                revision: "ab".repeat(20),
            },
        );
        let (tx, rx) = tokio::sync::mpsc::channel(FEEDBACK_SIGNALS_QUEUED);
        (
            SoundsRight::open(config, "5Hot".into(), dir, tx).unwrap(),
            rx,
        )
    }

    #[test]
    fn answers_only_for_the_competition_served() {
        let dir = tempfile::tempdir().unwrap();
        let (sr, _rx) = miner(dir.path(), 10);
        let mut req = Map::new();
        req.insert("subnet_version".into(), json!(2014));
        let ours = sr
            .answer("Dereverberation_16kHz_Protocol", "5V", req)
            .unwrap();
        assert_eq!(ours["data"]["hf_model_name"], "dereverb");
        assert_eq!(ours["data"]["hf_model_revision"], "ab".repeat(20));
        assert_eq!(ours["subnet_version"], json!(2014));
        let other = sr
            .answer("Denoising_48kHz_Protocol", "5V", Map::new())
            .unwrap();
        assert_eq!(other["data"], Value::Null);
        assert!(sr.answer("ImageSynapse", "5V", Map::new()).is_err());
    }

    #[test]
    fn feedback_is_kept_durably_newest_first_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (sr, mut rx) = miner(dir.path(), 2);
        for i in 0..3 {
            let mut req = Map::new();
            req.insert("competition".into(), json!("DEREVERBERATION_16000HZ"));
            req.insert("data".into(), json!({"PESQ": {"average": i}}));
            req.insert("best_models".into(), json!([]));
            req.insert("subnet_version".into(), json!(7));
            sr.answer(FEEDBACK_SYNAPSE, &format!("5V{i}"), req).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(rx.try_recv().unwrap().1, "5V0");
        drop(sr);
        // Reopened: what was kept survived, the oldest is gone.
        let (sr, _rx) = miner(dir.path(), 2);
        let kept = sr.feedback();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].validator, "5V2");
        assert_eq!(kept[1].data["PESQ"]["average"], 1);
        assert_eq!(kept[0].subnet_version, Some(7));
    }

    #[test]
    fn feedback_for_an_unknown_competition_is_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (sr, _rx) = miner(dir.path(), 10);
        let mut req = Map::new();
        req.insert("competition".into(), json!("X".repeat(10_000)));
        let e = sr.answer(FEEDBACK_SYNAPSE, "5V", req).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("unknown competition") && m.len() < 400)
        );
        assert_eq!(sr.feedback_count(), 0);
    }

    #[test]
    fn the_feedback_store_keeps_within_its_byte_budget() {
        // Proves the store cannot grow past FEEDBACK_STORE_BYTES however many validators send
        // large (but admitted) feedback: the oldest go first, and the budget holds after a reopen.
        let dir = tempfile::tempdir().unwrap();
        let (sr, _rx) = miner(dir.path(), 100_000);
        let page = "p".repeat(60 * 1024);
        let n = (FEEDBACK_STORE_BYTES / (60 * 1024)) as usize + 20;
        for i in 0..n {
            let mut req = Map::new();
            req.insert("competition".into(), json!("DEREVERBERATION_16000HZ"));
            req.insert("data".into(), json!({ "blob": page, "i": i }));
            sr.answer(FEEDBACK_SYNAPSE, "5V", req).unwrap();
        }
        assert!(sr.feedback_bytes() <= FEEDBACK_STORE_BYTES);
        let kept = sr.feedback_count();
        assert!(kept < n && kept > 200, "{kept}");
        assert_eq!(sr.feedback()[0].data["i"], json!(n - 1));
        drop(sr);
        let (sr, _rx) = miner(dir.path(), 100_000);
        assert_eq!(sr.feedback_count(), kept);
        assert!(sr.feedback_bytes() <= FEEDBACK_STORE_BYTES);
    }
}
