//! Lineage royalties: every order of a derived model pays the root's royalty in OCEAN, at
//! `startOrder`, into that model's vault; anyone may distribute the vault to the model's
//! ancestors by the root's scheme, exactly (no dust), and nobody can redirect it.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use std::collections::BTreeMap;

use alloy::primitives::{Address, Bytes, U256};
use common::{Env, ONE, env};
use posthuman_chain::ChainError;
use posthuman_chain::alloy;
use posthuman_chain::bindings::{ERC20Template, RoyaltyVault};
use posthuman_chain::lineage::VAULT_SEED;
use posthuman_types::RewardScheme;
use posthuman_types::model::MAX_ROYALTY;
use rand::Rng;

/// An awkward royalty (not divisible by 2, 4 or 10,000), below the cap.
const ROYALTY: u128 = 3_333_333_333_333_333_337;
/// The provider fee for the compute, in OCEAN like the royalty.
const COMPUTE_FEE: u128 = 2 * ONE + 1;
/// What `createChild` puts in a new vault (paid by the operator) and `distribute()` leaves
/// there, so the vault's OCEAN balance never goes back to zero and no order pays for
/// creating it.
const SEED: u128 = 1;

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

    assert_eq!(ocean(&e, vault).await, U256::from(SEED), "createChild seeds the vault");
    let op = e.chain.operator();
    let before = [ocean(&e, l.derek).await, ocean(&e, op).await];
    let provider_fee = e
        .chain
        .sign_provider_fee_for(U256::from(COMPUTE_FEE), u64::MAX / 2, Bytes::from_static(b"job"))
        .unwrap();
    let order = e.chain.start_order(l.derek, l.m3.1, l.derek, 0, &provider_fee).await.unwrap();
    assert_eq!(
        ocean(&e, l.derek).await,
        before[0] - U256::from(COMPUTE_FEE + ROYALTY),
        "Derek pays compute and royalty, nothing else"
    );
    assert_eq!(ocean(&e, op).await, before[1] + U256::from(COMPUTE_FEE));
    assert_eq!(ocean(&e, vault).await, U256::from(ROYALTY + SEED));
    println!("startOrder of a derived model (compute fee + royalty): {} gas", order.gas_used);

    let (alice0, bob0, carol0) =
        (ocean(&e, l.alice).await, ocean(&e, l.bob).await, ocean(&e, l.carol).await);
    // Anyone may distribute: Derek does.
    let v = RoyaltyVault::new(vault, e.chain.provider());
    let r = v.distribute().from(l.derek).send().await.unwrap().get_receipt().await.unwrap();
    assert!(r.status());
    let to_bob = ROYALTY * 5000 / 10_000;
    assert_eq!(ocean(&e, l.bob).await - bob0, U256::from(to_bob));
    assert_eq!(ocean(&e, l.alice).await - alice0, U256::from(ROYALTY - to_bob));
    assert_eq!(ocean(&e, l.carol).await, carol0, "the model's own trainer is no ancestor");
    assert_eq!(ocean(&e, vault).await, U256::from(SEED), "no dust left: only the seed stays");
    // Idempotent: an empty vault pays nothing and does not fail.
    let r = v.distribute().from(l.carol).send().await.unwrap().get_receipt().await.unwrap();
    assert!(r.status());
    assert_eq!(ocean(&e, l.bob).await - bob0, U256::from(to_bob));

    // The same through the client: terms, and who was paid for which ancestor.
    let terms = e.chain.royalty_terms(l.m3.0).await.unwrap().unwrap();
    assert_eq!((terms.vault, terms.token, terms.amount), (vault, token, U256::from(ROYALTY)));
    assert_eq!(
        e.chain.royalty_terms(e.chain.model(l.m2.0).await.unwrap().unwrap().root).await.unwrap(),
        None
    );
    let to_bob_events = e.chain.royalties_paid_to(l.bob).await.unwrap();
    assert_eq!(to_bob_events.len(), 1);
    let p = &to_bob_events[0];
    assert_eq!(
        (p.child, p.vault, p.ancestor, p.amount),
        (l.m3.0, vault, l.m2.0, U256::from(to_bob))
    );
    let to_alice = e.chain.royalties_paid_to(l.alice).await.unwrap();
    assert_eq!(to_alice.len(), 1);
    assert_eq!(to_alice[0].amount, U256::from(ROYALTY - to_bob));
    assert!(e.chain.distribute_royalty(l.derek, l.m3.0).await.unwrap().is_empty());

    // M2's only ancestor is the root: its orders' royalty goes to Alice alone.
    let dt2 = ERC20Template::new(l.m2.1, e.chain.provider());
    assert_eq!(dt2.getPublishingMarketFee().call().await.unwrap()._2, U256::from(ROYALTY));
}

/// Nobody can redirect or change a vault's fee: the datatoken lets only the fee address
/// (the vault) call `setPublishingMarketFee`, and the vault has no function that does.
#[tokio::test]
async fn a_vault_cannot_be_redirected() {
    let (e, l) = lineage(32, ROYALTY).await;
    let dt = ERC20Template::new(l.m3.1, e.chain.provider());
    let ocean = e.chain.book().ocean;
    for who in [e.chain.operator(), l.alice, l.bob, l.carol, l.derek] {
        let r = dt.setPublishingMarketFee(who, ocean, U256::ZERO).from(who).send().await;
        assert!(r.is_err(), "{who} redirected the royalty");
    }
    // The vault's whole ABI: three immutables, the seed constant and distribute().
    let artifact: serde_json::Value =
        serde_json::from_str(include_str!("../../../contracts/out/RoyaltyVault.json")).unwrap();
    let mut fns: Vec<&str> = artifact["abi"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "function")
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    fns.sort_unstable();
    assert_eq!(fns, ["SEED", "distribute", "jobId", "lineage", "token"]);
    let fee = dt.getPublishingMarketFee().call().await.unwrap();
    assert_eq!(fee._2, U256::from(ROYALTY));
}

/// The royalty per order is capped: a root asking for more than `MAX_ROYALTY` is refused by
/// the contract (and by the scheme's own validation before that).
#[tokio::test]
async fn the_royalty_is_capped() {
    let mut e = env(33).await;
    let alice = e.wallet(0).await;
    let m = e.publish(alice, RewardScheme::geometric(ONE, 5000, 2).with_royalty(MAX_ROYALTY)).await;
    assert_eq!(e.chain.scheme_of(m.nft).await.unwrap().royalty().unwrap(), MAX_ROYALTY);
    let w = e.chain.model(m.nft).await.unwrap().unwrap().weights_hash;
    // A fresh root asking for one wei over the cap (registration reverts before any state).
    let fresh = e.publish(alice, RewardScheme::geometric(ONE, 5000, 2)).await;
    let r = e
        .chain
        .register_root(fresh.nft, fresh.datatoken, w, alice, alice, 1, &[], MAX_ROYALTY + 1)
        .await;
    match r {
        Err(ChainError::LineageRejected(s)) => assert!(s.contains("RoyaltyTooHigh"), "{s}"),
        other => panic!("expected RoyaltyTooHigh, got {other:?}"),
    }
    let over = RewardScheme::geometric(ONE, 5000, 2).with_royalty(MAX_ROYALTY + 1);
    assert!(over.validate().is_err());
}

/// A random royalty, awkward shares, depths 1…6 and vault balances: every distribution pays exactly what
/// `RewardScheme::royalty_split` says to each ancestor's trainer, the vault ends with its seed
/// only and the amounts add up to what it held besides (awkward amounts, repeated trainers).
#[tokio::test]
async fn royalty_split_is_exact_for_random_lineages() {
    let mut e = env(34).await;
    let alice = e.wallet(0).await;
    let derek = e.wallet(1_000 * ONE).await;
    let shares: Vec<u16> = vec![3333, 2222, 1111, 7];
    let royalty = e.rng.random_range(1..=MAX_ROYALTY);
    let scheme =
        RewardScheme { royalty: royalty.to_string(), ..RewardScheme::geometric(ONE, 0, 0) };
    let scheme = RewardScheme { shares_bps: shares, ..scheme };
    let root = e.publish(alice, scheme.clone()).await;
    let pool: Vec<Address> = (0..3).map(|_| Address::from(e.rng.random::<[u8; 20]>())).collect();
    let mut parent = root.nft;
    let mut trainers: Vec<Address> = Vec::new(); // most recent first
    for depth in 1..=6usize {
        let trainer = pool[e.rng.random_range(0..pool.len())];
        let (child_nft, _) = derive(&mut e, parent, trainer, "D").await;
        // The vault pays whatever it holds (orders are covered above): an awkward amount.
        let terms = e.chain.royalty_terms(child_nft).await.unwrap().unwrap();
        assert_eq!(terms.amount, U256::from(royalty));
        let extra = e.rng.random_range(0..1_000_003u128);
        e.chain
            .transfer(derek, e.chain.book().ocean, terms.vault, U256::from(extra))
            .await
            .unwrap();
        let held =
            e.chain.balance_of(e.chain.book().ocean, terms.vault).await.unwrap().to::<u128>();
        let paid = e.chain.distribute_royalty(derek, child_nft).await.unwrap();
        // Everything but the operator's seed is paid out.
        let held = held - SEED;
        let (shares_paid, to_root) = scheme.royalty_split(depth, held).unwrap();
        let mut expected: BTreeMap<Address, u128> = BTreeMap::new();
        for (who, amount) in trainers.iter().zip(&shares_paid) {
            *expected.entry(*who).or_default() += amount;
        }
        *expected.entry(alice).or_default() += to_root;
        expected.retain(|_, a| *a > 0);
        let mut got: BTreeMap<Address, u128> = BTreeMap::new();
        for p in &paid {
            assert_eq!(p.child, child_nft);
            *got.entry(p.beneficiary).or_default() += p.amount.to::<u128>();
        }
        assert_eq!(got, expected, "depth {depth}, held {held}");
        assert_eq!(got.values().sum::<u128>(), held, "no dust");
        assert_eq!(
            e.chain.balance_of(e.chain.book().ocean, terms.vault).await.unwrap(),
            U256::from(SEED)
        );
        trainers.insert(0, trainer);
        parent = child_nft;
    }
}

/// A derived model is ready for its first order, so its first buyer pays what every later
/// buyer pays, not for the model's set-up: `createChild` seeds the vault (the royalty then
/// rewrites a non-zero OCEAN balance), starts the child datatoken's reentrancy guard (Ocean
/// clones datatokens without running constructors, so the guard starts at zero and the first
/// `nonReentrant` call would create it), and mints 1 wei of the datatoken to Ocean's
/// community collector (its share of each order would otherwise create its balance on the
/// first one). So the first order creates no storage slot at all (20,000 gas each; measured
/// with the node's prestate tracer).
#[tokio::test]
async fn the_first_order_of_a_derived_model_creates_no_storage_slot() {
    let (e, l) = lineage(35, ROYALTY).await;
    let terms = e.chain.royalty_terms(l.m3.0).await.unwrap().unwrap();
    assert_eq!(ocean(&e, terms.vault).await, U256::from(SEED), "createChild seeds the vault");
    let vault = RoyaltyVault::new(terms.vault, e.chain.provider());
    assert_eq!(vault.SEED().call().await.unwrap(), U256::from(VAULT_SEED));
    assert_eq!(SEED, VAULT_SEED);
    let fee = e
        .chain
        .sign_provider_fee_for(U256::from(COMPUTE_FEE), u64::MAX / 2, Bytes::from_static(b"job"))
        .unwrap();
    let collector = e.chain.book().opf_collector;
    assert_eq!(e.chain.balance_of(l.m3.1, collector).await.unwrap(), U256::from(1), "seeded");
    let order = e.chain.start_order(l.derek, l.m3.1, l.derek, 0, &fee).await.unwrap();
    let created = e.chain.created_slots(order.tx_hash).await.unwrap();
    assert_eq!(created, vec![], "the first order created storage");

    assert_eq!(ocean(&e, terms.vault).await, U256::from(ROYALTY + SEED));
    assert_eq!(e.chain.royalty_pending(l.m3.0).await.unwrap(), Some(U256::from(ROYALTY)));
}
