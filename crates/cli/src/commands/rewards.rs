//! `posthuman rewards`: where each of my datatokens came from — every `RewardPaid` event of
//! the lineage contract naming me, with the derivation and the scheme share it paid.

use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use posthuman_chain::bindings::ModelLineage::RewardPaid;
use serde::Serialize;

use crate::error::CliError;
use crate::output::Out;
use crate::session::Session;
use crate::{Config, units};

/// One reward received.
#[derive(Clone, Debug, Serialize)]
pub struct Reward {
    /// The lineage contract's job id (bytes32) of the derivation that paid it.
    pub job_id: String,
    /// The derived model whose datatokens were minted.
    pub model: String,
    pub symbol: String,
    pub datatoken: String,
    pub amount: String,
    /// Why I was paid: "trainer", "trainer 1 step up", …, "root owner (remainder)".
    pub share: String,
    pub tx: String,
}

pub async fn run(cfg: &Config, out: &Out) -> Result<(), CliError> {
    let s = Session::open(cfg).await?;
    let rs = rewards(&s).await?;
    out.emit(&rs, || {
        if rs.is_empty() {
            return "no rewards yet: train a model to earn its datatokens".into();
        }
        rs.iter()
            .map(|r| {
                format!(
                    "{:>12} {:<8} {}  (job {}, tx {})",
                    units::show(r.amount.parse().unwrap_or_default()),
                    r.symbol,
                    r.share,
                    &r.job_id[..10],
                    &r.tx[..10]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// Every reward the session's wallet received, oldest first.
pub async fn rewards(s: &Session) -> Result<Vec<Reward>, CliError> {
    let book = s.chain.book().clone();
    let me = s.me();
    let filter = Filter::new()
        .address(book.lineage)
        .event_signature(RewardPaid::SIGNATURE_HASH)
        .topic3(me.into_word())
        .from_block(book.deployed_at_block);
    let logs = s
        .chain
        .provider()
        .get_logs(&filter)
        .await
        .map_err(|e| CliError::Unavailable(format!("reading reward events: {e}")))?;
    let models = s.api.models().await?;
    let mut out = Vec::new();
    for log in logs {
        let tx = log.transaction_hash.map(|h| h.to_string()).unwrap_or_default();
        let ev = log
            .log_decode::<RewardPaid>()
            .map_err(|e| CliError::Internal(format!("malformed RewardPaid event: {e}")))?;
        let ev = ev.inner.data;
        let dt = ev.childDatatoken;
        let model = models.iter().find(|m| m.card.datatoken.parse().ok() == Some(dt));
        let (nft, symbol) = match model {
            Some(m) => (m.card.nft.clone(), m.card.symbol.clone()),
            None => (String::new(), String::from("?")),
        };
        let share = match nft.parse() {
            Ok(addr) => share_of(s, addr, me).await?,
            Err(_) => "unknown model".into(),
        };
        out.push(Reward {
            job_id: ev.jobId.to_string(),
            model: nft,
            symbol,
            datatoken: dt.to_string(),
            amount: ev.amount.to_string(),
            share,
            tx,
        });
    }
    Ok(out)
}

/// Which shares of `child`'s derivation went to `me`, read from the on-chain lineage and the
/// root's scheme (the contract merges repeated beneficiaries into one mint).
async fn share_of(
    s: &Session,
    child: alloy::primitives::Address,
    me: alloy::primitives::Address,
) -> Result<String, CliError> {
    let line = s.chain.lineage(child).await?; // child first, root last
    let Some(root) = line.last() else { return Ok("unknown lineage".into()) };
    let scheme = s.chain.scheme_of(root.nft).await?;
    let trainers = line.len().saturating_sub(1);
    let mut parts = Vec::new();
    for (i, bps) in scheme.shares_bps.iter().take(trainers).enumerate() {
        if line[i].trainer == me {
            let who =
                if i == 0 { "trainer".to_string() } else { format!("trainer {i} step(s) up") };
            parts.push(format!("{who}: {}%", f64::from(*bps) / 100.0));
        }
    }
    if root.trainer == me {
        parts.push("root owner: remainder".into());
    }
    Ok(parts.join(", "))
}
