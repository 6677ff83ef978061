//! RMSNorm, rotary embedding and SwiGLU on CUDA: the launchers of `kernels/elementwise.cu`.
//!
//! Each op is a candle custom op whose backward pass is another custom op (CUDA only, no
//! gradient of its own) running the backward kernels on the device: the CPU ops' backward
//! reads its inputs as host slices, which a CUDA tensor is not. Ops with two gradients write
//! both into one buffer, split by views (`narrow` of a contiguous tensor copies nothing).

use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, CustomOp3, Layout, Result};
use candle_core::{Shape, Tensor};

use super::{
    by_dtype, columns_config, dtype, elementwise_config, int, kernel_name, launch, output,
    rows_config, storage, view, KernelDType, ELEMENTWISE,
};

/// The CPU side of a CUDA-only op (never reached: the dispatch in `ops` sends only CUDA
/// tensors here).
fn cuda_only(op: &str) -> Result<(CpuStorage, Shape)> {
    candle_core::bail!("{op}: CUDA tensors only")
}

/// Rows of `n` in a shape whose last dimension is `n` (`n` ≥ 1).
fn rows_of(shape: &Shape, n: usize, op: &str) -> Result<usize> {
    if n == 0 || shape.dims().last() != Some(&n) {
        candle_core::bail!("{op}: gain [{n}] does not fit {shape:?}");
    }
    Ok(shape.elem_count() / n)
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

struct RmsNorm {
    eps: f32,
}

impl RmsNorm {
    fn fwd<T: KernelDType>(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<CudaStorage> {
        let n = wl.shape().elem_count();
        let rows = rows_of(xl.shape(), n, self.name())?;
        let dev = &xs.device;
        let (x, w) = (
            view::<T>(xs, xl, self.name())?,
            view::<T>(ws, wl, self.name())?,
        );
        // SAFETY: one block per row writes all n elements of its row.
        let y = unsafe { output::<T>(dev, rows * n)? };
        // rms_norm_fwd(const T* x, const T* w, T* y, int n, float eps)
        launch!(dev, ELEMENTWISE, kernel_name::<T>("rms_norm_fwd"), rows_config(rows, n)?,
            bufs: [&x, &w, &y], vals: [int(n, "rms-norm row")?, self.eps]);
        Ok(storage(y, dev))
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let out = by_dtype!(dtype(xs), self.name(), T => self.fwd::<T>(xs, xl, ws, wl)?);
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.to_dtype(x.dtype())?.contiguous()?;
        let both = x.apply_op3_no_bwd(w, &grad, &RmsNormBackward { eps: self.eps })?;
        let (nx, nw) = (x.elem_count(), w.elem_count());
        Ok((
            Some(both.narrow(0, 0, nx)?.reshape(x.shape())?),
            Some(both.narrow(0, nx, nw)?.reshape(w.shape())?),
        ))
    }
}

/// `(x, w, g)` → `[dx (x's elements) | dw (w's)]`, flat, in x's dtype.
struct RmsNormBackward {
    eps: f32,
}

/// Row chunks of the dw reduction at most: enough blocks to fill the GPU for any hidden size,
/// and a partial-sum buffer of at most 128 · n f32.
const DW_CHUNKS: usize = 128;

impl RmsNormBackward {
    #[allow(clippy::too_many_arguments)]
    fn run<T: KernelDType>(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<CudaStorage> {
        let n = wl.shape().elem_count();
        let rows = rows_of(xl.shape(), n, self.name())?;
        if gl.shape() != xl.shape() {
            candle_core::bail!(
                "{}: gradient {:?} for {:?}",
                self.name(),
                gl.shape(),
                xl.shape()
            );
        }
        let dev = &xs.device;
        let (x, w, g) = (
            view::<T>(xs, xl, self.name())?,
            view::<T>(ws, wl, self.name())?,
            view::<T>(gs, gl, self.name())?,
        );
        let ni = int(n, "rms-norm row")?;
        // SAFETY: rms_norm_bwd writes every dx row and every row's rstd; rms_norm_dw_partial
        // every (chunk, column) of partial; rms_norm_dw_sum every dw column.
        let out = unsafe { output::<T>(dev, rows * n + n)? };
        let rstd: CudaSlice<f32> = unsafe { output::<f32>(dev, rows)? };
        let chunks = rows.clamp(1, DW_CHUNKS);
        let per_chunk = rows.div_ceil(chunks);
        // Every chunk non-empty: ⌈rows / per_chunk⌉ ≤ chunks.
        let chunks = rows.div_ceil(per_chunk);
        let partial: CudaSlice<f32> = unsafe { output::<f32>(dev, chunks * n)? };
        {
            let (dx, dw) = (out.slice(0..rows * n), out.slice(rows * n..));
            // rms_norm_bwd(const T* x, const T* w, const T* g, T* dx, float* rstd, int n,
            //              float eps)
            launch!(dev, ELEMENTWISE, kernel_name::<T>("rms_norm_bwd"), rows_config(rows, n)?,
                bufs: [&x, &w, &g, &dx, &rstd], vals: [ni, self.eps]);
            // rms_norm_dw_partial(const T* x, const T* g, const float* rstd, float* partial, int n,
            //                     long long rows, long long per_chunk)
            launch!(dev, ELEMENTWISE, kernel_name::<T>("rms_norm_dw_partial"),
                columns_config(n, chunks as u32),
                bufs: [&x, &g, &rstd, &partial], vals: [ni, rows as i64, per_chunk as i64]);
            // rms_norm_dw_sum(const float* partial, T* dw, int n, int chunks)
            launch!(dev, ELEMENTWISE, kernel_name::<T>("rms_norm_dw_sum"), columns_config(n, 1),
                bufs: [&partial, &dw], vals: [ni, chunks as i32]);
        }
        Ok(storage(out, dev))
    }
}

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "rms-norm-backward-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let len = xl.shape().elem_count() + wl.shape().elem_count();
        let out = by_dtype!(dtype(xs), self.name(), T => self.run::<T>(xs, xl, ws, wl, gs, gl)?);
        Ok((out, Shape::from(len)))
    }
}

/// RMSNorm of CUDA `x` `[.., n]` with gain `w` `[n]` (both f32 or both bf16).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNorm { eps: eps as f32 })
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding

/// `(x [b, t, heads, d], cos [t, d], sin [t, d])` → x rotated (or rotated back: `inverse`, the
/// backward pass, which is the same op on the gradient).
struct Rope {
    inverse: bool,
}

impl Rope {
    #[allow(clippy::too_many_arguments)]
    fn run<T: KernelDType>(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        cs: &CudaStorage,
        cl: &Layout,
        ss: &CudaStorage,
        sl: &Layout,
    ) -> Result<CudaStorage> {
        let (_, t, heads, d) = xl.shape().dims4()?;
        if cl.shape().dims() != [t, d] || sl.shape().dims() != [t, d] || d % 2 != 0 || d == 0 {
            candle_core::bail!(
                "{}: input {:?} does not fit tables {:?}/{:?}",
                self.name(),
                xl.shape(),
                cl.shape(),
                sl.shape()
            );
        }
        let dev = &xs.device;
        let (x, cos, sin) = (
            view::<T>(xs, xl, self.name())?,
            view::<T>(cs, cl, self.name())?,
            view::<T>(ss, sl, self.name())?,
        );
        let len = xl.shape().elem_count();
        // SAFETY: every (row, j) pair writes elements j and j + d/2 of its row: all of them.
        let y = unsafe { output::<T>(dev, len)? };
        let pairs = len / 2;
        if pairs > 0 {
            // rope(const T* x, const T* cos, const T* sin, T* y, unsigned long long pairs,
            //      int half, int heads, int t, int inverse)
            launch!(dev, ELEMENTWISE, kernel_name::<T>("rope"), elementwise_config(pairs),
                bufs: [&x, &cos, &sin, &y],
                vals: [pairs as u64, int(d / 2, "rope half")?, int(heads, "rope heads")?,
                       int(t, "rope positions")?, i32::from(self.inverse)]);
        }
        Ok(storage(y, dev))
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        cs: &CudaStorage,
        cl: &Layout,
        ss: &CudaStorage,
        sl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let out = by_dtype!(dtype(xs), self.name(), T => self.run::<T>(xs, xl, cs, cl, ss, sl)?);
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The tables are constants of the position (no gradient), as on the CPU.
        let grad = grad.to_dtype(cos.dtype())?.contiguous()?;
        let dx = grad.apply_op3_no_bwd(
            cos,
            sin,
            &Rope {
                inverse: !self.inverse,
            },
        )?;
        Ok((Some(dx), None, None))
    }
}

/// Rotary embedding (rotate-half) of CUDA `[b, t, heads, d]` with `[t, d]` tables.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rope { inverse: false },
    )
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

struct SwiGlu;

impl SwiGlu {
    fn run<T: KernelDType>(
        &self,
        gs: &CudaStorage,
        gl: &Layout,
        us: &CudaStorage,
        ul: &Layout,
    ) -> Result<CudaStorage> {
        if gl.shape() != ul.shape() {
            candle_core::bail!(
                "{}: shapes {:?} and {:?} differ",
                self.name(),
                gl.shape(),
                ul.shape()
            );
        }
        let dev = &gs.device;
        let (gate, up) = (
            view::<T>(gs, gl, self.name())?,
            view::<T>(us, ul, self.name())?,
        );
        let count = gl.shape().elem_count();
        // SAFETY: the grid-stride loop writes every element.
        let y = unsafe { output::<T>(dev, count)? };
        if count > 0 {
            // swiglu_fwd(const T* gate, const T* up, T* y, unsigned long long count)
            launch!(dev, ELEMENTWISE, kernel_name::<T>("swiglu_fwd"), elementwise_config(count),
                bufs: [&gate, &up, &y], vals: [count as u64]);
        }
        Ok(storage(y, dev))
    }
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        gs: &CudaStorage,
        gl: &Layout,
        us: &CudaStorage,
        ul: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let out = by_dtype!(dtype(gs), self.name(), T => self.run::<T>(gs, gl, us, ul)?);
        Ok((out, gl.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.to_dtype(gate.dtype())?.contiguous()?;
        let both = gate.apply_op3_no_bwd(up, &grad, &SwiGluBackward)?;
        let n = gate.elem_count();
        Ok((
            Some(both.narrow(0, 0, n)?.reshape(gate.shape())?),
            Some(both.narrow(0, n, n)?.reshape(up.shape())?),
        ))
    }
}

/// `(gate, up, g)` → `[d_gate | d_up]`, flat.
struct SwiGluBackward;

impl SwiGluBackward {
    #[allow(clippy::too_many_arguments)]
    fn run<T: KernelDType>(
        &self,
        gs: &CudaStorage,
        gl: &Layout,
        us: &CudaStorage,
        ul: &Layout,
        ds: &CudaStorage,
        dl: &Layout,
    ) -> Result<CudaStorage> {
        if gl.shape() != ul.shape() || gl.shape() != dl.shape() {
            candle_core::bail!(
                "{}: shapes {:?}, {:?}, {:?} differ",
                self.name(),
                gl.shape(),
                ul.shape(),
                dl.shape()
            );
        }
        let dev = &gs.device;
        let (gate, up, g) = (
            view::<T>(gs, gl, self.name())?,
            view::<T>(us, ul, self.name())?,
            view::<T>(ds, dl, self.name())?,
        );
        let count = gl.shape().elem_count();
        // SAFETY: the grid-stride loop writes every element of both halves.
        let out = unsafe { output::<T>(dev, 2 * count)? };
        if count > 0 {
            let (d_gate, d_up) = (out.slice(0..count), out.slice(count..));
            // swiglu_bwd(const T* gate, const T* up, const T* g, T* d_gate, T* d_up,
            //            unsigned long long count)
            launch!(dev, ELEMENTWISE, kernel_name::<T>("swiglu_bwd"), elementwise_config(count),
                bufs: [&gate, &up, &g, &d_gate, &d_up], vals: [count as u64]);
        }
        Ok(storage(out, dev))
    }
}

impl CustomOp3 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "swiglu-backward-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        gs: &CudaStorage,
        gl: &Layout,
        us: &CudaStorage,
        ul: &Layout,
        ds: &CudaStorage,
        dl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let len = 2 * gl.shape().elem_count();
        let out = by_dtype!(dtype(gs), self.name(), T => self.run::<T>(gs, gl, us, ul, ds, dl)?);
        Ok((out, Shape::from(len)))
    }
}

/// `silu(gate) · up` on CUDA.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}
