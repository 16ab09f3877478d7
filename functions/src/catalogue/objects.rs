//! The catalogue as JSON objects in an [`ObjectStore`] (S3 in AWS).
//!
//! Layout under a prefix: `models/<nft>.json`, `jobs/<id>.json`, `model-jobs/<nft>/<id>` (an
//! index for per-model job lists), `model-index/<created_at>-<nft>` and
//! `consumer-jobs/<consumer>/<newest-first created_at>-<id>` (empty index keys whose names
//! sort in page order, so a page costs one LIST and one GET per record on it),
//! `orders/<tx>` (body: the job id holding it) and `nonces/<signer>/<nonce>`. Orders and nonces are created with `put_if_absent`, which S3
//! makes atomic (`If-None-Match: *`), so two concurrent claims cannot both win.
//!
//! Index keys are written before their record, so a key whose record is missing or no longer
//! matches (its `created_at` changed) is skipped on read rather than shown.

use std::sync::Arc;

use bytes::Bytes;
use posthuman_store::{ObjectStore, StoreError};

use super::{Catalogue, CatalogueError, Cursor, JobRecord, ModelRecord, OrderClaim, Page};

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
        self.write(&self.key(&format!("models/{nft}.json")), m).await
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
        futures::future::try_join(
            self.store
                .put(&self.key(&format!("model-jobs/{model}/{id}")), Bytes::from_static(b"1")),
            self.store
                .put(&self.key(&format!("consumer-jobs/{consumer}/{by_consumer}")), Bytes::new()),
        )
        .await
        .map_err(store_err)?;
        self.write(&self.key(&format!("jobs/{id}.json")), j).await
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>, CatalogueError> {
        let Ok(id) = segment(job_id) else { return Ok(None) };
        self.read(&self.key(&format!("jobs/{id}.json"))).await
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
        let mut jobs: Vec<JobRecord> = self.read_all(job_keys).await?;
        jobs.sort_by(|a, b| (a.created_at, &a.job_id).cmp(&(b.created_at, &b.job_id)));
        Ok(jobs)
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
        let jobs: Vec<JobRecord> = self.read_all(keys).await?;
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
        let key = self.key(&format!("orders/{}", segment(order_tx)?));
        let body = Bytes::from(job_id.to_string());
        if self.store.put_if_absent(&key, body).await.map_err(store_err)? {
            return Ok(OrderClaim::Claimed);
        }
        let holder = match self.store.get(&key, 1024).await {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            // Released between our attempt and this read: the claim may be retried.
            Err(StoreError::NotFound { .. }) => {
                return Err(CatalogueError::Unavailable("order claim raced a release".into()));
            }
            Err(e) => return Err(store_err(e)),
        };
        Ok(if holder == job_id {
            OrderClaim::Claimed
        } else {
            OrderClaim::Taken { job_id: holder }
        })
    }

    async fn release_order(&self, order_tx: &str, job_id: &str) -> Result<bool, CatalogueError> {
        let key = self.key(&format!("orders/{}", segment(order_tx)?));
        match self.store.get(&key, 1024).await {
            Ok(b) if b.as_ref() == job_id.as_bytes() => {
                self.store.delete(&key).await.map_err(store_err)?;
                Ok(true)
            }
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn order_holder(&self, order_tx: &str) -> Result<Option<String>, CatalogueError> {
        let key = self.key(&format!("orders/{}", segment(order_tx)?));
        match self.store.get(&key, 1024).await {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn use_nonce(&self, signer: &str, nonce: &str) -> Result<bool, CatalogueError> {
        let key = self.key(&format!("nonces/{}/{}", segment(signer)?, segment(nonce)?));
        self.store.put_if_absent(&key, Bytes::from_static(b"1")).await.map_err(store_err)
    }
}
