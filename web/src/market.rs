//! Resale between holders on the peer market (`PeerMarket`), from a model's page: what
//! `posthuman market offer / buy` send through `posthuman-chain`, encoded with `sol!`, each
//! transaction described in words before the wallet asks. The seller keeps custody (the
//! market moves the tokens with `transferFrom` at purchase), so offering is an approval plus
//! `createOffer`; buying is an OCEAN approval of exactly the cost plus `buy` bounded by it.
//! The offers of a token are its `OfferCreated` events, each read back with `offer(id)` for
//! what is left of it. Plain data, unit-tested natively; the page is `app::market`.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::sol;
use alloy::sol_types::SolCall;
use serde_json::Value;

use crate::format::tokens;
use crate::order::{Tx, approveCall, call_params};

sol! {
    function createOffer(address token, uint256 price, uint256 amount) external returns (uint256 offerId);
    function cancelOffer(uint256 offerId) external;
    function buy(uint256 offerId, uint256 amount, uint256 maxCost) external returns (uint256 cost);
    function offer(uint256 offerId) external view;
}

/// One live offer: who sells, at what price (OCEAN base units per whole token), how many
/// token base units are left. Amounts are `u128` (every token supply fits): 256-bit
/// arithmetic would cost the storefront's module 12 KB of code.
#[derive(Clone, Debug, PartialEq)]
pub struct Listing {
    pub id: u64,
    pub seller: Address,
    pub price: u128,
    pub remaining: u128,
}

/// What `amount` token base units cost at `price`: `amount × price / 10¹⁸` rounded up, as the
/// contract charges; `None` past `u128` (no wallet holds that much OCEAN).
pub fn cost(amount: u128, price: u128) -> Option<u128> {
    const E18: u128 = 1_000_000_000_000_000_000;
    let (q, r) = (amount / E18, amount % E18);
    // r × price ≤ 10¹⁸ × price: checked, like the rest.
    let exact = r.checked_mul(price)?;
    q.checked_mul(price)?.checked_add(exact.div_ceil(E18))
}

/// `eth_getLogs` params: every offer ever made for `token` on `market` (its third indexed
/// topic), since the deployment's block.
pub fn offers_logs_params(market: Address, token: Address, from_block: u64) -> String {
    let sig = keccak256("OfferCreated(uint256,address,address,uint256,uint256)");
    crate::wallet::logs_params(
        Some(market),
        &[Some(sig), None, None, Some(token.into_word())],
        from_block,
    )
}

/// The offer ids of an `eth_getLogs` answer to [`offers_logs_params`] (ids count up from 1:
/// one past `u64` is not an id this market will reach).
pub fn parse_offer_ids(v: &Value) -> Result<Vec<u64>, String> {
    let logs = v.as_array().ok_or_else(|| format!("eth_getLogs answered {v}"))?;
    logs.iter()
        .map(|l| {
            l["topics"][1]
                .as_str()
                .and_then(|t| t.parse::<B256>().ok())
                .filter(|t| t[..24].iter().all(|b| *b == 0))
                .map(|t| t[24..].iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
                .ok_or_else(|| format!("an offer event without an id: {l}"))
        })
        .collect()
}

/// `eth_call` params reading offer `id`.
pub fn offer_call(market: Address, id: u64) -> String {
    call_params(market, &offerCall { offerId: U256::from(id) }.abi_encode())
}

/// The answer of [`offer_call`]: `None` when the offer is withdrawn or sold out. The struct
/// is five static words (seller, active, token, price, remaining), read by hand: `sol!`'s
/// decoder for it cost the storefront 2.5 KB of code.
pub fn parse_offer(id: u64, v: &Value) -> Result<Option<Listing>, String> {
    let s = v.as_str().ok_or_else(|| format!("offer({id}) answered {v}"))?;
    let b = crate::wallet::unhex(s)
        .filter(|b| b.len() == 160)
        .ok_or_else(|| format!("offer({id}) answered {s}"))?;
    let word = |i: usize| &b[32 * i..32 * (i + 1)];
    // A u128 word: its first 16 bytes zero.
    let small = |i: usize| -> Result<u128, String> {
        let w = word(i);
        if w[..16].iter().any(|x| *x != 0) {
            return Err(format!("offer {id} holds amounts past 128 bits"));
        }
        Ok(w[16..].iter().fold(0u128, |n, x| n << 8 | u128::from(*x)))
    };
    let (active, price, remaining) = (small(1)? == 1, small(3)?, small(4)?);
    let seller = Address::from_slice(&word(0)[12..]);
    Ok((active && remaining > 0).then_some(Listing { id, seller, price, remaining }))
}

/// The transactions offering `amount` of `token` at `price` OCEAN each (both decimal, as
/// typed): let the market move them, then the offer.
pub fn offer_txs(
    market: Address,
    token: Address,
    price: &str,
    amount: &str,
) -> Result<Vec<Tx>, String> {
    let units = |f, s| crate::publish::parse_units(f, s).map_err(|e| e.to_string());
    let (price, amount) = (units("price", price)?, units("amount", amount)?);
    if price == 0 || amount == 0 {
        return Err("price and amount must be above zero".into());
    }
    let (p, n) = (U256::from(price), U256::from(amount));
    Ok(vec![
        Tx {
            words: format!(
                "let the peer market move {} of your datatokens when someone buys",
                tokens(&amount.to_string())
            ),
            to: token,
            data: approveCall { spender: market, amount: n }.abi_encode(),
        },
        Tx {
            words: format!("offer them at {} OCEAN each", tokens(&price.to_string())),
            to: market,
            data: createOfferCall { token, price: p, amount: n }.abi_encode(),
        },
    ])
}

/// The transactions buying `amount` base units of offer `l` for `c` ([`cost`]): approve
/// exactly that in OCEAN, then `buy` with it as the bound (a price raised meanwhile reverts).
pub fn buy_txs(market: Address, ocean: Address, l: &Listing, amount: u128, c: u128) -> Vec<Tx> {
    let (amount, c) = (U256::from(amount), U256::from(c));
    vec![
        Tx {
            words: format!("let the peer market take {} OCEAN", tokens(&c.to_string())),
            to: ocean,
            data: approveCall { spender: market, amount: c }.abi_encode(),
        },
        Tx {
            words: format!(
                "buy {} datatokens from {}",
                tokens(&amount.to_string()),
                crate::wallet::short_address(&l.seller)
            ),
            to: market,
            data: buyCall { offerId: U256::from(l.id), amount, maxCost: c }.abi_encode(),
        },
    ]
}

/// The transaction withdrawing the seller's own offer `id`.
pub fn cancel_tx(market: Address, id: u64) -> Tx {
    Tx {
        words: format!("withdraw offer {id}"),
        to: market,
        data: cancelOfferCall { offerId: U256::from(id) }.abi_encode(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const E18: u128 = 1_000_000_000_000_000_000;

    #[test]
    fn offering_buying_and_withdrawing_encode_the_market_calls() {
        let (market, token, ocean) =
            (Address::repeat_byte(1), Address::repeat_byte(2), Address::repeat_byte(3));
        let txs = offer_txs(market, token, "1.5", "5").unwrap();
        assert_eq!(txs.iter().map(|t| t.to).collect::<Vec<_>>(), [token, market]);
        let a = approveCall::abi_decode(&txs[0].data).unwrap();
        assert_eq!((a.spender, a.amount), (market, U256::from(5 * E18)));
        let c = createOfferCall::abi_decode(&txs[1].data).unwrap();
        assert_eq!(
            (c.token, c.price, c.amount),
            (token, U256::from(3 * E18 / 2), U256::from(5 * E18))
        );
        assert!(offer_txs(market, token, "0", "5").is_err());
        assert!(offer_txs(market, token, "1", "x").unwrap_err().contains("amount"));

        let l = Listing {
            id: 7,
            seller: Address::repeat_byte(9),
            price: 3 * E18 / 2,
            remaining: 5 * E18,
        };
        let c = cost(2 * E18, l.price).unwrap();
        assert_eq!(c, 3 * E18);
        let txs = buy_txs(market, ocean, &l, 2 * E18, c);
        assert_eq!(txs.iter().map(|t| t.to).collect::<Vec<_>>(), [ocean, market]);
        assert_eq!(approveCall::abi_decode(&txs[0].data).unwrap().amount, U256::from(3 * E18));
        let b = buyCall::abi_decode(&txs[1].data).unwrap();
        assert_eq!(
            (b.offerId, b.amount, b.maxCost),
            (U256::from(7), U256::from(2 * E18), U256::from(3 * E18))
        );
        assert_eq!(
            cancelOfferCall::abi_decode(&cancel_tx(market, l.id).data).unwrap().offerId,
            U256::from(7)
        );
        // Rounded up, as the contract charges: 1 base unit at 1.5 OCEAN costs 2 base units.
        assert_eq!(cost(1, l.price), Some(2));
        assert_eq!(cost(E18 + 1, 3), Some(4));
        assert_eq!(cost(u128::MAX, u128::MAX), None);
    }

    #[test]
    fn offers_are_read_from_their_events_and_state() {
        let (market, token) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let p: Value = serde_json::from_str(&offers_logs_params(market, token, 5)).unwrap();
        assert_eq!(p[0]["topics"][3], format!("0x{:0>64}", "02".repeat(20)));
        let ids = parse_offer_ids(
            &json!([{ "topics": [p[0]["topics"][0], format!("0x{:0>64}", "0c")] }]),
        )
        .unwrap();
        assert_eq!(ids, [12]);
        assert!(parse_offer_ids(&json!([{ "topics": [] }])).is_err());
        // What `offer(id)` returns: seller, active, token, price, remaining, one word each.
        let state = |active: bool, remaining: u64| {
            let w = |hex: String| format!("{hex:0>64}");
            json!(format!(
                "0x{}{}{}{}{}",
                w("09".repeat(20)),
                w(u8::from(active).to_string()),
                w("02".repeat(20)),
                w(format!("{E18:x}")),
                w(format!("{remaining:x}"))
            ))
        };
        let l = parse_offer(12, &state(true, 4)).unwrap().unwrap();
        assert_eq!((l.seller, l.remaining), (Address::repeat_byte(9), 4));
        assert_eq!(parse_offer(12, &state(false, 4)).unwrap(), None, "withdrawn");
        assert_eq!(parse_offer(12, &state(true, 0)).unwrap(), None, "sold out");
        assert!(parse_offer(12, &json!("0x12")).is_err());
        let huge = json!(format!("0x{}", "ff".repeat(160)));
        assert!(parse_offer(12, &huge).unwrap_err().contains("128 bits"));
        let call: Value = serde_json::from_str(&offer_call(market, 12)).unwrap();
        assert!(call[0]["data"].as_str().unwrap().ends_with("0c"));
    }
}
