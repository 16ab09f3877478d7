//! Public views: what the API returns. Their shapes are `posthuman_types::views` (the CLI
//! and the storefront read the same definitions); they are built here from records by
//! dropping every private field (storage prefixes, job specs), so a new private field can
//! never leak by accident.

use posthuman_types::{JobParams, JobProgress};

use crate::catalogue::{
    JobPhase, JobRecord, KindCounts, ModelActivity, ModelRecord, is_evaluation,
};

/// The newest evaluations (besides the featured ones) and receipts a card lists: a card
/// costs this many records, whatever the number of jobs on the model.
pub const CARD_LATEST: usize = 20;

pub use posthuman_types::views::{
    EvaluationView, JobCounts, JobStateView, JobView, ModelView, SubmittedView,
};

impl From<KindCounts> for JobCounts {
    fn from(c: KindCounts) -> Self {
        JobCounts { train: c.train, infer: c.infer, evaluate: c.evaluate }
    }
}

/// The card of a model from all of its jobs (a new model: none, nor derived models).
pub fn model_view(m: &ModelRecord, lineage: Vec<String>, jobs: &[JobRecord]) -> ModelView {
    let featured: Vec<JobRecord> =
        jobs.iter().filter(|j| m.featured.contains(&j.job_id)).cloned().collect();
    let activity = ModelActivity::of_jobs(jobs, usize::MAX);
    model_view_with_activity(m, lineage, Vec::new(), &activity, &featured)
}

/// The card of a model from its indexed activity and its featured jobs (read by id; any
/// that is not an evaluation of this model is left out). Featured evaluations come
/// first in the owner's order, then the newest others oldest first; receipts oldest
/// first.
pub fn model_view_with_activity(
    m: &ModelRecord,
    lineage: Vec<String>,
    children: Vec<String>,
    activity: &ModelActivity,
    featured: &[JobRecord],
) -> ModelView {
    let mut evaluations: Vec<EvaluationView> = m
        .featured
        .iter()
        .filter_map(|id| {
            featured.iter().find(|j| {
                j.job_id == *id && j.model.eq_ignore_ascii_case(&m.card.nft) && is_evaluation(j)
            })
        })
        .filter_map(|j| evaluation_view(j, true))
        .collect();
    evaluations.extend(
        activity
            .evaluations
            .iter()
            .rev()
            .filter(|j| !m.featured.contains(&j.job_id))
            .filter_map(|j| evaluation_view(j, false)),
    );
    ModelView {
        card: m.card.clone(),
        lineage,
        children,
        source_job: m.source_job.clone(),
        receipt_hash: m.receipt_hash,
        jobs: activity.counts.into(),
        evaluations,
        receipts: activity.receipts.iter().rev().copied().collect(),
        created_at: m.created_at,
        n_positions: m.n_positions,
    }
}

/// The label of an evaluation job; `None` for a job without a perplexity.
fn evaluation_view(j: &JobRecord, featured: bool) -> Option<EvaluationView> {
    let (context_len, stride) = match &j.spec.params {
        JobParams::Evaluate(e) => (Some(e.context_len), Some(e.stride)),
        _ => (None, None),
    };
    Some(EvaluationView {
        job_id: j.job_id.clone(),
        perplexity: j.perplexity?,
        receipt_hash: j.receipt_hash,
        evaluator: j.consumer.clone(),
        dataset_commitment: j.input_data_hash,
        context_len,
        stride,
        featured,
    })
}

/// A job's public status from its record: `running` when the queue runs it now.
pub fn job_view(j: &JobRecord, running: bool, progress: Option<JobProgress>) -> JobView {
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

/// One page of a list: its items (the response body, a JSON array as before paging) and the
/// opaque cursor of the next page (a response header), `None` on the last page.
#[derive(Clone, Debug, PartialEq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use posthuman_types::{EvalParams, Hash32, JobKind, JobSpec, ModelCard, RewardScheme};

    use super::*;

    fn model(featured: &[&str]) -> ModelRecord {
        ModelRecord {
            card: ModelCard {
                nft: "0x00000000000000000000000000000000000000aa".into(),
                datatoken: "0x00000000000000000000000000000000000000d1".into(),
                name: "m".into(),
                symbol: "M".into(),
                description: String::new(),
                owner: "0x00000000000000000000000000000000000000a1".into(),
                weights_hash: Hash32([7; 32]),
                parent: None,
                trainer: None,
                architecture: "gpt2".into(),
                parameters: 1,
                exchange_id: None,
                price: None,
                reward_scheme: RewardScheme::geometric(1000, 5000, 3),
                lora: None,
                tags: vec![],
                license: None,
            },
            storage_prefix: "models/m".into(),
            created_at: 1,
            source_job: None,
            receipt_hash: None,
            n_positions: 64,
            featured: featured.iter().map(|s| s.to_string()).collect(),
            card_updated_at: None,
            ddo_pending: false,
        }
    }

    fn evaluation(id: &str, consumer: &str, created_at: u64) -> JobRecord {
        JobRecord {
            job_id: id.into(),
            kind: JobKind::Evaluate,
            model: "0x00000000000000000000000000000000000000aa".into(),
            consumer: consumer.into(),
            order_tx: format!("0x{}", "11".repeat(32)),
            order_log_index: 0,
            spec: JobSpec {
                job_id: id.into(),
                model_prefix: "models/m".into(),
                dataset_key: Some(format!("jobs/{id}/dataset.txt")),
                private_prefix: format!("jobs/{id}/private"),
                public_prefix: format!("jobs/{id}/public"),
                params: JobParams::Evaluate(EvalParams {
                    context_len: 32,
                    stride: 16,
                    max_tokens: 0,
                    baseline: None,
                }),
                budget: None,
                salt: Some(Hash32([9; 32])),
            },
            queue_ref: Some(id.into()),
            phase: JobPhase::Succeeded,
            created_at,
            updated_at: created_at,
            completion: Default::default(),
            order_released: false,
            receipt_hash: Some(Hash32([1; 32])),
            perplexity: Some(12.5),
            input_data_hash: Some(Hash32([0x5a; 32])),
        }
    }

    #[test]
    fn a_strangers_evaluation_is_labelled_and_not_featured_and_featured_ones_come_first() {
        let stranger = "0x00000000000000000000000000000000000000b0";
        let jobs = [evaluation("j-1", stranger, 10), evaluation("j-2", "0xowner", 20)];
        let view = model_view(&model(&[]), vec![], &jobs);
        let e = &view.evaluations[0];
        assert_eq!((e.job_id.as_str(), e.evaluator.as_str()), ("j-1", stranger));
        // The receipt's salted commitment, never the plain dataset hash.
        assert_eq!(e.dataset_commitment, Some(Hash32([0x5a; 32])));
        assert_eq!((e.context_len, e.stride, e.featured), (Some(32), Some(16), false));

        let view = model_view(&model(&["j-2"]), vec![], &jobs);
        let order: Vec<(&str, bool)> =
            view.evaluations.iter().map(|e| (e.job_id.as_str(), e.featured)).collect();
        assert_eq!(order, [("j-2", true), ("j-1", false)]);
    }

    #[test]
    fn a_card_from_its_activity_shows_featured_evaluations_outside_the_newest_page_first() {
        let stranger = "0x00000000000000000000000000000000000000b0";
        let old = evaluation("j-old", stranger, 5);
        let newest = [evaluation("j-9", stranger, 90), evaluation("j-8", stranger, 80)];
        let mut elsewhere = evaluation("j-x", stranger, 7);
        elsewhere.model = "0x00000000000000000000000000000000000000bb".into();
        let activity = ModelActivity {
            counts: KindCounts { train: 1, infer: 2, evaluate: 40 },
            evaluations: newest.to_vec(),
            receipts: vec![Hash32([2; 32]), Hash32([1; 32])],
        };
        let m = model(&["j-x", "j-old", "j-8"]);
        let featured = [elsewhere, old, newest[1].clone()];
        let view = model_view_with_activity(&m, vec![], vec![], &activity, &featured);
        let order: Vec<(&str, bool)> =
            view.evaluations.iter().map(|e| (e.job_id.as_str(), e.featured)).collect();
        // Another model's job is never featured here; the rest oldest first.
        assert_eq!(order, [("j-old", true), ("j-8", true), ("j-9", false)]);
        assert_eq!(view.jobs, JobCounts { train: 1, infer: 2, evaluate: 40 });
        assert_eq!(view.receipts, [Hash32([1; 32]), Hash32([2; 32])]);
    }
}
