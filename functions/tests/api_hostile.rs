//! Hostile input against the real router on the embedded default (anvil, deployed Ocean v4 +
//! lineage contract, SQLite catalogue, local queue): each answered with a clear 4xx, nothing
//! queued, no order spent twice. Also: every route is in the OpenAPI description, and
//! `serve()` binds, answers and shuts down.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use axum::http::{Method, StatusCode};
use harness::*;
use posthuman_types::{JobParams, RewardScheme, TrainParams};

fn train(lr: f64) -> JobParams {
    let mut t = TrainParams::new(4, lr, 2, 16);
    t.checkpoint_every = 2;
    JobParams::Train(t)
}

#[tokio::test]
async fn hostile_requests_get_clear_4xx_and_spend_nothing() {
    let mut env = env(sleeper(), |c| c.api.limits.max_dataset_bytes = 4096).await;
    let operator = env.operator.clone();
    let files = tiny_model_unrunnable(1);
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);

    // Publishing: only allowed publishers; broken weights are named.
    let mallory = env.wallet(10).await;
    let (st, body) = publish(&env, &mallory, &files, &scheme, "p-1").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let mut broken = tiny_model_unrunnable(1);
    broken.weights.truncate(broken.weights.len() / 2);
    let (st, body) = publish(&env, &operator, &broken, &scheme, "p-2").await;
    assert_eq!(
        (st, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid")),
        "{body}"
    );
    let (st, model) = publish(&env, &operator, &files, &scheme, "p-3").await;
    assert_eq!(st, StatusCode::CREATED, "{model}");
    let nft = model["nft"].as_str().unwrap().to_string();
    // A replayed publish is refused before anything happens on chain.
    let (st, body) = publish(&env, &operator, &files, &scheme, "p-3").await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");

    let bob = env.wallet(100).await;
    let carol = env.wallet(100).await;
    env.buy(&bob, &model, 5).await;
    env.buy(&carol, &model, 2).await;
    let data = b"some training text for a tiny model, repeated. ".repeat(20);
    let bob_order = env.order(&nft, &train(1e-3), data.len(), &bob, bob.address()).await;
    let carol_order = env.order(&nft, &train(1e-3), data.len(), &carol, carol.address()).await;
    let dt = model["datatoken"].as_str().unwrap().to_string();
    let expired = env.fee_expiring_at(now() - 10);
    let expired_order = env.order_with_fee(&dt, 0, &bob, bob.address(), &expired).await;
    let infer = posthuman_types::InferParams {
        prompts: vec!["hi".into()],
        max_new_tokens: 4,
        sampling: Default::default(),
        stop: vec![],
        messages: vec![],
    };
    let infer_order = env.order(&nft, &JobParams::Infer(infer), 0, &bob, bob.address()).await;

    let mut n = 0;
    let mut nonce = || {
        n += 1;
        format!("n-{n}")
    };
    let check = |what: &str, got: (StatusCode, serde_json::Value), want: StatusCode, code: &str| {
        assert_eq!(got.0, want, "{what}: {}", got.1);
        assert_eq!(got.1["error"].as_str(), Some(code), "{what}: {}", got.1);
        assert!(got.1["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
    };

    // No order: a tx hash that does not exist.
    let ghost = format!("0x{}", "ab".repeat(32));
    let r = job_request(&nft, &ghost, bob.address(), &train(1e-3), Some(&data), &nonce());
    check(
        "no order",
        submit(&env, &bob, &r, Some(&data)).await,
        StatusCode::PAYMENT_REQUIRED,
        "payment_invalid",
    );
    // Not a transaction hash at all.
    let r = job_request(&nft, "0xnothex", bob.address(), &train(1e-3), Some(&data), &nonce());
    check(
        "forged tx",
        submit(&env, &bob, &r, Some(&data)).await,
        StatusCode::PAYMENT_REQUIRED,
        "payment_invalid",
    );
    // Someone else's order (Carol is its consumer).
    let r = job_request(&nft, &carol_order, bob.address(), &train(1e-3), Some(&data), &nonce());
    check(
        "someone else's order",
        submit(&env, &bob, &r, Some(&data)).await,
        StatusCode::PAYMENT_REQUIRED,
        "payment_invalid",
    );
    // An order for another service (infer order on a train job).
    let r = job_request(&nft, &infer_order, bob.address(), &train(1e-3), Some(&data), &nonce());
    check(
        "wrong service",
        submit(&env, &bob, &r, Some(&data)).await,
        StatusCode::PAYMENT_REQUIRED,
        "payment_invalid",
    );
    // Expired provider fee (validUntil is not enforced on chain; we enforce it).
    let r = job_request(&nft, &expired_order, bob.address(), &train(1e-3), Some(&data), &nonce());
    let got = submit(&env, &bob, &r, Some(&data)).await;
    assert!(got.1["message"].as_str().unwrap().contains("expired"), "{}", got.1);
    check("expired fee", got, StatusCode::PAYMENT_REQUIRED, "payment_invalid");
    // Bad signature: Mallory signs a request naming Bob.
    let r = job_request(&nft, &bob_order, bob.address(), &train(1e-3), Some(&data), &nonce());
    check(
        "bad signature",
        submit(&env, &mallory, &r, Some(&data)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    // A garbage signature.
    let (ct, body) =
        multipart(&[("request", &r), ("signature", b"0xdeadbeef"), ("dataset", &data)]);
    let req = axum::http::Request::post("/api/jobs")
        .header("content-type", ct)
        .body(axum::body::Body::from(body))
        .unwrap();
    check("garbage signature", env.call(req).await, StatusCode::UNAUTHORIZED, "unauthorized");
    // Malformed JSON (validly signed).
    check(
        "malformed json",
        submit(&env, &bob, b"{\"model\": ", Some(&data)).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    // Bob's valid train request as JSON, for the cases that edit a field.
    let bob_request_json = |nonce: &str| -> serde_json::Value {
        let r = job_request(&nft, &bob_order, bob.address(), &train(1e-3), Some(&data), nonce);
        serde_json::from_slice(&r).unwrap()
    };
    // Unknown fields are refused too.
    let mut v = bob_request_json(&nonce());
    v["evil"] = 1.into();
    check(
        "unknown field",
        submit(&env, &bob, &serde_json::to_vec(&v).unwrap(), Some(&data)).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    // A request without the buyer's salt, with a short one, or with an all-zero one (it would
    // leave the receipt's input hash guessable) is refused.
    for (what, salt, code, status) in [
        ("missing salt", None, StatusCode::BAD_REQUEST, "bad_request"),
        ("short salt", Some(serde_json::json!("0x0102")), StatusCode::BAD_REQUEST, "bad_request"),
        (
            "zero salt",
            Some(serde_json::to_value(posthuman_types::Hash32::ZERO).unwrap()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
    ] {
        let mut v = bob_request_json(&nonce());
        match salt {
            Some(s) => v["salt"] = s,
            None => {
                v.as_object_mut().unwrap().remove("salt");
            }
        }
        let got = submit(&env, &bob, &serde_json::to_vec(&v).unwrap(), Some(&data)).await;
        check(what, got, code, status);
    }
    // Neither multipart nor the JSON form (which names its files' direct upload).
    let req = axum::http::Request::post("/api/jobs")
        .header("content-type", "text/plain")
        .body(axum::body::Body::from("{}"))
        .unwrap();
    check("not multipart", env.call(req).await, StatusCode::BAD_REQUEST, "bad_request");
    // The JSON form without its signature header.
    let req = axum::http::Request::post("/api/jobs")
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{}"))
        .unwrap();
    check("unsigned JSON", env.call(req).await, StatusCode::UNAUTHORIZED, "unauthorized");
    // Oversized upload (the test caps datasets at 4 KiB).
    let big = vec![b'a'; 8192];
    let r = job_request(&nft, &bob_order, bob.address(), &train(1e-3), Some(&big), &nonce());
    check(
        "oversized upload",
        submit(&env, &bob, &r, Some(&big)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    );
    // Dataset not the one signed for.
    let r = job_request(&nft, &bob_order, bob.address(), &train(1e-3), Some(b"other"), &nonce());
    check(
        "dataset swapped",
        submit(&env, &bob, &r, Some(&data)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    );
    // Unknown model.
    let r = job_request(
        "0x000000000000000000000000000000000000dead",
        &bob_order,
        bob.address(),
        &train(1e-3),
        Some(&data),
        &nonce(),
    );
    check(
        "unknown model",
        submit(&env, &bob, &r, Some(&data)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // Hyperparameters out of range: the field is named.
    for (what, params) in [
        ("lr", train(5.0)),
        ("nan lr", train(f64::NAN)),
        ("context", {
            let mut t = TrainParams::new(4, 1e-3, 2, 1024);
            t.checkpoint_every = 2;
            JobParams::Train(t)
        }),
    ] {
        let r = job_request(&nft, &bob_order, bob.address(), &params, Some(&data), &nonce());
        let got = submit(&env, &bob, &r, Some(&data)).await;
        if what == "nan lr" {
            // NaN is not JSON: serde writes null, which the typed parser refuses.
            check(what, got, StatusCode::BAD_REQUEST, "bad_request");
        } else {
            check(what, got, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        }
    }
    // A derived model's name or symbol out of bounds (issue 14): a 422 naming the field.
    for (field, name, symbol) in
        [("name", Some(" padded"), None), ("symbol", None, Some("NOT A SYMBOL"))]
    {
        let JobParams::Train(mut t) = train(1e-3) else { unreachable!() };
        t.name = name.map(str::to_string);
        t.symbol = symbol.map(str::to_string);
        let params = JobParams::Train(t);
        let r = job_request(&nft, &bob_order, bob.address(), &params, Some(&data), &nonce());
        let (st, body) = submit(&env, &bob, &r, Some(&data)).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("invalid {field}:")), "{message}");
    }
    // Expired request.
    let mut v = bob_request_json(&nonce());
    v["expires_at"] = (now() - 1).into();
    check(
        "expired request",
        submit(&env, &bob, &serde_json::to_vec(&v).unwrap(), Some(&data)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // Nothing so far was queued or claimed.
    assert!(env.emb.deps.catalogue.jobs_for_model(&nft).await.unwrap().is_empty());

    // The good request is accepted once…
    let good = job_request(&nft, &bob_order, bob.address(), &train(1e-3), Some(&data), &nonce());
    let (st, ok) = submit(&env, &bob, &good, Some(&data)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{ok}");
    let job_id = ok["job_id"].as_str().unwrap().to_string();
    // …a replay of the very same signed request is refused (nonce)…
    check(
        "replayed nonce",
        submit(&env, &bob, &good, Some(&data)).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    // …and the order cannot pay for a second job (reused order).
    let again = job_request(&nft, &bob_order, bob.address(), &train(1e-3), Some(&data), &nonce());
    let got = submit(&env, &bob, &again, Some(&data)).await;
    assert!(got.1["message"].as_str().unwrap().contains(&job_id), "{}", got.1);
    check("reused order", got, StatusCode::CONFLICT, "conflict");

    // Exactly one job exists, queued or running, holding the order.
    let jobs = env.emb.deps.catalogue.jobs_for_model(&nft).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job_id, job_id);
    let (st, status) = env.get(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(matches!(status["state"].as_str(), Some("queued" | "running")), "{status}");
    assert!(status.get("spec").is_none() && !status.to_string().contains("private"), "{status}");

    // Results only to the buyer; unknown jobs are 404.
    check(
        "result by another",
        env.result(&job_id, &carol).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (st, _) = env.result(&job_id, &bob).await;
    assert_eq!(st, StatusCode::OK);
    check(
        "unknown job",
        env.get("/api/jobs/j-000000000000000000000000").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    check(
        "hostile job id",
        env.get("/api/jobs/..%2F..%2Fetc").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    check(
        "unknown model get",
        env.get("/api/models/0x000000000000000000000000000000000000dead").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    check(
        "bad kind",
        env.get(&format!("/api/models/{nft}/quote?kind=mine")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    );

    // The catalogue never shows storage keys.
    let (_, list) = env.get("/api/models").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains("models/"), "{list}");
    env.emb.queue.shutdown().await;
}

#[test]
fn every_route_is_in_the_openapi_description() {
    let doc: serde_json::Value = serde_json::from_str(posthuman_functions::api::OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let routes = posthuman_functions::api::routes();
    for r in &routes {
        let m = r.method.as_str().to_ascii_lowercase();
        assert!(
            paths.get(&r.path).and_then(|p| p.get(&m)).is_some(),
            "{} {} is not in openapi.json",
            r.method,
            r.path
        );
    }
    // And the description names no route the router lacks.
    let described: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(described, routes.len());
    assert!(routes.iter().any(|r| r.method == Method::POST && r.path == "/api/jobs"));
}

#[tokio::test]
async fn serve_binds_answers_and_shuts_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let cfg = posthuman_functions::server::ServerConfig::new(dir.path().join("data"), "/bin/true");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(posthuman_functions::server::serve(cfg, listener, async {
        let _ = rx.await;
    }));
    let mut resp = String::new();
    for _ in 0..200 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            s.write_all(b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            s.read_to_string(&mut resp).await.unwrap();
            if resp.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("\"openapi\""), "{resp}");
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    // The operator key was created private, the deployment recorded.
    use std::os::unix::fs::PermissionsExt;
    let mode =
        std::fs::metadata(dir.path().join("data/operator.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(dir.path().join("data/chain/address-book.json").is_file());
    assert!(
        dir.path().join("data/chain/anvil-state.json").is_file(),
        "anvil saved its state on stop"
    );
}
