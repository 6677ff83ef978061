//! The committer's worker: writes queued commitments, oldest first, exactly once each.
//!
//! For each queued job: if the ledger already has it (we died after writing it), adopt that
//! block; otherwise write it. Then mark the job committed and emit `Committed`.

use std::sync::Arc;

use taominer_core::bus::{CommitmentRecord, COMMITTER_PATH};
use taominer_core::fault::crash_point;
use taominer_core::runtime::{notify_status, Watchdog};
use taominer_core::store::unix_now;
use zbus::object_server::SignalEmitter;

use crate::error::{Error, Result};
use crate::interface::CommitterService;
use crate::jobs::{CommitJob, CommitJobState, Shared};

/// Runs until the process is told to stop.
pub async fn run(
    shared: Arc<Shared>,
    conn: zbus::Connection,
    mut watchdog: Watchdog,
) -> Result<()> {
    let emitter = SignalEmitter::new(&conn, COMMITTER_PATH)?.into_owned();
    loop {
        watchdog.tick();
        if shared.config.miner.offline {
            commit_queued(&shared, &emitter).await;
        }
        notify_status(&shared.summary());
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(watchdog.period()) => {}
        }
    }
}

async fn commit_queued(shared: &Shared, emitter: &SignalEmitter<'static>) {
    let queued: Vec<CommitJob> = shared
        .jobs()
        .all()
        .filter(|j| j.state == CommitJobState::Queued)
        .cloned()
        .collect();
    for job in queued {
        match commit_one(shared, job.clone()) {
            Ok(block) => {
                crash_point("committer.job-committed");
                tracing::info!(JOB_ID = %job.id, BLOCK = block, "commitment written: {}", job.commitment);
                if let Err(e) = CommitterService::committed(emitter, &job.id, block).await {
                    tracing::warn!(JOB_ID = %job.id, "cannot emit Committed: {e}");
                }
            }
            Err(e) => {
                // Stays queued on disk; retried on the next turn.
                tracing::error!(JOB_ID = %job.id, "cannot write commitment: {e}");
                break;
            }
        }
    }
}

/// Writes one job's commitment unless the ledger has it already; returns its block.
fn commit_one(shared: &Shared, mut job: CommitJob) -> Result<u64> {
    let miner = &shared.config.miner;
    let block = {
        let mut ledger = shared.ledger();
        match ledger.find(&job.id) {
            Some(existing) => {
                tracing::info!(JOB_ID = %job.id, "already in the ledger at block {}; not writing again", existing.block);
                existing.block
            }
            None => {
                let hotkey = miner
                    .hotkey()
                    .ok_or_else(|| Error::Invalid("miner.hotkey_ss58 is not set".into()))?;
                let record = ledger.append(CommitmentRecord {
                    block: 0,
                    job_id: job.id.clone(),
                    netuid: miner.netuid(),
                    hotkey: hotkey.to_string(),
                    data_type: format!("Raw{}", job.commitment.len()),
                    commitment: job.commitment.clone(),
                    time: unix_now(),
                })?;
                crash_point("committer.ledger-written");
                record.block
            }
        }
    };
    job.state = CommitJobState::Committed;
    job.block = Some(block);
    shared.jobs().put(job)?;
    Ok(block)
}
