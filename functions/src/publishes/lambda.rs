//! The AWS [`PublishRunner`]: an asynchronous invocation of the publish function.

use std::sync::Arc;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde::{Deserialize, Serialize};

use super::PublishRunner;
use crate::deps::Deps;
use crate::error::ApiError;

/// The event the publish function (`posthuman-publish-lambda`) takes: which publish to run.
/// Nothing else rides in it: the signed request waits in the publish's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishEvent {
    pub publish_id: String,
}

/// Starts each publish as an `InvocationType: Event` invocation of `function` (Lambda queues
/// the event and answers 202 at once; the function has 15 minutes). Lambda's retries of
/// asynchronous events are set to 0 by the stack, and a second delivery is refused by
/// [`super::run`], so a publish never runs twice.
#[derive(Clone, Debug)]
pub struct LambdaPublishes {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaPublishes {
    /// A runner invoking `function` (name or ARN) in `region`; `endpoint_url` for an emulator
    /// (`cargo lambda watch` in CI).
    pub async fn new(function: String, region: &str, endpoint_url: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()));
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        LambdaPublishes { client: aws_sdk_lambda::Client::new(&loader.load().await), function }
    }
}

#[async_trait::async_trait]
impl PublishRunner for LambdaPublishes {
    async fn start(&self, _deps: &Arc<Deps>, id: &str) -> Result<(), ApiError> {
        let event = PublishEvent { publish_id: id.to_string() };
        let payload = serde_json::to_vec(&event).map_err(ApiError::internal)?;
        let out = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| {
                ApiError::unavailable(
                    "publish function",
                    aws_sdk_lambda::error::DisplayErrorContext(&e).to_string(),
                )
            })?;
        // An accepted asynchronous invocation is a 202; anything else did not queue it.
        if out.status_code() != 202 {
            return Err(ApiError::unavailable(
                "publish function",
                format!("invoke answered {} instead of 202", out.status_code()),
            ));
        }
        Ok(())
    }
}
