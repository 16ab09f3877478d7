//! The catalogue / state-store boundary: models, jobs, used orders and request nonces.
//!
//! One narrow trait, [`Catalogue`], with two implementations that pass the same contract
//! suite (`tests/catalogue_contract.rs`):
//! - [`sqlite::SqliteCatalogue`]: one SQLite file in the data dir (the embedded default).
//! - [`objects::ObjectCatalogue`]: JSON objects in any `ObjectStore` (S3 in AWS), with the
//!   store's conditional create (`put_if_absent`, S3 `If-None-Match: *`) for the two records
//!   that must be claimed exactly once: an order, and a request nonce.
//!
//! Both are durable: a restart loses nothing. Records hold private fields (storage prefixes,
//! the full job spec); the API turns them into public views and never serializes them whole.
//!
//! A model's card needs its job counts and its latest evaluations and receipts, never all of
//! its jobs: [`Catalogue::model_activity`] reads them through per-model indexes that each
//! catalogue keeps current on every job write, so a card costs its page, not its job count.
//! Its derived models come the same way, from a per-parent index ([`Catalogue::children`]).

pub mod objects;
pub mod sqlite;

use std::fmt::Debug;

use posthuman_types::{Hash32, JobKind, JobSpec, ModelCard};
use serde::{Deserialize, Serialize};

pub use objects::ObjectCatalogue;
pub use sqlite::SqliteCatalogue;

/// A published model, with where its weights live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The public card (keyed by `card.nft`, lowercase).
    pub card: ModelCard,
    /// Private: the object-store prefix holding config, weights and tokenizer.
    pub storage_prefix: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The job that trained this model (derived models).
    #[serde(default)]
    pub source_job: Option<String>,
    /// Receipt hash committed on chain for that job (derived models).
    #[serde(default)]
    pub receipt_hash: Option<Hash32>,
    /// The model's context length (`n_positions`), for checking job parameters.
    pub n_positions: u32,
    /// Succeeded evaluate jobs on this model that its owner featured, in the owner's order:
    /// the card lists them first and marks them; every other evaluation is only its buyer's.
    #[serde(default)]
    pub featured: Vec<String>,
    /// Unix seconds of the card's last edit: the DDO's `updated` (`None`: never edited, the
    /// DDO's `updated` is `created_at`).
    #[serde(default)]
    pub card_updated_at: Option<u64>,
    /// The card was edited and its DDO may not be on chain yet: the next edit sends it even if
    /// it changes nothing (`handlers::card`), so a failure between the two heals on retry.
    #[serde(default)]
    pub ddo_pending: bool,
}

/// Where a job stands, as the API tracks it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobPhase {
    /// Order claimed, dataset and spec being written, not yet handed to the queue.
    Submitting,
    /// Handed to the queue.
    Queued,
    /// The worker finished; completion steps (train) may still be running.
    Succeeded,
    /// The worker failed. Its order was released for a retry unless the failure was caused
    /// by the buyer's input ([`posthuman_types::exit::classify`]); see `order_released`.
    Failed { reason: String, exit_code: Option<i32> },
}

/// A derived model created by a train job's completion (stored in the job's record and
/// shown in its public view: `posthuman_types::views`).
pub use posthuman_types::views::ChildAsset;

/// Progress of the completion of a train job; each step is done once, then recorded, so the
/// handler resumes where a crash stopped it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionSteps {
    /// Output weights and receipt committed on chain (commit-before-reveal).
    #[serde(default)]
    pub commit_tx: Option<String>,
    /// The derived model's NFT and datatoken.
    #[serde(default)]
    pub child: Option<ChildAsset>,
    /// The lineage record that paid the rewards.
    #[serde(default)]
    pub derivation_tx: Option<String>,
    /// The derived model's (name, symbol), fixed before `createChild` so a resumed completion
    /// publishes the same ones (a default counts the parent's derivations, which move).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_names: Option<(String, String)>,
    /// Everything done, including the catalogue entry of the child.
    #[serde(default)]
    pub done: bool,
}

/// A job as the API tracks it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub kind: JobKind,
    /// NFT of the model the job runs on (lowercase).
    pub model: String,
    /// The buyer: signer of the request and consumer of the order (lowercase).
    pub consumer: String,
    pub order_tx: String,
    /// Index of the order's `OrderStarted` log in its transaction (the ledger key).
    #[serde(default)]
    pub order_log_index: u64,
    /// Private: holds object-store prefixes.
    pub spec: JobSpec,
    #[serde(default)]
    pub queue_ref: Option<String>,
    pub phase: JobPhase,
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub completion: CompletionSteps,
    /// True once a failed job's order has been released for a retry.
    #[serde(default)]
    pub order_released: bool,
    /// Hash of the operator-signed receipt, once the job succeeded.
    #[serde(default)]
    pub receipt_hash: Option<Hash32>,
    /// Perplexity measured by a successful evaluate job (shown in the catalogue); `Some(+∞)`
    /// when unbounded (stored as `"inf"`, see [`posthuman_types::outputs::unbounded`]).
    #[serde(default, with = "posthuman_types::outputs::unbounded::option")]
    pub perplexity: Option<f64>,
    /// The input commitment exactly as the job's public receipt states it (`input_data_hash`:
    /// the dataset's hash salted with the buyer's salt), set at completion. The card shows
    /// this, never the plain SHA-256, which would confirm a guessed dataset.
    #[serde(default)]
    pub input_data_hash: Option<Hash32>,
}

/// Outcome of claiming an order for a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderClaim {
    /// The order is now bound to this job (or already was: claims are idempotent per job).
    Claimed,
    /// Another job holds the order.
    Taken { job_id: String },
}

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// Transient: retry later.
    #[error("catalogue unavailable: {0}")]
    Unavailable(String),
    /// A stored record does not parse (a bug or tampering): needs an operator.
    #[error("corrupt catalogue record: {0}")]
    Corrupt(String),
    /// Anything else.
    #[error("catalogue error: {0}")]
    Backend(String),
}

/// Durable state of the API.
#[async_trait::async_trait]
pub trait Catalogue: Send + Sync + Debug + 'static {
    /// Creates or replaces a model (keyed by its NFT).
    async fn put_model(&self, m: &ModelRecord) -> Result<(), CatalogueError>;
    async fn get_model(&self, nft: &str) -> Result<Option<ModelRecord>, CatalogueError>;
    /// Every model, oldest first.
    async fn list_models(&self) -> Result<Vec<ModelRecord>, CatalogueError>;
    /// Up to `limit` models after `after`, oldest first (by `created_at`, then NFT), read
    /// through an index: the cost is the page's, not the catalogue's.
    async fn models_page(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<ModelRecord>, CatalogueError>;

    /// Creates or replaces a job (keyed by its id).
    async fn put_job(&self, j: &JobRecord) -> Result<(), CatalogueError>;
    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>, CatalogueError>;
    /// Records that a job was handed to the queue: a `Submitting` job becomes `Queued` with
    /// `queue_ref` and `updated_at = at`, atomically with respect to [`Catalogue::put_job`].
    /// A job already past `Submitting` (a fast job's completion landed between the queue
    /// submit and this write) is left as it is, so a record never moves back a phase.
    /// Returns whether the job moved to `Queued`.
    async fn mark_queued(
        &self,
        job_id: &str,
        queue_ref: &str,
        at: u64,
    ) -> Result<bool, CatalogueError>;
    /// Jobs on one model, oldest first. Reads every job: for sweeps, never for a page.
    async fn jobs_for_model(&self, nft: &str) -> Result<Vec<JobRecord>, CatalogueError>;
    /// What a model's card shows of its jobs: exact counts by kind, and the `latest`
    /// newest evaluations and receipts, read through per-model indexes (the cost is
    /// `latest` records, not the model's jobs). Indexes a catalogue wrote before they
    /// existed are built on first use.
    async fn model_activity(
        &self,
        nft: &str,
        latest: usize,
    ) -> Result<ModelActivity, CatalogueError>;
    /// NFTs of the models derived from `nft` (whose card names it as parent), oldest first
    /// (by `created_at`, then NFT), at most `limit`, read through a per-parent index (the
    /// cost is this model's children, not the catalogue). An index a catalogue wrote before it
    /// existed is built on first use.
    async fn children(&self, nft: &str, limit: usize) -> Result<Vec<String>, CatalogueError>;
    /// Up to `limit` jobs of one consumer after `after`, newest first (by `created_at`
    /// descending, then job id), read through a per-consumer index.
    async fn jobs_of_consumer(
        &self,
        consumer: &str,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<JobRecord>, CatalogueError>;

    /// Binds an order to a job, atomically: of concurrent claims on one order exactly one
    /// wins. Claiming again for the same job is `Claimed`. Each claim is a new generation of
    /// the order's binding, so releasing one can never free a later one.
    async fn claim_order(&self, order_tx: &str, job_id: &str)
    -> Result<OrderClaim, CatalogueError>;
    /// Unbinds an order held by `job_id` (its job failed), so a new job may claim it.
    /// Returns false if the order was not held by that job, including when a duplicate
    /// release races the first one and a new job claimed the order in between.
    async fn release_order(&self, order_tx: &str, job_id: &str) -> Result<bool, CatalogueError>;
    /// The job holding an order, if any.
    async fn order_holder(&self, order_tx: &str) -> Result<Option<String>, CatalogueError>;

    /// Records a request nonce of `signer`; false if it was used before (a replay).
    async fn use_nonce(&self, signer: &str, nonce: &str) -> Result<bool, CatalogueError>;

    /// The number of `job_id`'s derivation among `parent`'s, for its default name
    /// ("‹parent› · fine-tune N"): above `floor` (the derivations the parent had before these
    /// numbers were kept) and above every number claimed before, distinct across jobs even
    /// when their completions run at once, and the same when the job claims again. A claim
    /// whose job never derives leaves a gap, never a duplicate.
    async fn claim_child_ordinal(
        &self,
        parent: &str,
        job_id: &str,
        floor: u64,
    ) -> Result<u64, CatalogueError>;
}

/// Jobs on one model by kind (every phase).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindCounts {
    pub train: u64,
    pub infer: u64,
    pub evaluate: u64,
}

impl KindCounts {
    /// Counts one more job of `kind`.
    pub fn add(&mut self, kind: JobKind) {
        match kind {
            JobKind::Train => self.train += 1,
            JobKind::Infer => self.infer += 1,
            JobKind::Evaluate => self.evaluate += 1,
        }
    }
}

/// What [`Catalogue::model_activity`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelActivity {
    /// Every job on the model.
    pub counts: KindCounts,
    /// The newest jobs with a measured perplexity (evaluations), newest first (by
    /// `created_at` descending, then job id).
    pub evaluations: Vec<JobRecord>,
    /// The newest jobs' receipt hashes, newest first (same order).
    pub receipts: Vec<Hash32>,
}

impl ModelActivity {
    /// The activity of `jobs` (all jobs of one model, any order), as an index would give it.
    pub fn of_jobs(jobs: &[JobRecord], latest: usize) -> ModelActivity {
        let mut counts = KindCounts::default();
        for j in jobs {
            counts.add(j.kind);
        }
        let mut newest: Vec<&JobRecord> = jobs.iter().collect();
        newest
            .sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.job_id.cmp(&b.job_id)));
        let evaluations =
            newest.iter().filter(|j| is_evaluation(j)).take(latest).map(|j| (*j).clone()).collect();
        let receipts = newest.iter().filter_map(|j| j.receipt_hash).take(latest).collect();
        ModelActivity { counts, evaluations, receipts }
    }
}

/// A job a card lists as an evaluation: one with a measured perplexity.
pub fn is_evaluation(j: &JobRecord) -> bool {
    j.perplexity.is_some()
}

/// Records a page holds when the caller names no limit.
pub const DEFAULT_PAGE: usize = 50;
/// Most records one page may hold.
pub const MAX_PAGE: usize = 200;

/// Where a page of a list ended: the sort key (`created_at`, id) of its last record. The API
/// hands it out as an opaque string ([`Cursor::encode`]) and takes it back to resume after it,
/// so a walk sees every record once even while new ones are added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last record returned.
    pub at: u64,
    /// Its id (job id, or model NFT).
    pub id: String,
}

impl Cursor {
    /// The wire form, `<at>.<id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at, self.id)
    }

    /// Parses the wire form; `None` for anything this catalogue did not hand out.
    pub fn decode(s: &str) -> Option<Cursor> {
        let (at, id) = s.split_once('.')?;
        // A bounded u64 without sign or leading '+', so one cursor has one spelling.
        if at.is_empty() || at.len() > 20 || !at.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let at = at.parse().ok()?;
        if id.is_empty()
            || id.len() > 128
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return None;
        }
        Some(Cursor { at, id: id.to_ascii_lowercase() })
    }
}

/// One page of a list, and where the next one starts (`None` on the last page).
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
