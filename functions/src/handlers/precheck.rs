//! Who may upload, decided from the small signed parts before any file part is read.
//!
//! A publish carries up to 1 GiB of weights and a submit up to 64 MiB of dataset. The API
//! reads the `request` and `signature` parts first (they must come first in the body) and
//! asks these checks whether the sender may upload at all; a stranger's or a forged upload
//! is refused before a byte of its files is read, so hostile bodies cost a few kilobytes
//! each; an admitted upload's files then stream to disk ([`crate::spool`]), so honest ones
//! cost a chunk of memory, not their size. The handlers repeat every check and do the rest (nonces, hashes, the order), so
//! calling them directly (Lambda, benches) loses nothing.

use posthuman_receipts::request::{PUBLISH_MODEL, SUBMIT_JOB};
use serde::Deserialize;

use super::models::find_model;
use crate::auth;
use crate::catalogue::now_secs;
use crate::deps::Deps;
use crate::error::ApiError;

/// The fields of a publish request the precheck needs.
#[derive(Deserialize)]
struct PublishHead {
    owner: String,
    expires_at: u64,
}

/// The fields of a job request the precheck needs.
#[derive(Deserialize)]
struct SubmitHead {
    model: String,
    consumer: String,
    expires_at: u64,
}

fn head<T: serde::de::DeserializeOwned>(request: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(request).map_err(|e| ApiError::bad(format!("request: {e}")))
}

/// A publish: signed for this deployment by the owner it names, an allowed publisher, not
/// expired.
pub async fn may_publish(deps: &Deps, request: &[u8], signature: &str) -> Result<(), ApiError> {
    let signer = auth::recover_request(&auth::domain(deps), PUBLISH_MODEL, request, signature)?;
    let h: PublishHead = head(request)?;
    auth::require_signer(&auth::parse_address("owner", &h.owner)?, &signer)?;
    auth::require_publisher(deps, &signer)?;
    auth::check_expiry(h.expires_at, now_secs())
}

/// A submit: signed for this deployment by the consumer it names, not expired, for a model
/// in the catalogue.
pub async fn may_submit(deps: &Deps, request: &[u8], signature: &str) -> Result<(), ApiError> {
    let signer = auth::recover_request(&auth::domain(deps), SUBMIT_JOB, request, signature)?;
    let h: SubmitHead = head(request)?;
    auth::require_signer(&auth::parse_address("consumer", &h.consumer)?, &signer)?;
    auth::check_expiry(h.expires_at, now_secs())?;
    find_model(deps, &h.model).await.map(|_| ())
}
