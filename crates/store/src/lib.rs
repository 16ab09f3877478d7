//! The ObjectStore boundary: one trait, a filesystem and an S3 implementation.
//!
//! Everything that moves weights, datasets, job specs and outputs goes through
//! [`ObjectStore`]: the functions layer writes uploads and reads results, the batch worker
//! reads its inputs and writes new weights. In production the store is S3 ([`S3Store`]);
//! the embedded default and tests use the filesystem ([`LocalStore`]). Both pass the same
//! contract suite (`tests/contract.rs`).
//!
//! Guarantees every implementation gives:
//! - **Atomic writes**: a reader sees a whole object or nothing, never a prefix of one, even
//!   if the writer fails or is killed halfway (fs: temp file + fsync + rename; S3: a PUT or a
//!   multipart upload that is only completed after every part arrived, aborted otherwise).
//! - **Validated keys** ([`key::validate_key`]): relative ASCII paths without empty, `.` or
//!   `..` segments, so a key can never address anything outside the store.
//! - **Bounded reads**: [`ObjectStore::get`] refuses objects over a caller-given limit
//!   before reading them.
//! - `delete` of an absent key succeeds (S3 semantics), `list` returns sorted keys.
//!
//! Beyond the trait, both stores have `put_reader(key, impl AsyncRead)` (stream an HTTP
//! upload straight in, atomically); [`S3Store`] also has `from_client`, `with_part_size`,
//! `create_bucket` (dev server/tests) and `client()`. [`Hooked`] wraps any store with a hook run
//! before each operation: how tests inject a failing disk or park a write.
//!
//! Modules: [`error`] (what a caller can do about a failure), [`key`] (key rules),
//! [`local`] (filesystem), [`s3`] (aws-sdk-s3, also against LocalStack/moto).
//! `examples/store_bench.rs` measures throughput; the twins are started by
//! `localstack/twins.sh` (see its README).

pub mod error;
mod fsutil;
pub mod hooked;
pub mod key;
pub mod local;
pub mod s3;

use std::path::Path;

use bytes::Bytes;

pub use error::StoreError;
pub use hooked::{Hooked, StoreHook, StoreOp};
pub use local::LocalStore;
pub use s3::{S3Config, S3Store};

/// A flat key → bytes store with atomic writes. See the crate docs for the guarantees.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug + 'static {
    /// Atomic: readers see the whole object or nothing (fs: write temp + rename; S3: PUT/multipart).
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
    /// Streams a local file up (S3 multipart for big files), atomic like put.
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError>;
    /// Creates only if absent; Ok(false) if the key already existed (S3 If-None-Match: *).
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError>;
    /// Whole object, refusing objects over `max_bytes` with StoreError::TooLarge (no full read).
    async fn get(&self, key: &str, max_bytes: u64) -> Result<Bytes, StoreError>;
    /// Streams the object to a local file; returns its size.
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError>;
    /// Size in bytes, or None if absent.
    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError>;
    /// Keys under a prefix, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Removes the object; succeeds if it was already absent.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}
