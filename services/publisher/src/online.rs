//! The online half of a publish job: upload the staged snapshot to the Hub as one commit, then
//! download the committed revision into a fresh directory and hash it exactly as validators will.
//!
//! Why download what we just uploaded: validators hash the files `from_pretrained` fetches at the
//! committed revision, not our directory. Hashing the Hub's copy proves the commitment matches
//! what they will see (upstream's miner does the same: "to make sure we get the same hash as
//! validators, we need to redownload it"), and comparing each file's sha256 with the staged
//! one catches a corrupted transfer before it is committed to the chain.
//!
//! Each step is retried on transient errors ([`crate::retry`]). A job that died mid-upload
//! finds its commit on the Hub by the job id in the commit message and never commits twice.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures_util::StreamExt;
use taominer_core::daemon::backoff::Backoff;
use taominer_core::daemon::fault::crash_point;
use taominer_core::formats::preflight::{self, Layout};
use taominer_core::formats::{hash, model_id};
use taominer_core::subnet::ModelHash;

use crate::error::{Error, Result};
use crate::hub::{listed_size, upload, HubError};
use crate::jobs::{PublishJob, Shared, Snapshot};
use crate::ports::HubClient;
use crate::retry::retry;

/// Files downloaded at once for the check.
const PARALLEL_DOWNLOADS: usize = 4;

fn new_backoff(shared: &Shared) -> Backoff {
    let r = &shared.config.retry;
    Backoff::new(r.initial(), r.max()).with_jitter()
}

/// The text that identifies a job's commit on the Hub.
pub fn commit_marker(job_id: &str) -> String {
    format!("taominer job {job_id}")
}

/// Uploads the staged snapshot of `job` as one commit on `main`; returns the commit id.
/// The repository is created private if missing, and files of an earlier model that are not in
/// this one are deleted in the same commit, so the revision holds exactly this model.
pub async fn upload(
    shared: &Arc<Shared>,
    hub: &dyn HubClient,
    job: &PublishJob,
    alive: &Arc<AtomicU64>,
) -> Result<String> {
    let mut backoff = new_backoff(shared);
    let note = |e: &HubError| shared.note_error(&job.id, &e.to_string());
    let repo = job.repo.as_str();
    retry("create repository", &mut backoff, alive, &note, || {
        hub.create_repo(repo)
    })
    .await?;

    let staged = shared.staged_dir(&job.id);
    let files = {
        let digests = job.digests.clone();
        tokio::task::spawn_blocking(move || upload::local_files(&staged, &digests))
            .await
            .map_err(|e| Error::Invalid(format!("reading the snapshot failed: {e}")))??
    };
    let marker = commit_marker(&job.id);
    // The marker goes in the title, which every commit listing returns.
    let summary = format!(
        "Upload model for competition {} ({marker})",
        job.competition
    );
    let description = "Published by taominer.".to_string();
    let _tracked = crate::transfer::Tracked {
        transfers: &shared.transfers,
        job: &job.id,
    };
    let commit = retry("upload", &mut backoff, alive, &note, || async {
        // After a crash or a lost answer the commit may already exist: never make a second.
        if let Some(c) = hub.find_commit(repo, &marker).await? {
            tracing::info!(JOB_ID = %job.id, COMMIT = %c, "the Hub already has this job's commit");
            return Ok(c);
        }
        let existing = hub.files_at(repo, "main").await?.unwrap_or_default();
        let modes = hub.preupload(repo, &files).await?;
        let lfs: Vec<&upload::LocalFile> = files
            .iter()
            .filter(|f| modes.lfs.contains(&f.rel))
            .collect();
        // `upload_lfs` counts on `alive` the bytes it sends and those the Hub already has, once
        // per object (two paths with the same bytes are one object).
        let objects: std::collections::BTreeMap<&str, u64> =
            lfs.iter().map(|f| (f.oid.as_str(), f.size)).collect();
        shared
            .transfers
            .begin(&job.id, alive, objects.values().sum());
        hub.upload_lfs(repo, &lfs, alive).await?;
        crash_point("publisher.lfs-uploaded");
        let deletes = upload::stale(&existing, &files);
        let c = hub
            .commit(repo, &summary, &description, &files, &modes, &deletes)
            .await?;
        crash_point("publisher.hub-committed");
        Ok(c)
    })
    .await?;
    Ok(commit)
}

/// Downloads the files validators fetch at `commit`, checks them against the staged digests
/// and the competition's byte limit, and hashes them; returns the job's snapshot.
pub async fn verify(
    shared: &Arc<Shared>,
    hub: &dyn HubClient,
    job: &PublishJob,
    commit: &str,
    alive: &Arc<AtomicU64>,
) -> Result<Snapshot> {
    let mut backoff = new_backoff(shared);
    let note = |e: &HubError| shared.note_error(&job.id, &e.to_string());
    let repo = job.repo.as_str();
    let profile = shared.config.miner.profile;
    let siblings = retry("model info", &mut backoff, alive, &note, || {
        hub.files_at(repo, commit)
    })
    .await?
    .ok_or_else(|| HubError::Refused(format!("the Hub has no revision {commit} in {repo}")))?;
    // Validators sum every file of the revision, not just the ones they download.
    let total: u64 = siblings.iter().map(|s| s.size.unwrap_or(0)).sum();
    if let Some(l) = shared
        .config
        .publisher
        .limits_for(profile, &job.competition)
    {
        if total > l.max_bytes {
            return Err(Error::Rejected(format!(
                "the repository at {commit} holds {total} bytes in {} files (every file counts, .gitattributes included); competition {} allows at most {} bytes",
                siblings.len(),
                job.competition,
                l.max_bytes
            )));
        }
    }
    let names: Vec<String> = siblings.iter().map(|s| s.rfilename.clone()).collect();

    let dest = shared.verify_dir(&job.id);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| io_err("cannot clear", &dest, e))?;
    }
    std::fs::create_dir_all(&dest).map_err(|e| io_err("cannot create", &dest, e))?;
    let index = "model.safetensors.index.json";
    let mut shards = Vec::new();
    if profile.is_llm()
        && !names.iter().any(|n| n == "model.safetensors")
        && names.iter().any(|n| n == index)
    {
        let path = retry("download index", &mut backoff, alive, &note, || {
            hub.download(
                repo,
                commit,
                index,
                &dest,
                listed_size(&siblings, index),
                alive,
            )
        })
        .await?;
        shards = shard_names(&path)?;
    }
    let wanted = preflight::validator_files(profile.rules().layout(), &names, &shards);
    // Shards come down side by side, as `snapshot_download` fetches them.
    let mut downloads = Vec::with_capacity(wanted.len());
    for name in &wanted {
        let mut backoff = new_backoff(shared);
        let (dest, note, siblings) = (&dest, &note, &siblings);
        downloads.push(async move {
            retry(
                &format!("download {name}"),
                &mut backoff,
                alive,
                note,
                || hub.download(repo, commit, name, dest, listed_size(siblings, name), alive),
            )
            .await
        });
    }
    let mut downloads = futures_util::stream::iter(downloads).buffer_unordered(PARALLEL_DOWNLOADS);
    while let Some(done) = downloads.next().await {
        done?;
    }

    let snapshot = {
        let job = job.clone();
        let dest = dest.clone();
        let commit = commit.to_string();
        let wanted = wanted.clone();
        tokio::task::spawn_blocking(move || {
            hash_download(profile, &job, &dest, &commit, &wanted, total)
        })
        .await
        .map_err(|e| Error::Invalid(format!("hashing failed: {e}")))??
    };
    std::fs::remove_dir_all(&dest).map_err(|e| io_err("cannot remove", &dest, e))?;
    Ok(snapshot)
}

/// Hashes the downloaded revision; every file must be one we uploaded, byte for byte.
fn hash_download(
    profile: taominer_core::config::Profile,
    job: &PublishJob,
    dest: &Path,
    commit: &str,
    wanted: &[String],
    total: u64,
) -> Result<Snapshot> {
    let entries = hash::walk(dest, &|_| false)?;
    let got: Vec<&str> = entries.iter().map(|e| e.rel.as_str()).collect();
    let mut want: Vec<&str> = wanted.iter().map(String::as_str).collect();
    want.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    if got_sorted != want {
        return Err(Error::Invalid(format!(
            "the download of {commit} holds {got_sorted:?}, expected {want:?}"
        )));
    }
    if profile.rules().layout() == Layout::Container {
        // What validators check before they build the container (a declared model was never
        // staged here, and an uploaded one could have been changed on the Hub since).
        let problems = preflight::container_problems(dest)?;
        if !problems.is_empty() {
            return Err(Error::Rejected(format!(
                "{} at {commit}: {}",
                job.repo,
                problems.join("; ")
            )));
        }
    }
    let paths: Vec<&Path> = entries.iter().map(|e| e.path.as_path()).collect();
    let digests = hash::file_digests(&paths)?;
    // A declared model is whatever the Hub holds at the configured commit. Validators that clone
    // the whole repository (SoundsRight) also get the `.gitattributes` the Hub wrote, which we
    // did not stage; it is theirs, and it is hashed like every other file.
    let ours = |rel: &str| rel != ".gitattributes" || job.digests.contains_key(rel);
    for (e, d) in entries
        .iter()
        .zip(&digests)
        .filter(|(e, _)| !job.declared && ours(&e.rel))
    {
        let hex = hex::encode(d);
        if job.digests.get(&e.rel) != Some(&hex) {
            return Err(Error::Invalid(format!(
                "the Hub serves {} at {commit} with sha256 {hex}, but the staged file has {}; not committing",
                e.rel,
                job.digests.get(&e.rel).map(String::as_str).unwrap_or("(no such file)")
            )));
        }
    }
    let model_hash = match profile.rules().model_hash_kind() {
        ModelHash::Content => hash::content_hash(dest)?,
        ModelHash::Taoverse => hash::model_hash_of_digests(&digests),
    };
    let secure_hash = profile
        .rules()
        .secure_hash(&model_hash, &job.hotkey)
        .unwrap_or_default();
    let commitment = profile.rules().commitment(&model_id::CommitmentInput {
        repo: &job.repo,
        commit,
        model_hash: &model_hash,
        hotkey_ss58: &job.hotkey,
        competition: &job.competition,
    })?;
    Ok(Snapshot {
        commit: commit.to_string(),
        model_hash,
        secure_hash,
        commitment,
        files: entries.len(),
        bytes: total,
    })
}

/// The shards the Hub's index names (a bad index is the repository's fault, not a transient one).
fn shard_names(index: &Path) -> Result<Vec<String>> {
    taominer_core::formats::safetensors::index_shards(index)
        .map_err(|e| Error::Invalid(format!("the Hub's model.safetensors.index.json: {e}")))
}

/// Makes the repository public after its commitment is on chain.
pub async fn make_public(
    shared: &Arc<Shared>,
    hub: &dyn HubClient,
    job: &PublishJob,
    alive: &Arc<AtomicU64>,
) -> Result<()> {
    let mut backoff = new_backoff(shared);
    let note =
        |e: &HubError| shared.note_error(&job.id, &format!("making the repository public: {e}"));
    retry("make public", &mut backoff, alive, &note, || {
        hub.set_private(&job.repo, false)
    })
    .await?;
    Ok(())
}

fn io_err(action: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::Core(taominer_core::Error::io(action, path, e))
}
