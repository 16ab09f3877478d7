//! A model: its card, the lineage from the root down to it (M1 → M2 → M3), the models derived
//! from it, its evaluations and today's quote for each kind of job.

use posthuman_types::JobKind;
use yew::prelude::*;

use std::collections::BTreeMap;

use super::{Link, Load, show, use_json};
use crate::format::{short, tokens, utc};
use crate::route::Route;
use crate::wire::{ModelView, Quote};

#[derive(Properties, PartialEq)]
pub struct ModelProps {
    pub nft: String,
}

fn quote_row(kind: JobKind, q: &Load<Quote>) -> Html {
    html! {
        <tr class="quote" data-kind={kind.as_str()}>
            <td>{ kind.as_str() }</td>
            <td>{ show(q, |q| html! { <>
                { format!("{} datatoken", tokens(&q.datatokens)) }
                { q.price.as_deref().map(|p| format!(" (buy at {} OCEAN each)", tokens(p))).unwrap_or_default() }
                <small>{ format!(" — valid until {}", utc(q.expires_at)) }</small>
            </> }) }</td>
        </tr>
    }
}

/// The lineage as a tree: the root at the top, each model the parent of the next, down to
/// this one (highlighted), then the models derived from it. Every node links to its page.
fn lineage_tree(
    line: &[String],
    name: &str,
    children: &[String],
    names: &BTreeMap<String, String>,
) -> Html {
    let node = |nft: &str, current: bool| {
        let label = names
            .get(&nft.to_lowercase())
            .cloned()
            .unwrap_or_else(|| if current { name.to_string() } else { short(nft) });
        html! { <Link to={Route::Model(nft.to_string())} {current}>{ label }</Link> }
    };
    // Built from the bottom: this model's children, then each ancestor wrapping the rest.
    let mut below = if children.is_empty() {
        html! {}
    } else {
        html! { <ul aria-label="derived models">{ for children.iter().map(|x| html! {
            <li class="derived">{ node(x, false) }</li>
        }) }</ul> }
    };
    for (i, nft) in line.iter().enumerate().rev() {
        let current = i + 1 == line.len();
        let class = if current {
            "current"
        } else if i == 0 {
            "root"
        } else {
            "ancestor"
        };
        let li = html! { <li class={class}>{ node(nft, current) }{ below }</li> };
        below = if i == 0 {
            li
        } else {
            html! { <ul>{ li }</ul> }
        };
    }
    html! { <ul id="lineage" class="tree" aria-labelledby="lineage-title">{ below }</ul> }
}

/// The names of the models a lineage tree shows (ancestors and children), each read by its
/// NFT: the catalogue's first page may hold none of them, and the whole catalogue is far
/// more than a tree needs. A name not (yet) read shows as the short address.
#[hook]
fn use_names(nfts: Vec<String>) -> BTreeMap<String, String> {
    let names = use_state(BTreeMap::new);
    {
        let names = names.clone();
        use_effect_with(nfts, move |nfts| {
            // Names read for a model no longer shown are dropped.
            let current = std::rc::Rc::new(std::cell::Cell::new(true));
            let (flag, nfts) = (current.clone(), nfts.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let mut got = BTreeMap::new();
                for nft in nfts {
                    let path = format!("/api/models/{nft}");
                    if let Ok(m) = crate::net::get_json::<ModelView>(&path).await {
                        got.insert(nft.to_lowercase(), m.card.name);
                    }
                }
                if flag.get() {
                    names.set(got);
                }
            });
            move || current.set(false)
        });
    }
    (*names).clone()
}

#[function_component]
pub fn ModelPage(p: &ModelProps) -> Html {
    let model = use_json::<ModelView>(format!("/api/models/{}", p.nft));
    let train = use_json::<Quote>(format!("/api/models/{}/quote?kind=train", p.nft));
    let infer = use_json::<Quote>(format!("/api/models/{}/quote?kind=infer", p.nft));
    let evaluate = use_json::<Quote>(format!("/api/models/{}/quote?kind=evaluate", p.nft));
    let sale = use_state(super::sale::SaleForm::default);
    let edit = use_state(super::card_edit::CardForm::default);
    let wallet = use_context::<super::wallet::WalletHandle>();
    let chain = use_json::<crate::wire::ChainInfo>("/api/chain".into());
    let shown: Vec<String> = match &model {
        Load::Ready(m) => m.lineage.iter().chain(&m.children).cloned().collect(),
        _ => Vec::new(),
    };
    let names = use_names(shown);
    let royalty = super::royalty::use_royalties(
        match &model {
            Load::Ready(m) if m.card.parent.is_some() => Some(m.card.nft.clone()),
            _ => None,
        },
        names.clone(),
    );
    let resale = super::resale::use_resale(match &model {
        Load::Ready(m) => Some((m.card.datatoken.clone(), m.card.symbol.clone())),
        _ => None,
    });
    let title = match &model {
        Load::Ready(m) => Some(format!("{} ({}) · Posthuman", m.card.name, m.card.symbol)),
        _ => None,
    };
    use_effect_with(title, |t| {
        if let Some(t) = t {
            super::set_title(t);
        }
    });
    show(&model, |m| {
        let c = &m.card;
        // Root first: the API lists parent → root.
        let mut line: Vec<String> = m.lineage.iter().rev().cloned().collect();
        line.push(c.nft.clone());
        let children: Vec<String> = m.children.clone();
        html! {
            <section id="model" data-nft={c.nft.clone()}>
                <h1>{ format!("{} ({})", c.name, c.symbol) }</h1>
                <p id="description" class="description">{ c.description.clone() }</p>
                <h2 id="lineage-title">{ "Lineage" }</h2>
                { lineage_tree(&line, &c.name, &children, &names) }
                if let Some(job) = &m.source_job {
                    <p>{ "Trained by job " }<Link to={Route::Job(job.clone())}>{ job.clone() }</Link>
                       { " — " }<Link to={Route::Receipt(job.clone())}>{ "verify its receipt" }</Link></p>
                }
                <table class="card">
                    <tr><th>{ "data NFT" }</th><td><code>{ c.nft.clone() }</code></td></tr>
                    <tr><th>{ "datatoken" }</th><td><code>{ c.datatoken.clone() }</code></td></tr>
                    <tr><th>{ "weights hash" }</th><td><code>{ c.weights_hash.to_string() }</code></td></tr>
                    <tr><th>{ "owner" }</th><td><code>{ c.owner.clone() }</code></td></tr>
                    if let Some(t) = &c.trainer { <tr><th>{ "trainer" }</th><td><code>{ t.clone() }</code></td></tr> }
                    <tr><th>{ "licence" }</th><td id="licence">{ c.license_text() }{ if c.parent.is_some() { ", its root's" } else { "" } }{ " (use through paid jobs; the weights are never downloaded)" }</td></tr>
                    <tr><th>{ "architecture" }</th><td>{ format!("{} ({} parameters)", c.architecture, c.parameters) }</td></tr>
                    if c.parent.is_some() || c.lora.is_some() { <tr><th>{ "derived" }</th><td id="derivation">{ c.derivation() }</td></tr> }
                    if let Some(l) = &c.lora {
                        <tr><th>{ "adapter" }</th><td>{ format!("{} parameters, alpha {}, {} layers; hash ", l.adapter_params, l.lora_alpha, l.targeted_layers) }<code>{ l.adapter_hash.to_string() }</code></td></tr>
                    }
                    <tr><th>{ "price" }</th><td>{ c.price.as_deref().map(|p| format!("{} OCEAN per datatoken", tokens(p))).unwrap_or_else(|| "not on sale".into()) }</td></tr>
                    <tr><th>{ "reward per derivation" }</th><td>{ format!("{} datatokens, shares {:?} bps by depth, remainder to the root owner",
                        tokens(&c.reward_scheme.total_reward), c.reward_scheme.shares_bps) }</td></tr>
                    <tr><th>{ "lineage royalty" }</th><td>{ format!("{} OCEAN per order of a derived model, to its ancestors by the same shares",
                        tokens(&c.reward_scheme.royalty)) }</td></tr>
                    if !c.tags.is_empty() { <tr><th>{ "tags" }</th><td id="tags">{ c.tags.join(", ") }</td></tr> }
                    <tr><th>{ "published" }</th><td>{ utc(m.created_at) }</td></tr>
                </table>
                { super::card_edit::card_form(&edit, wallet.as_ref(), &chain, c) }
                <h2>{ "Quotes" }</h2>
                <table class="quotes">
                    { quote_row(JobKind::Train, &train) }
                    { quote_row(JobKind::Infer, &infer) }
                    { quote_row(JobKind::Evaluate, &evaluate) }
                </table>
                { super::sale::sale_form(&sale, wallet.as_ref(), &chain, c) }
                { resale.clone() }
                { royalty.clone() }
                <super::order::OrderPanel nft={c.nft.clone()} n_positions={Some(m.n_positions)} architecture={c.architecture.clone()} />
                <p><small>{ "Or order with the CLI: " }<code>{ format!("posthuman jobs train {} --data my.txt", c.nft) }</code></small></p>
                <h2>{ "Evaluations" }</h2>
                if m.evaluations.is_empty() { <p>{ "None yet." }</p> }
                if !m.evaluations.is_empty() {
                    <table id="evaluations">
                        <thead><tr><th scope="col">{ "perplexity" }</th><th scope="col">{ "run by" }</th>
                            <th scope="col">{ "data (salted commitment)" }</th><th scope="col">{ "context / stride" }</th><th scope="col">{ "receipt" }</th></tr></thead>
                        <tbody>
                        { for m.evaluations.iter().map(|e| html! {
                            <tr class="evaluation" data-job={e.job_id.clone()}>
                                <td>{ if e.perplexity.is_finite() { format!("{:.3}", e.perplexity) } else { "∞".into() } }
                                    if e.featured { <small>{ " featured by the owner" }</small> }</td>
                                <td><Link to={Route::Jobs(Some(e.evaluator.clone()))}>{ short(&e.evaluator) }</Link></td>
                                <td><code>{ e.dataset_commitment.map(|h| short(&h.to_string())).unwrap_or_else(|| "—".into()) }</code></td>
                                <td>{ match (e.context_len, e.stride) {
                                    (Some(c), Some(s)) => format!("{c} / {s}"),
                                    _ => "—".into(),
                                } }</td>
                                <td><Link to={Route::Receipt(e.job_id.clone())}>{ format!("verify {}", e.job_id) }</Link></td>
                            </tr>
                        }) }
                        </tbody>
                    </table>
                }
            </section>
        }
    })
}
