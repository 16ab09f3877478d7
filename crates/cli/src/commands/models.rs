//! `posthuman models …`: publish an HF-layout directory, browse the catalogue and lineage.

use posthuman_types::publishes::PublishView;
use posthuman_types::requests::PublishRequest;
use posthuman_types::views::ModelView;
use posthuman_types::{Hash32, RewardScheme};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::args::{EditArgs, ModelsCmd, PublishArgs, SellArgs};
use crate::client::{ApiClient, ModelFiles, expiry, nonce};
use crate::error::CliError;
use crate::output::Out;
use crate::session::Session;
use crate::{Config, units};

pub async fn run(cfg: &Config, out: &Out, cmd: ModelsCmd) -> Result<(), CliError> {
    match cmd {
        ModelsCmd::Publish(a) => {
            // Local files first: a bad directory fails before the wallet, the API or the chain
            // is touched.
            let files = model_files(&a)?;
            let s = Session::open(cfg).await?;
            let m = publish_files(&s, out, &a, files).await?;
            out.emit(&m, || card(&m));
        }
        ModelsCmd::List => {
            let api = ApiClient::new(&cfg.api)?;
            let ms = api.models().await?;
            out.emit(&ms, || list(&ms));
        }
        ModelsCmd::Show { nft } => {
            let m = ApiClient::new(&cfg.api)?.model(&nft).await?;
            out.emit(&m, || card(&m));
        }
        ModelsCmd::Lineage { nft } => {
            let l = lineage(&ApiClient::new(&cfg.api)?, &nft).await?;
            out.emit(&l, || render_lineage(&l));
        }
        ModelsCmd::Sell(a) => {
            let s = Session::open(cfg).await?;
            let m = sell(&s, &a).await?;
            out.emit(&m, || match &m.card.price {
                Some(p) => format!(
                    "{} ({}) is on sale at {} OCEAN per datatoken, exchange {}",
                    m.card.name,
                    m.card.symbol,
                    p.parse().map(units::show).unwrap_or_default(),
                    m.card.exchange_id.map(|h| h.to_hex()).unwrap_or_default()
                ),
                None => format!("{} ({}) is not on sale", m.card.name, m.card.symbol),
            });
        }
        ModelsCmd::Edit(a) => {
            let s = Session::open(cfg).await?;
            let m = edit(&s, &a).await?;
            out.emit(&m, || format!("card updated (its DDO on chain too)\n{}", card(&m)));
        }
        ModelsCmd::Royalties(a) => {
            let s = Session::open(cfg).await?;
            let v = super::royalties::vault(&s, &a).await?;
            out.emit(&v, || super::royalties::human(&v, a.distribute));
        }
    }
    Ok(())
}

/// Edits a model's card under a request signed with the wallet: checked first against the
/// card as the API shows it, with the API's own rules, so bad input is refused (exit 2)
/// before anything is signed or sent.
pub async fn edit(s: &Session, a: &EditArgs) -> Result<ModelView, CliError> {
    let nft = crate::session::address("the model", &a.nft)?;
    let req = posthuman_types::card::CardEdit {
        model: format!("{nft:#x}"),
        description: a.description.clone(),
        tags: a.tags.as_deref().map(posthuman_types::card::split_tags),
        license: a.license.clone(),
        nonce: nonce(),
        expires_at: expiry(),
    };
    let current = s.api.model(&req.model).await?;
    req.apply(&current.card).map_err(|e| CliError::Usage(format!("--{e}")))?;
    s.api.edit_card(&s.signer, &s.domain(), &req).await
}

/// Opens, re-prices or closes the sale of a derived model's datatokens on Ocean's exchange,
/// with the trainer's own key on chain, then has the API's card follow the chain.
pub async fn sell(s: &Session, a: &SellArgs) -> Result<ModelView, CliError> {
    let nft = crate::session::address("the model", &a.nft)?;
    if a.close {
        s.chain.close_sale(s.me(), nft).await?;
    } else {
        let price =
            a.price.as_deref().ok_or_else(|| CliError::Usage("--price is needed".into()))?;
        let rate = units::parse("--price", price)?;
        if rate < alloy::primitives::U256::from(posthuman_chain::sale::MIN_RATE) {
            return Err(CliError::Usage(format!(
                "--price must be at least {} OCEAN (Ocean's minimum rate)",
                units::show(alloy::primitives::U256::from(posthuman_chain::sale::MIN_RATE))
            )));
        }
        let amount = units::parse("--amount", &a.amount)?;
        s.chain.open_sale(s.me(), nft, rate, amount).await?;
    }
    s.api.sync_sale(&a.nft).await
}

/// Publishes a model directory with a geometric reward scheme.
pub async fn publish(s: &Session, out: &Out, a: &PublishArgs) -> Result<ModelView, CliError> {
    publish_files(s, out, a, model_files(a)?).await
}

/// The files `a` names, read (a sharded checkpoint checked and assembled) with no network
/// call, so that bad input is refused before anything is uploaded.
pub fn model_files(a: &PublishArgs) -> Result<ModelFiles, CliError> {
    let files = ModelFiles::read(&a.dir)?;
    match &a.adapter {
        Some(d) => files.with_adapter(d),
        None => Ok(files),
    }
}

/// Publishes `files` (read by [`model_files`] from `a.dir`) under `a`'s terms.
pub async fn publish_files(
    s: &Session,
    out: &Out,
    a: &PublishArgs,
    files: ModelFiles,
) -> Result<ModelView, CliError> {
    let total = units::parse("--reward-total", &a.reward_total)?;
    let total: u128 =
        total.try_into().map_err(|_| CliError::Usage("--reward-total is too large".into()))?;
    let royalty: u128 = units::parse("--royalty", &a.royalty)?
        .try_into()
        .map_err(|_| CliError::Usage("--royalty is too large".into()))?;
    let reward_scheme =
        RewardScheme::geometric(total, a.reward_first_bps, a.reward_depth).with_royalty(royalty);
    reward_scheme.validate().map_err(|e| CliError::Usage(e.to_string()))?;
    // The API's own check, before anything is uploaded or signed.
    let license = match &a.license {
        Some(l) => posthuman_types::card::check_license(l)
            .map_err(|e| CliError::Usage(format!("--{e}")))?,
        None => None,
    };
    let req = PublishRequest {
        name: a.name.clone(),
        symbol: a.symbol.clone(),
        description: a.description.clone(),
        owner: s.me().to_string(),
        price: units::parse("--price", &a.price)?.to_string(),
        reward_scheme,
        weights_sha256: Hash32(Sha256::digest(&files.weights).into()),
        adapter_sha256: files.adapter.as_ref().map(|(_, w)| Hash32(Sha256::digest(w).into())),
        license,
        nonce: nonce(),
        expires_at: expiry(),
    };
    let bar = out.bytes_bar("upload");
    bar.set_message(format!("{} ({} MB of weights)", a.name, files.weights.len() >> 20));
    // The upload's bar, then the API's work on it (fetched, checked, stored: bytes; then the
    // transactions), as the API reports it.
    let work = out.bar(0, "publish");
    let show = |v: &PublishView| {
        bar.finish_and_clear();
        let Some(p) = &v.progress else { return };
        work.set_length(p.total.max(1));
        work.set_position(p.done);
        let step = p.step.as_deref().map(|s| format!(": {s}")).unwrap_or_default();
        work.set_message(format!("{}{step} ({})", p.phase, p.unit));
    };
    let r = s.api.publish(&s.signer, &s.domain(), &req, files, &bar, show).await;
    bar.finish_and_clear();
    work.finish_and_clear();
    r
}

/// A model and its ancestors, child first.
#[derive(Clone, Debug, Serialize)]
pub struct Lineage {
    pub models: Vec<ModelView>,
}

/// Walks the catalogue from `nft` up to its root.
pub async fn lineage(api: &ApiClient, nft: &str) -> Result<Lineage, CliError> {
    let m = api.model(nft).await?;
    let mut models = vec![m.clone()];
    for parent in &m.lineage {
        models.push(api.model(parent).await?);
    }
    Ok(Lineage { models })
}

fn render_lineage(l: &Lineage) -> String {
    let mut s = String::new();
    for (depth, m) in l.models.iter().rev().enumerate() {
        let who = m.card.trainer.as_deref().unwrap_or(&m.card.owner);
        s.push_str(&format!(
            "{}{} {}  weights {}  by {}\n",
            "  ".repeat(depth),
            if depth == 0 { "●" } else { "└─" },
            m.card.symbol,
            m.card.weights_hash.short(),
            who
        ));
    }
    s.trim_end().to_string()
}

fn list(ms: &[ModelView]) -> String {
    if ms.is_empty() {
        return "no models yet: publish one with `posthuman models publish DIR …`".into();
    }
    let mut s = format!("{:<8} {:<42} {:<12} {:<8} {}\n", "SYMBOL", "NFT", "PRICE", "JOBS", "ARCH");
    for m in ms {
        let price = m.card.price.as_deref().map(price_of).unwrap_or_else(|| "-".into());
        let jobs = m.jobs.train + m.jobs.infer + m.jobs.evaluate;
        // A LoRA model says so beside its architecture (its card says over what).
        let lora = m.card.lora.as_ref().map(|l| format!(" + LoRA r{}", l.r)).unwrap_or_default();
        s.push_str(&format!(
            "{:<8} {:<42} {:<12} {:<8} {}{lora}\n",
            m.card.symbol, m.card.nft, price, jobs, m.card.architecture
        ));
    }
    s.trim_end().to_string()
}

fn price_of(base_units: &str) -> String {
    base_units
        .parse()
        .map(|v| format!("{} OCEAN", units::show(v)))
        .unwrap_or_else(|_| base_units.to_string())
}

/// The human rendering of a model card.
pub fn card(m: &ModelView) -> String {
    let c = &m.card;
    let mut s = format!(
        "{} ({})  {}\n  nft        {}\n  datatoken  {}\n  owner      {}\n  weights    {}\n  arch       {} ({} parameters)\n",
        c.name,
        c.symbol,
        c.description,
        c.nft,
        c.datatoken,
        c.owner,
        c.weights_hash,
        c.architecture,
        c.parameters
    );
    s.push_str(&format!("  licence    {}\n", c.license_text()));
    if let Some(p) = &c.price {
        s.push_str(&format!("  price      {}\n", price_of(p)));
    }
    if let Some(t) = &c.trainer {
        s.push_str(&format!("  trainer    {t}\n"));
    }
    if c.parent.is_some() || c.lora.is_some() {
        s.push_str(&format!("  derived    {}\n", c.derivation()));
    }
    if let Some(l) = &c.lora {
        s.push_str(&format!(
            "  adapter    {} ({} parameters, alpha {}, {} layers)\n",
            l.adapter_hash, l.adapter_params, l.lora_alpha, l.targeted_layers
        ));
    }
    if !m.lineage.is_empty() {
        s.push_str(&format!("  lineage    {}\n", m.lineage.join(" → ")));
    }
    let shares: Vec<String> =
        c.reward_scheme.shares_bps.iter().map(|b| format!("{}%", f64::from(*b) / 100.0)).collect();
    if !c.tags.is_empty() {
        s.push_str(&format!("  tags       {}\n", c.tags.join(", ")));
    }
    s.push_str(&format!(
        "  rewards    {} per derivation, shares {}\n  jobs       train {} / infer {} / evaluate {}\n",
        c.reward_scheme.total_reward.parse().map(units::show).unwrap_or_default(),
        shares.join(" / "),
        m.jobs.train,
        m.jobs.infer,
        m.jobs.evaluate
    ));
    for e in &m.evaluations {
        s.push_str(&format!("  eval       perplexity {:.3} (job {})\n", e.perplexity, e.job_id));
    }
    s.trim_end().to_string()
}
