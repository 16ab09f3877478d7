//! The Llama family through the worker (issue 15): a seeded tiny Llama in HF layout trains,
//! infers and evaluates like GPT-2 — deterministic weights, checkpoints and receipts, a
//! resumed run equal to an uninterrupted one, the output in HF layout with the parent's
//! `config.json` unchanged — and bad Llama inputs get their exit codes.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use posthuman_gpt2::family::{AnyWeights, Family};
use posthuman_store::ObjectStore;
use posthuman_types::{JobParams, TrainMetrics};
use posthuman_worker::model_io;
use posthuman_worker::setup::{LlamaShape, init_llama, save_new_model};
use posthuman_worker::{JobOutcome, WorkerConfig, exit, run_job};

const LLAMA: &str = "models/llama";

fn llama_shape(tied: bool) -> LlamaShape {
    LlamaShape {
        layers: 2,
        hidden: 32,
        intermediate: 64,
        heads: 4,
        kv_heads: 2,
        context: 64,
        tie_word_embeddings: tied,
    }
}

/// The GPT-2 fixture store plus a seeded tiny Llama (grouped-query attention) at [`LLAMA`].
async fn llama_store(
    tied: bool,
) -> (tempfile::TempDir, std::sync::Arc<posthuman_store::LocalStore>) {
    let (dir, store) = store().await;
    let tok = tokenizer();
    let (cfg, w) = init_llama(&tok, &llama_shape(tied), 7).unwrap();
    save_new_model(store.as_ref(), LLAMA, &cfg, &w, &tok).await.unwrap();
    (dir, store)
}

fn llama_spec(id: &str, params: JobParams) -> posthuman_types::JobSpec {
    let mut s = spec(id, params);
    s.model_prefix = LLAMA.into();
    s
}

#[tokio::test]
async fn a_llama_trains_infers_and_evaluates_deterministically_in_hf_layout() {
    let (_dir, store) = llama_store(false).await;
    let store = store.as_ref();
    let m = train(store, &llama_spec("llama-a", JobParams::Train(train_params())), &wc()).await;
    let first = m.loss_curve.first().unwrap().1;
    assert!(m.final_loss < first * 0.7, "loss {first} -> {}", m.final_loss);
    assert_eq!(m.checkpoint_hashes.len(), 3);
    assert_eq!(m.checkpoint_hashes.last(), Some(&m.output_weights_hash));

    // The same spec again: bit-identical weights (and so the same receipts).
    let again = train(store, &llama_spec("llama-b", JobParams::Train(train_params())), &wc()).await;
    assert_eq!(again.output_weights_hash, m.output_weights_hash);
    assert_eq!(again.checkpoint_root, m.checkpoint_root);
    assert_eq!(again.loss_curve, m.loss_curve);

    // HF layout out: the parent's config.json byte for byte, Llama tensor names, loads back.
    let parent = store.get(&format!("{LLAMA}/config.json"), 1 << 20).await.unwrap();
    let child = store.get("models/llama-a/config.json", 1 << 20).await.unwrap();
    assert_eq!(parent, child);
    let loaded = model_io::load_model(store, "models/llama-a", u64::MAX).await.unwrap();
    assert_eq!(loaded.cfg.family(), Family::Llama);
    assert_eq!(loaded.weights_hash, m.output_weights_hash);
    let AnyWeights::Llama(w) = &loaded.weights else { panic!("not Llama weights") };
    assert!(w.get("model.layers.1.self_attn.k_proj.weight").is_some());
    assert!(w.get("lm_head.weight").is_some());

    // A run stopped after its first checkpoint and resumed ends where the uninterrupted
    // one did (what the audit's segment replay relies on).
    let stop = WorkerConfig { stop_after_checkpoint: Some(8), ..wc() };
    let s = llama_spec("llama-r", JobParams::Train(train_params()));
    let out = run_job(store, &stop, &spec_bytes(&s)).await.unwrap();
    assert_eq!(out, JobOutcome::Interrupted { step: 8 });
    let resumed = train(store, &s, &wc()).await;
    assert_eq!(resumed.output_weights_hash, m.output_weights_hash);
    assert_eq!(resumed.checkpoint_root, m.checkpoint_root);

    // Inference: KV-cached greedy generation, deterministic.
    let mut inf = llama_spec("llama-i", JobParams::Infer(infer_params()));
    inf.model_prefix = "models/llama-a".into();
    inf.dataset_key = None;
    let JobOutcome::Inferred(c) = run_job(store, &wc(), &spec_bytes(&inf)).await.unwrap() else {
        panic!()
    };
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|c| c.completion_tokens > 0 && c.prompt_tokens > 0), "{c:?}");
    assert_eq!(run_job(store, &wc(), &spec_bytes(&inf)).await.unwrap(), JobOutcome::Inferred(c));

    // Evaluation: the trained Llama beats its random base on the training text.
    let ev = llama_spec("llama-e0", JobParams::Evaluate(eval_params()));
    let JobOutcome::Evaluated(base) = run_job(store, &wc(), &spec_bytes(&ev)).await.unwrap() else {
        panic!()
    };
    let mut ev = llama_spec("llama-e1", JobParams::Evaluate(eval_params()));
    ev.model_prefix = "models/llama-a".into();
    let JobOutcome::Evaluated(trained) = run_job(store, &wc(), &spec_bytes(&ev)).await.unwrap()
    else {
        panic!()
    };
    assert!(
        trained.perplexity < base.perplexity * 0.5,
        "{} vs {}",
        trained.perplexity,
        base.perplexity
    );
    assert_eq!(trained.weights_hash, m.output_weights_hash);
    // ln(vocab) at init, so the random base's perplexity is about the vocabulary size.
    assert!(base.perplexity > 100.0, "{}", base.perplexity);

    // Not a timing claim (benchmarks make those): the same job's throughput beside GPT-2's,
    // for the report.
    let g = train(store, &train_spec("gpt2-a"), &wc()).await;
    eprintln!(
        "train tok/s, same spec and machine: tiny llama {:.0}, tiny gpt2 {:.0} (ratio {:.2})",
        m.tokens_per_sec,
        g.tokens_per_sec,
        m.tokens_per_sec / g.tokens_per_sec
    );
}

#[tokio::test]
async fn a_tied_llama_saves_without_lm_head_and_trains() {
    let (_dir, store) = llama_store(true).await;
    let mut p = train_params();
    p.steps = 4;
    p.checkpoint_every = 4;
    let m = train(store.as_ref(), &llama_spec("tied", JobParams::Train(p)), &wc()).await;
    let loaded = model_io::load_model(store.as_ref(), "models/tied", u64::MAX).await.unwrap();
    assert_eq!(loaded.weights_hash, m.output_weights_hash);
    assert!(loaded.weights.get("lm_head.weight").is_none());
}

async fn expect_code(store: &dyn ObjectStore, s: &posthuman_types::JobSpec, code: i32) -> String {
    let err = run_job(store, &wc(), &spec_bytes(s)).await.unwrap_err();
    assert_eq!(err.exit_code(), code, "{err}");
    assert!(store.head(&format!("{}/_COMPLETE", s.private_prefix)).await.unwrap().is_none());
    err.to_string()
}

#[tokio::test]
async fn bad_llama_inputs_get_their_exit_codes() {
    let (_dir, store) = llama_store(false).await;
    let store = store.as_ref();
    let copy = |from: &'static str, to: &'static str, f: &'static str| async move {
        let b = store.get(&format!("{from}/{f}"), 1 << 26).await.unwrap();
        store.put(&format!("{to}/{f}"), b).await.unwrap();
    };

    // An unknown model_type: refused, naming the families that run.
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&store.get(&format!("{LLAMA}/config.json"), 1 << 20).await.unwrap())
            .unwrap();
    cfg["model_type"] = "mamba".into();
    copy(LLAMA, "models/mamba", "model.safetensors").await;
    copy(LLAMA, "models/mamba", "tokenizer.json").await;
    store.put("models/mamba/config.json", Bytes::from(cfg.to_string())).await.unwrap();
    let mut s = llama_spec("bad-type", JobParams::Train(train_params()));
    s.model_prefix = "models/mamba".into();
    let msg = expect_code(store, &s, exit::BAD_WEIGHTS).await;
    assert!(msg.contains("mamba") && msg.contains("gpt2, llama"), "{msg}");

    // A Llama config over GPT-2 weights, and a Llama config whose sizes the weights lack.
    copy(LLAMA, "models/mix", "config.json").await;
    copy(LLAMA, "models/mix", "tokenizer.json").await;
    copy(BASE, "models/mix", "model.safetensors").await;
    let mut s = llama_spec("bad-mix", JobParams::Evaluate(eval_params()));
    s.model_prefix = "models/mix".into();
    let msg = expect_code(store, &s, exit::BAD_WEIGHTS).await;
    assert!(msg.contains("tensor"), "{msg}");
    cfg["model_type"] = "llama".into();
    cfg["intermediate_size"] = 48.into();
    copy(LLAMA, "models/shape", "model.safetensors").await;
    copy(LLAMA, "models/shape", "tokenizer.json").await;
    store.put("models/shape/config.json", Bytes::from(cfg.to_string())).await.unwrap();
    let mut s = llama_spec("bad-shape", JobParams::Infer(infer_params()));
    s.model_prefix = "models/shape".into();
    s.dataset_key = None;
    let msg = expect_code(store, &s, exit::BAD_WEIGHTS).await;
    assert!(
        msg.contains("gate_proj") || msg.contains("up_proj") || msg.contains("down_proj"),
        "{msg}"
    );

    // Dropout, which Llama does not have, is refused rather than silently ignored.
    let mut p = train_params();
    p.dropout = 0.1;
    let msg =
        expect_code(store, &llama_spec("bad-drop", JobParams::Train(p)), exit::OUT_OF_RANGE).await;
    assert!(msg.contains("dropout"), "{msg}");

    // The memory preflight counts the Llama shape.
    let tight = WorkerConfig { memory_limit_bytes: 1 << 20, ..wc() };
    let s = llama_spec("bad-mem", JobParams::Train(train_params()));
    let err = run_job(store, &tight, &spec_bytes(&s)).await.unwrap_err();
    assert_eq!(err.exit_code(), exit::MEMORY_REFUSED, "{err}");
}

/// The binary with `threads` compute threads on `spec` over the store at `root`; its exit code.
fn run_bin(root: &std::path::Path, spec: &posthuman_types::JobSpec, threads: &str) -> i32 {
    let p = root.join(format!("{}.json", spec.job_id));
    std::fs::write(&p, spec_bytes(spec)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_posthuman-worker"))
        .args(["--threads", threads, "run", "--progress-secs", "0", "--spec"])
        .arg(&p)
        .arg("--store")
        .arg(root)
        .output()
        .unwrap();
    out.status.code().unwrap()
}

#[tokio::test]
async fn the_binary_trains_a_llama_bit_identically_on_one_and_two_threads() {
    let (dir, store) = llama_store(false).await;
    let (a, b) = (
        llama_spec("llama-t1", JobParams::Train(train_params())),
        llama_spec("llama-t2", JobParams::Train(train_params())),
    );
    assert_eq!(run_bin(dir.path(), &a, "1"), 0);
    assert_eq!(run_bin(dir.path(), &b, "2"), 0);
    let metrics = |s: &posthuman_types::JobSpec| {
        let p = dir.path().join(&s.public_prefix).join("metrics.json");
        serde_json::from_slice::<TrainMetrics>(&std::fs::read(p).unwrap()).unwrap()
    };
    let (ma, mb) = (metrics(&a), metrics(&b));
    assert_eq!(ma.output_weights_hash, mb.output_weights_hash);
    assert_eq!(ma.checkpoint_root, mb.checkpoint_root);

    // A Llama config over GPT-2 weights: the binary exits BAD_WEIGHTS.
    for (from, f) in
        [(LLAMA, "config.json"), (LLAMA, "tokenizer.json"), (BASE, "model.safetensors")]
    {
        let bytes = store.get(&format!("{from}/{f}"), 1 << 26).await.unwrap();
        store.put(&format!("models/mix/{f}"), bytes).await.unwrap();
    }
    let mut s = llama_spec("llama-mix", JobParams::Train(train_params()));
    s.model_prefix = "models/mix".into();
    assert_eq!(run_bin(dir.path(), &s, "1"), exit::BAD_WEIGHTS);
}
