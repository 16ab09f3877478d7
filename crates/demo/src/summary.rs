//! The demo's summary: what it prints, and the checks that make it an assertion rather than
//! a story — balances equal the scheme's amounts exactly, the lineage is M1 → M2 → M3, every
//! receipt verifies, and M3 beats M1.

use std::collections::BTreeMap;

use alloy::primitives::U256;
use posthuman_functions::handlers::jobs::JobResult;
use posthuman_functions::handlers::views::ModelView;
use posthuman_types::Hash32;
use posthuman_types::pricing::Ocean;
use serde::Serialize;

use posthuman_cli::commands::rewards::Reward;
use posthuman_cli::units;

/// One model of the lineage.
#[derive(Clone, Debug, Serialize)]
pub struct ModelLine {
    /// The story's name for it (M1, M2, M3).
    pub label: String,
    /// The datatoken's symbol on chain.
    pub symbol: String,
    pub nft: String,
    pub weights_hash: Hash32,
    pub parent: Option<String>,
    /// The model's lineage as the catalogue reports it (parent … root).
    pub lineage: Vec<String>,
    pub trainer: String,
    /// Perplexity on the WikiText-2 test text (Elena's evaluation).
    pub perplexity: f64,
    /// How it was made ("published", "full fine-tune of …", "LoRA r 8 (…) over …").
    pub derivation: String,
    /// A LoRA derivation's adapter hash.
    pub adapter: Option<Hash32>,
}

impl ModelLine {
    pub fn of(label: &str, m: &ModelView, perplexity: f64) -> Self {
        ModelLine {
            label: label.to_string(),
            symbol: m.card.symbol.clone(),
            nft: m.card.nft.clone(),
            weights_hash: m.card.weights_hash,
            parent: m.card.parent.clone(),
            lineage: m.lineage.clone(),
            trainer: m.card.trainer.clone().unwrap_or_else(|| m.card.owner.clone()),
            perplexity,
            derivation: m.card.derivation(),
            adapter: m.card.lora.as_ref().map(|l| l.adapter_hash),
        }
    }
}

/// One person's holdings at the end.
#[derive(Clone, Debug, Serialize)]
pub struct Account {
    pub name: String,
    pub address: String,
    pub ocean: U256,
    /// Datatoken balances on chain, by model symbol.
    pub held: BTreeMap<String, U256>,
    /// What the story's bookkeeping says they must be.
    pub expected: BTreeMap<String, U256>,
    pub rewards: Vec<Reward>,
}

/// One paid job and its public verification.
#[derive(Clone, Debug, Serialize)]
pub struct JobLine {
    pub buyer: String,
    pub job_id: String,
    pub kind: String,
    pub model: String,
    pub receipt_hash: Option<Hash32>,
    pub verified: bool,
    pub verification: Vec<String>,
    /// Train jobs: derivations verified along the derived model's lineage.
    pub lineage_links: usize,
    /// Infer jobs: completions with a verified, matching attestation.
    pub attested: usize,
    /// Evaluate jobs: the report is bound to the receipt and to the weights on sale.
    pub evaluation_bound: bool,
    /// The receipt commits to the buyer's dataset or prompts under the buyer's salt (checked
    /// with the salt; the public receipt alone confirms no guessed input).
    pub data_bound: bool,
    /// The compute fee (the quote's provider fee) the buyer paid the operator in OCEAN.
    pub compute_fee: Ocean,
}

impl JobLine {
    pub fn of(buyer: &str, r: &JobResult, compute_fee: Ocean) -> Self {
        JobLine {
            buyer: buyer.into(),
            job_id: r.job.job_id.clone(),
            kind: r.job.kind.to_string(),
            model: r.job.model.clone(),
            receipt_hash: r.job.receipt_hash,
            verified: false,
            verification: vec![],
            lineage_links: 0,
            attested: 0,
            evaluation_bound: false,
            data_bound: false,
            compute_fee,
        }
    }
}

/// The operator's proof-of-learning audit of one training job.
#[derive(Clone, Debug, Serialize)]
pub struct AuditLine {
    pub trainer: String,
    pub job_id: String,
    pub passed: bool,
    pub segments: usize,
    pub audit_steps: u64,
    pub total_steps: u32,
    pub cost_ratio: f64,
}

/// Everything the demo shows.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub lineage: Vec<ModelLine>,
    /// Lineage royalties (OCEAN) paid out of M2's and M3's vaults, each checked to the wei
    /// against the root's scheme when it was distributed.
    pub royalties: Vec<RoyaltyLine>,
    pub accounts: Vec<Account>,
    pub generated: String,
    pub jobs: Vec<JobLine>,
    pub audits: Vec<AuditLine>,
    /// Wall seconds per phase.
    pub timings: Vec<(String, f64)>,
}

/// One royalty payment out of a derived model's vault.
#[derive(Clone, Debug, Serialize)]
pub struct RoyaltyLine {
    /// The derived model whose orders paid it ("M3").
    pub model: String,
    /// Who was paid ("bob") and for which ancestor ("M2's trainer", "root owner").
    pub to: String,
    pub why: String,
    /// OCEAN base units.
    pub amount: U256,
}

impl Summary {
    /// Every claim of the story, checked; the first failure is returned as one sentence.
    pub fn check(&self) -> Result<(), String> {
        let [m1, m2, m3] = &self.lineage[..] else {
            return Err(format!("expected 3 models, got {}", self.lineage.len()));
        };
        if m2.lineage != vec![m1.nft.clone()] || m3.lineage != vec![m2.nft.clone(), m1.nft.clone()]
        {
            return Err("the lineage is not M1 → M2 → M3".into());
        }
        if m1.weights_hash == m2.weights_hash || m2.weights_hash == m3.weights_hash {
            return Err("a derived model has its parent's weights".into());
        }
        for a in &self.accounts {
            for (sym, want) in &a.expected {
                let got = a.held.get(sym).copied().unwrap_or_default();
                if got != *want {
                    return Err(format!(
                        "{} holds {} {sym}, the scheme and trades say {}",
                        a.name,
                        units::show(got),
                        units::show(*want)
                    ));
                }
            }
        }
        if !self.royalties.iter().any(|r| r.model == "M3" && r.to == "bob") {
            return Err("Derek's order of M3 paid no lineage royalty to Bob (M2's trainer)".into());
        }
        if let Some(j) = self.jobs.iter().find(|j| !j.verified) {
            return Err(format!(
                "the receipt of {} job {} does not verify: {}",
                j.kind,
                j.job_id,
                j.verification.join("; ")
            ));
        }
        let links: Vec<usize> =
            self.jobs.iter().filter(|j| j.kind == "train").map(|j| j.lineage_links).collect();
        if links != [1, 2] {
            return Err(format!("train receipts verified {links:?} lineage links, not [1, 2]"));
        }
        if let Some(j) = self.jobs.iter().find(|j| j.kind == "evaluate" && !j.evaluation_bound) {
            return Err(format!("evaluation {} is not bound to the model's weights", j.job_id));
        }
        if let Some(j) = self.jobs.iter().find(|j| j.kind == "infer" && j.attested != 1) {
            return Err(format!(
                "inference job {} has {} verified attestations, not 1",
                j.job_id, j.attested
            ));
        }
        if self.audits.len() != 2 || self.audits.iter().any(|a| !a.passed) {
            return Err("the operator's audit of the training jobs did not pass".into());
        }
        if m3.perplexity.partial_cmp(&m1.perplexity) != Some(std::cmp::Ordering::Less) {
            return Err(format!(
                "M3's perplexity {:.3} does not beat M1's {:.3}",
                m3.perplexity, m1.perplexity
            ));
        }
        Ok(())
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let mut s = String::from("\n== Lineage (WikiText-2 test perplexity)\n");
        for (i, m) in self.lineage.iter().enumerate() {
            s.push_str(&format!(
                "{}{} {} ({})  weights {}  trained by {}  ppl {:.2}\n",
                "   ".repeat(i),
                if i == 0 { "●" } else { "└─" },
                m.label,
                m.symbol,
                m.weights_hash,
                short(&m.trainer),
                m.perplexity
            ));
            if let Some(a) = &m.adapter {
                let how = m.derivation.split(" over ").next().unwrap_or_default();
                s.push_str(&format!("{}   {how}, adapter {a}\n", "   ".repeat(i)));
            }
        }
        s.push_str("\n== Balances (datatokens on chain = expected by scheme and trades)\n");
        for a in &self.accounts {
            let held: Vec<String> = a
                .held
                .iter()
                .filter(|(_, v)| !v.is_zero())
                .map(|(k, v)| format!("{} {k}", units::show(*v)))
                .collect();
            s.push_str(&format!(
                "{:<8} {}  {:>10} OCEAN  {}\n",
                a.name,
                short(&a.address),
                units::show(a.ocean),
                if held.is_empty() { "-".to_string() } else { held.join(", ") }
            ));
            for r in &a.rewards {
                s.push_str(&format!(
                    "           reward {} {} ({})\n",
                    units::show(r.amount.parse().unwrap_or_default()),
                    r.symbol,
                    r.share
                ));
            }
        }
        s.push_str(&format!("\n== Derek's inference on M3\n{}\n", self.generated.trim()));
        s.push_str(
            "\n== Compute fees (each job's priced quote, paid to the operator in startOrder)\n",
        );
        for j in &self.jobs {
            s.push_str(&format!("{:<8} {:<8} {}  {}\n", j.buyer, j.kind, j.job_id, j.compute_fee));
        }
        let fees = self.jobs.iter().fold(0u128, |a, j| a.saturating_add(j.compute_fee.0));
        s.push_str(&format!("total paid to the operator: {}\n", Ocean(fees)));
        s.push_str(
            "\n== Lineage royalties (OCEAN each order of a derived model paid its ancestors)\n",
        );
        for r in &self.royalties {
            s.push_str(&format!(
                "{:<4} -> {:<8} {:>12} OCEAN  ({})\n",
                r.model,
                r.to,
                units::show(r.amount),
                r.why
            ));
        }
        s.push_str("\n== Receipts\n");
        for j in &self.jobs {
            s.push_str(&format!(
                "{:<8} {:<8} {}  receipt {}  {}\n",
                j.buyer,
                j.kind,
                j.job_id,
                j.receipt_hash.map(|h| h.short()).unwrap_or_else(|| "-".into()),
                if j.verified {
                    "verified ✓".to_string()
                } else {
                    format!("FAILED: {}", j.verification.join("; "))
                }
            ));
        }
        s.push_str("\n== Proof-of-learning audits (operator, re-running sampled segments)\n");
        for a in &self.audits {
            s.push_str(&format!(
                "{:<8} {}  {}  {} segment(s), {} of {} steps ({:.1}% of training)\n",
                a.trainer,
                a.job_id,
                if a.passed { "reproduced bit for bit ✓" } else { "FAILED" },
                a.segments,
                a.audit_steps,
                a.total_steps,
                a.cost_ratio * 100.0
            ));
        }
        let total: f64 = self.timings.iter().map(|(_, t)| t).sum();
        s.push_str(&format!("\n== Time ({total:.1} s)\n"));
        for (name, t) in &self.timings {
            s.push_str(&format!("{t:>7.1} s  {name}\n"));
        }
        s
    }
}

fn short(a: &str) -> String {
    if a.len() > 12 { format!("{}…{}", &a[..6], &a[a.len() - 4..]) } else { a.to_string() }
}
