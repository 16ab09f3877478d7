//! The worker's runtime configuration: one typed struct, built once in `main` (clap + env)
//! and passed down by reference. Nothing below reads the environment.

/// Operator-side limits and knobs (never part of a job spec, never buyer-controlled).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Largest dataset accepted, in bytes.
    pub max_dataset_bytes: u64,
    /// Largest `model.safetensors` accepted, in bytes.
    pub max_weights_bytes: u64,
    /// Memory budget for one job; the preflight estimate must stay under it.
    pub memory_limit_bytes: u64,
    /// Minimum seconds between two `progress.json` writes.
    pub progress_interval_secs: f64,
    /// Stop (as if killed) right after writing the checkpoint of this step. Used by the
    /// resume tests and by operators draining a node; `None` in normal runs.
    pub stop_after_checkpoint: Option<u32>,
    /// Refuse jobs ([`crate::WorkerError::NoGpu`]) unless the compute device is a GPU: on
    /// Batch's GPU queue a CPU fallback would run a job ~50× slower while billing GPU hours.
    pub require_gpu: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            max_dataset_bytes: 256 * 1024 * 1024,
            max_weights_bytes: 8 * 1024 * 1024 * 1024,
            memory_limit_bytes: 16 * 1024 * 1024 * 1024,
            progress_interval_secs: 2.0,
            stop_after_checkpoint: None,
            require_gpu: false,
        }
    }
}
