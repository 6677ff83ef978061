//! The publisher's worker: stages received jobs and hands staged ones to the committer.
//!
//! One loop, top to bottom each turn:
//! 1. pet the watchdog (only while staging makes progress, so a hung copy is caught);
//! 2. stage every `received` job: copy, hash, record, emit `Published`;
//! 3. offer every `staged`/`handed-off` job to the committer with `Commit(job_id, commitment)`,
//!    which is idempotent, and record what it answers;
//! 4. sleep until woken (new job, `Committed` signal) or the next retry is due.
//!
//! A committer that is down is retried with exponential backoff; nothing is lost meanwhile
//! because the job stays `staged` on disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use taominer_core::bus::{self, CommitterProxy};
use taominer_core::fault::crash_point;
use taominer_core::formats::{hash, model_id};
use taominer_core::runtime::Watchdog;
use zbus::object_server::SignalEmitter;

use crate::error::{Error, Result};
use crate::interface::PublisherService;
use crate::jobs::{JobState, PublishJob, Shared, Snapshot};
use crate::staging;

/// Runs the worker until the process is told to stop.
pub async fn run(
    shared: Arc<Shared>,
    conn: zbus::Connection,
    mut watchdog: Watchdog,
) -> Result<()> {
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

    let initial = Duration::from_millis(shared.config.publisher.retry_initial_ms);
    let max = Duration::from_millis(shared.config.publisher.retry_max_ms);
    let mut backoff = initial;
    let mut next_handoff = Instant::now();
    let mut woken = true;
    loop {
        watchdog.tick();
        stage_received(&shared, &emitter, &mut watchdog).await;
        if woken || Instant::now() >= next_handoff {
            match hand_off_all(&shared, &committer).await {
                HandOff::Idle => {
                    backoff = initial;
                    next_handoff = Instant::now() + max;
                }
                HandOff::Progress => {
                    backoff = initial;
                    next_handoff = Instant::now() + initial;
                }
                HandOff::Waiting => {
                    next_handoff = Instant::now() + backoff;
                    backoff = (backoff * 2).min(max);
                }
            }
        }
        let sleep_until = next_handoff.min(Instant::now() + watchdog.period());
        woken = tokio::select! {
            _ = shared.wake.notified() => true,
            _ = tokio::time::sleep_until(sleep_until.into()) => false,
        };
        taominer_core::runtime::notify_status(&shared.summary());
    }
}

/// Stages every received job, oldest first.
async fn stage_received(
    shared: &Arc<Shared>,
    emitter: &SignalEmitter<'static>,
    watchdog: &mut Watchdog,
) {
    let received: Vec<PublishJob> = shared
        .jobs()
        .all()
        .filter(|j| j.state == JobState::Received)
        .cloned()
        .collect();
    for mut job in received {
        match stage_one(shared, &job, watchdog).await {
            Ok(snapshot) => {
                job.state = JobState::Staged;
                job.snapshot = Some(snapshot);
            }
            Err(e) => {
                tracing::error!(JOB_ID = %job.id, "staging failed: {e}");
                job.state = JobState::Failed;
                job.error = Some(e.to_string());
                let tmp = shared.staging_dir(&job.id);
                if tmp.exists() {
                    let _ = std::fs::remove_dir_all(&tmp);
                }
            }
        }
        if let Err(e) = shared.update(job.clone()) {
            // The job stays `received` on disk and is retried on the next turn or restart.
            tracing::error!(JOB_ID = %job.id, "cannot record staging result: {e}");
            continue;
        }
        if let Some(s) = &job.snapshot {
            tracing::info!(JOB_ID = %job.id, REPO = %job.repo, COMMIT = %s.commit, MODEL_HASH = %s.model_hash,
                "staged {} files ({} bytes)", s.files, s.bytes);
            if let Err(e) = PublisherService::published(
                emitter,
                &job.id,
                &job.repo,
                &s.commit,
                &s.model_hash,
                &s.secure_hash,
            )
            .await
            {
                tracing::warn!(JOB_ID = %job.id, "cannot emit Published: {e}");
            }
        }
    }
}

/// Copies and hashes one job's directory off the async threads, petting the watchdog while
/// bytes keep moving.
async fn stage_one(
    shared: &Arc<Shared>,
    job: &PublishJob,
    watchdog: &mut Watchdog,
) -> Result<Snapshot> {
    let progress = Arc::new(AtomicU64::new(0));
    let task = {
        let shared = shared.clone();
        let job = job.clone();
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || stage_blocking(&shared, &job, &progress))
    };
    tokio::pin!(task);
    let mut seen = 0;
    loop {
        tokio::select! {
            res = &mut task => {
                return res.map_err(|e| Error::Invalid(format!("staging task failed: {e}")))?;
            }
            _ = tokio::time::sleep(watchdog.period()) => {
                let now = progress.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    watchdog.tick();
                }
            }
        }
    }
}

fn stage_blocking(shared: &Shared, job: &PublishJob, progress: &AtomicU64) -> Result<Snapshot> {
    let profile = shared.config.miner.profile;
    let dest = shared.staged_dir(&job.id);
    let (files, bytes) = if dest.exists() {
        // A previous run renamed the snapshot into place and died before recording it.
        tracing::info!(JOB_ID = %job.id, "resuming: snapshot already staged");
        let entries = hash::walk(&dest, &|_| false)?;
        let bytes = entries
            .iter()
            .map(|e| std::fs::metadata(&e.path).map(|m| m.len()).unwrap_or(0))
            .sum();
        (entries.len(), bytes)
    } else {
        let s = staging::stage(
            &job.source,
            profile,
            &shared.staging_dir(&job.id),
            &dest,
            progress,
        )?;
        (s.files, s.bytes)
    };
    let model_hash = hash::model_hash_for(profile, &dest)?;
    progress.fetch_add(1, Ordering::Relaxed);
    let commit = hash::git_tree_id(&dest)?;
    let secure_hash = hash::secure_hash_for(profile, &model_hash, &job.hotkey).unwrap_or_default();
    let commitment = model_id::commitment(
        profile,
        &model_id::CommitmentInput {
            repo: &job.repo,
            commit: &commit,
            model_hash: &model_hash,
            hotkey_ss58: &job.hotkey,
            competition: &job.competition,
        },
    )?;
    Ok(Snapshot {
        commit,
        model_hash,
        secure_hash,
        commitment,
        files,
        bytes,
    })
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

async fn hand_off_all(shared: &Shared, committer: &CommitterProxy<'_>) -> HandOff {
    let waiting: Vec<PublishJob> = shared
        .jobs()
        .all()
        .filter(|j| matches!(j.state, JobState::Staged | JobState::HandedOff))
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
        match committer.commit(&job.id, &commitment).await {
            Ok(answer) => {
                crash_point("publisher.handoff-acked");
                let before = job.state;
                if answer.state == "committed" {
                    job.state = JobState::Committed;
                    job.block = Some(answer.block);
                } else {
                    job.state = JobState::HandedOff;
                }
                if job.state != before {
                    if let Err(e) = shared.update(job.clone()) {
                        tracing::error!(JOB_ID = %job.id, "cannot record hand-off: {e}");
                        continue;
                    }
                    progress = true;
                    match job.state {
                        JobState::Committed => {
                            tracing::info!(JOB_ID = %job.id, BLOCK = answer.block, "committed")
                        }
                        _ => tracing::info!(JOB_ID = %job.id, "handed off to the committer"),
                    }
                }
            }
            Err(e) if bus::error_name(&e).as_deref() == Some("org.taominer.Error.InvalidInput") => {
                let msg = bus::error_message(&e);
                tracing::error!(JOB_ID = %job.id, "committer refused the commitment: {msg}");
                job.state = JobState::Failed;
                job.error = Some(format!("committer refused: {msg}"));
                if shared.update(job).is_ok() {
                    progress = true;
                }
            }
            Err(e) => {
                if bus::is_service_unknown(&e) {
                    tracing::debug!(JOB_ID = %job.id, "committer is not running; will retry");
                } else {
                    tracing::warn!(JOB_ID = %job.id, "hand-off failed, will retry: {}", bus::error_message(&e));
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
