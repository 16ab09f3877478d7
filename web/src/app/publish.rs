//! Publishing a model, the owner's view: pick the three files (each checked in the page as
//! soon as it is picked: size, config, safetensors header, tokenizer), set the listing
//! (name, symbol, description, price) and the reward scheme, sign the request with the
//! wallet (`eth_signTypedData_v4`, the CLI's `publish-model` typed data), upload with a
//! progress bar (`XMLHttpRequest`'s upload events), then go to the new model's page. The
//! checks and the request live in [`crate::publish`].

use std::cell::RefCell;
use std::rc::Rc;

use posthuman_receipts::ReceiptDomain;
use posthuman_types::{Hash32, SpecError};
use sha2::{Digest, Sha256};
use wasm_bindgen_futures::JsFuture;
use yew::prelude::*;

use super::order::{ask, blob, now_secs, random};
use super::wallet::WalletHandle;
use super::{Load, Navigator, use_json};
use crate::net::{self, answer};
use crate::order::{REQUEST_VALIDITY_SECS, nonce_of, sign_params};
use crate::publish::{
    FILES, PublishForm, check_config, check_header, check_size, check_tokenizer, header_len,
    publish_typed_data,
};
use crate::route::Route;
use crate::wallet::network_name;
use crate::wire::{ChainInfo, ModelView};

/// Bytes hashed per read: the weights are never whole in the page's memory.
const CHUNK: u64 = 8 << 20;

/// What the page shows.
#[derive(Clone, Debug, Default, PartialEq)]
struct View {
    /// Per file (config, weights, tokenizer): what the check found, or why it refused.
    checks: [Option<Result<String, String>>; 3],
    status: String,
    error: bool,
    busy: bool,
    /// Bytes sent and in all, while uploading.
    sent: Option<(f64, f64)>,
    /// Uploaded: the API is checking the files and publishing on chain.
    processing: bool,
}

async fn read(f: &web_sys::File, start: u64, end: u64) -> Result<Vec<u8>, String> {
    let part = f
        .slice_with_f64_and_f64(start as f64, end as f64)
        .map_err(|_| format!("could not read {}", f.name()))?;
    let buf = JsFuture::from(part.array_buffer())
        .await
        .map_err(|_| format!("could not read {}", f.name()))?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// Checks file `i` of [`FILES`] as the API will; what it found, in words.
async fn check_file(i: usize, f: &web_sys::File) -> Result<String, String> {
    let (field, _, max) = FILES[i];
    let (name, len) = (f.name(), f.size() as u64);
    let words = |e: SpecError| e.to_string();
    check_size(field, &name, len, max).map_err(words)?;
    match i {
        0 => {
            let t = check_config(&read(f, 0, len).await?).map_err(words)?;
            Ok(format!("{name}: model_type {t}, {len} bytes"))
        }
        1 => {
            let n = header_len(&read(f, 0, 8).await?, len).map_err(words)?;
            let h = check_header(&read(f, 8, 8 + n).await?, n, len).map_err(words)?;
            Ok(format!("{name}: {} tensors, {} parameters, {len} bytes", h.tensors, h.elements))
        }
        _ => {
            check_tokenizer(&read(f, 0, len).await?).map_err(words)?;
            Ok(format!("{name}: a tokenizers file, {len} bytes"))
        }
    }
}

/// SHA-256 of the weights, a chunk at a time (`progress`: the share hashed).
async fn weights_sha256(f: &web_sys::File, progress: impl Fn(f64)) -> Result<Hash32, String> {
    let len = f.size() as u64;
    let mut h = Sha256::new();
    let mut at = 0;
    while at < len {
        let end = (at + CHUNK).min(len);
        h.update(read(f, at, end).await?);
        at = end;
        progress(at as f64 / len as f64);
    }
    Ok(Hash32(h.finalize().into()))
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
    let form = use_state(PublishForm::default);
    let files: Rc<RefCell<[Option<web_sys::File>; 3]>> = use_mut_ref(Default::default);
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
    let set = |f: fn(&mut PublishForm, String)| {
        let form = form.clone();
        Callback::from(move |v: String| {
            let mut x = (*form).clone();
            f(&mut x, v);
            form.set(x);
        })
    };
    let onfile = |i: usize| {
        let (files, update) = (files.clone(), update.clone());
        Callback::from(move |e: Event| {
            let f = e
                .target_dyn_into::<web_sys::HtmlInputElement>()
                .and_then(|x| x.files())
                .and_then(|fs| fs.get(0));
            files.borrow_mut()[i] = f.clone();
            update(&|v: &mut View| {
                v.checks[i] = None;
                // A refusal about the files is answered by picking another one.
                if v.error && !v.busy {
                    (v.status, v.error) = (String::new(), false);
                }
            });
            let (files, update) = (files.clone(), update.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let Some(f) = f else { return };
                let r = check_file(i, &f).await;
                // Another file picked meanwhile has its own check: this one is stale.
                if files.borrow()[i].as_ref() == Some(&f) {
                    update(&|v: &mut View| v.checks[i] = Some(r.clone()));
                }
            });
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
            for (i, (_, name, _)) in FILES.iter().enumerate() {
                match (&picked[i], &checks[i]) {
                    (None, _) => return fail(format!("Pick the model's {name}.")),
                    (Some(_), None) => {
                        return fail(format!("{name} is still being checked; try again."));
                    }
                    (Some(_), Some(Err(e))) => {
                        return fail(format!("Not published: {e}. Nothing was uploaded."));
                    }
                    _ => {}
                }
            }
            let [Some(config), Some(weights), Some(tokenizer)] = picked else { return };
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
                    let sha = weights_sha256(&weights, |x| {
                        say(format!("Hashing the weights: {:.0}%…", x * 100.0))
                    })
                    .await?;
                    let req = form
                        .request(
                            &format!("{me:#x}"),
                            sha,
                            nonce_of(&random::<16>()?),
                            now_secs() + REQUEST_VALIDITY_SECS,
                        )
                        .map_err(|e| format!("Not published: {e}."))?;
                    let body = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
                    let book = &chain.address_book;
                    let domain = ReceiptDomain::new(book.chain_id, book.lineage);
                    say("Sign the publish request in your wallet (a signature, no transaction)…"
                        .into());
                    let sig = ask(
                        &provider,
                        "eth_signTypedData_v4",
                        &sign_params(me, &publish_typed_data(&domain, &body)?),
                    )
                    .await
                    .map_err(|e| format!("Not published: {e}; nothing was uploaded."))?;
                    let sig = sig.as_str().ok_or("the wallet returned no signature")?;
                    // The CLI's parts in the CLI's order: the API checks the signed request
                    // before it reads the files.
                    let built = || -> Result<web_sys::FormData, wasm_bindgen::JsValue> {
                        let f = web_sys::FormData::new()?;
                        f.append_with_blob("request", &blob(&body).map_err(|_| "blob")?)?;
                        f.append_with_str("signature", sig)?;
                        f.append_with_blob_and_filename("config", &config, "config.json")?;
                        f.append_with_blob_and_filename("weights", &weights, "model.safetensors")?;
                        f.append_with_blob_and_filename("tokenizer", &tokenizer, "tokenizer.json")?;
                        Ok(f)
                    };
                    let data = built().map_err(|_| "could not build the upload".to_string())?;
                    say("Uploading the files…".into());
                    let progress = {
                        let update = update.clone();
                        move |sent: f64, total: f64| {
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
                        }
                    };
                    let (status, text) = net::upload("/api/models", &data, progress).await?;
                    let m: ModelView = answer("/api/models", status, &text)
                        .map_err(|e| format!("The API refused the model: {e}"))?;
                    Ok(m)
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
    let file_input = |i: usize, id: &'static str, accept: &'static str| {
        let (_, name, _) = FILES[i];
        let (class, words) = match &view.checks[i] {
            None => ("check", String::new()),
            Some(Ok(w)) => ("check ok", format!("✓ {w}")),
            Some(Err(e)) => ("check error", e.clone()),
        };
        html! {
            <p><label for={id}>{ name }</label>{ " " }
               <input type="file" id={id} {accept} onchange={onfile(i)} aria-describedby={format!("{id}-check")} />
               { " " }<span id={format!("{id}-check")} {class} role="status" aria-live="polite"
                  data-ok={view.checks[i].as_ref().map(|r| r.is_ok().to_string())}>{ words }</span></p>
        }
    };
    html! {
        <section id="publish" aria-labelledby="publish-title">
            <h1 id="publish-title">{ "Publish a model" }</h1>
            <p>{ "The API lists models from its allowed publishers (by default its operator). Your wallet signs the request (a signature, no transaction); the operator puts the model on chain, with its datatoken on sale at your price, and you are its owner of record, paid the remainder of every derivation's reward." }</p>
            <form id="publish-form" {onsubmit}>
                <fieldset>
                    <legend>{ "The model's files (checked here before anything is uploaded)" }</legend>
                    { file_input(0, "publish-config", ".json,application/json") }
                    { file_input(1, "publish-weights", ".safetensors") }
                    { file_input(2, "publish-tokenizer", ".json,application/json") }
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
