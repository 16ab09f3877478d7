//! Signed requests bind the deployment: a publish, a job submit or a result read signed as
//! EIP-712 typed data for this chain and this lineage contract is accepted; the same request
//! signed for another chain id, another deployment (lineage contract), another action, or
//! with a bare `personal_sign` (valid anywhere) is refused with 401.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use harness::*;
use posthuman_receipts::request::{PUBLISH_MODEL, READ_RESULT, SUBMIT_JOB};
use posthuman_receipts::{ReceiptDomain, SignableRequest};
use posthuman_types::RewardScheme;

fn typed(key: &PrivateKeySigner, domain: &ReceiptDomain, action: &str, body: &[u8]) -> String {
    SignableRequest::of_json_body(action, body).unwrap().sign(domain, key).unwrap()
}

/// A result read claiming `reader`, with `sig`.
async fn read_with(
    env: &Env,
    job_id: &str,
    reader: Address,
    sig: &str,
    expires: u64,
) -> StatusCode {
    let req = Request::get(format!("/api/jobs/{job_id}/result"))
        .header("x-posthuman-reader", format!("{reader:#x}"))
        .header("x-posthuman-signature", sig)
        .header("x-posthuman-expires", expires.to_string())
        .body(Body::empty())
        .unwrap();
    env.call(req).await.0
}

#[tokio::test]
async fn signatures_for_another_chain_or_deployment_are_refused() {
    let mut env = env(sleeper(), |_| {}).await;
    let operator = env.operator.clone();
    let book = env.emb.deps.chain.book().clone();
    let here = ReceiptDomain::new(book.chain_id, book.lineage);
    let other_chain = ReceiptDomain::new(book.chain_id + 1, book.lineage);
    let other_deployment = ReceiptDomain::new(book.chain_id, Address::repeat_byte(0x11));

    // Publish: only the signature for this chain and this deployment is accepted.
    let files = tiny_model_unrunnable(1);
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let body = serde_json::to_vec(&serde_json::json!({
        "name": "Tiny GPT", "symbol": "TINY", "description": "a tiny test model",
        "owner": format!("{:#x}", operator.address()),
        "price": (2 * WEI).to_string(),
        "reward_scheme": scheme,
        "weights_sha256": sha(&files.weights),
        "nonce": "p-1", "expires_at": now() + 600,
    }))
    .unwrap();
    let publish_with = |sig: String| {
        let body = body.clone();
        let files = &files;
        let env = &env;
        async move {
            env.post_multipart(
                "/api/models",
                &[
                    ("request", &body),
                    ("signature", sig.as_bytes()),
                    ("config", &files.config),
                    ("weights", &files.weights),
                    ("tokenizer", &files.tokenizer),
                ],
            )
            .await
        }
    };
    for (what, sig) in [
        ("personal_sign, valid on any deployment", sign(&operator, &body)),
        ("another chain id", typed(&operator, &other_chain, PUBLISH_MODEL, &body)),
        ("another deployment", typed(&operator, &other_deployment, PUBLISH_MODEL, &body)),
        ("another action", typed(&operator, &here, SUBMIT_JOB, &body)),
    ] {
        let (st, b) = publish_with(sig).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "publish signed with {what}: {b}");
    }
    let (st, model) = publish_with(typed(&operator, &here, PUBLISH_MODEL, &body)).await;
    assert_eq!(st, StatusCode::CREATED, "{model}");
    let nft = model["nft"].as_str().unwrap().to_string();

    // Submit: the same.
    let bob = env.wallet(100).await;
    env.buy(&bob, &model, 2).await;
    let params = common::infer_params();
    let order = env.order(&nft, &params, 0, &bob, bob.address()).await;
    let r = job_request(&nft, &order, bob.address(), &params, None, "s-1");
    let submit_with = |sig: String| {
        let r = r.clone();
        let env = &env;
        async move {
            env.post_multipart("/api/jobs", &[("request", &r), ("signature", sig.as_bytes())]).await
        }
    };
    for (what, sig) in [
        ("personal_sign, valid on any deployment", sign(&bob, &r)),
        ("another chain id", typed(&bob, &other_chain, SUBMIT_JOB, &r)),
        ("another deployment", typed(&bob, &other_deployment, SUBMIT_JOB, &r)),
        ("another action", typed(&bob, &here, PUBLISH_MODEL, &r)),
    ] {
        let (st, b) = submit_with(sig).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "submit signed with {what}: {b}");
    }
    let (st, job) = submit_with(typed(&bob, &here, SUBMIT_JOB, &r)).await;
    assert!(st.is_success(), "{st} {job}");
    let job_id = job["job_id"].as_str().unwrap().to_string();

    // Result reads: the same (reads carry no nonce).
    let expires = now() + 60;
    let read = SignableRequest::read(READ_RESULT, &job_id, expires);
    // The message reads were personal_signed over before they were typed data.
    let personal = sign(&bob, format!("posthuman: read job {job_id} until {expires}").as_bytes());
    for (what, sig) in [
        ("personal_sign, valid on any deployment", personal),
        ("another chain id", read.sign(&other_chain, &bob).unwrap()),
        ("another deployment", read.sign(&other_deployment, &bob).unwrap()),
    ] {
        assert_eq!(
            read_with(&env, &job_id, bob.address(), &sig, expires).await,
            StatusCode::UNAUTHORIZED,
            "read signed with {what}"
        );
    }
    let st =
        read_with(&env, &job_id, bob.address(), &read.sign(&here, &bob).unwrap(), expires).await;
    assert!(st.is_success(), "the buyer's read for this deployment: {st}");
}
