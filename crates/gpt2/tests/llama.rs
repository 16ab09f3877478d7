//! The Llama module: config.json parsing (typed refusals), HF tensor names, logits equal to
//! candle-transformers' llama on the same random weights, and training (every parameter a
//! gradient, loss falls on a repeated batch).
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;
use common::*;
use posthuman_gpt2::candle_core::{DType, Device, Tensor};
use posthuman_gpt2::candle_nn::{VarBuilder, VarMap};
use posthuman_gpt2::llama::{Config, ConfigError, Llama, init_weights, param_shapes};
use posthuman_gpt2::lora::{Family, LoraAdapter, LoraBase, LoraConfig};
use posthuman_gpt2::{AdamW, AdamWConfig, DropoutRng, Grads, SeededRng};

/// SmolLM2-135M's config.json, as published (GQA 9:3, tied head).
const SMOLLM2: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 576,
  "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "is_llama_config": true,
  "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 9,
  "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_interleaved": false, "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 49152
}"#;

/// Llama-3.2-1B's rope and head fields.
const LLAMA32: &str = r#"{
  "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
  "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": true,
  "vocab_size": 128256, "mlp_bias": false,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}
}"#;

#[test]
fn parses_published_configs() {
    let c = Config::from_json(SMOLLM2).unwrap();
    assert_eq!((c.hidden_size, c.num_attention_heads, c.num_key_value_heads), (576, 9, 3));
    assert_eq!((c.head_dim, c.rope_theta, c.rms_norm_eps), (64, 100_000.0, 1e-5));
    assert!(c.tie_word_embeddings && c.rope_scaling.is_none());
    assert!(c.extra.contains_key("torch_dtype") && !c.extra.contains_key("hidden_size"));
    let c = Config::from_json(LLAMA32).unwrap();
    let s = c.rope_scaling.unwrap();
    assert_eq!((s.factor, s.original_max_position_embeddings), (32.0, 8192));
    // TinyLlama leaves out most keys: HF defaults fill them, tie defaults to false.
    let c = Config::from_json(r#"{"model_type":"llama","num_key_value_heads":4,"vocab_size":32000,"hidden_size":2048,"intermediate_size":5632,"num_hidden_layers":22,"num_attention_heads":32}"#).unwrap();
    assert_eq!((c.head_dim, c.rope_theta, c.max_position_embeddings), (64, 10_000.0, 2048));
    assert!(!c.tie_word_embeddings);
}

#[test]
fn refuses_what_it_cannot_run_with_typed_errors() {
    let with = |k: &str, v: &str| {
        let mut m: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(SMOLLM2).unwrap();
        m.insert(k.into(), serde_json::from_str(v).unwrap());
        Config::from_json(&serde_json::Value::Object(m).to_string())
    };
    assert!(
        matches!(with("model_type", "\"mistral\""), Err(ConfigError::WrongModelType(t)) if t == "mistral")
    );
    assert!(matches!(
        with("rope_scaling", r#"{"rope_type":"yarn","factor":4.0}"#),
        Err(ConfigError::Unsupported { field: "rope_scaling.rope_type", .. })
    ));
    assert!(matches!(
        with("rope_scaling", r#"{"type":"linear","factor":4.0}"#),
        Err(ConfigError::Unsupported { .. })
    ));
    assert!(matches!(
        with("rope_scaling", r#"{"rope_type":"llama3","factor":8.0}"#),
        Err(ConfigError::Malformed(_))
    ));
    assert!(matches!(
        with("attention_bias", "true"),
        Err(ConfigError::Unsupported { field: "attention_bias", .. })
    ));
    assert!(matches!(
        with("mlp_bias", "true"),
        Err(ConfigError::Unsupported { field: "mlp_bias", .. })
    ));
    assert!(matches!(
        with("hidden_act", "\"gelu\""),
        Err(ConfigError::Unsupported { field: "hidden_act", .. })
    ));
    assert!(matches!(with("num_key_value_heads", "4"), Err(ConfigError::Invalid(_))));
    assert!(matches!(with("hidden_size", "-1"), Err(ConfigError::Malformed(_))));
    assert!(matches!(with("hidden_size", "0"), Err(ConfigError::Invalid(_))));
    assert!(matches!(Config::from_json("[1]"), Err(ConfigError::Malformed(_))));
    assert!(matches!(Config::from_json("{}"), Err(ConfigError::WrongModelType(_))));
}

fn tiny(tied: bool) -> Config {
    let mut c = Config::tiny(61, 32, 2, 4, 2);
    c.tie_word_embeddings = tied;
    c.rope_theta = 500.0;
    c.max_position_embeddings = 16;
    c
}

#[test]
fn hf_tensor_names_and_lm_head_only_when_untied() {
    let names = |tied| param_shapes(&tiny(tied)).into_iter().map(|p| p.0).collect::<Vec<_>>();
    let untied = names(false);
    for n in [
        "model.embed_tokens.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        assert!(untied.iter().any(|x| x == n), "{n}");
    }
    assert_eq!(names(true).len() + 1, untied.len());
    assert!(!names(true).iter().any(|x| x == "lm_head.weight"));
    // GQA: k/v project to H_kv · head_dim.
    let s = param_shapes(&tiny(false));
    let k = s.iter().find(|p| p.0 == "model.layers.0.self_attn.k_proj.weight").unwrap();
    assert_eq!(k.1, vec![16, 32]);
}

fn ct_config(c: &Config) -> candle_transformers::models::llama::Config {
    use candle_transformers::models::llama as ct;
    ct::Config {
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        vocab_size: c.vocab_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.num_key_value_heads,
        use_flash_attn: false,
        rms_norm_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta as f32,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: c.rope_scaling.as_ref().map(|s| ct::Llama3RopeConfig {
            factor: s.factor as f32,
            low_freq_factor: s.low_freq_factor as f32,
            high_freq_factor: s.high_freq_factor as f32,
            original_max_position_embeddings: s.original_max_position_embeddings,
            rope_type: ct::Llama3RopeType::Llama3,
        }),
        max_position_embeddings: c.max_position_embeddings,
        tie_word_embeddings: c.tie_word_embeddings,
    }
}

/// candle-transformers' llama (its inference reference) returns the last position's logits;
/// ours must equal them on the same random weights, for tied/untied heads, GQA and llama3
/// rope scaling.
#[test]
fn logits_match_candle_transformers_llama() {
    for (tied, scaled) in [(false, false), (true, true), (false, true)] {
        let mut cfg = tiny(tied);
        cfg.initializer_range = 0.2; // larger weights: a non-trivial attention pattern
        if scaled {
            cfg.rope_scaling = Some(posthuman_gpt2::ops::llama::Llama3Scaling {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8,
            });
        }
        let vm = init_weights(&cfg, 3).unwrap();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let ours = Llama::new(&cfg, vb.clone()).unwrap();
        let theirs = candle_transformers::models::llama::Llama::load(vb, &ct_config(&cfg)).unwrap();
        let mut rng = SeededRng::new(4);
        let x = ids(&mut rng, &[2, 12], cfg.vocab_size);
        for t in [1, 7, 12] {
            let xt = x.narrow(1, 0, t).unwrap();
            let mut cache = candle_transformers::models::llama::Cache::new(
                false,
                DType::F32,
                &ct_config(&cfg),
                &Device::Cpu,
            )
            .unwrap();
            let want = vals(&theirs.forward(&xt, 0, &mut cache).unwrap());
            let got = vals(&ours.forward(&xt).unwrap().narrow(1, t - 1, 1).unwrap());
            let e = rel_err(&got, &want);
            assert!(e < 1e-4, "tied {tied}, scaled {scaled}, T {t}: logits differ by {e}");
        }
    }
}

#[test]
fn one_step_gives_every_parameter_a_gradient_and_training_lowers_the_loss() {
    for tied in [false, true] {
        let cfg = tiny(tied);
        let vm: VarMap = init_weights(&cfg, 5).unwrap();
        let model =
            Llama::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let mut rng = SeededRng::new(6);
        let x = ids(&mut rng, &[2, 10], cfg.vocab_size);
        let y = ids(&mut rng, &[2, 10], cfg.vocab_size);
        let mut opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
        assert_eq!(opt.params().len(), param_shapes(&cfg).len());
        let mut losses = Vec::new();
        for step in 0..8 {
            let loss = model.loss(&x, &y).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
            let store = loss.backward().unwrap();
            if step == 0 {
                let data = vm.data().lock().unwrap();
                for (name, var) in data.iter() {
                    let g =
                        store.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
                    assert!(vals(g).iter().any(|v| *v != 0.0), "{name}: zero gradient");
                }
            }
            let grads = Grads::from_store(&opt, &store).unwrap();
            opt.step(&grads, 3e-3).unwrap();
        }
        // Initial loss ≈ ln V for a near-zero init; a repeated batch must be learnt.
        assert!((losses[0] - (61f32).ln()).abs() < 0.1, "initial loss {}", losses[0]);
        assert!(
            losses[7] < losses[0] - 0.5,
            "tied {tied}: loss did not fall on a repeated batch: {losses:?}"
        );
        // Loss agrees with logits + log-softmax.
        let logits = model.forward(&x).unwrap();
        let lsm = posthuman_gpt2::candle_nn::ops::log_softmax(&logits, 2).unwrap();
        let yv = y.flatten_all().unwrap().to_vec1::<u32>().unwrap();
        let lv = vals(&lsm);
        let nll: f64 =
            yv.iter().enumerate().map(|(i, &t)| -lv[i * 61 + t as usize]).sum::<f64>() / 20.0;
        let l = model.loss(&x, &y).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((nll - l).abs() < 1e-5 * (1.0 + l), "loss {l} vs log-softmax NLL {nll}");
    }
}

#[test]
fn bad_ids_are_errors_not_panics() {
    let cfg = tiny(true);
    let vm = init_weights(&cfg, 1).unwrap();
    let m = Llama::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let t = |v: Vec<u32>, n| Tensor::from_vec(v, (1, n), &Device::Cpu).unwrap();
    assert!(m.forward(&t(vec![61], 1)).is_err());
    assert!(m.forward(&t(vec![0; 17], 17)).is_err());
    assert!(m.forward(&Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap()).is_err());
    assert!(m.loss(&t(vec![1, 2], 2), &t(vec![1], 1)).is_err());
}

#[test]
fn cached_decoding_equals_the_full_forward() {
    use posthuman_gpt2::llama::LlamaCache;
    let mut cfg = tiny(true);
    cfg.initializer_range = 0.2;
    let vm = init_weights(&cfg, 8).unwrap();
    let m = Llama::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let mut rng = SeededRng::new(9);
    let x = ids(&mut rng, &[2, 9], cfg.vocab_size);
    let full = vals(&m.forward(&x).unwrap());
    let mut cache = LlamaCache::new(&cfg);
    // A 5-token prompt, then one token at a time.
    let mut rows = vec![m.forward_cached(&x.narrow(1, 0, 5).unwrap(), &mut cache).unwrap()];
    for t in 5..9 {
        rows.push(m.forward_cached(&x.narrow(1, t, 1).unwrap(), &mut cache).unwrap());
    }
    assert_eq!(cache.len(), 9);
    let cached = vals(&Tensor::cat(&rows, 1).unwrap());
    let e = rel_err(&cached, &full);
    assert!(e < 1e-5, "cached decoding differs from the full forward by {e}");
    // Past the position table, or another batch size, is an error.
    assert!(m.forward_cached(&x.narrow(1, 0, 8).unwrap(), &mut cache).is_err());
    let one = x.narrow(0, 0, 1).unwrap().narrow(1, 0, 1).unwrap();
    assert!(m.forward_cached(&one, &mut cache).is_err());
}

/// Two AdamW steps, through the whole graph and then layer by layer (checkpointed), on a model
/// large enough that gemm splits work across threads and the MLP's element-wise passes
/// (256 rows × 640 > 2^17 values) take their chunked parallel paths, then two LoRA steps with
/// dropout through the hand-written layer step; the weights' and the adapter's hashes.
fn llama_run_once() -> String {
    let mut cfg = Config::tiny(512, 64, 2, 4, 2);
    cfg.max_position_embeddings = 64;
    cfg.intermediate_size = 640;
    let vm = init_weights(&cfg, 42).unwrap();
    let m = Llama::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let mut opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
    for step in 0..2 {
        let mut rng = SeededRng::new(step);
        let (x, y) = (ids(&mut rng, &[4, 64], 512), ids(&mut rng, &[4, 64], 512));
        let grads = if step == 0 {
            let store = m.loss(&x, &y).unwrap().backward().unwrap();
            Grads::from_store(&opt, &store).unwrap()
        } else {
            let mut g = Grads::zeros(&opt);
            m.loss_and_grads_checkpointed(&x, &y, |s| {
                g.accumulate(&opt, s).map_err(posthuman_gpt2::candle_core::Error::wrap)
            })
            .unwrap();
            g
        };
        opt.step(&grads, 1e-3).unwrap();
    }
    // Then LoRA on all seven projections with dropout, through the same layer step.
    let modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    let lc = LoraConfig::new(Family::Llama, 4, 8.0, 0.1, &modules);
    let ad = LoraAdapter::init(lc, &LoraBase::llama(&cfg), 3).unwrap();
    let lm = m.with_lora(&ad).unwrap();
    let mut lopt = AdamW::new(ad.var_map(), AdamWConfig::default()).unwrap();
    for step in 0..2 {
        let mut rng = SeededRng::new(step + 10);
        let (x, y) = (ids(&mut rng, &[4, 64], 512), ids(&mut rng, &[4, 64], 512));
        let mut g = Grads::zeros(&lopt);
        let mut drop = DropoutRng::new(step);
        lm.loss_and_grads_layerwise(&x, &y, Some(&mut drop), |s| {
            g.accumulate_step(&lopt, s).map_err(posthuman_gpt2::candle_core::Error::wrap)
        })
        .unwrap();
        lopt.step(&g, 1e-3).unwrap();
    }
    let hash = |vm: &VarMap| {
        let data = vm.data().lock().unwrap();
        let ts: Vec<(String, Tensor)> =
            data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        posthuman_gpt2::weights_hash(ts.iter().map(|(k, t)| (k.as_str(), t))).unwrap().to_string()
    };
    format!("{}+{}", hash(&vm), hash(ad.var_map()))
}

/// Entry point for the child processes of `llama_training_is_bit_identical_across_threads`.
#[test]
fn llama_child_print_hash() {
    if std::env::var("LLAMA_CHILD").is_ok() {
        println!("HASH={}", llama_run_once());
    }
}

#[test]
fn llama_training_is_bit_identical_across_runs_and_thread_counts() {
    let a = llama_run_once();
    assert_eq!(a, llama_run_once());
    // Separate processes, since the thread pools' sizes are fixed per process.
    for threads in ["1", "2"] {
        let h = child_hash("llama_child_print_hash", "LLAMA_CHILD", threads);
        assert_eq!(h, a, "{threads} thread(s) gave different weights");
    }
}

/// transformers 5 writes `rope_theta` and the scaling rule inside `rope_parameters`; older
/// files put them at the top level. Both read the same.
#[test]
fn rope_parameters_as_transformers_5_writes_them() {
    let v5 = LLAMA32
        .replace(r#""rope_theta": 500000.0,"#, "")
        .replace(r#""rope_scaling": {"#, r#""rope_parameters": {"rope_theta": 500000.0, "#);
    let j: serde_json::Value = serde_json::from_str(&v5).unwrap();
    assert!(j.get("rope_theta").is_none() && j.get("rope_scaling").is_none(), "{v5}");
    assert_eq!(j["rope_parameters"]["rope_type"], "llama3");
    let (old, new) = (Config::from_json(LLAMA32).unwrap(), Config::from_json(&v5).unwrap());
    assert_eq!((new.rope_theta, &new.rope_scaling), (old.rope_theta, &old.rope_scaling));
    assert!(!new.extra.contains_key("rope_parameters"));
    // The default rule: theta only.
    let c = Config::from_json(
        r#"{"model_type":"llama","hidden_size":64,"num_attention_heads":4,
            "rope_parameters":{"rope_type":"default","rope_theta":1234.0}}"#,
    )
    .unwrap();
    assert_eq!((c.rope_theta, c.rope_scaling.is_none()), (1234.0, true));
}

/// Layer checkpointing gives the whole graph's loss bit for bit and its gradients up to the
/// order the sums are added in, tied or not, with grouped-query heads.
#[test]
fn checkpointed_gradients_equal_the_whole_graphs() {
    for tied in [false, true] {
        let mut cfg = tiny(tied);
        cfg.num_hidden_layers = 3;
        let vm: VarMap = init_weights(&cfg, 7).unwrap();
        let model =
            Llama::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let mut rng = SeededRng::new(8);
        let x = ids(&mut rng, &[2, 12], cfg.vocab_size);
        let y = ids(&mut rng, &[2, 12], cfg.vocab_size);
        let opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
        let loss = model.loss(&x, &y).unwrap();
        let whole = Grads::from_store(&opt, &loss.backward().unwrap()).unwrap();
        let mut ck = Grads::zeros(&opt);
        let mut stages = 0;
        let ck_loss = model
            .loss_and_grads_checkpointed(&x, &y, |s| {
                stages += 1;
                ck.accumulate(&opt, s).map_err(posthuman_gpt2::candle_core::Error::wrap)
            })
            .unwrap();
        assert_eq!(ck_loss, loss.to_scalar::<f32>().unwrap(), "tied {tied}: the loss's bits");
        assert_eq!(stages, cfg.num_hidden_layers + 2, "head, each layer, embeddings");
        for (i, p) in opt.params().iter().enumerate() {
            let (a, b) = (whole.get(i).unwrap(), ck.get(i).unwrap());
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let err = a.iter().zip(b).fold(0f32, |m, (u, v)| m.max((u - v).abs())) / scale;
            assert!(err < 1e-5, "tied {tied}, {}: relative difference {err}", p.name);
        }
    }
}
