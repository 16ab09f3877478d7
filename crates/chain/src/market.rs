//! The peer market (`contracts/src/PeerMarket.sol`) through the client: a holder of any
//! ERC-20 (e.g. a reward datatoken: only its trainer can put one on Ocean's exchange, with
//! [`crate::sale`]) offers it at a fixed OCEAN price while keeping custody; buyers take part
//! or all of an offer, paying the seller directly in the same transaction.

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::Ethereum;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionReceipt;

use crate::bindings::{OceanToken, PeerMarket};
use crate::{Chain, ChainError};

/// An offer as the market records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    pub seller: Address,
    pub token: Address,
    /// OCEAN base units per whole (1e18 base units) token.
    pub price: U256,
    /// Token base units still for sale.
    pub remaining: U256,
    /// False once cancelled.
    pub active: bool,
}

/// Sends a market transaction, decoding the contract's custom errors into
/// `ChainError::MarketRejected` (the caller can fix its input) rather than a bare revert.
async fn send_market<P, D>(
    call: CallBuilder<P, D, Ethereum>,
) -> Result<TransactionReceipt, ChainError>
where
    P: Provider<Ethereum>,
    D: CallDecoder,
{
    let pending = match call.send().await {
        Ok(p) => p,
        Err(e) => return Err(market_err(e)),
    };
    let receipt = pending.get_receipt().await?;
    if !receipt.status() {
        return Err(ChainError::Reverted(format!("{}", receipt.transaction_hash)));
    }
    Ok(receipt)
}

fn market_err(e: alloy::contract::Error) -> ChainError {
    match e.as_decoded_interface_error::<PeerMarket::PeerMarketErrors>() {
        Some(err) => ChainError::MarketRejected(format!("{err:?}")),
        None => e.into(),
    }
}

impl Chain {
    fn market(
        &self,
    ) -> Result<PeerMarket::PeerMarketInstance<&alloy::providers::DynProvider>, ChainError> {
        if self.book.market == Address::ZERO {
            return Err(ChainError::Invalid(
                "the address book has no peer market (deployed before it existed)".into(),
            ));
        }
        Ok(PeerMarket::new(self.book.market, &self.provider))
    }

    /// The market's allowance over `owner`'s `token`.
    async fn market_allowance(&self, token: Address, owner: Address) -> Result<U256, ChainError> {
        let t = OceanToken::new(token, &self.provider);
        Ok(t.allowance(owner, self.book.market).call().await?)
    }

    /// Offers `amount` base units of `token` at `price` OCEAN base units per whole token, as
    /// `seller`: raises the market's allowance by `amount` (so several offers of one token
    /// each stay covered), then creates the offer.
    /// Returns the offer id and the gas of (approve, createOffer).
    pub async fn create_offer(
        &self,
        seller: Address,
        token: Address,
        price: U256,
        amount: U256,
    ) -> Result<(U256, Vec<(&'static str, u64)>), ChainError> {
        self.check_signer(seller)?;
        let m = self.market()?;
        let allowance = self.market_allowance(token, seller).await?.saturating_add(amount);
        let approve = self.approve(seller, token, self.book.market, allowance).await?;
        let receipt = send_market(m.createOffer(token, price, amount).from(seller)).await?;
        let id = receipt.decoded_log::<PeerMarket::OfferCreated>().map(|l| l.offerId).ok_or(
            ChainError::MissingEvent {
                event: "OfferCreated",
                tx: receipt.transaction_hash.to_string(),
            },
        )?;
        Ok((id, vec![("approve token", approve.gas_used), ("createOffer", receipt.gas_used)]))
    }

    /// OCEAN base units that buying `amount` from an offer costs now (amount * price / 1e18,
    /// rounded up). Fails with `MarketRejected` if the offer cannot sell that much.
    pub async fn quote_offer(&self, offer_id: U256, amount: U256) -> Result<U256, ChainError> {
        self.market()?.quote(offer_id, amount).call().await.map_err(market_err)
    }

    /// Buys `amount` base units from an offer as `buyer`: quotes the cost, approves exactly
    /// that much OCEAN, and buys with `maxCost` = the quote (so a price raised in between
    /// makes the purchase fail instead of costing more).
    pub async fn buy_offer(
        &self,
        buyer: Address,
        offer_id: U256,
        amount: U256,
    ) -> Result<TransactionReceipt, ChainError> {
        self.check_signer(buyer)?;
        let cost = self.quote_offer(offer_id, amount).await?;
        self.buy_offer_max(buyer, offer_id, amount, cost).await
    }

    /// Buys `amount` from an offer as `buyer`, approving and paying at most `max_cost` OCEAN
    /// base units.
    pub async fn buy_offer_max(
        &self,
        buyer: Address,
        offer_id: U256,
        amount: U256,
        max_cost: U256,
    ) -> Result<TransactionReceipt, ChainError> {
        self.check_signer(buyer)?;
        let m = self.market()?;
        self.approve(buyer, self.book.ocean, self.book.market, max_cost).await?;
        send_market(m.buy(offer_id, amount, max_cost).from(buyer)).await
    }

    /// An offer's current state (`MarketRejected` with `UnknownOffer` if there is none).
    pub async fn offer(&self, offer_id: U256) -> Result<Offer, ChainError> {
        let o = self.market()?.offer(offer_id).call().await.map_err(market_err)?;
        Ok(Offer {
            seller: o.seller,
            token: o.token,
            price: o.price,
            remaining: o.remaining,
            active: o.active,
        })
    }

    /// Seller only: sets a new price and amount for sale, and moves the market's allowance by
    /// the change in the amount for sale.
    pub async fn update_offer(
        &self,
        seller: Address,
        offer_id: U256,
        price: U256,
        amount: U256,
    ) -> Result<TransactionReceipt, ChainError> {
        self.check_signer(seller)?;
        let m = self.market()?;
        let old = self.offer(offer_id).await?;
        let receipt = send_market(m.updateOffer(offer_id, price, amount).from(seller)).await?;
        let allowance = self.market_allowance(old.token, seller).await?;
        let allowance = allowance.saturating_sub(old.remaining).saturating_add(amount);
        self.approve(seller, old.token, self.book.market, allowance).await?;
        Ok(receipt)
    }

    /// Seller only: withdraws an offer for good and lowers the market's allowance by what was
    /// still for sale.
    pub async fn cancel_offer(
        &self,
        seller: Address,
        offer_id: U256,
    ) -> Result<TransactionReceipt, ChainError> {
        self.check_signer(seller)?;
        let m = self.market()?;
        let old = self.offer(offer_id).await?;
        let receipt = send_market(m.cancelOffer(offer_id).from(seller)).await?;
        let allowance = self.market_allowance(old.token, seller).await?;
        let allowance = allowance.saturating_sub(old.remaining);
        self.approve(seller, old.token, self.book.market, allowance).await?;
        Ok(receipt)
    }
}
