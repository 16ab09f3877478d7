//! Qwen2/Qwen2.5 and Qwen3 through the worker (issue 15): a seeded tiny model of each in HF
//! layout, published as a `config.json` with their `model_type`, trains (deterministically,
//! every family tensor learning: Qwen2's q/k/v biases, Qwen3's q/k norms), infers and
//! evaluates as Llama does; the output keeps the parent's `config.json`; a Qwen2 with its
//! sliding window on is refused with the bad-weights exit code.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use posthuman_gpt2::family::{AnyConfig, AnyWeights, Family, init_weights};
use posthuman_store::ObjectStore;
use posthuman_types::{JobParams, JobSpec};
use posthuman_worker::model_io;
use posthuman_worker::setup::save_new_model;
use posthuman_worker::{JobOutcome, exit, run_job};

/// A tiny `config.json` of `model_type` (qwen2: tied head; qwen3: head_dim 16 ≠ 32/4).
fn config(model_type: &str, vocab: usize) -> String {
    let mut j = serde_json::json!({
        "model_type": model_type,
        "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "initializer_range": 0.02,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
        "use_sliding_window": false, "sliding_window": 4096, "max_window_layers": 28,
        "torch_dtype": "float32",
    });
    if model_type == "qwen2" {
        j["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
        j["tie_word_embeddings"] = true.into();
    } else {
        j["architectures"] = serde_json::json!(["Qwen3ForCausalLM"]);
        j["tie_word_embeddings"] = false.into();
        j["head_dim"] = 16.into();
        j["attention_bias"] = false.into();
    }
    serde_json::to_string_pretty(&j).unwrap()
}

/// The GPT-2 fixture store plus a seeded tiny `model_type` model at `models/<model_type>`.
async fn qwen_store(
    model_type: &str,
) -> (tempfile::TempDir, std::sync::Arc<posthuman_store::LocalStore>) {
    let (dir, store) = store().await;
    let tok = tokenizer();
    let cfg = AnyConfig::from_json(&config(model_type, tok.vocab_size())).unwrap();
    let w = AnyWeights::from_var_map(&cfg, &init_weights(&cfg, 7).unwrap()).unwrap();
    save_new_model(store.as_ref(), &format!("models/{model_type}"), &cfg, &w, &tok).await.unwrap();
    (dir, store)
}

fn qspec(model_type: &str, id: &str, params: JobParams) -> JobSpec {
    let mut s = spec(id, params);
    s.model_prefix = format!("models/{model_type}");
    s
}

/// Trains, re-trains (bit-identical), checks the output's layout and that `learned` moved
/// from its initial value, then infers (deterministic) and evaluates (better than the base).
async fn trains_infers_and_evaluates(model_type: &str, family: Family, learned: &str) {
    let (_dir, store) = qwen_store(model_type).await;
    let store = store.as_ref();
    let m = train(store, &qspec(model_type, "a", JobParams::Train(train_params())), &wc()).await;
    let first = m.loss_curve.first().unwrap().1;
    assert!(m.final_loss < first * 0.7, "{model_type}: loss {first} -> {}", m.final_loss);
    let again =
        train(store, &qspec(model_type, "b", JobParams::Train(train_params())), &wc()).await;
    assert_eq!(again.output_weights_hash, m.output_weights_hash);
    assert_eq!(again.loss_curve, m.loss_curve);

    let parent = store.get(&format!("models/{model_type}/config.json"), 1 << 20).await.unwrap();
    assert_eq!(store.get("models/a/config.json", 1 << 20).await.unwrap(), parent);
    let base =
        model_io::load_model(store, &format!("models/{model_type}"), u64::MAX).await.unwrap();
    let out = model_io::load_model(store, "models/a", u64::MAX).await.unwrap();
    assert_eq!((base.cfg.family(), out.cfg.family()), (family, family));
    assert_eq!(out.weights_hash, m.output_weights_hash);
    let (before, after) = (base.weights.get(learned).unwrap(), out.weights.get(learned).unwrap());
    let moved = (before - after).unwrap().abs().unwrap().max_all().unwrap();
    assert!(moved.to_scalar::<f32>().unwrap() > 0.0, "{model_type}: {learned} did not train");

    let mut inf = qspec(model_type, "i", JobParams::Infer(infer_params()));
    inf.model_prefix = "models/a".into();
    inf.dataset_key = None;
    let JobOutcome::Inferred(c) = run_job(store, &wc(), &spec_bytes(&inf)).await.unwrap() else {
        panic!()
    };
    assert!(c.len() == 2 && c.iter().all(|c| c.completion_tokens > 0), "{c:?}");
    assert_eq!(run_job(store, &wc(), &spec_bytes(&inf)).await.unwrap(), JobOutcome::Inferred(c));

    let ev = qspec(model_type, "e0", JobParams::Evaluate(eval_params()));
    let JobOutcome::Evaluated(b) = run_job(store, &wc(), &spec_bytes(&ev)).await.unwrap() else {
        panic!()
    };
    let mut ev = qspec(model_type, "e1", JobParams::Evaluate(eval_params()));
    ev.model_prefix = "models/a".into();
    let JobOutcome::Evaluated(t) = run_job(store, &wc(), &spec_bytes(&ev)).await.unwrap() else {
        panic!()
    };
    assert!(
        t.perplexity < b.perplexity * 0.5,
        "{model_type}: {} vs {}",
        t.perplexity,
        b.perplexity
    );
    assert_eq!(t.weights_hash, m.output_weights_hash);
}

#[tokio::test]
async fn a_qwen2_trains_infers_and_evaluates_deterministically_in_hf_layout() {
    trains_infers_and_evaluates("qwen2", Family::Qwen2, "model.layers.0.self_attn.k_proj.bias")
        .await;
}

#[tokio::test]
async fn a_qwen3_trains_infers_and_evaluates_deterministically_in_hf_layout() {
    trains_infers_and_evaluates("qwen3", Family::Qwen3, "model.layers.1.self_attn.q_norm.weight")
        .await;
}

#[tokio::test]
async fn a_qwen2_with_its_sliding_window_on_is_refused() {
    let (_dir, store) = qwen_store("qwen2").await;
    let store = store.as_ref();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&store.get("models/qwen2/config.json", 1 << 20).await.unwrap())
            .unwrap();
    cfg["use_sliding_window"] = true.into();
    for f in ["model.safetensors", "tokenizer.json"] {
        let b = store.get(&format!("models/qwen2/{f}"), 1 << 26).await.unwrap();
        store.put(&format!("models/window/{f}"), b).await.unwrap();
    }
    store.put("models/window/config.json", Bytes::from(cfg.to_string())).await.unwrap();
    let mut s = qspec("qwen2", "window", JobParams::Evaluate(eval_params()));
    s.model_prefix = "models/window".into();
    let err = run_job(store, &wc(), &spec_bytes(&s)).await.unwrap_err();
    assert_eq!(err.exit_code(), exit::BAD_WEIGHTS, "{err}");
    assert!(err.to_string().contains("use_sliding_window"), "{err}");
}
