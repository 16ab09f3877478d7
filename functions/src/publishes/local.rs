//! The embedded default's [`PublishRunner`]: a tokio task in this process.

use std::sync::Arc;

use super::{PublishRunner, run};
use crate::deps::Deps;
use crate::error::ApiError;

/// Runs each publish as a tokio task beside the server (the demo, the CLI's default, tests).
/// A publish whose process stops mid-way is reported timed out after its deadline, as on AWS.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalPublishes;

#[async_trait::async_trait]
impl PublishRunner for LocalPublishes {
    async fn start(&self, deps: &Arc<Deps>, id: &str) -> Result<(), ApiError> {
        let (deps, id) = (deps.clone(), id.to_string());
        tokio::spawn(async move {
            if let Err(e) = run(&deps, &id).await {
                tracing::error!(publish = %id, error = %e, "publish record unreadable or unwritable");
            }
        });
        Ok(())
    }
}
