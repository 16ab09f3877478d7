//! The hand-written, graph-free decoder-layer step (`Llama::loss_and_grads_layerwise` on CPU
//! f32) against candle's autograd over the whole graph: the loss the same bits, every
//! trained parameter's gradient within 1e-5 relative, for each family variant (Llama with
//! GQA, tied and untied; Qwen2's q/k/v biases; Qwen3's q/k norm with an explicit head_dim) and
//! for LoRA (attention projections only and all seven, with and without dropout).
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;
use common::*;
use posthuman_gpt2::candle_core::{DType, Device, Tensor};
use posthuman_gpt2::candle_nn::{VarBuilder, VarMap};
use posthuman_gpt2::llama::{Config, KeptLayers, Llama, init_weights};
use posthuman_gpt2::lora::{Family, LoraAdapter, LoraBase, LoraConfig};
use posthuman_gpt2::{AdamW, AdamWConfig, DropoutRng, Grads, SeededRng};

/// Sets every variable of `vm` to small random values (zero biases, unit norms and PEFT's
/// zero B would leave parts of the backward untested).
fn randomise(vm: &VarMap, seed: u64) {
    let mut rng = SeededRng::new(seed);
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let v = &data[name];
        let (base, scale) = if v.as_tensor().rank() == 1 && name.contains("norm") {
            (1.0, 0.2)
        } else {
            (0.0, 0.1)
        };
        let t = (rand_t(&mut rng, v.dims(), scale, DType::F32) + base).unwrap();
        v.set(&t).unwrap();
    }
}

/// The largest |a − b| over the largest |a|.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (u, v)| m.max((u - v).abs())) / scale
}

/// The whole graph's loss and gradients against the layer step's, for the parameters `opt`
/// holds, with dropout streams seeded alike.
fn compare(what: &str, m: &Llama, opt: &AdamW, dropout: Option<u64>) {
    let mut rng = SeededRng::new(5);
    let (b, t, v) = (2, 12, m.config().vocab_size);
    let (x, y) = (ids(&mut rng, &[b, t], v), ids(&mut rng, &[b, t], v));
    let mut d1 = dropout.map(DropoutRng::new);
    let loss = m.loss_with_dropout(&x, &y, d1.as_mut()).unwrap();
    let whole = Grads::from_store(opt, &loss.backward().unwrap()).unwrap();
    let mut d2 = dropout.map(DropoutRng::new);
    let (step_loss, step) = layer_step(m, opt, (&x, &y), d2.as_mut());
    assert_eq!(step_loss, loss.to_scalar::<f32>().unwrap(), "{what}: the loss's bits");
    for (i, p) in opt.params().iter().enumerate() {
        let (a, g) = (whole.get(i).unwrap(), step.get(i).unwrap());
        assert!(a.iter().any(|v| *v != 0.0), "{what}, {}: the graph gave no gradient", p.name);
        let e = rel(a, g);
        assert!(e < 1e-5, "{what}, {}: relative difference {e}", p.name);
    }
    // Both streams drew the same seeds: the next draws agree.
    if let (Some(a), Some(b)) = (d1.as_mut(), d2.as_mut()) {
        assert_eq!(a.next_seed(), b.next_seed(), "{what}: dropout streams diverged");
    }
}

/// The layer step's loss on (ids, targets) and the gradients of the parameters `opt` holds.
fn layer_step(
    m: &Llama,
    opt: &AdamW,
    (x, y): (&Tensor, &Tensor),
    dropout: Option<&mut DropoutRng>,
) -> (f32, Grads) {
    let mut grads = Grads::zeros(opt);
    let loss = m
        .loss_and_grads_layerwise(x, y, dropout, |g| {
            grads.accumulate_step(opt, g).map_err(posthuman_gpt2::candle_core::Error::wrap)
        })
        .unwrap();
    (loss, grads)
}

/// Llama with grouped-query heads, Qwen2's biases, Qwen3's q/k norm with head_dim 12 (not
/// hidden/heads = 8), each tied or not.
fn variants() -> Vec<(&'static str, Config)> {
    let base = |tied: bool| {
        let mut c = Config::tiny(61, 32, 2, 4, 2);
        c.tie_word_embeddings = tied;
        c.rope_theta = 500.0;
        c.max_position_embeddings = 16;
        c.intermediate_size = 40;
        c
    };
    let mut out = vec![("llama gqa untied", base(false)), ("llama gqa tied", base(true))];
    let mut q2 = base(false);
    q2.qkv_bias = true;
    out.push(("qwen2 bias", q2));
    let mut q3 = base(true);
    q3.qk_norm = true;
    q3.head_dim = 12;
    out.push(("qwen3 q/k norm", q3));
    out
}

fn model(cfg: &Config, seed: u64) -> (VarMap, Llama) {
    let vm = init_weights(cfg, seed).unwrap();
    randomise(&vm, seed + 1);
    let m = Llama::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    (vm, m)
}

#[test]
fn full_fine_tune_gradients_equal_autograds_for_every_variant() {
    for (what, cfg) in variants() {
        let (vm, m) = model(&cfg, 11);
        let opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
        compare(what, &m, &opt, None);
    }
}

#[test]
fn lora_gradients_equal_autograds_with_and_without_dropout() {
    let attention: &[&str] = &["q_proj", "k_proj", "v_proj", "o_proj"];
    let all: &[&str] =
        &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    for (what, cfg) in variants() {
        let (_vm, m) = model(&cfg, 21);
        for (targets, p) in [(attention, 0.0), (all, 0.0), (attention, 0.2), (all, 0.2)] {
            let lc = LoraConfig::new(Family::Llama, 4, 8.0, p, targets);
            let ad = LoraAdapter::init(lc, &LoraBase::llama(&cfg), 3).unwrap();
            randomise(ad.var_map(), 31);
            let lm = m.with_lora(&ad).unwrap();
            let opt = AdamW::new(ad.var_map(), AdamWConfig::default()).unwrap();
            let label = format!("{what}, LoRA on {} modules, dropout {p}", targets.len());
            compare(&label, &lm, &opt, Some(9));
            // Without a stream, dropout does not apply (evaluation and p = 0 agree).
            compare(&label, &lm, &opt, None);
        }
    }
}

/// The loss and every gradient, bit for bit, of `m`'s layer step.
fn step_bits(m: &Llama, opt: &AdamW, dropout: Option<u64>) -> (u32, Vec<Vec<u32>>) {
    let mut rng = SeededRng::new(5);
    let (b, t, v) = (2, 12, m.config().vocab_size);
    let (x, y) = (ids(&mut rng, &[b, t], v), ids(&mut rng, &[b, t], v));
    let mut d = dropout.map(DropoutRng::new);
    let (loss, grads) = layer_step(m, opt, (&x, &y), d.as_mut());
    let bits = (0..opt.params().len())
        .map(|i| grads.get(i).unwrap().iter().map(|v| v.to_bits()).collect())
        .collect();
    (loss.to_bits(), bits)
}

#[test]
fn recomputed_layers_give_the_bits_kept_ones_do() {
    // Auto keeps every layer of these tiny models; AtMost(1) runs all but the last again from
    // its input (with LoRA dropout, replaying the forward's seeds).
    let all: &[&str] =
        &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    for (what, cfg) in variants() {
        let (vm, mut m) = model(&cfg, 11);
        let opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
        let kept = step_bits(&m, &opt, None);
        m.set_kept_layers(KeptLayers::AtMost(1));
        assert!(kept == step_bits(&m, &opt, None), "{what}: recomputing changed the bits");
        let ad = LoraAdapter::init(
            LoraConfig::new(Family::Llama, 4, 8.0, 0.2, all),
            &LoraBase::llama(&cfg),
            3,
        )
        .unwrap();
        randomise(ad.var_map(), 31);
        let mut lm = m.with_lora(&ad).unwrap();
        let opt = AdamW::new(ad.var_map(), AdamWConfig::default()).unwrap();
        lm.set_kept_layers(KeptLayers::Auto);
        let kept = step_bits(&lm, &opt, Some(9));
        lm.set_kept_layers(KeptLayers::AtMost(1));
        assert!(
            kept == step_bits(&lm, &opt, Some(9)),
            "{what}, LoRA: recomputing changed the bits"
        );
    }
}

#[test]
fn bad_targets_are_errors_not_panics() {
    let (_vm, m) = model(&variants()[0].1, 3);
    let mut rng = SeededRng::new(1);
    let x = ids(&mut rng, &[2, 8], 61);
    let y = ids(&mut rng, &[2, 7], 61);
    let r = m.loss_and_grads_layerwise(&x, &y, None, |_| Ok(()));
    assert!(r.unwrap_err().to_string().contains("must match ids"));
    let long = ids(&mut rng, &[1, 17], 61);
    assert!(m.loss_and_grads_layerwise(&long, &long, None, |_| Ok(())).is_err());
    let wrong = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(m.loss_and_grads_layerwise(&wrong, &x, None, |_| Ok(())).is_err());
}
