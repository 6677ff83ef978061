//! AdamW, the learning-rate schedule and gradient clipping.
//!
//! Our own AdamW rather than `candle_nn::AdamW` because a resumable run must save and restore the
//! moments, which candle's keeps private. The update is PyTorch's `AdamW` (decoupled weight decay,
//! bias-corrected moments), applied with weight decay to matrices only: norms' gains are not
//! decayed, as in most LLaMA recipes.

use std::collections::HashMap;

use candle_core::Tensor;
#[cfg(test)]
use candle_core::Var;

use crate::error::{Error, Result};
use crate::model::Params;
use crate::ops::adamw::{adamw_step, sum_of_squares, AdamWStep};

pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Updates applied so far (the bias-correction exponent).
    pub t: u64,
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
}

impl AdamW {
    pub fn new(params: &Params, cfg: &taominer_core::config::TrainerConfig) -> Result<AdamW> {
        let mut m = HashMap::new();
        let mut v = HashMap::new();
        for (name, p) in params {
            m.insert(name.clone(), p.zeros_like()?);
            v.insert(name.clone(), p.zeros_like()?);
        }
        Ok(AdamW {
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            t: 0,
            m,
            v,
        })
    }

    /// One update with `grads` (by parameter name) times `grad_scale` (the clip factor) at
    /// learning rate `lr`: PyTorch's AdamW, one pass per parameter (`ops::adamw`).
    pub fn step(
        &mut self,
        params: &Params,
        grads: &HashMap<String, Tensor>,
        lr: f64,
        grad_scale: f64,
    ) -> Result<()> {
        self.t += 1;
        for (name, p) in params {
            let Some(g) = grads.get(name) else { continue };
            let m = self.m.get_mut(name).ok_or_else(|| missing(name))?;
            let v = self.v.get_mut(name).ok_or_else(|| missing(name))?;
            let scalars = AdamWStep {
                lr,
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
                weight_decay: if p.rank() >= 2 {
                    self.weight_decay
                } else {
                    0.0
                },
                bias_correction1: 1.0 - self.beta1.powi(self.t as i32),
                bias_correction2: 1.0 - self.beta2.powi(self.t as i32),
                grad_scale,
            };
            let (next, m_next, v_next) = adamw_step(p.as_tensor(), g, m, v, &scalars)?;
            *m = m_next;
            *v = v_next;
            p.set(&next)?;
        }
        Ok(())
    }

    /// Moments and step count as named tensors for `optimizer.safetensors`.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        let mut names: Vec<&String> = self.m.keys().collect();
        names.sort();
        for n in names {
            out.push((format!("m.{n}"), self.m[n].clone()));
            out.push((format!("v.{n}"), self.v[n].clone()));
        }
        let device = self.m.values().next().map(|t| t.device().clone());
        if let Some(d) = device {
            out.push(("t".into(), Tensor::new(&[self.t as f32], &d)?));
        }
        Ok(out)
    }

    /// Restores what `state_tensors` saved; every parameter must have its moments, of its shape.
    pub fn load_state(&mut self, params: &Params, saved: &HashMap<String, Tensor>) -> Result<()> {
        for (name, p) in params {
            for (kind, map) in [("m", &mut self.m), ("v", &mut self.v)] {
                let key = format!("{kind}.{name}");
                let t = saved
                    .get(&key)
                    .ok_or_else(|| Error::Model(format!("optimizer state: {key} is missing")))?;
                if t.dims() != p.dims() {
                    return Err(Error::Model(format!(
                        "optimizer state: {key} has shape {:?}, the parameter {:?}",
                        t.dims(),
                        p.dims()
                    )));
                }
                map.insert(name.clone(), t.to_device(p.device())?);
            }
        }
        let t = saved
            .get("t")
            .ok_or_else(|| Error::Model("optimizer state: t is missing".into()))?;
        self.t = t.to_vec1::<f32>()?.first().copied().unwrap_or(0.0) as u64;
        Ok(())
    }
}

fn missing(name: &str) -> Error {
    Error::Model(format!("optimizer: no state for {name}"))
}

/// Linear warmup to `lr`, then cosine decay to `lr * min_ratio` at `total` steps (constant after,
/// or after warmup when `total` is 0).
pub fn learning_rate(step: u64, lr: f64, warmup: u64, total: u64, min_ratio: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    if total == 0 || total <= warmup {
        return lr;
    }
    let progress = ((step - warmup) as f64 / (total - warmup) as f64).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    lr * (min_ratio + (1.0 - min_ratio) * cosine)
}

/// The gradients' global L2 norm, and the factor that scales them to at most `max_norm`
/// (`clip_grad_norm_`'s `max_norm / (norm + 1e-6)`, or 1 when under it or `max_norm` is 0). The
/// factor is applied inside the AdamW pass rather than as a pass of its own.
pub fn clip_factor(grads: &HashMap<String, Tensor>, max_norm: f64) -> Result<(f64, f64)> {
    let mut sum = 0f64;
    for g in grads.values() {
        sum += sum_of_squares(g)?;
    }
    let norm = sum.sqrt();
    let scale = if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    Ok((norm, scale))
}

/// Adds one backward pass's gradients (by parameter name) into the accumulator.
pub fn accumulate(acc: &mut HashMap<String, Tensor>, grads: HashMap<String, Tensor>) -> Result<()> {
    for (name, g) in grads {
        let next = match acc.remove(&name) {
            Some(prev) => (prev + g)?,
            None => g,
        };
        acc.insert(name, next);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((learning_rate(0, 1.0, 10, 110, 0.1) - 0.1).abs() < 1e-12);
        assert!((learning_rate(9, 1.0, 10, 110, 0.1) - 1.0).abs() < 1e-12);
        assert!((learning_rate(10, 1.0, 10, 110, 0.1) - 1.0).abs() < 1e-12);
        assert!((learning_rate(60, 1.0, 10, 110, 0.1) - 0.55).abs() < 1e-12);
        assert!((learning_rate(110, 1.0, 10, 110, 0.1) - 0.1).abs() < 1e-12);
        assert!((learning_rate(500, 1.0, 10, 110, 0.1) - 0.1).abs() < 1e-12);
    }

    /// One step against PyTorch's AdamW formula computed by hand.
    #[test]
    fn adamw_matches_the_pytorch_update() {
        let dev = candle_core::Device::Cpu;
        let mut params = Params::new();
        params.insert(
            "w".into(),
            Var::from_tensor(&Tensor::new(&[[1.0f32, -2.0]], &dev).unwrap()).unwrap(),
        );
        let cfg = taominer_core::config::TrainerConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = AdamW::new(&params, &cfg).unwrap();
        let grads = HashMap::from([(
            "w".to_string(),
            Tensor::new(&[[0.5f32, -0.25]], &dev).unwrap(),
        )]);
        opt.step(&params, &grads, 0.01, 1.0).unwrap();
        let got = params["w"].as_tensor().to_vec2::<f32>().unwrap();
        // Step 1: m_hat = g, v_hat = g², update = g/|g| = ±1.
        let expect = [
            1.0 * (1.0 - 0.01 * 0.1) - 0.01,
            -2.0 * (1.0 - 0.01 * 0.1) + 0.01,
        ];
        assert!((got[0][0] - expect[0] as f32).abs() < 1e-6, "{got:?}");
        assert!((got[0][1] - expect[1] as f32).abs() < 1e-6, "{got:?}");
    }
}
