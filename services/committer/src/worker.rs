//! The committer's worker: writes queued commitments, oldest first, exactly once each.
//!
//! Offline, for each queued job: if the ledger already has it (we died after writing it), adopt
//! that block; otherwise append it. Online ([`Online`]): read `CommitmentOf` for our hotkey first;
//! if it already holds this commitment (we died after submitting), adopt its block without a new
//! extrinsic; otherwise submit, wait for the finalized block, and read it back. Then record it in
//! the ledger, mark the job committed and emit `Committed`.
//!
//! Online failures are sorted by what helps: a lost connection reconnects with backoff; the
//! space limit (`SpaceLimitExceeded`) waits for the next epoch; an unregistered hotkey
//! (`AccountNotAllowedCommit`) or any other pallet error fails the job with the chain's reason.
//!
//! The chain, the connection and the signal are reached through `crate::sink`'s traits, so the
//! tests (`worker/tests.rs`) drive these rules against a fake chain on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use taominer_core::bus::{CommitmentRecord, COMMITTER_PATH};
use taominer_core::daemon::backoff::Backoff;
use taominer_core::daemon::fault::crash_point;
use taominer_core::daemon::runtime::{notify_status, Watchdog};
use taominer_core::daemon::store::unix_now;
// tokio's, not std's: the same clock in production, and one a test can pause and advance.
use tokio::time::Instant;
use zbus::object_server::SignalEmitter;

use crate::chain::ChainError;
use crate::error::{Error, Result};
use crate::jobs::{CommitJob, CommitJobState, Shared};
use crate::sink::{Announce, CommitSink, Connector, Node};

/// Runs until the process is told to stop.
pub async fn run(
    shared: Arc<Shared>,
    conn: zbus::Connection,
    mut watchdog: Watchdog,
) -> Result<()> {
    let emitter = SignalEmitter::new(&conn, COMMITTER_PATH)?.into_owned();
    let mut online = Online::new(
        &shared,
        Node {
            endpoint: shared.config.miner.chain_endpoint.clone(),
        },
    );
    loop {
        watchdog.tick();
        if shared.config.miner.offline {
            commit_queued(&shared, &emitter).await;
        } else {
            online.commit_queued(&shared, &emitter).await;
        }
        shared.prune();
        notify_status(&shared.summary());
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(watchdog.period()) => {}
        }
    }
}

/// The jobs waiting to be written, oldest first (offline and online workers alike).
fn queued_jobs(shared: &Shared) -> Vec<CommitJob> {
    shared
        .jobs()
        .all()
        .filter(|j| j.state == CommitJobState::Queued)
        .cloned()
        .collect()
}

async fn commit_queued(shared: &Shared, emitter: &impl Announce) {
    let queued = queued_jobs(shared);
    for job in queued {
        match commit_one(shared, job.clone()) {
            Ok(block) => {
                crash_point("committer.job-committed");
                tracing::info!(JOB_ID = %job.id, BLOCK = block, "commitment written: {}", job.commitment);
                if let Err(e) = emitter.committed(&job.id, &job.commitment, block).await {
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

/// Errors the chain gives when a commitment is refused for now, not for good.
const LIMITS: &[&str] = &[
    "SpaceLimitExceeded",
    "CommitmentSetRateLimitExceeded",
    "RateLimitExceeded",
];

/// The online worker's connection and retry state.
struct Online<C: Connector> {
    connector: C,
    chain: Option<Arc<C::Sink>>,
    backoff: Backoff,
    retry_at: Instant,
}

impl<C: Connector> Online<C> {
    fn new(shared: &Shared, connector: C) -> Online<C> {
        let retry = &shared.config.retry;
        Online {
            connector,
            chain: None,
            backoff: Backoff::new(retry.initial(), retry.max()),
            retry_at: Instant::now(),
        }
    }

    /// A connection to the node, reconnecting (with backoff) when there is none.
    async fn chain(&mut self, shared: &Shared) -> Option<Arc<C::Sink>> {
        if let Some(c) = &self.chain {
            return Some(c.clone());
        }
        if Instant::now() < self.retry_at {
            return None;
        }
        let endpoint = self.connector.endpoint().to_string();
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connector.connect()).await {
            Ok(Ok(c)) => {
                tracing::info!("connected to the chain at {endpoint}");
                let c = Arc::new(c);
                self.connector.share(shared, Some(c.clone())).await;
                self.chain = Some(c.clone());
                self.backoff.reset();
                Some(c)
            }
            Ok(Err(e)) => {
                self.lost(shared, &e.to_string()).await;
                None
            }
            Err(_) => {
                self.lost(
                    shared,
                    &format!("no answer from {endpoint} in {CONNECT_TIMEOUT:?}"),
                )
                .await;
                None
            }
        }
    }

    /// Drops the connection and schedules the next attempt.
    async fn lost(&mut self, shared: &Shared, why: &str) {
        let delay = self.backoff.next_delay();
        tracing::warn!(
            "chain connection lost or refused, retrying in {} ms: {why}",
            delay.as_millis()
        );
        self.chain = None;
        self.connector.share(shared, None).await;
        self.retry_at = Instant::now() + delay;
    }

    async fn commit_queued(&mut self, shared: &Shared, emitter: &impl Announce) {
        let queued = queued_jobs(shared);
        // Connected even with nothing to write: Metagraph() and ServeAxon() use it too.
        let Some(chain) = self.chain(shared).await else {
            return;
        };
        if queued.is_empty() {
            // Idle: check the connection is alive, so it is mended before anyone needs it.
            if let Err(e) = chain.block_number().await {
                self.lost(shared, &e.to_string()).await;
            }
            return;
        }
        for job in queued {
            match self.commit_one(shared, &*chain, job.clone()).await {
                Ok(Some(block)) => {
                    crash_point("committer.job-committed");
                    tracing::info!(JOB_ID = %job.id, BLOCK = block, "commitment on chain: {}", job.commitment);
                    if let Err(e) = emitter.committed(&job.id, &job.commitment, block).await {
                        tracing::warn!(JOB_ID = %job.id, "cannot emit Committed: {e}");
                    }
                }
                Ok(None) => {} // waiting (space limit) or failed for good; recorded on the job
                Err(Error::Chain(ChainError::Unreachable(why))) => {
                    shared.note_error(&job.id, &format!("chain unreachable: {why}"));
                    self.lost(shared, &why).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(JOB_ID = %job.id, "cannot write commitment: {e}");
                    shared.note_error(&job.id, &e.to_string());
                    return;
                }
            }
        }
    }

    /// Writes one job's commitment unless the chain has it already. `Ok(Some(block))` when it
    /// is on chain, `Ok(None)` when the job waits or failed for good (recorded on the job).
    async fn commit_one(
        &mut self,
        shared: &Shared,
        chain: &C::Sink,
        mut job: CommitJob,
    ) -> crate::error::Result<Option<u64>> {
        let miner = &shared.config.miner;
        let netuid = miner.netuid();
        let hotkey = shared
            .hotkey
            .as_ref()
            .ok_or_else(|| ChainError::Refused("online without a hotkey".into()))?;
        let now = chain.block_number().await?;
        if job.not_before_block.is_some_and(|b| now < b) {
            return Ok(None);
        }
        let target = job.commitment.as_bytes();
        let existing = chain.commitment_of(netuid, hotkey.public_key()).await?;
        let block = match existing {
            Some(c) if c.data == target => {
                tracing::info!(JOB_ID = %job.id, "the chain already holds this commitment (block {}); not writing again", c.block);
                c.block
            }
            _ => match chain.set_commitment(netuid, target, hotkey).await {
                Ok(block) => {
                    let back = chain.commitment_of(netuid, hotkey.public_key()).await?;
                    if back.as_ref().map(|c| c.data.as_slice()) != Some(target) {
                        return Err(ChainError::Refused(format!(
                            "included at block {block}, but CommitmentOf reads back {:?}",
                            back.map(|c| String::from_utf8_lossy(&c.data).into_owned())
                        ))
                        .into());
                    }
                    block
                }
                Err(ChainError::Dispatch { pallet, name }) if LIMITS.contains(&name.as_str()) => {
                    let tempo = chain.tempo(netuid).await?;
                    let next = next_epoch_start(now, netuid, tempo);
                    tracing::warn!(JOB_ID = %job.id, "{pallet}.{name}: the commitment space of this epoch is used; retrying at block {next}");
                    job.not_before_block = Some(next);
                    job.error = Some(format!(
                        "{pallet}.{name}: waiting for the next epoch (block {next})"
                    ));
                    shared.jobs().put(job)?;
                    return Ok(None);
                }
                Err(ChainError::Dispatch { pallet, name }) => {
                    let why = if name == "AccountNotAllowedCommit" {
                        format!(
                            "hotkey {} is not registered on netuid {netuid} ({pallet}.{name})",
                            hotkey.ss58()
                        )
                    } else {
                        format!("{pallet}.{name}")
                    };
                    tracing::error!(JOB_ID = %job.id, "the chain refused the commitment: {why}");
                    job.state = CommitJobState::Failed;
                    job.error = Some(why);
                    shared.jobs().put(job)?;
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            },
        };
        crash_point("committer.chain-written");
        {
            let mut ledger = shared.ledger();
            if ledger.find(&job.id).is_none() {
                ledger.append_on_chain(CommitmentRecord {
                    block,
                    job_id: job.id.clone(),
                    netuid,
                    hotkey: hotkey.ss58().to_string(),
                    data_type: format!("Raw{}", job.commitment.len()),
                    commitment: job.commitment.clone(),
                    time: unix_now(),
                })?;
            }
        }
        job.state = CommitJobState::Committed;
        job.block = Some(block);
        job.error = None;
        shared.jobs().put(job)?;
        Ok(Some(block))
    }
}

/// The first block of the next epoch: subtensor's `blocks_until_next_epoch`,
/// `tempo - (block + netuid + 1) % (tempo + 1)`, after `block`.
fn next_epoch_start(block: u64, netuid: u16, tempo: u64) -> u64 {
    if tempo == 0 {
        return block + 1;
    }
    let until = tempo - (block + u64::from(netuid) + 1) % (tempo + 1);
    block + until + 1
}

/// How long to wait for a node to accept a connection and serve its metadata.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests;
