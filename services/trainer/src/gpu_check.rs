//! The in-process measurements of `scripts/gpu-check` (`miner-gpu-bench`): one micro-batch's
//! gradients, a short real training run, and a throughput run against the memory plan.
//!
//! They exist because the GPU machine has no D-Bus, so the daemon cannot run there, yet the check
//! must exercise the trainer's own code: each measurement calls the loop's functions
//! (`train::micro_batch`, `train::optimizer_step`, `train::Run`, `plan::plan`), never a copy.
//! The same code runs on the CPU (f32, tiny sizes), which is how CI rehearses the GPU check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use taominer_core::config::{Config, TrainerConfig};

use crate::checkpoint::{write_model_dir, Checkpoints};
use crate::data::Tok;
use crate::error::{Error, Result};
use crate::model::{init_params, Llama, LlamaConfig};
use crate::optim::{self, AdamW};
use crate::progress::Shared;
use crate::rng::Rng;
use crate::train::{device_for, micro_batch, optimizer_step, Run};

/// The most steps a throughput run may take: the check has minutes, not hours.
pub const MAX_THROUGHPUT_STEPS: usize = 1000;

/// How often the device-memory sampler reads the free memory.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// The compute dtype the trainer uses on `device` (as `Run::prepare` chooses it).
fn compute_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "f32",
    }
}

/// The model `[trainer.model]` describes (from scratch), checked.
fn scratch_model(t: &TrainerConfig) -> Result<LlamaConfig> {
    let (cfg, _) = crate::plan::configured_model(t, None)?;
    Ok(cfg)
}

/// `batch × seq` token ids drawn from `rng`, below `vocab`.
fn random_ids(rng: &mut Rng, batch: usize, seq: usize, vocab: usize) -> Vec<u32> {
    (0..batch * seq).map(|_| rng.below(vocab) as u32).collect()
}

/// What [`grads`] wrote.
#[derive(Debug, Serialize)]
pub struct GradsReport {
    pub loss: f64,
    pub dtype: &'static str,
    pub device: String,
    pub checkpoint_activations: bool,
    pub batch_size: usize,
    pub sequence_length: usize,
    pub parameters: usize,
    pub seconds: f64,
}

/// One micro-batch of the configured model (from scratch, `trainer.seed`) on seeded random ids:
/// writes `out/model` (the initial weights, f32, transformers' layout), `out/ids.json` and
/// `out/ours.safetensors` (`grad.<name>`, f32), the loss in the report. The reference side loads
/// `out/model` and redoes the micro-batch.
pub fn grads(cfg: &Config, out: &Path) -> Result<GradsReport> {
    let t = &cfg.trainer;
    let device = device_for(t.device)?;
    let model_cfg = scratch_model(t)?;
    let compute = compute_dtype(&device);
    let params = init_params(&model_cfg, t.seed, &device)?;
    let model_dir = out.join("model");
    std::fs::create_dir_all(&model_dir).map_err(Error::io("cannot create", &model_dir))?;
    write_model_dir(
        &model_dir,
        &model_cfg,
        &params,
        &Tok::builtin_bytes()?,
        DType::F32,
        u64::MAX,
    )?;
    let checkpointing = crate::plan::checkpointing(t, device.is_cuda());
    let model = Llama::new(model_cfg.clone(), params, compute)?.with_checkpointing(checkpointing);
    let mut rng = Rng::new(t.seed ^ 0x9e37_79b9);
    let ids = random_ids(
        &mut rng,
        t.batch_size,
        t.sequence_length,
        model_cfg.vocab_size,
    );
    let started = Instant::now();
    let input = Tensor::from_vec(ids.clone(), (t.batch_size, t.sequence_length), &device)?;
    let (loss, g) = micro_batch(&model, &input, 1)?;
    let mut saved = HashMap::new();
    for (name, grad) in g {
        let grad = grad.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        saved.insert(format!("grad.{name}"), grad);
    }
    let seconds = started.elapsed().as_secs_f64();
    let file = out.join("ours.safetensors");
    candle_core::safetensors::save(&saved, &file).map_err(|e| Error::file(&file, e))?;
    let ids_file = out.join("ids.json");
    let rows: Vec<&[u32]> = ids.chunks(t.sequence_length).collect();
    let text = serde_json::to_string(&rows).map_err(|e| Error::file(&ids_file, e))?;
    std::fs::write(&ids_file, text).map_err(Error::io("cannot write", &ids_file))?;
    Ok(GradsReport {
        loss,
        dtype: dtype_name(compute),
        device: t.device.to_string(),
        checkpoint_activations: checkpointing,
        batch_size: t.batch_size,
        sequence_length: t.sequence_length,
        parameters: saved.len(),
        seconds,
    })
}

/// What [`train`] did.
#[derive(Debug, Serialize)]
pub struct TrainReport {
    pub steps: u64,
    /// (step, eval loss): the untrained model's first, then every `eval_every` steps.
    pub eval_history: Vec<(u64, f64)>,
    /// (step, mean training loss since the evaluation before).
    pub train_history: Vec<(u64, f64)>,
    /// The latest checkpoint's transformers directory.
    pub checkpoint: PathBuf,
    pub tokens_per_second: f64,
    pub seconds: f64,
    pub dtype: &'static str,
}

/// The real loop (`Run::prepare` + `Run::train`, as the daemon's thread runs them) on the
/// configured data until `trainer.max_steps`, in `state_dir`; no bus, no hand-off (candidates
/// are received and dropped).
pub fn train(cfg: &Config, state_dir: &Path) -> Result<TrainReport> {
    let t = &cfg.trainer;
    let start = t.resolve_start().map_err(|e| Error::Model(e.to_string()))?;
    std::fs::create_dir_all(state_dir).map_err(Error::io("cannot create", state_dir))?;
    // Kept open for the run: a candidate is sent here, and a closed channel would fail it.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = Shared::new(true, tx);
    let started = Instant::now();
    let mut run = Run::prepare(cfg, state_dir, start, None, &shared)?;
    run.train(&shared)?;
    let seconds = started.elapsed().as_secs_f64();
    let progress = shared.progress();
    let store = Checkpoints::open(state_dir)?;
    let latest = store
        .index
        .latest()
        .ok_or_else(|| Error::Model("the run wrote no checkpoint".into()))?;
    let device = device_for(t.device)?;
    Ok(TrainReport {
        steps: progress.step,
        eval_history: progress.eval_history,
        train_history: progress.train_history,
        checkpoint: store.path_of(&latest.name).join("model"),
        tokens_per_second: progress.tokens_per_second,
        seconds,
        dtype: dtype_name(compute_dtype(&device)),
    })
}

/// What [`throughput`] measured, and what the plan predicted for the same run.
#[derive(Debug, Serialize)]
pub struct ThroughputReport {
    pub parameters: u64,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub vocab_size: usize,
    pub batch_size: usize,
    pub sequence_length: usize,
    pub checkpoint_activations: bool,
    pub dtype: &'static str,
    /// Seconds of each measured step (after the warm-up steps).
    pub step_seconds: Vec<f64>,
    /// Tokens of the measured steps over their seconds.
    pub tokens_per_second: f64,
    /// CUDA: the most device memory in use (total − free, sampled every 10 ms) less what was in
    /// use before the model (the context); CPU: the process's peak resident memory.
    pub peak_bytes: u64,
    /// What `peak_bytes` is.
    pub peak_source: &'static str,
    /// `miner-trainer plan`'s total for this run, and where in the step it peaks.
    pub plan_bytes: u64,
    pub plan_peak_at: String,
}

/// Samples the device's used memory on a thread of its own until dropped.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemorySampler {
    /// `None` where the free memory cannot be read (the CPU).
    fn start(device: &Device) -> Option<MemorySampler> {
        let total = crate::plan::cuda_total(device)?;
        let (stop, peak) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, p, d) = (stop.clone(), peak.clone(), device.clone());
        let thread = std::thread::Builder::new()
            .name("memory".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Some(free) = crate::plan::cuda_free(&d) {
                        p.fetch_max(total.saturating_sub(free), Ordering::Relaxed);
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
            .ok()?;
        Some(MemorySampler {
            stop,
            peak,
            thread: Some(thread),
        })
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// `warmup + steps` optimiser steps of the configured model (from scratch) on random ids with
/// the loop's step code, timing the last `steps`; the device's peak memory against the plan.
pub fn throughput(cfg: &Config, warmup: usize, steps: usize) -> Result<ThroughputReport> {
    let t = &cfg.trainer;
    if steps == 0 || warmup + steps > MAX_THROUGHPUT_STEPS {
        return Err(Error::Model(format!(
            "throughput: 1 to {MAX_THROUGHPUT_STEPS} steps in all (got {warmup} + {steps})"
        )));
    }
    let device = device_for(t.device)?;
    let model_cfg = scratch_model(t)?;
    let cuda = device.is_cuda();
    let setup = crate::plan::Setup::new(t, &model_cfg, cuda, 0);
    let plan = crate::plan::plan(&setup);
    // Before the model: the context's memory is not the run's (the plan leaves it out too).
    let baseline = crate::plan::cuda_total(&device)
        .zip(crate::plan::cuda_free(&device))
        .map(|(total, free)| total.saturating_sub(free))
        .unwrap_or(0);
    let sampler = MemorySampler::start(&device);
    let compute = compute_dtype(&device);
    let params = init_params(&model_cfg, t.seed, &device)?;
    let mut opt = AdamW::new(&params, t)?;
    let model =
        Llama::new(model_cfg.clone(), params, compute)?.with_checkpointing(setup.checkpointing);
    let mut rng = Rng::new(t.seed);
    let mut step_seconds = Vec::with_capacity(steps);
    for step in 0..warmup + steps {
        let started = Instant::now();
        let mut acc = HashMap::new();
        for _ in 0..t.accumulation_steps {
            let ids = random_ids(
                &mut rng,
                t.batch_size,
                t.sequence_length,
                model_cfg.vocab_size,
            );
            let ids = Tensor::from_vec(ids, (t.batch_size, t.sequence_length), &device)?;
            let (_, g) = micro_batch(&model, &ids, t.accumulation_steps)?;
            optim::accumulate(&mut acc, g)?;
        }
        optimizer_step(&model, &mut opt, acc, t, step as u64)?;
        device.synchronize()?;
        if step >= warmup {
            step_seconds.push(started.elapsed().as_secs_f64());
        }
    }
    let (peak_bytes, peak_source) = match sampler {
        Some(s) => (
            s.finish().saturating_sub(baseline),
            "device memory in use, sampled every 10 ms, less the context's",
        ),
        None => (
            crate::plan::peak_resident().unwrap_or(0),
            "peak resident memory (VmHWM)",
        ),
    };
    let tokens = (t.batch_size * t.sequence_length * t.accumulation_steps * steps) as f64;
    let seconds: f64 = step_seconds.iter().sum();
    Ok(ThroughputReport {
        parameters: plan.parameters,
        hidden_size: model_cfg.hidden_size,
        num_hidden_layers: model_cfg.num_hidden_layers,
        vocab_size: model_cfg.vocab_size,
        batch_size: t.batch_size,
        sequence_length: t.sequence_length,
        checkpoint_activations: setup.checkpointing,
        dtype: dtype_name(compute),
        step_seconds,
        tokens_per_second: tokens / seconds.max(1e-9),
        peak_bytes,
        peak_source,
        plan_bytes: plan.bytes.total,
        plan_peak_at: plan.peak_at,
    })
}
