//! `posthuman market …`: buy datatokens on a fixed-rate exchange, offer your own for sale,
//! transfer tokens.

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

/// A new offer.
#[derive(Clone, Debug, Serialize)]
pub struct Offer {
    pub exchange: String,
    pub datatoken: String,
    pub price: String,
    pub approved: String,
}

pub async fn run(cfg: &Config, out: &Out, cmd: MarketCmd) -> Result<(), CliError> {
    let s = Session::open(cfg).await?;
    match cmd {
        MarketCmd::Buy { nft, exchange, amount } => {
            let amount = units::parse("--amount", &amount)?;
            let ex = match (nft, exchange) {
                (_, Some(e)) => parse_exchange(&e)?,
                (Some(nft), None) => exchange_of(&s, &nft).await?,
                (None, None) => {
                    return Err(CliError::Usage("name a model NFT or --exchange".into()));
                }
            };
            let b = buy(&s, ex, amount).await?;
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
                    "offered {} of {} at {} OCEAN each on exchange {}",
                    units::show(o.approved.parse().unwrap_or_default()),
                    o.datatoken,
                    units::show(o.price.parse().unwrap_or_default()),
                    o.exchange
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

/// Offers `amount` of `datatoken` at `price` OCEAN base units each on a new exchange that
/// sells from the caller's balance (no minting), and approves it for `amount`.
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
    let ex = s.chain.create_fixed_rate(s.me(), datatoken, price, false).await?;
    s.chain.approve(s.me(), datatoken, s.chain.book().fixed_rate, amount).await?;
    Ok(Offer {
        exchange: ex.id.to_string(),
        datatoken: datatoken.to_string(),
        price: price.to_string(),
        approved: amount.to_string(),
    })
}
