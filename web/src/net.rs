//! The browser's `fetch`, for the API (same origin) and for the chain's JSON-RPC node
//! ([`BrowserRpc`], cross-origin: anvil and public nodes answer CORS). Compiles on every
//! target so that native clippy and tests cover the crate; it only runs in a browser.

use posthuman_receipts::{FactsError, JsonRpc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, RequestMode, Response};

use crate::wire::ErrorBody;

fn js(e: JsValue) -> String {
    e.as_string()
        .or_else(|| js_sys::JSON::stringify(&e).ok().and_then(|s| s.as_string()))
        .unwrap_or_else(|| "a browser error".into())
}

/// Sends a request; returns the status, the body text and the value of the response header
/// [`NEXT_CURSOR`] (paged lists).
///
/// `fetch` through `web_sys` rather than `gloo-net` (issue 14 prefers it where it fits): on
/// 2026-12-07 this function and [`request`] rewritten over `gloo_net::http::RequestBuilder`
/// (0.4, `http` feature only; the version yew 0.21's gloo already builds) took the gzipped
/// module from 393,020 to 396,214 bytes (+3,194: its URL and query rebuilding, `http`'s
/// `Method`, its error type), leaving 3,786 of the 400,000 budget, under the 5 KB margin kept.
async fn send_full(
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<(u16, String, Option<String>), String> {
    let window = web_sys::window().ok_or("no window")?;
    let init = RequestInit::new();
    init.set_method(method);
    init.set_mode(RequestMode::Cors);
    if let Some(b) = body {
        init.set_body(&JsValue::from_str(b));
    }
    let req = Request::new_with_str_and_init(url, &init).map_err(js)?;
    if body.is_some() {
        req.headers().set("content-type", "application/json").map_err(js)?;
    }
    let resp = JsFuture::from(window.fetch_with_request(&req))
        .await
        .map_err(|e| format!("{url}: {}", js(e)))?;
    let resp: Response = resp.dyn_into().map_err(js)?;
    let next = resp.headers().get(NEXT_CURSOR).ok().flatten();
    let text = JsFuture::from(resp.text().map_err(js)?).await.map_err(js)?;
    Ok((resp.status(), text.as_string().unwrap_or_default(), next))
}

/// Sends a request; returns the status and the body text.
async fn send(method: &str, url: &str, body: Option<&str>) -> Result<(u16, String), String> {
    send_full(method, url, body).await.map(|(s, t, _)| (s, t))
}

/// The API's response header naming the next page of a list (absent on the last page).
pub const NEXT_CURSOR: &str = "x-posthuman-next-cursor";

fn api_error(path: &str, status: u16, text: &str) -> String {
    match posthuman_receipts::json::from_str::<ErrorBody>(text) {
        Ok(e) => format!("{path}: {} ({})", e.message, e.error),
        Err(_) => format!("{path}: HTTP {status}"),
    }
}

/// `GET` one page of an API list: the items and the next page's cursor, if any.
pub async fn get_page<T: DeserializeOwned>(path: &str) -> Result<(Vec<T>, Option<String>), String> {
    let (status, text, next) = send_full("GET", path, None).await?;
    if !(200..300).contains(&status) {
        return Err(api_error(path, status, &text));
    }
    let items = posthuman_receipts::json::from_str(&text)
        .map_err(|e| format!("{path}: unexpected answer: {e}"))?;
    Ok((items, next))
}

/// `GET` every page of an API list (`path` without `limit`/`cursor`), following the
/// next-page cursor; stops with an error past `max_pages` rather than loop on a cursor that
/// never ends.
pub async fn get_all<T: DeserializeOwned>(path: &str, max_pages: usize) -> Result<Vec<T>, String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..max_pages {
        let url = match &cursor {
            None => format!("{path}{sep}limit=200"),
            Some(c) => format!("{path}{sep}limit=200&cursor={c}"),
        };
        let (items, next) = get_page::<T>(&url).await?;
        all.extend(items);
        match next {
            None => return Ok(all),
            Some(n) => cursor = Some(n),
        }
    }
    Err(format!("{path}: more than {max_pages} pages"))
}

/// `GET` an API path (same origin) and parse its JSON; an error answer becomes its message.
pub async fn get_json<T: DeserializeOwned>(path: &str) -> Result<T, String> {
    let text = get_text(path).await?;
    posthuman_receipts::json::from_str(&text).map_err(|e| format!("{path}: unexpected answer: {e}"))
}

/// `GET` an API path and return its body text (the receipt is parsed by the view, so that a
/// malformed one is reported as such); an error answer becomes its message.
pub async fn get_text(path: &str) -> Result<String, String> {
    let (status, text) = send("GET", path, None).await?;
    if !(200..300).contains(&status) {
        return Err(api_error(path, status, &text));
    }
    Ok(text)
}

/// Waits `ms` milliseconds (polling): gloo's `setTimeout` future.
pub async fn sleep(ms: i32) {
    gloo_timers::future::TimeoutFuture::new(u32::try_from(ms).unwrap_or(0)).await;
}

/// An API request's outcome: the status and the body text (4xx answers included, so the
/// caller can say what the API refused and why).
pub async fn request(
    method: &str,
    path: &str,
    body: Option<&JsValue>,
    headers: &[(&str, String)],
    json: bool,
) -> Result<(u16, String), String> {
    let window = web_sys::window().ok_or("no window")?;
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(b) = body {
        init.set_body(b);
    }
    let req = Request::new_with_str_and_init(path, &init).map_err(js)?;
    if json {
        req.headers().set("content-type", "application/json").map_err(js)?;
    }
    for (k, v) in headers {
        req.headers().set(k, v).map_err(js)?;
    }
    let resp = JsFuture::from(window.fetch_with_request(&req))
        .await
        .map_err(|e| format!("{path}: {}", js(e)))?;
    let resp: Response = resp.dyn_into().map_err(js)?;
    let text = JsFuture::from(resp.text().map_err(js)?).await.map_err(js)?;
    Ok((resp.status(), text.as_string().unwrap_or_default()))
}

/// Sends `body` with `XMLHttpRequest` (a direct upload's PUT), as `fetch` reports no upload
/// progress: every upload progress event tells `progress` the bytes sent. `headers` are sent
/// as given, except those the browser sets itself (`content-length`, `host`). Returns the
/// status and the body text; a request that got no answer at all (network down, or a
/// cross-origin PUT the bucket's CORS does not allow) is an error.
pub async fn send_blob(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &web_sys::Blob,
    progress: impl Fn(f64) + 'static,
) -> Result<(u16, String), String> {
    let xhr = web_sys::XmlHttpRequest::new().map_err(js)?;
    xhr.open_with_async(method, url, true).map_err(js)?;
    for &(k, v) in headers {
        if !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("host") {
            xhr.set_request_header(k, v).map_err(js)?;
        }
    }
    let on_progress = wasm_bindgen::closure::Closure::<dyn Fn(web_sys::ProgressEvent)>::new(
        move |e: web_sys::ProgressEvent| progress(e.loaded()),
    );
    xhr.upload().map_err(js)?.set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
    let done = js_sys::Promise::new(&mut |resolve, _| xhr.set_onloadend(Some(&resolve)));
    xhr.send_with_opt_blob(Some(body)).map_err(js)?;
    JsFuture::from(done).await.map_err(js)?;
    // The listener lives until the request has ended.
    drop(on_progress);
    match xhr.status().map_err(js)? {
        0 => {
            Err("no answer (the network failed, or the storage refused this site's origin)".into())
        }
        status => Ok((status, xhr.response_text().map_err(js)?.unwrap_or_default())),
    }
}

/// Parses an API answer: the JSON of a 2xx, or the API's own words for a refusal.
pub fn answer<T: DeserializeOwned>(path: &str, status: u16, text: &str) -> Result<T, String> {
    if !(200..300).contains(&status) {
        return Err(api_error(path, status, text));
    }
    posthuman_receipts::json::from_str(text).map_err(|e| format!("{path}: unexpected answer: {e}"))
}

/// JSON-RPC to the chain's node over `fetch`.
#[derive(Clone, Debug)]
pub struct BrowserRpc {
    pub url: String,
}

#[async_trait::async_trait(?Send)]
impl JsonRpc for BrowserRpc {
    async fn post(&self, body: Value) -> Result<Value, FactsError> {
        let (status, text) = send("POST", &self.url, Some(&body.to_string()))
            .await
            .map_err(|e| FactsError(format!("the chain's node did not answer: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(FactsError(format!("the chain's node answered HTTP {status}")));
        }
        posthuman_receipts::json::from_str(&text)
            .map_err(|e| FactsError(format!("the chain's node answered non-JSON: {e}")))
    }
}
