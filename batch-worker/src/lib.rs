//! The batch worker: train, infer and evaluate in candle for every family
//! [`posthuman_gpt2::family`] runs (GPT-2, Llama; `config.json`'s `model_type` picks) — the
//! compute in compute-to-data.
//!
//! It runs as a process (the local queue) or a container on AWS Batch. It reads a
//! [`posthuman_types::JobSpec`], the private weights and the buyer's dataset through
//! [`posthuman_store::ObjectStore`], runs the job and writes the new private weights and the
//! public outputs back. Public outputs are an allowlist: `progress.json`, `metrics.json`,
//! `completions.json`, `report.json`, `error.json`, `run.json` (hashes for receipts) — never
//! weights, gradients or checkpoints.
//! The models themselves are `posthuman-gpt2`; this crate is everything around them.
//!
//! Modules, in data-flow order:
//! - [`config`]: the operator's limits, built once in `main`.
//! - [`error`]: error classes and their exit codes (the one place they are mapped).
//! - [`runner`]: spec parsing and re-validation, dispatch, `error.json`.
//! - [`model_io`]: models under a store prefix; `_COMPLETE` manifest written last.
//! - [`tokenizer`]: `tokenizer.json` loading (with the optional HF configs: stop ids, BOS)
//!   and byte-level BPE training. [`chat`]: chat templates for `messages`.
//! - [`data`]: dataset validation, hashing, packing and seeded batch order.
//! - [`memory`]: the preflight memory estimate.
//! - [`train`]: the train job (schedule, checkpoints, resume); [`merkle`]: the checkpoint
//!   Merkle tree its receipt commits to.
//! - [`infer`] with [`sampling`]: generation. [`evaluate`]: sliding-window perplexity.
//! - [`progress`]: throttled `progress.json`. [`setup`]: random-init models for the demo.
//! - [`device`]: the CPU, or the first CUDA GPU in a `cuda` build (the CPU with a warning
//!   when none can be opened, or a refusal with exit 19 under `--require-gpu`, which the
//!   Batch job definition sets); `scripts/cuda-check.sh` keeps that build compiling.

pub mod chat;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod evaluate;
pub mod infer;
pub mod memory;
pub mod merkle;
pub mod model_io;
pub mod progress;
pub mod runner;
pub mod sampling;
pub mod setup;
pub mod tokenizer;
pub mod train;

pub use config::WorkerConfig;
pub use error::{WorkerError, exit};
pub use runner::{JobOutcome, parse_spec, run_job};
