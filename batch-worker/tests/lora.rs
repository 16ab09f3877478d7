//! LoRA train jobs through the worker (issue 16): the adapter is saved in PEFT's layout over
//! its parent and merges into the published (effective) weights; checkpoints hold the adapter
//! and its moments, and their leaves commit to the effective weights, so a resumed run ends
//! where an uninterrupted one does; chains compose (LoRA over LoRA, full over LoRA); the
//! derived model infers and evaluates; bad LoRA settings get their own exit code and
//! publish nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use posthuman_gpt2::family::AnyWeights;
use posthuman_gpt2::lora::{LoraAdapter, LoraConfig};
use posthuman_store::ObjectStore;
use posthuman_types::{JobParams, LoraParams, TrainParams};
use posthuman_worker::model_io;
use posthuman_worker::setup::{LlamaShape, init_llama, save_new_model};
use posthuman_worker::train::checkpoint;
use posthuman_worker::train::method::{self, Method};
use posthuman_worker::{JobOutcome, WorkerConfig, exit, run_job};

fn lora_params(targets: &[&str]) -> TrainParams {
    let mut p = train_params();
    p.learning_rate = 5e-2;
    p.lora = Some(LoraParams::new(4, targets));
    p
}

/// Sum of the sizes of every object under `prefix`.
async fn bytes_under(store: &dyn ObjectStore, prefix: &str) -> u64 {
    let mut n = 0;
    for k in keys(store, prefix).await {
        n += store.head(&k).await.unwrap().unwrap_or(0);
    }
    n
}

#[tokio::test]
async fn a_lora_job_publishes_a_peft_adapter_and_its_merged_weights() {
    let (_dir, store) = store().await;
    let store = store.as_ref();
    let s = spec("lora-a", JobParams::Train(lora_params(&["c_attn", "c_fc"])));
    let m = train(store, &s, &wc()).await;
    let first = m.loss_curve.first().unwrap().1;
    // A rank-4 adapter over a random tiny model learns far slower than a full fine-tune
    // (which moves the tied embeddings); it must still learn.
    assert!(m.final_loss < first * 0.97, "loss {first} -> {}", m.final_loss);
    let lo = m.lora.clone().unwrap();
    assert_eq!((lo.r, lo.targeted_layers), (4, 4), "c_attn and c_fc of 2 blocks");
    // r × (in + out): c_attn 32 → 96, c_fc 32 → 128, two blocks.
    assert_eq!(lo.adapter_params, 2 * 4 * ((32 + 96) + (32 + 128)));

    // The adapter is PEFT's two files, naming the parent's weights as its base; it merges
    // into exactly the published weights, whose hash is the last leaf and the output.
    let parent = model_io::load_model(store, BASE, u64::MAX).await.unwrap();
    assert_eq!(m.input_weights_hash, parent.weights_hash);
    let dir = format!("models/lora-a/{}", method::ADAPTER_DIR);
    let cfg_json = store.get(&format!("{dir}/adapter_config.json"), 1 << 20).await.unwrap();
    let cfg_json = std::str::from_utf8(&cfg_json).unwrap();
    let lc = LoraConfig::from_json(cfg_json).unwrap();
    assert_eq!(lc.base_model_name_or_path, Some(method::base_name(&parent.weights_hash)));
    assert!(lc.fan_in_fan_out, "GPT-2's Conv1D layout, as peft writes it");
    let w = store.get(&format!("{dir}/adapter_model.safetensors"), u64::MAX).await.unwrap();
    assert_eq!(w.len() as u64, lo.adapter_bytes);
    let base = parent.cfg.lora_base().named(method::base_name(&parent.weights_hash));
    let adapter = LoraAdapter::from_bytes(cfg_json, &w, &base).unwrap();
    assert_eq!(adapter.hash().unwrap(), lo.adapter_hash);
    let merged = parent.weights.merged(&parent.cfg, &adapter).unwrap();
    assert_eq!(merged.hash().unwrap(), m.output_weights_hash);
    assert_eq!(m.checkpoint_hashes.last(), Some(&m.output_weights_hash));
    let child = model_io::load_model(store, "models/lora-a", u64::MAX).await.unwrap();
    assert_eq!(child.weights_hash, m.output_weights_hash);
    // Applied to other weights (the child itself), the adapter is refused by name.
    let other = child.cfg.lora_base().named(method::base_name(&child.weights_hash));
    assert!(LoraAdapter::from_bytes(cfg_json, &w, &other).is_err());

    // Checkpoints hold the adapter and its moments, not the model: their stored leaves are
    // the committed ones (effective weights, adapter-and-moments state).
    let c = checkpoint::stored(store, "models/lora-a", 8, &child.cfg, &lora_method(&s, &parent))
        .await
        .unwrap();
    assert_eq!(
        (c.weights, c.optimizer),
        (m.checkpoint_hashes[0], m.checkpoint_optimizer_hashes[0])
    );
    let ck = keys(store, "models/lora-a/checkpoints/step-000008").await;
    assert!(ck.iter().any(|k| k.ends_with("adapter_model.safetensors")), "{ck:?}");
    assert!(!ck.iter().any(|k| k.ends_with("/model.safetensors")), "{ck:?}");

    // The same job in full: a side-by-side of what each stores per checkpoint.
    let full = train(store, &train_spec("full-a"), &wc()).await;
    assert!(full.lora.is_none());
    let (lb, fb) = (
        bytes_under(store, "models/lora-a/checkpoints").await,
        bytes_under(store, "models/full-a/checkpoints").await,
    );
    assert!(lb * 10 < fb, "LoRA checkpoints {lb} B vs full {fb} B");
    eprintln!(
        "checkpoint storage, same job: LoRA r4 {lb} B, full {fb} B (ratio {:.3}); tok/s LoRA {:.0}, full {:.0} (ratio {:.2})",
        lb as f64 / fb as f64,
        m.tokens_per_sec,
        full.tokens_per_sec,
        m.tokens_per_sec / full.tokens_per_sec
    );

    // Deterministic, and a run stopped after a checkpoint resumes to the same end.
    let again =
        train(store, &spec("lora-b", JobParams::Train(lora_params(&["c_attn", "c_fc"]))), &wc())
            .await;
    assert_eq!(
        (again.output_weights_hash, again.checkpoint_root),
        (m.output_weights_hash, m.checkpoint_root)
    );
    let r = spec("lora-r", JobParams::Train(lora_params(&["c_attn", "c_fc"])));
    let stop = WorkerConfig { stop_after_checkpoint: Some(8), ..wc() };
    assert_eq!(
        run_job(store, &stop, &spec_bytes(&r)).await.unwrap(),
        JobOutcome::Interrupted { step: 8 }
    );
    let resumed = train(store, &r, &wc()).await;
    assert_eq!(resumed.output_weights_hash, m.output_weights_hash);
    assert_eq!(resumed.checkpoint_root, m.checkpoint_root);
}

fn lora_method(s: &posthuman_types::JobSpec, parent: &model_io::LoadedModel) -> Method {
    let JobParams::Train(p) = &s.params else { panic!("not a train spec") };
    Method::new(&parent.cfg, p, &parent.weights, &parent.weights_hash).unwrap()
}

#[tokio::test]
async fn lora_chains_compose_and_the_child_infers_and_evaluates() {
    let (_dir, store) = store().await;
    let store = store.as_ref();
    // M2 = M1 + Bob's adapter; M3 = M2 + Charlie's adapter; M4 = full fine-tune of M3.
    let m2 = train(store, &spec("m2", JobParams::Train(lora_params(&["c_attn"]))), &wc()).await;
    let mut s3 = spec("m3", JobParams::Train(lora_params(&["c_proj", "c_fc"])));
    s3.model_prefix = "models/m2".into();
    let m3 = train(store, &s3, &wc()).await;
    assert_eq!(m3.input_weights_hash, m2.output_weights_hash);
    let mut s4 = train_spec("m4");
    s4.model_prefix = "models/m3".into();
    let m4 = train(store, &s4, &wc()).await;
    assert_eq!(m4.input_weights_hash, m3.output_weights_hash);
    assert!(m4.lora.is_none());

    // M3's effective weights are M1 with Bob's adapter merged, then Charlie's, in order.
    let m1 = model_io::load_model(store, BASE, u64::MAX).await.unwrap();
    let cfg = &m1.cfg;
    let load = |prefix: &'static str, base_hash| async move {
        let d = format!("{prefix}/adapter");
        let c = store.get(&format!("{d}/adapter_config.json"), 1 << 20).await.unwrap();
        let w = store.get(&format!("{d}/adapter_model.safetensors"), u64::MAX).await.unwrap();
        let base = cfg.lora_base().named(method::base_name(&base_hash));
        LoraAdapter::from_bytes(std::str::from_utf8(&c).unwrap(), &w, &base).unwrap()
    };
    let bob = load("models/m2", m1.weights_hash).await;
    let charlie = load("models/m3", m2.output_weights_hash).await;
    let composed: AnyWeights =
        m1.weights.merged(&m1.cfg, &bob).unwrap().merged(&m1.cfg, &charlie).unwrap();
    assert_eq!(composed.hash().unwrap(), m3.output_weights_hash);

    // Inference and evaluation run on the composed model (its merged private copy).
    let mut inf = spec("m3-i", JobParams::Infer(infer_params()));
    inf.model_prefix = "models/m3".into();
    inf.dataset_key = None;
    let JobOutcome::Inferred(c) = run_job(store, &wc(), &spec_bytes(&inf)).await.unwrap() else {
        panic!()
    };
    assert!(c.iter().all(|c| c.completion_tokens > 0), "{c:?}");
    let mut ev = spec("m3-e", JobParams::Evaluate(eval_params()));
    ev.model_prefix = "models/m3".into();
    let JobOutcome::Evaluated(r) = run_job(store, &wc(), &spec_bytes(&ev)).await.unwrap() else {
        panic!()
    };
    assert_eq!(r.weights_hash, m3.output_weights_hash);
}

#[tokio::test]
async fn a_llama_trains_a_lora_adapter() {
    let (_dir, store) = store().await;
    let store = store.as_ref();
    let tok = tokenizer();
    let shape = LlamaShape {
        layers: 2,
        hidden: 32,
        intermediate: 64,
        heads: 4,
        kv_heads: 2,
        context: 64,
        tie_word_embeddings: false,
    };
    let (cfg, w) = init_llama(&tok, &shape, 7).unwrap();
    save_new_model(store, "models/llama", &cfg, &w, &tok).await.unwrap();
    let mut p = lora_params(&["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]);
    p.lora.as_mut().unwrap().lora_dropout = 0.1;
    let mut s = spec("llama-lora", JobParams::Train(p));
    s.model_prefix = "models/llama".into();
    let m = train(store, &s, &wc()).await;
    let first = m.loss_curve.first().unwrap().1;
    assert!(m.final_loss < first * 0.98, "loss {first} -> {}", m.final_loss);
    assert_eq!(m.lora.as_ref().unwrap().targeted_layers, 12);
    let c = store.get("models/llama-lora/adapter/adapter_config.json", 1 << 20).await.unwrap();
    assert!(!LoraConfig::from_json(std::str::from_utf8(&c).unwrap()).unwrap().fan_in_fan_out);
    let again = train(
        store,
        &{
            let mut s = s.clone();
            s.job_id = "llama-lora-2".into();
            s.private_prefix = "models/llama-lora-2".into();
            s.public_prefix = "jobs/llama-lora-2/public".into();
            s
        },
        &wc(),
    )
    .await;
    assert_eq!(again.output_weights_hash, m.output_weights_hash, "seeded LoRA dropout");
}

#[tokio::test]
async fn lora_settings_that_do_not_fit_the_model_exit_47_and_publish_nothing() {
    let (_dir, store) = store().await;
    let store = store.as_ref();
    type Edit = fn(&mut LoraParams);
    let cases: [(&str, Edit); 3] = [
        // A Llama module name on GPT-2.
        ("unknown", |l| l.target_modules = vec!["q_proj".into()]),
        // Rank above the 32-wide layers of the tiny model.
        ("rank", |l| l.r = 64),
        // Rank fits c_fc (32 → 128) but not c_proj (32 → 32) at 33.
        ("rank-some", |l| {
            l.r = 33;
            l.target_modules = vec!["c_fc".into(), "c_proj".into()];
        }),
    ];
    for (id, f) in cases {
        let mut p = lora_params(&["c_attn"]);
        f(p.lora.as_mut().unwrap());
        let s = spec(id, JobParams::Train(p));
        let err = run_job(store, &wc(), &spec_bytes(&s)).await.unwrap_err();
        assert_eq!(err.exit_code(), exit::BAD_LORA, "{id}: {err}");
        assert_eq!(exit::classify(Some(err.exit_code())), exit::FailureClass::BuyerInput);
        assert!(keys(store, &s.private_prefix).await.is_empty(), "{id}: nothing stored");
        let msg = err.public_message();
        assert!(msg.contains("LoRA"), "{msg}");
    }
}
