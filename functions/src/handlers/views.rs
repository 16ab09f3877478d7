//! Public views: what the API returns. Built from records by dropping every private field
//! (storage prefixes, job specs), so a new private field can never leak by accident.

use posthuman_types::{Hash32, JobKind, JobProgress, ModelCard};
use serde::{Deserialize, Serialize};

use crate::catalogue::{ChildAsset, JobPhase, JobRecord, ModelRecord};

/// Job counts by kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobCounts {
    pub train: u64,
    pub infer: u64,
    pub evaluate: u64,
}

/// An evaluation shown on a model's card.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluationView {
    pub job_id: String,
    /// `"inf"` on the wire when unbounded.
    #[serde(with = "posthuman_types::outputs::unbounded")]
    pub perplexity: f64,
    pub receipt_hash: Option<Hash32>,
}

/// A catalogue entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelView {
    #[serde(flatten)]
    pub card: ModelCard,
    /// NFTs from this model's parent up to its root (empty for a root).
    pub lineage: Vec<String>,
    /// The training job that produced it and its receipt (derived models).
    pub source_job: Option<String>,
    pub receipt_hash: Option<Hash32>,
    pub jobs: JobCounts,
    pub evaluations: Vec<EvaluationView>,
    /// Receipts of the jobs run on this model.
    pub receipts: Vec<Hash32>,
    pub created_at: u64,
}

impl ModelView {
    pub fn new(m: &ModelRecord, lineage: Vec<String>, jobs: &[JobRecord]) -> Self {
        let mut counts = JobCounts::default();
        let mut evaluations = Vec::new();
        let mut receipts = Vec::new();
        for j in jobs {
            match j.kind {
                JobKind::Train => counts.train += 1,
                JobKind::Infer => counts.infer += 1,
                JobKind::Evaluate => counts.evaluate += 1,
            }
            if let Some(p) = j.perplexity {
                evaluations.push(EvaluationView {
                    job_id: j.job_id.clone(),
                    perplexity: p,
                    receipt_hash: j.receipt_hash,
                });
            }
            receipts.extend(j.receipt_hash);
        }
        ModelView {
            card: m.card.clone(),
            lineage,
            source_job: m.source_job.clone(),
            receipt_hash: m.receipt_hash,
            jobs: counts,
            evaluations,
            receipts,
            created_at: m.created_at,
        }
    }
}

/// Where a job stands, for its buyer's progress view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStateView {
    Queued,
    Running,
    /// The worker finished; for a train job, `derived_model` appears once published.
    Succeeded,
    /// The worker failed. `order_reusable`: the order was released and may pay for a retry
    /// (submit a new signed request naming the same order).
    Failed {
        reason: String,
        exit_code: Option<i32>,
        order_reusable: bool,
    },
}

/// A job's public status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub job_id: String,
    pub kind: JobKind,
    pub model: String,
    pub consumer: String,
    pub order_tx: String,
    #[serde(flatten)]
    pub state: JobStateView,
    pub progress: Option<JobProgress>,
    /// A train job's derived model, once created on chain.
    pub derived_model: Option<ChildAsset>,
    /// True when every completion step (receipt, commitment, publication, rewards) is done.
    pub completed: bool,
    pub receipt_hash: Option<Hash32>,
    pub created_at: u64,
    pub updated_at: u64,
}

impl JobView {
    pub fn new(j: &JobRecord, running: bool, progress: Option<JobProgress>) -> Self {
        let state = match &j.phase {
            JobPhase::Submitting | JobPhase::Queued if running => JobStateView::Running,
            JobPhase::Submitting | JobPhase::Queued => JobStateView::Queued,
            JobPhase::Succeeded => JobStateView::Succeeded,
            JobPhase::Failed { reason, exit_code } => JobStateView::Failed {
                reason: reason.clone(),
                exit_code: *exit_code,
                order_reusable: j.order_released,
            },
        };
        JobView {
            job_id: j.job_id.clone(),
            kind: j.kind,
            model: j.model.clone(),
            consumer: j.consumer.clone(),
            order_tx: j.order_tx.clone(),
            state,
            progress,
            derived_model: j.completion.child.clone(),
            completed: j.completion.done,
            receipt_hash: j.receipt_hash,
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

/// One page of a list: its items (the response body, a JSON array as before paging) and the
/// opaque cursor of the next page (a response header), `None` on the last page.
#[derive(Clone, Debug, PartialEq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// What `POST /jobs` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmittedView {
    pub job_id: String,
    pub status_url: String,
}
