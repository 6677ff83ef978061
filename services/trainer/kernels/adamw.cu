// The AdamW update and the gradient's sum of squares, as src/ops/adamw.rs computes them on the
// CPU (PyTorch's single-tensor order of operations). Launchers: src/ops/cuda/adamw.rs.
#include "common.cuh"

// p, m, v (f32 master weights and moments) and g → p', m', v' (new buffers, `count` each).
// The scalars: the clip factor, then decay = 1 − lr·wd, 1 − β1, β2, 1 − β2, the step size
// lr / bc1, √bc2, eps.
extern "C" __global__ void adamw_f32(const float *__restrict__ p, const float *__restrict__ m,
                                     const float *__restrict__ v, const float *__restrict__ g,
                                     float *__restrict__ p_out, float *__restrict__ m_out,
                                     float *__restrict__ v_out, unsigned long long count,
                                     float grad_scale, float decay, float one_minus_b1, float b2,
                                     float one_minus_b2, float step_size, float bc2_sqrt,
                                     float eps) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
       i += (size_t)gridDim.x * blockDim.x) {
    // Scaled as clip_grad_norm_ scales the gradient (an f32 product; × 1 is exact).
    const float gi = g[i] * grad_scale;
    float pi = p[i] * decay;
    const float mi = m[i] + (gi - m[i]) * one_minus_b1;
    const float vi = v[i] * b2 + one_minus_b2 * gi * gi;
    pi -= step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
    p_out[i] = pi;
    m_out[i] = mi;
    v_out[i] = vi;
  }
}

// Σ g² over the elements, first pass: each block's sum (f32 per thread, as the CPU sums a chunk
// in f32) into partial[blockIdx.x] as f64.
template <typename T>
__device__ void sum_of_squares_partial(const T *__restrict__ g, double *__restrict__ partial,
                                       unsigned long long count) {
  float acc = 0.f;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
       i += (size_t)gridDim.x * blockDim.x) {
    const float x = to_f32(g[i]);
    acc += x * x;
  }
  const double s = block_sum((double)acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
#define SUM_OF_SQUARES_PARTIAL_PARAMS(T)                                                           \
  (const T *__restrict__ g, double *__restrict__ partial, unsigned long long count)
KERNEL_DTYPES(sum_of_squares_partial, SUM_OF_SQUARES_PARTIAL_PARAMS, (g, partial, count))

// Second pass: out[0] = Σ partial, one block.
extern "C" __global__ void sum_of_squares_total_f64(const double *__restrict__ partial,
                                                    double *__restrict__ out, int blocks) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < blocks; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = acc;
}
