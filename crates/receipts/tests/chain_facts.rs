//! Public verification against a real chain: anvil with the genuine Ocean v4 stack and the
//! `ModelLineage` contract, read through `ChainFacts for Chain`. A lineage M1 → M2 → M3 is
//! trained (receipts signed, committed before the children exist), then verified end to
//! end, and bad evidence is refused by the same checks as in the snapshot tests.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::anvil::{ANVIL_DEV_KEY_0, default_anvil_path};
use posthuman_chain::fees::sign_provider_fee;
use posthuman_chain::{Anvil, AnvilConfig, Chain, PublishRequest, deploy_stack};
use posthuman_receipts::gather::ask;
use posthuman_receipts::{
    CheckKind as K, FactsError, JsonRpc, Outcome, Query, ReceiptDomain, RpcFacts, SignedReceipt,
    bytes_hash, job_id_hash, sign, verify_evaluation, verify_job, verify_lineage,
};
use posthuman_types::{EvalReport, Hash32, JobParams, RewardScheme};

const ONE: u128 = 1_000_000_000_000_000_000;

struct Env {
    _anvil: Anvil,
    chain: Chain,
    op: PrivateKeySigner,
    domain: ReceiptDomain,
}

async fn env() -> Env {
    let path = default_anvil_path();
    assert!(
        path.is_file(),
        "anvil not found at {}: run `npm ci --prefix contracts` first",
        path.display()
    );
    let anvil = Anvil::start(&AnvilConfig::default()).unwrap();
    let op: PrivateKeySigner = ANVIL_DEV_KEY_0.parse().unwrap();
    let (book, _) = deploy_stack(&anvil.endpoint(), &op).await.unwrap();
    let domain = ReceiptDomain::new(book.chain_id, book.lineage);
    let chain = Chain::connect(&anvil.endpoint(), op.clone(), book).unwrap();
    Env { _anvil: anvil, chain, op, domain }
}

impl Env {
    async fn wallet(&mut self, n: u8) -> Address {
        let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(n)).unwrap();
        let a = signer.address();
        self.chain.add_signer(signer).unwrap();
        self.chain.send_eth(a, U256::from(10u128.pow(19))).await.unwrap();
        a
    }

    /// `startOrder` by `who` on `datatoken` with an operator-signed fee.
    async fn order(&self, who: Address, datatoken: Address) -> Hash32 {
        let fee = self.chain.sign_provider_fee(u64::MAX / 2, Bytes::from_static(b"job")).unwrap();
        Hash32(self.chain.start_order(who, datatoken, who, 0, &fee).await.unwrap().tx_hash.0)
    }

    /// Trains (on paper) `job` from `parent` for `trainer`: signs the receipt, commits it,
    /// then creates the child and records the derivation. Returns the receipt and the child.
    async fn derive(
        &self,
        job: &str,
        parent: Address,
        trainer: Address,
        output: Hash32,
    ) -> (SignedReceipt, Address) {
        let m = self.chain.model(parent).await.unwrap().unwrap();
        let order = self.order(trainer, m.datatoken).await;
        let r = common::train_receipt(
            job,
            parent,
            m.datatoken,
            order,
            trainer,
            m.weights_hash,
            output,
            Hash32([0xcc; 32]),
        );
        let s = sign(r, &self.op, &self.domain).unwrap();
        let receipt_hash = s.body.receipt_hash(&self.domain);
        self.chain
            .commit_training(job_id_hash(job), parent, trainer, output, receipt_hash)
            .await
            .unwrap();
        // Committed, not revealed: verification passes, the child check is skipped.
        let rep = verify_job(&self.chain, &s, &self.domain).await.unwrap();
        assert!(rep.passed(), "{rep}");
        assert!(matches!(rep.outcome(K::OutputWeights), Some(Outcome::Skipped(_))), "{rep}");
        let child = self.chain.create_child(job_id_hash(job), job, "PH", "").await.unwrap();
        self.chain.record_derivation(job_id_hash(job), child.nft, child.datatoken).await.unwrap();
        (s, child.nft)
    }
}

#[tokio::test]
async fn a_lineage_trained_on_anvil_verifies_and_bad_evidence_is_refused() {
    let mut e = env().await;
    let alice = e.wallet(0x0a).await;
    let bob = e.wallet(0x0b).await;
    let w1 = Hash32([0x11; 32]);
    let req = PublishRequest {
        name: "M1".into(),
        symbol: "M1".into(),
        token_uri: String::new(),
        weights_hash: w1,
        card_json: None,
        reward: RewardScheme::geometric(10 * ONE, 5000, 3),
        root_owner: None,
    };
    let m1 = e.chain.publish_model(alice, &req).await.unwrap();
    e.chain.mint(alice, m1.datatoken, bob, U256::from(5 * ONE)).await.unwrap();

    // M1 → M2 → M3, Bob training both (his rewards in M2 datatokens pay for the next job).
    let (r2, m2) = e.derive("job-anvil-2", m1.nft, bob, Hash32([0x22; 32])).await;
    let (r3, m3) = e.derive("job-anvil-3", m2, bob, Hash32([0x33; 32])).await;
    let receipts = vec![r2.clone(), r3.clone()];
    for s in &receipts {
        let rep = verify_job(&e.chain, s, &e.domain).await.unwrap();
        assert!(rep.passed(), "{rep}");
        assert_eq!(rep.outcome(K::OutputWeights), Some(&Outcome::Pass), "{rep}");
        assert_eq!(rep.outcome(K::OrderFee), Some(&Outcome::Pass), "{rep}");
    }
    let lin = verify_lineage(&e.chain, m3, &receipts, &e.domain).await.unwrap();
    assert!(lin.passed(), "{lin:?}");
    assert_eq!(lin.models, vec![m3, m2, m1.nft]);

    // An evaluation of M3, bound to the weights its NFT carries.
    let report = serde_json::to_vec(&EvalReport {
        weights_hash: Hash32([0x33; 32]),
        dataset_hash: Hash32([0xda; 32]),
        tokens_scored: 100,
        context_len: 64,
        stride: 32,
        mean_nll: 3.0,
        perplexity: 20.1,
        baseline_label: None,
        baseline_perplexity: None,
        ratio_to_baseline: None,
        tokens_per_sec: 10.0,
    })
    .unwrap();
    let m3_dt = e.chain.model(m3).await.unwrap().unwrap().datatoken;
    let eval_order = e.order(bob, m3_dt).await;
    let eval =
        common::receipt_with("job-anvil-eval", JobParams::Evaluate(common::eval_params()), |r| {
            r.model = m3;
            r.datatoken = m3_dt;
            r.order_tx = eval_order;
            r.consumer = bob;
            r.input_weights_hash = Hash32([0x33; 32]);
            r.output_hash = bytes_hash(&report);
        });
    let eval = sign(eval, &e.op, &e.domain).unwrap();
    let rep = verify_evaluation(&e.chain, &eval, &report, m3, &e.domain).await.unwrap();
    assert!(rep.passed(), "{rep}");
    let rep = verify_evaluation(&e.chain, &eval, &report, m2, &e.domain).await.unwrap();
    assert!(rep.failure(K::EvalOnSale).is_some(), "{rep}");

    // Bad evidence, read from the real chain.
    let fails =
        |rep: &posthuman_receipts::Report| rep.failures().map(|(k, _)| k).collect::<Vec<_>>();
    // A job that was never committed.
    let uncommitted = sign(
        common::train_receipt(
            "job-anvil-x",
            m1.nft,
            m1.datatoken,
            r2.body.order_tx,
            bob,
            w1,
            Hash32([9; 32]),
            Hash32([0xcc; 32]),
        ),
        &e.op,
        &e.domain,
    )
    .unwrap();
    let rep = verify_job(&e.chain, &uncommitted, &e.domain).await.unwrap();
    assert_eq!(fails(&rep), vec![K::Commitment], "{rep}");
    // An edited receipt no longer matches the signature nor the committed hash.
    let mut edited = r3.clone();
    edited.body.seed += 1;
    let rep = verify_job(&e.chain, &edited, &e.domain).await.unwrap();
    assert_eq!(fails(&rep), vec![K::Signature, K::CommitmentReceiptHash], "{rep}");
    // Receipts checked against another deployment's domain.
    let elsewhere = ReceiptDomain::new(e.domain.chain_id, Address::repeat_byte(0x42));
    let rep = verify_job(&e.chain, &r2, &elsewhere).await.unwrap();
    assert!(rep.failure(K::Signature).unwrap().contains("signed for"), "{rep}");
    // Order transactions that did not pay: a plain transfer, a missing tx, a foreign fee.
    let transfer =
        e.chain.transfer(bob, m1.datatoken, alice, U256::from(1)).await.unwrap().transaction_hash;
    let stranger = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
    let foreign =
        sign_provider_fee(&stranger, e.chain.book().ocean, U256::ZERO, u64::MAX / 2, Bytes::new())
            .unwrap();
    let foreign_tx =
        e.chain.start_order(bob, m1.datatoken, bob, 0, &foreign).await.unwrap().tx_hash;
    for (tx, kind, reason) in [
        (Hash32(transfer.0), K::Order, "started no order"),
        (Hash32([0x5a; 32]), K::Order, "does not exist"),
        (Hash32(foreign_tx.0), K::OrderFee, "not by the operator"),
    ] {
        let mut r = r2.body.clone();
        r.job_id = "job-anvil-y".into();
        r.order_tx = tx;
        let s = sign(r, &e.op, &e.domain).unwrap();
        let rep = verify_job(&e.chain, &s, &e.domain).await.unwrap();
        assert!(rep.failure(kind).is_some_and(|m| m.contains(reason)), "{kind}: {rep}");
    }

    // The storefront's reader (raw JSON-RPC, its own decoding) states every fact above
    // exactly as the operator's client does: present, absent, reverted or orderless alike.
    let rpc = RpcFacts::new(Http::of(&e.chain), e.chain.book().lineage);
    assert_eq!(rpc.chain_id().await.unwrap(), e.chain.book().chain_id);
    assert_eq!(rpc.lineage_operator().await.unwrap(), e.op.address());
    let nobody = Address::repeat_byte(0x5b);
    let mut queries = vec![
        Query::Commitment(job_id_hash("job-anvil-2")),
        Query::Commitment(job_id_hash("job-anvil-3")),
        Query::Commitment(job_id_hash("job-anvil-x")),
        Query::Orders(r2.body.order_tx),
        Query::Orders(r3.body.order_tx),
        Query::Orders(eval_order),
        Query::Orders(Hash32(transfer.0)),
        Query::Orders(Hash32(foreign_tx.0)),
        Query::Orders(Hash32([0x5a; 32])),
        // No code, and code without `getData` (a revert).
        Query::Weights(nobody),
        Query::Weights(e.chain.book().lineage),
        Query::Model(nobody),
        Query::Operators,
    ];
    for m in [m1.nft, m2, m3] {
        queries.extend([Query::Model(m), Query::Weights(m)]);
    }
    for q in queries {
        let want = ask(&e.chain, q).await.unwrap();
        assert_eq!(rpc.answer(q).await.unwrap(), want, "{q:?}");
    }
}

/// JSON-RPC over a bare HTTP/1.1 connection: the storefront's transport is the browser's
/// `fetch`; this one shares nothing with alloy's client either.
struct Http(String);

impl Http {
    fn of(chain: &Chain) -> Http {
        let url = chain.rpc_url().to_string();
        Http(url.trim_start_matches("http://").trim_end_matches('/').to_string())
    }
}

#[async_trait::async_trait(?Send)]
impl JsonRpc for Http {
    async fn post(&self, body: serde_json::Value) -> Result<serde_json::Value, FactsError> {
        use std::io::{Read, Write};
        let body = body.to_string();
        let mut s = std::net::TcpStream::connect(&self.0).unwrap();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.0,
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
        Ok(serde_json::from_str(body).unwrap())
    }
}

/// The owner rotates the operator (a leaked key, a routine change): receipts the old key
/// signed while it was the operator still verify — a train receipt against the block of
/// its commitment, an evaluation against the block of its order — and so does a lineage
/// whose derivations straddle the rotation. The old key is worthless for anything after
/// its term: a receipt it signs for an order, or a commitment, made after the rotation is
/// refused.
#[tokio::test]
async fn receipts_signed_before_an_operator_rotation_still_verify() {
    let mut e = env().await;
    let alice = e.wallet(0x0a).await;
    let bob = e.wallet(0x0b).await;
    let req = PublishRequest {
        name: "M1".into(),
        symbol: "M1".into(),
        token_uri: String::new(),
        weights_hash: Hash32([0x11; 32]),
        card_json: None,
        reward: RewardScheme::geometric(10 * ONE, 5000, 3),
        root_owner: None,
    };
    let m1 = e.chain.publish_model(alice, &req).await.unwrap();
    e.chain.mint(alice, m1.datatoken, bob, U256::from(5 * ONE)).await.unwrap();
    let (r2, m2) = e.derive("job-rot-2", m1.nft, bob, Hash32([0x22; 32])).await;
    let eval_of = |job: &str, order: Hash32, m2_dt: Address| {
        common::receipt_with(job, JobParams::Evaluate(common::eval_params()), |r| {
            r.model = m2;
            r.datatoken = m2_dt;
            r.order_tx = order;
            r.consumer = bob;
            r.input_weights_hash = Hash32([0x22; 32]);
        })
    };
    let m2_dt = e.chain.model(m2).await.unwrap().unwrap().datatoken;
    let e2 =
        sign(eval_of("job-rot-e2", e.order(bob, m2_dt).await, m2_dt), &e.op, &e.domain).unwrap();

    // The owner (the deployer) rotates to a new key, funded for gas and the vault seeds.
    let new_key = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x4e)).unwrap();
    e.chain.send_eth(new_key.address(), U256::from(ONE)).await.unwrap();
    let ocean = e.chain.book().ocean;
    e.chain.transfer(e.op.address(), ocean, new_key.address(), U256::from(ONE)).await.unwrap();
    e.chain.set_lineage_operator(e.op.address(), new_key.address()).await.unwrap();
    let current = e.chain.lineage_operator().await.unwrap();
    assert_eq!(current, new_key.address());
    let mut rotated =
        Chain::connect(e.chain.rpc_url(), new_key.clone(), e.chain.book().clone()).unwrap();
    rotated.add_signer(PrivateKeySigner::from_bytes(&B256::repeat_byte(0x0b)).unwrap()).unwrap();
    let new = Env { _anvil: e._anvil, chain: rotated, op: new_key, domain: e.domain };
    let old_op = e.op;

    // Signed by the old key while it was the operator: still valid.
    for s in [&r2, &e2] {
        let rep = verify_job(&new.chain, s, &new.domain).await.unwrap();
        assert!(rep.passed(), "{rep}");
    }
    // M3 is derived under the new key; the lineage M3 → M2 → M1 spans both keys.
    let (r3, m3) = new.derive("job-rot-3", m2, bob, Hash32([0x33; 32])).await;
    let lin = verify_lineage(&new.chain, m3, &[r2.clone(), r3.clone()], &new.domain).await.unwrap();
    assert!(lin.passed(), "{lin:?}");

    // After the rotation the old key signs nothing valid: an evaluation of an order placed
    // after it, or a train receipt the new operator committed.
    let late_order = new.order(bob, m2_dt).await;
    let late = sign(eval_of("job-rot-e3", late_order, m2_dt), &old_op, &new.domain).unwrap();
    let rep = verify_job(&new.chain, &late, &new.domain).await.unwrap();
    assert!(rep.failure(K::Signature).is_some(), "{rep}");
    let fails =
        |rep: &posthuman_receipts::Report| rep.failures().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(fails(&rep), vec![K::Signature], "{rep}");
    let m3_dt = new.chain.model(m3).await.unwrap().unwrap().datatoken;
    let order4 = new.order(bob, m3_dt).await;
    let forged = sign(
        common::train_receipt(
            "job-rot-4",
            m3,
            m3_dt,
            order4,
            bob,
            Hash32([0x33; 32]),
            Hash32([0x44; 32]),
            Hash32([0xcc; 32]),
        ),
        &old_op,
        &new.domain,
    )
    .unwrap();
    let receipt_hash = forged.body.receipt_hash(&new.domain);
    new.chain
        .commit_training(job_id_hash("job-rot-4"), m3, bob, Hash32([0x44; 32]), receipt_hash)
        .await
        .unwrap();
    let rep = verify_job(&new.chain, &forged, &new.domain).await.unwrap();
    assert_eq!(fails(&rep), vec![K::Signature], "{rep}");
    // The storefront's reader sees the same history, and the same dated facts.
    let rpc = RpcFacts::new(Http::of(&new.chain), new.chain.book().lineage);
    let history = rpc.operator_history().await.unwrap();
    assert_eq!(
        history.iter().map(|t| t.operator).collect::<Vec<_>>(),
        vec![old_op.address(), new.op.address()]
    );
    for q in [
        Query::Operators,
        Query::Commitment(job_id_hash("job-rot-2")),
        Query::Commitment(job_id_hash("job-rot-4")),
        Query::Orders(late_order),
    ] {
        assert_eq!(rpc.answer(q).await.unwrap(), ask(&new.chain, q).await.unwrap(), "{q:?}");
    }
    // The same receipt signed by the new key passes.
    let honest = sign(forged.body.clone(), &new.op, &new.domain).unwrap();
    assert!(verify_job(&new.chain, &honest, &new.domain).await.unwrap().passed());
}
