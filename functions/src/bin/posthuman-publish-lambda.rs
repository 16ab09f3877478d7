//! `posthuman-publish-lambda`: the publish function (`lambda_runtime`), invoked
//! asynchronously by the API function for each accepted publish
//! ([`posthuman_functions::publishes`]). Its own function rather than an event the API
//! binary also handles: its own 15-minute timeout (the API's is API Gateway's 29 s), its own
//! least-privilege role (the staged uploads, `models/`, the state, the operator key) and
//! its own retry setting (0: a publish never runs twice; the record's start marker refuses a
//! second delivery too). Thin: builds the AWS dependencies and runs one publish per event.

use lambda_runtime::{LambdaEvent, service_fn};
use posthuman_functions::aws;
use posthuman_functions::publishes::{self, PublishEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    aws::init_lambda_logging();
    let cfg = aws::AwsConfig::from_env()?;
    let deps = aws::deps(cfg).await?;
    lambda_runtime::run(service_fn(|ev: LambdaEvent<PublishEvent>| {
        let deps = deps.clone();
        async move {
            // The publish's own failures are in its record (the client reads them there): the
            // invocation succeeds. Only an unreadable or unwritable record is an error.
            let ran = publishes::run(&deps, &ev.payload.publish_id).await?;
            tracing::info!(publish = %ev.payload.publish_id, ?ran, "publish delivery handled");
            Ok::<_, lambda_runtime::Error>(())
        }
    }))
    .await
}
