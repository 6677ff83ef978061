//! AdamW and the gradient's sum of squares on CUDA: the launchers of `kernels/adamw.cu`.
//!
//! Composed from candle ops the update is about a dozen passes per parameter, each a new tensor
//! the size of the parameter; here it is one pass writing the new parameter and moments into one
//! buffer (split by views), in the CPU kernel's order of operations. The sum of squares is two
//! passes (per-block sums, then their total, in f64) and one 8-byte copy to the host.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, Layout, Result};
use candle_core::{Shape, Storage, Tensor};

use super::{
    by_dtype, dtype, elementwise_config, kernel_name, launch, output, storage, view, KernelDType,
    ADAMW,
};
use crate::ops::adamw::AdamWStep;

/// `(p, m, v)` with the gradient held here → `[p' | m' | v']`, flat f32.
struct Update {
    g: Tensor,
    /// grad_scale, then the CPU kernel's seven constants (`ops::adamw`).
    k: [f32; 8],
}

impl Update {
    fn run(
        &self,
        (ps, pl): (&CudaStorage, &Layout),
        (ms, ml): (&CudaStorage, &Layout),
        (vs, vl): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let count = pl.shape().elem_count();
        if ml.shape() != pl.shape() || vl.shape() != pl.shape() || self.g.shape() != pl.shape() {
            candle_core::bail!("adamw: parameter, moments and gradient differ in shape");
        }
        let (g_storage, gl) = self.g.storage_and_layout();
        let Storage::Cuda(gs) = &*g_storage else {
            candle_core::bail!("adamw: the gradient is not on the GPU");
        };
        let dev = &ps.device;
        let (p, m, v, g) = (
            view::<f32>(ps, pl, "adamw")?,
            view::<f32>(ms, ml, "adamw")?,
            view::<f32>(vs, vl, "adamw")?,
            view::<f32>(gs, gl, "adamw")?,
        );
        // SAFETY: the grid-stride loop writes all three `count`-long parts.
        let out: CudaSlice<f32> = unsafe { output::<f32>(dev, 3 * count)? };
        if count > 0 {
            let k = self.k;
            // adamw_f32(const float* p, const float* m, const float* v, const float* g,
            //           float* out, unsigned long long count, float grad_scale, float decay,
            //           float one_minus_b1, float b2, float one_minus_b2, float step_size,
            //           float bc2_sqrt, float eps)
            launch!(dev, ADAMW, kernel_name::<f32>("adamw"), elementwise_config(count),
                bufs: [&p, &m, &v, &g, &out],
                vals: [count as u64, k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]);
        }
        Ok(storage(out, dev))
    }
}

impl CustomOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-cuda"
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
        candle_core::bail!("{}: CUDA tensors only", self.name())
    }

    fn cuda_fwd(
        &self,
        ps: &CudaStorage,
        pl: &Layout,
        ms: &CudaStorage,
        ml: &Layout,
        vs: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let out = self.run((ps, pl), (ms, ml), (vs, vl))?;
        Ok((out, Shape::from(3 * pl.shape().elem_count())))
    }
}

/// One AdamW update of CUDA f32 `p`, `g`, `m`, `v`: the new `(p, m, v)`.
pub fn adamw_step(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: &AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let k = [
        s.grad_scale as f32,
        (1.0 - s.lr * s.weight_decay) as f32,
        (1.0 - s.beta1) as f32,
        s.beta2 as f32,
        (1.0 - s.beta2) as f32,
        (s.lr / s.bias_correction1) as f32,
        s.bias_correction2.sqrt() as f32,
        s.eps as f32,
    ];
    let op = Update {
        g: g.contiguous()?,
        k,
    };
    let all = p
        .contiguous()?
        .apply_op3_no_bwd(&m.contiguous()?, &v.contiguous()?, &op)?;
    let n = p.elem_count();
    Ok((
        all.narrow(0, 0, n)?.reshape(p.shape())?,
        all.narrow(0, n, n)?.reshape(m.shape())?,
        all.narrow(0, 2 * n, n)?.reshape(v.shape())?,
    ))
}

/// Blocks of the first sum-of-squares pass at most (the grid-stride loop covers the rest).
const SUM_BLOCKS: usize = 1024;
/// Threads of the second pass's one block.
const TOTAL_THREADS: u32 = 1024;

/// `g` → Σ g², an f64 scalar.
struct SumOfSquares;

impl SumOfSquares {
    fn run<T: KernelDType>(&self, gs: &CudaStorage, gl: &Layout) -> Result<CudaStorage> {
        let dev = &gs.device;
        let g = view::<T>(gs, gl, self.name())?;
        let count = gl.shape().elem_count();
        let mut cfg = elementwise_config(count);
        cfg.grid_dim.0 = cfg.grid_dim.0.min(SUM_BLOCKS as u32);
        let blocks = cfg.grid_dim.0 as usize;
        // SAFETY: every block writes its partial; the total kernel writes out[0].
        let partial: CudaSlice<f64> = unsafe { output::<f64>(dev, blocks)? };
        let out: CudaSlice<f64> = unsafe { output::<f64>(dev, 1)? };
        // sum_of_squares_partial(const T* g, double* partial, unsigned long long count)
        launch!(dev, ADAMW, kernel_name::<T>("sum_of_squares_partial"), cfg,
            bufs: [&g, &partial], vals: [count as u64]);
        let total = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (TOTAL_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // sum_of_squares_total_f64(const double* partial, double* out, int blocks)
        launch!(dev, ADAMW, "sum_of_squares_total_f64", total,
            bufs: [&partial, &out], vals: [blocks as i32]);
        Ok(storage(out, dev))
    }
}

impl CustomOp1 for SumOfSquares {
    fn name(&self) -> &'static str {
        "sum-of-squares-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: CUDA tensors only", self.name())
    }

    fn cuda_fwd(&self, gs: &CudaStorage, gl: &Layout) -> Result<(CudaStorage, Shape)> {
        let out = by_dtype!(dtype(gs), self.name(), T => self.run::<T>(gs, gl)?);
        Ok((out, Shape::from(())))
    }
}

/// Σ g² of a CUDA f32 or bf16 tensor, accumulated in f32 per thread and in f64 beyond.
pub fn sum_of_squares(g: &Tensor) -> Result<f64> {
    if g.elem_count() == 0 {
        return Ok(0.0);
    }
    let s = g.contiguous()?.apply_op1_no_bwd(&SumOfSquares)?;
    debug_assert_eq!(s.dtype(), DType::F64);
    s.to_scalar::<f64>()
}
