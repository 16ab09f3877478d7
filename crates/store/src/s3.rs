//! [`S3Store`]: the object store on S3 (production), also run against LocalStack and moto.
//!
//! - `put` is one PUT; `put_file` / [`S3Store::put_reader`] stream: a body that fits in one
//!   part is a single PUT, a bigger one a multipart upload that is completed only after every
//!   part arrived and aborted on any error, so a failed upload never becomes visible.
//! - `put_if_absent` is a conditional PUT with `If-None-Match: *` (412 → `Ok(false)`).
//! - `get` checks the GET response's Content-Length before reading the body and refuses
//!   objects over the limit (and stops reading if a body runs past what it announced).
//! - SDK errors map once, in `map_sdk_err`: 404/NoSuchKey → NotFound, throttling, 5xx,
//!   timeouts and connection failures → Unavailable (the SDK already retried them).

use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, SharedCredentialsProvider};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::fsutil::{io_err, write_file_atomically};
use crate::key::{validate_key, validate_prefix};
use crate::{ObjectStore, StoreError};

/// S3's smallest allowed part (all parts but the last must be at least this big).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Default part size for multipart uploads; bodies up to this size go in one PUT.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// Part uploads running at once: one S3 connection carries far less than an instance's
/// network, and the memory cost is this many part buffers.
pub const PARTS_IN_FLIGHT: usize = 4;

/// Where the S3 store lives. `endpoint_url` + `force_path_style` point it at LocalStack/moto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint_url: Option<String>,
    pub region: String,
    pub force_path_style: bool,
}

/// An [`ObjectStore`] over one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    part_size: usize,
    /// The provider the client's credentials come from, when [`S3Store::new`] built it (the
    /// client's config no longer tells): presigners read their expiry.
    credentials: Option<SharedCredentialsProvider>,
}

impl S3Store {
    /// Builds a client from the default AWS credential chain (env, profile, container/IMDS
    /// role) with the given region and optional endpoint override. Does no network I/O.
    pub async fn new(cfg: S3Config) -> Result<Self, StoreError> {
        if cfg.bucket.is_empty() {
            return Err(StoreError::Io("S3Config.bucket is empty".into()));
        }
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .load()
            .await;
        let mut b = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(cfg.force_path_style);
        if let Some(url) = &cfg.endpoint_url {
            b = b.endpoint_url(url);
        }
        let credentials = sdk.credentials_provider();
        Ok(Self { credentials, ..Self::from_client(Client::from_conf(b.build()), cfg.bucket) })
    }

    /// Wraps an already configured client (tests use static credentials this way).
    pub fn from_client(client: Client, bucket: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into(), part_size: DEFAULT_PART_SIZE, credentials: None }
    }

    /// The credentials provider the client signs with: the default chain's for a store from
    /// [`S3Store::new`], `None` for one from [`S3Store::from_client`].
    pub fn credentials_provider(&self) -> Option<&SharedCredentialsProvider> {
        self.credentials.as_ref()
    }

    /// Sets the multipart part size (clamped to S3's 5 MiB minimum). Bodies up to one part
    /// go in a single PUT.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket if it does not exist yet (dev server and tests; production
    /// buckets come from infrastructure code).
    pub async fn create_bucket(&self) -> Result<(), StoreError> {
        let region = self.client.config().region().map(|r| r.as_ref().to_owned());
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that rejects an explicit location constraint.
        if let Some(r) = region.filter(|r| r != "us-east-1") {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(r.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
            Err(e) => Err(map_sdk_err(&self.bucket, "create bucket", e)),
        }
    }

    /// Streams `reader` into `key`; returns the byte count. At most one part is buffered.
    /// If the reader or an upload fails, the multipart upload is aborted and nothing is
    /// visible under `key` (an existing object stays as it was).
    pub async fn put_reader<R>(&self, key: &str, mut reader: R) -> Result<u64, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        validate_key(key)?;
        let first = read_part(&mut reader, self.part_size).await?;
        if first.len() < self.part_size {
            let n = first.len() as u64;
            self.put_object(key, first.freeze()).await?;
            return Ok(n);
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_sdk_err(key, "create multipart upload", e))?;
        let Some(upload_id) = created.upload_id().map(str::to_owned) else {
            return Err(StoreError::Io(format!("no upload id for {key:?}")));
        };
        match self.upload_parts(key, &upload_id, first, &mut reader).await {
            Ok(n) => Ok(n),
            Err(e) => {
                // Best effort: an unaborted upload is invisible anyway, it only costs storage
                // until the bucket's lifecycle rule removes it.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    /// Uploads `first` and the rest of `reader` as parts, up to [`PARTS_IN_FLIGHT`] at a time
    /// (memory: that many part buffers), then completes the upload. On error the in-flight
    /// part uploads are dropped (the JoinSet aborts them) and the caller aborts the upload.
    async fn upload_parts<R>(
        &self,
        key: &str,
        upload_id: &str,
        first: BytesMut,
        reader: &mut R,
    ) -> Result<u64, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let mut inflight = tokio::task::JoinSet::new();
        let mut parts = Vec::new();
        let mut total = 0u64;
        let mut number = 0i32;
        let mut chunk = first;
        while !chunk.is_empty() {
            while inflight.len() >= PARTS_IN_FLIGHT {
                parts.push(join_part(&mut inflight).await?);
            }
            number = number
                .checked_add(1)
                .filter(|&n| n <= 10_000)
                .ok_or_else(|| StoreError::Io(format!("{key:?}: over 10,000 parts")))?;
            total += chunk.len() as u64;
            let req = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk.freeze()));
            let k = key.to_owned();
            inflight.spawn(async move {
                let out = req.send().await.map_err(|e| map_sdk_err(&k, "upload part", e))?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build())
            });
            chunk = read_part(reader, self.part_size).await?;
        }
        while !inflight.is_empty() {
            parts.push(join_part(&mut inflight).await?);
        }
        parts.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| map_sdk_err(key, "complete multipart upload", e))?;
        Ok(total)
    }

    async fn put_object(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk_err(key, "put", e))
    }

    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        validate_key(key)?;
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_sdk_err(key, "get", e))
    }
}

/// Waits for one part upload of the set.
async fn join_part(
    set: &mut tokio::task::JoinSet<Result<CompletedPart, StoreError>>,
) -> Result<CompletedPart, StoreError> {
    match set.join_next().await {
        Some(Ok(part)) => part,
        Some(Err(e)) => Err(StoreError::Io(format!("part upload task failed: {e}"))),
        None => Err(StoreError::Io("no part upload in flight".into())),
    }
}

/// Reads until `size` bytes or end of input.
async fn read_part<R>(reader: &mut R, size: usize) -> Result<BytesMut, StoreError>
where
    R: AsyncRead + Unpin + Send,
{
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        let want = size - buf.len();
        let n = (&mut *reader)
            .take(want as u64)
            .read_buf(&mut buf)
            .await
            .map_err(|e| io_err("reading the upload source", e))?;
        if n == 0 {
            break;
        }
    }
    Ok(buf)
}

/// Translates an SDK failure into what the caller can do about it.
pub(crate) fn map_sdk_err<E>(key: &str, op: &str, err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = format!("{op} {key:?}: {}", DisplayErrorContext(&err));
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(text)
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            match se.err().code() {
                Some("NoSuchBucket") => StoreError::Io(text),
                Some("NoSuchKey" | "NotFound") => StoreError::not_found(key),
                Some(
                    "SlowDown"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestTimeout"
                    | "InternalError"
                    | "ServiceUnavailable",
                ) => StoreError::Unavailable(text),
                _ if status == 404 => StoreError::not_found(key),
                _ if status == 429 || status >= 500 => StoreError::Unavailable(text),
                _ => StoreError::Io(text),
            }
        }
        _ => StoreError::Io(text),
    }
}

fn status_of<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        validate_key(key)?;
        self.put_object(key, body).await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        validate_key(key)?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| io_err(&format!("opening {}", path.display()), e))?;
        self.put_reader(key, file).await.map(|_| ())
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        validate_key(key)?;
        // 409 ConditionalRequestConflict: a concurrent conditional write to the same key was
        // in flight; S3 asks the caller to retry, after which one of them sees 412.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let res = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .if_none_match("*")
                .body(ByteStream::from(body.clone()))
                .send()
                .await;
            match res {
                Ok(_) => return Ok(true),
                Err(e) if status_of(&e) == Some(412) => return Ok(false),
                Err(e) if status_of(&e) == Some(409) && attempts < 5 => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempts)).await;
                }
                Err(e) => return Err(map_sdk_err(key, "conditional put", e)),
            }
        }
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Bytes, StoreError> {
        let out = self.get_object(key).await?;
        // Refuse before reading: the announced length is checked first, and the read stops
        // as soon as the body runs past the limit (a body without a length is still bounded).
        let announced = out.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(size) = announced.filter(|&s| s > max_bytes) {
            return Err(StoreError::TooLarge { key: key.to_owned(), size, limit: max_bytes });
        }
        let mut body = out.body;
        let mut buf = BytesMut::with_capacity(announced.unwrap_or(0) as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading {key:?}: {e}")))?
        {
            buf.extend_from_slice(&chunk);
            if buf.len() as u64 > max_bytes {
                return Err(StoreError::TooLarge {
                    key: key.to_owned(),
                    size: buf.len() as u64,
                    limit: max_bytes,
                });
            }
        }
        Ok(buf.freeze())
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let out = self.get_object(key).await?;
        write_file_atomically(path, out.body.into_async_read()).await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        validate_key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => {
                Ok(Some(out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)))
            }
            Err(e) => match map_sdk_err(key, "head", e) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk_err(prefix, "list", e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk_err(key, "delete", e))
    }
}
