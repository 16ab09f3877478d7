//! Proof-of-learning audits with the REAL worker: a tiny GPT-2 (and a tiny Llama) is trained by
//! `posthuman_worker::train::run` with checkpoints; the auditor re-runs segments with the
//! same train loop (resuming from the stored checkpoint, stopping after the segment's last
//! step) and must reproduce each committed checkpoint (weights and optimizer state) bit for
//! bit. Each kind of cheating is produced by really training the cheat, and is caught.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use std::sync::Arc;

use bytes::Bytes;
use posthuman_receipts::{
    AuditPolicy, AuditReport, Pick, Replay, Segment, SegmentVerdict, VerifiedReceipt, audit_async,
    merkle, plan_audit, sign,
};
use posthuman_store::{LocalStore, ObjectStore};
use posthuman_types::{Hash32, JobParams, JobSpec, TrainMetrics, TrainParams};
use posthuman_worker::WorkerConfig;
use posthuman_worker::model_io::{join, load_model};
use posthuman_worker::setup::{
    LlamaShape, ModelShape, init_llama, init_model_to_store, save_new_model,
};
use posthuman_worker::tokenizer::train_bpe;
use posthuman_worker::train::checkpoint::{self, CheckpointState, fingerprint};
use posthuman_worker::train::method::Method;
use posthuman_worker::train::{self, TrainOutcome};

const BASE: &str = "models/base";
const DATA: &str = "datasets/buyer.txt";
const OTHER_DATA: &str = "datasets/other.txt";

fn corpus(lines: &[&str]) -> String {
    (0..40).map(|i| format!("{}\n", lines[i % lines.len()])).collect()
}

fn buyer_text() -> String {
    corpus(&[
        "the cat sat on the mat and looked at the dog.",
        "a bird sang in the tree while the sun rose.",
    ])
}

fn other_text() -> String {
    corpus(&[
        "we read the book and wrote the answer down.",
        "the dog sat on the log and looked at the cat.",
    ])
}

async fn store() -> (tempfile::TempDir, Arc<LocalStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let tok = train_bpe(&format!("{}{}", buyer_text(), other_text()), 320).unwrap();
    let shape = ModelShape { n_layer: 1, n_embd: 16, n_head: 2, n_positions: 32, vocab_size: None };
    init_model_to_store(store.as_ref(), BASE, &tok, &shape, 7).await.unwrap();
    store.put(DATA, Bytes::from(buyer_text())).await.unwrap();
    store.put(OTHER_DATA, Bytes::from(other_text())).await.unwrap();
    (dir, store)
}

/// [`store`] with a tiny Llama (grouped-query attention) as the base model instead.
async fn llama_store() -> (tempfile::TempDir, Arc<LocalStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let tok = train_bpe(&format!("{}{}", buyer_text(), other_text()), 320).unwrap();
    let shape = LlamaShape {
        layers: 1,
        hidden: 16,
        intermediate: 32,
        heads: 4,
        kv_heads: 2,
        context: 32,
        tie_word_embeddings: false,
    };
    let (cfg, w) = init_llama(&tok, &shape, 7).unwrap();
    save_new_model(store.as_ref(), BASE, &cfg, &w, &tok).await.unwrap();
    store.put(DATA, Bytes::from(buyer_text())).await.unwrap();
    store.put(OTHER_DATA, Bytes::from(other_text())).await.unwrap();
    (dir, store)
}

/// What the buyer ordered: 24 steps, a checkpoint every 4 (6 segments).
fn params() -> TrainParams {
    let mut p = TrainParams::new(24, 3e-3, 2, 16);
    p.warmup_steps = 2;
    p.checkpoint_every = 4;
    p.seed = 11;
    p
}

fn spec(id: &str, dataset: &str, p: &TrainParams) -> JobSpec {
    JobSpec {
        job_id: id.into(),
        model_prefix: BASE.into(),
        dataset_key: Some(dataset.into()),
        private_prefix: format!("private/{id}"),
        public_prefix: format!("public/{id}"),
        params: JobParams::Train(p.clone()),
        budget: None,
        salt: None,
    }
}

fn wc(stop: Option<u32>) -> WorkerConfig {
    WorkerConfig {
        progress_interval_secs: 0.0,
        stop_after_checkpoint: stop,
        ..WorkerConfig::default()
    }
}

fn ckpt(prefix: &str, step: u32, file: &str) -> String {
    join(&format!("{prefix}/checkpoints/step-{step:06}"), file)
}

async fn run_to_end(store: &dyn ObjectStore, s: &JobSpec, p: &TrainParams) -> TrainMetrics {
    match train::run(store, &wc(None), s, p).await.unwrap() {
        TrainOutcome::Done(m) => *m,
        TrainOutcome::Stopped { step } => panic!("stopped at {step}"),
    }
}

/// Trains `s` until the worker's stop hook halts it after `step`.
async fn run_until(store: &dyn ObjectStore, s: &JobSpec, p: &TrainParams, step: u32) {
    let outcome = train::run(store, &wc(Some(step)), s, p).await.unwrap();
    assert_eq!(outcome, TrainOutcome::Stopped { step });
}

/// Trains "tampered" to step 12, swaps its checkpoint there for the same step of the
/// already trained "other" run, trains on from it to the end, and audits every segment.
async fn audit_tampered_at_12(store: &dyn ObjectStore, p: &TrainParams) -> AuditReport {
    let s = spec("tampered", DATA, p);
    run_until(store, &s, p, 12).await;
    substitute(store, "model.safetensors", ("private/tampered", 12), ("private/other", 12)).await;
    let m = run_to_end(store, &s, p).await;
    full_audit(store, "private/tampered", &m).await
}

/// The hashes of a stored checkpoint (recomputed from its files, not read from its state).
async fn stored(store: &dyn ObjectStore, prefix: &str, step: u32) -> merkle::Checkpoint {
    let cfg = load_model(store, BASE, u64::MAX).await.unwrap().cfg;
    checkpoint::stored(store, prefix, step, &cfg, &Method::Full).await.unwrap()
}

/// Replaces `file` (the weights or the optimizer state) of checkpoint `step` of `prefix` with
/// checkpoint `from_step`'s of `from_prefix`, rewriting its state so the worker resumes from
/// it: what a cheating operator does to a checkpoint. Returns the checkpoint's new hashes.
async fn substitute(
    store: &dyn ObjectStore,
    file: &str,
    (prefix, step): (&str, u32),
    (from_prefix, from_step): (&str, u32),
) -> merkle::Checkpoint {
    let w = store.get(&ckpt(from_prefix, from_step, file), u64::MAX).await.unwrap();
    store.put(&ckpt(prefix, step, file), w).await.unwrap();
    let c = stored(store, prefix, step).await;
    let key = ckpt(prefix, step, "state.json");
    let mut st: CheckpointState =
        serde_json::from_slice(&store.get(&key, u64::MAX).await.unwrap()).unwrap();
    (st.weights_hash, st.optimizer_hash) = (c.weights, c.optimizer);
    if let Some(last) = st.checkpoints.last_mut() {
        *last = c;
    }
    store.put(&key, Bytes::from(serde_json::to_vec(&st).unwrap())).await.unwrap();
    c
}

/// The operator's published receipt for a run claiming the buyer's `params` and dataset,
/// committing to the checkpoints `m` lists.
async fn receipt(store: &dyn ObjectStore, m: &TrainMetrics) -> VerifiedReceipt {
    let p = params();
    let leaves: Vec<merkle::Checkpoint> = merkle::checkpoint_steps(p.steps, p.checkpoint_every)
        .into_iter()
        .enumerate()
        .map(|(i, step)| merkle::Checkpoint {
            step,
            weights: m.checkpoint_hashes[i],
            optimizer: m.checkpoint_optimizer_hashes[i],
        })
        .collect();
    let input = load_model(store, BASE, u64::MAX).await.unwrap().weights_hash;
    let data = store.get(DATA, u64::MAX).await.unwrap();
    let r = common::receipt_with("job-pol", JobParams::Train(p), |r| {
        r.input_weights_hash = input;
        r.input_data_hash = posthuman_worker::data::dataset_hash(&data);
        r.checkpoint_root = merkle::root(&leaves);
        r.output_weights_hash = *m.checkpoint_hashes.last().unwrap();
    });
    sign(r, &common::operator(), &common::domain())
        .unwrap()
        .verify(common::operator().address(), &common::domain())
        .unwrap()
}

/// The auditor's re-execution of one segment with the worker: a fresh private prefix holding
/// only the operator's stored start checkpoint (its fingerprint set to the claimed
/// configuration), resumed with the buyer's dataset and the receipt's parameters, stopped
/// after the segment's last step.
async fn replay(
    store: &dyn ObjectStore,
    job_prefix: &str,
    seg: &Segment,
) -> Result<Replay, String> {
    let p = params();
    let id = format!("audit-{}", seg.index);
    let s = spec(&id, DATA, &p);
    let start = if seg.index == 0 {
        let input = load_model(store, BASE, u64::MAX).await.map_err(|e| e.to_string())?;
        (input.weights_hash, None)
    } else {
        for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
            let b = store
                .get(&ckpt(job_prefix, seg.start_step, f), u64::MAX)
                .await
                .map_err(|e| e.to_string())?;
            store
                .put(&ckpt(&s.private_prefix, seg.start_step, f), b)
                .await
                .map_err(|e| e.to_string())?;
        }
        let key = ckpt(&s.private_prefix, seg.start_step, "state.json");
        let mut st: CheckpointState =
            serde_json::from_slice(&store.get(&key, u64::MAX).await.unwrap()).unwrap();
        let input = load_model(store, BASE, u64::MAX).await.unwrap().weights_hash;
        let data = store.get(DATA, u64::MAX).await.unwrap();
        st.fingerprint = fingerprint(&p, &posthuman_worker::data::dataset_hash(&data), &input);
        store.put(&key, Bytes::from(serde_json::to_vec(&st).unwrap())).await.unwrap();
        let c = stored(store, &s.private_prefix, seg.start_step).await;
        (c.weights, Some(c.optimizer))
    };
    let outcome =
        train::run(store, &wc(Some(seg.end_step)), &s, &p).await.map_err(|e| e.to_string())?;
    let cfg = load_model(store, BASE, u64::MAX).await.unwrap().cfg;
    let end = outcome.end_checkpoint(store, &s.private_prefix, &cfg, &Method::Full).await.unwrap();
    Ok(Replay {
        start_hash: start.0,
        start_optimizer: start.1,
        end_hash: end.weights,
        end_optimizer: end.optimizer,
    })
}

fn plan(
    r: &VerifiedReceipt,
    m: &TrainMetrics,
    policy: &AuditPolicy,
) -> posthuman_receipts::AuditPlan {
    plan_audit(r, &m.checkpoint_hashes, &m.checkpoint_optimizer_hashes, None, policy).unwrap()
}

async fn full_audit(store: &dyn ObjectStore, job_prefix: &str, m: &TrainMetrics) -> AuditReport {
    let r = receipt(store, m).await;
    let plan = plan(&r, m, &AuditPolicy::full());
    // Each replay uses its own prefix: clear the previous audit's.
    for seg in &plan.segments {
        for k in store.list(&format!("private/audit-{}", seg.index)).await.unwrap_or_default() {
            store.delete(&k).await.unwrap();
        }
    }
    audit_async(&plan, |seg| {
        let seg = seg.clone();
        async move { replay(store, job_prefix, &seg).await }
    })
    .await
}

fn bad_segments(rep: &AuditReport) -> Vec<usize> {
    rep.failures().map(|r| r.index).collect()
}

#[tokio::test]
async fn the_worker_audit_passes_honest_training_and_catches_each_cheat() {
    let (_dir, store) = store().await;
    let st = store.as_ref();
    let p = params();

    // Honest: every segment reproduces bit for bit.
    let honest = run_to_end(st, &spec("honest", DATA, &p), &p).await;
    assert_eq!(honest.checkpoint_hashes.len(), 6);
    let rep = full_audit(st, "private/honest", &honest).await;
    assert!(rep.passed(), "{rep:?}");
    assert_eq!(rep.results.len(), 6);
    // The default policy: 5% of 24 steps is under one segment, so one (the final) is re-run.
    let r = receipt(st, &honest).await;
    let pl = plan(&r, &honest, &AuditPolicy::default());
    assert_eq!((pl.segments.len(), pl.segments[0].pick.clone()), (1, Pick::Final));

    // Tampered checkpoint: checkpoint 3 (step 12) replaced by another run's weights, training
    // continued from them.
    let other_seed = TrainParams { seed: 99, ..p.clone() };
    let other = run_to_end(st, &spec("other", DATA, &other_seed), &other_seed).await;
    let rep = audit_tampered_at_12(st, &p).await;
    assert_eq!(bad_segments(&rep), vec![2], "{rep:?}");
    assert!(matches!(rep.results[2].verdict, SegmentVerdict::EndMismatch { .. }));

    // Skipped steps: the steps 13..16 were never run (checkpoint 16 is checkpoint 12 again).
    let s = spec("skipped", DATA, &p);
    run_until(st, &s, &p, 16).await;
    substitute(st, "model.safetensors", ("private/skipped", 16), ("private/skipped", 12)).await;
    let m = run_to_end(st, &s, &p).await;
    let rep = full_audit(st, "private/skipped", &m).await;
    assert_eq!(bad_segments(&rep), vec![3], "{rep:?}");

    // Forged moments: training stopped at step 12, the optimizer state there replaced (another
    // run's moments, committed in its place) and training continued from it. The weights at
    // 12 are honest, so only the optimizer half of the commitment gives it away: re-running
    // segment 2 yields the honest moments. (With weights-only leaves this run passed a full
    // audit: segment 3 reproduces from the stored, forged moments.)
    let s = spec("moments", DATA, &p);
    run_until(st, &s, &p, 12).await;
    let honest_12 = stored(st, "private/moments", 12).await;
    let forged =
        substitute(st, "optimizer.safetensors", ("private/moments", 12), ("private/other", 12))
            .await;
    assert_eq!(forged.weights, honest_12.weights);
    let m = run_to_end(st, &s, &p).await;
    assert_eq!(m.checkpoint_optimizer_hashes[2], forged.optimizer);
    let rep = full_audit(st, "private/moments", &m).await;
    assert_eq!(bad_segments(&rep), vec![2], "{rep:?}");
    assert_eq!(
        rep.results[2].verdict,
        SegmentVerdict::EndOptimizerMismatch {
            committed: forged.optimizer,
            reproduced: honest_12.optimizer
        }
    );

    // A different dataset than the buyer's, and a different learning rate: every segment.
    let m = run_to_end(st, &spec("otherdata", OTHER_DATA, &p), &p).await;
    let rep = full_audit(st, "private/otherdata", &m).await;
    assert_eq!(bad_segments(&rep), vec![0, 1, 2, 3, 4, 5], "{rep:?}");
    let lr = TrainParams { learning_rate: 2e-3, ..p.clone() };
    let m = run_to_end(st, &spec("otherlr", DATA, &lr), &lr).await;
    let rep = full_audit(st, "private/otherlr", &m).await;
    assert_eq!(bad_segments(&rep), vec![0, 1, 2, 3, 4, 5], "{rep:?}");

    // Final weights swapped for another model's (the last checkpoint with them): the final
    // segment — which the default policy always re-runs — does not reproduce.
    let s = spec("swapped", DATA, &p);
    let mut m = run_to_end(st, &s, &p).await;
    *m.checkpoint_hashes.last_mut().unwrap() = other.output_weights_hash;
    let rep = full_audit(st, "private/swapped", &m).await;
    assert_eq!(bad_segments(&rep), vec![5], "{rep:?}");
    let r = receipt(st, &m).await;
    let pl = plan(&r, &m, &AuditPolicy::default());
    let rep = audit_async(&pl, |seg| {
        let seg = seg.clone();
        async move { replay(st, "private/swapped", &seg).await }
    })
    .await;
    assert!(!rep.passed(), "{rep:?}");
    assert_eq!(rep.results[0].pick, Pick::Final);
}

/// The audit replays a Llama's training through the same (family-dispatching) train code:
/// honest training passes bit for bit, a substituted checkpoint is caught in its segment.
#[tokio::test]
async fn the_worker_audit_replays_a_llama_and_catches_a_tampered_checkpoint() {
    let (_dir, store) = llama_store().await;
    let st = store.as_ref();
    let p = params();
    let honest = run_to_end(st, &spec("honest", DATA, &p), &p).await;
    let rep = full_audit(st, "private/honest", &honest).await;
    assert!(rep.passed(), "{rep:?}");
    assert_eq!(rep.results.len(), 6);

    let other_seed = TrainParams { seed: 99, ..p.clone() };
    run_to_end(st, &spec("other", DATA, &other_seed), &other_seed).await;
    let rep = audit_tampered_at_12(st, &p).await;
    assert_eq!(bad_segments(&rep), vec![2], "{rep:?}");
}

/// The worker salts the public dataset hash with the same function the receipts crate
/// documents (and `posthuman verify --salt` recomputes): one salt, one input, one hash; and
/// another salt or input gives another.
#[test]
fn the_worker_salts_like_the_receipts_crate() {
    let (salt, h) = (Hash32([0x5a; 32]), posthuman_receipts::dataset_hash(b"some text"));
    let ours = posthuman_receipts::salted_hash(&salt, &h);
    assert_eq!(posthuman_worker::data::salted_hash(&salt, &h), ours);
    assert_eq!(posthuman_worker::data::public_hash(Some(&salt), &h), ours);
    assert_eq!(posthuman_worker::data::public_hash(None, &h), h);
    assert_eq!(posthuman_worker::data::dataset_hash(b"some text"), h);
    assert_ne!(ours, h);
    assert_ne!(posthuman_receipts::salted_hash(&Hash32([0x5b; 32]), &h), ours);
    assert_ne!(posthuman_receipts::salted_hash(&salt, &Hash32([1; 32])), ours);
}
