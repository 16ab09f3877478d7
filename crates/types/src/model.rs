//! Reward schemes and the public model card.

use serde::{Deserialize, Serialize};

use crate::Hash32;

/// What a model whose publisher named no licence may be used under, on its card, its DDO and
/// the storefront's model page: only through paid compute jobs (the weights never leave the
/// operator's storage). A publisher may name one instead (`crate::card::check_license`).
pub const MODEL_LICENSE: &str = "proprietary: compute-to-data only";

/// Most beneficiaries a scheme may name; bounds the lineage contract's gas per derivation.
pub const MAX_BENEFICIARIES: usize = 16;
/// Basis points in a whole.
pub const BPS: u32 = 10_000;
/// Most OCEAN (base units) a root may charge as lineage royalty per order of a derived model:
/// 10 OCEAN. Mirrors `ModelLineage.MAX_ROYALTY`; the contract refuses more at registration.
pub const MAX_ROYALTY: u128 = 10 * 10u128.pow(18);
/// Deepest lineage the contract accepts (a root is depth 0). Mirrors `ModelLineage.MAX_DEPTH`;
/// readers refuse longer lineages so a walk up one is always bounded.
pub const MAX_DEPTH: usize = 32;

/// Ocean's minimum fixed-rate exchange rate (`FixedRateExchange.MIN_RATE`): OCEAN base units
/// per whole datatoken; a derived model cannot be put on sale cheaper.
pub const OCEAN_MIN_RATE: u128 = 10_000_000_000;

/// The OCEAN (base units) a trainer approves the lineage contract for so `openSale` can put
/// `amount` datatokens (base units) on sale: the deposit pays out `amount × OCEAN_MIN_RATE /
/// 1e18` (~1e-8 OCEAN per token), which the exchange must hold first; twice that covers the
/// rounding and Ocean's swap fee on it. The contract pulls only what the float costs and
/// hands the rest back (`ModelLineage.openSale`). One definition for the CLI and the
/// storefront.
pub fn sale_float(amount: u128) -> u128 {
    (amount / (10u128.pow(18) / OCEAN_MIN_RATE)).saturating_mul(2).saturating_add(2)
}

/// How a derivation's reward (child datatokens minted by the lineage contract) is split.
///
/// `shares_bps[0]` goes to the trainer of the new model, `shares_bps[1]` to the trainer of its
/// parent, and so on up the lineage; whatever is not assigned (shares beyond the lineage's
/// depth, and the rounding remainder) goes to the root model's owner, so the amounts always
/// add up to `total_reward` exactly. The scheme is fixed when the root model is registered.
///
/// The same shares split the lineage royalty: every order of a derived model pays `royalty`
/// OCEAN into that model's vault, which pays its ancestors (`shares_bps[0]` to the parent's
/// trainer, `shares_bps[1]` to the grandparent's, …, the rest to the root owner).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RewardScheme {
    /// Child datatokens minted per derivation, in base units (wei), as a decimal string so
    /// that JavaScript and JSON number limits never truncate it.
    pub total_reward: String,
    /// Shares in basis points, most recent trainer first; at most 16, summing to ≤ 10,000.
    pub shares_bps: Vec<u16>,
    /// OCEAN base units every order of a derived model pays to its ancestors (≤
    /// [`MAX_ROYALTY`]), decimal string. Schemes written before royalties existed parse as 0.
    #[serde(default = "zero_royalty")]
    pub royalty: String,
}

fn zero_royalty() -> String {
    "0".into()
}

/// Why a reward scheme is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemeError(pub String);

impl std::fmt::Display for SchemeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid reward scheme: {}", self.0)
    }
}

impl std::error::Error for SchemeError {}

impl RewardScheme {
    /// The geometric scheme: the trainer gets `first_bps`, each earlier trainer half of the
    /// one after it (50% / 25% / 12.5% … for `first_bps = 5000`), over `depth` trainers.
    pub fn geometric(total_reward: u128, first_bps: u16, depth: usize) -> Self {
        let mut shares = Vec::new();
        let mut s = first_bps;
        for _ in 0..depth.min(MAX_BENEFICIARIES) {
            if s == 0 {
                break;
            }
            shares.push(s);
            s /= 2;
        }
        RewardScheme {
            total_reward: total_reward.to_string(),
            shares_bps: shares,
            royalty: zero_royalty(),
        }
    }

    /// The same scheme charging `royalty` OCEAN base units per order of a derived model.
    pub fn with_royalty(mut self, royalty: u128) -> Self {
        self.royalty = royalty.to_string();
        self
    }

    /// The royalty as an integer.
    pub fn royalty(&self) -> Result<u128, SchemeError> {
        self.royalty
            .parse::<u128>()
            .map_err(|_| SchemeError("royalty must be a non-negative integer".into()))
    }

    /// The total as an integer (≤ 2^128 is plenty for datatoken amounts).
    pub fn total(&self) -> Result<u128, SchemeError> {
        self.total_reward
            .parse::<u128>()
            .map_err(|_| SchemeError("total_reward must be a non-negative integer".into()))
    }

    pub fn validate(&self) -> Result<(), SchemeError> {
        self.total()?;
        let royalty = self.royalty()?;
        if royalty > MAX_ROYALTY {
            return Err(SchemeError(format!(
                "royalty {royalty} is above the cap of {MAX_ROYALTY} OCEAN base units per order"
            )));
        }
        if self.shares_bps.len() > MAX_BENEFICIARIES {
            return Err(SchemeError(format!("at most {MAX_BENEFICIARIES} shares")));
        }
        let sum: u32 = self.shares_bps.iter().map(|&s| u32::from(s)).sum();
        if sum > BPS {
            return Err(SchemeError(format!("shares sum to {sum} bps, more than {BPS}")));
        }
        Ok(())
    }

    /// The exact split for a lineage with `trainers` trainers above the root (most recent
    /// first): one amount per paid trainer, then the root owner's amount. Mirrors the
    /// contract, so clients can show what a derivation will pay before it happens.
    pub fn split(&self, trainers: usize) -> Result<(Vec<u128>, u128), SchemeError> {
        self.validate()?;
        Ok(self.split_amount(self.total()?, trainers))
    }

    /// How the vault of a model at depth `depth` pays out `amount` OCEAN of royalty: one
    /// amount per paid ancestor trainer (parent first), then the root owner's amount. Mirrors
    /// `ModelLineage.royaltySplit`; the amounts add up to `amount` exactly.
    pub fn royalty_split(
        &self,
        depth: usize,
        amount: u128,
    ) -> Result<(Vec<u128>, u128), SchemeError> {
        self.validate()?;
        Ok(self.split_amount(amount, depth.saturating_sub(1)))
    }

    /// Which shares of one derivation's reward went to `me`, in words ("trainer: 50%",
    /// "trainer 1 step(s) up: 25%", "root owner: remainder", joined by ", " when one account
    /// holds several; empty when none). `trainers`: the trainers of the derived model and of
    /// its ancestors below the root, the derived model's own first; `root_owner`: the root's
    /// publisher. Mirrors [`RewardScheme::split`] (the contract merges repeated beneficiaries
    /// into one mint, so one event can carry several shares). Shared by the CLI (from the
    /// chain's lineage) and the storefront (from the catalogue's).
    pub fn reward_shares_of<A: PartialEq>(&self, trainers: &[A], root_owner: &A, me: &A) -> String {
        let mut parts = Vec::new();
        for (i, bps) in self.shares_bps.iter().take(trainers.len()).enumerate() {
            if trainers[i] == *me {
                let who =
                    if i == 0 { "trainer".to_string() } else { format!("trainer {i} step(s) up") };
                parts.push(format!("{who}: {}%", f64::from(*bps) / 100.0));
            }
        }
        if root_owner == me {
            parts.push("root owner: remainder".into());
        }
        parts.join(", ")
    }

    /// Which share of a derived model's royalty the `ancestor` model's trainer holds, in
    /// words ("parent's trainer: 50%", "trainer 2 steps up: 25%", "root owner: remainder").
    /// `below_root`: the ancestors strictly between the derived model and its root, the
    /// parent first. Mirrors [`RewardScheme::royalty_split`]: share i goes to the trainer
    /// i + 1 steps up while the lineage below the root reaches; the root owner takes the rest.
    pub fn royalty_share_of<A: PartialEq>(
        &self,
        below_root: &[A],
        root: &A,
        ancestor: &A,
    ) -> String {
        if ancestor == root {
            return "root owner: remainder".into();
        }
        match below_root.iter().position(|m| m == ancestor) {
            Some(i) => match self.shares_bps.get(i) {
                Some(bps) => {
                    let who = if i == 0 {
                        "parent's trainer".to_string()
                    } else {
                        format!("trainer {} steps up", i + 1)
                    };
                    format!("{who}: {}%", f64::from(*bps) / 100.0)
                }
                None => "beyond the scheme's shares".into(),
            },
            None => "not an ancestor of this model".into(),
        }
    }

    fn split_amount(&self, total: u128, trainers: usize) -> (Vec<u128>, u128) {
        let paid: Vec<u128> = self
            .shares_bps
            .iter()
            .take(trainers)
            .map(|&bps| mul_div(total, u128::from(bps), u128::from(BPS)))
            .collect();
        let root = total - paid.iter().sum::<u128>();
        (paid, root)
    }
}

/// `a * b / d` without overflow for `b ≤ d ≤ 10_000`.
fn mul_div(a: u128, b: u128, d: u128) -> u128 {
    (a / d) * b + (a % d) * b / d
}

/// What the catalogue shows about a model. Never weights, never private storage keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelCard {
    /// The data NFT address (the model's identity on chain), `0x…`.
    pub nft: String,
    /// The ERC-20 datatoken that pays for jobs on this model.
    pub datatoken: String,
    pub name: String,
    pub symbol: String,
    pub description: String,
    pub owner: String,
    /// Canonical content hash of the weights.
    pub weights_hash: Hash32,
    /// The parent model's NFT, for derived models.
    #[serde(default)]
    pub parent: Option<String>,
    /// The trainer who produced this model (derived models).
    #[serde(default)]
    pub trainer: Option<String>,
    /// Architecture summary from `config.json` (e.g. "gpt2 4L/256d/4h ctx256 vocab8000").
    pub architecture: String,
    pub parameters: u64,
    /// Fixed-rate exchange id and price in OCEAN base units per datatoken, if on sale.
    #[serde(default)]
    pub exchange_id: Option<Hash32>,
    #[serde(default)]
    pub price: Option<String>,
    pub reward_scheme: RewardScheme,
    /// A LoRA derivation's adapter (its weights are the parent's with the adapter merged);
    /// absent for published models and full fine-tunes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::LoraOutput>,
    /// Tags the owner added (`crate::card`); the DDO lists them after the fixed ones.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The licence the root's publisher chose: an SPDX identifier (Apache-2.0, MIT, …: the
    /// list is `card::SPDX_LICENSES`) or a `LicenseRef-…` (`card::check_license`). A derived
    /// model carries its root's, copied when it is derived. Absent: none was named, and
    /// "proprietary: compute-to-data only" applies (as for every record written before
    /// licences existed; `ModelCard::license_text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub license: Option<String>,
}

impl ModelCard {
    /// The model family: the architecture line's first word (`gpt2`, `llama`, …).
    pub fn family(&self) -> &str {
        self.architecture.split_whitespace().next().unwrap_or("unknown")
    }

    /// What the model may be used under: the licence named ([`ModelCard::license`]), else
    /// [`MODEL_LICENSE`]. What its DDO's `metadata.license` says and its pages show.
    pub fn license_text(&self) -> &str {
        self.license.as_deref().unwrap_or(MODEL_LICENSE)
    }

    /// Who may change the card: a derived model's trainer, else the root's owner of record
    /// (the publisher; the operator only holds the NFT in custody).
    pub fn owner_of_record(&self) -> &str {
        self.trainer.as_deref().unwrap_or(&self.owner)
    }

    /// How the model came to be, in a few words: "LoRA r 8 (c_attn, c_fc) over 0x…",
    /// "full fine-tune of 0x…", "published with a LoRA adapter merged (…)", or "published".
    pub fn derivation(&self) -> String {
        match (&self.parent, &self.lora) {
            (Some(p), Some(l)) => {
                format!("LoRA r {} ({}) over {p}", l.r, l.target_modules.join(", "))
            }
            (Some(p), None) => format!("full fine-tune of {p}"),
            (None, Some(l)) => format!(
                "published with a LoRA adapter merged (r {}, {})",
                l.r,
                l.target_modules.join(", ")
            ),
            (None, None) => "published".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn geometric_halves() {
        let s = RewardScheme::geometric(1000, 5000, 4);
        assert_eq!(s.shares_bps, vec![5000, 2500, 1250, 625]);
        let (paid, root) = s.split(2).unwrap();
        assert_eq!(paid, vec![500, 250]);
        assert_eq!(root, 250);
    }

    proptest! {
        #[test]
        fn split_is_exact(total in any::<u128>(), first in 0u16..=5000, depth in 0usize..20,
                          trainers in 0usize..20) {
            let mut s = RewardScheme::geometric(total, first, depth);
            s.total_reward = total.to_string();
            let (paid, root) = s.split(trainers).unwrap();
            prop_assert_eq!(paid.iter().sum::<u128>() + root, total);
        }
    }

    #[test]
    fn rejects_oversubscribed() {
        let s = RewardScheme::geometric(1, 9000, 1);
        let s = RewardScheme { shares_bps: vec![9000, 2000], ..s };
        assert!(s.validate().is_err());
        let s = RewardScheme { total_reward: "-1".into(), ..RewardScheme::geometric(0, 0, 0) };
        assert!(s.validate().is_err());
        let capped = RewardScheme::geometric(1, 5000, 2).with_royalty(MAX_ROYALTY);
        assert!(capped.validate().is_ok());
        assert!(capped.with_royalty(MAX_ROYALTY + 1).validate().is_err());
    }

    #[test]
    fn old_schemes_parse_without_a_royalty() {
        let s: RewardScheme =
            serde_json::from_str(r#"{"total_reward":"100","shares_bps":[5000]}"#).unwrap();
        assert_eq!(s.royalty().unwrap(), 0);
    }

    /// The words for who got which share: one per position, several when one account
    /// trained twice up the line, the remainder for the root's owner.
    #[test]
    fn names_the_shares_an_account_holds() {
        let s = RewardScheme::geometric(0, 5000, 3);
        // M3 (trained by c) over M2 (by b) over M1 (published by a).
        let trainers = ["c", "b"];
        assert_eq!(s.reward_shares_of(&trainers, &"a", &"c"), "trainer: 50%");
        assert_eq!(s.reward_shares_of(&trainers, &"a", &"b"), "trainer 1 step(s) up: 25%");
        assert_eq!(s.reward_shares_of(&trainers, &"a", &"a"), "root owner: remainder");
        assert_eq!(
            s.reward_shares_of(&["b", "b"], &"b", &"b"),
            "trainer: 50%, trainer 1 step(s) up: 25%, root owner: remainder"
        );
        assert_eq!(s.reward_shares_of(&trainers, &"a", &"z"), "");
        // Deeper than the scheme: the trainers beyond its shares get none.
        assert_eq!(s.reward_shares_of(&["e", "d", "c", "b"], &"a", &"b"), "");
        // Royalties of M3's orders: M2's trainer, then the root.
        let below = ["m2"];
        assert_eq!(s.royalty_share_of(&below, &"m1", &"m2"), "parent's trainer: 50%");
        assert_eq!(s.royalty_share_of(&below, &"m1", &"m1"), "root owner: remainder");
        assert_eq!(s.royalty_share_of(&["m3", "m2"], &"m1", &"m2"), "trainer 2 steps up: 25%");
        assert_eq!(s.royalty_share_of(&below, &"m1", &"m9"), "not an ancestor of this model");
        let one = RewardScheme::geometric(0, 5000, 1);
        assert_eq!(one.royalty_share_of(&["m3", "m2"], &"m1", &"m2"), "beyond the scheme's shares");
    }

    /// A card as catalogues stored it before licences existed reads with none named, so the
    /// default terms apply; one naming a licence writes and reads it back.
    #[test]
    fn a_card_written_before_licences_reads_with_the_default() {
        let old = r#"{"nft":"0x01","datatoken":"0x02","name":"M1","symbol":"M1","description":"",
            "owner":"0x03","weights_hash":"0x0101010101010101010101010101010101010101010101010101010101010101",
            "parent":null,"trainer":null,"architecture":"gpt2 2L/32d/2h ctx64 vocab300",
            "parameters":1,"exchange_id":null,"price":null,
            "reward_scheme":{"total_reward":"1","shares_bps":[5000],"royalty":"0"},"tags":[]}"#;
        let card: ModelCard = serde_json::from_str(old).unwrap();
        assert_eq!((card.license.as_deref(), card.license_text()), (None, MODEL_LICENSE));
        let text = serde_json::to_string(&card).unwrap();
        assert!(!text.contains("license"), "none named, none written: {text}");
        let named = ModelCard { license: Some("MIT".into()), ..card };
        let back: ModelCard =
            serde_json::from_str(&serde_json::to_string(&named).unwrap()).unwrap();
        assert_eq!(back.license_text(), "MIT");
        assert_eq!(back, named);
    }

    #[test]
    fn royalty_skips_the_model_itself() {
        // M3 (depth 2): the parent M2's trainer gets share 0, the root owner the rest.
        let s = RewardScheme::geometric(0, 5000, 4).with_royalty(7);
        assert_eq!(s.royalty_split(2, 7).unwrap(), (vec![3], 4));
        // M2 (depth 1): its only ancestor is the root.
        assert_eq!(s.royalty_split(1, 7).unwrap(), (vec![], 7));
    }
}
