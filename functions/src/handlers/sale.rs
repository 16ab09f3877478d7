//! `POST /models/{nft}/sale`: brings a derived model's card in line with its sale on Ocean's
//! fixed-rate exchange. The trainer opens, re-prices or closes that sale on chain with his own
//! key (`ModelLineage.openSale` / `closeSale`); the API signs nothing and takes no body, it
//! reads the exchange, so anyone may ask it to look again.

use alloy::primitives::Address;

use super::chain_err;
use super::models::{find_model, view};
use crate::deps::Deps;
use crate::error::ApiError;
use crate::handlers::views::ModelView;
use posthuman_types::Hash32;

/// Reads the derived model's exchange and stores what it finds on the card: its id and price
/// while the sale is open, neither once it is closed. A published model's exchange is fixed
/// at publication, so only derived models are synced.
pub async fn sync_sale(deps: &Deps, nft: &str) -> Result<ModelView, ApiError> {
    let _turn = super::record_turn().await;
    let mut m = find_model(deps, nft).await?;
    if m.card.parent.is_none() {
        return Err(ApiError::Conflict(format!(
            "{} is a published model: its exchange is the one it was published with",
            m.card.nft
        )));
    }
    let datatoken: Address =
        m.card.datatoken.parse().map_err(|_| {
            ApiError::Internal(format!("bad stored datatoken {}", m.card.datatoken))
        })?;
    let sale = deps.chain.sale_of(datatoken).await.map_err(chain_err)?;
    let (exchange_id, price) = match sale {
        Some(s) if s.active => (Some(Hash32(s.exchange_id.0)), Some(s.rate.to_string())),
        _ => (None, None),
    };
    if (m.card.exchange_id, m.card.price.as_ref()) != (exchange_id, price.as_ref()) {
        m.card.exchange_id = exchange_id;
        m.card.price = price;
        deps.catalogue.put_model(&m).await?;
    }
    view(deps, &m).await
}
