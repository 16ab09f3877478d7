//! Ordering a job on a model's page, with the user's own wallet: the form (bounded as the
//! API bounds it) → the quote, line by line → on the user's click, the transactions the
//! wallet sends (buy a datatoken if none is held, approvals, `startOrder`), the confirmations
//! the API needs, the signed job request (`eth_signTypedData_v4`) → the job followed live →
//! for infer and evaluate, the result read with a signed request. The plan and every
//! transaction are described in words before the wallet asks; every refusal is said in the
//! `aria-live` status where it happened. A dataset goes by direct upload before anything is
//! paid ([`super::upload`]); the submit names it. The encoding lives in [`crate::order`].

use std::cell::RefCell;
use std::rc::Rc;

use alloy::primitives::{Address, U256};
use posthuman_receipts::ReceiptDomain;
use posthuman_types::pricing::Ocean;
use posthuman_types::{Hash32, JobKind, JobProgress};
use serde_json::Value;
use sha2::{Digest, Sha256};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use yew::prelude::*;

use super::chart::{loss_chart, perplexity_chart};
use super::upload::{declare, in_memory, send};
use super::wallet::WalletHandle;
use super::{Link, Load, use_json};
use crate::eip1193::Provider;
use crate::format::{progress, tokens, utc};
use crate::net::{self, answer, sleep};
use crate::order::{
    ChainState, JobRequest, OrderForm, QuoteTerms, REQUEST_VALIDITY_SECS, check_dataset, check_fee,
    completions, cost_call, evaluation, lora_modules, loss_curve, market_fee_call, nonce_of,
    parse_cost, parse_market_fee, parse_receipt, plan, read_headers, read_typed_data, sign_params,
    submit_typed_data, train_method,
};
use crate::route::Route;
use crate::upload::{
    UPLOAD_HEADER, UploadLimits, UploadPurpose, api_refusal, check_files, code, size,
};
use crate::wallet::{WalletError, balance_call, network_name, parse_balance, parse_quantity};
use crate::wire::{ChainInfo, ErrorBody, JobStateView, JobView, Quote, SubmittedView};

#[derive(Properties, PartialEq)]
pub struct OrderProps {
    pub nft: String,
    /// The model's longest context: the form refuses a longer `context_len` before quoting.
    #[prop_or_default]
    pub n_positions: Option<u32>,
    /// The card's `architecture` line: its first word is the family, which names the
    /// modules a LoRA adapter can target.
    #[prop_or_default]
    pub architecture: String,
}

/// What the panel shows.
#[derive(Clone, Debug, Default, PartialEq)]
struct Panel {
    quote: Option<Quote>,
    /// The terms this page asked to be quoted (the fee must bind exactly them).
    terms: Option<QuoteTerms>,
    /// The status line and whether it is an error.
    status: String,
    error: bool,
    busy: bool,
    /// The `startOrder` of the current quote, once mined (no second order for one quote).
    order_tx: Option<String>,
    job: Option<String>,
    salt: Option<Hash32>,
    texts: Vec<(String, String)>,
    /// Evaluate: the perplexity read from the report.
    perplexity: Option<String>,
    /// Evaluate: the perplexity and its baseline (label, perplexity), drawn as bars.
    evaluation: Option<(f64, Option<(String, f64)>)>,
    /// Train: the loss curve, gathered from the live progress while the job runs, then the
    /// job's own `metrics.json` curve once its result is read (`curve_source`).
    curve: Vec<(u32, f64)>,
    curve_source: &'static str,
    done: bool,
}

pub(super) fn now_secs() -> u64 {
    (js_sys::Date::now() / 1000.0) as u64
}

pub(super) fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| format!("the browser gave no randomness: {e}"))?;
    Ok(b)
}

async fn file_bytes(f: &web_sys::File) -> Result<Vec<u8>, String> {
    let buf = JsFuture::from(f.array_buffer())
        .await
        .map_err(|_| format!("could not read {}", f.name()))?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

async fn get_quote(nft: &str, terms: &QuoteTerms) -> Result<Quote, String> {
    let path = format!("/api/models/{nft}/quote");
    let body = serde_json::to_string(terms).map_err(|e| e.to_string())?;
    let (status, text) =
        net::request("POST", &path, Some(&JsValue::from_str(&body)), &[], true).await?;
    answer(&path, status, &text).map_err(|e| format!("The API refused the quote: {e}"))
}

/// A wallet request; its refusal in words.
pub(super) async fn ask(p: &Provider, method: &str, params: &str) -> Result<Value, String> {
    p.request(method, params).await.map_err(|e| match e {
        WalletError::Rejected => "you rejected the request in your wallet".to_string(),
        e => e.to_string(),
    })
}

async fn balance(p: &Provider, token: Address, owner: Address) -> Result<U256, String> {
    parse_balance(&ask(p, "eth_call", &balance_call(token, owner)).await?)
        .map_err(|e| e.to_string())
}

/// Waits for a sent transaction's receipt (through the wallet's node); its block.
pub(super) async fn mined(p: &Provider, hash: &Value) -> Result<u64, String> {
    for _ in 0..600 {
        let r = ask(p, "eth_getTransactionReceipt", &format!("[{hash}]")).await?;
        if let Some(r) = parse_receipt(&r) {
            return r;
        }
        sleep(500).await;
    }
    Err(format!("transaction {hash} was not mined within 5 minutes"))
}

/// A dataset file: its name and bytes.
type Dataset = (String, Vec<u8>);

/// How an order ended: the status line, the generated texts (prompt, text), the
/// evaluation's perplexity.
type Outcome = (String, Vec<(String, String)>, Option<String>);

/// Everything one order needs, cloned into the async flow.
struct Order {
    nft: String,
    quote: Quote,
    chain: ChainInfo,
    account: Address,
    provider: Provider,
    dataset: Option<Dataset>,
    /// The API's upload caps (`GET /api/uploads`), when read.
    limits: Option<UploadLimits>,
    terms: QuoteTerms,
    say: Callback<String>,
    /// Told the `startOrder` transaction once it is mined (from then on the order is paid).
    placed: Callback<String>,
}

/// Sends the dataset by direct upload (a `create-upload` signature, then its PUT); the
/// upload id the submit names.
async fn upload_dataset(o: &Order, d: &[u8]) -> Result<String, String> {
    let f = in_memory("dataset", d)?;
    if let Some(l) = &o.limits {
        check_files(l, UploadPurpose::Dataset, &[("dataset", f.bytes)])?;
    }
    let book = &o.chain.address_book;
    let domain = ReceiptDomain::new(book.chain_id, book.lineage);
    o.say.emit(format!(
        "Sign the upload of your dataset ({}, SHA-256 {}) in your wallet (a signature, no transaction)…",
        size(f.bytes),
        f.sha256.short()
    ));
    let grant =
        declare(&o.provider, o.account, &domain, UploadPurpose::Dataset, std::slice::from_ref(&f))
            .await?;
    let say = o.say.clone();
    let total = f.bytes as f64;
    let progress = std::rc::Rc::new(move |sent: f64| {
        say.emit(format!(
            "Uploading your dataset: {:.0}% of {total:.0} bytes…",
            100.0 * sent / total.max(1.0)
        ))
    });
    send(&grant, &[f], progress).await?;
    Ok(grant.upload_id)
}

/// The transactions, then the signed submit. Returns the job id and the salt.
async fn place(o: &Order) -> Result<(String, Hash32), String> {
    let (p, me, book) = (&o.provider, o.account, &o.chain.address_book);
    let fee = check_fee(&o.quote, book, &o.nft, &o.terms)?;
    let datatoken: Address =
        o.quote.datatoken.parse().map_err(|_| "the quote's datatoken is not an address")?;
    o.say.emit("Reading your balances through your wallet…".into());
    let ocean = book.ocean.ok_or("the deployment names no OCEAN token")?;
    let state = ChainState {
        datatokens: balance(p, datatoken, me).await?,
        ocean: balance(p, ocean, me).await?,
        cost: match o.quote.exchange_id {
            Some(x) => Some(parse_cost(
                &ask(p, "eth_call", &cost_call(book, alloy::primitives::B256::from(x.0))).await?,
            )?),
            None => None,
        },
        royalty: parse_market_fee(&ask(p, "eth_call", &market_fee_call(datatoken)).await?)?,
    };
    let txs = plan(&o.quote, book, &fee, me, &state)?;
    // The dataset goes once the plan holds (balances checked) and before anything is paid:
    // a refused or failed upload costs nothing. The grant outlives the transactions
    // (`validity_secs`, 15 minutes by default); the submit sends it again if not.
    let mut upload = match &o.dataset {
        Some((_, d)) => Some(
            upload_dataset(o, d)
                .await
                .map_err(|e| format!("Not ordered: {e}. Nothing was paid."))?,
        ),
        None => None,
    };
    let n = txs.len();
    let mut order = None;
    for (i, tx) in txs.iter().enumerate() {
        o.say.emit(format!("Step {} of {n}: {}. Confirm in your wallet…", i + 1, tx.words));
        let sent = ask(p, "eth_sendTransaction", &tx.params(me)).await.map_err(|e| {
            let before = if i == 0 {
                "nothing was sent".to_string()
            } else {
                format!("{i} earlier transaction(s) were sent (approvals only allow spending)")
            };
            format!("Stopped at step {} of {n}: {e}; {before}.", i + 1)
        })?;
        o.say.emit(format!("Step {} of {n}: {}. Waiting for it to be mined…", i + 1, tx.words));
        let block = mined(p, &sent).await?;
        order = Some((sent, block));
    }
    let (order_tx, block) = order.ok_or("no order was placed")?;
    let tx = order_tx.as_str().unwrap_or_default().to_string();
    o.placed.emit(tx.clone());
    let unused = |e: String| format!("{e}. Your order {tx} is paid but no job uses it yet.");
    let need = o.chain.min_confirmations;
    loop {
        let head = parse_quantity(&ask(p, "eth_blockNumber", "[]").await?).unwrap_or(0);
        let have = head.saturating_sub(block) + 1;
        if have >= need {
            break;
        }
        o.say.emit(format!("Order placed; waiting for {need} confirmations ({have} so far)…"));
        sleep(1000).await;
    }
    let salt = Hash32(random::<32>()?);
    let req = JobRequest {
        model: o.quote.model.clone(),
        order_tx: tx.clone(),
        consumer: format!("{me:#x}"),
        params: o.terms.params.clone(),
        dataset_sha256: o.dataset.as_ref().map(|(_, d)| Hash32(Sha256::digest(d).into())),
        salt,
        nonce: nonce_of(&random::<16>()?),
        expires_at: now_secs() + REQUEST_VALIDITY_SECS,
    };
    let body = serde_json::to_string(&req).map_err(|e| e.to_string())?;
    let domain = ReceiptDomain::new(book.chain_id, book.lineage);
    o.say.emit(
        "Order placed. Sign the job request in your wallet (a signature, no transaction)…".into(),
    );
    let sig = ask(
        p,
        "eth_signTypedData_v4",
        &sign_params(me, &submit_typed_data(&domain, body.as_bytes())?),
    )
    .await
    .map_err(|e| unused(format!("The job was not submitted: {e}")))?;
    let sig = sig.as_str().ok_or("the wallet returned no signature")?.to_string();
    let mut uploaded_again = false;
    for _ in 0..120 {
        let mut headers = vec![("x-posthuman-signature", sig.clone())];
        if let Some(id) = &upload {
            headers.push((UPLOAD_HEADER, id.clone()));
        }
        o.say.emit("Submitting the job…".into());
        let (status, text) =
            net::request("POST", "/api/jobs", Some(&JsValue::from_str(&body)), &headers, true)
                .await?;
        // 425: the order has fewer confirmations than the API needs; resend unchanged.
        if status == 425 {
            sleep(1000).await;
            continue;
        }
        // The upload ran out while the order was being paid and confirmed: send the dataset
        // once more (another signature) rather than leave a paid order unused.
        let error = posthuman_receipts::json::from_str::<ErrorBody>(&text)
            .map(|e| e.error)
            .unwrap_or_default();
        if (error == code::EXPIRED || error == code::UNKNOWN)
            && !uploaded_again
            && let Some((_, d)) = &o.dataset
        {
            uploaded_again = true;
            o.say.emit(
                "Your dataset's upload expired while the order was paid; sending it again…".into(),
            );
            upload = Some(
                upload_dataset(o, d)
                    .await
                    .map_err(|e| unused(format!("The job was not submitted: {e}")))?,
            );
            continue;
        }
        if (400..500).contains(&status) {
            return Err(unused(format!("The API refused the job: {}", api_refusal(status, &text))));
        }
        let s: SubmittedView = answer("/api/jobs", status, &text)
            .map_err(|e| unused(format!("The API refused the job: {e}")))?;
        return Ok((s.job_id, salt));
    }
    Err("the API kept answering that the order is too recent; submit again later".into())
}

/// Follows the job until nothing more happens to it (each progress report is told to
/// `seen`); the last view.
async fn follow(
    id: &str,
    say: &Callback<String>,
    seen: &Callback<JobProgress>,
) -> Result<JobView, String> {
    loop {
        let v: JobView = net::get_json(&format!("/api/jobs/{id}")).await?;
        if let Some(p) = &v.progress {
            seen.emit(p.clone());
        }
        match &v.state {
            JobStateView::Failed { reason, order_reusable, .. } => {
                return Err(format!(
                    "Job {id} failed: {reason}.{}",
                    if *order_reusable {
                        " Its order was released: it can pay for a retry."
                    } else {
                        ""
                    }
                ));
            }
            JobStateView::Succeeded if !v.in_flight() => return Ok(v),
            _ => {}
        }
        let line = v.progress.as_ref().map(|p| progress(p).1).unwrap_or_else(|| "queued".into());
        say.emit(format!("Job {id}: {line}"));
        sleep(1000).await;
    }
}

/// The result, read with a signed request (only the buyer may).
async fn read_result(o: &Order, id: &str) -> Result<Value, String> {
    o.say.emit("Sign the result read in your wallet (a signature, no transaction)…".into());
    signed_read(&o.chain, &o.provider, o.account, id).await
}

/// A job's result read with `account`'s `read-result` signature through its wallet (the job
/// page uses it too, for the buyer's whole loss curve).
pub(super) async fn signed_read(
    chain: &ChainInfo,
    provider: &Provider,
    account: Address,
    id: &str,
) -> Result<Value, String> {
    let book = &chain.address_book;
    let domain = ReceiptDomain::new(book.chain_id, book.lineage);
    let expires = now_secs() + REQUEST_VALIDITY_SECS;
    let sig = ask(
        provider,
        "eth_signTypedData_v4",
        &sign_params(account, &read_typed_data(&domain, id, expires)),
    )
    .await
    .map_err(|e| format!("The result was not read: {e}"))?;
    let sig = sig.as_str().ok_or("the wallet returned no signature")?;
    let path = format!("/api/jobs/{id}/result");
    let (status, text) =
        net::request("GET", &path, None, &read_headers(sig, expires, account), false).await?;
    answer(&path, status, &text)
}

fn input(
    id: &'static str,
    label: &'static str,
    value: &str,
    set: Callback<String>,
    help: String,
) -> Html {
    field(id, label, value, set, help, "decimal")
}

/// A labelled text box with its help; `mode` is the on-screen keyboard it asks for.
pub(super) fn field(
    id: &'static str,
    label: &'static str,
    value: &str,
    set: Callback<String>,
    help: String,
    mode: &'static str,
) -> Html {
    let oninput = Callback::from(move |e: InputEvent| {
        if let Some(i) = e.target_dyn_into::<web_sys::HtmlInputElement>() {
            set.emit(i.value());
        }
    });
    html! {
        <p><label for={id}>{ label }</label>{ " " }
           <input id={id} value={value.to_string()} {oninput} inputmode={mode} aria-describedby={format!("{id}-help")} />
           { " " }<small id={format!("{id}-help")}>{ help }</small></p>
    }
}

fn quote_table(q: &Quote, terms: Option<&QuoteTerms>) -> Html {
    let royalty = q.royalty.amount.parse::<u128>().map(Ocean).unwrap_or_default();
    let e = &q.estimate;
    let method = terms.and_then(|t| train_method(&t.params));
    html! { <>
        <table id="quote">
            <caption>{ format!("Quote for this {} job", q.kind) }
                if let Some(m) = method { <span id="quote-method">{ format!(": {m}") }</span> }</caption>
            <tr><th scope="col">{ "component" }</th><th scope="col">{ "formula" }</th><th scope="col">{ "OCEAN" }</th></tr>
            { for q.breakdown.lines.iter().map(|l| html! {
                <tr class="quote-line"><td>{ l.label.clone() }</td><td>{ l.formula.clone() }</td><td>{ l.amount.to_string() }</td></tr>
            }) }
            <tr id="quote-total"><th scope="row">{ "compute fee (total)" }</th><td>{ "paid to the operator inside startOrder" }</td><td>{ q.breakdown.total.to_string() }</td></tr>
            <tr><th scope="row">{ "royalty" }</th><td>{ q.royalty.label.clone() }</td><td>{ royalty.to_string() }</td></tr>
            <tr><th scope="row">{ "datatoken" }</th><td>{ "spent by startOrder" }</td><td>{ format!("{} datatoken", tokens(&q.datatokens)) }</td></tr>
        </table>
        <p>{ format!("It buys {} tokens, {} FLOPs, {} checkpoint bytes (~{} s on the GPU, ~{} s on a CPU); wall-clock limit {} s. Valid until {}.",
            e.tokens, e.flops, e.checkpoint_bytes, e.seconds_gpu, e.seconds_cpu, q.budget.max_seconds, utc(q.expires_at)) }</p>
        <p>{ "When you confirm, your wallet will ask you, one at a time:" }</p>
        <ol id="order-plan">
            if q.kind != JobKind::Infer {
                <li id="order-plan-upload">{ "sign the upload of your dataset (its size and SHA-256; a signature, no transaction); it then goes straight to the operator's private store, before anything is paid;" }</li>
            }
            <li>{ match &q.price {
                Some(p) => format!("only if you hold no datatoken of this model: allow the exchange to take about {} OCEAN, then buy one datatoken with it;", tokens(p)),
                None => "(this model is not on sale: you need a datatoken already);".into(),
            } }</li>
            <li>{ format!("allow the datatoken to take the compute fee ({}) and the royalty;", q.breakdown.total) }</li>
            <li>{ "start the order (startOrder): spend one datatoken, pay the fee;" }</li>
            <li>{ "sign the job request (a signature, no transaction);" }</li>
            <li>{ if q.kind == JobKind::Train {
                "sign the read of your result, the training metrics (a signature, no transaction)."
            } else {
                "sign the read of your result (a signature, no transaction)."
            } }</li>
        </ol>
    </> }
}

#[function_component]
pub fn OrderPanel(p: &OrderProps) -> Html {
    let wallet = use_context::<WalletHandle>();
    let chain = use_json::<ChainInfo>("/api/chain".into());
    // The API's upload caps (named apart from `job::limits`, the parameters' bounds).
    let caps = use_json::<UploadLimits>("/api/uploads".into());
    let form = use_state(|| {
        OrderForm::new(JobKind::Infer)
            .within_context(p.n_positions)
            .for_architecture(&p.architecture)
    });
    let file: Rc<RefCell<Option<web_sys::File>>> = use_mut_ref(|| None);
    // The dataset as read and checked when quoted: exactly these bytes are hashed, signed
    // and uploaded (a file edited on disk after the quote changes nothing).
    let data: Rc<RefCell<Option<Dataset>>> = use_mut_ref(|| None);
    let panel = use_state(Panel::default);
    // The latest panel for async flows (a handle's deref is the state at its render).
    let latest = use_mut_ref(Panel::default);
    *latest.borrow_mut() = (*panel).clone();
    let update = {
        let (panel, latest) = (panel.clone(), latest.clone());
        Rc::new(move |f: &dyn Fn(&mut Panel)| {
            let mut p = latest.borrow().clone();
            f(&mut p);
            *latest.borrow_mut() = p.clone();
            panel.set(p);
        })
    };
    let set = |f: fn(&mut OrderForm, String)| {
        let (form, update) = (form.clone(), update.clone());
        Callback::from(move |v: String| {
            let mut x = (*form).clone();
            f(&mut x, v);
            form.set(x);
            update(&|p: &mut Panel| p.quote = None);
        })
    };
    let onkind = {
        let (form, update) = (form.clone(), update.clone());
        Callback::from(move |e: Event| {
            let v = e
                .target_dyn_into::<web_sys::HtmlSelectElement>()
                .map(|s| s.value())
                .unwrap_or_default();
            let kind = match v.as_str() {
                "train" => JobKind::Train,
                "evaluate" => JobKind::Evaluate,
                _ => JobKind::Infer,
            };
            form.set(OrderForm { kind: Some(kind), ..(*form).clone() });
            update(&|p: &mut Panel| p.quote = None);
        })
    };
    let onfile = {
        let (form, file, update) = (form.clone(), file.clone(), update.clone());
        Callback::from(move |e: Event| {
            let f = e
                .target_dyn_into::<web_sys::HtmlInputElement>()
                .and_then(|i| i.files())
                .and_then(|fs| fs.get(0));
            form.set(OrderForm {
                dataset_bytes: f.as_ref().map(|f| f.size() as u64),
                ..(*form).clone()
            });
            *file.borrow_mut() = f;
            update(&|p: &mut Panel| p.quote = None);
        })
    };
    let onquote = {
        let (form, file, data, update, nft) =
            (form.clone(), file.clone(), data.clone(), update.clone(), p.nft.clone());
        let n_positions = p.n_positions;
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let refuse = {
                let update = update.clone();
                move |err: posthuman_types::SpecError| {
                    let msg = format!("Not quoted: {err}. Nothing was sent.");
                    update(&|p: &mut Panel| {
                        (p.quote, p.status, p.error, p.busy) = (None, msg.clone(), true, false);
                    });
                }
            };
            let (params, _) = match form.params(n_positions) {
                Ok(x) => x,
                Err(err) => return refuse(err),
            };
            update(&|p: &mut Panel| {
                (p.quote, p.status, p.error, p.busy) =
                    (None, "Asking the API for a quote…".into(), false, true);
                (p.order_tx, p.job, p.salt, p.done) = (None, None, None, false);
                (p.texts, p.perplexity, p.evaluation) = (vec![], None, None);
                p.curve = vec![];
            });
            let picked = file.borrow().clone();
            let (update, nft, data) = (update.clone(), nft.clone(), data.clone());
            wasm_bindgen_futures::spawn_local(async move {
                *data.borrow_mut() = None;
                let mut dataset_bytes = 0;
                if params.kind() != JobKind::Infer {
                    let Some(f) = picked else { return };
                    let bytes = match file_bytes(&f).await {
                        Ok(b) => b,
                        Err(e) => {
                            return refuse(posthuman_types::SpecError {
                                field: "dataset",
                                reason: e,
                            });
                        }
                    };
                    if let Err(e) = check_dataset(&f.name(), &bytes) {
                        return refuse(e);
                    }
                    dataset_bytes = bytes.len() as u64;
                    *data.borrow_mut() = Some((f.name(), bytes));
                }
                let terms = QuoteTerms { params, dataset_bytes };
                let r = get_quote(&nft, &terms).await;
                update(&|p: &mut Panel| {
                    p.busy = false;
                    match &r {
                        Ok(q) => {
                            (p.quote, p.terms) = (Some(q.clone()), Some(terms.clone()));
                            p.status = format!(
                                "Quoted: {} compute fee + 1 datatoken. Nothing is sent until you confirm.",
                                q.breakdown.total
                            );
                            p.error = false;
                        }
                        Err(e) => (p.status, p.error) = (format!("{e}."), true),
                    }
                });
            });
        })
    };
    let onconfirm = {
        let (data, update, nft, wallet, chain) =
            (data.clone(), update.clone(), p.nft.clone(), wallet.clone(), chain.clone());
        let limits = match &caps {
            Load::Ready(l) => Some(l.clone()),
            _ => None,
        };
        let latest = latest.clone();
        Callback::from(move |_: MouseEvent| {
            let fail = |m: String| update(&|p: &mut Panel| (p.status, p.error) = (m.clone(), true));
            let (Some(quote), Some(terms)) =
                (latest.borrow().quote.clone(), latest.borrow().terms.clone())
            else {
                return;
            };
            let Load::Ready(chain) = chain.clone() else {
                return fail(
                    "The deployment's chain is not known yet; try again in a moment.".into(),
                );
            };
            let Some((account, provider)) = wallet.as_ref().and_then(|w| w.connected()) else {
                return fail("Connect your wallet (the button at the top) to order.".into());
            };
            let have = wallet.as_ref().and_then(|w| w.chain_id);
            if have != Some(chain.address_book.chain_id) {
                return fail(format!(
                    "Wrong network: your wallet is on {}; switch to {} (top of the page) to order. Nothing was sent.",
                    have.map(network_name).unwrap_or_else(|| "an unknown network".into()),
                    network_name(chain.address_book.chain_id)
                ));
            }
            let picked = data.borrow().clone();
            update(&|p: &mut Panel| {
                (p.busy, p.error, p.job, p.texts, p.done) = (true, false, None, vec![], false);
                (p.salt, p.perplexity, p.evaluation) = (None, None, None);
                (p.curve, p.curve_source) = (vec![], "live");
            });
            let say = {
                let update = update.clone();
                Callback::from(move |m: String| {
                    update(&|p: &mut Panel| (p.status, p.error) = (m.clone(), false))
                })
            };
            let (update, nft, limits) = (update.clone(), nft.clone(), limits.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let run = async {
                    let dataset = match (terms.params.kind(), picked) {
                        (JobKind::Infer, _) => None,
                        (_, Some(d)) => Some(d),
                        (_, None) => return Err("pick a dataset file and quote again".to_string()),
                    };
                    let placed = {
                        let update = update.clone();
                        Callback::from(move |tx: String| {
                            update(&|p: &mut Panel| p.order_tx = Some(tx.clone()))
                        })
                    };
                    let o = Order {
                        nft,
                        quote,
                        chain,
                        account,
                        provider,
                        dataset,
                        limits,
                        terms,
                        say,
                        placed,
                    };
                    let (id, salt) = place(&o).await?;
                    update(&|p: &mut Panel| (p.job, p.salt) = (Some(id.clone()), Some(salt)));
                    let seen = {
                        let update = update.clone();
                        Callback::from(move |pr: JobProgress| {
                            update(&|p: &mut Panel| crate::chart::accumulate(&mut p.curve, &pr))
                        })
                    };
                    let v = follow(&id, &o.say, &seen).await?;
                    if v.kind == JobKind::Train {
                        let child = v.derived_model.map(|c| c.nft).unwrap_or_default();
                        // The worker's own curve replaces the points seen while polling
                        // (those miss the steps between two polls). The model is trained
                        // either way: a declined read only leaves the live curve.
                        let note = match read_result(&o, &id).await {
                            Ok(r) => {
                                if let Some(c) = loss_curve(&r) {
                                    update(&|p: &mut Panel| {
                                        (p.curve, p.curve_source) = (c.clone(), "metrics")
                                    });
                                }
                                String::new()
                            }
                            Err(e) => format!(" The loss curve is the one seen live: {e}."),
                        };
                        return Ok((
                            format!("Job {id} done: the derived model is {child}.{note}"),
                            vec![],
                            None,
                        ));
                    }
                    let r = read_result(&o, &id).await?;
                    let ev = evaluation(&r);
                    update(&|p: &mut Panel| p.evaluation = ev.clone());
                    let ppl = ev.map(|(x, _)| {
                        if x.is_finite() { format!("{x:.3}") } else { "∞ (unbounded)".into() }
                    });
                    Ok((format!("Job {id} done."), completions(&r), ppl))
                };
                let r: Result<Outcome, String> = run.await;
                update(&|p: &mut Panel| {
                    p.busy = false;
                    match &r {
                        Ok((m, texts, ppl)) => {
                            (p.status, p.error, p.done) = (m.clone(), false, true);
                            (p.texts, p.perplexity) = (texts.clone(), ppl.clone());
                        }
                        Err(e) => (p.status, p.error) = (e.clone(), true),
                    }
                });
            });
        })
    };
    let onmethod = {
        let (form, update) = (form.clone(), update.clone());
        Callback::from(move |e: Event| {
            if let Some(i) = e.target_dyn_into::<web_sys::HtmlInputElement>() {
                form.set(OrderForm { lora: i.value() == "lora", ..(*form).clone() });
                update(&|p: &mut Panel| p.quote = None);
            }
        })
    };
    let modules = lora_modules(&p.architecture);
    // A ticked or unticked module: the list keeps the family's order (the params, and so
    // the quote's terms, do not depend on the clicking order).
    let ontarget = {
        let (form, update) = (form.clone(), update.clone());
        Callback::from(move |e: Event| {
            let Some(i) = e.target_dyn_into::<web_sys::HtmlInputElement>() else { return };
            let (name, on) = (i.value(), i.checked());
            let mut f = (*form).clone();
            // Rebuilt in the family's order.
            let mut ticked = Vec::new();
            for m in modules.unwrap_or_default() {
                let keep = if *m == name { on } else { f.lora_targets.iter().any(|t| t == m) };
                if keep {
                    ticked.push(m.to_string());
                }
            }
            f.lora_targets = ticked;
            form.set(f);
            update(&|p: &mut Panel| p.quote = None);
        })
    };
    let kind = form.kind.unwrap_or(JobKind::Infer);
    let lim = |lo: &str, hi: String| format!("{lo}..={hi}");
    use posthuman_types::job::limits;
    html! {
        <section id="order" aria-labelledby="order-title">
            <h2 id="order-title">{ "Order a job" }</h2>
            <form id="order-form" onsubmit={onquote}>
                <p><label for="order-kind">{ "Job " }</label>
                    <select id="order-kind" onchange={onkind}>
                        <option value="infer" selected={kind == JobKind::Infer}>{ "infer: generate text" }</option>
                        <option value="evaluate" selected={kind == JobKind::Evaluate}>{ "evaluate: perplexity on your data" }</option>
                        <option value="train" selected={kind == JobKind::Train}>{ "train: fine-tune on your data" }</option>
                    </select></p>
                if kind == JobKind::Infer {
                    <p><label for="order-prompt">{ "Prompt" }</label><br />
                       <textarea id="order-prompt" rows="3" value={form.prompt.clone()}
                         oninput={ let s = set(|f, v| f.prompt = v); Callback::from(move |e: InputEvent| {
                             if let Some(t) = e.target_dyn_into::<web_sys::HtmlTextAreaElement>() { s.emit(t.value()) } }) } /></p>
                    { input("order-max-tokens", "Max new tokens", &form.max_new_tokens, set(|f, v| f.max_new_tokens = v), lim("1", limits::MAX_NEW_TOKENS.to_string())) }
                    { input("order-temperature", "Temperature", &form.temperature, set(|f, v| f.temperature = v), "0 (greedy) to 5".into()) }
                } else {
                    <p><label for="order-dataset">{ "Dataset (UTF-8 text file)" }</label>{ " " }
                       <input type="file" id="order-dataset" accept=".txt,text/plain" onchange={onfile} aria-describedby="order-dataset-cap" />
                       { " " }<small id="order-dataset-cap">{ match &caps {
                           Load::Ready(l) => l.cap(UploadPurpose::Dataset, "dataset")
                               .map(|c| format!("at most {} (the API's limit)", size(c))).unwrap_or_default(),
                           Load::Failed(e) => format!("the API's upload limits could not be read: {e}"),
                           Load::Loading => String::new(),
                       } }</small></p>
                    { input("order-context", "Context (tokens)", &form.context, set(|f, v| f.context = v), lim(&limits::MIN_CONTEXT.to_string(), "the model's context".into())) }
                    if kind == JobKind::Evaluate {
                        { input("order-stride", "Stride", &form.stride, set(|f, v| f.stride = v), "1..=context".into()) }
                        <p><label for="order-baseline-label">{ "Baseline (optional)" }</label>{ " " }
                           <input id="order-baseline-label" value={form.baseline_label.clone()} aria-describedby="order-baseline-help"
                             oninput={ let s = set(|f, v| f.baseline_label = v); Callback::from(move |e: InputEvent| {
                                 if let Some(i) = e.target_dyn_into::<web_sys::HtmlInputElement>() { s.emit(i.value()) } }) } />
                           { " " }<small id="order-baseline-help">{ "a name, e.g. the parent model, to compare the perplexity with" }</small></p>
                        { input("order-baseline-ppl", "Baseline perplexity", &form.baseline_perplexity, set(|f, v| f.baseline_perplexity = v), "≥ 1; empty: no baseline".into()) }
                    } else {
                        { input("order-steps", "Steps", &form.steps, set(|f, v| f.steps = v), lim("1", limits::MAX_STEPS.to_string())) }
                        { input("order-lr", "Learning rate", &form.learning_rate, set(|f, v| f.learning_rate = v), format!("{} to {}", limits::MIN_LR, limits::MAX_LR)) }
                        { input("order-batch", "Batch size", &form.batch, set(|f, v| f.batch = v), lim("1", limits::MAX_BATCH.to_string())) }
                        <fieldset id="order-method">
                            <legend>{ "Fine-tune method" }</legend>
                            <label><input type="radio" name="order-method" id="order-method-full" value="full"
                                checked={!form.lora} onchange={onmethod.clone()} />{ " Full: every weight" }</label>{ " " }
                            <label><input type="radio" name="order-method" id="order-method-lora" value="lora"
                                checked={form.lora} disabled={modules.is_none()} onchange={onmethod} />{ " LoRA: a low-rank adapter" }</label>
                            if modules.is_none() {
                                <small>{ format!(" (LoRA: the storefront knows no modules of the family {:?})",
                                    p.architecture.split_whitespace().next().unwrap_or("unknown")) }</small>
                            }
                        </fieldset>
                        if form.lora {
                            { input("order-lora-r", "LoRA rank (r)", &form.lora_r, set(|f, v| f.lora_r = v), lim("1", limits::MAX_LORA_RANK.to_string())) }
                            { input("order-lora-alpha", "LoRA alpha", &form.lora_alpha, set(|f, v| f.lora_alpha = v),
                                format!("the branch is scaled by alpha / r; empty: 2r{}, at most {}",
                                    form.lora_r.trim().parse::<u32>().map(|r| format!(" = {}", 2 * r)).unwrap_or_default(), limits::MAX_LORA_ALPHA)) }
                            { input("order-lora-dropout", "LoRA dropout", &form.lora_dropout, set(|f, v| f.lora_dropout = v), "0 to 0.5".into()) }
                            <fieldset id="order-lora-targets">
                                <legend>{ "Target modules" }</legend>
                                { for modules.unwrap_or_default().iter().map(|m| html! {
                                    <label><input type="checkbox" id={format!("order-lora-target-{m}")} value={m.to_string()}
                                        checked={form.lora_targets.iter().any(|t| t == m)} onchange={ontarget.clone()} />{ format!(" {m}") }</label>
                                }) }
                            </fieldset>
                        }
                        { field("order-name", "Name of the new model", &form.name, set(|f, v| f.name = v),
                            format!("up to {} bytes; empty: \"<this model> · fine-tune N\"", limits::MAX_MODEL_NAME_BYTES), "text") }
                        { field("order-symbol", "Its datatoken symbol", &form.symbol, set(|f, v| f.symbol = v),
                            format!("up to {} letters, digits, '-'; empty: \"<this symbol>-FT<N>\"", limits::MAX_SYMBOL_BYTES), "text") }
                    }
                }
                <button type="submit" id="order-quote" disabled={panel.busy}>{ "Get a quote" }</button>
            </form>
            if let Some(q) = &panel.quote {
                { quote_table(q, panel.terms.as_ref()) }
                if panel.order_tx.is_none() {
                    <button type="button" id="order-confirm" onclick={onconfirm} disabled={panel.busy}>
                        { format!("Confirm and pay {} + 1 datatoken", q.breakdown.total) }</button>
                }
            }
            <p id="order-status" role="status" aria-live="polite" class={if panel.error { "error" } else { "" }}>{ panel.status.clone() }</p>
            if let Some(id) = &panel.job {
                <p id="order-job">{ "Your job: " }<Link to={Route::Job(id.clone())}>{ id.clone() }</Link>
                   { " — " }<Link to={Route::Receipt(id.clone())}>{ "its receipt" }</Link>
                   if let Some(s) = &panel.salt { <br /><small>{ format!("Salt {s}: keep it to prove later which data or prompt the job ran on (stored nowhere else).") }</small> }
                </p>
            }
            if !panel.curve.is_empty() { { loss_chart(&panel.curve, panel.curve_source) } }
            if panel.done {
                <div id="order-result" data-state="done">
                    { for panel.texts.iter().map(|(prompt, text)| html! {
                        <figure class="completion">
                            <figcaption>{ "Generated from " }<strong>{ prompt.clone() }</strong></figcaption>
                            <pre class="text">{ text.clone() }</pre>
                        </figure>
                    }) }
                    if let Some((ppl, base)) = &panel.evaluation {
                        <div class="evaluation">
                            if let Some(ppl) = &panel.perplexity { <p class="perplexity">{ format!("Perplexity {ppl}") }</p> }
                            if let Some((label, b)) = base { <p class="baseline">{ format!("Baseline {label}: {b:.3}") }</p> }
                            { perplexity_chart(*ppl, base.as_ref().map(|(l, b)| (l.as_str(), *b))) }
                        </div>
                    }
                </div>
            }
        </section>
    }
}
