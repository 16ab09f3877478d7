//! "Resale by holders" on a model's page: the live offers of its datatoken on the peer
//! market (read through the wallet: its `OfferCreated` events, then each offer's state),
//! buying from one, offering one's own tokens and withdrawing one's own offer — the
//! transactions of [`crate::market`], each said in words before the wallet asks. This is how
//! a trainer's reward tokens (Bob's M2) reach a buyer (Charlie) without the operator.

use alloy::primitives::{Address, U256};
use yew::prelude::*;

use super::order::{ask, field, mined};
use super::wallet::WalletHandle;
use super::{Load, use_json};
use crate::eip1193::Provider;
use crate::format::tokens;
use crate::market::{
    Listing, buy_txs, cancel_tx, cost, offer_call, offer_txs, offers_logs_params, parse_offer,
    parse_offer_ids,
};
use crate::order::Tx;
use crate::wallet::{balance_call, parse_balance, short_address};
use crate::wire::ChainInfo;

/// What is typed, and the status line.
#[derive(Clone, Default, PartialEq)]
struct Form {
    price: String,
    amount: String,
    buy: String,
    status: String,
    error: bool,
}

/// The live offers of `token`, oldest first.
async fn offers(
    p: &Provider,
    market: Address,
    token: Address,
    from: u64,
) -> Result<Vec<Listing>, String> {
    let ids =
        parse_offer_ids(&ask(p, "eth_getLogs", &offers_logs_params(market, token, from)).await?)?;
    let mut out = Vec::new();
    for id in ids {
        out.extend(parse_offer(id, &ask(p, "eth_call", &offer_call(market, id)).await?)?);
    }
    Ok(out)
}

/// Sends `txs` in order, each said first; stops at the first refusal.
async fn send(
    p: &Provider,
    me: Address,
    txs: &[Tx],
    say: &dyn Fn(String, bool),
) -> Result<(), String> {
    let n = txs.len();
    for (i, tx) in txs.iter().enumerate() {
        say(format!("Step {} of {n}: {}. Confirm in your wallet…", i + 1, tx.words), false);
        mined(p, &ask(p, "eth_sendTransaction", &tx.params(me)).await?)
            .await
            .map_err(|e| format!("step {} of {n}: {e}", i + 1))?;
    }
    Ok(())
}

/// What an action sends, and what the wallet must hold first (token, amount, its name).
type Need = Option<(Address, u128, &'static str)>;
/// An action's plan from the form as typed: its transactions and what they need, or why not.
type Plan = std::rc::Rc<dyn Fn(Form) -> Result<(Vec<Tx>, Need), String>>;

/// Checks `me` holds `need` of `token` before anything is sent.
async fn holds(
    p: &Provider,
    token: Address,
    me: Address,
    need: u128,
    what: &str,
) -> Result<(), String> {
    let have = parse_balance(&ask(p, "eth_call", &balance_call(token, me)).await?)
        .map_err(|e| e.to_string())?;
    if have < U256::from(need) {
        return Err(format!(
            "Insufficient balance: this needs {} {what} and your wallet holds {}.",
            tokens(&need.to_string()),
            tokens(&have.to_string())
        ));
    }
    Ok(())
}

/// The section for the model page, which calls it on every render (a hook: the offers are
/// state of the page, not a component of their own, as the storefront's module size is
/// budgeted); `token`: the shown model's datatoken and symbol, once loaded.
#[hook]
pub fn use_resale(token: Option<(String, String)>) -> Html {
    let wallet = use_context::<WalletHandle>();
    let chain = use_json::<ChainInfo>("/api/chain".into());
    let form = use_state(|| Form { buy: "1".into(), ..Form::default() });
    let list = use_state(|| Load::<Vec<Listing>>::Loading);
    let tick = use_state(|| 0u32);
    let connected = wallet.as_ref().and_then(|w| w.connected());
    let on = wallet.as_ref().and_then(|w| w.chain_id);
    let (token, symbol) = token.unwrap_or_default();
    let token = token.parse::<Address>().unwrap_or_default();
    let book = match &chain {
        Load::Ready(c)
            if c.address_book.market.is_some() && on == Some(c.address_book.chain_id) =>
        {
            Some(c.address_book.clone())
        }
        _ => None,
    };
    {
        let list = list.clone();
        let deps = (book.clone(), connected.clone(), *tick, token);
        use_effect_with(deps, move |(book, connected, _, token)| {
            let live = std::rc::Rc::new(std::cell::Cell::new(true));
            let flag = live.clone();
            let token = *token;
            if let (Some(b), Some((_, provider)), false) =
                (book.clone(), connected.clone(), token.is_zero())
            {
                let market = b.market.unwrap_or_default();
                wasm_bindgen_futures::spawn_local(async move {
                    let got = offers(&provider, market, token, b.deployed_at_block).await;
                    if flag.get() {
                        list.set(match got {
                            Ok(l) => Load::Ready(l),
                            Err(e) => Load::Failed(format!("could not read the offers: {e}")),
                        });
                    }
                });
            }
            move || live.set(false)
        });
    }
    let (Some(book), Some((me, provider))) = (book, connected) else {
        return html! {
            <section id="resale"><h2>{ "Resale by holders" }</h2>
                <p>{ "Holders of this model's datatokens resell them on the peer market. Connect your wallet on this storefront's network to see the offers, buy or offer yours." }</p>
            </section>
        };
    };
    let market = book.market.unwrap_or_default();
    let set = |f: fn(&mut Form, String)| {
        let form = form.clone();
        Callback::from(move |v: String| {
            let mut x = (*form).clone();
            f(&mut x, v);
            form.set(x);
        })
    };
    // Runs an action: its checks, then its transactions, then the list is read again.
    let act = {
        let (form, tick, provider) = (form.clone(), tick.clone(), provider.clone());
        move |plan: Plan, done: &'static str| {
            let (form, tick, provider, plan) =
                (form.clone(), tick.clone(), provider.clone(), plan.clone());
            Callback::from(move |e: MouseEvent| {
                e.prevent_default();
                let typed = (*form).clone();
                let say = {
                    let (form, typed) = (form.clone(), typed.clone());
                    move |status: String, error: bool| {
                        form.set(Form { status, error, ..typed.clone() })
                    }
                };
                let (txs, need) = match plan(typed.clone()) {
                    Ok(x) => x,
                    Err(m) => return say(format!("{m} Nothing was sent."), true),
                };
                say("Checking your balance…".into(), false);
                let (provider, tick) = (provider.clone(), tick.clone());
                wasm_bindgen_futures::spawn_local(async move {
                    let run = async {
                        if let Some((t, n, what)) = need {
                            holds(&provider, t, me, n, what).await?;
                        }
                        send(&provider, me, &txs, &say).await
                    };
                    match run.await {
                        Ok(()) => say(done.into(), false),
                        Err(e) => say(format!("Stopped: {e}"), true),
                    }
                    tick.set(*tick + 1);
                });
            })
        }
    };
    let offer = act(
        std::rc::Rc::new(move |f: Form| {
            let txs = offer_txs(market, token, &f.price, &f.amount)?;
            let n = crate::publish::parse_units("amount", &f.amount).map_err(|e| e.to_string())?;
            Ok((txs, Some((token, n, "datatokens"))))
        }),
        "Offered: buyers see it below.",
    );
    let ocean = book.ocean.unwrap_or_default();
    let row = |l: &Listing| {
        let action = if l.seller == me {
            let id = l.id;
            let withdraw = act(
                std::rc::Rc::new(move |_| Ok((vec![cancel_tx(market, id)], None))),
                "Withdrawn.",
            );
            html! { <button class="withdraw" onclick={withdraw}>{ "Withdraw" }</button> }
        } else {
            let l2 = l.clone();
            let buy = act(
                std::rc::Rc::new(move |f: Form| {
                    let n = crate::publish::parse_units("amount to buy", &f.buy)
                        .map_err(|e| e.to_string())?;
                    let c = cost(n, l2.price).filter(|_| n > 0 && n <= l2.remaining).ok_or_else(
                        || {
                            format!(
                                "Buy between 0 and {} datatokens from this offer.",
                                tokens(&l2.remaining.to_string())
                            )
                        },
                    )?;
                    Ok((buy_txs(market, ocean, &l2, n, c), Some((ocean, c, "OCEAN"))))
                }),
                "Bought: the datatokens are in your wallet.",
            );
            html! { <button class="buy" onclick={buy}>{ "Buy" }</button> }
        };
        html! {
            <tr class="offer" data-offer={l.id.to_string()} data-seller={l.seller.to_checksum(None)} data-remaining={l.remaining.to_string()}>
                <td><code title={l.seller.to_checksum(None)}>{ short_address(&l.seller) }</code></td>
                <td>{ format!("{} OCEAN", tokens(&l.price.to_string())) }</td>
                <td>{ tokens(&l.remaining.to_string()) }</td>
                <td>{ action }</td>
            </tr>
        }
    };
    html! {
        <section id="resale">
            <h2>{ "Resale by holders" }</h2>
            <p>{ format!("Holders of {symbol} sell them here, on the peer market: paid in OCEAN straight to the seller, no operator in between.") }</p>
            { match &*list {
                Load::Ready(ls) if ls.is_empty() => html! { <p id="no-offers">{ "No offers now." }</p> },
                Load::Ready(ls) => html! {
                    <table id="offers" aria-live="polite">
                        <thead><tr><th scope="col">{ "seller" }</th><th scope="col">{ "price per datatoken" }</th><th scope="col">{ "datatokens left" }</th><th scope="col"></th></tr></thead>
                        <tbody>{ for ls.iter().map(row) }</tbody>
                    </table>
                },
                Load::Failed(e) => html! { <p class="error">{ e.clone() }</p> },
                Load::Loading => html! { <p class="loading">{ "Reading the offers…" }</p> },
            } }
            { field("resale-buy", "Datatokens to buy", &form.buy, set(|f, v| f.buy = v), "from the offer you pick".into(), "decimal") }
            <h3>{ "Offer yours" }</h3>
            { field("resale-price", "Price in OCEAN per datatoken", &form.price, set(|f, v| f.price = v), "e.g. 1.5".into(), "decimal") }
            { field("resale-amount", "Datatokens to offer", &form.amount, set(|f, v| f.amount = v), "you keep them until someone buys".into(), "decimal") }
            <button id="resale-offer" onclick={offer}>{ "Offer for resale" }</button>
            <p id="resale-status" role="status" aria-live="polite" class={if form.error { "error" } else { "" }}>{ form.status.clone() }</p>
        </section>
    }
}
