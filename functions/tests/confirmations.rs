//! An order pays for a job only once it has the deployment's `min_confirmations`: sooner,
//! the submit is a 425 that claims nothing and spends no nonce, so the very same signed
//! request is accepted once the chain has moved on. `GET /api/chain` advertises the number.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use alloy::providers::ext::AnvilApi;
use axum::http::StatusCode;
use common::infer_params as infer;
use harness::*;
use posthuman_types::RewardScheme;

#[tokio::test]
async fn the_local_dev_chain_needs_no_confirmations_by_default() {
    let env = env(sleeper(), |_| {}).await;
    let (st, info) = env.get("/api/chain").await;
    assert_eq!(st, StatusCode::OK, "{info}");
    assert_eq!(info["min_confirmations"], 0, "anvil on loopback is a local dev chain: {info}");
}

#[tokio::test]
async fn an_order_is_accepted_only_at_min_confirmations_and_a_refusal_claims_nothing() {
    let mut env = env(sleeper(), |cfg| cfg.min_confirmations = Some(2)).await;
    let (st, info) = env.get("/api/chain").await;
    assert_eq!(st, StatusCode::OK, "{info}");
    assert_eq!(info["min_confirmations"], 2, "{info}");

    let operator = env.operator.clone();
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let (st, m) = publish(&env, &operator, &tiny_model_unrunnable(7), &scheme, "p-c").await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    let nft = m["nft"].as_str().unwrap().to_string();
    let bob = env.wallet(1000).await;
    env.buy(&bob, &m, 2).await;

    let params = infer();
    let order_tx = env.order(&nft, &params, 0, &bob, bob.address()).await;
    let request = job_request(&nft, &order_tx, bob.address(), &params, None, "c-1");

    // Mined in the head block: one confirmation, two needed.
    let (st, body) = submit(&env, &bob, &request, None).await;
    assert_eq!(st, StatusCode::TOO_EARLY, "{body}");
    assert_eq!(body["error"], "too_early", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("only 1 confirmations, 2 needed") && msg.contains("resend"), "{msg}");
    // Nothing was claimed or recorded for it.
    let cat = &env.emb.deps.catalogue;
    assert!(cat.jobs_for_model(&nft).await.unwrap().is_empty());
    for log_index in 0..16 {
        let key = format!("{}-{log_index}", order_tx.to_lowercase());
        assert_eq!(cat.order_holder(&key).await.unwrap(), None, "{key}");
    }

    // One more block: two confirmations. The very same signed request now pays.
    env.chain.provider().anvil_mine(Some(1), None).await.unwrap();
    let (st, body) = submit(&env, &bob, &request, None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    assert_eq!(cat.jobs_for_model(&nft).await.unwrap().len(), 1);
    // And only once (the nonce is spent now).
    let (st, body) = submit(&env, &bob, &request, None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
}

/// A new data dir's chain is Ocean's `development` network (8996), which ocean.js and
/// Ocean's barge know; a data dir keeps the id it was deployed on across restarts, and a
/// different id asked for against it is refused (its receipts and signed requests are bound
/// to the old one), while a new data dir takes the id asked for.
#[tokio::test]
async fn a_data_dir_runs_on_oceans_development_chain_and_keeps_the_id_it_was_deployed_on() {
    use alloy::providers::Provider;
    use posthuman_functions::server::{ServerConfig, ServerError, start};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(dir.path().join("data"), "unused");
    cfg.worker = sleeper();
    let emb = start(&cfg).await.unwrap();
    assert_eq!(emb.deps.chain.book().chain_id, posthuman_chain::DEV_CHAIN_ID);
    assert_eq!(emb.deps.chain.provider().get_chain_id().await.unwrap(), 8996);
    drop(emb); // stops anvil, which saves its state

    cfg.chain_id = Some(31337);
    match start(&cfg).await {
        Err(ServerError::ChainIdMismatch { asked: 31337, deployed: 8996, .. }) => {}
        other => panic!("expected a chain id mismatch, got {:?}", other.map(|e| e.rpc_url)),
    }
    cfg.chain_id = Some(8996);
    let again = start(&cfg).await.unwrap();
    assert_eq!(again.deps.chain.provider().get_chain_id().await.unwrap(), 8996);
    drop(again);

    let other = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(other.path().join("data"), "unused");
    cfg.worker = sleeper();
    cfg.chain_id = Some(31337);
    let emb = start(&cfg).await.unwrap();
    assert_eq!(emb.deps.chain.book().chain_id, 31337);
    assert_eq!(emb.deps.chain.provider().get_chain_id().await.unwrap(), 31337);
}
