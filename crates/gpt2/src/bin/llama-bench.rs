//! Llama-shape inference throughput beside PyTorch + transformers (the model-families issue's
//! evaluation and generation targets): perplexity scoring of a batch, and batch-1 greedy
//! generation with the KV cache. One mode per process, so each peak RSS is its own;
//! `crates/gpt2/bench/llama_vs_transformers.py` runs both sides and prints the ratio table.
//!
//! `llama-bench --mode eval|gen [--shape llama30m|smollm135m] [--steps 3] [--batch 4]
//! [--seq 256] [--prompt 16] [--new 200] [--threads 2]` prints one JSON line.

use posthuman_gpt2::SeededRng;
use posthuman_gpt2::candle_core::{D, DType, Device, IndexOp, Tensor};
use posthuman_gpt2::candle_nn::VarBuilder;
use posthuman_gpt2::llama::{self, Llama, LlamaCache};
use std::collections::HashMap;
use std::time::Instant;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    mode: String,
    shape: String,
    steps: usize,
    batch: usize,
    seq: usize,
    prompt: usize,
    new: usize,
    threads: usize,
}

fn args() -> AnyResult<Args> {
    let mut a = Args {
        mode: "eval".into(),
        shape: "llama30m".into(),
        steps: 3,
        batch: 4,
        seq: 256,
        prompt: 16,
        new: 200,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--mode" => a.mode = v()?,
            "--shape" => a.shape = v()?,
            "--steps" => a.steps = v()?.parse()?,
            "--batch" => a.batch = v()?.parse()?,
            "--seq" => a.seq = v()?.parse()?,
            "--prompt" => a.prompt = v()?.parse()?,
            "--new" => a.new = v()?.parse()?,
            "--threads" => a.threads = v()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn random_ids(rng: &mut SeededRng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()
}

fn main() -> AnyResult<()> {
    let a = args()?;
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { posthuman_gpt2::configure_threads(Some(a.threads)) };
    let cfg = posthuman_gpt2::bench::llama_shape(&a.shape)?;
    // Plain tensors, not variables: inference builds no graph, as the worker's model loads.
    let vm = llama::init_weights(&cfg, 1)?;
    let tensors: HashMap<String, Tensor> = vm
        .data()
        .lock()
        .map_err(|_| "var map lock poisoned")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    drop(vm);
    let model = Llama::new(&cfg, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))?;
    let mut rng = SeededRng::new(2);
    let cpu0;
    let (tokens, secs, check) = match a.mode.as_str() {
        "eval" => {
            let n = a.batch * (a.seq + 1);
            let ids = Tensor::from_vec(
                random_ids(&mut rng, n, cfg.vocab_size),
                (a.batch, a.seq + 1),
                &Device::Cpu,
            )?;
            let (x, y) =
                (ids.narrow(1, 0, a.seq)?.contiguous()?, ids.narrow(1, 1, a.seq)?.contiguous()?);
            let nll = |x: &Tensor, y: &Tensor| -> AnyResult<f64> {
                Ok(model.token_nll(x, y)?.mean_all()?.to_scalar::<f32>()? as f64)
            };
            nll(&x, &y)?; // warm-up
            cpu0 = posthuman_gpt2::bench::cpu_secs();
            let t0 = Instant::now();
            let mut last = 0.0;
            for _ in 0..a.steps {
                last = nll(&x, &y)?;
            }
            (a.steps * a.batch * a.seq, t0.elapsed().as_secs_f64(), last.exp())
        }
        "gen" => {
            let prompt = random_ids(&mut rng, a.prompt, cfg.vocab_size);
            let run = |new: usize| -> AnyResult<Vec<u32>> {
                let mut cache = LlamaCache::new(&cfg);
                let mut ids = prompt.clone();
                let mut next = Tensor::from_vec(prompt.clone(), (1, prompt.len()), &Device::Cpu)?;
                for _ in 0..new {
                    let logits = model.forward_cached(&next, &mut cache)?;
                    let t = logits.dim(1)?;
                    let tok = logits.i((0, t - 1))?.argmax(D::Minus1)?.to_scalar::<u32>()?;
                    ids.push(tok);
                    next = Tensor::from_vec(vec![tok], (1, 1), &Device::Cpu)?;
                }
                Ok(ids)
            };
            run(4)?; // warm-up
            cpu0 = posthuman_gpt2::bench::cpu_secs();
            let t0 = Instant::now();
            let ids = run(a.new)?;
            (a.new, t0.elapsed().as_secs_f64(), ids.iter().map(|&t| t as f64).sum::<f64>())
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    let cpu = posthuman_gpt2::bench::cpu_secs() - cpu0;
    println!(
        "{}",
        serde_json::json!({
            "side": format!("candle {}", a.mode),
            "mode": a.mode,
            "shape": a.shape,
            "tok_per_s": tokens as f64 / secs,
            "tok_per_cpu_s": tokens as f64 / cpu,
            "cpu_ms_per_tok": 1e3 * cpu / tokens as f64,
            "peak_rss_mib": posthuman_gpt2::bench::peak_rss_mib(),
            "check": check,
        })
    );
    Ok(())
}
