//! `posthuman-job-done-lambda`: the EventBridge "Batch Job State Change" target
//! (`lambda_runtime`). Thin: parses the event and calls the same completion handler as the
//! local queue's callback; an error makes Lambda retry the event (the handler is idempotent).

use lambda_runtime::{LambdaEvent, service_fn};
use posthuman_functions::aws;
use posthuman_functions::handlers::complete::on_job_done;
use posthuman_functions::queue::batch::job_done_from_event;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .init();
    let deps = aws::deps(aws::AwsConfig::from_env()?).await?;
    lambda_runtime::run(service_fn(|ev: LambdaEvent<serde_json::Value>| {
        let deps = deps.clone();
        async move {
            if let Some(done) = job_done_from_event(&ev.payload)? {
                on_job_done(&deps, &done).await?;
            }
            Ok::<_, lambda_runtime::Error>(())
        }
    }))
    .await
}
