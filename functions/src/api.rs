//! The one axum router, used by the embedded server and (through `lambda_http`) by Lambda.
//!
//! Extractors here turn HTTP into the handlers' typed inputs (multipart parts with their size
//! caps, file parts spooled to disk as they arrive, path and query values, signature
//! headers); [`ApiError`] turns failures back into a
//! status and a JSON body. The route table [`routes`] is the single list the router is built
//! from and the OpenAPI document is generated from ([`crate::openapi`]): each handler's
//! `#[utoipa::path]` names its method, path, parameters, body and statuses.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use bytes::{Bytes, BytesMut};
use posthuman_types::JobKind;
use posthuman_types::card::CardEdit;
use posthuman_types::publishes::{PublishAccepted, PublishView};
use posthuman_types::requests::{FeatureRequest, JobRequest, PublishRequest};
use posthuman_types::views::{
    ErrorBody, Health, JobResult, JobView, ModelView, PricingView, Quote, QuoteTerms, SubmittedView,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::catalogue::{Cursor, DEFAULT_PAGE, MAX_PAGE};
use crate::deps::Deps;
use crate::error::ApiError;
use crate::handlers::views::Paged;
use crate::handlers::{jobs, lists, models, ocean};
use crate::openapi::{PublishForm, RouteDoc, SubmitForm, route_doc};
use crate::spool::{SpoolWriter, Spooled};
use crate::uploads::{
    self, Fetched, Keep, UploadGrant, UploadLimits, UploadPurpose, UploadRequest,
};

/// The OpenAPI description served at `/api/openapi.json`: the committed `openapi.json`, which
/// `tests/openapi.rs` keeps equal to [`crate::openapi::document`] (served as a constant, so
/// a cold start does not generate it).
pub const OPENAPI: &str = include_str!("../openapi.json");

type Shared = Arc<Deps>;

/// The routes that take file uploads (multipart, or a direct upload's PUT): they get upload
/// slots and a body deadline.
const UPLOAD_ROUTES: [(Method, &str); 3] = [
    (Method::POST, "/api/models"),
    (Method::POST, "/api/jobs"),
    (Method::PUT, "/api/uploads/{upload_id}/{file}"),
];

/// One route: its method and path (axum's syntax, which is OpenAPI's), its handler, and its
/// OpenAPI operation.
pub struct Route {
    pub method: Method,
    pub path: String,
    pub handler: MethodRouter<Shared>,
    /// The operation and the schemas it names ([`crate::openapi::document`]).
    pub doc: RouteDoc,
}

/// The route of `handler`, whose `#[utoipa::path]` generated `P` (the value `__path_<fn>`):
/// the method and path are read from that attribute, so they are written once.
fn route<P, H, T>(_: P, handler: H) -> Route
where
    P: utoipa::Path + utoipa::__dev::SchemaReferences,
    H: axum::handler::Handler<T, Shared>,
    T: 'static,
{
    use utoipa::openapi::HttpMethod as M;
    // One match gives both forms: the method the document states and axum's filter.
    let (method, filter) = match P::methods().as_slice() {
        [M::Get] => (Method::GET, MethodFilter::GET),
        [M::Post] => (Method::POST, MethodFilter::POST),
        [M::Put] => (Method::PUT, MethodFilter::PUT),
        [M::Delete] => (Method::DELETE, MethodFilter::DELETE),
        [M::Patch] => (Method::PATCH, MethodFilter::PATCH),
        _ => panic!("route {}: one method of GET, POST, PUT, DELETE, PATCH", P::path()),
    };
    Route {
        method,
        path: P::path(),
        handler: axum::routing::on(filter, handler),
        doc: route_doc::<P>,
    }
}

/// Every route, in the order the OpenAPI document lists them.
pub fn routes() -> Vec<Route> {
    vec![
        route(__path_health, health),
        route(__path_openapi, openapi),
        route(__path_chain_info, chain_info),
        route(__path_pricing, pricing),
        route(__path_ocean_address_file, ocean_address_file),
        route(__path_list_models, list_models),
        route(__path_publish_model, publish_model),
        route(__path_publish_status, publish_status),
        route(__path_get_model, get_model),
        route(__path_quote_default, quote_default),
        route(__path_quote, quote),
        route(__path_feature_evaluations, feature_evaluations),
        route(__path_edit_card, edit_card),
        route(__path_sync_sale, sync_sale),
        route(__path_submit_job, submit_job),
        route(__path_upload_limits, upload_limits),
        route(__path_create_upload, create_upload),
        route(__path_put_upload, put_upload),
        route(__path_list_jobs, list_jobs),
        route(__path_job_status, job_status),
        route(__path_job_result, job_result),
        route(__path_job_receipt, job_receipt),
        // The Ocean Provider facade (handlers::ocean): ocean.js's ProviderInstance.
        route(__path_ocean_root, ocean_root),
        route(__path_ocean_nonce, ocean_nonce),
        route(__path_ocean_environments, ocean_environments),
        route(__path_ocean_initialize_compute, ocean_initialize_compute),
        route(__path_ocean_compute_start, ocean_compute_start),
        route(__path_ocean_compute_status, ocean_compute_status),
        route(__path_ocean_compute_result, ocean_compute_result),
    ]
}

/// The API router. With `static_dir`, paths outside the API serve the SPA's files (and its
/// `index.html` for client-side routes); without, they answer a JSON 404.
pub fn router(deps: Shared, static_dir: Option<&std::path::Path>) -> Router {
    let limits = &deps.cfg.limits;
    let limit = limits.max_body_bytes();
    // Uploads share a fixed number of slots and a deadline for their body.
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_uploads.max(1)));
    let body_deadline = std::time::Duration::from_secs(limits.upload_timeout_secs.max(1));
    let mut r: Router<Shared> = Router::new();
    for Route { method, path, handler, .. } in routes() {
        let handler = if UPLOAD_ROUTES.iter().any(|(m, p)| *m == method && *p == path) {
            handler
                .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_deadline))
                .layer(axum::middleware::from_fn_with_state(slots.clone(), upload_slot))
        } else {
            handler
        };
        r = r.route(&path, handler);
    }
    let r = match static_dir {
        Some(dir) => {
            let spa = tower_http::services::ServeDir::new(dir)
                .fallback(tower_http::services::ServeFile::new(dir.join("index.html")));
            r.route("/api/{*rest}", axum::routing::any(no_route)).fallback_service(spa)
        }
        None => r.fallback(no_route),
    };
    r.layer(DefaultBodyLimit::max(limit)).with_state(deps)
}

async fn no_route() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(ErrorBody { error: "no_route".into(), message: "no such API route".into() }),
    )
        .into_response()
}

/// Liveness: the server is up, and its version.
#[utoipa::path(
    get, path = "/api/health",
    responses((status = 200, description = "Up.", body = Health))
)]
async fn health() -> Json<Health> {
    Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
}

/// The chain (RPC endpoint) and the deployment's address book (Ocean v4 contracts,
/// ModelLineage, PeerMarket), for clients that send their own transactions.
#[utoipa::path(
    get, path = "/api/chain",
    responses((status = 200, description = "Where the chain is and what is deployed on it.", body = models::ChainInfo))
)]
async fn chain_info(State(d): State<Shared>) -> Json<models::ChainInfo> {
    Json(models::chain_info(&d))
}

/// The deployment in the format of Ocean's own `address.json`.
///
/// For ocean.js's `ConfigHelper` (`ADDRESS_FILE`): Ocean's contracts under Ocean's key names,
/// plus ModelLineage and PeerMarket, under Ocean's network name for the chain id
/// (`development` for a local chain) — see `AddressBook::ocean_address_file`.
#[utoipa::path(
    get, path = "/api/ocean/address.json",
    responses((status = 200, description = "One network's addresses (`@oceanprotocol/contracts` `addresses/address.json` shape).", body = Object))
)]
async fn ocean_address_file(State(d): State<Shared>) -> Json<serde_json::Value> {
    Json(d.chain.book().ocean_address_file())
}

/// The operator's published rates (OCEAN base units as decimal strings) and the formulas
/// every quote applies.
#[utoipa::path(
    get, path = "/api/pricing",
    responses((status = 200, description = "Rates and formulas.", body = PricingView))
)]
async fn pricing(State(d): State<Shared>) -> Json<PricingView> {
    Json(crate::handlers::pricing::pricing_view(&d))
}

/// This document (OpenAPI 3.1, JSON).
#[utoipa::path(
    get, path = "/api/openapi.json",
    responses((status = 200, description = "This document.", content_type = "application/json"))
)]
async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The parts every upload signs: they come first, and are small.
const SIGNED_PARTS: [&str; 2] = ["request", "signature"];

/// An upload part as read.
enum Part {
    Memory(Bytes),
    Spooled(Spooled),
}

/// Reads an upload's multipart parts named in `caps`, each bounded while streaming; any other
/// part, a repeated part or a part over its cap is a 4xx before anything is stored. The
/// signed parts ([`SIGNED_PARTS`]) must come first: once both are read, `may_upload` decides
/// from them whether the sender may upload at all, before any file part is read — so a
/// forged or unauthorised upload costs the server its first few kilobytes, not its files.
/// File parts ([`Keep::Spool`]) go to disk chunk by chunk in `spool_dir`, so an honest
/// upload costs a chunk of memory, not its size; their files are removed when the parts are
/// dropped, on success or any error.
async fn read_parts(
    mut mp: Multipart,
    caps: &[(&str, u64, Keep)],
    spool_dir: &std::path::Path,
    may_upload: impl AsyncFnOnce(Bytes, String) -> Result<(), ApiError>,
) -> Result<HashMap<String, Part>, ApiError> {
    let mut out: HashMap<String, Part> = HashMap::new();
    let mut may_upload = Some(may_upload);
    loop {
        let mut field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_err(e)),
        };
        let name = field.name().unwrap_or_default().to_string();
        let Some(&(_, cap, keep)) = caps.iter().find(|(n, _, _)| *n == name) else {
            return Err(ApiError::bad(format!(
                "unexpected part {:?}",
                name.chars().take(32).collect::<String>()
            )));
        };
        if out.contains_key(&name) {
            return Err(ApiError::bad(format!("part {name:?} appears twice")));
        }
        if !SIGNED_PARTS.contains(&name.as_str())
            && let Some(check) = may_upload.take()
        {
            let (request, signature) = signed_parts(&out)?;
            check(request, signature).await?;
        }
        let too_large = || ApiError::TooLarge { what: format!("part {name:?}"), limit: cap };
        let part = match keep {
            Keep::Memory => {
                let mut buf = BytesMut::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_err)? {
                    if (buf.len() + chunk.len()) as u64 > cap {
                        return Err(too_large());
                    }
                    buf.extend_from_slice(&chunk);
                }
                Part::Memory(buf.freeze())
            }
            Keep::Spool => {
                let mut file = SpoolWriter::create(spool_dir).await?;
                while let Some(chunk) = field.chunk().await.map_err(multipart_err)? {
                    if file.len() + chunk.len() as u64 > cap {
                        return Err(too_large());
                    }
                    file.write(&chunk).await?;
                }
                Part::Spooled(file.finish().await?)
            }
        };
        out.insert(name, part);
    }
    // An upload without file parts (an infer job) is checked here.
    if let Some(check) = may_upload.take() {
        let (request, signature) = signed_parts(&out)?;
        check(request, signature).await?;
    }
    Ok(out)
}

/// The signed parts read so far, or a 400 if a file part came before them.
fn signed_parts(out: &HashMap<String, Part>) -> Result<(Bytes, String), ApiError> {
    let missing = || {
        ApiError::bad("the \"request\" and \"signature\" parts must come first, before any file")
    };
    let in_memory = |name: &str| match out.get(name) {
        Some(Part::Memory(b)) => Some(b.clone()),
        _ => None,
    };
    let request = in_memory("request").ok_or_else(missing)?;
    let signature = in_memory("signature").ok_or_else(missing)?;
    Ok((request, text(signature, "signature")?))
}

/// Admits an upload if one of the router's upload slots is free; otherwise a 503 at once, so
/// a flood of uploads neither queues up memory nor holds back the other routes.
async fn upload_slot(
    State(slots): State<Arc<tokio::sync::Semaphore>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match slots.try_acquire_owned() {
        Ok(permit) => {
            let resp = next.run(req).await;
            drop(permit);
            resp
        }
        Err(_) => {
            ApiError::unavailable("upload capacity", "every upload slot is busy").into_response()
        }
    }
}

fn multipart_err(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge { what: "request body".into(), limit: 0 }
    } else {
        ApiError::bad(format!("malformed multipart body: {}", e.body_text()))
    }
}

fn take(parts: &mut HashMap<String, Part>, name: &str) -> Result<Bytes, ApiError> {
    match parts.remove(name) {
        Some(Part::Memory(b)) => Ok(b),
        _ => Err(ApiError::bad(format!("missing part {name:?}"))),
    }
}

fn take_file(parts: &mut HashMap<String, Part>, name: &str) -> Option<Spooled> {
    match parts.remove(name) {
        Some(Part::Spooled(f)) => Some(f),
        _ => None,
    }
}

fn text(b: Bytes, name: &str) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| ApiError::bad(format!("part {name:?} is not UTF-8")))
}

fn multipart(
    r: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Multipart, ApiError> {
    r.map_err(|e| ApiError::bad(format!("expected multipart/form-data: {}", e.body_text())))
}

/// Whether a publish or submit is the JSON form (the signed request as the body, the
/// signature and the upload id in headers) rather than multipart.
fn is_json(req: &axum::extract::Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// The JSON form's signed request (the body, up to its cap), signature and upload id.
async fn signed_json(
    d: &Deps,
    req: axum::extract::Request,
) -> Result<(Bytes, String, Option<String>), ApiError> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts.headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string())
    };
    let signature = header(SIGNATURE_HEADER)
        .ok_or_else(|| ApiError::Unauthorized(format!("missing header {SIGNATURE_HEADER}")))?;
    let cap = d.cfg.limits.max_request_bytes;
    let request = axum::body::to_bytes(body, usize::try_from(cap).unwrap_or(usize::MAX))
        .await
        .map_err(|_| ApiError::TooLarge { what: "request body".into(), limit: cap })?;
    Ok((request, signature, header(uploads::UPLOAD_HEADER)))
}

/// Runs `use_files` on a claimed upload's files, then consumes the upload if it succeeded
/// or releases it for another try if not.
async fn with_upload<T>(
    d: &Deps,
    claimed: uploads::Claimed,
    use_files: impl AsyncFnOnce(std::collections::BTreeMap<String, Fetched>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let r = match claimed.fetch(d).await {
        Ok(files) => use_files(files).await,
        Err(e) => Err(e),
    };
    claimed.finish(d, r.is_ok()).await;
    r
}

use crate::uploads::fetched_file;

/// `POST /api/models` with the files staged by a direct upload ([`crate::uploads`]): checked
/// cheaply and accepted; the work runs in the background ([`crate::publishes`]).
async fn publish_uploaded(
    d: &Shared,
    req: axum::extract::Request,
) -> Result<PublishAccepted, ApiError> {
    let (request, signature, upload) = signed_json(d, req).await?;
    let upload = upload.ok_or_else(|| {
        ApiError::bad(format!(
            "a JSON publish names its files' upload in {}",
            uploads::UPLOAD_HEADER
        ))
    })?;
    crate::handlers::precheck::may_publish(d, &request, &signature).await?;
    crate::publishes::accept(d, request, signature, upload).await
}

/// Publish a root model (allowed publishers only).
///
/// The weights go to the private store; the asset (data NFT + datatoken + weights commitment
/// + fixed-rate exchange) is created on chain and registered as a lineage root with its
/// reward scheme. Two forms: multipart (the signed parts first, then the files; synchronous:
/// 201 with the model), or JSON (the signed request as the body, its files from a direct
/// upload named in `x-posthuman-upload`; asynchronous: the request, the upload and the signed
/// hashes are checked, then 202 with a publish id, and `GET /api/publishes/{publish_id}`
/// reports the work's progress and its end: the model, or the error this route would have
/// answered). At most 2 publishes per owner are in flight; one more is a 429.
///
/// Errors naming a direct upload (JSON form): 404 `upload_unknown` (no such upload), 410
/// `upload_expired`, 403 `upload_foreign` (staged by another account), 409 `upload_used`
/// (already used by a successful request, or in use), 422 `upload_purpose` (staged for the
/// other route), 409 `upload_missing` (a declared file has not arrived), 422
/// `upload_mismatch` (a staged file's length or SHA-256 is not the declared one). A failed
/// request releases its upload for another try; a successful one consumes it.
#[utoipa::path(
    post, path = "/api/models", params(JsonFormHeaders),
    request_body(content(
        (PublishForm = "multipart/form-data"),
        (PublishRequest = "application/json"),
    )),
    responses(
        (status = 201, description = "Published (multipart form): the model's card.", body = ModelView),
        (status = 202, description = "Accepted (JSON form): the work runs in the background; poll `status_url`.", body = PublishAccepted),
        (status = 400, description = "`bad_request`: malformed body, part or JSON; a file part before the signed ones."),
        (status = 401, description = "`unauthorized`: the signature is missing, malformed, expired, or not the owner's."),
        (status = 403, description = "`forbidden`: not an allowed publisher; `upload_foreign`."),
        (status = 404, description = "`upload_unknown`."),
        (status = 409, description = "`conflict`: the nonce was used; `upload_used`, `upload_missing`."),
        (status = 410, description = "`upload_expired`."),
        (status = 413, description = "`too_large`: a part over its cap."),
        (status = 422, description = "`invalid`: a field out of bounds (config, scheme, price, names); the files do not match the signed hashes; `upload_purpose`, `upload_mismatch`."),
        (status = 429, description = "`too_many_requests` (JSON form): the owner has 2 publishes in flight; wait for one to end."),
        (status = 503, description = "`unavailable`: every upload slot is busy, or a backend (chain, store, publish function); retry later."),
    )
)]
async fn publish_model(State(d): State<Shared>, req: axum::extract::Request) -> Response {
    use axum::extract::FromRequest;
    if is_json(&req) {
        return match publish_uploaded(&d, req).await {
            Ok(a) => (StatusCode::ACCEPTED, Json(a)).into_response(),
            Err(e) => e.into_response(),
        };
    }
    match publish_multipart(&d, Multipart::from_request(req, &d).await).await {
        Ok(m) => (StatusCode::CREATED, Json(m)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// An asynchronous publish's status: its phase and progress while it runs, then the model's
/// card, or the error (HTTP status, code and message) the synchronous publish would have
/// answered. A publish still running past its deadline (its worker stopped) reads as failed,
/// `timed_out`; nothing it had not finished is listed.
#[utoipa::path(
    get, path = "/api/publishes/{publish_id}", params(("publish_id" = String, Path, description = "The publish id (as `POST /api/models` answered).")),
    responses(
        (status = 200, description = "The publish.", body = PublishView),
        (status = 404, description = "`not_found`: no such publish."),
        (status = 503, description = "`unavailable`: the store; retry later."),
    )
)]
async fn publish_status(
    State(d): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<PublishView>, ApiError> {
    Ok(Json(crate::publishes::status(&d, &id).await?))
}

/// `POST /api/models`, multipart: the files in the body, published before the answer.
async fn publish_multipart(
    d: &Shared,
    mp: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<ModelView, ApiError> {
    let l = &d.cfg.limits;
    let mut caps =
        vec![("request", l.max_request_bytes, Keep::Memory), ("signature", 256, Keep::Memory)];
    caps.extend(uploads::publish_files(l));
    let may = async |request: Bytes, signature: String| {
        crate::handlers::precheck::may_publish(d, &request, &signature).await
    };
    let mut p = read_parts(multipart(mp)?, &caps, &d.cfg.spool_dir(), may).await?;
    let up = models::PublishUpload {
        request: take(&mut p, "request")?,
        signature: text(take(&mut p, "signature")?, "signature")?,
        config: take(&mut p, "config")?,
        weights: take_file(&mut p, "weights")
            .ok_or_else(|| ApiError::bad("missing part \"weights\""))?,
        tokenizer: take(&mut p, "tokenizer")?,
        adapter: match (p.remove("adapter_config"), take_file(&mut p, "adapter_weights")) {
            (Some(Part::Memory(c)), Some(w)) => Some((c, w)),
            (None, None) => None,
            _ => {
                return Err(ApiError::bad(
                    "an adapter needs both adapter_config and adapter_weights",
                ));
            }
        },
        tokenizer_config: take(&mut p, "tokenizer_config").ok(),
        generation_config: take(&mut p, "generation_config").ok(),
        chat_template: take(&mut p, "chat_template").ok(),
    };
    models::publish_model(d, up).await
}

/// The response header naming the next page's cursor (absent on the last page).
pub const NEXT_CURSOR_HEADER: &str = "x-posthuman-next-cursor";

/// `limit` and `cursor` of a list request: both optional, both checked (a 400 otherwise).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Records per page (1..=200, default 50); anything else is a 400.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Opaque: the `x-posthuman-next-cursor` header of the previous page; one this API did not
    /// hand out is a 400.
    cursor: Option<String>,
}

impl PageQuery {
    fn parse(&self) -> Result<(Option<Cursor>, usize), ApiError> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_PAGE,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => return Err(ApiError::bad(format!("limit must be 1..={MAX_PAGE}"))),
            },
        };
        let cursor = match self.cursor.as_deref() {
            None => None,
            Some(c) => Some(Cursor::decode(c).ok_or_else(|| {
                ApiError::bad("cursor is not one this API handed out (take it from the x-posthuman-next-cursor header)")
            })?),
        };
        Ok((cursor, limit))
    }
}

/// A page as the body (a JSON array) and the next cursor as a header.
fn paged<T: serde::Serialize>(p: Paged<T>) -> Response {
    let mut r = Json(p.items).into_response();
    if let Some(next) = p.next.and_then(|n| axum::http::HeaderValue::from_str(&n).ok()) {
        r.headers_mut().insert(NEXT_CURSOR_HEADER, next);
    }
    r
}

/// The catalogue, one page, oldest first.
///
/// Models with metadata, price, lineage, evaluations, receipts and job counts (never weights
/// or storage keys). The body is a JSON array; follow `x-posthuman-next-cursor` for more.
#[utoipa::path(
    get, path = "/api/models", params(PageQuery),
    responses(
        (status = 200, description = "One page of models.", body = Vec<ModelView>, headers(
            ("x-posthuman-next-cursor" = String, description = "The cursor of the next page; absent on the last page.")
        )),
        (status = 400, description = "`bad_request`: a limit or cursor this API does not take."),
        (status = 503, description = "`unavailable`: the catalogue; retry later."),
    )
)]
async fn list_models(
    State(d): State<Shared>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let (after, limit) = q.parse()?;
    Ok(paged(models::list_models(&d, after.as_ref(), limit).await?))
}

/// The model's owner features buyers' evaluations on its card.
///
/// The owner is a root's owner, or a derived model's trainer. Featured evaluations are listed
/// first and marked endorsed; the list replaces the previous one (empty: nothing featured).
#[utoipa::path(
    post, path = "/api/models/{nft}/featured", params(("nft" = String, Path, description = "The model's data NFT address (0x…)."), SignatureHeader),
    request_body = FeatureRequest,
    responses(
        (status = 200, description = "The model's card.", body = ModelView),
        (status = 400, description = "`bad_request`: not the request's JSON."),
        (status = 401, description = "`unauthorized`: the signature is missing, malformed or expired."),
        (status = 403, description = "`forbidden`: the signer is not the model's owner."),
        (status = 404, description = "`not_found`: no such model."),
        (status = 409, description = "`conflict`: the nonce was used."),
        (status = 422, description = "`invalid`: more than 16 jobs, a job twice, or one that is not a succeeded evaluation of this model."),
        (status = 503, description = "`unavailable`: the catalogue; retry later."),
    )
)]
async fn feature_evaluations(
    State(d): State<Shared>,
    Path(nft): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ModelView>, ApiError> {
    let sig = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized(format!("missing header {SIGNATURE_HEADER}")))?;
    Ok(Json(crate::handlers::featured::feature_evaluations(&d, &nft, &body, sig).await?))
}

/// The model's owner of record edits its card.
///
/// A root's publisher or a derived model's trainer changes the description and the tags they
/// add; a root's publisher also its licence (a derived model keeps its root's: naming another
/// is a 422 on `license`). The name and symbol live in the NFT and datatoken; hashes and
/// lineage are not editable. The catalogue card changes and the model's Ocean DDO is set again on chain
/// (`setMetaData` through the NFT's holder for a root, `ModelLineage.setChildMetaData` for a
/// derived model: the NFT emits `MetadataUpdated`, `created` kept, `updated` the edit's time).
/// An edit that changes nothing sends no transaction; one after a failed DDO update sends it
/// again.
#[utoipa::path(
    post, path = "/api/models/{nft}/card", params(("nft" = String, Path, description = "The model's data NFT address (0x…)."), SignatureHeader),
    request_body = CardEdit,
    responses(
        (status = 200, description = "The model's card.", body = ModelView),
        (status = 400, description = "`bad_request`: not the edit's JSON (unknown fields are refused)."),
        (status = 401, description = "`unauthorized`: the signature is missing, malformed or expired."),
        (status = 403, description = "`forbidden`: the signer is not the model's owner of record."),
        (status = 404, description = "`not_found`: no such model."),
        (status = 409, description = "`conflict`: the nonce was used."),
        (status = 413, description = "`too_large`: the body over the signed-request cap."),
        (status = 422, description = "`invalid`: a field out of its bounds, or one that is not editable (the message names it)."),
        (status = 503, description = "`unavailable`: chain or catalogue; retry later."),
    )
)]
async fn edit_card(
    State(d): State<Shared>,
    Path(nft): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<ModelView>, ApiError> {
    let sig = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized(format!("missing header {SIGNATURE_HEADER}")))?;
    // Read up to the signed-request cap, not the uploads' limit the router allows.
    let cap = d.cfg.limits.max_request_bytes;
    let body = axum::body::to_bytes(body, usize::try_from(cap).unwrap_or(usize::MAX))
        .await
        .map_err(|_| ApiError::TooLarge { what: "request body".into(), limit: cap })?;
    Ok(Json(crate::handlers::card::edit_card(&d, &nft, &body, sig).await?))
}

/// Syncs a derived model's card with its sale on Ocean's FixedRateExchange.
///
/// Its trainer opens or closes the sale on chain (`ModelLineage.openSale` / `closeSale`); no
/// body, nothing signed: the API reads the exchange.
#[utoipa::path(
    post, path = "/api/models/{nft}/sale", params(("nft" = String, Path, description = "The model's data NFT address (0x…).")),
    responses(
        (status = 200, description = "The model's card, with `exchange_id` and `price` while the sale is open.", body = ModelView),
        (status = 404, description = "`not_found`: no such model."),
        (status = 409, description = "`conflict`: a root model (its sale is set at publication)."),
        (status = 503, description = "`unavailable`: chain or catalogue; retry later."),
    )
)]
async fn sync_sale(
    State(d): State<Shared>,
    Path(nft): Path<String>,
) -> Result<Json<ModelView>, ApiError> {
    Ok(Json(crate::handlers::sale::sync_sale(&d, &nft).await?))
}

/// One model's card.
#[utoipa::path(
    get, path = "/api/models/{nft}", params(("nft" = String, Path, description = "The model's data NFT address (0x…).")),
    responses(
        (status = 200, description = "The model.", body = ModelView),
        (status = 404, description = "`not_found`: no such model."),
        (status = 503, description = "`unavailable`: the catalogue; retry later."),
    )
)]
async fn get_model(
    State(d): State<Shared>,
    Path(nft): Path<String>,
) -> Result<Json<ModelView>, ApiError> {
    Ok(Json(models::get_model(&d, &nft).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct QuoteQuery {
    /// The job kind whose default terms to quote (default `train`).
    #[param(value_type = Option<JobKind>)]
    kind: Option<String>,
}

fn parse_kind(s: Option<&str>) -> Result<JobKind, ApiError> {
    match s.unwrap_or("train") {
        "train" => Ok(JobKind::Train),
        "infer" => Ok(JobKind::Infer),
        "evaluate" => Ok(JobKind::Evaluate),
        _ => Err(ApiError::Invalid {
            field: "kind".into(),
            reason: "train, infer or evaluate".into(),
        }),
    }
}

/// The quote for a kind's default terms (the storefront's price list); its fee pays for
/// exactly those terms.
#[utoipa::path(
    get, path = "/api/models/{nft}/quote", params(("nft" = String, Path, description = "The model's data NFT address (0x…)."), QuoteQuery),
    responses(
        (status = 200, description = "The quote.", body = Quote),
        (status = 400, description = "`bad_request`: a malformed query."),
        (status = 404, description = "`not_found`: no such model."),
        (status = 422, description = "`invalid`: `kind` is not train, infer or evaluate."),
        (status = 503, description = "`unavailable`: chain or catalogue; retry later."),
    )
)]
async fn quote_default(
    State(d): State<Shared>,
    Path(nft): Path<String>,
    q: Result<Query<QuoteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Quote>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let kind = parse_kind(q.kind.as_deref())?;
    Ok(Json(models::quote_default(&d, &nft, kind).await?))
}

/// Price a job's terms by their compute.
///
/// Tokens, FLOPs and checkpoint bytes at the operator's rates; the operator-signed provider
/// fee (OCEAN, the total) binds chain, deployment, model, kind and the terms' hash.
#[utoipa::path(
    post, path = "/api/models/{nft}/quote", params(("nft" = String, Path, description = "The model's data NFT address (0x…).")),
    request_body = QuoteTerms,
    responses(
        (status = 200, description = "The quote.", body = Quote),
        (status = 400, description = "`bad_request`: not the terms' JSON (unknown fields are refused)."),
        (status = 404, description = "`not_found`: no such model."),
        (status = 422, description = "`invalid`: parameters out of bounds for this model."),
        (status = 503, description = "`unavailable`: chain or catalogue; retry later."),
    )
)]
async fn quote(
    State(d): State<Shared>,
    Path(nft): Path<String>,
    body: Result<Json<QuoteTerms>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Quote>, ApiError> {
    let Json(terms) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    Ok(Json(models::quote(&d, &nft, terms).await?))
}

/// `POST /api/jobs` in the JSON form: the dataset, if any, from a direct upload.
async fn submit_uploaded(d: &Deps, req: axum::extract::Request) -> Result<SubmittedView, ApiError> {
    let (request, signature, upload) = signed_json(d, req).await?;
    crate::handlers::precheck::may_submit(d, &request, &signature).await?;
    let Some(upload) = upload else {
        let up = jobs::JobUpload { request, signature, dataset: None };
        return jobs::submit_job(d, up).await;
    };
    let signer = crate::auth::recover_request(
        &crate::auth::domain(d),
        posthuman_receipts::request::SUBMIT_JOB,
        &request,
        &signature,
    )?;
    let claimed = uploads::claim(d, &upload, signer, UploadPurpose::Dataset).await?;
    with_upload(d, claimed, async |mut f| {
        let up = jobs::JobUpload { request, signature, dataset: fetched_file(&mut f, "dataset") };
        jobs::submit_job(d, up).await
    })
    .await
}

/// Submit a paid job (train, infer, evaluate).
///
/// The order is checked on chain (exists, mined, right datatoken and service, consumer =
/// signer, provider fee ours and unexpired, never used) and claimed for this job exactly
/// once; then the job is queued. An order with fewer confirmations than `GET /api/chain`'s
/// `min_confirmations` (or not mined yet) is answered 425 `too_early`: nothing is claimed and
/// the nonce is not spent, so the same signed request is resent unchanged once the order is
/// deep enough. Two forms, as for a publish; errors naming a direct upload are those of
/// `POST /api/models`.
#[utoipa::path(
    post, path = "/api/jobs", params(JsonFormHeaders),
    request_body(content(
        (SubmitForm = "multipart/form-data"),
        (JobRequest = "application/json"),
    )),
    responses(
        (status = 202, description = "Queued: where to follow the job.", body = SubmittedView),
        (status = 400, description = "`bad_request`: malformed body, part or JSON; a file part before the signed ones."),
        (status = 401, description = "`unauthorized`: the signature is missing, malformed, expired, or not the consumer's."),
        (status = 402, description = "`payment_invalid`: the order does not pay for this job (the message names the failed check)."),
        (status = 403, description = "`upload_foreign`."),
        (status = 404, description = "`not_found`: no such model; `upload_unknown`."),
        (status = 409, description = "`conflict`: the nonce or the order was used; `upload_used`, `upload_missing`."),
        (status = 410, description = "`upload_expired`."),
        (status = 413, description = "`too_large`: the dataset over its cap."),
        (status = 422, description = "`invalid`: parameters out of bounds; the dataset does not match its signed hash; `upload_purpose`, `upload_mismatch`."),
        (status = 425, description = "`too_early`: the order is not final yet; resend unchanged later."),
        (status = 503, description = "`unavailable`: every upload slot is busy, or a backend (chain, queue, store); retry later."),
    )
)]
async fn submit_job(
    State(d): State<Shared>,
    req: axum::extract::Request,
) -> Result<(StatusCode, Json<SubmittedView>), ApiError> {
    use axum::extract::FromRequest;
    if is_json(&req) {
        return Ok((StatusCode::ACCEPTED, Json(submit_uploaded(&d, req).await?)));
    }
    let mp = Multipart::from_request(req, &d).await;
    let l = &d.cfg.limits;
    let mut caps =
        vec![("request", l.max_request_bytes, Keep::Memory), ("signature", 256, Keep::Memory)];
    caps.extend(uploads::submit_files(l));
    let may = async |request: Bytes, signature: String| {
        crate::handlers::precheck::may_submit(&d, &request, &signature).await
    };
    let mut p = read_parts(multipart(mp)?, &caps, &d.cfg.spool_dir(), may).await?;
    let up = jobs::JobUpload {
        request: take(&mut p, "request")?,
        signature: text(take(&mut p, "signature")?, "signature")?,
        dataset: take_file(&mut p, "dataset"),
    };
    Ok((StatusCode::ACCEPTED, Json(jobs::submit_job(&d, up).await?)))
}

/// The files each upload purpose takes, and this deployment's caps on them.
///
/// A client refuses an oversize file before anything is signed.
#[utoipa::path(
    get, path = "/api/uploads",
    responses((status = 200, description = "The caps.", body = UploadLimits))
)]
async fn upload_limits(State(d): State<Shared>) -> Json<UploadLimits> {
    Json(uploads::upload_limits(&d.cfg))
}

/// Declare a direct upload.
///
/// Each file's name, exact length and SHA-256; answers where to PUT each (an S3 presigned URL
/// on AWS, this server's own upload route in the embedded default), signed for exactly that
/// length and content. The signed declaration is the body, its signature in a header.
#[utoipa::path(
    post, path = "/api/uploads", params(SignatureHeader),
    request_body = UploadRequest,
    responses(
        (status = 201, description = "Where to send each file.", body = UploadGrant),
        (status = 400, description = "`bad_request`: not the request's JSON."),
        (status = 401, description = "`unauthorized`: the signature is missing, malformed, expired, or not the owner's."),
        (status = 403, description = "`forbidden`: a model upload by someone who may not publish."),
        (status = 409, description = "`conflict`: the nonce was used."),
        (status = 413, description = "`too_large`: a declared file over its part's cap."),
        (status = 422, description = "`invalid`: no files, too many, a name the purpose does not take, or one twice."),
        (status = 503, description = "`unavailable`: the object store; retry later."),
    )
)]
async fn create_upload(
    State(d): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<UploadGrant>), ApiError> {
    let sig = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized(format!("missing header {SIGNATURE_HEADER}")))?;
    let cap = d.cfg.limits.max_request_bytes;
    let body = axum::body::to_bytes(body, usize::try_from(cap).unwrap_or(usize::MAX))
        .await
        .map_err(|_| ApiError::TooLarge { what: "request body".into(), limit: cap })?;
    Ok((StatusCode::CREATED, Json(uploads::create_upload(&d, &body, sig).await?)))
}

/// A direct upload's file, where this server hosts uploads itself.
///
/// The embedded default; on AWS the files go to S3 and this is a 404. Use the URL
/// `POST /api/uploads` answered, as is.
#[utoipa::path(
    put, path = "/api/uploads/{upload_id}/{file}",
    params(
        ("upload_id" = String, Path, description = "The upload."),
        ("file" = String, Path, description = "The declared file's name."),
        uploads::PutQuery,
    ),
    request_body(content = crate::openapi::Octets, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored."),
        (status = 403, description = "`upload_url_refused`: a token that does not match the URL, or an expired URL."),
        (status = 404, description = "`upload_unknown`; or this server does not host uploads (AWS)."),
        (status = 413, description = "`too_large`: a body over the declared length."),
        (status = 422, description = "`upload_mismatch`: a body longer or shorter than declared, or whose SHA-256 is not the declared one (nothing is stored)."),
        (status = 503, description = "`unavailable`: every upload slot is busy; retry later."),
    )
)]
async fn put_upload(
    State(d): State<Shared>,
    Path((upload_id, file)): Path<(String, String)>,
    q: Result<Query<uploads::PutQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::from(uploads::UploadError::BadToken(format!(
            "not an upload URL: {}",
            e.body_text()
        )))
    })?;
    d.uploads.receive(&upload_id, &file, &q, body).await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct JobsQuery {
    /// The buyer's 0x address.
    consumer: String,
    /// Records per page (1..=200, default 50); anything else is a 400.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Opaque: the `x-posthuman-next-cursor` header of the previous page; one this API did not
    /// hand out is a 400.
    cursor: Option<String>,
}

/// A buyer's jobs, one page, newest first.
///
/// Public job views as `GET /api/jobs/{job_id}`, except that a live job shows as running only
/// once its worker wrote progress (a list never asks the queue). The body is a JSON array;
/// follow `x-posthuman-next-cursor` for more.
#[utoipa::path(
    get, path = "/api/jobs", params(JobsQuery),
    responses(
        (status = 200, description = "One page of job views.", body = Vec<JobView>, headers(
            ("x-posthuman-next-cursor" = String, description = "The cursor of the next page; absent on the last page.")
        )),
        (status = 400, description = "`bad_request`: a missing or malformed consumer, limit or cursor."),
        (status = 503, description = "`unavailable`: the catalogue; retry later."),
    )
)]
async fn list_jobs(
    State(d): State<Shared>,
    q: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let (after, limit) = PageQuery { limit: q.limit, cursor: q.cursor }.parse()?;
    Ok(paged(lists::jobs_of(&d, &q.consumer, after.as_ref(), limit).await?))
}

/// A job's operator-signed EIP-712 receipt (public: hashes only), for anyone to verify
/// against the chain.
#[utoipa::path(
    get, path = "/api/jobs/{job_id}/receipt", params(("job_id" = String, Path, description = "The job id (as `POST /api/jobs` answered).")),
    responses(
        (status = 200, description = "The signed receipt: `{body, signer, domain, signature}`.", body = Object),
        (status = 404, description = "`not_found`: no such job, or no receipt yet."),
        (status = 503, description = "`unavailable`: catalogue or store; retry later."),
    )
)]
async fn job_receipt(
    State(d): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(jobs::job_receipt(&d, &id).await?))
}

/// A job's status, with live progress and, for a train job, the derived model.
#[utoipa::path(
    get, path = "/api/jobs/{job_id}", params(("job_id" = String, Path, description = "The job id (as `POST /api/jobs` answered).")),
    responses(
        (status = 200, description = "The job.", body = JobView),
        (status = 404, description = "`not_found`: no such job."),
        (status = 503, description = "`unavailable`: catalogue or queue; retry later."),
    )
)]
async fn job_status(
    State(d): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(jobs::job_status(&d, &id).await?))
}

/// Header carrying a request's signature: the typed `read-result` signature of a result read
/// ([`crate::auth::recover_read`]), or the signature of a JSON body.
pub const SIGNATURE_HEADER: &str = "x-posthuman-signature";
/// Header carrying the expiry that message names.
pub const EXPIRES_HEADER: &str = "x-posthuman-expires";
/// Header naming the reader (`0x…`): a signature that does not recover to it (made for
/// another chain or deployment, or tampered) is a 401; a reader who is not the buyer, a 403.
pub const READER_HEADER: &str = "x-posthuman-reader";

// The signed-request headers as the OpenAPI document lists them (`params(…)` of a route).
// Their names are the constants above; `tests/openapi.rs` checks that they agree.

/// The signature of a JSON body.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Documents headers the handlers read by name.
struct SignatureHeader {
    /// EIP-712 `PosthumanRequest{action, bodyHash: keccak256(body), expiresAt, nonce}` under
    /// the deployment's domain, 0x-hex.
    #[param(rename = "x-posthuman-signature")]
    signature: String,
}

/// The headers of a publish's or submit's JSON form.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Documents headers the handlers read by name.
struct JsonFormHeaders {
    /// The JSON form only (required there): EIP-712 `PosthumanRequest{action, bodyHash:
    /// keccak256(body), expiresAt, nonce}` under the deployment's domain (action
    /// `publish-model` or `submit-job`).
    #[param(rename = "x-posthuman-signature")]
    signature: Option<String>,
    /// The JSON form only: the direct upload (`POST /api/uploads`) holding this request's
    /// files, in place of the multipart file parts. Required for a publish; a submit without
    /// a dataset names none.
    #[param(rename = "x-posthuman-upload")]
    upload: Option<String>,
}

/// The headers of a result read.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Documents headers the handlers read by name.
struct ReadHeaders {
    /// EIP-712 `PosthumanRequest{action: read-result, bodyHash: keccak256(job_id),
    /// expiresAt: expires, nonce: ""}` under the deployment's domain.
    #[param(rename = "x-posthuman-signature")]
    signature: String,
    /// The expiry the signature names (unix seconds).
    #[param(rename = "x-posthuman-expires")]
    expires: u64,
    /// The reader's 0x address: 401 if the signature does not recover to it (signed for
    /// another chain or deployment), 403 if the reader is not the job's buyer.
    #[param(rename = "x-posthuman-reader")]
    reader: String,
}

/// A job's public outputs (metrics, completions, report, error, signed receipt), only to
/// its buyer.
#[utoipa::path(
    get, path = "/api/jobs/{job_id}/result", params(("job_id" = String, Path, description = "The job id (as `POST /api/jobs` answered)."), ReadHeaders),
    responses(
        (status = 200, description = "The results written so far.", body = JobResult),
        (status = 401, description = "`unauthorized`: a header is missing, the signature is malformed or expired, or it does not recover to the reader (signed for another chain or deployment)."),
        (status = 403, description = "`forbidden`: the reader is not the job's buyer."),
        (status = 404, description = "`not_found`: no such job."),
        (status = 503, description = "`unavailable`: catalogue or store; retry later."),
    )
)]
async fn job_result(
    State(d): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<JobResult>, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| ApiError::Unauthorized(format!("missing header {name}")))
    };
    let sig = header(SIGNATURE_HEADER)?;
    let expires: u64 = header(EXPIRES_HEADER)?
        .parse()
        .map_err(|_| ApiError::Unauthorized(format!("{EXPIRES_HEADER} must be unix seconds")))?;
    let reader = crate::auth::parse_address(READER_HEADER, &header(READER_HEADER)?)?;
    Ok(Json(jobs::job_result(&d, &id, reader, &sig, expires).await?))
}

/// Ocean Provider root document (the DDO services' `serviceEndpoint`, ocean.js's node URI).
///
/// `chainIds`, `providerAddress`, and `serviceEndpoints` naming each Ocean route relative to
/// this URL (nonce, computeEnvironments, initializeCompute, computeStart and computeStatus at
/// `compute`, computeResult). The Ocean routes map a dataset DID to the model, a `serviceId`
/// (train, infer, evaluate) to the job kind, and the dataset's `userdata` {params,
/// dataset_bytes, dataset, salt} to the job's terms, data and salt.
#[utoipa::path(
    get, path = "/api/ocean",
    responses((status = 200, description = "Ocean's provider info.", body = Object))
)]
async fn ocean_root(State(d): State<Shared>) -> Json<serde_json::Value> {
    Json(ocean::root(&d))
}

/// Ocean nonce: the provider's clock in microseconds; a signed Ocean request uses it plus one.
#[utoipa::path(
    get, path = "/api/ocean/nonce",
    params(("userAddress" = Option<String>, Query, description = "The signer (any address: nonces are single-use per signer, not counters).")),
    responses((status = 200, description = "`{nonce}`.", body = Object))
)]
async fn ocean_nonce() -> Json<serde_json::Value> {
    Json(ocean::nonce())
}

/// Ocean compute environments: the one environment `posthuman`, paid per job in OCEAN
/// through the order's provider fee.
#[utoipa::path(
    get, path = "/api/ocean/computeEnvironments",
    responses((status = 200, description = "The environments.", body = Vec<Object>))
)]
async fn ocean_environments(State(d): State<Shared>) -> Json<serde_json::Value> {
    Json(ocean::environments(&d))
}

/// An Ocean JSON body, read up to `cap` bytes (the router's own limit is the uploads').
async fn ocean_body<T: serde::de::DeserializeOwned>(
    body: axum::body::Body,
    cap: u64,
) -> Result<T, ApiError> {
    let b = axum::body::to_bytes(body, usize::try_from(cap).unwrap_or(usize::MAX))
        .await
        .map_err(|_| ApiError::TooLarge { what: "request body".into(), limit: cap })?;
    serde_json::from_slice(&b).map_err(|e| ApiError::bad(format!("request: {e}")))
}

/// Ocean initializeCompute: the quote of `POST /api/models/{nft}/quote` for `datasets[0]`.
///
/// `documentId` = the model's DID, `serviceId` = the job kind, `userdata` = {params,
/// dataset_bytes} or none for the kind's default terms; answers its provider fee in Ocean's
/// `ProviderFees` shape (camelCase, numeric v) for `startOrder` / `orderAsset`, and the full
/// quote as `quote`. Exactly one dataset; no algorithm DID, container or file (the service is
/// the algorithm).
#[utoipa::path(
    post, path = "/api/ocean/initializeCompute",
    request_body = ocean::InitializeCompute,
    responses(
        (status = 200, description = "`{datasets: [{datatoken, providerFee, serviceIndex, quote}]}`.", body = Object),
        (status = 400, description = "`bad_request`: not the request's JSON."),
        (status = 404, description = "`not_found`: no model with that DID."),
        (status = 413, description = "`too_large`: the body over its cap."),
        (status = 422, description = "`invalid`: not one dataset, an unknown service, parameters out of bounds."),
        (status = 503, description = "`unavailable`: chain or catalogue; retry later."),
    )
)]
async fn ocean_initialize_compute(
    State(d): State<Shared>,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = ocean_body(body, d.cfg.limits.max_request_bytes).await?;
    Ok(Json(ocean::initialize_compute(&d, body).await?))
}

/// Ocean computeStart: runs the job the order in `datasets[0].transferTxId` paid for.
///
/// Through the same checks as `POST /api/jobs` (order, fee bound to this model, kind and
/// terms, dataset, single-use nonce). `userdata` carries `params` (or none: the kind's
/// default terms), `dataset` (train/evaluate text, inline), `dataset_bytes` (the quoted length
/// if the dataset is shorter) and `salt` (required: 32 random bytes the buyer keeps).
#[utoipa::path(
    post, path = "/api/ocean/compute",
    request_body = ocean::ComputeStart,
    responses(
        (status = 200, description = "`[ComputeJob]`: the started job, Ocean's way.", body = Vec<Object>),
        (status = 400, description = "`bad_request`: not the request's JSON."),
        (status = 401, description = "`unauthorized`: the signature or nonce is refused."),
        (status = 402, description = "`payment_invalid`: the order does not pay for this job."),
        (status = 404, description = "`not_found`: no model with that DID."),
        (status = 409, description = "`conflict`: the nonce or the order was used."),
        (status = 413, description = "`too_large`: the body over its cap."),
        (status = 422, description = "`invalid`: parameters, dataset or salt refused."),
        (status = 425, description = "`too_early`: the order is not final yet; resend later."),
        (status = 503, description = "`unavailable`: chain, queue or store; retry later."),
    )
)]
async fn ocean_compute_start(
    State(d): State<Shared>,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    // The dataset rides inline as a JSON string: allow for its escaping.
    let l = &d.cfg.limits;
    let body = ocean_body(body, l.max_request_bytes + 2 * l.max_dataset_bytes).await?;
    Ok(Json(ocean::compute_start(&d, body).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
struct OceanStatusQuery {
    /// The buyer.
    consumer_address: String,
    /// One job.
    job_id: Option<String>,
    /// The order transaction.
    agreement_id: Option<String>,
}

/// Ocean computeStatus: the consumer's jobs as Ocean ComputeJobs.
///
/// Status 0 started, 40 running, 60 publishing results, 70 finished, 41 failed; results: the
/// public outputs by fixed index; our job view as `posthuman`.
#[utoipa::path(
    get, path = "/api/ocean/compute", params(OceanStatusQuery),
    responses(
        (status = 200, description = "`[ComputeJob]`.", body = Vec<Object>),
        (status = 400, description = "`bad_request`: a malformed query."),
        (status = 404, description = "`not_found`: no such job."),
        (status = 503, description = "`unavailable`: the catalogue; retry later."),
    )
)]
async fn ocean_compute_status(
    State(d): State<Shared>,
    q: Result<Query<OceanStatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let status = ocean::compute_status(
        &d,
        &q.consumer_address,
        q.job_id.as_deref(),
        q.agreement_id.as_deref(),
    );
    Ok(Json(status.await?))
}

/// Ocean computeResult: one public output of a job, byte for byte, only to its buyer.
///
/// Metrics, completions, report, error, receipt, attestations; never weights.
#[utoipa::path(
    get, path = "/api/ocean/computeResult", params(ocean::ResultQuery),
    responses(
        (status = 200, description = "The output file.", body = Object),
        (status = 400, description = "`bad_request`: a malformed query, or no result at that index."),
        (status = 401, description = "`unauthorized`: the signature or nonce is refused."),
        (status = 403, description = "`forbidden`: not the job's buyer."),
        (status = 404, description = "`not_found`: no such job or output."),
        (status = 409, description = "`conflict`: the nonce was used."),
        (status = 503, description = "`unavailable`: catalogue or store; retry later."),
    )
)]
async fn ocean_compute_result(
    State(d): State<Shared>,
    q: Result<Query<ocean::ResultQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let bytes = ocean::compute_result(&d, &q).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
