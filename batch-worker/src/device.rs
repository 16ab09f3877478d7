//! Where the math runs: the CPU, or the first CUDA GPU when built with the `cuda` feature
//! (the production target on AWS Batch).
//!
//! A `cuda` build on a host where the GPU cannot be opened (no device, `CUDA_VISIBLE_DEVICES`
//! empty, a driver error) runs on the CPU and logs a warning; it never panics. With
//! `--require-gpu` (`POSTHUMAN_REQUIRE_GPU`, set by the Batch job definition) the runner
//! refuses such a job instead (exit 19), since a GPU instance computing on its CPU would bill
//! GPU hours for a ~50× slower job. candle links
//! the CUDA libraries dynamically (`libcuda.so.1`, cuBLAS, cuRAND, NVRTC), so a `cuda` binary
//! on a host without the NVIDIA driver does not start at all: the dynamic loader refuses it
//! with exit code 127 before any job is read. CPU builds never load CUDA.
//!
//! What CI checks: `scripts/cuda-check.sh` compiles the `cuda` build with nvcc from NVIDIA's
//! PyPI wheels (candle's kernels to PTX, every cuda-gated line type-checked and linted). It does
//! not link or run it: that needs the driver and a GPU.

use std::sync::OnceLock;

use candle_core::Device;

/// The compute device, chosen once per process.
pub fn compute() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(pick).clone()
}

fn pick() -> Device {
    // In a CPU build `new_cuda` would only fail ("not compiled with CUDA support"): don't try,
    // so CPU runs log no warning.
    if cfg!(feature = "cuda") { or_cpu(Device::new_cuda(0)) } else { Device::Cpu }
}

/// The outcome of opening the GPU to the device used: the GPU, or the CPU with a warning that
/// names why the GPU could not be opened.
fn or_cpu(probe: candle_core::Result<Device>) -> Device {
    match probe {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "no usable CUDA device, running on the CPU");
            Device::Cpu
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_that_cannot_be_opened_means_the_cpu() {
        let d = or_cpu(Err(candle_core::Error::Msg("CUDA_ERROR_NO_DEVICE".into())));
        assert!(d.is_cpu());
    }

    #[test]
    fn the_real_probe_decides_between_gpu_and_cpu() {
        // A CPU build's probe fails with candle's own error; a cuda build's succeeds exactly
        // when a GPU can be opened (on a GPU host this test sees the CUDA device).
        let opened = Device::new_cuda(0).is_ok();
        assert!(cfg!(feature = "cuda") || !opened);
        let d = or_cpu(Device::new_cuda(0));
        assert_eq!(d.is_cuda(), opened);
        assert_eq!(d.is_cpu(), !opened);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_build_computes_on_the_cpu() {
        assert!(compute().is_cpu());
    }
}
