//! An asynchronous publish: what `POST /api/models` answers for a direct upload (202 and a
//! publish id) and what `GET /api/publishes/{id}` then reports, live, until the model is
//! listed or the publish failed.
//!
//! Why asynchronous: a 1 GiB model's weight work (read back, check every value, hash, store)
//! takes 25-33 s before its three transactions wait for receipts, and API Gateway's HTTP API
//! cuts a request at 29 s. So the request is checked cheaply and answered at once; the work
//! runs in the background and writes its phase and progress into a status record.

use serde::{Deserialize, Serialize};

use crate::views::{ErrorBody, ModelView};

/// What `POST /api/models` answers (HTTP 202) for a publish whose files came by a direct
/// upload: the work runs in the background; poll `status_url`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishAccepted {
    /// `p-` and 32 hex digits (128 random bits: only its sender knows it).
    pub publish_id: String,
    /// `/api/publishes/{publish_id}`, relative to the API's base URL.
    pub status_url: String,
}

/// Where a publish stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PublishState {
    /// Accepted; the background work has not started yet.
    Queued,
    /// The work is running (`progress` says where).
    Running,
    /// Listed: `model` is the model's card, as the synchronous publish answered it.
    Done,
    /// Nothing was published: `error` is what the synchronous publish would have answered.
    Failed,
}

impl PublishState {
    /// Whether the publish may still change (so a client keeps polling).
    pub fn in_flight(self) -> bool {
        matches!(self, PublishState::Queued | PublishState::Running)
    }
}

/// Live progress of a running publish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishProgress {
    /// `fetching` (the staged files read back and hashed), `checking` (every tensor's name,
    /// shape and values, the canonical hash), `storing` (the files under `models/`), `chain`
    /// (the transactions), `listing` (the catalogue).
    pub phase: String,
    /// Units done and total: bytes in `fetching`, `checking` and `storing`; transactions
    /// with receipts in `chain` (of 3: the asset, its exchange, its DDO).
    pub done: u64,
    pub total: u64,
    /// `bytes` or `transactions`.
    pub unit: String,
    /// In `chain`: the transaction being sent (`asset`, `exchange`, `ddo`).
    #[serde(default)]
    pub step: Option<String>,
    /// Seconds since the work started.
    pub elapsed_secs: f64,
}

/// Why a publish failed: the HTTP status and body the synchronous publish would have
/// answered (a 422 `invalid` for bad weights stays a 422 `invalid`, only delivered here).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishFailure {
    pub status: u16,
    /// [`ErrorBody::error`]: the stable code.
    pub error: String,
    /// [`ErrorBody::message`].
    pub message: String,
}

impl PublishFailure {
    /// The failure as the status and body the route would have answered. (Its fields are
    /// spelled out rather than a flattened [`ErrorBody`]: serde's flatten reading would add
    /// its buffering to the storefront's wasm.)
    pub fn new(status: u16, body: ErrorBody) -> Self {
        PublishFailure { status, error: body.error, message: body.message }
    }
}

/// `GET /api/publishes/{publish_id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishView {
    pub publish_id: String,
    /// The owner of record the signed request names (lowercase 0x…).
    pub owner: String,
    pub state: PublishState,
    /// While running.
    #[serde(default)]
    pub progress: Option<PublishProgress>,
    /// When done: the model's card.
    #[serde(default)]
    pub model: Option<ModelView>,
    /// When failed.
    #[serde(default)]
    pub error: Option<PublishFailure>,
    pub created_at: u64,
    pub updated_at: u64,
    /// Unix seconds: a publish still queued or running after this is reported failed (its
    /// worker died or timed out); nothing it had not finished is listed.
    pub deadline: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_reads_as_the_error_body_plus_its_status() {
        let f = PublishFailure::new(
            422,
            ErrorBody { error: "invalid".into(), message: "invalid weights: x".into() },
        );
        let j = serde_json::to_string(&f).unwrap();
        assert_eq!(j, r#"{"status":422,"error":"invalid","message":"invalid weights: x"}"#);
        assert_eq!(serde_json::from_str::<PublishFailure>(&j).unwrap(), f);
        assert!(PublishState::Queued.in_flight() && PublishState::Running.in_flight());
        assert!(!PublishState::Done.in_flight() && !PublishState::Failed.in_flight());
    }
}
