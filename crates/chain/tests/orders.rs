//! The order check: each rejection reason on its own, acceptance, claim/release, and
//! ≥1,000 random invalid variants none of which is accepted.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use common::{Env, ONE, env};
use posthuman_chain::alloy;
use posthuman_chain::alloy::providers::ext::AnvilApi;
use posthuman_chain::fees::sign_provider_fee;
use posthuman_chain::{MemorySpentOrders, OrderQuery, OrderVerdict, Rejection, SpentOrders};
use posthuman_types::RewardScheme;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const NOW: u64 = 1_800_000_000;
const VALID_UNTIL: u64 = NOW + 3600;
/// A validUntil before any block of the test chain.
const LONG_AGO: u64 = 1_000_000_000;

/// A chain with two models and one transaction of each kind the check must tell apart.
struct Fixture {
    e: Env,
    bob: Address,
    carol: Address,
    dt1: Address,
    dt2: Address,
    good: B256,
    other_key: B256,
    expired: B256,
    for_carol: B256,
    service1: B256,
    on_dt2: B256,
    transfer: B256,
}

async fn fixture(seed: u64) -> Fixture {
    let mut e = env(seed).await;
    let alice = e.wallet(0).await;
    let bob = e.wallet(0).await;
    let carol = e.wallet(0).await;
    let m1 = e.publish(alice, RewardScheme::geometric(ONE, 5000, 2)).await;
    let m2 = e.publish(alice, RewardScheme::geometric(ONE, 5000, 2)).await;
    for dt in [m1.datatoken, m2.datatoken] {
        e.chain.mint(alice, dt, bob, U256::from(10 * ONE)).await.unwrap();
    }
    let c = &e.chain;
    let fee = c.sign_provider_fee(VALID_UNTIL, Bytes::from_static(b"job")).unwrap();
    let good = c.start_order(bob, m1.datatoken, bob, 0, &fee).await.unwrap().tx_hash;
    // A fee signed by someone else is valid on chain (signer == fee address) but not ours.
    let stranger = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
    let foreign =
        sign_provider_fee(&stranger, c.book().ocean, U256::ZERO, VALID_UNTIL, Bytes::new())
            .unwrap();
    let other_key = c.start_order(bob, m1.datatoken, bob, 0, &foreign).await.unwrap().tx_hash;
    let old = c.sign_provider_fee(LONG_AGO, Bytes::new()).unwrap();
    let expired = c.start_order(bob, m1.datatoken, bob, 0, &old).await.unwrap().tx_hash;
    let for_carol = c.start_order(bob, m1.datatoken, carol, 0, &fee).await.unwrap().tx_hash;
    let service1 = c.start_order(bob, m1.datatoken, bob, 1, &fee).await.unwrap().tx_hash;
    let on_dt2 = c.start_order(bob, m2.datatoken, bob, 0, &fee).await.unwrap().tx_hash;
    let transfer =
        c.transfer(bob, m1.datatoken, carol, U256::from(ONE)).await.unwrap().transaction_hash;
    Fixture {
        bob,
        carol,
        dt1: m1.datatoken,
        dt2: m2.datatoken,
        good,
        other_key,
        expired,
        for_carol,
        service1,
        on_dt2,
        transfer,
        e,
    }
}

impl Fixture {
    fn query(&self, tx: B256) -> OrderQuery {
        OrderQuery {
            tx_hash: tx.to_string(),
            datatoken: self.dt1,
            service_index: 0,
            consumer: self.bob,
            job_id: "job-a".into(),
        }
    }

    async fn verdict(&self, q: &OrderQuery) -> OrderVerdict {
        self.e.chain.verify_order(q, &MemorySpentOrders::new()).await.unwrap()
    }

    async fn rejection(&self, q: &OrderQuery) -> Rejection {
        match self.verdict(q).await {
            OrderVerdict::Rejected(r) => r,
            OrderVerdict::Accepted(v) => panic!("accepted {v:?} for {q:?}"),
        }
    }
}

#[tokio::test]
async fn each_rejection_has_its_own_reason() {
    let f = fixture(11).await;
    // The good order passes.
    let v = f.verdict(&f.query(f.good)).await;
    let OrderVerdict::Accepted(ok) = v else { panic!("good order rejected: {v:?}") };
    assert_eq!(ok.consumer, f.bob);
    assert_eq!(ok.payer, f.bob);
    assert_eq!(ok.amount, U256::from(ONE));
    assert_eq!(ok.provider_data, Bytes::from_static(b"job"));

    // No such tx.
    assert_eq!(f.rejection(&f.query(B256::repeat_byte(0x42))).await, Rejection::NoSuchTransaction);
    // Forged tx hash: one bit of the good order's hash flipped, and a malformed one.
    let mut forged = f.good;
    forged.0[31] ^= 1;
    assert_eq!(f.rejection(&f.query(forged)).await, Rejection::NoSuchTransaction);
    let mut q = f.query(f.good);
    q.tx_hash = format!("{}zz", &f.good.to_string()[..64]);
    assert_eq!(f.rejection(&q).await, Rejection::MalformedTxHash);
    q.tx_hash = "0x1234".into();
    assert_eq!(f.rejection(&q).await, Rejection::MalformedTxHash);
    // A transaction that is not an order.
    assert_eq!(f.rejection(&f.query(f.transfer)).await, Rejection::NotAnOrder);
    // Wrong datatoken.
    assert_eq!(
        f.rejection(&f.query(f.on_dt2)).await,
        Rejection::WrongDatatoken { found: vec![f.dt2] }
    );
    // Wrong service index.
    assert!(matches!(
        f.rejection(&f.query(f.service1)).await,
        Rejection::WrongServiceIndex { expected: 0, .. }
    ));
    // Consumer ≠ signer: the order names Carol but Bob signs the request, and vice versa.
    assert_eq!(
        f.rejection(&f.query(f.for_carol)).await,
        Rejection::ConsumerMismatch { expected: f.bob, found: f.carol }
    );
    let mut q = f.query(f.good);
    q.consumer = f.carol;
    assert!(matches!(f.rejection(&q).await, Rejection::ConsumerMismatch { .. }));
    // Provider fee signed by another key.
    assert!(matches!(
        f.rejection(&f.query(f.other_key)).await,
        Rejection::ProviderFeeNotOurs { .. }
    ));
    // A fee that had expired when the order was placed.
    assert!(matches!(f.rejection(&f.query(f.expired)).await, Rejection::ProviderFeeExpired { .. }));

    // Reused order: claimed by job-a, refused for job-b, idempotent for job-a, and free
    // again after job-a releases it.
    let spent = MemorySpentOrders::new();
    let qa = f.query(f.good);
    let mut qb = f.query(f.good);
    qb.job_id = "job-b".into();
    let OrderVerdict::Accepted(v) = f.e.chain.verify_order(&qa, &spent).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        f.e.chain.verify_order(&qb, &spent).await.unwrap(),
        OrderVerdict::Rejected(Rejection::AlreadyUsed { job: "job-a".into() })
    );
    assert!(f.e.chain.verify_order(&qa, &spent).await.unwrap().is_accepted());
    assert!(!spent.release(&v.id, "job-b").await.unwrap(), "only the holder releases");
    assert!(spent.release(&v.id, "job-a").await.unwrap());
    assert!(f.e.chain.verify_order(&qb, &spent).await.unwrap().is_accepted());
    assert_eq!(spent.holder(&v.id).await.unwrap().as_deref(), Some("job-b"));
}

#[tokio::test]
async fn confirmations_are_enforced() {
    let mut f = fixture(12).await;
    f.e.chain.min_confirmations = 3;
    assert_eq!(
        f.rejection(&f.query(f.transfer)).await,
        Rejection::NotEnoughConfirmations { have: 1, need: 3 }
    );
    f.e.chain.provider().anvil_mine(Some(2), None).await.unwrap();
    assert_eq!(f.rejection(&f.query(f.transfer)).await, Rejection::NotAnOrder);
}

/// One random variant of a query: which transaction, which hash mangling, which fields.
#[derive(Clone, Debug)]
struct Variant {
    tx: usize,
    mangle: u8,
    flip: (usize, u8),
    datatoken: u8,
    service: u64,
    consumer: u8,
    pre_claimed: bool,
    random: [u8; 20],
}

fn variant() -> impl Strategy<Value = Variant> {
    (
        // Weighted towards near misses: one thing wrong at a time is the interesting case.
        prop_oneof![3 => Just(0usize), 4 => 1usize..7],
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        (0usize..32, 1u8..=255),
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        prop_oneof![6 => Just(0u64), 1 => Just(1u64), 1 => any::<u64>()],
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        prop::bool::weighted(0.15),
        any::<[u8; 20]>(),
    )
        .prop_map(|(tx, mangle, flip, datatoken, service, consumer, pre_claimed, random)| {
            Variant { tx, mangle, flip, datatoken, service, consumer, pre_claimed, random }
        })
}

#[test]
fn random_invalid_variants_are_never_accepted() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let f = rt.block_on(fixture(13));
    let txs = [f.good, f.other_key, f.expired, f.for_carol, f.service1, f.on_dt2, f.transfer];
    let mut runner =
        TestRunner::new(Config { cases: 1400, failure_persistence: None, ..Config::default() });
    let invalid = std::cell::Cell::new(0u32);
    let valid = std::cell::Cell::new(0u32);
    let tally = std::cell::RefCell::new(std::collections::BTreeMap::<String, u32>::new());
    runner
        .run(&variant(), |v| {
            let mut hash = txs[v.tx];
            let mut q = f.query(hash);
            match v.mangle {
                0 => {}
                1 => {
                    hash.0[v.flip.0] ^= v.flip.1;
                    q.tx_hash = hash.to_string();
                }
                2 => q.tx_hash = format!("0x{}", alloy::hex::encode(v.random)),
                _ => q.tx_hash = B256::left_padding_from(&v.random).to_string(),
            }
            q.datatoken = match v.datatoken {
                0 => f.dt1,
                1 => f.dt2,
                _ => Address::from(v.random),
            };
            q.service_index = v.service;
            q.consumer = match v.consumer {
                0 => f.bob,
                1 => f.carol,
                _ => Address::from(v.random),
            };
            // What each fixture transaction is: (datatoken, service, consumer, fee ours and
            // unexpired when ordered); the transfer is no order at all.
            let facts = [
                Some((f.dt1, 0, f.bob, true)),
                Some((f.dt1, 0, f.bob, false)),
                Some((f.dt1, 0, f.bob, false)),
                Some((f.dt1, 0, f.carol, true)),
                Some((f.dt1, 1, f.bob, true)),
                Some((f.dt2, 0, f.bob, true)),
                None,
            ];
            let should_accept = v.mangle == 0
                && facts[v.tx].is_some_and(|(dt, service, consumer, fee_ok)| {
                    q.datatoken == dt
                        && q.service_index == service
                        && q.consumer == consumer
                        && fee_ok
                })
                && !(v.pre_claimed && v.tx == 0);
            let spent = MemorySpentOrders::new();
            let verdict = rt.block_on(async {
                if v.pre_claimed {
                    // Another job used this order already.
                    let first = OrderQuery { job_id: "earlier".into(), ..f.query(f.good) };
                    f.e.chain.verify_order(&first, &spent).await.unwrap();
                }
                f.e.chain.verify_order(&q, &spent).await.unwrap()
            });
            if should_accept {
                valid.set(valid.get() + 1);
                prop_assert!(verdict.is_accepted(), "valid query rejected: {q:?} → {verdict:?}");
            } else {
                invalid.set(invalid.get() + 1);
                let reason = verdict.rejection().map(|r| format!("{r:?}"));
                prop_assert!(reason.is_some(), "invalid variant accepted: {v:?} {q:?}");
                let key = reason
                    .unwrap_or_default()
                    .split([' ', '{', '('])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                *tally.borrow_mut().entry(key).or_default() += 1;
            }
            Ok(())
        })
        .unwrap();
    let (invalid, valid, tally) = (invalid.get(), valid.get(), tally.into_inner());
    assert!(invalid >= 1000, "only {invalid} invalid variants ({valid} valid)");
    eprintln!("{invalid} invalid variants rejected ({valid} valid accepted): {tally:?}");
    // Every reason a random variant can reach was reached.
    for reason in [
        "NoSuchTransaction",
        "MalformedTxHash",
        "NotAnOrder",
        "WrongDatatoken",
        "WrongServiceIndex",
        "ConsumerMismatch",
        "ProviderFeeNotOurs",
        "ProviderFeeExpired",
        "AlreadyUsed",
    ] {
        assert!(tally.contains_key(reason), "no variant hit {reason}: {tally:?}");
    }
}

/// validUntil is judged at the order's block time: an order placed while its fee was valid
/// still verifies once the chain's clock has passed validUntil (a retry after a failure that
/// was not the buyer's), and one placed after it never does.
#[tokio::test]
async fn a_fee_is_judged_when_the_order_was_placed() {
    let f = fixture(12).await;
    let c = &f.e.chain;
    async fn head(c: &posthuman_chain::Chain) -> u64 {
        use posthuman_chain::alloy::providers::Provider;
        let n = c.provider().get_block_number().await.unwrap();
        c.provider().get_block_by_number(n.into()).await.unwrap().unwrap().header.timestamp
    }
    let t0 = head(c).await;
    let fee = c.sign_provider_fee(t0 + 60, Bytes::from_static(b"soon")).unwrap();
    let in_time = c.start_order(f.bob, f.dt1, f.bob, 0, &fee).await.unwrap().tx_hash;
    c.provider().anvil_increase_time(3600).await.unwrap();
    c.provider().anvil_mine(Some(1), None).await.unwrap();
    assert!(head(c).await > t0 + 60);
    let v = f.verdict(&f.query(in_time)).await;
    let OrderVerdict::Accepted(ok) = v else {
        panic!("an order placed in time was refused: {v:?}")
    };
    assert!(ok.ordered_at <= t0 + 60);
    assert_eq!(ok.valid_until, U256::from(t0 + 60));
    let too_late = c.start_order(f.bob, f.dt1, f.bob, 0, &fee).await.unwrap().tx_hash;
    assert!(matches!(f.rejection(&f.query(too_late)).await, Rejection::ProviderFeeExpired { .. }));
}
