//! The catalogue as JSON objects in an [`ObjectStore`] (S3 in AWS).
//!
//! Layout under a prefix: `models/<nft>.json`, `jobs/<id>.json`, `model-jobs/<nft>/<id>` (an
//! index for per-model job lists), `model-index/<created_at>-<nft>` and
//! `consumer-jobs/<consumer>/<newest-first created_at>-<id>` (empty index keys whose names
//! sort in page order, so a page costs one LIST and one GET per record on it),
//! `order-claims/<tx>/<gen>` and `order-claims/<tx>/<gen>-released`, `job-queued/<id>`,
//! `nonces/<signer>/<nonce>`, and `child-ordinals/<parent>/<n>` (body: the job id) with
//! `child-ordinal-of/<parent>/<job id>` (body: n) for derived models' default names.
//!
//! Nothing that decides who may use an order or where a job stands is ever read, changed and
//! written back: S3 (and LocalStack) offer only a conditional *create* (`put_if_absent`,
//! `If-None-Match: *`), so every such fact is an object created at most once:
//! - An order's bindings are generations: a claim creates `<gen>` (body: the job id) for the
//!   generation after the last released one, a release creates that generation's `-released`
//!   marker. Two claims of one generation cannot both win, and a duplicate release of
//!   generation g (a FAILED event delivered twice) finds its marker taken and cannot free
//!   generation g + 1. (`orders/<tx>`, the earlier one-object layout, is read as generation 0.)
//! - "Handed to the queue" is `job-queued/<id>` (body: the queue reference), created once by
//!   [`Catalogue::mark_queued`] instead of rewriting the job record, and read onto a record
//!   that is still `Submitting`. A completion that rewrote the record in between (a fast job)
//!   has moved it past `Submitting`, so the marker can never move it back.
//!
//! Index keys are written before their record, so a key whose record is missing or no longer
//! matches (its `created_at` changed) is skipped on read rather than shown.
//!
//! A model's card ([`Catalogue::model_activity`]) reads three more per-model indexes, never
//! the job records behind its counts:
//! - `model-kinds/<nft>/<kind>/<id>`: one empty key per job; the counts are one LIST. Each
//!   job has one key whatever its phase and however often it is rewritten, and keys are only
//!   ever created, so concurrent writers cannot lose or double a count (no read-modify-write
//!   counter, which S3's create-only conditional put could not keep exact). Written *after*
//!   the record, so a job is counted once it exists; a write that fails in between is
//!   completed by the job's next write (its completion, or the sweep's).
//! - `model-evals/<nft>/<newest-first created_at>-<id>` for a job with a perplexity, and
//!   `model-receipts/<nft>/<newest-first created_at>-<id>.<receipt hex>` for one with a
//!   receipt: written before the record like the other indexes (a completion whose record
//!   write fails is delivered again, and its record then has `completion.done`, so it is
//!   never rewritten), so the newest `latest` are one LIST plus one GET per evaluation
//!   shown (checked against its record) and the receipts' LIST alone.
//! - `model-indexed/<nft>`: these indexes are complete for the model. `put_model` creates it
//!   for a new model; a model written before these indexes existed lacks it, and its first
//!   card builds them from its jobs once (the backfill), then creates it.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use posthuman_store::{ObjectStore, StoreError};
use posthuman_types::{Hash32, JobKind};

use super::{
    Catalogue, CatalogueError, Cursor, JobPhase, JobRecord, KindCounts, ModelActivity, ModelRecord,
    OrderClaim, Page, is_evaluation,
};

/// Largest record read back (a job spec carries at most ~1 MiB of prompts).
const MAX_RECORD: u64 = 8 << 20;

/// See the module docs.
#[derive(Clone, Debug)]
pub struct ObjectCatalogue {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl ObjectCatalogue {
    /// Keeps every record under `prefix` (e.g. `state`) of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<String>) -> Self {
        ObjectCatalogue { store, prefix: prefix.into() }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, CatalogueError> {
        match self.store.get(key, MAX_RECORD).await {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| CatalogueError::Corrupt(format!("{key}: {e}"))),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn write<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), CatalogueError> {
        let body = serde_json::to_vec(v).map_err(|e| CatalogueError::Backend(e.to_string()))?;
        self.store.put(key, Bytes::from(body)).await.map_err(store_err)
    }

    async fn read_all<T: serde::de::DeserializeOwned>(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<T>, CatalogueError> {
        let reads = keys.iter().map(|k| self.read::<T>(k));
        let got = futures::future::try_join_all(reads).await?;
        Ok(got.into_iter().flatten().collect())
    }
}

/// Marks the children index complete (written with the first model, or by the backfill).
const CHILDREN_INDEXED: &str = "model-children-indexed";

/// `<at>-<id>` with `at` fixed-width, so that names sort as (`at`, id) tuples do.
fn index_name(at: u64, id: &str) -> String {
    format!("{at:020}-{id}")
}

/// Jobs list newest first: their index names carry `u64::MAX - created_at`.
fn newest_first(at: u64) -> u64 {
    u64::MAX - at
}

/// Splits an index name back into (`at`, id).
fn parse_index_name(name: &str) -> Option<(u64, &str)> {
    let (at, id) = name.split_once('-')?;
    if at.len() != 20 || id.is_empty() {
        return None;
    }
    Some((at.parse().ok()?, id))
}

impl ObjectCatalogue {
    /// The (`at`, id) names of up to `limit` index keys under `dir` after `after`, in name
    /// order, and the last one's if more follow (the next page's start).
    #[allow(clippy::type_complexity)]
    async fn index_page(
        &self,
        dir: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<(u64, String)>, Option<(u64, String)>), CatalogueError> {
        let dir = self.key(dir);
        let mut names: Vec<(u64, String)> = self
            .store
            .list(&dir)
            .await
            .map_err(store_err)?
            .iter()
            .filter_map(|k| k.strip_prefix(&dir))
            .filter(|n| after.as_deref().is_none_or(|a| *n > a))
            // Only names this catalogue wrote, so the next cursor always moves forward.
            .filter_map(|n| parse_index_name(n).map(|(at, id)| (at, id.to_string())))
            .collect();
        // Same order as the names: `at` is fixed-width in them.
        names.sort();
        let more = names.len() > limit;
        names.truncate(limit);
        let next = if more { names.last().cloned() } else { None };
        Ok((names, next))
    }
}

/// Generation names sort numerically.
fn generation(g: u64) -> String {
    format!("{g:020}")
}

/// The queue reference `mark_queued` recorded.
#[derive(serde::Serialize, serde::Deserialize)]
struct Queued {
    queue_ref: String,
    at: u64,
}

/// The current binding of an order: its generation, holder and whether it was released.
struct Binding {
    generation: u64,
    holder: String,
    released: bool,
}

impl ObjectCatalogue {
    fn claims_dir(&self, tx: &str) -> String {
        self.key(&format!("order-claims/{tx}/"))
    }

    /// The order's latest binding, if it was ever claimed.
    async fn binding(&self, tx: &str) -> Result<Option<Binding>, CatalogueError> {
        let dir = self.claims_dir(tx);
        let mut latest: Option<u64> = None;
        let mut released = BTreeSet::new();
        for key in self.store.list(&dir).await.map_err(store_err)? {
            let Some(name) = key.strip_prefix(&dir) else { continue };
            match name.strip_suffix("-released") {
                Some(g) => {
                    released.extend(g.parse::<u64>().ok());
                }
                None => {
                    if let Ok(g) = name.parse::<u64>() {
                        latest = latest.max(Some(g));
                    }
                }
            }
        }
        let (generation, key) = match latest {
            Some(g) => (g, format!("{dir}{}", generation(g))),
            None => (0, self.key(&format!("orders/{tx}"))),
        };
        let holder = match self.store.get(&key, 1024).await {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(StoreError::NotFound { .. }) if latest.is_none() => return Ok(None),
            // Claims are never deleted: one listed but absent is a store fault.
            Err(StoreError::NotFound { .. }) => {
                return Err(CatalogueError::Corrupt(format!("{key}: listed but absent")));
            }
            Err(e) => return Err(store_err(e)),
        };
        Ok(Some(Binding { generation, holder, released: released.contains(&generation) }))
    }

    /// A job record read back, with its `job-queued` marker applied while it is `Submitting`.
    async fn read_job(&self, key: &str) -> Result<Option<JobRecord>, CatalogueError> {
        let Some(mut job) = self.read::<JobRecord>(key).await? else { return Ok(None) };
        if job.phase == JobPhase::Submitting {
            let id = segment(&job.job_id)?;
            if let Some(q) = self.read::<Queued>(&self.key(&format!("job-queued/{id}"))).await? {
                job.phase = JobPhase::Queued;
                job.queue_ref = Some(q.queue_ref);
                job.updated_at = q.at;
            }
        }
        Ok(Some(job))
    }

    async fn read_jobs(&self, keys: Vec<String>) -> Result<Vec<JobRecord>, CatalogueError> {
        let reads = keys.iter().map(|k| self.read_job(k));
        let got = futures::future::try_join_all(reads).await?;
        Ok(got.into_iter().flatten().collect())
    }
}

/// Jobs whose index keys the backfill writes at once.
const BACKFILL_CONCURRENCY: usize = 16;

impl ObjectCatalogue {
    /// The `model-evals/` and `model-receipts/` keys of a job (see the module docs).
    fn result_keys(&self, j: &JobRecord) -> Result<Vec<String>, CatalogueError> {
        let (id, model) = (segment(&j.job_id)?, segment(&j.model)?);
        let name = index_name(newest_first(j.created_at), &id);
        let mut keys = Vec::new();
        if is_evaluation(j) {
            keys.push(self.key(&format!("model-evals/{model}/{name}")));
        }
        if let Some(h) = j.receipt_hash {
            let hex = h.to_hex();
            let hex = hex.trim_start_matches("0x");
            keys.push(self.key(&format!("model-receipts/{model}/{name}.{hex}")));
        }
        Ok(keys)
    }

    /// The job's `model-kinds/` key.
    fn kind_key(&self, j: &JobRecord) -> Result<String, CatalogueError> {
        let (id, model) = (segment(&j.job_id)?, segment(&j.model)?);
        Ok(self.key(&format!("model-kinds/{model}/{}/{id}", j.kind)))
    }

    async fn touch_all(&self, keys: &[String]) -> Result<(), CatalogueError> {
        let puts = keys.iter().map(|k| self.store.put(k, Bytes::new()));
        futures::future::try_join_all(puts).await.map_err(store_err)?;
        Ok(())
    }

    /// A derived model's key in its parent's children index (`None` for a root).
    fn child_key(&self, m: &ModelRecord) -> Result<Option<String>, CatalogueError> {
        let Some(parent) = &m.card.parent else { return Ok(None) };
        let name = index_name(m.created_at, &segment(&m.card.nft)?);
        Ok(Some(self.key(&format!("model-children/{}/{name}", segment(parent)?))))
    }

    /// Builds the children index from every model if a catalogue written before it existed
    /// left it missing: once per catalogue, then one HEAD.
    async fn ensure_children_indexed(&self) -> Result<(), CatalogueError> {
        let marker = self.key(CHILDREN_INDEXED);
        if self.store.head(&marker).await.map_err(store_err)?.is_some() {
            return Ok(());
        }
        let models = self.list_models().await?;
        let mut keys = Vec::new();
        for m in &models {
            keys.extend(self.child_key(m)?);
        }
        for chunk in keys.chunks(BACKFILL_CONCURRENCY) {
            self.touch_all(chunk).await?;
        }
        // Models written while this ran wrote their own keys: the index is complete.
        self.store.put_if_absent(&marker, Bytes::from_static(b"1")).await.map_err(store_err)?;
        tracing::info!(children = keys.len(), "built the children index (backfill)");
        Ok(())
    }

    /// Builds a model's card indexes from its jobs if a catalogue written before they
    /// existed left them missing; one HEAD when they are complete.
    async fn ensure_indexed(&self, model: &str) -> Result<(), CatalogueError> {
        let marker = self.key(&format!("model-indexed/{model}"));
        if self.store.head(&marker).await.map_err(store_err)?.is_some() {
            return Ok(());
        }
        let jobs = self.jobs_for_model(model).await?;
        if jobs.is_empty() {
            // Nothing to build; no marker, so an unknown NFT leaves no object behind.
            return Ok(());
        }
        for chunk in jobs.chunks(BACKFILL_CONCURRENCY) {
            let mut keys = Vec::with_capacity(3 * chunk.len());
            for j in chunk {
                keys.extend(self.result_keys(j)?);
                keys.push(self.kind_key(j)?);
            }
            self.touch_all(&keys).await?;
        }
        // Jobs written while this ran wrote their own keys: the indexes are complete.
        self.store.put_if_absent(&marker, Bytes::from_static(b"1")).await.map_err(store_err)?;
        tracing::info!(model, jobs = jobs.len(), "built a model's card indexes (backfill)");
        Ok(())
    }
}

/// Splits `<id>.<receipt hex>` (a receipt index name after its `at`).
fn parse_receipt(rest: &str) -> Option<Hash32> {
    let (_, hex) = rest.split_once('.')?;
    hex.parse().ok()
}

fn store_err(e: StoreError) -> CatalogueError {
    match e {
        StoreError::Unavailable(m) => CatalogueError::Unavailable(m),
        other => CatalogueError::Backend(other.to_string()),
    }
}

/// Checks a value that becomes one key segment (addresses, tx hashes, ids, nonces).
fn segment(s: &str) -> Result<String, CatalogueError> {
    let s = s.to_ascii_lowercase();
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(CatalogueError::Backend(format!("{s:?} cannot be a catalogue key")));
    }
    Ok(s)
}

#[async_trait::async_trait]
impl Catalogue for ObjectCatalogue {
    async fn put_model(&self, m: &ModelRecord) -> Result<(), CatalogueError> {
        let nft = segment(&m.card.nft)?;
        // Index first: an index key whose record is missing or different is skipped on read.
        let name = index_name(m.created_at, &nft);
        self.store
            .put(&self.key(&format!("model-index/{name}")), Bytes::new())
            .await
            .map_err(store_err)?;
        let marker = self.key(CHILDREN_INDEXED);
        if self.store.head(&marker).await.map_err(store_err)?.is_none() {
            // The catalogue's first model (its own index key is the only one): no older child
            // can be missing from the children index, so it is complete from the start.
            let models = self.store.list(&self.key("model-index/")).await.map_err(store_err)?;
            if models.len() <= 1 {
                self.store
                    .put_if_absent(&marker, Bytes::from_static(b"1"))
                    .await
                    .map_err(store_err)?;
            }
        }
        let record = self.key(&format!("models/{nft}.json"));
        if self.store.head(&record).await.map_err(store_err)?.is_none() {
            // A new model: every job on it is written with its card indexes, so they are
            // complete from the start (an existing model's marker is the backfill's to set).
            self.store
                .put_if_absent(&self.key(&format!("model-indexed/{nft}")), Bytes::from_static(b"1"))
                .await
                .map_err(store_err)?;
        }
        self.write(&record, m).await?;
        // After the record, so a listed child always exists; a crash in between is healed by
        // the train completion's retry, which writes the child again.
        if let Some(key) = self.child_key(m)? {
            self.store.put(&key, Bytes::new()).await.map_err(store_err)?;
        }
        Ok(())
    }

    async fn get_model(&self, nft: &str) -> Result<Option<ModelRecord>, CatalogueError> {
        let Ok(nft) = segment(nft) else { return Ok(None) };
        self.read(&self.key(&format!("models/{nft}.json"))).await
    }

    async fn list_models(&self) -> Result<Vec<ModelRecord>, CatalogueError> {
        let keys = self.store.list(&self.key("models/")).await.map_err(store_err)?;
        let mut models: Vec<ModelRecord> = self.read_all(keys).await?;
        models.sort_by(|a, b| (a.created_at, &a.card.nft).cmp(&(b.created_at, &b.card.nft)));
        Ok(models)
    }

    async fn models_page(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<ModelRecord>, CatalogueError> {
        let after = after.map(|c| index_name(c.at, &c.id));
        let (names, next) = self.index_page("model-index/", after, limit).await?;
        let keys = names.iter().map(|(_, nft)| self.key(&format!("models/{nft}.json"))).collect();
        let models: Vec<ModelRecord> = self.read_all(keys).await?;
        let items = models
            .into_iter()
            .filter(|m| names.iter().any(|(at, nft)| *nft == m.card.nft && *at == m.created_at))
            .collect();
        let next = next.map(|(at, id)| Cursor { at, id });
        Ok(Page { items, next })
    }

    async fn put_job(&self, j: &JobRecord) -> Result<(), CatalogueError> {
        let id = segment(&j.job_id)?;
        let model = segment(&j.model)?;
        let consumer = segment(&j.consumer)?;
        // Indexes first: a job listed in an index but not yet written is skipped on read.
        let by_consumer = index_name(newest_first(j.created_at), &id);
        let results = self.result_keys(j)?;
        futures::future::try_join3(
            async {
                let key = self.key(&format!("model-jobs/{model}/{id}"));
                self.store.put(&key, Bytes::from_static(b"1")).await.map_err(store_err)
            },
            async {
                let key = self.key(&format!("consumer-jobs/{consumer}/{by_consumer}"));
                self.store.put(&key, Bytes::new()).await.map_err(store_err)
            },
            self.touch_all(&results),
        )
        .await?;
        self.write(&self.key(&format!("jobs/{id}.json")), j).await?;
        // Counted once it exists (see the module docs).
        self.touch_all(&[self.kind_key(j)?]).await
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>, CatalogueError> {
        let Ok(id) = segment(job_id) else { return Ok(None) };
        self.read_job(&self.key(&format!("jobs/{id}.json"))).await
    }

    async fn mark_queued(
        &self,
        job_id: &str,
        queue_ref: &str,
        at: u64,
    ) -> Result<bool, CatalogueError> {
        let id = segment(job_id)?;
        match self.read::<JobRecord>(&self.key(&format!("jobs/{id}.json"))).await? {
            Some(j) if j.phase == JobPhase::Submitting => {}
            _ => return Ok(false),
        }
        // Created, never rewritten: a completion that rewrites the record after this read
        // moves it past `Submitting`, and `read_job` then ignores the marker.
        let body = serde_json::to_vec(&Queued { queue_ref: queue_ref.to_string(), at })
            .map_err(|e| CatalogueError::Backend(e.to_string()))?;
        self.store
            .put_if_absent(&self.key(&format!("job-queued/{id}")), Bytes::from(body))
            .await
            .map_err(store_err)
    }

    async fn jobs_for_model(&self, nft: &str) -> Result<Vec<JobRecord>, CatalogueError> {
        let Ok(model) = segment(nft) else { return Ok(vec![]) };
        let index = self.key(&format!("model-jobs/{model}/"));
        let keys = self.store.list(&index).await.map_err(store_err)?;
        let job_keys = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&index))
            .map(|id| self.key(&format!("jobs/{id}.json")))
            .collect();
        let mut jobs = self.read_jobs(job_keys).await?;
        jobs.sort_by(|a, b| (a.created_at, &a.job_id).cmp(&(b.created_at, &b.job_id)));
        Ok(jobs)
    }

    async fn model_activity(
        &self,
        nft: &str,
        latest: usize,
    ) -> Result<ModelActivity, CatalogueError> {
        let Ok(model) = segment(nft) else { return Ok(ModelActivity::default()) };
        self.ensure_indexed(&model).await?;
        let kinds_dir = self.key(&format!("model-kinds/{model}/"));
        let (kinds, (evals, _), (receipts, _)) = futures::future::try_join3(
            async { self.store.list(&kinds_dir).await.map_err(store_err) },
            self.index_page(&format!("model-evals/{model}/"), None, latest),
            self.index_page(&format!("model-receipts/{model}/"), None, latest),
        )
        .await?;
        let mut counts = KindCounts::default();
        for key in &kinds {
            let kind = key.strip_prefix(&kinds_dir).and_then(|k| k.split_once('/')).map(|k| k.0);
            match kind {
                Some("train") => counts.add(JobKind::Train),
                Some("infer") => counts.add(JobKind::Infer),
                Some("evaluate") => counts.add(JobKind::Evaluate),
                _ => {}
            }
        }
        let keys = evals.iter().map(|(_, id)| self.key(&format!("jobs/{id}.json"))).collect();
        let evaluations = self
            .read_jobs(keys)
            .await?
            .into_iter()
            .filter(|j| {
                j.model == model
                    && is_evaluation(j)
                    && evals
                        .iter()
                        .any(|(at, id)| *id == j.job_id && *at == newest_first(j.created_at))
            })
            .collect();
        let receipts = receipts.iter().filter_map(|(_, rest)| parse_receipt(rest)).collect();
        Ok(ModelActivity { counts, evaluations, receipts })
    }

    async fn children(&self, nft: &str, limit: usize) -> Result<Vec<String>, CatalogueError> {
        let Ok(parent) = segment(nft) else { return Ok(Vec::new()) };
        self.ensure_children_indexed().await?;
        let (names, _) = self.index_page(&format!("model-children/{parent}/"), None, limit).await?;
        Ok(names.into_iter().map(|(_, nft)| nft).collect())
    }

    async fn jobs_of_consumer(
        &self,
        consumer: &str,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<JobRecord>, CatalogueError> {
        let Ok(who) = segment(consumer) else { return Ok(Page { items: vec![], next: None }) };
        let after = after.map(|c| index_name(newest_first(c.at), &c.id));
        let (names, next) = self.index_page(&format!("consumer-jobs/{who}/"), after, limit).await?;
        let keys = names.iter().map(|(_, id)| self.key(&format!("jobs/{id}.json"))).collect();
        let jobs = self.read_jobs(keys).await?;
        let items = jobs
            .into_iter()
            .filter(|j| {
                j.consumer == who
                    && names
                        .iter()
                        .any(|(at, id)| *id == j.job_id && *at == newest_first(j.created_at))
            })
            .collect();
        let next = next.map(|(at, id)| Cursor { at: newest_first(at), id });
        Ok(Page { items, next })
    }

    async fn claim_order(
        &self,
        order_tx: &str,
        job_id: &str,
    ) -> Result<OrderClaim, CatalogueError> {
        let tx = segment(order_tx)?;
        // A lost race for a generation is re-read: its winner may already have released it.
        for _ in 0..4 {
            let next = match self.binding(&tx).await? {
                None => 1,
                Some(b) if !b.released => {
                    return Ok(if b.holder == job_id {
                        OrderClaim::Claimed
                    } else {
                        OrderClaim::Taken { job_id: b.holder }
                    });
                }
                Some(b) => b.generation + 1,
            };
            let key = format!("{}{}", self.claims_dir(&tx), generation(next));
            let body = Bytes::from(job_id.to_string());
            if self.store.put_if_absent(&key, body).await.map_err(store_err)? {
                return Ok(OrderClaim::Claimed);
            }
        }
        Err(CatalogueError::Unavailable("order claim kept racing other claims".into()))
    }

    async fn release_order(&self, order_tx: &str, job_id: &str) -> Result<bool, CatalogueError> {
        let tx = segment(order_tx)?;
        match self.binding(&tx).await? {
            Some(b) if !b.released && b.holder == job_id => {
                // Only this generation's marker: a duplicate release that read the same
                // binding loses here, whatever was claimed since.
                let key = format!("{}{}-released", self.claims_dir(&tx), generation(b.generation));
                self.store.put_if_absent(&key, Bytes::new()).await.map_err(store_err)
            }
            _ => Ok(false),
        }
    }

    async fn order_holder(&self, order_tx: &str) -> Result<Option<String>, CatalogueError> {
        let tx = segment(order_tx)?;
        Ok(self.binding(&tx).await?.filter(|b| !b.released).map(|b| b.holder))
    }

    async fn use_nonce(&self, signer: &str, nonce: &str) -> Result<bool, CatalogueError> {
        let key = self.key(&format!("nonces/{}/{}", segment(signer)?, segment(nonce)?));
        self.store.put_if_absent(&key, Bytes::from_static(b"1")).await.map_err(store_err)
    }

    /// Each number is an object created at most once (`child-ordinals/<parent>/<n>`), so two
    /// completions that read the same highest number cannot both take the next; the loser
    /// reads again. The job's own number is then recorded under `child-ordinal-of/`, so a
    /// retried completion reads it back (a crash between the two writes costs a gap).
    async fn claim_child_ordinal(
        &self,
        parent: &str,
        job_id: &str,
        floor: u64,
    ) -> Result<u64, CatalogueError> {
        let (parent, job) = (segment(parent)?, segment(job_id)?);
        let mine = self.key(&format!("child-ordinal-of/{parent}/{job}"));
        if let Some(n) = self.read::<u64>(&mine).await? {
            return Ok(n);
        }
        let dir = self.key(&format!("child-ordinals/{parent}/"));
        for _ in 0..16 {
            let top = self
                .store
                .list(&dir)
                .await
                .map_err(store_err)?
                .iter()
                .filter_map(|k| k.strip_prefix(&dir)?.parse::<u64>().ok())
                .max()
                .unwrap_or(0);
            let n = top.max(floor) + 1;
            let key = format!("{dir}{}", generation(n));
            if self.store.put_if_absent(&key, Bytes::from(job.clone())).await.map_err(store_err)? {
                self.write(&mine, &n).await?;
                return Ok(n);
            }
        }
        Err(CatalogueError::Unavailable("a child number kept racing other completions".into()))
    }
}
