//! The committer's D-Bus object, `org.taominer.Committer1` (contract in `taominer_core::bus`).
//!
//! `Commit` is idempotent on the job id: the publisher may offer the same job any number of
//! times (after its own crash, after a lost reply) and gets the job's current state back, never a
//! second write.

use std::sync::Arc;

use taominer_core::bus::{BusError, CommitState, CommitmentRecord, NeuronInfo, WorkState};
use taominer_core::wallet::SS58_PREFIX;

use crate::chain::Axon;
use taominer_core::daemon::fault::crash_point;
use taominer_core::daemon::store::unix_now;
use taominer_core::formats::ss58;
use zbus::object_server::SignalEmitter;

use crate::jobs::{CommitJob, CommitJobState, Shared, MAX_QUEUED};
use taominer_core::config::Config;

pub struct CommitterService {
    pub shared: Arc<Shared>,
}

#[zbus::interface(name = "org.taominer.Committer1")]
impl CommitterService {
    /// Queues a commitment for a publish job, durably, or reports the job's state if known.
    /// Only the publisher's user may call it (units/org.taominer.conf); a commitment that names
    /// another repository than `publisher.repo` is refused, and so is one past [`MAX_QUEUED`].
    async fn commit(&self, job_id: &str, commitment: &str) -> Result<CommitState, BusError> {
        let shared = &self.shared;
        check_job_id(job_id)?;
        // Held from the look-up to the write, so two calls cannot both pass the queue's bound.
        let mut jobs = shared.jobs();
        if let Some(known) = jobs.get(job_id) {
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
        // A committed job pruned from jobs/ is still in the ledger: answer from there.
        if let Some(written) = shared.ledger().find(job_id) {
            if written.commitment != commitment {
                return Err(BusError::InvalidInput(format!(
                    "job {job_id} was committed with a different commitment"
                )));
            }
            return Ok(CommitState {
                state: CommitJobState::Committed,
                block: written.block,
            });
        }
        shared
            .config
            .miner
            .profile
            .rules()
            .check_commitment(commitment)
            .map_err(|e| BusError::InvalidInput(e.to_string()))?;
        check_names_our_repo(&shared.config, commitment)?;
        let queued = jobs
            .all()
            .filter(|j| j.state == CommitJobState::Queued)
            .count();
        if queued >= MAX_QUEUED {
            // Unavailable, not InvalidInput: the publisher keeps the job and offers it again later.
            return Err(BusError::Unavailable(format!(
                "{queued} commitments are already waiting to be written (at most {MAX_QUEUED}); \
                 try again once they are"
            )));
        }
        let job = CommitJob {
            id: job_id.to_string(),
            commitment: commitment.to_string(),
            state: CommitJobState::Queued,
            received: unix_now(),
            block: None,
            error: None,
            not_before_block: None,
        };
        jobs.put(job.clone())
            .map_err(|e| BusError::Failed(e.to_string()))?;
        drop(jobs);
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
    async fn state(&self) -> WorkState {
        self.shared.state()
    }

    /// A job's commitment is written (on chain, or offline in the ledger), with the exact
    /// string, so a watcher needs no second call to learn what was committed.
    #[zbus(signal)]
    pub async fn committed(
        emitter: &SignalEmitter<'_>,
        job_id: &str,
        commitment: &str,
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
            BusError::Unavailable("not connected to the chain yet; see minerctl status".into())
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

/// Refuses a commitment that names another repository than the one this miner publishes to
/// (`publisher.repo`; offline, the offline publisher's): even a caller that may call `Commit`
/// cannot point the hotkey at someone else's model. Which repository a commitment names is the
/// subnet's rule (`Subnet::named_repo`); a commitment that hides it (SoundsRight's sha256) is not
/// checked here.
fn check_names_our_repo(config: &Config, commitment: &str) -> Result<(), BusError> {
    let Some(named) = config.miner.profile.rules().named_repo(commitment) else {
        return Ok(());
    };
    let ours = config.publisher.repo(&config.miner);
    if ours.as_deref() == Some(named.as_str()) {
        return Ok(());
    }
    Err(BusError::InvalidInput(format!(
        "the commitment names {named:?}, not this miner's repository (publisher.repo = {})",
        ours.map_or_else(|| "unset".to_string(), |r| format!("{r:?}"))
    )))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::KEEP_DONE;
    use taominer_core::config::Profile;

    fn service(dir: &std::path::Path, config: Config) -> CommitterService {
        CommitterService {
            shared: Arc::new(Shared::open(config, dir, None).unwrap()),
        }
    }

    /// A well-formed pretraining commitment naming `ns/name`.
    fn naming(ns: &str, name: &str, n: usize) -> String {
        format!("{ns}:{name}:{:040x}:{}:2", n, "h".repeat(44))
    }

    fn message(e: BusError) -> String {
        match e {
            BusError::InvalidInput(m) | BusError::Unavailable(m) | BusError::Failed(m) => m,
            other => format!("{other:?}"),
        }
    }

    /// A commitment naming another repository than `publisher.repo` (offline: the offline
    /// publisher's `offline/model`) is refused, whoever calls; ours is queued.
    #[tokio::test]
    async fn a_commitment_must_name_our_repository() {
        let d = tempfile::tempdir().unwrap();
        let s = service(d.path(), Config::default());
        let err = s
            .commit("j1", &naming("mallory", "model", 1))
            .await
            .unwrap_err();
        let text = message(err);
        assert!(
            text.contains("\"mallory/model\"") && text.contains("offline/model"),
            "{text}"
        );
        assert!(s.shared.jobs().is_empty(), "nothing queued");
        let ok = s
            .commit("j1", &naming("offline", "model", 1))
            .await
            .unwrap();
        assert_eq!(ok.state, CommitJobState::Queued);

        let mut config = Config::default();
        config.publisher.repo = Some("alice/m".into());
        config.miner.profile = Profile::Coldint;
        let d = tempfile::tempdir().unwrap();
        let s = service(d.path(), config);
        assert!(s.commit("j2", &naming("bob", "m", 2)).await.is_err());
        assert_eq!(
            s.commit("j2", &naming("alice", "m", 2))
                .await
                .unwrap()
                .state,
            CommitJobState::Queued
        );
        // SoundsRight commits a sha256: the repository cannot be read from it.
        assert_eq!(
            Profile::Soundsright.rules().named_repo(&"a".repeat(64)),
            None
        );
    }

    /// At most MAX_QUEUED jobs wait; one more is refused with a retryable `Failed` (the
    /// publisher keeps the job) and nothing is written for it.
    #[tokio::test]
    async fn the_queue_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        let s = service(d.path(), Config::default());
        for n in 0..MAX_QUEUED {
            s.commit(&format!("j{n:03}"), &naming("offline", "model", n))
                .await
                .unwrap();
        }
        let err = s
            .commit("over", &naming("offline", "model", 999))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
        assert!(s.shared.jobs().get("over").is_none());
        assert!(!d.path().join("jobs/over.json").exists());
        // A job already queued is still answered.
        assert_eq!(
            s.commit("j000", &naming("offline", "model", 0))
                .await
                .unwrap()
                .state,
            CommitJobState::Queued
        );
    }

    /// Committed jobs beyond KEEP_DONE are pruned from jobs/ (oldest first), and a pruned job
    /// offered again is answered from the ledger (`committed`, same block), never queued or
    /// written a second time.
    #[tokio::test]
    async fn committed_jobs_are_pruned_and_stay_exactly_once() {
        let d = tempfile::tempdir().unwrap();
        let s = service(d.path(), Config::default());
        let total = KEEP_DONE + 5;
        for n in 0..total {
            let id = format!("j{n:04}");
            let commitment = naming("offline", "model", n);
            s.commit(&id, &commitment).await.unwrap();
            let record = s
                .shared
                .ledger()
                .append(CommitmentRecord {
                    block: 0,
                    job_id: id.clone(),
                    netuid: 9,
                    hotkey: "h".into(),
                    commitment: commitment.clone(),
                    data_type: format!("Raw{}", commitment.len()),
                    time: 0,
                })
                .unwrap();
            let mut job = s.shared.jobs().get(&id).cloned().unwrap();
            job.state = CommitJobState::Committed;
            job.block = Some(record.block);
            job.received = n as u64;
            s.shared.jobs().put(job).unwrap();
        }
        s.shared.prune();
        assert_eq!(s.shared.jobs().len(), KEEP_DONE);
        assert!(s.shared.jobs().get("j0000").is_none());
        assert!(!d.path().join("jobs/j0000.json").exists());
        assert!(s.shared.jobs().get(&format!("j{:04}", total - 1)).is_some());

        let again = s
            .commit("j0000", &naming("offline", "model", 0))
            .await
            .unwrap();
        assert_eq!((again.state, again.block), (CommitJobState::Committed, 1));
        assert!(s.shared.jobs().get("j0000").is_none(), "not queued again");
        assert!(s
            .commit("j0000", &naming("offline", "model", 7))
            .await
            .is_err());
        let ledger = s.shared.ledger();
        assert_eq!(
            ledger
                .entries()
                .iter()
                .filter(|e| e.job_id == "j0000")
                .count(),
            1
        );
    }
}
