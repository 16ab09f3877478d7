//! The one axum router, used by the embedded server and (through `lambda_http`) by Lambda.
//!
//! Extractors here turn HTTP into the handlers' typed inputs (multipart parts with their size
//! caps, file parts spooled to disk as they arrive, path and query values, signature
//! headers); [`ApiError`] turns failures back into a
//! status and a JSON body. The route table [`routes`] is the single list the router is built
//! from, and a test checks that each entry is described in `openapi.json`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use bytes::{Bytes, BytesMut};
use posthuman_types::JobKind;
use serde::Deserialize;

use crate::catalogue::{Cursor, DEFAULT_PAGE, MAX_PAGE};
use crate::deps::Deps;
use crate::error::ApiError;
use crate::handlers::views::Paged;
use crate::handlers::{jobs, lists, models, ocean};
use crate::spool::{SpoolWriter, Spooled};
use crate::uploads::{self, Fetched, Keep, UploadPurpose};

/// The OpenAPI description served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

type Shared = Arc<Deps>;

/// The routes that take file uploads (multipart, or a direct upload's PUT): they get upload
/// slots and a body deadline.
const UPLOAD_ROUTES: [(Method, &str); 3] = [
    (Method::POST, "/api/models"),
    (Method::POST, "/api/jobs"),
    (Method::PUT, "/api/uploads/{upload_id}/{file}"),
];

/// Every route: method, path (axum syntax, same as OpenAPI's), handler.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<Shared>)> {
    vec![
        (Method::GET, "/api/health", get(health)),
        (Method::GET, "/api/openapi.json", get(openapi)),
        (Method::GET, "/api/chain", get(chain_info)),
        (Method::GET, "/api/pricing", get(pricing)),
        (Method::GET, "/api/ocean/address.json", get(ocean_address_file)),
        (Method::GET, "/api/models", get(list_models)),
        (Method::POST, "/api/models", post(publish_model)),
        (Method::GET, "/api/models/{nft}", get(get_model)),
        (Method::GET, "/api/models/{nft}/quote", get(quote_default)),
        (Method::POST, "/api/models/{nft}/quote", post(quote)),
        (Method::POST, "/api/models/{nft}/featured", post(feature_evaluations)),
        (Method::POST, "/api/models/{nft}/card", post(edit_card)),
        (Method::POST, "/api/models/{nft}/sale", post(sync_sale)),
        (Method::POST, "/api/jobs", post(submit_job)),
        (Method::GET, "/api/uploads", get(upload_limits)),
        (Method::POST, "/api/uploads", post(create_upload)),
        (Method::PUT, "/api/uploads/{upload_id}/{file}", axum::routing::put(put_upload)),
        (Method::GET, "/api/jobs", get(list_jobs)),
        (Method::GET, "/api/jobs/{job_id}", get(job_status)),
        (Method::GET, "/api/jobs/{job_id}/result", get(job_result)),
        (Method::GET, "/api/jobs/{job_id}/receipt", get(job_receipt)),
        // The Ocean Provider facade (handlers::ocean): ocean.js's ProviderInstance.
        (Method::GET, "/api/ocean", get(ocean_root)),
        (Method::GET, "/api/ocean/nonce", get(ocean_nonce)),
        (Method::GET, "/api/ocean/computeEnvironments", get(ocean_environments)),
        (Method::POST, "/api/ocean/initializeCompute", post(ocean_initialize_compute)),
        (Method::POST, "/api/ocean/compute", post(ocean_compute_start)),
        (Method::GET, "/api/ocean/compute", get(ocean_compute_status)),
        (Method::GET, "/api/ocean/computeResult", get(ocean_compute_result)),
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
    for (method, path, mr) in routes() {
        let mr = if UPLOAD_ROUTES.iter().any(|(m, p)| *m == method && *p == path) {
            mr.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_deadline))
                .layer(axum::middleware::from_fn_with_state(slots.clone(), upload_slot))
        } else {
            mr
        };
        r = r.route(path, mr);
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
        Json(crate::error::ErrorBody {
            error: "no_route".into(),
            message: "no such API route".into(),
        }),
    )
        .into_response()
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn chain_info(State(d): State<Shared>) -> Json<models::ChainInfo> {
    Json(models::chain_info(&d))
}

/// The deployment as Ocean's `address.json` (see `AddressBook::ocean_address_file`).
async fn ocean_address_file(State(d): State<Shared>) -> Json<serde_json::Value> {
    Json(d.chain.book().ocean_address_file())
}

async fn pricing(State(d): State<Shared>) -> Json<crate::handlers::pricing::PricingView> {
    Json(crate::handlers::pricing::pricing_view(&d))
}

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

fn fetched_bytes(
    files: &mut std::collections::BTreeMap<String, Fetched>,
    name: &str,
) -> Option<Bytes> {
    match files.remove(name) {
        Some(Fetched::Memory(b)) => Some(b),
        _ => None,
    }
}

fn fetched_file(
    files: &mut std::collections::BTreeMap<String, Fetched>,
    name: &str,
) -> Option<Spooled> {
    match files.remove(name) {
        Some(Fetched::Spooled(s)) => Some(s),
        _ => None,
    }
}

/// `POST /api/models` with the files staged by a direct upload ([`crate::uploads`]).
async fn publish_uploaded(
    d: &Deps,
    req: axum::extract::Request,
) -> Result<crate::handlers::views::ModelView, ApiError> {
    let (request, signature, upload) = signed_json(d, req).await?;
    let upload = upload.ok_or_else(|| {
        ApiError::bad(format!(
            "a JSON publish names its files' upload in {}",
            uploads::UPLOAD_HEADER
        ))
    })?;
    crate::handlers::precheck::may_publish(d, &request, &signature).await?;
    let signer = crate::auth::recover_request(
        &crate::auth::domain(d),
        posthuman_receipts::request::PUBLISH_MODEL,
        &request,
        &signature,
    )?;
    let claimed = uploads::claim(d, &upload, signer, UploadPurpose::Model).await?;
    with_upload(d, claimed, async |mut f| {
        let missing = |n: &str| ApiError::bad(format!("the upload has no file {n:?}"));
        let adapter = match (
            fetched_bytes(&mut f, "adapter_config"),
            fetched_file(&mut f, "adapter_weights"),
        ) {
            (Some(c), Some(w)) => Some((c, w)),
            (None, None) => None,
            _ => {
                return Err(ApiError::bad(
                    "an adapter needs both adapter_config and adapter_weights",
                ));
            }
        };
        let up = models::PublishUpload {
            request,
            signature,
            config: fetched_bytes(&mut f, "config").ok_or_else(|| missing("config"))?,
            weights: fetched_file(&mut f, "weights").ok_or_else(|| missing("weights"))?,
            tokenizer: fetched_bytes(&mut f, "tokenizer").ok_or_else(|| missing("tokenizer"))?,
            adapter,
            tokenizer_config: fetched_bytes(&mut f, "tokenizer_config"),
            generation_config: fetched_bytes(&mut f, "generation_config"),
            chat_template: fetched_bytes(&mut f, "chat_template"),
        };
        models::publish_model(d, up).await
    })
    .await
}

async fn publish_model(
    State(d): State<Shared>,
    req: axum::extract::Request,
) -> Result<(StatusCode, Json<crate::handlers::views::ModelView>), ApiError> {
    use axum::extract::FromRequest;
    if is_json(&req) {
        return Ok((StatusCode::CREATED, Json(publish_uploaded(&d, req).await?)));
    }
    let mp = Multipart::from_request(req, &d).await;
    let l = &d.cfg.limits;
    let mut caps =
        vec![("request", l.max_request_bytes, Keep::Memory), ("signature", 256, Keep::Memory)];
    caps.extend(uploads::publish_files(l));
    let may = async |request: Bytes, signature: String| {
        crate::handlers::precheck::may_publish(&d, &request, &signature).await
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
    Ok((StatusCode::CREATED, Json(models::publish_model(&d, up).await?)))
}

/// The response header naming the next page's cursor (absent on the last page).
pub const NEXT_CURSOR_HEADER: &str = "x-posthuman-next-cursor";

/// `limit` and `cursor` of a list request: both optional, both checked (a 400 otherwise).
#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
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

async fn list_models(
    State(d): State<Shared>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let (after, limit) = q.parse()?;
    Ok(paged(models::list_models(&d, after.as_ref(), limit).await?))
}

async fn feature_evaluations(
    State(d): State<Shared>,
    Path(nft): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<crate::handlers::views::ModelView>, ApiError> {
    let sig = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized(format!("missing header {SIGNATURE_HEADER}")))?;
    Ok(Json(crate::handlers::featured::feature_evaluations(&d, &nft, &body, sig).await?))
}

/// `POST /api/models/{nft}/card`: the signed edit as the body (read up to the signed-request
/// cap, not the uploads' limit the router allows), its signature in a header.
async fn edit_card(
    State(d): State<Shared>,
    Path(nft): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<crate::handlers::views::ModelView>, ApiError> {
    let sig = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized(format!("missing header {SIGNATURE_HEADER}")))?;
    let cap = d.cfg.limits.max_request_bytes;
    let body = axum::body::to_bytes(body, usize::try_from(cap).unwrap_or(usize::MAX))
        .await
        .map_err(|_| ApiError::TooLarge { what: "request body".into(), limit: cap })?;
    Ok(Json(crate::handlers::card::edit_card(&d, &nft, &body, sig).await?))
}

async fn sync_sale(
    State(d): State<Shared>,
    Path(nft): Path<String>,
) -> Result<Json<crate::handlers::views::ModelView>, ApiError> {
    Ok(Json(crate::handlers::sale::sync_sale(&d, &nft).await?))
}

async fn get_model(
    State(d): State<Shared>,
    Path(nft): Path<String>,
) -> Result<Json<crate::handlers::views::ModelView>, ApiError> {
    Ok(Json(models::get_model(&d, &nft).await?))
}

#[derive(Deserialize)]
struct QuoteQuery {
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

async fn quote_default(
    State(d): State<Shared>,
    Path(nft): Path<String>,
    q: Result<Query<QuoteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<models::Quote>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let kind = parse_kind(q.kind.as_deref())?;
    Ok(Json(models::quote_default(&d, &nft, kind).await?))
}

async fn quote(
    State(d): State<Shared>,
    Path(nft): Path<String>,
    body: Result<
        Json<crate::handlers::pricing::QuoteTerms>,
        axum::extract::rejection::JsonRejection,
    >,
) -> Result<Json<models::Quote>, ApiError> {
    let Json(terms) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    Ok(Json(models::quote(&d, &nft, terms).await?))
}

/// `POST /api/jobs` in the JSON form: the dataset, if any, from a direct upload.
async fn submit_uploaded(
    d: &Deps,
    req: axum::extract::Request,
) -> Result<crate::handlers::views::SubmittedView, ApiError> {
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

async fn submit_job(
    State(d): State<Shared>,
    req: axum::extract::Request,
) -> Result<(StatusCode, Json<crate::handlers::views::SubmittedView>), ApiError> {
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

/// `GET /api/uploads`: the files each upload purpose takes and their caps.
async fn upload_limits(State(d): State<Shared>) -> Json<uploads::UploadLimits> {
    Json(uploads::upload_limits(&d.cfg))
}

/// `POST /api/uploads`: the signed declaration as the body, its signature in a header.
async fn create_upload(
    State(d): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<uploads::UploadGrant>), ApiError> {
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

/// `PUT /api/uploads/{upload_id}/{file}`: a direct upload's file, where this server hosts
/// them (the embedded default; on AWS the files go to S3 and this is a 404).
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

#[derive(Deserialize)]
struct JobsQuery {
    consumer: String,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list_jobs(
    State(d): State<Shared>,
    q: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let (after, limit) = PageQuery { limit: q.limit, cursor: q.cursor }.parse()?;
    Ok(paged(lists::jobs_of(&d, &q.consumer, after.as_ref(), limit).await?))
}

async fn job_receipt(
    State(d): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(jobs::job_receipt(&d, &id).await?))
}

async fn job_status(
    State(d): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<crate::handlers::views::JobView>, ApiError> {
    Ok(Json(jobs::job_status(&d, &id).await?))
}

/// Header carrying the buyer's typed `read-result` signature ([`crate::auth::recover_read`]).
pub const SIGNATURE_HEADER: &str = "x-posthuman-signature";
/// Header carrying the expiry that message names.
pub const EXPIRES_HEADER: &str = "x-posthuman-expires";
/// Header naming the reader (`0x…`): a signature that does not recover to it (made for
/// another chain or deployment, or tampered) is a 401; a reader who is not the buyer, a 403.
pub const READER_HEADER: &str = "x-posthuman-reader";

async fn job_result(
    State(d): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<jobs::JobResult>, ApiError> {
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

async fn ocean_root(State(d): State<Shared>) -> Json<serde_json::Value> {
    Json(ocean::root(&d))
}

async fn ocean_nonce() -> Json<serde_json::Value> {
    Json(ocean::nonce())
}

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

async fn ocean_initialize_compute(
    State(d): State<Shared>,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = ocean_body(body, d.cfg.limits.max_request_bytes).await?;
    Ok(Json(ocean::initialize_compute(&d, body).await?))
}

async fn ocean_compute_start(
    State(d): State<Shared>,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    // The dataset rides inline as a JSON string: allow for its escaping.
    let l = &d.cfg.limits;
    let body = ocean_body(body, l.max_request_bytes + 2 * l.max_dataset_bytes).await?;
    Ok(Json(ocean::compute_start(&d, body).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OceanStatusQuery {
    consumer_address: String,
    job_id: Option<String>,
    agreement_id: Option<String>,
}

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

async fn ocean_compute_result(
    State(d): State<Shared>,
    q: Result<Query<ocean::ResultQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let bytes = ocean::compute_result(&d, &q).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
