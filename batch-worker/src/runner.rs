//! The job runner: parse and re-validate the spec (the queue is a trust boundary), dispatch
//! by kind, and on failure write `<public_prefix>/error.json` with the class, exit code and
//! one sanitized sentence.

use bytes::Bytes;
use posthuman_store::{ObjectStore, StoreError};
use posthuman_types::job::validate_key;
use posthuman_types::{Completion, EvalReport, JobParams, JobSpec, TrainMetrics};

use crate::config::WorkerConfig;
use crate::error::{ErrorReport, WorkerError};
use crate::model_io::join;
use crate::{evaluate, infer, train};

/// Largest job spec accepted.
pub const MAX_SPEC_BYTES: u64 = 1024 * 1024;
pub const ERROR: &str = "error.json";

/// What a successful run produced (the same values were written to the store).
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Trained(TrainMetrics),
    /// Stopped after a checkpoint on request; running the same spec again resumes.
    Interrupted {
        step: u32,
    },
    Inferred(Vec<Completion>),
    Evaluated(EvalReport),
}

/// Parses and validates a spec.
pub fn parse_spec(bytes: &[u8]) -> Result<JobSpec, WorkerError> {
    let spec: JobSpec = serde_json::from_slice(bytes).map_err(|e| {
        // serde's message names the field and position, never echoes the whole input.
        WorkerError::BadSpec(format!("not a valid job spec ({e})"))
    })?;
    spec.validate().map_err(WorkerError::from_spec)?;
    Ok(spec)
}

/// Reads the spec at `key` from the store.
pub async fn fetch_spec(store: &dyn ObjectStore, key: &str) -> Result<Vec<u8>, WorkerError> {
    match store.get(key, MAX_SPEC_BYTES).await {
        Ok(b) => Ok(b.to_vec()),
        Err(StoreError::NotFound { .. }) => {
            Err(WorkerError::BadSpec("the job spec does not exist".into()))
        }
        Err(StoreError::TooLarge { .. }) | Err(StoreError::InvalidKey { .. }) => {
            Err(WorkerError::BadSpec("the job spec key or size is invalid".into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs an already validated spec.
pub async fn run_spec(
    store: &dyn ObjectStore,
    wc: &WorkerConfig,
    spec: &JobSpec,
) -> Result<JobOutcome, WorkerError> {
    // An error report from an earlier attempt must not outlive a retry.
    store.delete(&join(&spec.public_prefix, ERROR)).await?;
    match &spec.params {
        JobParams::Train(p) => Ok(match train::run(store, wc, spec, p).await? {
            train::TrainOutcome::Done(m) => JobOutcome::Trained(*m),
            train::TrainOutcome::Stopped { step } => JobOutcome::Interrupted { step },
        }),
        JobParams::Infer(p) => Ok(JobOutcome::Inferred(infer::run(store, wc, spec, p).await?)),
        JobParams::Evaluate(p) => {
            Ok(JobOutcome::Evaluated(evaluate::run(store, wc, spec, p).await?))
        }
    }
}

/// Parses, validates and runs a spec. Once the spec parses and its public prefix is a valid
/// key, any failure (validation included) is also recorded as `<public_prefix>/error.json`.
/// Returns the outcome or the error (for the exit code).
pub async fn run_job(
    store: &dyn ObjectStore,
    wc: &WorkerConfig,
    spec_bytes: &[u8],
) -> Result<JobOutcome, WorkerError> {
    let spec: JobSpec = serde_json::from_slice(spec_bytes)
        .map_err(|e| WorkerError::BadSpec(format!("not a valid job spec ({e})")))?;
    let public_ok = validate_key("public_prefix", &spec.public_prefix).is_ok();
    let result = match spec.validate() {
        Ok(()) => run_spec(store, wc, &spec).await,
        Err(e) => Err(WorkerError::from_spec(e)),
    };
    if let (Err(e), true) = (&result, public_ok) {
        tracing::error!(class = e.class(), error = %e, "job failed");
        let report = ErrorReport::from(e);
        match serde_json::to_vec_pretty(&report) {
            Ok(body) => {
                if let Err(we) =
                    store.put(&join(&spec.public_prefix, ERROR), Bytes::from(body)).await
                {
                    tracing::error!(error = %we, "could not write error.json");
                }
            }
            Err(se) => tracing::error!(error = %se, "could not serialise error.json"),
        }
    }
    result
}
