//! Public verification over a snapshot of chain facts: a lineage M1 → M2 → M3 whose every
//! derivation is committed, an evaluation of M3, and each kind of bad evidence failing with
//! its own named check and reason.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use alloy::primitives::Address;
use common::*;
use posthuman_receipts::{
    CheckKind as K, FactsSnapshot, ModelFacts, OperatorTerm, OrderFacts, Outcome, Receipt,
    SignedReceipt, TrainingCommitment, bytes_hash, job_id_hash, sign, verify_evaluation,
    verify_job, verify_lineage,
};
use posthuman_types::{EvalReport, Hash32, JobParams};

const M1: u8 = 0xa1;
const M2: u8 = 0xa2;
const M3: u8 = 0xa3;

fn dt(m: u8) -> Address {
    addr(m.wrapping_add(0x30))
}

fn weights(m: u8) -> Hash32 {
    h(m)
}

fn trainer(m: u8) -> Address {
    addr(m.wrapping_add(0x20))
}

fn order_tx(job: &str) -> Hash32 {
    bytes_hash(format!("order:{job}").as_bytes())
}

/// The world: M1 (root) → M2 (job-2, trained by trainer(M2)) → M3 (job-3).
struct World {
    facts: FactsSnapshot,
    receipts: Vec<SignedReceipt>,
}

fn derivation_receipt(job: &str, parent: u8, child: u8) -> Receipt {
    train_receipt(
        job,
        addr(parent),
        dt(parent),
        order_tx(job),
        trainer(child),
        weights(parent),
        weights(child),
        h(0xcc),
    )
}

fn order(datatoken: Address, consumer: Address) -> OrderFacts {
    OrderFacts {
        datatoken,
        consumer,
        payer: consumer,
        service_index: 0,
        provider_fee_signer: Some(operator().address()),
        block: 10,
    }
}

/// The lineage contract's operator history: the fixture's operator since block 1.
fn operators() -> Vec<OperatorTerm> {
    vec![OperatorTerm { operator: operator().address(), from_block: 1 }]
}

fn world() -> World {
    let mut f = FactsSnapshot { operators: operators(), ..FactsSnapshot::default() };
    f.models.insert(
        addr(M1),
        ModelFacts {
            nft: addr(M1),
            parent: None,
            trainer: addr(0x0e),
            datatoken: dt(M1),
            weights_hash: weights(M1),
            job_id: None,
        },
    );
    f.nft_weights.insert(addr(M1), weights(M1));
    let mut receipts = Vec::new();
    for (job, parent, child) in [("job-2", M1, M2), ("job-3", M2, M3)] {
        let s = signed(derivation_receipt(job, parent, child));
        f.commitments.insert(
            job_id_hash(job),
            TrainingCommitment {
                parent: addr(parent),
                trainer: trainer(child),
                output_weights_hash: weights(child),
                receipt_hash: s.body.receipt_hash(&domain()),
                child_nft: Some(addr(child)),
                committed_at_block: 10,
            },
        );
        f.models.insert(
            addr(child),
            ModelFacts {
                nft: addr(child),
                parent: Some(addr(parent)),
                trainer: trainer(child),
                datatoken: dt(child),
                weights_hash: weights(child),
                job_id: Some(job_id_hash(job)),
            },
        );
        f.nft_weights.insert(addr(child), weights(child));
        f.orders.insert(order_tx(job), vec![order(dt(parent), trainer(child))]);
        receipts.push(s);
    }
    World { facts: f, receipts }
}

async fn check(facts: &FactsSnapshot, s: &SignedReceipt) -> posthuman_receipts::Report {
    verify_job(facts, s, &domain()).await.unwrap()
}

fn failed(r: &posthuman_receipts::Report) -> Vec<K> {
    r.failures().map(|(k, _)| k).collect()
}

#[tokio::test]
async fn good_train_receipts_pass_every_check() {
    let w = world();
    for s in &w.receipts {
        let r = check(&w.facts, s).await;
        assert!(r.passed(), "{r}");
        for k in [
            K::Signature,
            K::Commitment,
            K::CommitmentReceiptHash,
            K::CommitmentOutputWeights,
            K::CommitmentParent,
            K::CommitmentTrainer,
            K::InputWeights,
            K::OutputWeights,
            K::Order,
            K::OrderDatatoken,
            K::OrderConsumer,
            K::OrderFee,
        ] {
            assert_eq!(r.outcome(k), Some(&Outcome::Pass), "{k}: {r}");
        }
    }
}

#[tokio::test]
async fn the_whole_lineage_chains_hash_to_hash() {
    let w = world();
    let rep = verify_lineage(&w.facts, addr(M3), &w.receipts, &domain()).await.unwrap();
    assert!(rep.passed(), "{rep:?}");
    assert_eq!(rep.models, vec![addr(M3), addr(M2), addr(M1)]);
    assert_eq!(rep.links.len(), 2);
    assert!(rep.links.iter().all(|l| l.report.outcome(K::LineageLink) == Some(&Outcome::Pass)));
    // A root has no derivation to check, and passes.
    let root = verify_lineage(&w.facts, addr(M1), &[], &domain()).await.unwrap();
    assert!(root.passed() && root.links.is_empty());
}

#[tokio::test]
async fn wrong_signer_fails_only_the_signature() {
    let w = world();
    let s = sign(w.receipts[0].body.clone(), &key(9), &domain()).unwrap();
    let r = check(&w.facts, &s).await;
    assert_eq!(failed(&r), vec![K::Signature], "{r}");
    assert!(r.failure(K::Signature).unwrap().contains("not by the operator"));
}

#[tokio::test]
async fn edited_field_fails_the_signature_and_the_commitment() {
    let w = world();
    let mut s = w.receipts[0].clone();
    s.body.worker_version = "posthuman-worker 9.9.9 (git evil; features: none)".into();
    let r = check(&w.facts, &s).await;
    assert_eq!(failed(&r), vec![K::Signature, K::CommitmentReceiptHash], "{r}");
    assert!(r.failure(K::Signature).unwrap().contains("changed after signing"));
    assert!(
        r.failure(K::CommitmentReceiptHash).unwrap().contains("the chain committed receipt hash")
    );
}

#[tokio::test]
async fn mismatched_output_hash_fails_the_commitment_and_the_child() {
    // The operator signed a receipt claiming other output weights than it committed.
    let mut w = world();
    let s = signed(train_receipt(
        "job-2",
        addr(M1),
        dt(M1),
        order_tx("job-2"),
        trainer(M2),
        weights(M1),
        h(0xee),
        h(0xcc),
    ));
    w.facts.commitments.get_mut(&job_id_hash("job-2")).unwrap().receipt_hash =
        s.body.receipt_hash(&domain());
    let r = check(&w.facts, &s).await;
    assert_eq!(failed(&r), vec![K::CommitmentOutputWeights, K::OutputWeights], "{r}");
    assert!(r.failure(K::OutputWeights).unwrap().contains("receipt output is"));
}

#[tokio::test]
async fn missing_commitment_is_named() {
    let mut w = world();
    w.facts.commitments.remove(&job_id_hash("job-3"));
    let r = check(&w.facts, &w.receipts[1]).await;
    assert_eq!(failed(&r), vec![K::Commitment], "{r}");
    assert!(
        r.failure(K::Commitment).unwrap().contains("no training commitment on chain for job job-3")
    );
}

#[tokio::test]
async fn not_yet_revealed_child_is_skipped_not_failed() {
    let mut w = world();
    w.facts.commitments.get_mut(&job_id_hash("job-3")).unwrap().child_nft = None;
    let r = check(&w.facts, &w.receipts[1]).await;
    assert!(r.passed(), "{r}");
    assert!(matches!(r.outcome(K::OutputWeights), Some(Outcome::Skipped(_))));
}

#[tokio::test]
async fn broken_lineage_link_is_named() {
    // job-3's receipt says it started from weights that are not M2's.
    let mut w = world();
    let bad = signed(train_receipt(
        "job-3",
        addr(M2),
        dt(M2),
        order_tx("job-3"),
        trainer(M3),
        h(0x99),
        weights(M3),
        h(0xcc),
    ));
    w.facts.commitments.get_mut(&job_id_hash("job-3")).unwrap().receipt_hash =
        bad.body.receipt_hash(&domain());
    let r = check(&w.facts, &bad).await;
    assert_eq!(failed(&r), vec![K::InputWeights], "{r}");
    let receipts = vec![w.receipts[0].clone(), bad];
    let rep = verify_lineage(&w.facts, addr(M3), &receipts, &domain()).await.unwrap();
    assert!(!rep.passed());
    assert!(!rep.links[0].report.passed() && rep.links[1].report.passed());

    // A receipt that names another parent than the lineage does.
    let other = signed(train_receipt(
        "job-3",
        addr(M1),
        dt(M1),
        order_tx("job-3"),
        trainer(M3),
        weights(M1),
        weights(M3),
        h(0xcc),
    ));
    let rep = verify_lineage(&w.facts, addr(M3), &[w.receipts[0].clone(), other], &domain())
        .await
        .unwrap();
    let link = &rep.links[0].report;
    assert!(link.failure(K::LineageLink).unwrap().contains("was trained from"), "{link}");
    assert!(link.failure(K::CommitmentParent).is_some(), "{link}");

    // A link without its receipt.
    let rep = verify_lineage(&w.facts, addr(M3), &w.receipts[1..], &domain()).await.unwrap();
    assert!(!rep.passed());
    assert!(rep.links[1].report.failure(K::LineageLink).unwrap().contains("no receipt supplied"));

    // A model the contract does not know.
    let rep = verify_lineage(&w.facts, addr(0x5f), &w.receipts, &domain()).await.unwrap();
    assert!(!rep.passed() && rep.models.is_empty());
}

#[tokio::test]
async fn orders_that_did_not_pay_for_the_job_are_named() {
    let w = world();
    let s = &w.receipts[0];
    let cases: Vec<(Option<Vec<OrderFacts>>, K, &str)> = vec![
        (None, K::Order, "does not exist"),
        (Some(vec![]), K::Order, "started no order"),
        (Some(vec![order(dt(M2), trainer(M2))]), K::Order, "started no order on datatoken"),
        (Some(vec![order(dt(M1), addr(0x66))]), K::OrderConsumer, "the order's consumer is"),
        (
            Some(vec![OrderFacts {
                provider_fee_signer: Some(key(9).address()),
                ..order(dt(M1), trainer(M2))
            }]),
            K::OrderFee,
            "not by the operator",
        ),
        (
            Some(vec![OrderFacts { provider_fee_signer: None, ..order(dt(M1), trainer(M2)) }]),
            K::OrderFee,
            "None",
        ),
    ];
    for (orders, kind, reason) in cases {
        let mut f = w.facts.clone();
        match orders {
            Some(o) => f.orders.insert(order_tx("job-2"), o),
            None => f.orders.remove(&order_tx("job-2")),
        };
        let r = check(&f, s).await;
        assert_eq!(failed(&r), vec![kind], "{r}");
        assert!(r.failure(kind).unwrap().contains(reason), "{r}");
    }
    // A receipt naming a datatoken that is not the model's.
    let bad = signed(train_receipt(
        "job-2",
        addr(M1),
        dt(M2),
        order_tx("job-2"),
        trainer(M2),
        weights(M1),
        weights(M2),
        h(0xcc),
    ));
    let mut f = w.facts.clone();
    f.commitments.get_mut(&job_id_hash("job-2")).unwrap().receipt_hash =
        bad.body.receipt_hash(&domain());
    let r = check(&f, &bad).await;
    assert!(failed(&r).contains(&K::OrderDatatoken), "{r}");
}

fn eval_report(weights_hash: Hash32) -> Vec<u8> {
    let rep = EvalReport {
        weights_hash,
        dataset_hash: h(0xda),
        tokens_scored: 1000,
        context_len: 64,
        stride: 32,
        mean_nll: 3.2,
        perplexity: 24.5,
        baseline_label: None,
        baseline_perplexity: None,
        ratio_to_baseline: None,
        tokens_per_sec: 1234.0,
    };
    serde_json::to_vec_pretty(&rep).unwrap()
}

fn eval_receipt(model: u8, input: Hash32, report: &[u8]) -> SignedReceipt {
    signed(receipt_with("job-eval-3", JobParams::Evaluate(eval_params()), |r| {
        r.model = addr(model);
        r.datatoken = dt(model);
        r.order_tx = order_tx("job-eval-3");
        r.consumer = addr(0xc9);
        r.input_weights_hash = input;
        r.output_hash = bytes_hash(report);
    }))
}

#[tokio::test]
async fn evaluation_is_bound_to_the_weights_on_sale() {
    let mut w = world();
    w.facts.orders.insert(order_tx("job-eval-3"), vec![order(dt(M3), addr(0xc9))]);
    let report = eval_report(weights(M3));
    let s = eval_receipt(M3, weights(M3), &report);
    let verify = |f: FactsSnapshot, s: SignedReceipt, bytes: Vec<u8>, on_sale: Address| async move {
        verify_evaluation(&f, &s, &bytes, on_sale, &domain()).await.unwrap()
    };
    let r = verify(w.facts.clone(), s.clone(), report.clone(), addr(M3)).await;
    assert!(r.passed(), "{r}");
    assert_eq!(r.outcome(K::EvalOnSale), Some(&Outcome::Pass));

    // The report file was edited after the receipt.
    let mut edited = report.clone();
    let at = edited.iter().position(|&b| b == b'2').unwrap();
    edited[at] = b'1';
    let r = verify(w.facts.clone(), s.clone(), edited, addr(M3)).await;
    assert_eq!(failed(&r), vec![K::EvalOutput], "{r}");

    // A report about other weights than the evaluation ran on.
    let other = eval_report(weights(M2));
    let r = verify(w.facts.clone(), eval_receipt(M3, weights(M3), &other), other, addr(M3)).await;
    assert_eq!(failed(&r), vec![K::EvalWeights, K::EvalOnSale], "{r}");

    // Shown on another model than the one evaluated.
    let r = verify(w.facts.clone(), s.clone(), report.clone(), addr(M2)).await;
    assert_eq!(failed(&r), vec![K::EvalOnSale], "{r}");
    assert!(r.failure(K::EvalOnSale).unwrap().contains("not on the model on sale"));

    // The NFT on sale commits to other weights than the ones evaluated.
    w.facts.nft_weights.insert(addr(M3), h(0x44));
    let r = verify(w.facts.clone(), s.clone(), report.clone(), addr(M3)).await;
    assert!(failed(&r).contains(&K::EvalOnSale), "{r}");

    // A train receipt passed off as an evaluation.
    let r = verify(w.facts.clone(), w.receipts[1].clone(), report, addr(M3)).await;
    assert!(failed(&r).contains(&K::EvalKind), "{r}");
}

#[tokio::test]
async fn infer_receipts_check_weights_and_order() {
    let mut w = world();
    let s = signed(receipt_with("job-infer-9", JobParams::Infer(infer_params()), |r| {
        r.model = addr(M2);
        r.datatoken = dt(M2);
        r.order_tx = order_tx("job-infer-9");
        r.consumer = addr(0xc7);
        r.input_weights_hash = weights(M2);
    }));
    w.facts.orders.insert(order_tx("job-infer-9"), vec![order(dt(M2), addr(0xc7))]);
    let r = check(&w.facts, &s).await;
    assert!(r.passed(), "{r}");
    assert_eq!(r.outcome(K::Commitment), None, "infer jobs have no commitment");
    // Snapshot facts survive JSON (the storefront receives them that way).
    let back: FactsSnapshot =
        serde_json::from_str(&serde_json::to_string(&w.facts).unwrap()).unwrap();
    assert_eq!(back, w.facts);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["checks"][0]["check"], "signature");
    assert_eq!(json["checks"][0]["status"], "pass");
}

/// A lineage of `derivations` derivations below root 0x40 (models 0x40, 0x41, …), every link
/// committed with a good receipt; returns the facts, the receipts and the leaf.
fn deep_world(derivations: u8) -> (FactsSnapshot, Vec<SignedReceipt>, Address) {
    let root = 0x40u8;
    let mut f = FactsSnapshot { operators: operators(), ..FactsSnapshot::default() };
    f.models.insert(
        addr(root),
        ModelFacts {
            nft: addr(root),
            parent: None,
            trainer: addr(0x0e),
            datatoken: dt(root),
            weights_hash: weights(root),
            job_id: None,
        },
    );
    f.nft_weights.insert(addr(root), weights(root));
    let mut receipts = Vec::new();
    for child in root + 1..=root + derivations {
        let (parent, job) = (child - 1, format!("deep-{child}"));
        let s = signed(derivation_receipt(&job, parent, child));
        f.commitments.insert(
            job_id_hash(&job),
            TrainingCommitment {
                parent: addr(parent),
                trainer: trainer(child),
                output_weights_hash: weights(child),
                receipt_hash: s.body.receipt_hash(&domain()),
                child_nft: Some(addr(child)),
                committed_at_block: 10,
            },
        );
        f.models.insert(
            addr(child),
            ModelFacts {
                nft: addr(child),
                parent: Some(addr(parent)),
                trainer: trainer(child),
                datatoken: dt(child),
                weights_hash: weights(child),
                job_id: Some(job_id_hash(&job)),
            },
        );
        f.nft_weights.insert(addr(child), weights(child));
        f.orders.insert(order_tx(&job), vec![order(dt(parent), trainer(child))]);
        receipts.push(s);
    }
    (f, receipts, addr(root + derivations))
}

/// The lineage contract refuses derivations past `MAX_DEPTH`, so a longer lineage can only
/// come from a facts source that is not that contract: verification refuses it by name
/// instead of walking it.
#[tokio::test]
async fn a_lineage_deeper_than_the_contract_allows_is_refused() {
    let max = posthuman_types::model::MAX_DEPTH as u8;
    let (facts, receipts, leaf) = deep_world(max);
    let rep = verify_lineage(&facts, leaf, &receipts, &domain()).await.unwrap();
    assert!(rep.passed(), "{max} derivations are allowed");
    assert_eq!(rep.models.len(), usize::from(max) + 1);

    let (facts, receipts, leaf) = deep_world(max + 1);
    let rep = verify_lineage(&facts, leaf, &receipts, &domain()).await.unwrap();
    assert!(!rep.passed());
    let why: Vec<String> = rep
        .links
        .iter()
        .flat_map(|l| l.report.failures().map(|(_, why)| why.to_string()))
        .collect();
    assert!(
        why.iter().any(|w| w.contains(&format!("deeper than the {max} derivations"))),
        "{why:?}"
    );
}
