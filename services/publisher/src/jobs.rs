//! Publish jobs: the durable record of each model handed to the publisher.
//!
//! A job moves `received → staged → handed-off → committed` (or `failed`), and every move is
//! written to disk before anything else happens, so a restarted publisher resumes exactly where
//! the last one stopped: it re-stages `received` jobs and re-offers `staged`/`handed-off` ones to
//! the committer, which recognises job ids it already has.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use taominer_core::bus::PublishJobInfo;
use taominer_core::config::Config;
use taominer_core::store::{Job, JobStore};

use crate::error::Result;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Accepted and durable; not yet copied.
    Received,
    /// Copied into the state directory and hashed; `Published` emitted.
    Staged,
    /// The committer has durably queued its commitment.
    HandedOff,
    /// The commitment is written.
    Committed,
    /// Could not be staged; `error` says why. Nothing was handed on.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Received => "received",
            JobState::Staged => "staged",
            JobState::HandedOff => "handed-off",
            JobState::Committed => "committed",
            JobState::Failed => "failed",
        }
    }

    /// Whether the pipeline still owes this job work.
    pub fn pending(self) -> bool {
        matches!(
            self,
            JobState::Received | JobState::Staged | JobState::HandedOff
        )
    }
}

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
    #[serde(default)]
    pub error: Option<String>,
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
            state: self.state.as_str().into(),
            source: self.source.display().to_string(),
            competition: self.competition.clone(),
            repo: self.repo.clone(),
            commit: s(|x| &x.commit),
            model_hash: s(|x| &x.model_hash),
            secure_hash: s(|x| &x.secure_hash),
            commitment: s(|x| &x.commitment),
            block: self.block.unwrap_or(0),
            error: self.error.clone().unwrap_or_default(),
            created: self.created,
        }
    }
}

/// The publisher's state, shared by the D-Bus interface and the worker.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub state_dir: PathBuf,
    pub jobs: Mutex<JobStore<PublishJob>>,
    /// Wakes the worker when there is new work.
    pub wake: tokio::sync::Notify,
}

impl Shared {
    pub fn open(config: Config, state_dir: PathBuf) -> Result<Shared> {
        let jobs = JobStore::open(&state_dir.join("jobs"))?;
        Ok(Shared {
            config,
            state_dir,
            jobs: Mutex::new(jobs),
            wake: tokio::sync::Notify::new(),
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

    /// `working` while any job is pending, else `idle`.
    pub fn state(&self) -> &'static str {
        if self.jobs().all().any(|j| j.state.pending()) {
            "working"
        } else {
            "idle"
        }
    }
}
