//! Asynchronous publishes: `POST /api/models` with a direct upload answers 202 at once and
//! the weight work, the transactions and the listing run in the background.
//!
//! Why: a 1 GiB model's weight work alone takes 25-33 s (measured, `infra/README.md`), and
//! API Gateway's HTTP API cuts a request at 29 s. So [`accept`] does only the cheap checks
//! (the signature, its signer, the fields, expiry and nonce, the staged files there with their
//! declared lengths and the signed hashes; nothing of the weights is read), writes a status
//! record at `state/publishes/<id>.json` (the object store, beside the rest of the state) and
//! hands the id to a [`PublishRunner`]; [`run`] then does the work and rewrites the record
//! with its phase and progress; [`status`] serves it (`GET /api/publishes/{id}`).
//!
//! The boundary is one narrow trait with two implementations:
//! - [`LocalPublishes`]: a tokio task in this process (the embedded server: demo, CLI, tests;
//!   `tests/async_publish.rs`);
//! - [`LambdaPublishes`]: an asynchronous Lambda invocation (`InvocationType: Event`) of the
//!   publish function (`posthuman-publish-lambda`, 15-minute timeout), exercised by the Lambda
//!   stage (`localstack/run-lambdas.sh`: the real binaries under the Runtime API emulator).
//!
//! (No shared contract suite runs both yet: the Lambda one needs the emulator's stage.)
//!
//! Guards:
//! - **Once per id.** Lambda may deliver an asynchronous event more than once (the stack sets
//!   its retries to 0, but delivery is at least once). [`run`] first creates
//!   `state/publishes/<id>.started` with a conditional write; a second delivery finds it and
//!   refuses, so no transaction is ever sent twice.
//! - **A dead worker.** A publish still queued or running past its `deadline` (the publish
//!   function's timeout and a minute) is reported failed, `timed_out`, by [`status`].
//! - **Strangers cannot queue unbounded work.** Each owner holds at most [`MAX_IN_FLIGHT`]
//!   slots (`state/publishes/owners/<owner>/<n>`, taken with conditional writes, freed when
//!   the publish ends or its deadline passed); one more is a 429.
//! - **Unguessable ids**: 128 random bits.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use posthuman_store::StoreError;
use posthuman_types::publishes::{
    PublishAccepted, PublishFailure, PublishProgress, PublishState, PublishView,
};
use posthuman_types::uploads::UploadPurpose;
use serde::{Deserialize, Serialize};

use crate::catalogue::now_secs;
use crate::deps::Deps;
use crate::error::ApiError;
use crate::handlers::models::{self, PublishUpload};
use crate::uploads;

mod lambda;
mod local;
pub use lambda::{LambdaPublishes, PublishEvent};
pub use local::LocalPublishes;

/// Where publish records live in the object store.
pub const PREFIX: &str = "state/publishes/";
/// The longest a publish may run: the publish function's timeout (Lambda's maximum); the
/// local runner stops its task at the same deadline.
pub const PUBLISH_TIMEOUT_SECS: u64 = 15 * 60;
/// Beyond the timeout, before a publish still in flight is judged dead.
const DEADLINE_SLACK_SECS: u64 = 60;
/// Publishes one owner may have in flight at once.
pub const MAX_IN_FLIGHT: usize = 2;
/// How often a running publish's progress is written to its record.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// [`PublishProgress::unit`] for the weight phases.
pub const BYTES: &str = "bytes";
/// [`PublishProgress::unit`] for the chain phase.
pub const TRANSACTIONS: &str = "transactions";

/// Runs a publish in the background. See the module docs.
#[async_trait::async_trait]
pub trait PublishRunner: Send + Sync + std::fmt::Debug + 'static {
    /// Hands publish `id` (its record written, queued) to the background, then returns:
    /// not when it is done. An error means it was not handed over.
    async fn start(&self, deps: &Arc<Deps>, id: &str) -> Result<(), ApiError>;
}

/// Live progress of one publish, shared between the work and the task that writes it.
#[derive(Clone, Debug)]
pub struct Progress {
    inner: Arc<Mutex<(PublishProgress, u64)>>,
    started: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        let p = PublishProgress {
            phase: "fetching".into(),
            done: 0,
            total: 0,
            unit: BYTES.into(),
            step: None,
            elapsed_secs: 0.0,
        };
        Progress { inner: Arc::new(Mutex::new((p, 0))), started: Instant::now() }
    }
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut PublishProgress)) {
        // A poisoned lock only means a panic elsewhere mid-update: progress is advisory.
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g.0);
        g.1 += 1;
    }

    /// A new phase of `total` `unit`s, none done.
    pub fn phase(&self, phase: &str, total: u64, unit: &str) {
        self.update(|p| {
            (p.phase, p.total, p.unit, p.done, p.step) =
                (phase.into(), total, unit.into(), 0, None);
        });
    }

    /// `done` units of the phase are done.
    pub fn done(&self, done: u64) {
        self.update(|p| p.done = done);
    }

    /// In the chain phase: sending `step`, with `done` transactions confirmed.
    pub fn step(&self, step: &str, done: u64) {
        self.update(|p| (p.step, p.done) = (Some(step.into()), done));
    }

    /// The progress now, and a counter that changes with every update.
    fn snapshot(&self) -> (PublishProgress, u64) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut p = g.0.clone();
        p.elapsed_secs = self.started.elapsed().as_secs_f64();
        (p, g.1)
    }
}

/// What the store keeps of a publish: its public view and what the work needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    view: PublishView,
    job: Job,
}

/// The signed request as sent (checked again by the work), and what it holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Job {
    /// The signed JSON request (UTF-8: it parsed as JSON).
    request: String,
    signature: String,
    upload: String,
    /// The owner's in-flight slot this publish holds.
    slot: String,
}

fn record_key(id: &str) -> String {
    format!("{PREFIX}{id}.json")
}

fn started_key(id: &str) -> String {
    format!("{PREFIX}{id}.started")
}

fn slot_key(owner: &str, n: usize) -> String {
    format!("{PREFIX}owners/{owner}/{n}")
}

/// A publish id's shape (`p-` and 32 lowercase hex digits); anything else is unknown without
/// a lookup (and never becomes part of a store key).
pub fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = id.len() == 34
        && id.starts_with("p-")
        && id[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok {
        return Err(ApiError::not_found(format!("publish {:.40}", id)));
    }
    Ok(())
}

/// 128 random bits from rand's thread generator (seeded from the operating system's).
fn new_id() -> String {
    format!("p-{:032x}", rand::random::<u128>())
}

async fn load(deps: &Deps, id: &str) -> Result<Option<Record>, ApiError> {
    match deps.store.get(&record_key(id), 8 << 20).await {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(ApiError::internal)?)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn save(deps: &Deps, r: &Record) -> Result<(), ApiError> {
    let json = serde_json::to_vec(r).map_err(ApiError::internal)?;
    deps.store.put(&record_key(&r.view.publish_id), Bytes::from(json)).await?;
    Ok(())
}

/// The view as a client should read it: a publish in flight past its deadline failed.
fn effective(mut v: PublishView, now: u64) -> PublishView {
    if v.state.in_flight() && now > v.deadline {
        v.state = PublishState::Failed;
        v.progress = None;
        v.error = Some(timed_out());
        v.updated_at = v.deadline;
    }
    v
}

fn timed_out() -> PublishFailure {
    PublishFailure {
        status: 504,
        error: "timed_out".into(),
        message: "the publish did not finish before its deadline (its worker stopped); the \
                  model was not listed: publish again"
            .into(),
    }
}

fn failure(e: &ApiError) -> PublishFailure {
    PublishFailure::new(e.status().as_u16(), e.body())
}

/// Takes one of `owner`'s in-flight slots for publish `id`, freeing any whose publish ended
/// or passed its deadline; none free is a 429.
async fn take_slot(deps: &Deps, owner: &str, id: &str) -> Result<String, ApiError> {
    for n in 0..MAX_IN_FLIGHT {
        let key = slot_key(owner, n);
        if deps.store.put_if_absent(&key, Bytes::from(id.to_string())).await? {
            return Ok(key);
        }
    }
    let now = now_secs();
    for n in 0..MAX_IN_FLIGHT {
        let key = slot_key(owner, n);
        let holder = match deps.store.get(&key, 64).await {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(StoreError::NotFound { .. }) => String::new(),
            Err(e) => return Err(e.into()),
        };
        let stale = check_id(&holder).is_err()
            || match load(deps, &holder).await? {
                Some(r) => !effective(r.view, now).state.in_flight(),
                None => true,
            };
        if stale {
            deps.store.delete(&key).await?;
            if deps.store.put_if_absent(&key, Bytes::from(id.to_string())).await? {
                return Ok(key);
            }
        }
    }
    Err(ApiError::TooMany(format!(
        "{MAX_IN_FLIGHT} publishes of {owner} are in flight: wait until one is done"
    )))
}

/// Frees `slot` if publish `id` still holds it. Best effort: a slot left behind frees itself
/// once its publish's deadline passed.
async fn free_slot(deps: &Deps, slot: &str, id: &str) {
    if let Ok(b) = deps.store.get(slot, 64).await
        && b.as_ref() == id.as_bytes()
        && let Err(e) = deps.store.delete(slot).await
    {
        tracing::warn!(publish = id, error = %e, "freeing a publish slot; it frees at the deadline");
    }
}

/// `POST /api/models` with a direct upload: the cheap checks, the upload claimed, the nonce
/// used, a slot taken, the record written, the work handed to the runner. See the module docs.
pub async fn accept(
    deps: &Arc<Deps>,
    request: Bytes,
    signature: String,
    upload: String,
) -> Result<PublishAccepted, ApiError> {
    let signed = models::check_publish_request(deps, &request, &signature)?;
    let claimed = uploads::claim(deps, &upload, signed.signer, UploadPurpose::Model).await?;
    let r = accept_claimed(deps, &signed, &request, signature, &claimed).await;
    if r.is_err() {
        // Not started: the upload is free for another try.
        claimed.finish(deps, false).await;
    }
    r
}

async fn accept_claimed(
    deps: &Arc<Deps>,
    signed: &models::SignedPublish,
    request: &[u8],
    signature: String,
    claimed: &uploads::Claimed,
) -> Result<PublishAccepted, ApiError> {
    // The staged files are the signed ones (their content was verified against these hashes
    // when they arrived, and is again as the work reads them back).
    let declared = |name: &str| claimed.declared(name).map(|f| f.sha256);
    let missing = |n: &str| ApiError::bad(format!("the upload has no file {n:?}"));
    for n in ["config", "weights", "tokenizer"] {
        declared(n).ok_or_else(|| missing(n))?;
    }
    let adapter = match (declared("adapter_config"), declared("adapter_weights")) {
        (None, None) => None,
        (Some(_), Some(w)) => Some(w),
        _ => return Err(ApiError::bad("an adapter needs both adapter_config and adapter_weights")),
    };
    let weights = declared("weights").ok_or_else(|| missing("weights"))?;
    models::check_signed_hashes(&signed.req, weights, adapter)?;
    let request = String::from_utf8(request.to_vec())
        .map_err(|_| ApiError::bad("the request is not UTF-8"))?;
    let id = new_id();
    let owner = models::lower(signed.owner);
    let slot = take_slot(deps, &owner, &id).await?;
    let r = async {
        models::use_publish_nonce(deps, signed).await?;
        let now = now_secs();
        let view = PublishView {
            publish_id: id.clone(),
            owner: owner.clone(),
            state: PublishState::Queued,
            progress: None,
            model: None,
            error: None,
            created_at: now,
            updated_at: now,
            deadline: now + PUBLISH_TIMEOUT_SECS + DEADLINE_SLACK_SECS,
        };
        let job = Job { request, signature, upload: claimed.id().to_string(), slot: slot.clone() };
        save(deps, &Record { view, job }).await?;
        deps.publishes.start(deps, &id).await
    }
    .await;
    if let Err(e) = r {
        // Never started: mark it so (a GET of the id says why) and free the slot.
        if let Ok(Some(mut rec)) = load(deps, &id).await {
            rec.view.state = PublishState::Failed;
            rec.view.error = Some(failure(&e));
            let _ = save(deps, &rec).await;
        }
        free_slot(deps, &slot, &id).await;
        return Err(e);
    }
    Ok(PublishAccepted { status_url: format!("/api/publishes/{id}"), publish_id: id })
}

/// `GET /api/publishes/{id}`: the publish's status; 404 for an id nobody started.
pub async fn status(deps: &Deps, id: &str) -> Result<PublishView, ApiError> {
    check_id(id)?;
    let r = load(deps, id).await?.ok_or_else(|| ApiError::not_found(format!("publish {id}")))?;
    Ok(effective(r.view, now_secs()))
}

/// What became of one delivery of a publish to [`run`].
#[derive(Debug, PartialEq, Eq)]
pub enum Ran {
    /// The work ran (to done or failed: the record says which).
    Finished(PublishState),
    /// Another delivery already started this publish: nothing was done.
    AlreadyStarted,
}

/// Runs publish `id` (the runner's side): once per id, until its deadline. An error means
/// the record could not be read or written; the publish's own failures go into the record.
pub async fn run(deps: &Deps, id: &str) -> Result<Ran, ApiError> {
    check_id(id)?;
    if !deps.store.put_if_absent(&started_key(id), Bytes::from_static(b"started")).await? {
        tracing::warn!(publish = id, "publish delivered again; it already started, not run twice");
        return Ok(Ran::AlreadyStarted);
    }
    let mut rec =
        load(deps, id).await?.ok_or_else(|| ApiError::not_found(format!("publish {id}")))?;
    let now = now_secs();
    let left = rec.view.deadline.saturating_sub(now + DEADLINE_SLACK_SECS);
    rec.view.state = PublishState::Running;
    rec.view.updated_at = now;
    let progress = Progress::default();
    rec.view.progress = Some(progress.snapshot().0);
    save(deps, &rec).await?;

    // Progress goes to the record while the work runs; this task stops before the last write.
    let flusher = {
        let (deps, progress, mut rec) = (deps.clone(), progress.clone(), rec.clone());
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                tokio::time::sleep(FLUSH_EVERY).await;
                let (p, n) = progress.snapshot();
                if n != seen {
                    seen = n;
                    (rec.view.progress, rec.view.updated_at) = (Some(p), now_secs());
                    if let Err(e) = save(&deps, &rec).await {
                        tracing::warn!(publish = %rec.view.publish_id, error = %e, "writing progress");
                    }
                }
            }
        })
    };
    let limit = std::time::Duration::from_secs(left);
    let result = match tokio::time::timeout(limit, work(deps, &rec.job, &progress)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::unavailable("publish worker", "deadline passed")),
    };
    flusher.abort();
    let _ = flusher.await;

    rec.view.updated_at = now_secs();
    rec.view.progress = None;
    match &result {
        Ok(model) => {
            rec.view.state = PublishState::Done;
            rec.view.model = Some(model.clone());
        }
        Err(e) => {
            tracing::info!(publish = id, error = %e, "publish failed");
            if let ApiError::Internal(detail) = e {
                tracing::error!(publish = id, %detail, "publish failed: internal error");
            }
            rec.view.state = PublishState::Failed;
            rec.view.error = Some(failure(e));
        }
    }
    save(deps, &rec).await?;
    free_slot(deps, &rec.job.slot, id).await;
    Ok(Ran::Finished(rec.view.state))
}

/// The work of one publish: the request checked again (its expiry aside: it was checked at
/// acceptance, and the weight work may outlast it), the staged files read back and
/// checked, then [`models::publish_checked`]; the upload consumed on success, released on
/// failure.
async fn work(
    deps: &Deps,
    job: &Job,
    progress: &Progress,
) -> Result<posthuman_types::views::ModelView, ApiError> {
    let signed = models::recheck_publish_request(deps, job.request.as_bytes(), &job.signature)?;
    let claimed = uploads::Claimed::resume(deps, &job.upload, UploadPurpose::Model).await?;
    progress.phase("fetching", claimed.total_bytes(), BYTES);
    let r = async {
        let mut f = claimed.fetch_with(deps, |n| progress.done(n)).await?;
        let (bytes, file) = (uploads::fetched_bytes, uploads::fetched_file);
        let missing = |n: &str| ApiError::bad(format!("the upload has no file {n:?}"));
        let adapter = match (bytes(&mut f, "adapter_config"), file(&mut f, "adapter_weights")) {
            (Some(c), Some(w)) => Some((c, w)),
            _ => None,
        };
        let up = PublishUpload {
            request: Bytes::from(job.request.clone()),
            signature: job.signature.clone(),
            config: bytes(&mut f, "config").ok_or_else(|| missing("config"))?,
            weights: file(&mut f, "weights").ok_or_else(|| missing("weights"))?,
            tokenizer: bytes(&mut f, "tokenizer").ok_or_else(|| missing("tokenizer"))?,
            adapter,
            tokenizer_config: bytes(&mut f, "tokenizer_config"),
            generation_config: bytes(&mut f, "generation_config"),
            chat_template: bytes(&mut f, "chat_template"),
        };
        models::publish_checked(deps, signed, up, false, progress).await
    }
    .await;
    claimed.finish(deps, r.is_ok()).await;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_random_bits_of_one_shape() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert!(check_id(&a).is_ok() && check_id(&b).is_ok(), "{a} {b}");
        for bad in ["", "p-", "p-../../x", &format!("p-{}", "AB12".repeat(8)), &"p-1".repeat(12)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn in_flight_past_the_deadline_reads_as_timed_out() {
        let v = PublishView {
            publish_id: new_id(),
            owner: "0x01".into(),
            state: PublishState::Running,
            progress: None,
            model: None,
            error: None,
            created_at: 1,
            updated_at: 2,
            deadline: 10,
        };
        assert_eq!(effective(v.clone(), 10).state, PublishState::Running);
        let late = effective(v, 11);
        assert_eq!(late.state, PublishState::Failed);
        assert_eq!(late.error.unwrap().error, "timed_out");
    }
}
