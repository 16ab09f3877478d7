//! Paying out a derived model's lineage royalties from its page, as plain data: the reads
//! (its vault, the vault's OCEAN and the seed it keeps), the one transaction (the vault's
//! `distribute()`, which anyone may send; encoded with `sol!` as `posthuman models royalties
//! --distribute` sends it through `posthuman-chain`'s `Chain::distribute_royalty`) and its
//! outcome read from the receipt's `RoyaltyPaid` events: who received how much, for which
//! ancestor. The browser side is [`crate::app::royalty`]; unit-tested natively.

use alloy::primitives::{Address, U256};
use alloy::sol;
use alloy::sol_types::SolCall;
use serde_json::Value;

use crate::format::tokens;
use crate::order::{Tx, call_params};
use crate::wallet::{RoyaltyLog, WalletError, parse_royalty_logs, royalty_paid_topic};

sol! {
    /// `RoyaltyVault.distribute()`: pays the balance but the seed to the model's ancestors.
    function distribute() external returns (uint256 total);
    /// `RoyaltyVault.SEED`: the OCEAN the operator put in at creation, kept for ever.
    function SEED() external view returns (uint256);
}

/// `eth_call` params reading the vault's seed (its answer is one uint256, read with
/// [`crate::wallet::parse_balance`]).
pub fn seed_call(vault: Address) -> String {
    call_params(vault, &SEEDCall {}.abi_encode())
}

/// What `distribute()` would pay now: the vault's balance but its seed.
pub fn pending(held: U256, seed: U256) -> U256 {
    held.saturating_sub(seed)
}

/// The payout transaction, described in words for the person before the wallet asks.
pub fn distribute_tx(vault: Address, pending: U256) -> Tx {
    Tx {
        words: format!(
            "pay the {} OCEAN waiting in this model's royalty vault to its ancestors by the \
             root's scheme (the vault's distribute(): anyone may send it; you pay only the gas, \
             the OCEAN goes to them)",
            tokens(&pending.to_string())
        ),
        to: vault,
        data: distributeCall {}.abi_encode(),
    }
}

/// The payments a mined `distribute()` made, from its receipt: the `RoyaltyPaid` events the
/// vault itself emitted (the OCEAN `Transfer`s beside them are skipped), in order.
pub fn parse_payouts(receipt: &Value, vault: Address) -> Result<Vec<RoyaltyLog>, WalletError> {
    let logs = receipt["logs"]
        .as_array()
        .ok_or_else(|| WalletError::Other(format!("a receipt without logs: {receipt}")))?;
    let topic = format!("{}", royalty_paid_topic());
    let ours: Vec<Value> = logs
        .iter()
        .filter(|l| {
            l["address"].as_str().and_then(|a| a.parse::<Address>().ok()) == Some(vault)
                && l["topics"][0].as_str().is_some_and(|t| t.eq_ignore_ascii_case(&topic))
        })
        .cloned()
        .collect();
    parse_royalty_logs(&Value::Array(ours))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_payout_is_the_vaults_distribute_and_its_events_are_read() {
        let vault = Address::repeat_byte(0x5a);
        let tx = distribute_tx(vault, U256::from(1_500_000_000_000_000_000u128));
        assert_eq!((tx.to, tx.data.as_slice()), (vault, &distributeCall::SELECTOR[..]));
        assert!(tx.words.contains("1.5 OCEAN"), "{}", tx.words);
        let p: Value = serde_json::from_str(&seed_call(vault)).unwrap();
        assert_eq!(p[0]["data"], format!("0x{}", alloy::hex::encode(SEEDCall::SELECTOR)));
        assert_eq!(pending(U256::from(7), U256::from(1)), U256::from(6));
        assert_eq!(pending(U256::ZERO, U256::from(1)), U256::ZERO);

        let word = |b: u8| format!("0x{:0>64}", format!("{b:02x}"));
        let paid = |from: Address, to: u8, ancestor: u8, amount: u128| {
            json!({ "address": format!("{from:#x}"),
                    "topics": [format!("{}", royalty_paid_topic()), word(0xc3), word(to), word(ancestor)],
                    "data": format!("0x{amount:064x}") })
        };
        let transfer = json!({ "address": format!("{:#x}", Address::repeat_byte(0x0c)),
            "topics": [word(0xdd), word(0x5a), word(0xbb)], "data": format!("0x{:064x}", 5) });
        let receipt = json!({ "logs": [
            transfer.clone(),
            paid(vault, 0xbb, 0xc2, 500),
            transfer,
            paid(Address::repeat_byte(0x66), 0xee, 0xc1, 9), // not this vault: a look-alike
            paid(vault, 0xaa, 0xc1, 501),
        ] });
        let got = parse_payouts(&receipt, vault).unwrap();
        let seen: Vec<(u8, u8, u64)> = got
            .iter()
            .map(|l| (l.beneficiary.0[19], l.ancestor.0[19], l.amount.to::<u64>()))
            .collect();
        assert_eq!(seen, vec![(0xbb, 0xc2, 500), (0xaa, 0xc1, 501)]);
        assert!(parse_payouts(&json!({}), vault).is_err());
    }
}
