//! The AWS job queue: AWS Batch `SubmitJob` / `DescribeJobs`.
//!
//! The job definition (see `infra/`) runs `posthuman-worker run --spec Ref::spec_key --store
//! s3://BUCKET`; this queue passes the job id and the spec's object-store key as Batch
//! parameters, so no buyer-sized data travels through the Batch API. Batch jobs are named
//! after our job id, and completion comes back as an EventBridge "Batch Job State Change"
//! event, parsed by [`job_done_from_event`] in the `posthuman-job-done` Lambda.

use aws_sdk_batch::types::{ContainerOverrides, JobStatus, KeyValuePair};
use posthuman_types::JobSpec;
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
        let out = self
            .client
            .submit_job()
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
            Some(JobStatus::Failed) => QueueState::Failed {
                reason: job.status_reason().unwrap_or("batch job failed").to_string(),
                exit_code,
            },
            Some(JobStatus::Starting | JobStatus::Running) => QueueState::Running,
            _ => QueueState::Queued,
        })
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
        "FAILED" => QueueState::Failed {
            reason: d.status_reason.unwrap_or_else(|| "batch job failed".into()),
            exit_code: d.container.and_then(|c| c.exit_code),
        },
        _ => return Ok(None),
    };
    Ok(Some(JobDone { job_id, state }))
}
