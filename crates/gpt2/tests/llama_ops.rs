//! The Llama family's ops: each matches a plain-loop f64 reference in value and finite
//! differences in gradient, f32 matches f64, and every input gets a nonzero gradient. Also
//! pins down why we compose our own: candle_nn's rms_norm and rope have no backward.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;
use common::*;
use posthuman_gpt2::SeededRng;
use posthuman_gpt2::candle_core::{DType, Device, Tensor, Var};
use posthuman_gpt2::candle_nn;
use posthuman_gpt2::ops::llama::{self as lops, Llama3Scaling, RopeTable};

fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    let e = rel_err(a, b);
    assert!(e < tol, "{what}: differs from the loop reference by {e}");
}

const LLAMA3: Llama3Scaling = Llama3Scaling {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 64,
};

#[test]
fn rms_norm_matches_loops_and_gradients() {
    let mut rng = SeededRng::new(21);
    let x = rand_t(&mut rng, &[2, 3, 8], 1.0, DType::F64);
    let w = (rand_t(&mut rng, &[8], 0.2, DType::F64) + 1.0).unwrap();
    let (xv, wv) = (vals(&x), vals(&w));
    let want: Vec<f64> = xv
        .chunks(8)
        .flat_map(|r| {
            let s = (r.iter().map(|v| v * v).sum::<f64>() / 8.0 + 1e-5).sqrt();
            r.iter().zip(&wv).map(move |(v, w)| v / s * w).collect::<Vec<_>>()
        })
        .collect();
    close(&vals(&lops::rms_norm(&x, &w, 1e-5).unwrap()), &want, 1e-12, "rms_norm");
    let op = |t: &[Tensor]| weighted(lops::rms_norm(&t[0], &t[1], 1e-5)?, 7);
    check(&op, vec![x, w]);
}

#[test]
fn llama3_frequencies_follow_hf_rule() {
    // d=16, θ=10000, original context 64: wavelengths 2π·θ^(2i/d) for i < 8 span ~6 … ~1e4.
    let base = lops::rope_inv_freq(16, 10_000.0, None);
    let scaled = lops::rope_inv_freq(16, 10_000.0, Some(&LLAMA3));
    let (low, high) = (64.0 / 1.0, 64.0 / 4.0);
    let mut kinds = [0; 3];
    for (f, s) in base.iter().zip(&scaled) {
        let wl = 2.0 * std::f64::consts::PI / f;
        if wl < high {
            assert_eq!(s, f);
            kinds[0] += 1;
        } else if wl > low {
            assert!((s - f / 8.0).abs() < 1e-15);
            kinds[1] += 1;
        } else {
            let smooth = (64.0 / wl - 1.0) / 3.0;
            assert!((s - ((1.0 - smooth) * f / 8.0 + smooth * f)).abs() < 1e-15);
            kinds[2] += 1;
        }
    }
    assert!(kinds.iter().all(|&k| k > 0), "test frequencies must hit all three bands: {kinds:?}");
}

/// HF `apply_rotary_pos_emb` with rotate_half, in plain f64 loops.
fn rope_loops(
    x: &[f64],
    (b, h, t, d): (usize, usize, usize, usize),
    inv: &[f64],
    off: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for r in 0..b * h * t {
        let pos = (r % t + off) as f64;
        let row = &x[r * d..(r + 1) * d];
        for i in 0..d / 2 {
            let a = pos * inv[i];
            let (c, s) = (a.cos(), a.sin());
            out[r * d + i] = row[i] * c - row[i + d / 2] * s;
            out[r * d + i + d / 2] = row[i + d / 2] * c + row[i] * s;
        }
    }
    out
}

#[test]
fn rope_matches_loops_and_gradients() {
    for scaling in [None, Some(&LLAMA3)] {
        let inv = lops::rope_inv_freq(16, 500.0, scaling);
        let table = RopeTable::new(&inv, 40, DType::F64, &Device::Cpu).unwrap();
        let mut rng = SeededRng::new(22);
        let x = rand_t(&mut rng, &[2, 2, 5, 16], 1.0, DType::F64);
        let got = vals(&table.apply(&x, 30).unwrap());
        // The table's angles are f32 products, as HF computes them: 1e-5 absolute at pos 34.
        close(&got, &rope_loops(&vals(&x), (2, 2, 5, 16), &inv, 30), 1e-5, "rope");
        let op = move |t: &[Tensor]| weighted(table.apply(&t[0], 30)?, 8);
        check(&op, vec![x]);
    }
}

#[test]
fn swiglu_mlp_matches_loops_and_gradients() {
    let mut rng = SeededRng::new(23);
    let (c, i) = (6, 10);
    let x = rand_t(&mut rng, &[2, 3, c], 1.0, DType::F64);
    let g = rand_t(&mut rng, &[i, c], 0.5, DType::F64);
    let u = rand_t(&mut rng, &[i, c], 0.5, DType::F64);
    let d = rand_t(&mut rng, &[c, i], 0.5, DType::F64);
    let (xv, gv, uv, dv) = (vals(&x), vals(&g), vals(&u), vals(&d));
    let dot = |w: &[f64], row: usize, xr: &[f64], n: usize| -> f64 {
        (0..n).map(|k| w[row * n + k] * xr[k]).sum()
    };
    let want: Vec<f64> = xv
        .chunks(c)
        .flat_map(|xr| {
            let hid: Vec<f64> = (0..i)
                .map(|j| {
                    let a = dot(&gv, j, xr, c);
                    a / (1.0 + (-a).exp()) * dot(&uv, j, xr, c)
                })
                .collect();
            (0..c).map(|o| dot(&dv, o, &hid, i)).collect::<Vec<_>>()
        })
        .collect();
    close(&vals(&lops::swiglu_mlp(&x, &g, &u, &d).unwrap()), &want, 1e-12, "swiglu");
    let op = |t: &[Tensor]| weighted(lops::swiglu_mlp(&t[0], &t[1], &t[2], &t[3])?, 9);
    check(&op, vec![x, g, u, d]);
}

/// Causal GQA in loops: head h reads kv head h / (H / H_kv); query i sees keys ≤ Tk−Tq+i.
fn gqa_loops(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    (b, h, hkv, tq, tk, d): (usize, usize, usize, usize, usize, usize),
) -> Vec<f64> {
    let mut out = vec![0.0; b * h * tq * d];
    for bi in 0..b {
        for hi in 0..h {
            let kh = hi / (h / hkv);
            for i in 0..tq {
                let qr = &q[((bi * h + hi) * tq + i) * d..][..d];
                let n = tk - tq + i + 1;
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        let kr = &k[((bi * hkv + kh) * tk + j) * d..][..d];
                        qr.iter().zip(kr).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    let vr = &v[((bi * hkv + kh) * tk + j) * d..][..d];
                    for c in 0..d {
                        out[((bi * h + hi) * tq + i) * d + c] += ej / z * vr[c];
                    }
                }
            }
        }
    }
    out
}

#[test]
fn gqa_attention_matches_loops_and_gradients() {
    // (H, H_kv, Tq, Tk): plain MHA, 2 queries per kv head, MQA, and a cached-tail query block.
    for (h, hkv, tq, tk) in [(2, 2, 5, 5), (4, 2, 5, 5), (4, 1, 4, 4), (4, 2, 2, 5)] {
        let mut rng = SeededRng::new(24 + h as u64 * 10 + hkv as u64 + tq as u64 * 100);
        let d = 4;
        let q = rand_t(&mut rng, &[2, h, tq, d], 1.0, DType::F64);
        let k = rand_t(&mut rng, &[2, hkv, tk, d], 1.0, DType::F64);
        let v = rand_t(&mut rng, &[2, hkv, tk, d], 1.0, DType::F64);
        let want = gqa_loops(&vals(&q), &vals(&k), &vals(&v), (2, h, hkv, tq, tk, d));
        close(&vals(&lops::gqa_attention(&q, &k, &v).unwrap()), &want, 1e-12, "gqa");
        let op = |t: &[Tensor]| weighted(lops::gqa_attention(&t[0], &t[1], &t[2])?, 10);
        check(&op, vec![q, k, v]);
    }
}

#[test]
fn gqa_attention_refuses_heads_that_do_not_divide() {
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap();
    assert!(lops::gqa_attention(&z(&[1, 3, 2, 4]), &z(&[1, 2, 2, 4]), &z(&[1, 2, 2, 4])).is_err());
    assert!(lops::gqa_attention(&z(&[1, 2, 3, 4]), &z(&[1, 2, 2, 4]), &z(&[1, 2, 2, 4])).is_err());
}

/// Why ops::llama composes its own: candle_nn's fast rms_norm and rope are custom ops without
/// a backward, so a graph through them gives their inputs no gradient at all.
#[test]
fn candle_nn_rms_norm_and_rope_cut_the_graph() {
    let mut rng = SeededRng::new(25);
    let x = Var::from_tensor(&rand_t(&mut rng, &[2, 8], 1.0, DType::F32)).unwrap();
    let w = Var::from_tensor(&rand_t(&mut rng, &[8], 1.0, DType::F32)).unwrap();
    let y = candle_nn::ops::rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(x.as_tensor()).is_none() && g.get(w.as_tensor()).is_none());
    let ours = lops::rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
    assert!(rel_err(&vals(&ours), &vals(&y)) < 1e-6, "same values, though");
    let g = ours.sum_all().unwrap().backward().unwrap();
    assert!(g.get(x.as_tensor()).is_some() && g.get(w.as_tensor()).is_some());

    let xr = Var::from_tensor(&rand_t(&mut rng, &[1, 2, 3, 8], 1.0, DType::F32)).unwrap();
    let t = RopeTable::new(&lops::rope_inv_freq(8, 10_000.0, None), 3, DType::F32, &Device::Cpu)
        .unwrap();
    let y = candle_nn::rotary_emb::rope(xr.as_tensor(), &t.cos, &t.sin).unwrap();
    let g = (y.clone() * 2.0).unwrap().sum_all().unwrap().backward();
    // Either no gradient for x or an outright refusal: both mean no training through it.
    assert!(g.map(|g| g.get(xr.as_tensor()).is_none()).unwrap_or(true));
    let ours = t.apply(xr.as_tensor(), 0).unwrap();
    assert!(rel_err(&vals(&ours), &vals(&y)) < 1e-6, "same convention as candle's rope");
}

/// The fused CPU f32 kernel against the composed op on many rows (several 64-row blocks of
/// the dw sum, a width that is not a multiple of 8), in value and both gradients.
#[test]
fn fused_rms_norm_matches_composed_on_many_rows() {
    let mut rng = SeededRng::new(26);
    let x = rand_t(&mut rng, &[3, 70, 37], 1.0, DType::F64);
    let w = (rand_t(&mut rng, &[37], 0.2, DType::F64) + 1.0).unwrap();
    let fused = |t: &[Tensor]| weighted(lops::rms_norm(&t[0], &t[1], 1e-6)?, 11);
    let composed = |t: &[Tensor]| weighted(lops::rms_norm_composed(&t[0], &t[1], 1e-6)?, 11);
    let ins32: Vec<Tensor> = [&x, &w].iter().map(|t| t.to_dtype(DType::F32).unwrap()).collect();
    let (v64, g64) = grads(&composed, &[x, w]);
    let (v32, g32) = grads(&fused, &ins32);
    let (c32, _) = grads(&composed, &ins32);
    assert!((v64 - v32).abs() <= 1e-4 * (1.0 + v64.abs()), "value {v32} vs {v64}");
    assert!((c32 - v32).abs() <= 1e-5 * (1.0 + v32.abs()), "fused {v32} vs composed f32 {c32}");
    for (i, (a, b)) in g32.iter().zip(&g64).enumerate() {
        assert!(rel_err(a, b) < 2e-4, "input {i}: {}", rel_err(a, b));
    }
}

/// The fused CPU f32 attention on rows (B, T, H·D) against the composed op on heads in f64:
/// several 64-query blocks, MHA, grouped (2 queries per kv head) and multi-query, in value and
/// all three gradients (a kv head's gradient sums its query heads).
#[test]
fn fused_gqa_attention_on_rows_matches_the_composed_heads() {
    for (h, hkv) in [(2, 2), (4, 2), (4, 1)] {
        let (b, t, d) = (2, 70, 8);
        let mut rng = SeededRng::new(27 + h as u64 * 10 + hkv as u64);
        let q = rand_t(&mut rng, &[b, t, h * d], 1.0, DType::F64);
        let k = rand_t(&mut rng, &[b, t, hkv * d], 1.0, DType::F64);
        let v = rand_t(&mut rng, &[b, t, hkv * d], 1.0, DType::F64);
        let heads = |x: &Tensor, n: usize| x.reshape((b, t, n, d))?.transpose(1, 2);
        let composed = move |x: &[Tensor]| {
            let o =
                lops::gqa_attention(&heads(&x[0], h)?, &heads(&x[1], hkv)?, &heads(&x[2], hkv)?)?;
            weighted(o.transpose(1, 2)?.reshape((b, t, h * d))?, 12)
        };
        let fused =
            move |x: &[Tensor]| weighted(lops::causal_gqa_rows(&x[0], &x[1], &x[2], h, hkv)?, 12);
        let ins32: Vec<Tensor> =
            [&q, &k, &v].iter().map(|t| t.to_dtype(DType::F32).unwrap()).collect();
        let (v64, g64) = grads(&composed, &[q, k, v]);
        let (v32, g32) = grads(&fused, &ins32);
        assert!(
            (v64 - v32).abs() <= 1e-4 * (1.0 + v64.abs()),
            "({h}, {hkv}): value {v32} vs {v64}"
        );
        for (i, (a, b)) in g32.iter().zip(&g64).enumerate() {
            assert!(rel_err(a, b) < 2e-4, "({h}, {hkv}) input {i}: {}", rel_err(a, b));
        }
    }
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap();
    assert!(lops::causal_gqa_rows(&z(&[1, 3, 12]), &z(&[1, 3, 8]), &z(&[1, 3, 8]), 3, 2).is_err());
    assert!(lops::causal_gqa_rows(&z(&[1, 3, 8]), &z(&[1, 2, 4]), &z(&[1, 2, 4]), 2, 1).is_err());
}

/// RoPE on rows (B, T, H, D): the fused f32 op equals the composed rotation on heads bit for
/// bit in value and gradient, and the composed rows form matches the loops in f64.
#[test]
fn rope_on_rows_matches_rope_on_heads() {
    let inv = lops::rope_inv_freq(16, 500.0, Some(&LLAMA3));
    let (b, t, h, d) = (2, 9, 3, 16);
    let mut rng = SeededRng::new(28);
    let x = rand_t(&mut rng, &[b, t, h, d], 1.0, DType::F64);
    let t64 = RopeTable::new(&inv, 40, DType::F64, &Device::Cpu).unwrap();
    let rows = vals(&t64.apply_rows(&x, 0).unwrap().transpose(1, 2).unwrap().contiguous().unwrap());
    close(
        &rows,
        &rope_loops(
            &vals(&x.transpose(1, 2).unwrap().contiguous().unwrap()),
            (b, h, t, d),
            &inv,
            0,
        ),
        1e-5,
        "rope rows",
    );
    let t32 = RopeTable::new(&inv, 40, DType::F32, &Device::Cpu).unwrap();
    let x32 = Var::from_tensor(&x.to_dtype(DType::F32).unwrap()).unwrap();
    let w = rand_t(&mut rng, &[b, t, h, d], 1.0, DType::F32);
    let run = |y: Tensor| {
        let y = y.contiguous().unwrap();
        let g = (y.clone() * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = g.get(x32.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), gx)
    };
    for offset in [0, 7] {
        let fused = run(t32.apply_rows(x32.as_tensor(), offset).unwrap());
        let heads = x32.as_tensor().transpose(1, 2).unwrap();
        let on_heads = run(t32.apply(&heads, offset).unwrap().transpose(1, 2).unwrap());
        assert_eq!(fused.0, on_heads.0, "offset {offset}: values");
        assert_eq!(fused.1, on_heads.1, "offset {offset}: gradients");
    }
    assert!(t32.apply_rows(x32.as_tensor(), 32).is_err(), "past the table's 40 positions");
}

/// The fused frozen-base LoRA projection against the composed graph, with and without a bias:
/// the same output bits, and gradients of x, A and B within f32 rounding (none for the frozen
/// weight and bias).
#[test]
fn fused_lora_linear_matches_the_composed_branch() {
    let mut rng = SeededRng::new(29);
    let (n, inp, out, r) = (70, 24, 40, 4);
    for with_bias in [false, true] {
        let x = Var::from_tensor(&rand_t(&mut rng, &[2, n / 2, inp], 1.0, DType::F32)).unwrap();
        let a = Var::from_tensor(&rand_t(&mut rng, &[r, inp], 0.5, DType::F32)).unwrap();
        let b = Var::from_tensor(&rand_t(&mut rng, &[out, r], 0.5, DType::F32)).unwrap();
        let w = rand_t(&mut rng, &[out, inp], 0.5, DType::F32);
        let bias = with_bias.then(|| rand_t(&mut rng, &[out], 0.5, DType::F32));
        let gw = rand_t(&mut rng, &[2, n / 2, out], 1.0, DType::F32);
        let (xt, at, bt) = (x.as_tensor(), a.as_tensor(), b.as_tensor());
        let run = |y: Tensor| {
            let g = (y.clone() * &gw).unwrap().sum_all().unwrap().backward().unwrap();
            let v = |t: &Tensor| vals(&g.get(t).unwrap().to_dtype(DType::F64).unwrap());
            (vals(&y.to_dtype(DType::F64).unwrap()), [v(xt), v(at), v(bt)])
        };
        let fused = run(lops::frozen_lora_linear(xt, &w, bias.as_ref(), at, bt, 2.5).unwrap());
        let mut base = lops::linear_no_bias(xt, &w).unwrap();
        if let Some(bias) = &bias {
            base = base.broadcast_add(bias).unwrap();
        }
        let branch = lops::linear_no_bias(&lops::linear_no_bias(xt, at).unwrap(), bt).unwrap();
        let composed = run((base + (branch * 2.5).unwrap()).unwrap());
        assert_eq!(fused.0, composed.0, "bias {with_bias}: outputs");
        for (i, (f, c)) in fused.1.iter().zip(&composed.1).enumerate() {
            assert!(rel_err(f, c) < 1e-5, "bias {with_bias}, input {i}: {}", rel_err(f, c));
        }
    }
}

/// The frozen SwiGLU MLP node against the composed MLP over detached weights: the same output
/// bits, and the input's gradient within f32 rounding.
#[test]
fn frozen_swiglu_mlp_matches_the_composed_mlp() {
    let mut rng = SeededRng::new(30);
    let (c, i) = (24, 40);
    let x = Var::from_tensor(&rand_t(&mut rng, &[2, 35, c], 1.0, DType::F32)).unwrap();
    let g = rand_t(&mut rng, &[i, c], 0.5, DType::F32);
    let u = rand_t(&mut rng, &[i, c], 0.5, DType::F32);
    let d = rand_t(&mut rng, &[c, i], 0.5, DType::F32);
    let w = rand_t(&mut rng, &[2, 35, c], 1.0, DType::F32);
    let run = |y: Tensor| {
        let gr = (y.clone() * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = vals(&gr.get(x.as_tensor()).unwrap().to_dtype(DType::F64).unwrap());
        (vals(&y.to_dtype(DType::F64).unwrap()), gx)
    };
    let fused = run(lops::frozen_swiglu_mlp(x.as_tensor(), &g, &u, &d).unwrap());
    let composed = run(lops::swiglu_mlp(x.as_tensor(), &g, &u, &d).unwrap());
    assert_eq!(fused.0, composed.0, "outputs");
    assert!(rel_err(&fused.1, &composed.1) < 1e-5, "dx: {}", rel_err(&fused.1, &composed.1));
}

/// The fused SwiGLU gate, gate-and-up node and bias-free linear map at sizes that take their parallel, chunked
/// paths (over 2^17 values; the ops' other tests are tiny): f32 values and every input's
/// gradient against the composed f64 ops, and a detached weight gets no gradient.
#[test]
fn fused_gate_and_linear_match_f64_at_parallel_sizes() {
    let mut rng = SeededRng::new(31);
    let compare = |op: &dyn Fn(&[Tensor]) -> posthuman_gpt2::candle_core::Result<Tensor>,
                   inputs: Vec<Tensor>,
                   what: &str| {
        let out64 = vals(&op(&inputs).unwrap());
        let in32: Vec<Tensor> = inputs.iter().map(|t| t.to_dtype(DType::F32).unwrap()).collect();
        close(&vals(&op(&in32).unwrap()), &out64, 1e-6, what);
        let (_, g64) = grads(&|t: &[Tensor]| weighted(op(t)?, 3), &inputs);
        let (_, g32) = grads(&|t: &[Tensor]| weighted(op(t)?, 3), &in32);
        for (i, (a, b)) in g32.iter().zip(&g64).enumerate() {
            close(a, b, 1e-5, &format!("{what}: input {i}'s gradient"));
        }
    };
    let g = rand_t(&mut rng, &[3, 250, 200], 3.0, DType::F64);
    let u = rand_t(&mut rng, &[3, 250, 200], 1.0, DType::F64);
    compare(&|t| lops::silu_mul(&t[0], &t[1]), vec![g, u], "silu gate");
    let x = rand_t(&mut rng, &[2, 300, 64], 1.0, DType::F64);
    let (wg, wu) = (
        rand_t(&mut rng, &[250, 64], 0.4, DType::F64),
        rand_t(&mut rng, &[250, 64], 0.4, DType::F64),
    );
    compare(&|t| lops::gate_up(&t[0], &t[1], &t[2]), vec![x, wg, wu], "gate and up");
    let x = rand_t(&mut rng, &[4, 300, 128], 1.0, DType::F64);
    let w = rand_t(&mut rng, &[96, 128], 0.3, DType::F64);
    compare(&|t| lops::linear_no_bias(&t[0], &t[1]), vec![x.clone(), w.clone()], "linear");
    let x = Var::from_tensor(&x.to_dtype(DType::F32).unwrap()).unwrap();
    let w = w.to_dtype(DType::F32).unwrap();
    let y = lops::linear_no_bias(x.as_tensor(), &w).unwrap();
    let store = y.sum_all().unwrap().backward().unwrap();
    assert!(store.get(x.as_tensor()).is_some() && store.get(&w).is_none(), "frozen weight");
}
