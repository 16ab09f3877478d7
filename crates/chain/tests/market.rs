//! The peer market: partial and full sales with exact balances, cost rounding up, the buyer's
//! maximum, seller-only changes, cancelled offers, atomic failure, and reward datatokens
//! (mintable only by the lineage contract) sold holder to holder: Bob → Charlie, then
//! Charlie → Derek and Elena. A token that calls back into `buy` shows the reentrancy guard.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use alloy::primitives::{Address, U256, keccak256};
use common::{Env, ONE, env};
use posthuman_chain::alloy;
use posthuman_chain::{AddressBook, ChainError, Offer};
use posthuman_types::RewardScheme;

alloy::sol!(
    #[sol(rpc)]
    ReentrantToken,
    "../../contracts/out/ReentrantToken.json"
);

fn rejected<T: std::fmt::Debug>(r: Result<T, ChainError>, name: &str) {
    match r {
        Err(ChainError::MarketRejected(s)) => {
            assert!(s.contains(name), "expected {name}, got {s}")
        }
        other => panic!("expected {name}, got {other:?}"),
    }
}

fn u(x: u128) -> U256 {
    U256::from(x)
}

async fn ocean(e: &Env, who: Address) -> U256 {
    e.chain.balance_of(e.chain.book().ocean, who).await.unwrap()
}

/// Alice publishes a root model and mints herself `amount` of its datatoken.
async fn alice_with_tokens(e: &mut Env, amount: u128) -> (Address, Address) {
    let alice = e.wallet(0).await;
    let m = e.publish(alice, RewardScheme::geometric(100 * ONE, 5000, 2)).await;
    e.chain.mint(alice, m.datatoken, alice, u(amount)).await.unwrap();
    (alice, m.datatoken)
}

#[tokio::test]
async fn partial_then_full_purchase_moves_exact_balances_until_sold_out() {
    let mut e = env(31).await;
    let (alice, dt) = alice_with_tokens(&mut e, 10 * ONE).await;
    let bob = e.wallet(100 * ONE).await;
    let price = u(3 * ONE); // 3 OCEAN per datatoken
    let (id, gas) = e.chain.create_offer(alice, dt, price, u(4 * ONE)).await.unwrap();
    assert_eq!(id, u(1), "ids start at 1");
    assert_eq!(gas.len(), 2);
    assert_eq!(
        e.chain.offer(id).await.unwrap(),
        Offer { seller: alice, token: dt, price, remaining: u(4 * ONE), active: true }
    );

    // Part: 1.5 tokens for 4.5 OCEAN.
    assert_eq!(e.chain.quote_offer(id, u(3 * ONE / 2)).await.unwrap(), u(9 * ONE / 2));
    e.chain.buy_offer(bob, id, u(3 * ONE / 2)).await.unwrap();
    assert_eq!(e.chain.balance_of(dt, bob).await.unwrap(), u(3 * ONE / 2));
    assert_eq!(e.chain.balance_of(dt, alice).await.unwrap(), u(10 * ONE - 3 * ONE / 2));
    assert_eq!(ocean(&e, alice).await, u(9 * ONE / 2));
    assert_eq!(ocean(&e, bob).await, u(100 * ONE - 9 * ONE / 2));
    assert_eq!(e.chain.offer(id).await.unwrap().remaining, u(5 * ONE / 2));

    // More than remains is refused; the rest sells.
    rejected(e.chain.buy_offer(bob, id, u(3 * ONE)).await, "NotEnoughRemaining");
    e.chain.buy_offer(bob, id, u(5 * ONE / 2)).await.unwrap();
    assert_eq!(e.chain.balance_of(dt, bob).await.unwrap(), u(4 * ONE));
    assert_eq!(e.chain.balance_of(dt, alice).await.unwrap(), u(6 * ONE));
    assert_eq!(ocean(&e, alice).await, u(12 * ONE));
    assert_eq!(ocean(&e, bob).await, u(88 * ONE));
    let o = e.chain.offer(id).await.unwrap();
    assert_eq!((o.remaining, o.active), (U256::ZERO, true));
    // Sold out: even one base unit is refused, and the market holds nothing.
    rejected(e.chain.buy_offer(bob, id, u(1)).await, "NotEnoughRemaining");
    assert_eq!(e.chain.balance_of(dt, e.chain.book().market).await.unwrap(), U256::ZERO);
    assert_eq!(ocean(&e, e.chain.book().market).await, U256::ZERO);

    // Unknown ids, zero price/amount.
    rejected(e.chain.offer(u(0)).await, "UnknownOffer");
    rejected(e.chain.offer(u(2)).await, "UnknownOffer");
    rejected(e.chain.create_offer(alice, dt, U256::ZERO, u(ONE)).await, "ZeroPrice");
    rejected(e.chain.create_offer(alice, dt, u(ONE), U256::ZERO).await, "ZeroAmount");
    let (id2, _) = e.chain.create_offer(alice, dt, u(ONE), u(ONE)).await.unwrap();
    assert_eq!(id2, u(2));
    rejected(e.chain.buy_offer(bob, id2, U256::ZERO).await, "ZeroAmount");
}

#[tokio::test]
async fn cost_rounds_up_and_max_cost_binds() {
    let mut e = env(32).await;
    let (alice, dt) = alice_with_tokens(&mut e, 10 * ONE).await;
    let bob = e.wallet(10 * ONE).await;
    // 2.5 OCEAN per token: 3 base units cost 7.5 base units, rounded up to 8.
    let (id, _) = e.chain.create_offer(alice, dt, u(5 * ONE / 2), u(5 * ONE)).await.unwrap();
    assert_eq!(e.chain.quote_offer(id, u(3)).await.unwrap(), u(8));
    assert_eq!(e.chain.quote_offer(id, u(2)).await.unwrap(), u(5), "exact when it divides");
    e.chain.buy_offer(bob, id, u(3)).await.unwrap();
    assert_eq!(ocean(&e, alice).await, u(8));
    assert_eq!(e.chain.balance_of(dt, bob).await.unwrap(), u(3));
    // A price below one base unit per token base unit still costs at least 1.
    let (cheap, _) = e.chain.create_offer(alice, dt, u(7), u(ONE)).await.unwrap();
    assert_eq!(e.chain.quote_offer(cheap, u(1)).await.unwrap(), u(1));
    assert_eq!(e.chain.quote_offer(cheap, u(ONE)).await.unwrap(), u(7));

    // maxCost one below the cost is refused and nothing moves; at the cost it goes through.
    let amount = u(ONE + 1);
    let cost = e.chain.quote_offer(id, amount).await.unwrap();
    assert_eq!(cost, u(5 * ONE / 2 + 3)); // 2.5e18 + 2.5 rounded up
    let (a0, b0) = (ocean(&e, alice).await, ocean(&e, bob).await);
    rejected(e.chain.buy_offer_max(bob, id, amount, cost - u(1)).await, "CostAboveMax");
    assert_eq!((ocean(&e, alice).await, ocean(&e, bob).await), (a0, b0));
    e.chain.buy_offer_max(bob, id, amount, cost).await.unwrap();
    assert_eq!(ocean(&e, bob).await, b0 - cost);
    assert_eq!(ocean(&e, alice).await, a0 + cost);

    // A price raised after the quote makes buy_offer-style purchases (maxCost = old quote)
    // fail rather than cost more.
    let quoted = e.chain.quote_offer(id, u(ONE)).await.unwrap();
    e.chain.update_offer(alice, id, u(3 * ONE), u(ONE)).await.unwrap();
    rejected(e.chain.buy_offer_max(bob, id, u(ONE), quoted).await, "CostAboveMax");
}

#[tokio::test]
async fn only_the_seller_changes_an_offer_and_cancelled_offers_do_not_sell() {
    let mut e = env(33).await;
    let (alice, dt) = alice_with_tokens(&mut e, 10 * ONE).await;
    let mallory = e.wallet(10 * ONE).await;
    let (id, _) = e.chain.create_offer(alice, dt, u(ONE), u(2 * ONE)).await.unwrap();
    rejected(e.chain.update_offer(mallory, id, u(1), u(10 * ONE)).await, "NotSeller");
    rejected(e.chain.cancel_offer(mallory, id).await, "NotSeller");
    assert_eq!(e.chain.offer(id).await.unwrap().price, u(ONE));

    // The seller updates price and amount (and the allowance follows).
    e.chain.update_offer(alice, id, u(2 * ONE), u(3 * ONE)).await.unwrap();
    let o = e.chain.offer(id).await.unwrap();
    assert_eq!((o.price, o.remaining), (u(2 * ONE), u(3 * ONE)));
    rejected(e.chain.update_offer(alice, id, U256::ZERO, u(ONE)).await, "ZeroPrice");
    e.chain.buy_offer(mallory, id, u(ONE)).await.unwrap();
    assert_eq!(ocean(&e, alice).await, u(2 * ONE));

    e.chain.cancel_offer(alice, id).await.unwrap();
    let o = e.chain.offer(id).await.unwrap();
    assert_eq!((o.active, o.remaining), (false, U256::ZERO));
    rejected(e.chain.buy_offer(mallory, id, u(1)).await, "OfferInactive");
    rejected(e.chain.buy_offer_max(mallory, id, u(1), u(ONE)).await, "OfferInactive");
    rejected(e.chain.update_offer(alice, id, u(ONE), u(ONE)).await, "OfferInactive");
    rejected(e.chain.cancel_offer(alice, id).await, "OfferInactive");
    assert_eq!(e.chain.balance_of(dt, mallory).await.unwrap(), u(ONE));
}

#[tokio::test]
async fn a_seller_without_the_tokens_fails_the_whole_purchase() {
    let mut e = env(34).await;
    let (alice, dt) = alice_with_tokens(&mut e, 2 * ONE).await;
    let bob = e.wallet(10 * ONE).await;
    let carol = e.wallet(0).await;
    let (id, _) = e.chain.create_offer(alice, dt, u(ONE), u(2 * ONE)).await.unwrap();
    // Alice gives her tokens away after offering them: the buyer's payment must not move.
    e.chain.transfer(alice, dt, carol, u(2 * ONE)).await.unwrap();
    assert!(e.chain.buy_offer(bob, id, u(ONE)).await.is_err());
    assert_eq!(ocean(&e, bob).await, u(10 * ONE));
    assert_eq!(ocean(&e, alice).await, U256::ZERO);
    assert_eq!(e.chain.offer(id).await.unwrap().remaining, u(2 * ONE));
}

/// One commit / createChild / recordDerivation round below `parent` trained by `trainer`;
/// returns the child's (nft, datatoken).
async fn derive(e: &mut Env, parent: Address, trainer: Address, name: &str) -> (Address, Address) {
    let (job, w, receipt) = (e.hash(), e.hash(), e.hash());
    e.chain.commit_training(job, parent, trainer, w, receipt).await.unwrap();
    let child = e.chain.create_child(job, name, name, "").await.unwrap();
    e.chain.record_derivation(job, child.nft, child.datatoken).await.unwrap();
    (child.nft, child.datatoken)
}

#[tokio::test]
async fn reward_datatokens_sell_from_holder_to_holder() {
    let mut e = env(35).await;
    let alice = e.wallet(0).await;
    let bob = e.wallet(0).await;
    let charlie = e.wallet(100 * ONE).await;
    let derek = e.wallet(50 * ONE).await;
    let elena = e.wallet(50 * ONE).await;
    let root = e.publish(alice, RewardScheme::geometric(100 * ONE, 5000, 4)).await;

    // Bob trains M2 and is rewarded 50 M2 datatokens, which nobody can mint or exchange-sell.
    let (m2, m2_dt) = derive(&mut e, root.nft, bob, "M2").await;
    assert_eq!(e.chain.balance_of(m2_dt, bob).await.unwrap(), u(50 * ONE));
    assert!(e.chain.create_fixed_rate(bob, m2_dt, u(ONE), false).await.is_err());

    // Bob offers 10 M2 at 1.5 OCEAN; Charlie buys 4.
    let (offer, _) = e.chain.create_offer(bob, m2_dt, u(3 * ONE / 2), u(10 * ONE)).await.unwrap();
    e.chain.buy_offer(charlie, offer, u(4 * ONE)).await.unwrap();
    assert_eq!(e.chain.balance_of(m2_dt, charlie).await.unwrap(), u(4 * ONE));
    assert_eq!(e.chain.balance_of(m2_dt, bob).await.unwrap(), u(46 * ONE));
    assert_eq!(ocean(&e, bob).await, u(6 * ONE));
    assert_eq!(ocean(&e, charlie).await, u(94 * ONE));
    assert_eq!(e.chain.offer(offer).await.unwrap().remaining, u(6 * ONE));

    // Charlie trains M3 from M2 and sells his M3 reward to Derek and Elena.
    let (_m3, m3_dt) = derive(&mut e, m2, charlie, "M3").await;
    let reward = e.chain.balance_of(m3_dt, charlie).await.unwrap();
    assert_eq!(reward, u(50 * ONE));
    let (o3, _) = e.chain.create_offer(charlie, m3_dt, u(2 * ONE), u(30 * ONE)).await.unwrap();
    e.chain.buy_offer(derek, o3, u(10 * ONE)).await.unwrap();
    e.chain.buy_offer(elena, o3, u(20 * ONE)).await.unwrap();
    assert_eq!(e.chain.balance_of(m3_dt, derek).await.unwrap(), u(10 * ONE));
    assert_eq!(e.chain.balance_of(m3_dt, elena).await.unwrap(), u(20 * ONE));
    assert_eq!(e.chain.balance_of(m3_dt, charlie).await.unwrap(), u(20 * ONE));
    assert_eq!(ocean(&e, derek).await, u(30 * ONE));
    assert_eq!(ocean(&e, elena).await, u(10 * ONE));
    assert_eq!(ocean(&e, charlie).await, u(94 * ONE + 60 * ONE));
    assert_eq!(e.chain.offer(o3).await.unwrap().remaining, U256::ZERO);
}

#[tokio::test]
async fn books_from_before_the_market_still_load() {
    let e = env(36).await;
    let book = e.chain.book().clone();
    assert_ne!(book.market, Address::ZERO);
    let mut json: serde_json::Value = serde_json::to_value(&book).unwrap();
    json.as_object_mut().unwrap().remove("market");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let old = AddressBook::load(&path).unwrap();
    assert_eq!(old.market, Address::ZERO);
    assert_eq!(AddressBook { market: book.market, ..old.clone() }, book);
    let chain =
        posthuman_chain::Chain::connect(&e.anvil.endpoint(), common::operator_key(), old).unwrap();
    assert!(matches!(chain.offer(u(1)).await, Err(ChainError::Invalid(_))));
}

#[tokio::test]
async fn a_token_calling_back_into_buy_is_stopped_by_the_guard() {
    let mut e = env(37).await;
    let alice = e.wallet(0).await;
    let bob = e.wallet(10 * ONE).await;
    let token = ReentrantToken::deploy_builder(e.chain.provider()).from(alice);
    let receipt = token.send().await.unwrap().get_receipt().await.unwrap();
    let token = ReentrantToken::new(receipt.contract_address.unwrap(), e.chain.provider());
    let (id, _) = e.chain.create_offer(alice, *token.address(), u(ONE), u(10 * ONE)).await.unwrap();
    let r = token.arm(e.chain.book().market, id).from(alice).send().await.unwrap();
    assert!(r.get_receipt().await.unwrap().status());

    // The outer purchase completes; the nested buy inside transferFrom hit the guard.
    e.chain.buy_offer(bob, id, u(2 * ONE)).await.unwrap();
    let err = token.reentryError().call().await.unwrap();
    assert_eq!(err.as_ref(), &keccak256("ReentrancyGuardReentrantCall()")[..4]);
    assert_eq!(e.chain.balance_of(*token.address(), bob).await.unwrap(), u(2 * ONE));
    assert_eq!(ocean(&e, alice).await, u(2 * ONE));
    assert_eq!(e.chain.offer(id).await.unwrap().remaining, u(8 * ONE));
}
