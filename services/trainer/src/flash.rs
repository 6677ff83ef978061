//! Flash attention for the forward-only passes (evaluation, scoring) on CUDA. candle-flash-attn
//! implements no backward pass, so training never takes this path. Needs sm_80 or newer.

use candle_core::Tensor;

use crate::error::Result;

/// `q` `[b, heads, t, hd]`, `k`/`v` `[b, kv_heads, t, hd]` (bf16) → `[b, heads, t, hd]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    // flash-attn wants `[b, t, heads, hd]` and handles grouped-query heads itself.
    let q = q.transpose(1, 2)?.contiguous()?;
    let k = k.transpose(1, 2)?.contiguous()?;
    let v = v.transpose(1, 2)?.contiguous()?;
    let out = candle_flash_attn::flash_attn(&q, &k, &v, scale as f32, true)?;
    Ok(out.transpose(1, 2)?.contiguous()?)
}
