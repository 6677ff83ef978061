//! The CUDA side of the fused ops: the PTX that build.rs compiles from `kernels/*.cu`, and the
//! one place that loads and launches a kernel, so each op's `cuda_fwd` is its shapes, its
//! buffers and one [`launch!`] per kernel.
//!
//! Conventions shared with the `.cu` files (kernels/common.cuh):
//! * a kernel `name` is compiled per element type as `name_f32` and `name_bf16`
//!   ([`kernel_name`]); inputs are read as that type, everything is computed in f32;
//! * every kernel takes its device pointers first, then its scalars (the order [`launch!`]
//!   pushes them);
//! * row kernels run one block per row ([`rows_config`]); elementwise kernels loop with a grid
//!   stride ([`elementwise_config`]).
//!
//! Ops: [`elementwise`] (RMSNorm, rotary, SwiGLU), [`loss`] (the causal LM loss), [`adamw`] (the
//! optimiser update and the gradient's sum of squares), [`attention`] (FlashAttention-2 forward
//! and backward: its own `.cu` file, [`Module`] constant and launches, which opt in to more than
//! 48 KiB of shared memory).

pub mod adamw;
pub mod attention;
pub mod elementwise;
pub mod loss;

pub(crate) use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
pub(crate) use candle_core::cuda_backend::WrapErr;

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig};
use candle_core::cuda_backend::CudaDType;
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Tensor, WithDType};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

/// One compiled `.cu` file: the name candle caches it under, and its PTX.
#[derive(Debug, Clone, Copy)]
pub struct Module {
    pub name: &'static str,
    pub ptx: &'static str,
}

pub const ELEMENTWISE: Module = Module {
    name: "taominer-elementwise",
    ptx: ptx::ELEMENTWISE,
};
pub const LOSS: Module = Module {
    name: "taominer-loss",
    ptx: ptx::LOSS,
};
pub const ADAMW: Module = Module {
    name: "taominer-adamw",
    ptx: ptx::ADAMW,
};

/// The element types the kernels are compiled for, with their kernel-name suffix.
pub trait KernelDType: CudaDType + DeviceRepr + WithDType {
    const SUFFIX: &'static str;
}

impl KernelDType for f32 {
    const SUFFIX: &'static str = "f32";
}

impl KernelDType for half::bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// `name_f32` or `name_bf16`.
pub fn kernel_name<T: KernelDType>(name: &str) -> String {
    format!("{name}_{}", T::SUFFIX)
}

/// Runs `$body` with the type alias `$t` set to the element type of `$dtype` (f32 or bf16);
/// other dtypes are an error naming `$op`.
macro_rules! by_dtype {
    ($dtype:expr, $op:expr, $t:ident => $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $t = f32;
                $body
            }
            candle_core::DType::BF16 => {
                type $t = half::bf16;
                $body
            }
            other => candle_core::bail!("{}: no CUDA kernel for {other:?}", $op),
        }
    };
}
pub(crate) use by_dtype;

/// Loads `$kernel` (a full name: from [`kernel_name`], or a `&str` for a kernel of one type) of
/// `$module` on `$dev` (cached by candle after the first load) and launches it with `$cfg`: the
/// device buffers (references to `CudaView`/`CudaSlice`) first, then the scalars, in the
/// kernel's parameter order (tests/cuda_sources.rs checks each call against its kernel).
macro_rules! launch {
    ($dev:expr, $module:expr, $kernel:expr, $cfg:expr,
     bufs: [$($buf:expr),* $(,)?], vals: [$($val:expr),* $(,)?]) => {{
        let module: $crate::ops::cuda::Module = $module;
        let kernel = $kernel;
        let kernel: &str = ::std::convert::AsRef::<str>::as_ref(&kernel);
        let func = $dev.get_or_load_custom_func(kernel, module.name, module.ptx)?;
        let mut builder = func.builder();
        $( $crate::ops::cuda::PushKernelArg::arg(&mut builder, $buf); )*
        $(
            let val = $val;
            $crate::ops::cuda::PushKernelArg::arg(&mut builder, &val);
        )*
        // SAFETY: the arguments match the kernel's parameter list (types and order: each call
        // sits next to its kernel's signature in a comment), and the caller sized the grid and
        // every buffer from the same lengths it passes, which the kernel bounds its accesses by.
        $crate::ops::cuda::WrapErr::w(unsafe { builder.launch($cfg) })?;
    }};
}
pub(crate) use launch;

/// Whether the CUDA kernels take these tensors: all on one CUDA device, all f32 or all bf16.
pub fn takes(ts: &[&Tensor]) -> bool {
    let Some(first) = ts.first() else {
        return false;
    };
    first.device().is_cuda()
        && matches!(first.dtype(), DType::F32 | DType::BF16)
        && ts
            .iter()
            .all(|t| t.device().same_device(first.device()) && t.dtype() == first.dtype())
}

/// The contiguous data of a storage as `T` (an error naming `op` if the dtype differs or the
/// layout is strided).
pub fn view<'a, T: CudaDType + DeviceRepr>(
    s: &'a CudaStorage,
    l: &Layout,
    op: &str,
) -> Result<CudaView<'a, T>> {
    let data = T::as_cuda_slice(s)?;
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: contiguous tensors only");
    };
    Ok(data.slice(start..end))
}

/// The element type of a storage.
pub fn dtype(s: &CudaStorage) -> DType {
    candle_core::backend::BackendStorage::dtype(s)
}

/// A new buffer of `len` elements for a kernel to fill.
///
/// # Safety
/// The kernels launched on it must write every element before anything reads it.
pub unsafe fn output<T: DeviceRepr>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: passed on to the caller (above).
    unsafe { dev.alloc::<T>(len) }
}

/// A kernel's output as candle storage.
pub fn storage<T: CudaDType>(s: CudaSlice<T>, dev: &CudaDevice) -> CudaStorage {
    T::wrap_cuda_slice(s, dev.clone())
}

/// A size as the kernels' `int` parameter (row lengths, counts of rows per sequence).
pub fn int(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| candle_core::Error::Msg(format!("{what} {n} exceeds i32")))
}

/// Threads per block of a row kernel: enough to keep a long row's loads in flight, a multiple
/// of 32 (the block reductions' precondition).
fn row_threads(n: usize) -> u32 {
    if n >= 8192 {
        1024
    } else {
        256
    }
}

/// One block per row, for `rows` rows of `n` elements.
pub fn rows_config(rows: usize, n: usize) -> Result<LaunchConfig> {
    // The grid's x dimension is at most 2³¹ − 1 blocks.
    let grid = u32::try_from(rows)
        .ok()
        .filter(|&g| g >= 1 && g <= i32::MAX as u32)
        .ok_or_else(|| candle_core::Error::Msg(format!("{rows} rows: no grid fits")))?;
    Ok(LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (row_threads(n), 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Threads per block of the elementwise kernels.
const THREADS: u32 = 256;
/// Blocks of an elementwise kernel at most (the grid-stride loop covers the rest): far more
/// than the SMs can hold at once (132 on an H100/H200 at 8 blocks of 256 each).
const MAX_BLOCKS: usize = 1 << 16;

/// A grid-stride launch over `count` elements (`count` ≥ 1).
pub fn elementwise_config(count: usize) -> LaunchConfig {
    let blocks = count.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid over the columns of `n`-wide rows (`THREADS` columns a block), `y` blocks deep.
pub fn columns_config(n: usize, y: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(THREADS as usize).max(1) as u32, y.max(1), 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}
