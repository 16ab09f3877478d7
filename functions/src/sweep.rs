//! Recovery of paid jobs a crash left behind: a job record stuck in `Submitting` or `Queued`.
//!
//! `submit` claims the order, then writes the record (`Submitting`), the dataset, the spec,
//! hands the job to the queue and records its reference (`Queued`). A crash between the
//! claim and that last write leaves a record that nothing would ever move on, holding an
//! order the buyer paid for. [`sweep_stuck_jobs`] finds every such record untouched for
//! longer than a grace period (so it never races a `submit` still in progress) and:
//! - the queue has the job (the crash came after the submit): records its reference;
//! - the queue does not, and the spec is in the store: submits it again. The spec is written
//!   after the dataset, so a stored spec means the job's inputs are complete;
//! - the spec is not stored (the dataset may be lost with the request): the job fails and
//!   its order is released, so the buyer can submit the request again with the same order.
//!
//! Optionally ([`SweepPolicy::redeliver_finished`]) a job the queue reports finished while
//! its record still says `Queued` has its completion delivered again: on AWS that is an
//! EventBridge event that every retry and the dead-letter queue failed to land. The local
//! queue delivers its own completions until they land, so the embedded server leaves it off.
//!
//! The embedded server runs the sweep periodically ([`spawn_periodic`]); on AWS a scheduled
//! EventBridge rule invokes the job-done Lambda, which runs the same function (`infra/`).

use std::sync::Arc;
use std::time::Duration;

use crate::catalogue::{JobPhase, JobRecord, now_secs};
use crate::deps::Deps;
use crate::error::ApiError;
use crate::handlers::complete::on_job_done;
use crate::queue::{JobDone, QueueError, spec_key};

/// How long a record may sit in `Submitting`/`Queued` without a queue entry before it is
/// recovered: far longer than a `submit` takes (the Lambda's limit is 29 s, an upload's 5 min).
pub const DEFAULT_GRACE_SECS: u64 = 15 * 60;

/// What a sweep may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepPolicy {
    /// Records written less than this many seconds ago are left alone.
    pub grace_secs: u64,
    /// Deliver again the completion of a job the queue says finished while its record is
    /// still `Queued` (see the module docs).
    pub redeliver_finished: bool,
}

impl Default for SweepPolicy {
    fn default() -> Self {
        SweepPolicy { grace_secs: DEFAULT_GRACE_SECS, redeliver_finished: false }
    }
}

/// The jobs one sweep moved on, by what it did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Handed to the queue again.
    pub resubmitted: Vec<String>,
    /// Already in the queue; the record got its reference.
    pub adopted: Vec<String>,
    /// Failed, their orders released for a retry.
    pub released: Vec<String>,
    /// Finished in the queue; their completion was delivered again.
    pub redelivered: Vec<String>,
}

/// Recovers every stuck record older than the grace period (see the module docs). A job
/// that cannot be recovered now (a backend out) is logged and left for the next sweep; the
/// others go on.
pub async fn sweep_stuck_jobs(
    deps: &Deps,
    policy: &SweepPolicy,
    now: u64,
) -> Result<SweepReport, ApiError> {
    let mut report = SweepReport::default();
    // Every job names a published model (submit looks it up first), so this walk sees them all.
    for model in deps.catalogue.list_models().await? {
        for job in deps.catalogue.jobs_for_model(&model.card.nft).await? {
            if !matches!(job.phase, JobPhase::Submitting | JobPhase::Queued)
                || job.updated_at.saturating_add(policy.grace_secs) > now
            {
                continue;
            }
            let job_id = job.job_id.clone();
            if let Err(e) = sweep_one(deps, policy, job, now, &mut report).await {
                tracing::warn!(%job_id, error = %e, "stuck job not recovered; trying again on the next sweep");
            }
        }
    }
    Ok(report)
}

async fn sweep_one(
    deps: &Deps,
    policy: &SweepPolicy,
    mut job: JobRecord,
    now: u64,
    report: &mut SweepReport,
) -> Result<(), ApiError> {
    let queue_ref = match &job.queue_ref {
        Some(r) => Some(r.clone()),
        None => deps.queue.find(&job.job_id).await?,
    };
    if let Some(r) = queue_ref {
        match deps.queue.state(&r).await {
            Ok(state) => {
                // Only a record still Submitting moves: a completion written since this
                // sweep read the record must not be moved back to Queued.
                if job.phase == JobPhase::Submitting
                    && deps.catalogue.mark_queued(&job.job_id, &r, now).await?
                {
                    tracing::info!(job_id = %job.job_id, "stuck job was in the queue; reference recorded");
                    report.adopted.push(job.job_id.clone());
                }
                if state.is_terminal() && policy.redeliver_finished {
                    on_job_done(deps, &JobDone { job_id: job.job_id.clone(), state }).await?;
                    tracing::info!(job_id = %job.job_id, "lost completion delivered again");
                    report.redelivered.push(job.job_id);
                }
                return Ok(());
            }
            // The queue has no such job (any more): recover it as if never submitted.
            Err(QueueError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if spec_stored(deps, &job.job_id).await? {
        let r = deps.queue.submit(&job.spec).await?;
        job.queue_ref = Some(r);
        job.phase = JobPhase::Queued;
        job.updated_at = now;
        deps.catalogue.put_job(&job).await?;
        tracing::warn!(job_id = %job.job_id, "stuck job was never queued; submitted again");
        report.resubmitted.push(job.job_id);
        return Ok(());
    }
    let order_key = format!("{}-{}", job.order_tx, job.order_log_index);
    let released = deps.catalogue.release_order(&order_key, &job.job_id).await?;
    job.phase = JobPhase::Failed {
        reason: "the job was never queued: the service stopped while accepting it. Its order \
                 is released: submit the request again with the same order"
            .into(),
        exit_code: None,
    };
    job.order_released = true;
    job.updated_at = now;
    deps.catalogue.put_job(&job).await?;
    tracing::warn!(job_id = %job.job_id, released, "stuck job had no stored spec; failed, order released");
    report.released.push(job.job_id);
    Ok(())
}

/// Whether the job's spec is in the store. A listing of that one key, not a HEAD: S3 answers
/// a HEAD of a missing key with 403 to a role that may not list it, which would read as an
/// outage for ever (the job-done role may list `jobs/*/spec.json`, `infra/`).
async fn spec_stored(deps: &Deps, job_id: &str) -> Result<bool, ApiError> {
    let key = spec_key(job_id);
    Ok(deps.store.list(&key).await?.contains(&key))
}

/// Runs [`sweep_stuck_jobs`] at once and then every `grace / 4` (1 s to 5 min) until the
/// returned task is aborted. A failed pass is logged and retried on the next tick.
pub fn spawn_periodic(deps: Arc<Deps>, policy: SweepPolicy) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_secs((policy.grace_secs / 4).clamp(1, 300));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match sweep_stuck_jobs(&deps, &policy, now_secs()).await {
                Ok(r) if r != SweepReport::default() => {
                    tracing::info!(report = ?r, "stuck jobs swept")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "job sweep failed; retrying on the next tick"),
            }
        }
    })
}
