//! Issue 13 §6: buyers' evaluations are labelled on a model's card, and only its owner can
//! feature (endorse) some of them, with a request signed for this deployment.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use harness::*;
use posthuman_functions::catalogue::{JobPhase, JobRecord, now_secs};
use posthuman_receipts::request::{FEATURE_EVALUATIONS, SUBMIT_JOB};
use posthuman_types::{Hash32, JobKind, RewardScheme};

/// A succeeded evaluate job of `model` by `consumer`, as the completion leaves it.
fn evaluation(model: &str, id: &str, consumer: &str, kind: JobKind) -> JobRecord {
    let mut spec = common::infer_spec(id);
    spec.params = posthuman_types::JobParams::Evaluate(posthuman_types::EvalParams {
        context_len: 32,
        stride: 16,
        max_tokens: 0,
        baseline: None,
    });
    JobRecord {
        job_id: id.into(),
        kind,
        model: model.into(),
        consumer: consumer.into(),
        order_tx: format!("0x{}", "ab".repeat(32)),
        order_log_index: 0,
        spec,
        queue_ref: Some(id.into()),
        phase: JobPhase::Succeeded,
        created_at: now_secs(),
        updated_at: now_secs(),
        completion: Default::default(),
        order_released: false,
        receipt_hash: Some(Hash32([7; 32])),
        perplexity: (kind == JobKind::Evaluate).then_some(12.5),
        input_data_hash: Some(Hash32([9; 32])),
    }
}

async fn feature(
    env: &Env,
    nft: &str,
    who: &PrivateKeySigner,
    action: &str,
    ids: &[&str],
    nonce: &str,
) -> (StatusCode, serde_json::Value) {
    let body = serde_json::to_vec(&serde_json::json!({
        "model": nft, "job_ids": ids, "nonce": nonce, "expires_at": now() + 600,
    }))
    .unwrap();
    let sig = sign_typed(env, who, action, &body);
    let req = Request::post(format!("/api/models/{nft}/featured"))
        .header("content-type", "application/json")
        .header("x-posthuman-signature", sig)
        .body(Body::from(body))
        .unwrap();
    env.call(req).await
}

#[tokio::test]
async fn only_the_owner_features_evaluations_and_each_is_labelled() {
    let env = env(sleeper(), |_| {}).await;
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let (st, model) = publish(&env, &env.operator, &tiny_model_unrunnable(1), &scheme, "p-1").await;
    assert_eq!(st, StatusCode::CREATED, "{model}");
    let nft = model["nft"].as_str().unwrap().to_string();
    let stranger = "0x00000000000000000000000000000000000000e1";
    let cat = &env.emb.deps.catalogue;
    for id in ["ev-a", "ev-b"] {
        cat.put_job(&evaluation(&nft, id, stranger, JobKind::Evaluate)).await.unwrap();
    }
    cat.put_job(&evaluation(&nft, "inf-1", stranger, JobKind::Infer)).await.unwrap();

    // Labelled, not endorsed.
    let (_, card) = env.get(&format!("/api/models/{nft}")).await;
    let evals = card["evaluations"].as_array().unwrap();
    assert_eq!(evals.len(), 2, "{card}");
    for e in evals {
        assert_eq!(e["evaluator"], stranger, "{e}");
        assert_eq!(e["featured"], false, "{e}");
        assert!(e["dataset_commitment"].is_string(), "{e}");
    }

    // A stranger may not feature; nor may the owner with a signature for another action.
    let bob = PrivateKeySigner::random();
    let (st, b) = feature(&env, &nft, &bob, FEATURE_EVALUATIONS, &["ev-b"], "f-1").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    let (st, b) = feature(&env, &nft, &env.operator, SUBMIT_JOB, &["ev-b"], "f-2").await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "a signature for another action recovers to another key: {b}"
    );
    // Only succeeded evaluations of this model.
    for bad in [&["nope"][..], &["inf-1"], &["ev-a", "ev-a"]] {
        let (st, b) = feature(&env, &nft, &env.operator, FEATURE_EVALUATIONS, bad, "f-3").await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {b}");
    }

    // The owner features ev-b: it lists first, endorsed.
    let (st, card) =
        feature(&env, &nft, &env.operator, FEATURE_EVALUATIONS, &["ev-b"], "f-4").await;
    assert_eq!(st, StatusCode::OK, "{card}");
    let evals = card["evaluations"].as_array().unwrap();
    assert_eq!(evals[0]["job_id"], "ev-b");
    assert_eq!(evals[0]["featured"], true);
    assert_eq!(evals[1]["featured"], false);
    // A replay of the same signed request is refused.
    let (st, _) = feature(&env, &nft, &env.operator, FEATURE_EVALUATIONS, &["ev-b"], "f-4").await;
    assert_eq!(st, StatusCode::CONFLICT);
    env.emb.queue.shutdown().await;
}
