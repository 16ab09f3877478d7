//! `posthuman market …`: buy datatokens on a model's fixed-rate exchange (Ocean's, minting
//! on sale) or from a holder's offer on the peer market, offer your own for sale, transfer.
//!
//! Why two venues: a root model's exchange mints its datatokens as they sell, but a derived
//! model's datatokens exist only as rewards (the lineage contract is their sole minter), so
//! their holders sell them peer to peer through `PeerMarket` and keep custody until a sale.

use alloy::primitives::{Address, B256, U256};
use serde::Serialize;

use crate::args::MarketCmd;
use crate::error::CliError;
use crate::output::Out;
use crate::session::{Session, address};
use crate::{Config, units};

/// A completed purchase.
#[derive(Clone, Debug, Serialize)]
pub struct Bought {
    pub exchange: String,
    pub datatokens: String,
    /// OCEAN base units paid, fees included.
    pub paid: String,
    pub tx: String,
}

/// A new offer on the peer market.
#[derive(Clone, Debug, Serialize)]
pub struct Offer {
    pub offer_id: String,
    pub datatoken: String,
    /// OCEAN base units per whole datatoken.
    pub price: String,
    /// Datatoken base units for sale.
    pub amount: String,
}

pub async fn run(cfg: &Config, out: &Out, cmd: MarketCmd) -> Result<(), CliError> {
    let s = Session::open(cfg).await?;
    match cmd {
        MarketCmd::Buy { nft, exchange, offer, amount } => {
            let amount = units::parse("--amount", &amount)?;
            let b = match (nft, exchange, offer) {
                (_, _, Some(o)) => buy_offer(&s, parse_offer(&o)?, amount).await?,
                (_, Some(e), None) => buy(&s, parse_exchange(&e)?, amount).await?,
                (Some(nft), None, None) => buy(&s, exchange_of(&s, &nft).await?, amount).await?,
                (None, None, None) => {
                    return Err(CliError::Usage("name a model NFT, --exchange or --offer".into()));
                }
            };
            out.emit(&b, || {
                format!(
                    "bought {} datatokens for {} OCEAN (tx {})",
                    units::show(amount),
                    b.paid.parse().map(units::show).unwrap_or_default(),
                    b.tx
                )
            });
        }
        MarketCmd::Sell { datatoken, price, amount } => {
            let dt = address("datatoken", &datatoken)?;
            let o =
                sell(&s, dt, units::parse("--price", &price)?, units::parse("--amount", &amount)?)
                    .await?;
            out.emit(&o, || {
                format!(
                    "offered {} of {} at {} OCEAN each: offer {} (buy with `posthuman market buy --offer {}`)",
                    units::show(o.amount.parse().unwrap_or_default()),
                    o.datatoken,
                    units::show(o.price.parse().unwrap_or_default()),
                    o.offer_id,
                    o.offer_id
                )
            });
        }
        MarketCmd::Transfer { token, to, amount } => {
            let (t, to) = (address("token", &token)?, address("recipient", &to)?);
            let v = units::parse("amount", &amount)?;
            let r = s.chain.transfer(s.me(), t, to, v).await?;
            let tx = r.transaction_hash.to_string();
            out.emit(&serde_json::json!({ "tx": tx }), || {
                format!("sent {} to {to} (tx {tx})", units::show(v))
            });
        }
    }
    Ok(())
}

fn parse_offer(s: &str) -> Result<U256, CliError> {
    s.trim().parse().map_err(|_| CliError::Usage(format!("an offer id is a number, not {s:?}")))
}

fn parse_exchange(s: &str) -> Result<B256, CliError> {
    s.trim()
        .parse()
        .map_err(|_| CliError::Usage(format!("an exchange id is 32 bytes of hex, not {s:?}")))
}

/// The exchange a model is listed on.
pub async fn exchange_of(s: &Session, nft: &str) -> Result<B256, CliError> {
    let m = s.api.model(nft).await?;
    m.card.exchange_id.map(|h| B256::from(h.0)).ok_or_else(|| {
        CliError::Usage(format!(
            "{} is not on sale on an exchange: ask a holder, or buy with --exchange",
            m.card.symbol
        ))
    })
}

/// Buys `amount` datatokens on exchange `ex` with OCEAN (approving the exact cost).
pub async fn buy(s: &Session, ex: B256, amount: U256) -> Result<Bought, CliError> {
    let cost = s.chain.quote(ex, amount).await?;
    let (_, receipt) = s.chain.buy(s.me(), ex, amount).await?;
    Ok(Bought {
        exchange: ex.to_string(),
        datatokens: amount.to_string(),
        paid: cost.to_string(),
        tx: receipt.transaction_hash.to_string(),
    })
}

/// Buys `amount` from a holder's offer on the peer market (approving the exact cost).
pub async fn buy_offer(s: &Session, offer: U256, amount: U256) -> Result<Bought, CliError> {
    let cost = s.chain.quote_offer(offer, amount).await?;
    let receipt = s.chain.buy_offer(s.me(), offer, amount).await?;
    Ok(Bought {
        exchange: format!("offer {offer}"),
        datatokens: amount.to_string(),
        paid: cost.to_string(),
        tx: receipt.transaction_hash.to_string(),
    })
}

/// Offers `amount` of `datatoken` at `price` OCEAN base units each on the peer market; the
/// seller keeps the tokens until someone buys.
pub async fn sell(
    s: &Session,
    datatoken: Address,
    price: U256,
    amount: U256,
) -> Result<Offer, CliError> {
    let held = s.chain.balance_of(datatoken, s.me()).await?;
    if held < amount {
        return Err(CliError::Usage(format!(
            "you hold {} of that datatoken, fewer than the {} offered",
            units::show(held),
            units::show(amount)
        )));
    }
    let (id, _gas) = s.chain.create_offer(s.me(), datatoken, price, amount).await?;
    Ok(Offer {
        offer_id: id.to_string(),
        datatoken: datatoken.to_string(),
        price: price.to_string(),
        amount: amount.to_string(),
    })
}
