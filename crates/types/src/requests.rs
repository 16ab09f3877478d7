//! The signed requests a client sends: the JSON a wallet signs (EIP-712
//! `PosthumanRequest{action, bodyHash, expiresAt, nonce}`, `bodyHash` = keccak256 of these
//! exact bytes) and the API checks before it acts.
//!
//! Each is the body of its route's JSON form, or its multipart `request` part. Unknown
//! fields are refused (`deny_unknown_fields`): a client never signs a field the API would
//! silently drop. Every request carries a single-use `nonce` and an `expires_at` (unix
//! seconds, at most an hour ahead).

use serde::{Deserialize, Serialize};

use crate::{Hash32, JobParams, RewardScheme};

/// The signed request of `POST /api/models` (action `publish-model`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub name: String,
    pub symbol: String,
    #[serde(default)]
    pub description: String,
    /// The publisher (must sign the request and be an allowed publisher).
    pub owner: String,
    /// OCEAN base units per whole datatoken on the fixed-rate exchange.
    pub price: String,
    pub reward_scheme: RewardScheme,
    /// SHA-256 of the uploaded `model.safetensors` bytes: binds the file to the signature.
    pub weights_sha256: Hash32,
    /// SHA-256 of an uploaded PEFT `adapter_model.safetensors`, when the model is published
    /// as base weights plus a LoRA adapter (the listed model is the merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_sha256: Option<Hash32>,
    /// The model's licence: an SPDX identifier from the accepted list or a `LicenseRef-…`
    /// (`posthuman_types::card::check_license`); left out or `""`: none, and the default
    /// ("proprietary: compute-to-data only") applies. Models derived from it inherit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub license: Option<String>,
    pub nonce: String,
    pub expires_at: u64,
}

/// The signed request of `POST /api/jobs` (action `submit-job`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The model's NFT.
    pub model: String,
    /// The `startOrder` transaction that pays for this job.
    pub order_tx: String,
    /// The buyer: must sign this request and be the order's consumer.
    pub consumer: String,
    /// Kind-tagged parameters (`{"kind":"train", …}`), within the bounds of
    /// `posthuman-types`; a train job may name its derived model (`name`, `symbol`).
    pub params: JobParams,
    /// SHA-256 of the dataset part (train and evaluate): binds the upload to the signature.
    #[serde(default)]
    pub dataset_sha256: Option<Hash32>,
    /// 32 random bytes the buyer chose and keeps (required, not zero): public outputs
    /// (receipt `input_data_hash`, `metrics.json` and `report.json` `dataset_hash`) name the
    /// dataset and prompts only salted with it (SHA-256("posthuman:salted:" || salt || H)),
    /// so a public receipt confirms no guessed input; the buyer proves the binding with it
    /// (`posthuman verify JOB --salt`). Stored in the private spec only.
    pub salt: Hash32,
    pub nonce: String,
    pub expires_at: u64,
    /// The dataset length the order's provider fee was quoted for, when the dataset sent is
    /// shorter (absent: the quote was for exactly this dataset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quoted_dataset_bytes: Option<u64>,
}

/// The signed body of `POST /api/models/{nft}/featured` (action `feature-evaluations`): the
/// evaluations the model's owner features on its card, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FeatureRequest {
    /// The model's NFT (the one in the path).
    pub model: String,
    /// Succeeded evaluate jobs of this model (at most 16; empty clears the list).
    pub job_ids: Vec<String>,
    pub nonce: String,
    pub expires_at: u64,
}
