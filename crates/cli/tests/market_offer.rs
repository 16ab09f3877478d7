//! `market buy --offer`: an offer's seller chooses its token, so a buyer pointed at an offer
//! of a worthless token must be refused, before any OCEAN is approved, and a purchase over
//! `--max-cost` too. On a fresh anvil with the full deployment (no API needed).

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::anvil::ANVIL_DEV_KEY_0;
use posthuman_chain::bindings::OceanToken;
use posthuman_chain::{Anvil, AnvilConfig, Chain, PublishRequest, deploy_stack};
use posthuman_cli::CliError;
use posthuman_cli::client::ApiClient;
use posthuman_cli::commands::market::{self, Wanted};
use posthuman_cli::session::Session;
use posthuman_types::{Hash32, RewardScheme};

const ONE: u128 = 1_000_000_000_000_000_000;

fn u(x: u128) -> U256 {
    U256::from(x)
}

async fn publish(c: &Chain, who: Address, symbol: &str, seed: u8) -> Address {
    let req = PublishRequest {
        name: format!("{symbol} model"),
        symbol: symbol.into(),
        token_uri: format!("https://posthuman.invalid/m/{seed}"),
        weights_hash: Hash32([seed; 32]),
        card_json: None,
        reward: RewardScheme::geometric(100 * ONE, 5000, 2),
        root_owner: None,
    };
    let m = c.publish_model(who, &req).await.unwrap();
    c.mint(who, m.datatoken, who, u(10 * ONE)).await.unwrap();
    m.datatoken
}

#[tokio::test]
async fn an_offer_is_bought_only_when_it_sells_the_token_asked_for_within_max_cost() {
    let anvil = Anvil::start(&AnvilConfig::default()).unwrap();
    let rpc = anvil.endpoint();
    let seller_key: PrivateKeySigner = ANVIL_DEV_KEY_0.parse().unwrap();
    let seller = seller_key.address();
    let (book, _) = deploy_stack(&rpc, &seller_key).await.unwrap();
    let c = Chain::connect(&rpc, seller_key, book.clone()).unwrap();
    let real = publish(&c, seller, "REAL", 1).await;
    let junk = publish(&c, seller, "JUNK", 2).await;
    // The seller advertises "the REAL offer" but the id he hands out sells JUNK.
    let (junk_offer, _) = c.create_offer(seller, junk, u(ONE), u(5 * ONE)).await.unwrap();
    let (real_offer, _) = c.create_offer(seller, real, u(3 * ONE), u(5 * ONE)).await.unwrap();

    let buyer_key = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
    let buyer = buyer_key.address();
    c.send_eth(buyer, u(10 * ONE)).await.unwrap();
    c.transfer(seller, book.ocean, buyer, u(100 * ONE)).await.unwrap();
    // The session's API is never asked: the offer and its token are read on chain.
    let api = ApiClient::new("http://127.0.0.1:9").unwrap();
    let s = Session::connect(api, &rpc, book.clone(), buyer_key).unwrap();
    let allowance = || async {
        OceanToken::new(book.ocean, c.provider())
            .allowance(buyer, book.market)
            .call()
            .await
            .unwrap()
    };
    let ocean = || async { c.balance_of(book.ocean, buyer).await.unwrap() };

    // Wrong token: refused, naming both, with nothing approved or paid.
    let want = Wanted { token: real, max_cost: None };
    let err = market::buy_offer(&s, junk_offer, u(ONE), &want).await.unwrap_err();
    let CliError::Usage(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains(&junk.to_string()) && msg.contains(&real.to_string()), "{msg}");
    assert_eq!(allowance().await, U256::ZERO);
    assert_eq!(ocean().await, u(100 * ONE));
    assert_eq!(c.balance_of(junk, buyer).await.unwrap(), U256::ZERO);

    // Right token, but 3 OCEAN is over a max cost of 2.5: refused, nothing approved.
    let want = Wanted { token: real, max_cost: Some(u(5 * ONE / 2)) };
    let err = market::buy_offer(&s, real_offer, u(ONE), &want).await.unwrap_err();
    let CliError::Usage(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains("--max-cost"), "{msg}");
    assert_eq!(allowance().await, U256::ZERO);
    assert_eq!(ocean().await, u(100 * ONE));

    // Right token within the max cost: bought at exactly the cost shown.
    let want = Wanted { token: real, max_cost: Some(u(3 * ONE)) };
    let p = market::prepare_offer(&s, real_offer, u(ONE), &want).await.unwrap();
    assert_eq!(p.cost, u(3 * ONE));
    assert!(
        market::describe_offer(&p).contains("3 OCEAN in all"),
        "{}",
        market::describe_offer(&p)
    );
    let b = market::buy_prepared(&s, &p).await.unwrap();
    assert_eq!(b.paid, (3 * ONE).to_string());
    assert_eq!(c.balance_of(real, buyer).await.unwrap(), u(ONE));
    assert_eq!(ocean().await, u(97 * ONE));
    assert_eq!(allowance().await, U256::ZERO, "exactly the cost was approved and spent");
}
