//! An asynchronous publish (issue 17: a 1 GiB publish does not fit API Gateway's 29 s):
//! `POST /api/models` with a direct upload answers 202 before any weight is read, and
//! `GET /api/publishes/{id}` reports the work's phase and progress, then the model or the
//! very error the synchronous route answered. A second delivery of the same publish sends no
//! transaction; an id nobody started is a 404; a third publish in flight for one owner is a
//! 429.
//!
//! The weight work is held back deterministically by a gate on the store's reads of staged
//! files (the real filesystem store underneath, its `get_to_file` waiting for a permit): a
//! twin of a slow S3, so "the answer came before the work" needs no timing.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use std::sync::Arc;
use std::time::Duration;

use alloy::providers::Provider;
use axum::http::StatusCode;
use harness::direct::*;
use harness::*;
use posthuman_functions::publishes::{self, Ran};
use posthuman_receipts::request::PUBLISH_MODEL;
use posthuman_store::{Hooked, StoreError, StoreHook, StoreOp};
use serde_json::Value;
use tokio::sync::Semaphore;

/// Holds each read of a staged upload's file (`get_to_file` of `uploads/…`) until `gate`
/// gives it a permit.
#[derive(Debug)]
struct UploadGate(Arc<Semaphore>);

#[async_trait::async_trait]
impl StoreHook for UploadGate {
    async fn before(&self, op: StoreOp, key: &str) -> Result<(), StoreError> {
        if op == StoreOp::GetToFile && key.starts_with("uploads/") {
            self.0.acquire().await.unwrap().forget();
        }
        Ok(())
    }
}

/// Routes `env`'s requests through the same router over the gated store; returns the gate
/// (closed: no staged weights are read until the test adds permits).
fn gated(env: &mut Env) -> Arc<Semaphore> {
    let gate = Arc::new(Semaphore::new(0));
    let mut d = (*env.emb.deps).clone();
    d.store = Arc::new(Hooked::new(d.store.clone(), UploadGate(gate.clone())));
    env.app = posthuman_functions::api::router(Arc::new(d), None);
    gate
}

/// Posts the publish of `files` by upload; the answer (within 20 s, or the test fails).
async fn post_publish(
    env: &Env,
    files: &ModelFiles,
    upload: &str,
    nonce: &str,
) -> (StatusCode, Value) {
    let op = env.operator.clone();
    let body = publish_request(&op, files, nonce);
    let post = post_json(env, "/api/models", &op, PUBLISH_MODEL, &body, Some(upload));
    tokio::time::timeout(Duration::from_secs(20), post)
        .await
        .expect("POST /api/models answers while the weight work waits")
}

/// Polls the publish until `until` holds of its view; that view.
async fn poll_until(env: &Env, id: &str, until: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..800 {
        let (st, v) = env.get(&format!("/api/publishes/{id}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if until(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("publish {id} never reached the state the test waits for");
}

#[tokio::test]
async fn a_publish_is_accepted_before_its_weight_work_and_reports_its_progress() {
    let mut env = env(sleeper(), |_| {}).await;
    let gate = gated(&mut env);
    let op = env.operator.clone();
    let files = tiny_model_unrunnable(21);
    let upload = upload_model(&env, &op, &files, "up-1").await;
    let started = std::time::Instant::now();
    let (st, a) = post_publish(&env, &files, &upload, "pub-1").await;
    let answered = started.elapsed();
    assert_eq!(st, StatusCode::ACCEPTED, "{a}");
    let id = a["publish_id"].as_str().unwrap().to_string();
    assert_eq!(a["status_url"], format!("/api/publishes/{id}"));

    // Running, reading the staged files back (held at the gate); nothing listed yet.
    let v = poll_until(&env, &id, |v| {
        v["state"] == "running" && v["progress"]["total"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let total = (files.config.len() + files.weights.len() + files.tokenizer.len()) as u64;
    assert_eq!(v["progress"]["phase"], "fetching", "{v}");
    assert_eq!(v["progress"]["unit"], "bytes", "{v}");
    assert_eq!(v["progress"]["total"], total, "{v}");
    assert_eq!(v["owner"], format!("{:#x}", op.address()));
    assert!(v["deadline"].as_u64().unwrap() > now() + 14 * 60, "{v}");
    assert_eq!(env.get("/api/models").await.1.as_array().unwrap().len(), 0);

    gate.add_permits(1000);
    let v = wait_publish(&env, &id).await;
    assert_eq!(v["state"], "done", "{v}");
    assert!(v["progress"].is_null() && v["error"].is_null(), "{v}");
    let nft = v["model"]["nft"].as_str().unwrap();
    let (st, m) = env.get(&format!("/api/models/{nft}")).await;
    assert_eq!(st, StatusCode::OK, "{m}");
    assert_eq!(m["weights_hash"], v["model"]["weights_hash"]);
    assert_eq!(m["name"], "Tiny GPT");
    eprintln!("POST answered in {answered:?} while the weight work waited at the gate");

    // A second delivery of the same publish (Lambda delivers an asynchronous event at least
    // once) is refused by the start marker: no transaction, the record unchanged.
    let txs = |c: &posthuman_chain::Chain| {
        let p = c.provider().clone();
        let who = op.address();
        async move { p.get_transaction_count(who).await.unwrap() }
    };
    let before = txs(&env.chain).await;
    let ran = publishes::run(&env.emb.deps, &id).await.unwrap();
    assert_eq!(ran, Ran::AlreadyStarted);
    assert_eq!(txs(&env.chain).await, before, "a second delivery sent a transaction");
    let (_, again) = env.get(&format!("/api/publishes/{id}")).await;
    assert_eq!(again, v);

    // The upload was used: it cannot start another publish.
    let (st, b) = post_publish(&env, &files, &upload, "pub-2").await;
    assert_eq!((st, b["error"].as_str().unwrap()), (StatusCode::CONFLICT, "upload_used"), "{b}");
}

#[tokio::test]
async fn a_failed_publish_reports_what_the_synchronous_route_answered_and_lists_nothing() {
    let env = env(sleeper(), |_| {}).await;
    let op = env.operator.clone();
    let mut files = tiny_model_unrunnable(22);
    // The last value of the last tensor is NaN: the strict checks refuse the weights.
    let n = files.weights.len();
    files.weights[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());

    let scheme = posthuman_types::RewardScheme::geometric(1000 * WEI, 5000, 3);
    let (sync_st, sync_b) = publish(&env, &op, &files, &scheme, "sync-1").await;
    assert_eq!(sync_st, StatusCode::UNPROCESSABLE_ENTITY, "{sync_b}");
    assert!(sync_b["message"].as_str().unwrap().starts_with("invalid weights: "), "{sync_b}");

    let upload = upload_model(&env, &op, &files, "up-1").await;
    let (st, a) = post_publish(&env, &files, &upload, "pub-1").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{a}");
    let v = wait_publish(&env, a["publish_id"].as_str().unwrap()).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["model"].is_null(), "{v}");
    let e = &v["error"];
    assert_eq!(e["status"], 422, "{v}");
    assert_eq!((&e["error"], &e["message"]), (&sync_b["error"], &sync_b["message"]));
    assert_eq!(env.get("/api/models").await.1.as_array().unwrap().len(), 0);
    assert!(env.emb.deps.store.list("models/").await.unwrap().is_empty());

    // The failure released the upload: a new request may use it (and fails the same way).
    let (st, b) = publish_upload(&env, &op, &files, &upload, "pub-2").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["message"], sync_b["message"]);
}

#[tokio::test]
async fn unknown_publishes_are_404_and_a_third_in_flight_is_429() {
    let mut env = env(sleeper(), |_| {}).await;
    for bad in [format!("p-{}", "0".repeat(32)), "p-zz".into(), "..%2F..%2Fmodels".into()] {
        let (st, b) = env.get(&format!("/api/publishes/{bad}")).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{bad}: {b}");
    }

    let gate = gated(&mut env);
    let op = env.operator.clone();
    let mut ids = vec![];
    for i in 0..publishes::MAX_IN_FLIGHT + 1 {
        let files = tiny_model_unrunnable(30 + i as u64);
        let upload = upload_model(&env, &op, &files, &format!("up-{i}")).await;
        let (st, b) = post_publish(&env, &files, &upload, &format!("pub-{i}")).await;
        if i < publishes::MAX_IN_FLIGHT {
            assert_eq!(st, StatusCode::ACCEPTED, "{b}");
            ids.push(b["publish_id"].as_str().unwrap().to_string());
        } else {
            assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{b}");
            assert_eq!(b["error"], "too_many_requests", "{b}");
            // Refused before it started: its upload is free for a later try.
            gate.add_permits(1000);
            for id in &ids {
                assert_eq!(wait_publish(&env, id).await["state"], "done");
            }
            let (st, b) = publish_upload(&env, &op, &files, &upload, "pub-later").await;
            assert_eq!(st, StatusCode::CREATED, "{b}");
        }
    }
}
