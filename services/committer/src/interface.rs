//! The committer's D-Bus object, `org.taominer.Committer1` (contract in `taominer_core::bus`).
//!
//! `Commit` is idempotent on the job id: the publisher may offer the same job any number of
//! times (after its own crash, after a lost reply) and gets the job's current state back, never a
//! second write.

use std::sync::Arc;

use taominer_core::bus::{BusError, CommitState, CommitmentRecord, NeuronInfo};
use taominer_core::wallet::SS58_PREFIX;

use crate::chain::Axon;
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
            let chain = self.chain().await?;
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

    /// The subnet's neurons, read from the chain (`get_neurons_lite`) and reused for
    /// [`METAGRAPH_BLOCKS`] blocks: the predictor asks on every allow-list refresh.
    async fn metagraph(&self) -> Result<Vec<NeuronInfo>, BusError> {
        let chain = self.chain().await?;
        let netuid = self.shared.config.miner.netuid();
        let failed = |e: crate::chain::ChainError| BusError::Failed(e.to_string());
        let now = chain.block_number().await.map_err(failed)?;
        let mut cache = self.shared.metagraph.lock().await;
        let fresh = matches!(&*cache, Some((at, _)) if now < at + METAGRAPH_BLOCKS && now >= *at);
        if !fresh {
            *cache = Some((now, chain.neurons(netuid).await.map_err(failed)?));
        }
        let neurons = cache.as_ref().map(|(_, n)| n.clone()).unwrap_or_default();
        Ok(neurons
            .into_iter()
            .map(|n| NeuronInfo {
                uid: n.uid,
                hotkey: ss58::encode(SS58_PREFIX, &n.hotkey),
                coldkey: ss58::encode(SS58_PREFIX, &n.coldkey),
                stake: n.stake,
                validator_permit: n.validator_permit,
                incentive: n.incentive,
                axon: axon_text(&n.axon),
            })
            .collect())
    }

    /// Announces our axon on chain (`serve_axon`), only when the chain's value differs.
    async fn serve_axon(&self, ip: &str, port: u16) -> Result<(), BusError> {
        let addr: std::net::IpAddr = ip
            .parse()
            .map_err(|_| BusError::InvalidInput(format!("{ip:?} is not an IP address")))?;
        if port == 0 {
            return Err(BusError::InvalidInput("port 0 is not a port".into()));
        }
        let hotkey =
            self.shared.hotkey.as_ref().ok_or_else(|| {
                BusError::InvalidInput("offline mode does not serve an axon".into())
            })?;
        let chain = self.chain().await?;
        let netuid = self.shared.config.miner.netuid();
        let (ip, ip_type) = match addr {
            std::net::IpAddr::V4(v4) => (u128::from(u32::from(v4)), 4),
            std::net::IpAddr::V6(v6) => (u128::from(v6), 6),
        };
        let wanted = Axon {
            version: AXON_VERSION,
            ip,
            port,
            ip_type,
            protocol: 4,
        };
        let current = chain
            .axon_of(netuid, hotkey.public_key())
            .await
            .map_err(|e| BusError::Failed(e.to_string()))?;
        if current.as_ref().is_some_and(|a| {
            a.ip == wanted.ip && a.port == wanted.port && a.ip_type == wanted.ip_type
        }) {
            tracing::info!("axon {addr}:{port} is already announced; nothing to do");
            return Ok(());
        }
        let block = chain
            .serve_axon(netuid, &wanted, hotkey)
            .await
            .map_err(|e| BusError::Failed(e.to_string()))?;
        tracing::info!(BLOCK = block, "axon {addr}:{port} announced on chain");
        // Our own change: the cached metagraph no longer says what the chain does.
        *self.shared.metagraph.lock().await = None;
        Ok(())
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

/// How many blocks a metagraph read is reused for (about a minute on finney).
const METAGRAPH_BLOCKS: u64 = 5;

/// The version number written with our axon: the Bittensor protocol version it speaks (10.5.0 as
/// `bittensor.__version_as_int__` counts it).
const AXON_VERSION: u32 = 10_005_000;

impl CommitterService {
    /// The worker's chain connection, or an error saying there is none yet.
    async fn chain(&self) -> Result<std::sync::Arc<crate::chain::Chain>, BusError> {
        if self.shared.config.miner.offline {
            return Err(BusError::InvalidInput(
                "offline mode has no chain (miner.offline = true)".into(),
            ));
        }
        self.shared.chain.read().await.clone().ok_or_else(|| {
            BusError::Failed("not connected to the chain yet; see minerctl status".into())
        })
    }
}

fn axon_text(a: &Axon) -> String {
    match a.ip_type {
        4 if a.ip != 0 => format!("{}:{}", std::net::Ipv4Addr::from(a.ip as u32), a.port),
        6 => format!("[{}]:{}", std::net::Ipv6Addr::from(a.ip), a.port),
        _ => String::new(),
    }
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
