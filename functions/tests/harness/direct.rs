//! Direct uploads through the router: declare, PUT, and a publish or submit naming the
//! upload. A publish by upload is asynchronous (202, then `GET /api/publishes/{id}`);
//! [`publish_upload`] follows it to its end and answers as the synchronous route did (201 and
//! the model, or the error's status and body), so suites read the outcome either way.

use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use posthuman_receipts::request::{CREATE_UPLOAD, PUBLISH_MODEL};
use posthuman_types::RewardScheme;
use serde_json::{Value, json};

use super::*;

/// Declares `files` for `purpose` signed by `who`; returns the answer.
pub async fn declare(
    env: &Env,
    who: &PrivateKeySigner,
    purpose: &str,
    files: &[(&str, &[u8])],
    nonce: &str,
) -> (StatusCode, Value) {
    let decl: Vec<Value> =
        files.iter().map(|(n, b)| json!({"name": n, "bytes": b.len(), "sha256": sha(b)})).collect();
    declare_raw(env, who, json!({"purpose": purpose, "files": decl}), nonce).await
}

pub async fn declare_raw(
    env: &Env,
    who: &PrivateKeySigner,
    mut body: Value,
    nonce: &str,
) -> (StatusCode, Value) {
    body["owner"] = json!(format!("{:#x}", who.address()));
    body["nonce"] = json!(nonce);
    body["expires_at"] = json!(now() + 600);
    let body = serde_json::to_vec(&body).unwrap();
    let sig = sign_typed(env, who, CREATE_UPLOAD, &body);
    let req = Request::post("/api/uploads")
        .header("content-type", "application/json")
        .header("x-posthuman-signature", sig)
        .body(Body::from(body))
        .unwrap();
    env.call(req).await
}

/// PUTs `bytes` to the granted URL of `name` (its path and query, through the router).
pub async fn put(env: &Env, grant: &Value, name: &str, bytes: &[u8]) -> (StatusCode, Value) {
    let t = grant["files"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap();
    put_url(env, t["url"].as_str().unwrap(), bytes).await
}

pub async fn put_url(env: &Env, url: &str, bytes: &[u8]) -> (StatusCode, Value) {
    // The embedded server's upload URLs are relative to the API's base.
    assert!(url.starts_with("/api/uploads/"), "{url}");
    let req = Request::put(url)
        .header("content-type", "application/octet-stream")
        .body(Body::from(bytes.to_vec()))
        .unwrap();
    env.call(req).await
}

/// Uploads a model's three files as `who`; returns the upload id.
pub async fn upload_model(
    env: &Env,
    who: &PrivateKeySigner,
    files: &ModelFiles,
    nonce: &str,
) -> String {
    let parts: [(&str, &[u8]); 3] =
        [("config", &files.config), ("weights", &files.weights), ("tokenizer", &files.tokenizer)];
    let (st, grant) = declare(env, who, "model", &parts, nonce).await;
    assert_eq!(st, StatusCode::CREATED, "{grant}");
    for (name, b) in parts {
        let (st, body) = put(env, &grant, name, b).await;
        assert_eq!(st, StatusCode::OK, "{name}: {body}");
    }
    grant["upload_id"].as_str().unwrap().to_string()
}

/// A signed JSON request naming `upload` (if any).
pub async fn post_json(
    env: &Env,
    path: &str,
    who: &PrivateKeySigner,
    action: &str,
    body: &[u8],
    upload: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::post(path)
        .header("content-type", "application/json")
        .header("x-posthuman-signature", sign_typed(env, who, action, body));
    if let Some(id) = upload {
        req = req.header("x-posthuman-upload", id);
    }
    env.call(req.body(Body::from(body.to_vec())).unwrap()).await
}

pub fn publish_request(who: &PrivateKeySigner, files: &ModelFiles, nonce: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "name": "Tiny GPT", "symbol": "TINY", "description": "uploaded directly",
        "owner": format!("{:#x}", who.address()),
        "price": (2 * WEI).to_string(),
        "reward_scheme": RewardScheme::geometric(1000 * WEI, 5000, 3),
        "weights_sha256": sha(&files.weights),
        "nonce": nonce, "expires_at": now() + 600,
    }))
    .unwrap()
}

pub async fn publish_upload(
    env: &Env,
    who: &PrivateKeySigner,
    files: &ModelFiles,
    upload: &str,
    nonce: &str,
) -> (StatusCode, Value) {
    let body = publish_request(who, files, nonce);
    let (st, accepted) =
        post_json(env, "/api/models", who, PUBLISH_MODEL, &body, Some(upload)).await;
    if st != StatusCode::ACCEPTED {
        return (st, accepted);
    }
    let id = accepted["publish_id"].as_str().unwrap();
    let v = wait_publish(env, id).await;
    match v["state"].as_str() {
        Some("done") => (StatusCode::CREATED, v["model"].clone()),
        _ => {
            let e = &v["error"];
            let st = StatusCode::from_u16(e["status"].as_u64().unwrap() as u16).unwrap();
            (st, json!({"error": e["error"], "message": e["message"]}))
        }
    }
}

/// Polls `GET /api/publishes/{id}` until the publish ended; its last view.
pub async fn wait_publish(env: &Env, id: &str) -> Value {
    for _ in 0..2400 {
        let (st, v) = env.get(&format!("/api/publishes/{id}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if !matches!(v["state"].as_str(), Some("queued" | "running")) {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("publish {id} did not end in a minute");
}

pub fn code(b: &Value) -> &str {
    b["error"].as_str().unwrap_or_default()
}
