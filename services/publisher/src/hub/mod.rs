//! The Hugging Face Hub, as the publisher and the trainer use it.
//!
//! The publisher creates, uploads to and verifies its repository; the trainer reads other
//! miners' committed models and dataset shards (without a token when it has none: public
//! repositories need none). Two clients share one token:
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
//! and its `Debug` is redacted, and errors carry only the status and the request path; any URL an
//! error would carry (a presigned upload URL of a still-private repository holds a signature in
//! its query) is cut to its origin. The token is sent only to the configured endpoint's origin
//! (scheme, host, port): an LFS action the Hub names elsewhere gets the Hub's own headers, never
//! the token. Answers are read with a size cap, and file names the Hub lists are checked
//! ([`taominer_core::hub_names`]) before any is joined to a directory.

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
/// The most a JSON answer of the Hub may hold (a listing of thousands of files is well below).
pub const MAX_JSON_BYTES: usize = 16 << 20;
/// The most of an error answer that is read (only its first line is shown).
const MAX_ERROR_BYTES: usize = 64 << 10;

/// A Hugging Face access token. Deliberately not `Display`.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads the token from a file (the systemd credential `hf-token` or `hub.token_file`).
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

    /// A token already read and checked by its caller (the trainer's `read_token`, which
    /// reports a bad file as a configuration error naming `hub.token_file`).
    pub fn from_checked(token: String) -> Token {
        Token(token)
    }
}

/// What went wrong talking to the Hub, by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    /// 401/403: retrying cannot help; a person must fix the token.
    #[error("HF token rejected: the Hub answered {0}; check the hf-token credential (or hub.token_file) and that the token can write to the repository")]
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
        let msg = redact_urls(&format!("{what}: HTTP {status}{detail}"));
        match status.as_u16() {
            401 | 403 => HubError::TokenRejected(format!("{} for {what}", status.as_u16())),
            408 | 429 | 500..=599 => HubError::Transient(msg),
            _ => HubError::Refused(msg),
        }
    }

    fn from_reqwest(e: reqwest::Error, what: &str) -> HubError {
        // Without the URL: a presigned upload URL carries the Hub's signature in its query.
        HubError::Transient(redact_urls(&format!("{what}: {}", e.without_url())))
    }

    fn from_hf(e: HFError, what: &str) -> HubError {
        let what = redact_urls(what);
        let said = || redact_urls(&format!("{what}: {e}"));
        match &e {
            HFError::AuthRequired { context } | HFError::Forbidden { context } => {
                HubError::TokenRejected(format!("{} for {what}", context.status.as_u16()))
            }
            HFError::RateLimited { .. } => HubError::Transient(said()),
            HFError::Http { context } => {
                HubError::from_status(context.status, &what, &context.body)
            }
            HFError::Request { .. } | HFError::Io(_) => HubError::Transient(said()),
            _ => HubError::Refused(said()),
        }
    }
}

/// Cuts every `http://` or `https://` URL in `text` to its origin (`https://host:port/…`): a
/// presigned URL's path and query are a credential for the object until it expires, and a
/// job's errors reach `minerctl jobs`, D-Bus replies and the journal.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["https://", "http://"]
        .iter()
        .filter_map(|s| rest.find(s).map(|i| (i, s.len())))
        .min()
    {
        let (i, scheme_len) = at;
        out.push_str(&rest[..i + scheme_len]);
        let tail = &rest[i + scheme_len..];
        let end = tail
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']' | '`')
            })
            .unwrap_or(tail.len());
        let url = &tail[..end];
        let host_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        // Userinfo is a credential too.
        let host = url[..host_end].rsplit('@').next().unwrap_or("");
        out.push_str(host);
        if host_end < url.len() {
            out.push_str("/…");
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Reads a body of at most `cap` bytes from a stream of chunks; a longer one is refused without
/// reading further (a hostile or broken server could otherwise fill the publisher's memory).
pub async fn read_capped<S, E>(stream: S, cap: usize, what: &str) -> Result<Vec<u8>, HubError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
    E: std::fmt::Display,
{
    futures_util::pin_mut!(stream);
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| HubError::Transient(redact_urls(&format!("{what}: {e}"))))?;
        if body.len() + chunk.len() > cap {
            return Err(HubError::Refused(format!(
                "{what}: the Hub's answer is larger than {cap} bytes; refusing it"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JSON answer, read with [`MAX_JSON_BYTES`] as its cap.
pub(crate) async fn json_capped<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    what: &str,
) -> Result<T, HubError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_JSON_BYTES as u64)
    {
        return Err(HubError::Refused(format!(
            "{what}: the Hub's answer is larger than {MAX_JSON_BYTES} bytes; refusing it"
        )));
    }
    let body = read_capped(resp.bytes_stream(), MAX_JSON_BYTES, what).await?;
    serde_json::from_slice(&body).map_err(|e| {
        HubError::Refused(format!(
            "{what}: the Hub's answer is not what was expected: {e}"
        ))
    })
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
    /// The commit the revision resolves to.
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

/// What kind of repository a call is about (the Hub's URLs differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    fn api_segment(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }
}

/// A repository at a revision: the commit it resolves to and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFiles {
    /// The resolved commit (the Hub's `sha`); the revision asked for when the Hub gives none.
    pub commit: String,
    pub files: Vec<Sibling>,
}

/// A connection to one Hub endpoint with one token. Cloning is cheap (shared connection pools).
#[derive(Clone)]
pub struct Hub {
    endpoint: String,
    /// `None`: anonymous (the trainer without a token reads public repositories only).
    token: Option<Token>,
    http: reqwest::Client,
    hf: HFClient,
}

impl Hub {
    /// `cache_dir` is where hf-hub may keep its cache (the daemon's state directory: the
    /// services have no home directory). Without a token every request is anonymous.
    pub fn new(endpoint: &str, token: Option<Token>, cache_dir: PathBuf) -> Result<Hub, HubError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("taominer/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| HubError::Refused(format!("cannot build the HTTP client: {e}")))?;
        let mut hf = HFClient::builder().endpoint(endpoint);
        if let Some(t) = &token {
            hf = hf.token(t.0.clone());
        }
        let hf = hf
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
        self.api_of(RepoKind::Model, repo, rest)
    }

    fn api_of(&self, kind: RepoKind, repo: &str, rest: &str) -> String {
        format!("{}/api/{}/{repo}{rest}", self.endpoint, kind.api_segment())
    }

    /// Whether `url` is on the configured endpoint's origin (scheme, host and port), the only
    /// place the token goes.
    pub fn same_origin(&self, url: &reqwest::Url) -> bool {
        reqwest::Url::parse(&self.endpoint).is_ok_and(|e| {
            e.scheme() == url.scheme()
                && e.host_str() == url.host_str()
                && e.port_or_known_default() == url.port_or_known_default()
        })
    }

    /// Sends a request, with the token (as a header marked sensitive, which HTTP logging
    /// redacts) only if it goes to the endpoint's origin; the raw answer.
    async fn send_raw(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, HubError> {
        let mut req = req.build().map_err(|e| HubError::from_reqwest(e, what))?;
        let token = self.token.as_ref().filter(|_| self.same_origin(req.url()));
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.0))
                .map_err(|_| {
                    HubError::Refused("the HF token is not a valid header value".into())
                })?;
            value.set_sensitive(true);
            req.headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value);
        } else if self.token.is_some() {
            tracing::debug!("{what}: another origin than the endpoint; sent without the token");
        }
        self.http
            .execute(req)
            .await
            .map_err(|e| HubError::from_reqwest(e, what))
    }

    /// [`Hub::send_raw`], failures mapped by status.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, HubError> {
        let resp = self.send_raw(req, what).await?;
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
        Ok(self
            .repo_at(RepoKind::Model, repo, revision)
            .await?
            .map(|r| r.files))
    }

    /// A model or dataset repository at `revision`: the commit it resolves to and every file
    /// with its size (names checked before anyone joins them to a directory); `None` if the
    /// revision does not exist.
    pub async fn repo_at(
        &self,
        kind: RepoKind,
        repo: &str,
        revision: &str,
    ) -> Result<Option<RepoFiles>, HubError> {
        let what = match kind {
            RepoKind::Model => "model info",
            RepoKind::Dataset => "dataset info",
        };
        let url = self.api_of(kind, repo, &format!("/revision/{revision}"));
        let resp = self
            .send_raw(self.http.get(url).query(&[("blobs", "true")]), what)
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check(resp, what).await?;
        let info: ModelInfo = json_capped(resp, what).await?;
        taominer_core::hub_names::check_all(info.siblings.iter().map(|s| s.rfilename.as_str()))
            .map_err(|e| HubError::Refused(format!("{what}: {e}")))?;
        Ok(Some(RepoFiles {
            commit: info.sha.unwrap_or_else(|| revision.to_string()),
            files: info.siblings,
        }))
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
        self.download_from(RepoKind::Model, repo, revision, path, dest, alive)
            .await
    }

    /// [`Hub::download`] from a model or a dataset repository.
    pub async fn download_from(
        &self,
        kind: RepoKind,
        repo: &str,
        revision: &str,
        path: &str,
        dest: &Path,
        alive: &Arc<AtomicU64>,
    ) -> Result<PathBuf, HubError> {
        // hf-hub joins the name to `dest`: an absolute or `..` name would land outside it.
        taominer_core::hub_names::check(path)
            .map_err(|e| HubError::Refused(format!("download: {e}")))?;
        let (ns, name) = repo.split_once('/').unwrap_or(("", repo));
        let progress = Progress::new(Alive(alive.clone()));
        let sent = match kind {
            RepoKind::Model => {
                self.hf
                    .model(ns, name)
                    .download_file()
                    .filename(path)
                    .revision(revision)
                    .local_dir(dest.to_path_buf())
                    .force_download(true)
                    .progress(progress)
                    .send()
                    .await
            }
            RepoKind::Dataset => {
                self.hf
                    .dataset(ns, name)
                    .download_file()
                    .filename(path)
                    .revision(revision)
                    .local_dir(dest.to_path_buf())
                    .force_download(true)
                    .progress(progress)
                    .send()
                    .await
            }
        };
        sent.map_err(|e| HubError::from_hf(e, &format!("download {path}")))
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
    // Only the first line is shown; a hostile server's endless error body is not read.
    let body = read_capped(resp.bytes_stream(), MAX_ERROR_BYTES, what)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body);
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

    /// Proves: a presigned URL (path and query are the credential) and userinfo never survive
    /// into an error message; the origin stays, so the message still says which host failed.
    #[test]
    fn urls_in_errors_are_cut_to_their_origin() {
        let e = redact_urls(
            "LFS upload model.safetensors: error sending request for url (https://s3.example.com/bucket/obj?X-Amz-Signature=abc123&t=secret): timed out",
        );
        assert!(
            !e.contains("abc123") && !e.contains("secret") && !e.contains("bucket"),
            "{e}"
        );
        assert!(e.contains("https://s3.example.com/…"), "{e}");
        assert!(e.ends_with("timed out"), "{e}");
        let e = redact_urls("see http://user:pw@hub.local:8080/x?t=1 and https://a.b");
        assert_eq!(e, "see http://hub.local:8080/… and https://a.b");
        let e = HubError::from_status(
            reqwest::StatusCode::BAD_REQUEST,
            "LFS verify x",
            "expired: https://cdn.example/obj?sig=zzz",
        )
        .to_string();
        assert!(!e.contains("sig=zzz"), "{e}");
    }

    /// Proves: a body over the cap is refused without collecting it, one at the cap is read.
    #[tokio::test]
    async fn hub_answers_are_read_with_a_cap() {
        let chunks = |n: usize| {
            futures_util::stream::iter(
                (0..n).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1024]))),
            )
        };
        assert_eq!(read_capped(chunks(4), 4096, "t").await.unwrap().len(), 4096);
        let e = read_capped(chunks(5), 4096, "model info")
            .await
            .unwrap_err();
        assert!(matches!(e, HubError::Refused(_)));
        assert!(e.to_string().contains("larger than 4096 bytes"), "{e}");
        // An endless body: refused after the cap, not read forever.
        let endless = futures_util::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 1 << 20]))
        });
        assert!(read_capped(endless, MAX_JSON_BYTES, "t").await.is_err());
    }

    /// Proves: the token goes to the endpoint's origin only: another host, port or scheme (an
    /// LFS `verify.href` the Hub names elsewhere) is not that origin.
    #[test]
    fn the_token_goes_to_the_endpoints_origin_only() {
        let d = tempfile::tempdir().unwrap();
        let token = Token("t".into());
        let hub = Hub::new("https://huggingface.co/", Some(token), d.path().join("c")).unwrap();
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(hub.same_origin(&url("https://huggingface.co/api/models/a/b")));
        assert!(hub.same_origin(&url(
            "https://huggingface.co:443/a.git/info/lfs/objects/verify"
        )));
        for other in [
            "https://evil.example/verify",
            "http://huggingface.co/verify",
            "https://huggingface.co:8443/verify",
            "https://huggingface.co.evil.example/verify",
            "https://cdn-lfs.huggingface.co/verify",
        ] {
            assert!(!hub.same_origin(&url(other)), "{other}");
        }
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
