//! Each op: the composed f64 reference matches finite differences, and the fused f32 kernel
//! matches the reference in value and in every input's gradient.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;
use common::*;
use posthuman_gpt2::SeededRng;
use posthuman_gpt2::candle_core::{DType, Tensor};
use posthuman_gpt2::ops::{self, Activation, IGNORE_INDEX, fast_math, reference};

#[test]
fn layer_norm_gradients() {
    let mut rng = SeededRng::new(1);
    let op = |t: &[Tensor]| weighted(ops::layer_norm(&t[0], &t[1], &t[2], 1e-5)?, 7);
    let x = rand_t(&mut rng, &[2, 3, 8], 1.0, DType::F64);
    let w = (rand_t(&mut rng, &[8], 0.2, DType::F64) + 1.0).unwrap();
    let b = rand_t(&mut rng, &[8], 0.2, DType::F64);
    check(&op, vec![x, w, b]);
}

#[test]
fn linear_gradients() {
    for act in [Activation::Identity, Activation::GeluNew] {
        let mut rng = SeededRng::new(2);
        let op = move |t: &[Tensor]| weighted(ops::linear(&t[0], &t[1], &t[2], act)?, 8);
        let x = rand_t(&mut rng, &[2, 5, 6], 1.0, DType::F64);
        let w = rand_t(&mut rng, &[6, 7], 0.5, DType::F64);
        let b = rand_t(&mut rng, &[7], 0.5, DType::F64);
        check(&op, vec![x, w, b]);
    }
}

#[test]
fn attention_gradients() {
    for dropout in [None, Some((0.3f32, 99u64))] {
        let mut rng = SeededRng::new(3);
        let op = move |t: &[Tensor]| weighted(ops::causal_attention(&t[0], 2, dropout)?, 9);
        let qkv = rand_t(&mut rng, &[2, 5, 3 * 8], 1.0, DType::F64);
        check(&op, vec![qkv]);
    }
}

#[test]
fn blocked_attention_matches_reference_on_long_sequences() {
    // 150 positions: three query blocks of the fused kernel, the last one partial.
    for dropout in [None, Some((0.2f32, 5u64))] {
        let mut rng = SeededRng::new(11);
        let op = move |t: &[Tensor]| weighted(ops::causal_attention(&t[0], 2, dropout)?, 12);
        let qkv = rand_t(&mut rng, &[1, 150, 3 * 8], 1.0, DType::F64);
        let (v64, g64) = grads(&op, std::slice::from_ref(&qkv));
        let (v32, g32) = grads(&op, &[qkv.to_dtype(DType::F32).unwrap()]);
        assert!((v64 - v32).abs() <= 1e-4 * (1.0 + v64.abs()));
        let e = rel_err(&g32[0], &g64[0]);
        assert!(e < 2e-4, "gradient differs by {e}");
    }
    // Cached decoding of the tail across a block boundary.
    let mut rng = SeededRng::new(12);
    let qkv = rand_t(&mut rng, &[1, 150, 24], 1.0, DType::F32);
    let full = vals(&ops::causal_attention(&qkv, 2, None).unwrap());
    let c = |t: Tensor| t.contiguous().unwrap();
    let (q, k, v) =
        (qkv.narrow(2, 0, 8).unwrap(), qkv.narrow(2, 8, 8).unwrap(), qkv.narrow(2, 16, 8).unwrap());
    let tail = ops::attention_cached(&c(q.narrow(1, 60, 90).unwrap()), &c(k), &c(v), 2).unwrap();
    assert!(rel_err(&vals(&tail), &full[60 * 8..]) < 1e-6);
}

#[test]
fn embedding_gradients() {
    let mut rng = SeededRng::new(4);
    // Repeated ids exercise the scatter-add.
    let ids = Tensor::from_vec(
        vec![1u32, 3, 1, 0, 2, 3],
        (2, 3),
        &posthuman_gpt2::candle_core::Device::Cpu,
    )
    .unwrap();
    let op = move |t: &[Tensor]| weighted(ops::embed(&ids, &t[0], &t[1], 1)?, 10);
    let wte = rand_t(&mut rng, &[5, 4], 1.0, DType::F64);
    let wpe = rand_t(&mut rng, &[6, 4], 1.0, DType::F64);
    check(&op, vec![wte, wpe]);
}

#[test]
fn lm_head_loss_gradients() {
    let mut rng = SeededRng::new(5);
    let mut t: Vec<u32> = (0..300).map(|_| (rng.next_u64() % 11) as u32).collect();
    t[4] = IGNORE_INDEX;
    let targets = Tensor::from_vec(t, 300, &posthuman_gpt2::candle_core::Device::Cpu).unwrap();
    let op = move |x: &[Tensor]| ops::lm_head_loss(&x[0], &x[1], &targets)? * 3.0;
    // 300 rows: more than one internal chunk of the fused kernel.
    let h = rand_t(&mut rng, &[300, 4], 1.0, DType::F64);
    let wte = rand_t(&mut rng, &[11, 4], 1.0, DType::F64);
    // FD on all 1244 inputs would be slow in a debug build: check the fused path against the
    // reference on the full size, and FD on a small instance.
    let (v64, g64) = grads(&op, &[h.clone(), wte.clone()]);
    let ins32 = [h.to_dtype(DType::F32).unwrap(), wte.to_dtype(DType::F32).unwrap()];
    let (v32, g32) = grads(&op, &ins32);
    assert!((v64 - v32).abs() < 1e-4 * v64.abs());
    for (a, b) in g32.iter().zip(&g64) {
        assert!(rel_err(a, b) < 2e-4);
    }
    let small_t = Tensor::from_vec(
        vec![1u32, IGNORE_INDEX, 4, 4],
        4,
        &posthuman_gpt2::candle_core::Device::Cpu,
    )
    .unwrap();
    let small = move |x: &[Tensor]| ops::lm_head_loss(&x[0], &x[1], &small_t);
    check(
        &small,
        vec![
            rand_t(&mut rng, &[4, 3], 1.0, DType::F64),
            rand_t(&mut rng, &[6, 3], 1.0, DType::F64),
        ],
    );
}

#[test]
fn lm_head_nll_matches_reference() {
    let mut rng = SeededRng::new(6);
    let h = rand_t(&mut rng, &[7, 4], 1.0, DType::F32);
    let wte = rand_t(&mut rng, &[9, 4], 1.0, DType::F32);
    let t = ids(&mut rng, &[7], 9);
    let fused = vals(&ops::lm_head_nll(&h, &wte, &t).unwrap());
    let refr = vals(&reference::lm_head_nll(&h, &wte, &t).unwrap());
    assert!(rel_err(&fused, &refr) < 1e-5);
}

#[test]
fn cached_attention_matches_causal_attention() {
    let mut rng = SeededRng::new(7);
    let qkv = rand_t(&mut rng, &[2, 6, 24], 1.0, DType::F32);
    let full = vals(&ops::causal_attention(&qkv, 2, None).unwrap());
    let (q, k, v) =
        (qkv.narrow(2, 0, 8).unwrap(), qkv.narrow(2, 8, 8).unwrap(), qkv.narrow(2, 16, 8).unwrap());
    let c = |t: Tensor| t.contiguous().unwrap();
    // Last two queries over all six keys = the last two rows of the full causal result.
    let tail = ops::attention_cached(&c(q.narrow(1, 4, 2).unwrap()), &c(k), &c(v), 2).unwrap();
    let full_tail: Vec<f64> =
        (0..2).flat_map(|b| full[(b * 6 + 4) * 8..(b * 6 + 6) * 8].to_vec()).collect();
    assert!(rel_err(&vals(&tail), &full_tail) < 1e-6);
}

#[test]
fn fast_math_is_accurate() {
    let mut worst_exp = 0f64;
    let mut worst_tanh = 0f64;
    for i in -20000..20000 {
        let x = i as f32 * 0.004;
        let e = (fast_math::exp(x) as f64 - (x as f64).exp()).abs() / (x as f64).exp();
        worst_exp = worst_exp.max(e);
        worst_tanh = worst_tanh.max((fast_math::tanh(x) as f64 - (x as f64).tanh()).abs());
    }
    assert!(worst_exp < 5e-7, "exp relative error {worst_exp}");
    assert!(worst_tanh < 5e-7, "tanh absolute error {worst_tanh}");
    assert!(fast_math::exp(-1000.0) < 1e-37 && fast_math::exp(-1000.0) >= 0.0);
}
