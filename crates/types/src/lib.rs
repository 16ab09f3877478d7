//! Wire types of Posthuman, shared by every layer.
//!
//! This crate sits at the bottom of the dependency graph: the Lambda handlers and the embedded
//! server (`functions/`), the batch worker (`batch-worker/`), the CLI and the Yew storefront
//! (`web/`) all speak these types. It depends on `serde` and `serde_json` alone so that it
//! builds for `wasm32-unknown-unknown` unchanged; the feature `openapi` adds the JSON Schemas
//! (`utoipa`) the API's OpenAPI document is generated from, and only the API turns it on.
//!
//! - [`hash`]: 32-byte content hashes (weights, datasets, receipts) as `0x…` hex.
//! - [`job`]: the job spec the handlers queue and the worker runs, with its validated bounds.
//! - [`outputs`]: what a job may publish (the public allowlist) and its live progress.
//! - [`model`]: reward schemes and the public model card.
//! - [`card`]: what a model's owner may edit on its card (description, tags) and the bounds.
//! - [`de`]: reading structs as maps only (serde's array form of structs left out of the
//!   storefront's wasm).
//! - [`exit`]: the worker's exit codes and which are the buyer's fault (retries, orders).
//! - [`pricing`]: a job's compute estimate, its price at the operator's rates, its budget.
//! - [`views`]: the API's public views (models, jobs, quotes, results, the chain, errors), as
//!   the API writes them and its clients read them.
//! - [`publishes`]: an asynchronous publish's acceptance and its live status.
//! - [`requests`]: the signed requests clients send (publish, submit, feature).
//! - [`ocean`]: the Ocean Provider requests of the API's Ocean facade (ocean.js's shapes).
//! - [`uploads`]: direct uploads (declare the files, PUT each where the API says, name the
//!   upload on the publish or submit) and the caps the API takes them under.
//!
//! Validation lives here too (pure functions, no I/O), so the API rejects a bad spec with the
//! very same rule the worker would apply.

/// Where the embedded server listens by default (`posthuman-server --listen`).
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8080";
/// The API the CLI talks to by default: the embedded server above.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

pub mod card;
pub mod de;
pub mod exit;
pub mod hash;
pub mod job;
pub mod model;
pub mod ocean;
pub mod outputs;
pub mod pricing;
pub mod publishes;
pub mod requests;
#[cfg(feature = "openapi")]
mod schema;
pub mod uploads;
pub mod views;

pub use hash::Hash32;
pub use job::{
    Budget, ChatMessage, EvalParams, InferParams, JobKind, JobParams, JobSpec, LoraParams,
    Sampling, SpecError, TrainParams,
};
pub use model::{ModelCard, RewardScheme};
pub use outputs::{
    Checkpoint, Completion, EvalReport, JobProgress, JobStatus, LoraOutput, StopReason,
    TrainMetrics,
};
