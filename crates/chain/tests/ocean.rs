//! Every Ocean operation through the crate, on a fresh anvil.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use alloy::primitives::{B256, Bytes, U256};
use common::{ONE, env, operator_key, start_anvil};
use posthuman_chain::alloy;
use posthuman_chain::alloy::providers::Provider;
use posthuman_chain::client::card_key;
use posthuman_chain::{AddressBook, AnvilConfig, Chain, deploy_stack};
use posthuman_types::RewardScheme;

#[tokio::test]
async fn address_book_round_trips_and_state_persists() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let book_path = dir.path().join("book.json");
    let cfg = AnvilConfig { state: Some(state.clone()), ..AnvilConfig::default() };
    let anvil = start_anvil(&cfg);
    let (book, report) = deploy_stack(&anvil.endpoint(), &operator_key()).await.unwrap();
    assert!(report.total_gas() > 1_000_000);
    book.save(&book_path).unwrap();
    assert_eq!(AddressBook::load(&book_path).unwrap(), book);
    anvil.stop();
    assert!(state.is_file(), "anvil saved its state on stop");

    // A new anvil on another port reloads the state: the contracts are still there.
    let anvil = start_anvil(&cfg);
    let chain =
        Chain::connect(&anvil.endpoint(), operator_key(), AddressBook::load(&book_path).unwrap())
            .unwrap();
    let code = chain.provider().get_code_at(book.lineage).await.unwrap();
    assert!(!code.is_empty(), "lineage contract survives a restart");
    let bal = chain.balance_of(book.ocean, book.operator).await.unwrap();
    assert_eq!(bal, U256::from(posthuman_chain::deploy::OCEAN_SUPPLY));
}

#[tokio::test]
async fn publish_mint_transfer_approve_exchange_buy_order() {
    let mut e = env(1).await;
    let alice = e.wallet(0).await;
    let bob = e.wallet(1000 * ONE).await;
    let carol = e.wallet(0).await;
    let m = e.publish(alice, RewardScheme::geometric(100 * ONE, 5000, 4)).await;

    // Metadata: the weights commitment and the card live in the NFT's ERC725Y store.
    let root = e.chain.model(m.nft).await.unwrap().expect("registered as a root");
    assert_eq!(e.chain.weights_commitment(m.nft).await.unwrap(), Some(root.weights_hash));
    // The same hash as text Ocean's tools decode (ocean.js getData reads values as UTF-8).
    let hex =
        e.chain.nft_data(m.nft, posthuman_chain::client::weights_hash_hex_key()).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&hex).unwrap(),
        format!("{:#x}", B256::from(root.weights_hash.0))
    );
    assert_eq!(root.trainer, alice);
    assert_eq!(root.datatoken, m.datatoken);
    let card = e.chain.nft_data(m.nft, card_key()).await.unwrap();
    assert!(card.starts_with(b"{\"architecture\""));
    assert_eq!(
        e.chain.scheme_of(m.nft).await.unwrap(),
        RewardScheme::geometric(100 * ONE, 5000, 4)
    );

    // Mint / transfer / approve / balances.
    e.chain.mint(alice, m.datatoken, alice, U256::from(5 * ONE)).await.unwrap();
    e.chain.transfer(alice, m.datatoken, carol, U256::from(2 * ONE)).await.unwrap();
    assert_eq!(e.chain.balance_of(m.datatoken, alice).await.unwrap(), U256::from(3 * ONE));
    assert_eq!(e.chain.balance_of(m.datatoken, carol).await.unwrap(), U256::from(2 * ONE));
    e.chain.approve(carol, m.datatoken, bob, U256::from(ONE)).await.unwrap();
    // Bob is no minter: minting as Bob fails.
    assert!(e.chain.mint(bob, m.datatoken, bob, U256::from(ONE)).await.is_err());

    // Fixed-rate exchange (minting on sale) and a purchase.
    let ex =
        e.chain.create_fixed_rate(alice, m.datatoken, U256::from(2 * ONE), true).await.unwrap();
    let cost = e.chain.quote(ex.id, U256::from(3 * ONE)).await.unwrap();
    assert!(cost >= U256::from(6 * ONE));
    let ocean_before = e.chain.balance_of(e.chain.book().ocean, bob).await.unwrap();
    e.chain.buy(bob, ex.id, U256::from(3 * ONE)).await.unwrap();
    assert_eq!(e.chain.balance_of(m.datatoken, bob).await.unwrap(), U256::from(3 * ONE));
    let ocean_after = e.chain.balance_of(e.chain.book().ocean, bob).await.unwrap();
    assert_eq!(ocean_before - ocean_after, cost);

    // startOrder spends exactly one datatoken.
    let fee = e.chain.sign_provider_fee(u64::MAX / 2, Bytes::from_static(b"job-1")).unwrap();
    let o = e.chain.start_order(bob, m.datatoken, bob, 0, &fee).await.unwrap();
    assert!(o.gas_used > 50_000);
    assert_eq!(e.chain.balance_of(m.datatoken, bob).await.unwrap(), U256::from(2 * ONE));

    // A tampered fee is refused on chain.
    let mut bad = fee.clone();
    bad.data = Bytes::from_static(b"job-2");
    assert!(e.chain.start_order(bob, m.datatoken, bob, 0, &bad).await.is_err());
}

#[tokio::test]
async fn the_story_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = posthuman_chain::story::StoryConfig {
        address_book: Some(dir.path().join("book.json")),
        ..Default::default()
    };
    let s = posthuman_chain::story::story(&cfg).await.unwrap();
    assert!(s.order_accepted, "{s}");
    assert!(s.to_string().contains("already used"), "{s}");
    assert!(AddressBook::load(&dir.path().join("book.json")).is_ok());
}
