//! The local job queue: the batch worker as child processes, state in SQLite.
//!
//! Each job is one row (`queued` → `running` → `succeeded` | `failed`) in a SQLite database
//! in the data dir. A dispatcher task starts queued jobs while a semaphore has free slots
//! (the concurrency limit), runs `WORKER run --spec FILE --store ROOT`, and records the exit
//! status. Completion goes to the [`CompletionHook`]; the row is marked `delivered` only after
//! the hook succeeded, so a crash in between redelivers it on the next start (the hook is
//! idempotent by contract).
//!
//! Delivery: a hook that fails with [`DeliveryError::Retry`] (the chain or the store out) is
//! called again after a capped exponential backoff ([`DeliveryBackoff`], 1 s doubling to
//! 5 min by default) for as long as it takes: a completion is never dropped because an
//! outage lasted long. Each delivery is its own task, after the job's slot was freed, so a
//! failing hook holds back neither other jobs nor shutdown; shutdown ends the waiting and the
//! undelivered row is redelivered on the next start. A [`DeliveryError::Rejected`]
//! completion can never land (it names no known job): it is logged and acknowledged.
//!
//! Retries: a failure is classified by [`posthuman_types::exit::classify`]. One caused by the
//! buyer's input (a bad dataset, a hyperparameter out of range) fails the same way every time,
//! so it is never retried; neither is a run past the paid wall-clock budget. Anything else (a
//! crash, a signal, the store down) is retried until [`LocalQueueConfig::max_attempts`] runs
//! have failed, then the job fails with the last reason and the attempt count: a poison job
//! neither runs forever nor blocks a slot. Only the final outcome is delivered.
//!
//! Wall-clock budget: a spec with `budget.max_seconds` is killed when one run passes it and
//! fails with [`posthuman_types::exit::WALL_CLOCK_EXCEEDED`] (the operator quoted that budget,
//! so the completion releases the order).
//!
//! Restart semantics: a finished job is never started again and a queued one is started once
//! it gets a slot. A job that was `running` when the server stopped was interrupted (children
//! are killed on shutdown, and by the kernel via `PR_SET_PDEATHSIG` if the server crashes), so
//! it goes back to `queued` and runs to completion later; the worker resumes from its last
//! checkpoint. No job ever has two live processes.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use posthuman_types::JobSpec;
use posthuman_types::exit::{self, FailureClass};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{Notify, Semaphore, watch};

use super::{CompletionHook, DeliveryError, JobDone, JobQueue, QueueError, QueueState};

/// The worker program and any leading arguments; the queue appends
/// `run --spec <file> --store <root>`.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Where the local queue keeps its state and how it runs jobs.
#[derive(Clone, Debug)]
pub struct LocalQueueConfig {
    /// The SQLite database file.
    pub db_path: PathBuf,
    /// Spec files and worker logs (private: logs are never served).
    pub work_dir: PathBuf,
    /// Root directory of the `LocalStore` the worker reads and writes.
    pub store_root: PathBuf,
    pub worker: WorkerCommand,
    /// Jobs running at once (≥ 1).
    pub concurrency: usize,
    /// Runs of one job before a retryable failure is final (≥ 1; see the module docs).
    pub max_attempts: u32,
}

/// The attempt bound the embedded server uses: a transient failure gets two more runs.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// How long to wait between deliveries of a completion whose hook failed: `first`, doubling
/// after each failure, never more than `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryBackoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for DeliveryBackoff {
    /// 1 s doubling to 5 min: quick after a hiccup, a few calls an hour in a long outage.
    fn default() -> Self {
        DeliveryBackoff { first: Duration::from_secs(1), max: Duration::from_secs(300) }
    }
}

impl DeliveryBackoff {
    /// The wait after `failures` failed deliveries (≥ 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct LocalQueue {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: LocalQueueConfig,
    db: Arc<Mutex<Connection>>,
    wake: Notify,
    slots: Arc<Semaphore>,
    hook: OnceLock<(CompletionHook, DeliveryBackoff)>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalQueue").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> QueueError {
    QueueError::Backend(e.to_string())
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS jobs (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL UNIQUE,
    spec       TEXT NOT NULL,
    state      TEXT NOT NULL,
    reason     TEXT,
    exit_code  INTEGER,
    attempts   INTEGER NOT NULL DEFAULT 0,
    delivered  INTEGER NOT NULL DEFAULT 0
);";

impl LocalQueue {
    /// Opens (or creates) the queue state. Jobs interrupted by the previous run go back to
    /// `queued`. Nothing runs until [`LocalQueue::start`].
    pub fn open(cfg: LocalQueueConfig) -> Result<Self, QueueError> {
        if cfg.concurrency == 0 {
            return Err(QueueError::Backend("concurrency must be at least 1".into()));
        }
        if cfg.max_attempts == 0 {
            return Err(QueueError::Backend("max_attempts must be at least 1".into()));
        }
        std::fs::create_dir_all(cfg.work_dir.join("specs")).map_err(backend)?;
        std::fs::create_dir_all(cfg.work_dir.join("logs")).map_err(backend)?;
        let conn = Connection::open(&cfg.db_path).map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let requeued = conn
            .execute("UPDATE jobs SET state = 'queued' WHERE state = 'running'", [])
            .map_err(backend)?;
        if requeued > 0 {
            tracing::warn!(requeued, "jobs interrupted by the previous run go back to the queue");
        }
        let (stop, _) = watch::channel(false);
        Ok(LocalQueue {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(cfg.concurrency)),
                cfg,
                db: Arc::new(Mutex::new(conn)),
                wake: Notify::new(),
                hook: OnceLock::new(),
                stop,
            }),
        })
    }

    /// Starts dispatching with `hook` as the completion handler, and redelivers completions
    /// the previous run did not see acknowledged. Call once. A failing hook is retried with
    /// the default [`DeliveryBackoff`].
    pub async fn start(&self, hook: CompletionHook) -> Result<(), QueueError> {
        self.start_with_backoff(hook, DeliveryBackoff::default()).await
    }

    /// [`LocalQueue::start`] with another backoff between failed deliveries.
    pub async fn start_with_backoff(
        &self,
        hook: CompletionHook,
        backoff: DeliveryBackoff,
    ) -> Result<(), QueueError> {
        if self.inner.hook.set((hook, backoff)).is_err() {
            return Err(QueueError::Backend("local queue started twice".into()));
        }
        let pending: Vec<(String, QueueState)> = self
            .db(|c| {
                let mut st = c.prepare(
                    "SELECT job_id, state, reason, exit_code FROM jobs
                     WHERE state IN ('succeeded', 'failed') AND delivered = 0 ORDER BY seq",
                )?;
                let rows = st.query_map([], row_state)?;
                rows.collect()
            })
            .await?;
        for (job_id, state) in pending {
            let inner = self.inner.clone();
            tokio::spawn(async move { inner.deliver(JobDone { job_id, state }).await });
        }
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.dispatch_loop().await });
        Ok(())
    }

    /// Finished jobs whose completion has not been acknowledged yet (being delivered, or
    /// waiting for the next start), oldest first: an operator's view of a long outage.
    pub async fn undelivered(&self) -> Result<Vec<String>, QueueError> {
        self.db(|c| {
            let mut st = c.prepare(
                "SELECT job_id FROM jobs
                 WHERE state IN ('succeeded', 'failed') AND delivered = 0 ORDER BY seq",
            )?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// Stops dispatching, kills running workers (their jobs go back to `queued`, to resume on
    /// the next start) and waits until every job task has recorded its state.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let n = self.inner.cfg.concurrency as u32;
        let _ = self.inner.slots.acquire_many(n).await;
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, QueueError> {
        self.inner.db(f).await
    }
}

fn row_state(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, QueueState)> {
    let job_id: String = r.get(0)?;
    let state: String = r.get(1)?;
    let reason: Option<String> = r.get(2)?;
    let exit_code: Option<i32> = r.get(3)?;
    Ok((job_id, decode_state(&state, reason, exit_code)))
}

fn decode_state(state: &str, reason: Option<String>, exit_code: Option<i32>) -> QueueState {
    match state {
        "queued" => QueueState::Queued,
        "running" => QueueState::Running,
        "succeeded" => QueueState::Succeeded,
        _ => QueueState::Failed { reason: reason.unwrap_or_default(), exit_code },
    }
}

impl Inner {
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, QueueError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let conn = db.lock().map_err(|_| backend("queue database lock poisoned"))?;
            f(&conn).map_err(backend)
        })
        .await
        .map_err(backend)?
    }

    async fn dispatch_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            if *stop.borrow() {
                return;
            }
            // Wait for a free slot before picking a job, so a job is claimed only when it can run.
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stop.changed() => return,
            };
            match self.claim_next().await {
                Ok(Some((job_id, spec, attempt))) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let done = me.run_job(job_id, spec, attempt).await;
                        // Free the slot before the hook runs: delivery may be slow (chain
                        // transactions) and must not hold back other jobs or shutdown.
                        drop(permit);
                        if let Some(done) = done {
                            me.deliver(done).await;
                        }
                    });
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::error!(error = %e, "local queue: cannot read its state");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Atomically moves the oldest queued job to `running`; its spec and which attempt this is.
    async fn claim_next(&self) -> Result<Option<(String, String, u32)>, QueueError> {
        self.db(|c| {
            let next: Option<(String, String, u32)> = c
                .query_row(
                    "SELECT job_id, spec, attempts + 1 FROM jobs WHERE state = 'queued'
                     ORDER BY seq LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            if let Some((id, _, _)) = &next {
                c.execute(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1 WHERE job_id = ?1",
                    params![id],
                )?;
            }
            Ok(next)
        })
        .await
    }

    /// Runs one claimed job (its `attempt`-th run) and records its end; the completion to
    /// deliver, if it ended (not when it was interrupted or goes back for another attempt).
    async fn run_job(&self, job_id: String, spec: String, attempt: u32) -> Option<JobDone> {
        let outcome = self.spawn_and_wait(&job_id, &spec).await;
        let state = match outcome {
            Ok(Some(state)) => state,
            // Interrupted by shutdown: back to the queue, resumed on the next start. The run
            // was not the job's fault, so it does not count as an attempt.
            Ok(None) => {
                self.requeue(&job_id, "attempts = attempts - 1").await;
                return None;
            }
            Err(e) => QueueState::Failed {
                reason: format!("worker could not start: {e}"),
                exit_code: None,
            },
        };
        let state = match state {
            QueueState::Failed { reason, exit_code } => {
                let retryable = exit::classify(exit_code) == FailureClass::Retryable;
                if retryable && attempt < self.cfg.max_attempts {
                    tracing::warn!(%job_id, attempt, %reason, "job failed; running it again");
                    self.requeue(&job_id, "attempts = attempts").await;
                    self.wake.notify_one();
                    return None;
                }
                let reason = if retryable {
                    format!("{reason} (gave up after {attempt} attempts)")
                } else {
                    reason
                };
                QueueState::Failed { reason, exit_code }
            }
            other => other,
        };
        let (name, reason, code) = match &state {
            QueueState::Succeeded => ("succeeded", None, None),
            QueueState::Failed { reason, exit_code } => {
                ("failed", Some(reason.clone()), *exit_code)
            }
            _ => ("failed", Some("worker ended in an unknown state".to_string()), None),
        };
        let id = job_id.clone();
        let r = self
            .db(move |c| {
                c.execute(
                    "UPDATE jobs SET state = ?2, reason = ?3, exit_code = ?4 WHERE job_id = ?1",
                    params![id, name, reason, code],
                )
            })
            .await;
        if let Err(e) = r {
            tracing::error!(%job_id, error = %e, "cannot record job completion");
            return None;
        }
        Some(JobDone { job_id, state })
    }

    /// Puts a claimed job back in the queue, applying `attempts_update` (an SQL assignment).
    async fn requeue(&self, job_id: &str, attempts_update: &'static str) {
        let id = job_id.to_string();
        let r = self
            .db(move |c| {
                c.execute(
                    &format!(
                        "UPDATE jobs SET state = 'queued', {attempts_update} WHERE job_id = ?1"
                    ),
                    params![id],
                )
            })
            .await;
        if let Err(e) = r {
            tracing::error!(%job_id, error = %e, "cannot requeue a job");
        }
    }

    /// Runs the worker; `Ok(None)` when it was stopped by shutdown. A run past the spec's
    /// paid wall-clock budget is killed and fails with [`exit::WALL_CLOCK_EXCEEDED`].
    async fn spawn_and_wait(
        &self,
        job_id: &str,
        spec: &str,
    ) -> Result<Option<QueueState>, std::io::Error> {
        let spec_path = self.cfg.work_dir.join("specs").join(format!("{job_id}.json"));
        tokio::fs::write(&spec_path, spec).await?;
        let log_path = self.cfg.work_dir.join("logs").join(format!("{job_id}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut cmd = tokio::process::Command::new(&self.cfg.worker.program);
        cmd.args(&self.cfg.worker.args)
            .arg("run")
            .arg("--spec")
            .arg(&spec_path)
            .arg("--store")
            .arg(&self.cfg.store_root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        // The spec was validated and serialized by `submit`; an unparsable one has no budget
        // to enforce, and the worker refuses it anyway.
        let budget_s = serde_json::from_str::<JobSpec>(spec)
            .ok()
            .and_then(|s| s.budget)
            .map(|b| b.max_seconds);
        let over_budget = async {
            match budget_s {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        let mut child = cmd.spawn()?;
        let mut stop = self.stop.subscribe();
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                Ok(Some(if status.success() {
                    QueueState::Succeeded
                } else {
                    let reason = match status.code() {
                        Some(c) => format!("worker exited with code {c}"),
                        None => "worker was killed by a signal".to_string(),
                    };
                    QueueState::Failed { reason, exit_code: status.code() }
                }))
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                let _ = child.kill().await;
                Ok(None)
            }
            _ = over_budget => {
                let _ = child.kill().await;
                let s = budget_s.unwrap_or_default();
                tracing::warn!(%job_id, budget_s = s, "job exceeded its wall-clock budget; killed");
                Ok(Some(QueueState::Failed {
                    reason: format!("the job exceeded its paid wall-clock budget of {s} s and was stopped"),
                    exit_code: Some(exit::WALL_CLOCK_EXCEEDED),
                }))
            }
        }
    }

    /// Calls the hook until it succeeds or rejects the completion, then acknowledges it;
    /// returns early (unacknowledged, redelivered on the next start) on shutdown.
    async fn deliver(&self, done: JobDone) {
        let Some((hook, backoff)) = self.hook.get() else { return };
        let mut stop = self.stop.subscribe();
        let job_id = done.job_id.clone();
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            // A call in flight is not cancelled by shutdown: the hook may be between two
            // chain transactions, and it resumes cleanly only from a step boundary.
            match hook(done.clone()).await {
                Ok(()) => break,
                Err(DeliveryError::Rejected(reason)) => {
                    tracing::error!(%job_id, %reason, "job completion can never be delivered; acknowledged");
                    break;
                }
                Err(DeliveryError::Retry(reason)) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff.delay(failures);
                    tracing::warn!(%job_id, failures, retry_in = ?wait, %reason, "job completion failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
        let r = self
            .db(move |c| {
                c.execute("UPDATE jobs SET delivered = 1 WHERE job_id = ?1", params![job_id])
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot acknowledge a job completion");
        }
    }
}

/// Makes the kernel kill the worker if the server dies without a clean shutdown, so a restart
/// never finds a stray worker still writing a job it is about to resume.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut tokio::process::Command) {}

#[async_trait::async_trait]
impl JobQueue for LocalQueue {
    async fn submit(&self, spec: &JobSpec) -> Result<String, QueueError> {
        spec.validate()?;
        let json = serde_json::to_string(spec).map_err(backend)?;
        let id = spec.job_id.clone();
        self.db(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO jobs (job_id, spec, state) VALUES (?1, ?2, 'queued')",
                params![id, json],
            )
        })
        .await?;
        self.inner.wake.notify_one();
        Ok(spec.job_id.clone())
    }

    async fn state(&self, queue_ref: &str) -> Result<QueueState, QueueError> {
        let id = queue_ref.to_string();
        let row = self
            .db(move |c| {
                c.query_row(
                    "SELECT job_id, state, reason, exit_code FROM jobs WHERE job_id = ?1",
                    params![id],
                    row_state,
                )
                .optional()
            })
            .await?;
        row.map(|(_, s)| s).ok_or_else(|| QueueError::NotFound(queue_ref.to_string()))
    }

    /// The local reference is the job id itself.
    async fn find(&self, job_id: &str) -> Result<Option<String>, QueueError> {
        let id = job_id.to_string();
        self.db(move |c| {
            c.query_row("SELECT job_id FROM jobs WHERE job_id = ?1", params![id], |r| r.get(0))
                .optional()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivery_backoff_doubles_from_its_first_wait_up_to_its_cap() {
        let b = DeliveryBackoff::default();
        let secs: Vec<u64> = (1..=12).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
        assert_eq!(b.delay(0), Duration::from_secs(1));
    }
}
