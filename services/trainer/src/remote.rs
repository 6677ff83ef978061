//! Other miners' committed models: which one (the committer's `Metagraph()` and `Commitment()`),
//! what it is (the model id in the commitment), and its files (the publisher's Hub client, at the committed revision).
//!
//! Used to start from a miner's model (`--load-uid N`, `--load-best`) and to score the
//! competition's best model before offering a candidate (`gate_on_best`). "Best" is upstream's
//! rule (`pretrain.graph.best_uid`): of the five UIDs with the highest incentive, the first whose
//! commitment names our competition.
//!
//! The Hub is read with the publisher's client ([`taominer_publisher::hub`]), so both daemons
//! send the same requests, classify the same errors and retry by the same rule; here a transient
//! error is tried [`MAX_ATTEMPTS`] times before the start fails with it (the publisher, with no
//! one waiting, retries for as long as it takes).
//!
//! The Hub's file listing is someone else's input: every name is checked
//! ([`taominer_core::hub_names`], in the client) before it is joined to our directory, and a
//! download is marked complete only once its files are fsynced.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use taominer_core::bus::{CommitterProxy, NeuronInfo};
use taominer_core::config::{Config, ConfigError, HubConfig};
use taominer_core::daemon::backoff::Backoff;
use taominer_core::daemon::store;
use taominer_core::formats::preflight;
use taominer_core::hub_names;

use taominer_publisher::hub::{listed_size, Hub, HubError, RemoteFile, RepoKind, Token};
use taominer_publisher::retry::retry;

use crate::error::{Error, Result};

/// Attempts at one Hub request before a transient failure (network, 429, 5xx) is given up on.
const MAX_ATTEMPTS: u32 = 5;

/// A committed model, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub uid: u16,
    pub hotkey: String,
    pub repo: String,
    pub revision: String,
    pub competition: String,
}

/// Reads commitments through the committer and downloads models from the Hub.
pub struct Remote {
    conn: zbus::Connection,
    hub: Hub,
    config: Config,
    cache: PathBuf,
}

/// The Hugging Face token for downloads, if one is configured. Public models need none, so no
/// token is fine; but a token that is configured (`hub.token_file`, or the `hf-token` credential
/// systemd passed) and cannot be read is a configuration error, not a reason to go on without it
/// and fail later on a private repository with a misleading "not found". Errors name the file,
/// never its contents.
pub fn read_token(hub: &HubConfig) -> std::result::Result<Option<String>, ConfigError> {
    let Some(path) = hub.token_path() else {
        return Ok(None);
    };
    let configured = hub.token_file.is_some();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        // The credentials directory without an `hf-token` in it: no token was given.
        Err(e) if !configured && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ConfigError::new(
                "hub.token_file",
                path.display(),
                format!("a readable file holding the Hugging Face token (reading it failed: {e})"),
            ))
        }
    };
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(ConfigError::new(
            "hub.token_file",
            path.display(),
            "a file holding one Hugging Face token (one line, no spaces)",
        ));
    }
    Ok(Some(token.to_string()))
}

impl Remote {
    /// A client of the committer (commitments) and of the Hub at `hub.endpoint`, with `token`
    /// ([`read_token`]) for private repositories.
    pub fn new(
        conn: zbus::Connection,
        config: &Config,
        state_dir: &Path,
        token: Option<String>,
    ) -> Result<Remote> {
        // Public models need no token; a configured one also opens private repos.
        let hub = Hub::new(config.hub.endpoint(), token.map(Token::from_checked))
            .map_err(|e| Error::Remote(format!("cannot set up the Hub client: {e}")))?;
        Ok(Remote {
            conn,
            hub,
            config: config.clone(),
            cache: state_dir.join("remote"),
        })
    }

    /// Runs one Hub request with the publisher's retry rule, giving a transient failure up after
    /// [`MAX_ATTEMPTS`] attempts; `what` names it in the error.
    async fn attempt<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, HubError>>,
    {
        let r = &self.config.retry;
        let mut backoff = Backoff::new(r.initial(), r.max()).with_jitter();
        // Nobody watches this counter: the loop thread waits here before its first step.
        let alive = AtomicU64::new(0);
        let mut tries = 0;
        retry(what, &mut backoff, &alive, &|_| {}, || {
            tries += 1;
            let last = tries >= MAX_ATTEMPTS;
            let fut = op();
            async move {
                match fut.await {
                    Err(HubError::Transient(m)) if last => Err(HubError::Refused(format!(
                        "{m} (gave up after {MAX_ATTEMPTS} attempts)"
                    ))),
                    other => other,
                }
            }
        })
        .await
        .map_err(|e| Error::Remote(format!("{what}: {e}")))
    }

    async fn committer(&self) -> Result<CommitterProxy<'_>> {
        Ok(CommitterProxy::builder(&self.conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?)
    }

    async fn metagraph(&self) -> Result<Vec<NeuronInfo>> {
        self.committer()
            .await?
            .metagraph()
            .await
            .map_err(|e| Error::Remote(format!("the committer's metagraph: {}", bus_message(&e))))
    }

    /// The model UID `uid` committed, whatever its competition.
    pub async fn of_uid(&self, uid: u16) -> Result<Committed> {
        let neurons = self.metagraph().await?;
        let n = neurons
            .iter()
            .find(|n| n.uid == uid)
            .ok_or_else(|| Error::Remote(format!("UID {uid} is not on the subnet")))?;
        self.commitment_of(n).await?.ok_or_else(|| {
            Error::Remote(format!("UID {uid} ({}) has no model commitment", n.hotkey))
        })
    }

    /// The competition's best model by upstream's rule, if any miner committed one.
    pub async fn best(&self, competition: &str) -> Result<Option<Committed>> {
        let mut neurons = self.metagraph().await?;
        neurons.sort_by(|a, b| b.incentive.total_cmp(&a.incentive).then(a.uid.cmp(&b.uid)));
        for n in neurons.iter().take(5) {
            if let Some(c) = self.commitment_of(n).await? {
                if c.competition == competition {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    async fn commitment_of(&self, n: &NeuronInfo) -> Result<Option<Committed>> {
        let text = self
            .committer()
            .await?
            .commitment(&n.hotkey)
            .await
            .map_err(|e| {
                Error::Remote(format!("commitment of UID {}: {}", n.uid, bus_message(&e)))
            })?;
        // Core's reader: the rules commitments are written with (one parser for the tree).
        match self.config.miner.profile.rules().read_commitment(&text) {
            Ok(m) => Ok(Some(Committed {
                uid: n.uid,
                hotkey: n.hotkey.clone(),
                repo: m.repo(),
                revision: m.commit,
                competition: m.competition,
            })),
            Err(e) => {
                tracing::debug!(UID = n.uid, "no model to load from its commitment: {e}");
                Ok(None)
            }
        }
    }

    /// Downloads the files `from_pretrained` reads at the committed revision into
    /// `remote/<ns>--<name>--<revision>/` (reused when already complete). Returns the directory.
    pub async fn download(&self, c: &Committed) -> Result<PathBuf> {
        let dir = self
            .cache
            .join(format!("{}--{}", c.repo.replace('/', "--"), c.revision));
        if dir.join(".complete").exists() {
            return Ok(dir);
        }
        let at = format!("{} at {}", c.repo, c.revision);
        let listing = self
            .attempt(&format!("{at}: model info"), || {
                self.hub.repo_at(RepoKind::Model, &c.repo, &c.revision)
            })
            .await?
            .ok_or_else(|| Error::Remote(format!("{at}: no such revision on the Hub")))?;
        // Another miner's repository names these files; the client checked each name.
        let files: Vec<String> = listing.files.iter().map(|s| s.rfilename.clone()).collect();
        let listed = &listing.files;
        let tmp = self.cache.join(format!(".tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(Error::io("cannot create", &tmp))?;
        let alive = Arc::new(AtomicU64::new(0));
        let get = |file: String| {
            let (tmp, alive, at) = (tmp.clone(), alive.clone(), at.clone());
            async move {
                let remote = RemoteFile {
                    kind: RepoKind::Model,
                    repo: &c.repo,
                    revision: &c.revision,
                    path: &file,
                    max_bytes: listed_size(listed, &file),
                };
                self.attempt(&format!("{at}: download {file}"), || {
                    self.hub.download_from(&remote, &tmp, &alive)
                })
                .await
            }
        };
        let mut shards = Vec::new();
        if !files.iter().any(|f| f == "model.safetensors")
            && files.iter().any(|f| f == "model.safetensors.index.json")
        {
            let index = get("model.safetensors.index.json".into()).await?;
            shards = taominer_core::formats::safetensors::index_shards(&index)
                .map_err(|e| Error::Remote(e.to_string()))?;
            hub_names::check_all(shards.iter().map(String::as_str))
                .map_err(|e| Error::Remote(format!("{} at {}: {e}", c.repo, c.revision)))?;
        }
        let wanted =
            preflight::validator_files(self.config.miner.profile.rules().layout(), &files, &shards);
        if !wanted.iter().any(|f| f == "config.json") {
            return Err(Error::Remote(format!(
                "{} at {} has no config.json: not a transformers model",
                c.repo, c.revision
            )));
        }
        for f in wanted {
            get(f).await?;
        }
        // `.complete` promises whole files: they reach the disk before it does.
        fsync_tree(&tmp)?;
        let marker = tmp.join(".complete");
        std::fs::write(&marker, b"").map_err(Error::io("cannot write", &marker))?;
        fsync_file(&marker)?;
        store::fsync_dir(&tmp)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(Error::io("cannot rename", &dir))?;
        store::fsync_dir(&self.cache)?;
        tracing::info!(
            "downloaded UID {}'s model {} at {} to {}",
            c.uid,
            c.repo,
            c.revision,
            dir.display()
        );
        Ok(dir)
    }
}

impl Remote {
    /// Downloads the Parquet files of a Hugging Face dataset repo at `revision` (a branch or a
    /// commit) into `datasets/<ns>--<name>--<commit>/`, reused when complete. With `max_files`
    /// above 0, that many shards are drawn with `seed` (a different sample for another seed,
    /// the same one on every restart). Returns the files, sorted.
    pub async fn download_dataset(
        &self,
        repo_id: &str,
        revision: &str,
        max_files: usize,
        seed: u64,
    ) -> Result<Vec<PathBuf>> {
        let at = format!("dataset {repo_id} at {revision}");
        let listing = self
            .attempt(&format!("{at}: dataset info"), || {
                self.hub.repo_at(RepoKind::Dataset, repo_id, revision)
            })
            .await?
            .ok_or_else(|| Error::Remote(format!("{at}: no such revision on the Hub")))?;
        let commit = listing.commit;
        // The client checked every name the Hub listed.
        let mut shards: Vec<String> = listing
            .files
            .iter()
            .map(|s| s.rfilename.clone())
            .filter(|f| f.ends_with(".parquet"))
            .collect();
        shards.sort();
        if shards.is_empty() {
            return Err(Error::Remote(format!(
                "dataset {repo_id} at {revision} has no .parquet files"
            )));
        }
        if max_files > 0 && shards.len() > max_files {
            let mut rng = crate::rng::Rng::new(seed ^ 0xda7a);
            rng.shuffle(&mut shards);
            shards.truncate(max_files);
            shards.sort();
        }
        let dir = self
            .cache
            .with_file_name("datasets")
            .join(format!("{}--{commit}", repo_id.replace('/', "--")));
        let done = dir.join(".complete");
        let listed: String = shards.join("\n");
        if std::fs::read_to_string(&done).is_ok_and(|d| d == listed) {
            return Ok(shards.iter().map(|s| dir.join(s)).collect());
        }
        std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
        let alive = Arc::new(AtomicU64::new(0));
        for s in &shards {
            let remote = RemoteFile {
                kind: RepoKind::Dataset,
                repo: repo_id,
                revision: &commit,
                path: s,
                max_bytes: listed_size(&listing.files, s),
            };
            self.attempt(&format!("{at}: download {s}"), || {
                self.hub.download_from(&remote, &dir, &alive)
            })
            .await?;
        }
        // The marker lists whole files only: each shard reaches the disk before it does.
        fsync_tree(&dir)?;
        store::write_atomic(&done, listed.as_bytes())?;
        tracing::info!(
            "dataset {repo_id} at {commit}: {} Parquet files in {}",
            shards.len(),
            dir.display()
        );
        Ok(shards.iter().map(|s| dir.join(s)).collect())
    }
}

/// fsyncs one file.
fn fsync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("cannot fsync", path))
}

/// fsyncs every file and directory under `dir` (what the Hub client wrote), deepest first, then `dir`.
fn fsync_tree(dir: &Path) -> Result<()> {
    let listing = std::fs::read_dir(dir).map_err(Error::io("cannot list", dir))?;
    for entry in listing {
        let entry = entry.map_err(Error::io("cannot list", dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(Error::io("cannot stat", &path))?;
        if ft.is_dir() {
            fsync_tree(&path)?;
        } else if ft.is_file() {
            fsync_file(&path)?;
        }
    }
    Ok(store::fsync_dir(dir)?)
}

fn bus_message(e: &zbus::Error) -> String {
    if taominer_core::bus::is_service_unknown(e) {
        return "the committer is not running (systemctl start miner-committer)".into();
    }
    taominer_core::bus::error_message(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configured token file is read, and one that cannot be read (or holds no token) is a
    /// configuration error naming `hub.token_file` and the path, never the contents.
    #[test]
    fn a_configured_token_is_read_or_refused_naming_the_key() {
        // No tempfile in this crate's dev-dependencies: a directory of our own, removed at the end.
        let dir = std::env::temp_dir().join(format!("taominer-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hub = |p: &Path| HubConfig {
            token_file: Some(p.to_path_buf()),
            ..HubConfig::default()
        };
        let good = dir.join("good");
        std::fs::write(&good, "hf_secret\n").unwrap();
        assert_eq!(read_token(&hub(&good)), Ok(Some("hf_secret".to_string())));
        let missing = dir.join("missing");
        let e = read_token(&hub(&missing)).unwrap_err();
        assert_eq!(e.key, "hub.token_file");
        assert!(e.value.contains("missing"), "{e}");
        let blank = dir.join("blank");
        std::fs::write(&blank, "\n").unwrap();
        assert_eq!(read_token(&hub(&blank)).unwrap_err().key, "hub.token_file");
        let spaced = dir.join("spaced");
        std::fs::write(&spaced, "hf_a hf_b").unwrap();
        let e = read_token(&hub(&spaced)).unwrap_err();
        assert!(!e.to_string().contains("hf_a"), "the token leaked: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Proves: `fsync_tree` reaches every file of a nested download (the Hub client writes
    /// `sub/dir/file` for a name with slashes) and fails loudly on a missing directory.
    #[test]
    fn downloads_are_fsynced_file_by_file() {
        let d = std::env::temp_dir().join(format!("remote-fsync-{}", std::process::id()));
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/b/x.safetensors"), b"x").unwrap();
        std::fs::write(d.join("config.json"), b"{}").unwrap();
        fsync_tree(&d).unwrap();
        assert!(fsync_tree(&d.join("missing")).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
