//! A typed HTTP client for the Posthuman API (`functions/`): the same view types the server
//! returns, EIP-712 signed requests, and one translation of HTTP failures into [`CliError`].

use std::time::{SystemTime, UNIX_EPOCH};

use alloy::signers::local::PrivateKeySigner;
use posthuman_receipts::ReceiptDomain;
use posthuman_receipts::request::{
    CREATE_UPLOAD, EDIT_CARD, PUBLISH_MODEL, READ_RESULT, SUBMIT_JOB, SignableRequest,
};
use posthuman_types::publishes::{PublishAccepted, PublishState, PublishView};
use posthuman_types::requests::{JobRequest, PublishRequest};
use posthuman_types::uploads::{
    DeclaredFile, PutTarget, UPLOAD_HEADER, UploadGrant, UploadPurpose, UploadRequest,
};
use posthuman_types::views::{JobResult, JobView, ModelView, Quote, QuoteTerms, SubmittedView};
use posthuman_types::{Hash32, JobKind};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::CliError;

/// How long a signed request stays valid (the API accepts at most an hour).
const REQUEST_VALIDITY_SECS: u64 = 600;

/// How often a publish's status is asked for while it runs.
const PUBLISH_POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// The longest a publish is followed: the API's deadline (15 minutes and one) and a margin.
const PUBLISH_WAIT_SECS: u64 = 17 * 60;

/// The response header naming a list's next page (absent on the last page).
const NEXT_CURSOR_HEADER: &str = "x-posthuman-next-cursor";
/// Records asked for per list page (the API's maximum).
const PAGE: usize = 200;
/// Pages followed before a list is judged endless (a broken or hostile API).
const MAX_PAGES: usize = 10_000;

/// Percent-encodes a query value (everything but unreserved characters).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The API at one base URL.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh single-use nonce (the API rejects a repeated one per signer).
pub fn nonce() -> String {
    format!("n-{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>())
}

/// The expiry to put in a request signed now.
pub fn expiry() -> u64 {
    now_secs() + REQUEST_VALIDITY_SECS
}

/// Signs a JSON request body for `action` as EIP-712 typed data under the deployment's
/// `domain` (the API refuses the signature on any other chain or deployment).
fn sign(
    signer: &PrivateKeySigner,
    domain: &ReceiptDomain,
    action: &str,
    body: &[u8],
) -> Result<String, CliError> {
    SignableRequest::of_json_body(action, body)
        .and_then(|r| r.sign(domain, signer))
        .map_err(|e| CliError::Internal(format!("signing the request: {e}")))
}

impl ApiClient {
    pub fn new(base: &str) -> Result<Self, CliError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!("--api must be an http(s) URL, not {base:?}")));
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| CliError::Internal(format!("HTTP client: {e}")))?;
        Ok(ApiClient { base, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn decode<T: DeserializeOwned>(&self, r: reqwest::RequestBuilder) -> Result<T, CliError> {
        Ok(self.decode_page(r).await?.0)
    }

    /// Decodes an answer and returns the next page's cursor, if the API named one.
    async fn decode_page<T: DeserializeOwned>(
        &self,
        r: reqwest::RequestBuilder,
    ) -> Result<(T, Option<String>), CliError> {
        let resp = r.send().await.map_err(|e| {
            CliError::Unavailable(format!("cannot reach the API at {} ({e})", self.base))
        })?;
        let status = resp.status();
        let next = resp
            .headers()
            .get(NEXT_CURSOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .bytes()
            .await
            .map_err(|e| CliError::Unavailable(format!("reading the API's answer: {e}")))?;
        if status.is_success() {
            let v = serde_json::from_slice(&body).map_err(|e| {
                CliError::Internal(format!("unexpected answer from the API ({status}): {e}"))
            })?;
            return Ok((v, next));
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        if status.is_client_error() {
            Err(CliError::Rejected(format!("{message} (HTTP {})", status.as_u16())))
        } else {
            Err(CliError::Unavailable(format!("{message} (HTTP {})", status.as_u16())))
        }
    }

    pub async fn health(&self) -> Result<serde_json::Value, CliError> {
        self.decode(self.http.get(format!("{}/api/health", self.base))).await
    }

    /// Where the deployment's chain is and its address book.
    pub async fn chain_info(&self) -> Result<crate::session::ChainInfo, CliError> {
        self.decode(self.http.get(format!("{}/api/chain", self.base))).await
    }

    /// Every model, following the list's pages.
    pub async fn models(&self) -> Result<Vec<ModelView>, CliError> {
        self.all_pages(&format!("{}/api/models?limit={PAGE}", self.base)).await
    }

    /// Every item of a paged list: `first` (a URL with a query) and then each page named by
    /// the previous one's `x-posthuman-next-cursor`, up to [`MAX_PAGES`] pages.
    async fn all_pages<T: DeserializeOwned>(&self, first: &str) -> Result<Vec<T>, CliError> {
        let mut out = Vec::new();
        let mut url = first.to_string();
        for _ in 0..MAX_PAGES {
            let (items, next): (Vec<T>, _) = self.decode_page(self.http.get(&url)).await?;
            out.extend(items);
            match next {
                // The cursor is opaque; escape it rather than trust its alphabet.
                Some(c) => url = format!("{first}&cursor={}", urlencode(&c)),
                None => return Ok(out),
            }
        }
        Err(CliError::Unavailable(format!(
            "the API's list did not end after {MAX_PAGES} pages of {PAGE} ({first})"
        )))
    }

    pub async fn model(&self, nft: &str) -> Result<ModelView, CliError> {
        self.decode(self.http.get(format!("{}/api/models/{nft}", self.base))).await
    }

    /// Has the API's card of a derived model follow its sale on chain.
    pub async fn sync_sale(&self, nft: &str) -> Result<ModelView, CliError> {
        self.decode(self.http.post(format!("{}/api/models/{nft}/sale", self.base))).await
    }

    pub async fn quote(&self, nft: &str, kind: JobKind) -> Result<Quote, CliError> {
        let url = format!("{}/api/models/{nft}/quote?kind={}", self.base, kind.as_str());
        self.decode(self.http.get(url)).await
    }

    /// The priced quote for these terms; its provider fee pays for exactly them.
    pub async fn quote_terms(&self, nft: &str, terms: &QuoteTerms) -> Result<Quote, CliError> {
        let body = serde_json::to_vec(terms).map_err(|e| CliError::Internal(e.to_string()))?;
        let url = format!("{}/api/models/{nft}/quote", self.base);
        self.decode(
            self.http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    /// Stages `files` with a direct upload (the API's `POST /api/uploads`, then a PUT of each
    /// file where it says: S3 on AWS, the server itself in the embedded default), advancing
    /// `bar` by the bytes sent. Returns the upload id a publish or submit then names.
    pub async fn upload(
        &self,
        signer: &PrivateKeySigner,
        domain: &ReceiptDomain,
        purpose: UploadPurpose,
        files: Vec<(&str, Vec<u8>)>,
        bar: &indicatif::ProgressBar,
    ) -> Result<String, CliError> {
        let req = UploadRequest {
            purpose,
            owner: format!("{:#x}", signer.address()),
            files: files
                .iter()
                .map(|(name, b)| DeclaredFile {
                    name: (*name).to_string(),
                    bytes: b.len() as u64,
                    sha256: Hash32(Sha256::digest(b).into()),
                })
                .collect(),
            nonce: nonce(),
            expires_at: expiry(),
        };
        let body = serde_json::to_vec(&req).map_err(|e| CliError::Internal(e.to_string()))?;
        let signature = sign(signer, domain, CREATE_UPLOAD, &body)?;
        let grant: UploadGrant = self
            .decode(
                self.http
                    .post(format!("{}/api/uploads", self.base))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("x-posthuman-signature", signature)
                    .body(body),
            )
            .await?;
        bar.set_length(files.iter().map(|(_, b)| b.len() as u64).sum::<u64>().max(1));
        let mut files: std::collections::HashMap<&str, Vec<u8>> = files.into_iter().collect();
        for t in grant.files {
            let data = files.remove(t.name.as_str()).ok_or_else(|| {
                CliError::Internal(format!("the API granted an undeclared file {:?}", t.name))
            })?;
            self.put_file(&t, bytes::Bytes::from(data), bar).await?;
        }
        if let Some(name) = files.keys().next() {
            return Err(CliError::Internal(format!("the API gave no URL for {name:?}")));
        }
        Ok(grant.upload_id)
    }

    /// Sends one staged file as `t` says, in chunks that advance `bar`.
    async fn put_file(
        &self,
        t: &PutTarget,
        data: bytes::Bytes,
        bar: &indicatif::ProgressBar,
    ) -> Result<(), CliError> {
        const CHUNK: usize = 256 << 10;
        let method = reqwest::Method::from_bytes(t.method.as_bytes())
            .map_err(|_| CliError::Internal(format!("the API asked for method {:?}", t.method)))?;
        let len = data.len();
        let pb = bar.clone();
        let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
            let c = data.slice(i * CHUNK..((i + 1) * CHUNK).min(len));
            pb.inc(c.len() as u64);
            Ok::<_, std::io::Error>(c)
        });
        // The embedded server's URLs are relative to the API's base; S3's are absolute.
        let url =
            if t.url.starts_with('/') { format!("{}{}", self.base, t.url) } else { t.url.clone() };
        let mut r = self.http.request(method, &url);
        for (k, v) in &t.headers {
            // The body's length is ours to send (and is what the URL was signed for).
            if k != "content-length" && k != "host" {
                r = r.header(k, v);
            }
        }
        // An explicit length: S3 takes no chunked PUT, and the URL is signed for it.
        let resp = r
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .map_err(|e| CliError::Unavailable(format!("uploading {}: {e}", t.name)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let detail: String = body.chars().take(300).collect();
        let msg = format!("uploading {} was refused (HTTP {}): {detail}", t.name, status.as_u16());
        Err(if status.is_client_error() {
            CliError::Rejected(msg)
        } else {
            CliError::Unavailable(msg)
        })
    }

    /// A signed JSON request with its files' upload, if any.
    async fn post_signed<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        signature: String,
        upload: Option<String>,
    ) -> Result<T, CliError> {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-posthuman-signature", signature);
        if let Some(id) = upload {
            r = r.header(UPLOAD_HEADER, id);
        }
        self.decode(r.body(body)).await
    }

    /// Publishes a model directory's files under a signed request: the files go by a direct
    /// upload (progress on `bar`), the publish names it; the API accepts it (202) and does
    /// the work in the background, which this follows ([`ApiClient::wait_publish`], each
    /// status on `on_status`) to the model, or to the error the API would have answered.
    pub async fn publish(
        &self,
        signer: &PrivateKeySigner,
        domain: &ReceiptDomain,
        req: &PublishRequest,
        files: ModelFiles,
        bar: &indicatif::ProgressBar,
        on_status: impl FnMut(&PublishView),
    ) -> Result<ModelView, CliError> {
        let body = serde_json::to_vec(req).map_err(|e| CliError::Internal(e.to_string()))?;
        let signature = sign(signer, domain, PUBLISH_MODEL, &body)?;
        let mut parts = vec![
            ("config", files.config),
            ("weights", files.weights),
            ("tokenizer", files.tokenizer),
        ];
        let optional = [
            ("tokenizer_config", files.tokenizer_config),
            ("generation_config", files.generation_config),
            ("chat_template", files.chat_template),
        ];
        parts.extend(optional.into_iter().filter_map(|(n, b)| Some((n, b?))));
        if let Some((c, w)) = files.adapter {
            parts.extend([("adapter_config", c), ("adapter_weights", w)]);
        }
        let upload = self.upload(signer, domain, UploadPurpose::Model, parts, bar).await?;
        let accepted: PublishAccepted =
            self.post_signed("/api/models", body, signature, Some(upload)).await?;
        self.wait_publish(&accepted.publish_id, on_status).await
    }

    /// A publish's status (`GET /api/publishes/{id}`).
    pub async fn publish_status(&self, id: &str) -> Result<PublishView, CliError> {
        self.decode(self.http.get(format!("{}/api/publishes/{id}", self.base))).await
    }

    /// Polls publish `id` until it ends, passing each status to `on_status`: the model when
    /// done, else the error the API recorded, as if `POST /api/models` had answered it (same
    /// message and HTTP status). The API reports a publish past its deadline as failed, so
    /// this ends; a status that never changes for [`PUBLISH_WAIT_SECS`] is given up on.
    pub async fn wait_publish(
        &self,
        id: &str,
        mut on_status: impl FnMut(&PublishView),
    ) -> Result<ModelView, CliError> {
        let start = std::time::Instant::now();
        loop {
            let v = self.publish_status(id).await?;
            on_status(&v);
            match v.state {
                PublishState::Done => {
                    return v.model.ok_or_else(|| {
                        CliError::Internal(format!("publish {id} is done but names no model"))
                    });
                }
                PublishState::Failed => {
                    let f = v.error.ok_or_else(|| {
                        CliError::Internal(format!("publish {id} failed without a reason"))
                    })?;
                    let msg = format!("{} (HTTP {})", f.message, f.status);
                    return Err(if (400..500).contains(&f.status) {
                        CliError::Rejected(msg)
                    } else {
                        CliError::Unavailable(msg)
                    });
                }
                PublishState::Queued | PublishState::Running => {}
            }
            if start.elapsed().as_secs() > PUBLISH_WAIT_SECS {
                return Err(CliError::Unavailable(format!(
                    "publish {id} still {:?} after {PUBLISH_WAIT_SECS} s: see `GET /api/publishes/{id}`",
                    v.state
                )));
            }
            tokio::time::sleep(PUBLISH_POLL).await;
        }
    }

    /// Edits a model's card under a signed request (`POST /api/models/{nft}/card`).
    pub async fn edit_card(
        &self,
        signer: &PrivateKeySigner,
        domain: &ReceiptDomain,
        req: &posthuman_types::card::CardEdit,
    ) -> Result<ModelView, CliError> {
        let body = serde_json::to_vec(req).map_err(|e| CliError::Internal(e.to_string()))?;
        let signature = sign(signer, domain, EDIT_CARD, &body)?;
        self.post_signed(&format!("/api/models/{}/card", req.model), body, signature, None).await
    }

    /// Submits a paid job under a signed request, with its dataset, if any, by a direct
    /// upload (progress on `bar`).
    pub async fn submit(
        &self,
        signer: &PrivateKeySigner,
        domain: &ReceiptDomain,
        req: &JobRequest,
        dataset: Option<Vec<u8>>,
        bar: &indicatif::ProgressBar,
    ) -> Result<SubmittedView, CliError> {
        let body = serde_json::to_vec(req).map_err(|e| CliError::Internal(e.to_string()))?;
        let signature = sign(signer, domain, SUBMIT_JOB, &body)?;
        let upload = match dataset {
            Some(d) => Some(
                self.upload(signer, domain, UploadPurpose::Dataset, vec![("dataset", d)], bar)
                    .await?,
            ),
            None => None,
        };
        self.post_signed("/api/jobs", body, signature, upload).await
    }

    /// A job's operator-signed receipt (public).
    pub async fn receipt(&self, job_id: &str) -> Result<serde_json::Value, CliError> {
        self.decode(self.http.get(format!("{}/api/jobs/{job_id}/receipt", self.base))).await
    }

    /// A buyer's jobs, newest first.
    /// Every job of `consumer`, newest first, following the list's pages.
    pub async fn jobs_of(&self, consumer: &str) -> Result<Vec<JobView>, CliError> {
        let url = format!("{}/api/jobs?consumer={}&limit={PAGE}", self.base, urlencode(consumer));
        self.all_pages(&url).await
    }

    pub async fn job(&self, job_id: &str) -> Result<JobView, CliError> {
        self.decode(self.http.get(format!("{}/api/jobs/{job_id}", self.base))).await
    }

    /// A job's public outputs, readable only by its buyer (signed read).
    pub async fn result(
        &self,
        signer: &PrivateKeySigner,
        domain: &ReceiptDomain,
        job_id: &str,
    ) -> Result<JobResult, CliError> {
        let expires = expiry();
        let signature = SignableRequest::read(READ_RESULT, job_id, expires)
            .sign(domain, signer)
            .map_err(|e| CliError::Internal(format!("signing the read: {e}")))?;
        let r = self
            .http
            .get(format!("{}/api/jobs/{job_id}/result", self.base))
            .header("x-posthuman-signature", signature)
            .header("x-posthuman-expires", expires.to_string())
            .header("x-posthuman-reader", format!("{:#x}", signer.address()));
        self.decode(r).await
    }
}

/// The weights of the model directory `dir`: its shards assembled when it has a shard index
/// (a shard set the loader would refuse is refused here, before anything is uploaded),
/// else `model.safetensors` read by `read`.
fn weights(
    dir: &std::path::Path,
    read: impl Fn(&str) -> Result<Vec<u8>, CliError>,
) -> Result<Vec<u8>, CliError> {
    use posthuman_gpt2::llama_weights::{CheckpointError, SAFE_WEIGHTS_INDEX_NAME, merge_sharded};
    let index = dir.join(SAFE_WEIGHTS_INDEX_NAME);
    if !index.is_file() {
        return read(posthuman_gpt2::llama_weights::SAFE_WEIGHTS_NAME);
    }
    merge_sharded(&index).map_err(|e| match e {
        CheckpointError::Io { path, source } => {
            CliError::Io(format!("cannot read {} ({source})", path.display()))
        }
        e => CliError::Checkpoint(format!("sharded checkpoint in {}: {e}", dir.display())),
    })
}

/// The three files of an HF-layout model directory, and the two optional ones that say how
/// it is prompted (`tokenizer_config.json`: special tokens, chat template;
/// `generation_config.json`: stop ids; `chat_template.jinja`), sent when the directory has
/// them.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    pub config: Vec<u8>,
    pub weights: Vec<u8>,
    pub tokenizer: Vec<u8>,
    /// A PEFT adapter over the weights: (`adapter_config.json`, `adapter_model.safetensors`).
    pub adapter: Option<(Vec<u8>, Vec<u8>)>,
    pub tokenizer_config: Option<Vec<u8>>,
    pub generation_config: Option<Vec<u8>>,
    pub chat_template: Option<Vec<u8>>,
}

impl ModelFiles {
    /// Adds the PEFT adapter saved in `dir` (as `peft`'s `save_pretrained` writes it).
    pub fn with_adapter(mut self, dir: &std::path::Path) -> Result<Self, CliError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read {} ({e}): a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors",
                    p.display()
                ))
            })
        };
        self.adapter = Some((read("adapter_config.json")?, read("adapter_model.safetensors")?));
        Ok(self)
    }

    /// Reads an HF-layout model directory. The weights are `model.safetensors`, or, when the
    /// directory holds `model.safetensors.index.json`, its shards assembled into that one
    /// file ([`posthuman_gpt2::llama_weights::merge_sharded`]: on-disk dtypes and bytes kept,
    /// so the canonical weights hash is the unsharded checkpoint's) after the loader's
    /// checks of the index against the shards.
    pub fn read(dir: &std::path::Path) -> Result<Self, CliError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read {} ({e}): a model directory holds config.json, model.safetensors (or model.safetensors.index.json and its shards) and tokenizer.json",
                    p.display()
                ))
            })
        };
        let optional = |name: &str| {
            let p = dir.join(name);
            match std::fs::read(&p) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(CliError::Usage(format!("cannot read {} ({e})", p.display()))),
            }
        };
        Ok(ModelFiles {
            config: read("config.json")?,
            weights: weights(dir, read)?,
            tokenizer: read("tokenizer.json")?,
            adapter: None,
            tokenizer_config: optional("tokenizer_config.json")?,
            generation_config: optional("generation_config.json")?,
            chat_template: optional("chat_template.jinja")?,
        })
    }
}
