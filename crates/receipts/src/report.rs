//! Verification reports: a list of named checks, each passed, failed with a precise
//! reason, or skipped with the reason it could not apply.

use std::fmt;

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

/// What one check establishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The operator of the receipt's time (the lineage contract's operator in its
    /// commitment's block for a train job, from its order's block on otherwise) signed this
    /// receipt, unchanged, for this deployment.
    Signature,
    /// The lineage contract holds a commitment for the job.
    Commitment,
    /// The committed receipt hash is this receipt's EIP-712 digest.
    CommitmentReceiptHash,
    /// The committed output weights hash is the receipt's.
    CommitmentOutputWeights,
    /// The committed parent model is the model the receipt says the job ran on.
    CommitmentParent,
    /// The committed trainer is the receipt's consumer.
    CommitmentTrainer,
    /// The receipt's input weights hash is the weights hash of the model it ran on.
    InputWeights,
    /// The child model on chain carries the receipt's output weights hash and links back.
    OutputWeights,
    /// The order transaction exists and started an order on the receipt's datatoken.
    Order,
    /// The receipt's datatoken is the datatoken of the model it ran on.
    OrderDatatoken,
    /// The order's consumer is the receipt's consumer.
    OrderConsumer,
    /// The order's provider fee was signed by the operator of the order's block (the
    /// operator accepted it).
    OrderFee,
    /// This link of the lineage has a receipt that names the same parent and weights.
    LineageLink,
    /// The receipt is an evaluation receipt.
    EvalKind,
    /// The evaluation report is the file the receipt commits to.
    EvalOutput,
    /// The report is about the weights the evaluation ran on.
    EvalWeights,
    /// The model on sale carries the evaluated weights hash.
    EvalOnSale,
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string));
        f.write_str(s.as_deref().unwrap_or("check"))
    }
}

/// How one check came out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Not applicable yet or here (e.g. the child model is not created yet).
    Skipped(String),
}

/// One named check and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub check: CheckKind,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The checks run on one subject (a job, a lineage link, an evaluation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub subject: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(subject: impl Into<String>) -> Self {
        Report { subject: subject.into(), checks: Vec::new() }
    }

    pub fn pass(&mut self, check: CheckKind) {
        self.checks.push(Check { check, outcome: Outcome::Pass });
    }

    pub fn fail(&mut self, check: CheckKind, reason: impl Into<String>) {
        self.checks.push(Check { check, outcome: Outcome::Fail(reason.into()) });
    }

    pub fn skip(&mut self, check: CheckKind, reason: impl Into<String>) {
        self.checks.push(Check { check, outcome: Outcome::Skipped(reason.into()) });
    }

    /// Passes `check` if `ok`, else fails it with `reason()`.
    pub fn expect(&mut self, check: CheckKind, ok: bool, reason: impl FnOnce() -> String) {
        if ok { self.pass(check) } else { self.fail(check, reason()) }
    }

    /// True when no check failed (and at least one ran).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.failures().next().is_none()
    }

    /// The failed checks with their reasons.
    pub fn failures(&self) -> impl Iterator<Item = (CheckKind, &str)> {
        self.checks.iter().filter_map(|c| match &c.outcome {
            Outcome::Fail(r) => Some((c.check, r.as_str())),
            _ => None,
        })
    }

    /// The reason `check` failed, if it did.
    pub fn failure(&self, check: CheckKind) -> Option<&str> {
        self.failures().find(|(k, _)| *k == check).map(|(_, r)| r)
    }

    /// The outcome of `check`, if it ran.
    pub fn outcome(&self, check: CheckKind) -> Option<&Outcome> {
        self.checks.iter().find(|c| c.check == check).map(|c| &c.outcome)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.subject, if self.passed() { "PASS" } else { "FAIL" })?;
        for c in &self.checks {
            match &c.outcome {
                Outcome::Pass => writeln!(f, "  pass  {}", c.check)?,
                Outcome::Fail(r) => writeln!(f, "  FAIL  {}: {r}", c.check)?,
                Outcome::Skipped(r) => writeln!(f, "  skip  {}: {r}", c.check)?,
            }
        }
        Ok(())
    }
}

/// One derivation in a lineage: the child, its parent, and the checks on its receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    pub child: Address,
    pub parent: Option<Address>,
    pub report: Report,
}

/// Verification of a whole lineage, leaf first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageReport {
    pub leaf: Address,
    /// The models from the leaf up to the root.
    pub models: Vec<Address>,
    pub links: Vec<LinkReport>,
}

impl LineageReport {
    /// True when every link passed and the walk reached a root.
    pub fn passed(&self) -> bool {
        !self.models.is_empty() && self.links.iter().all(|l| l.report.passed())
    }
}
