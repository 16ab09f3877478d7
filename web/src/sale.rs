//! A derived model's trainer puts its datatokens on sale on Ocean's fixed-rate exchange, from
//! the model's page: the same three transactions `posthuman models sell` sends through
//! `posthuman-chain` (`Chain::open_sale`), encoded with `sol!`, each described in words first:
//! 1. `approve(lineage, amount)` on the datatoken (the tokens the sale moves into the exchange);
//! 2. `approve(lineage, float)` on OCEAN (the exchange's float, ~1e-8 OCEAN per token, all but
//!    Ocean's swap fee handed back; `posthuman_types::model::sale_float`);
//! 3. `openSale(model, fixedRate, price, amount)` on the lineage contract.
//!
//! Then the page asks the API to read the sale back (`POST /api/models/{nft}/sale`).

use alloy::primitives::{Address, U256};
use alloy::sol;
use alloy::sol_types::SolCall;
use posthuman_types::model::{OCEAN_MIN_RATE, sale_float};

use crate::format::tokens;
use crate::order::{Tx, approveCall};
use crate::wire::AddressBook;

sol! {
    /// `ModelLineage.openSale` (trainer only).
    function openSale(address childNft, address fixedRate, uint256 rate, uint256 amount) external returns (bytes32 exchangeId);
}

/// The transactions that put `amount` datatokens of derived model `nft` on sale at `price`
/// OCEAN each (amount "0": only the price changes, or a closed sale reopens).
pub fn sale_txs(
    book: &AddressBook,
    nft: Address,
    datatoken: Address,
    price: &str,
    amount: &str,
) -> Result<Vec<Tx>, String> {
    let units = |f, s| crate::publish::parse_units(f, s).map_err(|e| e.to_string());
    let rate = units("price", price)?;
    if rate < OCEAN_MIN_RATE {
        return Err(format!(
            "price: at least {} OCEAN (Ocean's minimum rate)",
            tokens(&OCEAN_MIN_RATE.to_string())
        ));
    }
    let n = units("amount", amount)?;
    let ocean = book.ocean.ok_or("the deployment names no OCEAN token")?;
    let approve = |to: Address, v: u128, words: String| Tx {
        words,
        to,
        data: approveCall { spender: book.lineage, amount: U256::from(v) }.abi_encode(),
    };
    let mut txs = Vec::new();
    if n > 0 {
        txs.push(approve(
            datatoken,
            n,
            format!(
                "let the lineage contract move {} of your datatokens into the exchange",
                tokens(&n.to_string())
            ),
        ));
        let float = sale_float(n);
        txs.push(approve(
            ocean,
            float,
            format!(
                "let it advance the exchange's float, at most {} OCEAN (returned but Ocean's fee)",
                tokens(&float.to_string())
            ),
        ));
    }
    let call = openSaleCall {
        childNft: nft,
        fixedRate: book.fixed_rate,
        rate: U256::from(rate),
        amount: U256::from(n),
    };
    txs.push(Tx {
        words: format!(
            "put them on sale at {} OCEAN each on Ocean's exchange",
            tokens(&rate.to_string())
        ),
        to: book.lineage,
        data: call.abi_encode(),
    });
    Ok(txs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn putting_on_sale_is_two_approvals_and_open_sale() {
        let book = AddressBook {
            chain_id: 31337,
            operator: Address::repeat_byte(1),
            lineage: Address::repeat_byte(2),
            ocean: Some(Address::repeat_byte(3)),
            fixed_rate: Address::repeat_byte(4),
            deployed_at_block: 0,
            market: None,
        };
        let (nft, dt) = (Address::repeat_byte(5), Address::repeat_byte(6));
        let txs = sale_txs(&book, nft, dt, "2", "10").unwrap();
        assert_eq!(
            txs.iter().map(|t| t.to).collect::<Vec<_>>(),
            vec![dt, Address::repeat_byte(3), book.lineage]
        );
        let a = approveCall::abi_decode(&txs[0].data).unwrap();
        assert_eq!((a.spender, a.amount), (book.lineage, U256::from(10 * 10u128.pow(18))));
        let f = approveCall::abi_decode(&txs[1].data).unwrap();
        assert_eq!(f.amount, U256::from(sale_float(10 * 10u128.pow(18))));
        let o = openSaleCall::abi_decode(&txs[2].data).unwrap();
        assert_eq!(
            (o.childNft, o.fixedRate, o.rate, o.amount),
            (nft, book.fixed_rate, U256::from(2 * 10u128.pow(18)), U256::from(10 * 10u128.pow(18)))
        );
        // Only a new price: no approvals.
        assert_eq!(sale_txs(&book, nft, dt, "3", "0").unwrap().len(), 1);
        assert!(sale_txs(&book, nft, dt, "0.000000001", "1").unwrap_err().contains("minimum"));
    }
}
