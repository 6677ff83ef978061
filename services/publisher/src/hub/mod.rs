//! The Hugging Face Hub, as the publisher uses it.
//!
//! Two clients share one token:
//! * `hf-hub` (the Hugging Face crate) for what it does well: creating the repository, listing
//!   commits, downloading files at a revision, and repository settings.
//! * a small `reqwest` client for the upload itself ([`upload`]) and for `model_info` with file
//!   sizes (`?blobs=true`, which validators call and hf-hub 1.0 does not expose).
//!
//! Every call here is one attempt. Whether to try again is decided by the caller from the
//! error's kind ([`HubError::is_transient`]), so the retry policy lives in one place
//! ([`crate::retry`]).
//!
//! The token never appears in an error, a log line or a D-Bus reply: [`Token`] has no `Display`
//! and its `Debug` is redacted, and errors carry only the status and the request path.

pub mod upload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hf_hub::progress::{Progress, ProgressEvent, ProgressHandler};
use hf_hub::{HFClient, HFError, RepoTypeModel};
use serde::Deserialize;

/// Idle limit on one read from the Hub; a stalled transfer fails and is retried.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many of the newest commits on `main` are searched for a job's commit.
const RECENT_COMMITS: usize = 100;

/// A Hugging Face access token. Deliberately not `Display`.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads the token from a file (the systemd credential `hf-token` or `publisher.token_file`).
    /// Errors name the file, never its contents.
    pub fn load(path: &Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the Hugging Face token from {}: {e}",
                path.display()
            )
        })?;
        let token = text.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(format!(
                "{} does not hold a Hugging Face token (one line, no spaces)",
                path.display()
            ));
        }
        Ok(Token(token.to_string()))
    }
}

/// What went wrong talking to the Hub, by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    /// 401/403: retrying cannot help; a person must fix the token.
    #[error("HF token rejected: the Hub answered {0}; check the hf-token credential (or publisher.token_file) and that the token can write to the repository")]
    TokenRejected(String),
    /// Network trouble, 408, 429 or 5xx: worth trying again.
    #[error("{0}")]
    Transient(String),
    /// The Hub refused the request (other 4xx) or answered something we cannot use.
    #[error("{0}")]
    Refused(String),
}

impl HubError {
    pub fn is_transient(&self) -> bool {
        matches!(self, HubError::Transient(_))
    }

    /// Classifies an HTTP status for the request `what` (method and path, never a token).
    fn from_status(status: reqwest::StatusCode, what: &str, body: &str) -> HubError {
        let detail = summarize(body);
        let msg = format!("{what}: HTTP {status}{detail}");
        match status.as_u16() {
            401 | 403 => HubError::TokenRejected(format!("{} for {what}", status.as_u16())),
            408 | 429 | 500..=599 => HubError::Transient(msg),
            _ => HubError::Refused(msg),
        }
    }

    fn from_reqwest(e: reqwest::Error, what: &str) -> HubError {
        // Without the URL: a presigned upload URL carries the Hub's signature in its query.
        HubError::Transient(format!("{what}: {}", e.without_url()))
    }

    fn from_hf(e: HFError, what: &str) -> HubError {
        match &e {
            HFError::AuthRequired { context } | HFError::Forbidden { context } => {
                HubError::TokenRejected(format!("{} for {what}", context.status.as_u16()))
            }
            HFError::RateLimited { .. } => HubError::Transient(format!("{what}: {e}")),
            HFError::Http { context } => HubError::from_status(context.status, what, &context.body),
            HFError::Request { .. } | HFError::Io(_) => HubError::Transient(format!("{what}: {e}")),
            _ => HubError::Refused(format!("{what}: {e}")),
        }
    }
}

/// The first line of an error body, short.
fn summarize(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        String::new()
    } else {
        let cut: String = line.chars().take(300).collect();
        format!(": {cut}")
    }
}

/// One file of a repository at a revision, as `model_info(files_metadata=True)` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Sibling {
    pub rfilename: String,
    #[serde(default)]
    pub size: Option<u64>,
}

#[derive(Deserialize)]
struct ModelInfo {
    #[serde(default)]
    siblings: Vec<Sibling>,
}

/// A connection to one Hub endpoint with one token. Cloning is cheap (shared connection pools).
#[derive(Clone)]
pub struct Hub {
    endpoint: String,
    token: Token,
    http: reqwest::Client,
    hf: HFClient,
}

impl Hub {
    /// `cache_dir` is where hf-hub may keep its cache (the publisher's state directory: the
    /// service has no home directory).
    pub fn new(endpoint: &str, token: Token, cache_dir: PathBuf) -> Result<Hub, HubError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("taominer/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| HubError::Refused(format!("cannot build the HTTP client: {e}")))?;
        let hf = HFClient::builder()
            .endpoint(endpoint)
            .token(token.0.clone())
            .client(http.clone())
            .cache_dir(cache_dir)
            .cache_enabled(false)
            // One attempt per call: crate::retry decides about retries.
            .retry_max_attempts(1)
            .build()
            .map_err(|e| HubError::Refused(format!("cannot set up the Hub client: {e}")))?;
        Ok(Hub {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            http,
            hf,
        })
    }

    fn repo(&self, repo: &str) -> hf_hub::HFRepository<RepoTypeModel> {
        let (ns, name) = repo.split_once('/').unwrap_or(("", repo));
        self.hf.model(ns, name)
    }

    fn api(&self, repo: &str, rest: &str) -> String {
        format!("{}/api/models/{repo}{rest}", self.endpoint)
    }

    /// Sends a request with the token (as a header marked sensitive, which HTTP logging redacts);
    /// maps failures by status.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, HubError> {
        let resp = req
            .bearer_auth(&self.token.0)
            .send()
            .await
            .map_err(|e| HubError::from_reqwest(e, what))?;
        check(resp, what).await
    }

    /// Creates the repository, private, unless it exists (`exist_ok`).
    pub async fn create_repo(&self, repo: &str) -> Result<(), HubError> {
        self.hf
            .create_repository()
            .repo_id(repo)
            .repo_type(RepoTypeModel)
            .private(true)
            .exist_ok(true)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| HubError::from_hf(e, "create repository"))
    }

    /// The newest commit on `main` (of the last [`RECENT_COMMITS`]) whose title or message
    /// contains `marker`, if any: how a restarted job finds the commit it made before it died,
    /// instead of committing twice.
    pub async fn find_commit(&self, repo: &str, marker: &str) -> Result<Option<String>, HubError> {
        let r = self.repo(repo);
        let stream = r
            .list_commits()
            .revision("main")
            // A job's own commit is among the newest; a long history need not be paged through.
            .limit(RECENT_COMMITS)
            .send()
            .map_err(|e| HubError::from_hf(e, "list commits"))?;
        futures_util::pin_mut!(stream);
        while let Some(c) = stream.next().await {
            let c = c.map_err(|e| HubError::from_hf(e, "list commits"))?;
            if c.title.contains(marker) || c.message.contains(marker) {
                return Ok(Some(c.id));
            }
        }
        Ok(None)
    }

    /// Every file of the repository at `revision` with its size, exactly as validators ask
    /// (`HfApi().model_info(repo, revision=…, files_metadata=True)`); `None` if the revision
    /// does not exist.
    pub async fn files_at(
        &self,
        repo: &str,
        revision: &str,
    ) -> Result<Option<Vec<Sibling>>, HubError> {
        let what = "model info";
        let url = self.api(repo, &format!("/revision/{revision}"));
        let resp = self
            .http
            .get(url)
            .query(&[("blobs", "true")])
            .bearer_auth(&self.token.0)
            .send()
            .await
            .map_err(|e| HubError::from_reqwest(e, what))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check(resp, what).await?;
        let info: ModelInfo = resp
            .json()
            .await
            .map_err(|e| HubError::from_reqwest(e, what))?;
        Ok(Some(info.siblings))
    }

    /// Downloads one file at `revision` into `dest/<path>` (hf-hub's resolve download);
    /// `alive` moves with every progress event, so a long download is not taken for a hang.
    pub async fn download(
        &self,
        repo: &str,
        revision: &str,
        path: &str,
        dest: &Path,
        alive: &Arc<AtomicU64>,
    ) -> Result<PathBuf, HubError> {
        self.repo(repo)
            .download_file()
            .filename(path)
            .revision(revision)
            .local_dir(dest.to_path_buf())
            .force_download(true)
            .progress(Progress::new(Alive(alive.clone())))
            .send()
            .await
            .map_err(|e| HubError::from_hf(e, &format!("download {path}")))
    }

    /// Makes the repository private or public.
    pub async fn set_private(&self, repo: &str, private: bool) -> Result<(), HubError> {
        self.repo(repo)
            .update_settings()
            .private(private)
            .send()
            .await
            .map_err(|e| HubError::from_hf(e, "update repository settings"))
    }
}

/// Counts hf-hub's progress events into the job's liveness counter.
struct Alive(Arc<AtomicU64>);

impl ProgressHandler for Alive {
    fn on_progress(&self, _event: &ProgressEvent) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Passes a success through; turns any other status into a classified error.
async fn check(resp: reqwest::Response, what: &str) -> Result<reqwest::Response, HubError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    Err(HubError::from_status(status, what, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("hf-token");
        std::fs::write(&p, "hf_secret123\n").unwrap();
        let t = Token::load(&p).unwrap();
        assert!(!format!("{t:?}").contains("secret"));
        std::fs::write(&p, "\n").unwrap();
        let e = Token::load(&p).unwrap_err();
        assert!(e.contains("does not hold"));
    }

    #[test]
    fn statuses_are_classified_for_retry() {
        use reqwest::StatusCode as S;
        assert!(matches!(
            HubError::from_status(S::UNAUTHORIZED, "commit", "bad"),
            HubError::TokenRejected(_)
        ));
        assert!(HubError::from_status(S::BAD_GATEWAY, "commit", "").is_transient());
        assert!(HubError::from_status(S::TOO_MANY_REQUESTS, "commit", "").is_transient());
        let e = HubError::from_status(
            S::UNPROCESSABLE_ENTITY,
            "commit",
            "lfs object missing\nmore",
        );
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "commit: HTTP 422 Unprocessable Entity: lfs object missing"
        );
    }
}
