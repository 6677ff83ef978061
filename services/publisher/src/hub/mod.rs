//! The Hugging Face Hub, as the publisher and the trainer use it.
//!
//! The publisher creates, uploads to and verifies its repository; the trainer reads other
//! miners' committed models and dataset shards (without a token when it has none: public
//! repositories need none). Every call is a plain `reqwest` request to the Hub's HTTP API, so
//! that every answer is read through one door with a size cap: JSON at [`MAX_JSON_BYTES`], error
//! bodies at 64 KiB, a downloaded file at the size its caller expects. The `hf-hub` crate is not
//! used: its reads have no cap, and it uploads large files only through Xet (see [`upload`]).
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
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// Idle limit on one read from the Hub; a stalled transfer fails and is retried.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many of the newest commits on `main` are searched for a job's commit.
const RECENT_COMMITS: usize = 100;
/// The most a JSON answer of the Hub may hold (a listing of thousands of files is well below).
pub const MAX_JSON_BYTES: usize = 16 << 20;
/// The most one downloaded file may hold when the listing gives no size (above any
/// competition's whole-model limit).
pub const MAX_FILE_BYTES: u64 = 64 << 30;
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

impl Sibling {
    /// The most bytes a download of this file may bring: its listed size, or
    /// [`MAX_FILE_BYTES`] when the Hub listed none.
    pub fn max_bytes(&self) -> u64 {
        self.size.unwrap_or(MAX_FILE_BYTES)
    }
}

/// The most bytes `name` may have by `files` (a name not listed gets none: the download is
/// refused at its first byte).
pub fn listed_size(files: &[Sibling], name: &str) -> u64 {
    files
        .iter()
        .find(|s| s.rfilename == name)
        .map_or(0, Sibling::max_bytes)
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
}

impl Hub {
    /// A client for `endpoint`; without a token every request is anonymous.
    pub fn new(endpoint: &str, token: Option<Token>) -> Result<Hub, HubError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("taominer/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            // The Hub redirects downloads to its CDN; reqwest drops the Authorization header
            // when a redirect leaves the origin, so the token stays with the endpoint.
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| HubError::Refused(format!("cannot build the HTTP client: {e}")))?;
        Ok(Hub {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            http,
        })
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

    /// Creates the repository, private, unless it exists (`exist_ok`: the Hub answers 409).
    pub async fn create_repo(&self, repo: &str) -> Result<(), HubError> {
        let what = "create repository";
        let (ns, name) = repo.split_once('/').unwrap_or(("", repo));
        let body = serde_json::json!({
            "name": name,
            "organization": ns,
            "private": true,
            "type": "model",
        });
        let req = self
            .http
            .post(format!("{}/api/repos/create", self.endpoint))
            .json(&body);
        let resp = self.send_raw(req, what).await?;
        if resp.status() == reqwest::StatusCode::CONFLICT {
            return Ok(());
        }
        check(resp, what).await.map(|_| ())
    }

    /// The newest commit on `main` (of the last [`RECENT_COMMITS`]) whose title or message
    /// contains `marker`, if any: how a restarted job finds the commit it made before it died,
    /// instead of committing twice. The Hub pages the listing (`Link: <…>; rel="next"`); pages
    /// are followed on the endpoint's origin only, until [`RECENT_COMMITS`] were seen.
    pub async fn find_commit(&self, repo: &str, marker: &str) -> Result<Option<String>, HubError> {
        let what = "list commits";
        let mut url = self.api(repo, "/commits/main");
        let mut seen = 0;
        loop {
            let resp = self.send(self.http.get(&url), what).await?;
            let next = next_page(resp.headers());
            let page: Vec<CommitInfo> = json_capped(resp, what).await?;
            if let Some(c) = page
                .iter()
                .find(|c| c.title.contains(marker) || c.message.contains(marker))
            {
                return Ok(Some(c.id.clone()));
            }
            seen += page.len();
            let Some(next) = next.filter(|_| seen < RECENT_COMMITS && !page.is_empty()) else {
                return Ok(None);
            };
            let parsed = reqwest::Url::parse(&next)
                .map_err(|_| HubError::Refused(format!("{what}: the next page is not a URL")))?;
            if !self.same_origin(&parsed) {
                return Err(HubError::Refused(format!(
                    "{what}: the next page is on another origin ({})",
                    redact_urls(&next)
                )));
            }
            url = next;
        }
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

    /// Downloads one file at `revision` into `dest/<path>` (the Hub's `resolve` URL, as
    /// `hf_hub_download` fetches it), refusing more than `max_bytes` (the size the caller
    /// expects, from the listing); `alive` moves with every chunk, so a long download is not
    /// taken for a hang.
    pub async fn download(
        &self,
        repo: &str,
        revision: &str,
        path: &str,
        dest: &Path,
        max_bytes: u64,
        alive: &Arc<AtomicU64>,
    ) -> Result<PathBuf, HubError> {
        let file = RemoteFile {
            kind: RepoKind::Model,
            repo,
            revision,
            path,
            max_bytes,
        };
        self.download_from(&file, dest, alive).await
    }

    /// [`Hub::download`] from a model or a dataset repository. The file is written beside its
    /// final name and renamed once whole, so a cut transfer never leaves a short file under it.
    pub async fn download_from(
        &self,
        file: &RemoteFile<'_>,
        dest: &Path,
        alive: &Arc<AtomicU64>,
    ) -> Result<PathBuf, HubError> {
        let RemoteFile {
            kind,
            repo,
            revision,
            path,
            max_bytes,
        } = *file;
        // The name is joined to `dest`: an absolute or `..` name would land outside it.
        taominer_core::hub_names::check(path)
            .map_err(|e| HubError::Refused(format!("download: {e}")))?;
        let what = format!("download {path}");
        let too_big = || {
            HubError::Refused(format!(
                "{what}: the Hub sends more than the {max_bytes} bytes listed; refusing it"
            ))
        };
        let mut url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| HubError::Refused(format!("{what}: bad endpoint: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| HubError::Refused(format!("{what}: bad endpoint")))?
            .pop_if_empty()
            .extend((kind == RepoKind::Dataset).then_some("datasets"))
            .extend(repo.split('/'))
            .push("resolve")
            .push(revision)
            .extend(path.split('/'));
        let resp = self.send(self.http.get(url), &what).await?;
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Err(too_big());
        }
        let target = dest.join(path);
        let io = |e: std::io::Error| HubError::Refused(format!("{what}: {e}"));
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let part = target.with_file_name(format!(".{name}.part"));
        let mut out = tokio::fs::File::create(&part).await.map_err(io)?;
        let mut stream = resp.bytes_stream();
        let mut written: u64 = 0;
        let copied: Result<(), HubError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| HubError::Transient(redact_urls(&format!("{what}: {e}"))))?;
                written += chunk.len() as u64;
                if written > max_bytes {
                    return Err(too_big());
                }
                out.write_all(&chunk).await.map_err(io)?;
                alive.fetch_add(1, Ordering::Relaxed);
            }
            out.flush().await.map_err(io)
        }
        .await;
        drop(out);
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        tokio::fs::rename(&part, &target).await.map_err(io)?;
        Ok(target)
    }

    /// Makes the repository private or public.
    pub async fn set_private(&self, repo: &str, private: bool) -> Result<(), HubError> {
        let req = self
            .http
            .put(self.api(repo, "/settings"))
            .json(&serde_json::json!({ "private": private }));
        self.send(req, "update repository settings")
            .await
            .map(|_| ())
    }
}

/// One file to download: where it is and the most bytes it may have.
#[derive(Debug, Clone, Copy)]
pub struct RemoteFile<'a> {
    pub kind: RepoKind,
    pub repo: &'a str,
    pub revision: &'a str,
    pub path: &'a str,
    /// The size the listing gave (a caller without one passes its own bound).
    pub max_bytes: u64,
}

/// One entry of the Hub's commit listing (`list_repo_commits`).
#[derive(Deserialize)]
struct CommitInfo {
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    message: String,
}

/// The `rel="next"` target of a `Link` header, as the Hub pages its listings.
fn next_page(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        is_next.then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
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
        let token = Token("t".into());
        let hub = Hub::new("https://huggingface.co/", Some(token)).unwrap();
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

    /// Proves the Hub's paging header is read as the Hub writes it, and only `rel="next"`.
    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(next_page(&h), None);
        h.insert(
            reqwest::header::LINK,
            r#"<https://huggingface.co/api/models/a/b/commits/main?p=0>; rel="prev", <https://huggingface.co/api/models/a/b/commits/main?p=2>; rel="next""#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page(&h).as_deref(),
            Some("https://huggingface.co/api/models/a/b/commits/main?p=2")
        );
    }

    /// A one-shot HTTP server on localhost answering every request with `head` and `body`.
    async fn serve_once(head: String, body: Vec<u8>) -> String {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&body).await;
        });
        format!("http://{addr}")
    }

    /// Proves the commit listing follows its next page only on the endpoint's origin: a Hub
    /// (or anything in between) naming another host as the next page gets no request there, so
    /// the token never leaves, and the search ends with an error rather than a guess.
    #[tokio::test]
    async fn a_next_page_on_another_origin_is_refused() {
        let page = br#"[{"id":"c1","title":"an unrelated commit","message":""}]"#.to_vec();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nLink: <http://elsewhere.example/api/models/a/b/commits/main?p=1>; rel=\"next\"\r\n\r\n",
            page.len()
        );
        let endpoint = serve_once(head, page).await;
        let hub = Hub::new(&endpoint, Some(Token("t".into()))).unwrap();
        let e = hub.find_commit("a/b", "job-marker").await.unwrap_err();
        assert!(matches!(e, HubError::Refused(_)), "{e}");
        assert!(e.to_string().contains("another origin"), "{e}");
    }

    /// Proves a download is refused past the size the listing gave, whether the Hub says so in
    /// `Content-Length` (refused before the body is read) or not (refused at the first byte
    /// over), and that a refused download leaves no file under its name nor a partial file.
    #[tokio::test]
    async fn a_download_larger_than_listed_is_refused_and_leaves_nothing() {
        let alive = Arc::new(AtomicU64::new(0));
        for head in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
        ] {
            let endpoint = serve_once(head.to_string(), vec![b'x'; 4096]).await;
            let hub = Hub::new(&endpoint, None).unwrap();
            let dest = tempfile::tempdir().unwrap();
            let e = hub
                .download(
                    "a/b",
                    "main",
                    "model.safetensors",
                    dest.path(),
                    1000,
                    &alive,
                )
                .await
                .unwrap_err();
            assert!(matches!(e, HubError::Refused(_)), "{e}");
            assert!(e.to_string().contains("more than the 1000 bytes"), "{e}");
            assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0, "{head}");
        }
        // At the listed size it is written whole, under its name.
        let endpoint = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".into(),
            vec![b'y'; 1000],
        )
        .await;
        let hub = Hub::new(&endpoint, None).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let path = hub
            .download(
                "a/b",
                "main",
                "sub/model.safetensors",
                dest.path(),
                1000,
                &alive,
            )
            .await
            .unwrap();
        assert_eq!(path, dest.path().join("sub/model.safetensors"));
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'y'; 1000]);
    }
}
