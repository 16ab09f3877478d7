//! How [`ModelView`] and [`JobView`] are read: from one flat struct each, converted.
//!
//! Both views are written with `#[serde(flatten)]` (the card's fields and the job's state sit
//! beside the view's own in one JSON object), and the API keeps writing them so. Reading a
//! flattened field, though, makes serde buffer the whole object into its private `Content`
//! and replay it through a `FlatMapDeserializer`: in the storefront's wasm that machinery and
//! a second copy of every card deserializer cost ~26 KB of code (2026-12-07). These structs
//! name the same fields flat, with the same defaults, so the JSON read is the JSON written;
//! `views::tests` pins that both ways. A field added to `ModelCard` or `JobStateView` fails to
//! compile here until it is added (the conversions build them field by field).

use serde::Deserialize;

use super::{ChildAsset, EvaluationView, JobCounts, JobStateView, JobView, ModelView};
use crate::{Hash32, JobKind, JobProgress, LoraOutput, ModelCard, RewardScheme};

/// [`ModelView`] with [`ModelCard`]'s fields inline (their `#[serde(default)]`s as the card
/// declares them).
#[derive(Deserialize)]
pub(super) struct FlatModelView {
    nft: String,
    datatoken: String,
    name: String,
    symbol: String,
    description: String,
    owner: String,
    weights_hash: Hash32,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    trainer: Option<String>,
    architecture: String,
    parameters: u64,
    #[serde(default)]
    exchange_id: Option<Hash32>,
    #[serde(default)]
    price: Option<String>,
    reward_scheme: RewardScheme,
    #[serde(default)]
    lora: Option<LoraOutput>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    license: Option<String>,
    lineage: Vec<String>,
    children: Vec<String>,
    source_job: Option<String>,
    receipt_hash: Option<Hash32>,
    jobs: JobCounts,
    evaluations: Vec<EvaluationView>,
    receipts: Vec<Hash32>,
    created_at: u64,
    n_positions: u32,
}

impl From<FlatModelView> for ModelView {
    fn from(f: FlatModelView) -> ModelView {
        ModelView {
            card: ModelCard {
                nft: f.nft,
                datatoken: f.datatoken,
                name: f.name,
                symbol: f.symbol,
                description: f.description,
                owner: f.owner,
                weights_hash: f.weights_hash,
                parent: f.parent,
                trainer: f.trainer,
                architecture: f.architecture,
                parameters: f.parameters,
                exchange_id: f.exchange_id,
                price: f.price,
                reward_scheme: f.reward_scheme,
                lora: f.lora,
                tags: f.tags,
                license: f.license,
            },
            lineage: f.lineage,
            children: f.children,
            source_job: f.source_job,
            receipt_hash: f.receipt_hash,
            jobs: f.jobs,
            evaluations: f.evaluations,
            receipts: f.receipts,
            created_at: f.created_at,
            n_positions: f.n_positions,
        }
    }
}

/// [`JobStateView`]'s tag (`"state"`).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
}

/// [`JobView`] with [`JobStateView`]'s tag and its `Failed` fields inline.
#[derive(Deserialize)]
pub(super) struct FlatJobView {
    job_id: String,
    kind: JobKind,
    model: String,
    consumer: String,
    order_tx: String,
    state: State,
    // `Failed`'s fields: required there (an `Option` field may be missing), ignored elsewhere.
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    order_reusable: Option<bool>,
    progress: Option<JobProgress>,
    derived_model: Option<ChildAsset>,
    completed: bool,
    receipt_hash: Option<Hash32>,
    created_at: u64,
    updated_at: u64,
}

impl TryFrom<FlatJobView> for JobView {
    type Error = String;

    fn try_from(f: FlatJobView) -> Result<JobView, String> {
        let state = match f.state {
            State::Queued => JobStateView::Queued,
            State::Running => JobStateView::Running,
            State::Succeeded => JobStateView::Succeeded,
            State::Failed => JobStateView::Failed {
                reason: f.reason.ok_or("missing field `reason`")?,
                exit_code: f.exit_code,
                order_reusable: f.order_reusable.ok_or("missing field `order_reusable`")?,
            },
        };
        Ok(JobView {
            job_id: f.job_id,
            kind: f.kind,
            model: f.model,
            consumer: f.consumer,
            order_tx: f.order_tx,
            state,
            progress: f.progress,
            derived_model: f.derived_model,
            completed: f.completed,
            receipt_hash: f.receipt_hash,
            created_at: f.created_at,
            updated_at: f.updated_at,
        })
    }
}
