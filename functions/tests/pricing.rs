//! Jobs are priced by their compute and paid for by the Ocean v4 provider fee: the quote
//! prices the job's terms, an order whose fee is not the quote for this model, kind and
//! terms is refused at submit, and a fee that was valid when the order was placed still
//! pays after its `validUntil` (a retry after a failure that was not the buyer's).

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use alloy::primitives::{Bytes as ABytes, U256};
use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::infer_params as infer;
use harness::*;
use posthuman_chain::ProviderFee;
use posthuman_types::{JobParams, RewardScheme, TrainParams};

fn train(steps: u32) -> JobParams {
    let mut t = TrainParams::new(steps, 1e-3, 2, 16);
    t.checkpoint_every = 2;
    JobParams::Train(t)
}

fn data() -> Vec<u8> {
    b"some training text for a tiny model, repeated. ".repeat(20)
}

/// `POST /api/models/{nft}/quote` for these terms.
async fn quote(env: &Env, nft: &str, params: &JobParams, dataset_bytes: u64) -> serde_json::Value {
    let body = serde_json::json!({ "params": params, "dataset_bytes": dataset_bytes });
    let req = Request::post(format!("/api/models/{nft}/quote"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let (st, q) = env.call(req).await;
    assert_eq!(st, StatusCode::OK, "{q}");
    q
}

fn fee_of(q: &serde_json::Value) -> ProviderFee {
    let f = &q["provider_fee"];
    ProviderFee {
        address: f["provider_fee_address"].as_str().unwrap().parse().unwrap(),
        token: f["provider_fee_token"].as_str().unwrap().parse().unwrap(),
        amount: f["provider_fee_amount"].as_str().unwrap().parse().unwrap(),
        v: f["v"].as_u64().unwrap() as u8,
        r: f["r"].as_str().unwrap().parse().unwrap(),
        s: f["s"].as_str().unwrap().parse().unwrap(),
        valid_until: U256::from(f["valid_until"].as_u64().unwrap()),
        data: f["provider_data"].as_str().unwrap().parse().unwrap(),
    }
}

/// Orders with the quote's own fee; returns the order tx.
async fn order(env: &Env, q: &serde_json::Value, buyer: &PrivateKeySigner) -> String {
    let fee = fee_of(q);
    let (dt, service) = (q["datatoken"].as_str().unwrap(), q["service_index"].as_u64().unwrap());
    env.order_with_fee(dt, service, buyer, buyer.address(), &fee).await
}

async fn submit_job(
    env: &Env,
    buyer: &PrivateKeySigner,
    nft: &str,
    order_tx: &str,
    params: &JobParams,
    dataset: Option<&[u8]>,
    nonce: &str,
) -> (StatusCode, serde_json::Value) {
    let r = job_request(nft, order_tx, buyer.address(), params, dataset, nonce);
    submit(env, buyer, &r, dataset).await
}

/// Two published models and a buyer holding datatokens of both.
async fn market(env: &mut Env) -> (String, String, PrivateKeySigner) {
    let operator = env.operator.clone();
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let (st, a) = publish(env, &operator, &tiny_model_unrunnable(1), &scheme, "p-a").await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    let (st, b) = publish(env, &operator, &tiny_model_unrunnable(2), &scheme, "p-b").await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let bob = env.wallet(1000).await;
    env.buy(&bob, &a, 5).await;
    env.buy(&bob, &b, 5).await;
    let nft = |m: &serde_json::Value| m["nft"].as_str().unwrap().to_string();
    (nft(&a), nft(&b), bob)
}

#[tokio::test]
async fn a_quote_prices_a_train_job_by_its_compute() {
    let mut env = env(sleeper(), |_| {}).await;
    let (a, _, _) = market(&mut env).await;
    let len = data().len() as u64;
    let q1 = quote(&env, &a, &train(4), len).await;
    let q2 = quote(&env, &a, &train(8), len).await;
    let amount = |q: &serde_json::Value, i: usize| -> u128 {
        q["breakdown"]["lines"][i]["amount"].as_str().unwrap().parse().unwrap()
    };
    let flops = |q: &serde_json::Value| q["estimate"]["flops"].as_u64().unwrap();
    assert!(flops(&q1) > 0);
    assert_eq!(flops(&q2), 2 * flops(&q1), "twice the steps, twice the compute");
    assert_eq!(q1["breakdown"]["lines"][0]["label"], "compute");
    assert_eq!(amount(&q2, 0), 2 * amount(&q1, 0), "and twice its fee");
    for q in [&q1, &q2] {
        // The fee to pay is the priced total, in OCEAN, and the budget is what it buys.
        assert_eq!(q["provider_fee"]["provider_fee_amount"], q["breakdown"]["total"], "{q}");
        assert_ne!(q["breakdown"]["total"], "0");
        assert_eq!(
            q["provider_fee"]["provider_fee_token"].as_str().unwrap(),
            format!("{:#x}", env.chain.book().ocean)
        );
        assert_eq!(q["budget"]["flops"], q["estimate"]["flops"]);
        assert!(q["budget"]["max_seconds"].as_u64().unwrap() > 0);
    }
    // Bad terms are refused as submit would refuse them.
    let req = Request::post(format!("/api/models/{a}/quote"))
        .header("content-type", "application/json")
        .body(Body::from(
            serde_json::to_vec(&serde_json::json!({
                "params": train(0), "dataset_bytes": len
            }))
            .unwrap(),
        ))
        .unwrap();
    let (st, body) = env.call(req).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // So is a derived model's name a quote cannot publish (issue 14), naming the field.
    let JobParams::Train(mut named) = train(4) else { unreachable!() };
    named.symbol = Some("WAY-TOO-LONG-FOR-A-SYMBOL".into());
    let req = Request::post(format!("/api/models/{a}/quote"))
        .header("content-type", "application/json")
        .body(Body::from(
            serde_json::to_vec(&serde_json::json!({
                "params": JobParams::Train(named), "dataset_bytes": len
            }))
            .unwrap(),
        ))
        .unwrap();
    let (st, body) = env.call(req).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("invalid symbol:"), "{body}");
}

#[tokio::test]
async fn an_order_without_the_quoted_fee_does_not_pay() {
    let mut env = env(sleeper(), |_| {}).await;
    let (a, b, bob) = market(&mut env).await;
    let d = data();
    let len = d.len() as u64;
    let payment = |got: (StatusCode, serde_json::Value), what: &str| {
        assert_eq!(got.0, StatusCode::PAYMENT_REQUIRED, "{what}: {}", got.1);
        assert_eq!(got.1["error"], "payment_invalid", "{what}: {}", got.1);
    };

    // A zero fee, signed by the operator, carrying the quote's own provider data.
    let q = quote(&env, &b, &train(4), len).await;
    let fee = fee_of(&q);
    let zero = env
        .chain
        .sign_provider_fee(fee.valid_until.to::<u64>(), ABytes::from(fee.data.to_vec()))
        .unwrap();
    assert_eq!(zero.amount, U256::ZERO);
    let dt = q["datatoken"].as_str().unwrap();
    let tx = env.order_with_fee(dt, 0, &bob, bob.address(), &zero).await;
    payment(submit_job(&env, &bob, &b, &tx, &train(4), Some(&d), "z-1").await, "zero fee");

    // A fee quoted for model A / infer, paid inside an order of model B / train.
    let qa = quote(&env, &a, &infer(), 0).await;
    let tx = env.order_with_fee(dt, 0, &bob, bob.address(), &fee_of(&qa)).await;
    payment(submit_job(&env, &bob, &b, &tx, &train(4), Some(&d), "z-2").await, "A/infer fee");

    // A fee quoted for 4 steps does not pay for 40, nor for a larger dataset.
    let tx = order(&env, &q, &bob).await;
    payment(submit_job(&env, &bob, &b, &tx, &train(40), Some(&d), "z-3").await, "more steps");
    let big = [d.as_slice(), d.as_slice()].concat();
    payment(submit_job(&env, &bob, &b, &tx, &train(4), Some(&big), "z-4").await, "more data");

    // Nor does a request that claims the fee was quoted for a longer dataset than it was:
    // the quoted length is bound into the fee's digest.
    let mut r: serde_json::Value =
        serde_json::from_slice(&job_request(&b, &tx, bob.address(), &train(4), Some(&big), "z-4b"))
            .unwrap();
    r["quoted_dataset_bytes"] = (2 * len).into();
    let r = serde_json::to_vec(&r).unwrap();
    payment(submit(&env, &bob, &r, Some(&big)).await, "a claimed longer quote");

    // The quoted terms do: the same order, now for what it was quoted for.
    let (st, body) = submit_job(&env, &bob, &b, &tx, &train(4), Some(&d), "z-5").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    let job = body["job_id"].as_str().unwrap();
    let rec = env.emb.deps.catalogue.get_job(job).await.unwrap().unwrap();
    let budget = rec.spec.budget.expect("a paid job carries its budget");
    assert_eq!(budget.flops, q["budget"]["flops"].as_u64().unwrap());
    assert_eq!(budget.max_seconds, q["budget"]["max_seconds"].as_u64().unwrap());
}

#[tokio::test]
async fn a_fee_valid_when_ordered_still_pays_after_valid_until() {
    let mut env = env(sleeper(), |c| c.api.fee_validity_secs = 2).await;
    let (a, _, bob) = market(&mut env).await;
    let q = quote(&env, &a, &infer(), 0).await;
    let tx = order(&env, &q, &bob).await;
    // The submit (or a retry's re-verification) comes after validUntil: the order was placed
    // while the quote was valid, so it still pays.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (st, body) = submit_job(&env, &bob, &a, &tx, &infer(), None, "late-1").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    // An order placed after validUntil does not.
    let dt = q["datatoken"].as_str().unwrap();
    let late = env.order_with_fee(dt, 1, &bob, bob.address(), &fee_of(&q)).await;
    let (st, body) = submit_job(&env, &bob, &a, &late, &infer(), None, "late-2").await;
    assert_eq!(st, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert!(body["message"].as_str().unwrap().contains("expired"), "{body}");
}

/// A chat (`messages`) on a model without a chat template can only fail in the worker: it is
/// refused at the quote, naming the field, before anything is paid; the same model still
/// quotes raw prompts.
#[tokio::test]
async fn a_chat_on_a_model_without_a_template_is_refused_before_payment() {
    let mut env = env(sleeper(), |_| {}).await;
    let (a, _, _) = market(&mut env).await;
    let chat = JobParams::Infer(posthuman_types::InferParams {
        prompts: vec![],
        max_new_tokens: 4,
        sampling: Default::default(),
        stop: vec![],
        messages: vec![posthuman_types::job::ChatMessage::new("user", "hello")],
    });
    let body = serde_json::json!({ "params": chat, "dataset_bytes": 0 });
    let req = Request::post(format!("/api/models/{a}/quote"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let (st, body) = env.call(req).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("messages") && body.to_string().contains("chat template"),
        "{body}"
    );
    quote(&env, &a, &infer(), 0).await;
}
