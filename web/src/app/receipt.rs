//! The receipt view (`/jobs/{id}/receipt`): every field of the signed receipt, then each
//! check run *here, in the browser*, against the chain's node — see [`crate::verify`] for
//! what is trusted and what is checked.

use posthuman_receipts::{Address, RpcFacts, SignedReceipt};
use posthuman_types::JobKind;
use yew::prelude::*;

use super::{Link, Load};
use crate::checks::{
    CheckRow, Field, Group, Status, all_pass, check_rows, deployment_rows, receipt_fields,
};
use crate::net::{BrowserRpc, get_json, get_text};
use crate::route::Route;
use crate::verify::{Deployment, Evidence, read_deployment, verify};
use crate::wire::{ChainInfo, JobView, ModelView};

/// A verified (or refused) receipt, ready to render.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub kind: JobKind,
    pub fields: Vec<Field>,
    pub rows: Vec<CheckRow>,
    pub dep: Deployment,
    pub rpc_url: String,
    pub lineage_models: Vec<Address>,
    pub report_checked: bool,
}

/// Parsed from the text, not through a `serde_json::Value`: reading a receipt from a `Value`
/// instantiated a second deserializer for every receipt type (a map and an array form each).
fn parse_receipt(id: &str, text: &str) -> Result<SignedReceipt, String> {
    posthuman_receipts::json::from_str(text)
        .map_err(|e| format!("the receipt of job {id} is malformed: {e}"))
}

fn address(what: &str, s: &str) -> Result<Address, String> {
    s.parse().map_err(|e| format!("{what} {s:?} is not an address: {e}"))
}

/// Fetches the evidence from the API and the facts from the chain, and runs the checks.
async fn check(
    id: String,
    report: Option<Vec<u8>>,
    step: Callback<String>,
) -> Result<Checked, String> {
    step.emit("fetching the receipt and the deployment's address book".into());
    let chain: ChainInfo = get_json("/api/chain").await?;
    let signed = parse_receipt(&id, &get_text(&format!("/api/jobs/{id}/receipt")).await?)?;
    let mut ev = Evidence { eval_report: report.clone(), ..Evidence::default() };
    if signed.body.kind == JobKind::Train {
        step.emit("collecting the receipts along the derived model's lineage".into());
        let job: JobView = get_json(&format!("/api/jobs/{id}")).await?;
        if let Some(child) = job.derived_model {
            ev.derived = Some(address("derived model", &child.nft)?);
            let mut cursor = Some(child.nft);
            while let Some(nft) = cursor {
                let m: ModelView = get_json(&format!("/api/models/{nft}")).await?;
                if let Some(src) = m.source_job.as_ref().filter(|s| **s != id) {
                    ev.lineage_receipts.push(parse_receipt(
                        src,
                        &get_text(&format!("/api/jobs/{src}/receipt")).await?,
                    )?);
                }
                cursor = m.card.parent;
            }
        }
    }
    // Without a public RPC the browser cannot read the chain itself: say so, never guess.
    let rpc_url = chain.rpc_url.clone().ok_or_else(|| {
        "this deployment publishes no public RPC for its chain, so the browser cannot check \
         the receipt against the chain; use `posthuman verify` with your own --rpc"
            .to_string()
    })?;
    step.emit(format!("reading the deployment from the chain's node at {rpc_url}"));
    let rpc = RpcFacts::new(BrowserRpc { url: rpc_url.clone() }, chain.address_book.lineage);
    let dep = read_deployment(&rpc, chain.address_book.lineage).await.map_err(|e| e.to_string())?;
    step.emit("verifying against the chain".into());
    let v = verify(|q| rpc.answer(q), &dep, &signed, &ev).await.map_err(|e| e.to_string())?;
    let mut rows = deployment_rows(&dep, chain.address_book.chain_id, chain.address_book.operator);
    rows.extend(check_rows(&v));
    Ok(Checked {
        kind: signed.body.kind,
        fields: receipt_fields(&signed),
        rows,
        dep,
        rpc_url,
        lineage_models: v.lineage_models,
        report_checked: v.evaluation.is_some(),
    })
}

#[derive(Properties, PartialEq)]
pub struct ReceiptProps {
    pub id: String,
}

#[function_component]
pub fn ReceiptPage(p: &ReceiptProps) -> Html {
    let result = use_state(|| Load::<Checked>::Loading);
    let step = use_state(String::new);
    let report = use_state(|| None::<Vec<u8>>);
    let report_input = use_node_ref();
    {
        let (result, step) = (result.clone(), step.clone());
        use_effect_with((p.id.clone(), (*report).clone()), move |(id, report)| {
            result.set(Load::Loading);
            let on_step = Callback::from(move |s: String| step.set(s));
            let (id, report) = (id.clone(), report.clone());
            wasm_bindgen_futures::spawn_local(async move {
                result.set(match check(id, report, on_step).await {
                    Ok(c) => Load::Ready(c),
                    Err(e) => Load::Failed(e),
                });
            });
            || ()
        });
    }
    let on_report = {
        let (report, input) = (report.clone(), report_input.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if let Some(t) = input.cast::<web_sys::HtmlTextAreaElement>() {
                report.set(Some(t.value().into_bytes()));
            }
        })
    };
    let body = match &*result {
        Load::Loading => html! {
            <section id="checks" data-state="running"><p class="loading">{ format!("Verifying… {}", *step) }</p></section>
        },
        Load::Failed(e) => html! {
            <section id="checks" data-state="error" data-verdict="error">
                <p class="error">{ format!("Could not verify: {e}") }</p>
            </section>
        },
        Load::Ready(c) => render(c, &report_input, on_report),
    };
    html! {
        <section id="receipt">
            <h1>{ format!("Receipt of job {}", p.id) }</h1>
            <p><Link to={Route::Job(p.id.clone())}>{ "job status" }</Link></p>
            { body }
        </section>
    }
}

fn row(r: &CheckRow) -> Html {
    let class = match r.status {
        Status::Pass => "check pass",
        Status::Fail => "check fail",
        Status::Skipped => "check skipped",
    };
    html! {
        <tr class={class} data-check={r.name.clone()} data-status={r.status.label()}>
            <td class="status">{ r.status.label() }</td>
            <td><code>{ r.name.clone() }</code><br/><small>{ r.what.clone() }</small></td>
            <td><small>{ r.subject.clone() }</small></td>
            <td class="reason">{ r.reason.clone().unwrap_or_default() }</td>
        </tr>
    }
}

fn render(c: &Checked, report_input: &NodeRef, on_report: Callback<SubmitEvent>) -> Html {
    let pass = all_pass(&c.rows);
    let failed = c.rows.iter().filter(|r| r.status == Status::Fail).count();
    let verdict = if pass {
        format!("All {} checks pass.", c.rows.iter().filter(|r| r.status == Status::Pass).count())
    } else {
        format!("{failed} of {} checks FAIL.", c.rows.len())
    };
    html! { <>
        <section id="checks" data-state="done" data-verdict={if pass { "pass" } else { "fail" }}>
            <h2 class={if pass { "verdict pass" } else { "verdict fail" }}>{ verdict }</h2>
            <p><small>{ format!(
                "Checked in this browser against the chain's node at {} (chain {}): the expected signer is the lineage contract {}'s operator {}, read from the chain. The API supplied only the receipts to check; the lineage contract's address is the one input taken from it on trust.",
                c.rpc_url, c.dep.chain_id, c.dep.lineage, c.dep.operator) }</small></p>
            if !c.lineage_models.is_empty() {
                <p>{ "Lineage walked on chain (root last): " }
                { for c.lineage_models.iter().map(|m| html! { <><Link to={Route::Model(m.to_string())}><code>{ crate::format::short(&m.to_string()) }</code></Link>{ " " }</> }) }</p>
            }
            { for Group::ALL.iter().map(|g| {
                let rows: Vec<&CheckRow> = c.rows.iter().filter(|r| r.group == *g).collect();
                if rows.is_empty() {
                    let why = match g {
                        Group::Commitment if c.kind != JobKind::Train => "only train jobs commit to the chain",
                        Group::Evaluation if c.kind == JobKind::Evaluate => "supply the report you received below to check it",
                        Group::Evaluation => "not an evaluation",
                        _ => "nothing to check",
                    };
                    return html! { <div class="group" data-group={format!("{g:?}")}><h3>{ g.title() }</h3><p><small>{ format!("Not applicable: {why}.") }</small></p></div> };
                }
                html! {
                    <div class="group" data-group={format!("{g:?}")}>
                        <h3>{ g.title() }</h3>
                        <table class="checks"><tbody>{ for rows.iter().map(|r| row(r)) }</tbody></table>
                    </div>
                }
            }) }
            if c.kind == JobKind::Evaluate {
                <form id="report-form" onsubmit={on_report}>
                    <p>{ if c.report_checked { "Report checked above. Check another:" } else { "Evaluation buyers: paste the report.json you received (byte for byte) to check it is the one this receipt commits to, about the weights of the model on sale." } }</p>
                    <textarea ref={report_input.clone()} id="report" rows="6" cols="80"></textarea>
                    <br/><button type="submit">{ "Check the report" }</button>
                </form>
            }
        </section>
        <section id="fields">
            <h2>{ "The signed receipt" }</h2>
            <table class="fields"><tbody>
            { for c.fields.iter().map(|f| html! {
                <tr data-field={f.name}><th>{ f.name }</th><td><pre>{ f.value.clone() }</pre></td></tr>
            }) }
            </tbody></table>
        </section>
    </> }
}
