// RMSNorm, rotary embedding and SwiGLU, forward and backward, as the CPU kernels in
// src/ops/elementwise.rs compute them (same formulas, same order of operations where it
// matters; nothing saved between the passes: the backward recomputes each row's inverse RMS).
// Launchers: src/ops/cuda/elementwise.rs.
#include "common.cuh"

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = x · r · w with r = (mean(x²) + eps)^-½ per row of n. One block per row.

template <typename T>
__device__ void rms_norm_fwd(const T *__restrict__ x, const T *__restrict__ w, T *__restrict__ y,
                             int n, float eps) {
  const size_t base = (size_t)blockIdx.x * n;
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = to_f32(x[base + i]);
    ss += v * v;
  }
  ss = block_sum(ss);
  const float r = 1.f / sqrtf(ss / (float)n + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    y[base + i] = from_f32<T>(to_f32(x[base + i]) * r * to_f32(w[i]));
}
#define RMS_NORM_FWD_PARAMS(T)                                                                     \
  (const T *__restrict__ x, const T *__restrict__ w, T *__restrict__ y, int n, float eps)
KERNEL_DTYPES(rms_norm_fwd, RMS_NORM_FWD_PARAMS, (x, w, y, n, eps))

// dx = r·g·w − x·r³·Σ(g·w·x)/n per row, and each row's r into rstd (f32) for the dw pass.
template <typename T>
__device__ void rms_norm_bwd(const T *__restrict__ x, const T *__restrict__ w,
                             const T *__restrict__ g, T *__restrict__ dx, float *__restrict__ rstd,
                             int n, float eps) {
  const size_t base = (size_t)blockIdx.x * n;
  float ss = 0.f, gwx = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float xv = to_f32(x[base + i]);
    ss += xv * xv;
    gwx += to_f32(g[base + i]) * to_f32(w[i]) * xv;
  }
  ss = block_sum(ss);
  gwx = block_sum(gwx);
  const float r = 1.f / sqrtf(ss / (float)n + eps);
  const float c = r * r * r * gwx / (float)n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float xv = to_f32(x[base + i]);
    dx[base + i] = from_f32<T>(r * to_f32(g[base + i]) * to_f32(w[i]) - xv * c);
  }
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
}
#define RMS_NORM_BWD_PARAMS(T)                                                                     \
  (const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ g, T *__restrict__ dx,  \
   float *__restrict__ rstd, int n, float eps)
KERNEL_DTYPES(rms_norm_bwd, RMS_NORM_BWD_PARAMS, (x, w, g, dx, rstd, n, eps))

// dw, first pass: column j of chunk blockIdx.y (rows [y·per_chunk, (y+1)·per_chunk)) sums
// g·x·r into partial[y·n + j]. Adjacent threads read adjacent columns (coalesced).
template <typename T>
__device__ void rms_norm_dw_partial(const T *__restrict__ x, const T *__restrict__ g,
                                    const float *__restrict__ rstd, float *__restrict__ partial,
                                    int n, long long rows, long long per_chunk) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const long long r0 = (long long)blockIdx.y * per_chunk;
  const long long r1 = min(rows, r0 + per_chunk);
  float acc = 0.f;
  for (long long r = r0; r < r1; ++r) {
    const size_t k = (size_t)r * n + j;
    acc += to_f32(g[k]) * to_f32(x[k]) * rstd[r];
  }
  partial[(size_t)blockIdx.y * n + j] = acc;
}
#define RMS_NORM_DW_PARTIAL_PARAMS(T)                                                              \
  (const T *__restrict__ x, const T *__restrict__ g, const float *__restrict__ rstd,               \
   float *__restrict__ partial, int n, long long rows, long long per_chunk)
KERNEL_DTYPES(rms_norm_dw_partial, RMS_NORM_DW_PARTIAL_PARAMS,
              (x, g, rstd, partial, n, rows, per_chunk))

// dw, second pass: dw[j] = Σ over the chunks of partial[c·n + j].
template <typename T>
__device__ void rms_norm_dw_sum(const float *__restrict__ partial, T *__restrict__ dw, int n,
                                int chunks) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= n) return;
  float acc = 0.f;
  for (int c = 0; c < chunks; ++c) acc += partial[(size_t)c * n + j];
  dw[j] = from_f32<T>(acc);
}
#define RMS_NORM_DW_SUM_PARAMS(T)                                                                  \
  (const float *__restrict__ partial, T *__restrict__ dw, int n, int chunks)
KERNEL_DTYPES(rms_norm_dw_sum, RMS_NORM_DW_SUM_PARAMS, (partial, dw, n, chunks))

// ---------------------------------------------------------------------------------------------
// Rotary embedding, rotate-half, on rows of d = 2·half in [.., t, heads, d] order (row i at
// position (i / heads) % t) with cos/sin tables [t, d]. One thread per (row, j < half) pair;
// `inverse` rotates back (the backward pass: the transpose of a rotation).

template <typename T>
__device__ void rope(const T *__restrict__ x, const T *__restrict__ cos, const T *__restrict__ sin,
                     T *__restrict__ y, unsigned long long pairs, int half, int heads, int t,
                     int inverse) {
  const size_t d = 2 * (size_t)half;
  for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < pairs;
       p += (size_t)gridDim.x * blockDim.x) {
    const size_t row = p / half;
    const size_t j = p % half;
    const size_t pos = (row / heads) % t;
    const T *c = cos + pos * d;
    const T *s = sin + pos * d;
    const size_t i1 = row * d + j, i2 = i1 + half;
    const float x1 = to_f32(x[i1]), x2 = to_f32(x[i2]);
    float y1, y2;
    if (inverse) {
      y1 = x1 * to_f32(c[j]) + x2 * to_f32(s[half + j]);
      y2 = x2 * to_f32(c[half + j]) - x1 * to_f32(s[j]);
    } else {
      y1 = x1 * to_f32(c[j]) - x2 * to_f32(s[j]);
      y2 = x2 * to_f32(c[half + j]) + x1 * to_f32(s[half + j]);
    }
    y[i1] = from_f32<T>(y1);
    y[i2] = from_f32<T>(y2);
  }
}
#define ROPE_PARAMS(T)                                                                             \
  (const T *__restrict__ x, const T *__restrict__ cos, const T *__restrict__ sin,                  \
   T *__restrict__ y, unsigned long long pairs, int half, int heads, int t, int inverse)
KERNEL_DTYPES(rope, ROPE_PARAMS, (x, cos, sin, y, pairs, half, heads, t, inverse))

// ---------------------------------------------------------------------------------------------
// SwiGLU: silu(a) · u, elementwise.

__device__ __forceinline__ float sigmoid(float a) { return 1.f / (1.f + expf(-a)); }

template <typename T>
__device__ void swiglu_fwd(const T *__restrict__ gate, const T *__restrict__ up, T *__restrict__ y,
                           unsigned long long count) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
       i += (size_t)gridDim.x * blockDim.x) {
    const float a = to_f32(gate[i]);
    y[i] = from_f32<T>(a * sigmoid(a) * to_f32(up[i]));
  }
}
#define SWIGLU_FWD_PARAMS(T)                                                                       \
  (const T *__restrict__ gate, const T *__restrict__ up, T *__restrict__ y,                        \
   unsigned long long count)
KERNEL_DTYPES(swiglu_fwd, SWIGLU_FWD_PARAMS, (gate, up, y, count))

// d_up = g·a·s, d_gate = g·u·s·(1 + a·(1 − s)) with s = sigmoid(a).
template <typename T>
__device__ void swiglu_bwd(const T *__restrict__ gate, const T *__restrict__ up,
                           const T *__restrict__ g, T *__restrict__ d_gate, T *__restrict__ d_up,
                           unsigned long long count) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
       i += (size_t)gridDim.x * blockDim.x) {
    const float a = to_f32(gate[i]), u = to_f32(up[i]), gv = to_f32(g[i]);
    const float s = sigmoid(a);
    d_up[i] = from_f32<T>(gv * a * s);
    d_gate[i] = from_f32<T>(gv * u * s * (1.f + a * (1.f - s)));
  }
}
#define SWIGLU_BWD_PARAMS(T)                                                                       \
  (const T *__restrict__ gate, const T *__restrict__ up, const T *__restrict__ g,                  \
   T *__restrict__ d_gate, T *__restrict__ d_up, unsigned long long count)
KERNEL_DTYPES(swiglu_bwd, SWIGLU_BWD_PARAMS, (gate, up, g, d_gate, d_up, count))
