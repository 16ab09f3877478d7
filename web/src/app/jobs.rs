//! A consumer's jobs (the connected wallet's, or another address's read-only), and one job's
//! status with live progress while it runs.

use yew::prelude::*;

use posthuman_types::JobKind;

use super::chart::loss_chart;
use super::wallet::WalletHandle;
use super::{Link, Load, Navigator, show, use_json};
use crate::format::{progress, short, utc};
use crate::net::{get_json, get_page, sleep};
use crate::order::loss_curve;
use crate::route::Route;
use crate::wire::{ChainInfo, JobStateView, JobView};

/// Milliseconds between polls of a running job.
const POLL_MS: i32 = 1000;

fn state_label(j: &JobView) -> String {
    match &j.state {
        JobStateView::Queued => "queued".into(),
        JobStateView::Running => "running".into(),
        JobStateView::Succeeded if j.completed => "done".into(),
        JobStateView::Succeeded => "finishing (receipt, commitment, publication)".into(),
        JobStateView::Failed { reason, order_reusable, .. } => format!(
            "failed: {reason}{}",
            if *order_reusable { " (the order can pay for a retry)" } else { "" }
        ),
    }
}

#[derive(Properties, PartialEq)]
pub struct JobsProps {
    pub consumer: Option<String>,
}

/// `/jobs`: the connected wallet's jobs, or (read-only) another address's given in the link
/// or typed here.
#[function_component]
pub fn JobsPage(p: &JobsProps) -> Html {
    let nav = use_context::<Navigator>();
    let wallet = use_context::<WalletHandle>();
    let mine = wallet.as_ref().and_then(|w| w.account).map(|a| a.to_checksum(None));
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
    let shown = p.consumer.clone().or(mine.clone());
    let whose = match (&p.consumer, &mine) {
        (Some(c), Some(m)) if c.eq_ignore_ascii_case(m) => "Your jobs".to_string(),
        (Some(c), _) => format!("Jobs of {} (read-only)", short(c)),
        (None, Some(_)) => "Your jobs".into(),
        (None, None) => "Jobs".into(),
    };
    html! {
        <section>
            <h1>{ whose }</h1>
            if mine.is_none() && p.consumer.is_none() {
                <p>{ "Connect your wallet (top right) to see your jobs, or look at another address's." }</p>
            }
            <form {onsubmit}>
                <label>{ "Look at another address (read-only) " }
                    <input ref={input} name="consumer" size="44" placeholder="0x…" value={p.consumer.clone().unwrap_or_default()} />
                </label>
                <button type="submit">{ "Show" }</button>
            </form>
            if let Some(c) = shown { <JobList consumer={c} /> }
        </section>
    }
}

/// Jobs per page of the list.
const PAGE: usize = 20;

#[derive(Properties, PartialEq)]
pub struct JobListProps {
    pub consumer: String,
}

/// A consumer's jobs, a page at a time (`limit` and the API's next-page cursor); jobs still
/// in flight are polled until they settle.
#[function_component]
pub fn JobList(p: &JobListProps) -> Html {
    let jobs = use_state(|| Load::<Vec<JobView>>::Loading);
    let next = use_state(|| None::<String>);
    // The first page, whenever the consumer changes. An answer for a consumer no longer
    // shown (the wallet switched account while it loaded) is dropped, never listed as the
    // new one's.
    {
        let (jobs, next) = (jobs.clone(), next.clone());
        use_effect_with(p.consumer.clone(), move |c| {
            let c = c.clone();
            let current = std::rc::Rc::new(std::cell::Cell::new(true));
            let flag = current.clone();
            jobs.set(Load::Loading);
            wasm_bindgen_futures::spawn_local(async move {
                let page =
                    get_page::<JobView>(&format!("/api/jobs?consumer={c}&limit={PAGE}")).await;
                if !flag.get() {
                    return;
                }
                match page {
                    Ok((items, cursor)) => {
                        jobs.set(Load::Ready(items));
                        next.set(cursor);
                    }
                    Err(e) => jobs.set(Load::Failed(e)),
                }
            });
            move || current.set(false)
        });
    }
    // Live state: while some listed job is in flight, re-read those jobs every POLL_MS.
    {
        let jobs = jobs.clone();
        let live: Vec<String> = match &*jobs {
            Load::Ready(js) => {
                js.iter().filter(|j| j.in_flight()).map(|j| j.job_id.clone()).collect()
            }
            _ => Vec::new(),
        };
        use_effect_with(live, move |live| {
            let alive = std::rc::Rc::new(std::cell::Cell::new(true));
            if !live.is_empty() {
                let (live, flag) = (live.clone(), alive.clone());
                wasm_bindgen_futures::spawn_local(async move {
                    sleep(POLL_MS).await;
                    if !flag.get() {
                        return;
                    }
                    let mut fresh = Vec::new();
                    for id in &live {
                        if let Ok(j) = get_json::<JobView>(&format!("/api/jobs/{id}")).await {
                            fresh.push(j);
                        }
                    }
                    if let (true, Load::Ready(js)) = (flag.get(), &*jobs) {
                        let mut js = js.clone();
                        for j in js.iter_mut() {
                            if let Some(f) = fresh.iter().find(|f| f.job_id == j.job_id) {
                                *j = f.clone();
                            }
                        }
                        jobs.set(Load::Ready(js));
                    }
                });
            }
            move || alive.set(false)
        });
    }
    let onmore = {
        let (jobs, next, c) = (jobs.clone(), next.clone(), p.consumer.clone());
        Callback::from(move |_: MouseEvent| {
            let (jobs, next, c) = (jobs.clone(), next.clone(), c.clone());
            let Some(cursor) = (*next).clone() else { return };
            wasm_bindgen_futures::spawn_local(async move {
                let path = format!("/api/jobs?consumer={c}&limit={PAGE}&cursor={cursor}");
                match get_page::<JobView>(&path).await {
                    Ok((items, cursor)) => {
                        if let Load::Ready(js) = &*jobs {
                            let mut js = js.clone();
                            js.extend(items);
                            jobs.set(Load::Ready(js));
                        }
                        next.set(cursor);
                    }
                    Err(e) => jobs.set(Load::Failed(e)),
                }
            });
        })
    };
    show(&jobs, |js| {
        if js.is_empty() {
            return html! { <p id="no-jobs">{ "No jobs for this address." }</p> };
        }
        html! {
            <>
            <table id="jobs" aria-live="polite">
                <thead><tr><th>{ "job" }</th><th>{ "kind" }</th><th>{ "model" }</th><th>{ "state" }</th><th>{ "receipt" }</th><th>{ "created" }</th></tr></thead>
                <tbody>
                { for js.iter().map(|j| html! {
                    <tr class="job" data-job={j.job_id.clone()} data-state={state_label(j)}>
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
            if next.is_some() {
                <button type="button" id="more-jobs" onclick={onmore}>{ "More jobs" }</button>
            }
            </>
        }
    })
}

#[derive(Properties, PartialEq)]
pub struct JobProps {
    pub id: String,
}

/// A job, polled every second while it may still change; a train job's loss curve is drawn
/// from the losses seen while polling. The whole curve is in the job's `metrics.json`, which
/// only its buyer reads: with the buyer's wallet connected, a button reads it (a signature;
/// offered once the job is over, when polling has stopped).
#[function_component]
pub fn JobPage(p: &JobProps) -> Html {
    let job = use_state(|| Load::<JobView>::Loading);
    let curve = use_state(Vec::<(u32, f64)>::new);
    let source = use_state(|| "live");
    let read_status = use_state(|| None::<(String, bool)>);
    let wallet = use_context::<WalletHandle>();
    let chain = use_json::<ChainInfo>("/api/chain".into());
    let onread = {
        let (curve, source, read_status, wallet, id) =
            (curve.clone(), source.clone(), read_status.clone(), wallet.clone(), p.id.clone());
        Callback::from(move |_: MouseEvent| {
            let (Some((account, provider)), Load::Ready(chain)) =
                (wallet.as_ref().and_then(|w| w.connected()), chain.clone())
            else {
                return;
            };
            let (curve, source, read_status, id) =
                (curve.clone(), source.clone(), read_status.clone(), id.clone());
            read_status.set(Some((
                "Sign the read of the job's metrics in your wallet (a signature, no transaction)…"
                    .into(),
                false,
            )));
            wasm_bindgen_futures::spawn_local(async move {
                match super::order::signed_read(&chain, &provider, account, &id).await {
                    Ok(r) => match loss_curve(&r) {
                        Some(c) => {
                            let n = c.len();
                            curve.set(c);
                            source.set("metrics");
                            read_status.set(Some((
                                format!("The job's own loss curve: {n} points."),
                                false,
                            )));
                        }
                        None => read_status
                            .set(Some(("The job's metrics carry no loss curve.".into(), true))),
                    },
                    Err(e) => read_status.set(Some((format!("{e}."), true))),
                }
            });
        })
    };
    {
        let (job, curve) = (job.clone(), curve.clone());
        use_effect_with(p.id.clone(), move |id| {
            let alive = std::rc::Rc::new(std::cell::Cell::new(true));
            let (id, flag) = (id.clone(), alive.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let mut points = Vec::new();
                while flag.get() {
                    match get_json::<JobView>(&format!("/api/jobs/{id}")).await {
                        Ok(j) => {
                            let more = j.in_flight();
                            if let Some(pr) =
                                j.progress.as_ref().filter(|_| j.kind == JobKind::Train)
                            {
                                crate::chart::accumulate(&mut points, pr);
                                curve.set(points.clone());
                            }
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
    let mine = wallet.as_ref().and_then(|w| w.account).map(|a| format!("{a:#x}"));
    show(&job, |j| {
        let bar = j.progress.as_ref().map(progress);
        html! {
            <section id="job" data-state={state_label(j)}>
                <h1>{ format!("{} job {}", j.kind.as_str(), j.job_id) }</h1>
                <div id="job-progress" aria-live="polite">
                    <p class="state">{ state_label(j) }</p>
                    if let Some((pct, line)) = bar {
                        <progress max="100" value={pct.to_string()} aria-label="progress"></progress>
                        <p class="progress">{ line }</p>
                    }
                </div>
                { loss_chart(&curve, *source) }
                if j.kind == JobKind::Train && !j.in_flight() && *source == "live"
                    && mine.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(&j.consumer)) {
                    <button type="button" id="read-curve" onclick={onread.clone()}>
                        { "Show the whole loss curve (sign a read in your wallet)" }</button>
                }
                if let Some((msg, error)) = &*read_status {
                    <p id="read-curve-status" role="status" class={if *error { "error" } else { "" }}>{ msg.clone() }</p>
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
