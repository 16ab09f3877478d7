//! Verifying a receipt in the browser: the same checks as `posthuman verify`, against facts
//! read from the chain's own node, never against a verdict from the operator's API.
//!
//! What the API supplies is only *evidence to be checked*: the receipt(s) and which job
//! produced each model. The expected signer is the operator the lineage contract records for
//! the receipt's time (its operator history; the owner may rotate the key) and the EIP-712
//! domain is (the node's chain id, the lineage contract) — both read from the
//! chain ([`read_deployment`]); the API's address book is compared against them. The one
//! input taken on trust is the lineage contract's address (and the node the RPC URL names).
//!
//! [`verify`] runs [`verify_job`] (and [`verify_lineage`] for a train job,
//! [`verify_evaluation`] when the buyer supplies the report) over a [`Recorder`], fetching
//! the facts each run asked for until a run asks nothing new: see `posthuman_receipts::gather`.

use std::future::Future;

use posthuman_receipts::{
    Address, Answer, ChainFacts, FactsError, JsonRpc, LinkReport, Query, ReceiptDomain, Recorder,
    Report, RpcFacts, SignedReceipt, verify_evaluation, verify_job, verify_lineage,
};
use posthuman_types::JobKind;

/// A verification that keeps asking for new facts after this many rounds is refused (a
/// lineage is a few models deep; each round walks at least one step further).
const MAX_ROUNDS: usize = 64;

/// The deployment a receipt is checked against, as the chain itself states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// `eth_chainId` of the node.
    pub chain_id: u64,
    /// The `ModelLineage` contract (from the API's address book: the one trusted input).
    pub lineage: Address,
    /// `ModelLineage.operator()`: the current operator (compared with the API's; receipts
    /// are checked against the operator of their own time, from the contract's history).
    pub operator: Address,
}

impl Deployment {
    pub fn domain(&self) -> ReceiptDomain {
        ReceiptDomain::new(self.chain_id, self.lineage)
    }
}

/// Reads the deployment from the chain: chain id and the lineage contract's operator.
pub async fn read_deployment<T: JsonRpc>(
    rpc: &RpcFacts<T>,
    lineage: Address,
) -> Result<Deployment, FactsError> {
    Ok(Deployment {
        chain_id: rpc.chain_id().await?,
        lineage,
        operator: rpc.lineage_operator().await?,
    })
}

/// What is verified: the receipt, and the evidence that goes with it.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Train jobs: the derived model (its lineage is walked to the root) and the receipts of
    /// the derivations along it (from the catalogue; each is verified, none is trusted).
    pub derived: Option<Address>,
    pub lineage_receipts: Vec<SignedReceipt>,
    /// Evaluate jobs: the report file the buyer received, if they supply it.
    pub eval_report: Option<Vec<u8>>,
}

/// Every report of one verification.
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    pub job: Report,
    /// Train jobs with a derived model: the models from it up to the root.
    pub lineage_models: Vec<Address>,
    /// Train jobs: each derivation of the lineage, child first.
    pub lineage: Vec<LinkReport>,
    /// Evaluate jobs whose report was supplied.
    pub evaluation: Option<Report>,
}

/// One pure run of the checks over `facts` (as `posthuman verify` does them).
pub async fn run_checks(
    facts: &dyn ChainFacts,
    dep: &Deployment,
    signed: &SignedReceipt,
    ev: &Evidence,
) -> Result<Verification, FactsError> {
    let domain = dep.domain();
    let job = verify_job(facts, signed, &domain).await?;
    let (mut lineage_models, mut lineage) = (Vec::new(), Vec::new());
    if let (JobKind::Train, Some(leaf)) = (signed.body.kind, ev.derived) {
        let mut all = ev.lineage_receipts.clone();
        all.push(signed.clone());
        let l = verify_lineage(facts, leaf, &all, &domain).await?;
        lineage_models = l.models;
        lineage = l.links;
    }
    let evaluation = match (&ev.eval_report, signed.body.kind) {
        (Some(bytes), JobKind::Evaluate) => {
            Some(verify_evaluation(facts, signed, bytes, signed.body.model, &domain).await?)
        }
        _ => None,
    };
    Ok(Verification { job, lineage_models, lineage, evaluation })
}

/// Verifies `signed` with facts fetched by `answer` (the chain's node through
/// [`RpcFacts::answer`] in the browser), fetching exactly the facts the checks read.
pub async fn verify<F, Fut>(
    answer: F,
    dep: &Deployment,
    signed: &SignedReceipt,
    ev: &Evidence,
) -> Result<Verification, FactsError>
where
    F: Fn(Query) -> Fut,
    Fut: Future<Output = Result<Answer, FactsError>>,
{
    let mut rec = Recorder::new();
    for _ in 0..MAX_ROUNDS {
        let v = run_checks(&rec, dep, signed, ev).await?;
        let missing = rec.take_missing();
        if missing.is_empty() {
            return Ok(v);
        }
        for q in missing {
            let a = answer(q).await?;
            rec.learn(q, a);
        }
    }
    Err(FactsError(format!("verification still needed new chain facts after {MAX_ROUNDS} rounds")))
}
