//! The committer's D-Bus object, `org.taominer.Committer1` (contract in `taominer_core::bus`).
//!
//! `Commit` is idempotent on the job id: the publisher may offer the same job any number of
//! times (after its own crash, after a lost reply) and gets the job's current state back, never a
//! second write.

use std::sync::Arc;

use taominer_core::bus::{BusError, CommitState, CommitmentRecord};
use taominer_core::fault::crash_point;
use taominer_core::formats::model_id::check_commitment;
use taominer_core::formats::ss58;
use taominer_core::store::unix_now;
use zbus::object_server::SignalEmitter;

use crate::jobs::{CommitJob, CommitJobState, Shared};

pub struct CommitterService {
    pub shared: Arc<Shared>,
}

#[zbus::interface(name = "org.taominer.Committer1")]
impl CommitterService {
    /// Queues a commitment for a publish job, durably, or reports the job's state if known.
    async fn commit(&self, job_id: &str, commitment: &str) -> Result<CommitState, BusError> {
        let shared = &self.shared;
        check_job_id(job_id)?;
        if let Some(known) = shared.jobs().get(job_id) {
            if known.commitment != commitment {
                return Err(BusError::InvalidInput(format!(
                    "job {job_id} was queued with a different commitment"
                )));
            }
            if known.state == CommitJobState::Failed {
                return Err(BusError::InvalidInput(format!(
                    "job {job_id} failed on chain: {}",
                    known.error.as_deref().unwrap_or("unknown error")
                )));
            }
            return Ok(known.answer());
        }
        check_commitment(shared.config.miner.profile, commitment)
            .map_err(|e| BusError::InvalidInput(e.to_string()))?;
        let job = CommitJob {
            id: job_id.to_string(),
            commitment: commitment.to_string(),
            state: CommitJobState::Queued,
            received: unix_now(),
            block: None,
            error: None,
            not_before_block: None,
        };
        shared
            .jobs()
            .put(job.clone())
            .map_err(|e| BusError::Failed(e.to_string()))?;
        tracing::info!(JOB_ID = job_id, "commitment queued");
        crash_point("committer.job-persisted");
        shared.wake.notify_one();
        Ok(job.answer())
    }

    /// Every commitment this committer wrote, oldest first, with its block (offline: the
    /// ledger's sequence numbers).
    async fn commitments(&self) -> Result<Vec<CommitmentRecord>, BusError> {
        Ok(self.shared.ledger().entries().to_vec())
    }

    /// The current commitment of `hotkey` on the configured subnet; empty if it has none.
    /// Online it is read from the chain (`CommitmentOf`), whoever wrote it.
    async fn commitment(&self, hotkey: &str) -> Result<String, BusError> {
        let netuid = self.shared.config.miner.netuid();
        if !self.shared.config.miner.offline {
            let (_, account) =
                ss58::decode(hotkey).map_err(|e| BusError::InvalidInput(e.to_string()))?;
            let chain = self.shared.chain.read().await.clone().ok_or_else(|| {
                BusError::Failed("not connected to the chain yet; see minerctl status".into())
            })?;
            let found = chain
                .commitment_of(netuid, account)
                .await
                .map_err(|e| BusError::Failed(e.to_string()))?;
            return Ok(found
                .map(|c| String::from_utf8_lossy(&c.data).into_owned())
                .unwrap_or_default());
        }
        Ok(self
            .shared
            .ledger()
            .latest(netuid, hotkey)
            .map(|e| e.commitment.clone())
            .unwrap_or_default())
    }

    async fn metagraph(&self) -> Result<String, BusError> {
        Err(BusError::NotImplemented(
            "the metagraph needs the chain client (issue: Chain committer)".into(),
        ))
    }

    async fn serve_axon(&self, ip: &str, port: u16) -> Result<(), BusError> {
        Err(BusError::NotImplemented(format!(
            "serving the axon at {ip}:{port} needs the chain client (issue: Chain committer)"
        )))
    }

    async fn status(&self) -> String {
        self.shared.summary()
    }

    #[zbus(property)]
    async fn state(&self) -> String {
        self.shared.state().to_string()
    }

    #[zbus(signal)]
    pub async fn committed(
        emitter: &SignalEmitter<'_>,
        job_id: &str,
        block: u64,
    ) -> zbus::Result<()>;
}

/// Job ids come from another process; keep them to a safe file-name alphabet.
fn check_job_id(id: &str) -> Result<(), BusError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidInput(format!(
            "job id {id:?} must be 1 to 64 letters, digits, '-' or '_'"
        )))
    }
}
