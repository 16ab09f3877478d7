//! "Put on sale" on a derived model's page, shown to its trainer only (the connected wallet):
//! a price and an amount, then the transactions of [`crate::sale`], each described in words
//! before the wallet asks, then the API reads the sale back from the chain.

use alloy::primitives::Address;
use yew::prelude::*;

use super::order::{ask, field, mined};
use super::wallet::WalletHandle;
use super::{Load, use_json};
use crate::format::tokens;
use crate::net::{self, answer};
use crate::sale::sale_txs;
use crate::wire::{ChainInfo, ModelView};

#[derive(Properties, PartialEq)]
pub struct SaleProps {
    pub nft: String,
    pub datatoken: String,
    pub trainer: String,
}

#[function_component]
pub fn SalePanel(p: &SaleProps) -> Html {
    let wallet = use_context::<WalletHandle>();
    let chain = use_json::<ChainInfo>("/api/chain".into());
    let price = use_state(String::new);
    let amount = use_state(|| "1".to_string());
    // The status line and whether it is an error.
    let status = use_state(|| (String::new(), false));
    let connected = wallet.as_ref().and_then(|w| w.connected());
    let trainer = p.trainer.parse::<Address>().ok();
    if connected.as_ref().map(|(a, _)| *a) != trainer || trainer.is_none() {
        return html! {};
    }
    let setter = |s: UseStateHandle<String>| Callback::from(move |v: String| s.set(v));
    let onsubmit = {
        let (price, amount, status, nft, dt) =
            (price.clone(), amount.clone(), status.clone(), p.nft.clone(), p.datatoken.clone());
        let have = wallet.as_ref().and_then(|w| w.chain_id);
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let (Load::Ready(chain), Some((me, provider))) = (chain.clone(), connected.clone())
            else {
                return status.set(("The deployment's chain is not known yet.".into(), true));
            };
            if have != Some(chain.address_book.chain_id) {
                return status.set(("Wrong network: switch your wallet first.".into(), true));
            }
            let (parse, nft_s) = (|s: &str| s.parse::<Address>().ok(), nft.clone());
            let (Some(nft), Some(dt)) = (parse(&nft), parse(&dt)) else { return };
            let txs = match sale_txs(&chain.address_book, nft, dt, &price, &amount) {
                Ok(t) => t,
                Err(m) => return status.set((m, true)),
            };
            let status = status.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let n = txs.len();
                let run = async {
                    for (i, tx) in txs.iter().enumerate() {
                        status.set((
                            format!("Step {} of {n}: {}. Confirm in your wallet…", i + 1, tx.words),
                            false,
                        ));
                        let sent = ask(&provider, "eth_sendTransaction", tx.params(me)).await?;
                        mined(&provider, &sent).await?;
                    }
                    let path = format!("/api/models/{nft_s}/sale");
                    let (st, text) = net::request("POST", &path, None, &[], false).await?;
                    answer::<ModelView>(&path, st, &text)
                };
                status.set(match run.await {
                    Ok(m) => match m.card.price {
                        Some(p) => (
                            format!(
                                "On sale at {} OCEAN per datatoken: reload to see it on the card.",
                                tokens(&p)
                            ),
                            false,
                        ),
                        None => ("The exchange reads as closed.".into(), true),
                    },
                    Err(e) => (format!("Not put on sale: {e}"), true),
                });
            });
        })
    };
    html! {
        <form id="sale" {onsubmit}>
            <h2>{ "Put on sale" }</h2>
            <p>{ "You trained this model: sell datatokens you hold on Ocean's exchange, where any Ocean client can buy them; the OCEAN goes to you." }</p>
            { field("sale-price", "Price in OCEAN per datatoken", &price, setter(price.clone()), "e.g. 2.5".into(), "decimal") }
            { field("sale-amount", "Datatokens to sell", &amount, setter(amount.clone()), "0: only change the price".into(), "decimal") }
            <button type="submit" id="sale-open">{ "Put on sale" }</button>
            <p id="sale-status" role="status" aria-live="polite" class={if status.1 { "error" } else { "" }}>{ status.0.clone() }</p>
        </form>
    }
}
