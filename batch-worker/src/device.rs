//! Where the math runs: the CPU, or the first CUDA GPU when built with the `cuda` feature
//! (the production target on AWS Batch; it cannot be tested on the CPU-only CI).

use std::sync::OnceLock;

use candle_core::Device;

/// The compute device, chosen once per process.
pub fn compute() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(pick).clone()
}

fn pick() -> Device {
    #[cfg(feature = "cuda")]
    match Device::new_cuda(0) {
        Ok(d) => return d,
        Err(e) => tracing::warn!(error = %e, "no usable CUDA device, running on the CPU"),
    }
    Device::Cpu
}
