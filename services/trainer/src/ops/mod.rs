//! The trainer's fused operations, each a candle `CustomOp` with its own backward pass.
//!
//! Composed from candle's basic ops, one LLaMA layer is dozens of passes over its activations,
//! each allocating a tensor that the backward pass then keeps; the attention scores
//! `[b, heads, t, t]` alone grow with the square of the sequence length. These ops do each job
//! in one pass forward and one backward, and keep only what the backward pass needs:
//!
//! * [`attention`]: causal grouped-query attention in the FlashAttention-2 form (scores never
//!   materialised; the per-row log-sum-exp is all that is saved);
//! * [`rms_norm`], [`rope`], [`swiglu`]: the elementwise parts of a layer;
//! * [`causal_lm_loss`]: the loss over the logits, whose gradient is written in one pass;
//! * [`adamw`]: the optimiser update and the gradient norm, one pass per parameter.
//!
//! The CPU kernels are complete (f32). With the `cuda` feature, CUDA tensors of f32 or bf16 go
//! to the CUDA kernels in [`cuda`] (`kernels/*.cu`, compiled by build.rs), which follow the same
//! formulas and saved statistics. Everything else (other dtypes, mixed dtypes, other devices)
//! falls back to the composed reference in [`reference`], which is also what the tests hold
//! the kernels to.

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod elementwise;
mod simd;
#[cfg(test)]
mod tests;

use candle_core::{DType, Result, Tensor};

/// The f32 data of a contiguous CPU tensor's storage, for the kernels (`op` names the caller in
/// the error).
fn f32_slice<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(d) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: contiguous tensors only");
    };
    Ok(&d[start..end])
}

/// Runs `f` on the f32 data of contiguous CPU tensors (a backward pass reading its inputs).
fn with_f32<R>(ts: &[&Tensor], op: &str, f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (storage, layout) in &guards {
        let candle_core::Storage::Cpu(cpu) = &**storage else {
            candle_core::bail!("{op}: CPU tensors only");
        };
        slices.push(f32_slice(cpu, layout, op)?);
    }
    f(&slices)
}

/// Whether the fused CPU kernels take these tensors.
fn cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// RMSNorm of `x` `[.., n]` with gain `w` `[n]`: `x / sqrt(mean(x²) + eps) * w`, normalised in
/// f32 (the result in `x`'s dtype).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if cpu_f32(&[x, w]) {
        return elementwise::rms_norm(x, w, eps);
    }
    #[cfg(feature = "cuda")]
    if cuda::takes(&[x, w]) {
        return cuda::elementwise::rms_norm(x, w, eps);
    }
    reference::rms_norm(x, w, eps)
}

/// Rotary embedding, rotate-half layout, on `[b, t, heads, hd]` with `cos`/`sin` `[t, hd]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if cpu_f32(&[x, cos, sin]) {
        return elementwise::rope(x, cos, sin);
    }
    #[cfg(feature = "cuda")]
    if cuda::takes(&[x, cos, sin]) {
        return cuda::elementwise::rope(x, cos, sin);
    }
    reference::rope(x, cos, sin)
}

/// `silu(gate) * up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if cpu_f32(&[gate, up]) {
        return elementwise::swiglu(gate, up);
    }
    #[cfg(feature = "cuda")]
    if cuda::takes(&[gate, up]) {
        return cuda::elementwise::swiglu(gate, up);
    }
    reference::swiglu(gate, up)
}

/// Causal attention: `q` `[b, t, heads, hd]`, `k`/`v` `[b, t, kv_heads, hd]` (the projections'
/// own layout; heads a multiple of kv_heads; query head `h` reads kv head
/// `h / (heads / kv_heads)`) → `[b, t, heads, hd]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    if cpu_f32(&[q, k, v]) {
        return attention::flash_attention(q, k, v, scale);
    }
    // Head dims above 256 have no CUDA kernel: the reference takes them.
    #[cfg(feature = "cuda")]
    if cuda::takes(&[q, k, v]) && attention::cuda_supports(q, k) {
        return attention::flash_attention(q, k, v, scale);
    }
    reference::attention(q, k, v, scale)
}

/// The causal language-model loss: mean cross-entropy of `logits` `[b, t, vocab]` (f32; bf16
/// on CUDA too) at positions `0..t-1` against the next token of `ids` `[b, t]` (u32), as
/// transformers' `model(ids, labels=ids).loss`.
pub fn causal_lm_loss(logits: &Tensor, ids: &Tensor) -> Result<Tensor> {
    if cpu_f32(&[logits]) {
        return cross_entropy::causal_lm_loss(logits, ids);
    }
    #[cfg(feature = "cuda")]
    if cuda::takes(&[logits]) && ids.device().same_device(logits.device()) {
        return cuda::loss::causal_lm_loss(logits, ids);
    }
    reference::causal_lm_loss(logits, ids)
}

/// The same operations composed from candle's basic ops, as transformers writes them: the
/// fallback off the CPU and the reference the kernels are tested against.
pub mod reference {
    use candle_core::{DType, Device, Result, Tensor, D};

    /// As transformers: normalised in f32, cast back to the input's dtype, then times the gain.
    pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
        let x32 = x.to_dtype(DType::F32)?;
        let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x32.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed
            .to_dtype(x.dtype())?
            .broadcast_mul(&w.to_dtype(x.dtype())?)
    }

    pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (t, hd) = cos.dims2()?;
        // [t, hd] → [t, 1, hd]: broadcast over the heads of [b, t, heads, hd].
        let (cos, sin) = (&cos.reshape((t, 1, hd))?, &sin.reshape((t, 1, hd))?);
        let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
        let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
    }

    pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        gate.silu()? * up
    }

    /// `[t, t]` additive mask: 0 on and below the diagonal, -inf above.
    pub fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
        let data: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Tensor::from_vec(data, (t, t), device)
    }

    /// Scores in f32, masked softmax, probabilities times values, on `[b, t, heads, hd]`. Query
    /// heads that share a kv head are folded into the sequence axis, so keys and values are not
    /// copied.
    pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        let heads_first = |x: &Tensor| x.transpose(1, 2)?.contiguous();
        let (q, k, v) = (&heads_first(q)?, &heads_first(k)?, &heads_first(v)?);
        let (b, nh, t, hd) = q.dims4()?;
        let nkv = k.dim(1)?;
        let rep = nh / nkv;
        let dtype = q.dtype();
        let qg = (q * scale)?.reshape((b, nkv, rep * t, hd))?;
        let scores = qg
            .matmul(&k.t()?)?
            .reshape((b, nh, t, t))?
            .to_dtype(DType::F32)?;
        let mask = causal_mask(t, q.device())?;
        let probs = candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?;
        let probs = probs.to_dtype(dtype)?.reshape((b, nkv, rep * t, t))?;
        probs
            .matmul(v)?
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .contiguous()
    }

    pub fn causal_lm_loss(logits: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let (b, t, v) = logits.dims3()?;
        let pred = logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), v))?;
        let target = ids.narrow(1, 1, t - 1)?.flatten_all()?;
        candle_nn::loss::cross_entropy(&pred, &target)
    }
}
