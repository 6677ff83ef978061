// Shared by the trainer's kernels: bf16/f32 loads and stores, and warp/block reductions.
//
// Every kernel reads its inputs as T (float or __nv_bfloat16), computes and accumulates in f32
// (f64 where a sum runs over millions of terms), and stores T. One kernel body is written as a
// template; KERNEL_DTYPES instantiates it as `<name>_f32` and `<name>_bf16`, the names the Rust
// side (src/ops/cuda.rs) loads.
#pragma once

#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
// Round to nearest even, as candle's (and half's) f32 → bf16 cast.
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide reductions; every thread of the block gets the result. Preconditions (the Rust
// launcher guarantees them): blockDim.x is a multiple of 32 and at most 1024, blockDim.y/z = 1,
// and every thread of the block calls the function (it synchronises).
// The leading __syncthreads makes back-to-back calls safe: the shared slots of one call are not
// overwritten while a slow warp still reads them from the previous one.
template <typename F> __device__ __forceinline__ F block_sum_impl(F v) {
  __shared__ F slots[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) slots[warp] = v;
  __syncthreads();
  v = lane < warps ? slots[lane] : F(0);
  return warp_sum(v);
}

__device__ __forceinline__ float block_sum(float v) { return block_sum_impl<float>(v); }
__device__ __forceinline__ double block_sum(double v) { return block_sum_impl<double>(v); }

__device__ __forceinline__ float block_max(float v) {
  __shared__ float slots[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) slots[warp] = v;
  __syncthreads();
  v = lane < warps ? slots[lane] : -INFINITY;
  return warp_max(v);
}

// `KERNEL_DTYPES(NAME, PARAMS, ARGS)` defines the kernels `NAME_f32` and `NAME_bf16`, extern "C"
// (unmangled names for the module loader), each calling the __device__ template `NAME<T>` with
// ARGS. PARAMS is a function-like macro of the element type giving the parameter list.
#define KERNEL_DTYPE(NAME, TY, SUFFIX, PARAMS, ARGS)                                               \
  extern "C" __global__ void NAME##_##SUFFIX PARAMS(TY) { NAME<TY> ARGS; }
#define KERNEL_DTYPES(NAME, PARAMS, ARGS)                                                          \
  KERNEL_DTYPE(NAME, float, f32, PARAMS, ARGS)                                                     \
  KERNEL_DTYPE(NAME, __nv_bfloat16, bf16, PARAMS, ARGS)
