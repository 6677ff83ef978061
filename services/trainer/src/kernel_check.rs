//! `miner-kernel-check`: each fused op's kernels against a baseline on the same seeded inputs,
//! one JSON line per op × dtype × pass × shape, so a GPU machine proves its CUDA kernels before
//! training on them (scripts/gpu-check reads the lines).
//!
//! * `--device cuda[:N]`: the tested side is the op on that GPU (the CUDA kernels: f32, and
//!   bf16 inputs); the baseline is the fused CPU kernel in f32 on the same values (for bf16,
//!   the inputs are rounded to bf16 first and the CPU computes on those rounded values).
//! * `--device cpu`: the tested side is the fused CPU kernel, the baseline the composed
//!   reference ([`crate::ops::reference`]): this proves the harness (inputs, gradients,
//!   comparison) on a machine without a GPU.
//!
//! The backward pass is checked through candle's autograd: the gradients of
//! `Σ R ∘ op(inputs)` for a seeded random `R`, for every differentiable input.
//!
//! Adding an op: one more [`OpCheck`] in [`registry`] (attention goes there, next to the
//! marked line), with a `run` function built like [`check_rms_norm`]. AdamW has no backward:
//! its "backward" line checks the gradient's sum of squares, the other pass of `ops::adamw`.

use candle_core::{DType, Device, Result, Tensor, Var};
use serde::Serialize;

use crate::ops;

/// The input dtype of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckDType {
    F32,
    Bf16,
}

impl CheckDType {
    pub const ALL: [CheckDType; 2] = [CheckDType::F32, CheckDType::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            CheckDType::F32 => "f32",
            CheckDType::Bf16 => "bf16",
        }
    }

    fn dtype(self) -> DType {
        match self {
            CheckDType::F32 => DType::F32,
            CheckDType::Bf16 => DType::BF16,
        }
    }
}

/// Which pass of an op a check compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Forward,
    Backward,
}

impl Pass {
    pub const ALL: [Pass; 2] = [Pass::Forward, Pass::Backward];

    pub fn name(self) -> &'static str {
        match self {
            Pass::Forward => "forward",
            Pass::Backward => "backward",
        }
    }
}

/// The largest error allowed, as [`Errors::max_rel`], for a tested side computing in
/// `tested_dtype` (on `tested`, against its baseline). Two f32 kernels differ by summation order
/// and `exp`'s last bits (1e-6 seen); the composed reference is less exact: the gradient it sends
/// through the row maximum of its log-softmax is zero only in exact arithmetic, and at a 32 000-
/// entry vocabulary the rounding left there reaches 3e-4 of the gradient's scale. A bf16 result
/// is rounded once more (2⁻⁹ relative).
pub fn tolerance(tested_dtype: DType, tested: &Tested) -> f64 {
    match (tested_dtype, tested) {
        (DType::BF16, _) => 2e-2,
        (_, Tested::Cpu) => 1e-3,
        _ => 1e-4,
    }
}

/// How far a result is from its baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Errors {
    /// max |got − want|.
    pub max_abs: f64,
    /// max |got − want| / (|want| + rms(want)): relative for the large values, relative to the
    /// tensor's scale for those near zero (a gradient's many tiny entries).
    pub max_rel: f64,
    /// Every value finite on both sides, and as many of them.
    pub comparable: bool,
}

impl Errors {
    pub fn ok(&self, tol: f64) -> bool {
        self.comparable && self.max_rel <= tol
    }

    /// The worse of two (a check over several tensors: an op's gradients).
    pub fn max(self, other: Errors) -> Errors {
        Errors {
            max_abs: self.max_abs.max(other.max_abs),
            max_rel: self.max_rel.max(other.max_rel),
            comparable: self.comparable && other.comparable,
        }
    }
}

/// `got` against `want`.
pub fn compare(got: &[f32], want: &[f32]) -> Errors {
    if got.len() != want.len() {
        return Errors {
            max_abs: f64::INFINITY,
            max_rel: f64::INFINITY,
            comparable: false,
        };
    }
    let scale = rms(want);
    let mut e = Errors {
        max_abs: 0.0,
        max_rel: 0.0,
        comparable: true,
    };
    for (&g, &w) in got.iter().zip(want) {
        if !(g.is_finite() && w.is_finite()) {
            e.comparable = false;
            continue;
        }
        let d = (g as f64 - w as f64).abs();
        let denom = (w as f64).abs() + scale;
        let rel = if d == 0.0 { 0.0 } else { d / denom };
        e.max_abs = e.max_abs.max(d);
        e.max_rel = e.max_rel.max(rel);
    }
    e
}

fn rms(xs: &[f32]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let finite = xs.iter().filter(|x| x.is_finite());
    (finite.map(|&x| x as f64 * x as f64).sum::<f64>() / xs.len() as f64).sqrt()
}

/// One JSON line of the output (the format scripts/gpu-check parses; `error` only on a check
/// that could not run).
#[derive(Debug, Serialize)]
pub struct Line {
    pub op: &'static str,
    pub dtype: &'static str,
    pub pass: &'static str,
    pub shape: String,
    /// `null` where not comparable (a non-finite value, or an error).
    pub max_abs_err: Option<f64>,
    pub max_rel_err: Option<f64>,
    pub tol: f64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `[2,128,4096]`.
pub fn shape_string(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(","))
}

/// A tested result and its baseline, as f32 on the host.
pub type Pair = (Vec<f32>, Vec<f32>);

/// One op's checks: a check per shape × dtype × pass.
pub struct OpCheck {
    pub op: &'static str,
    /// The shape each check is named by (the op's main input), one check per entry.
    pub shapes: &'static [&'static [usize]],
    pub run: fn(&mut Env, &[usize], Pass) -> Result<Vec<Pair>>,
}

/// Every op the binary checks.
pub fn registry() -> Vec<OpCheck> {
    vec![
        OpCheck {
            op: "rms_norm",
            // Hidden sizes of real models, and a row that is not a multiple of 32.
            shapes: &[&[2, 128, 4096], &[4, 64, 2048], &[3, 37, 1000]],
            run: check_rms_norm,
        },
        OpCheck {
            op: "rope",
            // [b, t, heads, head_dim]: LLaMA's 128, and 80 (not a multiple of 32).
            shapes: &[&[2, 128, 32, 128], &[2, 37, 6, 80]],
            run: check_rope,
        },
        OpCheck {
            op: "swiglu",
            shapes: &[&[2, 128, 5632], &[3, 37, 1000]],
            run: check_swiglu,
        },
        OpCheck {
            op: "causal_lm_loss",
            // [b, t, vocab]: LLaMA-2's 32 000, and a vocabulary that is not a multiple of 32.
            shapes: &[&[2, 128, 32000], &[3, 37, 1003]],
            run: check_causal_lm_loss,
        },
        OpCheck {
            op: "adamw",
            // A 2048² projection, and a gain vector of 1000. "forward" is the update, "backward"
            // the gradient's sum of squares (the pass over the gradients before it).
            shapes: &[&[2048, 2048], &[1000]],
            run: check_adamw,
        },
        OpCheck {
            op: "attention",
            // [b, t, heads, kv_heads, head_dim]: grouped-query heads at a length that is no
            // multiple of any tile; a small head dim (the tests' models, zero-padded to 32);
            // LLaMA-3B's head dim 128 at a long sequence.
            shapes: &[
                &[2, 200, 8, 2, 64],
                &[2, 77, 4, 4, 16],
                &[1, 2048, 8, 2, 128],
            ],
            run: check_attention,
        },
    ]
}

/// The side under test.
#[derive(Debug, Clone)]
pub enum Tested {
    /// The fused CPU kernels, against the composed reference.
    Cpu,
    /// The ops on this CUDA device, against the fused CPU kernels.
    Cuda(Device),
}

/// An op's input on both sides.
pub struct Input {
    tested: Tensor,
    baseline: Tensor,
    /// Whether the backward check compares this input's gradient.
    grad: bool,
}

/// The state of a run: what is tested, in which dtype, the seeded generator, and whether to
/// perturb results (the hidden `--perturb`, which proves a wrong kernel fails the check).
pub struct Env {
    tested: Tested,
    dtype: CheckDType,
    seed: u64,
    perturb: bool,
}

impl Env {
    pub fn new(tested: Tested, dtype: CheckDType, seed: u64, perturb: bool) -> Self {
        Env {
            tested,
            dtype,
            seed: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            perturb,
        }
    }

    /// The dtype the tested side computes in: bf16 only on CUDA (the CPU kernels are f32).
    pub fn tested_dtype(&self) -> DType {
        match self.tested {
            Tested::Cpu => DType::F32,
            Tested::Cuda(_) => self.dtype.dtype(),
        }
    }

    fn tested_device(&self) -> Device {
        match &self.tested {
            Tested::Cpu => Device::Cpu,
            Tested::Cuda(d) => d.clone(),
        }
    }

    /// Uniform in [-1, 1) (xorshift: the same values on every machine).
    fn next(&mut self) -> f32 {
        let s = &mut self.seed;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// Seeded values in [-scale, scale), rounded to the check's dtype, on both sides.
    pub fn input(&mut self, shape: &[usize], scale: f32, grad: bool) -> Result<Input> {
        self.input_around(shape, 0.0, scale, grad)
    }

    /// Seeded values in [center - scale, center + scale), rounded to the check's dtype, on both
    /// sides (rounded once: shifting a bf16 tensor afterwards would round the tested side again).
    pub fn input_around(
        &mut self,
        shape: &[usize],
        center: f32,
        scale: f32,
        grad: bool,
    ) -> Result<Input> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| center + self.next() * scale).collect();
        let rounded = Tensor::from_vec(data, shape, &Device::Cpu)?
            .to_dtype(self.dtype.dtype())?
            .to_dtype(DType::F32)?;
        let tested = rounded
            .to_dtype(self.tested_dtype())?
            .to_device(&self.tested_device())?;
        Ok(Input {
            tested,
            baseline: rounded,
            grad,
        })
    }

    /// Token ids in `0..vocab`, u32 on both sides (no gradient).
    pub fn ids(&mut self, shape: &[usize], vocab: usize) -> Result<Input> {
        let n: usize = shape.iter().product();
        let data: Vec<u32> = (0..n)
            .map(|_| (((self.next() + 1.0) / 2.0 * vocab as f32) as usize).min(vocab - 1) as u32)
            .collect();
        let baseline = Tensor::from_vec(data, shape, &Device::Cpu)?;
        Ok(Input {
            tested: baseline.to_device(&self.tested_device())?,
            baseline,
            grad: false,
        })
    }

    /// Runs `fused` on the tested side and the baseline (`fused` on the CPU in f32 when CUDA
    /// is tested, `reference` when the CPU is), and pairs the results: the outputs (forward),
    /// or the gradient of every input marked `grad` (backward).
    pub fn run(
        &mut self,
        pass: Pass,
        inputs: &[Input],
        fused: fn(&[Tensor]) -> Result<Tensor>,
        reference: fn(&[Tensor]) -> Result<Tensor>,
    ) -> Result<Vec<Pair>> {
        let baseline_op = match self.tested {
            Tested::Cpu => reference,
            Tested::Cuda(_) => fused,
        };
        let tested: Vec<Tensor> = inputs.iter().map(|i| i.tested.clone()).collect();
        let baseline: Vec<Tensor> = inputs.iter().map(|i| i.baseline.clone()).collect();
        let grads: Vec<bool> = inputs.iter().map(|i| i.grad).collect();
        let mut pairs = match pass {
            Pass::Forward => vec![(host(&fused(&tested)?)?, host(&baseline_op(&baseline)?)?)],
            Pass::Backward => {
                let shape = baseline_op(&baseline)?.dims().to_vec();
                let upstream = self.input(&shape, 1.0, false)?;
                let got = gradients(&tested, &grads, &upstream.tested, fused)?;
                let want = gradients(&baseline, &grads, &upstream.baseline, baseline_op)?;
                got.into_iter().zip(want).collect()
            }
        };
        if self.perturb {
            for (got, want) in &mut pairs {
                if let Some(g) = got.first_mut() {
                    // 10% of the larger of the value and the tensor's scale: above any tolerance.
                    let step = 0.1 * ((*want.first().unwrap_or(&0.0)).abs() as f64 + rms(want));
                    *g += if step > 0.0 { step as f32 } else { 1.0 };
                }
            }
        }
        Ok(pairs)
    }
}

/// A tensor's values as f32 on the host.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1()
}

/// The gradients of `Σ upstream ∘ f(xs)` for the inputs marked in `grad`, on the host.
fn gradients(
    xs: &[Tensor],
    grad: &[bool],
    upstream: &Tensor,
    f: fn(&[Tensor]) -> Result<Tensor>,
) -> Result<Vec<Vec<f32>>> {
    let mut ts = Vec::with_capacity(xs.len());
    for (x, &g) in xs.iter().zip(grad) {
        ts.push(if g {
            Var::from_tensor(x)?.as_tensor().clone()
        } else {
            x.clone()
        });
    }
    let y = f(&ts)?;
    // In the op's output dtype (the loss is f32 for bf16 logits); the values are already
    // rounded to the check's dtype, so the cast is exact.
    let store = y
        .broadcast_mul(&upstream.to_dtype(y.dtype())?)?
        .sum_all()?
        .backward()?;
    let mut out = Vec::new();
    for (t, &g) in ts.iter().zip(grad) {
        if g {
            let Some(d) = store.get(t) else {
                candle_core::bail!("no gradient reached an input");
            };
            out.push(host(d)?);
        }
    }
    Ok(out)
}

const EPS: f64 = 1e-5;

/// RMSNorm: `[.., n]` activations (unit scale) and a gain near 1.
pub fn check_rms_norm(env: &mut Env, shape: &[usize], pass: Pass) -> Result<Vec<Pair>> {
    let n = shape.last().copied().unwrap_or(1);
    let x = env.input(shape, 1.0, true)?;
    // A gain around 1, as trained models have (0.5..1.5).
    let w = env.input_around(&[n], 1.0, 0.5, true)?;
    env.run(
        pass,
        &[x, w],
        |t| ops::rms_norm(&t[0], &t[1], EPS),
        |t| ops::reference::rms_norm(&t[0], &t[1], EPS),
    )
}

/// Rotary embedding: `[b, t, heads, d]` with `[t, d]` tables of real angles (cos/sin of
/// position × frequency, as the model builds them).
pub fn check_rope(env: &mut Env, shape: &[usize], pass: Pass) -> Result<Vec<Pair>> {
    let (t, d) = (shape[1], shape[3]);
    let x = env.input(shape, 1.0, true)?;
    let table = |f: fn(f32) -> f32, env: &Env| -> Result<Input> {
        let half = d / 2;
        let mut v = Vec::with_capacity(t * d);
        for pos in 0..t {
            for j in 0..d {
                let freq = 10000f32.powf(-((j % half) as f32 * 2.0 / d as f32));
                v.push(f(pos as f32 * freq));
            }
        }
        let rounded = Tensor::from_vec(v, (t, d), &Device::Cpu)?
            .to_dtype(env.dtype.dtype())?
            .to_dtype(DType::F32)?;
        Ok(Input {
            tested: rounded
                .to_dtype(env.tested_dtype())?
                .to_device(&env.tested_device())?,
            baseline: rounded,
            grad: false,
        })
    };
    let (cos, sin) = (table(f32::cos, env)?, table(f32::sin, env)?);
    env.run(
        pass,
        &[x, cos, sin],
        |t| ops::rope(&t[0], &t[1], &t[2]),
        |t| ops::reference::rope(&t[0], &t[1], &t[2]),
    )
}

/// SwiGLU: gate and up projections of unit scale (×4: the sigmoid's tails too).
pub fn check_swiglu(env: &mut Env, shape: &[usize], pass: Pass) -> Result<Vec<Pair>> {
    let gate = env.input(shape, 4.0, true)?;
    let up = env.input(shape, 1.0, true)?;
    env.run(
        pass,
        &[gate, up],
        |t| ops::swiglu(&t[0], &t[1]),
        |t| ops::reference::swiglu(&t[0], &t[1]),
    )
}

/// The causal LM loss: logits `[b, t, vocab]` in ±4 and random next tokens.
pub fn check_causal_lm_loss(env: &mut Env, shape: &[usize], pass: Pass) -> Result<Vec<Pair>> {
    let logits = env.input(shape, 4.0, true)?;
    let ids = env.ids(&shape[..2], shape[2])?;
    env.run(
        pass,
        &[logits, ids],
        |t| ops::causal_lm_loss(&t[0], &t[1]),
        |t| ops::reference::causal_lm_loss(&t[0], &t[1]),
    )
}

/// The step scalars of the AdamW check: step 10 of a run with clipping, weight decay on.
const ADAMW: ops::adamw::AdamWStep = ops::adamw::AdamWStep {
    lr: 3e-4,
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weight_decay: 0.1,
    // 1 − β^10
    bias_correction1: 0.651_321_559_9,
    bias_correction2: 0.401_263_060_8,
    grad_scale: 0.5,
};

/// An AdamW update: `ops::adamw::adamw_step` or its composed reference.
type AdamWFn = fn(
    &Tensor,
    &Tensor,
    &Tensor,
    &Tensor,
    &ops::adamw::AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)>;

/// `(p', m', v')` flattened into one tensor.
fn adamw_update(t: &[Tensor], f: AdamWFn) -> Result<Tensor> {
    // The update is f32 (master weights): bf16 checks run it on bf16-rounded values.
    let f32s: Vec<Tensor> = t
        .iter()
        .map(|x| x.to_dtype(DType::F32))
        .collect::<Result<_>>()?;
    let (p, m, v) = f(&f32s[0], &f32s[1], &f32s[2], &f32s[3], &ADAMW)?;
    Tensor::cat(&[p.flatten_all()?, m.flatten_all()?, v.flatten_all()?], 0)
}

/// Causal attention: `q` `[b, t, heads, d]`, `k`/`v` `[b, t, kv_heads, d]` in ±1 (the shape
/// is `[b, t, heads, kv_heads, d]`); the output, then the gradients of q, k and v.
pub fn check_attention(env: &mut Env, shape: &[usize], pass: Pass) -> Result<Vec<Pair>> {
    let &[b, t, nh, nkv, d] = shape else {
        candle_core::bail!("attention check: shape {shape:?} is not [b, t, heads, kv_heads, d]");
    };
    let q = env.input(&[b, t, nh, d], 1.0, true)?;
    let k = env.input(&[b, t, nkv, d], 1.0, true)?;
    let v = env.input(&[b, t, nkv, d], 1.0, true)?;
    // The softmax scale from the head dim, as the model uses it (fn pointers capture nothing).
    fn scale(q: &Tensor) -> Result<f64> {
        Ok(1.0 / (q.dim(3)? as f64).sqrt())
    }
    env.run(
        pass,
        &[q, k, v],
        |t| ops::attention(&t[0], &t[1], &t[2], scale(&t[0])?),
        |t| ops::reference::attention(&t[0], &t[1], &t[2], scale(&t[0])?),
    )
}

/// AdamW: the update of a parameter and its moments (forward), and the gradient's sum of
/// squares (backward), as scalar results; the moments are positive for v.
pub fn check_adamw(env: &mut Env, shape: &[usize], pass: Pass) -> Result<Vec<Pair>> {
    let p = env.input(shape, 1.0, false)?;
    let g = env.input(shape, 1e-2, false)?;
    let m = env.input(shape, 1e-2, false)?;
    let v = env.input(shape, 1e-4, false)?;
    let v = Input {
        tested: v.tested.abs()?,
        baseline: v.baseline.abs()?,
        grad: false,
    };
    match pass {
        Pass::Forward => env.run(
            Pass::Forward,
            &[p, g, m, v],
            |t| adamw_update(t, ops::adamw::adamw_step),
            |t| adamw_update(t, ops::adamw::reference_step),
        ),
        // The sum as a one-element tensor: the same comparison as any result.
        Pass::Backward => env.run(
            Pass::Forward,
            &[g],
            |t| Tensor::new(&[ops::adamw::sum_of_squares(&t[0])? as f32], &Device::Cpu),
            |t| {
                let s = t[0].to_dtype(DType::F64)?.sqr()?.sum_all()?;
                s.to_dtype(DType::F32)?.reshape(1)
            },
        ),
    }
}

/// Runs one check and makes its line.
pub fn check(env: &mut Env, op: &OpCheck, shape: &[usize], pass: Pass) -> Line {
    let tol = tolerance(env.tested_dtype(), &env.tested);
    let mut line = Line {
        op: op.op,
        dtype: env.dtype.name(),
        pass: pass.name(),
        shape: shape_string(shape),
        max_abs_err: None,
        max_rel_err: None,
        tol,
        ok: false,
        error: None,
    };
    match (op.run)(env, shape, pass) {
        Ok(pairs) if !pairs.is_empty() => {
            let e = pairs
                .iter()
                .map(|(g, w)| compare(g, w))
                .reduce(Errors::max)
                .unwrap_or(Errors {
                    max_abs: f64::INFINITY,
                    max_rel: f64::INFINITY,
                    comparable: false,
                });
            if e.comparable {
                line.max_abs_err = Some(e.max_abs);
                line.max_rel_err = Some(e.max_rel);
            }
            line.ok = e.ok(tol);
        }
        Ok(_) => line.error = Some("nothing to compare".into()),
        Err(e) => line.error = Some(e.to_string()),
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The comparison passes equal values and values within tolerance, and fails a wrong
    /// value, a NaN and a length mismatch: a broken kernel cannot pass the check.
    #[test]
    fn compare_fails_wrong_values() {
        let want = [1.0f32, -2.0, 0.5, 0.0];
        assert!(compare(&want, &want).ok(1e-4));
        assert_eq!(compare(&want, &want).max_rel, 0.0);
        let close = [1.00001f32, -2.0, 0.5, 0.0];
        assert!(compare(&close, &want).ok(1e-4));
        let wrong = [1.0f32, -2.0, 0.5, 0.01];
        let e = compare(&wrong, &want);
        assert!(!e.ok(1e-4), "{e:?}");
        assert!((e.max_abs - 0.01).abs() < 1e-9);
        assert!(!compare(&[1.0, -2.0, f32::NAN, 0.0], &want).ok(1.0));
        assert!(!compare(&want[..3], &want).ok(1.0));
    }

    /// An error on an entry near zero counts relative to the tensor's scale, not to the entry
    /// (where any difference would be infinitely large), nor is it hidden by an absolute floor.
    #[test]
    fn near_zero_entries_are_judged_by_the_tensor_scale() {
        let want = [1e-3f32, 1e-9, -1e-3];
        let got = [1e-3f32, 2e-9, -1e-3];
        assert!(compare(&got, &want).ok(1e-4));
        let got = [1e-3f32, 1e-4, -1e-3];
        assert!(!compare(&got, &want).ok(1e-2));
    }

    /// The line is the JSON scripts/gpu-check parses, keys in this order, `error` only when
    /// set, and null errors where nothing was comparable.
    #[test]
    fn line_format() {
        let line = Line {
            op: "rms_norm",
            dtype: "bf16",
            pass: "backward",
            shape: shape_string(&[2, 128, 4096]),
            max_abs_err: Some(0.5),
            max_rel_err: Some(0.25),
            tol: 0.02,
            ok: false,
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"op":"rms_norm","dtype":"bf16","pass":"backward","shape":"[2,128,4096]","max_abs_err":0.5,"max_rel_err":0.25,"tol":0.02,"ok":false}"#
        );
        let line = Line {
            max_abs_err: None,
            error: Some("boom".into()),
            ..line
        };
        let s = serde_json::to_string(&line).unwrap();
        assert!(s.contains(r#""max_abs_err":null"#) && s.ends_with(r#""error":"boom"}"#));
    }
}
