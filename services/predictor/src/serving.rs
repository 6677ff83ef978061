//! The model being served, and how a new one replaces it without a request failing.
//!
//! The slot holds an `Arc<Model>`; a batch takes the `Arc` it starts with and finishes on it, so a
//! swap is one pointer store and the old model is freed when its last batch ends. A new model is
//! loaded and checked (a warm-up run included) on a blocking thread, off the request path; a file
//! that fails any check leaves the old model serving and its reason in the status's last reload error. A model
//! with another input size is refused too: requests already preprocessed for the serving model
//! must fit the next one.
//!
//! The model file is polled (size, mtime, inode), and a change is loaded only once it has held
//! still for one poll, so a file being copied in place is not read half-written. `Reload()` over
//! D-Bus loads at once.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::{LoadOptions, Model};

/// The serving model, shared by the axon (preprocessing) and the inference thread.
#[derive(Default)]
pub struct Slot {
    model: RwLock<Option<Arc<Model>>>,
}

impl Slot {
    pub fn current(&self) -> Option<Arc<Model>> {
        self.model.read().ok().and_then(|m| m.clone())
    }

    fn set(&self, model: Arc<Model>) {
        if let Ok(mut m) = self.model.write() {
            *m = Some(model);
        }
    }
}

/// Counters and the last reload error, for D-Bus and `STATUS=`.
#[derive(Default)]
pub struct Stats {
    pub served: AtomicU64,
    pub rejected: AtomicU64,
    /// Connections closed at accept (over the total or per-address cap).
    pub turned_away: AtomicU64,
    last_reload_error: Mutex<String>,
}

impl Stats {
    pub fn last_reload_error(&self) -> String {
        self.last_reload_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    fn set_error(&self, e: String) {
        if let Ok(mut s) = self.last_reload_error.lock() {
            *s = e;
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// A new model serves now.
    Swapped { version: String },
    /// The file holds the model already serving.
    Unchanged,
}

/// Loads models into the slot.
pub struct Loader {
    pub library: PathBuf,
    pub path: PathBuf,
    pub options: LoadOptions,
    pub slot: Arc<Slot>,
    pub stats: Arc<Stats>,
    /// One load at a time (a D-Bus `Reload` and the watcher may meet).
    busy: Mutex<()>,
}

impl Loader {
    pub fn new(
        library: PathBuf,
        path: PathBuf,
        options: LoadOptions,
        slot: Arc<Slot>,
        stats: Arc<Stats>,
    ) -> Loader {
        Loader {
            library,
            path,
            options,
            slot,
            stats,
            busy: Mutex::new(()),
        }
    }

    /// Loads the model file and swaps it in if it passes every check. Blocking.
    pub fn reload(&self) -> Result<Swap> {
        let _one = self
            .busy
            .lock()
            .map_err(|_| Error::NotServing("loader lock poisoned".into()))?;
        let outcome = Model::load(&self.library, &self.path, &self.options).and_then(|model| {
            let current = self.slot.current();
            if let Some(cur) = &current {
                if cur.version == model.version {
                    return Ok(Swap::Unchanged);
                }
                if cur.preprocess != model.preprocess {
                    return Err(Error::Model {
                        path: self.path.display().to_string(),
                        message: format!(
                            "input is {}x{} but the serving model's is {}x{}; restart the predictor to change the input size",
                            model.preprocess.height,
                            model.preprocess.width,
                            cur.preprocess.height,
                            cur.preprocess.width
                        ),
                    });
                }
            }
            let version = model.version.clone();
            self.slot.set(Arc::new(model));
            Ok(Swap::Swapped { version })
        });
        match &outcome {
            Ok(Swap::Swapped { version }) => {
                self.stats.set_error(String::new());
                tracing::info!(MODEL_VERSION = %version, "serving {} (version {version})", self.path.display());
            }
            Ok(Swap::Unchanged) => self.stats.set_error(String::new()),
            Err(e) => {
                self.stats.set_error(e.to_string());
                match self.slot.current() {
                    Some(cur) => tracing::error!("{e}; version {} keeps serving", cur.version),
                    None => {
                        tracing::error!("{e}; nothing is served until a good model is in place")
                    }
                }
            }
        }
        outcome
    }
}

/// A file's identity for change detection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
    })
}

/// Polls the model file and reloads it when it changed and held still for one interval;
/// `on_swap` runs after each successful swap. Runs until the task is dropped.
pub async fn watch<F, Fut>(loader: Arc<Loader>, every: Duration, on_swap: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // What the last load attempt saw (so a bad file is tried once, not every tick).
    let mut tried = stamp(&loader.path);
    let mut pending: Option<Stamp> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamp(&loader.path);
        if now == tried || now.is_none() {
            pending = None;
            continue;
        }
        if pending != now {
            pending = now;
            continue;
        }
        tried = now;
        pending = None;
        let l = loader.clone();
        match tokio::task::spawn_blocking(move || l.reload()).await {
            Ok(Ok(Swap::Swapped { version })) => on_swap(version).await,
            Ok(_) => {}
            Err(e) => tracing::error!("model loader stopped: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_change_with_content_and_rename() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.onnx");
        std::fs::write(&p, b"one").unwrap();
        let a = stamp(&p).unwrap();
        let tmp = dir.path().join("m.tmp");
        std::fs::write(&tmp, b"two").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_ne!(stamp(&p).unwrap(), a);
        assert!(stamp(&dir.path().join("none")).is_none());
    }
}
