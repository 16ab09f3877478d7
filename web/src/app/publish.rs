//! Publishing a model, the owner's view: pick the model's folder (`webkitdirectory`: its
//! files are taken by name, and those missing are said before anything is signed) or its
//! files one by one, each checked in the page as soon as it is picked (size against the
//! API's caps from `GET /api/uploads`, config, safetensors header, tokenizer); set the
//! listing (name, symbol, description, price) and the reward scheme; the wallet signs the
//! publish request and the files' declaration (two signatures, no transaction); the files
//! go by direct upload ([`super::upload`]: S3 presigned PUTs on AWS) with a progress bar;
//! the publish names the upload; then the new model's page. The checks and the request live
//! in [`crate::publish`] and [`crate::upload`].

use std::cell::RefCell;
use std::rc::Rc;

use posthuman_receipts::ReceiptDomain;
use posthuman_types::SpecError;
use wasm_bindgen::JsValue;
use yew::prelude::*;

use super::order::{ask, now_secs, random};
use super::upload::{Outgoing, declare, read, send, sha256_of};
use super::wallet::WalletHandle;
use super::{Load, Navigator, use_json};
use crate::net::{self, answer};
use crate::order::{REQUEST_VALIDITY_SECS, nonce_of, sign_params};
use crate::publish::{
    PublishForm, check_config, check_header, check_size, check_tokenizer, header_len,
    publish_typed_data,
};
use crate::route::Route;
use crate::upload::{
    MODEL_FILES, UPLOAD_HEADER, UploadLimits, UploadPurpose, api_refusal, check_files, file_name,
    limits_words, pick_folder, refusal, size,
};
use crate::wallet::network_name;
use crate::wire::{ChainInfo, ModelView};
use posthuman_types::publishes::{PublishAccepted, PublishProgress, PublishState, PublishView};

/// The picked files, in [`MODEL_FILES`]' slots (arrays, not maps: a map of each kind put
/// ~10 KB of B-tree code in the wasm).
type Picked = [Option<web_sys::File>; MODEL_FILES.len()];

/// A picked file's check: `None` while it runs, then what it found or why it refused.
type Check = Option<Result<String, String>>;

/// What the page shows.
#[derive(Clone, Debug, Default, PartialEq)]
struct View {
    /// Per [`MODEL_FILES`] slot: its check, when a file is picked for it.
    checks: [Option<Check>; MODEL_FILES.len()],
    /// The last folder picked, in words (which files it gave, which it lacks); and whether
    /// it lacks any.
    folder: Option<(String, bool)>,
    status: String,
    error: bool,
    busy: bool,
    /// Bytes sent and in all, while uploading.
    sent: Option<(f64, f64)>,
    /// Uploaded: the API is checking the files and publishing on chain.
    processing: bool,
}

/// Checks the picked file declared as `name` as the API will (`cap`: the API's, when known);
/// what it found, in words.
async fn check_file(
    name: &'static str,
    f: &web_sys::File,
    cap: Option<u64>,
) -> Result<String, String> {
    let (file, len) = (f.name(), f.size() as u64);
    let words = |e: SpecError| e.to_string();
    check_size(name, &file, len, cap.unwrap_or(u64::MAX)).map_err(words)?;
    match name {
        "config" => {
            let t = check_config(&read(f, 0, len).await?).map_err(words)?;
            Ok(format!("{file}: model_type {t}, {len} bytes"))
        }
        "weights" | "adapter_weights" => {
            let n = header_len(&read(f, 0, 8).await?, len).map_err(words)?;
            let h = check_header(&read(f, 8, 8 + n).await?, n, len).map_err(words)?;
            Ok(format!("{file}: {} tensors, {} parameters, {len} bytes", h.tensors, h.elements))
        }
        "tokenizer" => {
            check_tokenizer(&read(f, 0, len).await?).map_err(words)?;
            Ok(format!("{file}: a tokenizers file, {len} bytes"))
        }
        _ => Ok(format!("{file}: {len} bytes")),
    }
}

/// The files of an input's pick (a folder's, or one file's).
fn input_files(e: &Event) -> Vec<web_sys::File> {
    let Some(list) = e.target_dyn_into::<web_sys::HtmlInputElement>().and_then(|x| x.files())
    else {
        return vec![];
    };
    (0..list.length()).filter_map(|i| list.get(i)).collect()
}

/// A picked file's path inside the picked folder (`folder/config.json`; its bare name when
/// picked alone). `webkitRelativePath` is in every browser but not in `web-sys`.
fn relative_path(f: &web_sys::File) -> String {
    js_sys::Reflect::get(f, &JsValue::from_str("webkitRelativePath"))
        .ok()
        .and_then(|v| v.as_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| f.name())
}

fn field(
    id: &'static str,
    label: &'static str,
    value: &str,
    set: Callback<String>,
    help: &'static str,
) -> Html {
    let oninput = Callback::from(move |e: InputEvent| {
        if let Some(i) = e.target_dyn_into::<web_sys::HtmlInputElement>() {
            set.emit(i.value());
        }
    });
    html! {
        <p><label for={id}>{ label }</label>{ " " }
           <input id={id} value={value.to_string()} {oninput} aria-describedby={format!("{id}-help")} />
           { " " }<small id={format!("{id}-help")}>{ help }</small></p>
    }
}

#[function_component]
pub fn PublishPage() -> Html {
    let wallet = use_context::<WalletHandle>();
    let nav = use_context::<Navigator>();
    let chain = use_json::<ChainInfo>("/api/chain".into());
    let limits = use_json::<UploadLimits>("/api/uploads".into());
    let form = use_state(PublishForm::default);
    let files: Rc<RefCell<Picked>> = use_mut_ref(Default::default);
    let view = use_state(View::default);
    // The latest view for async flows (a handle's deref is the state at its render).
    let latest = use_mut_ref(View::default);
    *latest.borrow_mut() = (*view).clone();
    let update = {
        let (view, latest) = (view.clone(), latest.clone());
        Rc::new(move |f: &dyn Fn(&mut View)| {
            let mut v = latest.borrow().clone();
            f(&mut v);
            *latest.borrow_mut() = v.clone();
            view.set(v);
        })
    };
    let caps = match &limits {
        Load::Ready(l) => Some(l.clone()),
        _ => None,
    };
    let set = |f: fn(&mut PublishForm, String)| {
        let form = form.clone();
        Callback::from(move |v: String| {
            let mut x = (*form).clone();
            f(&mut x, v);
            form.set(x);
        })
    };
    // Takes `f` as the file of slot `i` (none: unpicks it) and checks it.
    let take = {
        let (files, update, caps) = (files.clone(), update.clone(), caps.clone());
        Rc::new(move |i: usize, f: Option<web_sys::File>| {
            files.borrow_mut()[i] = f.clone();
            update(&|v: &mut View| {
                v.checks[i] = f.as_ref().map(|_| None);
                // A refusal about the files is answered by picking another one.
                if v.error && !v.busy {
                    (v.status, v.error) = (String::new(), false);
                }
            });
            let (files, update) = (files.clone(), update.clone());
            let name = MODEL_FILES[i].1;
            let cap = caps.as_ref().and_then(|l| l.cap(UploadPurpose::Model, name));
            wasm_bindgen_futures::spawn_local(async move {
                let Some(f) = f else { return };
                let r = check_file(name, &f, cap).await;
                // Another file picked meanwhile has its own check: this one is stale.
                if files.borrow()[i].as_ref() == Some(&f) {
                    update(&|v: &mut View| v.checks[i] = Some(Some(r.clone())));
                }
            });
        })
    };
    let onfile = |i: usize| {
        let take = take.clone();
        Callback::from(move |e: Event| take(i, input_files(&e).into_iter().next()))
    };
    let onfolder = {
        let (take, update) = (take.clone(), update.clone());
        Callback::from(move |e: Event| {
            let picked = input_files(&e);
            if picked.is_empty() {
                return;
            }
            let paths: Vec<String> = picked.iter().map(relative_path).collect();
            let folder = paths[0].split_once('/').map_or("the folder", |(d, _)| d).to_string();
            let pick = pick_folder(&paths);
            // The folder replaces every earlier pick: what it lacks is said, not kept.
            for slot in 0..MODEL_FILES.len() {
                let f =
                    pick.found.iter().find(|(s, _)| *s == slot).map(|&(_, i)| picked[i].clone());
                take(slot, f);
            }
            let found: Vec<&str> = pick.found.iter().map(|&(s, _)| MODEL_FILES[s].0).collect();
            let mut words = format!("From {folder}: {}.", found.join(", "));
            if !pick.missing.is_empty() {
                words += &format!(" Missing: {}", pick.missing.join(", "));
                if let Some(n) = &pick.note {
                    words += &format!(" ({n})");
                }
                words += ". Nothing is signed or uploaded without them.";
            }
            let lacks = !pick.missing.is_empty();
            update(&|v: &mut View| v.folder = Some((words.clone(), lacks)));
        })
    };
    let onsubmit = {
        let (form, files, update, latest) =
            (form.clone(), files.clone(), update.clone(), latest.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let fail = |m: String| {
                update(&|v: &mut View| (v.status, v.error, v.busy) = (m.clone(), true, false))
            };
            if let Err(e) = form.check() {
                return fail(format!("Not published: {e}. Nothing was signed or uploaded."));
            }
            let picked = files.borrow().clone();
            let checks = latest.borrow().checks.clone();
            for (i, (file, _, required)) in MODEL_FILES.into_iter().enumerate() {
                match (&picked[i], &checks[i]) {
                    (None, _) if required => return fail(format!("Pick the model's {file}.")),
                    (Some(_), Some(None)) => {
                        return fail(format!("{file} is still being checked; try again."));
                    }
                    (Some(_), Some(Some(Err(e)))) => {
                        return fail(format!("Not published: {e}. Nothing was uploaded."));
                    }
                    _ => {}
                }
            }
            let Some(limits) = caps.clone() else {
                return fail(
                    "The API's upload limits are not known yet; try again in a moment.".into(),
                );
            };
            let sizes: Vec<(&str, u64)> = MODEL_FILES
                .iter()
                .zip(&picked)
                .filter_map(|((_, n, _), f)| Some((*n, f.as_ref()?.size() as u64)))
                .collect();
            if let Err(e) = check_files(&limits, UploadPurpose::Model, &sizes) {
                return fail(format!("Not published: {e}. Nothing was signed or uploaded."));
            }
            let Load::Ready(chain) = chain.clone() else {
                return fail(
                    "The deployment's chain is not known yet; try again in a moment.".into(),
                );
            };
            let Some((me, provider)) = wallet.as_ref().and_then(|w| w.connected()) else {
                return fail(
                    "Connect your wallet (the button at the top) to publish: it signs the request."
                        .into(),
                );
            };
            let have = wallet.as_ref().and_then(|w| w.chain_id);
            if have != Some(chain.address_book.chain_id) {
                return fail(format!(
                    "Wrong network: your wallet is on {}; switch to {} (top of the page) to publish. Nothing was signed.",
                    have.map(network_name).unwrap_or_else(|| "an unknown network".into()),
                    network_name(chain.address_book.chain_id)
                ));
            }
            let say = {
                let update = update.clone();
                move |m: String| update(&|v: &mut View| (v.status, v.error) = (m.clone(), false))
            };
            update(&|v: &mut View| {
                (v.busy, v.error, v.sent, v.processing) = (true, false, None, false)
            });
            let (form, update, nav) = ((*form).clone(), update.clone(), nav.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let run = async {
                    // In the API's order; each file's SHA-256 goes into the declaration.
                    let total: u64 = sizes.iter().map(|s| s.1).sum();
                    let mut out = Vec::new();
                    let mut hashed = 0;
                    for ((_, name, _), f) in MODEL_FILES.into_iter().zip(&picked) {
                        let Some(f) = f else { continue };
                        let sha = sha256_of(f, |at| {
                            let pct = 100.0 * (hashed + at) as f64 / total.max(1) as f64;
                            say(format!("Hashing the files: {pct:.0}%…"))
                        })
                        .await?;
                        hashed += f.size() as u64;
                        let bytes = f.size() as u64;
                        out.push(Outgoing { name, blob: (**f).clone(), bytes, sha256: sha });
                    }
                    let weights = out.iter().find(|o| o.name == "weights").map(|o| o.sha256);
                    let req = form
                        .request(
                            &format!("{me:#x}"),
                            weights.ok_or("no weights")?,
                            nonce_of(&random::<16>()?),
                            now_secs() + REQUEST_VALIDITY_SECS,
                        )
                        .map_err(|e| format!("Not published: {e}."))?;
                    let body = serde_json::to_string(&req).map_err(|e| e.to_string())?;
                    let book = &chain.address_book;
                    let domain = ReceiptDomain::new(book.chain_id, book.lineage);
                    say("Signature 1 of 2: sign the publish request in your wallet (a signature, no transaction)…".into());
                    let sig = ask(
                        &provider,
                        "eth_signTypedData_v4",
                        &sign_params(me, &publish_typed_data(&domain, body.as_bytes())?),
                    )
                    .await
                    .map_err(|e| format!("Not published: {e}; nothing was uploaded."))?;
                    let sig = sig.as_str().ok_or("the wallet returned no signature")?.to_string();
                    say(format!(
                        "Signature 2 of 2: sign the upload of {} files ({}, each with its SHA-256) in your wallet (a signature, no transaction)…",
                        out.len(),
                        size(total)
                    ));
                    let grant =
                        declare(&provider, me, &domain, UploadPurpose::Model, &out)
                            .await
                            .map_err(|e| format!("Not published: {e}; nothing was uploaded."))?;
                    let progress = {
                        let update = update.clone();
                        Rc::new(move |sent: f64| {
                            let total = total as f64;
                            update(&|v: &mut View| {
                                v.sent = Some((sent, total));
                                v.processing = sent >= total;
                                v.status = if v.processing {
                                    "Uploaded. The API is checking every tensor and publishing the model on chain…".into()
                                } else {
                                    format!(
                                        "Uploading: {:.0}% of {:.0} bytes…",
                                        100.0 * sent / total.max(1.0),
                                        total
                                    )
                                };
                            })
                        })
                    };
                    send(&grant, &out, progress)
                        .await
                        .map_err(|e| format!("Not published: {e}"))?;
                    let (status, text) = net::request(
                        "POST",
                        "/api/models",
                        Some(&JsValue::from_str(&body)),
                        &[("x-posthuman-signature", sig), (UPLOAD_HEADER, grant.upload_id.clone())],
                        true,
                    )
                    .await?;
                    if (400..500).contains(&status) {
                        return Err(format!(
                            "The API refused the model: {}",
                            api_refusal(status, &text)
                        ));
                    }
                    // Accepted: the API checks the weights, stores them and sends the
                    // transactions in the background; its status is polled until the end.
                    let a: PublishAccepted = answer("/api/models", status, &text)
                        .map_err(|e| format!("The API refused the model: {e}"))?;
                    let path = format!("/api/publishes/{}", a.publish_id);
                    loop {
                        let v: PublishView = net::get_json(&path).await?;
                        match v.state {
                            PublishState::Done => {
                                return v
                                    .model
                                    .ok_or_else(|| format!("{path}: done without a model"));
                            }
                            PublishState::Failed => {
                                let f = v
                                    .error
                                    .ok_or_else(|| format!("{path}: failed without a reason"))?;
                                return Err(format!(
                                    "The API refused the model: {}",
                                    refusal(&f.error, &f.message)
                                ));
                            }
                            PublishState::Queued | PublishState::Running => {}
                        }
                        if let Some(p) = v.progress {
                            update(&|view: &mut View| view.status = publish_progress(&p));
                        }
                        net::sleep(250).await;
                    }
                };
                let r: Result<ModelView, String> = run.await;
                update(&|v: &mut View| {
                    v.busy = false;
                    match &r {
                        Ok(m) => {
                            (v.status, v.error) = (
                                format!(
                                    "Published {} ({}) as {}.",
                                    m.card.name, m.card.symbol, m.card.nft
                                ),
                                false,
                            )
                        }
                        Err(e) => {
                            (v.status, v.error, v.sent, v.processing) =
                                (e.clone(), true, None, false)
                        }
                    }
                });
                if let (Ok(m), Some(nav)) = (r, nav) {
                    nav.go(Route::Model(m.card.nft));
                }
            });
        })
    };
    let cap_words = |name: &str| match &limits {
        Load::Ready(l) => l.cap(UploadPurpose::Model, name).map(|c| format!("at most {}", size(c))),
        Load::Failed(e) => Some(format!("the API's limits could not be read: {e}")),
        Load::Loading => None,
    };
    let status_of = |i: usize| match &view.checks[i] {
        None | Some(None) => ("check", String::new(), None),
        Some(Some(Ok(w))) => ("check ok", format!("✓ {w}"), Some("true")),
        Some(Some(Err(e))) => ("check error", e.clone(), Some("false")),
    };
    let file_input = |i: usize, id: &'static str, accept: &'static str| {
        let name = MODEL_FILES[i].1;
        let (class, words, ok) = status_of(i);
        html! {
            <p><label for={id}>{ file_name(name) }</label>{ " " }
               <input type="file" id={id} {accept} onchange={onfile(i)} aria-describedby={format!("{id}-cap {id}-check")} />
               { " " }<small id={format!("{id}-cap")} class="cap">{ cap_words(name).unwrap_or_default() }</small>
               { " " }<span id={format!("{id}-check")} {class} role="status" aria-live="polite" data-ok={ok}>{ words }</span></p>
        }
    };
    // The optional files a folder gave (the inputs above take the three required ones).
    let extras: Vec<usize> =
        (0..MODEL_FILES.len()).filter(|&i| !MODEL_FILES[i].2 && view.checks[i].is_some()).collect();
    html! {
        <section id="publish" aria-labelledby="publish-title">
            <h1 id="publish-title">{ "Publish a model" }</h1>
            <p>{ "The API lists models from its allowed publishers (by default its operator). Your wallet signs two things, and sends no transaction: the publish request, then the upload of the files (their names, sizes and SHA-256). The files then go straight to the operator's private store; the operator puts the model on chain, with its datatoken on sale at your price, and you are its owner of record, paid the remainder of every derivation's reward." }</p>
            <form id="publish-form" {onsubmit}>
                <fieldset>
                    <legend>{ "The model's files (checked here before anything is signed or uploaded)" }</legend>
                    <p><label for="publish-folder">{ "The model's folder" }</label>{ " " }
                       <input type="file" id="publish-folder" webkitdirectory=true multiple=true onchange={onfolder} aria-describedby="publish-folder-help publish-folder-status" />
                       { " " }<small id="publish-folder-help">{ "HF layout: config.json, model.safetensors, tokenizer.json; tokenizer_config.json, generation_config.json, chat_template.jinja and a LoRA adapter's two files are sent when there. Or pick the files one by one below." }</small></p>
                    <p id="publish-folder-status" role="status" aria-live="polite"
                       class={if view.folder.as_ref().is_some_and(|f| f.1) { "error" } else { "" }}>
                       { view.folder.as_ref().map(|f| f.0.clone()).unwrap_or_default() }</p>
                    { file_input(0, "publish-config", ".json,application/json") }
                    { file_input(1, "publish-weights", ".safetensors") }
                    { file_input(2, "publish-tokenizer", ".json,application/json") }
                    if !extras.is_empty() {
                        <ul id="publish-extras">
                            { for extras.iter().map(|&i| { let (class, words, ok) = status_of(i); html! {
                                <li class={class} data-file={MODEL_FILES[i].1} data-ok={ok}>{ words }</li> } }) }
                        </ul>
                    }
                    <p id="publish-limits"><small>{ match &limits {
                        Load::Ready(l) => format!("The API's upload limits: {}.", limits_words(l, UploadPurpose::Model)),
                        Load::Failed(e) => format!("The API's upload limits could not be read: {e}"),
                        Load::Loading => "Reading the API's upload limits…".into(),
                    } }</small></p>
                </fieldset>
                <fieldset>
                    <legend>{ "The listing" }</legend>
                    { field("publish-name", "Name", &form.name, set(|f, v| f.name = v), "1 to 64 bytes") }
                    { field("publish-symbol", "Symbol", &form.symbol, set(|f, v| f.symbol = v), "the datatoken's, 1 to 16 bytes") }
                    <p><label for="publish-description">{ "Description" }</label><br />
                       <textarea id="publish-description" rows="3" value={form.description.clone()}
                         oninput={ let s = set(|f, v| f.description = v); Callback::from(move |e: InputEvent| {
                             if let Some(t) = e.target_dyn_into::<web_sys::HtmlTextAreaElement>() { s.emit(t.value()) } }) } /></p>
                    { field("publish-price", "Price (OCEAN per datatoken)", &form.price, set(|f, v| f.price = v), "one datatoken pays for one job") }
                    { field("publish-license", "Licence", &form.license, set(|f, v| f.license = v), crate::publish::LICENSE_HELP) }
                </fieldset>
                <fieldset>
                    <legend>{ "Reward scheme (for every model derived from this one)" }</legend>
                    { field("publish-reward-total", "Datatokens minted per derivation", &form.reward_total, set(|f, v| f.reward_total = v), "decimal") }
                    { field("publish-reward-first", "Latest trainer's share (basis points)", &form.reward_first_bps, set(|f, v| f.reward_first_bps = v), "each earlier trainer gets half of the one after it; the rest goes to you") }
                    { field("publish-reward-depth", "Trainers paid", &form.reward_depth, set(|f, v| f.reward_depth = v), "1 to 16, most recent first") }
                    { field("publish-royalty", "Lineage royalty (OCEAN per order of a derived model)", &form.royalty, set(|f, v| f.royalty = v), "0 to 10, shared as above") }
                </fieldset>
                <button type="submit" id="publish-submit" disabled={view.busy}>{ "Sign and publish" }</button>
            </form>
            if let Some((sent, total)) = view.sent {
                if view.processing {
                    <progress id="publish-progress" aria-label="publishing on chain" data-sent={sent.to_string()} data-total={total.to_string()} />
                } else {
                    <progress id="publish-progress" aria-label="upload" max={total.to_string()} value={sent.to_string()} data-sent={sent.to_string()} data-total={total.to_string()} />
                }
            }
            <p id="publish-status" role="status" aria-live="polite" class={if view.error { "error" } else { "" }}>{ view.status.clone() }</p>
        </section>
    }
}

/// A running publish's progress in words (the phase, how far, and which transaction).
fn publish_progress(p: &PublishProgress) -> String {
    let what = match p.phase.as_str() {
        "fetching" => "reading the uploaded files back",
        "checking" => "checking every tensor",
        "storing" => "storing the weights privately",
        "chain" => "sending the transactions",
        "listing" => "listing the model",
        other => other,
    };
    let how_far = if p.unit == "bytes" {
        format!("{:.0}% of {} bytes", 100.0 * p.done as f64 / p.total.max(1) as f64, p.total)
    } else {
        format!("{} of {} {}", p.done, p.total, p.unit)
    };
    let step = p.step.as_deref().map(|s| format!(" (now: {s})")).unwrap_or_default();
    format!("Uploaded. The API is publishing: {what}, {how_far}{step}…")
}
