//! The LLaMA decoder the trainer trains, written out so that every position's logits come back
//! (candle-transformers' `llama` returns the last position only and carries a KV cache; a
//! language-model loss needs all of them).
//!
//! It is transformers' `LlamaForCausalLM` op for op: RMSNorm in f32, rotary embeddings with the
//! rotate-half layout (and `llama3`/`linear` rope scaling), grouped-query attention, SwiGLU MLP,
//! optionally tied embeddings. Parameter names are transformers' tensor names, so a checkpoint is
//! the weights map saved as is (see `checkpoint.rs`). The weights are `Var`s in f32 (the master
//! copy the optimiser updates); the forward pass computes in `compute_dtype` (f32 on CPU, bf16 on
//! CUDA), which is mixed-precision training with no extra machinery.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `config.json` of a `LlamaForCausalLM`, with transformers' keys. Unknown keys are kept so a
/// model trained elsewhere keeps its config when we fine-tune it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default = "llama")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "silu")]
    pub hidden_act: String,
    #[serde(default = "max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers 5 writes `rope_parameters` (theta and scaling together); 4.x wrote
    /// `rope_theta`/`rope_scaling`, which both read, so that is what we write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub pad_token_id: Option<serde_json::Value>,
    #[serde(default = "init_range")]
    pub initializer_range: f64,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn llama() -> String {
    "llama".into()
}
fn silu() -> String {
    "silu".into()
}
fn max_pos() -> usize {
    2048
}
fn rms_eps() -> f64 {
    1e-6
}
fn rope_theta() -> f64 {
    10000.0
}
fn init_range() -> f64 {
    0.02
}

impl LlamaConfig {
    /// A config for training from scratch, as transformers' `LlamaConfig(...).to_dict()` writes it.
    pub fn from_sizes(m: &taominer_core::config::TrainerModelConfig, vocab_size: usize) -> Self {
        let mut other = BTreeMap::new();
        other.insert("attention_dropout".into(), 0.0.into());
        other.insert("pretraining_tp".into(), 1.into());
        other.insert("use_cache".into(), true.into());
        other.insert("torch_dtype".into(), "float32".into());
        LlamaConfig {
            architectures: vec!["LlamaForCausalLM".into()],
            model_type: "llama".into(),
            vocab_size,
            hidden_size: m.hidden_size,
            intermediate_size: m.intermediate_size,
            num_hidden_layers: m.num_hidden_layers,
            num_attention_heads: m.num_attention_heads,
            num_key_value_heads: Some(m.num_key_value_heads),
            head_dim: Some(m.hidden_size / m.num_attention_heads),
            hidden_act: "silu".into(),
            max_position_embeddings: m.max_position_embeddings,
            rms_norm_eps: m.rms_norm_eps,
            rope_theta: m.rope_theta,
            rope_scaling: None,
            rope_parameters: None,
            tie_word_embeddings: m.tie_word_embeddings,
            attention_bias: false,
            mlp_bias: false,
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
            initializer_range: 0.02,
            other,
        }
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Refuses what this implementation would get wrong rather than train a different model.
    pub fn check(&self) -> Result<()> {
        let arch_ok = self.architectures.iter().any(|a| a == "LlamaForCausalLM")
            || (self.architectures.is_empty() && self.model_type == "llama");
        if !arch_ok || self.model_type != "llama" {
            return Err(Error::Model(format!(
                "config.json: architectures {:?} (model_type {:?}) is not supported; the trainer trains LlamaForCausalLM (model_type \"llama\")",
                self.architectures, self.model_type
            )));
        }
        if self.hidden_act != "silu" {
            return Err(Error::Model(format!(
                "config.json: hidden_act {:?} is not supported (only \"silu\")",
                self.hidden_act
            )));
        }
        if self.attention_bias || self.mlp_bias {
            return Err(Error::Model(
                "config.json: attention_bias/mlp_bias = true is not supported".into(),
            ));
        }
        let heads = self.num_attention_heads;
        let kv = self.kv_heads();
        if heads == 0 || kv == 0 || !heads.is_multiple_of(kv) {
            return Err(Error::Model(format!(
                "config.json: num_attention_heads {heads} must be a positive multiple of num_key_value_heads {kv}"
            )));
        }
        if !self.head_size().is_multiple_of(2)
            || self.vocab_size == 0
            || self.num_hidden_layers == 0
        {
            return Err(Error::Model(format!(
                "config.json: head size {} must be even and vocab_size, num_hidden_layers positive",
                self.head_size()
            )));
        }
        // A config.json may come from another miner's repo: sizes far past any real LLaMA are
        // refused here, before the memory plan replays them layer by layer or anything is
        // allocated (and before products of them can overflow).
        let limits = [
            ("vocab_size", self.vocab_size, 1 << 24),
            ("hidden_size", self.hidden_size, 1 << 17),
            ("intermediate_size", self.intermediate_size, 1 << 19),
            ("num_hidden_layers", self.num_hidden_layers, 1024),
            ("num_attention_heads", heads, 1024),
            ("head_dim", self.head_size(), 1024),
        ];
        for (key, value, max) in limits {
            if value > max {
                return Err(Error::Model(format!(
                    "config.json: {key} {value} is above {max}, larger than any model this trainer can train"
                )));
            }
        }
        self.rope_inv_freq()?;
        Ok(())
    }

    /// Rotary inverse frequencies, with the rope scalings transformers applies to LLaMA.
    fn rope_inv_freq(&self) -> Result<Vec<f64>> {
        let dim = self.head_size();
        let params = self.rope_parameters.as_ref().filter(|v| !v.is_null());
        let theta = params
            .and_then(|p| p.get("rope_theta"))
            .and_then(|v| v.as_f64())
            .unwrap_or(self.rope_theta);
        let base: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f64 / dim as f64))
            .collect();
        let scaling = params.or(self.rope_scaling.as_ref().filter(|v| !v.is_null()));
        let Some(scaling) = scaling else {
            return Ok(base);
        };
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        let num = |k: &str| scaling.get(k).and_then(|v| v.as_f64());
        match kind {
            "default" => Ok(base),
            "linear" => {
                let f = num("factor").ok_or_else(|| {
                    Error::Model("config.json: rope_scaling linear needs factor".into())
                })?;
                Ok(base.into_iter().map(|x| x / f).collect())
            }
            "llama3" => {
                let (Some(factor), Some(low), Some(high), Some(orig)) = (
                    num("factor"),
                    num("low_freq_factor"),
                    num("high_freq_factor"),
                    num("original_max_position_embeddings"),
                ) else {
                    return Err(Error::Model(
                        "config.json: rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings".into(),
                    ));
                };
                let low_wavelen = orig / low;
                let high_wavelen = orig / high;
                Ok(base
                    .into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen > low_wavelen {
                            f / factor
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (orig / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect())
            }
            other => Err(Error::Model(format!(
                "config.json: rope_scaling type {other:?} is not supported (default, linear, llama3)"
            ))),
        }
    }

    /// Every parameter's transformers name and shape, in a fixed order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let hd = self.head_size();
        let (q, kv) = (self.num_attention_heads * hd, self.kv_heads() * hd);
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.input_layernorm.weight"), vec![h]));
            out.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
            out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
            out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
            out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
            out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![v, h]));
        }
        out
    }
}

/// The weights, by transformers name (sorted: the optimiser and the checkpoint walk them in the
/// same order every run).
pub type Params = BTreeMap<String, Var>;

/// Fresh weights as transformers initialises LLaMA: normal(0, initializer_range) for matrices,
/// ones for norms; drawn from our own seeded generator, so a seed means the same model on any
/// device and any candle version.
pub fn init_params(cfg: &LlamaConfig, seed: u64, device: &Device) -> Result<Params> {
    let mut rng = crate::rng::Rng::new(seed ^ 0x5eed_1a11);
    let mut params = Params::new();
    for (name, shape) in cfg.parameter_shapes() {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else {
            (0..n)
                .map(|_| (rng.normal() * cfg.initializer_range) as f32)
                .collect()
        };
        let t = Tensor::from_vec(data, shape, device)?;
        params.insert(name, Var::from_tensor(&t)?);
    }
    Ok(params)
}

pub fn parameter_count(params: &Params) -> u64 {
    params.values().map(|v| v.elem_count() as u64).sum()
}

/// The model: the config, the weights, and the rotary tables.
pub struct Llama {
    pub cfg: LlamaConfig,
    pub params: Params,
    compute: DType,
    inv_freq: Vec<f32>,
    /// Activation checkpointing: keep each decoder layer's input only and recompute the layer
    /// in the backward pass (see [`recompute`]).
    checkpointing: bool,
    /// Parameter gradients that checkpointed layers produce inside the backward pass, where
    /// candle's `GradStore` cannot receive them; [`Llama::backward`] merges them.
    side_grads: recompute::SideGrads,
    /// The last rotary tables made, by sequence length: every step uses the same length.
    rotary_cache: std::sync::Mutex<Option<(usize, Tensor, Tensor)>>,
}

/// What every decoder layer of one forward pass shares.
#[derive(Clone)]
pub(crate) struct Pass {
    cos: Tensor,
    sin: Tensor,
    scale: f64,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
    compute: DType,
    /// Whether a gradient graph is built (the no-gradient passes may take other kernels).
    #[cfg_attr(not(feature = "flash-attn"), allow(dead_code))]
    training: bool,
}

/// One decoder layer's weights in the compute dtype, with their transformers names.
#[derive(Clone)]
pub(crate) struct LayerWeights {
    pub(crate) tensors: Vec<(String, Tensor)>,
}

impl LayerWeights {
    /// The layer's `Var`s in the compute dtype; `tracked = false` cuts them from the graph.
    pub(crate) fn cast(vars: &[(String, Tensor)], compute: DType, tracked: bool) -> Result<Self> {
        let mut tensors = Vec::with_capacity(vars.len());
        for (name, v) in vars {
            let t = v.to_dtype(compute)?;
            tensors.push((name.clone(), if tracked { t } else { t.detach() }));
        }
        Ok(LayerWeights { tensors })
    }

    // In `LAYER_PARTS` order.
    fn get(&self, i: usize) -> &Tensor {
        &self.tensors[i].1
    }
}

/// A decoder layer's weights, after `model.layers.{l}.`, in the order `layer()` reads them.
pub(crate) const LAYER_PARTS: [&str; 9] = [
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

impl Llama {
    pub fn new(cfg: LlamaConfig, params: Params, compute: DType) -> Result<Self> {
        cfg.check()?;
        for (name, shape) in cfg.parameter_shapes() {
            let Some(v) = params.get(&name) else {
                return Err(Error::Model(format!("weights: {name} is missing")));
            };
            if v.dims() != shape.as_slice() {
                return Err(Error::Model(format!(
                    "weights: {name} has shape {:?} but config.json implies {shape:?}",
                    v.dims()
                )));
            }
        }
        let inv_freq = cfg.rope_inv_freq()?.into_iter().map(|f| f as f32).collect();
        Ok(Llama {
            cfg,
            params,
            compute,
            inv_freq,
            checkpointing: false,
            side_grads: recompute::SideGrads::default(),
            rotary_cache: std::sync::Mutex::new(None),
        })
    }

    /// Turns activation checkpointing on or off (`trainer.checkpoint_activations`).
    pub fn with_checkpointing(mut self, on: bool) -> Self {
        self.checkpointing = on;
        self
    }

    pub fn checkpointing(&self) -> bool {
        self.checkpointing
    }

    /// A weight in the compute dtype; `tracked = false` cuts it from the gradient graph (the
    /// no-gradient passes, where keeping the graph would keep every activation alive).
    fn w(&self, name: &str, tracked: bool) -> Result<Tensor> {
        let v = self
            .params
            .get(name)
            .ok_or_else(|| Error::Model(format!("weights: {name} is missing")))?;
        let t = v.as_tensor().to_dtype(self.compute)?;
        Ok(if tracked { t } else { t.detach() })
    }

    /// Decoder layer `l`'s weights (the `Var`s themselves), in `LAYER_PARTS` order.
    fn layer_vars(&self, l: usize) -> Result<Vec<(String, Tensor)>> {
        LAYER_PARTS
            .iter()
            .map(|part| {
                let name = format!("model.layers.{l}.{part}");
                let v = self
                    .params
                    .get(&name)
                    .ok_or_else(|| Error::Model(format!("weights: {name} is missing")))?;
                Ok((name, v.as_tensor().clone()))
            })
            .collect()
    }

    /// cos/sin tables `[t, head_dim]` (frequencies repeated, transformers' layout).
    fn rotary(&self, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        if let Ok(cache) = self.rotary_cache.lock() {
            if let Some((ct, cos, sin)) = &*cache {
                if *ct == t && cos.device().same_device(device) {
                    return Ok((cos.clone(), sin.clone()));
                }
            }
        }
        let half = self.inv_freq.len();
        let mut freqs = Vec::with_capacity(t * half * 2);
        for pos in 0..t {
            let row: Vec<f32> = self.inv_freq.iter().map(|f| pos as f32 * f).collect();
            freqs.extend_from_slice(&row);
            freqs.extend_from_slice(&row);
        }
        let f = Tensor::from_vec(freqs, (t, half * 2), device)?;
        let (cos, sin) = (
            f.cos()?.to_dtype(self.compute)?,
            f.sin()?.to_dtype(self.compute)?,
        );
        if let Ok(mut cache) = self.rotary_cache.lock() {
            *cache = Some((t, cos.clone(), sin.clone()));
        }
        Ok((cos, sin))
    }

    /// Logits `[b, t, vocab]` in f32 for token ids `[b, t]` (u32). `training = false` builds no
    /// gradient graph.
    pub fn forward(&self, ids: &Tensor, training: bool) -> Result<Tensor> {
        let x = self.hidden(ids, training)?;
        let head = if self.cfg.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        Ok(linear(&x, &self.w(head, training)?)?.to_dtype(DType::F32)?)
    }

    /// The final normed hidden states `[b, t, hidden]`.
    fn hidden(&self, ids: &Tensor, training: bool) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.cfg;
        let (cos, sin) = self.rotary(t, ids.device())?;
        let pass = Pass {
            cos,
            sin,
            scale: 1.0 / (cfg.head_size() as f64).sqrt(),
            heads: cfg.num_attention_heads,
            kv_heads: cfg.kv_heads(),
            head_dim: cfg.head_size(),
            eps: cfg.rms_norm_eps,
            compute: self.compute,
            training,
        };
        // Rows of the f32 master, then cast: the embedding's gradient is summed in f32 (a bf16
        // table would add up a frequent token's contributions in bf16) and no cast of the whole
        // table is kept.
        let emb = self.params["model.embed_tokens.weight"].as_tensor();
        let emb = if training { emb.clone() } else { emb.detach() };
        let mut x = emb
            .embedding(&ids.flatten_all()?)?
            .reshape((b, t, cfg.hidden_size))?
            .to_dtype(self.compute)?;
        for l in 0..cfg.num_hidden_layers {
            let vars = self.layer_vars(l)?;
            x = if training && self.checkpointing {
                recompute::layer(&x, vars, &pass, &self.side_grads)?
            } else {
                layer(
                    &x,
                    &LayerWeights::cast(&vars, self.compute, training)?,
                    &pass,
                )?
            };
        }
        rms_norm(&x, &self.w("model.norm.weight", training)?, &pass)
    }

    /// Mean next-token cross-entropy over a batch `[b, t]`, as `model(ids, labels=ids).loss`.
    pub fn loss(&self, ids: &Tensor, training: bool) -> Result<Tensor> {
        let logits = self.forward(ids, training)?;
        Ok(crate::ops::causal_lm_loss(&logits, ids)?)
    }

    /// The gradient of `loss` (from [`Llama::loss`] with `training = true`) for every
    /// parameter, by transformers name: candle's backward pass, plus what checkpointed layers
    /// computed on the way.
    pub fn backward(&self, loss: &Tensor) -> Result<HashMap<String, Tensor>> {
        self.side_grads.clear();
        let store = loss.backward()?;
        let mut grads = HashMap::new();
        for (name, p) in &self.params {
            if let Some(g) = store.get(p.as_tensor()) {
                grads.insert(name.clone(), g.detach());
            }
        }
        for (name, g) in self.side_grads.take() {
            let g = match grads.remove(&name) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            grads.insert(name, g);
        }
        Ok(grads)
    }
}

/// `x @ W^T` for a `[out, in]` weight, on `[b, t, in]`: one 2-D matmul over `b * t` rows
/// (a broadcast batch matmul would make the backward pass build and sum a per-batch copy of
/// the weight gradient).
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (b, t, i) = x.dims3()?;
    let y = x.reshape((b * t, i))?.matmul(&w.t()?)?;
    Ok(y.reshape((b, t, w.dim(0)?))?)
}

/// RMSNorm computed in f32 as transformers does, then back to the compute dtype.
fn rms_norm(x: &Tensor, w: &Tensor, pass: &Pass) -> Result<Tensor> {
    Ok(crate::ops::rms_norm(x, w, pass.eps)?.to_dtype(pass.compute)?)
}

/// One decoder layer: `x + attn(norm(x))`, then `+ mlp(norm(·))`.
pub(crate) fn layer(x: &Tensor, w: &LayerWeights, pass: &Pass) -> Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    let (nh, nkv, hd) = (pass.heads, pass.kv_heads, pass.head_dim);
    let h = rms_norm(x, w.get(0), pass)?;
    // Heads stay in the projections' layout `[b, t, heads, hd]`: no transposed copies.
    let heads =
        |wt: &Tensor, n: usize| -> Result<Tensor> { Ok(linear(&h, wt)?.reshape((b, t, n, hd))?) };
    let q = crate::ops::rope(&heads(w.get(1), nh)?, &pass.cos, &pass.sin)?;
    let k = crate::ops::rope(&heads(w.get(2), nkv)?, &pass.cos, &pass.sin)?;
    let v = heads(w.get(3), nkv)?;
    let attn = attention(&q, &k, &v, pass)?.reshape((b, t, nh * hd))?;
    let x = (x + linear(&attn, w.get(4))?)?;

    let h = rms_norm(&x, w.get(5), pass)?;
    let gate = linear(&h, w.get(6))?;
    let up = linear(&h, w.get(7))?;
    let mlp = linear(&crate::ops::swiglu(&gate, &up)?, w.get(8))?;
    Ok((x + mlp)?)
}

/// Causal grouped-query attention on `[b, t, heads, hd]` (see `ops::attention`); on CUDA with the
/// `flash-attn` feature the no-gradient passes take flash-attn.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, pass: &Pass) -> Result<Tensor> {
    #[cfg(feature = "flash-attn")]
    if !pass.training && q.device().is_cuda() && q.dtype() == DType::BF16 {
        return crate::flash::attention(q, k, v, pass.scale);
    }
    Ok(crate::ops::attention(q, k, v, pass.scale)?)
}

pub mod recompute;

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile or broken config.json (another miner's repo) is refused by its sizes before
    /// anything is planned or allocated; a real competition config passes.
    #[test]
    fn absurd_sizes_are_refused() {
        let m = taominer_core::config::TrainerModelConfig {
            hidden_size: 3072,
            intermediate_size: 8000,
            num_hidden_layers: 28,
            num_attention_heads: 24,
            num_key_value_heads: 8,
            ..Default::default()
        };
        let good = LlamaConfig::from_sizes(&m, 100_288);
        good.check().unwrap();
        for (key, bad) in [
            (
                "num_hidden_layers",
                LlamaConfig {
                    num_hidden_layers: 1 << 30,
                    ..good.clone()
                },
            ),
            (
                "vocab_size",
                LlamaConfig {
                    vocab_size: usize::MAX,
                    ..good.clone()
                },
            ),
            (
                "hidden_size",
                LlamaConfig {
                    hidden_size: 1 << 40,
                    head_dim: Some(128),
                    ..good.clone()
                },
            ),
            (
                "intermediate_size",
                LlamaConfig {
                    intermediate_size: 1 << 33,
                    ..good.clone()
                },
            ),
        ] {
            let err = bad.check().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}
