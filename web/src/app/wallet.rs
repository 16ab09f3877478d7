//! The connected wallet: discovery (EIP-6963, else `window.ethereum`), connect, the network
//! check with switch / add, live `accountsChanged` / `chainChanged`, and the header control
//! that shows it. Pages read the connection from the [`WalletHandle`] context.

use std::rc::Rc;

use alloy::primitives::Address;
use yew::prelude::*;

use super::{Load, use_json};
use crate::eip1193::{self, Provider};
use crate::wallet::{
    WalletError, add_params, first_account, network_name, parse_quantity, short_address,
    switch_params,
};
use crate::wire::ChainInfo;

/// Where the wallet stands.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wallet {
    /// Every wallet found (EIP-6963 announcements, or the injected `window.ethereum`).
    pub providers: Vec<Provider>,
    /// The one chosen (index into `providers`).
    pub picked: usize,
    pub account: Option<Address>,
    pub chain_id: Option<u64>,
    /// What is happening or what went wrong, in words (shown in an `aria-live` region).
    pub status: Option<String>,
    pub error: bool,
}

impl Wallet {
    pub fn provider(&self) -> Option<&Provider> {
        self.providers.get(self.picked)
    }

    /// The connected account and its provider.
    pub fn connected(&self) -> Option<(Address, Provider)> {
        Some((self.account?, self.provider()?.clone()))
    }
}

/// What changes the wallet's state.
pub enum Action {
    Found(Provider),
    Pick(usize),
    Connected(Address, Option<u64>),
    Accounts(Option<Address>),
    Chain(Option<u64>),
    Status(String),
    Failed(String),
}

impl Reducible for Wallet {
    type Action = Action;
    fn reduce(self: Rc<Self>, a: Action) -> Rc<Self> {
        let mut w = (*self).clone();
        match a {
            Action::Found(p) => {
                // An EIP-6963 announcement supersedes the bare `window.ethereum` (often the
                // same wallet), and a wallet announcing twice is listed once.
                if !p.uuid.is_empty() {
                    w.providers.retain(|q| !q.uuid.is_empty() || w.account.is_some());
                }
                if !w.providers.iter().any(|q| *q == p || (!p.uuid.is_empty() && q.uuid == p.uuid))
                {
                    w.providers.push(p);
                }
                w.picked = w.picked.min(w.providers.len().saturating_sub(1));
            }
            Action::Pick(i) => {
                w.picked = i;
                w.account = None;
                w.chain_id = None;
            }
            Action::Connected(a, c) => {
                (w.account, w.chain_id, w.status, w.error) = (Some(a), c, None, false);
            }
            Action::Accounts(a) => {
                w.account = a;
                if a.is_none() {
                    (w.status, w.error) =
                        (Some("Your wallet disconnected this site.".into()), false);
                }
            }
            Action::Chain(c) => w.chain_id = c,
            Action::Status(s) => (w.status, w.error) = (Some(s), false),
            Action::Failed(s) => (w.status, w.error) = (Some(s), true),
        }
        Rc::new(w)
    }
}

/// The wallet, for every page.
pub type WalletHandle = UseReducerHandle<Wallet>;

/// Creates the wallet state and starts discovery (once).
#[hook]
pub fn use_wallet() -> WalletHandle {
    let w = use_reducer(Wallet::default);
    {
        let w = w.clone();
        use_effect_with((), move |_| {
            if let Some(p) = eip1193::injected() {
                w.dispatch(Action::Found(p));
            }
            let found = w.clone();
            eip1193::discover(move |p| found.dispatch(Action::Found(p)));
            || ()
        });
    }
    // A wallet that already authorised this site answers `eth_accounts` without a prompt:
    // reconnect silently after a reload, as wallet-aware sites do.
    {
        let w2 = w.clone();
        use_effect_with(w.provider().cloned(), move |p| {
            if let Some(p) = p.clone() {
                wasm_bindgen_futures::spawn_local(async move {
                    let Ok(accounts) = p.request("eth_accounts", "[]").await else { return };
                    if let Some(a) = first_account(&accounts) {
                        let chain = p.request("eth_chainId", "[]").await.ok();
                        w2.dispatch(Action::Connected(a, chain.as_ref().and_then(parse_quantity)));
                    }
                });
            }
            || ()
        });
    }
    // Follow the wallet live while connected.
    {
        let w2 = w.clone();
        let key = w.provider().cloned().filter(|_| w.account.is_some());
        use_effect_with(key, move |p| {
            let subs = p.as_ref().map(|p| {
                let a = w2.clone();
                let c = w2.clone();
                [
                    p.on("accountsChanged", move |v| {
                        a.dispatch(Action::Accounts(first_account(&v)))
                    }),
                    p.on("chainChanged", move |v| c.dispatch(Action::Chain(parse_quantity(&v)))),
                ]
            });
            move || drop(subs)
        });
    }
    w
}

async fn connect(p: &Provider) -> Result<(Address, Option<u64>), WalletError> {
    let accounts = p.request("eth_requestAccounts", "[]").await?;
    let account = first_account(&accounts)
        .ok_or_else(|| WalletError::Other("the wallet shared no account".into()))?;
    let chain = parse_quantity(&p.request("eth_chainId", "[]").await?);
    Ok((account, chain))
}

/// Asks the wallet to switch to the deployment's chain, adding it first if the wallet does
/// not know it (4902). Returns the chain the wallet is on afterwards.
async fn switch(p: &Provider, chain: &ChainInfo) -> Result<Option<u64>, String> {
    let id = chain.address_book.chain_id;
    match p.request("wallet_switchEthereumChain", &switch_params(id)).await {
        Ok(_) => {}
        Err(WalletError::UnknownChain) => {
            let Some(params) = add_params(id, chain.rpc_url.as_deref()) else {
                return Err(format!(
                    "Your wallet does not know {} and this deployment publishes no public RPC \
                     URL to add it with: add the network to your wallet by hand.",
                    network_name(id)
                ));
            };
            p.request("wallet_addEthereumChain", &params)
                .await
                .map_err(|e| format!("Could not add the network: {e}."))?;
            // Some wallets switch on add, others only add: ask again (a no-op if switched).
            p.request("wallet_switchEthereumChain", &switch_params(id))
                .await
                .map_err(|e| format!("Could not switch network: {e}."))?;
        }
        Err(e) => return Err(format!("Could not switch network: {e}.")),
    }
    Ok(parse_quantity(&p.request("eth_chainId", "[]").await.map_err(|e| e.to_string())?))
}

/// The header control: pick a wallet (when several), connect, the short address and the
/// network, and the offer to switch when it is the wrong one.
#[function_component]
pub fn WalletControl() -> Html {
    let Some(w) = use_context::<WalletHandle>() else { return html! {} };
    let chain = use_json::<ChainInfo>("/api/chain".into());
    let expected = match &chain {
        Load::Ready(c) => Some(c.clone()),
        _ => None,
    };
    let onconnect = {
        let w = w.clone();
        Callback::from(move |_: MouseEvent| {
            let Some(p) = w.provider().cloned() else {
                w.dispatch(Action::Failed(format!("{}.", WalletError::NoProvider)));
                return;
            };
            let w = w.clone();
            w.dispatch(Action::Status(format!("Asking {} to connect…", p.name)));
            wasm_bindgen_futures::spawn_local(async move {
                match connect(&p).await {
                    Ok((a, c)) => w.dispatch(Action::Connected(a, c)),
                    Err(e) => w.dispatch(Action::Failed(format!("Not connected: {e}."))),
                }
            });
        })
    };
    let onpick = {
        let w = w.clone();
        Callback::from(move |e: Event| {
            let v = e
                .target_dyn_into::<web_sys::HtmlSelectElement>()
                .and_then(|s| s.value().parse().ok())
                .unwrap_or(0);
            w.dispatch(Action::Pick(v));
        })
    };
    let wrong = match (&expected, w.chain_id, w.account) {
        (Some(c), Some(have), Some(_)) if c.address_book.chain_id != have => Some(c.clone()),
        _ => None,
    };
    let onswitch = {
        let (w, wrong) = (w.clone(), wrong.clone());
        Callback::from(move |_: MouseEvent| {
            let (Some(p), Some(c)) = (w.provider().cloned(), wrong.clone()) else { return };
            let w = w.clone();
            w.dispatch(Action::Status(format!(
                "Asking {} to switch to {}…",
                p.name,
                network_name(c.address_book.chain_id)
            )));
            wasm_bindgen_futures::spawn_local(async move {
                match switch(&p, &c).await {
                    Ok(id) => {
                        w.dispatch(Action::Chain(id));
                        w.dispatch(Action::Status(format!(
                            "Switched to {}.",
                            id.map(network_name).unwrap_or_default()
                        )));
                    }
                    Err(e) => w.dispatch(Action::Failed(e)),
                }
            });
        })
    };
    html! {
        <div id="wallet" data-account={w.account.map(|a| a.to_checksum(None))} data-chain={w.chain_id.map(|c| c.to_string())}>
            if w.providers.len() > 1 {
                <label>{ "Wallet " }
                    <select id="wallet-pick" onchange={onpick}>
                    { for w.providers.iter().enumerate().map(|(i, p)| html! {
                        <option value={i.to_string()} selected={i == w.picked}>{ p.name.clone() }</option>
                    }) }
                    </select>
                </label>
            }
            if let Some(a) = w.account {
                <span id="wallet-address" title={a.to_checksum(None)}>{ short_address(&a) }</span>
                <span id="wallet-network">{ w.chain_id.map(network_name).unwrap_or_else(|| "unknown network".into()) }</span>
            } else {
                <button type="button" id="connect" onclick={onconnect}>{ "Connect wallet" }</button>
            }
            if let Some(c) = &wrong {
                <span id="wrong-network" class="error">
                    { format!("Wrong network: this storefront's models are on {}.", network_name(c.address_book.chain_id)) }
                    <button type="button" id="switch-network" onclick={onswitch}>
                        { format!("Switch to {}", network_name(c.address_book.chain_id)) }
                    </button>
                </span>
            }
            <span id="wallet-status" role="status" aria-live="polite" class={if w.error { "error" } else { "" }}>
                { w.status.clone().unwrap_or_default() }
            </span>
        </div>
    }
}
