//! RMSNorm, rotary embedding and SwiGLU: one pass forward and one pass backward each.
//!
//! Composed, RMSNorm is six candle ops (square, mean, add, sqrt, divide, multiply), each a pass
//! and a tensor kept for the backward pass; rotary embedding is two narrows, a negation, a
//! concatenation, two multiplies and an add; SiLU-times-up is three. Here each is one
//! row-parallel pass whose backward recomputes what it needs from the op's inputs (the RMS of a
//! row, the sigmoid of the gate) rather than storing it: a pass over data already in cache costs
//! less than keeping another activation alive. f32 on the CPU; `ops::reference` elsewhere.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::simd::{self, dispatch};
use super::{f32_slice, with_f32};

/// Elements per parallel task for the purely elementwise ops.
const CHUNK: usize = 1 << 14;
/// Rows per parallel task for the row ops.
const ROWS: usize = 32;

// ---------------------------------------------------------------------------------------------
// RMSNorm

dispatch! {
    fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let n = w.len();
        for (xr, yr) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let r = 1.0 / (simd::dot(xr, xr) / n as f32 + eps).sqrt();
            for ((y, &xv), &wv) in yr.iter_mut().zip(xr).zip(w) {
                *y = xv * r * wv;
            }
        }
    }
}

dispatch! {
    /// dx for the rows of `x`, and Σ over those rows of `g · x · r` into `dw`.
    fn rms_norm_backward_rows(x: &[f32], w: &[f32], g: &[f32], eps: f32, dx: &mut [f32], dw: &mut [f32]) {
        let n = w.len();
        for ((xr, gr), dxr) in x.chunks_exact(n).zip(g.chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
            let r = 1.0 / (simd::dot(xr, xr) / n as f32 + eps).sqrt();
            // d/dx_i of x_i·r·w_i summed against g: r·g_i·w_i − x_i·r³·Σ_j g_j·w_j·x_j / n.
            let mut acc = [0f32; 8];
            let mut i = 0;
            while i + 8 <= n {
                for l in 0..8 {
                    acc[l] += gr[i + l] * w[i + l] * xr[i + l];
                }
                i += 8;
            }
            let mut gwx: f32 = acc.iter().sum();
            for j in i..n {
                gwx += gr[j] * w[j] * xr[j];
            }
            let c = r * r * r * gwx / n as f32;
            for (((d, &xv), &gv), &wv) in dxr.iter_mut().zip(xr).zip(gr).zip(w) {
                *d = r * gv * wv - xv * c;
            }
            for ((dwv, &xv), &gv) in dw.iter_mut().zip(xr).zip(gr) {
                *dwv += gv * xv * r;
            }
        }
    }
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (
            f32_slice(xs, xl, self.name())?,
            f32_slice(ws, wl, self.name())?,
        );
        let n = w.len();
        if n == 0 || xl.shape().dims().last() != Some(&n) {
            candle_core::bail!(
                "rms-norm: gain {:?} does not fit {:?}",
                wl.shape(),
                xl.shape()
            );
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n * ROWS)
            .zip(x.par_chunks(n * ROWS))
            .for_each(|(o, xr)| rms_norm_rows(xr, w, self.eps, o));
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let n = w.elem_count();
        let (dx, dw) = with_f32(&[x, w, &grad], self.name(), |d| {
            let (x, w, g) = (d[0], d[1], d[2]);
            let mut dx = vec![0f32; x.len()];
            let dw = dx
                .par_chunks_mut(n * ROWS)
                .zip(x.par_chunks(n * ROWS))
                .zip(g.par_chunks(n * ROWS))
                .map(|((dxc, xc), gc)| {
                    let mut dw = vec![0f32; n];
                    rms_norm_backward_rows(xc, w, gc, self.eps, dxc, &mut dw);
                    dw
                })
                .reduce(
                    || vec![0f32; n],
                    |mut a, b| {
                        for (a, b) in a.iter_mut().zip(&b) {
                            *a += b;
                        }
                        a
                    },
                );
            Ok((dx, dw))
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
        ))
    }
}

/// RMSNorm over the last dimension: `x · (mean(x²) + eps)^-½ · w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNorm { eps: eps as f32 })
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding

dispatch! {
    /// Rotates the rows of `x` (each `d` long, half `d/2`) by the angles of `cos`/`sin` rows;
    /// `inverse` rotates back (the backward pass). Rows are in `[.., t, heads, d]` order:
    /// row `i` is at position `(i / heads) % t`, counted from `first_row`.
    fn rotate_rows(x: &[f32], cos: &[f32], sin: &[f32], d: usize, heads: usize, t: usize, first_row: usize, inverse: bool, out: &mut [f32]) {
        let half = d / 2;
        for (i, (xr, yr)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
            let pos = ((first_row + i) / heads) % t;
            let (c, s) = (&cos[pos * d..(pos + 1) * d], &sin[pos * d..(pos + 1) * d]);
            let (x1, x2) = xr.split_at(half);
            let (y1, y2) = yr.split_at_mut(half);
            if inverse {
                for j in 0..half {
                    y1[j] = x1[j] * c[j] + x2[j] * s[half + j];
                    y2[j] = x2[j] * c[half + j] - x1[j] * s[j];
                }
            } else {
                for j in 0..half {
                    y1[j] = x1[j] * c[j] - x2[j] * s[j];
                    y2[j] = x2[j] * c[half + j] + x1[j] * s[half + j];
                }
            }
        }
    }
}

struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    t: usize,
    d: usize,
}

impl Rope {
    fn apply(&self, x: &[f32], shape: &Shape, inverse: bool) -> candle_core::Result<Vec<f32>> {
        let (_, t, heads, d) = shape.dims4()?;
        if (t, d) != (self.t, self.d) || d % 2 != 0 {
            candle_core::bail!(
                "rope: input {shape:?} does not fit tables [{}, {}]",
                self.t,
                self.d
            );
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROWS)
            .zip(x.par_chunks(d * ROWS))
            .enumerate()
            .for_each(|(task, (o, xc))| {
                rotate_rows(
                    xc,
                    &self.cos,
                    &self.sin,
                    d,
                    heads,
                    t,
                    task * ROWS,
                    inverse,
                    o,
                )
            });
        Ok(out)
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        Ok((
            CpuStorage::F32(self.apply(x, l.shape(), false)?),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let dx = with_f32(&[&grad], self.name(), |d| {
            self.apply(d[0], grad.shape(), true)
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Rotary embedding (rotate-half layout) of `[b, t, heads, d]` with `[t, d]` tables.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (t, d) = cos.dims2()?;
    let op = Rope {
        cos: cos.flatten_all()?.to_vec1()?,
        sin: sin.flatten_all()?.to_vec1()?,
        t,
        d,
    };
    x.contiguous()?.apply_op1(op)
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

dispatch! {
    fn swiglu_chunk(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &a), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = a * simd::sigmoid(a) * u;
        }
    }
}

dispatch! {
    fn swiglu_backward_chunk(gate: &[f32], up: &[f32], g: &[f32], d_gate: &mut [f32], d_up: &mut [f32]) {
        for ((((dg, du), &a), &u), &gv) in d_gate.iter_mut().zip(d_up.iter_mut()).zip(gate).zip(up).zip(g) {
            let s = simd::sigmoid(a);
            *du = gv * a * s;
            *dg = gv * u * s * (1.0 + a * (1.0 - s));
        }
    }
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (gate, up) = (
            f32_slice(gs, gl, self.name())?,
            f32_slice(us, ul, self.name())?,
        );
        if gl.shape() != ul.shape() {
            candle_core::bail!(
                "swiglu: shapes {:?} and {:?} differ",
                gl.shape(),
                ul.shape()
            );
        }
        let mut out = vec![0f32; gate.len()];
        out.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
            .for_each(|(o, (a, u))| swiglu_chunk(a, u, o));
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (dg, du) = with_f32(&[gate, up, &grad], self.name(), |d| {
            let mut dg = vec![0f32; d[0].len()];
            let mut du = vec![0f32; d[0].len()];
            dg.par_chunks_mut(CHUNK)
                .zip(du.par_chunks_mut(CHUNK))
                .zip(d[0].par_chunks(CHUNK).zip(d[1].par_chunks(CHUNK)))
                .zip(d[2].par_chunks(CHUNK))
                .for_each(|(((dg, du), (a, u)), g)| swiglu_backward_chunk(a, u, g, dg, du));
            Ok((dg, du))
        })?;
        Ok((
            Some(Tensor::from_vec(dg, gate.shape(), gate.device())?),
            Some(Tensor::from_vec(du, up.shape(), up.device())?),
        ))
    }
}

/// `silu(gate) · up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}
