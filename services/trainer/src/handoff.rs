//! The daemon's async side: hands candidates to the publisher, emits `CandidateReady`, keeps
//! `STATUS=` current and pets the watchdog while the loop thread shows signs of life.
//!
//! Candidates are recorded in `run.json` by the loop before they are announced. Handing one to
//! the publisher is retried until the publisher answers with a job id, which goes into
//! `handoffs.json` (this side is its only writer). A restart hands off whatever `run.json` lists
//! and `handoffs.json` does not. If we died after the publisher accepted but before we wrote the
//! id down, the publisher's `Jobs()` already lists a job for that directory: we adopt it rather
//! than publish twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taominer_core::bus::{self, PublisherProxy};
use taominer_core::runtime::{self, Watchdog};
use taominer_core::store;
use zbus::object_server::SignalEmitter;

use crate::checkpoint::{Candidate, RunIndex};
use crate::error::Result;
use crate::interface::TrainerService;
use crate::progress::{CandidateEvent, Shared};

/// How long the loop may go without a heartbeat before the watchdog is left to fire. Long: a
/// checkpoint of a big model or a slow first step shows no beat for a while.
const STALL_LIMIT: Duration = Duration::from_secs(600);

/// How often `STATUS=` is refreshed while the state stays the same.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// `handoffs.json`: candidate model directory → what the publisher said.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HandOffs {
    /// Accepted: the publisher's job id.
    pub jobs: BTreeMap<PathBuf, String>,
    /// Refused for good (the publisher rejected the input): the reason.
    pub refused: BTreeMap<PathBuf, String>,
}

impl HandOffs {
    pub fn load(state_dir: &Path) -> Result<HandOffs> {
        Ok(store::read_json(&state_dir.join("handoffs.json"))?.unwrap_or_default())
    }

    fn save(&self, state_dir: &Path) -> Result<()> {
        Ok(store::write_json(&state_dir.join("handoffs.json"), self)?)
    }

    pub fn settled(&self, c: &Candidate) -> bool {
        self.jobs.contains_key(&c.path) || self.refused.contains_key(&c.path)
    }
}

/// Runs until shutdown (the caller drops it).
pub async fn run(
    shared: Arc<Shared>,
    conn: zbus::Connection,
    state_dir: PathBuf,
    mut candidates: tokio::sync::mpsc::UnboundedReceiver<CandidateEvent>,
) -> Result<()> {
    let emitter = SignalEmitter::new(&conn, bus::TRAINER_PATH)?.into_owned();
    let publisher = PublisherProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let mut handoffs = HandOffs::load(&state_dir)?;
    let index: RunIndex = store::read_json(&state_dir.join("run.json"))?.unwrap_or_default();
    let mut pending: Vec<Candidate> = index
        .candidates
        .into_iter()
        .filter(|c| !handoffs.settled(c))
        .collect();

    let mut watchdog = Watchdog::from_env();
    let mut seen_beat = shared.heartbeat.load(Ordering::Relaxed);
    let mut last_beat = Instant::now();
    let mut backoff = Duration::from_secs(1);
    let mut next_try = Instant::now();
    let mut last_state = None;
    let mut last_status = Instant::now();
    loop {
        let beat = shared.heartbeat.load(Ordering::Relaxed);
        if beat != seen_beat {
            seen_beat = beat;
            last_beat = Instant::now();
        }
        let progress = shared.progress();
        // A run that is over (or never began) makes no progress, and rightly so.
        let idle = progress.state.is_over();
        if idle || last_beat.elapsed() < STALL_LIMIT {
            watchdog.tick();
        } else {
            tracing::error!("the training loop shows no progress for {STALL_LIMIT:?}; leaving it to the watchdog");
        }
        // STATUS= changes every step; systemd needs it every few seconds at most (and a test's
        // notify socket that nobody drains would fill up and block us).
        if Some(progress.state) != last_state || last_status.elapsed() >= STATUS_EVERY {
            runtime::notify_status(&progress.line());
            last_state = Some(progress.state);
            last_status = Instant::now();
        }

        if !pending.is_empty() && Instant::now() >= next_try {
            match hand_off(&publisher, &mut pending, &mut handoffs, &state_dir).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!("publisher not reachable ({e}); retrying in {backoff:?}");
                    next_try = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }

        tokio::select! {
            Some(ev) = candidates.recv() => {
                let c = &ev.candidate;
                if let Err(e) = TrainerService::candidate_ready(
                    &emitter,
                    &c.path.to_string_lossy(),
                    c.loss,
                    &c.competition,
                ).await {
                    tracing::warn!("cannot emit CandidateReady: {e}");
                }
                pending.push(ev.candidate);
                next_try = Instant::now();
            }
            _ = tokio::time::sleep(watchdog.period().min(Duration::from_secs(1))) => {}
        }
    }
}

/// Hands each pending candidate to the publisher. A transport error stops the round (the
/// caller retries later); a refusal is recorded and not retried.
async fn hand_off(
    publisher: &PublisherProxy<'_>,
    pending: &mut Vec<Candidate>,
    handoffs: &mut HandOffs,
    state_dir: &Path,
) -> std::result::Result<(), zbus::Error> {
    let jobs = publisher.jobs().await?;
    while let Some(c) = pending.first().cloned() {
        let source = c.path.canonicalize().unwrap_or(c.path.clone());
        let existing = jobs
            .iter()
            .find(|j| Path::new(&j.source) == source || Path::new(&j.source) == c.path);
        let outcome = match existing {
            Some(job) => Ok(job.id.clone()),
            None => {
                publisher
                    .publish(&c.path.to_string_lossy(), &c.competition)
                    .await
            }
        };
        match outcome {
            Ok(id) => {
                tracing::info!(JOB_ID = %id, STEP = c.step, "candidate handed to the publisher");
                handoffs.jobs.insert(c.path.clone(), id);
            }
            Err(e) if bus::error_name(&e).is_some_and(|n| n.starts_with("org.taominer.Error.")) => {
                let msg = bus::error_message(&e);
                tracing::error!(STEP = c.step, "the publisher refused the candidate: {msg}");
                handoffs.refused.insert(c.path.clone(), msg);
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = handoffs.save(state_dir) {
            tracing::error!("cannot record the hand-off: {e}");
        }
        pending.remove(0);
    }
    Ok(())
}
