//! Command-line arguments (clap), parsed once in `main`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// posthuman-operator: tooling that needs the operator's private store.
#[derive(Debug, Parser)]
#[command(name = "posthuman-operator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Re-run sampled training segments of a train job from the private store and compare
    /// them bit for bit with what its receipt commits to (proof of learning).
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The train job's id.
    pub job: String,
    /// The server's data dir (its `store/` holds the spec, dataset, weights, checkpoints).
    #[arg(long, env = "POSTHUMAN_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The deployment's API, which says where its chain and contracts are.
    #[arg(long, env = "POSTHUMAN_API", default_value = posthuman_types::DEFAULT_API_URL)]
    pub api: String,
    /// Ethereum JSON-RPC endpoint; by default the one the API advertises.
    #[arg(long, env = "POSTHUMAN_RPC")]
    pub rpc: Option<String>,
    /// Machine-readable JSON (the audit report) on stdout.
    #[arg(long)]
    pub json: bool,
}
