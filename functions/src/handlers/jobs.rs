//! Submit a paid job, follow it, read its public results.

use std::sync::Arc;

use alloy::primitives::{Address, keccak256};
use bytes::Bytes;
use posthuman_chain::{
    ChainError, Claim, MemorySpentOrders, OrderId, OrderQuery, OrderVerdict, Rejection, SpentOrders,
};
use posthuman_types::{Hash32, JobKind, JobProgress, JobSpec};

use super::chain_err;
use super::models::{find_model, lower};
use super::pricing::{check_chat, check_fee, check_lora, model_config};
use super::views::{JobView, SubmittedView, job_view};
use crate::auth;
use crate::catalogue::{Catalogue, JobPhase, JobRecord, OrderClaim, now_secs};
use crate::deps::{Deps, keys, service_index};
use crate::error::ApiError;
use crate::queue::{QueueState, spec_key};
use crate::spool::Spooled;

/// The signed JSON part of a job request (its shape is `posthuman_types`, which clients share).
pub use posthuman_types::requests::JobRequest;

/// A submit upload: the signed request and the dataset, if any, spooled to disk (its hash
/// and UTF-8 check made as it arrived).
#[derive(Debug)]
pub struct JobUpload {
    pub request: Bytes,
    pub signature: String,
    pub dataset: Option<Spooled>,
}

/// The order ledger the chain crate's check claims orders in: our catalogue.
pub struct CatalogueOrders(pub Arc<dyn Catalogue>);

fn order_key(o: &OrderId) -> String {
    format!("{:#x}-{}", o.tx_hash, o.log_index)
}

fn spent_err(e: crate::catalogue::CatalogueError) -> ChainError {
    ChainError::SpentStore(e.to_string())
}

#[async_trait::async_trait]
impl SpentOrders for CatalogueOrders {
    async fn claim(&self, order: &OrderId, job_id: &str) -> Result<Claim, ChainError> {
        match self.0.claim_order(&order_key(order), job_id).await.map_err(spent_err)? {
            OrderClaim::Claimed => Ok(Claim::Claimed),
            OrderClaim::Taken { job_id } => Ok(Claim::HeldBy(job_id)),
        }
    }
    async fn release(&self, order: &OrderId, job_id: &str) -> Result<bool, ChainError> {
        self.0.release_order(&order_key(order), job_id).await.map_err(spent_err)
    }
    async fn holder(&self, order: &OrderId) -> Result<Option<String>, ChainError> {
        self.0.order_holder(&order_key(order)).await.map_err(spent_err)
    }
}

/// The job id: derived from the signer and its (single-use) nonce, so it is unguessable
/// to others and stable for one request.
fn job_id_for(signer: &Address, nonce: &str) -> String {
    let h = keccak256([signer.as_slice(), nonce.as_bytes()].concat());
    format!("j-{}", &hex::encode(h)[..24])
}

fn payment_error(r: &Rejection) -> ApiError {
    match r {
        Rejection::AlreadyUsed { .. } => ApiError::Conflict(format!("payment: {r}")),
        r if r.is_wait_and_resend() => ApiError::TooEarly { reason: r.to_string() },
        _ => ApiError::PaymentInvalid { reason: r.to_string() },
    }
}

/// `POST /jobs`: checks signature, nonce, model, parameters and dataset, then the order on
/// chain (which claims it for this job exactly once), stores the dataset and spec, queues.
/// Every rejection happens before anything is queued; an order is claimed only once all
/// request checks passed.
pub async fn submit_job(deps: &Deps, up: JobUpload) -> Result<SubmittedView, ApiError> {
    let signer = auth::recover_request(
        &auth::domain(deps),
        posthuman_receipts::request::SUBMIT_JOB,
        &up.request,
        &up.signature,
    )?;
    let req: JobRequest =
        serde_json::from_slice(&up.request).map_err(|e| ApiError::bad(format!("request: {e}")))?;
    auth::check_expiry(req.expires_at, now_secs())?;
    submit_signed(deps, signer, &req, up.dataset).await
}

/// The rest of a submit once `signer` is known to have signed `req` (with our typed
/// signature, or with Ocean's through the provider facade, `super::ocean`), both of which
/// check their own freshness: every check of the request, the dataset and the order, then
/// the queue. `req.nonce` is spent here, once the order is final enough.
pub(crate) async fn submit_signed(
    deps: &Deps,
    signer: Address,
    req: &JobRequest,
    dataset: Option<Spooled>,
) -> Result<SubmittedView, ApiError> {
    let consumer = auth::parse_address("consumer", &req.consumer)?;
    auth::require_signer(&consumer, &signer)?;
    let now = now_secs();
    auth::check_nonce(&req.nonce)?;
    if req.salt == Hash32::ZERO {
        // A constant salt hides nothing: the request must carry the buyer's random bytes.
        return Err(ApiError::Invalid {
            field: "salt".into(),
            reason: "must be 32 random bytes the buyer keeps, not zero".into(),
        });
    }
    let model = find_model(deps, &req.model).await?;
    let kind = req.params.kind();
    let job_id = job_id_for(&signer, &req.nonce);
    let mut spec = JobSpec {
        job_id: job_id.clone(),
        model_prefix: model.storage_prefix.clone(),
        dataset_key: match kind {
            JobKind::Train | JobKind::Evaluate => Some(keys::dataset(&job_id)),
            JobKind::Infer => None,
        },
        private_prefix: keys::private(&job_id),
        public_prefix: keys::public(&job_id),
        params: req.params.clone(),
        budget: None,
        salt: Some(req.salt),
    };
    spec.validate()?;
    spec.validate_against_context(model.n_positions)?;
    // The model's config.json, read once: the LoRA check and the fee's price both need it.
    let cfg = model_config(deps, &model).await?;
    check_lora(&spec.params, &cfg)?;
    check_chat(deps, &model, &spec.params).await?;
    let dataset = match (kind, dataset) {
        (JobKind::Infer, None) => None,
        (JobKind::Infer, Some(_)) => return Err(ApiError::bad("infer jobs take no dataset")),
        (_, None) => return Err(ApiError::bad(format!("a {kind} job needs a dataset part"))),
        (_, Some(d)) => {
            if d.is_empty() {
                return Err(ApiError::Invalid { field: "dataset".into(), reason: "empty".into() });
            }
            if !d.is_utf8() {
                return Err(ApiError::Invalid {
                    field: "dataset".into(),
                    reason: "not UTF-8 text".into(),
                });
            }
            if req.dataset_sha256 != Some(d.sha256()) {
                return Err(ApiError::Invalid {
                    field: "dataset_sha256".into(),
                    reason: "does not match the uploaded dataset".into(),
                });
            }
            Some(d)
        }
    };
    let datatoken = auth::parse_address("model.datatoken", &model.card.datatoken)?;
    let query = OrderQuery {
        tx_hash: req.order_tx.clone(),
        datatoken,
        service_index: service_index(kind),
        consumer,
        job_id: job_id.clone(),
    };
    // Verify without claiming first: an order whose fee is not the quote for this job must
    // stay free for the request it was quoted for.
    let order = match deps
        .chain
        .verify_order(&query, &MemorySpentOrders::new())
        .await
        .map_err(chain_err)?
    {
        OrderVerdict::Accepted(o) => o,
        OrderVerdict::Rejected(r) => return Err(payment_error(&r)),
    };
    // The nonce is spent only once the order is final enough: a request refused as too
    // early (too few confirmations) is resent as it is, not signed again.
    if !deps.catalogue.use_nonce(&lower(signer), &req.nonce).await? {
        return Err(ApiError::Conflict("nonce already used (replayed request)".into()));
    }
    let dataset_len = dataset.as_ref().map_or(0, Spooled::len);
    spec.budget = Some(
        check_fee(
            deps,
            &model,
            &cfg.shape(),
            &req.params,
            dataset_len,
            req.quoted_dataset_bytes,
            &order,
        )
        .await?,
    );
    let spent = CatalogueOrders(deps.catalogue.clone());
    if let Claim::HeldBy(job) = spent.claim(&order.id, &job_id).await.map_err(chain_err)? {
        return Err(payment_error(&Rejection::AlreadyUsed { job }));
    }

    // Paid. From here a failure releases the order so the buyer can retry with it.
    let record = JobRecord {
        job_id: job_id.clone(),
        kind,
        model: model.card.nft.clone(),
        consumer: lower(consumer),
        order_tx: format!("{:#x}", order.id.tx_hash),
        order_log_index: order.id.log_index,
        spec: spec.clone(),
        queue_ref: None,
        phase: JobPhase::Submitting,
        created_at: now,
        updated_at: now,
        completion: Default::default(),
        order_released: false,
        receipt_hash: None,
        perplexity: None,
        input_data_hash: None,
    };
    let queued = enqueue(deps, record, dataset, &spec).await;
    if let Err(e) = &queued {
        tracing::error!(%job_id, error = %e, "paid job could not be queued; releasing its order");
        let _ = spent.release(&order.id, &job_id).await;
    }
    queued?;
    Ok(SubmittedView { status_url: format!("/jobs/{job_id}"), job_id })
}

async fn enqueue(
    deps: &Deps,
    record: JobRecord,
    dataset: Option<Spooled>,
    spec: &JobSpec,
) -> Result<(), ApiError> {
    deps.catalogue.put_job(&record).await?;
    if let (Some(d), Some(key)) = (dataset, &spec.dataset_key) {
        deps.store.put_file(key, d.path()).await?;
    }
    let spec_json = serde_json::to_vec(spec).map_err(ApiError::internal)?;
    deps.store.put(&spec_key(&spec.job_id), Bytes::from(spec_json)).await?;
    let queue_ref = deps.queue.submit(spec).await?;
    // Not a rewrite of `record`: a fast job's completion may already have moved it past
    // Submitting, and writing Queued back would undo it.
    deps.catalogue.mark_queued(&record.job_id, &queue_ref, now_secs()).await?;
    Ok(())
}

pub(crate) async fn find_job(deps: &Deps, job_id: &str) -> Result<JobRecord, ApiError> {
    if posthuman_types::job::validate_id("job_id", job_id).is_err() {
        return Err(ApiError::not_found("job"));
    }
    deps.catalogue
        .get_job(job_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {job_id}")))
}

/// A public output of a job, if the worker wrote it.
pub(crate) async fn public_output(
    deps: &Deps,
    j: &JobRecord,
    name: &str,
) -> Result<Option<Bytes>, ApiError> {
    debug_assert!(keys::PUBLIC_OUTPUTS.contains(&name));
    match deps.store.get(&format!("{}/{name}", j.spec.public_prefix), 16 << 20).await {
        Ok(b) => Ok(Some(b)),
        Err(posthuman_store::StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `GET /jobs/{id}`: state, live progress (the worker's `progress.json`), derived model.
pub async fn job_status(deps: &Deps, job_id: &str) -> Result<JobView, ApiError> {
    let j = find_job(deps, job_id).await?;
    let live = matches!(j.phase, JobPhase::Queued | JobPhase::Submitting);
    let running = match (&j.queue_ref, live) {
        (Some(r), true) => {
            matches!(deps.queue.state(r).await, Ok(QueueState::Running | QueueState::Succeeded))
        }
        _ => false,
    };
    let progress = match public_output(deps, &j, "progress.json").await? {
        Some(b) => serde_json::from_slice::<JobProgress>(&b).ok(),
        None => None,
    };
    Ok(job_view(&j, running, progress))
}

/// `GET /jobs/{id}/receipt`: the operator-signed receipt, public so that anyone can check
/// it against the chain (it carries hashes of the data and outputs, never the data, the
/// prompts or the weights).
pub async fn job_receipt(deps: &Deps, job_id: &str) -> Result<serde_json::Value, ApiError> {
    let j = find_job(deps, job_id).await?;
    let b = public_output(deps, &j, "receipt.json").await?.ok_or_else(|| {
        ApiError::not_found(format!("a receipt for job {job_id} (not written yet)"))
    })?;
    serde_json::from_slice(&b).map_err(|e| ApiError::Internal(format!("stored receipt: {e}")))
}

/// The public results of a job (`posthuman_types::views`, which clients read).
pub use posthuman_types::views::JobResult;

/// `GET /jobs/{id}/result`: the public outputs, only to the buyer (a typed `read-result`
/// signature, [`auth::recover_read`]).
pub async fn job_result(
    deps: &Deps,
    job_id: &str,
    reader: Address,
    signature: &str,
    expires_at: u64,
) -> Result<JobResult, ApiError> {
    auth::check_expiry(expires_at, now_secs())?;
    let j = find_job(deps, job_id).await?;
    let signer = auth::recover_read(&auth::domain(deps), &j.job_id, expires_at, signature)?;
    auth::require_signer(&reader, &signer)?;
    if lower(signer) != j.consumer {
        return Err(ApiError::Forbidden("only the buyer of a job may read its results".into()));
    }
    let mut out = JobResult {
        job: job_status(deps, job_id).await?,
        metrics: None,
        completions: None,
        report: None,
        error: None,
        receipt: None,
        attestations: None,
        report_text: None,
    };
    let mut report_bytes = None;
    for (name, slot) in [
        ("metrics.json", &mut out.metrics),
        ("completions.json", &mut out.completions),
        ("report.json", &mut out.report),
        ("error.json", &mut out.error),
        ("receipt.json", &mut out.receipt),
        ("attestations.json", &mut out.attestations),
    ] {
        if let Some(b) = public_output(deps, &j, name).await? {
            *slot = serde_json::from_slice(&b).ok();
            if name == "report.json" {
                report_bytes = Some(b);
            }
        }
    }
    out.report_text = report_bytes.and_then(|b| String::from_utf8(b.to_vec()).ok());
    Ok(out)
}
