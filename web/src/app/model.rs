//! A model: its card, the lineage from the root down to it (M1 → M2 → M3), the models derived
//! from it, its evaluations and today's quote for each kind of job.

use posthuman_types::JobKind;
use yew::prelude::*;

use super::catalogue::{model_link, names};
use super::{Link, Load, show, use_json};
use crate::format::{tokens, utc};
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

#[function_component]
pub fn ModelPage(p: &ModelProps) -> Html {
    let model = use_json::<ModelView>(format!("/api/models/{}", p.nft));
    let all = use_json::<Vec<ModelView>>("/api/models".into());
    let train = use_json::<Quote>(format!("/api/models/{}/quote?kind=train", p.nft));
    let infer = use_json::<Quote>(format!("/api/models/{}/quote?kind=infer", p.nft));
    let evaluate = use_json::<Quote>(format!("/api/models/{}/quote?kind=evaluate", p.nft));
    let catalogue: Vec<ModelView> = match &all {
        Load::Ready(v) => v.clone(),
        _ => Vec::new(),
    };
    let names = names(&catalogue);
    show(&model, |m| {
        let c = &m.card;
        // Root first: the API lists parent → root.
        let mut line: Vec<String> = m.lineage.iter().rev().cloned().collect();
        line.push(c.nft.clone());
        let children: Vec<&ModelView> = catalogue
            .iter()
            .filter(|x| x.card.parent.as_deref().is_some_and(|p| p.eq_ignore_ascii_case(&c.nft)))
            .collect();
        html! {
            <section id="model" data-nft={c.nft.clone()}>
                <h1>{ format!("{} ({})", c.name, c.symbol) }</h1>
                <p>{ c.description.clone() }</p>
                <h2>{ "Lineage" }</h2>
                <p id="lineage">
                { for line.iter().enumerate().map(|(i, n)| html! { <>
                    if i > 0 { <span>{ " → " }</span> }
                    if n.eq_ignore_ascii_case(&c.nft) { <strong>{ names.get(&n.to_lowercase()).cloned().unwrap_or_else(|| c.name.clone()) }</strong> }
                    else { { model_link(n, &names) } }
                </> }) }
                </p>
                if let Some(job) = &m.source_job {
                    <p>{ "Trained by job " }<Link to={Route::Job(job.clone())}>{ job.clone() }</Link>
                       { " — " }<Link to={Route::Receipt(job.clone())}>{ "verify its receipt" }</Link></p>
                }
                if !children.is_empty() {
                    <p>{ "Derived models: " }{ for children.iter().map(|x| html! { <>{ model_link(&x.card.nft, &names) }{ " " }</> }) }</p>
                }
                <table class="card">
                    <tr><th>{ "data NFT" }</th><td><code>{ c.nft.clone() }</code></td></tr>
                    <tr><th>{ "datatoken" }</th><td><code>{ c.datatoken.clone() }</code></td></tr>
                    <tr><th>{ "weights hash" }</th><td><code>{ c.weights_hash.to_string() }</code></td></tr>
                    <tr><th>{ "owner" }</th><td><code>{ c.owner.clone() }</code></td></tr>
                    if let Some(t) = &c.trainer { <tr><th>{ "trainer" }</th><td><code>{ t.clone() }</code></td></tr> }
                    <tr><th>{ "architecture" }</th><td>{ format!("{} ({} parameters)", c.architecture, c.parameters) }</td></tr>
                    <tr><th>{ "price" }</th><td>{ c.price.as_deref().map(|p| format!("{} OCEAN per datatoken", tokens(p))).unwrap_or_else(|| "not on sale".into()) }</td></tr>
                    <tr><th>{ "reward per derivation" }</th><td>{ format!("{} datatokens, shares {:?} bps by depth, remainder to the root owner",
                        tokens(&c.reward_scheme.total_reward), c.reward_scheme.shares_bps) }</td></tr>
                    <tr><th>{ "lineage royalty" }</th><td>{ format!("{} OCEAN per order of a derived model, to its ancestors by the same shares",
                        tokens(&c.reward_scheme.royalty)) }</td></tr>
                    <tr><th>{ "published" }</th><td>{ utc(m.created_at) }</td></tr>
                </table>
                <h2>{ "Quotes" }</h2>
                <table class="quotes">
                    { quote_row(JobKind::Train, &train) }
                    { quote_row(JobKind::Infer, &infer) }
                    { quote_row(JobKind::Evaluate, &evaluate) }
                </table>
                <super::order::OrderPanel nft={c.nft.clone()} n_positions={m.n_positions} />
                <p><small>{ "Or order with the CLI: " }<code>{ format!("posthuman jobs train {} --data my.txt", c.nft) }</code></small></p>
                <h2>{ "Evaluations" }</h2>
                if m.evaluations.is_empty() { <p>{ "None yet." }</p> }
                <ul>
                { for m.evaluations.iter().map(|e| html! {
                    <li>{ format!("perplexity {:.3} — ", e.perplexity) }
                        <Link to={Route::Receipt(e.job_id.clone())}>{ format!("receipt of {}", e.job_id) }</Link></li>
                }) }
                </ul>
            </section>
        }
    })
}
