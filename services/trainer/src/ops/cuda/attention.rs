//! The CUDA side of the FlashAttention op (`kernels/attention.cu`): launch shapes, dynamic
//! shared memory, and the forward and backward passes on device buffers. The op itself, its
//! saved statistic and the CPU kernel are in `ops/attention.rs`; this file only launches.
//!
//! The kernels are compiled per head-dim bucket ([`HeadDim`]): the loops over a head's
//! dimensions and the per-lane accumulators need a compile-time size, and a head dim below its
//! bucket runs zero-padded (the padding adds zeros to every dot product).

use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, CudaView, LaunchConfig};
use candle_core::{CudaDevice, Result};

use super::{int, kernel_name, KernelDType, Module, PushKernelArg, WrapErr};
use crate::ops::attention::Dims;

const MODULE: Module = Module {
    name: "taominer-attention",
    ptx: super::ptx::ATTENTION,
};

/// Threads per block of the tile kernels: attention.cu's `THREADS` (4 warps).
const THREADS: u32 = 128;
/// Keys per tile in the forward and dQ kernels, query rows per tile in dK/dV: `TILE`.
const TILE: usize = 32;
/// Rows per block of the dsum kernel (one warp a row, 256 threads).
const DSUM_ROWS: usize = 8;
/// The grid's y and z dimensions (heads, batch) are at most this many blocks.
const GRID_YZ_MAX: usize = 65_535;

/// The head-dim bucket a kernel is compiled for (attention.cu's `D`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadDim {
    D32,
    D64,
    D128,
    D256,
}

/// The three tile kernels, which differ in their shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKernel {
    Forward,
    Dq,
    DkDv,
}

impl HeadDim {
    /// The smallest bucket holding head dim `d`, or `None` above 256 (no kernel).
    pub fn of(d: usize) -> Option<Self> {
        match d {
            1..=32 => Some(Self::D32),
            33..=64 => Some(Self::D64),
            65..=128 => Some(Self::D128),
            129..=256 => Some(Self::D256),
            _ => None,
        }
    }

    fn dim(self) -> usize {
        match self {
            Self::D32 => 32,
            Self::D64 => 64,
            Self::D128 => 128,
            Self::D256 => 256,
        }
    }

    /// Query rows (forward, dQ) or keys (dK/dV) per block: 4 warps × `Cfg::R`.
    pub fn rows(self) -> usize {
        4 * if self == Self::D256 { 4 } else { 8 }
    }

    /// Dynamic shared memory of `kernel`, in bytes: attention.cu's `Cfg::*_FLOATS` × 4 (the
    /// kernel traps if it gets less).
    pub fn smem_bytes(self, kernel: TileKernel) -> usize {
        let (rows, stride) = (self.rows(), self.dim() + 4);
        let floats = match kernel {
            TileKernel::Forward => (rows + 2 * TILE) * stride + rows * TILE,
            TileKernel::Dq => (2 * rows + 2 * TILE) * stride + rows * TILE,
            TileKernel::DkDv => (2 * rows + 2 * TILE) * stride + 2 * rows * TILE + 2 * TILE,
        };
        floats * 4
    }

    /// The kernel's full name, e.g. `attention_fwd_d128_bf16`.
    fn kernel<T: KernelDType>(self, kernel: TileKernel) -> String {
        let op = match kernel {
            TileKernel::Forward => "fwd",
            TileKernel::Dq => "dq",
            TileKernel::DkDv => "dkdv",
        };
        kernel_name::<T>(&format!("attention_{op}_d{}", self.dim()))
    }
}

/// Whether the kernels take these sizes (head dim ≤ 256; heads and batch within a grid).
pub(crate) fn supports(dims: Dims) -> bool {
    HeadDim::of(dims.d).is_some() && dims.nh <= GRID_YZ_MAX && dims.b <= GRID_YZ_MAX
}

/// The launch of `kernel` over `t` rows (or keys) a block's `rows` at a time, `y` heads deep,
/// for `b` sequences: the function, loaded and allowed its shared memory, and its grid.
fn tile_launch<T: KernelDType>(
    dev: &CudaDevice,
    hd: HeadDim,
    kernel: TileKernel,
    dims: Dims,
    y: usize,
) -> Result<(CudaFunction, LaunchConfig)> {
    let bytes = hd.smem_bytes(kernel);
    let func = dev.get_or_load_custom_func(&hd.kernel::<T>(kernel), MODULE.name, MODULE.ptx)?;
    // Above 48 KiB a kernel must opt in; the device refuses more than it has (sm_90: 227 KiB;
    // the largest here, dK/dV at 256, is 102 KiB).
    func.set_attribute(
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        int(bytes, "attention shared memory")?,
    )
    .w()?;
    let blocks = u32::try_from(dims.t.div_ceil(hd.rows()))
        .map_err(|_| candle_core::Error::Msg(format!("attention: t {} too long", dims.t)))?;
    let cfg = LaunchConfig {
        // y and z checked by `supports` (≤ 65,535).
        grid_dim: (blocks, y as u32, dims.b as u32),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: bytes as u32,
    };
    Ok(((*func).clone(), cfg))
}

fn bucket(dims: Dims) -> Result<HeadDim> {
    if !supports(dims) {
        candle_core::bail!("flash-attention: no CUDA kernel for {dims:?}");
    }
    HeadDim::of(dims.d).ok_or_else(|| candle_core::Error::Msg(format!("head dim {}", dims.d)))
}

/// Forward pass: the output `[b, t, heads, d]` and the per-row log-sum-exp, f32 `[b, t, heads]`.
pub(crate) fn forward<T: KernelDType>(
    dev: &CudaDevice,
    dims: Dims,
    scale: f32,
    q: &CudaView<'_, T>,
    k: &CudaView<'_, T>,
    v: &CudaView<'_, T>,
) -> Result<(CudaSlice<T>, CudaSlice<f32>)> {
    let hd = bucket(dims)?;
    let rows = dims.b * dims.t * dims.nh;
    // SAFETY: the forward kernel writes every row < t of every (batch, head): all of o and lse.
    let o = unsafe { super::output::<T>(dev, rows * dims.d)? };
    let lse = unsafe { super::output::<f32>(dev, rows)? };
    let (t, nh, nkv, d) = sizes(dims)?;
    let (func, cfg) = tile_launch::<T>(dev, hd, TileKernel::Forward, dims, dims.nh)?;
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    b.arg(q).arg(k).arg(v).arg(&o).arg(&lse);
    b.arg(&t).arg(&nh).arg(&nkv).arg(&d).arg(&scale);
    // SAFETY: the arguments are attention_fwd_d<D>_<T>(q, k, v, o, lse, t, nh, nkv, d, scale)'s parameters in order; the buffers are sized from
    // `dims`, which bound the kernel's accesses; the grid covers every row (blocks × rows ≥ t).
    unsafe { b.launch(cfg) }.w()?;
    Ok((o, lse))
}

/// Backward pass from the forward's inputs, output `o`, its gradient `go` and `lse`:
/// `(dq, dk, dv)` in the layouts of q, k and v.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: KernelDType>(
    dev: &CudaDevice,
    dims: Dims,
    scale: f32,
    q: &CudaView<'_, T>,
    k: &CudaView<'_, T>,
    v: &CudaView<'_, T>,
    o: &CudaView<'_, T>,
    go: &CudaView<'_, T>,
    lse: &CudaSlice<f32>,
) -> Result<(CudaSlice<T>, CudaSlice<T>, CudaSlice<T>)> {
    let hd = bucket(dims)?;
    let rows = dims.b * dims.t * dims.nh;
    let kv_len = dims.b * dims.t * dims.nkv * dims.d;
    let (t, nh, nkv, d) = sizes(dims)?;
    // SAFETY (each): dsum has one row per query row, all written; dq every row < t of every
    // (batch, head); dk and dv every key < t of every (batch, kv head).
    let dsum = unsafe { super::output::<f32>(dev, rows)? };
    let dq = unsafe { super::output::<T>(dev, rows * dims.d)? };
    let dk = unsafe { super::output::<T>(dev, kv_len)? };
    let dv = unsafe { super::output::<T>(dev, kv_len)? };

    let blocks = u32::try_from(rows.div_ceil(DSUM_ROWS))
        .ok()
        .filter(|&g| g <= i32::MAX as u32)
        .ok_or_else(|| candle_core::Error::Msg(format!("attention: {rows} rows")))?;
    let func =
        dev.get_or_load_custom_func(&kernel_name::<T>("attention_dsum"), MODULE.name, MODULE.ptx)?;
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (32 * DSUM_ROWS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = func.builder();
    // attention_dsum_<T>(o, go, dsum, size_t rows, int d)
    let rows64 = rows as u64;
    b.arg(o).arg(go).arg(&dsum).arg(&rows64).arg(&d);
    // SAFETY: as the signature above; o and go hold `rows` rows of d.
    unsafe { b.launch(cfg) }.w()?;

    let (func, cfg) = tile_launch::<T>(dev, hd, TileKernel::Dq, dims, dims.nh)?;
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    b.arg(q).arg(k).arg(v).arg(go).arg(lse).arg(&dsum).arg(&dq);
    b.arg(&t).arg(&nh).arg(&nkv).arg(&d).arg(&scale);
    // SAFETY: the arguments are attention_dq_d<D>_<T>(q, k, v, go, lse, dsum, dq, t, nh, nkv, d, scale)'s parameters in order; the buffers are sized from
    // `dims`, which bound the kernel's accesses; the grid covers every row (blocks × rows ≥ t).
    unsafe { b.launch(cfg) }.w()?;

    let (func, cfg) = tile_launch::<T>(dev, hd, TileKernel::DkDv, dims, dims.nkv)?;
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    b.arg(q)
        .arg(k)
        .arg(v)
        .arg(go)
        .arg(lse)
        .arg(&dsum)
        .arg(&dk)
        .arg(&dv);
    b.arg(&t).arg(&nh).arg(&nkv).arg(&d).arg(&scale);
    // SAFETY: the arguments are attention_dkdv_d<D>_<T>(q, k, v, go, lse, dsum, dk, dv, t, nh, nkv, d, scale)'s parameters in order; the buffers are sized from
    // `dims`, which bound the kernel's accesses; the grid covers every row (blocks × rows ≥ t).
    unsafe { b.launch(cfg) }.w()?;
    Ok((dq, dk, dv))
}

/// `(t, heads, kv_heads, d)` as the kernels' `int`s.
fn sizes(dims: Dims) -> Result<(i32, i32, i32, i32)> {
    Ok((
        int(dims.t, "attention t")?,
        int(dims.nh, "attention heads")?,
        int(dims.nkv, "attention kv heads")?,
        int(dims.d, "attention head dim")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared-memory sizes the host asks for are attention.cu's (hand-computed here from
    /// its `Cfg`), and every one fits an sm_80/sm_90 block (163/227 KiB).
    #[test]
    fn shared_memory_matches_the_kernels() {
        assert_eq!(HeadDim::D128.smem_bytes(TileKernel::Forward), 54_784);
        assert_eq!(HeadDim::D128.smem_bytes(TileKernel::Dq), 71_680);
        assert_eq!(HeadDim::D128.smem_bytes(TileKernel::DkDv), 76_032);
        assert_eq!(HeadDim::D64.smem_bytes(TileKernel::Forward), 30_208);
        assert_eq!(HeadDim::D256.smem_bytes(TileKernel::DkDv), 104_192);
        for hd in [HeadDim::D32, HeadDim::D64, HeadDim::D128, HeadDim::D256] {
            for k in [TileKernel::Forward, TileKernel::Dq, TileKernel::DkDv] {
                assert!(hd.smem_bytes(k) <= 163 * 1024);
            }
        }
    }

    /// Head dims map to the smallest bucket that holds them; none above 256.
    #[test]
    fn head_dim_buckets() {
        assert_eq!(HeadDim::of(8), Some(HeadDim::D32));
        assert_eq!(HeadDim::of(64), Some(HeadDim::D64));
        assert_eq!(HeadDim::of(100), Some(HeadDim::D128));
        assert_eq!(HeadDim::of(256), Some(HeadDim::D256));
        assert_eq!(HeadDim::of(257), None);
        assert_eq!(HeadDim::of(0), None);
    }
}
