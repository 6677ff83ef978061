//! The causal language-model loss on CUDA: the launchers of `kernels/loss.cu`.
//!
//! As on the CPU, the forward pass keeps one log-sum-exp per row (on the device, in the op) and
//! the backward pass writes the logits' gradient in one pass; the incoming gradient is read by
//! the kernel from device memory, so no step of the loss waits on a copy to the host.

use std::sync::{Arc, Mutex};

use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Layout, Result};
use candle_core::{Shape, Tensor};

use super::{
    by_dtype, dtype, int, kernel_name, launch, output, rows_config, storage, view, KernelDType,
    LOSS,
};

/// Threads of the one block that sums the per-row losses.
const MEAN_THREADS: u32 = 1024;

/// `(logits [b, t, vocab], ids [b, t] u32)` → the mean loss, an f32 scalar.
struct CausalLmLoss {
    /// Per row of `b · t` (0 at each sequence's last position), from the forward pass. Shared,
    /// not taken, by each backward pass: as on the CPU, a graph may be differentiated twice.
    lse: Mutex<Option<Arc<CudaSlice<f32>>>>,
}

fn check(op: &str, logits: &Shape, ids: &Shape) -> Result<(usize, usize, usize)> {
    let (b, t, v) = logits.dims3()?;
    if ids.dims() != [b, t] || t < 2 || v == 0 {
        candle_core::bail!("{op}: ids {ids:?} for logits {logits:?} (need t ≥ 2)");
    }
    Ok((b, t, v))
}

impl CausalLmLoss {
    fn fwd<T: KernelDType>(
        &self,
        ls: &CudaStorage,
        ll: &Layout,
        is: &CudaStorage,
        il: &Layout,
    ) -> Result<CudaStorage> {
        let (b, t, v) = check(self.name(), ll.shape(), il.shape())?;
        let dev = &ls.device;
        let (logits, ids) = (
            view::<T>(ls, ll, self.name())?,
            view::<u32>(is, il, self.name())?,
        );
        let rows = b * t;
        // SAFETY: causal_lm_loss_rows writes lse and loss of every row (0 for the last
        // position of each sequence); the mean kernel writes out[0].
        let lse: CudaSlice<f32> = unsafe { output::<f32>(dev, rows)? };
        let loss: CudaSlice<f32> = unsafe { output::<f32>(dev, rows)? };
        let out: CudaSlice<f32> = unsafe { output::<f32>(dev, 1)? };
        // causal_lm_loss_rows(const T* logits, const uint32_t* ids, float* lse, float* loss,
        //                     int v, int t)
        launch!(dev, LOSS, kernel_name::<T>("causal_lm_loss_rows"), rows_config(rows, v)?,
            bufs: [&logits, &ids, &lse, &loss], vals: [int(v, "vocabulary")?, int(t, "sequence")?]);
        let mean_cfg = candle_core::cuda_backend::cudarc::driver::LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (MEAN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // causal_lm_loss_mean_f32(const float* loss, float* out, long long rows, long long n)
        launch!(dev, LOSS, kernel_name::<f32>("causal_lm_loss_mean"), mean_cfg,
            bufs: [&loss, &out], vals: [rows as i64, (b * (t - 1)) as i64]);
        if let Ok(mut saved) = self.lse.lock() {
            *saved = Some(Arc::new(lse));
        }
        Ok(storage(out, dev))
    }
}

impl CustomOp2 for CausalLmLoss {
    fn name(&self) -> &'static str {
        "causal-lm-loss-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: CUDA tensors only", self.name())
    }

    fn cuda_fwd(
        &self,
        ls: &CudaStorage,
        ll: &Layout,
        is: &CudaStorage,
        il: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let out = by_dtype!(dtype(ls), self.name(), T => self.fwd::<T>(ls, ll, is, il)?);
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        ids: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(lse) = self.lse.lock().ok().and_then(|s| s.clone()) else {
            candle_core::bail!("{}: backward before forward", self.name());
        };
        let grad = grad.to_dtype(DType::F32)?.contiguous()?;
        let dlogits = logits.apply_op3_no_bwd(ids, &grad, &CausalLmLossBackward { lse })?;
        // The ids are integers: no gradient.
        Ok((Some(dlogits), None))
    }
}

/// `(logits, ids, grad)` → dlogits, with the forward pass's log-sum-exps.
struct CausalLmLossBackward {
    lse: Arc<CudaSlice<f32>>,
}

impl CausalLmLossBackward {
    #[allow(clippy::too_many_arguments)]
    fn run<T: KernelDType>(
        &self,
        ls: &CudaStorage,
        ll: &Layout,
        is: &CudaStorage,
        il: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<CudaStorage> {
        let (b, t, v) = check(self.name(), ll.shape(), il.shape())?;
        if gl.shape().elem_count() != 1 || self.lse.len() != b * t {
            candle_core::bail!(
                "{}: gradient {:?} or saved rows do not fit",
                self.name(),
                gl.shape()
            );
        }
        let dev = &ls.device;
        let (logits, ids, grad) = (
            view::<T>(ls, ll, self.name())?,
            view::<u32>(is, il, self.name())?,
            view::<f32>(gs, gl, self.name())?,
        );
        let rows = b * t;
        // SAFETY: one block per row writes all v elements of its row.
        let out = unsafe { output::<T>(dev, rows * v)? };
        // causal_lm_loss_bwd(const T* logits, const uint32_t* ids, const float* lse,
        //                    const float* grad, T* dlogits, int v, int t, float n)
        launch!(dev, LOSS, kernel_name::<T>("causal_lm_loss_bwd"), rows_config(rows, v)?,
            bufs: [&logits, &ids, &*self.lse, &grad, &out],
            vals: [int(v, "vocabulary")?, int(t, "sequence")?, (b * (t - 1)) as f32]);
        Ok(storage(out, dev))
    }
}

impl CustomOp3 for CausalLmLossBackward {
    fn name(&self) -> &'static str {
        "causal-lm-loss-backward-cuda"
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
        ls: &CudaStorage,
        ll: &Layout,
        is: &CudaStorage,
        il: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let out = by_dtype!(dtype(ls), self.name(), T => self.run::<T>(ls, ll, is, il, gs, gl)?);
        Ok((out, ll.shape().clone()))
    }
}

/// Mean next-token cross-entropy of CUDA `logits` `[b, t, vocab]` (f32 or bf16) against `ids`
/// `[b, t]` (u32, same device). The ids are checked against the vocabulary first (one small copy
/// to the host: a bad id is an error, as on the CPU, not a NaN loss).
pub fn causal_lm_loss(logits: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (_, _, v) = logits.dims3()?;
    let ids = ids.to_dtype(DType::U32)?.contiguous()?;
    let max = ids.max_all()?.to_scalar::<u32>()?;
    if max as usize >= v {
        candle_core::bail!("causal-lm-loss: token id {max} is outside the vocabulary of {v}");
    }
    logits.contiguous()?.apply_op2(
        &ids,
        CausalLmLoss {
            lse: Mutex::new(None),
        },
    )
}
