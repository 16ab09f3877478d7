//! `posthuman verify JOB`: checks a job's operator-signed receipt against the chain — the
//! signature, the on-chain commitment (train), the input weights against the lineage
//! contract, and the order that paid for it — with no weights involved.

use posthuman_receipts::{ReceiptDomain, Report, SignedReceipt, verify_job};
use serde::Serialize;

use crate::Config;
use crate::args::VerifyArgs;
use crate::error::CliError;
use crate::output::Out;
use crate::session::Session;

/// The outcome of verifying one job.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub job_id: String,
    pub passed: bool,
    /// One sentence per failed check.
    pub failures: Vec<String>,
    pub report: Report,
}

pub async fn run(cfg: &Config, out: &Out, a: VerifyArgs) -> Result<(), CliError> {
    if a.audit {
        return Err(CliError::Usage(
            "--audit re-runs training segments and needs the operator's private store; \
             it is not available from the CLI yet (see issue 5's note)"
                .into(),
        ));
    }
    let s = Session::open(cfg).await?;
    let v = verify(&s, &a.job).await?;
    out.emit(&v, || v.report.to_string());
    if v.passed { Ok(()) } else { Err(CliError::VerificationFailed(v.failures.join("; "))) }
}

/// Fetches the job's receipt (as its buyer) and verifies it against the chain.
pub async fn verify(s: &Session, job_id: &str) -> Result<Verification, CliError> {
    let r = s.api.result(&s.signer, job_id).await?;
    let receipt = r
        .receipt
        .ok_or_else(|| CliError::VerificationFailed(format!("job {job_id} has no receipt yet")))?;
    let signed: SignedReceipt = serde_json::from_value(receipt)
        .map_err(|e| CliError::VerificationFailed(format!("the receipt is malformed: {e}")))?;
    let book = s.chain.book();
    let domain = ReceiptDomain::new(book.chain_id, book.lineage);
    let report = verify_job(&s.chain, &signed, book.operator, &domain)
        .await
        .map_err(|e| CliError::Unavailable(format!("reading the chain: {e}")))?;
    let failures = report.failures().map(|(k, why)| format!("{k}: {why}")).collect();
    Ok(Verification { job_id: job_id.to_string(), passed: report.passed(), failures, report })
}
