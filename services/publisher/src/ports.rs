//! What the publisher's worker needs from the world outside the process, as three small traits:
//! the Hub ([`HubClient`]), the committer ([`CommitSink`]) and the bus signals it emits
//! ([`Signals`]).
//!
//! Why traits: the job's state machine (received → staged → uploaded → hashed → handed-off →
//! committed, and the retry rules on the way) is the publisher's most important logic, and
//! proving it through real processes takes a bus, a Hub server and seconds of waiting per case.
//! With these seams the unit tests in [`crate::pipeline`] drive the same code with in-memory
//! fakes on tokio's paused clock, in milliseconds. The real implementations below only forward
//! to the Hub client ([`crate::hub::Hub`]), the committer's D-Bus proxy and the signal emitter,
//! so the daemon behaves exactly as it did when it called them directly.
//!
//! The methods return boxed futures because the worker holds the Hub as a `dyn` object in
//! [`crate::jobs::Shared`] (shared with the D-Bus interface) and runs its steps on spawned
//! tasks, which need `Send` futures.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use taominer_core::bus::{self, CommitState, CommitterProxy, ErrorKind, LiveModel};
use zbus::object_server::SignalEmitter;

use crate::hub::upload::{LocalFile, Modes};
use crate::hub::{Hub, HubError, Sibling};
use crate::interface::PublisherService;

/// A boxed, sendable future: what every method of these traits returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The Hub calls a publish job makes, each one attempt (retrying is [`crate::retry`]'s job).
/// The meaning of each method is that of the [`Hub`] method of the same name.
pub trait HubClient: Send + Sync {
    /// Creates the repository, private, unless it exists.
    fn create_repo<'a>(&'a self, repo: &'a str) -> BoxFuture<'a, Result<(), HubError>>;
    /// The newest recent commit on `main` whose title or message contains `marker`.
    fn find_commit<'a>(
        &'a self,
        repo: &'a str,
        marker: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, HubError>>;
    /// Every file at `revision` with its size; `None` if the revision does not exist.
    fn files_at<'a>(
        &'a self,
        repo: &'a str,
        revision: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Sibling>>, HubError>>;
    /// Which files go through LFS.
    fn preupload<'a>(
        &'a self,
        repo: &'a str,
        files: &'a [LocalFile],
    ) -> BoxFuture<'a, Result<Modes, HubError>>;
    /// Uploads the LFS objects the Hub does not have yet, counting bytes on `progress`.
    fn upload_lfs<'a>(
        &'a self,
        repo: &'a str,
        files: &'a [&'a LocalFile],
        progress: &'a Arc<AtomicU64>,
    ) -> BoxFuture<'a, Result<(), HubError>>;
    /// One commit on `main` holding `files` and deleting `deletes`; the commit id.
    fn commit<'a>(
        &'a self,
        repo: &'a str,
        summary: &'a str,
        description: &'a str,
        files: &'a [LocalFile],
        modes: &'a Modes,
        deletes: &'a [String],
    ) -> BoxFuture<'a, Result<String, HubError>>;
    /// Downloads one file at `revision` into `dest/<path>`, refusing more than `max_bytes`.
    fn download<'a>(
        &'a self,
        repo: &'a str,
        revision: &'a str,
        path: &'a str,
        dest: &'a Path,
        max_bytes: u64,
        alive: &'a Arc<AtomicU64>,
    ) -> BoxFuture<'a, Result<PathBuf, HubError>>;
    /// Makes the repository private or public.
    fn set_private<'a>(
        &'a self,
        repo: &'a str,
        private: bool,
    ) -> BoxFuture<'a, Result<(), HubError>>;
}

impl HubClient for Hub {
    fn create_repo<'a>(&'a self, repo: &'a str) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(Hub::create_repo(self, repo))
    }

    fn find_commit<'a>(
        &'a self,
        repo: &'a str,
        marker: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, HubError>> {
        Box::pin(Hub::find_commit(self, repo, marker))
    }

    fn files_at<'a>(
        &'a self,
        repo: &'a str,
        revision: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Sibling>>, HubError>> {
        Box::pin(Hub::files_at(self, repo, revision))
    }

    fn preupload<'a>(
        &'a self,
        repo: &'a str,
        files: &'a [LocalFile],
    ) -> BoxFuture<'a, Result<Modes, HubError>> {
        Box::pin(Hub::preupload(self, repo, files))
    }

    fn upload_lfs<'a>(
        &'a self,
        repo: &'a str,
        files: &'a [&'a LocalFile],
        progress: &'a Arc<AtomicU64>,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(Hub::upload_lfs(self, repo, files, progress))
    }

    fn commit<'a>(
        &'a self,
        repo: &'a str,
        summary: &'a str,
        description: &'a str,
        files: &'a [LocalFile],
        modes: &'a Modes,
        deletes: &'a [String],
    ) -> BoxFuture<'a, Result<String, HubError>> {
        Box::pin(Hub::commit(
            self,
            repo,
            summary,
            description,
            files,
            modes,
            deletes,
        ))
    }

    fn download<'a>(
        &'a self,
        repo: &'a str,
        revision: &'a str,
        path: &'a str,
        dest: &'a Path,
        max_bytes: u64,
        alive: &'a Arc<AtomicU64>,
    ) -> BoxFuture<'a, Result<PathBuf, HubError>> {
        Box::pin(Hub::download(
            self, repo, revision, path, dest, max_bytes, alive,
        ))
    }

    fn set_private<'a>(
        &'a self,
        repo: &'a str,
        private: bool,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(Hub::set_private(self, repo, private))
    }
}

/// Why a hand-off to the committer did not get an answer, by what the worker does about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandOffError {
    /// The committer refused the commitment (`InvalidInput`): the job fails with this reason.
    Refused(String),
    /// The committer is not running: retried later, nothing noted on the job.
    NotRunning,
    /// Any other failure (the committer cannot write yet, the bus failed): retried later, and
    /// noted on the job so `minerctl jobs` shows it.
    Other(String),
}

/// What the worker asks of the committer: `Commit(job_id, commitment)`, idempotent on the job
/// id, answered with where the job stands there.
pub trait CommitSink: Send + Sync {
    fn commit<'a>(
        &'a self,
        job_id: &'a str,
        commitment: &'a str,
    ) -> BoxFuture<'a, Result<CommitState, HandOffError>>;
}

impl CommitSink for CommitterProxy<'_> {
    fn commit<'a>(
        &'a self,
        job_id: &'a str,
        commitment: &'a str,
    ) -> BoxFuture<'a, Result<CommitState, HandOffError>> {
        Box::pin(async move {
            CommitterProxy::commit(self, job_id, commitment)
                .await
                .map_err(|e| {
                    if bus::error_kind(&e) == ErrorKind::Refused {
                        HandOffError::Refused(bus::error_message(&e))
                    } else if bus::is_service_unknown(&e) {
                        HandOffError::NotRunning
                    } else {
                        HandOffError::Other(bus::error_message(&e))
                    }
                })
        })
    }
}

/// The signals the worker emits on the bus (`docs/dbus.md`). Emitting is best effort: a failure
/// is logged by the worker and changes nothing about the job.
pub trait Signals: Send + Sync {
    /// `Published`: a job is hashed and its commitment is known.
    fn published<'a>(
        &'a self,
        job_id: &'a str,
        repo: &'a str,
        commit: &'a str,
        model_hash: &'a str,
        secure_hash: &'a str,
    ) -> BoxFuture<'a, zbus::Result<()>>;
    /// `ModelWentLive`: the newest committed job's model is what the chain names now.
    fn model_went_live(&self, model: LiveModel) -> BoxFuture<'_, zbus::Result<()>>;
}

impl Signals for SignalEmitter<'static> {
    fn published<'a>(
        &'a self,
        job_id: &'a str,
        repo: &'a str,
        commit: &'a str,
        model_hash: &'a str,
        secure_hash: &'a str,
    ) -> BoxFuture<'a, zbus::Result<()>> {
        Box::pin(PublisherService::published(
            self,
            job_id,
            repo,
            commit,
            model_hash,
            secure_hash,
        ))
    }

    fn model_went_live(&self, model: LiveModel) -> BoxFuture<'_, zbus::Result<()>> {
        Box::pin(PublisherService::model_went_live(self, model))
    }
}
