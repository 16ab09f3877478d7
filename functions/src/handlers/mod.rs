//! The handlers: plain async functions over typed input and borrowed [`Deps`].
//!
//! - [`models`]: publish a model, list and get the catalogue, quote a job.
//! - [`precheck`]: who may upload, from the signed parts, before any file part is read.
//! - [`pricing`]: the quote's terms, their binding into the provider fee, the fee check at
//!   submit, and the published rates.
//! - [`sale`]: a derived model's card follows its sale on Ocean's exchange (opened by its
//!   trainer on chain).
//! - [`featured`]: the owner features buyers' evaluations on the model's card.
//! - [`card`]: the owner edits the card (description, tags); the model's DDO on chain follows.
//! - [`jobs`]: submit a paid job, its status with live progress, its public results.
//! - [`lists`]: a buyer's jobs, one page at a time, through the catalogue's index.
//! - [`complete`]: the completion of a job (local queue callback / Batch event): receipts,
//!   commit-before-reveal, the derived model and its rewards, or a failure and the order's
//!   release.
//! - [`ocean`]: the Ocean Provider compute API (ocean.js's `ProviderInstance`) over the same
//!   quote, submit and results.
//! - [`views`]: the public shapes the API returns (never weights or storage keys).
//!
//! [`Deps`]: crate::deps::Deps

pub mod card;
pub mod complete;
pub mod featured;
pub mod jobs;
pub mod lists;
pub mod models;
pub mod ocean;
pub mod precheck;
pub mod pricing;
pub mod sale;
pub mod views;

use crate::error::ApiError;

/// One writer of model records at a time in this process: card edits, featurings and sale
/// syncs each read a record, change it and write it whole, so two at once would lose one's
/// change. Shared by the three handlers, so it lives beside them rather than in one of them.
/// (Across processes the catalogue has no compare-and-swap yet; on AWS the one API function
/// that sends transactions runs one instance at a time.)
static RECORD_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the process's turn to read-modify-write a model record.
pub(crate) async fn record_turn() -> tokio::sync::MutexGuard<'static, ()> {
    RECORD_WRITES.lock().await
}

/// Maps a chain failure to the API: RPC trouble is transient, the rest is ours.
pub(crate) fn chain_err(e: posthuman_chain::ChainError) -> ApiError {
    match e {
        posthuman_chain::ChainError::Rpc(m) => ApiError::unavailable("chain RPC", m),
        posthuman_chain::ChainError::SpentStore(m) => ApiError::unavailable("order ledger", m),
        other => ApiError::Internal(other.to_string()),
    }
}
