//! The publisher's worker: carries each job from `received` to `hashed`, hands hashed jobs to
//! the committer, and makes repositories public once their commitment is written.
//!
//! One loop, top to bottom each turn:
//! 1. pet the watchdog (only while the step in progress makes progress, so a hang is caught);
//! 2. advance every job that is not yet hashed, oldest first: stage and pre-flight it, then
//!    (online) upload it and hash the committed revision as validators will; emit `Published`;
//! 3. offer every `hashed`/`handed-off` job to the committer with `Commit(job_id, commitment)`,
//!    which is idempotent, and record what it answers;
//! 4. make committed repositories public when `publisher.make_public_after_commit` says so;
//! 5. sleep until woken (new job, `Committed` signal) or the next retry is due.
//!
//! A committer that is down is retried with exponential backoff; nothing is lost meanwhile
//! because the job stays on disk in its last state.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use taominer_core::bus::{self, CommitJobState, CommitterProxy};
use taominer_core::daemon::backoff::Backoff;
use taominer_core::daemon::fault::crash_point;
use taominer_core::daemon::runtime::Watchdog;
use taominer_core::formats::{hash, model_id};
use tokio::time::Instant;
use zbus::object_server::SignalEmitter;

use crate::error::{Error, Result};
use crate::hub::upload;
use crate::jobs::{JobState, PublishJob, Shared, Snapshot};
use crate::ports::{CommitSink, HandOffError, Signals};
use crate::{online, staging};

/// Runs the worker until the process is told to stop: wires the committer's proxy, its
/// `Committed` signal and our signal emitter to [`work`].
pub async fn run(shared: Arc<Shared>, conn: zbus::Connection, watchdog: Watchdog) -> Result<()> {
    let committer = CommitterProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    // A Committed signal means a handed-off job may be done: look now rather than at the next retry.
    let mut committed = committer.receive_committed().await?;
    let waker = shared.clone();
    tokio::spawn(async move {
        while committed.next().await.is_some() {
            waker.wake.notify_one();
        }
    });
    let emitter = SignalEmitter::new(&conn, bus::PUBLISHER_PATH)?.into_owned();
    work(shared, &committer, &emitter, watchdog).await;
    Ok(())
}

/// The worker's loop (see the module documentation); it never returns. The Hub is
/// `shared.hub()`, the committer `sink`: the unit tests run this very loop with fakes of both.
async fn work(
    shared: Arc<Shared>,
    sink: &dyn CommitSink,
    signals: &dyn Signals,
    mut watchdog: Watchdog,
) {
    // Exact, not jittered: the committer is a local peer on the same bus, nobody competes for it.
    let mut backoff = Backoff::new(shared.config.retry.initial(), shared.config.retry.max());
    // tokio's clock (the real monotonic clock in the daemon) so that a test can pause it.
    let mut next_handoff = Instant::now();
    let mut woken = true;
    loop {
        watchdog.tick();
        advance_all(&shared, signals, &mut watchdog).await;
        if woken || Instant::now() >= next_handoff {
            match hand_off_all(&shared, sink, signals).await {
                HandOff::Idle => {
                    backoff.reset();
                    next_handoff = Instant::now() + backoff.max();
                }
                HandOff::Progress => {
                    backoff.reset();
                    next_handoff = Instant::now() + backoff.initial();
                }
                HandOff::Waiting => next_handoff = Instant::now() + backoff.next_delay(),
            }
            make_public_all(&shared, &mut watchdog).await;
        }
        let sleep_until = next_handoff.min(Instant::now() + watchdog.period());
        woken = tokio::select! {
            _ = shared.wake.notified() => true,
            _ = tokio::time::sleep_until(sleep_until) => false,
        };
        taominer_core::daemon::runtime::notify_status(&shared.summary());
    }
}

/// Runs one step of a job on its own task, petting the watchdog while `alive` keeps moving
/// (bytes copied, hashed or sent; retries waiting), so a slow step is not mistaken for a hang.
async fn watched<T: Send + 'static>(
    watchdog: &mut Watchdog,
    alive: &Arc<AtomicU64>,
    step: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let task = tokio::spawn(step);
    tokio::pin!(task);
    let mut seen = alive.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            res = &mut task => {
                return res.map_err(|e| Error::Internal(format!("the job's task failed: {e}")))?;
            }
            _ = tokio::time::sleep(watchdog.period()) => {
                let now = alive.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    watchdog.tick();
                }
            }
        }
    }
}

/// Advances every job that is not yet hashed, oldest first.
async fn advance_all(shared: &Arc<Shared>, signals: &dyn Signals, watchdog: &mut Watchdog) {
    let todo: Vec<PublishJob> = shared
        .jobs()
        .all()
        .filter(|j| {
            matches!(
                j.state,
                JobState::Received | JobState::Staged | JobState::Uploaded
            )
        })
        .cloned()
        .collect();
    for job in todo {
        advance(shared, signals, watchdog, job).await;
    }
}

/// Takes one job as far as `hashed` (or a terminal state), recording each state on disk.
async fn advance(
    shared: &Arc<Shared>,
    signals: &dyn Signals,
    watchdog: &mut Watchdog,
    mut job: PublishJob,
) {
    let alive = Arc::new(AtomicU64::new(0));
    loop {
        let step = step(shared.clone(), job.clone(), alive.clone());
        let result = watched(watchdog, &alive, step).await;
        match result {
            Ok(next) => job = next,
            Err(e) => {
                let state = match &e {
                    Error::Rejected(_) => JobState::Rejected,
                    _ => JobState::Failed,
                };
                tracing::error!(JOB_ID = %job.id, REPO = %job.repo, "publish job {state}: {e}");
                job.state = state;
                job.error = Some(e.to_string());
                job.last_error = None;
                // The job is over: its copies would only fill the disk.
                for dir in [
                    shared.staging_dir(&job.id),
                    shared.staged_dir(&job.id),
                    shared.verify_dir(&job.id),
                ] {
                    if dir.exists() {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
            }
        }
        if let Err(e) = shared.update(job.clone()) {
            // The job stays in its last recorded state and is retried on the next turn or restart.
            tracing::error!(JOB_ID = %job.id, "cannot record the job's progress: {e}");
            return;
        }
        match job.state {
            JobState::Staged | JobState::Uploaded => continue,
            JobState::Hashed => break,
            _ => return,
        }
    }
    if let Some(s) = &job.snapshot {
        tracing::info!(JOB_ID = %job.id, REPO = %job.repo, COMMIT = %s.commit, MODEL_HASH = %s.model_hash,
            "hashed {} files ({} bytes); commitment {}", s.files, s.bytes, s.commitment);
        if let Err(e) = signals
            .published(&job.id, &job.repo, &s.commit, &s.model_hash, &s.secure_hash)
            .await
        {
            tracing::warn!(JOB_ID = %job.id, "cannot emit Published: {e}");
        }
    }
}

/// One state transition of a job. Returns the job in its next state; the caller records it.
async fn step(
    shared: Arc<Shared>,
    mut job: PublishJob,
    alive: Arc<AtomicU64>,
) -> Result<PublishJob> {
    match job.state {
        JobState::Received => {
            let shared2 = shared.clone();
            let job2 = job.clone();
            let alive2 = alive.clone();
            let staged =
                tokio::task::spawn_blocking(move || stage_blocking(&shared2, &job2, &alive2))
                    .await
                    .map_err(|e| Error::Invalid(format!("staging task failed: {e}")))??;
            match staged {
                Staged::Offline(snapshot) => {
                    job.state = JobState::Hashed;
                    job.snapshot = Some(snapshot);
                }
                Staged::Online(digests) => {
                    job.state = JobState::Staged;
                    job.digests = digests;
                }
            }
        }
        JobState::Staged => {
            let hub = shared.hub()?;
            let commit = online::upload(&shared, hub, &job, &alive).await?;
            tracing::info!(JOB_ID = %job.id, REPO = %job.repo, COMMIT = %commit, "uploaded");
            job.hub_commit = Some(commit);
            job.state = JobState::Uploaded;
            job.last_error = None;
        }
        JobState::Uploaded => {
            let hub = shared.hub()?;
            let commit = job
                .hub_commit
                .clone()
                .ok_or_else(|| Error::Invalid("uploaded job without a commit".into()))?;
            let snapshot = online::verify(&shared, hub, &job, &commit, &alive).await?;
            job.snapshot = Some(snapshot);
            job.state = JobState::Hashed;
            job.last_error = None;
            // The Hub holds the bytes now; the staged copy has done its job.
            let staged = shared.staged_dir(&job.id);
            if staged.exists() {
                let _ = std::fs::remove_dir_all(&staged);
            }
        }
        other => {
            return Err(Error::Invalid(format!(
                "job in state {} has no step here",
                other.as_str()
            )))
        }
    }
    Ok(job)
}

/// What staging produced: offline the whole snapshot identity; online the file digests the
/// upload and the later check need.
enum Staged {
    Offline(Snapshot),
    Online(std::collections::BTreeMap<String, String>),
}

/// Copies the source into an immutable snapshot, runs the competition pre-flight on it, and
/// hashes it (offline: the commitment comes from this snapshot; online: only the file digests).
fn stage_blocking(shared: &Shared, job: &PublishJob, progress: &AtomicU64) -> Result<Staged> {
    let profile = shared.config.miner.profile;
    let dest = shared.staged_dir(&job.id);
    if dest.exists() {
        // A previous run renamed the snapshot into place and died before recording it.
        tracing::info!(JOB_ID = %job.id, "resuming: snapshot already staged");
    } else {
        staging::stage(
            &job.source,
            profile,
            job.caller.as_ref(),
            &shared.staging_dir(&job.id),
            &dest,
            progress,
        )?;
    }
    let limits = shared
        .config
        .publisher
        .limits_for(profile, &job.competition);
    match profile
        .rules()
        .preflight(&dest, &job.repo, &job.competition, limits.as_ref())
    {
        Ok(report) => {
            tracing::info!(JOB_ID = %job.id, "pre-flight passed: {} files, {} bytes, {} parameters",
                report.files, report.bytes, report.parameters.map_or("-".into(), |p| p.to_string()))
        }
        Err(e) => return Err(Error::Rejected(e.to_string())),
    }
    progress.fetch_add(1, Ordering::Relaxed);
    if !shared.config.miner.offline {
        return Ok(Staged::Online(upload::digests(&dest)?));
    }
    let model_hash = profile.rules().model_hash(&dest, &AtomicU64::new(0))?;
    progress.fetch_add(1, Ordering::Relaxed);
    let commit = hash::git_tree_id(&dest)?;
    let secure_hash = profile
        .rules()
        .secure_hash(&model_hash, &job.hotkey)
        .unwrap_or_default();
    let commitment = profile.rules().commitment(&model_id::CommitmentInput {
        repo: &job.repo,
        commit: &commit,
        model_hash: &model_hash,
        hotkey_ss58: &job.hotkey,
        competition: &job.competition,
    })?;
    let (files, bytes) = {
        let entries = hash::walk(&dest, &|_| false)?;
        let bytes = entries
            .iter()
            .map(|e| std::fs::metadata(&e.path).map(|m| m.len()).unwrap_or(0))
            .sum();
        (entries.len(), bytes)
    };
    Ok(Staged::Offline(Snapshot {
        commit,
        model_hash,
        secure_hash,
        commitment,
        files,
        bytes,
    }))
}

/// Makes public every committed job's repository that should be and is not yet.
async fn make_public_all(shared: &Arc<Shared>, watchdog: &mut Watchdog) {
    let config = &shared.config;
    if config.miner.offline
        || !config
            .publisher
            .make_public_after_commit(config.miner.profile)
    {
        return;
    }
    let todo: Vec<PublishJob> = shared
        .jobs()
        .all()
        .filter(|j| j.state == JobState::Committed && j.public.is_none())
        .cloned()
        .collect();
    for mut job in todo {
        let alive = Arc::new(AtomicU64::new(0));
        let step = {
            let shared = shared.clone();
            let job = job.clone();
            let alive = alive.clone();
            async move {
                let hub = shared.hub()?;
                online::make_public(&shared, hub, &job, &alive).await
            }
        };
        match watched(watchdog, &alive, step).await {
            Ok(()) => {
                tracing::info!(JOB_ID = %job.id, REPO = %job.repo, "repository is public");
                job.public = Some(true);
                job.last_error = None;
            }
            Err(e) => {
                tracing::error!(JOB_ID = %job.id, REPO = %job.repo, "cannot make the repository public: {e}");
                job.public = Some(false);
                job.last_error = Some(format!("making the repository public: {e}"));
            }
        }
        if let Err(e) = shared.update(job) {
            tracing::error!("cannot record visibility: {e}");
        }
    }
}

/// What a hand-off round achieved.
enum HandOff {
    /// Nothing is waiting on the committer.
    Idle,
    /// At least one job moved on.
    Progress,
    /// Jobs are waiting and none moved: retry later.
    Waiting,
}

async fn hand_off_all(shared: &Shared, sink: &dyn CommitSink, signals: &dyn Signals) -> HandOff {
    let waiting: Vec<PublishJob> = shared
        .jobs()
        .all()
        .filter(|j| matches!(j.state, JobState::Hashed | JobState::HandedOff))
        .cloned()
        .collect();
    if waiting.is_empty() {
        return HandOff::Idle;
    }
    let mut progress = false;
    for mut job in waiting {
        let Some(commitment) = job.snapshot.as_ref().map(|s| s.commitment.clone()) else {
            continue;
        };
        match sink.commit(&job.id, &commitment).await {
            Ok(answer) => {
                crash_point("publisher.handoff-acked");
                let before = job.state;
                if answer.state == CommitJobState::Committed {
                    job.state = JobState::Committed;
                    job.block = Some(answer.block);
                } else {
                    job.state = JobState::HandedOff;
                }
                if job.state != before {
                    job.last_error = None;
                    if let Err(e) = shared.update(job.clone()) {
                        tracing::error!(JOB_ID = %job.id, "cannot record hand-off: {e}");
                        continue;
                    }
                    progress = true;
                    match job.state {
                        JobState::Committed => {
                            tracing::info!(JOB_ID = %job.id, BLOCK = answer.block, "committed");
                            let live = shared.live_model();
                            if live.job_id == job.id {
                                if let Err(e) = signals.model_went_live(live).await {
                                    tracing::warn!("cannot emit ModelWentLive: {e}");
                                }
                            }
                        }
                        _ => tracing::info!(JOB_ID = %job.id, "handed off to the committer"),
                    }
                }
            }
            Err(HandOffError::Refused(msg)) => {
                tracing::error!(JOB_ID = %job.id, "committer refused the commitment: {msg}");
                job.state = JobState::Failed;
                job.error = Some(format!("committer refused: {msg}"));
                if shared.update(job).is_ok() {
                    progress = true;
                }
            }
            Err(e) => {
                match e {
                    HandOffError::Other(msg) => {
                        tracing::warn!(JOB_ID = %job.id, "hand-off failed, will retry: {msg}");
                        // Visible in `minerctl jobs`, e.g. a committer that cannot write yet.
                        shared.note_error(&job.id, &format!("committer: {msg}"));
                    }
                    _ => {
                        tracing::debug!(JOB_ID = %job.id, "committer is not running; will retry")
                    }
                }
                // The committer is unreachable for this job, so it is for the rest too.
                break;
            }
        }
    }
    if progress {
        HandOff::Progress
    } else {
        HandOff::Waiting
    }
}

#[cfg(test)]
mod tests;
