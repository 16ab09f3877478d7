//! Lineage royalties: every order of a derived model pays the root's royalty in OCEAN, at
//! `startOrder`, into that model's vault; anyone may distribute the vault to the model's
//! ancestors by the root's scheme, exactly (no dust), and nobody can redirect it.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use alloy::primitives::{Address, Bytes, U256};
use common::{Env, ONE, env, operator_key};
use posthuman_chain::alloy;
use posthuman_chain::bindings::ERC20Template;
use posthuman_chain::fees::sign_provider_fee;
use posthuman_types::RewardScheme;

alloy::sol! {
    /// A royalty vault's public surface.
    #[sol(rpc)]
    interface IVault {
        function distribute() external returns (uint256);
    }
}

/// An awkward royalty (not divisible by 2, 4 or 10,000), below the cap.
const ROYALTY: u128 = 3_333_333_333_333_333_337;
/// The provider fee for the compute, in OCEAN like the royalty.
const COMPUTE_FEE: u128 = 2 * ONE + 1;

struct Lineage {
    alice: Address,
    bob: Address,
    carol: Address,
    derek: Address,
    /// (nft, datatoken) of M2 (Bob's) and M3 (Carol's).
    m2: (Address, Address),
    m3: (Address, Address),
}

async fn derive(e: &mut Env, parent: Address, trainer: Address, name: &str) -> (Address, Address) {
    let (job, w, receipt) = (e.hash(), e.hash(), e.hash());
    e.chain.commit_training(job, parent, trainer, w, receipt).await.unwrap();
    let child = e.chain.create_child(job, name, name, "").await.unwrap();
    e.chain.record_derivation(job, child.nft, child.datatoken).await.unwrap();
    (child.nft, child.datatoken)
}

/// Alice's root M1 (geometric 50/25/12.5 %, royalty [`ROYALTY`]), Bob's M2, Carol's M3;
/// Derek holds OCEAN and 2 M3 datatokens (from Carol's reward).
async fn lineage(seed: u64, royalty: u128) -> (Env, Lineage) {
    let mut e = env(seed).await;
    let alice = e.wallet(0).await;
    let bob = e.wallet(0).await;
    let carol = e.wallet(0).await;
    let derek = e.wallet(100 * ONE).await;
    let scheme = RewardScheme::geometric(100 * ONE, 5000, 4).with_royalty(royalty);
    let m1 = e.publish(alice, scheme).await;
    let m2 = derive(&mut e, m1.nft, bob, "M2").await;
    let m3 = derive(&mut e, m2.0, carol, "M3").await;
    e.chain.transfer(carol, m3.1, derek, U256::from(2 * ONE)).await.unwrap();
    (e, Lineage { alice, bob, carol, derek, m2, m3 })
}

async fn ocean(e: &Env, who: Address) -> U256 {
    e.chain.balance_of(e.chain.book().ocean, who).await.unwrap()
}

/// Derek's order of M3 pays the compute fee to the operator and the royalty into M3's vault;
/// distributing the vault pays M3's ancestors: Bob (M2's trainer) share 0, Alice (the root
/// owner) the rest, to the wei; Carol (M3's own trainer) is paid by the datatoken, not the
/// royalty. A second distribute pays nothing.
#[tokio::test]
async fn an_order_of_a_derived_model_pays_its_ancestors() {
    let (e, l) = lineage(31, ROYALTY).await;
    let dt = ERC20Template::new(l.m3.1, e.chain.provider());
    let fee = dt.getPublishingMarketFee().call().await.unwrap();
    let (vault, token, amount) = (fee._0, fee._1, fee._2);
    assert_ne!(vault, Address::ZERO, "M3's orders pay no royalty");
    assert_eq!((token, amount), (e.chain.book().ocean, U256::from(ROYALTY)));

    let op = e.chain.operator();
    let before = [ocean(&e, l.derek).await, ocean(&e, op).await];
    let provider_fee = sign_provider_fee(
        &operator_key(),
        e.chain.book().ocean,
        U256::from(COMPUTE_FEE),
        u64::MAX / 2,
        Bytes::from_static(b"job"),
    )
    .unwrap();
    let order = e.chain.start_order(l.derek, l.m3.1, l.derek, 0, &provider_fee).await.unwrap();
    assert_eq!(
        ocean(&e, l.derek).await,
        before[0] - U256::from(COMPUTE_FEE + ROYALTY),
        "Derek pays compute and royalty, nothing else"
    );
    assert_eq!(ocean(&e, op).await, before[1] + U256::from(COMPUTE_FEE));
    assert_eq!(ocean(&e, vault).await, U256::from(ROYALTY));
    println!("startOrder of a derived model (compute fee + royalty): {} gas", order.gas_used);

    let (alice0, bob0, carol0) =
        (ocean(&e, l.alice).await, ocean(&e, l.bob).await, ocean(&e, l.carol).await);
    // Anyone may distribute: Derek does.
    let v = IVault::new(vault, e.chain.provider());
    let r = v.distribute().from(l.derek).send().await.unwrap().get_receipt().await.unwrap();
    assert!(r.status());
    let to_bob = ROYALTY * 5000 / 10_000;
    assert_eq!(ocean(&e, l.bob).await - bob0, U256::from(to_bob));
    assert_eq!(ocean(&e, l.alice).await - alice0, U256::from(ROYALTY - to_bob));
    assert_eq!(ocean(&e, l.carol).await, carol0, "the model's own trainer is no ancestor");
    assert_eq!(ocean(&e, vault).await, U256::ZERO, "no dust left in the vault");
    // Idempotent: an empty vault pays nothing and does not fail.
    let r = v.distribute().from(l.carol).send().await.unwrap().get_receipt().await.unwrap();
    assert!(r.status());
    assert_eq!(ocean(&e, l.bob).await - bob0, U256::from(to_bob));

    // M2's only ancestor is the root: its orders' royalty goes to Alice alone.
    let dt2 = ERC20Template::new(l.m2.1, e.chain.provider());
    assert_eq!(dt2.getPublishingMarketFee().call().await.unwrap()._2, U256::from(ROYALTY));
}
