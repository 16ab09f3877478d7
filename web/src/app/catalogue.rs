//! The catalogue: every model with its price, lineage parent, weights hash and evaluations,
//! a page at a time (the API's `limit` and next-page cursor; "More models" appends the next).

use std::collections::BTreeMap;

use yew::prelude::*;

use super::{Link, Load, show};
use crate::format::{short, tokens};
use crate::net::get_page;
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

/// Models per catalogue page: the API's default page. A model hub lists a page and offers
/// the next, rather than fetch and draw every model before the first row shows (with 1,000
/// models the first page renders as fast as with 3).
const PAGE: usize = 50;

#[function_component]
pub fn Catalogue() -> Html {
    let models = use_state(|| Load::<Vec<ModelView>>::Loading);
    let next = use_state(|| None::<String>);
    let busy = use_state(|| false);
    {
        let (models, next) = (models.clone(), next.clone());
        use_effect_with((), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                match get_page::<ModelView>(&format!("/api/models?limit={PAGE}")).await {
                    Ok((items, cursor)) => {
                        models.set(Load::Ready(items));
                        next.set(cursor);
                    }
                    Err(e) => models.set(Load::Failed(e)),
                }
            });
            || ()
        });
    }
    let onmore = {
        let (models, next, busy) = (models.clone(), next.clone(), busy.clone());
        Callback::from(move |_: MouseEvent| {
            let (models, next, busy) = (models.clone(), next.clone(), busy.clone());
            let Some(cursor) = (*next).clone() else { return };
            if *busy {
                return;
            }
            busy.set(true);
            wasm_bindgen_futures::spawn_local(async move {
                let path = format!("/api/models?limit={PAGE}&cursor={cursor}");
                match get_page::<ModelView>(&path).await {
                    Ok((items, cursor)) => {
                        if let Load::Ready(ms) = &*models {
                            let mut ms = ms.clone();
                            ms.extend(items);
                            models.set(Load::Ready(ms));
                        }
                        next.set(cursor);
                    }
                    Err(e) => models.set(Load::Failed(e)),
                }
                busy.set(false);
            });
        })
    };
    html! {
        <section>
            <h1>{ "Models" }</h1>
            { show(&models, |ms| {
                let names = names(ms);
                if ms.is_empty() {
                    return html! { <p>{ "No model is published yet." }</p> };
                }
                html! {
                    <>
                    <table id="catalogue">
                        <thead><tr>
                            <th scope="col">{ "model" }</th><th scope="col">{ "price" }</th><th scope="col">{ "parent" }</th>
                            <th scope="col">{ "weights hash" }</th><th scope="col">{ "evaluations (perplexity)" }</th>
                            <th scope="col">{ "jobs" }</th>
                        </tr></thead>
                        <tbody>
                        { for ms.iter().map(|m| html! {
                            <tr class="model" data-nft={m.card.nft.clone()}>
                                <td class="name">{ model_link(&m.card.nft, &names) }<br/><small>{ &m.card.architecture }</small></td>
                                <td data-label="price">{ m.card.price.as_deref().map(|p| format!("{} OCEAN", tokens(p))).unwrap_or_else(|| "not on sale".into()) }</td>
                                <td data-label="parent">{ match &m.card.parent { Some(p) => model_link(p, &names), None => html! { "root" } } }</td>
                                <td data-label="weights hash"><code title={m.card.weights_hash.to_string()}>{ short(&m.card.weights_hash.to_string()) }</code></td>
                                <td data-label="evaluations">
                                    if m.evaluations.is_empty() { { "none" } }
                                    { for m.evaluations.iter().map(|e| html! {
                                        <div><Link to={Route::Receipt(e.job_id.clone())}>{ format!("{:.2}", e.perplexity) }</Link></div>
                                    }) }
                                </td>
                                <td data-label="jobs">{ format!("{} train · {} infer · {} evaluate", m.jobs.train, m.jobs.infer, m.jobs.evaluate) }</td>
                            </tr>
                        }) }
                        </tbody>
                    </table>
                    <p id="catalogue-count" aria-live="polite">
                        { format!("{} model{} shown{}", ms.len(), if ms.len() == 1 { "" } else { "s" },
                            if next.is_some() { "; more below" } else { "" }) }
                    </p>
                    if next.is_some() {
                        <button type="button" id="more-models" onclick={onmore} disabled={*busy}>{ "More models" }</button>
                    }
                    </>
                }
            }) }
        </section>
    }
}
