//! The worker's state machine and retry rules, proved in milliseconds: the real loop
//! ([`super::work`]) and the real steps (staging, pre-flight, upload, re-download and hashing)
//! run against an in-memory Hub, committer and signal bus, on tokio's paused clock, so the
//! backoff delays are measured exactly without waiting for them. The cross-process tests
//! (`tests/tests/hub.rs`, `pipeline.rs`, `faults.rs`) prove the same paths against the real
//! peers; these say which rule broke when one of them fails.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taominer_core::bus::{CommitJobState, CommitState, LiveModel};
use taominer_core::config::{Config, Sources, DEV_HOTKEY_SS58};
use taominer_core::daemon::runtime::Watchdog;
use tokio::time::Instant;

use super::work;
use crate::hub::upload::{LocalFile, Modes};
use crate::hub::{HubError, Sibling};
use crate::jobs::{JobState, PublishJob, Shared};
use crate::ports::{BoxFuture, CommitSink, HandOffError, HubClient, Signals};

const REPO: &str = "me/model";

/// One call to a fake: what was asked, when (tokio's clock), and what the job's file on disk
/// said at that moment (its state and last transient error).
#[derive(Debug, Clone)]
struct Call {
    op: String,
    at: Instant,
    disk: Option<JobState>,
    last_error: Option<String>,
}

/// Where the job under test is recorded, so every fake can note the state on disk when called.
#[derive(Clone, Default)]
struct Disk(Arc<Mutex<Option<PathBuf>>>);

impl Disk {
    fn read(&self) -> Option<PublishJob> {
        let path = self.0.lock().unwrap().clone()?;
        taominer_core::daemon::store::read_json::<PublishJob>(&path).unwrap()
    }

    fn call(&self, op: impl Into<String>) -> Call {
        let job = self.read();
        Call {
            op: op.into(),
            at: Instant::now(),
            disk: job.as_ref().map(|j| j.state),
            last_error: job.and_then(|j| j.last_error),
        }
    }
}

/// A commit of the fake Hub.
#[derive(Clone)]
struct FakeCommit {
    id: String,
    title: String,
    files: BTreeMap<String, Vec<u8>>,
}

#[derive(Default)]
struct HubState {
    commits: Vec<FakeCommit>,
    calls: Vec<Call>,
    /// Errors each operation answers, in order, before it succeeds.
    errors: BTreeMap<&'static str, VecDeque<HubError>>,
    /// Commits stored but answered with a dropped connection (the answer is lost).
    lose_commit_answers: usize,
    /// A file served with other bytes than were uploaded.
    corrupt: Option<String>,
    /// A call (as recorded, e.g. `files_at:commit`) that never answers: the process is
    /// "killed" while it waits.
    hang_at: Option<&'static str>,
    private: Option<bool>,
}

/// An in-memory Hub: commits hold the uploaded files' bytes, downloads write them back.
#[derive(Clone, Default)]
struct FakeHub {
    state: Arc<Mutex<HubState>>,
    disk: Disk,
}

impl FakeHub {
    fn fail(&self, op: &'static str, errors: impl IntoIterator<Item = HubError>) {
        self.state
            .lock()
            .unwrap()
            .errors
            .entry(op)
            .or_default()
            .extend(errors);
    }

    fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    fn count(&self, op: &str) -> usize {
        self.calls().iter().filter(|c| c.op == op).count()
    }

    fn commits(&self) -> Vec<FakeCommit> {
        self.state.lock().unwrap().commits.clone()
    }

    /// Records the call, then answers the next scripted error, a hang, or `Ok` to go on.
    async fn enter(&self, op: &'static str, detail: &str) -> Result<(), HubError> {
        let call = self.disk.call(if detail.is_empty() {
            op.to_string()
        } else {
            format!("{op}:{detail}")
        });
        let (hang, err) = {
            let mut s = self.state.lock().unwrap();
            let hang = s.hang_at == Some(call.op.as_str());
            s.calls.push(call);
            let err = s.errors.get_mut(op).and_then(VecDeque::pop_front);
            (hang, err)
        };
        if hang {
            std::future::pending::<()>().await;
        }
        err.map_or(Ok(()), Err)
    }

    fn commit_at(&self, revision: &str) -> Option<FakeCommit> {
        let s = self.state.lock().unwrap();
        if revision == "main" {
            s.commits.last().cloned()
        } else {
            s.commits.iter().find(|c| c.id == revision).cloned()
        }
    }
}

impl HubClient for FakeHub {
    fn create_repo<'a>(&'a self, _repo: &'a str) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(self.enter("create_repo", ""))
    }

    fn find_commit<'a>(
        &'a self,
        _repo: &'a str,
        marker: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, HubError>> {
        Box::pin(async move {
            self.enter("find_commit", "").await?;
            let s = self.state.lock().unwrap();
            Ok(s.commits
                .iter()
                .rev()
                .find(|c| c.title.contains(marker))
                .map(|c| c.id.clone()))
        })
    }

    fn files_at<'a>(
        &'a self,
        _repo: &'a str,
        revision: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Sibling>>, HubError>> {
        Box::pin(async move {
            let which = if revision == "main" { "main" } else { "commit" };
            self.enter("files_at", which).await?;
            Ok(self.commit_at(revision).map(|c| {
                c.files
                    .iter()
                    .map(|(name, bytes)| Sibling {
                        rfilename: name.clone(),
                        size: Some(bytes.len() as u64),
                    })
                    .collect()
            }))
        })
    }

    fn preupload<'a>(
        &'a self,
        _repo: &'a str,
        files: &'a [LocalFile],
    ) -> BoxFuture<'a, Result<Modes, HubError>> {
        Box::pin(async move {
            self.enter("preupload", "").await?;
            Ok(Modes {
                lfs: files
                    .iter()
                    .filter(|f| f.size > 0)
                    .map(|f| f.rel.clone())
                    .collect(),
                ignored: Default::default(),
            })
        })
    }

    fn upload_lfs<'a>(
        &'a self,
        _repo: &'a str,
        _files: &'a [&'a LocalFile],
        _progress: &'a Arc<AtomicU64>,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(self.enter("upload_lfs", ""))
    }

    fn commit<'a>(
        &'a self,
        _repo: &'a str,
        summary: &'a str,
        _description: &'a str,
        files: &'a [LocalFile],
        _modes: &'a Modes,
        _deletes: &'a [String],
    ) -> BoxFuture<'a, Result<String, HubError>> {
        Box::pin(async move {
            self.enter("commit", "").await?;
            let files = files
                .iter()
                .map(|f| (f.rel.clone(), std::fs::read(&f.path).unwrap()))
                .collect();
            let mut s = self.state.lock().unwrap();
            let id = format!("{:040x}", 0xc0ffee + s.commits.len());
            s.commits.push(FakeCommit {
                id: id.clone(),
                title: summary.to_string(),
                files,
            });
            if s.lose_commit_answers > 0 {
                s.lose_commit_answers -= 1;
                return Err(HubError::Transient("commit: connection reset".into()));
            }
            Ok(id)
        })
    }

    fn download<'a>(
        &'a self,
        _repo: &'a str,
        revision: &'a str,
        path: &'a str,
        dest: &'a Path,
        _max_bytes: u64,
        _alive: &'a Arc<AtomicU64>,
    ) -> BoxFuture<'a, Result<PathBuf, HubError>> {
        Box::pin(async move {
            self.enter("download", "").await?;
            let commit = self
                .commit_at(revision)
                .expect("download of a known revision");
            let mut bytes = commit.files.get(path).expect("a committed file").clone();
            if self.state.lock().unwrap().corrupt.as_deref() == Some(path) {
                bytes[0] ^= 0xff;
            }
            let out = dest.join(path);
            std::fs::create_dir_all(out.parent().unwrap()).unwrap();
            std::fs::write(&out, bytes).unwrap();
            Ok(out)
        })
    }

    fn set_private<'a>(
        &'a self,
        _repo: &'a str,
        private: bool,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(async move {
            self.enter("set_private", "").await?;
            self.state.lock().unwrap().private = Some(private);
            Ok(())
        })
    }
}

/// What a hand-off the fake committer answers; once its script is used up it answers
/// `committed` at block 100.
enum Answer {
    Reply(Result<CommitState, HandOffError>),
    Hang,
}

#[derive(Default)]
struct FakeSink {
    script: Mutex<VecDeque<Answer>>,
    calls: Mutex<Vec<(Call, String)>>,
    disk: Disk,
}

impl FakeSink {
    fn answer(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().extend(answers);
    }

    fn calls(&self) -> Vec<(Call, String)> {
        self.calls.lock().unwrap().clone()
    }
}

fn queued() -> Answer {
    Answer::Reply(Ok(CommitState {
        state: CommitJobState::Queued,
        block: 0,
    }))
}

impl CommitSink for FakeSink {
    fn commit<'a>(
        &'a self,
        _job_id: &'a str,
        commitment: &'a str,
    ) -> BoxFuture<'a, Result<CommitState, HandOffError>> {
        Box::pin(async move {
            let call = self.disk.call("commit");
            self.calls
                .lock()
                .unwrap()
                .push((call, commitment.to_string()));
            let next = self.script.lock().unwrap().pop_front();
            match next {
                Some(Answer::Reply(r)) => r,
                Some(Answer::Hang) => std::future::pending().await,
                None => Ok(CommitState {
                    state: CommitJobState::Committed,
                    block: 100,
                }),
            }
        })
    }
}

#[derive(Default)]
struct FakeSignals {
    published: Mutex<Vec<(Call, String)>>,
    live: Mutex<Vec<LiveModel>>,
    disk: Disk,
}

impl Signals for FakeSignals {
    fn published<'a>(
        &'a self,
        _job_id: &'a str,
        _repo: &'a str,
        commit: &'a str,
        _model_hash: &'a str,
        _secure_hash: &'a str,
    ) -> BoxFuture<'a, zbus::Result<()>> {
        let call = self.disk.call("published");
        self.published
            .lock()
            .unwrap()
            .push((call, commit.to_string()));
        Box::pin(async { Ok(()) })
    }

    fn model_went_live(&self, model: LiveModel) -> BoxFuture<'_, zbus::Result<()>> {
        self.live.lock().unwrap().push(model);
        Box::pin(async { Ok(()) })
    }
}

/// A publisher's state directory, its fakes, and one job.
struct Rig {
    dir: tempfile::TempDir,
    config: Config,
    shared: Arc<Shared>,
    hub: FakeHub,
    sink: FakeSink,
    signals: FakeSignals,
    id: String,
}

/// Online, SN9 competition 2 with its parameter minimum lowered for a tiny model, and Hub and
/// committer retries starting at 1 s and capped at 8 s.
fn config(extra: &[&str]) -> Config {
    let mut overrides: Vec<String> = [
        "miner.offline=false",
        &format!("miner.hotkey_ss58={DEV_HOTKEY_SS58}"),
        &format!("publisher.repo={REPO}"),
        "publisher.limits.2.min_parameters=0",
        "publisher.make_public_after_commit=false",
        "retry.initial_ms=1000",
        "retry.max_ms=8000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    overrides.extend(extra.iter().map(|s| s.to_string()));
    Config::load(&Sources {
        file: None,
        overrides,
        env: false,
    })
    .unwrap()
}

/// A small LLaMA-like model directory: config, one safetensors tensor, a tokenizer.
fn model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}"#,
    )
    .unwrap();
    let n = 256u64;
    let mut header = format!(
        r#"{{"model.embed_tokens.weight":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
        n * 4
    )
    .into_bytes();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(&header);
    st.extend((0..n * 4).map(|i| (i * 7 % 251) as u8));
    std::fs::write(dir.join("model.safetensors"), st).unwrap();
    std::fs::write(dir.join("tokenizer.json"), br#"{"v":1}"#).unwrap();
}

impl Rig {
    /// A fresh state directory with one `received` job for a valid model.
    fn new(extra: &[&str]) -> Rig {
        Rig::with_source(extra, model)
    }

    fn with_source(extra: &[&str], source: impl FnOnce(&Path)) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        source(&src);
        let config = config(extra);
        let disk = Disk::default();
        let hub = FakeHub {
            disk: disk.clone(),
            ..Default::default()
        };
        let shared = open(&config, dir.path(), &hub);
        let id = taominer_core::daemon::store::new_job_id();
        shared
            .update(PublishJob {
                id: id.clone(),
                state: JobState::Received,
                source: src,
                competition: "2".into(),
                repo: REPO.into(),
                hotkey: DEV_HOTKEY_SS58.into(),
                created: 1,
                snapshot: None,
                block: None,
                error: None,
                last_error: None,
                digests: BTreeMap::new(),
                hub_commit: None,
                public: None,
                declared: false,
                caller: None,
                key: None,
            })
            .unwrap();
        *disk.0.lock().unwrap() = Some(dir.path().join("jobs").join(format!("{id}.json")));
        Rig {
            config,
            shared,
            sink: FakeSink {
                disk: disk.clone(),
                ..Default::default()
            },
            signals: FakeSignals {
                disk,
                ..Default::default()
            },
            hub,
            id,
            dir,
        }
    }

    /// The job as recorded on disk.
    fn job(&self) -> PublishJob {
        self.hub.disk.read().unwrap()
    }

    /// Runs the worker until the recorded job satisfies `done`, then `settle` longer (to show
    /// nothing more happens); returns the job as recorded. Dropping the worker then is what a
    /// `kill -9` does to it. Fails after ten virtual minutes.
    async fn drive(&self, done: impl Fn(&PublishJob) -> bool, settle: Duration) -> PublishJob {
        let worker = work(
            self.shared.clone(),
            &self.sink,
            &self.signals,
            Watchdog::from_env(),
        );
        let watch = async {
            while !done(&self.job()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(settle).await;
        };
        let limit = Duration::from_secs(600);
        tokio::select! {
            _ = worker => unreachable!("the worker never returns"),
            r = tokio::time::timeout(limit, watch) => {
                r.unwrap_or_else(|_| panic!("job still {:?} after {limit:?}", self.job()))
            }
        }
        self.job()
    }

    /// A restarted publisher: the same state directory and Hub, a new process's memory.
    fn restart(&mut self) {
        self.shared = open(&self.config, self.dir.path(), &self.hub);
    }
}

fn open(config: &Config, dir: &Path, hub: &FakeHub) -> Arc<Shared> {
    Arc::new(
        Shared::open(
            config.clone(),
            dir.to_path_buf(),
            Some(Box::new(hub.clone())),
        )
        .unwrap(),
    )
}

fn committed(j: &PublishJob) -> bool {
    j.state == JobState::Committed
}

fn ended(j: &PublishJob) -> bool {
    matches!(
        j.state,
        JobState::Committed | JobState::Failed | JobState::Rejected
    )
}

/// Milliseconds between consecutive calls.
fn gaps(calls: &[Call]) -> Vec<u128> {
    calls
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect()
}

/// Proves: a job walks received → staged → uploaded → hashed → handed-off → committed, and
/// each state is on disk before the next step's first outside call: the upload's Hub calls see
/// `staged`, the re-download's see `uploaded`, `Published` and the first `Commit` see `hashed`,
/// the second `Commit` sees `handed-off`, and making the repository public sees `committed`.
/// The committer gets the commitment of the Hub's commit, and `ModelWentLive` names the job.
#[tokio::test(start_paused = true)]
async fn a_job_walks_every_state_in_order_each_recorded_before_the_next() {
    let rig = Rig::new(&["publisher.make_public_after_commit=true"]);
    rig.sink.answer([queued()]);
    let job = rig.drive(|j| j.public.is_some(), Duration::ZERO).await;

    assert_eq!(job.state, JobState::Committed);
    assert_eq!((job.block, job.public), (Some(100), Some(true)));
    let commits = rig.hub.commits();
    assert_eq!(commits.len(), 1);
    let snapshot = job.snapshot.clone().unwrap();
    assert_eq!(snapshot.commit, commits[0].id);
    assert_eq!(job.hub_commit.as_deref(), Some(commits[0].id.as_str()));
    assert!(snapshot.commitment.contains(&commits[0].id));

    let seen: Vec<(String, Option<JobState>)> = rig
        .hub
        .calls()
        .into_iter()
        .map(|c| (c.op, c.disk))
        .collect();
    let staged = Some(JobState::Staged);
    let uploaded = Some(JobState::Uploaded);
    let committed_ = Some(JobState::Committed);
    assert_eq!(
        seen,
        [
            ("create_repo".into(), staged),
            ("find_commit".into(), staged),
            ("files_at:main".into(), staged),
            ("preupload".into(), staged),
            ("upload_lfs".into(), staged),
            ("commit".into(), staged),
            ("files_at:commit".into(), uploaded),
            // config.json, model.safetensors, tokenizer.json: what validators fetch.
            ("download".into(), uploaded),
            ("download".into(), uploaded),
            ("download".into(), uploaded),
            ("set_private".into(), committed_),
        ]
    );
    let published = rig.signals.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].0.disk, Some(JobState::Hashed));
    assert_eq!(published[0].1, commits[0].id);
    let handoffs = rig.sink.calls();
    let states: Vec<_> = handoffs.iter().map(|(c, _)| c.disk).collect();
    assert_eq!(states, [Some(JobState::Hashed), Some(JobState::HandedOff)]);
    assert!(handoffs.iter().all(|(_, c)| *c == snapshot.commitment));
    let live = rig.signals.live.lock().unwrap().clone();
    assert_eq!(live.len(), 1);
    assert_eq!(
        (live[0].job_id.as_str(), live[0].block),
        (rig.id.as_str(), 100)
    );
    assert_eq!(rig.hub.state.lock().unwrap().private, Some(false));
    // The copies are gone once the Hub holds the bytes and they are verified.
    assert!(!rig.shared.staged_dir(&rig.id).exists());
    assert!(!rig.shared.verify_dir(&rig.id).exists());
}

/// Proves: transient Hub errors (503, a dropped connection) are retried on the jittered
/// backoff schedule, each wait within [½, 1] of its step (1 s, 2 s, 4 s), each error recorded
/// as the job's last error while it waits, and the job then goes on and clears it.
#[tokio::test(start_paused = true)]
async fn transient_hub_errors_are_retried_on_the_backoff_schedule_then_succeed() {
    let rig = Rig::new(&[]);
    rig.hub.fail(
        "create_repo",
        [
            HubError::Transient("create repository: HTTP 503 Service Unavailable".into()),
            HubError::Transient("create repository: connection reset".into()),
            HubError::Transient("create repository: HTTP 503 Service Unavailable".into()),
        ],
    );
    let job = rig.drive(committed, Duration::ZERO).await;

    let tries: Vec<Call> = rig
        .hub
        .calls()
        .into_iter()
        .filter(|c| c.op == "create_repo")
        .collect();
    assert_eq!(tries.len(), 4);
    for (gap, step) in gaps(&tries).into_iter().zip([1000u128, 2000, 4000]) {
        assert!(
            (step / 2..=step + 1).contains(&gap),
            "waited {gap} ms on a {step} ms step"
        );
    }
    assert_eq!(tries[0].last_error, None);
    assert!(tries[1].last_error.as_deref().unwrap().contains("503"));
    assert!(tries[2].last_error.as_deref().unwrap().contains("reset"));
    assert_eq!(job.last_error, None);
    assert_eq!(rig.hub.commits().len(), 1);
}

/// Proves: a rejected token (401/403) fails the job at once with the Hub's reason: one
/// attempt, no wait, nothing uploaded, nothing handed to the committer, the staged copy
/// removed, and nothing more happens in the next minute.
#[tokio::test(start_paused = true)]
async fn a_rejected_token_fails_the_job_at_once_without_retrying() {
    let rig = Rig::new(&[]);
    rig.hub.fail(
        "create_repo",
        [HubError::TokenRejected("401 for create repository".into())],
    );
    let start = Instant::now();
    let job = rig.drive(ended, Duration::from_secs(60)).await;

    assert_eq!(job.state, JobState::Failed);
    let error = job.error.unwrap();
    assert!(
        error.contains("HF token rejected") && error.contains("401"),
        "{error}"
    );
    let calls = rig.hub.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].at, start, "the attempt was not delayed");
    assert!(rig.sink.calls().is_empty());
    assert!(!rig.shared.staged_dir(&rig.id).exists());
}

/// Proves: a request the Hub refuses (a 4xx other than 401/403, here a 422 on the commit)
/// fails the job with the Hub's answer after one attempt, and nothing reaches the committer.
#[tokio::test(start_paused = true)]
async fn a_refused_hub_request_fails_the_job_with_the_hubs_reason() {
    let rig = Rig::new(&[]);
    rig.hub.fail(
        "commit",
        [HubError::Refused(
            "commit: HTTP 422 Unprocessable Entity: lfs object missing".into(),
        )],
    );
    let job = rig.drive(ended, Duration::from_secs(60)).await;

    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.error.as_deref(),
        Some("commit: HTTP 422 Unprocessable Entity: lfs object missing")
    );
    assert_eq!(rig.hub.count("commit"), 1);
    assert!(rig.hub.commits().is_empty());
    assert!(rig.sink.calls().is_empty());
}

/// Proves: when the Hub made the commit but its answer was lost (a dropped connection), the
/// retry finds the job's commit by its marker and adopts it: one commit on the Hub, one upload
/// of the objects, and the job is committed with that commit.
#[tokio::test(start_paused = true)]
async fn a_commit_whose_answer_was_lost_is_adopted_not_made_twice() {
    let rig = Rig::new(&[]);
    rig.hub.state.lock().unwrap().lose_commit_answers = 1;
    let job = rig.drive(committed, Duration::ZERO).await;

    let commits = rig.hub.commits();
    assert_eq!(commits.len(), 1);
    assert!(commits[0]
        .title
        .contains(&format!("taominer job {}", rig.id)));
    assert_eq!(job.hub_commit.as_deref(), Some(commits[0].id.as_str()));
    assert_eq!(rig.hub.count("commit"), 1);
    assert_eq!(rig.hub.count("upload_lfs"), 1);
    assert_eq!(rig.hub.count("find_commit"), 2);
}

/// Proves: a publisher killed at each recorded state (`staged`, `uploaded`, `hashed`,
/// `handed-off`: the next step's outside call never answers, then the worker is dropped)
/// resumes from that state after a restart: the job ends committed with exactly one Hub commit
/// and one upload, the upload is not repeated once the job is `uploaded`, the Hub is not asked
/// again once it is `hashed`, and the committer gets the same commitment again.
#[tokio::test(start_paused = true)]
async fn a_restart_at_each_recorded_state_resumes_there() {
    for state in [
        JobState::Staged,
        JobState::Uploaded,
        JobState::Hashed,
        JobState::HandedOff,
    ] {
        let mut rig = Rig::new(&[]);
        match state {
            JobState::Staged => rig.hub.state.lock().unwrap().hang_at = Some("create_repo"),
            JobState::Uploaded => {
                // Not `files_at:main`, the upload's first look: the verify step's.
                rig.hub.state.lock().unwrap().hang_at = Some("files_at:commit")
            }
            JobState::Hashed => rig.sink.answer([Answer::Hang]),
            _ => rig.sink.answer([queued(), Answer::Hang]),
        }
        let hung = |j: &PublishJob| j.state == state;
        let before = rig.drive(hung, Duration::from_secs(1)).await;
        assert_eq!(before.state, state);
        let hub_calls_before = rig.hub.calls().len();
        let handoffs_before = rig.sink.calls().len();

        rig.hub.state.lock().unwrap().hang_at = None;
        rig.restart();
        let job = rig.drive(committed, Duration::ZERO).await;

        assert_eq!(rig.hub.commits().len(), 1, "restart at {state:?}");
        assert_eq!(rig.hub.count("upload_lfs"), 1, "restart at {state:?}");
        let again: Vec<String> = rig.hub.calls()[hub_calls_before..]
            .iter()
            .map(|c| c.op.clone())
            .collect();
        if state != JobState::Staged {
            assert!(
                !again.iter().any(|op| op == "create_repo" || op == "commit"),
                "restart at {state:?} uploaded again: {again:?}"
            );
        }
        if matches!(state, JobState::Hashed | JobState::HandedOff) {
            assert!(
                again.is_empty(),
                "restart at {state:?} asked the Hub: {again:?}"
            );
        }
        let handoffs = rig.sink.calls();
        assert!(handoffs.len() > handoffs_before);
        let commitment = job.snapshot.unwrap().commitment;
        assert!(handoffs.iter().all(|(_, c)| *c == commitment));
    }
}

/// Proves: a model the competition's pre-flight refuses (an architecture SN9 does not take)
/// ends `rejected` with the reason, and the Hub and the committer are never called.
#[tokio::test(start_paused = true)]
async fn a_preflight_rejection_sends_nothing_to_the_hub() {
    let rig = Rig::with_source(&[], |dir| {
        model(dir);
        std::fs::write(
            dir.join("config.json"),
            r#"{"architectures": ["BertForMaskedLM"]}"#,
        )
        .unwrap();
    });
    let job = rig.drive(ended, Duration::from_secs(10)).await;

    assert_eq!(job.state, JobState::Rejected);
    assert!(job.error.unwrap().contains("BertForMaskedLM"));
    assert!(rig.hub.calls().is_empty());
    assert!(rig.sink.calls().is_empty());
    assert!(!rig.shared.staged_dir(&rig.id).exists());
}

/// Proves: a re-downloaded file that differs from the staged one (a corrupted transfer) fails
/// the job naming the file, and no commitment goes to the committer.
#[tokio::test(start_paused = true)]
async fn a_corrupted_download_fails_the_job_and_commits_nothing() {
    let rig = Rig::new(&[]);
    rig.hub.state.lock().unwrap().corrupt = Some("model.safetensors".into());
    let job = rig.drive(ended, Duration::from_secs(10)).await;

    assert_eq!(job.state, JobState::Failed);
    let error = job.error.unwrap();
    assert!(
        error.contains("model.safetensors") && error.contains("not committing"),
        "{error}"
    );
    assert!(rig.sink.calls().is_empty());
    assert!(!rig.shared.verify_dir(&rig.id).exists());
}

/// Proves: a committer that is not running is asked again on the exact (unjittered) backoff
/// schedule, 1 s, 2 s, 4 s, without noting an error on the job, and the job is committed
/// once it answers.
#[tokio::test(start_paused = true)]
async fn a_committer_that_is_not_running_is_retried_on_the_exact_schedule() {
    let rig = Rig::new(&[]);
    let down = || Answer::Reply(Err(HandOffError::NotRunning));
    rig.sink.answer([down(), down(), down()]);
    let job = rig.drive(committed, Duration::ZERO).await;

    let calls: Vec<Call> = rig.sink.calls().into_iter().map(|(c, _)| c).collect();
    assert_eq!(calls.len(), 4);
    assert_eq!(gaps(&calls), [1000, 2000, 4000]);
    assert!(calls.iter().all(|c| c.last_error.is_none()));
    assert_eq!(job.block, Some(100));
}

/// Proves: any other hand-off failure (the committer cannot write yet) is noted on the job as
/// `committer: …` while it is retried, and cleared when the job is committed.
#[tokio::test(start_paused = true)]
async fn a_failing_committer_is_noted_on_the_job_and_retried() {
    let rig = Rig::new(&[]);
    rig.sink.answer([Answer::Reply(Err(HandOffError::Other(
        "cannot write the ledger".into(),
    )))]);
    let job = rig.drive(committed, Duration::ZERO).await;

    let calls = rig.sink.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].0.last_error.as_deref(),
        Some("committer: cannot write the ledger")
    );
    assert_eq!(gaps(&[calls[0].0.clone(), calls[1].0.clone()]), [1000]);
    assert_eq!(job.last_error, None);
}

/// Proves: the committer refusing the commitment fails the job with its reason, and the job
/// is never offered again.
#[tokio::test(start_paused = true)]
async fn a_committer_refusal_fails_the_job_and_it_is_not_offered_again() {
    let rig = Rig::new(&[]);
    rig.sink.answer([Answer::Reply(Err(HandOffError::Refused(
        "the commitment names another repository".into(),
    )))]);
    let job = rig.drive(ended, Duration::from_secs(120)).await;

    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.error.as_deref(),
        Some("committer refused: the commitment names another repository")
    );
    assert_eq!(rig.sink.calls().len(), 1);
    assert!(rig.signals.live.lock().unwrap().is_empty());
}

/// Proves: a repository the Hub will not make public leaves the job committed, with
/// `public = false` and the reason as its last error, and it is not tried again.
#[tokio::test(start_paused = true)]
async fn a_repository_that_cannot_be_made_public_leaves_the_job_committed() {
    let rig = Rig::new(&["publisher.make_public_after_commit=true"]);
    rig.hub.fail(
        "set_private",
        [HubError::Refused(
            "update repository settings: HTTP 404 Not Found".into(),
        )],
    );
    let job = rig
        .drive(|j| j.public.is_some(), Duration::from_secs(60))
        .await;

    assert_eq!(job.state, JobState::Committed);
    assert_eq!(job.public, Some(false));
    assert_eq!(
        job.last_error.as_deref(),
        Some("making the repository public: update repository settings: HTTP 404 Not Found")
    );
    assert_eq!(rig.hub.count("set_private"), 1);
}
