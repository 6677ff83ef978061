//! A fused causal softmax with a backward pass, for the CPU attention.
//!
//! candle's fast `softmax_last_dim` has no backward, and composing the softmax from basic ops
//! (add the -inf mask, max, subtract, exp, sum, divide) makes about a dozen passes over the
//! `[b, heads, t, t]` scores in the forward and backward together. This op reads the scores once,
//! skips the masked upper triangle (half the exponentials) and writes the probabilities; its
//! backward is the softmax Jacobian product `p * (g - sum(g * p))` in three tensor ops.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, D};

struct CausalSoftmax;

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("causal-softmax: f32 scores only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("causal-softmax: contiguous scores only");
        };
        let dims = layout.shape().dims();
        let t = dims[dims.len() - 1];
        if dims.len() < 2 || dims[dims.len() - 2] != t {
            candle_core::bail!("causal-softmax: square [.., t, t] scores only, got {dims:?}");
        }
        let src = &data[start..end];
        let mut out = vec![0f32; src.len()];
        for (r, (row, dst)) in src.chunks(t).zip(out.chunks_mut(t)).enumerate() {
            // Row i of each [t, t] block attends to positions 0..=i.
            let n = r % t + 1;
            let max = row[..n].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (d, &x) in dst[..n].iter_mut().zip(&row[..n]) {
                *d = (x - max).exp();
                sum += *d;
            }
            let inv = 1.0 / sum;
            for d in &mut dst[..n] {
                *d *= inv;
            }
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dot = (grad_res * res)?.sum_keepdim(D::Minus1)?;
        Ok(Some((res * grad_res.broadcast_sub(&dot)?)?))
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
    use candle_core::{Device, Var};

    /// Same values and gradients as the composed mask + softmax it replaces.
    #[test]
    fn matches_masked_softmax_forward_and_backward() {
        let dev = Device::Cpu;
        let t = 5;
        let data: Vec<f32> = (0..2 * t * t)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(data, (2, t, t), &dev).unwrap()).unwrap();
        let w = Tensor::from_vec(
            (0..2 * t * t)
                .map(|i| (i % 7) as f32 - 3.0)
                .collect::<Vec<f32>>(),
            (2, t, t),
            &dev,
        )
        .unwrap();
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &dev).unwrap();
        let reference =
            candle_nn::ops::softmax(&x.broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
        let ours = causal_softmax(x.as_tensor()).unwrap();
        let diff = (&reference - &ours)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        let g_ref = (reference * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_ours = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (
            g_ref.get(x.as_tensor()).unwrap(),
            g_ours.get(x.as_tensor()).unwrap(),
        );
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
    }
}
