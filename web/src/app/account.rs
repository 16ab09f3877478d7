//! `/account`: the connected wallet's balances (OCEAN and the datatoken of every model in the
//! catalogue, read with `eth_call` `balanceOf` through the wallet's own provider), the rewards
//! its trainings earned (the lineage contract's `RewardPaid` events naming it, read with
//! `eth_getLogs` through the wallet) and its jobs. The address is the wallet's, never typed.

use alloy::primitives::{Address, U256};
use yew::prelude::*;

use super::jobs::JobList;
use super::wallet::WalletHandle;
use super::{Link, Load, show, use_json};
use crate::eip1193::Provider;
use crate::format::tokens;
use crate::route::Route;
use crate::wallet::{
    balance_call, network_name, parse_balance, parse_reward_logs, reward_logs_params, short_address,
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
            <Rewards {account} {provider} {chain} {models} />
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
    let rows = use_state(|| Load::<Vec<(String, Option<String>, String, U256)>>::Loading);
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
                    let (provider, ms) = (provider.clone(), ms.clone());
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
                                    (
                                        label,
                                        m.map(|m| m.card.nft.clone()),
                                        r.job_id.to_string(),
                                        r.amount,
                                    )
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
                <thead><tr><th>{ "derived model" }</th><th>{ "derivation (job)" }</th><th>{ "datatokens" }</th></tr></thead>
                <tbody>
                { for rs.iter().map(|(label, nft, job, amount)| html! {
                    <tr class="reward" data-amount={amount.to_string()}>
                        <td>{ match nft {
                            Some(nft) => html! { <Link to={Route::Model(nft.clone())}>{ label.clone() }</Link> },
                            None => html! { label.clone() },
                        } }</td>
                        <td><code title={job.clone()}>{ format!("{}…", &job[..10]) }</code></td>
                        <td>{ tokens(&amount.to_string()) }</td>
                    </tr>
                }) }
                </tbody>
            </table>
        }
    })
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
                    for m in ms {
                        if let Ok(dt) = m.card.datatoken.parse::<Address>() {
                            let label = format!("{} ({})", m.card.symbol, m.card.name);
                            tokens.push((label, Some(m.card.nft.clone()), dt));
                        }
                    }
                }
                (Load::Failed(e), _) | (_, Load::Failed(e)) => rows.set(Load::Failed(e.clone())),
                _ => {}
            }
            if !tokens.is_empty() {
                rows.set(Load::Loading);
                let (account, provider) = (*account, provider.clone());
                wasm_bindgen_futures::spawn_local(async move {
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
