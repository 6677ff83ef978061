//! The worker's transitions and retry rules against a fake chain (`crate::sink`'s traits) on
//! tokio's paused clock: each test runs in milliseconds, whatever delays it checks. The
//! cross-process tests (`tests/tests/chain.rs`, `faults.rs`) prove the same rules against the dev
//! chain and real crashes; these pin each rule down alone.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use taominer_core::config::Config;
use taominer_core::wallet::Hotkey;

use super::*;
use crate::chain::OnChain;
use crate::ledger::LEDGER_FILE;
use crate::sink::{Announce, CommitSink, Connector};

/// What the fake node does with the next `set_commitment`; with nothing scripted it succeeds.
enum Outcome {
    /// Included and failed with `Commitments.<name>`: nothing written.
    Dispatch(&'static str),
    /// Written and finalized, but the connection breaks before the answer arrives.
    LandsThenDrops,
    /// Finalized, but `CommitmentOf` then holds another commitment.
    Overwritten,
}

/// The fake chain and node: what is on chain, what reached it, and how it misbehaves.
#[derive(Default)]
struct World {
    block: u64,
    tempo: u64,
    on_chain: Option<OnChain>,
    /// The data of every `set_commitment` that reached the node, in order.
    extrinsics: Vec<Vec<u8>>,
    script: VecDeque<Outcome>,
    /// How many connection attempts are refused before one is accepted.
    refusals: usize,
    /// Connection attempts are never answered.
    silent: bool,
    /// When each connection attempt began.
    attempts: Vec<Instant>,
    /// Bumped when the connection breaks: a sink of an older generation only fails.
    generation: u64,
    /// What the worker shared with the D-Bus interface, in order (`true`: a connection).
    shared: Vec<bool>,
}

/// The world, shared by the node, its connections and the test.
type WorldRef = Arc<Mutex<World>>;

fn lock(world: &WorldRef) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}

fn broken() -> ChainError {
    ChainError::Unreachable("connection closed".into())
}

/// One connection to the fake node.
struct FakeChain {
    world: WorldRef,
    generation: u64,
}

impl FakeChain {
    /// The world, or `Unreachable` when this connection has broken since it was made.
    fn live(&self) -> Result<MutexGuard<'_, World>, ChainError> {
        let w = lock(&self.world);
        if w.generation == self.generation {
            Ok(w)
        } else {
            Err(broken())
        }
    }
}

impl CommitSink for FakeChain {
    async fn block_number(&self) -> Result<u64, ChainError> {
        Ok(self.live()?.block)
    }

    async fn commitment_of(
        &self,
        _netuid: u16,
        _account: [u8; 32],
    ) -> Result<Option<OnChain>, ChainError> {
        Ok(self.live()?.on_chain.clone())
    }

    async fn set_commitment(
        &self,
        _netuid: u16,
        data: &[u8],
        _hotkey: &Hotkey,
    ) -> Result<u64, ChainError> {
        let mut w = self.live()?;
        w.extrinsics.push(data.to_vec());
        w.block += 1;
        let block = w.block;
        let written = OnChain {
            block,
            data: data.to_vec(),
        };
        match w.script.pop_front() {
            None => {
                w.on_chain = Some(written);
                Ok(block)
            }
            Some(Outcome::Dispatch(name)) => Err(ChainError::Dispatch {
                pallet: "Commitments".into(),
                name: name.into(),
            }),
            Some(Outcome::LandsThenDrops) => {
                w.on_chain = Some(written);
                w.generation += 1;
                Err(broken())
            }
            Some(Outcome::Overwritten) => {
                w.on_chain = Some(OnChain {
                    block,
                    data: b"someone else's".to_vec(),
                });
                Ok(block)
            }
        }
    }

    async fn tempo(&self, _netuid: u16) -> Result<u64, ChainError> {
        Ok(self.live()?.tempo)
    }
}

/// The fake node's connector.
struct FakeNode(WorldRef);

impl Connector for FakeNode {
    type Sink = FakeChain;

    fn endpoint(&self) -> &str {
        "ws://fake"
    }

    async fn connect(&self) -> Result<FakeChain, ChainError> {
        let silent = {
            let mut w = lock(&self.0);
            w.attempts.push(Instant::now());
            if !w.silent && w.refusals > 0 {
                w.refusals -= 1;
                return Err(ChainError::Unreachable("connection refused".into()));
            }
            w.silent
        };
        if silent {
            std::future::pending::<()>().await;
        }
        Ok(FakeChain {
            world: self.0.clone(),
            generation: lock(&self.0).generation,
        })
    }

    async fn share(&self, _shared: &Shared, chain: Option<Arc<FakeChain>>) {
        lock(&self.0).shared.push(chain.is_some());
    }
}

/// Every `Committed` the worker announced: job, commitment, block.
#[derive(Default)]
struct Heard(Mutex<Vec<(String, String, u64)>>);

impl Heard {
    fn all(&self) -> Vec<(String, String, u64)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Announce for Heard {
    async fn committed(&self, job_id: &str, commitment: &str, block: u64) -> zbus::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push((
            job_id.into(),
            commitment.into(),
            block,
        ));
        Ok(())
    }
}

/// An online committer (netuid 1, backoff 1 s doubling to 8 s) against a fake node at block
/// 100 with tempo 10.
struct Rig {
    _dir: tempfile::TempDir,
    shared: Shared,
    world: WorldRef,
    online: Online<FakeNode>,
    heard: Heard,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.miner.offline = false;
        config.miner.netuid = Some(1);
        config.retry.initial_ms = 1000;
        config.retry.max_ms = 8000;
        let hotkey = Hotkey::from_seed([7; 32]).unwrap();
        let shared = Shared::open(config, dir.path(), Some(hotkey)).unwrap();
        let world: WorldRef = Arc::new(Mutex::new(World {
            block: 100,
            tempo: 10,
            ..World::default()
        }));
        let online = Online::new(&shared, FakeNode(world.clone()));
        Rig {
            _dir: dir,
            shared,
            world,
            online,
            heard: Heard::default(),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// One pass of the worker's loop.
    async fn turn(&mut self) {
        self.online.commit_queued(&self.shared, &self.heard).await;
    }

    /// The worker's loop, waking every 100 ms, for `secs` seconds of the paused clock.
    async fn run_for(&mut self, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            self.turn().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn queue(shared: &Shared, id: &str, commitment: &str) {
    shared
        .jobs()
        .put(CommitJob {
            id: id.into(),
            commitment: commitment.into(),
            state: CommitJobState::Queued,
            received: 0,
            block: None,
            error: None,
            not_before_block: None,
        })
        .unwrap();
}

fn job(shared: &Shared, id: &str) -> CommitJob {
    shared.jobs().get(id).cloned().unwrap()
}

/// The ledger as (job, block) pairs, oldest first.
fn ledger(shared: &Shared) -> Vec<(String, u64)> {
    shared
        .ledger()
        .entries()
        .iter()
        .map(|e| (e.job_id.clone(), e.block))
        .collect()
}

fn heard(id: &str, commitment: &str, block: u64) -> (String, String, u64) {
    (id.into(), commitment.into(), block)
}

/// The happy path: a queued job is submitted once, becomes `committed` at the finalized block,
/// is recorded in the ledger with that block and our hotkey, and `Committed` is announced; a
/// later pass writes nothing more.
#[tokio::test(start_paused = true)]
async fn a_queued_job_is_submitted_once_and_committed_at_its_finalized_block() {
    let mut rig = Rig::new();
    queue(&rig.shared, "j1", "ours:1");
    rig.turn().await;

    assert_eq!(rig.world().extrinsics, [b"ours:1".to_vec()]);
    let j = job(&rig.shared, "j1");
    assert_eq!(
        (j.state, j.block, j.error),
        (CommitJobState::Committed, Some(101), None)
    );
    assert_eq!(ledger(&rig.shared), [("j1".to_string(), 101)]);
    let record = rig.shared.ledger().entries()[0].clone();
    let ss58 = rig.shared.hotkey.as_ref().unwrap().ss58().to_string();
    assert_eq!(
        (record.netuid, record.hotkey, record.data_type),
        (1, ss58, "Raw6".to_string())
    );
    assert_eq!(rig.heard.all(), [heard("j1", "ours:1", 101)]);

    rig.turn().await;
    assert_eq!(rig.world().extrinsics.len(), 1, "written once");
    assert_eq!(rig.heard.all().len(), 1);
}

/// We died after submitting: `CommitmentOf` already holds this job's commitment, so it is adopted
/// at the chain's block with no second extrinsic, recorded and announced.
#[tokio::test(start_paused = true)]
async fn a_commitment_already_on_chain_is_adopted_without_a_second_extrinsic() {
    let mut rig = Rig::new();
    rig.world().on_chain = Some(OnChain {
        block: 42,
        data: b"ours:1".to_vec(),
    });
    queue(&rig.shared, "j1", "ours:1");
    rig.turn().await;

    assert!(rig.world().extrinsics.is_empty(), "no second extrinsic");
    let j = job(&rig.shared, "j1");
    assert_eq!((j.state, j.block), (CommitJobState::Committed, Some(42)));
    assert_eq!(ledger(&rig.shared), [("j1".to_string(), 42)]);
    assert_eq!(rig.heard.all(), [heard("j1", "ours:1", 42)]);
}

/// Only an equal commitment is adopted: an older one of ours on chain is replaced by a new
/// extrinsic, and the job takes the new block.
#[tokio::test(start_paused = true)]
async fn another_commitment_on_chain_is_replaced_not_adopted() {
    let mut rig = Rig::new();
    rig.world().on_chain = Some(OnChain {
        block: 42,
        data: b"ours:0".to_vec(),
    });
    queue(&rig.shared, "j1", "ours:1");
    rig.turn().await;

    assert_eq!(rig.world().extrinsics, [b"ours:1".to_vec()]);
    assert_eq!(job(&rig.shared, "j1").block, Some(101));
}

/// A node that refuses connections is retried on the backoff schedule (1 s, 2 s, 4 s: attempts
/// at 0, 1, 3 and 7 s of the paused clock, none in between), the lost connection is withdrawn
/// from the interface each time, and once connected the job is written exactly once.
#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_on_the_backoff_schedule_then_commits_once() {
    let mut rig = Rig::new();
    rig.world().refusals = 3;
    queue(&rig.shared, "j1", "ours:1");
    let start = Instant::now();
    rig.run_for(10).await;

    let w = rig.world();
    let at: Vec<u64> = w
        .attempts
        .iter()
        .map(|t| (*t - start).as_millis() as u64)
        .collect();
    assert_eq!(at, [0, 1000, 3000, 7000]);
    assert_eq!(w.shared, [false, false, false, true]);
    assert_eq!(w.extrinsics, [b"ours:1".to_vec()]);
    drop(w);
    assert_eq!(job(&rig.shared, "j1").state, CommitJobState::Committed);
}

/// A node that accepts the socket but never answers is given up after `CONNECT_TIMEOUT` (30 s)
/// and tried again only after the first backoff delay.
#[tokio::test(start_paused = true)]
async fn a_silent_node_is_given_up_after_the_connect_timeout() {
    let mut rig = Rig::new();
    rig.world().silent = true;
    queue(&rig.shared, "j1", "ours:1");
    let start = Instant::now();
    rig.turn().await;
    assert_eq!(start.elapsed(), CONNECT_TIMEOUT);
    assert_eq!(rig.world().shared, [false]);

    rig.world().silent = false;
    tokio::time::sleep(Duration::from_millis(999)).await;
    rig.turn().await;
    assert_eq!(
        rig.world().attempts.len(),
        1,
        "not before the backoff delay"
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    rig.turn().await;
    assert_eq!(rig.world().attempts.len(), 2);
    assert_eq!(job(&rig.shared, "j1").state, CommitJobState::Committed);
}

/// The connection breaks after the extrinsic landed but before its answer: the job stays queued
/// with the reason, the connection is withdrawn, the reconnect waits the first delay (the
/// backoff was reset by the earlier connection), and the retry finds the commitment on chain and
/// adopts it: one extrinsic in all.
#[tokio::test(start_paused = true)]
async fn a_connection_lost_after_the_extrinsic_landed_reconnects_and_adopts_it() {
    let mut rig = Rig::new();
    rig.world().script.push_back(Outcome::LandsThenDrops);
    queue(&rig.shared, "j1", "ours:1");
    rig.turn().await;

    let j = job(&rig.shared, "j1");
    assert_eq!(j.state, CommitJobState::Queued);
    assert!(
        j.error
            .as_deref()
            .is_some_and(|e| e.starts_with("chain unreachable")),
        "{:?}",
        j.error
    );
    assert_eq!(rig.world().shared, [true, false]);
    assert!(ledger(&rig.shared).is_empty());
    assert!(rig.heard.all().is_empty());

    tokio::time::sleep(Duration::from_millis(999)).await;
    rig.turn().await;
    assert_eq!(rig.world().attempts.len(), 1, "not before the first delay");
    tokio::time::sleep(Duration::from_millis(1)).await;
    rig.turn().await;

    assert_eq!(rig.world().extrinsics.len(), 1, "one extrinsic in all");
    let j = job(&rig.shared, "j1");
    assert_eq!(
        (j.state, j.block, j.error),
        (CommitJobState::Committed, Some(101), None)
    );
    assert_eq!(rig.heard.all(), [heard("j1", "ours:1", 101)]);
}

/// `SpaceLimitExceeded` at block 100 (netuid 1, tempo 10) defers the job to block 108, the next
/// epoch's first: it stays queued with the reason, nothing is submitted before that block, and
/// at it the job is submitted again and committed.
#[tokio::test(start_paused = true)]
async fn the_space_limit_defers_the_job_to_the_next_epoch() {
    let mut rig = Rig::new();
    rig.world()
        .script
        .push_back(Outcome::Dispatch("SpaceLimitExceeded"));
    queue(&rig.shared, "j1", "ours:1");
    rig.turn().await;

    let j = job(&rig.shared, "j1");
    assert_eq!(
        (j.state, j.not_before_block),
        (CommitJobState::Queued, Some(108))
    );
    assert_eq!(
        j.error.as_deref(),
        Some("Commitments.SpaceLimitExceeded: waiting for the next epoch (block 108)")
    );

    rig.world().block = 107;
    rig.turn().await;
    assert_eq!(rig.world().extrinsics.len(), 1, "nothing before block 108");

    rig.world().block = 108;
    rig.turn().await;
    assert_eq!(rig.world().extrinsics.len(), 2);
    let j = job(&rig.shared, "j1");
    assert_eq!(
        (j.state, j.block, j.error),
        (CommitJobState::Committed, Some(109), None)
    );
}

/// `AccountNotAllowedCommit` fails the job for good with the chain's reason in words (the
/// hotkey is not registered on the netuid); it is never retried, recorded or announced.
#[tokio::test(start_paused = true)]
async fn an_unregistered_hotkey_fails_the_job_with_the_chains_reason_and_no_retry() {
    let mut rig = Rig::new();
    rig.world()
        .script
        .push_back(Outcome::Dispatch("AccountNotAllowedCommit"));
    queue(&rig.shared, "j1", "ours:1");
    rig.turn().await;
    rig.turn().await;

    let j = job(&rig.shared, "j1");
    let ss58 = rig.shared.hotkey.as_ref().unwrap().ss58().to_string();
    assert_eq!(j.state, CommitJobState::Failed);
    assert_eq!(
        j.error,
        Some(format!(
            "hotkey {ss58} is not registered on netuid 1 (Commitments.AccountNotAllowedCommit)"
        ))
    );
    assert_eq!(rig.world().extrinsics.len(), 1, "no retry");
    assert!(ledger(&rig.shared).is_empty());
    assert!(rig.heard.all().is_empty());
}

/// Any other pallet error fails the job with the pallet's own `Pallet.Error` name, no retry.
#[tokio::test(start_paused = true)]
async fn another_pallet_error_fails_the_job_with_its_name() {
    let mut rig = Rig::new();
    rig.world()
        .script
        .push_back(Outcome::Dispatch("TooManyFieldsInCommitmentInfo"));
    queue(&rig.shared, "j1", "ours:1");
    rig.turn().await;
    rig.turn().await;

    let j = job(&rig.shared, "j1");
    assert_eq!(
        (j.state, j.error.as_deref()),
        (
            CommitJobState::Failed,
            Some("Commitments.TooManyFieldsInCommitmentInfo")
        )
    );
    assert_eq!(rig.world().extrinsics.len(), 1, "no retry");
}

/// A commitment included but not what `CommitmentOf` reads back is not recorded as ours: the
/// job stays queued with the reason, nothing goes to the ledger or the bus.
#[tokio::test(start_paused = true)]
async fn a_commitment_that_does_not_read_back_is_not_recorded() {
    let mut rig = Rig::new();
    rig.world().script.push_back(Outcome::Overwritten);
    queue(&rig.shared, "j1", "ours:1");
    rig.turn().await;

    let j = job(&rig.shared, "j1");
    assert_eq!(j.state, CommitJobState::Queued);
    assert!(
        j.error
            .as_deref()
            .is_some_and(|e| e.contains("reads back") && e.contains("someone else's")),
        "{:?}",
        j.error
    );
    assert!(ledger(&rig.shared).is_empty());
    assert!(rig.heard.all().is_empty());
}

/// Jobs are written oldest first (job ids sort by creation time), whatever order they were
/// queued in, and announced and recorded in that order.
#[tokio::test(start_paused = true)]
async fn jobs_are_written_oldest_first() {
    let mut rig = Rig::new();
    for (id, c) in [("j3", "c3"), ("j1", "c1"), ("j2", "c2")] {
        queue(&rig.shared, id, c);
    }
    rig.turn().await;

    let sent: Vec<Vec<u8>> = ["c1", "c2", "c3"].map(|c| c.as_bytes().to_vec()).into();
    assert_eq!(rig.world().extrinsics, sent);
    let ids: Vec<String> = ledger(&rig.shared).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["j1", "j2", "j3"]);
    assert_eq!(
        rig.heard.all(),
        [
            heard("j1", "c1", 101),
            heard("j2", "c2", 102),
            heard("j3", "c3", 103)
        ]
    );
}

/// With nothing queued the worker still holds a connection (the interface needs it) and checks
/// it each pass: a dead one is withdrawn and mended after the first backoff delay.
#[tokio::test(start_paused = true)]
async fn an_idle_worker_mends_a_dead_connection() {
    let mut rig = Rig::new();
    rig.turn().await;
    assert_eq!(rig.world().shared, [true]);

    rig.world().generation += 1;
    rig.turn().await;
    assert_eq!(rig.world().shared, [true, false]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.turn().await;
    assert_eq!(rig.world().shared, [true, false, true]);
    assert!(rig.world().extrinsics.is_empty());
}

/// The retry block after a space-limit refusal is subtensor's next epoch start.
#[test]
fn the_next_epoch_follows_subtensors_formula() {
    // tempo 10, netuid 1: the epoch index (block + 2) / 11 turns at 9, 20, 31, ...
    assert_eq!(next_epoch_start(0, 1, 10), 9);
    assert_eq!(next_epoch_start(8, 1, 10), 9);
    assert_eq!(next_epoch_start(9, 1, 10), 20);
    assert_eq!(next_epoch_start(10, 1, 10), 20);
    assert_eq!(next_epoch_start(5, 1, 0), 6);
}

/// An offline committer at the default configuration.
fn offline(dir: &std::path::Path) -> Shared {
    Shared::open(Config::default(), dir, None).unwrap()
}

/// Offline, queued jobs are appended to the ledger oldest first with its own sequence (1, 2),
/// marked committed with that block and announced; a later pass appends nothing.
#[tokio::test]
async fn offline_queued_jobs_are_appended_to_the_ledger_once() {
    let dir = tempfile::tempdir().unwrap();
    let shared = offline(dir.path());
    let heard_ = Heard::default();
    queue(&shared, "j2", "c2");
    queue(&shared, "j1", "c1");
    commit_queued(&shared, &heard_).await;
    commit_queued(&shared, &heard_).await;

    assert_eq!(
        ledger(&shared),
        [("j1".to_string(), 1), ("j2".to_string(), 2)]
    );
    assert_eq!(job(&shared, "j2").block, Some(2));
    assert_eq!(heard_.all(), [heard("j1", "c1", 1), heard("j2", "c2", 2)]);
    let text = std::fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
    assert_eq!(text.lines().count(), 2);
}

/// Offline, we died after the ledger line but before the job was marked: on restart the job is
/// adopted at the ledger's block, with no second line.
#[tokio::test]
async fn offline_a_job_already_in_the_ledger_is_adopted_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let shared = offline(dir.path());
    queue(&shared, "j1", "c1");
    let mut record = taominer_core::bus::CommitmentRecord {
        block: 0,
        job_id: "j1".into(),
        netuid: 9,
        hotkey: "h".into(),
        data_type: "Raw2".into(),
        commitment: "c1".into(),
        time: 0,
    };
    record = shared.ledger().append(record).unwrap();
    drop(shared);

    let shared = offline(dir.path());
    let heard_ = Heard::default();
    commit_queued(&shared, &heard_).await;
    let j = job(&shared, "j1");
    assert_eq!((j.state, j.block), (CommitJobState::Committed, Some(1)));
    assert_eq!(ledger(&shared), [("j1".to_string(), record.block)]);
    let text = std::fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
    assert_eq!(text.lines().count(), 1, "no second line");
    assert_eq!(heard_.all(), [heard("j1", "c1", 1)]);
}

/// Offline, we died mid-append: the torn, never acknowledged record is cut on restart and the
/// still-queued job is written once, on a clean line.
#[tokio::test]
async fn offline_a_record_torn_by_a_crash_is_cut_and_the_job_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let shared = offline(dir.path());
    queue(&shared, "j1", "c1");
    drop(shared);
    let mut f = std::fs::File::create(dir.path().join(LEDGER_FILE)).unwrap();
    f.write_all(b"{\"block\":1,\"job_id\":\"j1\",\"net")
        .unwrap();
    drop(f);

    let shared = offline(dir.path());
    commit_queued(&shared, &Heard::default()).await;
    assert_eq!(ledger(&shared), [("j1".to_string(), 1)]);
    drop(shared);
    let shared = offline(dir.path());
    assert_eq!(ledger(&shared), [("j1".to_string(), 1)], "reads back whole");
    let text = std::fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
    assert_eq!(text.lines().count(), 1);
}
