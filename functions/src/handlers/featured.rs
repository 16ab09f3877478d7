//! `POST /api/models/{nft}/featured`: the model's owner picks which buyers' evaluations its
//! card endorses.
//!
//! Anyone who pays may evaluate a model, and every evaluation is listed with its evaluator
//! and (salted) dataset commitment; only those the owner features are marked as endorsed and
//! listed first. The request is a JSON body `{model, job_ids, nonce, expires_at}` signed as
//! EIP-712 typed data with the action [`FEATURE_EVALUATIONS`] under the deployment's domain
//! (header `x-posthuman-signature`). The owner is the root model's owner, or a derived
//! model's trainer. The list replaces the previous one (empty: nothing featured).

use posthuman_receipts::request::FEATURE_EVALUATIONS;
use posthuman_types::JobKind;

use super::models::{lower, model_of_owner};
use super::views::ModelView;
use crate::auth;
use crate::catalogue::{JobPhase, is_evaluation, now_secs};
use crate::deps::Deps;
use crate::error::ApiError;

/// The most evaluations a card features.
pub const MAX_FEATURED: usize = 16;

/// The signed body (`posthuman_types::requests`).
pub use posthuman_types::requests::FeatureRequest;

/// Checks the owner's signed request and stores the featured list; returns the new card.
pub async fn feature_evaluations(
    deps: &Deps,
    nft: &str,
    body: &[u8],
    signature: &str,
) -> Result<ModelView, ApiError> {
    let signer = auth::recover_request(&auth::domain(deps), FEATURE_EVALUATIONS, body, signature)?;
    let req: FeatureRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("request: {e}")))?;
    auth::check_expiry(req.expires_at, now_secs())?;
    auth::check_nonce(&req.nonce)?;
    let _turn = super::record_turn().await;
    let mut model =
        model_of_owner(deps, nft, &req.model, signer, "feature its evaluations").await?;
    if req.job_ids.len() > MAX_FEATURED {
        return Err(ApiError::Invalid {
            field: "job_ids".into(),
            reason: format!("at most {MAX_FEATURED}"),
        });
    }
    for id in &req.job_ids {
        // By id (at most MAX_FEATURED reads), never every job on the model.
        let job = deps.catalogue.get_job(id).await?;
        let ok = job.is_some_and(|j| {
            j.model == model.card.nft
                && j.kind == JobKind::Evaluate
                && j.phase == JobPhase::Succeeded
                && is_evaluation(&j)
        });
        if !ok {
            return Err(ApiError::Invalid {
                field: "job_ids".into(),
                reason: format!(
                    "{:?} is not a succeeded evaluation of this model",
                    id.chars().take(64).collect::<String>()
                ),
            });
        }
        if req.job_ids.iter().filter(|j| *j == id).count() > 1 {
            return Err(ApiError::Invalid {
                field: "job_ids".into(),
                reason: format!("{id} is listed twice"),
            });
        }
    }
    if !deps.catalogue.use_nonce(&lower(signer), &req.nonce).await? {
        return Err(ApiError::Conflict("nonce already used (replayed request)".into()));
    }
    model.featured = req.job_ids;
    deps.catalogue.put_model(&model).await?;
    super::models::get_model(deps, &model.card.nft).await
}
