//! The training loop, top to bottom: prepare (device, tokenizer, data, model, optimiser, resume),
//! then step until paused, stopped or done, evaluating and checkpointing on the way and recording
//! candidates.
//!
//! It runs on its own thread (a step is seconds of CPU/GPU work, not something to put on the async
//! runtime) and talks to the daemon through [`Shared`] (`progress.rs`): the progress the D-Bus
//! properties read, the run/pause/stop switch, a heartbeat the watchdog loop checks, and a channel
//! of candidates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use taominer_core::bus::TrainerState;
use taominer_core::config::{self, Config};

use crate::checkpoint::{Candidate, CheckpointRecord, Checkpoints, RunState, TrainingState};
use crate::data::{Dataset, Tok};
use crate::error::{Error, Result};
use crate::model::{init_params, parameter_count, Llama, LlamaConfig};
use crate::optim::{self, AdamW};
use crate::progress::{CandidateEvent, Control, Shared};
use crate::remote::Remote;

fn offline_remote() -> Error {
    Error::Remote("offline mode has no chain or Hub to read other miners' models from".into())
}

/// Opens the candle device for `trainer.device`.
pub fn device_for(device: config::Device) -> Result<Device> {
    let Some(ordinal) = device.cuda_ordinal() else {
        return Ok(Device::Cpu);
    };
    #[cfg(feature = "cuda")]
    {
        Device::new_cuda(ordinal as usize).map_err(|e| Error::Device(format!("{device}: {e}")))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ordinal;
        Err(Error::Device(format!(
            "{device}: this miner-trainer was built without CUDA; build it with `--features cuda` (see README) or set trainer.device = \"cpu\""
        )))
    }
}

/// Where the starting weights come from (config `trainer.start`, or the command line), resolved
/// by [`config::TrainerConfig::resolve_start`].
pub use taominer_core::config::Start;

/// Everything the loop needs, ready to step.
pub struct Run {
    cfg: Config,
    /// The candidate rule, with `gate_on_best`'s access to other miners' models.
    gate: Gate,
    device: Device,
    model: Llama,
    opt: AdamW,
    tok: Tok,
    data: Dataset,
    store: Checkpoints,
    state: RunState,
    save_dtype: DType,
    competition: String,
    /// Training losses since the last evaluation (sum, steps), for the train-loss history.
    window: (f64, u64),
}

/// What identifies a run across restarts: the model's shape and the data.
fn fingerprint(cfg: &LlamaConfig) -> String {
    format!(
        "llama v{} h{} i{} l{} a{} kv{} tied{}",
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.kv_heads(),
        cfg.tie_word_embeddings
    )
}

impl Run {
    /// Prepares a run: resumes the latest checkpoint in `state_dir` if there is one, else starts
    /// from `start`.
    pub fn prepare(
        cfg: &Config,
        state_dir: &Path,
        start: Start,
        remote: Option<(Remote, tokio::runtime::Handle)>,
        shared: &Shared,
    ) -> Result<Run> {
        let t = &cfg.trainer;
        let device = device_for(t.device)?;
        let compute = if device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        };
        let store = Checkpoints::open(state_dir)?;
        // The memory plan, once the model's config is known and before its weights are
        // allocated: a run that cannot fit fails now, naming the settings to turn.
        let admit = |model: &LlamaConfig| crate::plan::admit(t, model, &device, state_dir);

        let resume = store.index.latest().cloned();
        let (model_cfg, params, opt_state, state, tok) = if let Some(rec) = resume {
            tracing::info!("resuming from checkpoint {} (step {})", rec.name, rec.step);
            let model_dir = store.path_of(&rec.name).join("model");
            let tok = Tok::from_file(&model_dir.join("tokenizer.json"))?;
            admit(&crate::checkpoint::read_config(&model_dir)?)?;
            let (mcfg, params, opt_state, state) = store.load(&rec.name, &device)?;
            (mcfg, params, Some(opt_state), state, tok)
        } else {
            let start = match start {
                Start::Uid(uid) => {
                    let (r, handle) = remote.as_ref().ok_or_else(offline_remote)?;
                    let c = handle.block_on(r.of_uid(uid))?;
                    tracing::info!(
                        "starting from UID {uid}'s model {} at {}",
                        c.repo,
                        c.revision
                    );
                    Start::ModelDir(handle.block_on(r.download(&c))?)
                }
                Start::Best => {
                    let (r, handle) = remote.as_ref().ok_or_else(offline_remote)?;
                    let competition = cfg.miner.competition().unwrap_or_default();
                    let c = handle.block_on(r.best(&competition))?.ok_or_else(|| {
                        Error::Remote(format!(
                            "no miner among the top five by incentive has a model committed in competition {competition}"
                        ))
                    })?;
                    tracing::info!(
                        "starting from the best model of competition {competition}: UID {} {} at {}",
                        c.uid,
                        c.repo,
                        c.revision
                    );
                    Start::ModelDir(handle.block_on(r.download(&c))?)
                }
                other => other,
            };
            let (mcfg, params, tok) = match start {
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
                    let mcfg = LlamaConfig::from_sizes(&t.model, vocab);
                    mcfg.check()?;
                    admit(&mcfg)?;
                    let params = init_params(&mcfg, t.seed, &device)?;
                    (mcfg, params, tok)
                }
                Start::ModelDir(dir) => {
                    let planned = crate::checkpoint::read_config(&dir)?;
                    let tok = match &t.tokenizer {
                        Some(p) => Tok::from_file(p)?,
                        None if dir.join("tokenizer.json").exists() => {
                            Tok::from_file(&dir.join("tokenizer.json"))?
                        }
                        None => {
                            return Err(Error::Tokenizer(format!(
                                "{} has no tokenizer.json; set trainer.tokenizer",
                                dir.display()
                            )))
                        }
                    };
                    admit(&planned)?;
                    let (mcfg, params) = crate::checkpoint::read_model_dir(&dir, &device)?;
                    (mcfg, params, tok)
                }
                Start::Uid(_) | Start::Best => {
                    return Err(Error::Model(
                        "a UID's model resolves to a directory first".into(),
                    ))
                }
            };
            let state = RunState {
                step: 0,
                epoch: 0,
                batch_in_epoch: 0,
                tokens_seen: 0,
                eval_loss: None,
                train_loss: None,
                best_loss: None,
                fingerprint: fingerprint(&mcfg),
                data_fingerprint: String::new(),
            };
            (mcfg, params, None, state, tok)
        };
        if state.fingerprint != fingerprint(&model_cfg) {
            return Err(Error::Model(format!(
                "the checkpoint in {} is of another model ({}); move run.json and checkpoints/ away to start a new run",
                state_dir.display(),
                state.fingerprint
            )));
        }
        tok.check_fits(model_cfg.vocab_size)?;
        shared.beat();

        let mut sources = t.data.clone();
        if let Some(repo) = &t.dataset_repo {
            let (r, handle) = remote.as_ref().ok_or_else(offline_remote)?;
            sources.extend(handle.block_on(r.download_dataset(
                repo,
                &t.dataset_revision,
                t.dataset_files,
                t.seed,
            ))?);
            shared.beat();
        }
        let beat = || shared.beat();
        let data = Dataset::load_or_build(&sources, &tok, t, &state_dir.join("tokens"), &beat)?;
        if state.step > 0 && state.data_fingerprint != data.fingerprint {
            tracing::warn!(
                "the training data changed since step {}: the run goes on from its data position over the new data",
                state.step
            );
        }
        let mut state = state;
        state.data_fingerprint = data.fingerprint.clone();
        if data.max_token as usize >= model_cfg.vocab_size {
            return Err(Error::Tokenizer(format!(
                "token id {} does not fit the model's vocab_size {}",
                data.max_token, model_cfg.vocab_size
            )));
        }
        if t.sequence_length > model_cfg.max_position_embeddings {
            return Err(Error::Model(format!(
                "trainer.sequence_length {} exceeds the model's max_position_embeddings {}",
                t.sequence_length, model_cfg.max_position_embeddings
            )));
        }
        let mut opt = AdamW::new(&params, t)?;
        if let Some(saved) = &opt_state {
            opt.load_state(&params, saved)?;
        }
        let checkpointing = crate::plan::checkpointing(t, !device.is_cpu());
        let model = Llama::new(model_cfg, params, compute)?.with_checkpointing(checkpointing);
        let competition = cfg.miner.competition().unwrap_or_default();
        shared.update(|p| {
            p.step = state.step;
            p.epoch = state.epoch;
            p.best_loss = state.best_loss.unwrap_or(f64::NAN);
            p.loss = state.train_loss.unwrap_or(f64::NAN);
            p.parameters = parameter_count(&model.params);
            p.candidates = store.index.candidates.len() as u64;
            p.eval_history = store.index.history.clone();
            p.train_history = store.index.train_history.clone();
        });
        tracing::info!(
            "model: {} parameters, {} layers, hidden {}, vocab {}; device {}, compute {:?}",
            parameter_count(&model.params),
            model.cfg.num_hidden_layers,
            model.cfg.hidden_size,
            model.cfg.vocab_size,
            t.device,
            compute
        );
        Ok(Run {
            cfg: cfg.clone(),
            gate: Gate::new(&cfg.trainer, remote, competition.clone()),
            save_dtype: compute,
            device,
            model,
            opt,
            tok,
            data,
            store,
            state,
            competition,
            window: (0.0, 0),
        })
    }

    /// Steps until done, paused-then-stopped, or stopped. Errors end the run (`failed`).
    pub fn train(&mut self, shared: &Shared) -> Result<()> {
        let t = self.cfg.trainer.clone();
        let tokens_per_step = (t.batch_size * t.sequence_length * t.accumulation_steps) as f64;
        let mut order = self.data.epoch_order(self.state.epoch);
        let mut rate = 0.0f64;
        let mut last_saved = self.state.step;
        shared.update(|p| p.state = TrainerState::Training);
        if self.state.step == 0 && self.store.index.history.is_empty() {
            // The untrained model's loss: the baseline the curve starts from.
            let loss = self.eval_loss(shared)?;
            tracing::info!(STEP = 0, "eval loss {loss:.4} before training");
            self.store.index.history.push((0, loss));
            shared.update(|p| {
                p.eval_loss = loss;
                p.eval_history.push((0, loss));
            });
        }
        loop {
            match shared.control() {
                Control::Stop => break,
                Control::Pause => {
                    if self.state.step != last_saved {
                        self.checkpoint(None)?;
                        last_saved = self.state.step;
                    }
                    shared.update(|p| p.state = TrainerState::Paused);
                    tracing::info!("paused at step {}", self.state.step);
                    if shared.wait_while_paused() == Control::Stop {
                        break;
                    }
                    shared.update(|p| p.state = TrainerState::Training);
                    tracing::info!("resumed at step {}", self.state.step);
                }
                Control::Run => {}
            }
            if self.done() {
                break;
            }
            let started = Instant::now();
            let mut grads: HashMap<String, Tensor> = HashMap::new();
            let (mut loss_sum, mut micro_batches) = (0.0, 0usize);
            let mut epoch_ended = false;
            for _ in 0..t.accumulation_steps {
                if self.state.batch_in_epoch + 1 > order.len() / t.batch_size {
                    self.end_epoch(shared)?;
                    epoch_ended = true;
                    if self.done() {
                        break;
                    }
                    order = self.data.epoch_order(self.state.epoch);
                }
                let b = self.state.batch_in_epoch;
                let idx = &order[b * t.batch_size..(b + 1) * t.batch_size];
                let ids = Tensor::from_vec(
                    self.data.train_batch(idx),
                    (t.batch_size, t.sequence_length),
                    &self.device,
                )?;
                let (loss, micro_grads) = micro_batch(&self.model, &ids, t.accumulation_steps)?;
                loss_sum += loss;
                micro_batches += 1;
                optim::accumulate(&mut grads, micro_grads)?;
                self.state.batch_in_epoch += 1;
                self.state.tokens_seen += (t.batch_size * t.sequence_length) as u64;
                shared.beat();
            }
            if grads.is_empty() {
                break;
            }
            let lr = optimizer_step(&self.model, &mut self.opt, grads, &t, self.state.step)?.lr;
            self.state.step += 1;
            // The last step of a run can end an epoch part-way through its accumulation.
            let loss = loss_sum / micro_batches.max(1) as f64;
            if !loss.is_finite() {
                return Err(Error::Model(format!(
                    "training loss is {loss} at step {}: lower trainer.lr or check the data",
                    self.state.step
                )));
            }
            self.state.train_loss = Some(loss);
            self.window = (self.window.0 + loss, self.window.1 + 1);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let now = tokens_per_step / secs;
            rate = if rate == 0.0 {
                now
            } else {
                0.8 * rate + 0.2 * now
            };
            let eta = self.eta(secs, order.len() / t.batch_size);
            let step = self.state.step;
            shared.update(|p| {
                p.step = step;
                p.loss = loss;
                p.tokens_per_second = rate;
                p.eta_seconds = eta;
                p.throughput.record(step, rate);
            });
            tracing::debug!(STEP = step, "step {step} loss {loss:.4} lr {lr:.2e}");

            let mut saved = false;
            // Upstream evaluates at each epoch's end; we also do every `eval_every` steps.
            if step.is_multiple_of(t.eval_every) || epoch_ended {
                saved = self.evaluate_and_offer(shared)?;
            }
            if !saved && step.is_multiple_of(t.checkpoint_every) {
                self.checkpoint(None)?;
                saved = true;
            }
            if saved {
                last_saved = step;
            }
        }
        if self.state.step != last_saved {
            if self.done() && self.state.eval_loss.is_none() {
                self.evaluate_and_offer(shared)?;
            } else {
                self.checkpoint(None)?;
            }
        }
        if self.done() {
            shared.update(|p| p.state = TrainerState::Finished);
            tracing::info!(
                "finished at step {}; best eval loss {:?}",
                self.state.step,
                self.state.best_loss
            );
        }
        Ok(())
    }

    fn done(&self) -> bool {
        let t = &self.cfg.trainer;
        (t.max_steps > 0 && self.state.step >= t.max_steps)
            || (t.num_epochs > 0 && self.state.epoch >= t.num_epochs as u64)
    }

    /// Seconds left at `secs_per_step`, with `batches_per_epoch` in the current epoch.
    fn eta(&self, secs_per_step: f64, batches_per_epoch: usize) -> f64 {
        let t = &self.cfg.trainer;
        let mut left = None;
        if t.max_steps > 0 {
            left = Some(t.max_steps.saturating_sub(self.state.step) as f64);
        }
        if t.num_epochs > 0 {
            let per_epoch = (batches_per_epoch / t.accumulation_steps).max(1) as f64;
            let remaining_epochs = (t.num_epochs as u64).saturating_sub(self.state.epoch) as f64;
            let by_epochs = remaining_epochs * per_epoch
                - (self.state.batch_in_epoch / t.accumulation_steps) as f64;
            left = Some(left.map_or(by_epochs, |l: f64| l.min(by_epochs)));
        }
        left.map_or(-1.0, |l| l.max(0.0) * secs_per_step)
    }

    /// Epoch boundary: evaluate (upstream saves on a new best epoch) and move the data position.
    fn end_epoch(&mut self, shared: &Shared) -> Result<()> {
        tracing::info!(
            "epoch {} done at step {}",
            self.state.epoch,
            self.state.step
        );
        self.state.epoch += 1;
        self.state.batch_in_epoch = 0;
        shared.update(|p| p.epoch += 1);
        Ok(())
    }

    /// Mean token cross-entropy of our model over the eval sequences.
    pub fn eval_loss(&self, shared: &Shared) -> Result<f64> {
        self.eval_loss_of(&self.model, shared)
    }

    /// Mean token cross-entropy of `model` over the eval sequences, with no gradient kept.
    fn eval_loss_of(&self, model: &Llama, shared: &Shared) -> Result<f64> {
        Scoring {
            data: &self.data,
            batch_size: self.cfg.trainer.batch_size,
            device: &self.device,
            beat: &|| shared.beat(),
        }
        .score(model)
    }

    /// Evaluates; on a new best checkpoints, and records a candidate when the threshold rule
    /// says so. Returns whether a checkpoint was written.
    fn evaluate_and_offer(&mut self, shared: &Shared) -> Result<bool> {
        let loss = self.eval_loss(shared)?;
        self.state.eval_loss = Some(loss);
        self.store.index.history.push((self.state.step, loss));
        let step = self.state.step;
        let train = (self.window.1 > 0).then(|| (step, self.window.0 / self.window.1 as f64));
        self.window = (0.0, 0);
        if let Some(point) = train {
            self.store.index.train_history.push(point);
        }
        shared.update(|p| {
            p.eval_history.push((step, loss));
            p.train_history.extend(train);
        });
        let improved = self.state.best_loss.is_none_or(|b| loss < b);
        tracing::info!(
            STEP = self.state.step,
            "eval loss {loss:.4} at step {}{}",
            self.state.step,
            if improved { " (best)" } else { "" }
        );
        if improved {
            self.state.best_loss = Some(loss);
        }
        let best = self.state.best_loss.unwrap_or(loss);
        shared.update(|p| {
            p.eval_loss = loss;
            p.best_loss = best;
        });
        let name = self.checkpoint(Some(loss))?;
        if improved {
            self.store.index.best = Some(CheckpointRecord {
                name: name.clone(),
                step: self.state.step,
                eval_loss: Some(loss),
            });
        }
        let threshold = self.cfg.trainer.avg_loss_upload_threshold;
        let last = self.store.index.last_candidate().map(|c| c.loss);
        let on = Scoring {
            data: &self.data,
            batch_size: self.cfg.trainer.batch_size,
            device: &self.device,
            beat: &|| shared.beat(),
        };
        let admitted = self.gate.admits(loss, last, &on);
        if admitted {
            let candidate = Candidate {
                checkpoint: name.clone(),
                path: self.store.path_of(&name).join("model"),
                step: self.state.step,
                loss,
                competition: self.competition.clone(),
                key: format!("{}/{name}", self.store.index.run_id),
            };
            self.store.index.candidates.push(candidate.clone());
            // Recorded before it is announced: a restart never announces it again.
            self.store.save_index()?;
            taominer_core::daemon::fault::crash_point("trainer.candidate-recorded");
            tracing::info!(
                STEP = self.state.step,
                "candidate: eval loss {loss:.4} < threshold {threshold} at step {} ({})",
                self.state.step,
                candidate.path.display()
            );
            let count = self.store.index.candidates.len() as u64;
            shared.update(|p| p.candidates = count);
            let _ = shared.candidates.send(CandidateEvent { candidate });
        } else {
            self.store.save_index()?;
        }
        self.state.eval_loss = None;
        Ok(true)
    }

    /// Writes a checkpoint of the current state and prunes old ones. Returns its name.
    fn checkpoint(&mut self, eval_loss: Option<f64>) -> Result<String> {
        let mut run = self.state.clone();
        run.eval_loss = eval_loss;
        let opt_state = self.opt.state_tensors()?;
        let master = (self.save_dtype != DType::F32).then_some(&self.model.params);
        let name = self.store.save(
            &self.model.cfg,
            &self.model.params,
            &self.tok,
            self.save_dtype,
            self.cfg.trainer.max_shard_bytes,
            TrainingState {
                run: &run,
                optimizer: opt_state.iter().map(|(k, t)| (k.clone(), t)).collect(),
                master,
            },
        )?;
        self.store.prune(self.cfg.trainer.keep_checkpoints)?;
        tracing::info!(STEP = run.step, "checkpoint {name}");
        Ok(name)
    }
}

/// One micro-batch of a step: the loss on `ids` `[batch, seq]` and its gradients, scaled by
/// `1 / accumulation_steps` so that a step's accumulated gradients are those of the mean loss
/// over its micro-batches. Returns the unscaled loss (what the progress reports) and the
/// gradients by parameter name. A function of its own so that the PyTorch cross-check
/// (`tests/tests/trainer_grads.rs`) runs the loop's own code, not a copy of it.
pub fn micro_batch(
    model: &Llama,
    ids: &Tensor,
    accumulation_steps: usize,
) -> Result<(f64, HashMap<String, Tensor>)> {
    let loss = model.loss(ids, true)?;
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let scaled = (loss / accumulation_steps as f64)?;
    Ok((value, model.backward(&scaled)?))
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// The learning rate the update used.
    pub lr: f64,
    /// The accumulated gradients' global L2 norm before clipping.
    pub grad_norm: f64,
}

/// The end of a step, as the loop takes it: clips the accumulated `grads` to `t.grad_clip`
/// global norm, takes step `step`'s learning rate (`step` counts the steps already taken) from
/// the warmup-then-cosine schedule, and applies AdamW to the model's weights. Shared with the
/// PyTorch cross-check like [`micro_batch`].
pub fn optimizer_step(
    model: &Llama,
    opt: &mut AdamW,
    grads: HashMap<String, Tensor>,
    t: &taominer_core::config::TrainerConfig,
    step: u64,
) -> Result<StepReport> {
    let (grad_norm, clip) = optim::clip_factor(&grads, t.grad_clip)?;
    let lr = optim::learning_rate(step, t.lr, t.warmup_steps, t.max_steps, t.min_lr_ratio);
    opt.step(&model.params, &grads, lr, clip)?;
    Ok(StepReport { lr, grad_norm })
}

/// What a model is scored on: our held-out split, in batches, on a device.
pub struct Scoring<'a> {
    pub data: &'a Dataset,
    pub batch_size: usize,
    pub device: &'a Device,
    /// Called after each batch (the watchdog's heartbeat).
    pub beat: &'a dyn Fn(),
}

impl Scoring<'_> {
    /// The validators' metric on our held-out split: the mean token cross-entropy of `model`
    /// over the eval sequences, with no gradient kept. The one scoring function of both engines
    /// (the built-in loop's evaluations, the external engine's checkpoints, `gate_on_best`'s
    /// other model).
    pub fn score(&self, model: &Llama) -> Result<f64> {
        let seqs = self.data.eval_sequences();
        let (mut sum, mut n) = (0.0f64, 0usize);
        for chunk in seqs.chunks(self.batch_size.max(1)) {
            let flat: Vec<u32> = chunk.iter().flat_map(|s| s.iter().copied()).collect();
            let ids = Tensor::from_vec(flat, (chunk.len(), self.data.seq_len), self.device)?;
            let loss = model.loss(&ids, false)?;
            sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * chunk.len() as f64;
            n += chunk.len();
            (self.beat)();
        }
        Ok(sum / n.max(1) as f64)
    }

    /// Loads the model directory `dir` on the device and scores it. Refuses a model whose
    /// vocabulary our token ids do not fit.
    pub fn score_dir(&self, dir: &Path) -> Result<f64> {
        let (cfg, params) = crate::checkpoint::read_model_dir(dir, self.device)?;
        if (self.data.max_token as usize) >= cfg.vocab_size {
            return Err(Error::Model(format!(
                "vocab_size {} is too small for our tokenizer's ids (up to {})",
                cfg.vocab_size, self.data.max_token
            )));
        }
        self.score(&Llama::new(cfg, params, compute_dtype(self.device))?)
    }
}

/// The compute dtype of a device: f32 on the CPU, bf16 on CUDA.
pub fn compute_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

/// The candidate rule of both engines: [`is_candidate`], then `gate_on_best`. It holds what the
/// gate needs across evaluations: the remote access and the losses of best models scored.
pub struct Gate {
    threshold: f64,
    gate_on_best: bool,
    gate_epsilon: f64,
    competition: String,
    /// Online: other miners' models, and the runtime to wait on their calls with.
    remote: Option<(Remote, tokio::runtime::Handle)>,
    /// Eval losses of best models already scored, by (repo, revision).
    scored: HashMap<(String, String), f64>,
}

impl Gate {
    pub fn new(
        t: &config::TrainerConfig,
        remote: Option<(Remote, tokio::runtime::Handle)>,
        competition: String,
    ) -> Gate {
        Gate {
            threshold: t.avg_loss_upload_threshold,
            gate_on_best: t.gate_on_best,
            gate_epsilon: t.gate_epsilon,
            competition,
            remote,
            scored: HashMap::new(),
        }
    }

    /// Whether a checkpoint of eval loss `loss` is a candidate, the last candidate's loss being
    /// `last_candidate`. `on` scores the competition's best model for `gate_on_best`.
    pub fn admits(&mut self, loss: f64, last_candidate: Option<f64>, on: &Scoring) -> bool {
        is_candidate(loss, self.threshold, last_candidate) && self.beats_best(loss, on)
    }

    /// `gate_on_best`: whether `loss` beats the competition's best committed model, scored on
    /// our eval data, by `gate_epsilon`. Fails closed: a best model we cannot fetch or score
    /// holds the candidate back (the next evaluation tries again).
    fn beats_best(&mut self, loss: f64, on: &Scoring) -> bool {
        if !self.gate_on_best {
            return true;
        }
        match self.best_loss_to_beat(on) {
            Ok(None) => {
                tracing::info!(
                    "gate: no committed model in competition {}; nothing to beat",
                    self.competition
                );
                true
            }
            Ok(Some((uid, theirs))) => {
                let needed = theirs * (1.0 - self.gate_epsilon);
                let pass = loss < needed;
                tracing::info!(
                    "gate: ours {loss:.4} vs UID {uid}'s {theirs:.4} (must be below {needed:.4}): {}",
                    if pass { "candidate" } else { "held back" }
                );
                pass
            }
            Err(e) => {
                tracing::warn!(
                    "gate: cannot score the competition's best model ({e}); candidate held back"
                );
                false
            }
        }
    }

    fn best_loss_to_beat(&mut self, on: &Scoring) -> Result<Option<(u16, f64)>> {
        let (remote, handle) = self.remote.as_ref().ok_or_else(offline_remote)?;
        let Some(best) = handle.block_on(remote.best(&self.competition))? else {
            return Ok(None);
        };
        let key = (best.repo.clone(), best.revision.clone());
        if let Some(l) = self.scored.get(&key) {
            return Ok(Some((best.uid, *l)));
        }
        let dir = handle.block_on(remote.download(&best))?;
        (on.beat)();
        let theirs = on
            .score_dir(&dir)
            .map_err(|e| Error::Remote(format!("UID {}'s model: {e}", best.uid)))?;
        self.scored.insert(key, theirs);
        Ok(Some((best.uid, theirs)))
    }
}

/// The threshold rule: below `avg_loss_upload_threshold` (0 disables, as upstream) and better
/// than the last candidate.
pub fn is_candidate(loss: f64, threshold: f64, last_candidate: Option<f64>) -> bool {
    threshold > 0.0 && loss < threshold && last_candidate.is_none_or(|l| loss < l)
}

/// Why a trainer with the default configuration does not train.
pub const NO_DATA: &str = "no training data configured: set trainer.data to files or directories of .txt, .md, .jsonl or .parquet (or trainer.dataset_repo, online)";

/// The loop thread's body: prepare, train, and record a failure for `Status`.
pub fn run_thread(
    cfg: Config,
    state_dir: PathBuf,
    start: Start,
    remote: Option<Remote>,
    handle: tokio::runtime::Handle,
    shared: &Shared,
) {
    if shared.wait_while_paused() == Control::Stop {
        return;
    }
    if cfg.trainer.data.is_empty() && cfg.trainer.dataset_repo.is_none() {
        shared.update(|p| {
            p.state = TrainerState::Idle;
            p.last_error = NO_DATA.into();
        });
        tracing::warn!("{NO_DATA}");
        return;
    }
    shared.update_state(TrainerState::Starting);
    let remote = remote.map(|r| (r, handle));
    let result =
        Run::prepare(&cfg, &state_dir, start, remote, shared).and_then(|mut run| run.train(shared));
    if let Err(e) = result {
        tracing::error!("training failed: {e}");
        shared.update(|p| {
            p.state = TrainerState::Failed;
            p.last_error = e.to_string();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_rule() {
        assert!(!is_candidate(1.0, 0.0, None), "threshold 0 never uploads");
        assert!(is_candidate(1.0, 2.0, None));
        assert!(!is_candidate(2.5, 2.0, None));
        assert!(!is_candidate(1.0, 2.0, Some(0.9)));
        assert!(is_candidate(0.8, 2.0, Some(0.9)));
        assert!(!is_candidate(0.9, 2.0, Some(0.9)), "equal is not better");
    }
}
