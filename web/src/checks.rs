//! The receipt view's content as plain data: the receipt's fields as rows, and each check of
//! a [`Verification`] as a row under one of the five questions a buyer asks (did the
//! operator sign it, does the chain's commitment match, do the hashes chain along the
//! lineage, did the order pay, is the evaluation about the model on sale). Components only
//! render these rows; the tests here pin what the page says.

use posthuman_receipts::{Address, CheckKind, Outcome, Report, SignedReceipt};

use crate::format::utc;
use crate::verify::{Deployment, Verification};

/// One of the five questions the view answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Deployment,
    Signature,
    Commitment,
    Lineage,
    Order,
    Evaluation,
}

impl Group {
    pub fn title(self) -> &'static str {
        match self {
            Group::Deployment => "Deployment read from the chain",
            Group::Signature => "Operator signature",
            Group::Commitment => "On-chain commitment matches the receipt",
            Group::Lineage => "Lineage hashes chain correctly",
            Group::Order => "The order paid for the job",
            Group::Evaluation => "Evaluation bound to the weights of the model on sale",
        }
    }

    pub const ALL: [Group; 6] = [
        Group::Deployment,
        Group::Signature,
        Group::Commitment,
        Group::Lineage,
        Group::Order,
        Group::Evaluation,
    ];
}

/// Which question a check answers.
pub fn group_of(k: CheckKind) -> Group {
    use CheckKind as K;
    match k {
        K::Signature => Group::Signature,
        K::Commitment
        | K::CommitmentReceiptHash
        | K::CommitmentOutputWeights
        | K::CommitmentParent
        | K::CommitmentTrainer
        | K::OutputWeights => Group::Commitment,
        K::InputWeights | K::LineageLink => Group::Lineage,
        K::Order | K::OrderDatatoken | K::OrderConsumer | K::OrderFee => Group::Order,
        K::EvalKind | K::EvalOutput | K::EvalWeights | K::EvalOnSale => Group::Evaluation,
    }
}

/// What one check establishes, in a buyer's words.
pub fn describe(k: CheckKind) -> &'static str {
    use CheckKind as K;
    match k {
        K::Signature => {
            "signed by the lineage contract's operator of the receipt's time, unchanged, for this deployment"
        }
        K::Commitment => "the lineage contract holds a commitment for this job",
        K::CommitmentReceiptHash => "the committed receipt hash is this receipt's EIP-712 digest",
        K::CommitmentOutputWeights => "the committed output weights are the receipt's",
        K::CommitmentParent => "the committed parent is the model the job ran on",
        K::CommitmentTrainer => "the committed trainer is the receipt's consumer",
        K::InputWeights => "the input weights are those of the model the job ran on",
        K::OutputWeights => "the derived model on chain carries the output weights and links back",
        K::Order => "the order transaction started an order on the receipt's datatoken",
        K::OrderDatatoken => "the datatoken is the datatoken of the model the job ran on",
        K::OrderConsumer => "the order's consumer is the receipt's consumer",
        K::OrderFee => "the order's provider fee was signed by the operator",
        K::LineageLink => "the derivation's receipt names the same parent and weights",
        K::EvalKind => "the receipt is an evaluation receipt",
        K::EvalOutput => "the report is the file the receipt commits to",
        K::EvalWeights => "the report is about the weights the evaluation ran on",
        K::EvalOnSale => "the model on sale carries the evaluated weights",
    }
}

/// Pass, fail or skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skipped,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skipped => "skipped",
        }
    }
}

/// One row of the checks table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRow {
    pub group: Group,
    /// What was checked (the job, or one derivation of the lineage).
    pub subject: String,
    /// The check's name, as `posthuman verify` prints it (`order_fee`, …).
    pub name: String,
    pub what: String,
    pub status: Status,
    /// Why it failed or was skipped: the very reason `posthuman verify` gives.
    pub reason: Option<String>,
}

fn rows_of(report: &Report, out: &mut Vec<CheckRow>) {
    for c in &report.checks {
        let (status, reason) = match &c.outcome {
            Outcome::Pass => (Status::Pass, None),
            Outcome::Fail(r) => (Status::Fail, Some(r.clone())),
            Outcome::Skipped(r) => (Status::Skipped, Some(r.clone())),
        };
        out.push(CheckRow {
            group: group_of(c.check),
            subject: report.subject.clone(),
            name: c.check.to_string(),
            what: describe(c.check).to_string(),
            status,
            reason,
        });
    }
}

/// Rows comparing what the API claims about the deployment with what the chain says.
pub fn deployment_rows(
    dep: &Deployment,
    api_chain_id: u64,
    api_operator: Address,
) -> Vec<CheckRow> {
    let row = |name: &str, what: &str, ok: bool, why: String| CheckRow {
        group: Group::Deployment,
        subject: format!("lineage contract {}", dep.lineage),
        name: name.to_string(),
        what: what.to_string(),
        status: if ok { Status::Pass } else { Status::Fail },
        reason: (!ok).then_some(why),
    };
    vec![
        row(
            "chain_id",
            "the node serves the chain the API names",
            dep.chain_id == api_chain_id,
            format!("the node serves chain {}, the API names chain {api_chain_id}", dep.chain_id),
        ),
        row(
            "operator",
            "the API's operator is the lineage contract's operator",
            dep.operator == api_operator,
            format!(
                "the lineage contract's operator is {}, the API names {api_operator}",
                dep.operator
            ),
        ),
    ]
}

/// Every check of a verification, grouped in [`Group`] order (stable within a group: the
/// job's checks first, then each derivation child first, then the evaluation).
pub fn check_rows(v: &Verification) -> Vec<CheckRow> {
    let mut out = Vec::new();
    rows_of(&v.job, &mut out);
    for link in &v.lineage {
        // The job's own derivation repeats the job's checks: show only its link check.
        let own = link.report.subject == v.job.subject;
        let mut rows = Vec::new();
        rows_of(&link.report, &mut rows);
        out.extend(
            rows.into_iter().filter(|r| !own || r.name == CheckKind::LineageLink.to_string()),
        );
    }
    if let Some(e) = &v.evaluation {
        let mut rows = Vec::new();
        rows_of(e, &mut rows);
        // verify_evaluation repeats the job's checks; keep only the evaluation's own.
        out.extend(rows.into_iter().filter(|r| r.group == Group::Evaluation));
    }
    out.sort_by_key(|r| r.group);
    out
}

/// True when no row failed.
pub fn all_pass(rows: &[CheckRow]) -> bool {
    rows.iter().all(|r| r.status != Status::Fail)
}

/// One field of the receipt as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub value: String,
}

/// Every field of a signed receipt, in the order of the signed struct, then the signature.
pub fn receipt_fields(s: &SignedReceipt) -> Vec<Field> {
    let r = &s.body;
    let f = |name, value: String| Field { name, value };
    // `{:#}`: the same pretty JSON as `to_string_pretty`, through `Value`'s `Display`, whose
    // pretty printer is in the module anyway (a second one, into a `Vec`, cost ~1.5 KB).
    let params = format!("{:#}", r.params);
    vec![
        f("job_id", r.job_id.clone()),
        f("kind", r.kind.to_string()),
        f("model", r.model.to_string()),
        f("datatoken", r.datatoken.to_string()),
        f("order_tx", r.order_tx.to_string()),
        f("consumer", r.consumer.to_string()),
        f("input_weights_hash", r.input_weights_hash.to_string()),
        f("input_data_hash", r.input_data_hash.to_string()),
        f("worker_version", r.worker_version.clone()),
        f("params_hash", r.params_hash.to_string()),
        f("params", params),
        f("seed", r.seed.to_string()),
        f("checkpoint_root", r.checkpoint_root.to_string()),
        f("checkpoint_interval", r.checkpoint_interval.to_string()),
        f("output_weights_hash", r.output_weights_hash.to_string()),
        f("output_hash", r.output_hash.to_string()),
        f("started_at", format!("{} ({})", r.started_at, utc(r.started_at))),
        f("ended_at", format!("{} ({})", r.ended_at, utc(r.ended_at))),
        f("signer", s.signer.to_string()),
        f("domain", s.domain.to_string()),
        f("signature", s.signature.clone()),
        f("receipt_hash (EIP-712 digest)", s.digest().to_string()),
    ]
}
