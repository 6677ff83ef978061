//! The publisher's D-Bus object, `org.taominer.Publisher1` (contract in `taominer_core::bus`).
//!
//! `Publish` does only what can be answered at once: it checks the request and the directory,
//! writes the job to disk and returns its id. Copying and hashing a multi-gigabyte model happen in
//! the worker ([`crate::pipeline`]), so no caller waits on them and a crash loses nothing.
//! The caller's credentials (from the bus daemon) go with the job: the publisher reads only
//! what that caller could ([`crate::access`]).

use std::path::Path;
use std::sync::Arc;

use taominer_core::bus::{BusError, LiveModel, PublishJobInfo, WorkState};
use taominer_core::daemon::fault::crash_point;
use taominer_core::daemon::store::{new_job_id, unix_now};
use zbus::object_server::SignalEmitter;

use crate::access::Caller;
use crate::error::Error;
use crate::jobs::{JobState, PublishJob, Shared};
use crate::staging;

pub struct PublisherService {
    pub shared: Arc<Shared>,
}

#[zbus::interface(name = "org.taominer.Publisher1")]
impl PublisherService {
    /// Accepts a model directory; returns the job id once the job is on disk. The directory is
    /// read with the publisher's rights, so it must be one its caller may read (checked now, and
    /// again file by file when it is staged). A non-empty `key` makes the call idempotent for its
    /// caller: the same key again returns the job it made, whatever that job's state (the
    /// directory is not read again: it may be gone once staged), and never queues a second one.
    async fn publish(
        &self,
        path: &str,
        competition: &str,
        key: &str,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<String, BusError> {
        let caller = Caller::of_sender(conn, &header)
            .await
            .map_err(BusError::from)?;
        let uid = caller.uid;
        let (id, new) = self
            .submit(path, competition, key, caller)
            .map_err(BusError::from)?;
        if !new {
            tracing::info!(JOB_ID = %id, KEY = key, CALLER_UID = uid, "publish repeated with the same key: the existing job answers");
            return Ok(id);
        }
        tracing::info!(JOB_ID = %id, SOURCE = path, KEY = key, CALLER_UID = uid, "publish job accepted");
        crash_point("publisher.job-persisted");
        self.shared.wake.notify_one();
        Ok(id)
    }

    /// Every job, oldest first.
    async fn jobs(&self) -> Vec<PublishJobInfo> {
        let shared = &self.shared;
        shared
            .jobs()
            .all()
            .map(|job| {
                let mut info = job.info();
                (info.uploaded_bytes, info.total_bytes) = shared.transfers.progress(&job.id);
                info
            })
            .collect()
    }

    async fn status(&self) -> String {
        self.shared.summary()
    }

    /// Makes the configured repository public now (one attempt; the caller sees any error).
    /// Only `publisher.repo` (or SoundsRight's configured model): the token may write to other
    /// repositories, and no caller gets to publish those through this daemon.
    async fn make_public(&self, repo: &str) -> Result<(), BusError> {
        let Some(hub) = self.shared.hub.as_ref() else {
            return Err(BusError::InvalidInput(format!(
                "offline mode has no Hugging Face repository to make public ({repo})"
            )));
        };
        self.shared
            .config
            .miner
            .profile
            .rules()
            .check_repo_id(repo)
            .map_err(|e| BusError::InvalidInput(e.to_string()))?;
        let config = &self.shared.config;
        let configured = config.publisher.repo(&config.miner);
        let declared = config
            .soundsright
            .model()
            .map(|(_, m)| format!("{}/{}", m.namespace, m.name));
        if configured.as_deref() != Some(repo) && declared.as_deref() != Some(repo) {
            return Err(BusError::InvalidInput(format!(
                "{repo} is not this miner's repository (publisher.repo = {}); MakePublic only makes the configured repository public",
                configured.as_deref().unwrap_or("(unset)")
            )));
        }
        hub.set_private(repo, false)
            .await
            .map_err(|e| BusError::Failed(e.to_string()))?;
        tracing::info!(REPO = repo, "repository made public on request");
        Ok(())
    }

    #[zbus(property)]
    async fn state(&self) -> WorkState {
        self.shared.state()
    }

    /// The model the chain names for this miner now (the newest committed job); empty fields
    /// while none. Changes are announced by `ModelWentLive`.
    #[zbus(property)]
    async fn live_model(&self) -> LiveModel {
        self.shared.live_model()
    }

    /// A newer job was committed: the live model is now `model`.
    #[zbus(signal)]
    pub async fn model_went_live(emitter: &SignalEmitter<'_>, model: LiveModel)
        -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn published(
        emitter: &SignalEmitter<'_>,
        job_id: &str,
        repo: &str,
        commit: &str,
        model_hash: &str,
        secure_hash: &str,
    ) -> zbus::Result<()>;
}

/// The longest idempotence key `Publish` takes (the trainer's are ~30 bytes).
const MAX_KEY_BYTES: usize = 200;

impl PublisherService {
    /// `Publish` without the bus: the job this request names, written to disk if it is new.
    /// Returns its id and whether it is new. With a key, the look-up and the write happen under
    /// one lock, so two racing calls with the same key make one job.
    pub fn submit(
        &self,
        path: &str,
        competition: &str,
        key: &str,
        caller: Caller,
    ) -> Result<(String, bool), Error> {
        if key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "key {key:?}: at most {MAX_KEY_BYTES} bytes without control characters"
            )));
        }
        let competition = self.competition(competition);
        let uid = caller.uid;
        // A repeat is answered before the directory is read: once staged it may be gone.
        if let Some(id) = self.repeated(path, &competition, key, uid)? {
            return Ok((id, false));
        }
        let mut job = self.accept(path, &competition, caller)?;
        job.key = (!key.is_empty()).then(|| key.to_string());
        let mut jobs = self.shared.jobs();
        if !key.is_empty() {
            if let Some(existing) = Shared::find_key(&jobs, uid, key) {
                return Ok((existing.id.clone(), false));
            }
        }
        let id = job.id.clone();
        jobs.put(job)?;
        Ok((id, true))
    }

    /// The competition a request names (empty: the configured default).
    fn competition(&self, competition: &str) -> String {
        if competition.is_empty() {
            self.shared.config.miner.competition().unwrap_or_default()
        } else {
            competition.to_string()
        }
    }

    /// The job `uid` already made with `key`, if any. The same key for another directory or
    /// competition is a caller's mistake, refused rather than answered with the wrong job.
    fn repeated(
        &self,
        path: &str,
        competition: &str,
        key: &str,
        uid: u32,
    ) -> Result<Option<String>, Error> {
        if key.is_empty() {
            return Ok(None);
        }
        let jobs = self.shared.jobs();
        let Some(job) = Shared::find_key(&jobs, uid, key) else {
            return Ok(None);
        };
        if job.source != Path::new(path) || job.competition != competition {
            return Err(Error::Invalid(format!(
                "key {key:?} already names job {} ({} for competition {}); a different model needs another key",
                job.id,
                job.source.display(),
                job.competition
            )));
        }
        Ok(Some(job.id.clone()))
    }

    /// Validates a publish request and builds its job; nothing is written.
    fn accept(&self, path: &str, competition: &str, caller: Caller) -> Result<PublishJob, Error> {
        let config = &self.shared.config;
        let miner = &config.miner;
        if !miner.profile.commits() {
            return Err(Error::Invalid(format!(
                "the {} profile serves on the axon; it has no models to publish",
                miner.profile
            )));
        }
        let source = Path::new(path);
        if !source.is_absolute() {
            return Err(Error::Invalid(format!(
                "{path:?} is not an absolute path (the publisher does not share your working directory)"
            )));
        }
        let competition = competition.to_string();
        miner
            .profile
            .rules()
            .check_competition(&competition, &miner.allowed_competitions())?;
        let summary = staging::inspect(source, miner.profile, Some(&caller))?;
        tracing::debug!(
            files = summary.files,
            bytes = summary.bytes,
            "model directory checked"
        );
        // Both were validated with the configuration; their absence is a bug, not bad input.
        let repo = config
            .publisher
            .repo(miner)
            .ok_or_else(|| Error::Internal("publisher.repo is not set".into()))?;
        let hotkey = miner
            .hotkey()
            .ok_or_else(|| Error::Internal("miner.hotkey_ss58 is not set".into()))?
            .to_string();
        Ok(PublishJob {
            id: new_job_id(),
            state: JobState::Received,
            source: source.to_path_buf(),
            competition,
            repo,
            hotkey,
            created: unix_now(),
            snapshot: None,
            block: None,
            error: None,
            last_error: None,
            digests: Default::default(),
            hub_commit: None,
            public: None,
            declared: false,
            caller: Some(caller),
            key: None,
        })
    }
}
