//! GPU smoke test, built only with the `cuda` feature (`scripts/cuda-check.sh` compiles it in
//! CI, which has no GPU to run it). On a host with an NVIDIA GPU and driver:
//!
//! ```sh
//! cargo test -p posthuman-gpt2 --features cuda --test cuda_smoke -- --nocapture
//! ```
//!
//! One tiny model on the first CUDA device and on the CPU: logits and per-token NLL agree, and
//! the training graph gives every parameter a finite gradient on the GPU that agrees with the
//! CPU's. Without a usable GPU it prints `SKIPPED` and why, and passes: there is nothing to
//! compare.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used)] // tests may unwrap

use posthuman_gpt2::candle_core::{DType, Device, Tensor};
use posthuman_gpt2::candle_nn::{VarBuilder, VarMap};
use posthuman_gpt2::{Config, Gpt2, Weights, init_weights};

/// Largest |a - b| over all elements, compared on the CPU in f32.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
    let b = b.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// Deterministic (B, T) token ids below `vocab`.
fn ids(b: usize, t: usize, vocab: usize, salt: usize, device: &Device) -> Tensor {
    let v: Vec<u32> = (0..b * t).map(|i| ((i * 7 + salt * 13 + 3) % vocab) as u32).collect();
    Tensor::from_vec(v, (b, t), device).unwrap()
}

fn trainable(cfg: &Config, w: &Weights, device: &Device) -> (VarMap, Gpt2) {
    let vm = w.to_var_map(device).unwrap();
    let model = Gpt2::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, device)).unwrap();
    (vm, model)
}

#[test]
fn forward_nll_and_gradients_on_the_gpu_match_the_cpu() {
    let gpu = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED cuda_smoke: no usable CUDA device ({e})");
            return;
        }
    };
    let cfg = Config::new(96, 32, 32, 2, 4);
    let w = Weights::from_var_map(&cfg, &init_weights(&cfg, 5).unwrap()).unwrap();
    let (b, t) = (2, 16);

    // Inference: logits and per-token NLL.
    let cpu_model = w.model(&cfg, &Device::Cpu).unwrap();
    let gpu_model = w.model(&cfg, &gpu).unwrap();
    let x_cpu = ids(b, t, cfg.vocab_size, 0, &Device::Cpu);
    let y_cpu = ids(b, t, cfg.vocab_size, 1, &Device::Cpu);
    let x_gpu = x_cpu.to_device(&gpu).unwrap();
    let y_gpu = y_cpu.to_device(&gpu).unwrap();
    let logits_gpu = gpu_model.forward(&x_gpu, None).unwrap();
    assert!(logits_gpu.device().is_cuda());
    let d = max_abs_diff(&cpu_model.forward(&x_cpu, None).unwrap(), &logits_gpu);
    eprintln!("logits max |cpu - gpu| = {d:e}");
    assert!(d < 1e-3, "logits differ by {d}");
    let nll_cpu = cpu_model.token_nll(&x_cpu, &y_cpu).unwrap();
    let d = max_abs_diff(&nll_cpu, &gpu_model.token_nll(&x_gpu, &y_gpu).unwrap());
    assert!(d < 1e-3, "token NLL differs by {d}");

    // Training graph: the loss and every parameter's gradient.
    let (vm_cpu, m_cpu) = trainable(&cfg, &w, &Device::Cpu);
    let (vm_gpu, m_gpu) = trainable(&cfg, &w, &gpu);
    let loss_cpu = m_cpu.loss(&x_cpu, &y_cpu, None).unwrap();
    let loss_gpu = m_gpu.loss(&x_gpu, &y_gpu, None).unwrap();
    let d = max_abs_diff(&loss_cpu, &loss_gpu);
    eprintln!("loss cpu {} / |diff| {d:e}", loss_cpu.to_scalar::<f32>().unwrap());
    assert!(d < 1e-4, "loss differs by {d}");
    let g_cpu = loss_cpu.backward().unwrap();
    let g_gpu = loss_gpu.backward().unwrap();
    let cpu_vars = vm_cpu.data().lock().unwrap();
    let gpu_vars = vm_gpu.data().lock().unwrap();
    assert_eq!(cpu_vars.len(), gpu_vars.len());
    for (name, v_gpu) in gpu_vars.iter() {
        let gg = g_gpu.get(v_gpu.as_tensor()).unwrap_or_else(|| panic!("{name}: no GPU gradient"));
        let gc = g_cpu.get(cpu_vars[name].as_tensor()).unwrap();
        // Absolute 1e-3, relative to the largest entry where gradients are larger than 1.
        let largest = gc.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let tol = 1e-3 * largest.to_scalar::<f32>().unwrap().max(1.0);
        let d = max_abs_diff(gc, gg);
        assert!(d <= tol, "{name}: GPU gradient differs from the CPU's by {d} (NaN if not finite)");
    }
    eprintln!("{} parameter gradients agree", gpu_vars.len());
}
