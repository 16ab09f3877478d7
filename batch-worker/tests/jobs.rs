//! End-to-end jobs through a LocalStore in a temp dir: train → infer → evaluate, determinism,
//! resume-equals-uninterrupted, and the public-output allowlist.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use posthuman_store::ObjectStore;
use posthuman_types::job::Baseline;
use posthuman_types::{EvalReport, JobParams, Sampling, StopReason, TrainMetrics};
use posthuman_worker::merkle;
use posthuman_worker::model_io::{self, Manifest};
use posthuman_worker::runner::RunInfo;
use posthuman_worker::train::checkpoint;
use posthuman_worker::train::method::Method;
use posthuman_worker::{JobOutcome, WorkerConfig, run_job};

const PUBLIC_ALLOWLIST: [&str; 6] =
    ["progress.json", "metrics.json", "completions.json", "report.json", "error.json", "run.json"];

#[tokio::test]
async fn train_infer_evaluate_end_to_end() {
    let (_dir, store) = store().await;
    let s = train_spec("job-a");
    let m = train(store.as_ref(), &s, &wc()).await;

    // The loss falls on a repeating corpus.
    let first = m.loss_curve.first().unwrap().1;
    assert!(m.final_loss < first * 0.7, "loss {first} -> {}", m.final_loss);
    assert_eq!(m.steps, 24);
    assert_eq!(m.tokens_trained, 24 * 4 * 16);

    // Checkpoints every 8 steps; the last leaf is the output; the root is recomputable from
    // the published hashes, and they are the stored checkpoints' own.
    assert_eq!(m.checkpoint_hashes.len(), 3);
    assert_eq!(m.checkpoint_optimizer_hashes.len(), 3);
    assert_eq!(m.checkpoint_hashes.last(), Some(&m.output_weights_hash));
    let steps = merkle::checkpoint_steps(24, 8);
    let cfg = model_io::load_model(store.as_ref(), "models/base", u64::MAX).await.unwrap().cfg;
    let mut leaves = Vec::new();
    for (i, &step) in steps.iter().enumerate() {
        let c = if step < 24 {
            checkpoint::stored(store.as_ref(), "models/job-a", step, &cfg, &Method::Full)
                .await
                .unwrap()
        } else {
            // The last checkpoint is committed, not stored: the output model supersedes it.
            assert!(
                checkpoint::stored(store.as_ref(), "models/job-a", step, &cfg, &Method::Full)
                    .await
                    .is_err()
            );
            let w = model_io::load_model(store.as_ref(), "models/job-a", u64::MAX).await.unwrap();
            merkle::Checkpoint {
                step,
                weights: w.weights_hash,
                optimizer: m.checkpoint_optimizer_hashes[i],
            }
        };
        assert_eq!(
            (c.weights, c.optimizer),
            (m.checkpoint_hashes[i], m.checkpoint_optimizer_hashes[i])
        );
        leaves.push(c);
    }
    assert_eq!(merkle::root(&leaves), m.checkpoint_root);
    assert_ne!(m.checkpoint_optimizer_hashes[0], m.checkpoint_optimizer_hashes[1]);
    assert_ne!(m.input_weights_hash, m.output_weights_hash);

    // The new model is complete and loads; its hash matches the manifest and metrics.
    let loaded = model_io::load_model(store.as_ref(), "models/job-a", u64::MAX).await.unwrap();
    assert_eq!(loaded.weights_hash, m.output_weights_hash);
    let manifest: Manifest =
        serde_json::from_slice(&store.get("models/job-a/_COMPLETE", 1 << 20).await.unwrap())
            .unwrap();
    assert_eq!(manifest.weights_hash, m.output_weights_hash);
    let ckpts = keys(store.as_ref(), "models/job-a/checkpoints").await;
    assert!(ckpts.iter().any(|k| k.ends_with("step-000008/state.json")), "{ckpts:?}");

    // Public outputs are metrics and progress only.
    let public = keys(store.as_ref(), "jobs/job-a/public").await;
    assert!(public.iter().all(|k| PUBLIC_ALLOWLIST.iter().any(|a| k.ends_with(a))), "{public:?}");
    let pm: TrainMetrics = serde_json::from_slice(
        &store.get("jobs/job-a/public/metrics.json", 1 << 20).await.unwrap(),
    )
    .unwrap();
    assert_eq!(pm, m);

    // run.json binds the inputs, the worker build and the exact bytes of metrics.json.
    let info: RunInfo =
        serde_json::from_slice(&store.get("jobs/job-a/public/run.json", 1 << 20).await.unwrap())
            .unwrap();
    let bytes = store.get("jobs/job-a/public/metrics.json", 1 << 20).await.unwrap();
    assert_eq!(info.output_hash, posthuman_worker::data::dataset_hash(&bytes));
    assert_eq!(info.input_weights_hash, m.input_weights_hash);
    assert_eq!(info.output_weights_hash, Some(m.output_weights_hash));
    assert_eq!(info.checkpoint_root, Some(m.checkpoint_root));
    assert!(info.worker_version.starts_with("posthuman-worker "));
    assert!(info.ended_at >= info.started_at);

    // Inference on the trained model: greedy is deterministic and continues the corpus.
    let mut inf = spec("job-b", JobParams::Infer(infer_params()));
    inf.model_prefix = "models/job-a".into();
    inf.dataset_key = None;
    let JobOutcome::Inferred(c) = run_job(store.as_ref(), &wc(), &spec_bytes(&inf)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|c| c.completion_tokens > 0 && c.prompt_tokens > 0));
    let again = run_job(store.as_ref(), &wc(), &spec_bytes(&inf)).await.unwrap();
    assert_eq!(again, JobOutcome::Inferred(c.clone()));
    let public = keys(store.as_ref(), "jobs/job-b/public").await;
    assert!(public.iter().any(|k| k.ends_with("completions.json")));
    assert!(public.iter().all(|k| PUBLIC_ALLOWLIST.iter().any(|a| k.ends_with(a))), "{public:?}");

    // Sampling with a seed is reproducible; stop strings cut the text.
    let mut p = infer_params();
    p.sampling = Sampling { temperature: 0.9, top_k: Some(40), top_p: Some(0.95), seed: 3 };
    p.stop = vec![" the".into()];
    p.max_new_tokens = 40;
    inf.params = JobParams::Infer(p);
    let a = run_job(store.as_ref(), &wc(), &spec_bytes(&inf)).await.unwrap();
    let b = run_job(store.as_ref(), &wc(), &spec_bytes(&inf)).await.unwrap();
    assert_eq!(a, b);
    let JobOutcome::Inferred(c) = a else { panic!() };
    for c in &c {
        assert!(!c.text.contains(" the"), "{c:?}");
        assert!(c.stop_reason != StopReason::Stop || c.completion_tokens < 40);
    }

    // Evaluation: the trained model beats the base model on its training text.
    let mut ev = spec("job-c", JobParams::Evaluate(eval_params()));
    let JobOutcome::Evaluated(base) =
        run_job(store.as_ref(), &wc(), &spec_bytes(&ev)).await.unwrap()
    else {
        panic!()
    };
    ev.model_prefix = "models/job-a".into();
    let mut ep = eval_params();
    ep.baseline = Some(Baseline { label: "base".into(), perplexity: base.perplexity });
    ev.params = JobParams::Evaluate(ep);
    let JobOutcome::Evaluated(r) = run_job(store.as_ref(), &wc(), &spec_bytes(&ev)).await.unwrap()
    else {
        panic!()
    };
    assert!(r.perplexity < base.perplexity, "{} vs {}", r.perplexity, base.perplexity);
    assert!(r.ratio_to_baseline.unwrap() < 1.0);
    assert_eq!(r.weights_hash, m.output_weights_hash);
    assert_eq!(r.dataset_hash, m.dataset_hash);
    let stored: EvalReport =
        serde_json::from_slice(&store.get("jobs/job-c/public/report.json", 1 << 20).await.unwrap())
            .unwrap();
    assert_eq!(stored, r);
    // Same data, same windows: the same number of scored tokens.
    assert_eq!(base.tokens_scored, r.tokens_scored);
}

#[tokio::test]
async fn training_is_deterministic_with_and_without_dropout() {
    let (_d1, s1) = store().await;
    let (_d2, s2) = store().await;
    let a = train(s1.as_ref(), &train_spec("job-a"), &wc()).await;
    let b = train(s2.as_ref(), &train_spec("job-a"), &wc()).await;
    assert_eq!(a.output_weights_hash, b.output_weights_hash);
    assert_eq!(a.checkpoint_root, b.checkpoint_root);

    let mut s = train_spec("job-d");
    if let JobParams::Train(p) = &mut s.params {
        p.dropout = 0.1;
        p.grad_accum = 2;
    }
    let c = train(s1.as_ref(), &s, &wc()).await;
    let d = train(s2.as_ref(), &s, &wc()).await;
    assert_eq!(c.output_weights_hash, d.output_weights_hash);
    assert_ne!(c.output_weights_hash, a.output_weights_hash);
    // A different seed gives different weights.
    if let JobParams::Train(p) = &mut s.params {
        p.seed += 1;
    }
    s.private_prefix = "models/job-e".into();
    let e = train(s1.as_ref(), &s, &wc()).await;
    assert_ne!(e.output_weights_hash, c.output_weights_hash);
}

#[tokio::test]
async fn resume_after_stop_equals_uninterrupted() {
    let (_d1, s1) = store().await;
    let (_d2, s2) = store().await;
    let whole = train(s1.as_ref(), &train_spec("job-r"), &wc()).await;

    let stop = WorkerConfig { stop_after_checkpoint: Some(8), ..wc() };
    let out = run_job(s2.as_ref(), &stop, &spec_bytes(&train_spec("job-r"))).await.unwrap();
    assert_eq!(out, JobOutcome::Interrupted { step: 8 });
    // Nothing of the final model or metrics is visible yet.
    assert!(s2.head("models/job-r/_COMPLETE").await.unwrap().is_none());
    assert!(s2.head("jobs/job-r/public/metrics.json").await.unwrap().is_none());

    let resumed = train(s2.as_ref(), &train_spec("job-r"), &wc()).await;
    assert_eq!(resumed.output_weights_hash, whole.output_weights_hash);
    assert_eq!(resumed.checkpoint_root, whole.checkpoint_root);
    assert_eq!(resumed.checkpoint_hashes, whole.checkpoint_hashes);
    assert_eq!(resumed.loss_curve, whole.loss_curve);
    assert_eq!(resumed.tokens_trained, whole.tokens_trained);
}

/// The `cuda` build on a GPU host (scripts/gpu-run.sh): a job that requires the GPU runs, and
/// on it (its run record names the cuda build); without a usable GPU it is refused.
#[cfg(feature = "cuda")]
#[tokio::test]
async fn a_gpu_required_job_runs_on_the_gpu_when_there_is_one() {
    let (_d, store) = store().await;
    let gpu_only = WorkerConfig { require_gpu: true, ..wc() };
    let out = run_job(store.as_ref(), &gpu_only, &spec_bytes(&train_spec("job-gpu"))).await;
    if posthuman_worker::device::compute().is_cuda() {
        assert!(matches!(out, Ok(JobOutcome::Trained(_))), "{out:?}");
        let run: RunInfo = serde_json::from_slice(
            &store.get("jobs/job-gpu/public/run.json", 1 << 20).await.unwrap(),
        )
        .unwrap();
        assert!(run.worker_version.contains("cuda"), "{}", run.worker_version);
    } else {
        assert!(out.is_err(), "{out:?}");
    }
}
