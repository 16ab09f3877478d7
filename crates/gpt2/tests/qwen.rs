//! Qwen2/Qwen2.5 and Qwen3 (run by the Llama module with q/k/v biases, resp. per-head q/k
//! norms and an explicit head_dim) against PyTorch + transformers, from committed fixtures
//! (tests/fixtures/qwen, made by tests/fixtures/make_qwen_fixtures.py): the same weights give
//! transformers' logits, 20 full fine-tuning AdamW steps from the same init and batches give
//! its losses within 1e-4, and greedy decoding (KV-cached) HF `generate`'s tokens; KV-cached
//! decoding equals the full forward; every parameter
//! (biases and q/k norms included) gets a gradient; training is bit-identical across runs
//! and thread counts; published configs parse and what we do not run is refused with a typed
//! error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use posthuman_gpt2::candle_core::{DType, Device, Tensor};
use posthuman_gpt2::candle_nn::VarBuilder;
use posthuman_gpt2::family::{AnyConfig, AnyWeights, Family};
use posthuman_gpt2::llama::{Config, ConfigError, Llama, LlamaCache, param_shapes};
use posthuman_gpt2::llama_weights::{self, CheckpointError, LlamaWeights};
use posthuman_gpt2::lora::{Family as LoraFamily, LoraAdapter, LoraBase, LoraConfig};
use posthuman_gpt2::{AdamW, AdamWConfig, Grads, SeededRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(family: &str) -> PathBuf {
    manifest_dir().join("tests/fixtures/qwen").join(family)
}

fn base(family: &str) -> (String, Config, LlamaWeights) {
    let dir = fixture(family).join("base");
    let json = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = Config::from_json(&json).unwrap();
    let w = llama_weights::load_checkpoint(&dir, &cfg).unwrap();
    (json, cfg, w)
}

/// What transformers computed: the batches, the losses, logits of batch 0 before and after.
struct Expected {
    inputs: Vec<Tensor>,
    targets: Vec<Tensor>,
    losses: Vec<f64>,
    lr: f64,
    adamw: AdamWConfig,
    logits: HashMap<String, Tensor>,
    greedy_prompt: Vec<u32>,
    greedy_tokens: Vec<u32>,
}

fn expected(family: &str) -> Expected {
    let dir = fixture(family);
    let t = posthuman_gpt2::candle_core::safetensors::load(
        dir.join("expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let split = |name: &str| -> Vec<Tensor> {
        let x = t[name].to_dtype(DType::U32).unwrap();
        (0..x.dim(0).unwrap()).map(|i| x.get(i).unwrap()).collect()
    };
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let f = |k: &str| j[k].as_f64().unwrap();
    let toks = |k: &str| -> Vec<u32> {
        j[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
    };
    Expected {
        greedy_prompt: toks("greedy_prompt"),
        greedy_tokens: toks("greedy_tokens"),
        inputs: split("inputs"),
        targets: split("targets"),
        losses: j["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(),
        lr: f("lr"),
        adamw: AdamWConfig {
            beta1: j["betas"][0].as_f64().unwrap(),
            beta2: j["betas"][1].as_f64().unwrap(),
            eps: f("eps"),
            weight_decay: f("weight_decay"),
        },
        logits: t
            .iter()
            .filter(|(k, _)| k.starts_with("logits_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// max |a − b| / max |b|.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (common::vals(a), common::vals(b));
    let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    d / b.iter().map(|y| y.abs()).fold(0.0, f64::max)
}

/// Logits of the fixture weights, then 20 AdamW steps on every parameter from the same init
/// and batches as PyTorch: its losses within 1e-4, its final logits within 1e-4 relative.
fn matches_transformers(family: &str) {
    let ex = expected(family);
    let (json, cfg, w) = base(family);
    let x0 = &ex.inputs[0];
    let frozen = w.model(&cfg, &Device::Cpu).unwrap();
    let e = rel_diff(&frozen.forward(x0).unwrap(), &ex.logits["logits_init"]);
    eprintln!("{family}: logits vs transformers, max relative difference {e:.2e}");
    assert!(e < 1e-4, "{family}: logits differ from transformers' by {e}");

    let vm = w.to_var_map(&Device::Cpu).unwrap();
    let m = Llama::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let mut opt = AdamW::new(&vm, ex.adamw).unwrap();
    let mut losses = Vec::new();
    for step in 0..ex.losses.len() {
        let i = step % ex.inputs.len();
        // The worker's path: the hand-written layer step.
        let mut grads = Grads::zeros(&opt);
        let loss = m
            .loss_and_grads_layerwise(&ex.inputs[i], &ex.targets[i], None, |s| {
                grads.accumulate_step(&opt, s).map_err(posthuman_gpt2::candle_core::Error::wrap)
            })
            .unwrap();
        if step == 0 {
            // Every parameter learns, the family's own (biases, q/k norms) included.
            for (i, p) in opt.params().iter().enumerate() {
                let g = grads.get(i).unwrap();
                assert!(g.iter().any(|v| *v != 0.0), "{family}: {} has no gradient", p.name);
            }
        }
        opt.step(&grads, ex.lr).unwrap();
        losses.push(f64::from(loss));
    }
    let worst = losses.iter().zip(&ex.losses).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    eprintln!("{family}: largest |loss - torch's loss| over {} steps: {worst:.2e}", losses.len());
    for (i, (g, w)) in losses.iter().zip(&ex.losses).enumerate() {
        assert!((g - w).abs() < 1e-4, "{family} step {i}: loss {g} vs torch's {w}");
    }
    assert!(losses[0] - losses[losses.len() - 1] > 0.5, "{family}: {losses:?}");
    let e = rel_diff(&m.forward(x0).unwrap(), &ex.logits["logits_final"]);
    eprintln!("{family}: trained logits vs transformers, max relative difference {e:.2e}");
    assert!(e < 1e-4, "{family}: trained logits differ by {e}");

    // `QWEN_SAVE_DIR=…` keeps the trained model for make_qwen_fixtures.py --check (loading
    // it in transformers).
    if let Ok(keep) = std::env::var("QWEN_SAVE_DIR") {
        let dir = Path::new(&keep).join(family);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), &json).unwrap();
        let trained = LlamaWeights::from_var_map(&cfg, &vm).unwrap();
        llama_weights::save_safetensors(&trained, &dir.join("model.safetensors")).unwrap();
    }
}

/// Greedy decoding with the KV cache, one token at a time after the prompt.
fn greedy(m: &Llama, cfg: &Config, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = LlamaCache::new(cfg);
    let mut x = Tensor::from_vec(prompt.to_vec(), (1, prompt.len()), &Device::Cpu).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let logits = m.forward_cached(&x, &mut cache).unwrap();
        let last = logits.narrow(1, logits.dim(1).unwrap() - 1, 1).unwrap().flatten_all().unwrap();
        let next = last.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        out.push(next);
        x = Tensor::from_vec(vec![next], (1, 1), &Device::Cpu).unwrap();
    }
    out
}

#[test]
fn greedy_decoding_gives_transformers_generate_tokens() {
    for family in ["qwen2", "qwen3"] {
        let ex = expected(family);
        let (_, cfg, w) = base(family);
        let m = w.model(&cfg, &Device::Cpu).unwrap();
        let got = greedy(&m, &cfg, &ex.greedy_prompt, ex.greedy_tokens.len());
        assert_eq!(got, ex.greedy_tokens, "{family}");
    }
}

#[test]
fn qwen2_logits_and_training_match_transformers() {
    matches_transformers("qwen2");
}

#[test]
fn qwen3_logits_and_training_match_transformers() {
    matches_transformers("qwen3");
}

#[test]
fn fixture_configs_parse_into_their_families_features() {
    let (json, c, w) = base("qwen2");
    assert!(c.qkv_bias && !c.qk_norm && c.tie_word_embeddings);
    assert_eq!((c.head_dim, c.rope_theta), (8, 1e6), "rope_theta from rope_parameters");
    assert!(w.get("model.layers.1.self_attn.v_proj.bias").is_some());
    assert!(w.get("model.layers.0.self_attn.o_proj.bias").is_none());
    let any = AnyConfig::from_json(&json).unwrap();
    assert_eq!(any.family(), Family::Qwen2);
    assert_eq!(any.to_json(), json, "config.json is written back unchanged");
    assert!(any.architecture().starts_with("qwen2 2L/32d/4h/2kv"), "{}", any.architecture());

    let (json, c, w) = base("qwen3");
    assert!(!c.qkv_bias && c.qk_norm && !c.tie_word_embeddings);
    assert_eq!((c.head_dim, c.hidden_size / c.num_attention_heads, c.rope_theta), (16, 8, 1e6));
    assert_eq!(w.get("model.layers.0.self_attn.q_norm.weight").unwrap().dims(), [16]);
    assert_eq!(w.get("model.layers.0.self_attn.q_proj.weight").unwrap().dims(), [64, 32]);
    assert_eq!(w.get("model.layers.0.self_attn.o_proj.weight").unwrap().dims(), [32, 64]);
    let any = AnyConfig::from_json(&json).unwrap();
    assert_eq!(any.family(), Family::Qwen3);
    assert!(any.architecture().starts_with("qwen3 2L/32d/4h/2kv/16hd"), "{}", any.architecture());
    // Parameters as HF counts them: q/k norms are 2 × head_dim per layer.
    let n: usize = param_shapes(&c).iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(any.shape().parameters, n as u64);
    assert!(param_shapes(&c).iter().any(|(k, _)| k == "model.layers.1.self_attn.k_norm.weight"));
}

#[test]
fn weights_round_trip_and_missing_family_tensors_are_refused() {
    for family in ["qwen2", "qwen3"] {
        let (json, cfg, w) = base(family);
        let any = AnyConfig::from_json(&json).unwrap();
        let aw = AnyWeights::Llama(w.clone());
        let bytes = aw.to_safetensors_bytes().unwrap();
        let back = AnyWeights::from_safetensors_bytes(&bytes, &any).unwrap();
        assert_eq!(back.hash().unwrap(), w.hash().unwrap());
        // The fixture file as transformers wrote it hashes like our own save.
        let file = std::fs::read(fixture(family).join("base/model.safetensors")).unwrap();
        assert_eq!(
            AnyWeights::from_safetensors_bytes(&file, &any).unwrap().hash().unwrap(),
            w.hash().unwrap()
        );
        // Without the family's own tensors the checkpoint is incomplete, by name.
        let own =
            if family == "qwen2" { ".self_attn.q_proj.bias" } else { ".self_attn.k_norm.weight" };
        let mut ts = w.tensors().clone();
        ts.retain(|k, _| !k.ends_with(own));
        let e = LlamaWeights::from_tensors(&cfg, ts).unwrap_err();
        assert!(
            matches!(&e, CheckpointError::MissingTensor { tensor } if tensor.ends_with(own)),
            "{e}"
        );
        // A plain Llama config refuses them as unexpected.
        let mut plain = cfg.clone();
        (plain.qkv_bias, plain.qk_norm) = (false, false);
        let e = llama_weights::load_safetensors_bytes(&file, &plain).unwrap_err();
        assert!(matches!(e, CheckpointError::UnexpectedTensor { .. }), "{e}");
    }
}

#[test]
fn cached_decoding_equals_the_full_forward() {
    for family in ["qwen2", "qwen3"] {
        let (_, cfg, w) = base(family);
        let m = w.model(&cfg, &Device::Cpu).unwrap();
        let x = common::ids(&mut SeededRng::new(4), &[2, 12], cfg.vocab_size);
        let full = common::vals(&m.forward(&x).unwrap());
        let mut cache = LlamaCache::new(&cfg);
        let mut rows = vec![m.forward_cached(&x.narrow(1, 0, 7).unwrap(), &mut cache).unwrap()];
        for t in 7..12 {
            rows.push(m.forward_cached(&x.narrow(1, t, 1).unwrap(), &mut cache).unwrap());
        }
        let cached = common::vals(&Tensor::cat(&rows, 1).unwrap());
        let e = common::rel_err(&cached, &full);
        assert!(e < 1e-5, "{family}: cached decoding differs from the full forward by {e}");
    }
}

/// LoRA sees the same module names as Llama's (biases and norms are not targets): an adapter
/// starts as the identity, and a step moves only A and B.
#[test]
fn lora_targets_the_same_modules_and_leaves_biases_and_norms_frozen() {
    for family in ["qwen2", "qwen3"] {
        let (_, cfg, w) = base(family);
        let lb = LoraBase::llama(&cfg);
        let targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
        let ad =
            LoraAdapter::init(LoraConfig::new(LoraFamily::Llama, 4, 8.0, 0.0, &targets), &lb, 3)
                .unwrap();
        let model = w.model(&cfg, &Device::Cpu).unwrap();
        let m = model.with_lora(&ad).unwrap();
        let x = common::ids(&mut SeededRng::new(5), &[1, 10], cfg.vocab_size);
        let y = common::ids(&mut SeededRng::new(6), &[1, 10], cfg.vocab_size);
        assert_eq!(
            common::vals(&m.forward(&x).unwrap()),
            common::vals(&model.forward(&x).unwrap())
        );
        let mut opt = AdamW::new(ad.var_map(), AdamWConfig::default()).unwrap();
        let store = m.loss(&x, &y).unwrap().backward().unwrap();
        opt.step(&Grads::from_store(&opt, &store).unwrap(), 1e-2).unwrap();
        assert!(opt.params().iter().all(|p| p.name.contains("lora_")), "{family}");
        let moved = rel_diff(&m.forward(&x).unwrap(), &model.forward(&x).unwrap());
        assert!(moved > 0.0, "{family}: the adapter step changed nothing");
    }
}

/// Qwen2.5-0.5B's config.json as published (tied head, GQA 14:2, window off).
const QWEN25: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
  "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1", "use_cache": true, "use_sliding_window": false,
  "vocab_size": 151936
}"#;

/// Qwen3-0.6B's config.json as published (head_dim 128 ≠ 1024/16).
const QWEN3: &str = r#"{
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936
}"#;

#[test]
fn parses_published_configs() {
    let c = Config::from_json(QWEN25).unwrap();
    assert!(c.qkv_bias && !c.qk_norm && c.tie_word_embeddings);
    assert_eq!((c.head_dim, c.num_key_value_heads, c.rope_theta), (64, 2, 1e6));
    assert!(c.extra.contains_key("bos_token_id") && !c.extra.contains_key("sliding_window"));
    // Qwen2.5-0.5B has 494M parameters (HF's count: tied head once, biases included).
    let n: usize = param_shapes(&c).iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(n, 494_032_768);
    let c = Config::from_json(QWEN3).unwrap();
    assert!(!c.qkv_bias && c.qk_norm);
    assert_eq!((c.head_dim, c.num_attention_heads * c.head_dim, c.hidden_size), (128, 2048, 1024));
    // Qwen3-0.6B: 596M with the tied head counted once.
    let n: usize = param_shapes(&c).iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(n, 596_049_920);
    // Qwen3Config's head_dim default is 128, not hidden/heads.
    let mut m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(QWEN3).unwrap();
    m.remove("head_dim");
    assert_eq!(Config::from_json(&serde_json::Value::Object(m).to_string()).unwrap().head_dim, 128);
}

#[test]
fn refuses_what_it_cannot_run_with_typed_errors() {
    let with = |base: &str, k: &str, v: &str| {
        let mut m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(base).unwrap();
        m.insert(k.into(), serde_json::from_str(v).unwrap());
        let text = serde_json::Value::Object(m).to_string();
        let got = Config::from_json(&text);
        // The family entry point refuses exactly what the module refuses.
        assert_eq!(AnyConfig::from_json(&text).is_err(), got.is_err(), "{k} = {v}");
        got
    };
    for base in [QWEN25, QWEN3] {
        assert!(matches!(
            with(base, "use_sliding_window", "true"),
            Err(ConfigError::Unsupported { field: "use_sliding_window", .. })
        ));
        assert!(matches!(
            with(base, "layer_types", r#"["full_attention","sliding_attention"]"#),
            Err(ConfigError::Unsupported { field: "layer_types", .. })
        ));
        assert!(matches!(with(base, "head_dim", "63"), Err(ConfigError::Invalid(_))));
        assert!(matches!(with(base, "head_dim", "0"), Err(ConfigError::Invalid(_))));
        assert!(matches!(with(base, "num_key_value_heads", "3"), Err(ConfigError::Invalid(_))));
        assert!(matches!(
            with(base, "hidden_act", "\"gelu\""),
            Err(ConfigError::Unsupported { field: "hidden_act", .. })
        ));
        assert!(matches!(
            with(base, "rope_scaling", r#"{"rope_type":"yarn","factor":4.0}"#),
            Err(ConfigError::Unsupported { field: "rope_scaling.rope_type", .. })
        ));
        assert!(matches!(
            with(base, "rope_parameters", r#"{"rope_type":"yarn","factor":4.0}"#),
            Err(ConfigError::Unsupported { field: "rope_scaling.rope_type", .. })
        ));
    }
    assert!(matches!(
        with(QWEN3, "attention_bias", "true"),
        Err(ConfigError::Unsupported { field: "attention_bias", .. })
    ));
    // A window that is configured but switched off is no refusal.
    assert!(with(QWEN25, "sliding_window", "4096").is_ok());
}

/// Two AdamW steps of a model with both features on (biases and q/k norms), large enough
/// that the kernels split rows across threads; the weights' canonical hash.
fn qwen_run_once() -> String {
    let mut cfg = Config::tiny(512, 64, 2, 4, 2);
    (cfg.qkv_bias, cfg.qk_norm, cfg.head_dim, cfg.max_position_embeddings) = (true, true, 32, 64);
    let vm = posthuman_gpt2::llama::init_weights(&cfg, 42).unwrap();
    let m = Llama::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let mut opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
    for step in 0..2 {
        let mut rng = SeededRng::new(step);
        let (x, y) = (common::ids(&mut rng, &[4, 64], 512), common::ids(&mut rng, &[4, 64], 512));
        let store = m.loss(&x, &y).unwrap().backward().unwrap();
        opt.step(&Grads::from_store(&opt, &store).unwrap(), 1e-3).unwrap();
    }
    LlamaWeights::from_var_map(&cfg, &vm).unwrap().hash().unwrap().to_string()
}

/// Entry point for the child processes of `qwen_training_is_bit_identical_across_threads`.
#[test]
fn qwen_child_print_hash() {
    if std::env::var("QWEN_CHILD").is_ok() {
        println!("HASH={}", qwen_run_once());
    }
}

#[test]
fn qwen_training_is_bit_identical_across_runs_and_thread_counts() {
    let a = qwen_run_once();
    assert_eq!(a, qwen_run_once());
    // Separate processes, since the thread pools' sizes are fixed per process.
    for threads in ["1", "2"] {
        let h = common::child_hash("qwen_child_print_hash", "QWEN_CHILD", threads);
        assert_eq!(h, a, "{threads} thread(s) gave different weights");
    }
}

/// The package's directory as cargo hands it to the running test, not the one compiled in:
/// a build cache shared by two checkouts can run a test binary built in the other one.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from)
}
