//! One sender, many transactions at once: every transaction a `Chain` handle (or any of its
//! clones, or another handle on the same key in this process) sends lands, with no "nonce too
//! low" collisions, and a send the node refused leaves no nonce gap behind it.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use common::{ONE, env};
use posthuman_chain::{Chain, alloy};

/// Transactions sent at once (half ETH transfers, half OCEAN transfers).
const N: usize = 12;

/// Sends `N` operator transactions at once from clones of `chain` (and from a second handle
/// connected with the same key), each to its own fresh address, and checks every one landed.
/// A timeout turns a stalled sequence (a nonce gap) into a failure rather than a hang.
async fn send_concurrently(chain: &Chain, second: &Chain, tag: u8) {
    let op = chain.operator();
    let ocean = chain.book().ocean;
    let mut tasks = Vec::new();
    for i in 0..N {
        let c = if i % 3 == 2 { second.clone() } else { chain.clone() };
        let to = recipient(tag, i);
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                c.send_eth(to, U256::from(i + 1)).await.map(|_| ())
            } else {
                c.transfer(op, ocean, to, U256::from(i + 1)).await.map(|_| ())
            }
        }));
    }
    let results = tokio::time::timeout(Duration::from_secs(60), async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task panicked"));
        }
        out
    })
    .await
    .expect("concurrent sends stalled (a nonce gap?)");
    let failed: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("#{i}: {e}")))
        .collect();
    assert!(failed.is_empty(), "{} of {N} concurrent sends failed: {failed:#?}", failed.len());
    for i in 0..N {
        let to = recipient(tag, i);
        let got = if i % 2 == 0 {
            chain.eth_balance(to).await.unwrap()
        } else {
            chain.balance_of(ocean, to).await.unwrap()
        };
        assert_eq!(got, U256::from(i + 1), "recipient #{i}");
    }
}

/// The `i`th fresh recipient of a round tagged `tag`.
fn recipient(tag: u8, i: usize) -> Address {
    let mut a = [tag; 20];
    a[19] = i as u8 + 1;
    Address::from(a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_from_one_key_all_land() {
    let e = env(1).await;
    let second =
        Chain::connect(&e.anvil.endpoint(), common::operator_key(), e.chain.book().clone())
            .unwrap();
    let before = e.chain.provider().get_transaction_count(e.chain.operator()).await.unwrap();
    send_concurrently(&e.chain, &second, 0xa1).await;
    let after = e.chain.provider().get_transaction_count(e.chain.operator()).await.unwrap();
    assert_eq!(after - before, N as u64, "one nonce per transaction, none skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_the_node_refused_leaves_no_gap() {
    let mut e = env(2).await;
    // A buyer too: the sequence is per sender, and a registered signer rebuilds the provider.
    let buyer = e.wallet(ONE).await;
    let second =
        Chain::connect(&e.anvil.endpoint(), common::operator_key(), e.chain.book().clone())
            .unwrap();
    let op = e.chain.operator();
    // Explicit gas, so no estimate refuses it first: the nonce is assigned and the signed
    // transaction sent, and the node refuses it (the operator cannot pay that much).
    let broke = TransactionRequest::default()
        .with_from(op)
        .with_to(Address::repeat_byte(0xee))
        .with_value(U256::MAX >> 8)
        .with_gas_limit(21_000);
    let refused = e.chain.provider().send_transaction(broke).await;
    assert!(refused.is_err(), "the node accepted a transfer above the balance");
    // A call the node's estimate refuses (more OCEAN than the buyer holds), also assigned
    // a nonce on its way.
    let ocean = e.chain.book().ocean;
    assert!(e.chain.transfer(buyer, ocean, op, U256::from(2 * ONE)).await.is_err());

    send_concurrently(&e.chain, &second, 0xb2).await;
    // The buyer's sequence recovered too.
    e.chain.transfer(buyer, ocean, op, U256::from(ONE / 2)).await.unwrap();
}
