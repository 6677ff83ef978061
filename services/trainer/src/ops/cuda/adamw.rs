//! AdamW and the gradient's sum of squares on CUDA: the launchers of `kernels/adamw.cu`.
//!
//! Composed from candle ops the update is about a dozen passes per parameter, each a new tensor
//! the size of the parameter; here it is one pass writing the new parameter and moments, in the
//! CPU kernel's order of operations. The sum of squares is two
//! passes (per-block sums, then their total, in f64) and one 8-byte copy to the host.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig};
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result};
use candle_core::{Shape, Storage, Tensor};

use super::{
    by_dtype, dtype, elementwise_config, kernel_name, launch, output, storage, view, KernelDType,
    ADAMW,
};
use crate::ops::adamw::AdamWStep;

/// One AdamW update of CUDA f32 `p`, `g`, `m`, `v`: the new `(p, m, v)`, each its own buffer
/// (the optimiser keeps the moments and copies the parameter into its variable: one shared
/// buffer would keep a dead copy of every parameter alive until the next step).
pub fn adamw_step(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: &AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (p, g, m, v) = (
        p.contiguous()?,
        g.contiguous()?,
        m.contiguous()?,
        v.contiguous()?,
    );
    let shape = p.shape().clone();
    if g.shape() != &shape || m.shape() != &shape || v.shape() != &shape {
        candle_core::bail!("adamw: parameter, gradient and moments differ in shape");
    }
    let count = shape.elem_count();
    let (ps, pl) = p.storage_and_layout();
    let (gs, gl) = g.storage_and_layout();
    let (ms, ml) = m.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Storage::Cuda(ps), Storage::Cuda(gs), Storage::Cuda(ms), Storage::Cuda(vs)) =
        (&*ps, &*gs, &*ms, &*vs)
    else {
        candle_core::bail!("adamw: CUDA tensors only");
    };
    let dev = &ps.device;
    let (pv, gv, mv, vv) = (
        view::<f32>(ps, pl, "adamw")?,
        view::<f32>(gs, gl, "adamw")?,
        view::<f32>(ms, ml, "adamw")?,
        view::<f32>(vs, vl, "adamw")?,
    );
    // SAFETY: the grid-stride loop writes every element of the three.
    let p_out: CudaSlice<f32> = unsafe { output::<f32>(dev, count)? };
    let m_out: CudaSlice<f32> = unsafe { output::<f32>(dev, count)? };
    let v_out: CudaSlice<f32> = unsafe { output::<f32>(dev, count)? };
    if count > 0 {
        // adamw_f32(const float* p, const float* m, const float* v, const float* g,
        //           float* p_out, float* m_out, float* v_out, unsigned long long count,
        //           float grad_scale, float decay, float one_minus_b1, float b2,
        //           float one_minus_b2, float step_size, float bc2_sqrt, float eps)
        launch!(dev, ADAMW, kernel_name::<f32>("adamw"), elementwise_config(count),
            bufs: [&pv, &mv, &vv, &gv, &p_out, &m_out, &v_out],
            vals: [count as u64, s.grad_scale as f32, (1.0 - s.lr * s.weight_decay) as f32,
                   (1.0 - s.beta1) as f32, s.beta2 as f32, (1.0 - s.beta2) as f32,
                   (s.lr / s.bias_correction1) as f32, s.bias_correction2.sqrt() as f32,
                   s.eps as f32]);
    }
    let tensor = |out: CudaSlice<f32>| {
        Tensor::from_storage(
            Storage::Cuda(storage(out, dev)),
            shape.clone(),
            BackpropOp::none(),
            false,
        )
    };
    Ok((tensor(p_out), tensor(m_out), tensor(v_out)))
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
