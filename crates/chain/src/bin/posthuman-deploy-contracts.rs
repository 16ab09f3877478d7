//! Deploys Posthuman's contracts to the chain at `--rpc-url` and writes their address book:
//! Ocean v4 + ModelLineage + PeerMarket, or only ours on top of the Ocean deployment that
//! `--ocean-book` names. Idempotent: an existing `--out` whose contracts have code on that
//! chain is printed and left alone. `scripts/deploy.sh` runs it (step 5).
//!
//! The deployer key comes from the environment variable `--key-env` names, never from the
//! command line (which other users and shell history can read), and is never printed; nor is
//! the RPC URL (it may carry an API key; `$POSTHUMAN_RPC_URL` keeps it out of the arguments).
//!
//! `--operator-env VAR` hands the lineage contract's operator role to the key in `$VAR` (the
//! one the deployed functions sign and send with, which the stack keeps in Secrets Manager):
//! `setOperator` sent by the deployer as the contract's owner, and the book names that
//! operator. Without it the deployer stays the operator, and a deployment whose functions hold
//! another key cannot complete a job (job-done refuses to start). Idempotent too.
//!
//! `--fund-operator ETH` (with `--operator-env`) tops that operator up to at least ETH of the
//! chain's coin, sent by the deployer: it pays the gas of every job's completion, and an
//! operator with none leaves every finished job uncompleted. Only the shortfall is sent, so
//! a rerun with enough already there sends nothing.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use posthuman_chain::alloy::primitives::utils::format_ether;
use posthuman_chain::alloy::primitives::{Address, U256};
use posthuman_chain::alloy::signers::local::PrivateKeySigner;
use posthuman_chain::{
    AddressBook, Chain, ContractsDeployment, DeployOutcome, OceanBook, deploy_contracts,
};

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
    /// Name of the environment variable holding the runtime operator's hex private key: the
    /// lineage contract's operator role is handed to it and the book names it.
    #[arg(long, value_name = "VAR")]
    operator_env: Option<String>,
    /// With --operator-env: the least the operator should hold, in ether (e.g. 0.05); the
    /// deployer sends the shortfall.
    #[arg(long, value_name = "ETH", requires = "operator_env", value_parser = parse_ether,
        allow_hyphen_values = true)]
    fund_operator: Option<U256>,
}

/// A positive amount of ether, as `0.05` or `1`.
fn parse_ether(s: &str) -> Result<U256, String> {
    // Refused here, not left to the units parser: a negative amount must never wrap around.
    if s.trim().starts_with('-') {
        return Err(format!("{s:?} is negative: an amount of ether such as 0.05"));
    }
    let wei = posthuman_chain::alloy::primitives::utils::parse_ether(s.trim())
        .map_err(|e| format!("{s:?} is not an amount of ether: {e}"))?;
    if wei.is_zero() {
        return Err("the amount must be more than 0 (leave the flag out to send nothing)".into());
    }
    Ok(wei)
}

/// The key in environment variable `var`, never echoed (not even in a parse error).
fn key_from(var: &str, flag: &str) -> anyhow::Result<PrivateKeySigner> {
    let key = std::env::var(var)
        .with_context(|| format!("{flag} {var}: that environment variable is not set"))?;
    key.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("${var} is not a hex private key (32 bytes, optional 0x)"))
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
    // The parse error is not shown either: it could quote part of the key.
    let deployer = key_from(&args.key_env, "--key-env")?;
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
    let args = Args::parse();
    let operator =
        args.operator_env.as_deref().map(|v| key_from(v, "--operator-env")).transpose()?;
    let fund = args.fund_operator;
    let cfg = config(args)?;
    println!("deployer {}", cfg.deployer.address());
    let outcome = deploy_contracts(&cfg, &mut |line| println!("{line}")).await?;
    let mut book = match outcome {
        DeployOutcome::AlreadyDeployed(book) => book,
        DeployOutcome::Deployed { book, .. } => book,
    };
    if let Some(op) = operator {
        hand_over(&cfg, &mut book, op.address(), fund).await?;
    }
    println!("{}", serde_json::to_string_pretty(&book)?);
    Ok(())
}

/// Makes `op` the lineage contract's operator (sent by the deployer, its owner) unless it is
/// already, and the book's `operator`; tops it up to `fund` wei when given, else warns when
/// it has no ether for the gas it will pay.
async fn hand_over(
    cfg: &ContractsDeployment,
    book: &mut AddressBook,
    op: Address,
    fund: Option<U256>,
) -> anyhow::Result<()> {
    let me = cfg.deployer.address();
    let chain = Chain::connect(&cfg.rpc_url, cfg.deployer.clone(), book.clone())?;
    let current = chain.lineage_operator().await?;
    if current == op {
        println!("operator {op}: already the lineage contract's operator");
    } else {
        let owner = chain.lineage_owner().await?;
        if owner != me {
            bail!(
                "the lineage contract's owner is {owner}, not the deployer {me}: only the owner can hand the operator role from {current} to {op}"
            );
        }
        chain.set_lineage_operator(me, op).await?;
        println!("operator: handed from {current} to {op} (setOperator, sent by the owner)");
    }
    if book.operator != op {
        book.operator = op;
        book.save(&cfg.out)?;
    }
    let balance = chain.eth_balance(op).await?;
    if let Some(want) = fund {
        if balance >= want {
            println!("operator {op}: holds {} ETH, no top-up needed", format_ether(balance));
        } else {
            let short = want - balance;
            let have = chain.eth_balance(me).await?;
            if have <= short {
                bail!(
                    "the deployer {me} holds {} ETH: not enough to send the operator the {} ETH it lacks",
                    format_ether(have),
                    format_ether(short)
                );
            }
            let tx = chain.send_eth(op, short).await?;
            println!(
                "operator {op}: funded with {} ETH up to {} ETH (tx {tx})",
                format_ether(short),
                format_ether(want)
            );
        }
    } else if balance.is_zero() {
        println!(
            "warning: the operator {op} holds no ether: fund it, it pays the gas of every job's completion"
        );
    }
    Ok(())
}
