//! Commit jobs: commitments the committer has promised to write.
//!
//! A job is written to disk as `queued` before `Commit` returns, so once the publisher hears
//! "queued" the commitment will be written even if the committer dies the next instant. The
//! worker writes it and then marks the job `committed`; a crash between the two is resolved on
//! restart by finding the job in the ledger, so the commitment is never written twice.
//!
//! Bounded: at most [`MAX_QUEUED`] jobs wait (a `Commit` past that is refused, with a reason the
//! publisher retries on), and only the newest [`KEEP_DONE`] committed and [`KEEP_DONE`] failed
//! jobs are kept. A committed job pruned here is still in the ledger, and `Commit` looks there
//! before queueing, so a pruned job offered again is answered `committed`, never written twice.
//! A pruned failed job offered again would be queued anew; the publisher does not offer it again,
//! as it recorded the failure `Commit` answered.

use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
pub use taominer_core::bus::CommitJobState;
use taominer_core::bus::{CommitState, WorkState};
use taominer_core::config::Config;
use taominer_core::daemon::store::{Job, JobStore};

use crate::error::Result;
use crate::ledger::Ledger;

/// One commit job as stored in `jobs/<id>.json`; the id is the publish job's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitJob {
    pub id: String,
    pub commitment: String,
    pub state: CommitJobState,
    pub received: u64,
    #[serde(default)]
    pub block: Option<u64>,
    /// Why the job failed (`Failed`), or the last transient error while it waits.
    #[serde(default)]
    pub error: Option<String>,
    /// Do not submit before this block (the chain's space limit resets at the next epoch).
    #[serde(default)]
    pub not_before_block: Option<u64>,
}

impl Job for CommitJob {
    fn id(&self) -> &str {
        &self.id
    }
}

impl CommitJob {
    pub fn answer(&self) -> CommitState {
        CommitState {
            state: self.state,
            block: self.block.unwrap_or(0),
        }
    }
}

/// The most jobs waiting to be written (the chain takes about one commitment per epoch).
pub const MAX_QUEUED: usize = 64;
/// Committed jobs kept (each is also in the ledger), and failed jobs kept.
pub const KEEP_DONE: usize = 100;

/// The committer's state, shared by the D-Bus interface and the worker.
pub struct Shared {
    pub config: Config,
    /// The hotkey (online only).
    pub hotkey: Option<taominer_core::wallet::Hotkey>,
    /// The worker's chain connection, when it has one (read by `Commitment`).
    pub chain: tokio::sync::RwLock<Option<std::sync::Arc<crate::chain::Chain>>>,
    /// The last metagraph read and the block it was read at.
    pub metagraph: tokio::sync::Mutex<Option<(u64, Vec<crate::chain::Neuron>)>>,
    pub jobs: Mutex<JobStore<CommitJob>>,
    pub ledger: Mutex<Ledger>,
    pub wake: tokio::sync::Notify,
}

impl Shared {
    pub fn open(
        config: Config,
        state_dir: &Path,
        hotkey: Option<taominer_core::wallet::Hotkey>,
    ) -> Result<Shared> {
        let shared = Shared {
            hotkey,
            chain: tokio::sync::RwLock::new(None),
            metagraph: tokio::sync::Mutex::new(None),
            jobs: Mutex::new(JobStore::open(&state_dir.join("jobs"))?),
            ledger: Mutex::new(Ledger::open(state_dir)?),
            config,
            wake: tokio::sync::Notify::new(),
        };
        shared.prune();
        Ok(shared)
    }

    /// Removes all but the newest [`KEEP_DONE`] committed jobs whose record is in the ledger,
    /// and all but the newest [`KEEP_DONE`] failed ones. Queued jobs are never touched.
    pub fn prune(&self) {
        let doomed: Vec<String> = {
            let jobs = self.jobs();
            let ledger = self.ledger();
            let mut committed: Vec<&CommitJob> = jobs
                .all()
                .filter(|j| j.state == CommitJobState::Committed && ledger.find(&j.id).is_some())
                .collect();
            let mut failed: Vec<&CommitJob> = jobs
                .all()
                .filter(|j| j.state == CommitJobState::Failed)
                .collect();
            // Newest first: by time received, then id (ids sort by creation time).
            for list in [&mut committed, &mut failed] {
                list.sort_by(|a, b| (b.received, &b.id).cmp(&(a.received, &a.id)));
            }
            committed
                .iter()
                .skip(KEEP_DONE)
                .chain(failed.iter().skip(KEEP_DONE))
                .map(|j| j.id.clone())
                .collect()
        };
        if doomed.is_empty() {
            return;
        }
        let mut jobs = self.jobs();
        for id in &doomed {
            if let Err(e) = jobs.remove(id) {
                tracing::warn!(JOB_ID = %id, "cannot prune an old job: {e}");
            }
        }
        tracing::info!("pruned {} old committed or failed jobs", doomed.len());
    }

    /// Locks the job store (a poisoned lock still guards a consistent on-disk store).
    pub fn jobs(&self) -> std::sync::MutexGuard<'_, JobStore<CommitJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a transient error on a queued job.
    pub fn note_error(&self, id: &str, error: &str) {
        let mut jobs = self.jobs();
        if let Some(mut job) = jobs.get(id).cloned() {
            job.error = Some(error.to_string());
            if let Err(e) = jobs.put(job) {
                tracing::warn!(JOB_ID = %id, "cannot record the last error: {e}");
            }
        }
    }

    /// Locks the ledger.
    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One line for `minerctl status`.
    pub fn summary(&self) -> String {
        let jobs = self.jobs();
        let queued = jobs
            .all()
            .filter(|j| j.state == CommitJobState::Queued)
            .count();
        let mode = if self.config.miner.offline {
            "offline (local ledger)".to_string()
        } else {
            format!("online ({})", self.config.miner.chain_endpoint)
        };
        let mut line = format!(
            "{mode}, netuid {}, {} queued",
            self.config.miner.netuid(),
            queued
        );
        if let Some(last) = self.ledger().entries().last() {
            line.push_str(&format!(
                "; last commit {} at block {}",
                last.job_id, last.block
            ));
        }
        line
    }

    /// `working` while a commitment waits to be written, else `idle`.
    pub fn state(&self) -> WorkState {
        if self.jobs().all().any(|j| j.state == CommitJobState::Queued) {
            WorkState::Working
        } else {
            WorkState::Idle
        }
    }
}
