//! Every bad input of issue 3 gets its own error class / exit code, an `error.json`, and no
//! output: no public result, no visible (`_COMPLETE`) model.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use posthuman_gpt2::candle_core::{Device, Tensor};
use posthuman_gpt2::{Weights, safetensors_bytes};
use posthuman_store::ObjectStore;
use posthuman_types::{JobParams, JobSpec};
use posthuman_worker::error::ErrorReport;
use posthuman_worker::{WorkerConfig, exit, model_io, run_job};

/// Runs `spec`, expects exit code `code`, and checks that nothing but `error.json` (and
/// progress) was published and no model became visible.
async fn expect_failure(
    store: &dyn ObjectStore,
    spec: &JobSpec,
    wc: &WorkerConfig,
    code: i32,
) -> String {
    let err = run_job(store, wc, &spec_bytes(spec)).await.unwrap_err();
    assert_eq!(err.exit_code(), code, "{err}");
    let public = keys(store, &spec.public_prefix).await;
    for k in &public {
        assert!(k.ends_with("error.json") || k.ends_with("progress.json"), "unexpected output {k}");
    }
    let report: ErrorReport = serde_json::from_slice(
        &store.get(&format!("{}/error.json", spec.public_prefix), 1 << 20).await.unwrap(),
    )
    .unwrap();
    assert_eq!(report.exit_code, code);
    assert!(!report.message.contains('\n'));
    assert!(store.head(&format!("{}/_COMPLETE", spec.private_prefix)).await.unwrap().is_none());
    assert!(
        store.head(&format!("{}/model.safetensors", spec.private_prefix)).await.unwrap().is_none()
    );
    report.message
}

/// A copy of the base model under `prefix` with `model.safetensors` replaced.
async fn model_with_weights(store: &dyn ObjectStore, prefix: &str, weights: Bytes) {
    for f in ["config.json", "tokenizer.json"] {
        let b = store.get(&format!("{BASE}/{f}"), 1 << 26).await.unwrap();
        store.put(&format!("{prefix}/{f}"), b).await.unwrap();
    }
    store.put(&format!("{prefix}/model.safetensors"), weights).await.unwrap();
}

#[tokio::test]
async fn malformed_and_truncated_weights() {
    let (_d, store) = store().await;
    let good = store.get(&format!("{BASE}/model.safetensors"), u64::MAX).await.unwrap();
    model_with_weights(
        store.as_ref(),
        "models/garbage",
        Bytes::from_static(b"\x08\0\0\0\0\0\0\0{garbage"),
    )
    .await;
    model_with_weights(store.as_ref(), "models/trunc", good.slice(..good.len() / 2)).await;
    for (i, prefix) in ["models/garbage", "models/trunc"].iter().enumerate() {
        let mut s = train_spec(&format!("job-w{i}"));
        s.model_prefix = prefix.to_string();
        expect_failure(store.as_ref(), &s, &wc(), exit::BAD_WEIGHTS).await;
    }
}

#[tokio::test]
async fn config_weights_mismatch_and_missing_tokenizer() {
    let (_d, store) = store().await;
    // config says 48-dim embeddings; the weights are 32-dim.
    let cfg = store.get(&format!("{BASE}/config.json"), 1 << 20).await.unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    cfg["n_embd"] = 48.into();
    let cfg = serde_json::to_vec(&cfg).unwrap();
    let w = store.get(&format!("{BASE}/model.safetensors"), u64::MAX).await.unwrap();
    model_with_weights(store.as_ref(), "models/mismatch", w.clone()).await;
    store.put("models/mismatch/config.json", Bytes::from(cfg)).await.unwrap();
    let mut s = train_spec("job-m");
    s.model_prefix = "models/mismatch".into();
    expect_failure(store.as_ref(), &s, &wc(), exit::BAD_WEIGHTS).await;

    model_with_weights(store.as_ref(), "models/notok", w).await;
    store.delete("models/notok/tokenizer.json").await.unwrap();
    let mut s = spec("job-t", JobParams::Infer(infer_params()));
    s.model_prefix = "models/notok".into();
    expect_failure(store.as_ref(), &s, &wc(), exit::MISSING_TOKENIZER).await;
}

#[tokio::test]
async fn bad_datasets() {
    let (_d, store) = store().await;
    store.put("datasets/latin1.txt", Bytes::from_static(b"caf\xe9 au lait")).await.unwrap();
    store.put("datasets/empty.txt", Bytes::new()).await.unwrap();
    for (i, key) in
        ["datasets/latin1.txt", "datasets/empty.txt", "datasets/absent.txt"].iter().enumerate()
    {
        let mut s = train_spec(&format!("job-d{i}"));
        s.dataset_key = Some(key.to_string());
        expect_failure(store.as_ref(), &s, &wc(), exit::BAD_DATASET).await;
        let mut s = spec(&format!("job-e{i}"), JobParams::Evaluate(eval_params()));
        s.dataset_key = Some(key.to_string());
        expect_failure(store.as_ref(), &s, &wc(), exit::BAD_DATASET).await;
    }
    let small = WorkerConfig { max_dataset_bytes: 100, ..wc() };
    let msg =
        expect_failure(store.as_ref(), &train_spec("job-big"), &small, exit::DATASET_TOO_LARGE)
            .await;
    assert!(msg.contains("over the limit of 100 bytes"), "{msg}");
}

#[tokio::test]
async fn hyperparameters_out_of_range() {
    let (_d, store) = store().await;
    let mut s = train_spec("job-lr");
    if let JobParams::Train(p) = &mut s.params {
        p.learning_rate = 0.5;
    }
    let msg = expect_failure(store.as_ref(), &s, &wc(), exit::OUT_OF_RANGE).await;
    assert!(msg.contains("learning_rate"), "{msg}");
    // Context beyond the model's 64 positions: only the worker knows the model.
    let mut s = train_spec("job-ctx");
    if let JobParams::Train(p) = &mut s.params {
        p.context_len = 128;
    }
    expect_failure(store.as_ref(), &s, &wc(), exit::OUT_OF_RANGE).await;
    let mut ep = eval_params();
    ep.context_len = 65;
    ep.stride = 65;
    expect_failure(
        store.as_ref(),
        &spec("job-ectx", JobParams::Evaluate(ep)),
        &wc(),
        exit::OUT_OF_RANGE,
    )
    .await;
}

#[tokio::test]
async fn bad_spec_json_and_keys() {
    let (_d, store) = store().await;
    for bad in [&b"{"[..], b"[]", b"\xff\xfe", br#"{"job_id":"x"}"#] {
        let e = run_job(store.as_ref(), &wc(), bad).await.unwrap_err();
        assert_eq!(e.exit_code(), exit::BAD_SPEC);
    }
    let mut s = train_spec("job-k");
    s.private_prefix = "../escape".into();
    let e = run_job(store.as_ref(), &wc(), &spec_bytes(&s)).await.unwrap_err();
    assert_eq!(e.exit_code(), exit::BAD_SPEC);
}

#[tokio::test]
async fn non_finite_loss_reports_the_step() {
    let (_d, store) = store().await;
    // A finite but enormous embedding overflows in the first forward pass.
    let base = model_io::load_model(store.as_ref(), BASE, u64::MAX).await.unwrap();
    let mut tensors: BTreeMap<String, Tensor> = base.weights.tensors().clone();
    let wte = tensors["wte.weight"].clone();
    tensors.insert("wte.weight".into(), Tensor::full(3.0e38f32, wte.dims(), &Device::Cpu).unwrap());
    let posthuman_gpt2::family::AnyConfig::Gpt2(cfg) = &base.cfg else { panic!("not GPT-2") };
    let poisoned = Weights::from_tensors(cfg, tensors).unwrap();
    model_with_weights(
        store.as_ref(),
        "models/poison",
        Bytes::from(safetensors_bytes(&poisoned).unwrap()),
    )
    .await;
    let mut s = train_spec("job-nan");
    s.model_prefix = "models/poison".into();
    let msg = expect_failure(store.as_ref(), &s, &wc(), exit::NON_FINITE_LOSS).await;
    assert!(msg.contains("step 1"), "{msg}");
}

/// Issue 13 §2: a "fine-tune" whose every update underflows in f32 (lr = 1e-300, which
/// the spec bounds now refuse, run here past them as any future gap would) ends with the
/// weights bit-identical to its parent's. The worker must not publish that clone.
#[tokio::test]
async fn a_train_job_that_leaves_the_weights_unchanged_is_refused() {
    let (_d, store) = store().await;
    let mut s = train_spec("job-clone");
    if let JobParams::Train(p) = &mut s.params {
        p.learning_rate = 1e-300;
    }
    let err = posthuman_worker::runner::run_spec(store.as_ref(), &wc(), &s).await.unwrap_err();
    assert_eq!(err.exit_code(), exit::NO_TRAINING, "{err}");
    let msg = err.public_message();
    assert!(msg.contains("identical to its input"), "{msg}");
    assert!(store.head(&format!("{}/_COMPLETE", s.private_prefix)).await.unwrap().is_none());
    assert!(
        store.head(&format!("{}/model.safetensors", s.private_prefix)).await.unwrap().is_none()
    );
    for k in keys(store.as_ref(), &s.public_prefix).await {
        assert!(!k.ends_with("metrics.json") && !k.ends_with("run.json"), "unexpected output {k}");
    }
}

#[tokio::test]
async fn memory_preflight_refuses_before_starting() {
    let (_d, store) = store().await;
    let tight = WorkerConfig { memory_limit_bytes: 1 << 20, ..wc() };
    expect_failure(store.as_ref(), &train_spec("job-mem"), &tight, exit::MEMORY_REFUSED).await;
    assert!(keys(store.as_ref(), "models/job-mem/checkpoints").await.is_empty());
    let s = spec("job-mem-e", JobParams::Evaluate(eval_params()));
    expect_failure(store.as_ref(), &s, &tight, exit::MEMORY_REFUSED).await;
}

#[cfg(not(feature = "cuda"))]
#[tokio::test]
async fn a_gpu_required_worker_refuses_to_run_on_the_cpu() {
    let (_d, store) = store().await;
    let gpu_only = WorkerConfig { require_gpu: true, ..wc() };
    let msg = expect_failure(store.as_ref(), &train_spec("job-gpu"), &gpu_only, exit::NO_GPU).await;
    assert!(msg.contains("GPU"), "{msg}");
    assert!(keys(store.as_ref(), "models/job-gpu").await.is_empty(), "nothing was started");
}

#[tokio::test]
async fn store_failing_mid_write_leaves_no_visible_model() {
    let (_d, inner) = store().await;
    // Dies while writing the final weights: config and tokenizer were already written.
    let failing = failing_store(Arc::clone(&inner), "models/job-f1/model.safetensors", 0);
    expect_failure(&failing, &train_spec("job-f1"), &wc(), exit::STORE).await;
    assert!(inner.head("models/job-f1/config.json").await.unwrap().is_none());
    // Dies on the last public write, after the model manifest: the model is withdrawn.
    let failing = failing_store(Arc::clone(&inner), "jobs/job-f2/public/metrics.json", 0);
    expect_failure(&failing, &train_spec("job-f2"), &wc(), exit::STORE).await;
    // Dies on the second checkpoint.
    let failing = failing_store(Arc::clone(&inner), "checkpoints/step-000016/optimizer", 0);
    expect_failure(&failing, &train_spec("job-f3"), &wc(), exit::STORE).await;
    // Dies on the run record, the very last write: every output is withdrawn.
    let failing = failing_store(Arc::clone(&inner), "jobs/job-f5/public/run.json", 0);
    expect_failure(&failing, &train_spec("job-f5"), &wc(), exit::STORE).await;
    assert!(inner.head("jobs/job-f5/public/metrics.json").await.unwrap().is_none());
    // Infer and evaluate outputs too.
    let failing = failing_store(Arc::clone(&inner), "completions.json", 0);
    let mut s = spec("job-f4", JobParams::Infer(infer_params()));
    s.dataset_key = None;
    expect_failure(&failing, &s, &wc(), exit::STORE).await;
}

#[tokio::test]
async fn a_spec_over_its_paid_budget_is_refused_before_any_work() {
    let (_d, store) = store().await;
    // What the buyer's fee paid for: a tenth of the compute this spec asks for, however the
    // spec was altered on its way through the queue.
    let mut s = train_spec("job-budget");
    let shape = posthuman_types::pricing::ModelShape {
        parameters: 1,
        n_layer: 1,
        n_embd: 1,
        vocab_size: 1,
        n_positions: 64,
        lora_in_out: 0,
    };
    let cheap = posthuman_types::pricing::estimate(&s.params, &shape, 1).unwrap();
    s.budget = Some(posthuman_types::Budget {
        tokens: cheap.tokens,
        flops: cheap.flops,
        checkpoint_bytes: cheap.checkpoint_bytes,
        max_seconds: 3600,
    });
    let msg = expect_failure(store.as_ref(), &s, &wc(), exit::OVER_BUDGET).await;
    assert!(msg.contains("paid") && msg.contains("flops"), "{msg}");
    assert!(keys(store.as_ref(), &s.private_prefix).await.is_empty(), "no checkpoint written");
    // Each of the three counts is enforced: a budget short only of checkpoint bytes.
    let mut s = spec("job-budget-ckpt", JobParams::Train(train_params()));
    let real = posthuman_types::pricing::ModelShape { parameters: 1, ..shape };
    let e = posthuman_types::pricing::estimate(&s.params, &real, 1).unwrap();
    s.budget = Some(posthuman_types::Budget {
        tokens: u64::MAX,
        flops: u64::MAX,
        checkpoint_bytes: e.checkpoint_bytes,
        max_seconds: 3600,
    });
    let msg = expect_failure(store.as_ref(), &s, &wc(), exit::OVER_BUDGET).await;
    assert!(msg.contains("checkpoint_bytes"), "{msg}");
}
