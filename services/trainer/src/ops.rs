//! A fused causal softmax with a fused backward pass, for the CPU attention.
//!
//! The attention scores `[b, heads, t, t]` are the largest tensors of a step (at t = 256 and 8
//! heads, eight times the hidden activations), and every pass over them costs. candle's fast
//! `softmax_last_dim` has no backward, and composing the softmax from basic ops (add the -inf
//! mask, max, subtract, exp, sum, divide, then as many again backwards, each allocating) makes
//! about a dozen passes. Here the forward reads the scores once, skips the masked upper triangle
//! (half the exponentials) and writes the probabilities; the backward computes
//! `p * (g - sum(g * p))` row by row in one pass. Both run rows in parallel.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Rows per parallel task: enough work to outweigh scheduling.
const ROWS_PER_TASK: usize = 64;

struct CausalSoftmax;

/// The f32 contiguous data of a `[.., t, t]` tensor, and `t`.
fn square_rows<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<(&'a [f32], usize)> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: contiguous tensors only");
    };
    let dims = layout.shape().dims();
    let t = *dims.last().unwrap_or(&0);
    if dims.len() < 2 || dims[dims.len() - 2] != t || t == 0 {
        candle_core::bail!("{op}: square [.., t, t] tensors only, got {dims:?}");
    }
    Ok((&data[start..end], t))
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (src, t) = square_rows(storage, layout, self.name())?;
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(t * ROWS_PER_TASK)
            .zip(src.par_chunks(t * ROWS_PER_TASK))
            .enumerate()
            .for_each(|(task, (dst, rows))| {
                for (i, (d, row)) in dst.chunks_mut(t).zip(rows.chunks(t)).enumerate() {
                    // Row r of each [t, t] block attends to positions 0..=r.
                    let n = (task * ROWS_PER_TASK + i) % t + 1;
                    let max = row[..n].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for (o, &x) in d[..n].iter_mut().zip(&row[..n]) {
                        *o = (x - max).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    for o in &mut d[..n] {
                        *o *= inv;
                    }
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        if res.device().is_cpu() {
            return Ok(Some(
                res.apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxBackward)?,
            ));
        }
        let dot = (grad_res * res)?.sum_keepdim(candle_core::D::Minus1)?;
        Ok(Some((res * grad_res.broadcast_sub(&dot)?)?))
    }
}

/// `p * (g - sum(g * p))` per row, from the probabilities `p` and their gradient `g`.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "causal-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        p_storage: &CpuStorage,
        p_layout: &Layout,
        g_storage: &CpuStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (p, t) = square_rows(p_storage, p_layout, self.name())?;
        let (g, _) = square_rows(g_storage, g_layout, self.name())?;
        if p.len() != g.len() {
            candle_core::bail!("{}: shapes differ", self.name());
        }
        let mut out = vec![0f32; p.len()];
        out.par_chunks_mut(t * ROWS_PER_TASK)
            .zip(p.par_chunks(t * ROWS_PER_TASK))
            .zip(g.par_chunks(t * ROWS_PER_TASK))
            .enumerate()
            .for_each(|(task, ((dst, ps), gs))| {
                for (i, ((d, pr), gr)) in dst
                    .chunks_mut(t)
                    .zip(ps.chunks(t))
                    .zip(gs.chunks(t))
                    .enumerate()
                {
                    // Masked positions have p = 0 and so gradient 0.
                    let n = (task * ROWS_PER_TASK + i) % t + 1;
                    let dot: f32 = pr[..n].iter().zip(&gr[..n]).map(|(a, b)| a * b).sum();
                    for ((o, &pv), &gv) in d[..n].iter_mut().zip(&pr[..n]).zip(&gr[..n]) {
                        *o = pv * (gv - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(out), p_layout.shape().clone()))
    }
}

/// Softmax over the last dimension of `[.., t, t]` f32 scores with positions after the row's
/// own masked out (probability 0).
pub fn causal_softmax(scores: &Tensor) -> candle_core::Result<Tensor> {
    scores.contiguous()?.apply_op1(CausalSoftmax)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// Same values and gradients as the composed mask + softmax it replaces, over more rows
    /// than one parallel task holds.
    #[test]
    fn matches_masked_softmax_forward_and_backward() {
        let dev = Device::Cpu;
        let (b, t) = (3, 50);
        let n = b * t * t;
        let data: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
        let x = Var::from_tensor(&Tensor::from_vec(data, (b, t, t), &dev).unwrap()).unwrap();
        let w: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
        let w = Tensor::from_vec(w, (b, t, t), &dev).unwrap();
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &dev).unwrap();
        let masked = x.broadcast_add(&mask).unwrap();
        let reference = candle_nn::ops::softmax(&masked, D::Minus1).unwrap();
        let ours = causal_softmax(x.as_tensor()).unwrap();
        let max_diff = |a: &Tensor, b: &Tensor| -> f32 {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            d.to_scalar::<f32>().unwrap()
        };
        assert!(max_diff(&reference, &ours) < 1e-6);
        let loss_ref = (reference * &w).unwrap().sum_all().unwrap();
        let loss_ours = (ours * &w).unwrap().sum_all().unwrap();
        let g_ref = loss_ref.backward().unwrap();
        let g_ours = loss_ours.backward().unwrap();
        let a = g_ref.get(x.as_tensor()).unwrap();
        let b = g_ours.get(x.as_tensor()).unwrap();
        assert!(max_diff(a, b) < 1e-5);
    }
}
