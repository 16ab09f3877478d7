//! The receipt view's logic on a lineage M1 → M2 → M3 held in a facts snapshot (the chain as
//! the node would answer): gathering facts round by round gives exactly the report of direct
//! verification, every check passes for genuine receipts, and each kind of bad evidence shows
//! the precise reason `posthuman verify` gives.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use posthuman_receipts::{
    FactsSnapshot, ModelFacts, OperatorTerm, OrderFacts, Receipt, ReceiptDomain, SignedReceipt,
    TrainingCommitment, bytes_hash, gather::ask, job_id_hash, sign, verify_job,
};
use posthuman_types::{EvalParams, EvalReport, Hash32, JobParams, TrainParams};
use posthuman_web::checks::{Group, Status, all_pass, check_rows, deployment_rows, receipt_fields};
use posthuman_web::verify::{Deployment, Evidence, Verification, run_checks, verify};

fn key(n: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::repeat_byte(n)).unwrap()
}
fn addr(n: u8) -> Address {
    Address::repeat_byte(n)
}
fn h(n: u8) -> Hash32 {
    Hash32([n; 32])
}

struct World {
    chain: FactsSnapshot,
    dep: Deployment,
    op: PrivateKeySigner,
    /// M1, M2, M3.
    models: [Address; 3],
    r2: SignedReceipt,
    r3: SignedReceipt,
    eval: SignedReceipt,
    report: Vec<u8>,
}

fn receipt(job: &str, params: JobParams, edit: impl FnOnce(&mut Receipt)) -> Receipt {
    let mut r = Receipt::for_job(job, &params);
    r.input_data_hash = h(0xda);
    r.worker_version = "posthuman-worker 0.1.0 (0123456789ab) x86-v4".into();
    r.output_hash = h(0x0f);
    r.started_at = 1_780_000_000;
    r.ended_at = 1_780_000_600;
    edit(&mut r);
    r
}

fn world() -> World {
    let op = key(1);
    let dep = Deployment { chain_id: 31337, lineage: addr(0x11), operator: op.address() };
    let domain = dep.domain();
    let (m1, m2, m3) = (addr(0xa1), addr(0xa2), addr(0xa3));
    let (d1, d2, d3) = (addr(0xd1), addr(0xd2), addr(0xd3));
    let (bob, charlie, elena) = (addr(0xb0), addr(0xc0), addr(0xe0));
    let mut chain = FactsSnapshot {
        operators: vec![OperatorTerm { operator: op.address(), from_block: 1 }],
        ..FactsSnapshot::default()
    };
    let mut model = |nft, parent, trainer, datatoken, weights: Hash32, job: Option<&str>| {
        chain.models.insert(
            nft,
            ModelFacts {
                nft,
                parent,
                trainer,
                datatoken,
                weights_hash: weights,
                job_id: job.map(job_id_hash),
            },
        );
        chain.nft_weights.insert(nft, weights);
    };
    model(m1, None, addr(0xaa), d1, h(1), None);
    model(m2, Some(m1), bob, d2, h(2), Some("job-2"));
    model(m3, Some(m2), charlie, d3, h(3), Some("job-3"));
    let mut train =
        |job: &str, parent, datatoken, consumer, input, output, order: Hash32, child| {
            let mut p = TrainParams::new(100, 3e-4, 4, 64);
            p.checkpoint_every = 10;
            let r = receipt(job, JobParams::Train(p), |r| {
                r.model = parent;
                r.datatoken = datatoken;
                r.order_tx = order;
                r.consumer = consumer;
                r.input_weights_hash = input;
                r.output_weights_hash = output;
                r.checkpoint_root = h(0xcc);
            });
            let s = sign(r, &op, &domain).unwrap();
            chain.commitments.insert(
                job_id_hash(job),
                TrainingCommitment {
                    parent,
                    trainer: consumer,
                    output_weights_hash: output,
                    receipt_hash: s.digest(),
                    child_nft: Some(child),
                    committed_at_block: 10,
                },
            );
            chain.orders.insert(
                order,
                vec![OrderFacts {
                    datatoken,
                    consumer,
                    payer: consumer,
                    service_index: 0,
                    provider_fee_signer: Some(op.address()),
                    block: 10,
                }],
            );
            s
        };
    let r2 = train("job-2", m1, d1, bob, h(1), h(2), h(0x72), m2);
    let r3 = train("job-3", m2, d2, charlie, h(2), h(3), h(0x73), m3);
    let report = serde_json::to_vec(&EvalReport {
        weights_hash: h(3),
        dataset_hash: h(0xda),
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
    let params = EvalParams { context_len: 64, stride: 32, max_tokens: 0, baseline: None };
    let eval = receipt("job-eval", JobParams::Evaluate(params), |r| {
        r.model = m3;
        r.datatoken = d3;
        r.order_tx = h(0x7e);
        r.consumer = elena;
        r.input_weights_hash = h(3);
        r.output_hash = bytes_hash(&report);
    });
    chain.orders.insert(
        h(0x7e),
        vec![OrderFacts {
            datatoken: d3,
            consumer: elena,
            payer: elena,
            service_index: 0,
            provider_fee_signer: Some(op.address()),
            block: 10,
        }],
    );
    let eval = sign(eval, &op, &domain).unwrap();
    World { chain, dep, op, models: [m1, m2, m3], r2, r3, eval, report }
}

impl World {
    fn train_evidence(&self) -> Evidence {
        Evidence {
            derived: Some(self.models[2]),
            lineage_receipts: vec![self.r2.clone()],
            eval_report: None,
        }
    }

    /// The browser's path: facts gathered round by round from the "node".
    async fn gathered(&self, s: &SignedReceipt, ev: &Evidence) -> Verification {
        verify(|q| ask(&self.chain, q), &self.dep, s, ev).await.unwrap()
    }
}

#[tokio::test]
async fn gathering_facts_gives_the_report_of_direct_verification_and_all_checks_pass() {
    let w = world();
    let ev = w.train_evidence();
    let gathered = w.gathered(&w.r3, &ev).await;
    let direct = run_checks(&w.chain, &w.dep, &w.r3, &ev).await.unwrap();
    assert_eq!(gathered, direct);
    assert_eq!(gathered.lineage_models, vec![w.models[2], w.models[1], w.models[0]]);
    assert_eq!(gathered.lineage.len(), 2, "M3 ← M2 and M2 ← M1");

    let rows = check_rows(&gathered);
    assert!(all_pass(&rows), "{rows:#?}");
    assert!(rows.iter().all(|r| r.status == Status::Pass), "{rows:#?}");
    for g in [Group::Signature, Group::Commitment, Group::Lineage, Group::Order] {
        assert!(rows.iter().any(|r| r.group == g), "no {g:?} row");
    }
    // M2's derivation is verified in full (its own signature, commitment, order), M3's own
    // derivation adds only its link check.
    assert_eq!(rows.iter().filter(|r| r.name == "signature").count(), 2);
    assert_eq!(rows.iter().filter(|r| r.name == "lineage_link").count(), 2);
    // Grouped in the order the page shows them.
    assert!(rows.windows(2).all(|p| p[0].group <= p[1].group));
}

#[tokio::test]
async fn a_tampered_receipt_shows_the_precise_reasons_of_posthuman_verify() {
    let w = world();
    let mut edited = w.r3.clone();
    edited.body.seed += 1;
    let v = w.gathered(&edited, &w.train_evidence()).await;
    let rows = check_rows(&v);
    assert!(!all_pass(&rows));
    let failed: Vec<&str> =
        rows.iter().filter(|r| r.status == Status::Fail).map(|r| r.name.as_str()).collect();
    assert_eq!(failed, vec!["signature", "commitment_receipt_hash"], "{rows:#?}");
    // The very reasons the CLI prints (it renders the same `Report`).
    let cli = verify_job(&w.chain, &edited, &w.dep.domain()).await.unwrap();
    for r in rows.iter().filter(|r| r.status == Status::Fail) {
        let kind = cli.failures().find(|(k, _)| k.to_string() == r.name).unwrap();
        assert_eq!(r.reason.as_deref(), Some(kind.1));
    }
    let sig = rows.iter().find(|r| r.name == "signature").unwrap();
    assert!(sig.reason.as_deref().unwrap().starts_with("signature does not match the content"));
    let hash = rows.iter().find(|r| r.name == "commitment_receipt_hash").unwrap();
    assert!(hash.reason.as_deref().unwrap().contains(&w.r3.digest().to_string()));
}

#[tokio::test]
async fn unpaid_unknown_and_foreign_evidence_fail_with_their_reasons() {
    let w = world();
    // An order transaction the chain does not have.
    let mut unpaid = w.r2.body.clone();
    unpaid.order_tx = h(0x99);
    let unpaid = sign(unpaid, &w.op, &w.dep.domain()).unwrap();
    let v = w.gathered(&unpaid, &Evidence::default()).await;
    let order = check_rows(&v).into_iter().find(|r| r.name == "order").unwrap();
    assert_eq!(order.status, Status::Fail);
    assert_eq!(
        order.reason.unwrap(),
        format!("order transaction {} does not exist or reverted", h(0x99))
    );
    // Signed by someone else than the lineage contract's operator.
    let stranger = sign(w.r2.body.clone(), &key(7), &w.dep.domain()).unwrap();
    let v = w.gathered(&stranger, &Evidence::default()).await;
    let sig = check_rows(&v).into_iter().find(|r| r.name == "signature").unwrap();
    assert_eq!(
        sig.reason.unwrap(),
        format!(
            "signed by {}, not by the operator {} (the lineage contract's operator at block 10, when the job was committed)",
            key(7).address(),
            w.op.address()
        )
    );
    // An API that names another operator than the chain's, or another chain.
    let rows = deployment_rows(&w.dep, 1, addr(0x42));
    assert!(rows.iter().all(|r| r.status == Status::Fail));
    assert_eq!(
        rows[1].reason.as_deref().unwrap(),
        format!(
            "the lineage contract's operator is {}, the API names {}",
            w.op.address(),
            addr(0x42)
        )
    );
    assert!(
        deployment_rows(&w.dep, 31337, w.op.address()).iter().all(|r| r.status == Status::Pass)
    );
}

#[tokio::test]
async fn an_evaluation_report_is_checked_against_the_model_on_sale() {
    let w = world();
    let with =
        |report: &[u8]| Evidence { eval_report: Some(report.to_vec()), ..Evidence::default() };
    let v = w.gathered(&w.eval, &with(&w.report)).await;
    let rows = check_rows(&v);
    assert!(all_pass(&rows), "{rows:#?}");
    assert_eq!(rows.iter().filter(|r| r.group == Group::Evaluation).count(), 4, "{rows:#?}");
    // Without the report only the receipt is checked.
    let v = w.gathered(&w.eval, &Evidence::default()).await;
    assert!(check_rows(&v).iter().all(|r| r.group != Group::Evaluation));
    // A report edited after the fact (another perplexity).
    let text = String::from_utf8(w.report.clone()).unwrap().replace("20.1", "2.01");
    let v = w.gathered(&w.eval, &with(text.as_bytes())).await;
    let out = check_rows(&v).into_iter().find(|r| r.name == "eval_output").unwrap();
    assert_eq!(out.status, Status::Fail);
    assert!(out.reason.unwrap().starts_with("the report hashes to"));
}

#[test]
fn the_view_lists_every_field_of_the_receipt() {
    let w = world();
    let fields = receipt_fields(&w.r3);
    let json = serde_json::to_value(&w.r3.body).unwrap();
    for k in json.as_object().unwrap().keys() {
        assert!(fields.iter().any(|f| f.name == k), "field {k} is not shown");
    }
    for k in ["signer", "domain", "signature"] {
        assert!(fields.iter().any(|f| f.name == k), "{k} is not shown");
    }
    let d = ReceiptDomain::new(31337, addr(0x11));
    let digest = fields.iter().find(|f| f.name.starts_with("receipt_hash")).unwrap();
    assert_eq!(digest.value, w.r3.body.receipt_hash(&d).to_string());
}
