//! The AWS job queue: AWS Batch `SubmitJob` / `DescribeJobs`.
//!
//! The job definition (see `infra/`) runs `posthuman-worker run --spec Ref::spec_key --store
//! s3://BUCKET`; this queue passes the job id and the spec's object-store key as Batch
//! parameters, so no buyer-sized data travels through the Batch API. Batch jobs are named
//! after our job id, and completion comes back as an EventBridge "Batch Job State Change"
//! event, parsed by [`job_done_from_event`] in the `posthuman-job-done` Lambda.
//!
//! A spec's paid wall-clock budget (`budget.max_seconds`) becomes the job's
//! `timeout.attemptDurationSeconds` (Batch's minimum is 60 s); Batch kills an attempt past it,
//! and the state change is reported with [`exit::WALL_CLOCK_EXCEEDED`] like the local queue's
//! kill. Retries of other failures are the job definition's retry strategy (`infra/`, from
//! [`posthuman_types::exit`]).

use aws_sdk_batch::types::{
    ContainerOverrides, JobStatus, JobTimeout, KeyValuePair, KeyValuesPair,
};
use posthuman_types::JobSpec;
use posthuman_types::exit;
use serde::Deserialize;

use super::{JobDone, JobQueue, QueueError, QueueState, spec_key};

/// Which Batch queue and job definition to use, and where the API is.
#[derive(Clone, Debug)]
pub struct BatchQueueConfig {
    pub job_queue: String,
    pub job_definition: String,
    pub region: String,
    /// A non-AWS endpoint (moto in tests).
    pub endpoint_url: Option<String>,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct BatchQueue {
    client: aws_sdk_batch::Client,
    cfg: BatchQueueConfig,
}

impl BatchQueue {
    /// Builds a client from the ambient AWS configuration (env, profile, instance role).
    pub async fn new(cfg: BatchQueueConfig) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(cfg.region.clone()));
        if let Some(url) = &cfg.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        BatchQueue { client: aws_sdk_batch::Client::new(&shared), cfg }
    }

    /// Uses a ready client (tests pass static credentials for moto).
    pub fn with_client(client: aws_sdk_batch::Client, cfg: BatchQueueConfig) -> Self {
        BatchQueue { client, cfg }
    }
}

/// Batch refuses an attempt duration under 60 seconds.
const MIN_ATTEMPT_SECONDS: u64 = 60;

/// The `timeout.attemptDurationSeconds` for a spec: its paid wall-clock budget, raised to
/// Batch's minimum; `None` (no timeout) for operator-internal jobs without a budget.
pub fn attempt_duration_seconds(spec: &JobSpec) -> Option<i32> {
    let s = spec.budget?.max_seconds.max(MIN_ATTEMPT_SECONDS);
    Some(i32::try_from(s).unwrap_or(i32::MAX))
}

/// Batch's status reason when it killed an attempt at its timeout.
fn timed_out(status_reason: Option<&str>) -> bool {
    status_reason.is_some_and(|r| r.contains("attempt duration exceeded timeout"))
}

/// A failed Batch job as a queue state: a timeout is reported like the local queue's kill.
fn failed_state(status_reason: Option<&str>, exit_code: Option<i32>) -> QueueState {
    let reason = status_reason.unwrap_or("batch job failed");
    if timed_out(status_reason) {
        return QueueState::Failed {
            reason: format!(
                "the job exceeded its paid wall-clock budget and was stopped ({reason})"
            ),
            exit_code: Some(exit::WALL_CLOCK_EXCEEDED),
        };
    }
    QueueState::Failed { reason: reason.to_string(), exit_code }
}

fn sdk_error<E: std::error::Error + 'static>(e: aws_sdk_batch::error::SdkError<E>) -> QueueError {
    use aws_sdk_batch::error::SdkError;
    let msg = aws_sdk_batch::error::DisplayErrorContext(&e).to_string();
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => QueueError::Unavailable(msg),
        SdkError::ResponseError(_) => QueueError::Unavailable(msg),
        _ => QueueError::Backend(msg),
    }
}

#[async_trait::async_trait]
impl JobQueue for BatchQueue {
    async fn submit(&self, spec: &JobSpec) -> Result<String, QueueError> {
        spec.validate()?;
        let env = KeyValuePair::builder().name("POSTHUMAN_JOB_ID").value(&spec.job_id).build();
        let timeout = attempt_duration_seconds(spec)
            .map(|s| JobTimeout::builder().attempt_duration_seconds(s).build());
        let out = self
            .client
            .submit_job()
            .set_timeout(timeout)
            .job_name(&spec.job_id)
            .job_queue(&self.cfg.job_queue)
            .job_definition(&self.cfg.job_definition)
            .parameters("job_id", &spec.job_id)
            .parameters("spec_key", spec_key(&spec.job_id))
            .container_overrides(ContainerOverrides::builder().environment(env).build())
            .send()
            .await
            .map_err(sdk_error)?;
        out.job_id()
            .map(str::to_string)
            .ok_or_else(|| QueueError::Backend("SubmitJob returned no job id".into()))
    }

    async fn state(&self, queue_ref: &str) -> Result<QueueState, QueueError> {
        let out = self.client.describe_jobs().jobs(queue_ref).send().await.map_err(sdk_error)?;
        let job = out.jobs().first().ok_or_else(|| QueueError::NotFound(queue_ref.to_string()))?;
        let exit_code = job.container().and_then(|c| c.exit_code());
        Ok(match job.status() {
            Some(JobStatus::Succeeded) => QueueState::Succeeded,
            Some(JobStatus::Failed) => failed_state(job.status_reason(), exit_code),
            Some(JobStatus::Starting | JobStatus::Running) => QueueState::Running,
            _ => QueueState::Queued,
        })
    }

    /// Batch jobs are named after our job id; with a name filter ListJobs returns jobs in
    /// every status (Batch ignores the status filter then). The newest, if several.
    async fn find(&self, job_id: &str) -> Result<Option<String>, QueueError> {
        let filter = KeyValuesPair::builder().name("JOB_NAME").values(job_id).build();
        let out = self
            .client
            .list_jobs()
            .job_queue(&self.cfg.job_queue)
            .filters(filter)
            .send()
            .await
            .map_err(sdk_error)?;
        let newest = out
            .job_summary_list()
            .iter()
            .filter(|j| j.job_name() == Some(job_id))
            .max_by_key(|j| j.created_at().unwrap_or_default());
        Ok(newest.and_then(|j| j.job_id()).map(str::to_string))
    }
}

/// The parts of an EventBridge "Batch Job State Change" event we use.
#[derive(Debug, Deserialize)]
struct BatchEvent {
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    detail: BatchDetail,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchDetail {
    job_name: String,
    status: String,
    #[serde(default)]
    status_reason: Option<String>,
    #[serde(default)]
    container: Option<BatchContainer>,
    #[serde(default)]
    parameters: std::collections::HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchContainer {
    #[serde(default)]
    exit_code: Option<i32>,
}

/// Turns a Batch state-change event into a completion, or `None` for a non-terminal state
/// (the rule may forward RUNNING events too) or an event that is not ours.
pub fn job_done_from_event(event: &serde_json::Value) -> Result<Option<JobDone>, QueueError> {
    let ev: BatchEvent = serde_json::from_value(event.clone())
        .map_err(|e| QueueError::Backend(format!("not a Batch state-change event: {e}")))?;
    if ev.detail_type.as_deref().is_some_and(|t| t != "Batch Job State Change") {
        return Ok(None);
    }
    let d = ev.detail;
    let job_id = d.parameters.get("job_id").cloned().unwrap_or(d.job_name);
    let state = match d.status.as_str() {
        "SUCCEEDED" => QueueState::Succeeded,
        "FAILED" => failed_state(d.status_reason.as_deref(), d.container.and_then(|c| c.exit_code)),
        _ => return Ok(None),
    };
    Ok(Some(JobDone { job_id, state }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_timeout_is_the_paid_budget_at_least_batchs_minimum() {
        let mut spec: JobSpec = serde_json::from_value(serde_json::json!({
            "job_id": "j-1", "model_prefix": "models/m", "private_prefix": "jobs/j-1/private",
            "public_prefix": "jobs/j-1/public",
            "params": {"kind": "infer", "prompts": ["hi"], "max_new_tokens": 1}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(attempt_duration_seconds(&spec), None);
        let budget = |s| posthuman_types::Budget { max_seconds: s, ..Default::default() };
        spec.budget = Some(budget(5));
        assert_eq!(attempt_duration_seconds(&spec), Some(60));
        spec.budget = Some(budget(3600));
        assert_eq!(attempt_duration_seconds(&spec), Some(3600));
        spec.budget = Some(budget(u64::MAX));
        assert_eq!(attempt_duration_seconds(&spec), Some(i32::MAX));
    }
}
