//! Causal grouped-query attention that never materialises its scores: the FlashAttention-2
//! algorithm on the CPU.
//!
//! Composed attention builds `[b, heads, t, t]` scores and probabilities and keeps both for the
//! backward pass: memory grows with t² (1.6 GB per layer per sequence at t = 4096, 24 heads).
//! Here the forward pass walks key/value tiles of `BLOCK_K` columns for each tile of `BLOCK_Q`
//! query rows, keeps a running row maximum and sum (online softmax) and rescales its output
//! accumulator as they change; it saves only each row's log-sum-exp. The backward pass
//! recomputes each tile's probabilities from that statistic, tile by tile. Tiles above the
//! diagonal are never visited; on the diagonal tile only the unmasked entries are exponentiated.
//!
//! Tensors come and go in the projections' own layout, `[b, t, heads, head_dim]` (no transposes
//! around the op). Query head `h` reads key/value head `h / (heads / kv_heads)`, whose rows the
//! kernel reads in place with a stride (grouped-query attention without repeating K/V). The
//! tile products run on `gemm`'s micro-kernels, single-threaded per task.
//!
//! Grouped-query heads: q, the output and their gradients are regrouped (one pass each) to
//! `[b, kv_heads, t, rep, d]`, so a tile holds, for its positions, every query head that reads
//! one kv head: a `64·rep`-row matrix multiplied by the kv head's tile at once (larger products
//! run closer to gemm's peak; measured 10–15 % faster than a tile per query head at 8/2 heads).
//!
//! Parallel work: the forward pass is one task per (batch, kv head, query tile). The backward
//! pass is one task per (batch, kv head): the task owns that head's dK and dV and the dQ of the
//! query heads that read it, so no two tasks write the same memory and no atomics or
//! reductions are needed.
//!
//! On CUDA (`cuda_fwd`, kernels/attention.cu through `ops/cuda/attention.rs`) the same
//! algorithm runs one block per (batch, query head, query tile) forward; backward, dQ is its own
//! kernel over query tiles and dK/dV one over key tiles (each owning what it writes: no atomics,
//! deterministic). The saved lse stays on the device, in query-row order `[b, t, heads]`.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::simd::{self, dispatch, SharedMut};
use super::{f32_slice, with_f32};

/// Query rows per tile.
pub const BLOCK_Q: usize = 64;
/// Key/value rows per tile.
pub const BLOCK_K: usize = 64;

/// Sizes and row offsets of `[b, t, heads, d]` tensors (the CUDA launches read the sizes too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub b: usize,
    pub t: usize,
    pub nh: usize,
    pub nkv: usize,
    pub d: usize,
}

impl Dims {
    fn rep(&self) -> usize {
        self.nh / self.nkv
    }
    /// Index of query/output row (batch `b`, position `r`, head `h`), counted in rows: also the
    /// index of its log-sum-exp and of its `rowsum(dO ∘ O)`.
    fn q_row(&self, b: usize, r: usize, h: usize) -> usize {
        (b * self.t + r) * self.nh + h
    }
    fn kv_row(&self, b: usize, r: usize, g: usize) -> usize {
        (b * self.t + r) * self.nkv + g
    }
    fn q_tiles(&self) -> usize {
        self.t.div_ceil(BLOCK_Q)
    }
    /// Index of the first row of (batch `b`, kv head `g`, position `r`) in the grouped layout
    /// `[b, kv_heads, t, rep, d]`, where a tile's rows of all the query heads that read one kv
    /// head are one matrix with a uniform row stride.
    fn g_row(&self, b: usize, g: usize, r: usize) -> usize {
        ((b * self.nkv + g) * self.t + r) * self.rep()
    }
}

/// `[b, t, heads, d]` → the grouped layout `[b, kv_heads, t, rep, d]` (or back with
/// `back = true`): runs of `rep · d` contiguous values move, one parallel task per
/// (batch, kv head).
fn regroup(dims: Dims, src: &[f32], back: bool) -> Vec<f32> {
    let Dims { t, nkv, d, .. } = dims;
    let run = dims.rep() * d;
    let mut out = vec![0f32; src.len()];
    let ptr = SharedMut(out.as_mut_ptr());
    (0..dims.b * nkv).into_par_iter().for_each(|task| {
        let (bi, g) = (task / nkv, task % nkv);
        for r in 0..t {
            let grouped = dims.g_row(bi, g, r) * d;
            let natural = dims.q_row(bi, r, g * dims.rep()) * d;
            let (from, to) = if back {
                (grouped, natural)
            } else {
                (natural, grouped)
            };
            // SAFETY: the runs of (bi, g) in either layout belong to this task alone.
            unsafe { ptr.slice(to, run) }.copy_from_slice(&src[from..from + run]);
        }
    });
    out
}

/// `dst[m×n] (row stride dst_rs) = (accumulate ? dst : 0) + beta · A[m×k] · B[k×n]`, where A and
/// B are given by pointer, row stride and column stride (a transpose is a swap of strides).
///
/// # Safety
/// Every pointer must address the whole matrix its strides describe.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    (a, a_rs, a_cs): (*const f32, usize, usize),
    (b, b_rs, b_cs): (*const f32, usize, usize),
    beta: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        a,
        a_cs as isize,
        a_rs as isize,
        b,
        b_cs as isize,
        b_rs as isize,
        1.0,
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Columns of a tile's row `r` (absolute query position `i`) that are not masked: keys at
/// positions `j0..=i`.
fn unmasked(i: usize, j0: usize, cols: usize) -> usize {
    (i + 1).saturating_sub(j0).min(cols)
}

dispatch! {
    /// Online-softmax update for one tile: turns the scores `s` (rows × cols, row stride
    /// `BLOCK_K`) into `exp(s - m_new)` (masked entries 0), updates the running max `m` and sum
    /// `l`, and rescales the output accumulator rows `acc` (row length `d`) by `exp(m - m_new)`.
    /// Row `r` is at position `i0 + r / rep` (a tile stacks `rep` query heads per position).
    fn online_softmax_tile(
        s: &mut [f32],
        m: &mut [f32],
        l: &mut [f32],
        acc: &mut [f32],
        d: usize,
        i0: usize,
        rep: usize,
        j0: usize,
        cols: usize,
    ) {
        for (r, row) in s.chunks_mut(BLOCK_K).enumerate().take(m.len()) {
            let valid = unmasked(i0 + r / rep, j0, cols);
            let row = &mut row[..cols];
            if valid == 0 {
                row.fill(0.0);
                continue;
            }
            let m_new = m[r].max(simd::max(&row[..valid]));
            for x in &mut row[..valid] {
                *x = simd::exp(*x - m_new);
            }
            row[valid..].fill(0.0);
            let sum = simd::sum(&row[..valid]);
            if m_new > m[r] {
                // exp(-inf) is clamped to ~1e-38 by `simd::exp`, so the first tile scales a
                // zero accumulator by a tiny number: still zero.
                let corr = simd::exp(m[r] - m_new);
                l[r] *= corr;
                for a in &mut acc[r * d..(r + 1) * d] {
                    *a *= corr;
                }
                m[r] = m_new;
            }
            l[r] += sum;
        }
    }
}

dispatch! {
    /// Backward-pass tile: from the scores `s` makes the probabilities `p = exp(s - lse)` in
    /// place (masked entries 0) — `lse` indexed by tile row.
    /// Row `r` is at position `i0 + r / rep`.
    fn probabilities_tile(s: &mut [f32], lse: &[f32], i0: usize, rep: usize, j0: usize, cols: usize) {
        for (r, row) in s.chunks_mut(BLOCK_K).enumerate().take(lse.len()) {
            let valid = unmasked(i0 + r / rep, j0, cols);
            let row = &mut row[..cols];
            for x in &mut row[..valid] {
                *x = simd::exp(*x - lse[r]);
            }
            row[valid..].fill(0.0);
        }
    }
}

dispatch! {
    /// `ds = p ∘ (dp − D)` in place of `dp`, `D` indexed by tile row.
    fn score_grad_tile(dp: &mut [f32], p: &[f32], dsum: &[f32], cols: usize) {
        for (r, (g, pr)) in dp.chunks_mut(BLOCK_K).zip(p.chunks(BLOCK_K)).enumerate().take(dsum.len()) {
            let dr = dsum[r];
            for (g, &pv) in g[..cols].iter_mut().zip(&pr[..cols]) {
                *g = pv * (*g - dr);
            }
        }
    }
}

dispatch! {
    /// Normalised output rows `acc / l` and the saved statistic `m + ln l`.
    fn finish_rows(acc: &[f32], m: &[f32], l: &[f32], d: usize, out: &mut [f32], lse: &mut [f32]) {
        for r in 0..m.len() {
            let inv = 1.0 / l[r];
            for (o, &a) in out[r * d..(r + 1) * d].iter_mut().zip(&acc[r * d..(r + 1) * d]) {
                *o = a * inv;
            }
            lse[r] = m[r] + l[r].ln();
        }
    }
}

/// Forward pass on grouped `q` (`[b, kv_heads, t, rep, d]`): the output in the same layout and
/// the log-sum-exp of every row (grouped order). One task per (batch, kv head, query tile),
/// whose tile is `rows · rep` rows: every query head reading that kv head at those positions.
fn forward(dims: Dims, scale: f32, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let Dims { b, t, nkv, d, .. } = dims;
    let rep = dims.rep();
    let mut out = vec![0f32; q.len()];
    let mut lse = vec![0f32; q.len() / d];
    let (out_ptr, lse_ptr) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    let kv_rs = nkv * d;
    let tiles = dims.q_tiles();
    (0..b * nkv * tiles).into_par_iter().for_each(|task| {
        let (bg, qi) = (task / tiles, task % tiles);
        let (bi, g) = (bg / nkv, bg % nkv);
        let i0 = qi * BLOCK_Q;
        let rows = BLOCK_Q.min(t - i0);
        let m_rows = rows * rep;
        let first = dims.g_row(bi, g, i0);
        let mut s = vec![0f32; m_rows * BLOCK_K];
        let mut acc = vec![0f32; m_rows * d];
        let mut m = vec![f32::NEG_INFINITY; m_rows];
        let mut l = vec![0f32; m_rows];
        let q_tile = q[first * d..].as_ptr();
        // Key tiles up to the last row of this query tile; those above the diagonal are skipped.
        for j0 in (0..i0 + rows).step_by(BLOCK_K) {
            let cols = BLOCK_K.min(i0 + rows - j0);
            let k_tile = k[dims.kv_row(bi, j0, g) * d..].as_ptr();
            let v_tile = v[dims.kv_row(bi, j0, g) * d..].as_ptr();
            // SAFETY: grouped q rows first..first+m_rows and k/v rows j0..j0+cols of kv head g
            // are in bounds (positions < t), and `s`/`acc` are this task's own buffers.
            unsafe {
                matmul(
                    (m_rows, cols, d),
                    s.as_mut_ptr(),
                    BLOCK_K,
                    false,
                    (q_tile, d, 1),
                    (k_tile, 1, kv_rs),
                    scale,
                );
            }
            online_softmax_tile(&mut s, &mut m, &mut l, &mut acc, d, i0, rep, j0, cols);
            // SAFETY: as above.
            unsafe {
                matmul(
                    (m_rows, d, cols),
                    acc.as_mut_ptr(),
                    d,
                    true,
                    (s.as_ptr(), BLOCK_K, 1),
                    (v_tile, kv_rs, 1),
                    1.0,
                );
            }
        }
        // SAFETY: grouped rows first..first+m_rows belong to this task alone: tasks are distinct
        // (batch, kv head, query tile) triples.
        let (o_rows, lse_rows) = unsafe {
            (
                out_ptr.slice(first * d, m_rows * d),
                lse_ptr.slice(first, m_rows),
            )
        };
        finish_rows(&acc, &m, &l, d, o_rows, lse_rows);
    });
    (out, lse)
}

/// Backward pass on grouped `q`, `o`, `go` and the grouped log-sum-exp: `(dq, dk, dv)`, dq
/// grouped, dk and dv as k and v. One task per (batch, kv head).
#[allow(clippy::too_many_arguments)]
fn backward(
    dims: Dims,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    go: &[f32],
    lse: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims { b, t, nkv, d, .. } = dims;
    let rep = dims.rep();
    // D = rowsum(dO ∘ O): the softmax backward's per-row term, once per row.
    let dsum: Vec<f32> = o
        .par_chunks(d)
        .zip(go.par_chunks(d))
        .map(|(or, gr)| simd_dot(or, gr))
        .collect();
    let mut dq = vec![0f32; q.len()];
    let mut dk = vec![0f32; k.len()];
    let mut dv = vec![0f32; v.len()];
    let (dq_ptr, dk_ptr, dv_ptr) = (
        SharedMut(dq.as_mut_ptr()),
        SharedMut(dk.as_mut_ptr()),
        SharedMut(dv.as_mut_ptr()),
    );
    let kv_rs = nkv * d;
    let tile_rows = BLOCK_Q * rep;
    (0..b * nkv).into_par_iter().for_each(|task| {
        let (bi, g) = (task / nkv, task % nkv);
        let mut p = vec![0f32; tile_rows * BLOCK_K];
        let mut ds = vec![0f32; tile_rows * BLOCK_K];
        let mut dk_acc = vec![0f32; BLOCK_K * d];
        let mut dv_acc = vec![0f32; BLOCK_K * d];
        for j0 in (0..t).step_by(BLOCK_K) {
            let cols = BLOCK_K.min(t - j0);
            dk_acc.fill(0.0);
            dv_acc.fill(0.0);
            let k_tile = k[dims.kv_row(bi, j0, g) * d..].as_ptr();
            let v_tile = v[dims.kv_row(bi, j0, g) * d..].as_ptr();
            // Query tiles with a row at or after j0; earlier ones are fully masked.
            for qi in j0 / BLOCK_Q..dims.q_tiles() {
                let i0 = qi * BLOCK_Q;
                let m_rows = BLOCK_Q.min(t - i0) * rep;
                let first = dims.g_row(bi, g, i0);
                let q_tile = q[first * d..].as_ptr();
                let go_tile = go[first * d..].as_ptr();
                let p_rows = &mut p[..m_rows * BLOCK_K];
                // SAFETY (every matmul below): tiles of rows < t of this task's kv head and of
                // the query heads reading it, and the task's own scratch buffers; grouped dQ
                // rows of (bi, g) are written by this task only.
                unsafe {
                    matmul(
                        (m_rows, cols, d),
                        p_rows.as_mut_ptr(),
                        BLOCK_K,
                        false,
                        (q_tile, d, 1),
                        (k_tile, 1, kv_rs),
                        scale,
                    );
                }
                probabilities_tile(p_rows, &lse[first..first + m_rows], i0, rep, j0, cols);
                unsafe {
                    // dV_j += Pᵀ dO_i
                    matmul(
                        (cols, d, m_rows),
                        dv_acc.as_mut_ptr(),
                        d,
                        true,
                        (p_rows.as_ptr(), 1, BLOCK_K),
                        (go_tile, d, 1),
                        1.0,
                    );
                    // dP = dO_i V_jᵀ
                    matmul(
                        (m_rows, cols, d),
                        ds.as_mut_ptr(),
                        BLOCK_K,
                        false,
                        (go_tile, d, 1),
                        (v_tile, 1, kv_rs),
                        1.0,
                    );
                }
                score_grad_tile(
                    &mut ds[..m_rows * BLOCK_K],
                    p_rows,
                    &dsum[first..first + m_rows],
                    cols,
                );
                unsafe {
                    // dQ_i += scale · dS K_j
                    matmul(
                        (m_rows, d, cols),
                        dq_ptr.at(first * d),
                        d,
                        true,
                        (ds.as_ptr(), BLOCK_K, 1),
                        (k_tile, kv_rs, 1),
                        scale,
                    );
                    // dK_j += scale · dSᵀ Q_i
                    matmul(
                        (cols, d, m_rows),
                        dk_acc.as_mut_ptr(),
                        d,
                        true,
                        (ds.as_ptr(), 1, BLOCK_K),
                        (q_tile, d, 1),
                        scale,
                    );
                }
            }
            for c in 0..cols {
                let row = dims.kv_row(bi, j0 + c, g);
                // SAFETY: kv head g of batch bi belongs to this task alone.
                unsafe {
                    dk_ptr
                        .slice(row * d, d)
                        .copy_from_slice(&dk_acc[c * d..(c + 1) * d]);
                    dv_ptr
                        .slice(row * d, d)
                        .copy_from_slice(&dv_acc[c * d..(c + 1) * d]);
                }
            }
        }
    });
    (dq, dk, dv)
}

dispatch! {
    fn simd_dot(a: &[f32], b: &[f32]) -> f32 {
        simd::dot(a, b)
    }
}

/// The forward pass's per-row log-sum-exp, for the backward pass: on the device that ran it.
#[derive(Clone)]
enum Lse {
    /// Grouped order (`[b, kv_heads, t, rep]`).
    Cpu(Arc<Vec<f32>>),
    /// `[b, t, heads]` (the order of the query rows; kernels/attention.cu).
    #[cfg(feature = "cuda")]
    Cuda(Arc<candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>>),
}

struct FlashAttention {
    scale: f32,
    lse: Mutex<Option<Lse>>,
}

impl FlashAttention {
    fn save(&self, lse: Lse) {
        if let Ok(mut saved) = self.lse.lock() {
            *saved = Some(lse);
        }
    }
}

fn dims_of(q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<Dims> {
    let (b, t, nh, d) = q.dims4()?;
    let (kb, kt, nkv, kd) = k.dims4()?;
    if (kb, kt, kd) != (b, t, d) || k != v {
        candle_core::bail!(
            "flash-attention: q {q:?}, k {k:?}, v {v:?} must be [b, t, heads, d] with k and v alike"
        );
    }
    if nkv == 0 || nh % nkv != 0 || t == 0 || d == 0 {
        candle_core::bail!("flash-attention: {nh} heads over {nkv} kv heads, t {t}, d {d}");
    }
    Ok(Dims { b, t, nh, nkv, d })
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "flash-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = dims_of(ql.shape(), kl.shape(), vl.shape())?;
        let q = f32_slice(qs, ql, "flash-attention q")?;
        let k = f32_slice(ks, kl, "flash-attention k")?;
        let v = f32_slice(vs, vl, "flash-attention v")?;
        let (out, lse) = forward(dims, self.scale, &regroup(dims, q, false), k, v);
        self.save(Lse::Cpu(Arc::new(lse)));
        Ok((
            CpuStorage::F32(regroup(dims, &out, true)),
            ql.shape().clone(),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda;
        use candle_core::backend::BackendStorage;
        let dims = dims_of(ql.shape(), kl.shape(), vl.shape())?;
        let dev = qs.device();
        cuda::by_dtype!(qs.dtype(), self.name(), T => {
            let q = cuda::view::<T>(qs, ql, "flash-attention q")?;
            let k = cuda::view::<T>(ks, kl, "flash-attention k")?;
            let v = cuda::view::<T>(vs, vl, "flash-attention v")?;
            let (out, lse) = cuda::attention::forward(dev, dims, self.scale, &q, &k, &v)?;
            self.save(Lse::Cuda(Arc::new(lse)));
            Ok((cuda::storage(out, dev), ql.shape().clone()))
        })
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let lse = self.lse.lock().ok().and_then(|s| s.clone());
        let dims = dims_of(q.shape(), k.shape(), v.shape())?;
        // In q's dtype, as the other ops' backward passes take it (a no-op when it already is:
        // the CUDA kernels read every buffer as one element type).
        let grad = grad.to_dtype(q.dtype())?.contiguous()?;
        let lse = match lse {
            Some(Lse::Cpu(lse)) => lse,
            #[cfg(feature = "cuda")]
            Some(Lse::Cuda(lse)) => {
                return cuda_bwd(dims, self.scale, [q, k, v, res, &grad], &lse)
                    .map(|(dq, dk, dv)| (Some(dq), Some(dk), Some(dv)));
            }
            None => candle_core::bail!("flash-attention: backward before forward"),
        };
        let (dq, dk, dv) = with_f32(&[q, k, v, res, &grad], self.name(), |data| {
            let grouped = |x: &[f32]| regroup(dims, x, false);
            let (dq, dk, dv) = backward(
                dims,
                self.scale,
                &grouped(data[0]),
                data[1],
                data[2],
                &grouped(data[3]),
                &grouped(data[4]),
                &lse,
            );
            Ok((regroup(dims, &dq, true), dk, dv))
        })?;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// The backward pass on CUDA: `[q, k, v, o, do]` (contiguous, one dtype) and the forward's lse →
/// `(dq, dk, dv)`.
#[cfg(feature = "cuda")]
fn cuda_bwd(
    dims: Dims,
    scale: f32,
    ts: [&Tensor; 5],
    lse: &candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    use super::cuda;
    use candle_core::backend::BackendStorage;
    use candle_core::{op::BackpropOp, Storage};
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut storages = Vec::with_capacity(ts.len());
    for (storage, layout) in &guards {
        let Storage::Cuda(cs) = &**storage else {
            candle_core::bail!("flash-attention: backward of a CUDA forward on another device");
        };
        storages.push((cs, *layout));
    }
    let dev = storages[0].0.device().clone();
    let tensor = |s: candle_core::CudaStorage, like: &Tensor| {
        Tensor::from_storage(Storage::Cuda(s), like.shape(), BackpropOp::none(), false)
    };
    cuda::by_dtype!(ts[0].dtype(), "flash-attention", T => {
        let mut views = Vec::with_capacity(storages.len());
        for (cs, layout) in &storages {
            views.push(cuda::view::<T>(cs, layout, "flash-attention backward")?);
        }
        let (dq, dk, dv) = cuda::attention::backward(
            &dev, dims, scale, &views[0], &views[1], &views[2], &views[3], &views[4], lse,
        )?;
        Ok((
            tensor(cuda::storage(dq, &dev), ts[0]),
            tensor(cuda::storage(dk, &dev), ts[1]),
            tensor(cuda::storage(dv, &dev), ts[2]),
        ))
    })
}

/// Whether the CUDA kernels take q and k of these shapes (a valid shape, head dim ≤ 256).
#[cfg(feature = "cuda")]
pub(crate) fn cuda_supports(q: &Tensor, k: &Tensor) -> bool {
    dims_of(q.shape(), k.shape(), k.shape()).is_ok_and(super::cuda::attention::supports)
}

/// Causal attention over `[b, t, heads, d]` q and `[b, t, kv_heads, d]` k, v (f32 on the CPU;
/// f32 or bf16 on CUDA, head dim ≤ 256) → `[b, t, heads, d]`.
pub fn flash_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let op = FlashAttention {
        scale: scale as f32,
        lse: Mutex::new(None),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}
