//! The Ocean Provider requests the API's Ocean facade reads (`/api/ocean/…`), in the shapes
//! ocean.js 8.6.2 sends: a job's model and kind as an Ocean `ComputeAsset`, its terms, data
//! and salt in `userdata`. Other fields ocean.js sends are ignored, except inside `userdata`,
//! which is ours and refuses unknown keys.

use serde::Deserialize;

use crate::{Hash32, JobParams};

/// An Ocean `ComputeAsset`: here, the model and the service (job kind) of one job.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ComputeAsset {
    /// The model's DID (Ocean's `did:op:` of its data NFT and chain).
    pub document_id: String,
    /// The job kind: `train`, `infer` or `evaluate`.
    pub service_id: String,
    /// The `startOrder` transaction that paid for the job (computeStart).
    #[serde(default)]
    pub transfer_tx_id: Option<String>,
    #[serde(default)]
    pub userdata: Option<Userdata>,
    #[serde(default)]
    pub file_object: Option<serde_json::Value>,
}

/// What a job's `userdata` carries; unknown keys are refused, so a misspelt parameter is an
/// error rather than a silently different job.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Userdata {
    /// The job's parameters (none: the kind's default terms, as `GET …/quote?kind=`).
    #[serde(default)]
    pub params: Option<JobParams>,
    /// The quoted dataset length, when the dataset sent is shorter.
    #[serde(default)]
    pub dataset_bytes: Option<u64>,
    /// The dataset (train and evaluate), inline as text.
    #[serde(default)]
    pub dataset: Option<String>,
    /// 32 random bytes the buyer keeps (required at computeStart), as in a job request.
    #[serde(default)]
    pub salt: Option<Hash32>,
}

/// The `payment` ocean.js sends: only the chain and the fee token are checked.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    #[serde(default)]
    pub chain_id: Option<u64>,
    #[serde(default)]
    pub token: Option<String>,
}

/// The body of `initializeCompute` (ocean.js 8.6.2); other fields are ignored.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct InitializeCompute {
    pub datasets: Vec<ComputeAsset>,
    #[serde(default)]
    pub algorithm: Option<serde_json::Value>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub payment: Option<Payment>,
}

/// The body of `computeStart` (ocean.js 8.6.2); other fields are ignored.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ComputeStart {
    /// The buyer: the order's consumer and the request's signer.
    pub consumer_address: String,
    /// Ocean's request signature (ocean.js `signRequest`): EIP-191 `personal_sign` over the
    /// 32 bytes keccak256(utf8(consumerAddress + nonce + command)), command `startCompute`.
    pub signature: String,
    /// The provider's nonce (`GET /api/ocean/nonce`, a microsecond clock) plus one: at most
    /// 10 minutes old, used once. A string from ocean.js; a number is taken too.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub nonce: serde_json::Value,
    #[serde(default)]
    pub datasets: Vec<ComputeAsset>,
    /// The older single-dataset field (ocean.js still sends it beside `datasets`).
    #[serde(default)]
    pub dataset: Option<ComputeAsset>,
    #[serde(default)]
    pub algorithm: Option<serde_json::Value>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub chain_id: Option<u64>,
    #[serde(default)]
    pub payment: Option<Payment>,
}

/// What `GET /api/ocean/computeResult` is asked (its query).
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(rename_all = "camelCase")]
pub struct ResultQuery {
    /// The buyer.
    pub consumer_address: String,
    /// The job.
    pub job_id: String,
    /// The result's index in the job's results.
    pub index: usize,
    /// The provider's nonce (`GET /api/ocean/nonce`, a microsecond clock) plus one: at most
    /// 10 minutes old, used once.
    pub nonce: String,
    /// Ocean's request signature (ocean.js `signRequest`): EIP-191 `personal_sign` over the
    /// 32 bytes keccak256(utf8(consumerAddress + nonce + command)), command
    /// `getComputeResult`.
    pub signature: String,
}
