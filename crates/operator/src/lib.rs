//! `posthuman-operator`: tooling for whoever holds the private weights — the operator, or an
//! auditor it admits to its store. Users never need it (their `posthuman verify` checks
//! receipts, lineage and orders on chain with no weights); it lives apart from the user CLI so
//! `posthuman` links neither the worker's training code nor the operator's store.
//!
//! - [`args`]: clap definitions, parsed once in `main`.
//! - [`audit`]: the proof-of-learning audit of a train job: sampled segments re-run from the
//!   stored checkpoints with the worker's own train loop, compared bit for bit with what the
//!   receipt commits to.
//! - [`error`]: [`AuditError`] with its exit codes (the CLI's, class for class).
//!
//! Data flow: the API (`GET /api/chain`) says where the chain and contracts are; the chain
//! says which operator key signed the job's receipt; the operator's store holds the spec,
//! dataset, input weights and checkpoints the replays read.

pub mod args;
pub mod audit;
pub mod error;

use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::Chain;
use posthuman_functions::handlers::models::ChainInfo;
use posthuman_receipts::{AuditPolicy, AuditReport, ReceiptDomain};

pub use error::AuditError;

use crate::args::{AuditArgs, Cli, Command};

/// Runs one parsed command line; prints the outcome (JSON with `--json`).
pub async fn run(cli: Cli) -> Result<(), AuditError> {
    match cli.command {
        Command::Audit(a) => {
            let rep = audit_command(&a).await?;
            print_report(&rep, a.json);
            if rep.passed() {
                Ok(())
            } else {
                let bad: Vec<String> =
                    rep.failures().map(|r| format!("segment {}", r.index)).collect();
                Err(AuditError::Failed(format!("audit: {} did not reproduce", bad.join(", "))))
            }
        }
    }
}

/// `posthuman-operator audit`: finds the chain through the API, the job's operator on chain,
/// and audits the job from the data dir's store.
pub async fn audit_command(a: &AuditArgs) -> Result<AuditReport, AuditError> {
    // The store must exist: a typo'd data dir would otherwise read as "no such job".
    let store_dir = a.data_dir.join("store");
    if !store_dir.is_dir() {
        return Err(AuditError::Usage(format!(
            "{} holds no store: pass the server's --data-dir (the one posthuman-server ran with)",
            a.data_dir.display()
        )));
    }
    let store = posthuman_store::LocalStore::new(&store_dir)
        .map_err(|e| AuditError::Usage(format!("{}: {e}", store_dir.display())))?;
    let info = chain_info(&a.api).await?;
    let rpc = a.rpc.clone().or(info.rpc_url).ok_or_else(|| {
        AuditError::Usage(
            "the API advertises no public RPC for its chain: pass --rpc (or POSTHUMAN_RPC)".into(),
        )
    })?;
    let book = info.address_book;
    let domain = ReceiptDomain::new(book.chain_id, book.lineage);
    // The audit only reads the chain; the client wants a signer, and a throwaway key keeps
    // the operator's own key out of a read-only tool.
    let chain = Chain::connect(&rpc, PrivateKeySigner::random(), book)?;
    let operator = audit::operator_of_commitment(&chain, &a.job).await?;
    audit::audit_job(&store, &a.job, operator, &domain, &AuditPolicy::default()).await
}

/// `GET /api/chain`: the RPC endpoint and the deployment's address book.
async fn chain_info(api: &str) -> Result<ChainInfo, AuditError> {
    let url = format!("{}/api/chain", api.trim_end_matches('/'));
    let unavailable = |e: reqwest::Error| AuditError::Unavailable(format!("{url}: {e}"));
    let resp = reqwest::get(&url).await.map_err(unavailable)?;
    let resp = resp.error_for_status().map_err(unavailable)?;
    resp.json::<ChainInfo>().await.map_err(unavailable)
}

fn print_report(rep: &AuditReport, json: bool) {
    if json {
        match serde_json::to_string_pretty(rep) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot render JSON: {e}"),
        }
        return;
    }
    println!(
        "audit of {}: {} — {} segment(s) re-run ({} of {} steps, {:.1}% of the training compute)",
        rep.job_id,
        if rep.passed() { "every audited segment reproduced bit for bit" } else { "FAILED" },
        rep.results.len(),
        rep.audit_steps,
        rep.total_steps,
        rep.cost_ratio * 100.0
    );
}
