//! LoRA against PyTorch + peft, from committed fixtures (tests/fixtures/lora, made by
//! tests/fixtures/make_lora_fixtures.py): the same base, initial adapter and batches give
//! peft's per-step losses over 20 AdamW steps (within 1e-4) and its logits; a saved adapter
//! reloads to identical logits; the merged weights compute what the adapter does; and every
//! kind of bad input is refused with its own error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use posthuman_gpt2::candle_core::{DType, Device, Tensor};
use posthuman_gpt2::llama;
use posthuman_gpt2::lora::{
    ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, Family, LoraAdapter, LoraBase, LoraConfig, LoraError,
};
use posthuman_gpt2::{
    AdamW, AdamWConfig, Config, DropoutRng, Gpt2, Grads, Weights, llama_weights, load_safetensors,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn fixture(family: &str) -> PathBuf {
    manifest_dir().join("tests/fixtures/lora").join(family)
}

/// What peft computed: the batches, 20 losses, logits of batch 0 under three adapters.
struct Expected {
    inputs: Vec<Tensor>,
    targets: Vec<Tensor>,
    losses: Vec<f64>,
    lr: f64,
    adamw: AdamWConfig,
    logits: HashMap<String, Tensor>,
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
    Expected {
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

fn gpt2_base() -> (Config, Weights) {
    let dir = fixture("gpt2").join("base");
    let cfg =
        Config::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let w = load_safetensors(&dir.join("model.safetensors"), &cfg).unwrap();
    (cfg, w)
}

fn llama_base() -> (llama::Config, llama_weights::LlamaWeights) {
    let dir = fixture("llama").join("base");
    let cfg = llama::Config::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap())
        .unwrap();
    let w = llama_weights::load_safetensors(&dir.join("model.safetensors"), &cfg).unwrap();
    (cfg, w)
}

fn assert_losses(family: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-4, "{family} step {i}: loss {g} vs peft's {w}");
    }
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    eprintln!("{family}: largest |loss - peft's loss| over {} steps: {worst:.2e}", got.len());
    // The adapter did learn (the check is not passing on a frozen model).
    assert!(got[0] - got[got.len() - 1] > 0.1, "{family}: {got:?}");
}

/// A copy of the adapter's current state, through its own save format.
fn reload(adapter: &LoraAdapter, base: &LoraBase) -> (tempfile::TempDir, LoraAdapter) {
    let dir = tempfile::tempdir().unwrap();
    adapter.save(dir.path()).unwrap();
    // `LORA_SAVE_DIR=…` keeps a copy for make_lora_fixtures.py --check (the peft side).
    if let Ok(keep) = std::env::var("LORA_SAVE_DIR") {
        adapter.save(&Path::new(&keep).join(base_family_name(base))).unwrap();
    }
    let back = LoraAdapter::load(dir.path(), base).unwrap();
    (dir, back)
}

fn base_family_name(base: &LoraBase) -> &'static str {
    match base.family() {
        Family::Gpt2 => "gpt2",
        Family::Llama => "llama",
    }
}

#[test]
fn gpt2_lora_training_matches_peft() {
    let ex = expected("gpt2");
    let (cfg, w) = gpt2_base();
    let base = LoraBase::gpt2(&cfg);
    let model = w.model(&cfg, &Device::Cpu).unwrap();
    let adapter = LoraAdapter::load(&fixture("gpt2").join("adapter_init"), &base).unwrap();
    let m = model.with_lora(&adapter).unwrap();
    let x0 = &ex.inputs[0];
    assert!(rel_diff(&m.forward(x0, None).unwrap(), &ex.logits["logits_init"]) < 1e-4);

    let mut opt = AdamW::new(adapter.var_map(), ex.adamw).unwrap();
    let mut losses = Vec::new();
    for step in 0..ex.losses.len() {
        let i = step % ex.inputs.len();
        let (loss, g) = m.loss_and_grads(&ex.inputs[i], &ex.targets[i], None).unwrap();
        opt.step(&Grads::from_named(&opt, g).unwrap(), ex.lr).unwrap();
        losses.push(f64::from(loss));
    }
    assert_losses("gpt2", &losses, &ex.losses);
    let logits = m.forward(x0, None).unwrap();
    assert!(rel_diff(&logits, &ex.logits["logits_final"]) < 1e-4);

    // Saved and loaded back: the same logits, bit for bit, and the same adapter hash.
    let (_dir, back) = reload(&adapter, &base);
    assert_eq!(back.hash().unwrap(), adapter.hash().unwrap());
    let again = model.with_lora(&back).unwrap().forward(x0, None).unwrap();
    assert_eq!(common::vals(&again), common::vals(&logits));

    // Merged into plain weights: the adapted model's function, and a new identity.
    let merged = Weights::from_tensors(&cfg, adapter.merge(w.tensors()).unwrap()).unwrap();
    let ml = merged.model(&cfg, &Device::Cpu).unwrap().forward(x0, None).unwrap();
    assert!(rel_diff(&ml, &logits) < 1e-5);
    assert!(rel_diff(&ml, &ex.logits["logits_merged"]) < 1e-4);
    assert_ne!(merged.hash().unwrap(), w.hash().unwrap());
    let merged2 = Weights::from_tensors(&cfg, back.merge(w.tensors()).unwrap()).unwrap();
    assert_eq!(merged.hash().unwrap(), merged2.hash().unwrap());
}

#[test]
fn llama_lora_training_matches_peft() {
    let ex = expected("llama");
    let (cfg, w) = llama_base();
    let base = LoraBase::llama(&cfg);
    let model = w.model(&cfg, &Device::Cpu).unwrap();
    let adapter = LoraAdapter::load(&fixture("llama").join("adapter_init"), &base).unwrap();
    let m = model.with_lora(&adapter).unwrap();
    let x0 = &ex.inputs[0];
    assert!(rel_diff(&m.forward(x0).unwrap(), &ex.logits["logits_init"]) < 1e-4);

    let mut opt = AdamW::new(adapter.var_map(), ex.adamw).unwrap();
    let mut losses = Vec::new();
    for step in 0..ex.losses.len() {
        let i = step % ex.inputs.len();
        // The worker's path: the hand-written layer step.
        let mut g = Grads::zeros(&opt);
        let loss = m
            .loss_and_grads_layerwise(&ex.inputs[i], &ex.targets[i], None, |s| {
                g.accumulate_step(&opt, s).map_err(posthuman_gpt2::candle_core::Error::wrap)
            })
            .unwrap();
        opt.step(&g, ex.lr).unwrap();
        losses.push(f64::from(loss));
    }
    assert_losses("llama", &losses, &ex.losses);
    let logits = m.forward(x0).unwrap();
    assert!(rel_diff(&logits, &ex.logits["logits_final"]) < 1e-4);

    let (_dir, back) = reload(&adapter, &base);
    let again = model.with_lora(&back).unwrap().forward(x0).unwrap();
    assert_eq!(common::vals(&again), common::vals(&logits));

    let merged =
        llama_weights::LlamaWeights::from_tensors(&cfg, adapter.merge(w.tensors()).unwrap())
            .unwrap();
    let ml = merged.model(&cfg, &Device::Cpu).unwrap().forward(x0).unwrap();
    assert!(rel_diff(&ml, &logits) < 1e-5);
    assert!(rel_diff(&ml, &ex.logits["logits_merged"]) < 1e-4);
    assert_ne!(merged.hash().unwrap(), w.hash().unwrap());
}

#[test]
fn peft_trained_adapters_load_and_give_peft_logits() {
    let ex = expected("gpt2");
    let (cfg, w) = gpt2_base();
    let a =
        LoraAdapter::load(&fixture("gpt2").join("adapter_final"), &LoraBase::gpt2(&cfg)).unwrap();
    let model = w.model(&cfg, &Device::Cpu).unwrap().with_lora(&a).unwrap();
    assert!(
        rel_diff(&model.forward(&ex.inputs[0], None).unwrap(), &ex.logits["logits_final"]) < 1e-4
    );
    // The no-graph evaluation path refuses to skip the adapter: it takes the graph instead.
    let nll = model.token_nll(&ex.inputs[0], &ex.targets[0]).unwrap();
    let plain = w.model(&cfg, &Device::Cpu).unwrap().token_nll(&ex.inputs[0], &ex.targets[0]);
    assert_ne!(common::vals(&nll), common::vals(&plain.unwrap()));

    let ex = expected("llama");
    let (cfg, w) = llama_base();
    let a =
        LoraAdapter::load(&fixture("llama").join("adapter_final"), &LoraBase::llama(&cfg)).unwrap();
    let model = w.model(&cfg, &Device::Cpu).unwrap().with_lora(&a).unwrap();
    assert!(rel_diff(&model.forward(&ex.inputs[0]).unwrap(), &ex.logits["logits_final"]) < 1e-4);
}

#[test]
fn peft_config_round_trips_with_its_extra_keys() {
    let text =
        std::fs::read_to_string(fixture("gpt2").join("adapter_init").join(ADAPTER_CONFIG_NAME))
            .unwrap();
    let cfg = LoraConfig::from_json(&text).unwrap();
    assert_eq!((cfg.r, cfg.lora_alpha, cfg.fan_in_fan_out), (4, 8.0, true));
    assert_eq!(cfg.task_type.as_deref(), Some("CAUSAL_LM"));
    assert_eq!(cfg.extra["peft_version"], "0.21.2");
    let back = LoraConfig::from_json(&cfg.to_json().unwrap()).unwrap();
    assert_eq!(back, cfg);
    let orig: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ours: serde_json::Value = serde_json::from_str(&cfg.to_json().unwrap()).unwrap();
    assert_eq!(orig.as_object().unwrap().len(), ours.as_object().unwrap().len());
}

#[test]
fn init_follows_peft_and_is_seeded() {
    let (cfg, w) = gpt2_base();
    let base = LoraBase::gpt2(&cfg);
    let lc = LoraConfig::new(Family::Gpt2, 8, 16.0, 0.0, &["c_attn", "attn.c_proj"]);
    let a = LoraAdapter::init(lc.clone(), &base, 7).unwrap();
    let t = a.tensors().unwrap();
    // c_attn and attn.c_proj of 2 blocks (`attn.c_proj` does not reach mlp.c_proj).
    assert_eq!(t.len(), 8);
    assert!(!t.keys().any(|k| k.contains("mlp")));
    let c = cfg.n_embd;
    assert_eq!(a.num_params(), 2 * 8 * ((c + 3 * c) + (c + c)));
    let bound = 1.0 / (c as f64).sqrt();
    for (name, v) in &t {
        let vals = common::vals(v);
        if name.contains("lora_B") {
            assert!(vals.iter().all(|&x| x == 0.0), "{name}");
        } else {
            assert_eq!(v.dims(), [8, c]);
            let max = vals.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert!(max <= bound && max > 0.9 * bound, "{name}: max |a| {max} vs bound {bound}");
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            assert!(mean.abs() < 0.1 * bound, "{name}: mean {mean}");
        }
    }
    assert_eq!(a.config().scale(), 2.0);
    let mut rs = lc.clone();
    rs.use_rslora = true;
    assert_eq!(rs.scale(), 16.0 / 8f64.sqrt());
    assert_eq!(a.hash().unwrap(), LoraAdapter::init(lc.clone(), &base, 7).unwrap().hash().unwrap());
    assert_ne!(a.hash().unwrap(), LoraAdapter::init(lc, &base, 8).unwrap().hash().unwrap());
    // B = 0: the adapted model starts as its base.
    let ids = Tensor::new(&[[1u32, 5, 9, 2]], &Device::Cpu).unwrap();
    let plain = w.model(&cfg, &Device::Cpu).unwrap();
    let adapted = plain.with_lora(&a).unwrap();
    assert_eq!(
        common::vals(&plain.forward(&ids, None).unwrap()),
        common::vals(&adapted.forward(&ids, None).unwrap())
    );
}

#[test]
fn llama_lora_dropout_is_seeded() {
    let (cfg, w) = llama_base();
    let base = LoraBase::llama(&cfg);
    let ex = expected("llama");
    let (x, y) = (&ex.inputs[0], &ex.targets[0]);
    let loss = |dropout: f64, seed: Option<u64>| -> f32 {
        let lc = LoraConfig::new(Family::Llama, 4, 8.0, dropout, &["q_proj", "v_proj"]);
        let a = LoraAdapter::init(lc, &base, 3).unwrap();
        // B ≠ 0, so the branch (and its dropout) shows in the loss.
        for (_, v) in a.var_map().data().lock().unwrap().iter() {
            v.set(&(v.as_tensor().ones_like().unwrap() * 0.05).unwrap()).unwrap();
        }
        let m = w.model(&cfg, &Device::Cpu).unwrap().with_lora(&a).unwrap();
        let mut rng = seed.map(DropoutRng::new);
        m.loss_with_dropout(x, y, rng.as_mut()).unwrap().to_scalar::<f32>().unwrap()
    };
    assert_eq!(loss(0.3, Some(1)), loss(0.3, Some(1)));
    assert_ne!(loss(0.3, Some(1)), loss(0.3, Some(2)));
    assert_ne!(loss(0.3, Some(1)), loss(0.3, None));
    // Without a dropout stream (evaluation) p does not matter.
    assert_eq!(loss(0.3, None), loss(0.0, Some(1)));
}

// ---- bad input ----

fn gpt2_adapter_files() -> (String, Vec<u8>) {
    let d = fixture("gpt2").join("adapter_init");
    (
        std::fs::read_to_string(d.join(ADAPTER_CONFIG_NAME)).unwrap(),
        std::fs::read(d.join(ADAPTER_WEIGHTS_NAME)).unwrap(),
    )
}

#[test]
fn adapter_for_another_base_is_refused() {
    let (text, bytes) = gpt2_adapter_files();
    // Same family, other width: the shapes give it away.
    let wider = LoraBase::gpt2(&Config::new(64, 32, 48, 2, 4));
    let e = LoraAdapter::from_bytes(&text, &bytes, &wider).unwrap_err();
    assert!(matches!(e, LoraError::ShapeMismatch { .. }), "{e}");
    // Fewer layers: the extra layer's tensors are not part of this base.
    let shallower = LoraBase::gpt2(&Config::new(64, 32, 32, 1, 4));
    let e = LoraAdapter::from_bytes(&text, &bytes, &shallower).unwrap_err();
    assert!(matches!(e, LoraError::UnexpectedTensor { ref name } if name.contains("h.1.")), "{e}");
    // Another family.
    let (lcfg, _) = llama_base();
    let e = LoraAdapter::from_bytes(&text, &bytes, &LoraBase::llama(&lcfg)).unwrap_err();
    assert!(matches!(e, LoraError::FanInFanOut { .. }), "{e}");
    // The config names another base model.
    let (cfg, w) = gpt2_base();
    let mut lc = LoraConfig::from_json(&text).unwrap();
    lc.base_model_name_or_path = Some("alice/m1".into());
    let named = LoraBase::gpt2(&cfg).named("bob/m2");
    let e = LoraAdapter::from_bytes(&lc.to_json().unwrap(), &bytes, &named).unwrap_err();
    assert!(matches!(e, LoraError::BaseMismatch { .. }), "{e}");
    assert!(
        LoraAdapter::from_bytes(&lc.to_json().unwrap(), &bytes, &named.named("alice/m1")).is_ok()
    );
    // An adapter attached to a model it was not made for.
    let a = LoraAdapter::init(
        LoraConfig::new(Family::Gpt2, 4, 8.0, 0.0, &["c_attn"]),
        &LoraBase::gpt2(&Config::new(64, 32, 48, 2, 4)),
        1,
    )
    .unwrap();
    let e = w.model(&cfg, &Device::Cpu).unwrap().with_lora(&a).unwrap_err();
    assert!(matches!(e, LoraError::WrongBase(_)), "{e}");
}

#[test]
fn bad_configs_are_refused_with_their_own_error() {
    let (cfg, _) = gpt2_base();
    let base = LoraBase::gpt2(&cfg);
    let check = |lc: LoraConfig| LoraAdapter::init(lc, &base, 1).unwrap_err();
    let new = |r: usize, targets: &[&str]| LoraConfig::new(Family::Gpt2, r, 8.0, 0.0, targets);

    let e = check(new(4, &["c_attn", "q_proj"]));
    assert!(
        matches!(e, LoraError::UnknownTargetModule { ref name, .. } if name == "q_proj"),
        "{e}"
    );
    assert!(e.to_string().contains("c_attn, c_proj, c_fc"), "{e}");
    let e = check(new(4, &[]));
    assert!(matches!(e, LoraError::NoTargetModules { .. }), "{e}");
    // r = 40 fits c_fc (32 → 128) on no side: n_embd is 32.
    let e = check(new(40, &["c_fc"]));
    assert!(
        matches!(e, LoraError::RankTooLarge { r: 40, max: 32, ref module, .. } if module.ends_with("mlp.c_fc")),
        "{e}"
    );
    for r in [0, 257] {
        assert!(matches!(check(new(r, &["c_attn"])), LoraError::RankOutOfRange { .. }));
    }
    for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let mut lc = new(4, &["c_attn"]);
        lc.lora_alpha = alpha;
        assert!(matches!(check(lc), LoraError::InvalidAlpha(_)));
    }
    for p in [1.0, -0.1, f64::NAN] {
        let mut lc = new(4, &["c_attn"]);
        lc.lora_dropout = p;
        assert!(matches!(check(lc), LoraError::InvalidDropout(_)));
    }
    let mut lc = new(4, &["c_attn"]);
    lc.fan_in_fan_out = false;
    assert!(matches!(check(lc), LoraError::FanInFanOut { .. }));
    let mut lc = new(4, &["c_attn"]);
    lc.bias = "all".into();
    assert!(matches!(check(lc), LoraError::Unsupported { field: "bias", .. }));
    for (k, v) in [
        ("use_dora", serde_json::json!(true)),
        ("rank_pattern", serde_json::json!({"c_attn": 8})),
        ("modules_to_save", serde_json::json!(["lm_head"])),
        ("some_future_variant", serde_json::json!({"on": 1})),
    ] {
        let mut lc = new(4, &["c_attn"]);
        lc.extra.insert(k.into(), v);
        assert!(matches!(check(lc), LoraError::UnsupportedOption { ref key, .. } if key == k));
    }
    let mut lc = new(4, &["c_attn"]);
    lc.extra.insert("init_lora_weights".into(), serde_json::json!("pissa"));
    assert!(matches!(check(lc), LoraError::Unsupported { field: "init_lora_weights", .. }));

    let (text, _) = gpt2_adapter_files();
    let e = LoraConfig::from_json(&text.replace("\"LORA\"", "\"PREFIX_TUNING\""))
        .unwrap()
        .validate(&base)
        .unwrap_err();
    assert!(matches!(e, LoraError::NotLora(_)), "{e}");
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["target_modules"] = serde_json::json!(".*c_attn");
    let regex = v.to_string();
    assert!(matches!(
        LoraConfig::from_json(&regex),
        Err(LoraError::Unsupported { field: "target_modules", .. })
    ));
    assert!(matches!(
        LoraConfig::from_json("{\"r\": \"four\"}"),
        Err(LoraError::MalformedConfig(_))
    ));
    assert!(matches!(LoraConfig::from_json("not json"), Err(LoraError::MalformedConfig(_))));
}

#[test]
fn non_peft_and_damaged_weight_files_are_refused() {
    let (cfg, _) = gpt2_base();
    let base = LoraBase::gpt2(&cfg);
    let (text, bytes) = gpt2_adapter_files();
    let e =
        LoraAdapter::from_bytes(&text, b"PK\x03\x04 a zip, not safetensors", &base).unwrap_err();
    assert!(matches!(e, LoraError::MalformedWeights(_)), "{e}");
    let e = LoraAdapter::from_bytes(&text, &bytes[..bytes.len() - 10], &base).unwrap_err();
    assert!(matches!(e, LoraError::MalformedWeights(_)), "{e}");
    // A model checkpoint passed off as an adapter.
    let model_file = std::fs::read(fixture("gpt2").join("base/model.safetensors")).unwrap();
    let e = LoraAdapter::from_bytes(&text, &model_file, &base).unwrap_err();
    assert!(
        matches!(e, LoraError::UnexpectedTensor { .. } | LoraError::MissingTensor { .. }),
        "{e}"
    );

    // One tensor missing / one extra / one in a dtype we do not load.
    let a = LoraAdapter::from_bytes(&text, &bytes, &base).unwrap();
    let full: BTreeMap<String, Tensor> = a.tensors().unwrap();
    let lc = a.config().clone();
    let first = full.keys().next().unwrap().clone();
    let mut missing = full.clone();
    missing.remove(&first);
    let e = LoraAdapter::from_tensors(lc.clone(), &base, missing).unwrap_err();
    assert!(matches!(e, LoraError::MissingTensor { ref name } if *name == first), "{e}");
    let mut extra = full.clone();
    extra.insert("base_model.model.lm_head.lora_A.weight".into(), full[&first].clone());
    let e = LoraAdapter::from_tensors(lc, &base, extra).unwrap_err();
    assert!(matches!(e, LoraError::UnexpectedTensor { .. }), "{e}");
    let ints = Tensor::zeros((4, 32), DType::I64, &Device::Cpu).unwrap();
    let bad = posthuman_gpt2::candle_core::safetensors::save(
        &HashMap::from([(first.clone(), ints)]),
        std::env::temp_dir().join(format!("lora-int-{}.safetensors", std::process::id())),
    );
    bad.unwrap();
    let p = std::env::temp_dir().join(format!("lora-int-{}.safetensors", std::process::id()));
    let e = LoraAdapter::from_bytes(&text, &std::fs::read(&p).unwrap(), &base).unwrap_err();
    std::fs::remove_file(&p).unwrap();
    assert!(matches!(e, LoraError::UnsupportedDType { .. }), "{e}");

    // A directory without the files.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(LoraAdapter::load(empty.path(), &base), Err(LoraError::Io { .. })));
}

/// The GPT-2 training path with a dropout stream and p > 0 stays deterministic (the fused
/// no-graph path is bypassed for adapters, so this also pins that bypass).
#[test]
fn gpt2_lora_dropout_is_seeded() {
    let (cfg, w) = gpt2_base();
    let ex = expected("gpt2");
    let base = LoraBase::gpt2(&cfg);
    let run = |seed: u64| -> f32 {
        let a = LoraAdapter::init(LoraConfig::new(Family::Gpt2, 4, 8.0, 0.2, &["c_fc"]), &base, 5)
            .unwrap();
        for (_, v) in a.var_map().data().lock().unwrap().iter() {
            v.set(&(v.as_tensor().ones_like().unwrap() * 0.05).unwrap()).unwrap();
        }
        let m: Gpt2 = w.model(&cfg, &Device::Cpu).unwrap().with_lora(&a).unwrap();
        let mut rng = DropoutRng::new(seed);
        m.loss_and_grads(&ex.inputs[0], &ex.targets[0], Some(&mut rng)).unwrap().0
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// The frozen base projection under LoRA: linear_no_bias's values and input gradient, and
/// no weight gradient (that is the point: candle's matmul would compute one).
#[test]
fn frozen_linear_gives_the_input_gradient_only() {
    use posthuman_gpt2::candle_core::Var;
    use posthuman_gpt2::ops::llama::{frozen_linear, linear_no_bias};
    let mut rng = posthuman_gpt2::SeededRng::new(9);
    let x = Var::from_tensor(&common::rand_t(&mut rng, &[2, 3, 8], 1.0, DType::F32)).unwrap();
    let w = Var::from_tensor(&common::rand_t(&mut rng, &[5, 8], 1.0, DType::F32)).unwrap();
    let g = common::rand_t(&mut rng, &[2, 3, 5], 1.0, DType::F32);
    let run = |f: &dyn Fn(&Tensor, &Tensor) -> posthuman_gpt2::candle_core::Result<Tensor>| {
        let y = f(x.as_tensor(), w.as_tensor()).unwrap();
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        (y, grads.get(x.as_tensor()).cloned(), grads.get(w.as_tensor()).cloned())
    };
    let (y0, gx0, gw0) = run(&|x, w| linear_no_bias(x, w));
    let (y1, gx1, gw1) = run(&|x, w| frozen_linear(x, w));
    assert_eq!(common::vals(&y0), common::vals(&y1));
    assert!(rel_diff(&gx1.unwrap(), &gx0.unwrap()) < 1e-6);
    assert!(gw0.is_some());
    assert!(gw1.is_none());
}

/// The package's directory as cargo hands it to the running test, not the one compiled in:
/// a build cache shared by two checkouts can run a test binary built in the other one.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from)
}
