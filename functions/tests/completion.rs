//! The completion handler (`on_job_done`) without a chain: what a failed job does to its
//! order, and evaluate completions whose report holds an unbounded perplexity. Deps are built
//! by hand over a temp dir (SQLite catalogue, filesystem store, an unstarted local queue) and
//! a chain client pointed at a closed port: none of these paths may touch the chain.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;

use bytes::Bytes;
use posthuman_functions::catalogue::{JobPhase, JobRecord, now_secs};
use posthuman_functions::deps::Deps;
use posthuman_functions::handlers::complete::on_job_done;
use posthuman_functions::handlers::views::{JobStateView, job_view};
use posthuman_functions::queue::{JobDone, QueueState};
use posthuman_types::{EvalParams, Hash32, JobKind, JobParams};

use common::{model_record as model, offline_deps as deps};

/// A queued job holding its own order.
async fn queued_job(deps: &Deps, id: &str, n: u8) -> JobRecord {
    common::seeded_job(deps, id, n, JobPhase::Queued, now_secs()).await
}

fn failed(id: &str, code: Option<i32>) -> JobDone {
    JobDone {
        job_id: id.into(),
        state: QueueState::Failed { reason: "worker exited".into(), exit_code: code },
    }
}

#[tokio::test]
async fn a_buyer_input_failure_consumes_the_order_and_an_operator_failure_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let deps = deps(dir.path());
    let buyer = queued_job(&deps, "bad-dataset", 1).await;
    let operator = queued_job(&deps, "store-down", 2).await;

    // Exit 40 (BAD_DATASET): the buyer's dataset yields no tokens. Running it again fails the same way.
    on_job_done(&deps, &failed("bad-dataset", Some(posthuman_types::exit::BAD_DATASET)))
        .await
        .unwrap();
    let key = format!("{}-0", buyer.order_tx);
    assert_eq!(
        deps.catalogue.order_holder(&key).await.unwrap().as_deref(),
        Some("bad-dataset"),
        "a failure caused by the buyer's input consumes the order"
    );
    let rec = deps.catalogue.get_job("bad-dataset").await.unwrap().unwrap();
    assert!(matches!(rec.phase, JobPhase::Failed { exit_code: Some(40), .. }), "{rec:?}");
    match job_view(&rec, false, None).state {
        JobStateView::Failed { order_reusable, .. } => assert!(!order_reusable),
        other => panic!("{other:?}"),
    }
    // A duplicate FAILED event changes nothing.
    on_job_done(&deps, &failed("bad-dataset", Some(40))).await.unwrap();
    assert_eq!(deps.catalogue.order_holder(&key).await.unwrap().as_deref(), Some("bad-dataset"));

    // Exit 18: the object store failed — not the buyer's fault: the order pays for a retry.
    on_job_done(&deps, &failed("store-down", Some(posthuman_types::exit::STORE))).await.unwrap();
    let key = format!("{}-0", operator.order_tx);
    assert_eq!(deps.catalogue.order_holder(&key).await.unwrap(), None);
    let rec = deps.catalogue.get_job("store-down").await.unwrap().unwrap();
    match job_view(&rec, false, None).state {
        JobStateView::Failed { order_reusable, .. } => assert!(order_reusable),
        other => panic!("{other:?}"),
    }
    // Killed by a signal (no exit code): not the buyer's fault either.
    let killed = queued_job(&deps, "oom-killed", 3).await;
    on_job_done(&deps, &failed("oom-killed", None)).await.unwrap();
    let key = format!("{}-0", killed.order_tx);
    assert_eq!(deps.catalogue.order_holder(&key).await.unwrap(), None);
}

#[tokio::test]
async fn an_unbounded_perplexity_does_not_block_the_completion() {
    let dir = tempfile::tempdir().unwrap();
    let deps = deps(dir.path());
    deps.catalogue.put_model(&model()).await.unwrap();
    let mut job = queued_job(&deps, "eval-inf", 4).await;
    job.kind = JobKind::Evaluate;
    job.spec.params = JobParams::Evaluate(EvalParams {
        context_len: 32,
        stride: 16,
        max_tokens: 0,
        baseline: None,
    });
    deps.catalogue.put_job(&job).await.unwrap();
    // What the worker writes when the model assigns a scored token probability 0:
    // serde_json writes the infinite mean NLL and perplexity as null.
    let report = serde_json::json!({
        "weights_hash": Hash32([7; 32]), "dataset_hash": Hash32([8; 32]),
        "tokens_scored": 100, "context_len": 32, "stride": 16,
        "mean_nll": null, "perplexity": null, "tokens_per_sec": 1000.0
    });
    deps.store
        .put(
            &format!("{}/report.json", job.spec.public_prefix),
            Bytes::from(serde_json::to_vec(&report).unwrap()),
        )
        .await
        .unwrap();

    let done = JobDone { job_id: "eval-inf".into(), state: QueueState::Succeeded };
    on_job_done(&deps, &done).await.unwrap();
    let rec = deps.catalogue.get_job("eval-inf").await.unwrap().unwrap();
    assert_eq!(rec.phase, JobPhase::Succeeded);
    assert!(rec.completion.done && rec.receipt_hash.is_some(), "{rec:?}");
    // Reported as unbounded, not as "no evaluation" and not as a number.
    assert_eq!(rec.perplexity, Some(f64::INFINITY));
}

/// Issue 13 §2, defence in depth: a train job reported as succeeded whose output weights are
/// the parent's own (a worker that let an underflowing "fine-tune" through) publishes no
/// derivation: no receipt, no chain call (the chain here is unreachable); the job fails with
/// that reason, as the buyer's input, so the order is consumed.
#[tokio::test]
async fn a_derivation_identical_to_its_parent_is_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let deps = deps(dir.path());
    deps.catalogue.put_model(&model()).await.unwrap();
    let mut job = queued_job(&deps, "train-clone", 5).await;
    job.kind = JobKind::Train;
    job.spec.dataset_key = Some("jobs/train-clone/data.txt".into());
    job.spec.params = JobParams::Train(posthuman_types::TrainParams::new(20, 3e-4, 4, 32));
    deps.catalogue.put_job(&job).await.unwrap();
    let parent = model().card.weights_hash;
    let metrics = posthuman_types::TrainMetrics {
        steps: 20,
        tokens_trained: 2560,
        final_loss: 3.0,
        loss_curve: vec![(20, 3.0)],
        tokens_per_sec: 1000.0,
        wall_secs: 2.0,
        input_weights_hash: parent,
        output_weights_hash: parent,
        dataset_hash: Hash32([8; 32]),
        checkpoint_root: Hash32([9; 32]),
        checkpoint_every: 10,
        checkpoint_hashes: vec![parent, parent],
        checkpoint_optimizer_hashes: vec![Hash32([1; 32]), Hash32([2; 32])],
        lora: None,
    };
    deps.store
        .put(
            &format!("{}/metrics.json", job.spec.public_prefix),
            Bytes::from(serde_json::to_vec(&metrics).unwrap()),
        )
        .await
        .unwrap();

    let done = JobDone { job_id: "train-clone".into(), state: QueueState::Succeeded };
    on_job_done(&deps, &done).await.unwrap();
    let rec = deps.catalogue.get_job("train-clone").await.unwrap().unwrap();
    match &rec.phase {
        JobPhase::Failed { reason, exit_code } => {
            assert!(reason.contains("identical to its parent"), "{reason}");
            assert_eq!(*exit_code, Some(posthuman_types::exit::NO_TRAINING));
        }
        other => panic!("a clone was not refused: {other:?}"),
    }
    assert!(rec.completion.child.is_none() && rec.receipt_hash.is_none(), "{rec:?}");
    let receipt = format!("{}/receipt.json", job.spec.public_prefix);
    assert!(deps.store.head(&receipt).await.unwrap().is_none());
    let key = format!("{}-0", job.order_tx);
    assert_eq!(deps.catalogue.order_holder(&key).await.unwrap().as_deref(), Some("train-clone"));
}

/// Issue 13 §3: a finished train job's checkpoints are pruned once the operator's audit
/// window has passed since it finished — and only then: a job finished within the window and
/// a job still running keep theirs. The prune leaves a marker saying when and why.
#[tokio::test]
async fn checkpoints_are_pruned_after_the_audit_window_only() {
    use posthuman_functions::prune::{
        PrunedMarker, checkpoints_prefix, prune_checkpoints, pruned_marker_key,
    };
    let dir = tempfile::tempdir().unwrap();
    let deps = deps(dir.path());
    deps.catalogue.put_model(&model()).await.unwrap();
    let now = now_secs();
    let window = 3600;
    let mut prefixes = Vec::new();
    for (i, (id, phase, finished_ago)) in [
        ("old-train", JobPhase::Succeeded, window + 1),
        ("fresh-train", JobPhase::Succeeded, window - 1),
        ("running-train", JobPhase::Queued, window * 2),
    ]
    .into_iter()
    .enumerate()
    {
        let mut job = queued_job(&deps, id, 10 + i as u8).await;
        job.kind = JobKind::Train;
        job.spec.dataset_key = Some(format!("jobs/{id}/data.txt"));
        job.spec.params = JobParams::Train(posthuman_types::TrainParams::new(20, 3e-4, 4, 32));
        job.phase = phase;
        job.updated_at = now - finished_ago;
        deps.catalogue.put_job(&job).await.unwrap();
        let ck = checkpoints_prefix(&job.spec.private_prefix);
        for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
            let key = format!("{ck}step-000010/{f}");
            deps.store.put(&key, Bytes::from_static(b"checkpoint bytes")).await.unwrap();
        }
        deps.store
            .put(
                &format!("{}/model.safetensors", job.spec.private_prefix),
                Bytes::from_static(b"w"),
            )
            .await
            .unwrap();
        prefixes.push(job.spec.private_prefix.clone());
    }

    assert_eq!(prune_checkpoints(&deps, window, now).await.unwrap(), 1);
    let [old, fresh, running] = [&prefixes[0], &prefixes[1], &prefixes[2]];
    assert!(deps.store.list(&checkpoints_prefix(old)).await.unwrap().is_empty());
    // The derived model itself is not a checkpoint: it stays.
    assert!(deps.store.head(&format!("{old}/model.safetensors")).await.unwrap().is_some());
    let marker: PrunedMarker =
        serde_json::from_slice(&deps.store.get(&pruned_marker_key(old), 1 << 20).await.unwrap())
            .unwrap();
    assert_eq!(marker.job_id, "old-train");
    assert_eq!((marker.pruned_at, marker.audit_window_secs), (now, window));
    for p in [fresh, running] {
        assert_eq!(deps.store.list(&checkpoints_prefix(p)).await.unwrap().len(), 3, "{p}");
        assert!(deps.store.head(&pruned_marker_key(p)).await.unwrap().is_none());
    }
    // Idempotent: nothing left to prune.
    assert_eq!(prune_checkpoints(&deps, window, now).await.unwrap(), 0);
}

/// Two train jobs of one parent that finish at once, both without names: each completion
/// fixes its child's default name before either child is in the catalogue. Counting the
/// published children gave both "m1 · fine-tune 1" / "M1-FT1"; they must differ, and a
/// retried completion must get its own name back.
#[tokio::test]
async fn sibling_jobs_finishing_together_get_distinct_default_names() {
    use posthuman_functions::handlers::complete::child_names;

    let dir = tempfile::tempdir().unwrap();
    let deps = deps(dir.path());
    let parent = model();
    deps.catalogue.put_model(&parent).await.unwrap();
    let mut jobs = Vec::new();
    for (i, id) in ["sib-a", "sib-b", "sib-c"].into_iter().enumerate() {
        let mut job = queued_job(&deps, id, 10 + i as u8).await;
        job.kind = JobKind::Train;
        job.spec.params = JobParams::Train(posthuman_types::TrainParams::new(20, 3e-4, 4, 32));
        deps.catalogue.put_job(&job).await.unwrap();
        jobs.push(job);
    }
    let names = futures::future::join_all(jobs.iter().map(|j| child_names(&deps, &parent, j)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "siblings share a default name: {names:?}");
    let mut numbers: Vec<&str> = names.iter().map(|(n, _)| n.rsplit(' ').next().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, ["1", "2", "3"], "{names:?}");
    assert!(names.iter().any(|(n, s)| n == "m1 · fine-tune 1" && s == "M1-FT1"), "{names:?}");
    assert_eq!(child_names(&deps, &parent, &jobs[1]).await.unwrap(), names[1], "a retry");
}
