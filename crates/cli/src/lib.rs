//! The `posthuman` command line, as a library so the demo (`posthuman-demo`) and the tests
//! drive the very commands users type. It links neither the worker nor the server: operator
//! tooling that needs the private store is `posthuman-operator`.
//!
//! - [`args`]: clap definitions, parsed once in `main`.
//! - [`Config`]: the flags and environment resolved once (wallet, API, chain endpoint).
//! - [`session`]: a signed-in user: API client + chain client with the user's key.
//! - [`client`]: the typed HTTP client of the API (signed requests, error translation).
//! - [`commands`]: one module per command group (wallet, models, market, jobs, rewards,
//!   verify); each function returns a serialisable outcome and prints it.
//! - [`error`]: [`CliError`] with its documented exit codes.

pub mod args;
pub mod client;
pub mod commands;
pub mod error;
pub mod output;
pub mod session;
pub mod units;
pub mod wallet;

use std::path::PathBuf;

pub use error::CliError;

use crate::args::{Cli, Command};
use crate::output::Out;
use crate::wallet::WalletSource;

/// Everything the CLI reads from flags and the environment, resolved once.
#[derive(Clone, Debug)]
pub struct Config {
    pub api: String,
    pub rpc: Option<String>,
    pub wallet: WalletSource,
    pub json: bool,
    /// Accept quotes without asking (`--yes`).
    pub yes: bool,
}

impl Config {
    /// Resolves the global flags (and the environment variables they name).
    pub fn from_cli(cli: &Cli) -> Config {
        let g = &cli.global;
        let wallet = match &g.key_env {
            Some(var) => WalletSource::Key { key: std::env::var(var).ok(), var: var.clone() },
            None => WalletSource::Keystore {
                path: expand_home(&g.wallet),
                password: std::env::var(&g.password_env).ok(),
                password_env: g.password_env.clone(),
            },
        };
        Config { api: g.api.clone(), rpc: g.rpc.clone(), wallet, json: g.json, yes: g.yes }
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let cfg = Config::from_cli(&cli);
    let out = Out::new(cfg.json);
    match cli.command {
        Command::Wallet(c) => commands::wallet::run(&cfg, &out, c).await,
        Command::Models(c) => commands::models::run(&cfg, &out, c).await,
        Command::Market(c) => commands::market::run(&cfg, &out, c).await,
        Command::Jobs(c) => commands::jobs::run(&cfg, &out, c).await,
        Command::Rewards => commands::rewards::run(&cfg, &out).await,
        Command::Verify(a) => commands::verify::run(&cfg, &out, a).await,
    }
}
