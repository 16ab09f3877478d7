//! Lists through the real router: `GET /api/models` and `GET /api/jobs?consumer=` come in
//! pages (a JSON array body, the next page's cursor in `x-posthuman-next-cursor`), a walk
//! sees every record exactly once, and a bad `limit` or `cursor` is a 400.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use std::collections::HashSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use harness::*;
use posthuman_functions::catalogue::{JobPhase, JobRecord, ModelRecord};
use posthuman_functions::queue::WorkerCommand;
use tower::ServiceExt;

fn idle() -> WorkerCommand {
    WorkerCommand { program: "/bin/true".into(), args: vec![] }
}

fn model(i: u32, created_at: u64) -> ModelRecord {
    let nft = format!("0x{:040x}", 0xa000 + i);
    let mut m = common::model_record();
    m.card.name = format!("model {i}");
    m.card.symbol = "M".into();
    m.card.description = "seeded".into();
    m.storage_prefix = format!("models/{nft}");
    m.card.nft = nft;
    m.created_at = created_at;
    m
}

pub fn job(id: &str, model: &str, consumer: &str, created_at: u64) -> JobRecord {
    JobRecord {
        job_id: id.to_string(),
        kind: posthuman_types::JobKind::Infer,
        model: model.to_string(),
        consumer: consumer.to_string(),
        order_tx: format!("0x{:0>64}", id.len()),
        order_log_index: 0,
        spec: common::infer_spec(id),
        // A queue reference the queue does not know: a list must not ask it anyway.
        queue_ref: Some("no-such-queue-job".into()),
        phase: JobPhase::Queued,
        created_at,
        updated_at: created_at,
        completion: Default::default(),
        order_released: false,
        receipt_hash: None,
        perplexity: None,
        input_data_hash: None,
    }
}

/// GET through the router: status, JSON body, next cursor.
async fn page(env: &Env, path: &str) -> (StatusCode, serde_json::Value, Option<String>) {
    let req = Request::get(path).body(Body::empty()).unwrap();
    let resp = env.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let next =
        resp.headers().get("x-posthuman-next-cursor").map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null), next)
}

/// Follows cursors from `base` (which already has a `?`); every id in page order.
async fn walk(env: &Env, base: &str, key: &str) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut url = base.to_string();
    loop {
        let (st, body, next) = page(env, &url).await;
        assert_eq!(st, StatusCode::OK, "{url}: {body}");
        pages += 1;
        seen.extend(body.as_array().unwrap().iter().map(|v| v[key].as_str().unwrap().to_string()));
        match next {
            Some(c) => url = format!("{base}&cursor={c}"),
            None => return (seen, pages),
        }
        assert!(pages < 1000, "paging did not end");
    }
}

#[tokio::test]
async fn lists_page_through_every_record_once_and_refuse_bad_cursors() {
    let env = env(idle(), |_| {}).await;
    let cat = env.emb.deps.catalogue.clone();
    let before = cat.list_models().await.unwrap().len();
    for i in 0..23 {
        cat.put_model(&model(i, 1000 + u64::from(i / 3))).await.unwrap();
    }
    let buyer = "0x00000000000000000000000000000000000000b7";
    let other = "0x00000000000000000000000000000000000000b8";
    let m = model(0, 1000).card.nft;
    let mut want = Vec::new();
    for i in 0..57u64 {
        let id = format!("listed-{i:03}");
        cat.put_job(&job(&id, &m, buyer, 5000 + i / 4)).await.unwrap();
        want.push((5000 + i / 4, id));
        cat.put_job(&job(&format!("theirs-{i:03}"), &m, other, 5000 + i)).await.unwrap();
    }
    want.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();

    // Jobs: newest first, each once, at any page size; the default page is 50.
    for limit in [1, 7, 50, 200] {
        let (seen, pages) =
            walk(&env, &format!("/api/jobs?consumer={buyer}&limit={limit}"), "job_id").await;
        assert_eq!(seen, want, "limit {limit}");
        assert_eq!(pages, want.len().div_ceil(limit), "limit {limit}");
    }
    let (st, body, next) = page(&env, &format!("/api/jobs?consumer={buyer}")).await;
    assert_eq!((st, body.as_array().unwrap().len()), (StatusCode::OK, 50));
    assert!(next.is_some());
    // Live jobs show as queued: the list did not ask the queue about them.
    assert_eq!(body[0]["state"], "queued", "{body}");

    // Models: oldest first, each once.
    let (seen, _) = walk(&env, "/api/models?limit=4", "nft").await;
    assert_eq!(seen.len(), before + 23);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len(), "{seen:?}");
    let (st, body, next) = page(&env, "/api/models").await;
    assert_eq!((st, body.as_array().unwrap().len(), next), (StatusCode::OK, before + 23, None));

    // Bad limits and cursors are a 400 naming the problem, on both lists.
    for q in [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=ten",
        "cursor=",
        "cursor=garbage",
        "cursor=1.a%2Fb",
        "cursor=99999999999999999999.a",
        "limit=5&cursor=..%2F..%2Fetc",
    ] {
        for base in ["/api/models?", &format!("/api/jobs?consumer={buyer}&")] {
            let (st, body, _) = page(&env, &format!("{base}{q}")).await;
            assert_eq!(
                (st, body["error"].as_str()),
                (StatusCode::BAD_REQUEST, Some("bad_request")),
                "{base}{q}: {body}"
            );
        }
    }
}
