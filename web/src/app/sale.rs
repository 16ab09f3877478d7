//! "Put on sale" on a derived model's page, shown to its trainer only (the connected wallet):
//! a price and an amount, then the transactions of [`crate::sale`], each described in words
//! before the wallet asks, then the API reads the sale back from the chain. A form drawn by
//! the model page with its own state (not a component of its own: the storefront's module
//! size is budgeted, and each component type costs kilobytes).

use alloy::primitives::Address;
use posthuman_types::ModelCard;
use yew::prelude::*;

use super::Load;
use super::order::{ask, field, mined};
use super::wallet::WalletHandle;
use crate::net::{self, answer};
use crate::sale::sale_txs;
use crate::wire::ChainInfo;

/// The form as typed, and its status line (an error or not).
#[derive(Clone, Debug, PartialEq)]
pub struct SaleForm {
    pub price: String,
    pub amount: String,
    pub status: String,
    pub error: bool,
}

impl Default for SaleForm {
    fn default() -> Self {
        SaleForm { price: String::new(), amount: "1".into(), status: String::new(), error: false }
    }
}

/// The form, if the connected wallet trained this derived model.
pub fn sale_form(
    form: &UseStateHandle<SaleForm>,
    wallet: Option<&WalletHandle>,
    chain: &Load<ChainInfo>,
    card: &ModelCard,
) -> Html {
    let connected = wallet.and_then(|w| w.connected());
    let trainer = card.trainer.as_deref().and_then(|t| t.parse::<Address>().ok());
    if card.parent.is_none() || trainer.is_none() || connected.as_ref().map(|c| c.0) != trainer {
        return html! {};
    }
    let set = |f: fn(&mut SaleForm, String)| {
        let form = form.clone();
        Callback::from(move |v: String| {
            let mut x = (*form).clone();
            f(&mut x, v);
            form.set(x);
        })
    };
    let onsubmit = {
        let (form, chain) = (form.clone(), chain.clone());
        let have = wallet.and_then(|w| w.chain_id);
        let (nft, dt) = (card.nft.clone(), card.datatoken.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let typed = (*form).clone();
            let say = {
                let (form, typed) = (form.clone(), typed.clone());
                move |status: String, error: bool| {
                    form.set(SaleForm { status, error, ..typed.clone() })
                }
            };
            let (Load::Ready(chain), Some((me, provider))) = (&chain, connected.clone()) else {
                return say("The deployment's chain is not known yet.".into(), true);
            };
            if have != Some(chain.address_book.chain_id) {
                return say("Wrong network: switch your wallet first.".into(), true);
            }
            let addr = |s: &str| s.parse::<Address>().unwrap_or_default();
            let txs = match sale_txs(
                &chain.address_book,
                addr(&nft),
                addr(&dt),
                &typed.price,
                &typed.amount,
            ) {
                Ok(t) => t,
                Err(m) => return say(m, true),
            };
            let path = format!("/api/models/{nft}/sale");
            wasm_bindgen_futures::spawn_local(async move {
                let n = txs.len();
                let run = async {
                    for (i, tx) in txs.iter().enumerate() {
                        say(
                            format!("Step {} of {n}: {}. Confirm in your wallet…", i + 1, tx.words),
                            false,
                        );
                        mined(
                            &provider,
                            &ask(&provider, "eth_sendTransaction", &tx.params(me)).await?,
                        )
                        .await?;
                    }
                    // The card the API answers is the page's after a reload: only its status
                    // matters here.
                    let (st, text) = net::request("POST", &path, None, &[], false).await?;
                    answer::<serde::de::IgnoredAny>(&path, st, &text)
                };
                match run.await {
                    Ok(_) => say("On sale: reload to see the price on the card.".into(), false),
                    Err(e) => say(format!("Not put on sale: {e}"), true),
                }
            });
        })
    };
    html! {
        <form id="sale" {onsubmit}>
            <h2>{ "Put on sale" }</h2>
            <p>{ "You trained this model: sell datatokens you hold on Ocean's exchange, where any Ocean client can buy them; the OCEAN goes to you." }</p>
            { field("sale-price", "Price in OCEAN per datatoken", &form.price, set(|f, v| f.price = v), "e.g. 2.5".into(), "decimal") }
            { field("sale-amount", "Datatokens to sell", &form.amount, set(|f, v| f.amount = v), "0: only change the price".into(), "decimal") }
            <button type="submit" id="sale-open">{ "Put on sale" }</button>
            <p id="sale-status" role="status" aria-live="polite" class={if form.error { "error" } else { "" }}>{ form.status.clone() }</p>
        </form>
    }
}
