//! Uploading a model directory as one commit, with the Hub's commit protocol:
//! preupload (which files are LFS) → Git LFS batch → LFS object uploads (basic or multipart) →
//! one NDJSON commit referencing the LFS objects and carrying the small files inline.
//!
//! Why not `hf-hub`'s `create_commit`: in hf-hub 1.0 an LFS file is uploaded only through Xet;
//! when the Hub answers the LFS batch with `basic`, it falls back to reading the whole file into
//! memory and sending it base64-inline in the commit body (a 7 GB checkpoint becomes a 9 GB JSON
//! line, which the Hub refuses for LFS files). This module streams every LFS object from disk
//! with a known length, supports the multipart transfer the Hub uses for objects over 5 GB, and
//! is exactly the path the official Python client takes when Xet is unavailable.
//!
//! Each function is one attempt; objects already on the Hub are skipped by the batch answer, so a
//! retried or resumed upload sends only what is missing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;

use super::{check, json_capped, redact_urls, Hub, HubError};

/// Bytes of each file the Hub wants to see to choose between regular and LFS.
pub const SAMPLE_BYTES: usize = 512;
/// LFS objects uploaded at once.
const PARALLEL_OBJECTS: usize = 4;
/// Bytes read from disk per body chunk.
const BODY_SLICE: u64 = 8 << 20;
/// Files per preupload request (the Python client's chunk).
const PREUPLOAD_CHUNK: usize = 256;
/// A file the Hub calls `regular` travels base64 in the commit body; refuse to do that with
/// anything large, whatever the server says.
const MAX_INLINE: u64 = 64 << 20;

/// One file to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Path in the repository, `/`-separated.
    pub rel: String,
    /// Where to read it.
    pub path: PathBuf,
    pub size: u64,
    /// sha256, hex: the LFS object id.
    pub oid: String,
    /// The first [`SAMPLE_BYTES`] bytes.
    pub sample: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PreuploadFile {
    path: String,
    upload_mode: String,
    #[serde(default)]
    should_ignore: bool,
}

#[derive(Deserialize)]
struct PreuploadAnswer {
    files: Vec<PreuploadFile>,
}

#[derive(Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    objects: Vec<BatchObject>,
}

#[derive(Deserialize)]
struct BatchObject {
    oid: String,
    #[serde(default)]
    actions: Option<Actions>,
    #[serde(default)]
    error: Option<ObjectError>,
}

#[derive(Deserialize)]
struct ObjectError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Actions {
    upload: Option<Action>,
    verify: Option<Action>,
}

#[derive(Deserialize)]
struct Action {
    href: String,
    #[serde(default)]
    header: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommitAnswer {
    commit_oid: String,
}

/// What the Hub decided for the files of a commit.
#[derive(Debug, Default)]
pub struct Modes {
    /// Paths to upload as LFS objects.
    pub lfs: HashSet<String>,
    /// Paths the repository's `.gitignore` excludes (left out of the commit).
    pub ignored: HashSet<String>,
}

impl Hub {
    /// Asks the Hub which files go through LFS.
    pub async fn preupload(&self, repo: &str, files: &[LocalFile]) -> Result<Modes, HubError> {
        let what = "preupload";
        let mut modes = Modes::default();
        for chunk in files.chunks(PREUPLOAD_CHUNK) {
            let body = serde_json::json!({
                "files": chunk.iter().map(|f| serde_json::json!({
                    "path": f.rel,
                    "sample": BASE64.encode(&f.sample),
                    "size": f.size,
                })).collect::<Vec<_>>()
            });
            let url = self.api(repo, "/preupload/main");
            let answer: PreuploadAnswer = json_capped(
                self.send(self.http.post(url).json(&body), what).await?,
                what,
            )
            .await?;
            for f in answer.files {
                if f.should_ignore {
                    modes.ignored.insert(f.path.clone());
                }
                if f.upload_mode == "lfs" {
                    modes.lfs.insert(f.path);
                }
            }
        }
        // The Python client's rule: empty files are always regular.
        modes
            .lfs
            .retain(|p| files.iter().any(|f| &f.rel == p && f.size > 0));
        Ok(modes)
    }

    /// Uploads the LFS objects the Hub does not have yet. `progress` counts bytes sent, and the
    /// size of each object the Hub already has.
    pub async fn upload_lfs(
        &self,
        repo: &str,
        files: &[&LocalFile],
        progress: &Arc<AtomicU64>,
    ) -> Result<(), HubError> {
        if files.is_empty() {
            return Ok(());
        }
        let what = "LFS batch";
        // One object per oid: two paths with the same bytes share it.
        let mut by_oid: BTreeMap<&str, &LocalFile> = BTreeMap::new();
        for f in files {
            by_oid.entry(f.oid.as_str()).or_insert(f);
        }
        let body = serde_json::json!({
            "operation": "upload",
            "transfers": ["basic", "multipart"],
            "objects": by_oid.values().map(|f| serde_json::json!({"oid": f.oid, "size": f.size})).collect::<Vec<_>>(),
            "hash_algo": "sha256",
            "ref": {"name": "main"},
        });
        let url = format!("{}/{repo}.git/info/lfs/objects/batch", self.endpoint);
        let answer: BatchAnswer = json_capped(
            self.send(
                self.http
                    .post(url)
                    .header("Accept", "application/vnd.git-lfs+json")
                    .header("Content-Type", "application/vnd.git-lfs+json")
                    .body(body.to_string()),
                what,
            )
            .await?,
            what,
        )
        .await?;
        let mut work = Vec::new();
        for object in answer.objects {
            let Some(file) = by_oid.get(object.oid.as_str()).copied() else {
                return Err(HubError::Refused(format!(
                    "{what}: the Hub answered for an object we did not ask about ({})",
                    object.oid
                )));
            };
            if let Some(err) = object.error {
                return Err(HubError::Refused(redact_urls(&format!(
                    "{what}: the Hub refused {} ({}): {}",
                    file.rel, err.code, err.message
                ))));
            }
            // No actions: the Hub already has this object.
            match object.actions {
                Some(actions) => work.push((file, actions)),
                // Counted as done, so the upload's byte count reaches its total.
                None => {
                    tracing::debug!(path = %file.rel, "LFS object already on the Hub");
                    progress.fetch_add(file.size, Ordering::Relaxed);
                }
            }
        }
        // Shards go up side by side, as the Python client does: one stream to object storage
        // rarely fills the link.
        // Each object on its own task, so the transfers spread over the runtime's threads; the
        // semaphore keeps PARALLEL_OBJECTS in flight. Dropping this future (shutdown) aborts them.
        let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL_OBJECTS));
        let mut tasks = tokio::task::JoinSet::new();
        for (file, actions) in work {
            let (hub, file, progress, permits) = (
                self.clone(),
                file.clone(),
                progress.clone(),
                permits.clone(),
            );
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                hub.upload_object(&file, actions, &progress).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| HubError::Refused(format!("LFS upload task failed: {e}")))??;
        }
        Ok(())
    }

    /// Uploads one object as the batch answer says, then asks the Hub to verify it.
    async fn upload_object(
        &self,
        file: &LocalFile,
        actions: Actions,
        progress: &Arc<AtomicU64>,
    ) -> Result<(), HubError> {
        if let Some(upload) = actions.upload {
            if upload.header.contains_key("chunk_size") {
                self.put_multipart(file, &upload, progress).await?;
            } else {
                self.put_basic(file, &upload, progress).await?;
            }
        }
        if let Some(verify) = actions.verify {
            // `send` attaches the token only if the href is on the endpoint's origin: a verify
            // URL elsewhere gets the headers the Hub gave for it, not the token.
            let mut req = self
                .http
                .post(&verify.href)
                .json(&serde_json::json!({"oid": file.oid, "size": file.size}));
            for (k, v) in header_strings(&verify.header) {
                req = req.header(k, v);
            }
            self.send(req, &format!("LFS verify {}", file.rel)).await?;
        }
        Ok(())
    }

    /// One PUT of the whole object to the (presigned) URL the Hub gave; no token is sent there.
    async fn put_basic(
        &self,
        file: &LocalFile,
        action: &Action,
        progress: &Arc<AtomicU64>,
    ) -> Result<(), HubError> {
        let what = format!("LFS upload {}", file.rel);
        let body = file_body(file, 0, file.size, progress).await?;
        let mut req = self
            .http
            .put(&action.href)
            .header(reqwest::header::CONTENT_LENGTH, file.size)
            .body(body);
        for (k, v) in header_strings(&action.header) {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| HubError::from_reqwest(e, &what))?;
        check(resp, &what).await?;
        tracing::info!(path = %file.rel, bytes = file.size, "LFS object uploaded");
        Ok(())
    }

    /// The multipart transfer: `header` holds `chunk_size` and one URL per part (`"00001"`, …);
    /// each part is PUT, its ETag kept, and `href` completes the object.
    async fn put_multipart(
        &self,
        file: &LocalFile,
        action: &Action,
        progress: &Arc<AtomicU64>,
    ) -> Result<(), HubError> {
        let what = format!("LFS multipart upload {}", file.rel);
        let chunk: u64 = action
            .header
            .get("chunk_size")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .filter(|c| *c > 0)
            .ok_or_else(|| HubError::Refused(format!("{what}: bad chunk_size")))?;
        let mut parts: Vec<(u64, &str)> = action
            .header
            .iter()
            .filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, v.as_str()?)))
            .collect();
        parts.sort();
        let expected = file.size.div_ceil(chunk);
        if parts.len() as u64 != expected {
            return Err(HubError::Refused(format!(
                "{what}: the Hub gave {} part URLs for {expected} parts of {chunk} bytes",
                parts.len()
            )));
        }
        let mut done = Vec::with_capacity(parts.len());
        for (i, (number, url)) in parts.iter().enumerate() {
            let offset = i as u64 * chunk;
            let len = chunk.min(file.size - offset);
            let body = file_body(file, offset, len, progress).await?;
            let resp = self
                .http
                .put(*url)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(body)
                .send()
                .await
                .map_err(|e| HubError::from_reqwest(e, &what))?;
            let resp = check(resp, &what).await?;
            let etag = resp
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| HubError::Refused(format!("{what}: part {number} has no ETag")))?
                .to_string();
            done.push(serde_json::json!({"partNumber": number, "etag": etag}));
        }
        let completion = serde_json::json!({"oid": file.oid, "parts": done});
        let resp = self
            .http
            .post(&action.href)
            .json(&completion)
            .send()
            .await
            .map_err(|e| HubError::from_reqwest(e, &what))?;
        check(resp, &what).await?;
        tracing::info!(path = %file.rel, bytes = file.size, parts = parts.len(), "LFS object uploaded in parts");
        Ok(())
    }

    /// Creates one commit on `main`: LFS files by reference, the others inline, `deletes`
    /// removed. Returns the commit id the Hub assigned.
    pub async fn commit(
        &self,
        repo: &str,
        summary: &str,
        description: &str,
        files: &[LocalFile],
        modes: &Modes,
        deletes: &[String],
    ) -> Result<String, HubError> {
        let what = "commit";
        let mut body: Vec<u8> = Vec::new();
        let mut line = |v: serde_json::Value| {
            body.extend_from_slice(v.to_string().as_bytes());
            body.push(b'\n');
        };
        line(
            serde_json::json!({"key": "header", "value": {"summary": summary, "description": description}}),
        );
        for f in files {
            if modes.ignored.contains(&f.rel) {
                continue;
            }
            if modes.lfs.contains(&f.rel) {
                line(serde_json::json!({"key": "lfsFile", "value": {
                    "path": f.rel, "algo": "sha256", "oid": f.oid, "size": f.size}}));
            } else {
                if f.size > MAX_INLINE {
                    return Err(HubError::Refused(format!(
                        "{what}: the Hub wants {} ({} bytes) inline; refusing to send more than {MAX_INLINE} bytes that way",
                        f.rel, f.size
                    )));
                }
                let content = tokio::fs::read(&f.path).await.map_err(|e| {
                    HubError::Refused(format!("cannot read {}: {e}", f.path.display()))
                })?;
                line(serde_json::json!({"key": "file", "value": {
                    "content": BASE64.encode(&content), "path": f.rel, "encoding": "base64"}}));
            }
        }
        for path in deletes {
            line(serde_json::json!({"key": "deletedFile", "value": {"path": path}}));
        }
        let url = self.api(repo, "/commit/main");
        let answer: CommitAnswer = json_capped(
            self.send(
                self.http
                    .post(url)
                    .header("Content-Type", "application/x-ndjson")
                    .body(body),
                what,
            )
            .await?,
            what,
        )
        .await?;
        let oid = answer.commit_oid;
        if oid.len() != 40 || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HubError::Refused(format!(
                "{what}: the Hub answered {oid:?}, not a 40-hex commit id"
            )));
        }
        Ok(oid.to_ascii_lowercase())
    }
}

/// The string-valued entries of an action's `header` map (the multipart keys excluded).
fn header_strings(h: &BTreeMap<String, serde_json::Value>) -> Vec<(String, String)> {
    h.iter()
        .filter(|(k, _)| k.as_str() != "chunk_size" && k.parse::<u64>().is_err())
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// `len` bytes of a file from `offset`, streamed from disk; `progress` counts them as they go.
async fn file_body(
    file: &LocalFile,
    offset: u64,
    len: u64,
    progress: &Arc<AtomicU64>,
) -> Result<reqwest::Body, HubError> {
    use std::io::{Read, Seek};
    let path = file.path.clone();
    let mut f = std::fs::File::open(&path)
        .and_then(|mut f| f.seek(SeekFrom::Start(offset)).map(|_| f))
        .map_err(|e| HubError::Refused(format!("cannot read {}: {e}", path.display())))?;
    // A plain thread reads big slices ahead of the socket; the channel bounds what is buffered.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    let progress = progress.clone();
    tokio::task::spawn_blocking(move || {
        let mut left = len;
        while left > 0 {
            let mut buf = vec![0u8; left.min(BODY_SLICE) as usize];
            let sent = match f.read_exact(&mut buf) {
                Ok(()) => {
                    left -= buf.len() as u64;
                    progress.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    tx.blocking_send(Ok(bytes::Bytes::from(buf)))
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if sent.is_err() {
                return; // the request was dropped
            }
        }
    });
    Ok(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
}

/// A receiver as a stream of body chunks.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The sha256 (hex) of every file of a staged snapshot, by repository path, hashing on all
/// cores. Blocking; run it off the async threads.
pub fn digests(dir: &std::path::Path) -> taominer_core::Result<BTreeMap<String, String>> {
    let entries = taominer_core::formats::hash::walk(dir, &|_| false)?;
    let paths: Vec<&std::path::Path> = entries.iter().map(|e| e.path.as_path()).collect();
    let digests = taominer_core::formats::hash::file_digests(&paths)?;
    Ok(entries
        .into_iter()
        .zip(digests)
        .map(|(e, d)| (e.rel, hex::encode(d)))
        .collect())
}

/// The files of a staged snapshot ready to upload, with the digests recorded when it was staged
/// (so the multi-gigabyte files are not hashed again). Blocking.
pub fn local_files(
    dir: &std::path::Path,
    digests: &BTreeMap<String, String>,
) -> taominer_core::Result<Vec<LocalFile>> {
    use std::io::Read;
    let entries = taominer_core::formats::hash::walk(dir, &|_| false)?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let io = |err| taominer_core::Error::io("cannot read", &e.path, err);
        let oid = digests.get(&e.rel).cloned().ok_or_else(|| {
            taominer_core::Error::Model(format!("{}: not in the staged snapshot's digests", e.rel))
        })?;
        let mut f = std::fs::File::open(&e.path).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        let mut sample = Vec::with_capacity(SAMPLE_BYTES);
        (&mut f)
            .take(SAMPLE_BYTES as u64)
            .read_to_end(&mut sample)
            .map_err(io)?;
        out.push(LocalFile {
            rel: e.rel,
            path: e.path,
            size,
            oid,
            sample,
        });
    }
    Ok(out)
}

/// Paths in the repository (from [`Hub::files_at`]) that the new commit should delete so the
/// revision holds exactly the model: everything not uploaded, except `.gitattributes`.
pub fn stale(existing: &[super::Sibling], files: &[LocalFile]) -> Vec<String> {
    let ours: HashMap<&str, ()> = files.iter().map(|f| (f.rel.as_str(), ())).collect();
    existing
        .iter()
        .map(|s| s.rfilename.clone())
        .filter(|p| p != ".gitattributes" && !ours.contains_key(p.as_str()))
        .collect()
}
