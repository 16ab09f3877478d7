//! The catalogue: every model with its price, lineage parent, weights hash and evaluations.

use std::collections::BTreeMap;

use yew::prelude::*;

use super::{Link, show, use_json};
use crate::format::{short, tokens};
use crate::route::Route;
use crate::wire::ModelView;

/// NFT → display name, for lineage links.
pub fn names(models: &[ModelView]) -> BTreeMap<String, String> {
    models.iter().map(|m| (m.card.nft.to_lowercase(), m.card.name.clone())).collect()
}

/// A model link showing its name when known.
pub fn model_link(nft: &str, names: &BTreeMap<String, String>) -> Html {
    let label = names.get(&nft.to_lowercase()).cloned().unwrap_or_else(|| short(nft));
    html! { <Link to={Route::Model(nft.to_string())}>{ label }</Link> }
}

#[function_component]
pub fn Catalogue() -> Html {
    let models = use_json::<Vec<ModelView>>("/api/models".into());
    html! {
        <section>
            <h1>{ "Models" }</h1>
            { show(&models, |ms| {
                let names = names(ms);
                if ms.is_empty() {
                    return html! { <p>{ "No model is published yet." }</p> };
                }
                html! {
                    <table id="catalogue">
                        <thead><tr>
                            <th>{ "model" }</th><th>{ "price" }</th><th>{ "parent" }</th>
                            <th>{ "weights hash" }</th><th>{ "evaluations (perplexity)" }</th>
                            <th>{ "jobs" }</th>
                        </tr></thead>
                        <tbody>
                        { for ms.iter().map(|m| html! {
                            <tr class="model" data-nft={m.card.nft.clone()}>
                                <td>{ model_link(&m.card.nft, &names) }<br/><small>{ &m.card.architecture }</small></td>
                                <td>{ m.card.price.as_deref().map(|p| format!("{} OCEAN", tokens(p))).unwrap_or_else(|| "not on sale".into()) }</td>
                                <td>{ match &m.card.parent { Some(p) => model_link(p, &names), None => html! { "root" } } }</td>
                                <td><code title={m.card.weights_hash.to_string()}>{ short(&m.card.weights_hash.to_string()) }</code></td>
                                <td>{ for m.evaluations.iter().map(|e| html! {
                                    <div><Link to={Route::Receipt(e.job_id.clone())}>{ format!("{:.2}", e.perplexity) }</Link></div>
                                }) }</td>
                                <td>{ format!("{} train · {} infer · {} evaluate", m.jobs.train, m.jobs.infer, m.jobs.evaluate) }</td>
                            </tr>
                        }) }
                        </tbody>
                    </table>
                }
            }) }
        </section>
    }
}
