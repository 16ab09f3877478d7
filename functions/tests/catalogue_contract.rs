//! One contract suite for every `Catalogue`: SQLite, and JSON objects in an ObjectStore (the
//! filesystem store here, S3 on LocalStack when POSTHUMAN_S3_ENDPOINT is set).

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;

use std::sync::Arc;

use posthuman_functions::catalogue::{
    Catalogue, ChildAsset, Cursor, JobPhase, JobRecord, KindCounts, ModelActivity, ModelRecord,
    ObjectCatalogue, OrderClaim, SqliteCatalogue,
};
use posthuman_store::{LocalStore, ObjectStore, S3Config, S3Store};
use posthuman_types::{Hash32, JobKind};

fn model(nft: &str, created_at: u64) -> ModelRecord {
    let mut m = common::model_record();
    m.card.nft = nft.to_string();
    m.card.name = format!("model {nft}");
    m.card.architecture = "gpt2 2L/32d/2h ctx64 vocab300".into();
    m.card.parameters = 12345;
    m.card.exchange_id = Some(Hash32([9; 32]));
    m.card.price = Some("1000000000000000000".into());
    m.storage_prefix = format!("models/{nft}");
    m.created_at = created_at;
    m
}

fn job(id: &str, model: &str, created_at: u64) -> JobRecord {
    JobRecord {
        job_id: id.to_string(),
        kind: posthuman_types::JobKind::Infer,
        model: model.to_string(),
        consumer: "0x00000000000000000000000000000000000000b0".into(),
        order_tx: format!("0x{:0>64}", id.len()),
        order_log_index: 0,
        spec: common::infer_spec(id),
        queue_ref: None,
        phase: JobPhase::Submitting,
        created_at,
        updated_at: created_at,
        completion: Default::default(),
        order_released: false,
        receipt_hash: None,
        perplexity: None,
        input_data_hash: None,
    }
}

/// Walks every page of a consumer's jobs; the ids in page order.
async fn walk_jobs(cat: &dyn Catalogue, consumer: &str, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after: Option<Cursor> = None;
    for _ in 0..100 {
        let page = cat.jobs_of_consumer(consumer, after.as_ref(), limit).await.unwrap();
        assert!(page.items.len() <= limit);
        seen.extend(page.items.into_iter().map(|j| j.job_id));
        match page.next {
            Some(c) => after = Some(c),
            None => return seen,
        }
    }
    panic!("paging did not end");
}

/// The per-consumer index and paging of models and jobs (the suite's models a and b exist).
async fn paging(cat: &dyn Catalogue) {
    let buyer = "0x00000000000000000000000000000000000000c7";
    let other = "0x00000000000000000000000000000000000000c8";
    let m = "0x00000000000000000000000000000000000000aa";
    // Seven jobs of `buyer` (two share a created_at), interleaved with another buyer's.
    let mut want = Vec::new();
    for (i, at) in [500u64, 501, 503, 503, 502, 504, 499].into_iter().enumerate() {
        let mut j = job(&format!("page-{i}"), m, at);
        j.consumer = buyer.into();
        cat.put_job(&j).await.unwrap();
        // A later rewrite (new phase) must not duplicate it in the index.
        j.phase = JobPhase::Queued;
        j.updated_at = at + 5;
        cat.put_job(&j).await.unwrap();
        want.push((at, j.job_id.clone()));
        let mut o = job(&format!("other-{i}"), m, at);
        o.consumer = other.into();
        cat.put_job(&o).await.unwrap();
    }
    // Newest first; ties by job id.
    want.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
    for limit in [1, 2, 3, 7, 50] {
        assert_eq!(walk_jobs(cat, buyer, limit).await, want, "limit {limit}");
    }
    // Case-insensitive consumer; a stranger has none.
    assert_eq!(walk_jobs(cat, &buyer.to_uppercase().replace("0X", "0x"), 50).await, want);
    assert!(walk_jobs(cat, "0x00000000000000000000000000000000000000c9", 5).await.is_empty());
    // The first page of seven at limit 7 is the last one.
    let page = cat.jobs_of_consumer(buyer, None, 7).await.unwrap();
    assert_eq!((page.items.len(), page.next), (7, None));
    // A job added after a walk began, newer than its cursor, does not disturb the rest.
    let first = cat.jobs_of_consumer(buyer, None, 3).await.unwrap();
    let mut late = job("page-late", m, 600);
    late.consumer = buyer.into();
    cat.put_job(&late).await.unwrap();
    let rest = walk_jobs_after(cat, buyer, first.next.clone().unwrap(), 3).await;
    let mut walked: Vec<String> = first.items.into_iter().map(|j| j.job_id).collect();
    walked.extend(rest);
    assert_eq!(walked, want);

    // Models: oldest first, by created_at then NFT, each once.
    let mut all: Vec<(u64, String)> =
        vec![(10, m.into()), (20, "0x00000000000000000000000000000000000000bb".into())];
    for i in 0..5u64 {
        let nft = format!("0x00000000000000000000000000000000000001{i:02}");
        cat.put_model(&model(&nft, 15 + i / 2)).await.unwrap();
        all.push((15 + i / 2, nft));
    }
    all.sort();
    let want: Vec<String> = all.into_iter().map(|(_, n)| n).collect();
    for limit in [1, 2, 4, 7, 200] {
        let mut seen = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let page = cat.models_page(after.as_ref(), limit).await.unwrap();
            assert!(page.items.len() <= limit);
            seen.extend(page.items.into_iter().map(|m| m.card.nft));
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
            assert!(seen.len() <= want.len(), "limit {limit}: {seen:?}");
        }
        assert_eq!(seen, want, "limit {limit}");
    }
    // A cursor survives its wire form.
    let c = Cursor { at: 503, id: "page-2".into() };
    assert_eq!(Cursor::decode(&c.encode()), Some(c));
    for bad in
        ["", "x", "12", ".a", "1.", "-1.a", "+1.a", "1.a/b", "1.a.b", "99999999999999999999.a"]
    {
        assert_eq!(Cursor::decode(bad), None, "{bad:?}");
    }
}

/// A model card's activity: exact counts by kind through every rewrite and concurrent write,
/// and the newest evaluations and receipts, newest first.
async fn activity(cat: &dyn Catalogue) {
    let m = "0x00000000000000000000000000000000000000cc";
    let none = cat.model_activity(m, 10).await.unwrap();
    assert_eq!(none, ModelActivity::default());
    cat.put_model(&model(m, 30)).await.unwrap();
    assert_eq!(cat.model_activity(m, 10).await.unwrap(), ModelActivity::default());

    // (id, kind, created_at, perplexity, receipt); every job goes through each phase.
    let eval = |ppl: f64, r: u8| (JobKind::Evaluate, Some(ppl), Some(Hash32([r; 32])));
    let jobs = [
        ("act-t1", (JobKind::Train, None, Some(Hash32([1; 32]))), 300),
        ("act-t2", (JobKind::Train, None, None), 301),
        ("act-t3", (JobKind::Train, None, None), 302),
        ("act-i1", (JobKind::Infer, None, Some(Hash32([2; 32]))), 303),
        ("act-i2", (JobKind::Infer, None, None), 304),
        ("act-i3", (JobKind::Infer, None, None), 305),
        ("act-i4", (JobKind::Infer, None, None), 306),
        ("act-e1", eval(11.0, 3), 307),
        ("act-e2", eval(12.0, 4), 309),
        ("act-e3", eval(f64::INFINITY, 5), 309),
        ("act-e4", (JobKind::Evaluate, None, None), 310),
        ("act-e5", (JobKind::Evaluate, None, None), 311),
    ];
    for (id, (kind, ppl, receipt), at) in jobs {
        let mut j = job(id, m, at);
        j.kind = kind;
        cat.put_job(&j).await.unwrap();
        j.phase = JobPhase::Queued;
        cat.put_job(&j).await.unwrap();
        if receipt.is_some() {
            j.phase = JobPhase::Succeeded;
            j.perplexity = ppl;
            j.receipt_hash = receipt;
            j.input_data_hash = Some(Hash32([0x5a; 32]));
        } else {
            j.phase = JobPhase::Failed { reason: "boom".into(), exit_code: Some(1) };
        }
        cat.put_job(&j).await.unwrap();
        cat.put_job(&j).await.unwrap();
    }
    // Another model's jobs are not this one's.
    cat.put_job(&job("act-other", "0x00000000000000000000000000000000000000aa", 399))
        .await
        .unwrap();

    let got = cat.model_activity(m, 50).await.unwrap();
    assert_eq!(got.counts, KindCounts { train: 3, infer: 4, evaluate: 5 });
    // Newest first; a tie in created_at by job id.
    let ids: Vec<&str> = got.evaluations.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(ids, ["act-e2", "act-e3", "act-e1"]);
    assert_eq!(got.evaluations[1].perplexity, Some(f64::INFINITY));
    assert_eq!(got.evaluations[0].input_data_hash, Some(Hash32([0x5a; 32])));
    let receipts: Vec<u8> = got.receipts.iter().map(|h| h.0[0]).collect();
    assert_eq!(receipts, [4, 5, 3, 2, 1]);
    // Only the newest `latest`; the counts stay whole; addresses are case-insensitive.
    let two = cat.model_activity(&m.to_uppercase().replace("0X", "0x"), 2).await.unwrap();
    assert_eq!(two.counts, got.counts);
    assert_eq!(two.evaluations, got.evaluations[..2]);
    assert_eq!(two.receipts, got.receipts[..2]);
    assert_eq!(cat.model_activity(m, 0).await.unwrap().evaluations, []);

    // Concurrent writers, each job written by two of them at once: no count lost or doubled.
    let writes = (0..24).flat_map(|i| {
        [0, 1].map(move |_| async move {
            let mut j = job(&format!("act-race-{i}"), m, 400 + i);
            j.kind = if i % 2 == 0 { JobKind::Infer } else { JobKind::Train };
            cat.put_job(&j).await.unwrap();
        })
    });
    futures::future::join_all(writes).await;
    let raced = cat.model_activity(m, 50).await.unwrap();
    assert_eq!(raced.counts, KindCounts { train: 3 + 12, infer: 4 + 12, evaluate: 5 });
    assert_eq!(raced.evaluations, got.evaluations);
}

/// Derived models through the per-parent index: oldest first, capped, case-insensitive, a
/// model's children only (not its grandchildren), and every write of a child counted once.
async fn children(cat: &dyn Catalogue) {
    let root = "0x00000000000000000000000000000000000000d0";
    let nft = |i: u8| format!("0x{:0>40}", format!("d{i}"));
    let child = |i: u8, parent: &str, at: u64| {
        let mut m = model(&nft(i), at);
        m.card.parent = Some(parent.to_string());
        m
    };
    assert_eq!(cat.children(root, 10).await.unwrap(), Vec::<String>::new());
    cat.put_model(&model(root, 50)).await.unwrap();
    assert_eq!(cat.children(root, 10).await.unwrap(), Vec::<String>::new());
    // Written out of age order; one parent named in capitals; a grandchild under d1.
    cat.put_model(&child(2, root, 70)).await.unwrap();
    cat.put_model(&child(1, &root.to_uppercase().replace("0X", "0x"), 60)).await.unwrap();
    cat.put_model(&child(3, &nft(1), 80)).await.unwrap();
    cat.put_model(&child(2, root, 70)).await.unwrap(); // a completion's retry
    assert_eq!(cat.children(root, 10).await.unwrap(), [nft(1), nft(2)]);
    assert_eq!(
        cat.children(&root.to_uppercase().replace("0X", "0x"), 10).await.unwrap(),
        [nft(1), nft(2)]
    );
    assert_eq!(cat.children(root, 1).await.unwrap(), [nft(1)]);
    assert_eq!(cat.children(&nft(1), 10).await.unwrap(), [nft(3)]);
    assert_eq!(cat.children(&nft(3), 10).await.unwrap(), Vec::<String>::new());
    assert_eq!(cat.children("../../etc", 10).await.unwrap(), Vec::<String>::new());
}

/// Default-name numbers: distinct among concurrent claimers, stable for a job, above the
/// floor, per parent, and kept across a restart.
async fn child_ordinals(cat: &dyn Catalogue, reopen: &dyn Fn() -> Arc<dyn Catalogue>) {
    let p = "0x00000000000000000000000000000000000000e0";
    let claims = (0..8).map(|i| async move {
        cat.claim_child_ordinal(p, &format!("j-sib-{i}"), 0).await.unwrap()
    });
    let mut got = futures::future::join_all(claims).await;
    got.sort_unstable();
    assert_eq!(got, (1..=8).collect::<Vec<u64>>(), "eight siblings, eight numbers");
    // A job claims once: asking again (a retried completion) answers its number, not a new one.
    let first = cat.claim_child_ordinal(p, "j-retry", 0).await.unwrap();
    assert_eq!(first, 9);
    assert_eq!(cat.claim_child_ordinal(p, "j-retry", 0).await.unwrap(), 9);
    // Derivations published before numbers were kept are the floor.
    assert_eq!(cat.claim_child_ordinal(p, "j-after-old", 20).await.unwrap(), 21);
    assert_eq!(cat.claim_child_ordinal(p, "j-next", 3).await.unwrap(), 22);
    // Another parent counts on its own; the parent's spelling does not matter.
    let q = "0x00000000000000000000000000000000000000E1";
    assert_eq!(cat.claim_child_ordinal(q, "j-other", 0).await.unwrap(), 1);
    assert_eq!(cat.claim_child_ordinal(&q.to_lowercase(), "j-other-2", 0).await.unwrap(), 2);
    let again = reopen();
    assert_eq!(again.claim_child_ordinal(p, "j-retry", 0).await.unwrap(), 9);
    assert_eq!(again.claim_child_ordinal(p, "j-after-restart", 0).await.unwrap(), 23);
}

async fn walk_jobs_after(
    cat: &dyn Catalogue,
    consumer: &str,
    start: Cursor,
    limit: usize,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after = Some(start);
    while let Some(c) = after {
        let page = cat.jobs_of_consumer(consumer, Some(&c), limit).await.unwrap();
        seen.extend(page.items.into_iter().map(|j| j.job_id));
        after = page.next;
        assert!(seen.len() < 100);
    }
    seen
}

/// The suite. `fresh` opens the same durable state again (a restart).
async fn contract_suite(cat: &dyn Catalogue, reopen: &dyn Fn() -> Arc<dyn Catalogue>) {
    let a = "0x00000000000000000000000000000000000000aa";
    let b = "0x00000000000000000000000000000000000000bb";
    assert!(cat.get_model(a).await.unwrap().is_none());
    assert!(cat.list_models().await.unwrap().is_empty());
    cat.put_model(&model(b, 20)).await.unwrap();
    cat.put_model(&model(a, 10)).await.unwrap();
    // Listing is oldest first; a put replaces.
    let names: Vec<String> =
        cat.list_models().await.unwrap().into_iter().map(|m| m.card.nft).collect();
    assert_eq!(names, [a, b]);
    let mut m = model(a, 10);
    m.card.description = "updated".into();
    cat.put_model(&m).await.unwrap();
    assert_eq!(cat.get_model(a).await.unwrap().unwrap(), m);
    // Lookups are case-insensitive on addresses.
    assert_eq!(cat.get_model(&a.to_uppercase().replace("0X", "0x")).await.unwrap().unwrap(), m);
    assert!(cat.get_model("../../etc/passwd").await.unwrap().is_none());

    // Jobs: put/get/replace and per-model listing.
    let mut j1 = job("job-1", a, 100);
    cat.put_job(&j1).await.unwrap();
    cat.put_job(&job("job-2", b, 101)).await.unwrap();
    cat.put_job(&job("job-3", a, 102)).await.unwrap();
    j1.phase = JobPhase::Failed { reason: "boom".into(), exit_code: Some(3) };
    j1.completion.child =
        Some(ChildAsset { nft: b.into(), datatoken: a.into(), exchange_id: None });
    cat.put_job(&j1).await.unwrap();
    assert_eq!(cat.get_job("job-1").await.unwrap().unwrap(), j1);
    assert!(cat.get_job("nope").await.unwrap().is_none());
    let ids: Vec<String> =
        cat.jobs_for_model(a).await.unwrap().into_iter().map(|j| j.job_id).collect();
    assert_eq!(ids, ["job-1", "job-3"]);
    assert!(
        cat.jobs_for_model("0x0000000000000000000000000000000000000000").await.unwrap().is_empty()
    );

    paging(cat).await;
    activity(cat).await;

    // Orders: claimed once, idempotent for the holder, released only by the holder.
    let tx = "0x1111111111111111111111111111111111111111111111111111111111111111";
    assert_eq!(cat.claim_order(tx, "job-1").await.unwrap(), OrderClaim::Claimed);
    assert_eq!(cat.claim_order(tx, "job-1").await.unwrap(), OrderClaim::Claimed);
    assert_eq!(
        cat.claim_order(&tx.to_uppercase().replace("0X", "0x"), "job-2").await.unwrap(),
        OrderClaim::Taken { job_id: "job-1".into() }
    );
    assert_eq!(cat.order_holder(tx).await.unwrap().as_deref(), Some("job-1"));
    assert!(!cat.release_order(tx, "job-2").await.unwrap());
    assert!(cat.release_order(tx, "job-1").await.unwrap());
    assert!(!cat.release_order(tx, "job-1").await.unwrap());
    assert_eq!(cat.order_holder(tx).await.unwrap(), None);
    assert_eq!(cat.claim_order(tx, "job-2").await.unwrap(), OrderClaim::Claimed);

    // Each claim is a generation: releasing an old holder again never frees a newer one.
    let tx3 = "0x3333333333333333333333333333333333333333333333333333333333333333";
    assert_eq!(cat.claim_order(tx3, "gen-1").await.unwrap(), OrderClaim::Claimed);
    assert!(cat.release_order(tx3, "gen-1").await.unwrap());
    assert_eq!(cat.claim_order(tx3, "gen-2").await.unwrap(), OrderClaim::Claimed);
    assert!(!cat.release_order(tx3, "gen-1").await.unwrap(), "a duplicate release");
    assert_eq!(cat.order_holder(tx3).await.unwrap().as_deref(), Some("gen-2"));
    assert!(cat.release_order(tx3, "gen-2").await.unwrap());
    assert_eq!(cat.claim_order(tx3, "gen-3").await.unwrap(), OrderClaim::Claimed);
    assert_eq!(
        cat.claim_order(tx3, "gen-4").await.unwrap(),
        OrderClaim::Taken { job_id: "gen-3".into() }
    );

    // Handed to the queue: only a Submitting job moves to Queued, and never back.
    cat.put_job(&job("job-q1", a, 200)).await.unwrap();
    assert!(cat.mark_queued("job-q1", "ref-1", 201).await.unwrap());
    let q1 = cat.get_job("job-q1").await.unwrap().unwrap();
    assert_eq!(
        (q1.phase, q1.queue_ref.as_deref(), q1.updated_at),
        (JobPhase::Queued, Some("ref-1"), 201)
    );
    assert!(!cat.mark_queued("job-q1", "ref-2", 202).await.unwrap(), "queued once");
    assert_eq!(cat.get_job("job-q1").await.unwrap().unwrap().queue_ref.as_deref(), Some("ref-1"));
    let listed = cat.jobs_for_model(a).await.unwrap();
    assert_eq!(listed.iter().find(|j| j.job_id == "job-q1").unwrap().phase, JobPhase::Queued);
    // A fast job: its completion lands between the queue submit and the mark.
    let mut fast = job("job-q2", a, 210);
    cat.put_job(&fast).await.unwrap();
    fast.phase = JobPhase::Succeeded;
    fast.receipt_hash = Some(Hash32([5; 32]));
    cat.put_job(&fast).await.unwrap();
    assert!(!cat.mark_queued("job-q2", "ref-3", 211).await.unwrap());
    assert_eq!(cat.get_job("job-q2").await.unwrap().unwrap(), fast);
    // The completion of a queued job replaces the record as before.
    let mut done = cat.get_job("job-q1").await.unwrap().unwrap();
    done.phase = JobPhase::Succeeded;
    cat.put_job(&done).await.unwrap();
    assert_eq!(cat.get_job("job-q1").await.unwrap().unwrap(), done);
    assert!(!cat.mark_queued("nope", "ref-4", 1).await.unwrap());

    // Concurrent claims on a fresh order: exactly one wins.
    let tx2 = "0x2222222222222222222222222222222222222222222222222222222222222222";
    let claims =
        (0..16).map(|i| async move { cat.claim_order(tx2, &format!("racer-{i}")).await.unwrap() });
    let results = futures::future::join_all(claims).await;
    assert_eq!(results.iter().filter(|r| **r == OrderClaim::Claimed).count(), 1, "{results:?}");

    // Nonces: once per signer.
    let signer = "0x00000000000000000000000000000000000000b0";
    assert!(cat.use_nonce(signer, "n-1").await.unwrap());
    assert!(!cat.use_nonce(signer, "n-1").await.unwrap());
    assert!(!cat.use_nonce(&signer.to_uppercase().replace("0X", "0x"), "n-1").await.unwrap());
    assert!(cat.use_nonce("0x00000000000000000000000000000000000000b1", "n-1").await.unwrap());
    let nonces = (0..16).map(|_| async move { cat.use_nonce(signer, "n-race").await.unwrap() });
    assert_eq!(futures::future::join_all(nonces).await.into_iter().filter(|x| *x).count(), 1);

    // A restart loses nothing.
    let again = reopen();
    assert_eq!(again.get_model(a).await.unwrap().unwrap(), m);
    assert_eq!(again.list_models().await.unwrap().len(), 8);
    let m = "0x00000000000000000000000000000000000000cc";
    assert_eq!(again.model_activity(m, 1).await.unwrap().counts.evaluate, 5);
    assert_eq!(again.get_job("job-1").await.unwrap().unwrap(), j1);
    assert_eq!(
        again.claim_order(tx, "job-9").await.unwrap(),
        OrderClaim::Taken { job_id: "job-2".into() }
    );
    assert!(!again.use_nonce(signer, "n-1").await.unwrap());

    children(cat).await;
    child_ordinals(cat, reopen).await;
    let again = reopen();
    let root = "0x00000000000000000000000000000000000000d0";
    assert_eq!(again.children(root, 10).await.unwrap().len(), 2, "a restart keeps the index");
}

#[tokio::test]
async fn sqlite_catalogue_passes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalogue.sqlite");
    let cat = SqliteCatalogue::open(&path).unwrap();
    let reopen = || -> Arc<dyn Catalogue> { Arc::new(SqliteCatalogue::open(&path).unwrap()) };
    contract_suite(&cat, &reopen).await;
}

#[tokio::test]
async fn object_catalogue_on_the_filesystem_passes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(root.clone()).unwrap());
    let cat = ObjectCatalogue::new(store, "state");
    let reopen = || -> Arc<dyn Catalogue> {
        Arc::new(ObjectCatalogue::new(Arc::new(LocalStore::new(root.clone()).unwrap()), "state"))
    };
    contract_suite(&cat, &reopen).await;
}

#[tokio::test]
async fn object_catalogue_on_s3_passes_the_contract() {
    let Some(endpoint) = common::twin_endpoint(
        "POSTHUMAN_S3_ENDPOINT",
        "object_catalogue_on_s3_passes_the_contract",
    ) else {
        return;
    };
    let cfg = S3Config {
        bucket: common::unique("catalogue"),
        endpoint_url: Some(endpoint),
        region: "us-east-1".into(),
        force_path_style: true,
    };
    let store = Arc::new(S3Store::new(cfg.clone()).await.unwrap());
    store.create_bucket().await.unwrap();
    let prefix = common::unique("state");
    let cat = ObjectCatalogue::new(store.clone(), prefix.clone());
    let reopen = move || -> Arc<dyn Catalogue> {
        Arc::new(ObjectCatalogue::new(store.clone(), prefix.clone()))
    };
    contract_suite(&cat, &reopen).await;
}
