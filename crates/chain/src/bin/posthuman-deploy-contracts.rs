//! Deploys Posthuman's contracts to the chain at `--rpc-url` and writes their address book:
//! Ocean v4 + ModelLineage + PeerMarket, or only ours on top of the Ocean deployment that
//! `--ocean-book` names. Idempotent: an existing `--out` whose contracts have code on that
//! chain is printed and left alone. `scripts/deploy.sh` runs it (step 5).
//!
//! The deployer key comes from the environment variable `--key-env` names, never from the
//! command line (which other users and shell history can read), and is never printed; nor is
//! the RPC URL (it may carry an API key; `$POSTHUMAN_RPC_URL` keeps it out of the arguments).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use posthuman_chain::alloy::signers::local::PrivateKeySigner;
use posthuman_chain::{ContractsDeployment, DeployOutcome, OceanBook, deploy_contracts};

#[derive(Parser, Debug)]
#[command(about = "Deploy Posthuman's contracts to a chain and write the address book")]
struct Args {
    /// The chain's JSON-RPC endpoint (http:// or https://); from the environment, it stays
    /// out of the process list (the URL may carry an API key).
    #[arg(long, env = "POSTHUMAN_RPC_URL", hide_env_values = true)]
    rpc_url: String,
    /// Name of the environment variable holding the deployer's hex private key (it pays for
    /// the contracts and becomes the lineage contract's operator and owner).
    #[arg(long, value_name = "VAR")]
    key_env: String,
    /// The address book to write (or, when it exists, to check and keep).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// An address book (or its Ocean half) of an Ocean v4 deployment on this chain: deploy
    /// only ModelLineage and PeerMarket on top of it.
    #[arg(long, value_name = "FILE")]
    ocean_book: Option<PathBuf>,
}

/// The arguments checked before anything touches the chain.
fn config(args: Args) -> anyhow::Result<ContractsDeployment> {
    let scheme_ok = ["http://", "https://"].iter().any(|s| args.rpc_url.starts_with(s));
    // The URL itself is not echoed: it may carry an API key.
    if !scheme_ok
        || args.rpc_url.parse::<posthuman_chain::alloy::transports::http::reqwest::Url>().is_err()
    {
        bail!("--rpc-url is not an http(s):// URL");
    }
    let key = std::env::var(&args.key_env).with_context(|| {
        format!("--key-env {}: that environment variable is not set", args.key_env)
    })?;
    // The parse error is not shown either: it could quote part of the key.
    let deployer: PrivateKeySigner = key.trim().parse().map_err(|_| {
        anyhow::anyhow!("${} is not a hex private key (32 bytes, optional 0x)", args.key_env)
    })?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!("--out {}: no directory {}", args.out.display(), dir.display());
    }
    let ocean = match &args.ocean_book {
        Some(path) => Some(OceanBook::load(path).context("--ocean-book")?),
        None => None,
    };
    Ok(ContractsDeployment { rpc_url: args.rpc_url, deployer, out: args.out, ocean })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cfg = config(Args::parse())?;
    println!("deployer {}", cfg.deployer.address());
    let outcome = deploy_contracts(&cfg, &mut |line| println!("{line}")).await?;
    let book = match outcome {
        DeployOutcome::AlreadyDeployed(book) => book,
        DeployOutcome::Deployed { book, .. } => book,
    };
    println!("{}", serde_json::to_string_pretty(&book)?);
    Ok(())
}
