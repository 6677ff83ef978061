//! The causal language-model loss in one pass forward and one backward.
//!
//! The logits `[b, t, vocab]` are the largest tensor of a step for a real vocabulary (100 288
//! entries: 1.6 GB at 4096 tokens in f32). transformers' loss shifts them (a copy), takes a
//! log-softmax (another tensor of the same size, kept for the backward pass) and gathers the
//! targets. Here the forward pass reads each row once (max, then sum of exponentials, as
//! log-sum-exp) and keeps one number per row; the backward pass writes
//! `(softmax(row) − onehot(target)) · g / n` straight into the logits' gradient, zero at each
//! sequence's last position (it predicts nothing).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::simd::{self, dispatch};
use super::{f32_slice, with_f32};

dispatch! {
    /// log-sum-exp of a row.
    fn row_lse(row: &[f32]) -> f32 {
        let m = simd::max(row);
        let mut acc = [0f32; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += simd::exp(x - m);
            }
        }
        let mut s: f32 = chunks.remainder().iter().map(|&x| simd::exp(x - m)).sum();
        for a in acc {
            s += a;
        }
        m + s.ln()
    }
}

dispatch! {
    fn row_grad(row: &[f32], lse: f32, target: usize, scale: f32, out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o = simd::exp(x - lse) * scale;
        }
        out[target] -= scale;
    }
}

struct CausalLmLoss {
    /// Token ids `[b, t]`, flattened.
    ids: Vec<u32>,
    /// Per predicting row (`b · t` rows; the last position of each sequence unused).
    lse: Mutex<Option<Arc<Vec<f32>>>>,
}

impl CausalLmLoss {
    fn check(&self, shape: &Shape) -> candle_core::Result<(usize, usize, usize)> {
        let (b, t, v) = shape.dims3()?;
        if self.ids.len() != b * t || t < 2 {
            candle_core::bail!(
                "causal-lm-loss: {} ids for logits {shape:?} (need t ≥ 2)",
                self.ids.len()
            );
        }
        if let Some(bad) = self.ids.iter().find(|&&i| i as usize >= v) {
            candle_core::bail!("causal-lm-loss: token id {bad} is outside the vocabulary of {v}");
        }
        Ok((b, t, v))
    }
}

impl CustomOp1 for CausalLmLoss {
    fn name(&self) -> &'static str {
        "causal-lm-loss"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, t, v) = self.check(l.shape())?;
        let logits = f32_slice(s, l, self.name())?;
        let lse: Vec<f32> = logits
            .par_chunks(v)
            .enumerate()
            .map(|(row, x)| if row % t == t - 1 { 0.0 } else { row_lse(x) })
            .collect();
        // The sum in f64: n can be millions of rows.
        let total: f64 = logits
            .par_chunks(v)
            .enumerate()
            .filter(|(row, _)| row % t != t - 1)
            .map(|(row, x)| (lse[row] - x[self.ids[row + 1] as usize]) as f64)
            .sum();
        let n = b * (t - 1);
        if let Ok(mut saved) = self.lse.lock() {
            *saved = Some(Arc::new(lse));
        }
        Ok((
            CpuStorage::F32(vec![(total / n as f64) as f32]),
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (b, t, v) = self.check(logits.shape())?;
        let Some(lse) = self.lse.lock().ok().and_then(|s| s.clone()) else {
            candle_core::bail!("causal-lm-loss: backward before forward");
        };
        let scale =
            grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()? / (b * (t - 1)) as f32;
        let logits = logits.contiguous()?;
        let mut out = vec![0f32; b * t * v];
        with_f32(&[&logits], self.name(), |data| {
            out.par_chunks_mut(v)
                .zip(data[0].par_chunks(v))
                .enumerate()
                .filter(|(row, _)| row % t != t - 1)
                .for_each(|(row, (o, x))| {
                    row_grad(x, lse[row], self.ids[row + 1] as usize, scale, o)
                });
            Ok(())
        })?;
        Ok(Some(Tensor::from_vec(out, (b, t, v), logits.device())?))
    }
}

/// Mean next-token cross-entropy of `logits` `[b, t, vocab]` (f32, CPU) against `ids` `[b, t]`.
pub fn causal_lm_loss(logits: &Tensor, ids: &Tensor) -> candle_core::Result<Tensor> {
    let op = CausalLmLoss {
        ids: ids.flatten_all()?.to_vec1::<u32>()?,
        lse: Mutex::new(None),
    };
    logits.contiguous()?.apply_op1(op)
}
