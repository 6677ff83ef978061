//! The fused kernels against the composed reference (values and gradients, through candle's
//! autograd) and against finite differences (each backward pass's math on its own).

use candle_core::{Device, Tensor, Var};

use super::{attention, causal_lm_loss, reference, rms_norm, rope, swiglu};

fn rand(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max |a − b| relative to max |b| (or to 1e-2 where b is about 0, as dq at t = 1: exactly 0 in exact arithmetic).
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap()) / max_abs(b).max(1e-2)
}

/// Forward values and the gradients of `Σ w ∘ f(xs)` for every input, for `f`.
fn value_and_grads(
    xs: &[Tensor],
    w: &Tensor,
    f: impl Fn(&[Tensor]) -> Tensor,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = xs.iter().map(|x| Var::from_tensor(x).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts);
    let g = (y.clone() * w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let grads = ts.iter().map(|t| g.get(t).unwrap().clone()).collect();
    (y.detach(), grads)
}

/// The fused op and the reference agree on values and on every input's gradient.
fn check_against_reference(
    what: &str,
    xs: &[Tensor],
    fused: impl Fn(&[Tensor]) -> Tensor,
    composed: impl Fn(&[Tensor]) -> Tensor,
    tol: f32,
) {
    let probe = composed(xs);
    let w = rand(probe.dims(), 99, 1.0);
    let (y1, g1) = value_and_grads(xs, &w, fused);
    let (y2, g2) = value_and_grads(xs, &w, composed);
    let e = rel(&y1, &y2);
    assert!(e < tol, "{what}: forward differs by {e:e}");
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        let e = rel(a, b);
        assert!(e < tol, "{what}: gradient of input {i} differs by {e:e}");
    }
}

/// Attention (b, t, heads, kv heads, head dim) against the composed reference.
fn check_attention(b: usize, t: usize, nh: usize, nkv: usize, d: usize) {
    let q = rand(&[b, t, nh, d], 1, 1.0);
    let k = rand(&[b, t, nkv, d], 2, 1.0);
    let v = rand(&[b, t, nkv, d], 3, 1.0);
    let scale = 1.0 / (d as f64).sqrt();
    check_against_reference(
        &format!("attention b{b} t{t} h{nh}/{nkv} d{d}"),
        &[q, k, v],
        |x| attention(&x[0], &x[1], &x[2], scale).unwrap(),
        |x| reference::attention(&x[0], &x[1], &x[2], scale).unwrap(),
        2e-5,
    );
}

/// Sequence lengths off the tile size (64), a single position, a single kv head, grouped
/// heads, and a long row.
#[test]
fn attention_matches_the_composed_reference() {
    check_attention(2, 37, 4, 2, 16);
    check_attention(1, 130, 4, 1, 8);
    check_attention(3, 64, 2, 2, 32);
    check_attention(1, 1, 4, 2, 16);
    check_attention(1, 65, 6, 3, 12);
    check_attention(1, 2048, 2, 1, 16);
}

#[test]
fn elementwise_ops_match_the_composed_reference() {
    let x = rand(&[2, 37, 48], 4, 2.0);
    let w = rand(&[48], 5, 1.0);
    check_against_reference(
        "rms_norm",
        &[x.clone(), w],
        |x| rms_norm(&x[0], &x[1], 1e-6).unwrap(),
        |x| reference::rms_norm(&x[0], &x[1], 1e-6).unwrap(),
        2e-6,
    );
    let (t, d) = (37, 16);
    let ang = rand(&[t, d / 2], 6, 3.0);
    let ang = Tensor::cat(&[&ang, &ang], 1).unwrap();
    let (cos, sin) = (ang.cos().unwrap(), ang.sin().unwrap());
    check_against_reference(
        "rope",
        &[rand(&[2, t, 3, d], 7, 1.0)],
        |x| rope(&x[0], &cos, &sin).unwrap(),
        |x| reference::rope(&x[0], &cos, &sin).unwrap(),
        2e-6,
    );
    check_against_reference(
        "swiglu",
        &[rand(&[3, 1000], 8, 6.0), rand(&[3, 1000], 9, 2.0)],
        |x| swiglu(&x[0], &x[1]).unwrap(),
        |x| reference::swiglu(&x[0], &x[1]).unwrap(),
        2e-6,
    );
    let ids: Vec<u32> = (0..2 * 19).map(|i| (i * 7 % 50) as u32).collect();
    let ids = Tensor::from_vec(ids, (2, 19), &Device::Cpu).unwrap();
    let logits = rand(&[2, 19, 50], 10, 4.0);
    let (ours, g_ours) = value_and_grads(
        std::slice::from_ref(&logits),
        &Tensor::new(1f32, &Device::Cpu).unwrap(),
        |x| causal_lm_loss(&x[0], &ids).unwrap(),
    );
    let (theirs, g_theirs) =
        value_and_grads(&[logits], &Tensor::new(1f32, &Device::Cpu).unwrap(), |x| {
            reference::causal_lm_loss(&x[0], &ids).unwrap()
        });
    assert!(rel(&ours, &theirs) < 1e-6, "loss {ours} vs {theirs}");
    assert!(rel(&g_ours[0], &g_theirs[0]) < 1e-5, "loss gradient");
}

/// The analytic gradient of `Σ w ∘ f(x)` against central differences, on `probes` entries of
/// each input. The kernels are f32, so the step is large and the tolerance loose: this checks
/// each backward pass's formula, which the reference comparison cannot do on its own if both
/// were wrong the same way.
fn check_finite_differences(what: &str, xs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor) {
    let probe = f(xs);
    let w = rand(probe.dims(), 11, 1.0);
    let (_, grads) = value_and_grads(xs, &w, &f);
    let eps = 1e-2f32;
    let objective = |xs: &[Tensor]| -> f64 {
        let y = f(xs).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let wv = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        y.iter()
            .zip(&wv)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    };
    for (i, x) in xs.iter().enumerate() {
        let base = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let g = grads[i].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gmax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
        let n = base.len();
        for p in 0..8.min(n) {
            let j = (p * 7919 + 13) % n;
            let eval = |delta: f32| {
                let mut moved = base.clone();
                moved[j] += delta;
                let mut inputs = xs.to_vec();
                inputs[i] = Tensor::from_vec(moved, x.dims(), &Device::Cpu).unwrap();
                objective(&inputs)
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
            let err = (numeric - g[j] as f64).abs();
            assert!(
                err <= 2e-2 * gmax as f64 + 1e-3,
                "{what}: input {i} entry {j}: analytic {} vs numeric {numeric} (max |g| {gmax})",
                g[j]
            );
        }
    }
}

#[test]
fn backward_passes_match_finite_differences() {
    check_finite_differences(
        "rms_norm",
        &[rand(&[3, 24], 12, 2.0), rand(&[24], 13, 1.0)],
        |x| rms_norm(&x[0], &x[1], 1e-6).unwrap(),
    );
    let ang = rand(&[9, 4], 14, 3.0);
    let ang = Tensor::cat(&[&ang, &ang], 1).unwrap();
    let (cos, sin) = (ang.cos().unwrap(), ang.sin().unwrap());
    check_finite_differences("rope", &[rand(&[1, 9, 2, 8], 15, 1.0)], |x| {
        rope(&x[0], &cos, &sin).unwrap()
    });
    check_finite_differences(
        "swiglu",
        &[rand(&[40], 16, 4.0), rand(&[40], 17, 2.0)],
        |x| swiglu(&x[0], &x[1]).unwrap(),
    );
    check_finite_differences(
        "attention",
        &[
            rand(&[1, 70, 2, 8], 18, 1.0),
            rand(&[1, 70, 1, 8], 19, 1.0),
            rand(&[1, 70, 1, 8], 20, 1.0),
        ],
        |x| attention(&x[0], &x[1], &x[2], 0.35).unwrap(),
    );
    let ids = Tensor::from_vec(
        (0..10u32).map(|i| i * 3 % 7).collect::<Vec<_>>(),
        (1, 10),
        &Device::Cpu,
    )
    .unwrap();
    check_finite_differences("causal_lm_loss", &[rand(&[1, 10, 7], 21, 2.0)], |x| {
        causal_lm_loss(&x[0], &ids).unwrap()
    });
}

/// The attention check `miner-kernel-check --device cpu` runs holds the CPU kernel's output and
/// its three gradients to the composed reference within f32 rounding, on the shapes it checks on
/// the GPU that fit a unit test (grouped-query heads 8/2 at t 200, d 64; 4/4 at t 77, d 16).
#[test]
fn attention_check_passes_on_the_cpu() {
    use super::attention::{compare_with_baseline, CHECK_SHAPES};
    for shape in &CHECK_SHAPES[..2] {
        let compared =
            compare_with_baseline(&Device::Cpu, candle_core::DType::F32, *shape, 7).unwrap();
        let names: Vec<_> = compared.iter().map(|c| c.output).collect();
        assert_eq!(names, ["out", "dq", "dk", "dv"]);
        for c in &compared {
            assert!(c.max_rel_err < 1e-4, "{shape:?} {c:?}");
        }
    }
}
