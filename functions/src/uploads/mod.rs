//! Direct uploads: files go straight to the object store, not through the API's request body.
//!
//! Behind API Gateway a Lambda takes at most 6 MB of request, but a publish carries up to
//! 1 GiB of weights and a submit up to 64 MiB of dataset. So a client first declares its files
//! (`POST /api/uploads`, signed like every write, action [`CREATE_UPLOAD`]): purpose, each
//! file's name, exact length and SHA-256. [`create_upload`] checks each declaration against the
//! caps the multipart route has for that part ([`publish_files`], [`submit_files`]) and
//! answers, per file, a URL, a method and headers to send, under an upload id bound to the
//! signer and valid for [`UPLOAD_VALIDITY_SECS`]. The publish or submit then names the
//! upload id (header [`UPLOAD_HEADER`]) in place of the file parts; [`claim`] checks the
//! staged objects before anything uses them: the upload exists, is the signer's, is for
//! this purpose, has not expired or been used, and every declared file arrived with its
//! declared length and SHA-256 (checked again as it is read back). The existing validation
//! then runs unchanged.
//!
//! Where the bytes go is one narrow trait, [`DirectUploads`], with two implementations and
//! one contract suite (`tests/upload_contract.rs`):
//! - [`S3Uploads`] (AWS): an S3 presigned PUT whose signature covers the exact
//!   `Content-Length` and the `x-amz-checksum-sha256` header, so S3 itself refuses a body of
//!   another length or content, and the URL after its expiry. Checked with a HEAD in
//!   checksum mode. A URL ends before the credentials that signed it (temporary ones die
//!   with their session token), and the grant's `expires_at` is the real expiry (`s3.rs`).
//! - [`LocalUploads`] (the embedded server): the server hosts the PUT itself
//!   (`PUT /api/uploads/{upload_id}/{file}`) under an HMAC token from a per-server secret that
//!   covers the same length, hash and expiry; the body streams to a spool file with the same
//!   cap and is stored only if its length and SHA-256 are the declared ones.
//!
//! An upload is used once: the first publish or submit that succeeds with it consumes it
//! (its files are deleted, a marker keeps later uses answering `upload_used`). One that fails
//! releases it, so the client can retry (a payment not final yet, say) without uploading
//! again. [`sweep_uploads`] deletes what is left of expired uploads (the embedded server runs
//! it periodically; on AWS an S3 lifecycle rule on [`STAGING_PREFIX`] does the same).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, keccak256};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use posthuman_gpt2::chat_config::{
    MAX_CHAT_TEMPLATE_BYTES, MAX_GENERATION_CONFIG_BYTES, MAX_TOKENIZER_CONFIG_BYTES,
};
use posthuman_receipts::request::CREATE_UPLOAD;
use posthuman_store::ObjectStore;
use posthuman_types::Hash32;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth;
use crate::catalogue::now_secs;
use crate::deps::{Deps, Limits};
use crate::error::ApiError;
use crate::spool::{SpoolWriter, Spooled};

mod s3;
pub use s3::{CREDENTIALS_MARGIN_SECS, MIN_URL_SECS, S3Uploads, cap_expiry};

// The wire types live in `posthuman-types` (the CLI and the storefront's wasm read the same
// definitions); re-exported so handlers and tests keep naming them from here.
pub use posthuman_types::uploads::{
    DeclaredFile, FileCap, PutTarget, UPLOAD_HEADER, UploadGrant, UploadLimits, UploadPurpose,
    UploadRequest,
};

/// How long an upload's URLs (and the upload id) stay valid by default
/// (`ApiConfig::upload_validity_secs`).
pub const UPLOAD_VALIDITY_SECS: u64 = 15 * 60;
/// How long after its expiry an upload's manifest is kept (so a late use is told
/// `upload_expired` or `upload_used`, not `upload_unknown`) before the sweep deletes it.
pub const UPLOAD_RETENTION_SECS: u64 = 24 * 3600;
/// Where staged uploads live in the object store (private; `uploads/<id>/…`).
pub const STAGING_PREFIX: &str = "uploads/";
/// Files one upload may declare (a publish has at most eight).
const MAX_FILES: usize = 8;

/// Why a staged upload cannot be used: each its own status and error code.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// 404 `upload_unknown`: no such upload (or it was swept): create one.
    #[error("no upload {0:?}: stage the files with POST /api/uploads first")]
    Unknown(String),
    /// 410 `upload_expired`: its time ran out: upload again.
    #[error("upload {id} expired at {expires_at}: upload the files again")]
    Expired { id: String, expires_at: u64 },
    /// 403 `upload_foreign`: another account staged it.
    #[error("upload {0} was staged by another account")]
    Foreign(String),
    /// 409 `upload_used`: a publish or submit already used it (or is using it now).
    #[error("upload {0} was already used: upload the files again")]
    Used(String),
    /// 422 `upload_purpose`: staged for the other route.
    #[error("upload {id} was staged for a {staged:?} upload, not {wanted:?}")]
    Purpose { id: String, staged: UploadPurpose, wanted: UploadPurpose },
    /// 409 `upload_missing`: a declared file has not arrived: PUT it, then resend.
    #[error("file {file:?} of upload {id} has not arrived: PUT it first")]
    Missing { id: String, file: String },
    /// 422 `upload_mismatch`: a staged file is not what was declared.
    #[error("file {file:?} of upload {id} does not match its declaration: {reason}")]
    Mismatch { id: String, file: String, reason: String },
    /// 403 `upload_url_refused`: a PUT to this server with a bad or expired token.
    #[error("upload URL refused: {0}")]
    BadToken(String),
}

/// Where a file part goes while it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Small parts (the signed request, a config): in memory, up to their cap.
    Memory,
    /// Files (weights, a dataset): streamed to a spool file, hashed on the way.
    Spool,
}

/// A publish's file parts with their caps: the multipart route's and the uploads' one list.
pub fn publish_files(l: &Limits) -> [(&'static str, u64, Keep); 8] {
    [
        ("config", l.max_config_bytes, Keep::Memory),
        ("weights", l.max_weights_bytes, Keep::Spool),
        ("tokenizer", l.max_tokenizer_bytes, Keep::Memory),
        // Optional: a PEFT LoRA adapter over the weights (adapter ≤ the weights' cap).
        ("adapter_config", l.max_config_bytes, Keep::Memory),
        ("adapter_weights", l.max_weights_bytes, Keep::Spool),
        ("tokenizer_config", MAX_TOKENIZER_CONFIG_BYTES, Keep::Memory),
        ("generation_config", MAX_GENERATION_CONFIG_BYTES, Keep::Memory),
        ("chat_template", MAX_CHAT_TEMPLATE_BYTES as u64, Keep::Memory),
    ]
}

/// A submit's file parts with their caps.
pub fn submit_files(l: &Limits) -> [(&'static str, u64, Keep); 1] {
    [("dataset", l.max_dataset_bytes, Keep::Spool)]
}

/// `GET /api/uploads`: the files each purpose takes with this deployment's caps, so a client
/// refuses an oversize file before anything is signed (the same lists [`create_upload`]
/// checks declarations against).
pub fn upload_limits(cfg: &crate::deps::ApiConfig) -> UploadLimits {
    let caps = |files: &[(&'static str, u64, Keep)]| {
        files.iter().map(|&(name, max_bytes, _)| FileCap { name: name.into(), max_bytes }).collect()
    };
    UploadLimits {
        model: caps(&publish_files(&cfg.limits)),
        dataset: caps(&submit_files(&cfg.limits)),
        validity_secs: cfg.upload_validity_secs,
    }
}

fn files_for(purpose: UploadPurpose, l: &Limits) -> Vec<(&'static str, u64, Keep)> {
    match purpose {
        UploadPurpose::Model => publish_files(l).to_vec(),
        UploadPurpose::Dataset => submit_files(l).to_vec(),
    }
}

/// The key a staged file lives at.
pub fn staged_key(upload_id: &str, file: &str) -> String {
    format!("{STAGING_PREFIX}{upload_id}/files/{file}")
}

/// Where [`LocalUploads`] records the SHA-256 it verified at a file's PUT (S3 keeps the
/// checksum it verified with the object).
fn verified_key(upload_id: &str, file: &str) -> String {
    format!("{STAGING_PREFIX}{upload_id}/verified/{file}")
}

fn manifest_key(upload_id: &str) -> String {
    format!("{STAGING_PREFIX}{upload_id}/manifest.json")
}

fn used_key(upload_id: &str) -> String {
    format!("{STAGING_PREFIX}{upload_id}/used")
}

/// An upload id's shape (`u-` and 32 hex digits); anything else is unknown without a lookup
/// (and never becomes part of a store key).
fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = id.len() == 34
        && id.starts_with("u-")
        && id[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok {
        return Err(UploadError::Unknown(id.chars().take(40).collect()).into());
    }
    Ok(())
}

/// What the store keeps of an upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Manifest {
    signer: Address,
    purpose: UploadPurpose,
    files: Vec<DeclaredFile>,
    expires_at: u64,
}

/// What a staged object looks like to [`DirectUploads::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Staged {
    /// There, with the declared length and checksum.
    Ready,
    /// Not there (never sent, refused, or already consumed).
    Missing,
    /// There but not as declared (the reason says how).
    Differs(String),
}

/// A presigned [`PutTarget`] and when it stops working.
#[derive(Clone, Debug)]
pub struct Presigned {
    pub target: PutTarget,
    /// Unix seconds: the asked expiry, or sooner where the URL cannot live that long (an S3
    /// URL dies with the temporary credentials that signed it: [`S3Uploads`]).
    pub expires_at: u64,
}

/// Where a client's files go, and how the API checks they arrived. See the module docs.
#[async_trait::async_trait]
pub trait DirectUploads: Send + Sync + std::fmt::Debug + 'static {
    /// How to send `file` of upload `upload_id` until `expires_at` (unix seconds) at the
    /// latest: a request the store refuses with any other length or content, or after the
    /// expiry it answers (which may come sooner than asked).
    async fn presign(
        &self,
        upload_id: &str,
        file: &DeclaredFile,
        expires_at: u64,
    ) -> Result<Presigned, ApiError>;

    /// Whether `file` of `upload_id` arrived as declared.
    async fn check(&self, upload_id: &str, file: &DeclaredFile) -> Result<Staged, ApiError>;

    /// Receives a PUT this server hosts ([`LocalUploads`]); where the files go elsewhere
    /// (S3) there is no such route: a 404.
    async fn receive(
        &self,
        upload_id: &str,
        file: &str,
        q: &PutQuery,
        body: axum::body::Body,
    ) -> Result<(), ApiError>;
}

/// The query of a [`LocalUploads`] URL: what was declared, the expiry, and the token over
/// them all.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    /// The declared length.
    pub bytes: u64,
    /// The declared SHA-256.
    pub sha256: Hash32,
    /// Unix seconds: the URL is refused after this.
    pub expires: u64,
    /// HMAC-SHA256 under a per-server secret over the upload id, file, length, hash and
    /// expiry.
    pub token: String,
}

// ---------------------------------------------------------------------------------- local

/// The embedded server's twin of S3's presigned PUT: see the module docs.
///
/// Its URLs are relative to the API's base URL (`/api/uploads/…`): a client resolves them
/// against the URL it reached the API at, so they hold behind any proxy or port.
#[derive(Clone)]
pub struct LocalUploads {
    store: Arc<dyn ObjectStore>,
    secret: [u8; 32],
    spool_dir: PathBuf,
}

impl std::fmt::Debug for LocalUploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("LocalUploads").field("spool_dir", &self.spool_dir).finish_non_exhaustive()
    }
}

impl LocalUploads {
    /// Uploads to `store` through this server, with tokens under `secret`, bodies spooled in
    /// `spool_dir` while they are checked.
    pub fn new(store: Arc<dyn ObjectStore>, secret: [u8; 32], spool_dir: PathBuf) -> Self {
        LocalUploads { store, secret, spool_dir }
    }

    fn mac(
        &self,
        upload_id: &str,
        file: &str,
        bytes: u64,
        sha256: &Hash32,
        expires: u64,
    ) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(
            format!("{upload_id}\n{file}\n{bytes}\n{}\n{expires}", sha256.to_hex()).as_bytes(),
        );
        mac
    }
}

/// The per-server secret of [`LocalUploads`], derived from the operator key so tokens survive
/// a restart and no new secret file is needed.
pub fn local_secret(operator: &alloy::signers::local::PrivateKeySigner) -> [u8; 32] {
    let key = operator.to_bytes();
    keccak256([b"posthuman-upload-token\n".as_slice(), key.as_slice()].concat()).0
}

#[async_trait::async_trait]
impl DirectUploads for LocalUploads {
    async fn presign(
        &self,
        upload_id: &str,
        file: &DeclaredFile,
        expires_at: u64,
    ) -> Result<Presigned, ApiError> {
        let token = self.mac(upload_id, &file.name, file.bytes, &file.sha256, expires_at);
        let url = format!(
            "/api/uploads/{upload_id}/{}?bytes={}&sha256={}&expires={expires_at}&token={}",
            file.name,
            file.bytes,
            file.sha256.to_hex(),
            hex::encode(token.finalize().into_bytes())
        );
        let headers =
            BTreeMap::from([("content-type".to_string(), "application/octet-stream".to_string())]);
        let target = PutTarget { name: file.name.clone(), url, method: "PUT".into(), headers };
        Ok(Presigned { target, expires_at })
    }

    async fn check(&self, upload_id: &str, file: &DeclaredFile) -> Result<Staged, ApiError> {
        // The content was checked at the PUT, which recorded the hash it verified (as S3
        // keeps its checksum); the hash is checked once more as the file is read back.
        let Some(n) = self.store.head(&staged_key(upload_id, &file.name)).await? else {
            return Ok(Staged::Missing);
        };
        if n != file.bytes {
            return Ok(Staged::Differs(format!("{n} bytes, not {}", file.bytes)));
        }
        let verified = match self.store.get(&verified_key(upload_id, &file.name), 128).await {
            Ok(b) => b,
            Err(posthuman_store::StoreError::NotFound { .. }) => return Ok(Staged::Missing),
            Err(e) => return Err(e.into()),
        };
        if verified.as_ref() != file.sha256.to_hex().as_bytes() {
            return Ok(Staged::Differs(
                "the SHA-256 verified at its PUT is not the declared one".into(),
            ));
        }
        Ok(Staged::Ready)
    }

    async fn receive(
        &self,
        upload_id: &str,
        file: &str,
        q: &PutQuery,
        body: axum::body::Body,
    ) -> Result<(), ApiError> {
        use futures::StreamExt;
        check_id(upload_id)?;
        let token = hex::decode(q.token.trim_start_matches("0x"))
            .map_err(|_| UploadError::BadToken("malformed token".into()))?;
        self.mac(upload_id, file, q.bytes, &q.sha256, q.expires)
            .verify_slice(&token)
            .map_err(|_| UploadError::BadToken("the token does not match the URL".into()))?;
        if q.expires < now_secs() {
            return Err(UploadError::BadToken(format!("the URL expired at {}", q.expires)).into());
        }
        let mismatch = |reason: String| UploadError::Mismatch {
            id: upload_id.into(),
            file: file.into(),
            reason,
        };
        let mut w = SpoolWriter::create(&self.spool_dir).await?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad(format!("reading the body: {e}")))?;
            if w.len() + chunk.len() as u64 > q.bytes {
                return Err(mismatch(format!("the body is longer than {} bytes", q.bytes)).into());
            }
            w.write(&chunk).await?;
        }
        let spooled = w.finish().await?;
        if spooled.len() != q.bytes {
            return Err(mismatch(format!("{} bytes, not {}", spooled.len(), q.bytes)).into());
        }
        if spooled.sha256() != q.sha256 {
            return Err(mismatch("the SHA-256 of the body is not the declared one".into()).into());
        }
        // The hash last: a file counts as arrived only once both are stored.
        self.store.put_file(&staged_key(upload_id, file), spooled.path()).await?;
        let hash = Bytes::from(spooled.sha256().to_hex());
        self.store.put(&verified_key(upload_id, file), hash).await?;
        Ok(())
    }
}

// ------------------------------------------------------------------------------ lifecycle

/// `POST /api/uploads`: checks the signed declaration and answers where to send each file.
pub async fn create_upload(
    deps: &Deps,
    body: &[u8],
    signature: &str,
) -> Result<UploadGrant, ApiError> {
    let signer = auth::recover_request(&auth::domain(deps), CREATE_UPLOAD, body, signature)?;
    let req: UploadRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("request: {e}")))?;
    auth::require_signer(&auth::parse_address("owner", &req.owner)?, &signer)?;
    auth::check_expiry(req.expires_at, now_secs())?;
    auth::check_nonce(&req.nonce)?;
    if req.purpose == UploadPurpose::Model {
        // Only those who may publish may stage weights in the operator's bucket.
        auth::require_publisher(deps, &signer)?;
    }
    let allowed = files_for(req.purpose, &deps.cfg.limits);
    if req.files.is_empty() || req.files.len() > MAX_FILES {
        return Err(ApiError::Invalid {
            field: "files".into(),
            reason: format!("1..={MAX_FILES} files"),
        });
    }
    for (i, f) in req.files.iter().enumerate() {
        let Some(&(_, cap, _)) = allowed.iter().find(|(n, _, _)| *n == f.name) else {
            let names: Vec<&str> = allowed.iter().map(|(n, _, _)| *n).collect();
            return Err(ApiError::Invalid {
                field: "files".into(),
                reason: format!(
                    "{:?} is not a file of a {:?} upload (one of {names:?})",
                    f.name.chars().take(32).collect::<String>(),
                    req.purpose
                ),
            });
        };
        if req.files[..i].iter().any(|g| g.name == f.name) {
            return Err(ApiError::Invalid {
                field: "files".into(),
                reason: format!("{:?} is declared twice", f.name),
            });
        }
        if f.bytes > cap {
            return Err(ApiError::TooLarge { what: format!("file {:?}", f.name), limit: cap });
        }
    }
    if !deps.catalogue.use_nonce(&format!("{signer:#x}"), &req.nonce).await? {
        return Err(ApiError::Conflict(format!("nonce {:?} was already used", req.nonce)));
    }
    // From the signer and its single-use nonce: unguessable to others, unique.
    let h = keccak256([signer.as_slice(), b"upload", req.nonce.as_bytes()].concat());
    let upload_id = format!("u-{}", &hex::encode(h)[..32]);
    // The upload lives as long as its shortest-lived URL (one signed by credentials that
    // expire sooner than the validity dies with them), and the answer says so.
    let mut expires_at = now_secs() + deps.cfg.upload_validity_secs;
    let mut files = Vec::with_capacity(req.files.len());
    for f in &req.files {
        let p = deps.uploads.presign(&upload_id, f, expires_at).await?;
        expires_at = expires_at.min(p.expires_at);
        files.push(p.target);
    }
    // The manifest before any URL is handed out (the answer below).
    let manifest = Manifest { signer, purpose: req.purpose, files: req.files.clone(), expires_at };
    let json = serde_json::to_vec(&manifest).map_err(ApiError::internal)?;
    deps.store.put(&manifest_key(&upload_id), Bytes::from(json)).await?;
    Ok(UploadGrant { upload_id, expires_at, files })
}

/// An upload claimed for one publish or submit. [`Claimed::finish`] consumes it (success) or
/// releases it (failure); dropped without `finish`, it stays claimed until it expires.
#[derive(Debug)]
pub struct Claimed {
    id: String,
    files: Vec<DeclaredFile>,
    caps: Vec<(&'static str, u64, Keep)>,
}

/// A staged file read back for use.
#[derive(Debug)]
pub enum Fetched {
    Memory(Bytes),
    Spooled(Spooled),
}

async fn manifest(deps: &Deps, id: &str) -> Result<Manifest, ApiError> {
    check_id(id)?;
    match deps.store.get(&manifest_key(id), 64 << 10).await {
        Ok(b) => serde_json::from_slice(&b).map_err(ApiError::internal),
        Err(posthuman_store::StoreError::NotFound { .. }) => {
            Err(UploadError::Unknown(id.into()).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Takes file `name` from `files` if it was read into memory.
pub fn fetched_bytes(files: &mut BTreeMap<String, Fetched>, name: &str) -> Option<Bytes> {
    match files.remove(name) {
        Some(Fetched::Memory(b)) => Some(b),
        _ => None,
    }
}

/// Takes file `name` from `files` if it was spooled.
pub fn fetched_file(files: &mut BTreeMap<String, Fetched>, name: &str) -> Option<Spooled> {
    match files.remove(name) {
        Some(Fetched::Spooled(s)) => Some(s),
        _ => None,
    }
}

/// Checks upload `id` for `signer`'s use as `purpose` (see the module docs), then claims it.
pub async fn claim(
    deps: &Deps,
    id: &str,
    signer: Address,
    purpose: UploadPurpose,
) -> Result<Claimed, ApiError> {
    let m = manifest(deps, id).await?;
    if m.signer != signer {
        return Err(UploadError::Foreign(id.into()).into());
    }
    if m.purpose != purpose {
        return Err(
            UploadError::Purpose { id: id.into(), staged: m.purpose, wanted: purpose }.into()
        );
    }
    if deps.store.head(&used_key(id)).await?.is_some() {
        return Err(UploadError::Used(id.into()).into());
    }
    if m.expires_at < now_secs() {
        return Err(UploadError::Expired { id: id.into(), expires_at: m.expires_at }.into());
    }
    for f in &m.files {
        match deps.uploads.check(id, f).await? {
            Staged::Ready => {}
            Staged::Missing => {
                return Err(UploadError::Missing { id: id.into(), file: f.name.clone() }.into());
            }
            Staged::Differs(reason) => {
                return Err(
                    UploadError::Mismatch { id: id.into(), file: f.name.clone(), reason }.into()
                );
            }
        }
    }
    // Atomic: of two requests racing with one upload, one gets it.
    if !deps.store.put_if_absent(&used_key(id), Bytes::from_static(b"claimed")).await? {
        return Err(UploadError::Used(id.into()).into());
    }
    Ok(Claimed { id: id.into(), files: m.files, caps: files_for(purpose, &deps.cfg.limits) })
}

impl Claimed {
    /// An upload [`claim`]ed earlier (by the request that started an asynchronous publish,
    /// `crate::publishes`), taken up by the work it was claimed for: still claimed, for
    /// `purpose`. Its files are checked again as [`Claimed::fetch`] reads them.
    pub async fn resume(deps: &Deps, id: &str, purpose: UploadPurpose) -> Result<Self, ApiError> {
        let m = manifest(deps, id).await?;
        if m.purpose != purpose {
            return Err(
                UploadError::Purpose { id: id.into(), staged: m.purpose, wanted: purpose }.into()
            );
        }
        if deps.store.head(&used_key(id)).await?.is_none() {
            return Err(ApiError::Internal(format!("upload {id} is not claimed")));
        }
        Ok(Claimed { id: id.into(), files: m.files, caps: files_for(purpose, &deps.cfg.limits) })
    }

    /// The upload id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The declaration of file `name`, if the upload has one.
    pub fn declared(&self, name: &str) -> Option<&DeclaredFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The declared files' bytes, together.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Every declared file, read back (small ones into memory, big ones spooled) and checked
    /// once more against its declared length and SHA-256.
    pub async fn fetch(&self, deps: &Deps) -> Result<BTreeMap<String, Fetched>, ApiError> {
        self.fetch_with(deps, |_| {}).await
    }

    /// [`Claimed::fetch`], telling `read` the bytes read back so far after each file.
    pub async fn fetch_with(
        &self,
        deps: &Deps,
        read: impl Fn(u64),
    ) -> Result<BTreeMap<String, Fetched>, ApiError> {
        let mut out = BTreeMap::new();
        let mut so_far = 0;
        for f in &self.files {
            let mismatch = |reason: &str| UploadError::Mismatch {
                id: self.id.clone(),
                file: f.name.clone(),
                reason: reason.into(),
            };
            let keep =
                self.caps.iter().find(|(n, _, _)| *n == f.name).map_or(Keep::Spool, |&(_, _, k)| k);
            let key = staged_key(&self.id, &f.name);
            let fetched = match keep {
                Keep::Memory => {
                    let b = deps.store.get(&key, f.bytes).await.map_err(|e| match e {
                        posthuman_store::StoreError::NotFound { .. } => {
                            ApiError::from(UploadError::Missing {
                                id: self.id.clone(),
                                file: f.name.clone(),
                            })
                        }
                        posthuman_store::StoreError::TooLarge { .. } => {
                            mismatch("longer than declared").into()
                        }
                        e => e.into(),
                    })?;
                    let sha = Hash32(<Sha256 as sha2::Digest>::digest(&b).into());
                    if b.len() as u64 != f.bytes || sha != f.sha256 {
                        return Err(mismatch("its bytes are not the declared ones").into());
                    }
                    Fetched::Memory(b)
                }
                Keep::Spool => {
                    let s = Spooled::from_store(&*deps.store, &key, &deps.cfg.spool_dir()).await?;
                    if s.len() != f.bytes || s.sha256() != f.sha256 {
                        return Err(mismatch("its bytes are not the declared ones").into());
                    }
                    Fetched::Spooled(s)
                }
            };
            out.insert(f.name.clone(), fetched);
            so_far += f.bytes;
            read(so_far);
        }
        Ok(out)
    }

    /// Consumes the upload (`used`: its files are deleted, the marker stays until the sweep)
    /// or releases it for another try. Best effort: what is left, the sweep removes.
    pub async fn finish(self, deps: &Deps, used: bool) {
        let r = if used {
            let mut r = Ok(());
            for f in &self.files {
                r = r.and(deps.store.delete(&staged_key(&self.id, &f.name)).await);
                r = r.and(deps.store.delete(&verified_key(&self.id, &f.name)).await);
            }
            r
        } else {
            deps.store.delete(&used_key(&self.id)).await
        };
        if let Err(e) = r {
            tracing::warn!(upload = %self.id, error = %e, "finishing an upload; the sweep will");
        }
    }
}

/// Deletes every upload whose expiry is more than [`UPLOAD_RETENTION_SECS`] before `now`
/// (and staged files without a readable manifest); returns how many uploads went.
pub async fn sweep_uploads(deps: &Deps, now: u64) -> Result<usize, ApiError> {
    let keys = deps.store.list(STAGING_PREFIX).await?;
    let mut by_id: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for k in &keys {
        let id = k[STAGING_PREFIX.len()..].split('/').next().unwrap_or_default();
        by_id.entry(id).or_default().push(k);
    }
    let mut swept = 0;
    for (id, keys) in by_id {
        let expired = match deps.store.get(&manifest_key(id), 64 << 10).await {
            Ok(b) => serde_json::from_slice::<Manifest>(&b)
                .map_or(true, |m| m.expires_at.saturating_add(UPLOAD_RETENTION_SECS) < now),
            // A manifest is written before any URL is handed out: files without one are junk.
            Err(posthuman_store::StoreError::NotFound { .. }) => true,
            Err(e) => return Err(e.into()),
        };
        if !expired {
            continue;
        }
        for k in keys {
            deps.store.delete(k).await?;
        }
        swept += 1;
    }
    Ok(swept)
}

/// Runs [`sweep_uploads`] every ten minutes until the returned task is aborted.
pub fn spawn_periodic(deps: Arc<Deps>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            if let Err(e) = sweep_uploads(&deps, now_secs()).await {
                tracing::warn!(error = %e, "upload sweep failed; retrying on the next tick");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_one_shape() {
        assert!(check_id(&format!("u-{}", "ab12".repeat(8))).is_ok());
        for bad in ["", "u-", "u-../../x", &format!("u-{}", "AB12".repeat(8)), &"u-1".repeat(12)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_upload_purpose_takes_its_routes_files() {
        let l = Limits::default();
        let names: Vec<_> = publish_files(&l).iter().map(|f| f.0).collect();
        assert!(names.contains(&"weights") && !names.contains(&"dataset"));
        assert_eq!(submit_files(&l)[0], ("dataset", l.max_dataset_bytes, Keep::Spool));
    }
}
