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
            memory_limit_bytes: DEFAULT_MEMORY_LIMIT_MIB << 20,
            progress_interval_secs: 2.0,
            stop_after_checkpoint: None,
            require_gpu: false,
        }
    }
}

/// The memory budget when neither the operator nor a cgroup sets one, MiB.
pub const DEFAULT_MEMORY_LIMIT_MIB: u64 = 16 * 1024;

/// What the worker process needs beyond the preflight estimate (binary, allocator slack,
/// store and I/O buffers, CUDA's host-side context), kept below a cgroup's limit so a job
/// the preflight admits is not OOM-killed by the container.
pub const CGROUP_HEADROOM_MIB: u64 = 512;

/// The cgroup v2 limit of this process's container (`/sys/fs/cgroup/memory.max`), falling
/// back to cgroup v1 (`/sys/fs/cgroup/memory/memory.limit_in_bytes`); `None` when there is
/// no limit or no readable cgroup (not in a container).
pub fn cgroup_memory_limit_bytes() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    if let Some(text) = read("/sys/fs/cgroup/memory.max") {
        return parse_cgroup_memory_max(&text);
    }
    read("/sys/fs/cgroup/memory/memory.limit_in_bytes").and_then(|t| parse_cgroup_v1_limit(&t))
}

/// Parses cgroup v2 `memory.max`: a byte count, or `max` for none. Anything else (an
/// unexpected kernel format) is treated as no limit, leaving the configured budget in force.
pub fn parse_cgroup_memory_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        n => n.parse().ok(),
    }
}

/// Parses cgroup v1 `memory.limit_in_bytes`, where "no limit" is a huge page-aligned number
/// (`PAGE_COUNTER_MAX` × page size, about 2^63) rather than a word.
pub fn parse_cgroup_v1_limit(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|&n| n < 1 << 60)
}

/// The job memory budget in bytes: the configured one (or [`DEFAULT_MEMORY_LIMIT_MIB`]),
/// but never above the container's cgroup limit less [`CGROUP_HEADROOM_MIB`], so a job
/// too large for the container is refused by the preflight instead of OOM-killed.
pub fn effective_memory_limit_bytes(configured_mib: Option<u64>, cgroup_bytes: Option<u64>) -> u64 {
    let configured = configured_mib.unwrap_or(DEFAULT_MEMORY_LIMIT_MIB).saturating_mul(1 << 20);
    match cgroup_bytes {
        Some(c) => configured.min(c.saturating_sub(CGROUP_HEADROOM_MIB << 20)),
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn cgroup_limits_parse() {
        assert_eq!(parse_cgroup_memory_max("max\n"), None);
        assert_eq!(parse_cgroup_memory_max("15728640000\n"), Some(15_000 * MIB));
        assert_eq!(parse_cgroup_memory_max(" 1048576 "), Some(MIB));
        assert_eq!(parse_cgroup_memory_max(""), None);
        assert_eq!(parse_cgroup_memory_max("lots"), None);
        assert_eq!(parse_cgroup_v1_limit("9223372036854771712\n"), None, "v1's unlimited");
        assert_eq!(parse_cgroup_v1_limit("15728640000"), Some(15_000 * MIB));
    }

    #[test]
    fn the_budget_never_exceeds_the_container() {
        // The Batch container (15,000 MiB) under the 16 GiB default: the container wins.
        let batch = Some(15_000 * MIB);
        assert_eq!(effective_memory_limit_bytes(None, batch), (15_000 - CGROUP_HEADROOM_MIB) * MIB);
        assert!(effective_memory_limit_bytes(None, batch) < 15_000 * MIB);
        // An operator's explicit budget above the container is capped too…
        assert_eq!(
            effective_memory_limit_bytes(Some(64 * 1024), batch),
            (15_000 - CGROUP_HEADROOM_MIB) * MIB
        );
        // …and one below it stands.
        assert_eq!(effective_memory_limit_bytes(Some(8 * 1024), batch), 8 * 1024 * MIB);
        // No cgroup limit: the configured budget or the default.
        assert_eq!(effective_memory_limit_bytes(None, None), DEFAULT_MEMORY_LIMIT_MIB * MIB);
        assert_eq!(effective_memory_limit_bytes(Some(100), None), 100 * MIB);
        // A container smaller than the headroom refuses every job rather than underflowing.
        assert_eq!(effective_memory_limit_bytes(None, Some(100 * MIB)), 0);
    }
}
