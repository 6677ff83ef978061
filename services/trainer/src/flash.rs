//! Flash attention for the forward-only passes (evaluation, scoring) on CUDA. candle-flash-attn
//! implements no backward pass, so training never takes this path. Needs sm_80 or newer.

use candle_core::Tensor;

use crate::error::Result;

/// `q` `[b, t, heads, hd]`, `k`/`v` `[b, t, kv_heads, hd]` (bf16) → `[b, t, heads, hd]`: the
/// layout flash-attn takes; it handles grouped-query heads itself.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    Ok(candle_flash_attn::flash_attn(
        &q,
        &k,
        &v,
        scale as f32,
        true,
    )?)
}
