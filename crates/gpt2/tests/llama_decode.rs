//! The Llama family's fused decode step (one token, batch 1, CPU f32: what generation runs):
//! its logits equal the full forward's for Llama (GQA), Qwen2 (q/k/v biases) and Qwen3 (q/k
//! norm) shapes, bit for bit the same with 1 and 2 threads, and its KV cache grows in blocks
//! written in place rather than once per token.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;
use common::*;
use posthuman_gpt2::SeededRng;
use posthuman_gpt2::candle_core::{DType, Device, Tensor};
use posthuman_gpt2::candle_nn::VarBuilder;
use posthuman_gpt2::llama::{Config, Llama, LlamaCache, init_weights};

/// Large enough that the MLP, o/down and lm-head products of the decode step take the
/// multi-threaded path (over 2^15 multiply-adds each).
fn config(family: &str) -> Config {
    let mut c = Config::tiny(512, 128, 2, 8, 2);
    c.max_position_embeddings = 160;
    c.initializer_range = 0.1;
    match family {
        "qwen2" => c.qkv_bias = true,
        "qwen3" => {
            c.qk_norm = true;
            c.head_dim = 32; // explicit head_dim ≠ hidden / heads, as Qwen3 allows
        }
        _ => {}
    }
    c
}

/// A model with random weights, and random biases and norm weights where the family has
/// them (init gives zeros and ones, which would hide a bias or norm left out).
fn model(cfg: &Config) -> Llama {
    let vm = init_weights(cfg, 3).unwrap();
    let mut rng = SeededRng::new(4);
    for (name, var) in vm.data().lock().unwrap().iter() {
        if name.ends_with(".bias") || name.contains("_norm.") || name.contains("layernorm") {
            let shape = var.dims().to_vec();
            let noise = rand_t(&mut rng, &shape, 0.5, DType::F32);
            let base = if name.ends_with(".bias") { 0.0 } else { 1.0 };
            var.set(&(noise + base).unwrap()).unwrap();
        }
    }
    Llama::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap()
}

/// Logits of a `prompt`-token pass, then one token at a time up to `ids`' length.
fn decode(m: &Llama, cache: &mut LlamaCache, ids: &Tensor, prompt: usize) -> Tensor {
    let n = ids.dim(1).unwrap();
    let mut rows = vec![m.forward_cached(&ids.narrow(1, 0, prompt).unwrap(), cache).unwrap()];
    for t in prompt..n {
        rows.push(m.forward_cached(&ids.narrow(1, t, 1).unwrap(), cache).unwrap());
    }
    Tensor::cat(&rows, 1).unwrap()
}

#[test]
fn one_token_steps_equal_the_full_forward() {
    for family in ["llama", "qwen2", "qwen3"] {
        let cfg = config(family);
        let m = model(&cfg);
        // 90 positions: past the first block of cache rows, so the buffers grow once.
        let x = ids(&mut SeededRng::new(5), &[1, 90], cfg.vocab_size);
        let full = vals(&m.forward(&x).unwrap());
        let mut cache = LlamaCache::new(&cfg);
        let cached = vals(&decode(&m, &mut cache, &x, 6));
        assert_eq!(cache.len(), 90);
        let e = rel_err(&cached, &full);
        assert!(e < 1e-5, "{family}: one-token steps differ from the full forward by {e}");
    }
}

#[test]
fn decoding_is_bit_identical_across_runs_and_thread_counts() {
    let cfg = config("qwen2");
    let m = model(&cfg);
    let x = ids(&mut SeededRng::new(6), &[1, 40], cfg.vocab_size);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut cache = LlamaCache::new(&cfg);
            decode(&m, &mut cache, &x, 3).flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
    };
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let one = bits(run(1));
    assert_eq!(one, bits(run(2)), "1 vs 2 threads");
    assert_eq!(one, bits(run(2)), "two runs");
}

#[test]
fn the_cache_grows_in_blocks_and_refuses_what_does_not_fit() {
    let cfg = config("llama");
    let m = model(&cfg);
    let x = ids(&mut SeededRng::new(7), &[1, 160], cfg.vocab_size);
    // Sized for prompt + new tokens: no growth while they fit.
    let mut cache = LlamaCache::with_capacity(&cfg, 50);
    decode(&m, &mut cache, &x.narrow(1, 0, 50).unwrap(), 4);
    assert_eq!((cache.len(), cache.capacity()), (50, 50));
    // One more doubles the room (bounded by the position table), not one row.
    m.forward_cached(&x.narrow(1, 50, 1).unwrap(), &mut cache).unwrap();
    assert_eq!((cache.len(), cache.capacity()), (51, 100));
    // A default cache starts with a block of 64 positions.
    let mut fresh = LlamaCache::new(&cfg);
    m.forward_cached(&x.narrow(1, 0, 1).unwrap(), &mut fresh).unwrap();
    assert_eq!(fresh.capacity(), 64);

    // Bad input is an error that leaves the cache as it was.
    let bad = Tensor::from_vec(vec![cfg.vocab_size as u32], (1, 1), &Device::Cpu).unwrap();
    let e = m.forward_cached(&bad, &mut cache).unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
    assert_eq!(cache.len(), 51);
    let mut full = LlamaCache::new(&cfg);
    decode(&m, &mut full, &x, 100);
    assert_eq!((full.len(), full.capacity()), (160, 160));
    let e = m.forward_cached(&x.narrow(1, 0, 1).unwrap(), &mut full).unwrap_err().to_string();
    assert!(e.contains("need 1..=160"), "{e}");
    assert_eq!(full.len(), 160);
}
