// Causal grouped-query attention on CUDA, forward and backward, without materialising the
// [t, t] scores: the FlashAttention-2 algorithm of the CPU kernel (src/ops/attention.rs), with
// the same saved statistic (each query row's log-sum-exp) and the same backward recomputation.
//
// Why SIMT (no tensor cores) for now: it is simple enough to be checked by reading, every sum is
// in f32, and the same code serves f32 and bf16 and any head dim up to 256. A tensor-core version
// (mma.sync bf16) replaces the inner products later; the tiling and statistics stay.
//
// Layout: q, o, dq, do are [b, t, heads, d]; k, v, dk, dv are [b, t, kv_heads, d] (contiguous,
// the projections' own layout); query head h reads kv head h / (heads / kv_heads). lse and
// dsum are f32 [b, t, heads] (the index of a query row, as the CPU kernel's Dims::q_row).
//
// Kernels (T = f32 or bf16, D = 32, 64, 128 or 256, the head-dim bucket: a head dim d <= D runs
// zero-padded to D):
//   attention_fwd_d<D>_<T>   grid (ceil(t / ROWS), heads, b), block 128: ROWS query rows of
//                            one head; walks 32-key tiles up to the diagonal, online softmax.
//   attention_dsum_<T>       grid (ceil(b t heads / 8)), block 256: dsum = rowsum(dO o O).
//   attention_dq_d<D>_<T>    grid as the forward: dQ of ROWS rows, recomputing P from lse
//                            (its own pass, as FA2's dQ kernel: deterministic, no atomics).
//   attention_dkdv_d<D>_<T>  grid (ceil(t / ROWS), kv_heads, b), block 128: dK, dV of ROWS
//                            keys, over the query rows of every head of the group at or below
//                            the diagonal.
// Each takes dynamic shared memory (sizes in Cfg<D>::*_FLOATS below, mirrored in
// src/ops/cuda/attention.rs; a launch with less traps rather than overrunning it).
//
// Inside a block: 4 warps; in the forward and dQ kernels each warp owns R query rows (their
// accumulators in registers, lane l holding dims l, l+32, ...), and the lanes split a 32-key
// tile (lane j computes the scores of key j for the warp's R rows, then the probabilities go
// through shared memory to be read back by all lanes). The dK/dV kernel is the transpose: each
// warp owns R keys, and the lanes split a 32-row query tile.

#include <cuda_bf16.h>
#include <stdint.h>

namespace attn {

constexpr int WARPS = 4;
constexpr int THREADS = WARPS * 32;
// Keys per tile in the forward and dQ kernels (one per lane); query rows per tile in dK/dV.
constexpr int TILE = 32;
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

template <int D>
struct Cfg {
    static_assert(D % 32 == 0 && D <= 256, "head-dim bucket");
    // Rows (or keys) each warp owns: fewer at D = 256 to bound the accumulators' registers.
    static constexpr int R = D >= 256 ? 4 : 8;
    static constexpr int ROWS = WARPS * R;
    // Accumulator dims per lane.
    static constexpr int NV = D / 32;
    // Shared-memory row stride in floats: +4 keeps the per-lane float4 row reads of a tile
    // (lane j reads row j) on distinct banks, and rows 16-byte aligned.
    static constexpr int STRIDE = D + 4;
    static constexpr int FWD_FLOATS = (ROWS + 2 * TILE) * STRIDE + ROWS * TILE;
    static constexpr int DQ_FLOATS = (2 * ROWS + 2 * TILE) * STRIDE + ROWS * TILE;
    static constexpr int DKDV_FLOATS = (2 * ROWS + 2 * TILE) * STRIDE + 2 * ROWS * TILE + 2 * TILE;
};

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
    return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
    acc = fmaf(a.z, b.z, acc);
    return fmaf(a.w, b.w, acc);
}

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// Traps when the launch gave less dynamic shared memory than the kernel uses: a wrong size on
// the host side fails the launch instead of overrunning shared memory.
__device__ __forceinline__ void require_smem(int floats) {
    uint32_t bytes;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(bytes));
    if (bytes < uint32_t(floats) * 4u) __trap();
}

// Rows pos0 .. pos0 + rows of head `head` of a [t, heads, d] tensor (one batch) into
// dst[rows][STRIDE] as f32, zero at positions >= t and dims >= d (padding that adds nothing).
template <typename T, int D>
__device__ __forceinline__ void load_rows(float* dst, const T* src, int pos0, int rows, int t,
                                          int heads, int head, int d) {
    for (int idx = threadIdx.x; idx < rows * D; idx += THREADS) {
        const int r = idx / D, c = idx % D, pos = pos0 + r;
        float x = 0.f;
        if (pos < t && c < d) x = to_f32(src[((size_t)pos * heads + head) * d + c]);
        dst[r * Cfg<D>::STRIDE + c] = x;
    }
}

template <typename T, int D>
__device__ void fwd(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                    T* __restrict__ o, float* __restrict__ lse, int t, int nh, int nkv, int d,
                    float scale) {
    using C = Cfg<D>;
    require_smem(C::FWD_FLOATS);
    extern __shared__ float4 smem4[];
    float* qs = reinterpret_cast<float*>(smem4);  // [ROWS][STRIDE]
    float* ks = qs + C::ROWS * C::STRIDE;         // [TILE][STRIDE]
    float* vs = ks + TILE * C::STRIDE;            // [TILE][STRIDE]
    float* ps = vs + TILE * C::STRIDE;            // [ROWS][TILE]
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i0 = blockIdx.x * C::ROWS, h = blockIdx.y, bi = blockIdx.z;
    const int g = h / (nh / nkv);
    const size_t qb = (size_t)bi * t * nh * d, kb = (size_t)bi * t * nkv * d;
    load_rows<T, D>(qs, q + qb, i0, C::ROWS, t, nh, h, d);

    float acc[C::R][C::NV], m[C::R], l[C::R];
#pragma unroll
    for (int r = 0; r < C::R; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.f;
#pragma unroll
        for (int x = 0; x < C::NV; ++x) acc[r][x] = 0.f;
    }
    // Scores in log2 units (exp2f is the hardware's exponential).
    const float sl2 = scale * LOG2E;
    // Key tiles up to this tile's last row; those above the diagonal are never visited.
    const int end = min(i0 + C::ROWS, t);
    for (int j0 = 0; j0 < end; j0 += TILE) {
        __syncthreads();  // the previous tile's ks/vs are read (and, the first time, qs is written)
        load_rows<T, D>(ks, k + kb, j0, TILE, t, nkv, g, d);
        load_rows<T, D>(vs, v + kb, j0, TILE, t, nkv, g, d);
        __syncthreads();
        float s[C::R];
#pragma unroll
        for (int r = 0; r < C::R; ++r) s[r] = 0.f;
        const float* krow = ks + lane * C::STRIDE;
#pragma unroll 4
        for (int c = 0; c < D; c += 4) {
            const float4 kk = ld4(krow + c);
#pragma unroll
            for (int r = 0; r < C::R; ++r)
                s[r] = dot4(ld4(qs + (warp * C::R + r) * C::STRIDE + c), kk, s[r]);
        }
        const int j = j0 + lane;
#pragma unroll
        for (int r = 0; r < C::R; ++r) {
            const int i = i0 + warp * C::R + r;
            const bool valid = j <= i && j < t;
            const float x = valid ? s[r] * sl2 : -INFINITY;
            // Finite: key 0 is unmasked for every row, and the first tile holds it.
            const float m_new = fmaxf(m[r], warp_max(x));
            const float p = valid ? exp2f(x - m_new) : 0.f;
            const float corr = exp2f(m[r] - m_new);  // 0 on the first tile (m = -inf)
            l[r] = l[r] * corr + warp_sum(p);
            m[r] = m_new;
#pragma unroll
            for (int x2 = 0; x2 < C::NV; ++x2) acc[r][x2] *= corr;
            ps[(warp * C::R + r) * TILE + lane] = p;
        }
        __syncwarp();  // a warp's rows of ps are written and read by that warp only
        for (int jj = 0; jj < TILE; ++jj) {
            float vv[C::NV];
#pragma unroll
            for (int x = 0; x < C::NV; ++x) vv[x] = vs[jj * C::STRIDE + lane + 32 * x];
#pragma unroll
            for (int r = 0; r < C::R; ++r) {
                const float p = ps[(warp * C::R + r) * TILE + jj];
#pragma unroll
                for (int x = 0; x < C::NV; ++x) acc[r][x] = fmaf(p, vv[x], acc[r][x]);
            }
        }
        __syncwarp();  // ps is read before the next tile rewrites it
    }
#pragma unroll
    for (int r = 0; r < C::R; ++r) {
        const int i = i0 + warp * C::R + r;
        if (i >= t) continue;
        const float inv = 1.f / l[r];
        T* orow = o + qb + ((size_t)i * nh + h) * d;
#pragma unroll
        for (int x = 0; x < C::NV; ++x) {
            const int c = lane + 32 * x;
            if (c < d) orow[c] = from_f32<T>(acc[r][x] * inv);
        }
        // Natural log, as the CPU kernel saves it: ln(2^m l).
        if (lane == 0) lse[((size_t)bi * t + i) * nh + h] = m[r] * LN2 + logf(l[r]);
    }
}

// dsum[row] = sum_c dO[row][c] O[row][c]: the softmax backward's per-row term, once per row.
// One warp per row.
template <typename T>
__device__ void dsum_rows(const T* __restrict__ o, const T* __restrict__ go,
                          float* __restrict__ dsum, size_t rows, int d) {
    const size_t row = (size_t)blockIdx.x * 8 + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float acc = 0.f;
    for (int c = lane; c < d; c += 32) acc = fmaf(to_f32(o[row * d + c]), to_f32(go[row * d + c]), acc);
    acc = warp_sum(acc);
    if (lane == 0) dsum[row] = acc;
}

template <typename T, int D>
__device__ void dq(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                   const T* __restrict__ go, const float* __restrict__ lse,
                   const float* __restrict__ dsum, T* __restrict__ dqo, int t, int nh, int nkv,
                   int d, float scale) {
    using C = Cfg<D>;
    require_smem(C::DQ_FLOATS);
    extern __shared__ float4 smem4[];
    float* qs = reinterpret_cast<float*>(smem4);  // [ROWS][STRIDE]
    float* gs = qs + C::ROWS * C::STRIDE;         // dO rows [ROWS][STRIDE]
    float* ks = gs + C::ROWS * C::STRIDE;         // [TILE][STRIDE]
    float* vs = ks + TILE * C::STRIDE;            // [TILE][STRIDE]
    float* dss = vs + TILE * C::STRIDE;           // dS [ROWS][TILE]
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i0 = blockIdx.x * C::ROWS, h = blockIdx.y, bi = blockIdx.z;
    const int g = h / (nh / nkv);
    const size_t qb = (size_t)bi * t * nh * d, kb = (size_t)bi * t * nkv * d;
    load_rows<T, D>(qs, q + qb, i0, C::ROWS, t, nh, h, d);
    load_rows<T, D>(gs, go + qb, i0, C::ROWS, t, nh, h, d);

    float acc[C::R][C::NV], lse2[C::R], dr[C::R];
#pragma unroll
    for (int r = 0; r < C::R; ++r) {
        const int i = i0 + warp * C::R + r;
        const size_t row = ((size_t)bi * t + i) * nh + h;
        lse2[r] = i < t ? lse[row] * LOG2E : 0.f;
        dr[r] = i < t ? dsum[row] : 0.f;
#pragma unroll
        for (int x = 0; x < C::NV; ++x) acc[r][x] = 0.f;
    }
    const float sl2 = scale * LOG2E;
    const int end = min(i0 + C::ROWS, t);
    for (int j0 = 0; j0 < end; j0 += TILE) {
        __syncthreads();
        load_rows<T, D>(ks, k + kb, j0, TILE, t, nkv, g, d);
        load_rows<T, D>(vs, v + kb, j0, TILE, t, nkv, g, d);
        __syncthreads();
        float s[C::R], dp[C::R];
#pragma unroll
        for (int r = 0; r < C::R; ++r) s[r] = dp[r] = 0.f;
        const float* krow = ks + lane * C::STRIDE;
        const float* vrow = vs + lane * C::STRIDE;
#pragma unroll 2
        for (int c = 0; c < D; c += 4) {
            const float4 kk = ld4(krow + c), vv = ld4(vrow + c);
#pragma unroll
            for (int r = 0; r < C::R; ++r) {
                s[r] = dot4(ld4(qs + (warp * C::R + r) * C::STRIDE + c), kk, s[r]);
                dp[r] = dot4(ld4(gs + (warp * C::R + r) * C::STRIDE + c), vv, dp[r]);
            }
        }
        const int j = j0 + lane;
#pragma unroll
        for (int r = 0; r < C::R; ++r) {
            const int i = i0 + warp * C::R + r;
            const bool valid = j <= i && j < t;
            const float p = valid ? exp2f(s[r] * sl2 - lse2[r]) : 0.f;
            dss[(warp * C::R + r) * TILE + lane] = p * (dp[r] - dr[r]);
        }
        __syncwarp();
        for (int jj = 0; jj < TILE; ++jj) {
            float kv[C::NV];
#pragma unroll
            for (int x = 0; x < C::NV; ++x) kv[x] = ks[jj * C::STRIDE + lane + 32 * x];
#pragma unroll
            for (int r = 0; r < C::R; ++r) {
                const float g2 = dss[(warp * C::R + r) * TILE + jj];
#pragma unroll
                for (int x = 0; x < C::NV; ++x) acc[r][x] = fmaf(g2, kv[x], acc[r][x]);
            }
        }
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < C::R; ++r) {
        const int i = i0 + warp * C::R + r;
        if (i >= t) continue;
        T* row = dqo + qb + ((size_t)i * nh + h) * d;
#pragma unroll
        for (int x = 0; x < C::NV; ++x) {
            const int c = lane + 32 * x;
            if (c < d) row[c] = from_f32<T>(acc[r][x] * scale);
        }
    }
}

template <typename T, int D>
__device__ void dkdv(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                     const T* __restrict__ go, const float* __restrict__ lse,
                     const float* __restrict__ dsum, T* __restrict__ dko, T* __restrict__ dvo,
                     int t, int nh, int nkv, int d, float scale) {
    using C = Cfg<D>;
    require_smem(C::DKDV_FLOATS);
    extern __shared__ float4 smem4[];
    float* ks = reinterpret_cast<float*>(smem4);  // this block's keys [ROWS][STRIDE]
    float* vs = ks + C::ROWS * C::STRIDE;         // [ROWS][STRIDE]
    float* qs = vs + C::ROWS * C::STRIDE;         // query tile [TILE][STRIDE]
    float* gs = qs + TILE * C::STRIDE;            // dO tile [TILE][STRIDE]
    float* ps = gs + TILE * C::STRIDE;            // P [ROWS][TILE] (key-major)
    float* dss = ps + C::ROWS * TILE;             // dS [ROWS][TILE]
    float* lse2 = dss + C::ROWS * TILE;           // [TILE], log2 units
    float* dr = lse2 + TILE;                      // [TILE]
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int j0 = blockIdx.x * C::ROWS, g = blockIdx.y, bi = blockIdx.z;
    const int rep = nh / nkv;
    const size_t qb = (size_t)bi * t * nh * d, kb = (size_t)bi * t * nkv * d;
    load_rows<T, D>(ks, k + kb, j0, C::ROWS, t, nkv, g, d);
    load_rows<T, D>(vs, v + kb, j0, C::ROWS, t, nkv, g, d);

    float dk[C::R][C::NV], dv[C::R][C::NV];
#pragma unroll
    for (int r = 0; r < C::R; ++r)
#pragma unroll
        for (int x = 0; x < C::NV; ++x) dk[r][x] = dv[r][x] = 0.f;
    const float sl2 = scale * LOG2E;
    for (int hh = 0; hh < rep; ++hh) {
        const int h = g * rep + hh;
        // Query tiles with a row at or after j0; earlier ones are fully masked.
        for (int i0 = (j0 / TILE) * TILE; i0 < t; i0 += TILE) {
            __syncthreads();  // the previous tile's qs/gs are read (first time: ks/vs written)
            load_rows<T, D>(qs, q + qb, i0, TILE, t, nh, h, d);
            load_rows<T, D>(gs, go + qb, i0, TILE, t, nh, h, d);
            if (threadIdx.x < TILE) {
                const int i = i0 + threadIdx.x;
                const size_t row = ((size_t)bi * t + i) * nh + h;
                lse2[threadIdx.x] = i < t ? lse[row] * LOG2E : 0.f;
                dr[threadIdx.x] = i < t ? dsum[row] : 0.f;
            }
            __syncthreads();
            float s[C::R], dp[C::R];
#pragma unroll
            for (int r = 0; r < C::R; ++r) s[r] = dp[r] = 0.f;
            const float* qrow = qs + lane * C::STRIDE;
            const float* grow = gs + lane * C::STRIDE;
#pragma unroll 2
            for (int c = 0; c < D; c += 4) {
                const float4 qq = ld4(qrow + c), gg = ld4(grow + c);
#pragma unroll
                for (int r = 0; r < C::R; ++r) {
                    s[r] = dot4(ld4(ks + (warp * C::R + r) * C::STRIDE + c), qq, s[r]);
                    dp[r] = dot4(ld4(vs + (warp * C::R + r) * C::STRIDE + c), gg, dp[r]);
                }
            }
            const int i = i0 + lane;
#pragma unroll
            for (int r = 0; r < C::R; ++r) {
                const int j = j0 + warp * C::R + r;
                const bool valid = j <= i && i < t;  // and so j < t
                const float p = valid ? exp2f(s[r] * sl2 - lse2[lane]) : 0.f;
                ps[(warp * C::R + r) * TILE + lane] = p;
                dss[(warp * C::R + r) * TILE + lane] = p * (dp[r] - dr[lane]);
            }
            __syncwarp();
            for (int ii = 0; ii < TILE; ++ii) {
                float qv[C::NV], gv[C::NV];
#pragma unroll
                for (int x = 0; x < C::NV; ++x) {
                    qv[x] = qs[ii * C::STRIDE + lane + 32 * x];
                    gv[x] = gs[ii * C::STRIDE + lane + 32 * x];
                }
#pragma unroll
                for (int r = 0; r < C::R; ++r) {
                    const float p = ps[(warp * C::R + r) * TILE + ii];
                    const float g2 = dss[(warp * C::R + r) * TILE + ii];
#pragma unroll
                    for (int x = 0; x < C::NV; ++x) {
                        dv[r][x] = fmaf(p, gv[x], dv[r][x]);
                        dk[r][x] = fmaf(g2, qv[x], dk[r][x]);
                    }
                }
            }
            __syncwarp();
        }
    }
#pragma unroll
    for (int r = 0; r < C::R; ++r) {
        const int j = j0 + warp * C::R + r;
        if (j >= t) continue;
        const size_t off = kb + ((size_t)j * nkv + g) * d;
#pragma unroll
        for (int x = 0; x < C::NV; ++x) {
            const int c = lane + 32 * x;
            if (c < d) {
                dko[off + c] = from_f32<T>(dk[r][x] * scale);
                dvo[off + c] = from_f32<T>(dv[r][x]);
            }
        }
    }
}

}  // namespace attn

#define ATTN_DIM(T, TN, D)                                                                       \
    extern "C" __global__ void __launch_bounds__(attn::THREADS)                                  \
        attention_fwd_d##D##_##TN(const T* q, const T* k, const T* v, T* o, float* lse, int t,   \
                                  int nh, int nkv, int d, float scale) {                         \
        attn::fwd<T, D>(q, k, v, o, lse, t, nh, nkv, d, scale);                                  \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(attn::THREADS)                                  \
        attention_dq_d##D##_##TN(const T* q, const T* k, const T* v, const T* go,                \
                                 const float* lse, const float* dsum, T* dq, int t, int nh,      \
                                 int nkv, int d, float scale) {                                  \
        attn::dq<T, D>(q, k, v, go, lse, dsum, dq, t, nh, nkv, d, scale);                        \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(attn::THREADS)                                  \
        attention_dkdv_d##D##_##TN(const T* q, const T* k, const T* v, const T* go,              \
                                   const float* lse, const float* dsum, T* dk, T* dv, int t,     \
                                   int nh, int nkv, int d, float scale) {                        \
        attn::dkdv<T, D>(q, k, v, go, lse, dsum, dk, dv, t, nh, nkv, d, scale);                  \
    }

#define ATTN_TYPE(T, TN)                                                                         \
    extern "C" __global__ void __launch_bounds__(256)                                            \
        attention_dsum_##TN(const T* o, const T* go, float* dsum, size_t rows, int d) {          \
        attn::dsum_rows<T>(o, go, dsum, rows, d);                                                \
    }                                                                                            \
    ATTN_DIM(T, TN, 32)                                                                          \
    ATTN_DIM(T, TN, 64)                                                                          \
    ATTN_DIM(T, TN, 128)                                                                         \
    ATTN_DIM(T, TN, 256)

ATTN_TYPE(float, f32)
ATTN_TYPE(__nv_bfloat16, bf16)
