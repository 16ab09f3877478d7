//! Public verification: checks a signed receipt against the chain, without the weights.
//!
//! - [`verify_job`]: the operator's signature; for a train job, that the lineage contract's
//!   commitment matches the receipt (receipt hash, output weights, parent, trainer) and that
//!   the child model carries the output weights; that the input weights are those of the
//!   model the job ran on; and that the order paid for this job (same datatoken, consumer,
//!   provider fee accepted by the operator).
//!
//! "The operator" is the lineage contract's operator *of the receipt's time*, from the
//! history the contract keeps (its owner may rotate the key): a rotation neither voids what
//! the old key signed in office nor lets it sign for anything after. The time is what the
//! chain dates, never what the receipt says (a signer could backdate that):
//! - a train receipt: the block of its commitment. The operator signs the receipt and then
//!   commits its hash in `commitTraining`, which only the operator of that block can send.
//! - an infer or evaluate receipt: its order's block on. It is signed when the job ends,
//!   which the chain does not record; the order is the earliest block the chain dates for
//!   it, so a key rotated out before the order never passes, while a job ordered before a
//!   rotation and finished after it may carry either key (a leaked old key can thus still
//!   sign for jobs ordered in its own term, as it could have then: rotate promptly).
//! - the order's provider fee: the order's block (the fee is signed at quote time, just
//!   before, and the API accepts only its current key's fees).
//! - [`verify_lineage`]: walks a model's lineage to its root and verifies the receipt of
//!   every derivation, so M1 → M2 → M3 chains hash to hash.
//! - [`verify_evaluation`]: an evaluation report is the one its receipt commits to, and is
//!   about the same weights hash as the model on sale.
//!
//! Every check is reported with its outcome ([`Report`]); `Err` only means the chain could
//! not be read.

use std::collections::BTreeSet;

use alloy::primitives::Address;
use posthuman_types::{EvalReport, Hash32, JobKind};

use crate::SignedReceipt;
use crate::canonical::{bytes_hash, job_id_hash};
use crate::facts::{
    ChainFacts, FactsError, ModelFacts, OperatorTerm, OrderFacts, TrainingCommitment,
    held_operator_role,
};
use crate::receipt::{Receipt, ReceiptDomain};
use crate::report::{CheckKind as K, LineageReport, LinkReport, Report};
use crate::signed::digest;

/// Most derivations below a root: the lineage contract refuses more, so a longer lineage
/// comes from a facts source that is not that contract (or loops) and is refused by name.
const MAX_DEPTH: usize = posthuman_types::model::MAX_DEPTH;

/// Verifies one job's receipt against the chain (see the module docs).
pub async fn verify_job(
    facts: &dyn ChainFacts,
    signed: &SignedReceipt,
    domain: &ReceiptDomain,
) -> Result<Report, FactsError> {
    let r = &signed.body;
    let mut report = Report::new(format!("{} job {}", r.kind, r.job_id));
    let operators = facts.operator_history().await?;
    let orders = facts.orders(r.order_tx).await?;
    let commitment = match r.kind {
        JobKind::Train => facts.training_commitment(job_id_hash(&r.job_id)).await?,
        _ => None,
    };
    check_signature(
        &mut report,
        signed,
        domain,
        &operators,
        commitment.as_ref(),
        orders.as_deref(),
    );
    let model = facts.model(r.model).await?;
    check_input(&mut report, r, model.as_ref());
    if r.kind == JobKind::Train {
        check_commitment(facts, &mut report, r, domain, commitment).await?;
    }
    check_order(&mut report, r, model.as_ref(), orders, &operators);
    Ok(report)
}

/// The signature is sound (domain, form, content) and its signer was the lineage contract's
/// operator at the receipt's time, as the chain dates it (see the module docs).
fn check_signature(
    report: &mut Report,
    signed: &SignedReceipt,
    domain: &ReceiptDomain,
    operators: &[OperatorTerm],
    commitment: Option<&TrainingCommitment>,
    orders: Option<&[OrderFacts]>,
) {
    if let Err(e) = signed.verify(signed.signer, domain) {
        report.fail(K::Signature, e.to_string());
        return;
    }
    let who = signed.signer;
    // (from, to, what dates it): the blocks in which the signer must have been in office.
    let (from, to, when) = match (commitment, orders.and_then(|o| o.first())) {
        (Some(c), _) if signed.body.kind == JobKind::Train => (
            c.committed_at_block,
            Some(c.committed_at_block),
            format!("at block {}, when the job was committed", c.committed_at_block),
        ),
        (_, Some(o)) => (o.block, None, format!("from block {}, the order's, on", o.block)),
        // Nothing on chain dates it (the commitment or order checks fail on their own):
        // only the current operator's signature counts.
        _ => {
            let now = operators.last().map_or(u64::MAX, |t| t.from_block);
            (now, None, "now (nothing on chain dates the receipt)".to_string())
        }
    };
    report.expect(K::Signature, held_operator_role(operators, who, from, to), || {
        let in_office: Vec<String> = operators
            .iter()
            .enumerate()
            .filter(|&(i, t)| {
                let until = operators.get(i + 1).map(|n| n.from_block);
                to.is_none_or(|to| t.from_block <= to) && until.is_none_or(|u| u >= from)
            })
            .map(|(_, t)| t.operator.to_string())
            .collect();
        format!(
            "signed by {who}, not by the operator {} (the lineage contract's operator {when})",
            if in_office.is_empty() { "(none)".to_string() } else { in_office.join(" or ") }
        )
    });
}

fn check_input(report: &mut Report, r: &Receipt, model: Option<&ModelFacts>) {
    match model {
        None => report
            .fail(K::InputWeights, format!("model {} is not in the lineage contract", r.model)),
        Some(m) => report.expect(K::InputWeights, m.weights_hash == r.input_weights_hash, || {
            format!(
                "the receipt's input weights {} are not the weights {} of model {}",
                r.input_weights_hash, m.weights_hash, r.model
            )
        }),
    }
}

async fn check_commitment(
    facts: &dyn ChainFacts,
    report: &mut Report,
    r: &Receipt,
    domain: &ReceiptDomain,
    commitment: Option<TrainingCommitment>,
) -> Result<(), FactsError> {
    let job = job_id_hash(&r.job_id);
    let Some(c) = commitment else {
        report.fail(
            K::Commitment,
            format!("no training commitment on chain for job {} ({job})", r.job_id),
        );
        return Ok(());
    };
    report.pass(K::Commitment);
    let ours = Hash32(digest(r, domain).0);
    report.expect(K::CommitmentReceiptHash, c.receipt_hash == ours, || {
        format!(
            "the chain committed receipt hash {}, this receipt hashes to {ours}",
            c.receipt_hash
        )
    });
    report.expect(
        K::CommitmentOutputWeights,
        c.output_weights_hash == r.output_weights_hash,
        || {
            format!(
                "the chain committed output weights {}, the receipt says {}",
                c.output_weights_hash, r.output_weights_hash
            )
        },
    );
    report.expect(K::CommitmentParent, c.parent == r.model, || {
        format!("the chain committed parent {}, the receipt ran on {}", c.parent, r.model)
    });
    report.expect(K::CommitmentTrainer, c.trainer == r.consumer, || {
        format!(
            "the chain committed trainer {}, the receipt's consumer is {}",
            c.trainer, r.consumer
        )
    });
    let Some(child) = c.child_nft else {
        report.skip(K::OutputWeights, "committed, but the child model is not created yet");
        return Ok(());
    };
    let Some(m) = facts.model(child).await? else {
        report.fail(K::OutputWeights, format!("child {child} is not in the lineage contract"));
        return Ok(());
    };
    let on_nft = facts.weights_commitment(child).await?;
    let problem = if m.weights_hash != r.output_weights_hash {
        Some(format!(
            "child {child} has weights {}, the receipt output is {}",
            m.weights_hash, r.output_weights_hash
        ))
    } else if on_nft != Some(r.output_weights_hash) {
        Some(format!(
            "child {child}'s NFT commits to weights {on_nft:?}, the receipt output is {}",
            r.output_weights_hash
        ))
    } else if m.parent != Some(r.model) {
        Some(format!("child {child}'s parent is {:?}, the receipt ran on {}", m.parent, r.model))
    } else if m.job_id != Some(job) {
        Some(format!("child {child} was produced by job {:?}, not {job}", m.job_id))
    } else {
        None
    };
    match problem {
        Some(p) => report.fail(K::OutputWeights, p),
        None => report.pass(K::OutputWeights),
    }
    Ok(())
}

fn check_order(
    report: &mut Report,
    r: &Receipt,
    model: Option<&ModelFacts>,
    orders: Option<Vec<OrderFacts>>,
    operators: &[OperatorTerm],
) {
    match model {
        Some(m) => report.expect(K::OrderDatatoken, m.datatoken == r.datatoken, || {
            format!(
                "the receipt's datatoken {} is not model {}'s datatoken {}",
                r.datatoken, r.model, m.datatoken
            )
        }),
        None => report.skip(K::OrderDatatoken, "the model is unknown"),
    }
    let Some(orders) = orders else {
        report
            .fail(K::Order, format!("order transaction {} does not exist or reverted", r.order_tx));
        return;
    };
    let ours: Vec<_> = orders.iter().filter(|o| o.datatoken == r.datatoken).collect();
    if ours.is_empty() {
        let found: Vec<String> = orders.iter().map(|o| o.datatoken.to_string()).collect();
        report.fail(
            K::Order,
            format!(
                "transaction {} started no order on datatoken {} (orders found on: [{}])",
                r.order_tx,
                r.datatoken,
                found.join(", ")
            ),
        );
        return;
    }
    report.pass(K::Order);
    let by_consumer: Vec<_> = ours.iter().filter(|o| o.consumer == r.consumer).collect();
    if by_consumer.is_empty() {
        report.fail(
            K::OrderConsumer,
            format!(
                "the order's consumer is {}, the receipt's is {}",
                ours[0].consumer, r.consumer
            ),
        );
        return;
    }
    report.pass(K::OrderConsumer);
    // The fee's signer must have been the operator in the order's own block.
    let accepted = by_consumer.iter().any(|o| {
        o.provider_fee_signer
            .is_some_and(|s| held_operator_role(operators, s, o.block, Some(o.block)))
    });
    report.expect(K::OrderFee, accepted, || {
        let o = by_consumer[0];
        let then: Vec<String> = operators
            .iter()
            .filter(|t| held_operator_role(operators, t.operator, o.block, Some(o.block)))
            .map(|t| t.operator.to_string())
            .collect();
        format!(
            "the order's provider fee was signed by {:?}, not by the operator {} (the lineage contract's operator at block {}, the order's)",
            o.provider_fee_signer,
            if then.is_empty() { "(none)".to_string() } else { then.join(" or ") },
            o.block
        )
    });
}

/// Walks the lineage of `leaf` up to its root and verifies every derivation with the
/// matching receipt from `receipts` (any order; extra receipts are ignored).
pub async fn verify_lineage(
    facts: &dyn ChainFacts,
    leaf: Address,
    receipts: &[SignedReceipt],
    domain: &ReceiptDomain,
) -> Result<LineageReport, FactsError> {
    let mut out = LineageReport { leaf, ..Default::default() };
    let mut seen = BTreeSet::new();
    let mut cursor = leaf;
    loop {
        if !seen.insert(cursor) || seen.len() > MAX_DEPTH + 1 {
            let mut rep = Report::new(format!("model {cursor}"));
            rep.fail(
                K::LineageLink,
                format!(
                    "the lineage loops or is deeper than the {MAX_DEPTH} derivations the lineage contract allows"
                ),
            );
            out.links.push(LinkReport { child: cursor, parent: None, report: rep });
            out.models.clear();
            return Ok(out);
        }
        let Some(m) = facts.model(cursor).await? else {
            let mut rep = Report::new(format!("model {cursor}"));
            rep.fail(K::LineageLink, format!("model {cursor} is not in the lineage contract"));
            out.links.push(LinkReport { child: cursor, parent: None, report: rep });
            out.models.clear();
            return Ok(out);
        };
        out.models.push(cursor);
        let Some(parent) = m.parent else {
            return Ok(out); // reached the root
        };
        let report = verify_link(facts, &m, parent, receipts, domain).await?;
        out.links.push(LinkReport { child: cursor, parent: Some(parent), report });
        cursor = parent;
    }
}

async fn verify_link(
    facts: &dyn ChainFacts,
    child: &ModelFacts,
    parent: Address,
    receipts: &[SignedReceipt],
    domain: &ReceiptDomain,
) -> Result<Report, FactsError> {
    let found =
        child.job_id.and_then(|job| receipts.iter().find(|s| job_id_hash(&s.body.job_id) == job));
    let Some(signed) = found else {
        let mut rep = Report::new(format!("model {}", child.nft));
        rep.fail(
            K::LineageLink,
            format!(
                "no receipt supplied for job {:?}, which produced {} from {parent}",
                child.job_id, child.nft
            ),
        );
        return Ok(rep);
    };
    let mut rep = verify_job(facts, signed, domain).await?;
    let r = &signed.body;
    rep.expect(
        K::LineageLink,
        r.kind == JobKind::Train && r.model == parent && r.output_weights_hash == child.weights_hash,
        || {
            format!(
                "the lineage says {} (weights {}) was trained from {parent}; the receipt is a {} job on {} with output {}",
                child.nft, child.weights_hash, r.kind, r.model, r.output_weights_hash
            )
        },
    );
    Ok(rep)
}

/// Verifies an evaluation: its receipt (as [`verify_job`]), that `report_bytes` is the
/// report file the receipt commits to, that the report is about the weights the job ran on,
/// and that the model on sale (`on_sale`, a data NFT) carries that same weights hash.
pub async fn verify_evaluation(
    facts: &dyn ChainFacts,
    signed: &SignedReceipt,
    report_bytes: &[u8],
    on_sale: Address,
    domain: &ReceiptDomain,
) -> Result<Report, FactsError> {
    let mut rep = verify_job(facts, signed, domain).await?;
    let r = &signed.body;
    rep.subject = format!("evaluation {} of model {on_sale}", r.job_id);
    rep.expect(K::EvalKind, r.kind == JobKind::Evaluate, || {
        format!("the receipt is for a {} job", r.kind)
    });
    let actual = bytes_hash(report_bytes);
    rep.expect(K::EvalOutput, actual == r.output_hash, || {
        format!("the report hashes to {actual}, the receipt commits to {}", r.output_hash)
    });
    // `from_str` over the UTF-8 text rather than `from_slice`: the storefront parses every
    // other JSON from text, and a second reader type doubles serde_json's code in its wasm.
    let parsed = std::str::from_utf8(report_bytes)
        .map_err(|e| e.to_string())
        .and_then(|text| crate::json::from_str::<EvalReport>(text).map_err(|e| e.to_string()));
    let report = match parsed {
        Ok(rp) => Some(rp),
        Err(e) => {
            rep.fail(K::EvalWeights, format!("the report is not a valid evaluation report: {e}"));
            None
        }
    };
    let Some(report) = report else { return Ok(rep) };
    rep.expect(K::EvalWeights, report.weights_hash == r.input_weights_hash, || {
        format!(
            "the report is about weights {}, the evaluation ran on {}",
            report.weights_hash, r.input_weights_hash
        )
    });
    let on_nft = facts.weights_commitment(on_sale).await?;
    let problem = if r.model != on_sale {
        Some(format!("the evaluation ran on model {}, not on the model on sale {on_sale}", r.model))
    } else if on_nft != Some(report.weights_hash) {
        Some(format!(
            "the model on sale commits to weights {on_nft:?}, the report is about {}",
            report.weights_hash
        ))
    } else {
        None
    };
    match problem {
        Some(p) => rep.fail(K::EvalOnSale, p),
        None => rep.pass(K::EvalOnSale),
    }
    Ok(rep)
}
