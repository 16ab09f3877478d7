//! The batch worker: GPT-2 train, infer and evaluate in candle — the compute in
//! compute-to-data.
//!
//! It runs as a process (the local queue) or a container on AWS Batch. It reads a
//! [`posthuman_types::JobSpec`], the private weights and the buyer's dataset through
//! [`posthuman_store::ObjectStore`], runs the job and writes the new private weights and the
//! public outputs back. Public outputs are an allowlist: `progress.json`, `metrics.json`,
//! `completions.json`, `report.json`, `error.json` — never weights or gradients.
//!
//! Modules, in data-flow order:
//! - [`config`]: the operator's limits, built once in `main`.
//! - [`error`]: error classes and their exit codes (the one place they are mapped).
//! - [`tokenizer`]: `tokenizer.json` loading and byte-level BPE training.
//! - [`data`]: dataset validation, hashing, packing and seeded batch order.
//! - [`merkle`]: the checkpoint Merkle tree a train receipt commits to.
//! - [`train`]: the train job (schedule, checkpoints, resume, memory preflight).

pub mod config;
pub mod data;
pub mod error;
pub mod merkle;
pub mod tokenizer;
pub mod train;

pub use config::WorkerConfig;
pub use error::{WorkerError, exit};
