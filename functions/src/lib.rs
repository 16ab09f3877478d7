//! Posthuman's functions layer: paid compute-to-data over HTTP.
//!
//! Where it sits: the storefront and CLI call this API; it checks payments on chain
//! (`posthuman-chain`), keeps weights and datasets in the private object store
//! (`posthuman-store`), queues the batch worker (`posthuman-worker`) and, when a job is done,
//! signs its receipt (`posthuman-receipts`) and publishes derived models with their rewards.
//!
//! Modules:
//! - [`queue`]: the `JobQueue` boundary — local child processes (SQLite state) / AWS Batch.
//! - [`catalogue`]: the state-store boundary — SQLite / JSON objects in S3 (conditional
//!   writes) — for models, jobs, the used-order ledger and request nonces.
//! - [`auth`]: EIP-712 signed requests bound to the deployment, nonces, expiry.
//! - [`deps`]: the [`deps::Deps`] every handler borrows, limits and API configuration.
//! - [`handlers`]: plain async fns (publish, catalogue, quote, submit, status, result,
//!   completion).
//! - [`error`]: [`error::ApiError`], translated once into status + JSON.
//! - [`api`]: the one axum router (embedded server and `lambda_http`), built from one route
//!   table.
//! - [`openapi`]: the OpenAPI document, generated from that table and the wire types.
//! - [`spool`]: upload files streamed to disk as they arrive (hashed, capped, removed on
//!   every path), so an upload costs a chunk of memory rather than its size.
//! - [`publishes`]: asynchronous publishes (202, then a status record the work updates) and
//!   the `PublishRunner` boundary — a tokio task / an asynchronous Lambda invocation.
//! - [`prune`]: checkpoint retention — a finished train job's checkpoints are pruned after
//!   the operator's audit window.
//! - [`sweep`]: recovery of paid jobs a crash left between the order claim and the queue.
//! - [`server`]: the embedded default, [`server::serve`] (anvil, local queue, filesystem
//!   store, SPA files).
//! - [`secrets`]: the operator key read from AWS Secrets Manager at cold start.
//! - [`aws`]: wiring the same handlers to S3, Batch and a remote chain for Lambda.

pub mod api;
pub mod auth;
pub mod aws;
pub mod catalogue;
pub mod deps;
pub mod error;
pub mod handlers;
pub mod openapi;
pub mod prune;
pub mod publishes;
pub mod queue;
pub mod secrets;
pub mod server;
pub mod spool;
pub mod sweep;
pub mod uploads;
