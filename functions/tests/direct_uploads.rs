//! Direct uploads through the API (issue 17): files are declared with `POST /api/uploads`,
//! sent to the URLs it answers (here the embedded server's own PUT route, through the real
//! router), and a publish or submit names the upload instead of carrying the files. Each
//! refusal has its own status and error code: an oversize declaration, a file the purpose
//! does not take, a stranger staging weights, an unknown, expired, foreign, reused or
//! wrong-purpose upload, a file that never arrived, one tampered with after its PUT, and
//! PUTs with a forged token, a longer body or other bytes. Unused uploads are swept.
//! `GET /api/uploads` answers the caps the declarations are checked against.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use axum::http::StatusCode;
use harness::direct::*;
use harness::*;
use posthuman_receipts::request::{PUBLISH_MODEL, SUBMIT_JOB};
use posthuman_types::uploads::UploadPurpose;
use posthuman_types::{JobParams, TrainParams};
use serde_json::json;

#[tokio::test]
async fn publish_and_submit_take_their_files_from_a_direct_upload() {
    let mut env = env(sleeper(), |_| {}).await;
    let op = env.operator.clone();
    let files = tiny_model_unrunnable(11);

    // Publish: the files go by upload, the publish names it.
    let id = upload_model(&env, &op, &files, "up-1").await;
    let (st, model) = publish_upload(&env, &op, &files, &id, "pub-1").await;
    assert_eq!(st, StatusCode::CREATED, "{model}");
    let nft = model["nft"].as_str().unwrap().to_string();
    // The staged files are gone once used; the model's are stored.
    let staged = env.emb.deps.store.list(&format!("uploads/{id}/files/")).await.unwrap();
    assert!(staged.is_empty(), "{staged:?}");
    // Used once: the same upload again (a new, valid publish request) is refused.
    let (st, b) = publish_upload(&env, &op, &files, &id, "pub-2").await;
    assert_eq!((st, code(&b)), (StatusCode::CONFLICT, "upload_used"), "{b}");

    // Submit: the buyer's dataset goes by upload; the paid job is queued.
    let buyer = env.wallet(100).await;
    let data = corpus().into_bytes();
    env.buy(&buyer, &model, 3).await;
    let mut train = TrainParams::new(2, 1e-2, 2, 16);
    train.checkpoint_every = 1;
    let params = JobParams::Train(train);
    let order = env.order(&nft, &params, data.len(), &buyer, buyer.address()).await;
    let (st, grant) = declare(&env, &buyer, "dataset", &[("dataset", &data)], "up-2").await;
    assert_eq!(st, StatusCode::CREATED, "{grant}");
    let (st, b) = put(&env, &grant, "dataset", &data).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let up = grant["upload_id"].as_str().unwrap();
    // Another account cannot use the buyer's upload (its request is valid in every other way).
    let stranger = env.wallet(0).await;
    let req = job_request(&nft, &order, stranger.address(), &params, Some(&data), "sub-x");
    let (st, b) = post_json(&env, "/api/jobs", &stranger, SUBMIT_JOB, &req, Some(up)).await;
    assert_eq!((st, code(&b)), (StatusCode::FORBIDDEN, "upload_foreign"), "{b}");
    // Nor can the operator, for a publish.
    let (st, b) = publish_upload(&env, &op, &files, up, "pub-3").await;
    assert_eq!((st, code(&b)), (StatusCode::FORBIDDEN, "upload_foreign"), "{b}");
    let req = job_request(&nft, &order, buyer.address(), &params, Some(&data), "sub-1");
    let (st, sub) = post_json(&env, "/api/jobs", &buyer, SUBMIT_JOB, &req, Some(up)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let (st, job) = env.get(&format!("/api/jobs/{}", sub["job_id"].as_str().unwrap())).await;
    assert_eq!(st, StatusCode::OK, "{job}");
    let stored = env
        .emb
        .deps
        .store
        .get(&format!("jobs/{}/dataset.txt", sub["job_id"].as_str().unwrap()), 1 << 20)
        .await
        .unwrap();
    assert_eq!(&stored[..], &data[..]);
}

#[tokio::test]
async fn every_refusal_has_its_own_status_and_code() {
    let mut env = env(sleeper(), |_| {}).await;
    let op = env.operator.clone();
    let files = tiny_model_unrunnable(12);
    let limits = env.emb.deps.cfg.limits.clone();

    // Declarations: over the part's cap (the multipart route's own), a file the purpose
    // does not take, the same file twice, a stranger staging weights.
    let decl = |name: &str, bytes: u64| json!({"name": name, "bytes": bytes, "sha256": sha(b"x")});
    let over =
        json!({"purpose": "model", "files": [decl("weights", limits.max_weights_bytes + 1)]});
    let (st, b) = declare_raw(&env, &op, over, "d-1").await;
    assert_eq!((st, code(&b)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"), "{b}");
    let over =
        json!({"purpose": "dataset", "files": [decl("dataset", limits.max_dataset_bytes + 1)]});
    let (st, b) = declare_raw(&env, &op, over, "d-2").await;
    assert_eq!((st, code(&b)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"), "{b}");
    let at_cap =
        json!({"purpose": "dataset", "files": [decl("dataset", limits.max_dataset_bytes)]});
    let (st, b) = declare_raw(&env, &op, at_cap, "d-3").await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    for (i, files) in [
        json!([decl("dataset", 5)]),
        json!([decl("../weights", 5)]),
        json!([decl("config", 5), decl("config", 5)]),
        json!([]),
    ]
    .into_iter()
    .enumerate()
    {
        let (st, b) =
            declare_raw(&env, &op, json!({"purpose": "model", "files": files}), &format!("d-b{i}"))
                .await;
        assert_eq!((st, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid"), "{b}");
    }
    let stranger = env.wallet(0).await;
    let (st, b) = declare(&env, &stranger, "model", &[("config", &files.config)], "d-4").await;
    assert_eq!((st, code(&b)), (StatusCode::FORBIDDEN, "forbidden"), "{b}");
    // A declaration's nonce is used once, like every signed request's.
    let (st, b) = declare(&env, &op, "model", &[("config", &files.config)], "d-3").await;
    assert_eq!((st, code(&b)), (StatusCode::CONFLICT, "conflict"), "{b}");

    // PUTs: a forged token, a longer body, other bytes of the same length.
    let parts: [(&str, &[u8]); 3] =
        [("config", &files.config), ("weights", &files.weights), ("tokenizer", &files.tokenizer)];
    let (st, grant) = declare(&env, &op, "model", &parts, "d-5").await;
    assert_eq!(st, StatusCode::CREATED, "{grant}");
    let url = grant["files"][0]["url"].as_str().unwrap().to_string();
    let forged =
        format!("{}{}", &url[..url.len() - 4], if url.ends_with("0000") { "1111" } else { "0000" });
    let (st, b) = put_url(&env, &forged, &files.config).await;
    assert_eq!((st, code(&b)), (StatusCode::FORBIDDEN, "upload_url_refused"), "{b}");
    let (st, b) = put_url(&env, &url.replace("bytes=", "bytes=1"), &files.config).await;
    assert_eq!((st, code(&b)), (StatusCode::FORBIDDEN, "upload_url_refused"), "{b}");
    let longer = [files.config.as_slice(), b" "].concat();
    let (st, b) = put(&env, &grant, "config", &longer).await;
    assert_eq!((st, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "upload_mismatch"), "{b}");
    let mut other = files.config.clone();
    other[0] ^= 1;
    let (st, b) = put(&env, &grant, "config", &other).await;
    assert_eq!((st, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "upload_mismatch"), "{b}");

    // Use: files that never arrived (all refused so far, or never sent).
    let id = grant["upload_id"].as_str().unwrap().to_string();
    let (st, b) = publish_upload(&env, &op, &files, &id, "p-1").await;
    assert_eq!((st, code(&b)), (StatusCode::CONFLICT, "upload_missing"), "{b}");
    for (name, bytes) in parts {
        assert_eq!(put(&env, &grant, name, bytes).await.0, StatusCode::OK);
    }
    // A staged file changed after its PUT (same length) is caught when it is read back.
    let key = format!("uploads/{id}/files/config");
    env.emb.deps.store.put(&key, other.clone().into()).await.unwrap();
    let (st, b) = publish_upload(&env, &op, &files, &id, "p-2").await;
    assert_eq!((st, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "upload_mismatch"), "{b}");
    // A failed use releases the upload: put right, the same upload publishes.
    env.emb.deps.store.put(&key, files.config.clone().into()).await.unwrap();
    let (st, b) = publish_upload(&env, &op, &files, &id, "p-3").await;
    assert_eq!(st, StatusCode::CREATED, "{b}");

    // Unknown ids (well-formed or not), and a publish naming none.
    for bad in [format!("u-{}", "0".repeat(32)), "u-../../models".into(), "x".into()] {
        let (st, b) = publish_upload(&env, &op, &files, &bad, "p-4").await;
        assert_eq!((st, code(&b)), (StatusCode::NOT_FOUND, "upload_unknown"), "{bad}: {b}");
    }
    let body = publish_request(&op, &files, "p-5");
    let (st, b) = post_json(&env, "/api/models", &op, PUBLISH_MODEL, &body, None).await;
    assert_eq!((st, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"), "{b}");

    // The wrong purpose: a dataset upload named by a publish.
    let (st, grant) = declare(&env, &op, "dataset", &[("dataset", b"hello")], "d-6").await;
    assert_eq!(st, StatusCode::CREATED, "{grant}");
    let ds = grant["upload_id"].as_str().unwrap();
    let (st, b) = publish_upload(&env, &op, &files, ds, "p-6").await;
    assert_eq!((st, code(&b)), (StatusCode::UNPROCESSABLE_ENTITY, "upload_purpose"), "{b}");

    // Never used: the sweep leaves it while it may still be used, then deletes it.
    let swept = posthuman_functions::uploads::sweep_uploads(&env.emb.deps, now()).await.unwrap();
    assert_eq!(swept, 0);
    let later = now() + 3 * 24 * 3600;
    let swept = posthuman_functions::uploads::sweep_uploads(&env.emb.deps, later).await.unwrap();
    assert!(swept >= 3, "{swept}");
    assert!(env.emb.deps.store.list("uploads/").await.unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_upload_is_refused_at_its_put_and_at_its_use() {
    let env = env(sleeper(), |c| c.api.upload_validity_secs = 1).await;
    let op = env.operator.clone();
    let files = tiny_model_unrunnable(13);
    let parts: [(&str, &[u8]); 3] =
        [("config", &files.config), ("weights", &files.weights), ("tokenizer", &files.tokenizer)];
    let (st, grant) = declare(&env, &op, "model", &parts, "e-1").await;
    assert_eq!(st, StatusCode::CREATED, "{grant}");
    for (name, bytes) in parts {
        assert_eq!(put(&env, &grant, name, bytes).await.0, StatusCode::OK, "{name}");
    }
    let id = grant["upload_id"].as_str().unwrap();
    let (st, grant2) = declare(&env, &op, "model", &parts, "e-2").await;
    assert_eq!(st, StatusCode::CREATED, "{grant2}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (st, b) = put(&env, &grant2, "config", &files.config).await;
    assert_eq!((st, code(&b)), (StatusCode::FORBIDDEN, "upload_url_refused"), "{b}");
    let (st, b) = publish_upload(&env, &op, &files, id, "e-3").await;
    assert_eq!((st, code(&b)), (StatusCode::GONE, "upload_expired"), "{b}");
}

#[tokio::test]
async fn the_caps_the_api_answers_are_the_ones_it_enforces() {
    // An operator's own caps (as `--max-dataset-bytes` sets them), not the defaults.
    let env = env(sleeper(), |c| {
        c.api.limits.max_dataset_bytes = 16384;
        c.api.upload_validity_secs = 120;
    })
    .await;
    let (st, caps) = env.get("/api/uploads").await;
    assert_eq!(st, StatusCode::OK, "{caps}");
    let limits: posthuman_types::uploads::UploadLimits =
        serde_json::from_value(caps.clone()).unwrap();
    let l = &env.emb.deps.cfg.limits;
    assert_eq!(limits.validity_secs, 120);
    assert_eq!(limits.dataset.len(), 1);
    assert_eq!(limits.cap(UploadPurpose::Dataset, "dataset"), Some(16384));
    let names: Vec<&str> = limits.model.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "config",
            "weights",
            "tokenizer",
            "adapter_config",
            "adapter_weights",
            "tokenizer_config",
            "generation_config",
            "chat_template"
        ]
    );
    assert_eq!(limits.cap(UploadPurpose::Model, "weights"), Some(l.max_weights_bytes));
    assert_eq!(limits.cap(UploadPurpose::Model, "config"), Some(l.max_config_bytes));
    // At the cap a declaration is granted; one byte over, refused: the answer is the rule.
    let buyer = env.operator.clone();
    let decl = |bytes: u64| json!({"purpose": "dataset", "files": [{"name": "dataset", "bytes": bytes, "sha256": sha(b"x")}]});
    let (st, b) = declare_raw(&env, &buyer, decl(16384), "cap-1").await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (st, b) = declare_raw(&env, &buyer, decl(16385), "cap-2").await;
    assert_eq!((st, code(&b)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"), "{b}");
}
