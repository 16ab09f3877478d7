//! A consumer's jobs, and one job's status with live progress while it runs.

use yew::prelude::*;

use super::{Link, Load, Navigator, show, use_json};
use crate::format::{progress, short, utc};
use crate::net::{get_json, sleep};
use crate::route::Route;
use crate::wire::{JobState, JobView};

/// Milliseconds between polls of a running job.
const POLL_MS: i32 = 1000;

fn state_label(j: &JobView) -> String {
    match &j.state {
        JobState::Queued => "queued".into(),
        JobState::Running => "running".into(),
        JobState::Succeeded if j.completed => "done".into(),
        JobState::Succeeded => "finishing (receipt, commitment, publication)".into(),
        JobState::Failed { reason, order_reusable } => format!(
            "failed: {reason}{}",
            if *order_reusable { " (the order can pay for a retry)" } else { "" }
        ),
    }
}

#[derive(Properties, PartialEq)]
pub struct JobsProps {
    pub consumer: Option<String>,
}

#[function_component]
pub fn JobsPage(p: &JobsProps) -> Html {
    let nav = use_context::<Navigator>();
    let input = use_node_ref();
    let onsubmit = {
        let input = input.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let value =
                input.cast::<web_sys::HtmlInputElement>().map(|i| i.value()).unwrap_or_default();
            if let Some(nav) = &nav {
                nav.go(Route::parse("/jobs", &format!("consumer={}", value.trim())));
            }
        })
    };
    html! {
        <section>
            <h1>{ "Jobs" }</h1>
            <form {onsubmit}>
                <label>{ "Consumer address " }
                    <input ref={input} name="consumer" size="44" placeholder="0x…" value={p.consumer.clone().unwrap_or_default()} />
                </label>
                <button type="submit">{ "Show" }</button>
            </form>
            if let Some(c) = &p.consumer { <JobList consumer={c.clone()} /> }
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct JobListProps {
    consumer: String,
}

#[function_component]
fn JobList(p: &JobListProps) -> Html {
    let jobs = use_json::<Vec<JobView>>(format!("/api/jobs?consumer={}", p.consumer));
    show(&jobs, |js| {
        if js.is_empty() {
            return html! { <p>{ "No jobs for this address." }</p> };
        }
        html! {
            <table id="jobs">
                <thead><tr><th>{ "job" }</th><th>{ "kind" }</th><th>{ "model" }</th><th>{ "state" }</th><th>{ "receipt" }</th><th>{ "created" }</th></tr></thead>
                <tbody>
                { for js.iter().map(|j| html! {
                    <tr class="job" data-job={j.job_id.clone()}>
                        <td><Link to={Route::Job(j.job_id.clone())}>{ j.job_id.clone() }</Link></td>
                        <td>{ j.kind.as_str() }</td>
                        <td><Link to={Route::Model(j.model.clone())}>{ short(&j.model) }</Link></td>
                        <td>{ state_label(j) }{ j.progress.as_ref().filter(|_| j.in_flight()).map(|pr| format!(" — {}", progress(pr).1)).unwrap_or_default() }</td>
                        <td>{ if j.receipt_hash.is_some() { html! { <Link to={Route::Receipt(j.job_id.clone())}>{ "verify" }</Link> } } else { html! { "—" } } }</td>
                        <td>{ utc(j.created_at) }</td>
                    </tr>
                }) }
                </tbody>
            </table>
        }
    })
}

#[derive(Properties, PartialEq)]
pub struct JobProps {
    pub id: String,
}

/// A job, polled every second while it may still change.
#[function_component]
pub fn JobPage(p: &JobProps) -> Html {
    let job = use_state(|| Load::<JobView>::Loading);
    {
        let job = job.clone();
        use_effect_with(p.id.clone(), move |id| {
            let alive = std::rc::Rc::new(std::cell::Cell::new(true));
            let (id, flag) = (id.clone(), alive.clone());
            wasm_bindgen_futures::spawn_local(async move {
                while flag.get() {
                    match get_json::<JobView>(&format!("/api/jobs/{id}")).await {
                        Ok(j) => {
                            let more = j.in_flight();
                            job.set(Load::Ready(j));
                            if !more {
                                break;
                            }
                        }
                        Err(e) => {
                            job.set(Load::Failed(e));
                            break;
                        }
                    }
                    sleep(POLL_MS).await;
                }
            });
            move || alive.set(false)
        });
    }
    show(&job, |j| {
        let bar = j.progress.as_ref().map(progress);
        html! {
            <section id="job" data-state={state_label(j)}>
                <h1>{ format!("{} job {}", j.kind.as_str(), j.job_id) }</h1>
                <p class="state">{ state_label(j) }</p>
                if let Some((pct, line)) = bar {
                    <progress max="100" value={pct.to_string()}></progress>
                    <p class="progress">{ line }</p>
                }
                <table class="card">
                    <tr><th>{ "model" }</th><td><Link to={Route::Model(j.model.clone())}>{ j.model.clone() }</Link></td></tr>
                    <tr><th>{ "consumer" }</th><td><Link to={Route::Jobs(Some(j.consumer.clone()))}>{ j.consumer.clone() }</Link></td></tr>
                    <tr><th>{ "order transaction" }</th><td><code>{ j.order_tx.clone() }</code></td></tr>
                    if let Some(d) = &j.derived_model {
                        <tr><th>{ "derived model" }</th><td><Link to={Route::Model(d.nft.clone())}>{ d.nft.clone() }</Link></td></tr>
                    }
                    <tr><th>{ "created / updated" }</th><td>{ format!("{} / {}", utc(j.created_at), utc(j.updated_at)) }</td></tr>
                </table>
                if let Some(h) = &j.receipt_hash {
                    <p>{ "Receipt " }<code>{ short(&h.to_string()) }</code>{ " — " }
                       <Link to={Route::Receipt(j.job_id.clone())}>{ "verify it in your browser" }</Link></p>
                }
            </section>
        }
    })
}
