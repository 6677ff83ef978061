//! Row kernels written so the compiler vectorises them, and compiled twice: for the baseline
//! x86-64 target (SSE2) and for AVX2 + FMA, picked at run time.
//!
//! Why not a SIMD library: the loops are short and plain (`zip`, fixed-width accumulators), the
//! compiler vectorises them well once the target features are on, and the one transcendental
//! they need, `exp`, is written below as a polynomial the vectoriser can take (libm's `expf`
//! is a call per element, which is what made the softmax and SiLU passes slow). Reductions use
//! eight accumulators, since a float sum in one accumulator cannot be reordered into lanes.

/// Defines `fn $name(args) -> ret` whose body is compiled once as is and once with AVX2 + FMA
/// enabled, and calls the second where the CPU has them.
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `fast` was compiled for.
                    return unsafe { fast($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}
pub(crate) use dispatch;

const LANES: usize = 8;

/// `e^x` to about 1 ulp for x in [-87, 88] (clamped outside: 0 is never returned for finite x,
/// so callers skip masked entries rather than pass -inf). Cody–Waite range reduction
/// `x = n·ln2 + r`, |r| ≤ ln2/2, a degree-7 Taylor polynomial for `e^r` (error below 1e-8
/// there), and `2^n` built in the exponent bits. Branch-free, so it vectorises.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + MAGIC;
    let n = shifted - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // The integer n sits in the low bits of `shifted` (offset by 0x4B40_0000).
    let n_int = shifted.to_bits().wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * scale
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    let mut s: f32 = chunks.remainder().iter().sum();
    for a in acc {
        s += a;
    }
    s
}

#[inline(always)]
pub fn dot(xs: &[f32], ys: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let n = xs.len().min(ys.len());
    let (xs, ys) = (&xs[..n], &ys[..n]);
    let mut cx = xs.chunks_exact(LANES);
    let mut cy = ys.chunks_exact(LANES);
    for (a8, b8) in (&mut cx).zip(&mut cy) {
        for ((acc, &a), &b) in acc.iter_mut().zip(a8).zip(b8) {
            *acc += a * b;
        }
    }
    let mut s: f32 = cx
        .remainder()
        .iter()
        .zip(cy.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for a in acc {
        s += a;
    }
    s
}

#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    let mut m = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for a in acc {
        m = m.max(a);
    }
    m
}

/// A raw pointer that rayon tasks may share, for kernels whose tasks write disjoint parts of
/// one output that are not contiguous chunks (rows interleaved across heads). Every use says
/// why the writes are disjoint.
#[derive(Clone, Copy)]
pub struct SharedMut(pub *mut f32);
// SAFETY: only used for writes the kernels partition between tasks (see each use).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The address `offset` elements in (a method, so closures capture the `Sync` wrapper
    /// rather than the raw pointer field).
    pub fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }

    /// # Safety
    /// `offset..offset + len` must be inside the allocation and touched by no other task
    /// while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, offset: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(offset), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, libm) = (exp(x), x.exp());
            worst = worst.max(((ours - libm) / libm).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn reductions_match_sequential_sums() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let ys: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let s: f32 = xs.iter().sum();
        assert!((sum(&xs) - s).abs() < 1e-5);
        let d: f32 = xs.iter().zip(&ys).map(|(a, b)| a * b).sum();
        assert!((dot(&xs, &ys) - d).abs() < 1e-5);
        assert_eq!(
            max(&xs),
            xs.iter().copied().fold(f32::NEG_INFINITY, f32::max)
        );
    }
}
