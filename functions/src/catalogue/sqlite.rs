//! The catalogue in one SQLite file (the embedded default).
//!
//! Records are stored as JSON next to the columns we query by; the order and nonce tables
//! use primary keys so a claim is a single `INSERT` that either wins or conflicts. Pages are
//! read through expression indexes on the records' JSON (`created_at`, `consumer`), which
//! existing databases gain on open without a migration.
//!
//! A model's card reads `model_job_counts` (one row per model and kind, incremented in the
//! same transaction that inserts a job, so it is exact) and the newest evaluations and
//! receipts through partial indexes that hold only such jobs. A database written before the
//! counts table existed (`user_version` 0) has it filled from its jobs on open, once.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use posthuman_types::Hash32;

use super::{
    Catalogue, CatalogueError, Cursor, JobRecord, KindCounts, ModelActivity, ModelRecord,
    OrderClaim, Page,
};

/// See the module docs.
#[derive(Clone)]
pub struct SqliteCatalogue {
    db: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteCatalogue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteCatalogue")
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS models (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    nft TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE, model TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_model ON jobs (model, seq);
CREATE INDEX IF NOT EXISTS models_by_age ON models (json_extract(record, '$.created_at'), nft);
CREATE INDEX IF NOT EXISTS models_by_parent ON models (lower(json_extract(record, '$.card.parent')),
    json_extract(record, '$.created_at'), nft);
CREATE INDEX IF NOT EXISTS jobs_by_consumer ON jobs (json_extract(record, '$.consumer'),
    json_extract(record, '$.created_at') DESC, job_id);
CREATE INDEX IF NOT EXISTS jobs_evaluations ON jobs (model,
    json_extract(record, '$.created_at') DESC, job_id)
    WHERE json_extract(record, '$.perplexity') IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_receipts ON jobs (model,
    json_extract(record, '$.created_at') DESC, job_id)
    WHERE json_extract(record, '$.receipt_hash') IS NOT NULL;
CREATE TABLE IF NOT EXISTS model_job_counts (model TEXT NOT NULL, kind TEXT NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (model, kind));
CREATE TABLE IF NOT EXISTS orders (order_tx TEXT PRIMARY KEY, job_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (signer TEXT NOT NULL, nonce TEXT NOT NULL,
    PRIMARY KEY (signer, nonce));
CREATE TABLE IF NOT EXISTS child_ordinals (parent TEXT NOT NULL, n INTEGER NOT NULL,
    job_id TEXT NOT NULL, PRIMARY KEY (parent, n), UNIQUE (parent, job_id));";

/// Schema version (`PRAGMA user_version`): 1 once `model_job_counts` holds every job.
const VERSION: i64 = 1;

/// Fills `model_job_counts` from the jobs of a database written before it existed.
const BACKFILL_COUNTS: &str = "
DELETE FROM model_job_counts;
INSERT INTO model_job_counts (model, kind, n)
    SELECT model, json_extract(record, '$.kind'), count(*) FROM jobs GROUP BY 1, 2;
PRAGMA user_version = 1;";

/// A model's job counts by kind.
const COUNTS: &str = "SELECT kind, n FROM model_job_counts WHERE model = ?1";

/// A model's derived models, oldest first (through `models_by_parent`).
const CHILDREN: &str = "SELECT nft FROM models
    WHERE lower(json_extract(record, '$.card.parent')) = ?1
    ORDER BY json_extract(record, '$.created_at'), nft LIMIT ?2";

/// A model's newest evaluations (through `jobs_evaluations`).
const LATEST_EVALUATIONS: &str = "SELECT record FROM jobs
    WHERE model = ?1 AND json_extract(record, '$.perplexity') IS NOT NULL
    ORDER BY json_extract(record, '$.created_at') DESC, job_id LIMIT ?2";

/// A model's newest receipts (through `jobs_receipts`).
const LATEST_RECEIPTS: &str = "SELECT json_extract(record, '$.receipt_hash') FROM jobs
    WHERE model = ?1 AND json_extract(record, '$.receipt_hash') IS NOT NULL
    ORDER BY json_extract(record, '$.created_at') DESC, job_id LIMIT ?2";

fn backend(e: impl std::fmt::Display) -> CatalogueError {
    CatalogueError::Backend(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> CatalogueError {
    CatalogueError::Corrupt(e.to_string())
}

impl SqliteCatalogue {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, CatalogueError> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let tx = rusqlite::Transaction::new_unchecked(&conn, TransactionBehavior::Immediate)
            .map_err(backend)?;
        let version: i64 =
            tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(backend)?;
        if version < VERSION {
            tx.execute_batch(BACKFILL_COUNTS).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(SqliteCatalogue { db: Arc::new(Mutex::new(conn)) })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, CatalogueError> + Send + 'static,
    ) -> Result<T, CatalogueError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let conn = db.lock().map_err(|_| backend("catalogue lock poisoned"))?;
            f(&conn)
        })
        .await
        .map_err(backend)?
    }
}

impl SqliteCatalogue {
    /// Point reads run inline: they take microseconds on a WAL database, and a thread hop per
    /// read (`spawn_blocking`) dominated catalogue latency. Writes (which fsync) stay off the
    /// async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, CatalogueError> + Send + 'static,
    ) -> Result<T, CatalogueError> {
        let conn = self.db.lock().map_err(|_| backend("catalogue lock poisoned"))?;
        f(&conn)
    }
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, CatalogueError> {
    serde_json::from_str(json).map_err(corrupt)
}

/// A cursor as query parameters: (`created_at`, id), both NULL on the first page.
fn cursor_params(after: Option<&Cursor>) -> (Option<i64>, String) {
    match after {
        // A cursor past i64::MAX names no stored record (created_at is seconds): clamp it.
        Some(c) => (Some(i64::try_from(c.at).unwrap_or(i64::MAX)), c.id.to_ascii_lowercase()),
        None => (None, String::new()),
    }
}

/// Rows to fetch for a page of `limit`: one more, to know whether a next page exists.
fn page_rows(limit: usize) -> i64 {
    i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
}

/// Cuts `rows` (up to `limit + 1`) to a page; the next cursor is the last kept row's.
fn paged<T>(mut rows: Vec<T>, limit: usize, cursor: impl Fn(&T) -> Cursor) -> Page<T> {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more { rows.last().map(cursor) } else { None };
    Page { items: rows, next }
}

#[async_trait::async_trait]
impl Catalogue for SqliteCatalogue {
    async fn put_model(&self, m: &ModelRecord) -> Result<(), CatalogueError> {
        let nft = m.card.nft.to_ascii_lowercase();
        let json = serde_json::to_string(m).map_err(backend)?;
        self.with(move |c| {
            c.execute(
                "INSERT INTO models (nft, record) VALUES (?1, ?2)
                 ON CONFLICT(nft) DO UPDATE SET record = excluded.record",
                params![nft, json],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn get_model(&self, nft: &str) -> Result<Option<ModelRecord>, CatalogueError> {
        let nft = nft.to_ascii_lowercase();
        self.read(move |c| {
            let json: Option<String> = c
                .query_row("SELECT record FROM models WHERE nft = ?1", params![nft], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            json.map(|j| decode(&j)).transpose()
        })
        .await
    }

    async fn list_models(&self) -> Result<Vec<ModelRecord>, CatalogueError> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT record FROM models ORDER BY seq").map_err(backend)?;
            let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(backend)?;
            let mut models: Vec<ModelRecord> =
                rows.map(|r| decode(&r.map_err(backend)?)).collect::<Result<_, _>>()?;
            models.sort_by(|a, b| (a.created_at, &a.card.nft).cmp(&(b.created_at, &b.card.nft)));
            Ok(models)
        })
        .await
    }

    async fn models_page(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<ModelRecord>, CatalogueError> {
        let (at, nft) = cursor_params(after);
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT record FROM models
                     WHERE ?1 IS NULL OR json_extract(record, '$.created_at') > ?1
                        OR (json_extract(record, '$.created_at') = ?1 AND nft > ?2)
                     ORDER BY json_extract(record, '$.created_at'), nft LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![at, nft, page_rows(limit)], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            let models: Vec<ModelRecord> =
                rows.map(|r| decode(&r.map_err(backend)?)).collect::<Result<_, _>>()?;
            Ok(paged(models, limit, |m| Cursor { at: m.created_at, id: m.card.nft.clone() }))
        })
        .await
    }

    async fn put_job(&self, j: &JobRecord) -> Result<(), CatalogueError> {
        let id = j.job_id.clone();
        let model = j.model.to_ascii_lowercase();
        let kind = j.kind.as_str();
        let json = serde_json::to_string(j).map_err(backend)?;
        self.with(move |c| {
            // One transaction: a new job and its count land together or not at all.
            let tx = rusqlite::Transaction::new_unchecked(c, TransactionBehavior::Immediate)
                .map_err(backend)?;
            let new = tx
                .execute(
                    "INSERT INTO jobs (job_id, model, record) VALUES (?1, ?2, ?3)
                     ON CONFLICT(job_id) DO NOTHING",
                    params![id, model, json],
                )
                .map_err(backend)?
                == 1;
            if new {
                tx.execute(
                    "INSERT INTO model_job_counts (model, kind, n) VALUES (?1, ?2, 1)
                     ON CONFLICT(model, kind) DO UPDATE SET n = n + 1",
                    params![model, kind],
                )
                .map_err(backend)?;
            } else {
                tx.execute("UPDATE jobs SET record = ?2 WHERE job_id = ?1", params![id, json])
                    .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn mark_queued(
        &self,
        job_id: &str,
        queue_ref: &str,
        at: u64,
    ) -> Result<bool, CatalogueError> {
        let (id, queue_ref) = (job_id.to_string(), queue_ref.to_string());
        // One statement: the phase test and the write are atomic, so a completion written
        // just before stays (it moved the record past `submitting`).
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE jobs SET record = json_set(record, '$.phase', json('{\"state\":\"queued\"}'),
                         '$.queue_ref', ?2, '$.updated_at', ?3)
                     WHERE job_id = ?1 AND json_extract(record, '$.phase.state') = 'submitting'",
                    params![id, queue_ref, i64::try_from(at).map_err(backend)?],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>, CatalogueError> {
        let id = job_id.to_string();
        self.read(move |c| {
            let json: Option<String> = c
                .query_row("SELECT record FROM jobs WHERE job_id = ?1", params![id], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            json.map(|j| decode(&j)).transpose()
        })
        .await
    }

    async fn jobs_for_model(&self, nft: &str) -> Result<Vec<JobRecord>, CatalogueError> {
        let nft = nft.to_ascii_lowercase();
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT record FROM jobs WHERE model = ?1 ORDER BY seq")
                .map_err(backend)?;
            let rows = st.query_map(params![nft], |r| r.get::<_, String>(0)).map_err(backend)?;
            let mut jobs: Vec<JobRecord> =
                rows.map(|r| decode(&r.map_err(backend)?)).collect::<Result<_, _>>()?;
            jobs.sort_by(|a, b| (a.created_at, &a.job_id).cmp(&(b.created_at, &b.job_id)));
            Ok(jobs)
        })
        .await
    }

    async fn model_activity(
        &self,
        nft: &str,
        latest: usize,
    ) -> Result<ModelActivity, CatalogueError> {
        let nft = nft.to_ascii_lowercase();
        let limit = i64::try_from(latest).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut counts = KindCounts::default();
            let mut st = c.prepare_cached(COUNTS).map_err(backend)?;
            let rows = st
                .query_map(params![nft], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(backend)?;
            for row in rows {
                let (kind, n) = row.map_err(backend)?;
                let n = u64::try_from(n).map_err(corrupt)?;
                match kind.as_str() {
                    "train" => counts.train += n,
                    "infer" => counts.infer += n,
                    "evaluate" => counts.evaluate += n,
                    other => return Err(corrupt(format!("job kind {other:?}"))),
                }
            }
            let mut st = c.prepare_cached(LATEST_EVALUATIONS).map_err(backend)?;
            let rows =
                st.query_map(params![nft, limit], |r| r.get::<_, String>(0)).map_err(backend)?;
            let evaluations: Vec<JobRecord> =
                rows.map(|r| decode(&r.map_err(backend)?)).collect::<Result<_, _>>()?;
            let mut st = c.prepare_cached(LATEST_RECEIPTS).map_err(backend)?;
            let rows =
                st.query_map(params![nft, limit], |r| r.get::<_, String>(0)).map_err(backend)?;
            let receipts = rows
                .map(|r| r.map_err(backend)?.parse::<Hash32>().map_err(corrupt))
                .collect::<Result<_, _>>()?;
            Ok(ModelActivity { counts, evaluations, receipts })
        })
        .await
    }

    async fn children(&self, nft: &str, limit: usize) -> Result<Vec<String>, CatalogueError> {
        let nft = nft.to_ascii_lowercase();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut st = c.prepare_cached(CHILDREN).map_err(backend)?;
            let rows =
                st.query_map(params![nft, limit], |r| r.get::<_, String>(0)).map_err(backend)?;
            rows.map(|r| r.map_err(backend)).collect()
        })
        .await
    }

    async fn jobs_of_consumer(
        &self,
        consumer: &str,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<JobRecord>, CatalogueError> {
        let who = consumer.to_ascii_lowercase();
        let (at, id) = cursor_params(after);
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT record FROM jobs
                     WHERE json_extract(record, '$.consumer') = ?1
                       AND (?2 IS NULL OR json_extract(record, '$.created_at') < ?2
                            OR (json_extract(record, '$.created_at') = ?2 AND job_id > ?3))
                     ORDER BY json_extract(record, '$.created_at') DESC, job_id LIMIT ?4",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![who, at, id, page_rows(limit)], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            let jobs: Vec<JobRecord> =
                rows.map(|r| decode(&r.map_err(backend)?)).collect::<Result<_, _>>()?;
            Ok(paged(jobs, limit, |j| Cursor { at: j.created_at, id: j.job_id.clone() }))
        })
        .await
    }

    async fn claim_order(
        &self,
        order_tx: &str,
        job_id: &str,
    ) -> Result<OrderClaim, CatalogueError> {
        let tx = order_tx.to_ascii_lowercase();
        let id = job_id.to_string();
        self.with(move |c| {
            let inserted = c
                .execute(
                    "INSERT OR IGNORE INTO orders (order_tx, job_id) VALUES (?1, ?2)",
                    params![tx, id],
                )
                .map_err(backend)?;
            if inserted == 1 {
                return Ok(OrderClaim::Claimed);
            }
            let holder: String = c
                .query_row("SELECT job_id FROM orders WHERE order_tx = ?1", params![tx], |r| {
                    r.get(0)
                })
                .map_err(backend)?;
            Ok(if holder == id {
                OrderClaim::Claimed
            } else {
                OrderClaim::Taken { job_id: holder }
            })
        })
        .await
    }

    async fn release_order(&self, order_tx: &str, job_id: &str) -> Result<bool, CatalogueError> {
        let tx = order_tx.to_ascii_lowercase();
        let id = job_id.to_string();
        self.with(move |c| {
            let n = c
                .execute("DELETE FROM orders WHERE order_tx = ?1 AND job_id = ?2", params![tx, id])
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn order_holder(&self, order_tx: &str) -> Result<Option<String>, CatalogueError> {
        let tx = order_tx.to_ascii_lowercase();
        self.read(move |c| {
            c.query_row("SELECT job_id FROM orders WHERE order_tx = ?1", params![tx], |r| r.get(0))
                .optional()
                .map_err(backend)
        })
        .await
    }

    async fn use_nonce(&self, signer: &str, nonce: &str) -> Result<bool, CatalogueError> {
        let signer = signer.to_ascii_lowercase();
        let nonce = nonce.to_string();
        self.with(move |c| {
            let n = c
                .execute(
                    "INSERT OR IGNORE INTO nonces (signer, nonce) VALUES (?1, ?2)",
                    params![signer, nonce],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn claim_child_ordinal(
        &self,
        parent: &str,
        job_id: &str,
        floor: u64,
    ) -> Result<u64, CatalogueError> {
        let parent = parent.to_ascii_lowercase();
        let id = job_id.to_string();
        let floor = i64::try_from(floor).map_err(backend)?;
        self.with(move |c| {
            // IMMEDIATE: another process on this database (a second server) waits here
            // instead of reading the same maximum.
            let tx = rusqlite::Transaction::new_unchecked(c, TransactionBehavior::Immediate)
                .map_err(backend)?;
            let mine: Option<i64> = tx
                .query_row(
                    "SELECT n FROM child_ordinals WHERE parent = ?1 AND job_id = ?2",
                    params![parent, id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            let n = match mine {
                Some(n) => n,
                None => {
                    let top: i64 = tx
                        .query_row(
                            "SELECT COALESCE(MAX(n), 0) FROM child_ordinals WHERE parent = ?1",
                            params![parent],
                            |r| r.get(0),
                        )
                        .map_err(backend)?;
                    let n = top.max(floor) + 1;
                    tx.execute(
                        "INSERT INTO child_ordinals (parent, n, job_id) VALUES (?1, ?2, ?3)",
                        params![parent, n, id],
                    )
                    .map_err(backend)?;
                    n
                }
            };
            tx.commit().map_err(backend)?;
            u64::try_from(n).map_err(corrupt)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for `sql`, one line per step.
    fn plan(c: &Connection, sql: &str) -> String {
        let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let args: &[&dyn rusqlite::ToSql] = &[&"0xaa", &20];
        let args = &args[..st.parameter_count()];
        let rows = st.query_map(args, |r| r.get::<_, String>(3)).unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("\n")
    }

    /// A card's reads are index lookups of its page: no scan of the model's jobs, no sort.
    #[test]
    fn a_cards_queries_read_only_their_page_through_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let cat = SqliteCatalogue::open(&dir.path().join("c.sqlite")).unwrap();
        let c = cat.db.lock().unwrap();
        for (sql, index) in [
            (COUNTS, "sqlite_autoindex_model_job_counts_1"),
            (LATEST_EVALUATIONS, "jobs_evaluations"),
            (LATEST_RECEIPTS, "jobs_receipts"),
        ] {
            let p = plan(&c, sql);
            assert!(p.contains(&format!("USING INDEX {index}")), "{sql}:\n{p}");
            assert!(!p.contains("TEMP B-TREE"), "{sql} sorts:\n{p}");
        }
    }
}
