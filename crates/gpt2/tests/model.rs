//! Whole-model checks on a tiny config: every parameter gets a gradient, the fused f32 model
//! matches the composed f64 reference (values and gradients), the f64 model matches finite
//! differences, and KV-cache decoding equals the full forward pass.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;
use common::*;
use posthuman_gpt2::candle_core::{DType, Device, Tensor};
use posthuman_gpt2::candle_nn::{VarBuilder, VarMap};
use posthuman_gpt2::{Config, DropoutRng, Gpt2, KvCache, SeededRng, init_weights};

fn model(cfg: &Config, vm: &VarMap, dtype: DType) -> Gpt2 {
    Gpt2::new(cfg, VarBuilder::from_varmap(vm, dtype, &Device::Cpu)).unwrap()
}

fn f64_copy(vm: &VarMap) -> VarMap {
    let out = VarMap::new();
    for (k, v) in vm.data().lock().unwrap().iter() {
        let t = v.as_tensor().to_dtype(DType::F64).unwrap();
        out.data()
            .lock()
            .unwrap()
            .insert(k.clone(), posthuman_gpt2::candle_core::Var::from_tensor(&t).unwrap());
    }
    out
}

fn batch(cfg: &Config, seed: u64, b: usize, t: usize) -> (Tensor, Tensor) {
    let mut rng = SeededRng::new(seed);
    (ids(&mut rng, &[b, t], cfg.vocab_size), ids(&mut rng, &[b, t], cfg.vocab_size))
}

/// Non-trivial LayerNorm/bias values, so their gradients are not structurally special.
fn perturbed(cfg: &Config, seed: u64) -> VarMap {
    let vm = init_weights(cfg, seed).unwrap();
    let mut rng = SeededRng::new(seed + 1);
    for (_, v) in vm.data().lock().unwrap().iter() {
        let noise = rand_t(&mut rng, v.dims(), 0.05, DType::F32);
        v.set(&(v.as_tensor() + noise).unwrap()).unwrap();
    }
    vm
}

#[test]
fn every_parameter_gets_a_nonzero_gradient() {
    let mut cfg = tiny_config();
    cfg.resid_pdrop = 0.1;
    cfg.attn_pdrop = 0.1;
    cfg.embd_pdrop = 0.1;
    let vm = init_weights(&cfg, 1).unwrap();
    let m = model(&cfg, &vm, DType::F32);
    let (x, y) = batch(&cfg, 2, 2, 8);
    let mut rng = DropoutRng::new(3);
    let loss = m.loss(&x, &y, Some(&mut rng)).unwrap();
    let grads = loss.backward().unwrap();
    let data = vm.data().lock().unwrap();
    assert_eq!(data.len(), posthuman_gpt2::param_shapes(&cfg).len());
    for (name, var) in data.iter() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
        let n = vals(g).iter().filter(|x| **x != 0.0).count();
        assert!(n > 0, "{name}: gradient is all zero");
    }
}

#[test]
fn fused_model_matches_f64_reference_and_finite_differences() {
    let cfg = tiny_config();
    let vm32 = perturbed(&cfg, 4);
    let vm64 = f64_copy(&vm32);
    let (m32, m64) = (model(&cfg, &vm32, DType::F32), model(&cfg, &vm64, DType::F64));
    let (x, y) = batch(&cfg, 5, 2, 7);
    let l32 = m32.loss(&x, &y, None).unwrap();
    let l64 = m64.loss(&x, &y, None).unwrap();
    let (v32, v64) = (vals(&l32)[0], vals(&l64)[0]);
    assert!((v32 - v64).abs() < 1e-5, "loss {v32} vs reference {v64}");
    let (g32, g64) = (l32.backward().unwrap(), l64.backward().unwrap());
    let d32 = vm32.data().lock().unwrap();
    let d64 = vm64.data().lock().unwrap();
    for (name, v) in d64.iter() {
        let a = vals(g32.get(d32[name].as_tensor()).unwrap());
        let b = vals(g64.get(v.as_tensor()).unwrap());
        let e = rel_err(&a, &b);
        assert!(e < 1e-3, "{name}: fused gradient off by {e}");
    }
    // Finite differences on the f64 model, a few entries of every tensor.
    let h = 1e-6;
    for (name, v) in d64.iter() {
        let g = vals(g64.get(v.as_tensor()).unwrap());
        let base = vals(v.as_tensor());
        for j in [0, base.len() / 2, base.len() - 1] {
            let eval = |d: f64| {
                let mut p = base.clone();
                p[j] += d;
                v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).unwrap()).unwrap();
                let l = vals(&m64.loss(&x, &y, None).unwrap())[0];
                v.set(&Tensor::from_vec(base.clone(), v.shape(), &Device::Cpu).unwrap()).unwrap();
                l
            };
            let num = (eval(h) - eval(-h)) / (2.0 * h);
            assert!(
                (num - g[j]).abs() < 1e-6 * (1.0 + num.abs()),
                "{name}[{j}]: {} vs fd {num}",
                g[j]
            );
        }
    }
}

#[test]
fn forward_matches_reference_and_token_nll_matches_loss() {
    let cfg = tiny_config();
    let vm32 = perturbed(&cfg, 6);
    let vm64 = f64_copy(&vm32);
    let (m32, m64) = (model(&cfg, &vm32, DType::F32), model(&cfg, &vm64, DType::F64));
    let (x, y) = batch(&cfg, 7, 3, 16);
    let a = vals(&m32.forward(&x, None).unwrap());
    let b = vals(&m64.forward(&x, None).unwrap());
    assert!(rel_err(&a, &b) < 1e-5);
    let nll = m32.token_nll(&x, &y).unwrap();
    assert_eq!(nll.dims(), &[3, 16]);
    let mean = vals(&nll).iter().sum::<f64>() / 48.0;
    let loss = vals(&m32.loss(&x, &y, None).unwrap())[0];
    assert!((mean - loss).abs() < 1e-5);
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    let cfg = tiny_config();
    let vm = perturbed(&cfg, 8);
    let m = model(&cfg, &vm, DType::F32);
    let (x, _) = batch(&cfg, 9, 2, 12);
    let full = m.forward(&x, None).unwrap();
    let mut cache = KvCache::new(&cfg, 2);
    // A 5-token prompt, then one token at a time.
    let mut parts = vec![m.forward(&x.narrow(1, 0, 5).unwrap(), Some(&mut cache)).unwrap()];
    for t in 5..12 {
        parts.push(m.forward(&x.narrow(1, t, 1).unwrap(), Some(&mut cache)).unwrap());
    }
    assert_eq!(cache.len(), 12);
    let inc = Tensor::cat(&parts, 1).unwrap();
    assert!(rel_err(&vals(&inc), &vals(&full)) < 1e-5);
    // The cache refuses to run past n_positions, with an error.
    let more = Tensor::zeros((2, 5), DType::U32, &Device::Cpu).unwrap();
    assert!(m.forward(&more, Some(&mut cache)).is_err());
    cache.clear();
    assert!(cache.is_empty());
}

#[test]
fn bad_inputs_are_errors() {
    let cfg = tiny_config();
    let m = model(&cfg, &init_weights(&cfg, 1).unwrap(), DType::F32);
    let oov = Tensor::new(&[[1u32, 99]], &Device::Cpu).unwrap();
    assert!(m.forward(&oov, None).is_err());
    let long = Tensor::zeros((1, 17), DType::U32, &Device::Cpu).unwrap();
    assert!(m.forward(&long, None).is_err());
    let x = Tensor::zeros((1, 4), DType::U32, &Device::Cpu).unwrap();
    let y = Tensor::zeros((1, 3), DType::U32, &Device::Cpu).unwrap();
    assert!(m.loss(&x, &y, None).is_err());
    let bad_target = Tensor::new(&[[1u32, 2, 3, 37]], &Device::Cpu).unwrap();
    assert!(m.loss(&x, &bad_target, None).is_err());
    assert!(Config::from_json(r#"{"model_type":"gpt2","n_embd":10,"n_head":3}"#).is_err());
}
