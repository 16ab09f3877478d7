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
use crate::wire::{AddressBook, ChainInfo, ModelView};

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
            <Holdings {account} {provider} {chain} {models} />
            <h2>{ "My jobs" }</h2>
            <JobList consumer={account.to_checksum(None)} />
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct HoldingsProps {
    account: Address,
    provider: Provider,
    /// The wallet's chain: everything is read again when it changes.
    chain: Option<u64>,
    /// Every model of the catalogue.
    models: Load<Vec<ModelView>>,
}

/// What the account holds and earned, read through the wallet in one pass (one component
/// and one effect for the three tables: each component type costs the module kilobytes).
#[derive(Clone, PartialEq)]
struct Earned {
    balances: Vec<Row>,
    rewards: Result<Vec<RewardRow>, String>,
    royalties: Result<Vec<RoyaltyRow>, String>,
}

/// Balances, rewards received and lineage royalties received.
#[function_component]
fn Holdings(p: &HoldingsProps) -> Html {
    let chain = use_json::<ChainInfo>("/api/chain".into());
    let state = use_state(|| Load::<Earned>::Loading);
    {
        let state = state.clone();
        let deps = (chain.clone(), p.models.clone(), p.account, p.provider.clone(), p.chain);
        use_effect_with(deps, move |(chain, models, account, provider, on)| {
            // What was read for an account (or network) no longer shown is dropped.
            let current = std::rc::Rc::new(std::cell::Cell::new(true));
            let flag = current.clone();
            match (chain, models) {
                // On another network the same addresses are other contracts (or none):
                // their numbers would mean nothing.
                (Load::Ready(c), _) if *on != Some(c.address_book.chain_id) => {
                    state.set(Load::Failed(format!(
                        "Your wallet is on {}: switch to {} (top of the page) to read your balances.",
                        on.map(network_name).unwrap_or_else(|| "an unknown network".into()),
                        network_name(c.address_book.chain_id)
                    )))
                }
                (Load::Ready(c), Load::Ready(ms)) => {
                    state.set(Load::Loading);
                    let (book, ms, account, provider) =
                        (c.address_book.clone(), ms.clone(), *account, provider.clone());
                    wasm_bindgen_futures::spawn_local(async move {
                        let got = earned(&provider, &book, &ms, account).await;
                        if flag.get() {
                            state.set(match got {
                                Ok(e) => Load::Ready(e),
                                Err(e) => Load::Failed(format!("could not read your tokens: {e}")),
                            });
                        }
                    });
                }
                (Load::Failed(e), _) | (_, Load::Failed(e)) => state.set(Load::Failed(e.clone())),
                _ => {}
            }
            move || current.set(false)
        });
    }
    let failed = |what: &str, e: &String| html! { <p class="error">{ format!("could not read your {what}: {e}") }</p> };
    show(&state, |e| {
        html! { <>
            <h2>{ "Balances" }</h2>
            <table id="balances" aria-live="polite">
                <thead><tr><th>{ "token" }</th><th>{ "address" }</th><th>{ "balance" }</th></tr></thead>
                <tbody>
                { for e.balances.iter().map(|r| html! {
                    <tr class="balance" data-token={r.token.to_checksum(None)} data-balance={r.balance.as_ref().map(|b| b.to_string()).unwrap_or_default()}>
                        <td>{ model_link(&r.label, r.model.as_ref()) }</td>
                        <td><code title={r.token.to_checksum(None)}>{ short_address(&r.token) }</code></td>
                        <td>{ match &r.balance {
                            Ok(b) => html! { tokens(&b.to_string()) },
                            Err(e) => html! { <span class="error">{ format!("could not read: {e}") }</span> },
                        } }</td>
                    </tr>
                }) }
                </tbody>
            </table>
            <h2>{ "Rewards received" }</h2>
            { match &e.rewards {
                Err(err) => failed("rewards", err),
                Ok(rs) if rs.is_empty() => html! { <p id="no-rewards">{ "None yet: training a model earns its new datatokens." }</p> },
                Ok(rs) => html! {
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
                },
            } }
            <h2>{ "Lineage royalties received" }</h2>
            { match &e.royalties {
                Err(err) => failed("royalties", err),
                Ok(rs) if rs.is_empty() => html! { <p id="no-royalties">{ "None yet: orders of models derived from yours pay you a share of their royalty." }</p> },
                Ok(rs) => html! {
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
                },
            } }
        </> }
    })
}

/// The catalogue's label of a model (symbol and name), or the bare address.
fn label_of(m: Option<&ModelView>, addr: String) -> String {
    m.map_or(addr, |m| format!("{} ({})", m.card.symbol, m.card.name))
}

/// Everything [`Holdings`] shows: the balances of OCEAN and of every catalogue datatoken the
/// account ever received (the tokens of the `Transfer` events naming it: one log query, then
/// a balance call each, not one per catalogue model), then rewards and royalties (their own
/// failures are shown in their place).
async fn earned(
    provider: &Provider,
    book: &AddressBook,
    ms: &[ModelView],
    account: Address,
) -> Result<Earned, String> {
    let err = |e: crate::wallet::WalletError| e.to_string();
    let from = book.deployed_at_block;
    let got = parse_log_emitters(
        &provider
            .request("eth_getLogs", &received_logs_params(account, from))
            .await
            .map_err(err)?,
    )
    .map_err(err)?;
    let mut tokens: Vec<(String, Option<String>, Address)> = Vec::new();
    if let Some(ocean) = book.ocean {
        tokens.push(("OCEAN".into(), None, ocean));
    }
    for m in ms {
        if let Ok(dt) = m.card.datatoken.parse::<Address>()
            && got.contains(&dt)
        {
            tokens.push((label_of(Some(m), String::new()), Some(m.card.nft.clone()), dt));
        }
    }
    let mut balances = Vec::new();
    for (label, model, token) in tokens {
        let balance = match provider.request("eth_call", &balance_call(token, account)).await {
            Ok(v) => parse_balance(&v).map_err(err),
            Err(e) => Err(e.to_string()),
        };
        balances.push(Row { label, model, token, balance });
    }
    let rewards = async {
        let params = reward_logs_params(book.lineage, account, from);
        let logs = parse_reward_logs(&provider.request("eth_getLogs", &params).await.map_err(err)?)
            .map_err(err)?;
        Ok(logs
            .into_iter()
            .map(|r| {
                let dt = r.datatoken.to_checksum(None);
                let m = ms.iter().find(|m| m.card.datatoken.eq_ignore_ascii_case(&dt));
                RewardRow {
                    label: label_of(m, dt),
                    model: m.map(|m| m.card.nft.clone()),
                    share: m
                        .map_or_else(|| "unknown model".into(), |m| reward_share(ms, m, &account)),
                    job: r.job_id.to_string(),
                    amount: r.amount,
                }
            })
            .collect())
    }
    .await;
    let royalties = royalties(provider, royalty_logs_params(account, from), book.lineage, ms).await;
    Ok(Earned { balances, rewards, royalties })
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

/// The royalty events naming the account, kept only where their vault is the one the
/// lineage contract made for that model (one `royaltyVaultOf` call per model paid by).
async fn royalties(
    provider: &Provider,
    params: String,
    lineage: Address,
    ms: &[ModelView],
) -> Result<Vec<RoyaltyRow>, String> {
    let logs = parse_royalty_logs(
        &provider.request("eth_getLogs", &params).await.map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut vaults: Vec<(Address, Address)> = Vec::new();
    let mut out = Vec::new();
    for l in logs {
        let vault = match vaults.iter().find(|(c, _)| *c == l.child) {
            Some((_, v)) => *v,
            None => {
                let v = provider
                    .request("eth_call", &royalty_vault_call(lineage, l.child))
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
            label: label_of(m, child.clone()),
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
