//! `POST /api/models/{nft}/card`: the model's owner of record edits its card (description,
//! their own tags and, for a root, its licence: `posthuman_types::card`), and the model's
//! Ocean DDO on chain follows (`metadata.license` too). A derived model's licence is its
//! root's, copied when it was derived: its trainer's edit naming another is a 422 naming
//! `license`.
//!
//! The request is a JSON body [`CardEdit`] signed as EIP-712 typed data with the action
//! [`EDIT_CARD`] under the deployment's domain (header `x-posthuman-signature`), with a
//! single-use nonce and an expiry, like every write. Who may edit: a derived model's trainer,
//! a root's owner of record (the publisher who signed its publication; the operator holds the
//! NFT only in custody) — [`ModelCard::owner_of_record`], as for featuring evaluations.
//!
//! The DDO is re-set as Ocean's publish flow updates an asset: `setMetaData` again on the data
//! NFT, which then emits `MetadataUpdated` (Ocean's indexers re-read the asset), with
//! `created` unchanged, `updated` = the edit's time, and `metaDataHash` the SHA-256 of the new
//! bytes. A root's NFT is held by the operator, who sends it; a derived model's NFT is owned
//! by the lineage contract, whose operator-only `setChildMetaData` forwards it.
//!
//! Order, so that a retry heals any failure: the edited card goes to the catalogue first,
//! marked `ddo_pending`; then the DDO goes on chain; then the mark is cleared. If the chain
//! step fails the card already shows the edit and the mark stays, so the next edit — even
//! one that changes nothing — sends the DDO; if clearing the mark fails, the next edit sends
//! the same DDO once more (harmless). An edit that changes nothing on a card with no pending
//! DDO sends no transaction. Model records are written under one lock per process, so an
//! edit never interleaves with another edit, a featuring or a sale sync of the same record
//! (on AWS the sending function runs one instance at a time).
//!
//! [`ModelCard::owner_of_record`]: posthuman_types::ModelCard::owner_of_record

use posthuman_receipts::request::EDIT_CARD;
use posthuman_types::card::{CardEdit, CardError, EDITABLE};

use super::chain_err;
use super::models::{lower, model_ddo, model_of_owner};
use super::views::ModelView;
use crate::auth;
use crate::catalogue::{ModelRecord, now_secs};
use crate::deps::Deps;
use crate::error::ApiError;

/// A refused field as the API's 422.
pub(crate) fn card_invalid(e: CardError) -> ApiError {
    ApiError::Invalid { field: e.field, reason: e.reason }
}

/// The edit in `body`: a field other than the editable ones is a 422 naming it (the name and
/// symbol live on chain in the NFT and datatoken; hashes and lineage are not the owner's to
/// change), malformed JSON a 400.
fn parse_edit(body: &[u8]) -> Result<CardEdit, ApiError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("request: {e}")))?;
    if let Some(obj) = v.as_object()
        && let Some(k) = obj.keys().find(|k| {
            !EDITABLE.contains(&k.as_str())
                && !["model", "nonce", "expires_at"].contains(&k.as_str())
        })
    {
        return Err(ApiError::Invalid {
            field: k.chars().take(32).collect(),
            reason: format!("not editable: a card edit changes {}", EDITABLE.join(", ")),
        });
    }
    serde_json::from_value(v).map_err(|e| ApiError::bad(format!("request: {e}")))
}

/// Checks the owner's signed edit, stores the card and re-sets the DDO on chain when it
/// changed (or an earlier edit's DDO is still pending); returns the new card.
pub async fn edit_card(
    deps: &Deps,
    nft: &str,
    body: &[u8],
    signature: &str,
) -> Result<ModelView, ApiError> {
    let signer = auth::recover_request(&auth::domain(deps), EDIT_CARD, body, signature)?;
    let req = parse_edit(body)?;
    auth::check_expiry(req.expires_at, now_secs())?;
    auth::check_nonce(&req.nonce)?;
    let _turn = super::record_turn().await;
    let mut model = model_of_owner(deps, nft, &req.model, signer, "edit its card").await?;
    let card = req.apply(&model.card).map_err(card_invalid)?;
    if !deps.catalogue.use_nonce(&lower(signer), &req.nonce).await? {
        return Err(ApiError::Conflict("nonce already used (replayed request)".into()));
    }
    if card != model.card {
        model.card = card;
        model.card_updated_at = Some(now_secs().max(model.created_at));
        model.ddo_pending = true;
        deps.catalogue.put_model(&model).await?;
    }
    if model.ddo_pending {
        set_ddo(deps, &model).await?;
        model.ddo_pending = false;
        deps.catalogue.put_model(&model).await?;
    }
    super::models::get_model(deps, &model.card.nft).await
}

/// Sets the record's DDO on chain: through the NFT holder (the operator) for a root, through
/// `ModelLineage.setChildMetaData` for a derived model.
async fn set_ddo(deps: &Deps, model: &ModelRecord) -> Result<(), ApiError> {
    let ddo = model_ddo(deps, model)?;
    let r = match model.card.parent {
        None => deps.chain.set_metadata(deps.chain.operator(), &ddo).await,
        Some(_) => deps.chain.set_child_metadata(&ddo).await,
    };
    r.map_err(chain_err)?;
    Ok(())
}
