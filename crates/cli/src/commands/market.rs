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
        MarketCmd::Buy { nft, exchange, offer, datatoken, amount, max_cost } => {
            let amount = units::parse("--amount", &amount)?;
            let max_cost = max_cost.map(|m| units::parse("--max-cost", &m)).transpose()?;
            let b = match (nft, exchange, offer) {
                (nft, _, Some(o)) => {
                    let token = match (nft, datatoken) {
                        (_, Some(dt)) => address("--datatoken", &dt)?,
                        (Some(nft), None) => {
                            let m = s.api.model(&nft).await?;
                            address("the model's datatoken", &m.card.datatoken)?
                        }
                        (None, None) => {
                            return Err(CliError::Usage(
                                "--offer needs the model NFT (or --datatoken) you mean to buy: \
                                 an offer's seller chooses what it sells"
                                    .into(),
                            ));
                        }
                    };
                    let p =
                        prepare_offer(&s, parse_offer(&o)?, amount, &Wanted { token, max_cost })
                            .await?;
                    out.say(describe_offer(&p));
                    buy_prepared(&s, &p).await?
                }
                (_, Some(e), None) => {
                    buy_at_most(&s, parse_exchange(&e)?, amount, max_cost).await?
                }
                (Some(nft), None, None) => {
                    buy_at_most(&s, exchange_of(&s, &nft).await?, amount, max_cost).await?
                }
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
    buy_at_most(s, ex, amount, None).await
}

/// [`buy`], refused before anything is approved when it costs more than `max_cost`.
pub async fn buy_at_most(
    s: &Session,
    ex: B256,
    amount: U256,
    max_cost: Option<U256>,
) -> Result<Bought, CliError> {
    let cost = s.chain.quote(ex, amount).await?;
    check_max_cost(cost, max_cost)?;
    let (_, receipt) = s.chain.buy(s.me(), ex, amount).await?;
    Ok(Bought {
        exchange: ex.to_string(),
        datatokens: amount.to_string(),
        paid: cost.to_string(),
        tx: receipt.transaction_hash.to_string(),
    })
}

fn check_max_cost(cost: U256, max_cost: Option<U256>) -> Result<(), CliError> {
    match max_cost {
        Some(max) if cost > max => Err(CliError::Usage(format!(
            "this purchase costs {} OCEAN, more than --max-cost {}",
            units::show(cost),
            units::show(max)
        ))),
        _ => Ok(()),
    }
}

/// What a buyer means to buy from an offer. The offer's id alone is not enough: its seller
/// chooses the token, so an id passed around as "M2's offer" may sell a worthless one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The datatoken the buyer asked for.
    pub token: Address,
    /// The most OCEAN base units to pay (fees included), if bounded.
    pub max_cost: Option<U256>,
}

/// An offer read on chain and checked against what the buyer wants, with its cost now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedOffer {
    pub id: U256,
    pub offer: posthuman_chain::Offer,
    pub amount: U256,
    /// OCEAN base units, the most the purchase may take (a raised price makes it fail).
    pub cost: U256,
}

/// Checks an offer against what the buyer wants: its token, that it is open, and its cost.
pub fn check_offer(
    id: U256,
    offer: &posthuman_chain::Offer,
    cost: U256,
    want: &Wanted,
) -> Result<(), CliError> {
    if offer.token != want.token {
        return Err(CliError::Usage(format!(
            "offer {id} sells token {}, not the datatoken you asked for ({}): nothing was bought",
            offer.token, want.token
        )));
    }
    if !offer.active {
        return Err(CliError::Usage(format!("offer {id} was cancelled by its seller")));
    }
    check_max_cost(cost, want.max_cost)
}

/// Reads offer `id` and its cost for `amount`, and checks both against `want` before
/// anything is approved.
pub async fn prepare_offer(
    s: &Session,
    id: U256,
    amount: U256,
    want: &Wanted,
) -> Result<CheckedOffer, CliError> {
    let offer = s.chain.offer(id).await?;
    if offer.token != want.token {
        // Refused before quoting: the cost of the wrong token is beside the point.
        check_offer(id, &offer, U256::ZERO, want)?;
    }
    let cost = s.chain.quote_offer(id, amount).await?;
    check_offer(id, &offer, cost, want)?;
    Ok(CheckedOffer { id, offer, amount, cost })
}

/// What the buyer is about to pay, shown before paying.
pub fn describe_offer(p: &CheckedOffer) -> String {
    format!(
        "offer {}: {} of {} at {} OCEAN each from {}: {} OCEAN in all",
        p.id,
        units::show(p.amount),
        p.offer.token,
        units::show(p.offer.price),
        p.offer.seller,
        units::show(p.cost)
    )
}

/// Buys a checked offer, approving and paying at most its checked cost.
pub async fn buy_prepared(s: &Session, p: &CheckedOffer) -> Result<Bought, CliError> {
    let receipt = s.chain.buy_offer_max(s.me(), p.id, p.amount, p.cost).await?;
    Ok(Bought {
        exchange: format!("offer {}", p.id),
        datatokens: p.amount.to_string(),
        paid: p.cost.to_string(),
        tx: receipt.transaction_hash.to_string(),
    })
}

/// Buys `amount` from a holder's offer on the peer market, once the offer is checked
/// against `want` (approving exactly the cost).
pub async fn buy_offer(
    s: &Session,
    offer: U256,
    amount: U256,
    want: &Wanted,
) -> Result<Bought, CliError> {
    let p = prepare_offer(s, offer, amount, want).await?;
    buy_prepared(s, &p).await
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
