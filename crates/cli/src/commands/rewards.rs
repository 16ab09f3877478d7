//! `posthuman rewards`: where each of my datatokens came from — every `RewardPaid` event of
//! the lineage contract naming me, with the derivation and the scheme share it paid — and
//! the lineage royalties I received: OCEAN that orders of models derived from mine paid
//! into their vaults, distributed to me as one of their ancestors (`RoyaltyPaid` events of
//! genuine vaults only), with the model whose orders paid it and the share I hold.

use alloy::primitives::Address;
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use posthuman_chain::bindings::ModelLineage::RewardPaid;
use posthuman_chain::lineage::LineageEntry;
use posthuman_types::RewardScheme;
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

/// One lineage royalty received: my part of what orders of a derived model paid its
/// ancestors, paid out of that model's vault by a `distribute()`.
#[derive(Clone, Debug, Serialize)]
pub struct Royalty {
    /// The derived model (NFT) whose orders paid the royalty, and its symbol.
    pub model: String,
    pub symbol: String,
    /// The ancestor of that model whose trainer I am (its root, for the remainder).
    pub ancestor: String,
    /// OCEAN base units.
    pub amount: String,
    /// Which share: "parent's trainer: 50%", "trainer 2 steps up: 25%", "root owner: remainder".
    pub share: String,
    pub vault: String,
    pub tx: String,
}

/// Everything `posthuman rewards` reports (its `--json` shape).
#[derive(Clone, Debug, Serialize)]
pub struct Earnings {
    pub rewards: Vec<Reward>,
    pub royalties: Vec<Royalty>,
}

pub async fn run(cfg: &Config, out: &Out) -> Result<(), CliError> {
    let s = Session::open(cfg).await?;
    let e = Earnings { rewards: rewards(&s).await?, royalties: royalties(&s).await? };
    out.emit(&e, || human(&e));
    Ok(())
}

fn human(e: &Earnings) -> String {
    let short = |h: &str| h.get(..10).unwrap_or(h).to_string();
    let mut lines = Vec::new();
    if e.rewards.is_empty() {
        lines.push("no rewards yet: train a model to earn its datatokens".to_string());
    }
    for r in &e.rewards {
        lines.push(format!(
            "{:>12} {:<8} {}  (job {}, tx {})",
            units::show(r.amount.parse().unwrap_or_default()),
            r.symbol,
            r.share,
            short(&r.job_id),
            short(&r.tx)
        ));
    }
    if !e.royalties.is_empty() {
        lines.push("lineage royalties received (OCEAN paid by orders of derived models):".into());
    }
    for r in &e.royalties {
        lines.push(format!(
            "{:>12} OCEAN from orders of {} ({})  {}  (tx {})",
            units::show(r.amount.parse().unwrap_or_default()),
            r.symbol,
            short(&r.model),
            r.share,
            short(&r.tx)
        ));
    }
    lines.join("\n")
}

/// Every lineage royalty the session's wallet received, oldest first.
pub async fn royalties(s: &Session) -> Result<Vec<Royalty>, CliError> {
    let me = s.me();
    let paid = s.chain.royalties_paid_to(me).await?;
    if paid.is_empty() {
        return Ok(Vec::new());
    }
    let models = s.api.models().await?;
    let mut out = Vec::with_capacity(paid.len());
    for p in paid {
        let symbol = models
            .iter()
            .find(|m| m.card.nft.parse().ok() == Some(p.child))
            .map_or_else(|| "?".to_string(), |m| m.card.symbol.clone());
        let line = s.chain.lineage(p.child).await?; // the child first, its root last
        let share = match line.last() {
            Some(root) => royalty_share(&line, &s.chain.scheme_of(root.nft).await?, p.ancestor),
            None => "unknown lineage".into(),
        };
        out.push(Royalty {
            model: p.child.to_string(),
            symbol,
            ancestor: p.ancestor.to_string(),
            amount: p.amount.to_string(),
            share,
            vault: p.vault.to_string(),
            tx: p.tx_hash.map(|h| h.to_string()).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Which share of a derived model's royalty the trainer of `ancestor` holds, from the
/// model's lineage (`line`: the model first, its root last) and the root's scheme. Mirrors
/// `ModelLineage.royaltySplit`: share i goes to the trainer i + 1 steps up (the parent's
/// first) while the lineage below the root reaches; the root owner takes the remainder.
pub fn royalty_share(line: &[LineageEntry], scheme: &RewardScheme, ancestor: Address) -> String {
    let Some(root) = line.last() else { return "unknown lineage".into() };
    // Ancestors strictly between the model and its root, nearest first.
    let below_root: Vec<Address> =
        line.get(1..line.len() - 1).unwrap_or_default().iter().map(|m| m.nft).collect();
    scheme.royalty_share_of(&below_root, &root.nft, &ancestor)
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
    let trainers: Vec<Address> = line[..line.len() - 1].iter().map(|m| m.trainer).collect();
    Ok(scheme.reward_shares_of(&trainers, &root.trainer, &me))
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthuman_types::Hash32;

    fn entry(nft: u8, parent: Option<u8>, depth: u32, root: u8) -> LineageEntry {
        LineageEntry {
            nft: Address::repeat_byte(nft),
            parent: parent.map(Address::repeat_byte),
            depth,
            trainer: Address::repeat_byte(0xa0 + nft),
            root: Address::repeat_byte(root),
            datatoken: Address::repeat_byte(0x10 + nft),
            weights_hash: Hash32([nft; 32]),
            job_id: None,
        }
    }

    /// M4 → M3 → M2 → M1 (root), geometric 50/25/12.5/6.25 %.
    fn line() -> Vec<LineageEntry> {
        vec![
            entry(4, Some(3), 3, 1),
            entry(3, Some(2), 2, 1),
            entry(2, Some(1), 1, 1),
            entry(1, None, 0, 1),
        ]
    }

    #[test]
    fn names_the_share_each_ancestor_of_a_derived_model_holds() {
        let scheme = RewardScheme::geometric(0, 5000, 4);
        let l = line();
        assert_eq!(royalty_share(&l, &scheme, Address::repeat_byte(3)), "parent's trainer: 50%");
        assert_eq!(royalty_share(&l, &scheme, Address::repeat_byte(2)), "trainer 2 steps up: 25%");
        assert_eq!(royalty_share(&l, &scheme, Address::repeat_byte(1)), "root owner: remainder");
        // The model itself is paid by its datatoken, never by its own royalty.
        assert_eq!(
            royalty_share(&l, &scheme, Address::repeat_byte(4)),
            "not an ancestor of this model"
        );
        assert_eq!(
            royalty_share(&l, &scheme, Address::repeat_byte(9)),
            "not an ancestor of this model"
        );
    }

    #[test]
    fn shares_the_scheme_does_not_reach_and_short_lineages() {
        // One share only: the grandparent's trainer gets nothing but is named as such.
        let one = RewardScheme::geometric(0, 5000, 1);
        assert_eq!(
            royalty_share(&line(), &one, Address::repeat_byte(2)),
            "beyond the scheme's shares"
        );
        // A first-generation child: its only ancestor is the root.
        let l = vec![entry(2, Some(1), 1, 1), entry(1, None, 0, 1)];
        assert_eq!(royalty_share(&l, &one, Address::repeat_byte(1)), "root owner: remainder");
        assert_eq!(royalty_share(&[], &one, Address::repeat_byte(1)), "unknown lineage");
    }

    #[test]
    fn prints_royalties_with_the_paying_model_and_share() {
        let e = Earnings {
            rewards: vec![],
            royalties: vec![Royalty {
                model: Address::repeat_byte(3).to_string(),
                symbol: "M3".into(),
                ancestor: Address::repeat_byte(2).to_string(),
                amount: "1500000000000000000".into(),
                share: "parent's trainer: 50%".into(),
                vault: Address::repeat_byte(7).to_string(),
                tx: format!("0x{}", "ab".repeat(32)),
            }],
        };
        let text = human(&e);
        assert!(text.contains("no rewards yet"), "{text}");
        assert!(text.contains("from orders of M3"), "{text}");
        assert!(text.contains("parent's trainer: 50%"), "{text}");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["royalties"][0]["symbol"], "M3");
        assert!(v["rewards"].as_array().unwrap().is_empty());
    }
}
