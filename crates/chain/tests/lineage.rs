//! The lineage & reward contract: operator-only, once per job, exact reward splits for
//! random depths and amounts (cross-checked against `RewardScheme::split`), remainders to
//! the root owner of record even when another address holds the NFT, read-back, the depth
//! bound, and the owner's rotation of the operator (two-step ownership).

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use std::collections::BTreeMap;

use alloy::primitives::{Address, U256};
use common::{ONE, env};
use posthuman_chain::alloy;
use posthuman_chain::bindings::{ERC20Template, ERC721Template, ModelLineage};
use posthuman_chain::lineage::JobState;
use posthuman_chain::{Chain, ChainError};
use posthuman_types::RewardScheme;
use rand::Rng;

fn rejected(r: Result<impl std::fmt::Debug, ChainError>, name: &str) {
    match r {
        Err(ChainError::LineageRejected(s)) => {
            assert!(s.contains(name), "expected {name}, got {s}")
        }
        other => panic!("expected {name}, got {other:?}"),
    }
}

#[tokio::test]
async fn only_the_operator_records_and_a_job_records_once() {
    let mut e = env(21).await;
    let alice = e.wallet(0).await;
    let bob = e.wallet(0).await;
    let root = e.publish(alice, RewardScheme::geometric(100 * ONE, 5000, 3)).await;
    let carol = e.wallet(0).await;
    let (job, w, receipt) = (e.hash(), e.hash(), e.hash());

    // A client holding Bob's key as its "operator" is refused by the contract.
    let bob_key = alloy::signers::local::PrivateKeySigner::from_bytes(
        &alloy::primitives::B256::repeat_byte(9),
    )
    .unwrap();
    e.chain.send_eth(bob_key.address(), U256::from(ONE)).await.unwrap();
    let intruder = Chain::connect(&e.anvil.endpoint(), bob_key, e.chain.book().clone()).unwrap();
    rejected(intruder.commit_training(job, root.nft, bob, w, receipt).await, "NotOperator");
    rejected(
        intruder.register_root(root.nft, root.datatoken, w, alice, alice, 1, &[], 0).await,
        "NotOperator",
    );

    // Order of steps: no create/record before commit; commit once.
    rejected(e.chain.create_child(job, "M2", "M2", "").await, "WrongJobState");
    rejected(
        e.chain.commit_training(job, Address::repeat_byte(1), bob, w, receipt).await,
        "UnknownModel",
    );
    let committed = e.chain.commit_training(job, root.nft, bob, w, receipt).await.unwrap();
    let c = e.chain.commitment(job).await.unwrap();
    assert_eq!(
        (c.state, c.parent, c.trainer, c.output_weights_hash, c.receipt_hash),
        (JobState::Committed, root.nft, bob, w, receipt)
    );
    assert_eq!(
        Some(c.committed_at_block),
        committed.block_number,
        "the chain dates the commitment"
    );
    let w2 = e.hash();
    rejected(e.chain.commit_training(job, root.nft, bob, w2, receipt).await, "JobAlreadyCommitted");
    let child = e.chain.create_child(job, "M2", "M2", "").await.unwrap();
    rejected(e.chain.create_child(job, "M2b", "M2b", "").await, "WrongJobState");
    rejected(intruder.record_derivation(job, child.nft, child.datatoken).await, "NotOperator");
    rejected(e.chain.record_derivation(job, child.nft, root.datatoken).await, "ChildMismatch");
    let d = e.chain.record_derivation(job, child.nft, child.datatoken).await.unwrap();
    assert_eq!(d.rewards, vec![(bob, U256::from(50 * ONE)), (alice, U256::from(50 * ONE))]);
    rejected(e.chain.record_derivation(job, child.nft, child.datatoken).await, "WrongJobState");
    assert_eq!(e.chain.commitment(job).await.unwrap().state, JobState::Recorded);

    // The child is owned by the contract, carries the committed weights hash, and nobody
    // else (the operator included) can mint it.
    let nft = ERC721Template::new(child.nft, e.chain.provider());
    assert_eq!(nft.ownerOf(U256::from(1)).call().await.unwrap(), e.chain.book().lineage);
    assert_eq!(e.chain.weights_commitment(child.nft).await.unwrap(), Some(w));
    // … and, as a root's publisher writes it, the same hash as text Ocean's tools decode.
    let hex = e.chain.nft_data(child.nft, posthuman_chain::client::weights_hash_hex_key()).await;
    assert_eq!(
        String::from_utf8(hex.unwrap().to_vec()).unwrap(),
        format!("{:#x}", alloy::primitives::B256::from(w.0))
    );
    let dt = ERC20Template::new(child.datatoken, e.chain.provider().clone());
    assert!(dt.isMinter(e.chain.book().lineage).call().await.unwrap());
    for who in [e.chain.operator(), alice, bob] {
        assert!(!dt.isMinter(who).call().await.unwrap());
    }
    assert!(e.chain.mint(e.chain.operator(), child.datatoken, bob, U256::from(1)).await.is_err());
    assert!(
        e.chain
            .create_fixed_rate(e.chain.operator(), child.datatoken, U256::from(ONE), true)
            .await
            .is_err()
    );
    // The rewards, and the 1 wei createChild mints to Ocean's collector (COLLECTOR_SEED).
    assert_eq!(dt.totalSupply().call().await.unwrap(), U256::from(100 * ONE + 1));
    // Bob passes part of his reward on by a plain transfer (nothing else can mint it).
    e.chain.transfer(bob, child.datatoken, carol, U256::from(3 * ONE)).await.unwrap();
    assert_eq!(e.chain.balance_of(child.datatoken, carol).await.unwrap(), U256::from(3 * ONE));
    assert_eq!(dt.totalSupply().call().await.unwrap(), U256::from(100 * ONE + 1));
    // The contract refuses NFTs it did not create for itself.
    let root_nft = ERC721Template::new(root.nft, e.chain.provider());
    let stray = root_nft
        .safeTransferFrom(alice, e.chain.book().lineage, U256::from(1))
        .from(alice)
        .send()
        .await;
    assert!(stray.is_err(), "stray NFT accepted");

    // Registering the same root twice, or a root whose metadata disagrees, fails.
    rejected(
        e.chain
            .register_root(
                root.nft,
                root.datatoken,
                e.chain.model(root.nft).await.unwrap().unwrap().weights_hash,
                alice,
                alice,
                1,
                &[],
                0,
            )
            .await,
        "AlreadyRegistered",
    );
}

/// The operator publishes a root in custody for Alice (it holds the NFT, she holds no key
/// here): she, not the holder, is the root's owner of record and is paid the remainder.
#[tokio::test]
async fn remainder_goes_to_the_root_owner_not_the_nft_holder() {
    let mut e = env(22).await;
    let alice = Address::repeat_byte(0xa1);
    let bob = e.wallet(0).await;
    let op = e.chain.operator();
    let root = e.publish_for(op, RewardScheme::geometric(100 * ONE, 2000, 1), Some(alice)).await;
    let nft = ERC721Template::new(root.nft, e.chain.provider());
    assert_eq!(nft.ownerOf(U256::from(1)).call().await.unwrap(), op, "operator holds the NFT");
    assert_eq!(e.chain.model(root.nft).await.unwrap().unwrap().trainer, alice);

    let (job, w, receipt) = (e.hash(), e.hash(), e.hash());
    e.chain.commit_training(job, root.nft, bob, w, receipt).await.unwrap();
    let child = e.chain.create_child(job, "M2", "M2", "").await.unwrap();
    let d = e.chain.record_derivation(job, child.nft, child.datatoken).await.unwrap();
    assert_eq!(d.rewards, vec![(bob, U256::from(20 * ONE)), (alice, U256::from(80 * ONE))]);
    assert_eq!(e.chain.balance_of(child.datatoken, alice).await.unwrap(), U256::from(80 * ONE));
    assert_eq!(e.chain.balance_of(child.datatoken, op).await.unwrap(), U256::ZERO);

    // A root owner of record is mandatory (checked before anything else).
    let weights = e.chain.model(root.nft).await.unwrap().unwrap().weights_hash;
    rejected(
        e.chain
            .register_root(root.nft, root.datatoken, weights, op, Address::ZERO, 1, &[], 0)
            .await,
        "ZeroAddress",
    );
}

/// Walks a random lineage of `depth` derivations below a root with a random scheme and
/// random total, checking every derivation's mints against `RewardScheme::split`.
async fn random_lineage(seed: u64, depth: usize) {
    let mut e = env(seed).await;
    let alice = e.wallet(0).await;
    let count = e.rng.random_range(0..=16usize);
    let mut left = 10_000u32;
    let mut shares = Vec::new();
    for _ in 0..count {
        let s = e.rng.random_range(0..=left.min(6000));
        shares.push(s as u16);
        left -= s;
    }
    let total: u128 = match e.rng.random_range(0..3) {
        0 => e.rng.random_range(0..1000),
        1 => e.rng.random::<u64>() as u128,
        _ => e.rng.random::<u128>(),
    };
    let royalty = e.rng.random_range(0..=posthuman_types::model::MAX_ROYALTY);
    let scheme = RewardScheme {
        total_reward: total.to_string(),
        shares_bps: shares,
        royalty: royalty.to_string(),
    };
    let root = e.publish(alice, scheme.clone()).await;
    // A few trainers, so one address often appears several times in a lineage.
    let pool: Vec<Address> = (0..4).map(|_| Address::from(e.rng.random::<[u8; 20]>())).collect();
    let mut parent = root.nft;
    let mut trainers: Vec<Address> = Vec::new(); // most recent first
    let mut nfts = vec![root.nft];
    for level in 1..=depth {
        let trainer = pool[e.rng.random_range(0..pool.len())];
        trainers.insert(0, trainer);
        let job = e.hash();
        let w = e.hash();
        let receipt = e.hash();
        e.chain.commit_training(job, parent, trainer, w, receipt).await.unwrap();
        let child = e.chain.create_child(job, &format!("M{level}"), "M", "").await.unwrap();
        let d = e.chain.record_derivation(job, child.nft, child.datatoken).await.unwrap();

        let (paid, to_root) = scheme.split(trainers.len()).unwrap();
        let mut expected: BTreeMap<Address, u128> = BTreeMap::new();
        for (who, amount) in trainers.iter().zip(&paid) {
            *expected.entry(*who).or_default() += amount;
        }
        *expected.entry(alice).or_default() += to_root;
        expected.retain(|_, a| *a > 0);
        let mut got: BTreeMap<Address, u128> = BTreeMap::new();
        for (who, amount) in &d.rewards {
            assert!(got.insert(*who, amount.to::<u128>()).is_none(), "one mint per beneficiary");
        }
        assert_eq!(got, expected, "depth {level}, scheme {scheme:?}");
        let supply = ERC20Template::new(child.datatoken, e.chain.provider().clone())
            .totalSupply()
            .call()
            .await
            .unwrap();
        // Every reward, and the collector's 1 wei seed (COLLECTOR_SEED): no dust lost.
        assert_eq!(supply, U256::from(total + 1), "no dust lost or created");
        for (who, amount) in &expected {
            assert_eq!(
                e.chain.balance_of(child.datatoken, *who).await.unwrap(),
                U256::from(*amount)
            );
        }
        if level == 3 && scheme.shares_bps.len() >= 3 {
            assert!(
                d.gas_used <= 250_000,
                "recordDerivation to 3 trainers used {} gas",
                d.gas_used
            );
        }
        parent = child.nft;
        nfts.insert(0, child.nft);
    }

    // Read-back: leaf to root, every link as recorded.
    let lineage = e.chain.lineage(parent).await.unwrap();
    assert_eq!(lineage.len(), depth + 1);
    for (i, entry) in lineage.iter().enumerate() {
        assert_eq!(entry.nft, nfts[i]);
        assert_eq!(entry.depth as usize, depth - i);
        assert_eq!(entry.root, root.nft);
        assert_eq!(entry.parent, nfts.get(i + 1).copied());
        assert_eq!(entry.trainer, if i < depth { trainers[i] } else { alice });
        assert_eq!(Some(entry.weights_hash), e.chain.weights_commitment(entry.nft).await.unwrap());
        assert_eq!(entry.job_id.is_some(), i < depth);
    }
    assert_eq!(e.chain.scheme_of(root.nft).await.unwrap(), scheme);
}

#[tokio::test]
async fn reward_split_is_exact_for_random_depths_and_amounts() {
    // Depths drawn from 1..=20 (seeded), plus the extremes.
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(2026);
    let mut depths: Vec<usize> = vec![1, 20];
    depths.extend((0..4).map(|_| rng.random_range(1..=20)));
    for (i, depth) in depths.into_iter().enumerate() {
        random_lineage(100 + i as u64, depth).await;
    }
}

/// Derives `levels` models in a row below `parent`, each trained by `trainer`; returns the
/// last child's NFT.
async fn derive_chain(
    e: &mut common::Env,
    mut parent: Address,
    trainer: Address,
    levels: usize,
) -> Address {
    for level in 0..levels {
        let (job, w, receipt) = (e.hash(), e.hash(), e.hash());
        e.chain.commit_training(job, parent, trainer, w, receipt).await.unwrap();
        let child = e.chain.create_child(job, &format!("D{level}"), "D", "").await.unwrap();
        e.chain.record_derivation(job, child.nft, child.datatoken).await.unwrap();
        parent = child.nft;
    }
    parent
}

/// A lineage stops at `MAX_DEPTH` derivations below its root: the operator cannot commit
/// (nor create) one more, so every walk up a lineage (the contract's `lineage()`, receipt
/// verification) is bounded.
#[tokio::test]
async fn lineage_depth_is_bounded() {
    let mut e = env(23).await;
    let alice = e.wallet(0).await;
    let bob = e.wallet(0).await;
    let root = e.publish(alice, RewardScheme::geometric(100 * ONE, 5000, 3)).await;
    let deepest = derive_chain(&mut e, root.nft, bob, posthuman_types::model::MAX_DEPTH).await;
    let lineage = e.chain.lineage(deepest).await.unwrap();
    assert_eq!(lineage.len(), posthuman_types::model::MAX_DEPTH + 1);
    let (job, w, receipt) = (e.hash(), e.hash(), e.hash());
    rejected(e.chain.commit_training(job, deepest, bob, w, receipt).await, "DepthExceeded");
}

/// The owner rotates the operator: the old key loses every power at once (register, commit,
/// create, record), the new key has them all (a job committed before the rotation finishes
/// under the new key), and nobody but the owner can rotate.
#[tokio::test]
async fn the_owner_rotates_the_operator() {
    let mut e = env(24).await;
    let alice = e.wallet(0).await;
    let bob = e.wallet(0).await;
    let old = e.chain.operator();
    let root = e.publish(alice, RewardScheme::geometric(100 * ONE, 5000, 3)).await;
    let (job, w, receipt) = (e.hash(), e.hash(), e.hash());
    e.chain.commit_training(job, root.nft, bob, w, receipt).await.unwrap();

    let new_key = alloy::signers::local::PrivateKeySigner::from_bytes(
        &alloy::primitives::B256::repeat_byte(0x42),
    )
    .unwrap();
    let new = new_key.address();
    e.chain.send_eth(new, U256::from(ONE)).await.unwrap();
    let lineage = ModelLineage::new(e.chain.book().lineage, e.chain.provider().clone());
    assert_eq!(e.chain.lineage_owner().await.unwrap(), old, "the deployer owns the contract");
    // Bob is no owner: refused.
    rejected(e.chain.set_lineage_operator(bob, bob).await, "NotOwner");
    assert_eq!(e.chain.lineage_operator().await.unwrap(), old);
    let rotation = e.chain.set_lineage_operator(old, new).await.unwrap().block_number.unwrap();
    assert_eq!(e.chain.lineage_operator().await.unwrap(), new);
    // Every term is kept, so receipts are checked against the operator of their time.
    let history = e.chain.operator_history().await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!((history[0].operator, history[1].operator), (old, new));
    assert!(history[0].from_block <= e.chain.book().deployed_at_block);
    assert_eq!(history[1].from_block, rotation);
    assert_eq!(e.chain.operator_at(rotation - 1).await.unwrap(), Some(old));
    assert_eq!(e.chain.operator_at(rotation).await.unwrap(), Some(new));
    assert_eq!(e.chain.operator_at(0).await.unwrap(), None, "before the deployment");
    assert_eq!(lineage.operator().call().await.unwrap(), new);

    // The old key can do nothing any more.
    rejected(e.chain.create_child(job, "M2", "M2", "").await, "NotOperator");
    let (job2, w2) = (e.hash(), e.hash());
    rejected(e.chain.commit_training(job2, root.nft, bob, w2, receipt).await, "NotOperator");
    rejected(
        e.chain.register_root(root.nft, root.datatoken, w, alice, alice, 1, &[], 0).await,
        "NotOperator",
    );

    // The new key finishes the job committed before the rotation and commits new ones. It
    // seeds the child's royalty vault with OCEAN, so it needs some: refused, by name, until
    // it has.
    let rotated = Chain::connect(&e.anvil.endpoint(), new_key, e.chain.book().clone()).unwrap();
    match rotated.create_child(job, "M2", "M2", "").await {
        Err(ChainError::OperatorUnfunded { operator, .. }) => assert_eq!(operator, new),
        other => panic!("expected OperatorUnfunded, got {other:?}"),
    }
    e.chain.transfer(old, e.chain.book().ocean, new, U256::from(ONE)).await.unwrap();
    let child = rotated.create_child(job, "M2", "M2", "").await.unwrap();
    let d = rotated.record_derivation(job, child.nft, child.datatoken).await.unwrap();
    assert_eq!(d.rewards, vec![(bob, U256::from(50 * ONE)), (alice, U256::from(50 * ONE))]);
    rotated.commit_training(job2, child.nft, bob, w2, receipt).await.unwrap();
    rejected(e.chain.record_derivation(job2, child.nft, child.datatoken).await, "NotOperator");

    // Ownership moves in two steps: proposed by the owner, accepted by the proposed owner
    // (nobody else), who then rotates; the old owner no longer can.
    assert!(lineage.transferOwnership(alice).from(bob).send().await.is_err(), "non-owner proposed");
    let r = lineage.transferOwnership(alice).from(old).send().await.unwrap();
    assert!(r.get_receipt().await.unwrap().status());
    assert!(lineage.acceptOwnership().from(bob).send().await.is_err(), "Bob accepted for Alice");
    assert_eq!(e.chain.lineage_owner().await.unwrap(), old, "not moved before acceptance");
    let r = lineage.acceptOwnership().from(alice).send().await.unwrap();
    assert!(r.get_receipt().await.unwrap().status());
    assert_eq!(e.chain.lineage_owner().await.unwrap(), alice);
    rejected(e.chain.set_lineage_operator(old, old).await, "NotOwner");
    e.chain.set_lineage_operator(alice, bob).await.unwrap();
    let last = e.chain.operator_history().await.unwrap();
    assert_eq!(last.iter().map(|t| t.operator).collect::<Vec<_>>(), vec![old, new, bob]);
    rejected(rotated.commit_training(e.hash(), child.nft, bob, w2, receipt).await, "NotOperator");
}
