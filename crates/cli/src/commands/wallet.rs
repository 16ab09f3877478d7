//! `posthuman wallet …`: create, import, address, balances.

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use serde::Serialize;

use crate::args::WalletCmd;
use crate::error::CliError;
use crate::output::Out;
use crate::session::Session;
use crate::wallet::{WalletSource, parse_key, save_keystore};
use crate::{Config, units};

/// One token balance.
#[derive(Clone, Debug, Serialize)]
pub struct Balance {
    pub symbol: String,
    pub token: String,
    /// Base units.
    pub amount: String,
    /// Whole tokens, decimal.
    pub display: String,
}

/// A wallet's holdings.
#[derive(Clone, Debug, Serialize)]
pub struct Balances {
    pub address: String,
    pub eth: String,
    pub tokens: Vec<Balance>,
}

pub async fn run(cfg: &Config, out: &Out, cmd: WalletCmd) -> Result<(), CliError> {
    match cmd {
        WalletCmd::Create => save(cfg, out, PrivateKeySigner::random()),
        WalletCmd::Import { from_env } => {
            let key = std::env::var(&from_env).map_err(|_| {
                CliError::Usage(format!("the environment variable {from_env} holds no key"))
            })?;
            save(cfg, out, parse_key(&key)?)
        }
        WalletCmd::Address => {
            let a = cfg.wallet.load()?.address();
            out.emit(&serde_json::json!({ "address": a.to_string() }), || a.to_string());
            Ok(())
        }
        WalletCmd::Balances => {
            let s = Session::open(cfg).await?;
            let b = balances(&s).await?;
            out.emit(&b, || render(&b));
            Ok(())
        }
    }
}

fn save(cfg: &Config, out: &Out, signer: PrivateKeySigner) -> Result<(), CliError> {
    let WalletSource::Keystore { path, password, password_env } = &cfg.wallet else {
        return Err(CliError::Usage(
            "wallet create/import write a keystore: drop --key-env".into(),
        ));
    };
    let a = save_keystore(path, &signer, password.as_deref(), password_env)?;
    out.emit(&serde_json::json!({ "address": a.to_string(), "keystore": path }), || {
        format!("created wallet {a} at {}", path.display())
    });
    Ok(())
}

/// ETH, OCEAN and every catalogue datatoken the session's wallet holds (non-zero only).
pub async fn balances(s: &Session) -> Result<Balances, CliError> {
    let me = s.me();
    let book = s.chain.book().clone();
    let mut tokens = vec![token(s, "OCEAN", book.ocean).await?];
    for m in s.api.models().await? {
        let dt = crate::session::address("datatoken", &m.card.datatoken)?;
        let b = token(s, &m.card.symbol, dt).await?;
        if b.amount != "0" {
            tokens.push(b);
        }
    }
    let eth = s.chain.eth_balance(me).await?;
    Ok(Balances { address: me.to_string(), eth: units::show(eth), tokens })
}

async fn token(
    s: &Session,
    symbol: &str,
    token: alloy::primitives::Address,
) -> Result<Balance, CliError> {
    let v: U256 = s.chain.balance_of(token, s.me()).await?;
    Ok(Balance {
        symbol: symbol.to_string(),
        token: token.to_string(),
        amount: v.to_string(),
        display: units::show(v),
    })
}

fn render(b: &Balances) -> String {
    let mut s = format!("{}\n  ETH     {}\n", b.address, b.eth);
    for t in &b.tokens {
        s.push_str(&format!("  {:<7} {}  ({})\n", t.symbol, t.display, t.token));
    }
    s.trim_end().to_string()
}
