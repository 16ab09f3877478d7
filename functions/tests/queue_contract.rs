//! One contract suite for every `JobQueue`: the local queue (child processes, SQLite) and
//! AWS Batch (against moto). Local-only behaviour (concurrency, failures, restarts) follows.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use posthuman_functions::queue::{
    BatchQueue, BatchQueueConfig, CompletionHook, DeliveryBackoff, DeliveryError, JobDone,
    JobQueue, LocalQueue, LocalQueueConfig, QueueError, QueueState, WorkerCommand,
};

// ---------------------------------------------------------------- the shared suite

async fn wait_terminal(q: &dyn JobQueue, r: &str) -> QueueState {
    for _ in 0..300 {
        let s = q.state(r).await.unwrap();
        if s.is_terminal() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {r} did not finish");
}

/// Every queue: a valid job runs to success; a bad spec queues nothing; unknown refs are
/// NotFound; two jobs are tracked independently.
async fn contract_suite(q: &dyn JobQueue, tag: &str) {
    let a = common::unique(&format!("{tag}-a"));
    let b = common::unique(&format!("{tag}-b"));
    let ra = q.submit(&common::infer_spec(&a)).await.unwrap();
    let rb = q.submit(&common::infer_spec(&b)).await.unwrap();
    assert_ne!(ra, rb);
    assert_eq!(wait_terminal(q, &ra).await, QueueState::Succeeded);
    assert_eq!(wait_terminal(q, &rb).await, QueueState::Succeeded);
    // By our job id, the reference `submit` returned (the sweeper's question after a crash).
    assert_eq!(q.find(&a).await.unwrap().as_deref(), Some(ra.as_str()));
    assert_eq!(q.find(&b).await.unwrap().as_deref(), Some(rb.as_str()));
    assert_eq!(q.find(&common::unique(&format!("{tag}-never"))).await.unwrap(), None);

    let mut bad = common::infer_spec(&common::unique(&format!("{tag}-bad")));
    bad.public_prefix = "../escape".into();
    assert!(
        matches!(q.submit(&bad).await, Err(QueueError::InvalidSpec(e)) if e.field == "public_prefix")
    );
    assert!(matches!(q.state(&bad.job_id).await, Err(QueueError::NotFound(_))));
    assert!(matches!(q.state("no-such-job-0000").await, Err(QueueError::NotFound(_))));
}

// ---------------------------------------------------------------- local queue

/// A worker stand-in script for exercising the *queue* (the real worker runs in the e2e
/// test): it logs `start <id>` / `end <id>`, sleeps, fails with the buyer-input code 40 (bad
/// dataset) for ids starting with `fail`, and is killed by SIGKILL for ids starting with `crash`.
fn script_worker(log: &Path, sleep_s: &str) -> WorkerCommand {
    let script = format!(
        r#"id=$(basename "$3" .json); echo "start $id" >> {log}; sleep {sleep_s}; echo "end $id" >> {log};
           case $id in fail*) echo '{{"reason":"boom"}}' >&2; exit 40;; crash*) kill -9 $$;; esac; exit 0"#,
        log = log.display()
    );
    WorkerCommand { program: "/bin/sh".into(), args: vec!["-c".into(), script, "sh".into()] }
}

fn local_cfg(dir: &Path, worker: WorkerCommand, concurrency: usize) -> LocalQueueConfig {
    LocalQueueConfig {
        db_path: dir.join("queue.sqlite"),
        work_dir: dir.join("work"),
        store_root: dir.join("store"),
        worker,
        concurrency,
        max_attempts: posthuman_functions::queue::DEFAULT_MAX_ATTEMPTS,
    }
}

type Seen = Arc<Mutex<Vec<JobDone>>>;

fn recording_hook() -> (CompletionHook, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let hook: CompletionHook = Arc::new(move |d: JobDone| {
        let s = s.clone();
        Box::pin(async move {
            s.lock().unwrap().push(d);
            Ok(())
        })
    });
    (hook, seen)
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect()
}

#[tokio::test]
async fn local_queue_passes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let q = LocalQueue::open(local_cfg(dir.path(), script_worker(&log, "0.05"), 2)).unwrap();
    let (hook, seen) = recording_hook();
    q.start(hook).await.unwrap();
    contract_suite(&q, "local").await;
    q.shutdown().await;
    // Each successful job delivered exactly once.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|d| d.state == QueueState::Succeeded));
}

#[tokio::test]
async fn local_queue_respects_the_concurrency_limit_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let q = LocalQueue::open(local_cfg(dir.path(), script_worker(&log, "0.2"), 1)).unwrap();
    let (hook, seen) = recording_hook();
    q.start(hook).await.unwrap();
    for id in ["job-1", "fail-2", "job-3"] {
        q.submit(&common::infer_spec(id)).await.unwrap();
    }
    // Submitting an id again queues nothing more.
    q.submit(&common::infer_spec("job-1")).await.unwrap();
    for id in ["job-1", "job-3"] {
        assert_eq!(wait_terminal(&q, id).await, QueueState::Succeeded);
    }
    let failed = wait_terminal(&q, "fail-2").await;
    assert_eq!(
        failed,
        QueueState::Failed { reason: "worker exited with code 40".into(), exit_code: Some(40) }
    );
    q.shutdown().await;
    // With one slot, runs never overlap: start/end strictly alternate, in submit order.
    let lines = log_lines(&log);
    let expected: Vec<String> = ["job-1", "fail-2", "job-3"]
        .iter()
        .flat_map(|id| [format!("start {id}"), format!("end {id}")])
        .collect();
    assert_eq!(lines, expected);
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn local_queue_restart_loses_no_job_and_runs_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let cfg = local_cfg(dir.path(), script_worker(&log, "0.05"), 1);

    // First life: one job finishes, two more are queued but never started.
    {
        let q = LocalQueue::open(cfg.clone()).unwrap();
        let (hook, _seen) = recording_hook();
        q.start(hook).await.unwrap();
        q.submit(&common::infer_spec("done-1")).await.unwrap();
        assert_eq!(wait_terminal(&q, "done-1").await, QueueState::Succeeded);
        q.shutdown().await;
        q.submit(&common::infer_spec("later-2")).await.unwrap();
        q.submit(&common::infer_spec("later-3")).await.unwrap();
    }
    // Second life: the queued jobs run, the finished one does not run again.
    let q = LocalQueue::open(cfg).unwrap();
    assert_eq!(q.state("done-1").await.unwrap(), QueueState::Succeeded);
    assert_eq!(q.state("later-2").await.unwrap(), QueueState::Queued);
    let (hook, seen) = recording_hook();
    q.start(hook).await.unwrap();
    assert_eq!(wait_terminal(&q, "later-2").await, QueueState::Succeeded);
    assert_eq!(wait_terminal(&q, "later-3").await, QueueState::Succeeded);
    q.shutdown().await;
    let starts: Vec<String> =
        log_lines(&log).into_iter().filter(|l| l.starts_with("start")).collect();
    assert_eq!(starts, ["start done-1", "start later-2", "start later-3"]);
    // The second life delivered only its own two completions.
    let ids: Vec<String> = seen.lock().unwrap().iter().map(|d| d.job_id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"later-2".to_string()) && ids.contains(&"later-3".to_string()));
}

#[tokio::test]
async fn local_queue_requeues_an_interrupted_job_and_redelivers_unacknowledged_completions() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let slow = local_cfg(dir.path(), script_worker(&log, "30"), 1);
    // First life: "slow-1" is running when the server shuts down.
    {
        let q = LocalQueue::open(slow.clone()).unwrap();
        let (hook, _) = recording_hook();
        q.start(hook).await.unwrap();
        q.submit(&common::infer_spec("slow-1")).await.unwrap();
        for _ in 0..100 {
            if q.state("slow-1").await.unwrap() == QueueState::Running
                && !log_lines(&log).is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        q.shutdown().await;
        assert_eq!(q.state("slow-1").await.unwrap(), QueueState::Queued);
    }
    // Second life (a fast worker): it resumes the job; its hook never acknowledges.
    let fast = LocalQueueConfig { worker: script_worker(&log, "0.01"), ..slow };
    {
        let q = LocalQueue::open(fast.clone()).unwrap();
        let stuck: CompletionHook = Arc::new(|_d| Box::pin(futures::future::pending()));
        q.start(stuck).await.unwrap();
        assert_eq!(wait_terminal(&q, "slow-1").await, QueueState::Succeeded);
        q.shutdown().await;
    }
    // Third life: the unacknowledged completion is delivered again, the job does not rerun.
    let q = LocalQueue::open(fast).unwrap();
    let (hook, seen) = recording_hook();
    q.start(hook).await.unwrap();
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    q.shutdown().await;
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [JobDone { job_id: "slow-1".into(), state: QueueState::Succeeded }]
    );
    let starts = log_lines(&log).into_iter().filter(|l| l.starts_with("start")).count();
    assert_eq!(starts, 2, "the interrupted run and its resumption, nothing more");
}

fn starts_of(log: &Path, id: &str) -> usize {
    log_lines(log).iter().filter(|l| **l == format!("start {id}")).count()
}

#[tokio::test]
async fn local_queue_retries_a_crashing_job_a_bounded_number_of_times_but_never_a_buyer_input_failure()
 {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let q = LocalQueue::open(local_cfg(dir.path(), script_worker(&log, "0.01"), 1)).unwrap();
    let (hook, seen) = recording_hook();
    q.start(hook).await.unwrap();
    q.submit(&common::infer_spec("crash-1")).await.unwrap();
    q.submit(&common::infer_spec("fail-2")).await.unwrap();
    // Killed by a signal every time (a poison job): three attempts, then failed with a reason.
    match wait_terminal(&q, "crash-1").await {
        QueueState::Failed { reason, exit_code: None } => {
            assert!(reason.contains("3 attempts"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The buyer's bad dataset (exit 40) fails the same way every time: run once.
    assert_eq!(
        wait_terminal(&q, "fail-2").await,
        QueueState::Failed { reason: "worker exited with code 40".into(), exit_code: Some(40) }
    );
    q.shutdown().await;
    assert_eq!(starts_of(&log, "crash-1"), 3);
    assert_eq!(starts_of(&log, "fail-2"), 1);
    // Each delivered once, at the end, not per attempt.
    let ids: Vec<String> = seen.lock().unwrap().iter().map(|d| d.job_id.clone()).collect();
    assert_eq!(ids, ["crash-1", "fail-2"]);
}

#[tokio::test]
async fn local_queue_kills_a_job_past_its_paid_wall_clock_budget() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let q = LocalQueue::open(local_cfg(dir.path(), script_worker(&log, "20"), 1)).unwrap();
    let (hook, seen) = recording_hook();
    q.start(hook).await.unwrap();
    let mut spec = common::infer_spec("slow-1");
    spec.budget = Some(posthuman_types::Budget {
        tokens: 1000,
        flops: 1_000_000,
        checkpoint_bytes: 0,
        max_seconds: 1,
    });
    let t0 = std::time::Instant::now();
    q.submit(&spec).await.unwrap();
    match wait_terminal(&q, "slow-1").await {
        QueueState::Failed { reason, exit_code } => {
            assert_eq!(exit_code, Some(posthuman_types::exit::WALL_CLOCK_EXCEEDED));
            assert!(reason.contains("exceeded its paid wall-clock budget of 1 s"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    q.shutdown().await;
    // Killed, not retried (the same spec would only time out again), delivered once.
    assert_eq!(starts_of(&log, "slow-1"), 1);
    assert!(!log_lines(&log).contains(&"end slow-1".to_string()));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

// ---------------------------------------------------------------- completion delivery

/// A hook that fails with a retryable error while `down` is set (the chain or store out),
/// counting calls per job, and records what it delivered once it lands.
fn flaky_hook(down: Arc<std::sync::atomic::AtomicBool>) -> (CompletionHook, Seen, Arc<Mutex<u32>>) {
    let seen: Seen = Arc::default();
    let calls = Arc::new(Mutex::new(0u32));
    let (s, c) = (seen.clone(), calls.clone());
    let hook: CompletionHook = Arc::new(move |d: JobDone| {
        let (s, c, down) = (s.clone(), c.clone(), down.clone());
        Box::pin(async move {
            if d.job_id.starts_with("flaky") {
                *c.lock().unwrap() += 1;
                if down.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(DeliveryError::Retry("chain RPC unavailable".into()));
                }
            }
            s.lock().unwrap().push(d);
            Ok(())
        })
    });
    (hook, seen, calls)
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn local_queue_retries_a_failing_completion_until_it_lands_even_across_a_restart() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let cfg = local_cfg(dir.path(), script_worker(&log, "0.01"), 1);
    let fast = DeliveryBackoff { first: Duration::from_millis(5), max: Duration::from_millis(20) };
    let down = Arc::new(AtomicBool::new(true));

    // First life: the hook fails more often than the old give-up (60 tries), and meanwhile
    // the only slot still runs other jobs.
    {
        let q = LocalQueue::open(cfg.clone()).unwrap();
        let (hook, seen, calls) = flaky_hook(down.clone());
        q.start_with_backoff(hook, fast).await.unwrap();
        q.submit(&common::infer_spec("flaky-1")).await.unwrap();
        assert_eq!(wait_terminal(&q, "flaky-1").await, QueueState::Succeeded);
        q.submit(&common::infer_spec("other-2")).await.unwrap();
        assert_eq!(wait_terminal(&q, "other-2").await, QueueState::Succeeded);
        wait_until("the hook failed 70 times", || *calls.lock().unwrap() >= 70).await;
        wait_until("other-2 was delivered", || seen.lock().unwrap().len() == 1).await;
        assert_eq!(q.undelivered().await.unwrap(), ["flaky-1"]);
        // Shutdown is not held up by a delivery that keeps failing.
        tokio::time::timeout(Duration::from_secs(5), q.shutdown()).await.unwrap();
    }
    // Second life: still down at first, then the chain comes back: it lands, once.
    {
        let q = LocalQueue::open(cfg.clone()).unwrap();
        assert_eq!(q.undelivered().await.unwrap(), ["flaky-1"]);
        let (hook, seen, calls) = flaky_hook(down.clone());
        q.start_with_backoff(hook, fast).await.unwrap();
        wait_until("the hook was retried", || *calls.lock().unwrap() >= 3).await;
        assert!(seen.lock().unwrap().is_empty());
        down.store(false, Ordering::SeqCst);
        wait_until("flaky-1 was delivered", || !seen.lock().unwrap().is_empty()).await;
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [JobDone { job_id: "flaky-1".into(), state: QueueState::Succeeded }]
        );
        for _ in 0..50 {
            if q.undelivered().await.unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(q.undelivered().await.unwrap().is_empty());
        q.shutdown().await;
    }
    // Third life: nothing left to deliver, and no job ran twice.
    let q = LocalQueue::open(cfg).unwrap();
    assert!(q.undelivered().await.unwrap().is_empty());
    assert_eq!(starts_of(&log, "flaky-1"), 1);
}

#[tokio::test]
async fn local_queue_acknowledges_a_completion_that_can_never_be_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let cfg = local_cfg(dir.path(), script_worker(&log, "0.01"), 1);
    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    let hook: CompletionHook = Arc::new(move |_d| {
        let c = c.clone();
        Box::pin(async move {
            *c.lock().unwrap() += 1;
            Err(DeliveryError::Rejected("completion for an unknown job".into()))
        })
    });
    let q = LocalQueue::open(cfg).unwrap();
    q.start_with_backoff(
        hook,
        DeliveryBackoff { first: Duration::from_millis(5), max: Duration::from_millis(5) },
    )
    .await
    .unwrap();
    q.submit(&common::infer_spec("orphan-1")).await.unwrap();
    assert_eq!(wait_terminal(&q, "orphan-1").await, QueueState::Succeeded);
    for _ in 0..100 {
        if q.undelivered().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(q.undelivered().await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    q.shutdown().await;
    // Logged and acknowledged once, not retried.
    assert_eq!(*calls.lock().unwrap(), 1);
}

// ---------------------------------------------------------------- AWS Batch on moto

async fn moto_batch(endpoint: &str) -> BatchQueue {
    use aws_sdk_batch::types::{
        CeState, CeType, ComputeEnvironmentOrder, ContainerProperties, JobDefinitionType, JqState,
        ResourceRequirement, ResourceType,
    };
    // Jobs go straight to SUCCEEDED without Docker.
    let (host, port) = endpoint.trim_start_matches("http://").split_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    post(
        host,
        port,
        "/moto-api/config",
        "application/json",
        "",
        r#"{"batch":{"use_docker":false}}"#,
    )
    .await;
    // moto checks that the service role exists in its IAM; the credential scope routes this
    // query-API call to IAM (moto does not verify signatures).
    let role = common::unique("batch-service");
    let auth = "Authorization: AWS4-HMAC-SHA256 Credential=test/20261125/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00\r\n";
    let form = format!(
        "Action=CreateRole&Version=2010-05-08&RoleName={role}&AssumeRolePolicyDocument=%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D"
    );
    post(host, port, "/", "application/x-www-form-urlencoded", auth, &form).await;

    let creds = aws_sdk_batch::config::Credentials::new("test", "test", None, None, "test");
    let conf = aws_sdk_batch::Config::builder()
        .behavior_version(aws_sdk_batch::config::BehaviorVersion::latest())
        .region(aws_sdk_batch::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    let client = aws_sdk_batch::Client::from_conf(conf);
    let name = common::unique("posthuman");
    let ce = client
        .create_compute_environment()
        .compute_environment_name(&name)
        .r#type(CeType::Unmanaged)
        .state(CeState::Enabled)
        .service_role(format!("arn:aws:iam::123456789012:role/{role}"))
        .send()
        .await
        .unwrap();
    client
        .create_job_queue()
        .job_queue_name(&name)
        .state(JqState::Enabled)
        .priority(1)
        .compute_environment_order(
            ComputeEnvironmentOrder::builder()
                .order(1)
                .compute_environment(ce.compute_environment_arn().unwrap())
                .build(),
        )
        .send()
        .await
        .unwrap();
    client
        .register_job_definition()
        .job_definition_name(&name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("posthuman-worker:test")
                .resource_requirements(
                    ResourceRequirement::builder().r#type(ResourceType::Vcpu).value("1").build(),
                )
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Memory)
                        .value("512")
                        .build(),
                )
                .command("run")
                .command("--spec")
                .command("Ref::spec_key")
                .build(),
        )
        .send()
        .await
        .unwrap();
    BatchQueue::with_client(
        client,
        BatchQueueConfig {
            job_queue: name.clone(),
            job_definition: name,
            region: "us-east-1".into(),
            endpoint_url: Some(endpoint.to_string()),
        },
    )
}

/// A bare HTTP/1.1 POST (moto's control and IAM APIs), to avoid a client dependency.
async fn post(host: &str, port: u16, path: &str, ctype: &str, extra_headers: &str, body: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((host, port)).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 2") || resp.starts_with("HTTP/1.0 2"), "{resp}");
}

#[tokio::test]
async fn batch_queue_passes_the_contract_on_moto() {
    let Some(endpoint) =
        common::twin_endpoint("POSTHUMAN_MOTO_ENDPOINT", "batch_queue_passes_the_contract_on_moto")
    else {
        return;
    };
    let q = moto_batch(&endpoint).await;
    contract_suite(&q, "batch").await;
}

#[test]
fn batch_state_change_events_become_completions() {
    use posthuman_functions::queue::batch::job_done_from_event;
    let ok: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/batch_succeeded.json")).unwrap();
    assert_eq!(
        job_done_from_event(&ok).unwrap(),
        Some(JobDone { job_id: "j-0123456789abcdef".into(), state: QueueState::Succeeded })
    );
    let failed: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/batch_failed.json")).unwrap();
    assert_eq!(
        job_done_from_event(&failed).unwrap(),
        Some(JobDone {
            job_id: "j-0123456789abcdef".into(),
            state: QueueState::Failed {
                reason: "Essential container in task exited".into(),
                exit_code: Some(3)
            }
        })
    );
    // Batch killed the attempt at `timeout.attemptDurationSeconds` (the paid wall-clock
    // budget): the same code as the local queue's kill, so completion treats both alike.
    let mut timed_out = failed.clone();
    timed_out["detail"]["statusReason"] = "Job attempt duration exceeded timeout".into();
    timed_out["detail"]["container"]["exitCode"] = serde_json::Value::Null;
    match job_done_from_event(&timed_out).unwrap().unwrap().state {
        QueueState::Failed { exit_code, reason } => {
            assert_eq!(exit_code, Some(posthuman_types::exit::WALL_CLOCK_EXCEEDED));
            assert!(reason.contains("wall-clock budget"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let mut running = ok.clone();
    running["detail"]["status"] = "RUNNING".into();
    assert_eq!(job_done_from_event(&running).unwrap(), None);
    assert!(job_done_from_event(&serde_json::json!({"hello": 1})).is_err());
}
