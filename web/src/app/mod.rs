//! Yew components. They fetch, then render what the plain modules compute; no check,
//! amount or route logic lives here.
//!
//! - [`App`]: the shell, client-side navigation ([`Navigator`], [`Link`]).
//! - [`wallet`]: the user's wallet (connect, network, live changes) and its header control.
//! - [`catalogue`], [`model`], [`account`], [`jobs`], [`receipt`]: one page each.
//! - [`chart`]: the loss curve and perplexity bars as inline SVG.
//! - [`order`]: the model page's order panel (quote, wallet transactions, signed submit,
//!   live progress, signed result read).
//! - [`sale`]: a derived model's page, to its trainer: put its datatokens on sale.
//! - [`royalty`]: a derived model's page: the OCEAN waiting in its royalty vault, paid out.
//! - [`card_edit`]: a model's page, to its owner of record: edit the description and tags.
//! - [`upload`]: a direct upload from the page (hash, signed declaration, PUTs with
//!   progress), for publishing and for a job's dataset.

pub mod account;
pub mod card_edit;
pub mod catalogue;
pub mod chart;
pub mod jobs;
pub mod model;
pub mod order;
pub mod publish;
pub mod receipt;
pub mod resale;
pub mod royalty;
pub mod sale;
pub mod upload;
pub mod wallet;

use serde::de::DeserializeOwned;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use yew::prelude::*;

use crate::net::get_json;
use crate::route::Route;

/// Something being fetched.
#[derive(Clone, Debug, PartialEq)]
pub enum Load<T> {
    Loading,
    Ready(T),
    Failed(String),
}

/// Fetches `path` (JSON) whenever it changes.
#[hook]
pub fn use_json<T>(path: String) -> Load<T>
where
    T: DeserializeOwned + Clone + PartialEq + 'static,
{
    let state = use_state(|| Load::Loading);
    {
        let state = state.clone();
        use_effect_with(path, move |path| {
            let path = path.clone();
            state.set(Load::Loading);
            wasm_bindgen_futures::spawn_local(async move {
                state.set(match get_json::<T>(&path).await {
                    Ok(v) => Load::Ready(v),
                    Err(e) => Load::Failed(e),
                });
            });
            || ()
        });
    }
    (*state).clone()
}

/// Renders a [`Load`]: a spinner line, the error, or `ready(value)`.
/// Catalogue pages read when a page needs every model (200 models each).
const MAX_MODEL_PAGES: usize = 50;

/// Every model of the catalogue, not only its first page (the account's balances and
/// rewards name every model's datatoken).
#[hook]
pub fn use_all_models() -> Load<Vec<crate::wire::ModelView>> {
    let models = use_state(|| Load::<Vec<crate::wire::ModelView>>::Loading);
    {
        let models = models.clone();
        use_effect_with((), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                let all =
                    crate::net::get_all::<crate::wire::ModelView>("/api/models", MAX_MODEL_PAGES);
                models.set(match all.await {
                    Ok(ms) => Load::Ready(ms),
                    Err(e) => Load::Failed(e),
                });
            });
            || ()
        });
    }
    (*models).clone()
}

pub fn show<T>(l: &Load<T>, ready: impl FnOnce(&T) -> Html) -> Html {
    match l {
        Load::Loading => html! { <p class="loading">{ "Loading…" }</p> },
        Load::Failed(e) => html! { <p class="error">{ e.clone() }</p> },
        Load::Ready(v) => ready(v),
    }
}

/// Sets `document.title` (pages that learn a better name, such as a model's, set it again).
pub fn set_title(title: &str) {
    if let Some(d) = web_sys::window().and_then(|w| w.document()) {
        d.set_title(title);
    }
}

fn current_route() -> Route {
    let loc = web_sys::window().map(|w| w.location());
    let path = loc.as_ref().and_then(|l| l.pathname().ok()).unwrap_or_else(|| "/".into());
    let query = loc.as_ref().and_then(|l| l.search().ok()).unwrap_or_default();
    Route::parse(&path, query.trim_start_matches('?'))
}

/// Client-side navigation: pushes the route's path and shows its page.
///
/// The storefront's own router rather than `yew-router` (issue 14 prefers it where it fits):
/// on 2026-12-07 `yew-router` 0.18 (the release for yew 0.21) adopted for the shell — a
/// `Routable` enum of these routes, `BrowserRouter` and `Switch`, `use_navigator` in [`Link`]
/// and for the pages that navigate — took the gzipped module from 393,020 to 423,643 bytes
/// (+30,623: route-recognizer, its query (de)serializer, gloo-history's state handling),
/// 23,643 over the 400,000 budget. This router is [`Route::parse`] / [`Route::to_path`],
/// `pushState` and `popstate`, unit-tested natively.
#[derive(Clone, PartialEq)]
pub struct Navigator(Callback<Route>);

impl Navigator {
    pub fn go(&self, to: Route) {
        self.0.emit(to);
    }
}

#[derive(Properties, PartialEq)]
pub struct LinkProps {
    pub to: Route,
    #[prop_or_default]
    pub children: Html,
    /// The link to the page being shown (`aria-current="page"`).
    #[prop_or_default]
    pub current: bool,
}

/// An `<a>` with a real `href` (open in a new tab works) that navigates in place on click.
#[function_component]
pub fn Link(p: &LinkProps) -> Html {
    let nav = use_context::<Navigator>();
    let to = p.to.clone();
    let onclick = Callback::from(move |e: MouseEvent| {
        if let Some(nav) = nav.as_ref().filter(|_| !(e.ctrl_key() || e.meta_key() || e.shift_key()))
        {
            e.prevent_default();
            nav.go(to.clone());
        }
    });
    let current = p.current.then_some("page");
    html! { <a href={p.to.to_path()} {onclick} aria-current={current}>{ p.children.clone() }</a> }
}

/// The app: header, the current page, navigation by `history.pushState` and back/forward.
#[function_component]
pub fn App() -> Html {
    let route = use_state(current_route);
    let wallet = wallet::use_wallet();
    let nav = {
        let route = route.clone();
        Navigator(Callback::from(move |to: Route| {
            if let Some(h) = web_sys::window().and_then(|w| w.history().ok()) {
                let _ =
                    h.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&to.to_path()));
            }
            if let Some(w) = web_sys::window() {
                w.scroll_to_with_x_and_y(0.0, 0.0);
            }
            route.set(to);
        }))
    };
    {
        let route = route.clone();
        use_effect_with((), move |_| {
            let cb = Closure::<dyn Fn()>::new(move || route.set(current_route()));
            let w = web_sys::window();
            if let Some(w) = &w {
                let _ = w.add_event_listener_with_callback("popstate", cb.as_ref().unchecked_ref());
            }
            move || {
                if let Some(w) = &w {
                    let _ = w.remove_event_listener_with_callback(
                        "popstate",
                        cb.as_ref().unchecked_ref(),
                    );
                }
                drop(cb);
            }
        });
    }
    use_effect_with((*route).clone(), |r| set_title(&r.title()));
    let page = match (*route).clone() {
        Route::Catalogue => html! { <catalogue::Catalogue /> },
        Route::Account => html! { <account::AccountPage /> },
        Route::Publish => html! { <publish::PublishPage /> },
        Route::Model(nft) => html! { <model::ModelPage {nft} /> },
        Route::Jobs(consumer) => html! { <jobs::JobsPage {consumer} /> },
        Route::Job(id) => html! { <jobs::JobPage {id} /> },
        Route::Receipt(id) => html! { <receipt::ReceiptPage {id} /> },
        Route::NotFound(p) => html! {
            <section><h1>{ "Not found" }</h1><p>{ format!("No page at {p}.") }</p></section>
        },
    };
    html! {
        <ContextProvider<Navigator> context={nav}>
        <ContextProvider<wallet::WalletHandle> context={wallet}>
            <header>
                <Link to={Route::Catalogue}><strong>{ "Posthuman" }</strong></Link>
                <nav>
                    <Link to={Route::Catalogue}>{ "Models" }</Link>
                    <Link to={Route::Account}>{ "My account" }</Link>
                    <Link to={Route::Jobs(None)}>{ "Jobs" }</Link>
                    <Link to={Route::Publish}>{ "Publish" }</Link>
                </nav>
                <wallet::WalletControl />
            </header>
            <main>{ page }</main>
            <footer>
                { "Private models, paid on chain; every job leaves a receipt you can verify here, in your browser." }
            </footer>
        </ContextProvider<wallet::WalletHandle>>
        </ContextProvider<Navigator>>
    }
}
