//! Paged lists read through the catalogue's indexes: a buyer's jobs. (`GET /models` pages
//! in [`super::models::list_models`].)
//!
//! A page costs its own records: one index read, then one record (and at most one public
//! `progress.json`) per job on it. A list never asks the queue: a page would cost one Batch
//! DescribeJobs per live job, so only a single job's status does (`GET /jobs/{id}`).

use posthuman_types::JobProgress;

use super::models::lower;
use super::views::{JobView, Paged, job_view};
use crate::auth;
use crate::catalogue::{Cursor, JobPhase, JobRecord};
use crate::deps::Deps;
use crate::error::ApiError;

/// `GET /jobs?consumer=0x…`: one page of a buyer's jobs, newest first, and the next page's
/// cursor. Job state is public; results stay buyer-only. A live job shows as running once
/// its worker has written progress.
pub async fn jobs_of(
    deps: &Deps,
    consumer: &str,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<Paged<JobView>, ApiError> {
    let who = lower(auth::parse_address("consumer", consumer)?);
    let page = deps.catalogue.jobs_of_consumer(&who, after, limit).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for j in &page.items {
        let progress = progress(deps, j).await?;
        let live = matches!(j.phase, JobPhase::Queued | JobPhase::Submitting);
        items.push(job_view(j, live && progress.is_some(), progress));
    }
    Ok(Paged { items, next: page.next.map(|c| c.encode()) })
}

/// The worker's public progress of a job, if written (a malformed one is ignored).
async fn progress(deps: &Deps, j: &JobRecord) -> Result<Option<JobProgress>, ApiError> {
    match deps.store.get(&format!("{}/progress.json", j.spec.public_prefix), 1 << 20).await {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(posthuman_store::StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
