//! Checkpoint intake: finds the external engine's complete checkpoints, scores each with the
//! validators' metric on the daemon's held-out split ([`crate::train::Scoring`], the built-in
//! loop's own scoring), records the outcome durably, applies the built-in loop's candidate rule
//! ([`crate::train::Gate`]) and hands candidates to the publisher through the existing hand-off
//! (`run.json` + `handoff.rs`), exactly once across restarts of the daemon and the engine.
//!
//! Durability, in order: the score goes into `<state>/external/intake.json` (atomic) before
//! anything acts on it; a candidate is staged (hardlinks of the model files only, never the
//! engine's `engine/` state or the marker) and recorded in `run.json` before it is announced;
//! then the record is marked decided. A restart re-decides a scored record that is not marked:
//! a candidate already in `run.json` is recognised by its checkpoint name and not offered again.
//!
//! Bounded: at most [`MAX_ENTRIES`] entries of the checkpoint directory are looked at a scan,
//! names longer than [`MAX_NAME`] and files beyond [`MAX_FILES`] in a checkpoint are refused,
//! and the model files are read by the same checked readers as any model directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taominer_core::config::{Config, ExternalConfig};
use taominer_core::daemon::store;

use super::files::Prepared;
use crate::checkpoint::{Candidate, CheckpointRecord, RunIndex};
use crate::error::{Error, Result};
use crate::progress::{CandidateEvent, Control, Shared};
use crate::remote::Remote;
use crate::train::{Gate, Scoring};

/// Most entries of the checkpoint directory looked at in one scan.
pub const MAX_ENTRIES: usize = 10_000;
/// Longest checkpoint directory name taken.
pub const MAX_NAME: usize = 64;
/// Most files directly in one checkpoint directory.
pub const MAX_FILES: usize = 1024;
/// How often the checkpoint directory is scanned.
const POLL: Duration = Duration::from_secs(1);
/// The engine's private state inside a checkpoint: never scored, staged or published.
const ENGINE_STATE: &str = "engine";

/// What became of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    /// Scored: its eval loss on the held-out split.
    Scored { loss: f64 },
    /// Refused for good (not a model candle can score, a bad name): why.
    Refused { reason: String },
}

/// One checkpoint in `intake.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub step: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The candidate rule has been applied (and a candidate recorded in `run.json`).
    #[serde(default)]
    pub decided: bool,
}

/// `intake.json`: every complete checkpoint seen, by directory name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Records {
    pub checkpoints: BTreeMap<String, Record>,
}

fn records_path(ext_dir: &Path) -> PathBuf {
    ext_dir.join("intake.json")
}

/// The step of a checkpoint named `step-NNNNNNNN` (the contract's names).
fn step_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The regular files directly in a checkpoint (the model files and the marker), with sizes,
/// sorted: what is staged, and what must stop changing in settle mode.
fn files_of(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("cannot list", dir))? {
        let entry = entry.map_err(Error::io("cannot list", dir))?;
        let meta = entry
            .metadata()
            .map_err(Error::io("cannot stat", entry.path()))?;
        if !meta.is_file() {
            continue;
        }
        if out.len() == MAX_FILES {
            return Err(Error::file(dir, format!("more than {MAX_FILES} files")));
        }
        out.push((entry.file_name().to_string_lossy().into_owned(), meta.len()));
    }
    out.sort();
    Ok(out)
}

/// Whether a checkpoint's model files are all there and parse (config.json, the safetensors
/// headers): settle mode's first condition.
fn model_files_parse(dir: &Path) -> bool {
    crate::checkpoint::read_config(dir).is_ok()
        && taominer_core::formats::safetensors::model_tensors(dir).is_ok()
}

/// The newest complete checkpoint, to resume the engine from: in marker mode the newest with
/// the marker; otherwise the newest the intake recorded as complete.
pub fn newest_complete(cfg: &ExternalConfig, ext_dir: &Path, ckpt_dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    let recorded = store::read_json::<Records>(&records_path(ext_dir))
        .ok()
        .flatten()
        .unwrap_or_default();
    for entry in fs::read_dir(ckpt_dir).ok()?.flatten().take(MAX_ENTRIES) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(step) = step_of(&name) else { continue };
        let complete = match cfg.marker() {
            Some(m) => entry.path().join(m).is_file(),
            None => recorded.checkpoints.contains_key(&name),
        };
        if complete && best.as_ref().is_none_or(|(s, _)| step > *s) {
            best = Some((step, entry.path()));
        }
    }
    best.map(|(_, p)| p)
}

/// The intake's state.
pub struct Intake<'a> {
    ext: ExternalConfig,
    state_dir: PathBuf,
    ext_dir: PathBuf,
    prepared: &'a Prepared,
    records: Records,
    index: RunIndex,
    index_path: PathBuf,
    gate: Gate,
    competition: String,
    batch_size: usize,
    device: candle_core::Device,
    /// Settle mode: a checkpoint's file sizes and since when they are unchanged.
    settling: HashMap<String, (Vec<(String, u64)>, Instant)>,
    /// Names already reported as not checkpoints (said once).
    ignored: HashSet<String>,
}

impl<'a> Intake<'a> {
    /// Opens the records and the run index; shows what earlier lives recorded.
    pub fn open(
        cfg: &Config,
        state_dir: &Path,
        prepared: &'a Prepared,
        remote: Option<(Remote, tokio::runtime::Handle)>,
        shared: &Shared,
    ) -> Result<Intake<'a>> {
        let ext_dir = super::dir(state_dir);
        let records: Records = store::read_json(&records_path(&ext_dir))?.unwrap_or_default();
        let index_path = state_dir.join("run.json");
        let mut index: RunIndex = store::read_json(&index_path)?.unwrap_or_default();
        if index.run_id.is_empty() {
            index.run_id = format!("run-{}", store::new_job_id());
            store::write_json(&index_path, &index)?;
        }
        let competition = cfg.miner.competition().unwrap_or_default();
        let device = crate::train::device_for(prepared.score_device)?;
        shared.update(|p| {
            p.candidates = index.candidates.len() as u64;
            p.eval_history = index.history.clone();
            p.train_history = index.train_history.clone();
            p.best_loss = index
                .best
                .as_ref()
                .and_then(|b| b.eval_loss)
                .unwrap_or(f64::NAN);
            if let Some((_, l)) = index.history.last() {
                p.eval_loss = *l;
            }
        });
        Ok(Intake {
            ext: cfg.trainer.external.clone(),
            state_dir: state_dir.to_path_buf(),
            ext_dir,
            prepared,
            records,
            index,
            index_path,
            gate: Gate::new(&cfg.trainer, remote, competition.clone()),
            competition,
            batch_size: cfg.trainer.batch_size,
            device,
            settling: HashMap::new(),
            ignored: HashSet::new(),
        })
    }

    /// Scans until `Stop`. A scan that fails (the directory went away) is reported and retried.
    pub fn run(&mut self, shared: &Shared) {
        // Records scored but not decided when an earlier life died: decide them first.
        let undecided: Vec<String> = self
            .records
            .checkpoints
            .iter()
            .filter(|(_, r)| !r.decided && matches!(r.outcome, Outcome::Scored { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        for name in undecided {
            if let Err(e) = self.decide(&name, shared) {
                tracing::error!("checkpoint {name}: cannot apply the candidate rule: {e}");
            }
        }
        let mut last_error = String::new();
        while shared.control() != Control::Stop {
            self.prune_released();
            match self.scan(shared) {
                Ok(()) => last_error.clear(),
                Err(e) => {
                    let msg = e.to_string();
                    if msg != last_error {
                        tracing::error!("checkpoint intake: {msg}");
                        shared.update(|p| p.last_error = format!("checkpoint intake: {msg}"));
                        last_error = msg;
                    }
                }
            }
            let until = Instant::now() + POLL;
            while Instant::now() < until && shared.control() != Control::Stop {
                shared.beat();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Removes the staged copies of candidates the publisher no longer reads (refused, or its
    /// job past `received`: `handoffs.json`), as the built-in engine prunes their checkpoints:
    /// a hardlinked copy would otherwise keep a checkpoint the engine deleted on disk.
    fn prune_released(&self) {
        let Ok(handoffs) = crate::handoff::HandOffs::load(&self.state_dir) else {
            return;
        };
        for c in &self.index.candidates {
            if handoffs.released(c) && c.path.is_dir() {
                match fs::remove_dir_all(&c.path) {
                    Ok(()) => tracing::info!(
                        "removed the staged candidate {} (the publisher has its copy)",
                        c.path.display()
                    ),
                    Err(e) => tracing::warn!(
                        "cannot remove the staged candidate {}: {e}",
                        c.path.display()
                    ),
                }
            }
        }
    }

    /// One look at the checkpoint directory: every new complete checkpoint, oldest step first.
    fn scan(&mut self, shared: &Shared) -> Result<()> {
        let dir = &self.prepared.checkpoint_dir;
        let mut found: Vec<(u64, String, PathBuf)> = Vec::new();
        let entries = fs::read_dir(dir).map_err(Error::io("cannot list", dir))?;
        for entry in entries.take(MAX_ENTRIES) {
            let entry = entry.map_err(Error::io("cannot list", dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                self.ignore(
                    &entry.file_name().to_string_lossy(),
                    "its name is not UTF-8",
                );
                continue;
            };
            if name.starts_with('.') || self.records.checkpoints.contains_key(&name) {
                continue;
            }
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match step_of(&name) {
                Some(step) if name.len() <= MAX_NAME => found.push((step, name, entry.path())),
                _ => self.ignore(&name, "not named step-NNNNNNNN"),
            }
        }
        found.sort();
        for (step, name, path) in found {
            if shared.control() == Control::Stop {
                break;
            }
            match self.complete(&name, &path) {
                Ok(true) => self.take(step, &name, &path, shared)?,
                Ok(false) => {}
                // Being written or removed as we look: the next scan sees it settled or gone.
                Err(e) => tracing::debug!("checkpoint {name}: {e}"),
            }
        }
        Ok(())
    }

    fn ignore(&mut self, name: &str, why: &str) {
        if self.ignored.insert(name.to_string()) {
            tracing::warn!(
                "{}: ignoring {name:?}: {why}",
                self.prepared.checkpoint_dir.display()
            );
        }
    }

    /// The completeness rule: the marker exists; or, without a marker, config.json and
    /// the weights parse and no file size changed for `settle_seconds`.
    fn complete(&mut self, name: &str, path: &Path) -> Result<bool> {
        if let Some(m) = self.ext.marker() {
            return Ok(path.join(m).is_file());
        }
        let files = files_of(path)?;
        if !model_files_parse(path) {
            self.settling.remove(name);
            return Ok(false);
        }
        let settle = Duration::from_secs(self.ext.settle_seconds);
        match self.settling.get(name) {
            Some((seen, since)) if *seen == files => Ok(since.elapsed() >= settle),
            _ => {
                self.settling
                    .insert(name.to_string(), (files, Instant::now()));
                Ok(false)
            }
        }
    }

    /// Scores a complete checkpoint, records the outcome, and decides.
    fn take(&mut self, step: u64, name: &str, path: &Path, shared: &Shared) -> Result<()> {
        self.settling.remove(name);
        let started = Instant::now();
        let scoring = Scoring {
            data: &self.prepared.data,
            batch_size: self.batch_size,
            device: &self.device,
            beat: &|| shared.beat(),
        };
        let outcome = match scoring.score_dir(path) {
            Ok(loss) => {
                tracing::info!(
                    STEP = step,
                    "checkpoint {name}: eval loss {loss:.4} ({} sequences in {:.1}s)",
                    self.prepared.data.eval_sequences().len(),
                    started.elapsed().as_secs_f64()
                );
                Outcome::Scored { loss }
            }
            // Complete by the engine's word, yet unreadable: refused like any model candle cannot
            // score, so that one broken checkpoint never holds up the ones after it.
            Err(e) => {
                let reason = e.to_string();
                tracing::error!(
                    STEP = step,
                    "checkpoint {name} refused: {reason} (the engine keeps running)"
                );
                shared.update(|p| p.last_error = format!("checkpoint {name} refused: {reason}"));
                Outcome::Refused { reason }
            }
        };
        let scored = matches!(outcome, Outcome::Scored { .. });
        self.records.checkpoints.insert(
            name.to_string(),
            Record {
                step,
                outcome,
                decided: !scored,
            },
        );
        // Durable before anything acts on it.
        store::write_json(&records_path(&self.ext_dir), &self.records)?;
        taominer_core::daemon::fault::crash_point("trainer.external-scored");
        if scored {
            self.decide(name, shared)?;
        }
        Ok(())
    }

    /// Records the score in the run's history and applies the candidate rule, once.
    fn decide(&mut self, name: &str, shared: &Shared) -> Result<()> {
        let Some(Record {
            step,
            outcome: Outcome::Scored { loss },
            ..
        }) = self.records.checkpoints.get(name).cloned()
        else {
            return Ok(());
        };
        if !self.index.history.iter().any(|(s, _)| *s == step) {
            self.index.history.push((step, loss));
            let train = shared.progress().loss;
            if train.is_finite() {
                self.index.train_history.push((step, train));
            }
        }
        let improved = self
            .index
            .best
            .as_ref()
            .and_then(|b| b.eval_loss)
            .is_none_or(|b| loss < b);
        if improved {
            self.index.best = Some(CheckpointRecord {
                name: name.to_string(),
                step,
                eval_loss: Some(loss),
            });
        }
        let already = self.index.candidates.iter().any(|c| c.checkpoint == name);
        let mut event = None;
        if !already {
            let last = self.index.last_candidate().map(|c| c.loss);
            let on = Scoring {
                data: &self.prepared.data,
                batch_size: self.batch_size,
                device: &self.device,
                beat: &|| shared.beat(),
            };
            if self.gate.admits(loss, last, &on) {
                let src = self.prepared.checkpoint_dir.join(name);
                let staged = self.stage(name, &src)?;
                let candidate = Candidate {
                    checkpoint: name.to_string(),
                    path: staged,
                    step,
                    loss,
                    competition: self.competition.clone(),
                    key: format!("{}/{name}", self.index.run_id),
                };
                self.index.candidates.push(candidate.clone());
                event = Some(candidate);
            }
        }
        // Recorded before it is announced: a restart never announces it again.
        store::write_json(&self.index_path, &self.index)?;
        taominer_core::daemon::fault::crash_point("trainer.external-candidate-recorded");
        let best = self
            .index
            .best
            .as_ref()
            .and_then(|b| b.eval_loss)
            .unwrap_or(loss);
        let (history, train_history) =
            (self.index.history.clone(), self.index.train_history.clone());
        let count = self.index.candidates.len() as u64;
        shared.update(|p| {
            p.eval_loss = loss;
            p.best_loss = best;
            p.eval_history = history;
            p.train_history = train_history;
            p.candidates = count;
        });
        if let Some(candidate) = event {
            tracing::info!(
                STEP = step,
                "candidate: checkpoint {name}, eval loss {loss:.4} ({})",
                candidate.path.display()
            );
            let _ = shared.candidates.send(CandidateEvent { candidate });
        }
        if let Some(r) = self.records.checkpoints.get_mut(name) {
            r.decided = true;
        }
        store::write_json(&records_path(&self.ext_dir), &self.records)?;
        Ok(())
    }

    /// `<state>/external/candidates/<name>/`: the checkpoint's model files only (no `engine/`,
    /// no marker), hardlinked (copied across filesystems), built under a temporary name and
    /// renamed, so the publisher never reads a partial candidate.
    fn stage(&self, name: &str, src: &Path) -> Result<PathBuf> {
        let root = self.ext_dir.join("candidates");
        store::ensure_group_dir(&root)?;
        let dst = root.join(name);
        let tmp = root.join(format!(".tmp-{name}"));
        for d in [&tmp, &dst] {
            if d.exists() {
                fs::remove_dir_all(d).map_err(Error::io("cannot remove", d))?;
            }
        }
        fs::create_dir(&tmp).map_err(Error::io("cannot create", &tmp))?;
        let marker = self.ext.marker();
        for (file, _) in files_of(src)? {
            if Some(file.as_str()) == marker || file == ENGINE_STATE {
                continue;
            }
            let (from, to) = (src.join(&file), tmp.join(&file));
            if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).map_err(Error::io("cannot copy", &from))?;
            }
        }
        store::fsync_dir(&tmp)?;
        fs::rename(&tmp, &dst).map_err(Error::io("cannot rename", &dst))?;
        store::fsync_dir(&root)?;
        Ok(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves: only the contract's names are checkpoints, with their step.
    #[test]
    fn checkpoint_names() {
        assert_eq!(step_of("step-00000120"), Some(120));
        assert_eq!(step_of("step-"), None);
        assert_eq!(step_of("step-12a"), None);
        assert_eq!(step_of("latest"), None);
        assert_eq!(step_of(&format!("step-{}", "9".repeat(21))), None);
    }

    /// Proves: a record round-trips through intake.json's format, outcome tagged.
    #[test]
    fn records_round_trip() {
        let r = Record {
            step: 5,
            outcome: Outcome::Refused {
                reason: "not llama".into(),
            },
            decided: true,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"outcome\":\"refused\""), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }
}
