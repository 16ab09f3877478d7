//! `posthuman-job-done-lambda`: the EventBridge target (`lambda_runtime`) for two rules:
//! - "Batch Job State Change": parses the event and calls the same completion handler as the
//!   local queue's callback. A retryable failure is an error, so Lambda retries the event
//!   (the handler is idempotent) and, when its retries are spent, sends it to the on-failure
//!   destination (`infra/`); a completion that can never land is logged and acknowledged.
//! - the sweep schedule ("Scheduled Event"): recovers paid jobs a crash left between the
//!   order claim and the queue, and delivers again completions whose events were all lost
//!   ([`posthuman_functions::sweep`]).

use lambda_runtime::{LambdaEvent, service_fn};
use posthuman_functions::aws;
use posthuman_functions::catalogue::now_secs;
use posthuman_functions::handlers::complete::on_job_done;
use posthuman_functions::queue::DeliveryError;
use posthuman_functions::queue::batch::job_done_from_event;
use posthuman_functions::sweep::{SweepPolicy, sweep_stuck_jobs};

/// EventBridge's detail-type for a schedule rule's events.
const SCHEDULED: &str = "Scheduled Event";

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    aws::init_lambda_logging();
    let cfg = aws::AwsConfig::from_env()?;
    let secret = cfg.operator_key_secret.clone();
    let deps = aws::deps(cfg).await?;
    // Every completion sends the operator's transactions: a key the lineage contract does not
    // obey fails here, once, naming the fix (not on every event, as a revert).
    aws::check_lineage_operator(&deps, &secret).await?;
    lambda_runtime::run(service_fn(|ev: LambdaEvent<serde_json::Value>| {
        let deps = deps.clone();
        async move {
            if ev.payload.get("detail-type").and_then(|t| t.as_str()) == Some(SCHEDULED) {
                // EventBridge events can be lost for good (retries and the DLQ spent): the
                // sweep redelivers what the queue says finished.
                let policy = SweepPolicy { redeliver_finished: true, ..SweepPolicy::default() };
                let report = sweep_stuck_jobs(&deps, &policy, now_secs()).await?;
                tracing::info!(?report, "job sweep done");
                return Ok(());
            }
            let Some(done) = job_done_from_event(&ev.payload)? else { return Ok(()) };
            match on_job_done(&deps, &done).await.map_err(DeliveryError::from) {
                Ok(()) => Ok(()),
                Err(DeliveryError::Rejected(reason)) => {
                    tracing::error!(job_id = %done.job_id, %reason, "job completion can never be delivered; acknowledged");
                    Ok(())
                }
                Err(e) => Err(lambda_runtime::Error::from(e.to_string())),
            }
        }
    }))
    .await
}
