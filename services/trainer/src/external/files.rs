//! What the daemon gives the external engine before it starts it: the packed train split
//! (`TAOMINER_TRAIN_TOKENS`, `TAOMINER_TRAIN_META`), a config.json for a run from scratch
//! (`TAOMINER_MODEL_CONFIG`) and the tokenizer (`TAOMINER_TOKENIZER`). The data is tokenized and
//! packed by the built-in trainer's own code (`data.rs`), so both engines train on the same
//! sequences and the held-out split (which the engine never sees) is the one the daemon scores on.

use std::path::{Path, PathBuf};

use candle_core::DType;
use taominer_core::config::{Config, Device, Start};
use taominer_core::daemon::store;

use crate::checkpoint::{hf_config, read_config};
use crate::data::{Dataset, Tok};
use crate::error::{Error, Result};
use crate::model::LlamaConfig;

/// Everything the engine and the intake need, ready.
pub struct Prepared {
    /// The daemon's data: the train split went to the engine, the eval split scores checkpoints.
    pub data: Dataset,
    /// The checkpoint directory, as configured (it exists).
    pub checkpoint_dir: PathBuf,
    pub train_tokens: PathBuf,
    pub train_meta: PathBuf,
    pub model_config: PathBuf,
    pub tokenizer: PathBuf,
    pub metrics: PathBuf,
    /// Where checkpoints are scored.
    pub score_device: Device,
    /// The model's parameter count (for `Status`).
    pub parameters: u64,
}

/// Tokenizes the data, writes the engine's inputs, and makes sure the checkpoint directory
/// exists. Failures here fail the run (the engine is not started).
pub fn prepare(cfg: &Config, state_dir: &Path, start: &Start, beat: &dyn Fn()) -> Result<Prepared> {
    let t = &cfg.trainer;
    let ext = &t.external;
    let dir = super::dir(state_dir);
    store::ensure_dir(&dir)?;
    let checkpoint_dir = ext
        .checkpoint_dir
        .clone()
        .ok_or_else(|| Error::Model("trainer.external.checkpoint_dir is not set".into()))?;
    if !checkpoint_dir.is_dir() {
        // One level only: a missing parent is a typo, not something to create.
        std::fs::create_dir(&checkpoint_dir).map_err(|e| {
            Error::file(
                &checkpoint_dir,
                format!("trainer.external.checkpoint_dir cannot be created: {e}"),
            )
        })?;
    }
    let (tok, model) = match start {
        Start::ModelDir(d) => {
            let tok = match &t.tokenizer {
                Some(p) => Tok::from_file(p)?,
                None => Tok::from_file(&d.join("tokenizer.json"))?,
            };
            (tok, read_config(d)?)
        }
        Start::Scratch => {
            let tok = match &t.tokenizer {
                Some(p) => Tok::from_file(p)?,
                None => Tok::builtin_bytes()?,
            };
            let vocab = if t.model.vocab_size == 0 {
                tok.vocab_size()
            } else {
                t.model.vocab_size
            };
            let m = LlamaConfig::from_sizes(&t.model, vocab);
            m.check()?;
            (tok, m)
        }
        Start::Uid(_) | Start::Best => {
            return Err(Error::Model(
                "the external engine starts from scratch or a model directory (trainer.start)"
                    .into(),
            ))
        }
    };
    tok.check_fits(model.vocab_size)?;
    let data = Dataset::load_or_build(&t.data, &tok, t, &state_dir.join("tokens"), beat)?;
    if data.max_token as usize >= model.vocab_size {
        return Err(Error::Tokenizer(format!(
            "token id {} does not fit the model's vocab_size {}",
            data.max_token, model.vocab_size
        )));
    }

    let tok_dir = dir.join("tokenizer");
    store::ensure_dir(&tok_dir)?;
    tok.write_files(&tok_dir)?;
    let model_config = dir.join("model-config.json");
    let json = serde_json::to_vec_pretty(&hf_config(&model, &tok, DType::F32))
        .map_err(|e| Error::file(&model_config, e))?;
    store::write_atomic(&model_config, &json)?;
    let (train_tokens, train_meta) = write_train_split(&dir, &data, &tok, &model, t.seed)?;
    let parameters = model
        .parameter_shapes()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum();
    Ok(Prepared {
        data,
        checkpoint_dir,
        train_tokens,
        train_meta,
        model_config,
        tokenizer: tok_dir.join("tokenizer.json"),
        metrics: ext
            .metrics_file
            .clone()
            .unwrap_or_else(|| dir.join("metrics.jsonl")),
        score_device: ext.score_device.unwrap_or(t.device),
        parameters,
    })
}

/// `train-<fingerprint>.u32` (little-endian ids, whole sequences) and its `.json` meta, written
/// atomically once per dataset: a restart with the same data rewrites nothing, and the engine
/// never reads a half-written file. Older splits are removed.
fn write_train_split(
    dir: &Path,
    data: &Dataset,
    tok: &Tok,
    model: &LlamaConfig,
    seed: u64,
) -> Result<(PathBuf, PathBuf)> {
    let name = format!(
        "train-{}",
        &data.fingerprint[..16.min(data.fingerprint.len())]
    );
    let tokens = dir.join(format!("{name}.u32"));
    let meta = dir.join(format!("{name}.json"));
    if tokens.is_file() && meta.is_file() {
        return Ok((tokens, meta));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("train-") && !n.starts_with(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let ids = data.train_tokens();
    let mut bytes = Vec::with_capacity(ids.len() * 4);
    for id in ids {
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    store::write_atomic(&tokens, &bytes)?;
    let m = serde_json::json!({
        "sequence_length": data.seq_len,
        "sequences": data.train_sequences(),
        "vocab_size": model.vocab_size,
        "eos_id": tok.eos_id,
        "tokenizer": dir.join("tokenizer").join("tokenizer.json"),
        "seed": seed,
    });
    store::write_json(&meta, &m)?;
    tracing::info!(
        "external engine: {} training sequences of {} tokens in {}",
        data.train_sequences(),
        data.seq_len,
        tokens.display()
    );
    Ok((tokens, meta))
}
