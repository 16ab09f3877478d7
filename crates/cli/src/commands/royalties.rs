//! `posthuman models royalties NFT [--distribute]`: the lineage royalty waiting in a derived
//! model's vault, and paying it out.
//!
//! Every order of a derived model pays the root's royalty (OCEAN) into the model's own
//! `RoyaltyVault` (contracts/src/ModelLineage.sol). Nothing moves it on to the ancestors until
//! someone calls the vault's `distribute()`, which anyone may: it pays the balance but the
//! operator's seed by the root's scheme (`ModelLineage.royaltySplit`). This command shows the
//! vault and, with `--distribute`, sends that call from the user's wallet and reports each
//! `RoyaltyPaid` event: who received how much, for which ancestor.

use posthuman_chain::lineage::RoyaltyPayment;
use serde::Serialize;

use crate::args::RoyaltiesArgs;
use crate::error::CliError;
use crate::session::{Session, address};
use crate::units;

/// A derived model's royalty vault (the `--json` shape).
#[derive(Clone, Debug, Serialize)]
pub struct Vault {
    /// The derived model (NFT).
    pub model: String,
    /// Its vault: the datatoken's publish-market fee address.
    pub vault: String,
    /// The royalty token (OCEAN).
    pub token: String,
    /// Base units each order of the model pays into the vault.
    pub per_order: String,
    /// Base units waiting for `distribute()` (the balance but the seed), after any payout.
    pub pending: String,
    /// What `--distribute` paid, in the vault's order (empty without it, or when nothing was
    /// waiting: then no transaction is sent).
    pub paid: Vec<Payout>,
}

/// One `RoyaltyPaid` event of a payout.
#[derive(Clone, Debug, Serialize)]
pub struct Payout {
    pub beneficiary: String,
    /// The ancestor whose trainer the beneficiary is (the root, for the remainder).
    pub ancestor: String,
    /// Base units.
    pub amount: String,
    pub tx: String,
}

impl From<&RoyaltyPayment> for Payout {
    fn from(p: &RoyaltyPayment) -> Self {
        Payout {
            beneficiary: format!("{:#x}", p.beneficiary),
            ancestor: format!("{:#x}", p.ancestor),
            amount: p.amount.to_string(),
            tx: p.tx_hash.map(|h| h.to_string()).unwrap_or_default(),
        }
    }
}

/// Reads a derived model's vault and, when asked, pays it out with the session's wallet. A
/// root (or any address that is no derived model) is refused as a usage error: only orders
/// of derived models pay a royalty.
pub async fn vault(s: &Session, a: &RoyaltiesArgs) -> Result<Vault, CliError> {
    let nft = address("the model", &a.nft)?;
    let terms = s.chain.royalty_terms(nft).await?.ok_or_else(|| {
        CliError::Usage(format!(
            "{nft:#x} is not a derived model: only orders of models derived by training pay a \
             lineage royalty (a root's orders pay none)"
        ))
    })?;
    let mut waiting = s.chain.royalty_pending(nft).await?.unwrap_or_default();
    let mut paid = Vec::new();
    // An empty vault would pay nothing: no transaction, no gas spent for it.
    if a.distribute && !waiting.is_zero() {
        paid = s.chain.distribute_royalty(s.me(), nft).await?.iter().map(Payout::from).collect();
        waiting = s.chain.royalty_pending(nft).await?.unwrap_or_default();
    }
    Ok(Vault {
        model: format!("{nft:#x}"),
        vault: format!("{:#x}", terms.vault),
        token: format!("{:#x}", terms.token),
        per_order: terms.amount.to_string(),
        pending: waiting.to_string(),
        paid,
    })
}

/// The human rendering.
pub fn human(v: &Vault, distributed: bool) -> String {
    let ocean = |s: &str| s.parse().map(units::show).unwrap_or_else(|_| s.to_string());
    let mut lines = vec![format!(
        "vault {} of {}: {} OCEAN waiting ({} OCEAN per order)",
        v.vault,
        v.model,
        ocean(&v.pending),
        ocean(&v.per_order)
    )];
    for p in &v.paid {
        lines.push(format!(
            "paid {} OCEAN to {} (trainer of {}), tx {}",
            ocean(&p.amount),
            p.beneficiary,
            p.ancestor,
            p.tx
        ));
    }
    if distributed && v.paid.is_empty() {
        lines.push("nothing to pay out: no transaction sent".into());
    } else if !distributed && v.pending != "0" {
        lines.push("pay it out to the model's ancestors with --distribute".into());
    }
    lines.join("\n")
}
