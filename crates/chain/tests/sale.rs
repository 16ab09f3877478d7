//! A derived model on sale on Ocean's own FixedRateExchange (`ModelLineage.openSale`): only
//! its trainer opens it, once the derivation is recorded; a third party buys through the
//! exchange exactly what was put on sale and no more; the OCEAN goes to the trainer; nothing
//! is minted (the child's supply stays its rewards) and the exchange is no minter.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use alloy::primitives::{Address, U256};
use common::{Env, ONE, env};
use posthuman_chain::ChainError;
use posthuman_chain::alloy;
use posthuman_chain::bindings::{ERC20Template, FixedRateExchange};
use posthuman_types::RewardScheme;

fn rejected(r: Result<impl std::fmt::Debug, ChainError>, name: &str) {
    match r {
        Err(ChainError::LineageRejected(s)) => {
            assert!(s.contains(name), "expected {name}, got {s}")
        }
        other => panic!("expected {name}, got {other:?}"),
    }
}

/// Commits and creates a child of `parent` trained by `trainer`; records it when `record`.
async fn child(e: &mut Env, parent: Address, trainer: Address, record: bool) -> (Address, Address) {
    let (job, w, receipt) = (e.hash(), e.hash(), e.hash());
    e.chain.commit_training(job, parent, trainer, w, receipt).await.unwrap();
    let c = e.chain.create_child(job, "Alice GPT · fine-tune 1", "AGPT-FT1", "").await.unwrap();
    println!("createChild: {} gas", c.gas_used);
    if record {
        let d = e.chain.record_derivation(job, c.nft, c.datatoken).await.unwrap();
        println!("recordDerivation: {} gas", d.gas_used);
    }
    (c.nft, c.datatoken)
}

#[tokio::test]
async fn a_third_party_buys_a_derived_model_on_its_trainers_exchange() {
    let mut e = env(71).await;
    let alice = e.wallet(0).await;
    let bob = e.wallet(ONE).await;
    let derek = e.wallet(1000 * ONE).await;
    let root = e.publish(alice, RewardScheme::geometric(100 * ONE, 5000, 3)).await;
    let (m2, dt) = child(&mut e, root.nft, bob, true).await;
    let token = ERC20Template::new(dt, e.chain.provider().clone());
    // The rewards and the 1 wei createChild mints to Ocean's collector: all there ever is.
    let supply = U256::from(100 * ONE + 1);
    assert_eq!(token.totalSupply().call().await.unwrap(), supply);
    let ocean = e.chain.book().ocean;
    let bob_ocean = e.chain.balance_of(ocean, bob).await.unwrap();
    assert_eq!(e.chain.sale_of(dt).await.unwrap(), None);

    // Only the trainer, only a derived model.
    rejected(e.chain.open_sale(alice, m2, U256::from(ONE), U256::from(ONE)).await, "NotTrainer");
    rejected(e.chain.open_sale(derek, m2, U256::from(ONE), U256::ZERO).await, "NotTrainer");
    rejected(e.chain.close_sale(derek, m2).await, "NotTrainer");
    rejected(e.chain.open_sale(alice, root.nft, U256::from(ONE), U256::ZERO).await, "UnknownModel");
    assert_eq!(e.chain.sale_of(dt).await.unwrap(), None);

    // Bob (50 DT of reward) puts 10 on sale at 2 OCEAN.
    let opened =
        e.chain.open_sale(bob, m2, U256::from(2 * ONE), U256::from(10 * ONE)).await.unwrap();
    println!("openSale (creates the exchange): {} gas", opened.gas_used);
    let sale = e.chain.sale_of(dt).await.unwrap().unwrap();
    assert_eq!(sale.exchange_id, opened.exchange_id);
    assert_eq!(
        (sale.rate, sale.active, sale.available, sale.owner),
        (U256::from(2 * ONE), true, U256::from(10 * ONE), bob)
    );
    assert_eq!(e.chain.balance_of(dt, bob).await.unwrap(), U256::from(40 * ONE));
    assert!(!token.isMinter(e.chain.book().fixed_rate).call().await.unwrap(), "the exchange mints");
    // The deposit's float cost Bob Ocean's swap fee on ~1e-7 OCEAN, and nothing else.
    let spent = bob_ocean - e.chain.balance_of(ocean, bob).await.unwrap();
    assert!(spent <= U256::from(1_000_000_000u64), "the float cost {spent} OCEAN wei");
    println!("openSale of 10 DT cost the trainer {spent} OCEAN wei");

    // Derek buys through Ocean's exchange: 4, then the other 6; not one more.
    let (_, r) = e.chain.buy(derek, sale.exchange_id, U256::from(4 * ONE)).await.unwrap();
    println!("buyDT of a derived model: {} gas", r.gas_used);
    e.chain.buy(derek, sale.exchange_id, U256::from(6 * ONE)).await.unwrap();
    assert_eq!(e.chain.balance_of(dt, derek).await.unwrap(), U256::from(10 * ONE));
    assert!(
        e.chain.buy(derek, sale.exchange_id, U256::from(1)).await.is_err(),
        "sold past what was offered"
    );
    assert_eq!(token.totalSupply().call().await.unwrap(), supply, "supply passed the rewards");
    assert_eq!(e.chain.sale_of(dt).await.unwrap().unwrap().available, U256::ZERO);

    // The price goes to Bob, the child's payment collector, whoever collects it.
    let fre = FixedRateExchange::new(e.chain.book().fixed_rate, e.chain.provider().clone());
    let held = fre.getExchange(sale.exchange_id).call().await.unwrap().btBalance;
    assert_eq!(held, U256::from(20 * ONE));
    let before = e.chain.balance_of(e.chain.book().ocean, bob).await.unwrap();
    fre.collectBT(sale.exchange_id, held)
        .from(derek)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert_eq!(e.chain.balance_of(e.chain.book().ocean, bob).await.unwrap(), before + held);

    // Bob pauses, then reopens at a new price with 5 more; Derek buys them.
    e.chain.close_sale(bob, m2).await.unwrap();
    assert!(!e.chain.sale_of(dt).await.unwrap().unwrap().active);
    assert!(
        e.chain.buy(derek, sale.exchange_id, U256::from(1)).await.is_err(),
        "bought from a closed sale"
    );
    let again = e.chain.open_sale(bob, m2, U256::from(3 * ONE), U256::from(5 * ONE)).await.unwrap();
    assert_eq!(again.exchange_id, sale.exchange_id, "one exchange per datatoken");
    println!("openSale (reopens, re-prices, deposits 5 more): {} gas", again.gas_used);
    let s = e.chain.sale_of(dt).await.unwrap().unwrap();
    assert_eq!((s.rate, s.active, s.available), (U256::from(3 * ONE), true, U256::from(5 * ONE)));
    e.chain.buy(derek, s.exchange_id, U256::from(5 * ONE)).await.unwrap();
    assert_eq!(e.chain.balance_of(dt, derek).await.unwrap(), U256::from(15 * ONE));
    assert_eq!(token.totalSupply().call().await.unwrap(), supply);
    // Nobody but the lineage contract can mint: not the exchange, the operator or Bob.
    for who in [e.chain.book().fixed_rate, e.chain.operator(), bob] {
        assert!(!token.isMinter(who).call().await.unwrap());
    }
}

#[tokio::test]
async fn no_sale_before_the_derivation_is_recorded() {
    let mut e = env(72).await;
    let alice = e.wallet(0).await;
    let bob = e.wallet(0).await;
    let root = e.publish(alice, RewardScheme::geometric(100 * ONE, 5000, 3)).await;
    // Between createChild and recordDerivation the room under the cap is the rewards to be
    // minted: an exchange then would sell them.
    let (m2, _) = child(&mut e, root.nft, bob, false).await;
    rejected(e.chain.open_sale(bob, m2, U256::from(ONE), U256::ZERO).await, "WrongJobState");
}

/// Issue 14's figure: the readable default names ("Alice GPT · fine-tune 1", "AGPT-FT1") fit
/// Solidity's short-string slot, where the old ones ("Alice GPT ft j-" + 24 hex digits, 39
/// bytes) took extra slots: a derivation named the new way costs no more gas.
#[tokio::test]
async fn readable_default_names_cost_no_more_gas_than_the_old_ones() {
    let mut e = env(73).await;
    let alice = e.wallet(0).await;
    let bob = e.wallet(0).await;
    let root = e.publish(alice, RewardScheme::geometric(100 * ONE, 5000, 3)).await;
    let mut gas = vec![];
    for (name, symbol) in [
        ("Alice GPT ft j-b9dba0ef0123456789abcdef", "AGPT89ABCD"),
        ("Alice GPT · fine-tune 2", "AGPT-FT2"),
    ] {
        let (job, w, receipt) = (e.hash(), e.hash(), e.hash());
        e.chain.commit_training(job, root.nft, bob, w, receipt).await.unwrap();
        gas.push(e.chain.create_child(job, name, symbol, "").await.unwrap().gas_used);
    }
    println!("createChild: {} gas with the old names, {} with the new defaults", gas[0], gas[1]);
    assert!(gas[1] <= gas[0], "{gas:?}");
}
