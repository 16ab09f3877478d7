//! "Lineage royalties" on a derived model's page: the OCEAN its orders paid into its vault,
//! waiting for a payout, and **Pay out royalties** — the vault's `distribute()` sent by the
//! connected wallet (anyone may), described in words before the wallet asks; then who
//! received how much, for which ancestor, read from the receipt's `RoyaltyPaid` events. Read
//! through the wallet, as the resale offers are; a hook of the model page (a component type
//! costs the budgeted module kilobytes).

use std::collections::BTreeMap;

use alloy::primitives::{Address, U256};
use yew::prelude::*;

use super::order::{ask, mined};
use super::wallet::WalletHandle;
use super::{Link, Load, use_json};
use crate::eip1193::Provider;
use crate::format::tokens;
use crate::route::Route;
use crate::royalty::{distribute_tx, parse_payouts, pending, seed_call};
use crate::wallet::{
    RoyaltyLog, balance_call, parse_balance, parse_royalty_vault, royalty_vault_call, short_address,
};
use crate::wire::{AddressBook, ChainInfo};

/// The vault and the OCEAN waiting in it.
async fn read(p: &Provider, book: &AddressBook, nft: Address) -> Result<(Address, U256), String> {
    let ocean = book.ocean.ok_or("the deployment names no OCEAN token")?;
    let call = |params: String| async move { ask(p, "eth_call", &params).await };
    let vault = parse_royalty_vault(&call(royalty_vault_call(book.lineage, nft)).await?)
        .map_err(|e| e.to_string())?;
    if vault.is_zero() {
        return Err("the lineage contract names no royalty vault for this model".into());
    }
    let held = parse_balance(&call(balance_call(ocean, vault)).await?);
    let seed = parse_balance(&call(seed_call(vault)).await?);
    Ok((vault, pending(held.map_err(|e| e.to_string())?, seed.map_err(|e| e.to_string())?)))
}

/// The status line and the payout it reports.
#[derive(Clone, Default, PartialEq)]
struct Status {
    text: String,
    error: bool,
    paid: Vec<RoyaltyLog>,
}

/// The section, for a derived model (`nft`; `None` for a root: its orders pay no royalty).
/// `names`: model names by lowercase NFT, for the ancestors paid.
#[hook]
pub fn use_royalties(nft: Option<String>, names: BTreeMap<String, String>) -> Html {
    let wallet = use_context::<WalletHandle>();
    let chain = use_json::<ChainInfo>("/api/chain".into());
    let vault = use_state(|| Load::<(Address, U256)>::Loading);
    let status = use_state(Status::default);
    let tick = use_state(|| 0u32);
    let connected = wallet.as_ref().and_then(|w| w.connected());
    let on = wallet.as_ref().and_then(|w| w.chain_id);
    let nft = nft.and_then(|n| n.parse::<Address>().ok());
    let book = match &chain {
        Load::Ready(c) if on == Some(c.address_book.chain_id) => Some(c.address_book.clone()),
        _ => None,
    };
    {
        let vault = vault.clone();
        let deps = (book.clone(), connected.clone(), *tick, nft);
        use_effect_with(deps, move |(book, connected, _, nft)| {
            let live = std::rc::Rc::new(std::cell::Cell::new(true));
            let flag = live.clone();
            if let (Some(b), Some((_, p)), Some(nft)) = (book.clone(), connected.clone(), *nft) {
                wasm_bindgen_futures::spawn_local(async move {
                    let got = read(&p, &b, nft).await;
                    if flag.get() {
                        vault.set(match got {
                            Ok(v) => Load::Ready(v),
                            Err(e) => Load::Failed(format!("could not read the vault: {e}")),
                        });
                    }
                });
            }
            move || live.set(false)
        });
    }
    if nft.is_none() {
        return html! {};
    }
    let title = html! { <h2 id="royalty-title">{ "Lineage royalties" }</h2> };
    let (Some(_), Some((me, provider))) = (book, connected) else {
        return html! { <section id="royalty" aria-labelledby="royalty-title">{ title }
            <p>{ "Every order of this model pays its lineage royalty into the model's own vault, for its ancestors. Connect your wallet on this storefront's network to see what is waiting and pay it out." }</p>
        </section> };
    };
    let body = match &*vault {
        Load::Loading => html! { <p class="loading">{ "Reading the vault…" }</p> },
        Load::Failed(e) => html! { <p class="error">{ e.clone() }</p> },
        Load::Ready((v, waiting)) => {
            let (v, waiting) = (*v, *waiting);
            let onclick = {
                let (status, tick, provider) = (status.clone(), tick.clone(), provider.clone());
                Callback::from(move |_: MouseEvent| {
                    let tx = distribute_tx(v, waiting);
                    let say = {
                        let status = status.clone();
                        move |text: String, error: bool, paid: Vec<RoyaltyLog>| {
                            status.set(Status { text, error, paid })
                        }
                    };
                    say(
                        format!("Step 1 of 1: {}. Confirm in your wallet…", tx.words),
                        false,
                        vec![],
                    );
                    let (provider, tick) = (provider.clone(), tick.clone());
                    wasm_bindgen_futures::spawn_local(async move {
                        let run = async {
                            let hash =
                                ask(&provider, "eth_sendTransaction", &tx.params(me)).await?;
                            mined(&provider, &hash).await?;
                            let r =
                                ask(&provider, "eth_getTransactionReceipt", &format!("[{hash}]"))
                                    .await?;
                            parse_payouts(&r, v).map_err(|e| e.to_string())
                        };
                        match run.await {
                            Ok(paid) if paid.is_empty() => {
                                say("Paid out: nothing was waiting.".into(), false, paid)
                            }
                            Ok(paid) => {
                                let sum = paid.iter().fold(U256::ZERO, |a, p| a + p.amount);
                                let text = format!(
                                    "Paid out {} OCEAN to {} ancestor(s), below.",
                                    tokens(&sum.to_string()),
                                    paid.len()
                                );
                                say(text, false, paid)
                            }
                            Err(e) => say(format!("Not paid out: {e}"), true, vec![]),
                        }
                        tick.set(*tick + 1);
                    });
                })
            };
            html! { <>
                <p id="royalty-pending" data-amount={waiting.to_string()}>
                    { format!("{} OCEAN waiting in this model's vault ", tokens(&waiting.to_string())) }
                    <code>{ format!("{v:#x}") }</code>
                    { ", paid by its orders for its ancestors: the trainers above it by the root's shares, the remainder to the root's owner." }
                </p>
                if !waiting.is_zero() {
                    <p id="royalty-plan">{ "Paying out sends one transaction from your wallet, the vault's distribute(): anyone may send it; you pay only its gas, the OCEAN goes to the ancestors." }</p>
                    <button id="royalty-pay" {onclick}>{ "Pay out royalties" }</button>
                }
            </> }
        }
    };
    let name =
        |a: &Address| names.get(&format!("{a:#x}")).cloned().unwrap_or_else(|| short_address(a));
    html! {
        <section id="royalty" aria-labelledby="royalty-title">
            { title }
            { body }
            <p id="royalty-status" role="status" aria-live="polite" class={if status.error { "error" } else { "" }}>{ status.text.clone() }</p>
            if !status.paid.is_empty() {
                <table id="royalty-paid">
                    <thead><tr><th scope="col">{ "paid to" }</th><th scope="col">{ "as the trainer of" }</th><th scope="col">{ "OCEAN" }</th></tr></thead>
                    <tbody>{ for status.paid.iter().map(|p| html! {
                        <tr class="payout" data-beneficiary={format!("{:#x}", p.beneficiary)} data-ancestor={format!("{:#x}", p.ancestor)} data-amount={p.amount.to_string()}>
                            <td><code title={p.beneficiary.to_checksum(None)}>{ short_address(&p.beneficiary) }</code></td>
                            <td><Link to={Route::Model(format!("{:#x}", p.ancestor))}>{ name(&p.ancestor) }</Link></td>
                            <td>{ tokens(&p.amount.to_string()) }</td>
                        </tr>
                    }) }</tbody>
                </table>
            }
        </section>
    }
}
