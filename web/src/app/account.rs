//! `/account`: the connected wallet's balances (OCEAN and the datatoken of every catalogue
//! model it ever received — the tokens of the ERC-20 `Transfer` events naming it, one
//! `eth_getLogs`, then `balanceOf` for those only — read through the wallet's own provider),
//! the rewards its trainings earned (the lineage contract's `RewardPaid` events naming it,
//! with the share of the scheme each paid), the lineage royalties it received (`RoyaltyPaid`
//! events of genuine royalty vaults naming it) and its jobs. The address is the wallet's,
//! never typed. Shares are named by `RewardScheme`'s own words, as the CLI names them, from
//! the catalogue's lineage.

use alloy::primitives::{Address, U256};
use yew::prelude::*;

use super::jobs::JobList;
use super::wallet::WalletHandle;
use super::{Link, Load, show, use_json};
use crate::eip1193::Provider;
use crate::format::tokens;
use crate::route::Route;
use crate::wallet::{
    balance_call, network_name, parse_balance, parse_log_emitters, parse_reward_logs,
    parse_royalty_logs, parse_royalty_vault, received_logs_params, reward_logs_params,
    royalty_logs_params, royalty_vault_call, short_address,
};
use crate::wire::{ChainInfo, ModelView};

#[function_component]
pub fn AccountPage() -> Html {
    let wallet = use_context::<WalletHandle>();
    let Some((account, provider)) = wallet.as_ref().and_then(|w| w.connected()) else {
        return html! {
            <section id="account">
                <h1>{ "My account" }</h1>
                <p id="not-connected">{ "Connect your wallet (the button at the top) to see your balances and your jobs." }</p>
            </section>
        };
    };
    let chain = wallet.as_ref().and_then(|w| w.chain_id);
    let models = super::use_all_models();
    html! {
        <section id="account" data-account={account.to_checksum(None)}>
            <h1>{ "My account" }</h1>
            <p>{ "Address " }<code id="account-address">{ account.to_checksum(None) }</code></p>
            <h2>{ "Balances" }</h2>
            <Balances {account} provider={provider.clone()} {chain} models={models.clone()} />
            <h2>{ "Rewards received" }</h2>
            <Rewards {account} provider={provider.clone()} {chain} models={models.clone()} />
            <h2>{ "Lineage royalties received" }</h2>
            <Royalties {account} {provider} {chain} {models} />
            <h2>{ "My jobs" }</h2>
            <JobList consumer={account.to_checksum(None)} />
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct BalancesProps {
    account: Address,
    provider: Provider,
    /// The wallet's chain: balances are read again when it changes.
    chain: Option<u64>,
    /// Every model of the catalogue.
    models: Load<Vec<ModelView>>,
}

/// Rewards received: each derivation that minted the account datatokens, from the chain.
#[function_component]
fn Rewards(p: &BalancesProps) -> Html {
    let chain = use_json::<ChainInfo>("/api/chain".into());
    let rows = use_state(|| Load::<Vec<RewardRow>>::Loading);
    {
        let rows = rows.clone();
        let deps = (chain.clone(), p.models.clone(), p.account, p.provider.clone(), p.chain);
        use_effect_with(deps, move |(chain, models, account, provider, on)| {
            let current = std::rc::Rc::new(std::cell::Cell::new(true));
            let flag = current.clone();
            match (chain, models) {
                (Load::Ready(c), _) if *on != Some(c.address_book.chain_id) => {
                    rows.set(Load::Failed(
                        "Switch your wallet to this storefront's network to read your rewards."
                            .into(),
                    ))
                }
                (Load::Ready(c), Load::Ready(ms)) => {
                    let book = &c.address_book;
                    let params = reward_logs_params(book.lineage, *account, book.deployed_at_block);
                    let (provider, ms, account) = (provider.clone(), ms.clone(), *account);
                    wasm_bindgen_futures::spawn_local(async move {
                        let got = match provider.request("eth_getLogs", params).await {
                            Ok(v) => parse_reward_logs(&v).map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                        let got = got.map(|logs| {
                            logs.into_iter()
                                .map(|r| {
                                    let dt = r.datatoken.to_checksum(None);
                                    let m = ms
                                        .iter()
                                        .find(|m| m.card.datatoken.eq_ignore_ascii_case(&dt));
                                    let label = m.map_or_else(
                                        || dt.clone(),
                                        |m| format!("{} ({})", m.card.symbol, m.card.name),
                                    );
                                    RewardRow {
                                        label,
                                        model: m.map(|m| m.card.nft.clone()),
                                        share: m.map_or_else(
                                            || "unknown model".into(),
                                            |m| reward_share(&ms, m, &account),
                                        ),
                                        job: r.job_id.to_string(),
                                        amount: r.amount,
                                    }
                                })
                                .collect()
                        });
                        if flag.get() {
                            rows.set(match got {
                                Ok(rs) => Load::Ready(rs),
                                Err(e) => Load::Failed(format!("could not read your rewards: {e}")),
                            });
                        }
                    });
                }
                (Load::Failed(e), _) | (_, Load::Failed(e)) => rows.set(Load::Failed(e.clone())),
                _ => {}
            }
            move || current.set(false)
        });
    }
    show(&rows, |rs| {
        if rs.is_empty() {
            return html! { <p id="no-rewards">{ "None yet: training a model earns its new datatokens." }</p> };
        }
        html! {
            <table id="rewards" aria-live="polite">
                <thead><tr><th>{ "derived model" }</th><th>{ "your share" }</th><th>{ "derivation (job)" }</th><th>{ "datatokens" }</th></tr></thead>
                <tbody>
                { for rs.iter().map(|r| html! {
                    <tr class="reward" data-amount={r.amount.to_string()}>
                        <td>{ model_link(&r.label, r.model.as_ref()) }</td>
                        <td class="share">{ r.share.clone() }</td>
                        <td><code title={r.job.clone()}>{ format!("{}…", &r.job[..10]) }</code></td>
                        <td>{ tokens(&r.amount.to_string()) }</td>
                    </tr>
                }) }
                </tbody>
            </table>
        }
    })
}

/// One reward: the derived model it minted, the share(s) of its scheme it paid this account.
#[derive(Clone, PartialEq)]
struct RewardRow {
    label: String,
    model: Option<String>,
    share: String,
    job: String,
    amount: U256,
}

/// A model's name linking to its page, or the bare label of a model the catalogue lacks.
fn model_link(label: &str, nft: Option<&String>) -> Html {
    match nft {
        Some(nft) => html! { <Link to={Route::Model(nft.clone())}>{ label.to_string() }</Link> },
        None => html! { label.to_string() },
    }
}

/// The catalogue's models of `m`'s lineage, `m` first, its root last; `None` when an
/// ancestor is missing from the catalogue (then no share can be named).
fn line_of<'a>(ms: &'a [ModelView], m: &'a ModelView) -> Option<Vec<&'a ModelView>> {
    let mut line = vec![m];
    for nft in &m.lineage {
        line.push(ms.iter().find(|a| a.card.nft.eq_ignore_ascii_case(nft))?);
    }
    Some(line)
}

/// Which shares of `m`'s derivation reward went to `me` (the CLI's words).
fn reward_share(ms: &[ModelView], m: &ModelView, me: &Address) -> String {
    let Some(line) = line_of(ms, m) else { return "unknown lineage".into() };
    let lower = |a: &str| a.to_ascii_lowercase();
    let root = line[line.len() - 1];
    let trainers: Vec<String> = line[..line.len() - 1]
        .iter()
        .map(|a| a.card.trainer.as_deref().map(lower).unwrap_or_default())
        .collect();
    let me = lower(&me.to_checksum(None));
    root.card.reward_scheme.reward_shares_of(&trainers, &lower(&root.card.owner), &me)
}

/// Which share of `m`'s royalties the trainer of `ancestor` holds (the CLI's words).
fn royalty_share(ms: &[ModelView], m: &ModelView, ancestor: &Address) -> String {
    let Some(line) = line_of(ms, m) else { return "unknown lineage".into() };
    let lower = |a: &ModelView| a.card.nft.to_ascii_lowercase();
    let root = line[line.len() - 1];
    let below_root: Vec<String> =
        line[1..line.len().saturating_sub(1).max(1)].iter().map(|a| lower(a)).collect();
    let ancestor = ancestor.to_checksum(None).to_ascii_lowercase();
    root.card.reward_scheme.royalty_share_of(&below_root, &lower(root), &ancestor)
}

/// One royalty received: the derived model whose orders paid it, the share, the OCEAN.
#[derive(Clone, PartialEq)]
struct RoyaltyRow {
    label: String,
    model: Option<String>,
    share: String,
    amount: U256,
}

/// Lineage royalties received: `RoyaltyPaid` events naming the account, each from the vault
/// the lineage contract made for its model (an event from any other contract is not shown).
#[function_component]
fn Royalties(p: &BalancesProps) -> Html {
    let chain = use_json::<ChainInfo>("/api/chain".into());
    let rows = use_state(|| Load::<Vec<RoyaltyRow>>::Loading);
    {
        let rows = rows.clone();
        let deps = (chain.clone(), p.models.clone(), p.account, p.provider.clone(), p.chain);
        use_effect_with(deps, move |(chain, models, account, provider, on)| {
            let current = std::rc::Rc::new(std::cell::Cell::new(true));
            let flag = current.clone();
            match (chain, models) {
                (Load::Ready(c), _) if *on != Some(c.address_book.chain_id) => {
                    rows.set(Load::Failed(
                        "Switch your wallet to this storefront's network to read your royalties."
                            .into(),
                    ))
                }
                (Load::Ready(c), Load::Ready(ms)) => {
                    let book = &c.address_book;
                    let params = royalty_logs_params(*account, book.deployed_at_block);
                    let (provider, ms, lineage) = (provider.clone(), ms.clone(), book.lineage);
                    wasm_bindgen_futures::spawn_local(async move {
                        let got = royalties(&provider, params, lineage, &ms).await;
                        if flag.get() {
                            rows.set(match got {
                                Ok(rs) => Load::Ready(rs),
                                Err(e) => {
                                    Load::Failed(format!("could not read your royalties: {e}"))
                                }
                            });
                        }
                    });
                }
                (Load::Failed(e), _) | (_, Load::Failed(e)) => rows.set(Load::Failed(e.clone())),
                _ => {}
            }
            move || current.set(false)
        });
    }
    show(&rows, |rs| {
        if rs.is_empty() {
            return html! { <p id="no-royalties">{ "None yet: orders of models derived from yours pay you a share of their royalty." }</p> };
        }
        html! {
            <table id="royalties" aria-live="polite">
                <thead><tr><th>{ "paid by orders of" }</th><th>{ "your share" }</th><th>{ "OCEAN" }</th></tr></thead>
                <tbody>
                { for rs.iter().map(|r| html! {
                    <tr class="royalty" data-amount={r.amount.to_string()} data-model={r.model.clone().unwrap_or_default()}>
                        <td>{ model_link(&r.label, r.model.as_ref()) }</td>
                        <td class="share">{ r.share.clone() }</td>
                        <td>{ tokens(&r.amount.to_string()) }</td>
                    </tr>
                }) }
                </tbody>
            </table>
        }
    })
}

/// The royalty events naming the account, kept only where their vault is the one the
/// lineage contract made for that model (one `royaltyVaultOf` call per model paid by).
async fn royalties(
    provider: &Provider,
    params: serde_json::Value,
    lineage: Address,
    ms: &[ModelView],
) -> Result<Vec<RoyaltyRow>, String> {
    let logs = parse_royalty_logs(
        &provider.request("eth_getLogs", params).await.map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut vaults: Vec<(Address, Address)> = Vec::new();
    let mut out = Vec::new();
    for l in logs {
        let vault = match vaults.iter().find(|(c, _)| *c == l.child) {
            Some((_, v)) => *v,
            None => {
                let v = provider
                    .request("eth_call", royalty_vault_call(lineage, l.child))
                    .await
                    .map_err(|e| e.to_string())?;
                let v = parse_royalty_vault(&v).map_err(|e| e.to_string())?;
                vaults.push((l.child, v));
                v
            }
        };
        if vault != l.vault {
            continue;
        }
        let child = l.child.to_checksum(None);
        let m = ms.iter().find(|m| m.card.nft.eq_ignore_ascii_case(&child));
        out.push(RoyaltyRow {
            label: m
                .map_or_else(|| child.clone(), |m| format!("{} ({})", m.card.symbol, m.card.name)),
            model: m.map(|m| m.card.nft.clone()),
            share: m.map_or_else(|| "unknown model".into(), |m| royalty_share(ms, m, &l.ancestor)),
            amount: l.amount,
        });
    }
    Ok(out)
}

/// One token's row: what it is, and its balance (or why it could not be read).
#[derive(Clone, PartialEq)]
struct Row {
    label: String,
    model: Option<String>,
    token: Address,
    balance: Result<U256, String>,
}

#[function_component]
fn Balances(p: &BalancesProps) -> Html {
    let chain = use_json::<ChainInfo>("/api/chain".into());
    let models = p.models.clone();
    let rows = use_state(|| Load::<Vec<Row>>::Loading);
    {
        let rows = rows.clone();
        let deps = (chain.clone(), models.clone(), p.account, p.provider.clone(), p.chain);
        use_effect_with(deps, move |(chain, models, account, provider, on)| {
            // Balances read for an account (or network) no longer shown are dropped.
            let current = std::rc::Rc::new(std::cell::Cell::new(true));
            let flag = current.clone();
            let mut tokens: Vec<(String, Option<String>, Address)> = Vec::new();
            let mut received = None;
            match (chain, models) {
                // On another network the same addresses are other contracts (or none):
                // their numbers would mean nothing.
                (Load::Ready(c), _) if *on != Some(c.address_book.chain_id) => {
                    rows.set(Load::Failed(format!(
                        "Your wallet is on {}: switch to {} (top of the page) to read your balances.",
                        on.map(network_name).unwrap_or_else(|| "an unknown network".into()),
                        network_name(c.address_book.chain_id)
                    )))
                }
                (Load::Ready(c), Load::Ready(ms)) => {
                    if let Some(ocean) = c.address_book.ocean {
                        tokens.push(("OCEAN".into(), None, ocean));
                    }
                    received = Some((c.address_book.deployed_at_block, ms.clone()));
                }
                (Load::Failed(e), _) | (_, Load::Failed(e)) => rows.set(Load::Failed(e.clone())),
                _ => {}
            }
            if let Some((from_block, ms)) = received {
                rows.set(Load::Loading);
                let (account, provider) = (*account, provider.clone());
                wasm_bindgen_futures::spawn_local(async move {
                    // The catalogue's datatokens this account ever received, in catalogue
                    // order: one log query instead of a balance call per model.
                    let got = match provider
                        .request("eth_getLogs", received_logs_params(account, from_block))
                        .await
                    {
                        Ok(v) => parse_log_emitters(&v).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    let got = match got {
                        Ok(got) => got,
                        Err(e) => {
                            if flag.get() {
                                rows.set(Load::Failed(format!("could not read your tokens: {e}")));
                            }
                            return;
                        }
                    };
                    for m in &ms {
                        if let Ok(dt) = m.card.datatoken.parse::<Address>()
                            && got.contains(&dt)
                        {
                            let label = format!("{} ({})", m.card.symbol, m.card.name);
                            tokens.push((label, Some(m.card.nft.clone()), dt));
                        }
                    }
                    let mut out = Vec::new();
                    for (label, model, token) in tokens {
                        let balance = match provider
                            .request("eth_call", balance_call(token, account))
                            .await
                        {
                            Ok(v) => parse_balance(&v).map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                        out.push(Row { label, model, token, balance });
                    }
                    if flag.get() {
                        rows.set(Load::Ready(out));
                    }
                });
            }
            move || current.set(false)
        });
    }
    show(&rows, |rs| {
        html! {
            <table id="balances" aria-live="polite">
                <thead><tr><th>{ "token" }</th><th>{ "address" }</th><th>{ "balance" }</th></tr></thead>
                <tbody>
                { for rs.iter().map(|r| html! {
                    <tr class="balance" data-token={r.token.to_checksum(None)} data-balance={r.balance.as_ref().map(|b| b.to_string()).unwrap_or_default()}>
                        <td>{ match &r.model {
                            Some(nft) => html! { <Link to={Route::Model(nft.clone())}>{ r.label.clone() }</Link> },
                            None => html! { r.label.clone() },
                        } }</td>
                        <td><code title={r.token.to_checksum(None)}>{ short_address(&r.token) }</code></td>
                        <td>{ match &r.balance {
                            Ok(b) => html! { tokens(&b.to_string()) },
                            Err(e) => html! { <span class="error">{ format!("could not read: {e}") }</span> },
                        } }</td>
                    </tr>
                }) }
                </tbody>
            </table>
        }
    })
}
