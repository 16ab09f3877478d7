//! The job-queue boundary: hand a [`JobSpec`] to something that runs the batch worker.
//!
//! One narrow trait, [`JobQueue`], with two implementations that pass the same contract
//! suite (`tests/queue_contract.rs`):
//! - [`local::LocalQueue`]: runs the worker as child processes on this machine, with a
//!   concurrency limit and its state in SQLite, so a restart of the dev server loses no job
//!   and never runs a finished one again. Completion is delivered through a
//!   [`CompletionHook`] (the local twin of EventBridge → the on-job-done Lambda).
//! - [`batch::BatchQueue`]: AWS Batch `SubmitJob` / `DescribeJobs`. Completion arrives as a
//!   Batch state-change event handled by the `posthuman-job-done` Lambda.
//!
//! Both expect the spec to be readable by the worker at [`spec_key`] in the object store
//! (the handlers write it there before submitting), so the queue carries only the job id.

pub mod batch;
pub mod local;

use std::fmt::Debug;
use std::sync::Arc;

use futures::future::BoxFuture;
use posthuman_types::{JobSpec, SpecError};
use serde::{Deserialize, Serialize};

pub use batch::{BatchQueue, BatchQueueConfig};
pub use local::{
    DEFAULT_MAX_ATTEMPTS, DeliveryBackoff, LocalQueue, LocalQueueConfig, WorkerCommand,
};

/// Where the handlers put a job's spec for the worker to read.
pub fn spec_key(job_id: &str) -> String {
    format!("jobs/{job_id}/spec.json")
}

/// What the queue knows about a job it was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum QueueState {
    /// Accepted, waiting for a slot.
    Queued,
    /// The worker is running (or being started).
    Running,
    /// The worker exited successfully.
    Succeeded,
    /// The worker failed; `reason` is the queue's sentence (exit code, Batch status reason).
    /// The worker's own explanation is in the job's public `error.json`.
    Failed { reason: String, exit_code: Option<i32> },
}

impl QueueState {
    pub fn is_terminal(&self) -> bool {
        matches!(self, QueueState::Succeeded | QueueState::Failed { .. })
    }
}

/// A finished job, as delivered to the completion handler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDone {
    pub job_id: String,
    /// Always terminal.
    pub state: QueueState,
}

/// Called once per finished job (at least once: again after a crash before it returned, so
/// it must be idempotent). `Ok` is the acknowledgement; an error says whether the same
/// completion can land later ([`DeliveryError`]).
pub type CompletionHook =
    Arc<dyn Fn(JobDone) -> BoxFuture<'static, Result<(), DeliveryError>> + Send + Sync>;

/// Why a completion was not delivered, and so what the queue does with it.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Transient (the chain, store or catalogue unavailable, a bug an operator can fix):
    /// deliver it again later, with backoff, for as long as it takes.
    #[error("completion not delivered yet: {0}")]
    Retry(String),
    /// The completion can never land (it names no job this deployment knows, it is
    /// malformed): log and acknowledge it, so it does not retry for ever.
    #[error("completion rejected: {0}")]
    Rejected(String),
}

impl From<crate::error::ApiError> for DeliveryError {
    /// The completion handler's errors: a backend out or an internal failure (a reverted
    /// transaction, a store hiccup) may clear, so it is retried; anything the request itself
    /// is wrong about (unknown job, invalid state) would fail the same way every time.
    fn from(e: crate::error::ApiError) -> Self {
        use crate::error::ApiError as A;
        match e {
            A::Unavailable { .. } | A::Internal(_) | A::NotReady(_) => {
                DeliveryError::Retry(e.to_string())
            }
            other => DeliveryError::Rejected(other.to_string()),
        }
    }
}

/// Why the queue refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The spec breaks a bound; nothing was queued.
    #[error("invalid job spec: {0}")]
    InvalidSpec(#[from] SpecError),
    /// The queue does not know this job.
    #[error("no queued job {0}")]
    NotFound(String),
    /// Transient: the backend could not be reached; retry later.
    #[error("job queue unavailable: {0}")]
    Unavailable(String),
    /// Anything else (misconfiguration, a corrupt state database).
    #[error("job queue error: {0}")]
    Backend(String),
}

/// Runs batch-worker jobs.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync + Debug + 'static {
    /// Validates and queues `spec`, returning the queue's reference for it (the job id
    /// locally, the Batch job id on AWS). The caller queues a job id once (the order claim
    /// guarantees it); the local queue also ignores a repeated id.
    async fn submit(&self, spec: &JobSpec) -> Result<String, QueueError>;

    /// The state of a job by the reference `submit` returned.
    async fn state(&self, queue_ref: &str) -> Result<QueueState, QueueError>;

    /// The queue's reference for a job by our job id, if it was ever submitted: the sweeper
    /// ([`crate::sweep`]) asks before resubmitting a record that a crash left without one.
    async fn find(&self, job_id: &str) -> Result<Option<String>, QueueError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

    #[test]
    fn an_outage_or_a_bug_is_retried_and_a_wrong_request_is_rejected() {
        let retry = |e: ApiError| matches!(DeliveryError::from(e), DeliveryError::Retry(_));
        assert!(retry(ApiError::unavailable("chain RPC", "connection refused")));
        assert!(retry(ApiError::unavailable("catalogue", "locked")));
        assert!(retry(ApiError::Internal("transaction reverted".into())));
        assert!(!retry(ApiError::bad("completion with a malformed state")));
        assert!(!retry(ApiError::not_found("job j-1")));
    }
}
