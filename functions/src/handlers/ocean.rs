//! The Ocean Provider / Ocean Node compute API that ocean.js 8.6.2's `ProviderInstance` calls,
//! over the same handlers as our own API — so a stock Ocean client buys and runs Posthuman
//! jobs without learning our routes.
//!
//! **Where.** The provider lives at [`ROOT`] (`/api/ocean`): that URL is every service's
//! `serviceEndpoint` in the models' DDOs, and what ocean.js calls the node URI. `GET` on it
//! answers Ocean's root document, whose `serviceEndpoints` name the routes *relative to it*
//! (ocean.js joins them onto the node URI): `nonce`, `computeEnvironments`,
//! `initializeCompute`, `compute` (`POST` start, `GET` status) and `computeResult`.
//!
//! **How Ocean's concepts map onto ours.**
//! - The *dataset* asset (`documentId`) is the model: its DID (`did:op:` of the NFT and chain,
//!   as in its DDO). A job runs on exactly one model: more datasets (Ocean's
//!   `additionalDatasets`) are refused, as is a `fileObject`.
//! - The *service* (`serviceId`) is the job kind: `train`, `infer` or `evaluate`, the DDO's
//!   service ids, in the order orders name them (`serviceIndex` 0, 1, 2).
//! - The *algorithm* is the service itself: the DDO allows no raw or third-party algorithm,
//!   so an algorithm naming a DID, a container (`meta`) or a file is refused; an empty one
//!   (or none) is fine.
//! - The job's parameters and the buyer's data travel in the dataset's `userdata`:
//!   `{ "params": <our kind-tagged JobParams>, "dataset_bytes": n, "dataset": "<text>",
//!   "salt": "0x<32 bytes>" }`. `params` and `dataset_bytes` are the quote's terms (without
//!   `params`: the storefront's default terms for the kind, as `GET …/quote?kind=`);
//!   `dataset` is the train/evaluate text, inline (ocean.js sends JSON only); `salt` (start
//!   only) is the buyer's secret that public outputs salt their input hashes with.
//! - `initializeCompute` prices those terms with the very quote of `POST …/quote` and returns
//!   its provider fee in Ocean's `ProviderFees` shape (camelCase, numeric `v`), which ocean.js
//!   hands to `startOrder` / `orderAsset` unchanged; our whole quote rides along as `quote`.
//! - `computeStart` names the order in `transferTxId` and runs our submit
//!   ([`super::jobs::submit_signed`]) with every check it makes: the order, its fee bound to
//!   this model, kind and terms, the dataset, the nonce.
//! - `computeStatus` answers Ocean `ComputeJob`s (status 0 started, 40 running, 60 publishing
//!   results (a train job's derived model), 70 finished, 41 failed) with our job view
//!   alongside as `posthuman`; `results` lists the job's public outputs (never weights) at
//!   fixed indexes, and `computeResult` serves one of them, to the buyer only.
//!
//! **Signatures.** Ocean signs `consumerAddress + nonce + command` ([`auth::recover_ocean`]);
//! the nonce is the provider's microsecond clock from the `nonce` route plus one, valid for a
//! window ([`auth::check_ocean_nonce`]) and spent once in the same ledger as our own request
//! nonces. Unlike our typed requests, Ocean's signature does not cover the body (the job's
//! parameters, data, order): only TLS keeps those intact on the way, and what a tampered
//! request could still do is bounded by the checks it passes — the order must name the signer
//! as consumer and pay for exactly the terms sent, and results go to the signer alone.
//! `computeStatus` is unsigned in ocean.js, as our own job status is public; so its results
//! name each output but not its size.

use alloy::primitives::Address;
use bytes::Bytes;
use posthuman_chain::ddo;
use posthuman_types::JobKind;
use serde_json::{Value, json};

use super::jobs::{self, JobRequest, find_job, public_output};
use super::models::{self, Quote, lower};
use super::pricing::QuoteTerms;
use super::views::JobStateView;
use crate::auth;
use crate::catalogue::{JobRecord, ModelRecord, now_secs};
use crate::deps::{Deps, keys};
use crate::error::ApiError;
use crate::spool::Spooled;

/// Where the provider is served: the DDO's `serviceEndpoint` is the public URL plus this.
pub const ROOT: &str = "/api/ocean";

/// The command ocean.js signs to start a job (its `PROTOCOL_COMMANDS.COMPUTE_START`).
pub const START_COMPUTE: &str = "startCompute";
/// The command ocean.js signs to read a result (`PROTOCOL_COMMANDS.COMPUTE_GET_RESULT`).
pub const GET_COMPUTE_RESULT: &str = "getComputeResult";

/// The one compute environment: Posthuman's own worker.
pub const ENVIRONMENT: &str = "posthuman";

/// The provider URL for a deployment whose API is public at `public_api_url`.
pub fn provider_url(public_api_url: &str) -> String {
    format!("{}{ROOT}", public_api_url.trim_end_matches('/'))
}

/// `GET /api/ocean`: Ocean's root document; ocean.js finds every route in `serviceEndpoints`.
pub fn root(deps: &Deps) -> Value {
    let chain_id = deps.chain.book().chain_id;
    let operator = deps.chain.operator().to_checksum(None);
    json!({
        "software": "Posthuman",
        "version": env!("CARGO_PKG_VERSION"),
        "chainIds": [chain_id],
        "providerAddress": operator,
        "providerAddresses": { chain_id.to_string(): operator },
        // Relative to this document's URL: ocean.js joins them onto the node URI.
        "serviceEndpoints": {
            "nonce": ["GET", "nonce"],
            "computeEnvironments": ["GET", "computeEnvironments"],
            "initializeCompute": ["POST", "initializeCompute"],
            "computeStart": ["POST", "compute"],
            "computeStatus": ["GET", "compute"],
            "computeResult": ["GET", "computeResult"],
        },
    })
}

/// The current time in microseconds: an Ocean nonce's clock. Finer than any request's round
/// trip, so two requests of one signer never take the same nonce from it (and still far
/// inside the 2^53 a JavaScript number holds exactly).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `GET /api/ocean/nonce`: the provider's clock, which the next signed request's nonce
/// exceeds by one (ocean.js adds it). The same for every address: what makes a nonce
/// single-use is the ledger, not a counter.
pub fn nonce() -> Value {
    json!({ "nonce": now_micros() })
}

/// `GET /api/ocean/computeEnvironments`: the one environment, paid in OCEAN on this chain
/// through the provider fee of each order (no escrow: prices are per job, from the quote).
pub fn environments(deps: &Deps) -> Value {
    let book = deps.chain.book();
    json!([{
        "id": ENVIRONMENT,
        "description": "Posthuman's worker: train, infer and evaluate on private weights, \
                        priced per job by initializeCompute",
        "consumerAddress": deps.chain.operator().to_checksum(None),
        "maxJobDuration": ddo::SERVICE_TIMEOUT_SECS,
        "fees": { book.chain_id.to_string(): [{ "feeToken": lower(book.ocean), "prices": [] }] },
        "resources": [],
    }])
}

// Ocean's request shapes, as ocean.js sends them (`posthuman_types::ocean`).
pub use posthuman_types::ocean::{
    ComputeAsset, ComputeStart, InitializeCompute, Payment, Userdata,
};

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::Invalid { field: field.into(), reason: reason.into() }
}

/// Which model each Ocean DID names. A DID is a hash of the NFT and the chain, so it cannot be
/// turned back: the index learns every model's DID from one catalogue scan, on a miss, and at
/// most once per [`DidIndex::RESCAN`] (so unknown DIDs cannot make every request a scan of the
/// catalogue; a model published since by another process is found after that long at most).
/// Entries are checked against the catalogue when used, never trusted.
#[derive(Debug, Default)]
pub struct DidIndex {
    nft_of: std::sync::RwLock<std::collections::HashMap<String, String>>,
    scanned: std::sync::Mutex<Option<std::time::Instant>>,
}

impl DidIndex {
    /// The shortest time between two scans of the catalogue.
    pub const RESCAN: std::time::Duration = std::time::Duration::from_secs(5);

    fn get(&self, did: &str) -> Option<String> {
        self.nft_of.read().ok()?.get(did).cloned()
    }

    /// Whether a scan may run now (and if so, that it runs).
    fn may_scan(&self) -> bool {
        let Ok(mut last) = self.scanned.lock() else { return true };
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Self::RESCAN) {
            return false;
        }
        *last = Some(now);
        true
    }

    fn learn(&self, entries: impl IntoIterator<Item = (String, String)>) {
        if let Ok(mut m) = self.nft_of.write() {
            m.extend(entries);
        }
    }
}

/// The DID of a catalogue model on this chain.
fn did_of(m: &ModelRecord, chain_id: u64) -> Option<String> {
    m.card.nft.parse::<Address>().ok().map(|nft| ddo::did(nft, chain_id))
}

/// The model an Ocean DID names (through [`DidIndex`]).
async fn model_by_did(deps: &Deps, did: &str) -> Result<ModelRecord, ApiError> {
    let chain_id = deps.chain.book().chain_id;
    let not_found = || ApiError::not_found(format!("asset {did}"));
    if let Some(nft) = deps.ocean_dids.get(did)
        && let Some(m) = deps.catalogue.get_model(&nft).await?
        && did_of(&m, chain_id).as_deref() == Some(did)
    {
        return Ok(m);
    }
    if !deps.ocean_dids.may_scan() {
        return Err(not_found());
    }
    let models = deps.catalogue.list_models().await?;
    deps.ocean_dids
        .learn(models.iter().filter_map(|m| Some((did_of(m, chain_id)?, m.card.nft.clone()))));
    models.into_iter().find(|m| did_of(m, chain_id).as_deref() == Some(did)).ok_or_else(not_found)
}

/// The job kind a DDO service id names.
fn kind_of_service(service_id: &str) -> Result<JobKind, ApiError> {
    match service_id {
        "train" => Ok(JobKind::Train),
        "infer" => Ok(JobKind::Infer),
        "evaluate" => Ok(JobKind::Evaluate),
        _ => Err(invalid("serviceId", "one of the DDO's services: train, infer or evaluate")),
    }
}

/// The checks both calls make of the environment, the payment and the algorithm, and the one
/// asset, resolved to its model and job kind.
async fn resolve(
    deps: &Deps,
    environment: Option<&str>,
    chain_id: Option<u64>,
    token: Option<&str>,
    algorithm: Option<&Value>,
    datasets: &[ComputeAsset],
) -> Result<(ModelRecord, JobKind, ComputeAsset), ApiError> {
    if let Some(env) = environment.filter(|e| !e.is_empty() && *e != ENVIRONMENT) {
        return Err(invalid("environment", format!("{env:?} is not {ENVIRONMENT:?}")));
    }
    let book = deps.chain.book();
    if let Some(c) = chain_id.filter(|c| *c != book.chain_id) {
        return Err(invalid("chainId", format!("{c}: this provider serves {}", book.chain_id)));
    }
    if let Some(t) = token.filter(|t| !t.is_empty())
        && auth::parse_address("payment.token", t)? != book.ocean
    {
        return Err(invalid("payment.token", "jobs are paid in OCEAN (the provider fee)"));
    }
    if let Some(a) = algorithm.and_then(Value::as_object) {
        let named = ["documentId", "meta", "fileObject"]
            .iter()
            .any(|k| !a.get(*k).is_none_or(Value::is_null));
        if named {
            return Err(invalid(
                "algorithm",
                "this provider runs only its own train/infer/evaluate services; \
                 send no algorithm (the service is the algorithm)",
            ));
        }
    }
    let [asset] = datasets else {
        return Err(invalid("datasets", "exactly one: the model (no additional datasets)"));
    };
    if asset.file_object.as_ref().is_some_and(|f| !f.is_null()) {
        return Err(invalid("fileObject", "the model's weights are not a file to send"));
    }
    let kind = kind_of_service(&asset.service_id)?;
    let model = model_by_did(deps, &asset.document_id).await?;
    Ok((model, kind, asset.clone()))
}

/// The quote's terms a `userdata` names for a `kind` job, and the dataset length its fee was
/// quoted for when that is not the dataset sent (our `quoted_dataset_bytes`).
fn terms_of(
    kind: JobKind,
    u: &Userdata,
    n_positions: u32,
) -> Result<(QuoteTerms, Option<u64>), ApiError> {
    let Some(params) = &u.params else {
        let t = QuoteTerms::default_for(kind, n_positions);
        let quoted = (kind != JobKind::Infer).then_some(t.dataset_bytes);
        return Ok((t, quoted));
    };
    if params.kind() != kind {
        return Err(invalid(
            "serviceId",
            format!("the userdata's params are a {} job, the service is {kind}", params.kind()),
        ));
    }
    let sent = u.dataset.as_ref().map(|d| d.len() as u64);
    let dataset_bytes = u.dataset_bytes.or(sent).unwrap_or(0);
    Ok((QuoteTerms { params: params.clone(), dataset_bytes }, u.dataset_bytes))
}

/// A quote's provider fee in Ocean's `ProviderFees` shape, as `startOrder` takes it.
pub fn provider_fees(q: &Quote) -> Value {
    let f = &q.provider_fee;
    json!({
        "providerFeeAddress": f.provider_fee_address,
        "providerFeeToken": f.provider_fee_token,
        "providerFeeAmount": f.provider_fee_amount,
        "v": f.v,
        "r": f.r,
        "s": f.s,
        "providerData": f.provider_data,
        "validUntil": f.valid_until,
    })
}

/// `POST /api/ocean/initializeCompute`: the quote for the job, its fee in Ocean's shape.
pub async fn initialize_compute(deps: &Deps, body: InitializeCompute) -> Result<Value, ApiError> {
    let pay = body.payment.unwrap_or_default();
    let (model, kind, asset) = resolve(
        deps,
        body.environment.as_deref(),
        pay.chain_id,
        pay.token.as_deref(),
        body.algorithm.as_ref(),
        &body.datasets,
    )
    .await?;
    let (terms, _) = terms_of(kind, &asset.userdata.unwrap_or_default(), model.n_positions)?;
    let quote = models::quote_model(deps, &model, terms).await?;
    Ok(json!({
        "datasets": [{
            "datatoken": quote.datatoken,
            "providerFee": provider_fees(&quote),
            "serviceIndex": quote.service_index,
            "quote": quote,
        }],
    }))
}

/// `POST /api/ocean/compute`: starts the job an order paid for, signed the Ocean way.
pub async fn compute_start(deps: &Deps, body: ComputeStart) -> Result<Value, ApiError> {
    let nonce = match &body.nonce {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(invalid("nonce", "a decimal number")),
    };
    let ledger_nonce = auth::check_ocean_nonce(&nonce, now_micros())?;
    let signer =
        auth::recover_ocean(&body.consumer_address, &nonce, START_COMPUTE, &body.signature)?;
    let consumer = auth::parse_address("consumerAddress", &body.consumer_address)?;
    auth::require_signer(&consumer, &signer)?;
    let pay = body.payment.clone().unwrap_or_default();
    let datasets = match (&body.datasets[..], &body.dataset) {
        ([], Some(d)) => vec![d.clone()],
        (ds, _) => ds.to_vec(),
    };
    let (model, kind, asset) = resolve(
        deps,
        body.environment.as_deref(),
        body.chain_id.or(pay.chain_id),
        pay.token.as_deref(),
        body.algorithm.as_ref(),
        &datasets,
    )
    .await?;
    let order_tx = asset
        .transfer_tx_id
        .clone()
        .ok_or_else(|| invalid("transferTxId", "the startOrder transaction that pays"))?;
    let u = asset.userdata.clone().unwrap_or_default();
    let (terms, quoted) = terms_of(kind, &u, model.n_positions)?;
    let salt = u.salt.ok_or_else(|| {
        invalid(
            "userdata.salt",
            "32 random bytes (0x-hex) that you keep: results name your data only salted with them",
        )
    })?;
    let dataset = match (kind, &u.dataset) {
        (JobKind::Infer, None) => None,
        (JobKind::Infer, Some(_)) => {
            return Err(invalid("userdata.dataset", "infer jobs take no dataset"));
        }
        (_, None) => {
            return Err(invalid(
                "userdata.dataset",
                format!("a {kind} job needs its dataset text"),
            ));
        }
        (_, Some(text)) => Some(Spooled::from_bytes(&deps.cfg.spool_dir(), text.as_bytes()).await?),
    };
    let req = JobRequest {
        model: model.card.nft.clone(),
        order_tx,
        consumer: lower(consumer),
        params: terms.params,
        dataset_sha256: dataset.as_ref().map(Spooled::sha256),
        salt,
        nonce: ledger_nonce,
        // Freshness is the nonce's (checked above); submit_signed reads no expiry.
        expires_at: now_secs(),
        quoted_dataset_bytes: quoted,
    };
    let submitted = jobs::submit_signed(deps, signer, &req, dataset).await?;
    let job = find_job(deps, &submitted.job_id).await?;
    Ok(json!([compute_job(deps, &job).await?]))
}

/// `GET /api/ocean/compute`: the consumer's jobs (one, with `jobId`), as Ocean `ComputeJob`s;
/// `agreementId` (the order transaction) narrows them.
pub async fn compute_status(
    deps: &Deps,
    consumer: &str,
    job_id: Option<&str>,
    agreement_id: Option<&str>,
) -> Result<Value, ApiError> {
    let owner = lower(auth::parse_address("consumerAddress", consumer)?);
    let jobs: Vec<JobRecord> = match job_id.filter(|j| !j.is_empty()) {
        Some(id) => vec![find_job(deps, id).await?],
        None => {
            let page = crate::catalogue::MAX_PAGE;
            deps.catalogue.jobs_of_consumer(&owner, None, page).await?.items
        }
    };
    let mut out = Vec::new();
    for j in jobs.iter().filter(|j| j.consumer == owner) {
        if agreement_id.is_some_and(|a| !a.eq_ignore_ascii_case(&j.order_tx)) {
            continue;
        }
        out.push(compute_job(deps, j).await?);
    }
    Ok(Value::Array(out))
}

/// The public outputs served as results, by their fixed index (`progress.json` is live state,
/// shown in the status, not a result).
fn result_files() -> impl Iterator<Item = (usize, &'static str)> {
    keys::PUBLIC_OUTPUTS.into_iter().filter(|n| *n != "progress.json").enumerate()
}

/// A job as Ocean's `ComputeJob`, our job view alongside.
async fn compute_job(deps: &Deps, j: &JobRecord) -> Result<Value, ApiError> {
    let view = jobs::job_status(deps, &j.job_id).await?;
    let (status, text) = match &view.state {
        JobStateView::Queued => (0, "Job started".to_string()),
        JobStateView::Running => (40, "Running algorithm".to_string()),
        JobStateView::Succeeded if !view.completed => (60, "Publishing results".to_string()),
        JobStateView::Succeeded => (70, "Job finished".to_string()),
        JobStateView::Failed { reason, .. } => (41, format!("Algorithm failed: {reason}")),
    };
    let finished = matches!(view.state, JobStateView::Succeeded | JobStateView::Failed { .. });
    let mut results = Vec::new();
    if finished {
        for (index, name) in result_files() {
            let key = format!("{}/{name}", j.spec.public_prefix);
            if deps.store.head(&key).await?.is_some() {
                results.push(json!({ "filename": name, "type": "output", "index": index }));
            }
        }
    }
    let did = ddo::did(auth::parse_address("model", &j.model)?, deps.chain.book().chain_id);
    Ok(json!({
        "owner": j.consumer,
        "did": did,
        "jobId": j.job_id,
        "dateCreated": j.created_at.to_string(),
        "dateFinished": finished.then(|| j.updated_at.to_string()),
        "status": status,
        "statusText": text,
        "results": results,
        "inputDID": [did],
        "agreementId": j.order_tx,
        "expireTimestamp": j.created_at + ddo::SERVICE_TIMEOUT_SECS,
        "posthuman": view,
    }))
}

pub use posthuman_types::ocean::ResultQuery;

/// `GET /api/ocean/computeResult`: one public output of a job, byte for byte, to its buyer
/// (signed the Ocean way, with a fresh nonce that this read spends).
pub async fn compute_result(deps: &Deps, q: &ResultQuery) -> Result<Bytes, ApiError> {
    let ledger_nonce = auth::check_ocean_nonce(&q.nonce, now_micros())?;
    let signer =
        auth::recover_ocean(&q.consumer_address, &q.nonce, GET_COMPUTE_RESULT, &q.signature)?;
    auth::require_signer(&auth::parse_address("consumerAddress", &q.consumer_address)?, &signer)?;
    let j = find_job(deps, &q.job_id).await?;
    if lower(signer) != j.consumer {
        return Err(ApiError::Forbidden("only the buyer of a job may read its results".into()));
    }
    if !deps.catalogue.use_nonce(&lower(signer), &ledger_nonce).await? {
        return Err(ApiError::Conflict("nonce already used (replayed request)".into()));
    }
    let name = result_files().find(|(i, _)| *i == q.index).map(|(_, n)| n).ok_or_else(|| {
        ApiError::not_found(format!("result {} (see the job's results)", q.index))
    })?;
    public_output(deps, &j, name).await?.ok_or_else(|| {
        ApiError::not_found(format!("result {} of job {} (not written)", q.index, j.job_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_did_index_scans_at_most_once_per_rescan_period() {
        let ix = DidIndex::default();
        assert!(ix.may_scan(), "the first miss scans");
        assert!(!ix.may_scan(), "a second miss right after does not");
        ix.learn([("did:op:1".to_string(), "0xabc".to_string())]);
        assert_eq!(ix.get("did:op:1").as_deref(), Some("0xabc"));
        assert_eq!(ix.get("did:op:2"), None);
        *ix.scanned.lock().unwrap() = Some(std::time::Instant::now() - DidIndex::RESCAN);
        assert!(ix.may_scan(), "once the period is over, again");
    }

    #[test]
    fn userdata_terms_follow_the_service() {
        let infer = posthuman_types::JobParams::Infer(posthuman_types::InferParams {
            prompts: vec!["hi".into()],
            max_new_tokens: 4,
            sampling: Default::default(),
            stop: vec![],
            messages: vec![],
        });
        let u = Userdata { params: Some(infer.clone()), ..Default::default() };
        let (t, quoted) = terms_of(JobKind::Infer, &u, 64).unwrap();
        assert_eq!((t.params, t.dataset_bytes, quoted), (infer, 0, None));
        assert!(matches!(terms_of(JobKind::Train, &u, 64), Err(ApiError::Invalid { .. })));
        // No params: the storefront's default terms, their dataset length as the quoted one.
        let (t, quoted) = terms_of(JobKind::Evaluate, &Userdata::default(), 64).unwrap();
        assert_eq!(t, QuoteTerms::default_for(JobKind::Evaluate, 64));
        assert_eq!(quoted, Some(t.dataset_bytes));
        let sent = Userdata { dataset: Some("abc".into()), ..Default::default() };
        let eval = QuoteTerms::default_for(JobKind::Evaluate, 64).params;
        let (t, quoted) =
            terms_of(JobKind::Evaluate, &Userdata { params: Some(eval), ..sent }, 64).unwrap();
        assert_eq!((t.dataset_bytes, quoted), (3, None), "priced for the dataset sent");
    }
}
