//! Model directories in Hugging Face's format, and training checkpoints built around them.
//!
//! A model directory is what `LlamaForCausalLM.from_pretrained` reads and what the publisher
//! uploads: `config.json`, `generation_config.json`, `model.safetensors` (or shards plus
//! `model.safetensors.index.json` above `max_shard_bytes`, named as transformers names them) and the
//! tokenizer files. A training checkpoint is a directory `checkpoints/step-NNNNNNNN/` holding that
//! model directory under `model/`, and beside it what only the trainer needs: the optimiser's
//! moments, the f32 master weights when the model is saved in bf16, and the run state (step, data
//! position). Nothing beside `model/` is ever uploaded.
//!
//! Durability (docs/architecture.md §4): a checkpoint is written under `checkpoints/.tmp-…`, every
//! file fsynced, then renamed into place and the directory fsynced; only then does the run index
//! (`run.json`, written atomically) name it. A checkpoint killed half-way is a `.tmp-` directory or
//! an unnamed step directory, both removed at the next start and never loaded or offered as a
//! candidate.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use taominer_core::daemon::store;

use crate::data::Tok;
use crate::error::{Error, Result};
use crate::model::{LlamaConfig, Params};

/// Writes a Hugging Face model directory into `dir` (which must exist and be empty).
pub fn write_model_dir(
    dir: &Path,
    cfg: &LlamaConfig,
    params: &Params,
    tok: &Tok,
    dtype: DType,
    max_shard_bytes: u64,
) -> Result<()> {
    write_json_file(&dir.join("config.json"), &hf_config(cfg, tok, dtype))?;
    let mut generation = serde_json::Map::new();
    generation.insert("_from_model_config".into(), true.into());
    if let Some(b) = tok.bos_id {
        generation.insert("bos_token_id".into(), b.into());
    }
    if let Some(e) = tok.eos_id {
        generation.insert("eos_token_id".into(), e.into());
    }
    write_json_file(&dir.join("generation_config.json"), &generation)?;
    write_weights(dir, params, dtype, max_shard_bytes)?;
    tok.write_files(dir)?;
    Ok(())
}

/// `config.json` as transformers reads it: the model's config with the tokenizer's special ids
/// and the dtype the weights are saved in.
pub fn hf_config(cfg: &LlamaConfig, tok: &Tok, dtype: DType) -> LlamaConfig {
    let mut cfg = cfg.clone();
    cfg.bos_token_id = tok.bos_id.map(Into::into);
    cfg.eos_token_id = tok.eos_id.map(Into::into);
    cfg.other
        .insert("torch_dtype".into(), dtype_name(dtype).into());
    cfg.other.remove("dtype");
    cfg
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

/// `model.safetensors`, or `model-0000i-of-0000n.safetensors` plus the index when the weights
/// exceed `max_shard_bytes` (tensors are never split, as transformers does).
fn write_weights(dir: &Path, params: &Params, dtype: DType, max_shard_bytes: u64) -> Result<()> {
    let mut shards: Vec<Vec<(&String, Tensor)>> = vec![Vec::new()];
    let mut current = 0u64;
    let mut total = 0u64;
    for (name, var) in params {
        let t = var
            .as_tensor()
            .to_dtype(dtype)?
            .to_device(&Device::Cpu)?
            .contiguous()?;
        let bytes = (t.elem_count() * dtype.size_in_bytes()) as u64;
        if current > 0 && current + bytes > max_shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        current += bytes;
        total += bytes;
        shards.last_mut().expect("one shard").push((name, t));
    }
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        };
        write_safetensors(&dir.join(&file), shard.iter().map(|(k, t)| (k.as_str(), t)))?;
        for (name, _) in shard {
            weight_map.insert(name.to_string(), file.clone());
        }
    }
    if n > 1 {
        let index = serde_json::json!({
            "metadata": {"total_size": total},
            "weight_map": weight_map,
        });
        write_json_file(&dir.join("model.safetensors.index.json"), &index)?;
    }
    Ok(())
}

/// One safetensors file with transformers' `{"format": "pt"}` metadata, fsynced.
pub fn write_safetensors<'a>(
    path: &Path,
    tensors: impl Iterator<Item = (&'a str, &'a Tensor)>,
) -> Result<()> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let items: Vec<(&str, &Tensor)> = tensors.collect();
    safetensors::serialize_to_file(items, Some(metadata), path)
        .map_err(|e| Error::file(path, e))?;
    sync_file(path)
}

fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("cannot sync", path))
}

fn write_json_file<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::file(path, e))?;
    text.push('\n');
    fs::write(path, text).map_err(Error::io("cannot write", path))?;
    sync_file(path)
}

/// Reads and checks a model directory's `config.json` (no weights).
pub fn read_config(dir: &Path) -> Result<LlamaConfig> {
    let cfg_path = dir.join("config.json");
    let text = fs::read_to_string(&cfg_path).map_err(Error::io("cannot read", &cfg_path))?;
    let cfg: LlamaConfig = serde_json::from_str(&text)
        .map_err(|e| Error::file(&cfg_path, format!("not a LLaMA config.json: {e}")))?;
    cfg.check()
        .map_err(|e| Error::file(&cfg_path, e.to_string()))?;
    Ok(cfg)
}

/// Reads a model directory's config and weights (f32, on `device`), checking every tensor's
/// name and shape against the config.
pub fn read_model_dir(dir: &Path, device: &Device) -> Result<(LlamaConfig, Params)> {
    let cfg = read_config(dir)?;
    let files = weight_files(dir)?;
    let mut found: HashMap<String, (Tensor, PathBuf)> = HashMap::new();
    for file in files {
        let tensors = candle_core::safetensors::load(&file, &Device::Cpu)
            .map_err(|e| Error::file(&file, format!("not a safetensors file: {e}")))?;
        for (name, t) in tensors {
            found.insert(name, (t, file.clone()));
        }
    }
    let params = params_from(&cfg, found, device)?;
    Ok((cfg, params))
}

/// Matches loaded tensors to the config's parameters: each must be present with its shape.
fn params_from(
    cfg: &LlamaConfig,
    mut found: HashMap<String, (Tensor, PathBuf)>,
    device: &Device,
) -> Result<Params> {
    let mut params = Params::new();
    for (name, shape) in cfg.parameter_shapes() {
        let Some((t, file)) = found.remove(&name) else {
            return Err(Error::Model(format!(
                "weights: {name} is missing (config.json describes {} layers{})",
                cfg.num_hidden_layers,
                if cfg.tie_word_embeddings {
                    ", tied embeddings"
                } else {
                    ""
                }
            )));
        };
        if t.dims() != shape.as_slice() {
            return Err(Error::file(
                &file,
                format!(
                    "{name} has shape {:?} but config.json implies {shape:?}",
                    t.dims()
                ),
            ));
        }
        let t = t.to_dtype(DType::F32)?.to_device(device)?;
        params.insert(name, Var::from_tensor(&t)?);
    }
    // transformers drops a tied lm_head and some exporters keep rotary tables; anything else is
    // a model we would silently change.
    found.retain(|name, _| {
        !(name.ends_with("rotary_emb.inv_freq")
            || (cfg.tie_word_embeddings && name == "lm_head.weight"))
    });
    if let Some(extra) = found.keys().min() {
        return Err(Error::Model(format!(
            "weights: unexpected tensor {extra} (and {} more): not part of LlamaForCausalLM with this config.json",
            found.len() - 1
        )));
    }
    Ok(params)
}

/// The safetensors files of a model directory: the index's shards, or `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let shards = taominer_core::formats::safetensors::index_shards(&index)
            .map_err(|e| Error::Model(e.to_string()))?;
        return Ok(shards.iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(Error::file(
        dir,
        "no model.safetensors or model.safetensors.index.json (only safetensors weights are read)",
    ))
}

/// Where the trainer is in its run; saved with each checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimiser steps taken.
    pub step: u64,
    /// Data position: epoch and the next batch within it.
    pub epoch: u64,
    pub batch_in_epoch: usize,
    pub tokens_seen: u64,
    /// The eval loss at this checkpoint, if one was computed here.
    pub eval_loss: Option<f64>,
    /// The last training loss (mean over the step's micro-batches).
    pub train_loss: Option<f64>,
    pub best_loss: Option<f64>,
    /// What the run was started with; a checkpoint of another model is not resumed.
    pub fingerprint: String,
    /// sha256 of the packed data: a resumed run says when its data changed.
    #[serde(default)]
    pub data_fingerprint: String,
}

/// One checkpoint on disk, as named by the run index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub name: String,
    pub step: u64,
    pub eval_loss: Option<f64>,
}

/// A candidate: a checkpoint's model directory offered to the publisher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub checkpoint: String,
    pub path: PathBuf,
    pub step: u64,
    pub loss: f64,
    pub competition: String,
    /// The publisher's idempotence key: `<run id>/<checkpoint>`, unique across runs that reuse
    /// step names. Empty for candidates recorded before keys were ([`Candidate::publish_key`]).
    #[serde(default)]
    pub key: String,
}

impl Candidate {
    /// The key `Publish` is called with: the recorded one, or for an older candidate its path
    /// (what hand-offs were matched by before keys).
    pub fn publish_key(&self) -> String {
        if self.key.is_empty() {
            self.path.to_string_lossy().into_owned()
        } else {
            self.key.clone()
        }
    }
}

/// `run.json`: the checkpoints that exist, the best one, the candidates and the eval history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunIndex {
    /// Names this run (random, made when the index is first opened): with a checkpoint's name it
    /// makes the candidate's publish key, which another run's `step-00000100` must not share.
    #[serde(default)]
    pub run_id: String,
    pub checkpoints: Vec<CheckpointRecord>,
    pub best: Option<CheckpointRecord>,
    pub candidates: Vec<Candidate>,
    /// (step, eval loss) of every evaluation, for `minerctl` and plots.
    pub history: Vec<(u64, f64)>,
    /// (step, mean training loss since the previous evaluation), recorded at each evaluation.
    #[serde(default)]
    pub train_history: Vec<(u64, f64)>,
}

impl RunIndex {
    pub fn latest(&self) -> Option<&CheckpointRecord> {
        self.checkpoints.iter().max_by_key(|c| c.step)
    }

    pub fn last_candidate(&self) -> Option<&Candidate> {
        self.candidates.last()
    }
}

/// The checkpoint store under the trainer's state directory.
pub struct Checkpoints {
    dir: PathBuf,
    index_path: PathBuf,
    pub index: RunIndex,
}

/// What a checkpoint holds besides the model directory.
pub struct TrainingState<'a> {
    pub run: &'a RunState,
    pub optimizer: Vec<(String, &'a Tensor)>,
    /// f32 weights, when the model directory holds a narrower dtype.
    pub master: Option<&'a Params>,
}

impl Checkpoints {
    /// Opens the store and removes what a crash left half-written.
    pub fn open(state_dir: &Path) -> Result<Checkpoints> {
        let dir = state_dir.join("checkpoints");
        // Group-readable: the publisher (another user, group taominer) stages candidates by path.
        store::ensure_group_dir(&dir)?;
        let index_path = state_dir.join("run.json");
        let mut index: RunIndex = store::read_json(&index_path)?.unwrap_or_default();
        if index.run_id.is_empty() {
            index.run_id = format!("run-{}", store::new_job_id());
            store::write_json(&index_path, &index)?;
        }
        let known: Vec<&str> = index.checkpoints.iter().map(|c| c.name.as_str()).collect();
        let entries = fs::read_dir(&dir).map_err(Error::io("cannot list", &dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-")
                || (name.starts_with("step-") && !known.contains(&name.as_str()))
            {
                tracing::warn!("removing unfinished checkpoint {name}");
                fs::remove_dir_all(entry.path())
                    .map_err(Error::io("cannot remove", entry.path()))?;
            }
        }
        Ok(Checkpoints {
            dir,
            index_path,
            index,
        })
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn save_index(&self) -> Result<()> {
        Ok(store::write_json(&self.index_path, &self.index)?)
    }

    /// Writes a checkpoint atomically and records it in the index. Returns its name.
    #[allow(clippy::too_many_arguments)]
    pub fn save(
        &mut self,
        cfg: &LlamaConfig,
        params: &Params,
        tok: &Tok,
        dtype: DType,
        max_shard_bytes: u64,
        state: TrainingState<'_>,
    ) -> Result<String> {
        let name = format!("step-{:08}", state.run.step);
        let final_dir = self.dir.join(&name);
        if self.index.checkpoints.iter().any(|c| c.name == name) {
            return Ok(name);
        }
        let tmp = self.dir.join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(Error::io("cannot remove", &tmp))?;
        }
        let model = tmp.join("model");
        fs::create_dir_all(&model).map_err(Error::io("cannot create", &model))?;
        taominer_core::daemon::fault::crash_point("trainer.checkpoint-started");
        write_model_dir(&model, cfg, params, tok, dtype, max_shard_bytes)?;
        taominer_core::daemon::fault::crash_point("trainer.checkpoint-model-written");
        write_safetensors(
            &tmp.join("optimizer.safetensors"),
            state.optimizer.iter().map(|(k, t)| (k.as_str(), *t)),
        )?;
        if let Some(master) = state.master {
            let tensors: Vec<(&str, &Tensor)> = master
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_tensor()))
                .collect();
            write_safetensors(&tmp.join("master.safetensors"), tensors.into_iter())?;
        }
        write_json_file(&tmp.join("state.json"), state.run)?;
        store::fsync_dir(&model)?;
        store::fsync_dir(&tmp)?;
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).map_err(Error::io("cannot remove", &final_dir))?;
        }
        fs::rename(&tmp, &final_dir).map_err(Error::io("cannot rename checkpoint", &final_dir))?;
        store::fsync_dir(&self.dir)?;
        taominer_core::daemon::fault::crash_point("trainer.checkpoint-renamed");
        self.index.checkpoints.push(CheckpointRecord {
            name: name.clone(),
            step: state.run.step,
            eval_loss: state.run.eval_loss,
        });
        self.save_index()?;
        Ok(name)
    }

    /// Loads a checkpoint: model config and weights (the master copy when there is one), the
    /// optimiser tensors and the run state.
    pub fn load(
        &self,
        name: &str,
        device: &Device,
    ) -> Result<(LlamaConfig, Params, HashMap<String, Tensor>, RunState)> {
        let dir = self.dir.join(name);
        let (cfg, mut params) = read_model_dir(&dir.join("model"), device)?;
        let master = dir.join("master.safetensors");
        if master.exists() {
            let tensors = candle_core::safetensors::load(&master, device)?;
            for (k, v) in params.iter_mut() {
                let t = tensors
                    .get(k)
                    .ok_or_else(|| Error::file(&master, format!("{k} is missing")))?;
                *v = Var::from_tensor(t)?;
            }
        }
        let opt_path = dir.join("optimizer.safetensors");
        let optimizer = candle_core::safetensors::load(&opt_path, device)
            .map_err(|e| Error::file(&opt_path, e))?;
        let state_path = dir.join("state.json");
        let run: RunState =
            store::read_json(&state_path)?.ok_or_else(|| Error::file(&state_path, "missing"))?;
        Ok((cfg, params, optimizer, run))
    }

    /// Deletes old checkpoints beyond `keep`, never the best one, nor a candidate's that the
    /// publisher may still read: one whose job has not been seen past `received`
    /// (`handoffs.json`'s `released`; `Publish` does not copy, and staging queues behind
    /// uploads, so a job can wait for its copy for as long as uploads take).
    pub fn prune(&mut self, keep: usize) -> Result<()> {
        let state_dir = self.dir.parent().unwrap_or(&self.dir).to_path_buf();
        let handed = crate::handoff::HandOffs::load(&state_dir)?;
        let mut protected: Vec<String> = self
            .index
            .candidates
            .iter()
            .filter(|c| !handed.released(c))
            .map(|c| c.checkpoint.clone())
            .collect();
        if let Some(best) = &self.index.best {
            protected.push(best.name.clone());
        }
        let mut by_step: Vec<CheckpointRecord> = self.index.checkpoints.clone();
        by_step.sort_by_key(|c| std::cmp::Reverse(c.step));
        let doomed: Vec<String> = by_step
            .iter()
            .skip(keep.max(1))
            .filter(|c| !protected.contains(&c.name))
            .map(|c| c.name.clone())
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        // Forget first, then delete: a crash in between leaves an unnamed directory, which the
        // next start removes.
        self.index.checkpoints.retain(|c| !doomed.contains(&c.name));
        self.save_index()?;
        for name in doomed {
            let path = self.dir.join(&name);
            fs::remove_dir_all(&path).map_err(Error::io("cannot remove", &path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves: pruning keeps every candidate whose publish job has not been seen staged, however
    /// many candidates came after it (the old rule kept only the last two), and deletes a
    /// candidate's checkpoint once its job is released.
    #[test]
    fn a_candidate_is_pruned_only_once_its_job_is_staged() {
        let state = std::env::temp_dir().join(format!("prune-staged-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state);
        let mut store = Checkpoints::open(&state).unwrap();
        assert!(store.index.run_id.starts_with("run-"), "a run id is made");
        let run_id = store.index.run_id.clone();
        for step in 1..=6u64 {
            let name = format!("step-{step:08}");
            fs::create_dir_all(store.path_of(&name).join("model")).unwrap();
            store.index.checkpoints.push(CheckpointRecord {
                name: name.clone(),
                step,
                eval_loss: None,
            });
            if step <= 4 {
                store.index.candidates.push(Candidate {
                    checkpoint: name.clone(),
                    path: store.path_of(&name).join("model"),
                    step,
                    loss: 5.0 - step as f64 / 10.0,
                    competition: "2".into(),
                    key: format!("{run_id}/{name}"),
                });
            }
        }
        store.save_index().unwrap();
        // All four handed off; only the first job staged so far.
        let mut handed = crate::handoff::HandOffs::default();
        for c in &store.index.candidates {
            handed
                .jobs
                .insert(c.path.clone(), format!("job-{}", c.step));
        }
        handed
            .released
            .insert(store.index.candidates[0].path.clone());
        store::write_json(&state.join("handoffs.json"), &handed).unwrap();

        store.prune(1).unwrap();
        let left = |store: &Checkpoints| -> Vec<u64> {
            store.index.checkpoints.iter().map(|c| c.step).collect()
        };
        assert_eq!(left(&store), [2, 3, 4, 6], "1 released, 5 no candidate");
        assert!(!store.path_of("step-00000001").exists());
        assert!(store.path_of("step-00000002").join("model").exists());

        for c in &store.index.candidates[1..3] {
            handed.released.insert(c.path.clone());
        }
        store::write_json(&state.join("handoffs.json"), &handed).unwrap();
        store.prune(1).unwrap();
        assert_eq!(left(&store), [4, 6], "the unstaged candidate stays");

        // The run id survives a reopen: keys stay stable across restarts.
        assert_eq!(Checkpoints::open(&state).unwrap().index.run_id, run_id);
        fs::remove_dir_all(&state).unwrap();
    }
}
