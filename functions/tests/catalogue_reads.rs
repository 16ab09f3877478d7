//! Issue 13 §6: what a model's card costs to render. `GET /api/models/{nft}` and every model
//! on a `GET /api/models` page show the model's job counts, evaluations and receipts; the
//! store reads that costs must be the page's, not the number of jobs on the model.
//!
//! A counting decorator sits between the object catalogue and a real store (the filesystem
//! here, S3 on moto/LocalStack when POSTHUMAN_S3_ENDPOINT is set) and counts every read
//! request (`get`, `head`, `list`) the handlers cause, a `list` as the ListObjectsV2
//! requests S3 needs for it (1,000 keys each).

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use posthuman_functions::catalogue::{Catalogue, JobPhase, JobRecord, ObjectCatalogue};
use posthuman_functions::handlers::models;
use posthuman_store::{LocalStore, ObjectStore, S3Config, S3Store, StoreError};
use posthuman_types::{EvalParams, Hash32, JobKind, JobParams};

/// Keys one S3 ListObjectsV2 request returns at most.
const S3_LIST_PAGE: usize = 1_000;

/// A real store that counts the read requests made through it.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    reads: AtomicU64,
}

impl Counting {
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    fn read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.inner.put(key, body).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        self.inner.put_file(key, path).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str, max_bytes: u64) -> Result<Bytes, StoreError> {
        self.read();
        self.inner.get(key, max_bytes).await
    }
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        self.read();
        self.inner.get_to_file(key, path).await
    }
    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.read();
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let keys = self.inner.list(prefix).await?;
        let pages = keys.len().div_ceil(S3_LIST_PAGE).max(1);
        self.reads.fetch_add(pages as u64, Ordering::SeqCst);
        Ok(keys)
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

/// Job `i` on `model`: every tenth a succeeded evaluation (perplexity, receipt, salted
/// dataset commitment), every third of the rest a succeeded infer job with a receipt, the
/// others queued or failed infer jobs.
fn job(model: &str, i: usize) -> JobRecord {
    let id = format!("{}-job-{i:05}", &model[model.len() - 4..]);
    let mut j = JobRecord {
        job_id: id.clone(),
        kind: JobKind::Infer,
        model: model.to_string(),
        consumer: format!("0x{:040x}", 0xb000 + i % 7),
        order_tx: format!("0x{:064x}", i),
        order_log_index: 0,
        spec: common::infer_spec(&id),
        queue_ref: Some(id.clone()),
        phase: JobPhase::Queued,
        created_at: 1_000 + i as u64,
        updated_at: 1_000 + i as u64,
        completion: Default::default(),
        order_released: false,
        receipt_hash: None,
        perplexity: None,
        input_data_hash: None,
    };
    if i.is_multiple_of(10) {
        j.kind = JobKind::Evaluate;
        j.spec.params = JobParams::Evaluate(EvalParams {
            context_len: 32,
            stride: 16,
            max_tokens: 0,
            baseline: None,
        });
        j.phase = JobPhase::Succeeded;
        j.perplexity = Some(10.0 + i as f64);
        j.receipt_hash = Some(Hash32([(i % 251) as u8; 32]));
        j.input_data_hash = Some(Hash32([0x5a; 32]));
    } else if i.is_multiple_of(3) {
        j.phase = JobPhase::Succeeded;
        j.receipt_hash = Some(Hash32([(i % 249) as u8; 32]));
    } else if i.is_multiple_of(7) {
        j.phase = JobPhase::Failed { reason: "boom".into(), exit_code: Some(1) };
    }
    j
}

/// Writes jobs `from..to` of `model`, each as its submit and its completion write it.
async fn add_jobs(cat: &dyn Catalogue, model: &str, from: usize, to: usize) {
    futures::stream::iter(from..to)
        .for_each_concurrent(16, |i| async move {
            let j = job(model, i);
            let mut submitted = j.clone();
            submitted.phase = JobPhase::Submitting;
            submitted.receipt_hash = None;
            submitted.perplexity = None;
            submitted.input_data_hash = None;
            cat.put_job(&submitted).await.unwrap();
            if j.phase != JobPhase::Submitting {
                cat.put_job(&j).await.unwrap();
            }
        })
        .await;
}

/// Store reads for one `GET /api/models/{nft}` and one `GET /api/models` page.
async fn reads_per_card(
    deps: &posthuman_functions::deps::Deps,
    counting: &Counting,
    nft: &str,
) -> (u64, u64, serde_json::Value) {
    let before = counting.reads();
    let card = models::get_model(deps, nft).await.unwrap();
    let one = counting.reads() - before;
    let before = counting.reads();
    let page = models::list_models(deps, None, 50).await.unwrap();
    let list = counting.reads() - before;
    assert_eq!(page.items.len(), 2);
    (one, list, serde_json::to_value(card).unwrap())
}

/// The whole check over one store: two models (so a list page holds more than one card),
/// the first grown from a few jobs to `n`; its card's reads must not grow with it.
async fn a_card_costs_its_page_not_its_jobs(inner: Arc<dyn ObjectStore>, prefix: &str, n: usize) {
    let counting = Arc::new(Counting { inner, reads: AtomicU64::new(0) });
    let cat = ObjectCatalogue::new(counting.clone(), prefix.to_string());
    let dir = tempfile::tempdir().unwrap();
    let mut deps = common::offline_deps(dir.path());
    deps.catalogue = Arc::new(cat.clone());

    let m = common::model_record();
    let mut other = common::model_record();
    other.card.nft = "0x00000000000000000000000000000000000000ab".into();
    other.created_at = 2;
    cat.put_model(&m).await.unwrap();
    cat.put_model(&other).await.unwrap();
    add_jobs(&cat, &other.card.nft, 0, 30).await;

    // Enough that the card's page of newest evaluations is full (one in ten is one).
    let small = 10 * posthuman_functions::handlers::views::CARD_LATEST + 50;
    add_jobs(&cat, &m.card.nft, 0, small).await;
    let (one_small, list_small, card) = reads_per_card(&deps, &counting, &m.card.nft).await;
    let counts = |n: usize| {
        let evaluate = (0..n).filter(|i| i.is_multiple_of(10)).count();
        serde_json::json!({"train": 0, "infer": n - evaluate, "evaluate": evaluate})
    };
    assert_eq!(card["jobs"], counts(small));

    add_jobs(&cat, &m.card.nft, small, n).await;
    let (one_big, list_big, card) = reads_per_card(&deps, &counting, &m.card.nft).await;
    // Still exact, and still labelled.
    assert_eq!(card["jobs"], counts(n));
    let evals = card["evaluations"].as_array().unwrap();
    assert!(!evals.is_empty());
    let newest = evals.last().unwrap();
    let last_eval = (0..n).rev().find(|i| i.is_multiple_of(10)).unwrap();
    assert_eq!(newest["job_id"], job(&m.card.nft, last_eval).job_id, "{newest}");
    assert_eq!(newest["perplexity"].as_f64(), Some(10.0 + last_eval as f64));
    assert_eq!(newest["evaluator"], job(&m.card.nft, last_eval).consumer);
    assert_eq!(newest["dataset_commitment"], serde_json::to_value(Hash32([0x5a; 32])).unwrap());
    assert!(!card["receipts"].as_array().unwrap().is_empty());

    println!("store reads per model card, object catalogue under {prefix:?}");
    println!("{:>8} | {:>22} | {:>22}", "jobs", "GET /api/models/{nft}", "GET /api/models page");
    println!("{small:>8} | {one_small:>22} | {list_small:>22}");
    println!("{n:>8} | {one_big:>22} | {list_big:>22}");
    println!(
        "{:>8} | {:>21.2}x | {:>21.2}x",
        "ratio",
        one_big as f64 / one_small as f64,
        list_big as f64 / list_small as f64
    );
    assert_eq!(
        (one_big, list_big),
        (one_small, list_small),
        "a card's reads grew with its jobs ({small} → {n} jobs)"
    );
    assert!(one_big <= 64, "{one_big} reads for one card");
}

#[tokio::test]
async fn a_model_card_on_the_filesystem_costs_its_page_not_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().to_path_buf()).unwrap());
    a_card_costs_its_page_not_its_jobs(store, "state", 1_000).await;
}

#[tokio::test]
async fn a_model_card_on_s3_costs_its_page_not_its_jobs() {
    let Some(endpoint) = common::twin_endpoint(
        "POSTHUMAN_S3_ENDPOINT",
        "a_model_card_on_s3_costs_its_page_not_its_jobs",
    ) else {
        return;
    };
    let cfg = S3Config {
        bucket: common::unique("card-reads"),
        endpoint_url: Some(endpoint),
        region: "us-east-1".into(),
        force_path_style: true,
    };
    let store = Arc::new(S3Store::new(cfg).await.unwrap());
    store.create_bucket().await.unwrap();
    a_card_costs_its_page_not_its_jobs(store, &common::unique("state"), 1_000).await;
}

/// The index keys a catalogue written before the card indexes existed lacks.
const CARD_INDEXES: [&str; 4] =
    ["model-kinds/", "model-evals/", "model-receipts/", "model-indexed/"];

#[tokio::test]
async fn an_object_catalogue_written_before_the_card_indexes_gets_them_on_first_read() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("store")).unwrap());
    let counting = Arc::new(Counting { inner: local.clone(), reads: AtomicU64::new(0) });
    let cat = ObjectCatalogue::new(counting.clone(), "state");
    let mut deps = common::offline_deps(dir.path());
    deps.catalogue = Arc::new(cat.clone());
    let m = common::model_record();
    cat.put_model(&m).await.unwrap();
    let mut other = common::model_record();
    other.card.nft = "0x00000000000000000000000000000000000000ab".into();
    cat.put_model(&other).await.unwrap();
    add_jobs(&cat, &m.card.nft, 0, 200).await;
    let want = serde_json::to_value(models::get_model(&deps, &m.card.nft).await.unwrap()).unwrap();
    let fresh = counting.reads();
    models::get_model(&deps, &m.card.nft).await.unwrap();
    let fresh = counting.reads() - fresh;

    // The layout before the card indexes: the same records and older indexes, none of these.
    for dir in CARD_INDEXES {
        for key in local.list(&format!("state/{dir}")).await.unwrap() {
            local.delete(&key).await.unwrap();
        }
    }
    assert!(local.list("state/model-kinds/").await.unwrap().is_empty());

    // The first card builds them (reading every job of that model once) and shows the same.
    let before = counting.reads();
    let card = models::get_model(&deps, &m.card.nft).await.unwrap();
    let backfill = counting.reads() - before;
    assert_eq!(serde_json::to_value(card).unwrap(), want);
    assert!(backfill > 200, "the backfill read the jobs: {backfill}");
    assert!(local.head(&format!("state/model-indexed/{}", m.card.nft)).await.unwrap().is_some());
    // Then a card costs what it costs on a catalogue that always had them.
    let before = counting.reads();
    let again = models::get_model(&deps, &m.card.nft).await.unwrap();
    assert_eq!(counting.reads() - before, fresh);
    assert_eq!(serde_json::to_value(again).unwrap(), want);
    // A model without jobs needs no backfill and leaves no marker behind.
    let card = models::get_model(&deps, &other.card.nft).await.unwrap();
    assert_eq!(card.jobs.train + card.jobs.infer + card.jobs.evaluate, 0);
    assert!(
        local.head(&format!("state/model-indexed/{}", other.card.nft)).await.unwrap().is_none()
    );
    println!("backfill of 200 jobs: {backfill} reads once; then {fresh} reads per card");
}

#[tokio::test]
async fn an_object_catalogue_written_before_the_children_index_gets_it_on_first_read() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("store")).unwrap());
    let cat = ObjectCatalogue::new(local.clone(), "state");
    let root = common::model_record();
    cat.put_model(&root).await.unwrap();
    let mut kids = Vec::new();
    for i in 0..3u64 {
        let mut m = common::model_record();
        m.card.nft = format!("0x{:0>40}", 0xc0 + i);
        m.card.parent = Some(root.card.nft.clone());
        m.created_at = 100 - i; // listed by age, not by write order
        cat.put_model(&m).await.unwrap();
        kids.push(m.card.nft);
    }
    kids.reverse();
    assert_eq!(cat.children(&root.card.nft, 10).await.unwrap(), kids);

    // The layout before the children index: the same model records, no index, no marker.
    for key in local.list("state/model-children/").await.unwrap() {
        local.delete(&key).await.unwrap();
    }
    local.delete("state/model-children-indexed").await.unwrap();
    assert!(local.list("state/model-children/").await.unwrap().is_empty());
    // The first read builds it from the models; the marker then keeps it from running again.
    assert_eq!(cat.children(&root.card.nft, 10).await.unwrap(), kids);
    assert!(local.head("state/model-children-indexed").await.unwrap().is_some());
    let mut late = common::model_record();
    late.card.nft = format!("0x{:0>40}", "cf");
    late.card.parent = Some(root.card.nft.clone());
    late.created_at = 200;
    cat.put_model(&late).await.unwrap();
    kids.push(late.card.nft);
    assert_eq!(cat.children(&root.card.nft, 10).await.unwrap(), kids);
}

#[tokio::test]
async fn a_sqlite_catalogue_written_before_the_counts_table_gets_it_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalogue.sqlite");
    let cat = posthuman_functions::catalogue::SqliteCatalogue::open(&path).unwrap();
    let m = common::model_record();
    cat.put_model(&m).await.unwrap();
    add_jobs(&cat, &m.card.nft, 0, 120).await;
    let want = cat.model_activity(&m.card.nft, 5).await.unwrap();
    assert_eq!((want.counts.infer, want.counts.evaluate), (108, 12));
    drop(cat);

    // The schema before: no counts table, no card indexes, user_version 0.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE model_job_counts; DROP INDEX jobs_evaluations; DROP INDEX jobs_receipts;
         PRAGMA user_version = 0;",
    )
    .unwrap();
    drop(conn);

    let cat = posthuman_functions::catalogue::SqliteCatalogue::open(&path).unwrap();
    assert_eq!(cat.model_activity(&m.card.nft, 5).await.unwrap(), want);
    // Counted from then on by each new job, and the backfill does not run again.
    add_jobs(&cat, &m.card.nft, 120, 130).await;
    drop(cat);
    let cat = posthuman_functions::catalogue::SqliteCatalogue::open(&path).unwrap();
    let now = cat.model_activity(&m.card.nft, 5).await.unwrap();
    assert_eq!((now.counts.infer, now.counts.evaluate), (117, 13));
}
