//! Publish jobs: the durable record of each model handed to the publisher.
//!
//! A job moves `received → staged → uploaded → hashed → handed-off → committed` (offline:
//! `received → hashed → …`, there is nothing to upload), or ends `rejected` (the pre-flight
//! refused it; nothing was uploaded) or `failed`. Every move is written to disk before anything
//! else happens, so a restarted publisher resumes exactly where the last one stopped: it
//! re-stages `received` jobs, re-uploads `staged` ones (re-using a commit the Hub already has),
//! re-verifies `uploaded` ones, and re-offers `hashed`/`handed-off` ones to the committer, which
//! recognises job ids it already has.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
pub use taominer_core::bus::JobState;
use taominer_core::bus::{LiveModel, PublishJobInfo, WorkState};
use taominer_core::config::Config;
use taominer_core::daemon::store::{Job, JobStore};

use crate::error::Result;
use crate::ports::HubClient;

/// What staging produced: the identity of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Revision: the Hub commit, or offline the git tree id of the staged snapshot.
    pub commit: String,
    pub model_hash: String,
    pub secure_hash: String,
    /// The exact commitment string for the chain.
    pub commitment: String,
    pub files: usize,
    pub bytes: u64,
}

/// One publish job as stored in `jobs/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishJob {
    pub id: String,
    pub state: JobState,
    pub source: PathBuf,
    pub competition: String,
    pub repo: String,
    pub hotkey: String,
    pub created: u64,
    #[serde(default)]
    pub snapshot: Option<Snapshot>,
    #[serde(default)]
    pub block: Option<u64>,
    /// Why the job ended `failed` or `rejected`.
    #[serde(default)]
    pub error: Option<String>,
    /// The last transient error while the job is being retried (shown by `minerctl jobs`).
    #[serde(default)]
    pub last_error: Option<String>,
    /// sha256 (hex) of each staged file, by repository path (online): the LFS object ids, and
    /// what the re-downloaded files must match.
    #[serde(default)]
    pub digests: BTreeMap<String, String>,
    /// The commit the Hub assigned to our upload.
    #[serde(default)]
    pub hub_commit: Option<String>,
    /// Whether the repository was made public after the commitment (`make_public_after_commit`):
    /// `None` not yet, `Some(false)` tried and failed (see `last_error`).
    #[serde(default)]
    pub public: Option<bool>,
    /// A model already on the Hub that the configuration names (SoundsRight's
    /// `soundsright.models`): nothing is uploaded, the job starts `uploaded` at the configured
    /// revision, and the download is checked and hashed as validators will, not compared with a
    /// staged copy.
    #[serde(default)]
    pub declared: bool,
    /// Who asked (from the bus daemon): staging reads only what this caller could. `None` for
    /// the configured model and jobs recorded before callers were.
    #[serde(default)]
    pub caller: Option<crate::access::Caller>,
    /// The caller's idempotence key (`Publish`'s `key`; the trainer's checkpoint key): a second
    /// `Publish` from the same uid with the same key is answered with this job. `None` when the
    /// caller gave none, for the configured model, and for jobs recorded before keys were.
    #[serde(default)]
    pub key: Option<String>,
}

impl Job for PublishJob {
    fn id(&self) -> &str {
        &self.id
    }
}

impl PublishJob {
    /// The form `Jobs()` returns over D-Bus.
    pub fn info(&self) -> PublishJobInfo {
        let snap = self.snapshot.as_ref();
        let s = |f: fn(&Snapshot) -> &String| snap.map(f).cloned().unwrap_or_default();
        PublishJobInfo {
            id: self.id.clone(),
            state: self.state,
            source: self.source.display().to_string(),
            competition: self.competition.clone(),
            repo: self.repo.clone(),
            commit: s(|x| &x.commit),
            model_hash: s(|x| &x.model_hash),
            secure_hash: s(|x| &x.secure_hash),
            commitment: s(|x| &x.commitment),
            block: self.block.unwrap_or(0),
            error: self
                .error
                .clone()
                .or_else(|| self.last_error.as_ref().map(|e| format!("retrying: {e}")))
                .unwrap_or_default(),
            created: self.created,
            // Filled by `Jobs()` from the upload in progress ([`crate::transfer`]).
            uploaded_bytes: 0,
            total_bytes: 0,
        }
    }
}

/// The publisher's state, shared by the D-Bus interface and the worker.
pub struct Shared {
    pub config: Config,
    /// The Hub client; `None` offline. Behind [`HubClient`] so the worker's tests can give it a
    /// fake Hub.
    pub hub: Option<Box<dyn HubClient>>,
    pub state_dir: PathBuf,
    pub jobs: Mutex<JobStore<PublishJob>>,
    /// Wakes the worker when there is new work.
    pub wake: tokio::sync::Notify,
    /// The uploads in progress, for `Jobs()`' byte counts.
    pub transfers: crate::transfer::Transfers,
}

impl Shared {
    pub fn open(
        config: Config,
        state_dir: PathBuf,
        hub: Option<Box<dyn HubClient>>,
    ) -> Result<Shared> {
        let jobs = JobStore::open(&state_dir.join("jobs"))?;
        Ok(Shared {
            config,
            hub,
            state_dir,
            jobs: Mutex::new(jobs),
            wake: tokio::sync::Notify::new(),
            transfers: Default::default(),
        })
    }

    /// Makes sure the model the configuration names (SoundsRight's `soundsright.models`) has a
    /// job: a new one starts `uploaded` at the configured revision, so the pipeline checks that
    /// the commit exists on the Hub, downloads it, runs the validators' container checks, hashes
    /// it and hands the commitment to the committer, which writes it only if the chain holds
    /// something else. Returns the new job's id; `None` when there is nothing to declare or the
    /// same model (repo, revision, competition) already has a job.
    pub fn declare_configured_model(&self) -> Result<Option<String>> {
        let Some((competition, model)) = self.config.soundsright.model() else {
            return Ok(None);
        };
        if self.config.miner.offline {
            tracing::warn!(
                "offline: soundsright.models.{competition} is served but neither checked on the Hub nor committed"
            );
            return Ok(None);
        }
        let repo = format!("{}/{}", model.namespace, model.name);
        let mut jobs = self.jobs();
        if jobs.all().any(|j| {
            j.declared
                && j.repo == repo
                && j.competition == competition
                && j.hub_commit.as_deref() == Some(model.revision.as_str())
        }) {
            return Ok(None);
        }
        let hotkey = self
            .config
            .miner
            .hotkey()
            .ok_or_else(|| crate::error::Error::Invalid("miner.hotkey_ss58 is unset".into()))?
            .to_string();
        let job = PublishJob {
            id: taominer_core::daemon::store::new_job_id(),
            state: JobState::Uploaded,
            source: PathBuf::from(format!("hf://{repo}@{}", model.revision)),
            competition: competition.to_string(),
            repo,
            hotkey,
            created: taominer_core::daemon::store::unix_now(),
            snapshot: None,
            block: None,
            error: None,
            last_error: None,
            digests: BTreeMap::new(),
            hub_commit: Some(model.revision.clone()),
            public: None,
            declared: true,
            caller: None,
            key: None,
        };
        let id = job.id.clone();
        tracing::info!(JOB_ID = %id, REPO = %job.repo, COMMIT = %model.revision,
            "declared the configured model for {competition}: checking it on the Hub before it is committed");
        jobs.put(job)?;
        Ok(Some(id))
    }

    /// The job a caller (by uid) already made with this idempotence key, if any.
    pub fn find_key<'a>(
        jobs: &'a JobStore<PublishJob>,
        uid: u32,
        key: &str,
    ) -> Option<&'a PublishJob> {
        jobs.all().find(|j| {
            j.key.as_deref() == Some(key) && j.caller.as_ref().is_some_and(|c| c.uid == uid)
        })
    }

    /// Locks the job store. A poisoned lock means a panic mid-update; the store on disk is still
    /// consistent, so carrying on with the in-memory view is safe.
    pub fn jobs(&self) -> std::sync::MutexGuard<'_, JobStore<PublishJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn staging_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("staging").join(id)
    }

    pub fn staged_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("staged").join(id)
    }

    /// Where the committed revision is re-downloaded to be hashed as validators will.
    pub fn verify_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("verify").join(id)
    }

    /// The Hub client, or an error saying offline mode has none.
    pub fn hub(&self) -> Result<&dyn HubClient> {
        self.hub.as_deref().ok_or_else(|| {
            crate::error::Error::Invalid("offline mode has no Hugging Face Hub".into())
        })
    }

    /// Records a transient error on a job without changing its state.
    pub fn note_error(&self, id: &str, error: &str) {
        let mut jobs = self.jobs();
        if let Some(mut job) = jobs.get(id).cloned() {
            job.last_error = Some(error.to_string());
            if let Err(e) = jobs.put(job) {
                tracing::warn!(JOB_ID = %id, "cannot record the last error: {e}");
            }
        }
    }

    /// Durably records a new state for a job.
    pub fn update(&self, job: PublishJob) -> Result<()> {
        self.jobs().put(job)?;
        Ok(())
    }

    /// One line: counts by state and the latest job.
    pub fn summary(&self) -> String {
        let jobs = self.jobs();
        let mut counts: Vec<(JobState, usize)> = Vec::new();
        for j in jobs.all() {
            match counts.iter_mut().find(|(s, _)| *s == j.state) {
                Some((_, n)) => *n += 1,
                None => counts.push((j.state, 1)),
            }
        }
        let mode = if self.config.miner.offline {
            "offline"
        } else {
            "online"
        };
        let mut line = format!("{mode}, {} jobs", jobs.len());
        if !counts.is_empty() {
            let parts: Vec<String> = counts
                .iter()
                .map(|(s, n)| format!("{n} {}", s.as_str()))
                .collect();
            line.push_str(&format!(" ({})", parts.join(", ")));
        }
        if let Some(last) = jobs.all().last() {
            line.push_str(&format!("; last job {} {}", last.id, last.state.as_str()));
        }
        line
    }

    /// The newest committed job's model: what the chain names for this miner now.
    pub fn live_model(&self) -> LiveModel {
        let jobs = self.jobs();
        let newest = jobs
            .all()
            .filter(|j| j.state == JobState::Committed)
            .max_by_key(|j| (j.block.unwrap_or(0), j.created));
        let Some(job) = newest else {
            return LiveModel::default();
        };
        let snapshot = job.snapshot.as_ref();
        LiveModel {
            job_id: job.id.clone(),
            competition: job.competition.clone(),
            repo: job.repo.clone(),
            commit: snapshot.map(|s| s.commit.clone()).unwrap_or_default(),
            commitment: snapshot.map(|s| s.commitment.clone()).unwrap_or_default(),
            block: job.block.unwrap_or(0),
        }
    }

    /// `working` while any job is pending, else `idle`.
    pub fn state(&self) -> WorkState {
        if self.jobs().all().any(|j| j.state.is_pending()) {
            WorkState::Working
        } else {
            WorkState::Idle
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Caller;

    fn job(id: &str, uid: Option<u32>, key: Option<&str>) -> PublishJob {
        PublishJob {
            id: id.into(),
            state: JobState::Received,
            source: PathBuf::from("/m"),
            competition: "2".into(),
            repo: "a/b".into(),
            hotkey: String::new(),
            created: 0,
            snapshot: None,
            block: None,
            error: None,
            last_error: None,
            digests: BTreeMap::new(),
            hub_commit: None,
            public: None,
            declared: false,
            caller: uid.map(|uid| Caller { uid, gids: vec![] }),
            key: key.map(String::from),
        }
    }

    /// Proves: an idempotence key names a job only for the caller (uid) that made it: another
    /// user's `Publish` with the same key is not answered with someone else's job, and jobs
    /// without a key or without a recorded caller never match.
    #[test]
    fn keys_are_scoped_to_the_caller() {
        let d = tempfile::tempdir().unwrap();
        let mut jobs: JobStore<PublishJob> = JobStore::open(d.path()).unwrap();
        jobs.put(job("j1", Some(1000), Some("run-a/step-1")))
            .unwrap();
        jobs.put(job("j2", Some(1001), Some("run-a/step-1")))
            .unwrap();
        jobs.put(job("j3", Some(1000), None)).unwrap();
        jobs.put(job("j4", None, Some("run-b/step-1"))).unwrap();
        let found = |uid, key| Shared::find_key(&jobs, uid, key).map(|j| j.id.clone());
        assert_eq!(found(1000, "run-a/step-1").as_deref(), Some("j1"));
        assert_eq!(found(1001, "run-a/step-1").as_deref(), Some("j2"));
        assert_eq!(found(1002, "run-a/step-1"), None);
        assert_eq!(found(1000, "run-b/step-1"), None);
        assert_eq!(found(1000, ""), None);
    }
}
