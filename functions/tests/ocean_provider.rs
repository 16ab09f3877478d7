//! The Ocean Provider facade (`/api/ocean`, issue 18) as ocean.js 8.6.2 calls it: the root
//! document's routes, the nonce, `initializeCompute` priced exactly as our quote with the fee
//! in Ocean's shape, `computeStart` signed Ocean's way over the same submit checks (bad
//! signature, stale or replayed nonce, wrong service, reused order, a fee not signed by the
//! operator or quoted for another model or job kind), `computeStatus`, and `computeResult`
//! to the buyer only. The real client plays the whole story in `tests/ocean/compute.mjs`.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use alloy::primitives::{Address, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use harness::*;
use posthuman_chain::ProviderFee;
use posthuman_functions::handlers::ocean::{GET_COMPUTE_RESULT, START_COMPUTE, now_micros};
use posthuman_types::{EvalParams, JobParams, RewardScheme};
use serde_json::{Value, json};

fn evaluate() -> JobParams {
    JobParams::Evaluate(EvalParams { context_len: 16, stride: 8, max_tokens: 0, baseline: None })
}

fn data() -> String {
    "some evaluation text for a tiny model, repeated. ".repeat(10)
}

fn did(env: &Env, nft: &str) -> String {
    posthuman_chain::ddo::did(nft.parse().unwrap(), env.chain.book().chain_id)
}

async fn post_json(env: &Env, path: &str, body: &Value) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    env.call(req).await
}

/// What ocean.js signs for `command` (`getSignature`): personal_sign over
/// keccak256(checksummed address + nonce + command).
fn ocean_sign(key: &PrivateKeySigner, nonce: &str, command: &str) -> String {
    let msg = format!("{}{nonce}{command}", key.address().to_checksum(None));
    let digest = alloy::primitives::keccak256(msg.as_bytes());
    key.sign_message_sync(digest.as_slice()).unwrap().to_string()
}

/// A fresh nonce the way ocean.js makes one: the provider's, plus one.
async fn fresh_nonce(env: &Env, who: Address) -> String {
    let (st, n) = env.get(&format!("/api/ocean/nonce?userAddress={who:#x}")).await;
    assert_eq!(st, StatusCode::OK, "{n}");
    (n["nonce"].as_u64().unwrap() + 1).to_string()
}

/// `initializeCompute` for one job on `nft`; returns the status and the answer.
async fn initialize(env: &Env, nft: &str, service: &str, userdata: Value) -> (StatusCode, Value) {
    let body = json!({
        "datasets": [{ "documentId": did(env, nft), "serviceId": service, "userdata": userdata }],
        "algorithm": {}, "environment": "posthuman",
        "payment": { "chainId": env.chain.book().chain_id, "token": format!("{:#x}", env.chain.book().ocean), "resources": [] },
        "maxJobDuration": 3600, "consumerAddress": "0x0000000000000000000000000000000000000001",
    });
    post_json(env, "/api/ocean/initializeCompute", &body).await
}

/// Ocean's `ProviderFees` as `startOrder` takes it.
fn fee_of(init: &Value) -> ProviderFee {
    let f = &init["datasets"][0]["providerFee"];
    ProviderFee {
        address: f["providerFeeAddress"].as_str().unwrap().parse().unwrap(),
        token: f["providerFeeToken"].as_str().unwrap().parse().unwrap(),
        amount: f["providerFeeAmount"].as_str().unwrap().parse().unwrap(),
        v: f["v"].as_u64().expect("numeric v") as u8,
        r: f["r"].as_str().unwrap().parse().unwrap(),
        s: f["s"].as_str().unwrap().parse().unwrap(),
        valid_until: U256::from(f["validUntil"].as_u64().unwrap()),
        data: f["providerData"].as_str().unwrap().parse().unwrap(),
    }
}

/// `computeStart` as ocean.js sends it, signed by `key` with `nonce`.
async fn start(
    env: &Env,
    key: &PrivateKeySigner,
    nonce: &str,
    nft: &str,
    service: &str,
    order_tx: &str,
    userdata: Value,
) -> (StatusCode, Value) {
    let asset = json!({
        "documentId": did(env, nft), "serviceId": service, "transferTxId": order_tx,
        "userdata": userdata,
    });
    let body = json!({
        "consumerAddress": key.address().to_checksum(None),
        "signature": ocean_sign(key, nonce, START_COMPUTE),
        "nonce": nonce, "environment": "posthuman", "maxJobDuration": 3600, "resources": [],
        "dataset": asset, "datasets": [asset], "algorithm": {}, "chainId": env.chain.book().chain_id,
        "payment": { "chainId": env.chain.book().chain_id, "token": format!("{:#x}", env.chain.book().ocean) },
    });
    post_json(env, "/api/ocean/compute", &body).await
}

/// Two models and a buyer holding datatokens of both.
async fn market(env: &mut Env) -> (String, String, String, PrivateKeySigner) {
    let operator = env.operator.clone();
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let (st, a) = publish(env, &operator, &tiny_model_unrunnable(1), &scheme, "p-a").await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    let (st, b) = publish(env, &operator, &tiny_model_unrunnable(2), &scheme, "p-b").await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let bob = env.wallet(1000).await;
    env.buy(&bob, &a, 6).await;
    env.buy(&bob, &b, 2).await;
    let dt = a["datatoken"].as_str().unwrap().to_string();
    let nft = |m: &Value| m["nft"].as_str().unwrap().to_string();
    (nft(&a), nft(&b), dt, bob)
}

fn salt() -> String {
    format!("{:#x}", alloy::primitives::B256::repeat_byte(7))
}

#[tokio::test]
async fn the_root_document_names_the_routes_ocean_js_discovers() {
    let env = env(sleeper(), |_| {}).await;
    let (st, root) = env.get("/api/ocean").await;
    assert_eq!(st, StatusCode::OK, "{root}");
    assert_eq!(root["chainIds"][0], env.chain.book().chain_id);
    let eps = &root["serviceEndpoints"];
    // ocean.js joins each path onto the node URI: every one must be a route here.
    for (name, method) in [
        ("nonce", "GET"),
        ("computeEnvironments", "GET"),
        ("initializeCompute", "POST"),
        ("computeStart", "POST"),
        ("computeStatus", "GET"),
        ("computeResult", "GET"),
    ] {
        assert_eq!(eps[name][0], method, "{name}");
        let path = format!("/api/ocean/{}", eps[name][1].as_str().unwrap());
        let listed = posthuman_functions::api::routes()
            .into_iter()
            .any(|r| r.method.as_str() == method && r.path == path);
        assert!(listed, "{name}: {method} {path} is not routed");
    }
    let before = now_micros();
    let (_, n) =
        env.get("/api/ocean/nonce?userAddress=0x0000000000000000000000000000000000000001").await;
    let n = n["nonce"].as_u64().unwrap();
    assert!(n >= before && n <= now_micros(), "the nonce is the provider's clock");
    let (st, envs) = env.get("/api/ocean/computeEnvironments").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(envs[0]["id"], "posthuman");
}

#[tokio::test]
async fn initialize_compute_is_our_quote_with_the_fee_in_oceans_shape() {
    let mut env = env(sleeper(), |_| {}).await;
    let (a, _, dt, _) = market(&mut env).await;
    let len = data().len() as u64;
    let (st, init) =
        initialize(&env, &a, "evaluate", json!({ "params": evaluate(), "dataset_bytes": len }))
            .await;
    assert_eq!(st, StatusCode::OK, "{init}");
    let d = &init["datasets"][0];
    assert_eq!(d["datatoken"], dt);
    assert_eq!(d["serviceIndex"], 2);
    // The same price and binding as POST /api/models/{nft}/quote for these terms.
    let terms = json!({ "params": evaluate(), "dataset_bytes": len });
    let (st, q) = post_json(&env, &format!("/api/models/{a}/quote"), &terms).await;
    assert_eq!(st, StatusCode::OK, "{q}");
    let f = &d["providerFee"];
    assert_eq!(f["providerFeeAmount"], q["breakdown"]["total"]);
    assert_eq!(f["providerData"], q["provider_fee"]["provider_data"]);
    assert_eq!(f["providerFeeToken"], q["provider_fee"]["provider_fee_token"]);
    assert!(f["v"].is_u64() && f["validUntil"].is_u64(), "numeric v and validUntil: {f}");
    assert_eq!(d["quote"]["terms"], q["terms"]);
    // Without params: the storefront's default terms for the kind (GET …/quote?kind=).
    let (_, dflt) = initialize(&env, &a, "infer", Value::Null).await;
    let (_, q) = env.get(&format!("/api/models/{a}/quote?kind=infer")).await;
    assert_eq!(
        dflt["datasets"][0]["providerFee"]["providerData"],
        q["provider_fee"]["provider_data"]
    );

    // Refusals: a service the DDO does not have, params of another kind than the service,
    // an unknown asset, more than one dataset, a third-party algorithm, another chain.
    let (st, e) = initialize(&env, &a, "download", json!({})).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid")),
        "{e}"
    );
    let (st, e) = initialize(&env, &a, "infer", json!({ "params": evaluate() })).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["message"].as_str().unwrap().contains("service"), "{e}");
    let (st, _) = post_json(&env, "/api/ocean/initializeCompute", &json!({
        "datasets": [{ "documentId": format!("did:op:{}", "ab".repeat(32)), "serviceId": "infer" }],
    })).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let asset = json!({ "documentId": did(&env, &a), "serviceId": "infer" });
    let (st, _) =
        post_json(&env, "/api/ocean/initializeCompute", &json!({ "datasets": [asset, asset] }))
            .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, _) = post_json(
        &env,
        "/api/ocean/initializeCompute",
        &json!({
            "datasets": [asset], "algorithm": { "documentId": "did:op:00", "serviceId": "x" },
        }),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, _) = post_json(
        &env,
        "/api/ocean/initializeCompute",
        &json!({
            "datasets": [asset], "payment": { "chainId": 1 },
        }),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn compute_start_runs_only_the_job_its_order_paid_for() {
    let mut env = env(sleeper(), |_| {}).await;
    let (a, b, dt, bob) = market(&mut env).await;
    let text = data();
    let ud = json!({ "params": evaluate(), "dataset": text, "salt": salt() });
    let (st, init) = initialize(&env, &a, "evaluate", ud.clone()).await;
    assert_eq!(st, StatusCode::OK, "{init}");
    let fee = fee_of(&init);
    let order = env.order_with_fee(&dt, 2, &bob, bob.address(), &fee).await;

    // Not the buyer's signature, a stale nonce, a service the DDO lacks: refused before the
    // order is looked at (and so it stays unspent).
    let mallory = PrivateKeySigner::random();
    let nonce = fresh_nonce(&env, bob.address()).await;
    let asset = json!({ "documentId": did(&env, &a), "serviceId": "evaluate", "transferTxId": order, "userdata": ud });
    let forged = json!({
        "consumerAddress": bob.address().to_checksum(None),
        "signature": ocean_sign(&mallory, &nonce, START_COMPUTE),
        "nonce": nonce, "datasets": [asset],
    });
    let (st, e) = post_json(&env, "/api/ocean/compute", &forged).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{e}");
    // Signed for another command (a result read) is not a start either.
    let mut other = forged.clone();
    other["signature"] = json!(ocean_sign(&bob, &nonce, GET_COMPUTE_RESULT));
    assert_eq!(post_json(&env, "/api/ocean/compute", &other).await.0, StatusCode::UNAUTHORIZED);
    let stale = (now_micros() - 11 * 60 * 1_000_000).to_string();
    let (st, e) = start(&env, &bob, &stale, &a, "evaluate", &order, ud.clone()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{e}");
    assert!(e["message"].as_str().unwrap().contains("stale nonce"), "{e}");
    let n = fresh_nonce(&env, bob.address()).await;
    let (st, e) = start(&env, &bob, &n, &a, "weights", &order, ud.clone()).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // The right service, but params of another kind: refused too.
    let n = fresh_nonce(&env, bob.address()).await;
    let infer_ud = json!({ "params": common::infer_params(), "salt": salt() });
    let (st, e) = start(&env, &bob, &n, &a, "evaluate", &order, infer_ud).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

    // The paid job starts, and is an Ocean ComputeJob with our view alongside.
    let n = fresh_nonce(&env, bob.address()).await;
    let (st, jobs) = start(&env, &bob, &n, &a, "evaluate", &order, ud.clone()).await;
    assert_eq!(st, StatusCode::OK, "{jobs}");
    let job = &jobs[0];
    let job_id = job["jobId"].as_str().unwrap().to_string();
    assert_eq!(job["owner"], format!("{:#x}", bob.address()));
    assert_eq!(job["did"], did(&env, &a));
    assert_eq!(job["agreementId"], order);
    assert_eq!(job["posthuman"]["kind"], "evaluate");
    assert!(matches!(job["status"].as_u64(), Some(0 | 40)), "{job}");
    // The same signed request again: the nonce is spent.
    let (st, e) = start(&env, &bob, &n, &a, "evaluate", &order, ud.clone()).await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    // A fresh request on the same order: the order is spent.
    let n = fresh_nonce(&env, bob.address()).await;
    let (st, e) = start(&env, &bob, &n, &a, "evaluate", &order, ud.clone()).await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    assert!(e["message"].as_str().unwrap().contains("payment"), "{e}");

    // computeStatus finds it by job, by order and by owner; not for someone else.
    let who = bob.address().to_checksum(None);
    for q in [format!("jobId={job_id}"), format!("agreementId={order}"), String::new()] {
        let (st, s) = env.get(&format!("/api/ocean/compute?consumerAddress={who}&{q}")).await;
        assert_eq!(st, StatusCode::OK, "{s}");
        assert_eq!(s.as_array().unwrap().len(), 1, "{q}: {s}");
        assert_eq!(s[0]["jobId"], job_id.as_str());
    }
    let (_, s) = env
        .get(&format!("/api/ocean/compute?consumerAddress={:#x}&jobId={job_id}", mallory.address()))
        .await;
    assert_eq!(s, json!([]));

    // A fee quoted for another job kind: an evaluate quote paying an infer order.
    let ud_infer = json!({ "params": common::infer_params(), "salt": salt() });
    let order2 = env.order_with_fee(&dt, 1, &bob, bob.address(), &fee).await;
    let n = fresh_nonce(&env, bob.address()).await;
    let (st, e) = start(&env, &bob, &n, &a, "infer", &order2, ud_infer.clone()).await;
    assert_eq!(st, StatusCode::PAYMENT_REQUIRED, "{e}");
    // A fee quoted for another model: model A's quote paying an order of model B.
    let (_, init_b) = initialize(&env, &b, "infer", ud_infer.clone()).await;
    let b_dt = init_b["datasets"][0]["datatoken"].as_str().unwrap().to_string();
    let (_, init_a) = initialize(&env, &a, "infer", ud_infer.clone()).await;
    let order3 = env.order_with_fee(&b_dt, 1, &bob, bob.address(), &fee_of(&init_a)).await;
    let n = fresh_nonce(&env, bob.address()).await;
    let (st, e) = start(&env, &bob, &n, &b, "infer", &order3, ud_infer.clone()).await;
    assert_eq!(st, StatusCode::PAYMENT_REQUIRED, "{e}");
    // A fee not signed by the operator (the same terms and amount, another key).
    let f = fee_of(&init_a);
    let forged_fee = posthuman_chain::fees::sign_provider_fee(
        &mallory,
        f.token,
        f.amount,
        f.valid_until.to::<u64>(),
        f.data.clone(),
    )
    .unwrap();
    let order4 = env.order_with_fee(&dt, 1, &bob, bob.address(), &forged_fee).await;
    let n = fresh_nonce(&env, bob.address()).await;
    let (st, e) = start(&env, &bob, &n, &a, "infer", &order4, ud_infer).await;
    assert_eq!(st, StatusCode::PAYMENT_REQUIRED, "{e}");
    assert!(e["message"].as_str().unwrap().contains("not signed by our operator"), "{e}");
}

#[tokio::test]
async fn compute_result_serves_public_outputs_to_the_buyer_only() {
    let mut env = env(sleeper(), |_| {}).await;
    let (a, _, dt, bob) = market(&mut env).await;
    let ud = json!({ "params": common::infer_params(), "salt": salt() });
    let (_, init) = initialize(&env, &a, "infer", ud.clone()).await;
    let order = env.order_with_fee(&dt, 1, &bob, bob.address(), &fee_of(&init)).await;
    let n = fresh_nonce(&env, bob.address()).await;
    let (st, jobs) = start(&env, &bob, &n, &a, "infer", &order, ud).await;
    assert_eq!(st, StatusCode::OK, "{jobs}");
    let job_id = jobs[0]["jobId"].as_str().unwrap().to_string();
    // Stand in for the worker: a completions file in the job's public outputs.
    let rec = env.emb.deps.catalogue.get_job(&job_id).await.unwrap().unwrap();
    let completions = br#"{"completions":["hello world"]}"#;
    let key = format!("{}/completions.json", rec.spec.public_prefix);
    env.emb.deps.store.put(&key, bytes::Bytes::from_static(completions)).await.unwrap();

    let read = |key: &PrivateKeySigner, nonce: &str, command: &str, index: usize| {
        let who = key.address().to_checksum(None);
        let sig = ocean_sign(key, nonce, command);
        format!(
            "/api/ocean/computeResult?consumerAddress={who}&jobId={job_id}&index={index}&nonce={nonce}&signature={sig}"
        )
    };
    let raw = |path: String| {
        let app = env.app.clone();
        async move {
            use tower::ServiceExt;
            let resp = app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
            let st = resp.status();
            (st, axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap())
        }
    };
    // Index 1 is completions.json (metrics, completions, report, error, receipt, attestations).
    let n = fresh_nonce(&env, bob.address()).await;
    let (st, body) = raw(read(&bob, &n, GET_COMPUTE_RESULT, 1)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(&body[..], completions, "byte for byte");
    // The same URL again: its nonce is spent.
    assert_eq!(raw(read(&bob, &n, GET_COMPUTE_RESULT, 1)).await.0, StatusCode::CONFLICT);
    // Signed for another command, by someone who is not the buyer, or stale: refused.
    let n = fresh_nonce(&env, bob.address()).await;
    assert_eq!(raw(read(&bob, &n, START_COMPUTE, 1)).await.0, StatusCode::UNAUTHORIZED);
    let eve = PrivateKeySigner::random();
    assert_eq!(raw(read(&eve, &n, GET_COMPUTE_RESULT, 1)).await.0, StatusCode::FORBIDDEN);
    let stale = (now_micros() - 11 * 60 * 1_000_000).to_string();
    assert_eq!(raw(read(&bob, &stale, GET_COMPUTE_RESULT, 1)).await.0, StatusCode::UNAUTHORIZED);
    // No such output, or no such index.
    let n = fresh_nonce(&env, bob.address()).await;
    assert_eq!(raw(read(&bob, &n, GET_COMPUTE_RESULT, 0)).await.0, StatusCode::NOT_FOUND);
    let n = fresh_nonce(&env, bob.address()).await;
    assert_eq!(raw(read(&bob, &n, GET_COMPUTE_RESULT, 99)).await.0, StatusCode::NOT_FOUND);
}
