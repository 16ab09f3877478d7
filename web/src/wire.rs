//! What the storefront reads from the API, as the API serialises it (`functions/`'s public
//! views). Only the fields the pages show are declared; serde ignores the rest, so the API
//! may grow without breaking deployed storefronts. Shared shapes (model card, progress,
//! receipts) come from `posthuman-types` and `posthuman-receipts`, not from here.

use posthuman_receipts::Address;
use posthuman_types::pricing::{ComputeEstimate, PriceBreakdown};
use posthuman_types::{Budget, Hash32, JobKind, JobProgress, ModelCard};
use serde::Deserialize;

/// `GET /api/chain`: where the chain is and the deployment's address book.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ChainInfo {
    /// `None` when the operator publishes no public RPC (its own may carry a provider key).
    pub rpc_url: Option<String>,
    pub address_book: AddressBook,
    /// Confirmations an order needs before the API accepts a job paid with it (older
    /// servers omit it: 0).
    #[serde(default)]
    pub min_confirmations: u64,
}

/// The parts of the address book the storefront uses.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct AddressBook {
    pub chain_id: u64,
    pub operator: Address,
    /// The `ModelLineage` contract: the receipts' EIP-712 verifying contract.
    pub lineage: Address,
    /// The OCEAN token (the account page reads its balance).
    #[serde(default)]
    pub ocean: Option<Address>,
    /// Ocean's fixed-rate exchange (datatokens are bought there).
    #[serde(default)]
    pub fixed_rate: Address,
}

/// Job counts by kind.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct JobCounts {
    pub train: u64,
    pub infer: u64,
    pub evaluate: u64,
}

/// An evaluation listed on a model.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct EvaluationView {
    pub job_id: String,
    /// `"inf"` when unbounded.
    #[serde(deserialize_with = "posthuman_types::outputs::unbounded::deserialize")]
    pub perplexity: f64,
    /// The buyer who ran it: an evaluation is the evaluator's claim, not the owner's.
    #[serde(default)]
    pub evaluator: Option<String>,
    /// The dataset's salted commitment, as its public receipt states it.
    #[serde(default)]
    pub dataset_commitment: Option<posthuman_types::Hash32>,
    #[serde(default)]
    pub context_len: Option<u32>,
    #[serde(default)]
    pub stride: Option<u32>,
    /// Featured by the model's owner.
    #[serde(default)]
    pub featured: Option<bool>,
}

/// `GET /api/models` entries and `GET /api/models/{nft}`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ModelView {
    #[serde(flatten)]
    pub card: ModelCard,
    /// NFTs from the parent up to the root (empty for a root).
    #[serde(default)]
    pub lineage: Vec<String>,
    /// NFTs of the models derived from this one, oldest first (`None` from an older API: the
    /// page then finds them in the catalogue it has).
    #[serde(default)]
    pub children: Option<Vec<String>>,
    pub source_job: Option<String>,
    pub receipt_hash: Option<Hash32>,
    #[serde(default)]
    pub jobs: JobCounts,
    #[serde(default)]
    pub evaluations: Vec<EvaluationView>,
    #[serde(default)]
    pub created_at: u64,
    /// The model's longest context (absent from an older API: its refusal is shown instead).
    #[serde(default)]
    pub n_positions: Option<u32>,
}

/// `GET /api/models/{nft}/quote?kind=` and `POST /api/models/{nft}/quote`
/// (`posthuman-functions`' `Quote`; its compute and price lines are `posthuman_types`').
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Quote {
    pub model: String,
    pub datatoken: String,
    pub kind: JobKind,
    /// The service index `startOrder` takes.
    pub service_index: u64,
    pub datatokens: String,
    /// OCEAN base units for one datatoken on the exchange (fees included), if on sale.
    pub price: Option<String>,
    pub exchange_id: Option<Hash32>,
    pub estimate: ComputeEstimate,
    /// One line per component with its formula; the total is the provider fee.
    pub breakdown: PriceBreakdown,
    pub budget: Budget,
    pub royalty: RoyaltyLine,
    pub provider_fee: ProviderFeeView,
    pub expires_at: u64,
}

/// The royalty every order of a datatoken pays besides the fee.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RoyaltyLine {
    pub label: String,
    pub token: String,
    pub amount: String,
    pub recipient: String,
}

/// The operator-signed provider fee, as `startOrder` takes it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ProviderFeeView {
    pub provider_fee_address: String,
    pub provider_fee_token: String,
    pub provider_fee_amount: String,
    pub v: u8,
    pub r: String,
    pub s: String,
    pub valid_until: u64,
    pub provider_data: String,
}

/// `POST /api/jobs`'s answer.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Submitted {
    pub job_id: String,
}

/// A train job's derived model.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ChildAsset {
    pub nft: String,
    pub datatoken: String,
}

/// Where a job stands (`state` tag, as the API writes it).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed { reason: String, order_reusable: bool },
}

/// `GET /api/jobs/{id}` and `GET /api/jobs?consumer=` entries.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JobView {
    pub job_id: String,
    pub kind: JobKind,
    pub model: String,
    pub consumer: String,
    pub order_tx: String,
    #[serde(flatten)]
    pub state: JobState,
    pub progress: Option<JobProgress>,
    pub derived_model: Option<ChildAsset>,
    pub completed: bool,
    pub receipt_hash: Option<Hash32>,
    pub created_at: u64,
    pub updated_at: u64,
}

impl JobView {
    /// Whether the job may still change (so its page keeps polling).
    pub fn in_flight(&self) -> bool {
        match self.state {
            JobState::Queued | JobState::Running => true,
            JobState::Succeeded => !self.completed,
            JobState::Failed { .. } => false,
        }
    }
}

/// The API's error body.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_view_as_the_api_writes_it_parses() {
        let v: JobView = serde_json::from_value(serde_json::json!({
            "job_id": "j-1", "kind": "train", "model": "0x01", "consumer": "0x02",
            "order_tx": "0x03", "state": "running",
            "progress": {"kind": "train", "phase": "training", "done": 3, "total": 10,
                         "loss": 4.5, "tokens_per_sec": 100.0, "elapsed_secs": 1.0, "eta_secs": 2.0},
            "derived_model": null, "completed": false, "receipt_hash": null,
            "created_at": 1, "updated_at": 2, "extra_field_from_a_newer_api": true
        }))
        .unwrap();
        assert_eq!(v.state, JobState::Running);
        assert_eq!(v.progress.unwrap().done, 3);
        let failed: JobState = serde_json::from_value(serde_json::json!({
            "state": "failed", "reason": "oom", "exit_code": 3, "order_reusable": true
        }))
        .unwrap();
        assert_eq!(failed, JobState::Failed { reason: "oom".into(), order_reusable: true });
    }
}
