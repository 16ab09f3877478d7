//! Hostile HTTP traffic against the real router on the embedded default (issue 13 §6): what
//! the API advertises about its chain, what its 503s say, and how uploads are read.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use harness::*;
use posthuman_chain::Chain;
use posthuman_types::RewardScheme;
use tower::ServiceExt;

/// Sends `req` through `app`; returns status and body text.
async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn the_private_rpc_url_is_never_advertised_nor_echoed_in_503s() {
    let env = env(sleeper(), |_| {}).await;
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let (st, model) = publish(&env, &env.operator, &tiny_model_unrunnable(1), &scheme, "p-1").await;
    assert_eq!(st, StatusCode::CREATED, "{model}");
    let nft = model["nft"].as_str().unwrap().to_string();

    // The embedded default's own anvil (loopback, no credentials) is what clients should use.
    let (st, body) = get(&env.app, "/api/chain").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["rpc_url"].as_str(), Some(env.emb.rpc_url.as_str()), "{body}");

    // An operator RPC with a provider key: never advertised, never in an error body.
    let secret = "k3yIn7heP4th";
    let book = env.emb.deps.chain.book().clone();
    for url in [
        format!("https://eth-mainnet.example.invalid/v2/{secret}"),
        format!("https://user:{secret}@rpc.example.invalid/"),
        // Loopback but carrying a key (a tunnel to a provider): still private.
        format!("http://127.0.0.1:9/v3/{secret}"),
    ] {
        let mut deps = (*env.emb.deps).clone();
        deps.chain = Arc::new(Chain::connect(&url, env.operator.clone(), book.clone()).unwrap());
        let app = posthuman_functions::api::router(Arc::new(deps.clone()), None);
        let (st, body) = get(&app, "/api/chain").await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert!(!body.contains(secret), "{url} advertised: {body}");
        let info: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(info["rpc_url"].is_null(), "{body}");
        assert_eq!(info["address_book"]["lineage"], serde_json::json!(book.lineage), "{body}");

        // A configured public URL is what is advertised.
        deps.cfg.public_rpc_url = Some("https://public.example/rpc".into());
        let app2 = posthuman_functions::api::router(Arc::new(deps), None);
        let (_, body) = get(&app2, "/api/chain").await;
        let info: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(info["rpc_url"].as_str(), Some("https://public.example/rpc"), "{body}");

        if url.starts_with("http://127.0.0.1:9/") {
            // Port 9 refuses at once: the quote's exchange read fails with the RPC's text,
            // which names the URL. The caller gets a 503 and a sentence, not the URL.
            let (st, body) = get(&app, &format!("/api/models/{nft}/quote?kind=infer")).await;
            assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert!(!body.contains(secret) && !body.contains("127.0.0.1:9"), "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"].as_str(), Some("unavailable"), "{body}");
            assert!(v["message"].as_str().is_some_and(|m| m.contains("retry")), "{body}");
        }
    }
    env.emb.queue.shutdown().await;
}

/// Issue 18: the deployment in Ocean's `address.json` format, served and written beside the
/// address book, naming the same contracts the book does.
#[tokio::test]
async fn the_deployment_is_served_and_written_as_oceans_address_file() {
    let env = env(sleeper(), |_| {}).await;
    let (st, body) = get(&env.app, "/api/ocean/address.json").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    let book = env.emb.deps.chain.book();
    let net = &served["development"];
    assert_eq!(net["chainId"], book.chain_id, "{body}");
    assert_eq!(net["ERC721Factory"], format!("{:#x}", book.factory));
    assert_eq!(net["FixedPrice"], format!("{:#x}", book.fixed_rate));
    assert_eq!(net["Ocean"], format!("{:#x}", book.ocean));
    assert_eq!(net["ModelLineage"], format!("{:#x}", book.lineage));
    let written = std::fs::read(env.dir.path().join("data/chain/ocean-address.json")).unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&written).unwrap(), served);
}
