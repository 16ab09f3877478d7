//! Checkpoint retention: a train job's checkpoints (weights + both AdamW moments, ≈ 3× the
//! model each) are kept for the operator's audit window after the job finishes, then pruned.
//!
//! Within the window `posthuman-operator audit JOB` re-runs segments from the stored
//! checkpoints; after it only the committed hashes remain (receipt, Merkle root, metrics),
//! which still verify everything but a replay. Pruning first writes a marker,
//! [`PrunedMarker`] at [`pruned_marker_key`], so an audit that finds a checkpoint missing can
//! say why instead of failing generically. The embedded server runs [`prune_checkpoints`]
//! periodically ([`spawn_periodic`]); on AWS an S3 lifecycle rule on the checkpoint prefix
//! does the same with the same window (`infra/`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use posthuman_types::JobKind;
use serde::{Deserialize, Serialize};

use crate::catalogue::{JobPhase, JobRecord, now_secs};
use crate::deps::Deps;
use crate::error::ApiError;

/// The default audit window: 30 days.
pub const DEFAULT_AUDIT_WINDOW_SECS: u64 = 30 * 24 * 3600;

/// Where a train job keeps its checkpoints (the worker's layout,
/// `<private_prefix>/checkpoints/step-<s>/`); the trailing `/` keeps a listing to them.
pub fn checkpoints_prefix(private_prefix: &str) -> String {
    format!("{private_prefix}/checkpoints/")
}

/// The marker a prune leaves beside the checkpoints. Its name does not start with
/// `checkpoints` (the worker's resume lists that string prefix), so no resume sees it.
pub fn pruned_marker_key(private_prefix: &str) -> String {
    format!("{private_prefix}/pruned-checkpoints.json")
}

/// What the marker records: when the job finished, when its checkpoints went, and the
/// window that applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedMarker {
    pub job_id: String,
    pub finished_at: u64,
    pub pruned_at: u64,
    pub audit_window_secs: u64,
}

fn finished(job: &JobRecord) -> bool {
    matches!(job.phase, JobPhase::Succeeded | JobPhase::Failed { .. })
}

/// Deletes the checkpoints of every train job that finished more than `audit_window_secs`
/// before `now`; returns how many jobs were pruned this pass. Idempotent: a pruned job has
/// no checkpoints left and is skipped.
pub async fn prune_checkpoints(
    deps: &Deps,
    audit_window_secs: u64,
    now: u64,
) -> Result<usize, ApiError> {
    let mut pruned = 0;
    for model in deps.catalogue.list_models().await? {
        for job in deps.catalogue.jobs_for_model(&model.card.nft).await? {
            if job.kind != JobKind::Train
                || !finished(&job)
                || job.updated_at.saturating_add(audit_window_secs) > now
            {
                continue;
            }
            let prefix = &job.spec.private_prefix;
            let keys = deps.store.list(&checkpoints_prefix(prefix)).await?;
            if keys.is_empty() {
                continue;
            }
            let marker = PrunedMarker {
                job_id: job.job_id.clone(),
                finished_at: job.updated_at,
                pruned_at: now,
                audit_window_secs,
            };
            let body = serde_json::to_vec_pretty(&marker).map_err(ApiError::internal)?;
            // The marker first: an audit that meets a half-pruned job still learns why.
            deps.store.put(&pruned_marker_key(prefix), Bytes::from(body)).await?;
            for k in keys {
                deps.store.delete(&k).await?;
            }
            tracing::info!(job_id = %job.job_id, "checkpoints pruned after the audit window");
            pruned += 1;
        }
    }
    Ok(pruned)
}

/// Runs [`prune_checkpoints`] every `min(window / 10, 1 h)` (at least every second) until the
/// returned task is aborted. A failed pass is logged and retried on the next tick.
pub fn spawn_periodic(deps: Arc<Deps>, audit_window_secs: u64) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_secs((audit_window_secs / 10).clamp(1, 3600));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = prune_checkpoints(&deps, audit_window_secs, now_secs()).await {
                tracing::warn!(error = %e, "checkpoint prune failed; retrying on the next tick");
            }
        }
    })
}
