//! The daemon's async side: hands candidates to the publisher, emits `CandidateReady`, keeps
//! `STATUS=` current and pets the watchdog while the loop thread shows signs of life.
//!
//! Candidates are recorded in `run.json` by the loop before they are announced. Handing one to
//! the publisher is retried until the publisher answers with a job id, which goes into
//! `handoffs.json` (this side is its only writer). A restart hands off whatever `run.json` lists
//! and `handoffs.json` does not. Every `Publish` carries the candidate's key (`<run id>/<checkpoint>`):
//! if we died after the publisher accepted but before we wrote the id down, the same key returns
//! the job it made rather than a second one.
//!
//! `Publish` does not copy the directory: the publisher stages it later, behind any upload in
//! progress. So this side also watches each handed-off job until the publisher is past
//! `received` with it, and records that in `handoffs.json` (`released`); only then may the loop
//! prune the candidate's checkpoint ([`crate::checkpoint::Checkpoints::prune`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taominer_core::bus::{self, JobState, PublishJobInfo, PublisherProxy};
use taominer_core::daemon::backoff::Backoff;
use taominer_core::daemon::runtime::{self, Watchdog};
use taominer_core::daemon::store;
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

/// Re-offering candidates to a publisher that does not answer: from 1 s, doubling, up to a
/// minute (a local peer: exact, no jitter).
const HANDOFF_RETRY_FIRST: Duration = Duration::from_secs(1);
const HANDOFF_RETRY_MAX: Duration = Duration::from_secs(60);

/// How often the publisher's jobs are read while a handed-off candidate waits to be staged.
const STAGED_POLL: Duration = Duration::from_secs(2);

/// `handoffs.json`: candidate model directory → what the publisher said.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HandOffs {
    /// Accepted: the publisher's job id.
    pub jobs: BTreeMap<PathBuf, String>,
    /// Refused for good (the publisher rejected the input): the reason.
    pub refused: BTreeMap<PathBuf, String>,
    /// Accepted candidates whose job the publisher has been seen past `received` with (staged,
    /// or ended): it no longer reads the directory, so the checkpoint may be pruned.
    #[serde(default)]
    pub released: BTreeSet<PathBuf>,
    /// Job ids already reported missing from `Jobs()` (said once, not every poll).
    #[serde(skip)]
    missing: BTreeSet<String>,
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

    /// Whether the publisher will never read the candidate's directory again: it refused it, or
    /// its job is past `received`.
    pub fn released(&self, c: &Candidate) -> bool {
        self.refused.contains_key(&c.path) || self.released.contains(&c.path)
    }

    /// Whether an accepted job still waits to be staged.
    fn awaiting_staging(&self) -> bool {
        self.jobs.keys().any(|p| !self.released.contains(p))
    }

    /// Records every accepted job that `jobs` (the publisher's `Jobs()`) shows past `received`.
    /// Returns whether anything changed. A job the publisher does not list stays unreleased:
    /// its directory is kept rather than guessed unneeded.
    fn note_released(&mut self, jobs: &[PublishJobInfo]) -> bool {
        let mut changed = false;
        for (path, id) in &self.jobs {
            if self.released.contains(path) {
                continue;
            }
            match jobs.iter().find(|j| &j.id == id) {
                Some(j) if past_received(j.state) => {
                    tracing::info!(JOB_ID = %id, STATE = %j.state, "the publisher is done reading the candidate; its checkpoint may be pruned");
                    self.released.insert(path.clone());
                    changed = true;
                }
                Some(_) => {}
                None => {
                    if self.missing.insert(id.clone()) {
                        tracing::warn!(JOB_ID = %id, "the publisher lists no such job; keeping {}", path.display());
                    }
                }
            }
        }
        changed
    }
}

/// Whether a publish job no longer needs its source directory: staged (or later), or ended
/// (`rejected`, `failed`: nothing reads it again). Only `received` still does.
fn past_received(state: JobState) -> bool {
    state != JobState::Received
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
    let mut backoff = Backoff::new(HANDOFF_RETRY_FIRST, HANDOFF_RETRY_MAX);
    let mut next_try = Instant::now();
    let mut next_poll = Instant::now();
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
                Ok(()) => backoff.reset(),
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!("publisher not reachable ({e}); retrying in {delay:?}");
                    next_try = Instant::now() + delay;
                }
            }
        }

        if handoffs.awaiting_staging() && Instant::now() >= next_poll {
            next_poll = Instant::now() + STAGED_POLL;
            match publisher.jobs().await {
                Ok(jobs) => {
                    if handoffs.note_released(&jobs) {
                        if let Err(e) = handoffs.save(&state_dir) {
                            tracing::error!("cannot record the staged candidates: {e}");
                        }
                    }
                }
                // Unreachable publishers are reported by the hand-off above; kept meanwhile.
                Err(e) => tracing::debug!("cannot read the publisher's jobs: {e}"),
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

/// Hands each pending candidate to the publisher, keyed so that a repeat returns the job the
/// first call made. A transport error stops the round (the caller retries later); a refusal is
/// recorded and not retried.
async fn hand_off(
    publisher: &PublisherProxy<'_>,
    pending: &mut Vec<Candidate>,
    handoffs: &mut HandOffs,
    state_dir: &Path,
) -> std::result::Result<(), zbus::Error> {
    while let Some(c) = pending.first().cloned() {
        let outcome = publisher
            .publish(&c.path.to_string_lossy(), &c.competition, &c.publish_key())
            .await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, state: JobState) -> PublishJobInfo {
        PublishJobInfo {
            id: id.into(),
            state,
            source: String::new(),
            competition: String::new(),
            repo: String::new(),
            commit: String::new(),
            model_hash: String::new(),
            secure_hash: String::new(),
            commitment: String::new(),
            block: 0,
            error: String::new(),
            created: 0,
            uploaded_bytes: 0,
            total_bytes: 0,
        }
    }

    /// Proves: a handed-off candidate is released only once the publisher shows its job past
    /// `received`, and a job the publisher does not list keeps its directory.
    #[test]
    fn candidates_are_released_once_their_job_is_staged() {
        let mut h = HandOffs::default();
        h.jobs.insert("/c/a".into(), "ja".into());
        h.jobs.insert("/c/b".into(), "jb".into());
        h.jobs.insert("/c/gone".into(), "jx".into());
        assert!(!h.note_released(&[job("ja", JobState::Received), job("jb", JobState::Received)]));
        assert!(h.released.is_empty());
        assert!(h.note_released(&[job("ja", JobState::Staged), job("jb", JobState::Received)]));
        assert_eq!(h.released.iter().collect::<Vec<_>>(), [Path::new("/c/a")]);
        assert!(h.note_released(&[job("ja", JobState::Committed), job("jb", JobState::Failed)]));
        assert!(h.released.contains(Path::new("/c/b")));
        assert!(!h.released.contains(Path::new("/c/gone")));
        assert!(h.awaiting_staging(), "the unlisted job still waits");
    }
}
