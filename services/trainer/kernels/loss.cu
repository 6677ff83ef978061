// The causal language-model loss, as src/ops/cross_entropy.rs computes it: per predicting row
// (every position but each sequence's last) its log-sum-exp, saved for the backward pass, and
// lse − logit[target]; the mean over those rows in f64. The backward pass writes
// (softmax(row) − onehot(target)) · g / n in one pass, zero at each sequence's last position.
// Logits [b, t, vocab] (f32 or bf16), ids [b, t] u32. Launchers: src/ops/cuda/loss.rs.
#include "common.cuh"

// One block per row of b·t. A target outside the vocabulary (the launcher refuses those before
// launching) gives a NaN loss, never an out-of-bounds read.
template <typename T>
__device__ void causal_lm_loss_rows(const T *__restrict__ logits, const uint32_t *__restrict__ ids,
                                    float *__restrict__ lse, float *__restrict__ loss, int v,
                                    int t) {
  const size_t row = blockIdx.x;
  if (row % t == (size_t)(t - 1)) {
    // The whole block leaves together: no block reduction is skipped by some threads only.
    if (threadIdx.x == 0) lse[row] = loss[row] = 0.f;
    return;
  }
  const T *x = logits + row * (size_t)v;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < v; i += blockDim.x) m = fmaxf(m, to_f32(x[i]));
  m = block_max(m);
  float s = 0.f;
  for (int i = threadIdx.x; i < v; i += blockDim.x) s += expf(to_f32(x[i]) - m);
  s = block_sum(s);
  if (threadIdx.x == 0) {
    const float l = m + logf(s);
    const uint32_t target = ids[row + 1];
    lse[row] = l;
    loss[row] = target < (uint32_t)v ? l - to_f32(x[target]) : NAN;
  }
}
#define CAUSAL_LM_LOSS_ROWS_PARAMS(T)                                                              \
  (const T *__restrict__ logits, const uint32_t *__restrict__ ids, float *__restrict__ lse,        \
   float *__restrict__ loss, int v, int t)
KERNEL_DTYPES(causal_lm_loss_rows, CAUSAL_LM_LOSS_ROWS_PARAMS, (logits, ids, lse, loss, v, t))

// out[0] = Σ loss / n, summed in f64 (n can be millions of rows). One block; the unused rows
// hold 0.
extern "C" __global__ void causal_lm_loss_mean_f32(const float *__restrict__ loss,
                                                   float *__restrict__ out, long long rows,
                                                   long long n) {
  double acc = 0.0;
  for (long long r = threadIdx.x; r < rows; r += blockDim.x) acc += (double)loss[r];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = (float)(acc / (double)n);
}

// dlogits = (exp(x − lse) − [i = target]) · grad[0] / n; one block per row. grad is the
// incoming gradient of the (scalar) loss, read on the device: no copy to the host.
template <typename T>
__device__ void causal_lm_loss_bwd(const T *__restrict__ logits, const uint32_t *__restrict__ ids,
                                   const float *__restrict__ lse, const float *__restrict__ grad,
                                   T *__restrict__ dlogits, int v, int t, float n) {
  const size_t row = blockIdx.x;
  T *o = dlogits + row * (size_t)v;
  if (row % t == (size_t)(t - 1)) {
    for (int i = threadIdx.x; i < v; i += blockDim.x) o[i] = from_f32<T>(0.f);
    return;
  }
  const T *x = logits + row * (size_t)v;
  const float scale = grad[0] / n;
  const float l = lse[row];
  const uint32_t target = ids[row + 1];
  for (int i = threadIdx.x; i < v; i += blockDim.x) {
    float d = expf(to_f32(x[i]) - l) * scale;
    if ((uint32_t)i == target) d -= scale;
    o[i] = from_f32<T>(d);
  }
}
#define CAUSAL_LM_LOSS_BWD_PARAMS(T)                                                               \
  (const T *__restrict__ logits, const uint32_t *__restrict__ ids, const float *__restrict__ lse,  \
   const float *__restrict__ grad, T *__restrict__ dlogits, int v, int t, float n)
KERNEL_DTYPES(causal_lm_loss_bwd, CAUSAL_LM_LOSS_BWD_PARAMS,
              (logits, ids, lse, grad, dlogits, v, t, n))
