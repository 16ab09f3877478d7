//! A direct upload from the page, shared by publishing and ordering: hash the files, have the
//! wallet sign their declaration (`create-upload`, `eth_signTypedData_v4`), `POST
//! /api/uploads`, then `PUT` each file where the grant says with `XMLHttpRequest` (its
//! progress events drive the page's bar). The protocol as data, the caps and the refusals in
//! words are [`crate::upload`].

use std::cell::Cell;
use std::rc::Rc;

use alloy::primitives::Address;
use posthuman_receipts::ReceiptDomain;
use posthuman_types::Hash32;
use sha2::{Digest, Sha256};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

use super::order::{ask, now_secs, random};
use crate::eip1193::Provider;
use crate::net;
use crate::order::{REQUEST_VALIDITY_SECS, nonce_of};
use crate::upload::{
    UploadGrant, UploadPurpose, api_refusal, declaration, put_refusal, upload_typed_data,
};

/// Bytes hashed per read: a 1 GiB file is never whole in the page's memory.
const CHUNK: u64 = 8 << 20;

/// One file to send: the name it is declared under, its bytes (a picked file, or bytes the
/// page read and checked), their length and SHA-256.
#[derive(Clone, Debug)]
pub(super) struct Outgoing {
    pub name: &'static str,
    pub blob: web_sys::Blob,
    pub bytes: u64,
    pub sha256: Hash32,
}

/// Bytes `start..end` of a picked file.
pub(super) async fn read(b: &web_sys::Blob, start: u64, end: u64) -> Result<Vec<u8>, String> {
    let part = b
        .slice_with_f64_and_f64(start as f64, end as f64)
        .map_err(|_| "could not read a picked file".to_string())?;
    let buf = JsFuture::from(part.array_buffer())
        .await
        .map_err(|_| "could not read a picked file (was it moved or changed?)".to_string())?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// SHA-256 of a picked file, a chunk at a time (`progress`: bytes hashed so far).
pub(super) async fn sha256_of(b: &web_sys::Blob, progress: impl Fn(u64)) -> Result<Hash32, String> {
    let len = b.size() as u64;
    let mut h = Sha256::new();
    let mut at = 0;
    while at < len {
        let end = (at + CHUNK).min(len);
        h.update(read(b, at, end).await?);
        at = end;
        progress(at);
    }
    Ok(Hash32(h.finalize().into()))
}

/// Bytes the page holds, as a file to send.
pub(super) fn in_memory(name: &'static str, bytes: &[u8]) -> Result<Outgoing, String> {
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts)
        .map_err(|_| "the browser could not hold the file to upload".to_string())?;
    let sha256 = Hash32(Sha256::digest(bytes).into());
    Ok(Outgoing { name, blob, bytes: bytes.len() as u64, sha256 })
}

/// Has `account`'s wallet sign the declaration of `files` and creates the upload: the
/// grant, or the refusal in words.
pub(super) async fn declare(
    provider: &Provider,
    account: Address,
    domain: &ReceiptDomain,
    purpose: UploadPurpose,
    files: &[Outgoing],
) -> Result<UploadGrant, String> {
    let declared: Vec<_> = files.iter().map(|f| (f.name, f.bytes, f.sha256)).collect();
    let me = format!("{account:#x}");
    let req = declaration(
        purpose,
        &me,
        &declared,
        nonce_of(&random::<16>()?),
        now_secs() + REQUEST_VALIDITY_SECS,
    );
    let body = serde_json::to_string(&req).map_err(|e| e.to_string())?;
    let params = crate::order::sign_params(account, &upload_typed_data(domain, body.as_bytes())?);
    let sig = ask(provider, "eth_signTypedData_v4", &params).await?;
    let sig = sig.as_str().ok_or("the wallet returned no signature")?.to_string();
    let (status, text) = net::request(
        "POST",
        "/api/uploads",
        Some(&JsValue::from_str(&body)),
        &[("x-posthuman-signature", sig)],
        true,
    )
    .await
    .map_err(|e| format!("the API could not be reached to start the upload: {e}"))?;
    if !(200..300).contains(&status) {
        return Err(format!("the API refused the upload: {}", api_refusal(status, &text)));
    }
    posthuman_receipts::json::from_str(&text)
        .map_err(|e| format!("/api/uploads: unexpected answer: {e}"))
}

/// Sends every file as `grant` says, one after another; `progress` is told the bytes sent of
/// all the files.
pub(super) async fn send(
    grant: &UploadGrant,
    files: &[Outgoing],
    progress: Rc<dyn Fn(f64)>,
) -> Result<(), String> {
    let done = Rc::new(Cell::new(0.0));
    for f in files {
        let t = grant.files.iter().find(|t| t.name == f.name).ok_or_else(|| {
            format!("the API gave no URL for {} (an API of another version?)", f.name)
        })?;
        let headers: Vec<(&str, &str)> =
            t.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let on = {
            let (done, progress) = (done.clone(), progress.clone());
            move |sent: f64| progress(done.get() + sent)
        };
        let (status, text) = net::send_blob(&t.method, &t.url, &headers, &f.blob, on)
            .await
            .map_err(|e| format!("Uploading {} failed: {e}", f.name))?;
        if !(200..300).contains(&status) {
            return Err(put_refusal(f.name, status, &text));
        }
        done.set(done.get() + f.bytes as f64);
        progress(done.get());
    }
    Ok(())
}
