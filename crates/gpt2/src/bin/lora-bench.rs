//! LoRA against full fine-tuning of the same Llama-shape model: training throughput, peak
//! RSS, trainable values, and the size of what a checkpoint holds (trainable tensors + AdamW
//! moments). One mode per process, so each peak RSS is its own; `crates/gpt2/bench/
//! lora_vs_peft.py` runs both modes and PyTorch + peft and prints the side-by-side table.
//!
//! `lora-bench --mode lora|full [--shape llama30m|smollm135m] [--r 8] [--steps 5]
//! [--batch 4] [--seq 256] [--threads 2]` prints one JSON line.

use posthuman_gpt2::candle_core::{DType, Device, Tensor};
use posthuman_gpt2::candle_nn::VarBuilder;
use posthuman_gpt2::llama::{self, Llama};
use posthuman_gpt2::lora::{Family, LoraAdapter, LoraBase, LoraConfig};
use posthuman_gpt2::{AdamW, AdamWConfig, Grads, SeededRng};
use std::time::Instant;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    mode: String,
    shape: String,
    r: usize,
    steps: usize,
    batch: usize,
    seq: usize,
    threads: usize,
}

fn args() -> AnyResult<Args> {
    let mut a = Args {
        mode: "lora".into(),
        shape: "llama30m".into(),
        r: 8,
        steps: 5,
        batch: 4,
        seq: 256,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--mode" => a.mode = v()?,
            "--shape" => a.shape = v()?,
            "--r" => a.r = v()?.parse()?,
            "--steps" => a.steps = v()?.parse()?,
            "--batch" => a.batch = v()?.parse()?,
            "--seq" => a.seq = v()?.parse()?,
            "--threads" => a.threads = v()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn main() -> AnyResult<()> {
    let a = args()?;
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { posthuman_gpt2::configure_threads(Some(a.threads)) };
    let cfg = posthuman_gpt2::bench::llama_shape(&a.shape)?;
    let vm = llama::init_weights(&cfg, 1)?;
    let mut rng = SeededRng::new(2);
    let batches: Vec<(Tensor, Tensor)> = (0..2)
        .map(|_| {
            let n = a.batch * (a.seq + 1);
            let v: Vec<u32> =
                (0..n).map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32).collect();
            let ids = Tensor::from_vec(v, (a.batch, a.seq + 1), &Device::Cpu)?;
            Ok((ids.narrow(1, 0, a.seq)?.contiguous()?, ids.narrow(1, 1, a.seq)?.contiguous()?))
        })
        .collect::<AnyResult<_>>()?;
    let adamw = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let base_params: usize =
        llama::param_shapes(&cfg).iter().map(|(_, s)| s.iter().product::<usize>()).sum();

    let (model, mut opt, adapter, trainable) = match a.mode.as_str() {
        "full" => {
            let m = Llama::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
            (m, AdamW::new(&vm, adamw)?, None, base_params)
        }
        "lora" => {
            let base = Llama::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
            let lc = LoraConfig::new(
                Family::Llama,
                a.r,
                2.0 * a.r as f64,
                0.0,
                &["q_proj", "k_proj", "v_proj", "o_proj"],
            );
            let ad = LoraAdapter::init(lc, &LoraBase::llama(&cfg), 3)?;
            let m = base.with_lora(&ad)?;
            let opt = AdamW::new(ad.var_map(), adamw)?;
            let n = ad.num_params();
            (m, opt, Some(ad), n)
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    // As the worker trains on the CPU: one decoder layer at a time, by the hand-written layer
    // step (`Llama::loss_and_grads_layerwise`), a full fine-tune and LoRA alike.
    let mut step = |i: usize| -> AnyResult<f32> {
        let (x, y) = &batches[i % batches.len()];
        let mut grads = Grads::zeros(&opt);
        let loss = model.loss_and_grads_layerwise(x, y, None, |s| {
            grads.accumulate_step(&opt, s).map_err(posthuman_gpt2::candle_core::Error::wrap)
        })?;
        opt.step(&grads, 1e-4)?;
        // As the worker does: the next step's gradients reuse these buffers.
        grads.recycle();
        Ok(loss)
    };
    step(0)?; // warm-up: allocations, rayon pool
    let (t0, c0) = (Instant::now(), posthuman_gpt2::bench::cpu_secs());
    let mut last = 0.0;
    for i in 0..a.steps {
        last = step(i + 1)?;
    }
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), posthuman_gpt2::bench::cpu_secs() - c0);
    // The training's peak, read before the checkpoint's size below is measured by serialising
    // the optimizer state (an image as large as both moments, which the PyTorch side never
    // builds: it was 0.3 of this process's reported peak before).
    let peak_rss_mib = posthuman_gpt2::bench::peak_rss_mib();
    let state = opt.state_bytes()?.len();
    let weights = match &adapter {
        Some(ad) => ad.safetensors_bytes()?.len(),
        None => 4 * base_params,
    };
    println!(
        "{}",
        serde_json::json!({
            "side": format!("candle {}", a.mode),
            "kernel": posthuman_gpt2::ops::cpu_matmul_kernel(),
            "shape": a.shape,
            "params": base_params,
            "trainable": trainable,
            "tok_per_s": (a.steps * a.batch * a.seq) as f64 / secs,
            "tok_per_cpu_s": (a.steps * a.batch * a.seq) as f64 / cpu,
            "peak_rss_mib": peak_rss_mib,
            "checkpoint_bytes": weights + state,
            "loss": last,
        })
    );
    Ok(())
}
