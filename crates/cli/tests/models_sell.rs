//! `models sell`: the trainer's own key opens, re-prices and closes his derived model's sale
//! on Ocean's exchange; a price under Ocean's minimum is refused before anything is sent;
//! another wallet is refused by the contract. On a fresh anvil with the full deployment; the
//! API is unreachable here, so each command ends, after its chain work, in the "unavailable"
//! error of the card sync it asks for last.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

use alloy::primitives::{B256, U256};
use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::anvil::ANVIL_DEV_KEY_0;
use posthuman_chain::{Anvil, AnvilConfig, Chain, PublishRequest, deploy_stack};
use posthuman_cli::CliError;
use posthuman_cli::args::SellArgs;
use posthuman_cli::client::ApiClient;
use posthuman_cli::commands::models;
use posthuman_cli::session::Session;
use posthuman_types::{Hash32, RewardScheme};

const ONE: u128 = 1_000_000_000_000_000_000;

fn sell(nft: &str, price: Option<&str>, amount: &str, close: bool) -> SellArgs {
    SellArgs { nft: nft.into(), price: price.map(str::to_string), amount: amount.into(), close }
}

#[tokio::test]
async fn a_trainer_sells_his_derived_model_with_his_own_key() {
    let anvil = Anvil::start(&AnvilConfig::default()).unwrap();
    let rpc = anvil.endpoint();
    let op_key: PrivateKeySigner = ANVIL_DEV_KEY_0.parse().unwrap();
    let op = op_key.address();
    let (book, _) = deploy_stack(&rpc, &op_key).await.unwrap();
    let c = Chain::connect(&rpc, op_key, book.clone()).unwrap();
    let root = c
        .publish_model(
            op,
            &PublishRequest {
                name: "Root".into(),
                symbol: "ROOT".into(),
                token_uri: "https://posthuman.invalid/m/1".into(),
                weights_hash: Hash32([1; 32]),
                card_json: None,
                reward: RewardScheme::geometric(100 * ONE, 5000, 2),
                root_owner: None,
            },
        )
        .await
        .unwrap();
    let bob_key = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
    let bob = bob_key.address();
    c.send_eth(bob, U256::from(10 * ONE)).await.unwrap();
    c.transfer(op, book.ocean, bob, U256::from(ONE)).await.unwrap();
    let job = Hash32([9; 32]);
    c.commit_training(job, root.nft, bob, Hash32([2; 32]), Hash32([3; 32])).await.unwrap();
    let child = c.create_child(job, "Root · fine-tune 1", "ROOT-FT1", "").await.unwrap();
    c.record_derivation(job, child.nft, child.datatoken).await.unwrap();

    let api = ApiClient::new("http://127.0.0.1:9").unwrap();
    let s = Session::connect(api.clone(), &rpc, book.clone(), bob_key).unwrap();
    let nft = format!("{:#x}", child.nft);
    let synced_after = |r: Result<_, CliError>| match r {
        Err(CliError::Unavailable(_)) => {}
        other => panic!("expected the card sync to find no API, got {other:?}"),
    };

    // Under Ocean's minimum rate: refused before anything is sent.
    let r = models::sell(&s, &sell(&nft, Some("0.000000001"), "1", false)).await;
    assert!(matches!(r, Err(CliError::Usage(ref m)) if m.contains("minimum")), "{r:?}");
    assert_eq!(c.sale_of(child.datatoken).await.unwrap(), None);

    // Bob puts 5 on sale at 2.5 OCEAN, re-prices at 3, closes.
    synced_after(models::sell(&s, &sell(&nft, Some("2.5"), "5", false)).await);
    let sale = c.sale_of(child.datatoken).await.unwrap().unwrap();
    assert_eq!(
        (sale.rate, sale.available, sale.active),
        (U256::from(5 * ONE / 2), U256::from(5 * ONE), true)
    );
    synced_after(models::sell(&s, &sell(&nft, Some("3"), "0", false)).await);
    assert_eq!(c.sale_of(child.datatoken).await.unwrap().unwrap().rate, U256::from(3 * ONE));
    synced_after(models::sell(&s, &sell(&nft, None, "0", true)).await);
    assert!(!c.sale_of(child.datatoken).await.unwrap().unwrap().active);

    // Another wallet (the operator's) is refused by the contract.
    let op_session = Session::connect(api, &rpc, book, ANVIL_DEV_KEY_0.parse().unwrap()).unwrap();
    let r = models::sell(&op_session, &sell(&nft, Some("1"), "0", false)).await;
    assert!(matches!(r, Err(CliError::Chain(ref m)) if m.contains("NotTrainer")), "{r:?}");
}
