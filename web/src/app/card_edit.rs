//! "Edit card" on a model's page, shown to its owner of record only (the connected wallet is
//! a root's publisher or a derived model's trainer): the description, the owner's tags and a
//! root's licence (a derived model keeps its root's, so its form has no licence box),
//! checked with the API's own rules (`posthuman_types::card`) before the wallet is asked,
//! signed as the CLI signs `models edit` (`edit-card` typed data), then posted; the API
//! updates the card and re-sets the model's DDO on chain. A form drawn by the model page with
//! its own state, like the sale form (each component type costs the module kilobytes).

use alloy::primitives::Address;
use posthuman_receipts::ReceiptDomain;
use posthuman_receipts::request::{EDIT_CARD, SignableRequest};
use posthuman_types::ModelCard;
use posthuman_types::card::{CardEdit, MAX_DESCRIPTION_BYTES, MAX_TAGS, split_tags};
use wasm_bindgen::JsValue;
use yew::prelude::*;

use super::Load;
use super::order::{ask, field, now_secs, random};
use super::wallet::WalletHandle;
use crate::net::{self, answer};
use crate::order::{REQUEST_VALIDITY_SECS, nonce_of};
use crate::wire::{ChainInfo, ModelView};

/// The form as typed (`None`: untouched, the card's value shows), and its status line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CardForm {
    pub description: Option<String>,
    pub tags: Option<String>,
    pub license: Option<String>,
    pub status: String,
    pub error: bool,
}

/// The form, if the connected wallet is the model's owner of record.
pub fn card_form(
    form: &UseStateHandle<CardForm>,
    wallet: Option<&WalletHandle>,
    chain: &Load<ChainInfo>,
    card: &ModelCard,
) -> Html {
    let connected = wallet.and_then(|w| w.connected());
    let owner = card.owner_of_record().parse::<Address>().ok();
    if owner.is_none() || connected.as_ref().map(|c| c.0) != owner {
        return html! {};
    }
    let description = form.description.clone().unwrap_or_else(|| card.description.clone());
    let tags = form.tags.clone().unwrap_or_else(|| card.tags.join(", "));
    let root = card.parent.is_none();
    let license = form.license.clone().unwrap_or_else(|| card.license.clone().unwrap_or_default());
    let ondescription = {
        let form = form.clone();
        Callback::from(move |e: InputEvent| {
            if let Some(t) = e.target_dyn_into::<web_sys::HtmlTextAreaElement>() {
                form.set(CardForm { description: Some(t.value()), ..(*form).clone() });
            }
        })
    };
    let ontags = {
        let form = form.clone();
        Callback::from(move |v: String| form.set(CardForm { tags: Some(v), ..(*form).clone() }))
    };
    let onlicense = {
        let form = form.clone();
        Callback::from(move |v: String| form.set(CardForm { license: Some(v), ..(*form).clone() }))
    };
    let onsubmit = {
        let (form, chain, card) = (form.clone(), chain.clone(), card.clone());
        let have = wallet.and_then(|w| w.chain_id);
        let (description, tags, license) = (description.clone(), tags.clone(), license.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let typed = (*form).clone();
            let say = {
                let form = form.clone();
                move |status: String, error: bool| {
                    form.set(CardForm { status, error, ..typed.clone() })
                }
            };
            let (Load::Ready(chain), Some((me, provider))) = (&chain, connected.clone()) else {
                return say("The deployment's chain is not known yet.".into(), true);
            };
            if have != Some(chain.address_book.chain_id) {
                return say(
                    "Wrong network: switch your wallet first. Nothing was signed.".into(),
                    true,
                );
            }
            let Ok(r) = random::<16>() else {
                return say("The browser gave no randomness.".into(), true);
            };
            let edit = CardEdit {
                model: card.nft.clone(),
                description: Some(description.clone()),
                tags: Some(split_tags(&tags)),
                license: root.then(|| license.clone()),
                nonce: nonce_of(&r),
                expires_at: now_secs() + REQUEST_VALIDITY_SECS,
            };
            // The API's own rules, in words, before the wallet is asked.
            if let Err(e) = edit.apply(&card) {
                return say(format!("Not saved: the {} {}.", e.field, e.reason), true);
            }
            let book = &chain.address_book;
            let domain = ReceiptDomain::new(book.chain_id, book.lineage);
            wasm_bindgen_futures::spawn_local(async move {
                let run = async {
                    let body = serde_json::to_string(&edit).map_err(|e| e.to_string())?;
                    let typed = SignableRequest::of_json_body(EDIT_CARD, body.as_bytes())
                        .map_err(|e| e.to_string())?
                        .typed_data(&domain)
                        .to_string();
                    say(
                        "Sign the edit in your wallet (a signature, no transaction)…".into(),
                        false,
                    );
                    let params = crate::order::sign_params(me, &typed);
                    let sig = ask(&provider, "eth_signTypedData_v4", &params).await?;
                    let sig = sig.as_str().ok_or("the wallet returned no signature")?.to_string();
                    say("Saving the card; the API sets the model's DDO on chain…".into(), false);
                    let path = format!("/api/models/{}/card", edit.model);
                    let headers = [("x-posthuman-signature", sig)];
                    let (st, text) = net::request(
                        "POST",
                        &path,
                        Some(&JsValue::from_str(&body)),
                        &headers,
                        true,
                    )
                    .await?;
                    answer::<ModelView>(&path, st, &text)
                };
                match run.await {
                    Ok(_) => say(
                        "Saved: the card and its Ocean DDO on chain are updated. Reload to see it."
                            .into(),
                        false,
                    ),
                    Err(e) => say(format!("Not saved: {e}"), true),
                }
            });
        })
    };
    html! {
        <form id="card-edit" {onsubmit}>
            <h2>{ "Edit card" }</h2>
            <p><label for="card-description">{ "Description" }</label><br />
               <textarea id="card-description" rows="4" cols="60" value={description} oninput={ondescription}
                   aria-describedby="card-description-help" />
               <br /><small id="card-description-help">{ format!("At most {MAX_DESCRIPTION_BYTES} bytes; line breaks allowed.") }</small></p>
            { field("card-tags", "Your tags", &tags, ontags, format!("Up to {MAX_TAGS}, separated by commas: lowercase letters, digits, hyphens."), "text") }
            if root { { field("card-license", "Licence", &license, onlicense, crate::publish::LICENSE_HELP.into(), "text") } }
            <button type="submit" id="card-save">{ "Save card" }</button>
            <p id="card-status" role="status" aria-live="polite" class={if form.error { "error" } else { "" }}>{ form.status.clone() }</p>
        </form>
    }
}
