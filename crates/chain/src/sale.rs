//! Selling a derived model's datatokens on Ocean's own FixedRateExchange, so any Ocean client
//! buys them as it buys any asset (`ModelLineage.openSale` / `closeSale`).
//!
//! Ocean 2.6's exchange sells only what it mints or holds from `sellDT`s; a child's exchange
//! never mints, so `openSale` moves the trainer's tokens into it with `sellDT`, after giving
//! it the OCEAN float that needs (see the contract notes): the trainer approves the lineage
//! contract for the tokens and for [`float_allowance`] of OCEAN, of which all but Ocean's swap
//! fee comes back. The trainer signs every transaction; the operator plays no part. Like any
//! Ocean exchange it also buys back at the trainer's price from the OCEAN it holds, so the
//! proceeds are the trainer's once collected (`collectBT`, which anyone may call).

use alloy::primitives::{Address, B256, U256};
use alloy::rpc::types::TransactionReceipt;

use crate::bindings::{FixedRateExchange, ModelLineage};
use crate::lineage::send_lineage;
use crate::{Chain, ChainError};

/// A derived model's exchange as the chain has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sale {
    pub exchange_id: B256,
    /// OCEAN base units per whole datatoken (before Ocean's swap fee).
    pub rate: U256,
    pub active: bool,
    /// Datatokens a buyer can get now (what was put on sale and not yet sold).
    pub available: U256,
    /// The exchange's owner of record (the trainer).
    pub owner: Address,
}

/// An `openSale` transaction and what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaleOpened {
    pub exchange_id: B256,
    pub tx_hash: B256,
    /// Gas of `openSale` alone (the approval before it is not counted).
    pub gas_used: u64,
}

pub use posthuman_types::model::OCEAN_MIN_RATE as MIN_RATE;

/// The OCEAN (base units) `open_sale` approves the lineage contract for to deposit `amount`
/// datatokens ([`posthuman_types::model::sale_float`]).
pub fn float_allowance(amount: U256) -> U256 {
    U256::from(posthuman_types::model::sale_float(amount.saturating_to::<u128>()))
}

impl Chain {
    /// The id Ocean's exchange gives the (OCEAN, `datatoken`) pair: one exchange per pair.
    pub async fn exchange_id_of(&self, datatoken: Address) -> Result<B256, ChainError> {
        let fre = FixedRateExchange::new(self.book.fixed_rate, &self.provider);
        Ok(fre.generateExchangeId(self.book.ocean, datatoken).call().await?)
    }

    /// The sale of `datatoken` on the deployment's exchange, if one was ever opened.
    pub async fn sale_of(&self, datatoken: Address) -> Result<Option<Sale>, ChainError> {
        let id = self.exchange_id_of(datatoken).await?;
        let fre = FixedRateExchange::new(self.book.fixed_rate, &self.provider);
        let x = fre.getExchange(id).call().await?;
        if x.fixedRate.is_zero() {
            return Ok(None);
        }
        Ok(Some(Sale {
            exchange_id: id,
            rate: x.fixedRate,
            active: x.active,
            available: x.dtSupply,
            owner: x.exchangeOwner,
        }))
    }

    /// Puts `amount` of `trainer`'s datatokens of derived model `child_nft` on sale at `rate`
    /// (OCEAN base units per datatoken, at least [`MIN_RATE`]), approving the lineage contract
    /// first for exactly `amount` and for the deposit's OCEAN float ([`float_allowance`]);
    /// `amount` 0 re-prices or reopens. Trainer only, once the derivation is recorded.
    pub async fn open_sale(
        &self,
        trainer: Address,
        child_nft: Address,
        rate: U256,
        amount: U256,
    ) -> Result<SaleOpened, ChainError> {
        self.check_signer(trainer)?;
        let datatoken = self
            .model(child_nft)
            .await?
            .ok_or_else(|| ChainError::Invalid(format!("{child_nft} is not a known model")))?
            .datatoken;
        if !amount.is_zero() {
            self.approve(trainer, datatoken, self.book.lineage, amount).await?;
            let float = float_allowance(amount);
            if !float.is_zero() {
                self.approve(trainer, self.book.ocean, self.book.lineage, float).await?;
            }
        }
        let c = ModelLineage::new(self.book.lineage, &self.provider);
        let r =
            send_lineage(c.openSale(child_nft, self.book.fixed_rate, rate, amount).from(trainer))
                .await?;
        let ev = r.decoded_log::<ModelLineage::SaleOpened>().ok_or(ChainError::MissingEvent {
            event: "SaleOpened",
            tx: r.transaction_hash.to_string(),
        })?;
        Ok(SaleOpened {
            exchange_id: ev.exchangeId,
            tx_hash: r.transaction_hash,
            gas_used: r.gas_used,
        })
    }

    /// Pauses the sale of `child_nft` (trainer only); unsold tokens stay reserved for it.
    pub async fn close_sale(
        &self,
        trainer: Address,
        child_nft: Address,
    ) -> Result<TransactionReceipt, ChainError> {
        self.check_signer(trainer)?;
        let c = ModelLineage::new(self.book.lineage, &self.provider);
        send_lineage(c.closeSale(child_nft, self.book.fixed_rate).from(trainer)).await
    }
}
