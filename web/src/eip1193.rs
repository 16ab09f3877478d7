//! The browser's wallet: an EIP-1193 provider (`window.ethereum`, or one announced through
//! EIP-6963 when several wallets are installed). Requests go through the provider's
//! `request({method, params})`; its error objects become [`WalletError`]s. Compiles on every
//! target (native clippy covers it); it only runs in a browser.

use serde_json::Value;
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::Closure;
use wasm_bindgen_futures::JsFuture;

use crate::wallet::WalletError;

/// One wallet the page can talk to.
#[derive(Clone, Debug)]
pub struct Provider {
    obj: JsValue,
    /// The wallet's name (EIP-6963 `info.name`; "Browser wallet" for `window.ethereum`).
    pub name: String,
    /// EIP-6963 `info.uuid` (the injected `window.ethereum` has none).
    pub uuid: String,
}

impl PartialEq for Provider {
    fn eq(&self, o: &Self) -> bool {
        self.uuid == o.uuid && js_sys::Object::is(&self.obj, &o.obj)
    }
}

fn get(o: &JsValue, k: &str) -> JsValue {
    js_sys::Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

fn to_value(v: &JsValue) -> Value {
    if v.is_undefined() {
        return Value::Null;
    }
    js_sys::JSON::stringify(v)
        .ok()
        .and_then(|s| s.as_string())
        .and_then(|s| posthuman_receipts::json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

impl Provider {
    /// `request({method, params})`, `params` being the JSON text of the params array (the
    /// builders in [`crate::wallet`], [`crate::order`] and [`crate::market`] write it).
    pub async fn request(&self, method: &str, params: &str) -> Result<Value, WalletError> {
        let f: js_sys::Function =
            get(&self.obj, "request").dyn_into().map_err(|_| WalletError::NoProvider)?;
        let body = format!(r#"{{"method":{},"params":{params}}}"#, crate::wallet::json_str(method));
        let arg = js_sys::JSON::parse(&body)
            .map_err(|_| WalletError::Other("unencodable request".into()))?;
        let promise: js_sys::Promise =
            f.call1(&self.obj, &arg).map_err(|e| error(&e))?.dyn_into().map_err(|_| {
                WalletError::Other(format!("{method}: the wallet answered no promise"))
            })?;
        JsFuture::from(promise).await.map(|v| to_value(&v)).map_err(|e| error(&e))
    }

    /// Subscribes `cb` to the provider's `event` (`accountsChanged`, `chainChanged`) until the
    /// returned guard is dropped.
    pub fn on(&self, event: &str, cb: impl Fn(Value) + 'static) -> Subscription {
        let closure = Closure::<dyn Fn(JsValue)>::new(move |v: JsValue| cb(to_value(&v)));
        if let Ok(f) = get(&self.obj, "on").dyn_into::<js_sys::Function>() {
            let _ = f.call2(&self.obj, &JsValue::from_str(event), closure.as_ref());
        }
        Subscription { obj: self.obj.clone(), event: event.to_string(), closure }
    }
}

/// A listener on a provider; removed (`removeListener`) when dropped.
pub struct Subscription {
    obj: JsValue,
    event: String,
    closure: Closure<dyn Fn(JsValue)>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(f) = get(&self.obj, "removeListener").dyn_into::<js_sys::Function>() {
            let _ = f.call2(&self.obj, &JsValue::from_str(&self.event), self.closure.as_ref());
        }
    }
}

fn error(e: &JsValue) -> WalletError {
    let code = get(e, "code").as_f64().map(|c| c as i64);
    let message = get(e, "message")
        .as_string()
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "an unknown error".into());
    WalletError::from_code(code, &message)
}

/// `window.ethereum`, if a wallet injected one.
pub fn injected() -> Option<Provider> {
    let w = web_sys::window()?;
    let obj = get(&w, "ethereum");
    (obj.is_object()).then(|| Provider { obj, name: "Browser wallet".into(), uuid: String::new() })
}

/// EIP-6963 discovery: listens for `eip6963:announceProvider` and asks every wallet to
/// announce itself (`eip6963:requestProvider`); `found` gets each one (wallets may announce
/// late). The listener stays for the page's life.
pub fn discover(found: impl Fn(Provider) + 'static) {
    let Some(w) = web_sys::window() else { return };
    let closure = Closure::<dyn Fn(JsValue)>::new(move |ev: JsValue| {
        let detail = get(&ev, "detail");
        let obj = get(&detail, "provider");
        let info = get(&detail, "info");
        if obj.is_object() {
            found(Provider {
                obj,
                name: get(&info, "name").as_string().unwrap_or_else(|| "a wallet".into()),
                uuid: get(&info, "uuid").as_string().unwrap_or_default(),
            });
        }
    });
    let _ = w.add_event_listener_with_callback(
        "eip6963:announceProvider",
        closure.as_ref().unchecked_ref(),
    );
    closure.forget();
    if let Ok(ev) = web_sys::Event::new("eip6963:requestProvider") {
        let _ = w.dispatch_event(&ev);
    }
}
