//! The AdamW update and the gradients' sum of squares, one pass each over a parameter.
//!
//! Composed from candle ops, PyTorch's AdamW update is about a dozen elementwise passes per
//! parameter, each allocating a tensor the size of the parameter; the gradient-norm clip is two
//! more. On the CPU these are one parallel pass each here, in PyTorch's order of operations
//! (`torch.optim.AdamW`'s single-tensor path), so the result matches it to f32 rounding:
//!
//! ```text
//! p ← p · (1 − lr·wd);  m ← m + (g − m)·(1 − β1);  v ← v·β2 + (1 − β2)·g²
//! p ← p − (lr / bc1) · m / (√v / √bc2 + ε)
//! ```
//!
//! with `g` the gradient times the clip factor (as `clip_grad_norm_` scales the gradient in
//! place before the step). On CUDA (f32 parameters) the same pass runs as a kernel
//! (`ops::cuda::adamw`); other devices and dtypes take the composed update.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

use super::cpu_f32;
use super::simd::{self, dispatch};

const CHUNK: usize = 1 << 14;

/// The scalars of one AdamW update of one parameter.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay for this parameter (0 for norms' gains).
    pub weight_decay: f64,
    /// `1 − β1^t` and `1 − β2^t`.
    pub bias_correction1: f64,
    pub bias_correction2: f64,
    /// What the gradient is multiplied by first (the clip factor, 1 when not clipped).
    pub grad_scale: f64,
}

dispatch! {
    fn adamw_chunk(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: &[f32; 7]) {
        let [decay, one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps] = *k;
        for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            *p *= decay;
            *m += (g - *m) * one_minus_b1;
            *v = *v * b2 + one_minus_b2 * g * g;
            *p -= step_size * (*m / (v.sqrt() / bc2_sqrt + eps));
        }
    }
}

/// One AdamW update: returns the new parameter and moments `(p, m, v)`.
pub fn adamw_step(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: &AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    if !cpu_f32(&[p, g, m, v]) {
        #[cfg(feature = "cuda")]
        if super::cuda::takes(&[p, g, m, v]) && p.dtype() == DType::F32 {
            return super::cuda::adamw::adamw_step(p, g, m, v, s);
        }
        return reference_step(p, g, m, v, s);
    }
    // The new parameter and moments start as copies of the old ones and are updated in place.
    let mut pv = p.flatten_all()?.to_vec1::<f32>()?;
    let mut mv = m.flatten_all()?.to_vec1::<f32>()?;
    let mut vv = v.flatten_all()?.to_vec1::<f32>()?;
    let mut gv = g.flatten_all()?.to_vec1::<f32>()?;
    if s.grad_scale != 1.0 {
        // Rounded as `clip_grad_norm_` rounds: the scaled gradient is an f32 tensor.
        let scale = s.grad_scale as f32;
        gv.par_iter_mut().for_each(|x| *x *= scale);
    }
    let k = [
        (1.0 - s.lr * s.weight_decay) as f32,
        (1.0 - s.beta1) as f32,
        s.beta2 as f32,
        (1.0 - s.beta2) as f32,
        (s.lr / s.bias_correction1) as f32,
        s.bias_correction2.sqrt() as f32,
        s.eps as f32,
    ];
    pv.par_chunks_mut(CHUNK)
        .zip(mv.par_chunks_mut(CHUNK))
        .zip(vv.par_chunks_mut(CHUNK))
        .zip(gv.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| adamw_chunk(p, m, v, g, &k));
    let dev = p.device();
    Ok((
        Tensor::from_vec(pv, p.shape(), dev)?,
        Tensor::from_vec(mv, m.shape(), dev)?,
        Tensor::from_vec(vv, v.shape(), dev)?,
    ))
}

/// The same update composed from candle ops (other devices and dtypes; the kernel check's
/// reference).
pub fn reference_step(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: &AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = (g * s.grad_scale)?;
    let m = (m + ((&g - m)? * (1.0 - s.beta1))?)?;
    let v = ((v * s.beta2)? + (g.sqr()? * (1.0 - s.beta2))?)?;
    let denom = ((v.sqrt()? / s.bias_correction2.sqrt())? + s.eps)?;
    let p = (p * (1.0 - s.lr * s.weight_decay))?;
    let p = (p - ((&m / denom)? * (s.lr / s.bias_correction1))?)?;
    Ok((p, m, v))
}

dispatch! {
    fn chunk_sum_of_squares(g: &[f32]) -> f64 {
        simd::dot(g, g) as f64
    }
}

/// Σ g² over a tensor, accumulated per chunk in f32 and across chunks in f64.
pub fn sum_of_squares(g: &Tensor) -> Result<f64> {
    if !cpu_f32(&[g]) {
        #[cfg(feature = "cuda")]
        if super::cuda::takes(&[g]) {
            return super::cuda::adamw::sum_of_squares(g);
        }
        return g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>();
    }
    let data = g.flatten_all()?.to_vec1::<f32>()?;
    Ok(data.par_chunks(CHUNK).map(chunk_sum_of_squares).sum())
}
