//! What a job may publish — the public allowlist — and how it reports progress.
//!
//! Nothing here can carry weights: metrics are scalars and short curves, generated text is
//! text, and hashes are commitments. The worker writes these as JSON under the job's public
//! prefix; the API serves them to the buyer who paid.

use serde::{Deserialize, Serialize};

use crate::{Hash32, JobKind};

/// Live progress, rewritten by the worker as it goes (`progress.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    pub kind: JobKind,
    /// What the worker is doing: `loading`, `training`, `evaluating`, `generating`, `saving`.
    pub phase: String,
    /// Units done and total (optimizer steps, windows or tokens, by kind).
    pub done: u64,
    pub total: u64,
    /// Most recent training loss, if training.
    #[serde(default)]
    pub loss: Option<f64>,
    pub tokens_per_sec: f64,
    pub elapsed_secs: f64,
    /// Estimated seconds left, once known.
    #[serde(default)]
    pub eta_secs: Option<f64>,
}

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running {
        #[serde(default)]
        progress: Option<JobProgress>,
    },
    Succeeded,
    /// The worker's reason is one sanitized sentence; `exit_code` is the worker's exit code.
    Failed {
        reason: String,
        exit_code: Option<i32>,
    },
}

impl JobStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed { .. })
    }
}

/// One committed training checkpoint: the state after optimizer step `step`, as a leaf of the
/// checkpoint Merkle tree a train receipt commits to (the worker's `merkle` module hashes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub step: u32,
    /// Canonical weights hash.
    pub weights: Hash32,
    /// Canonical optimizer-state hash (AdamW step counter and moments).
    pub optimizer: Hash32,
}

/// Result of a train job (`metrics.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainMetrics {
    pub steps: u32,
    pub tokens_trained: u64,
    pub final_loss: f64,
    /// (step, loss) pairs, at most a few hundred, for the loss curve.
    pub loss_curve: Vec<(u32, f64)>,
    pub tokens_per_sec: f64,
    pub wall_secs: f64,
    pub input_weights_hash: Hash32,
    pub output_weights_hash: Hash32,
    pub dataset_hash: Hash32,
    /// Merkle root over the checkpoints, and the interval between checkpoints.
    pub checkpoint_root: Hash32,
    pub checkpoint_every: u32,
    /// Canonical weights hash of each checkpoint, in step order (the Merkle leaves commit to
    /// them with the optimizer-state hashes below).
    pub checkpoint_hashes: Vec<Hash32>,
    /// Canonical optimizer-state hash (AdamW step counter and moments) of each checkpoint.
    pub checkpoint_optimizer_hashes: Vec<Hash32>,
}

/// Why generation stopped for one prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `max_new_tokens` reached.
    Length,
    /// A stop string appeared (it is cut from the text).
    Stop,
    /// The model emitted its end-of-text token.
    EndOfText,
    /// The model's context is full.
    Context,
}

/// One generated completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub prompt: String,
    pub text: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub stop_reason: StopReason,
}

/// Result of an evaluate job (`report.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub weights_hash: Hash32,
    pub dataset_hash: Hash32,
    pub tokens_scored: u64,
    pub context_len: u32,
    pub stride: u32,
    /// Mean negative log-likelihood per scored token (nats).
    pub mean_nll: f64,
    pub perplexity: f64,
    #[serde(default)]
    pub baseline_label: Option<String>,
    #[serde(default)]
    pub baseline_perplexity: Option<f64>,
    /// `perplexity / baseline_perplexity` (< 1 means better than the baseline).
    #[serde(default)]
    pub ratio_to_baseline: Option<f64>,
    pub tokens_per_sec: f64,
}
