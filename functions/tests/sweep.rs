//! The sweeper (issue 13 §5): a job record left in Submitting/Queued by a crash between the
//! order claim and the queue submit is recovered after a grace period — resubmitted when its
//! spec was stored, else failed with its order released — while a fresh record and a job the
//! queue knows are left alone. Deps are built by hand over a temp dir (SQLite catalogue,
//! filesystem store, an unstarted local queue, a chain client on a closed port).

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;

use std::sync::Arc;

use bytes::Bytes;
use posthuman_functions::catalogue::{JobPhase, JobRecord};
use posthuman_functions::deps::Deps;
use posthuman_functions::queue::{
    LocalQueue, LocalQueueConfig, QueueError, QueueState, WorkerCommand, spec_key,
};
use posthuman_functions::sweep::{SweepPolicy, sweep_stuck_jobs};
use posthuman_types::Hash32;

use common::{model_record, offline_deps as deps, seeded_job as record};

const GRACE: u64 = 600;
const NOW: u64 = 1_800_000_000;

/// The model the jobs run on (a sweep walks jobs model by model).
async fn with_model(deps: &Deps) {
    deps.catalogue.put_model(&model_record()).await.unwrap();
}

async fn store_spec(deps: &Deps, job: &JobRecord) {
    let body = Bytes::from(serde_json::to_vec(&job.spec).unwrap());
    deps.store.put(&spec_key(&job.job_id), body).await.unwrap();
}

fn policy() -> SweepPolicy {
    SweepPolicy { grace_secs: GRACE, redeliver_finished: false }
}

#[tokio::test]
async fn a_record_stuck_in_submitting_with_its_spec_stored_is_resubmitted() {
    let dir = tempfile::tempdir().unwrap();
    let deps = deps(dir.path());
    with_model(&deps).await;
    let stuck = record(&deps, "stuck-1", 1, JobPhase::Submitting, NOW - 2 * GRACE).await;
    store_spec(&deps, &stuck).await;
    assert!(matches!(deps.queue.state("stuck-1").await, Err(QueueError::NotFound(_))));

    let report = sweep_stuck_jobs(&deps, &policy(), NOW).await.unwrap();
    assert_eq!(report.resubmitted, ["stuck-1"]);
    assert!(report.released.is_empty());
    assert_eq!(deps.queue.state("stuck-1").await.unwrap(), QueueState::Queued);
    let rec = deps.catalogue.get_job("stuck-1").await.unwrap().unwrap();
    assert_eq!(rec.phase, JobPhase::Queued);
    assert_eq!(rec.queue_ref.as_deref(), Some("stuck-1"));
    assert_eq!(rec.updated_at, NOW);
    // Still holds its order: it is paid for and will run.
    let key = format!("{}-0", stuck.order_tx);
    assert_eq!(deps.catalogue.order_holder(&key).await.unwrap().as_deref(), Some("stuck-1"));
    // A second sweep finds nothing to do.
    let again = sweep_stuck_jobs(&deps, &policy(), NOW + 2 * GRACE).await.unwrap();
    assert!(again.resubmitted.is_empty() && again.released.is_empty(), "{again:?}");
}

#[tokio::test]
async fn a_record_stuck_without_its_spec_is_failed_and_its_order_released() {
    let dir = tempfile::tempdir().unwrap();
    let deps = deps(dir.path());
    with_model(&deps).await;
    // The crash came before the spec (and so maybe the dataset) reached the store.
    let lost = record(&deps, "lost-1", 2, JobPhase::Submitting, NOW - 2 * GRACE).await;

    let report = sweep_stuck_jobs(&deps, &policy(), NOW).await.unwrap();
    assert_eq!(report.released, ["lost-1"]);
    assert!(report.resubmitted.is_empty());
    let rec = deps.catalogue.get_job("lost-1").await.unwrap().unwrap();
    assert!(matches!(rec.phase, JobPhase::Failed { exit_code: None, .. }), "{rec:?}");
    assert!(rec.order_released);
    let key = format!("{}-0", lost.order_tx);
    assert_eq!(deps.catalogue.order_holder(&key).await.unwrap(), None, "the buyer may retry");
    assert!(matches!(deps.queue.state("lost-1").await, Err(QueueError::NotFound(_))));
}

#[tokio::test]
async fn a_fresh_record_and_a_job_the_queue_knows_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let deps = deps(dir.path());
    with_model(&deps).await;
    // Within the grace period: `submit` may still be writing it.
    let fresh = record(&deps, "fresh-1", 3, JobPhase::Submitting, NOW - GRACE / 2).await;
    // Old, but in the queue (a long queue wait is not a crash).
    let queued = record(&deps, "queued-2", 4, JobPhase::Queued, NOW - 10 * GRACE).await;
    store_spec(&deps, &queued).await;
    deps.queue.submit(&queued.spec).await.unwrap();
    // Old, Submitting, but the queue has it: the crash came after the submit.
    let submitted = record(&deps, "submitted-3", 5, JobPhase::Submitting, NOW - 10 * GRACE).await;
    store_spec(&deps, &submitted).await;
    deps.queue.submit(&submitted.spec).await.unwrap();

    let report = sweep_stuck_jobs(&deps, &policy(), NOW).await.unwrap();
    assert!(report.resubmitted.is_empty() && report.released.is_empty(), "{report:?}");
    assert_eq!(deps.catalogue.get_job("fresh-1").await.unwrap().unwrap(), fresh);
    assert_eq!(deps.catalogue.get_job("queued-2").await.unwrap().unwrap(), queued);
    // The one that was submitted gets its queue reference recorded, nothing else.
    let rec = deps.catalogue.get_job("submitted-3").await.unwrap().unwrap();
    assert_eq!(rec.phase, JobPhase::Queued);
    assert_eq!(rec.queue_ref.as_deref(), Some("submitted-3"));
    assert_eq!(report.adopted, ["submitted-3"]);
}

#[tokio::test]
async fn a_finished_job_whose_completion_was_lost_is_delivered_again_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let deps = deps(dir.path());
    with_model(&deps).await;
    let job = record(&deps, "lost-event-1", 6, JobPhase::Queued, NOW - 2 * GRACE).await;
    store_spec(&deps, &job).await;
    // The queue runs it (the worker is /bin/false) but its completion never reaches the
    // record: the stand-in for an EventBridge event that every retry failed to land.
    let queue = LocalQueue::open(LocalQueueConfig {
        db_path: dir.path().join("queue.sqlite"),
        work_dir: dir.path().join("queue"),
        store_root: dir.path().join("store"),
        worker: WorkerCommand { program: "/bin/false".into(), args: vec![] },
        concurrency: 1,
        max_attempts: 1,
    })
    .unwrap();
    queue.start(Arc::new(|_d| Box::pin(async { Ok(()) }))).await.unwrap();
    deps.queue.submit(&job.spec).await.unwrap();
    for _ in 0..250 {
        if deps.queue.state("lost-event-1").await.unwrap().is_terminal() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    queue.shutdown().await;
    assert!(matches!(deps.queue.state("lost-event-1").await.unwrap(), QueueState::Failed { .. }));

    // Off (the embedded default): the queue owns delivery, the sweep leaves it.
    let report = sweep_stuck_jobs(&deps, &policy(), NOW).await.unwrap();
    assert_eq!(report, Default::default());
    // On (AWS): the completion is handled; a worker crash releases the order.
    let aws = SweepPolicy { grace_secs: GRACE, redeliver_finished: true };
    let report = sweep_stuck_jobs(&deps, &aws, NOW).await.unwrap();
    assert_eq!(report.redelivered, ["lost-event-1"]);
    let rec = deps.catalogue.get_job("lost-event-1").await.unwrap().unwrap();
    assert!(matches!(rec.phase, JobPhase::Failed { exit_code: Some(1), .. }), "{rec:?}");
    assert!(rec.order_released);
    let again = sweep_stuck_jobs(&deps, &aws, NOW).await.unwrap();
    assert_eq!(again, Default::default());
}

/// A queue that has the job and, while the sweep asks about it, finishes it: the job-done
/// path records the success before the sweep writes down the queue reference.
#[derive(Debug)]
struct FinishesWhileAsked {
    catalogue: Arc<dyn posthuman_functions::catalogue::Catalogue>,
}

#[async_trait::async_trait]
impl posthuman_functions::queue::JobQueue for FinishesWhileAsked {
    async fn submit(&self, _spec: &posthuman_types::JobSpec) -> Result<String, QueueError> {
        Err(QueueError::Backend("not expected: the job is in the queue".into()))
    }
    async fn state(&self, queue_ref: &str) -> Result<QueueState, QueueError> {
        let mut done = self.catalogue.get_job(queue_ref).await.unwrap().unwrap();
        done.phase = JobPhase::Succeeded;
        done.queue_ref = Some(queue_ref.to_string());
        done.receipt_hash = Some(Hash32([3; 32]));
        done.updated_at = NOW;
        self.catalogue.put_job(&done).await.unwrap();
        // What the queue said before the job finished.
        Ok(QueueState::Running)
    }
    async fn find(&self, job_id: &str) -> Result<Option<String>, QueueError> {
        Ok(Some(job_id.to_string()))
    }
}

/// Recording the queue reference of a record left in Submitting must not move a job whose
/// completion landed meanwhile back to Queued (it would run its completion again or never
/// show its result).
#[tokio::test]
async fn adopting_a_stuck_record_never_undoes_a_completion_written_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut deps = deps(dir.path());
    deps.queue = Arc::new(FinishesWhileAsked { catalogue: deps.catalogue.clone() });
    with_model(&deps).await;
    record(&deps, "fast-1", 7, JobPhase::Submitting, NOW - 2 * GRACE).await;

    sweep_stuck_jobs(&deps, &policy(), NOW).await.unwrap();
    let rec = deps.catalogue.get_job("fast-1").await.unwrap().unwrap();
    assert_eq!(rec.phase, JobPhase::Succeeded, "{rec:?}");
    assert_eq!(rec.receipt_hash, Some(Hash32([3; 32])));
}
