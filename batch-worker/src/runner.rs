//! The job runner: parse and re-validate the spec (the queue is a trust boundary), dispatch
//! by kind, and on failure write `<public_prefix>/error.json` with the class, exit code and
//! one sanitized sentence.

use bytes::Bytes;
use posthuman_store::{ObjectStore, StoreError};
use posthuman_types::job::validate_key;
use posthuman_types::{Completion, EvalReport, Hash32, JobKind, JobParams, JobSpec, TrainMetrics};
use serde::{Deserialize, Serialize};

use crate::config::WorkerConfig;
use crate::data;
use crate::error::{ErrorReport, WorkerError};
use crate::model_io::{
    COMPLETE, CONFIG, MAX_CONFIG_BYTES, TOKENIZER, WEIGHTS, join, remove_written,
};
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

pub const RUN_INFO: &str = "run.json";

/// `<public_prefix>/run.json`, written last on success: what a receipt (issue 5) binds —
/// the worker build, the inputs' hashes, the output file's hash and the times. Hashes and
/// metadata only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub job_id: String,
    pub kind: JobKind,
    /// `posthuman-worker <version> (git <commit>; features <list>)`.
    pub worker_version: String,
    /// Canonical hash of the weights the job ran on.
    pub input_weights_hash: Hash32,
    #[serde(default)]
    pub dataset_hash: Option<Hash32>,
    /// Train only: the new weights, and the checkpoint Merkle root and interval.
    #[serde(default)]
    pub output_weights_hash: Option<Hash32>,
    #[serde(default)]
    pub checkpoint_root: Option<Hash32>,
    #[serde(default)]
    pub checkpoint_every: Option<u32>,
    /// The public result file (`metrics.json`, `completions.json` or `report.json`) and the
    /// SHA-256 of its exact bytes.
    pub output_file: String,
    pub output_hash: Hash32,
    /// Unix seconds.
    pub started_at: u64,
    pub ended_at: u64,
}

/// The worker's build identity for receipts.
pub fn worker_version() -> String {
    // The CPU product kernel changes a job's last bits (an audit replays on the same one).
    let kernel = posthuman_gpt2::ops::cpu_matmul_kernel();
    let features = if cfg!(feature = "cuda") {
        format!("cuda, cpu {kernel}")
    } else {
        format!("cpu {kernel}")
    };
    format!(
        "posthuman-worker {} (git {}; features {features})",
        env!("CARGO_PKG_VERSION"),
        env!("POSTHUMAN_GIT_COMMIT")
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Writes `run.json` for a finished job; on failure removes the job's outputs so that no
/// result exists without its run record.
async fn write_run_info(
    store: &dyn ObjectStore,
    spec: &JobSpec,
    outcome: &JobOutcome,
    input_weights_hash: Hash32,
    started_at: u64,
) -> Result<(), WorkerError> {
    let (file, dataset_hash, out_w, root, every) = match outcome {
        JobOutcome::Trained(m) => (
            train::METRICS,
            Some(m.dataset_hash),
            Some(m.output_weights_hash),
            Some(m.checkpoint_root),
            Some(m.checkpoint_every),
        ),
        JobOutcome::Inferred(_) => (infer::COMPLETIONS, None, None, None, None),
        JobOutcome::Evaluated(r) => (evaluate::REPORT, Some(r.dataset_hash), None, None, None),
        JobOutcome::Interrupted { .. } => return Ok(()),
    };
    let out_key = join(&spec.public_prefix, file);
    let mut written = vec![out_key.clone()];
    if matches!(outcome, JobOutcome::Trained(_)) {
        for f in [COMPLETE, CONFIG, WEIGHTS, TOKENIZER] {
            written.push(join(&spec.private_prefix, f));
        }
    }
    let result = async {
        let bytes = store.get(&out_key, u64::MAX).await?;
        let info = RunInfo {
            job_id: spec.job_id.clone(),
            kind: spec.params.kind(),
            worker_version: worker_version(),
            input_weights_hash,
            dataset_hash,
            output_weights_hash: out_w,
            checkpoint_root: root,
            checkpoint_every: every,
            output_file: file.to_string(),
            output_hash: data::dataset_hash(&bytes),
            started_at,
            ended_at: unix_now(),
        };
        let body = serde_json::to_vec_pretty(&info).map_err(WorkerError::internal)?;
        store.put(&join(&spec.public_prefix, RUN_INFO), Bytes::from(body)).await?;
        Ok::<(), WorkerError>(())
    }
    .await;
    if result.is_err() {
        remove_written(store, &written).await;
    }
    result
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

/// Refuses a spec that needs more than its fee paid for, before any work: the worker's own
/// estimate (the API's very formula, `posthuman_types::pricing::estimate`) from the real
/// `config.json` and the dataset's real length. A spec altered on its way through the queue,
/// or a dataset swapped in the store, cannot buy more compute than the buyer paid for.
async fn check_budget(
    store: &dyn ObjectStore,
    wc: &WorkerConfig,
    spec: &JobSpec,
    paid: &posthuman_types::Budget,
) -> Result<(), WorkerError> {
    let config = store.get(&join(&spec.model_prefix, CONFIG), MAX_CONFIG_BYTES).await.map_err(
        |e| match e {
            StoreError::NotFound { .. } => WorkerError::BadWeights("config.json is missing".into()),
            other => other.into(),
        },
    )?;
    let cfg = crate::model_io::parse_config(&config)?;
    let dataset_bytes = match &spec.dataset_key {
        Some(key) => {
            let size = store
                .head(key)
                .await?
                .ok_or_else(|| WorkerError::BadDataset("the dataset does not exist".into()))?;
            if size > wc.max_dataset_bytes {
                return Err(WorkerError::DatasetTooLarge { size, limit: wc.max_dataset_bytes });
            }
            size
        }
        None => 0,
    };
    let need = posthuman_types::pricing::estimate(&spec.params, &cfg.shape(), dataset_bytes)
        .map_err(WorkerError::from_spec)?;
    match need.exceeds(paid) {
        Some((field, need, paid)) => Err(WorkerError::OverBudget { field, need, paid }),
        None => Ok(()),
    }
}

/// Runs an already validated spec.
pub async fn run_spec(
    store: &dyn ObjectStore,
    wc: &WorkerConfig,
    spec: &JobSpec,
) -> Result<JobOutcome, WorkerError> {
    if wc.require_gpu && crate::device::compute().is_cpu() {
        return Err(WorkerError::NoGpu);
    }
    if let Some(paid) = &spec.budget {
        check_budget(store, wc, spec, paid).await?;
    }
    // An error report or run record from an earlier attempt must not outlive a retry.
    store.delete(&join(&spec.public_prefix, ERROR)).await?;
    store.delete(&join(&spec.public_prefix, RUN_INFO)).await?;
    let started_at = unix_now();
    let (outcome, input_hash) = match &spec.params {
        JobParams::Train(p) => match train::run(store, wc, spec, p).await? {
            train::TrainOutcome::Done(m) => {
                let h = m.input_weights_hash;
                (JobOutcome::Trained(*m), h)
            }
            train::TrainOutcome::Stopped { step } => {
                (JobOutcome::Interrupted { step }, Hash32::ZERO)
            }
        },
        JobParams::Infer(p) => {
            let (c, h) = infer::run(store, wc, spec, p).await?;
            (JobOutcome::Inferred(c), h)
        }
        JobParams::Evaluate(p) => {
            let r = evaluate::run(store, wc, spec, p).await?;
            let h = r.weights_hash;
            (JobOutcome::Evaluated(r), h)
        }
    };
    write_run_info(store, spec, &outcome, input_hash, started_at).await?;
    Ok(outcome)
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
