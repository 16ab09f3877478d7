//! Llama-shape inference throughput beside PyTorch + transformers (the model-families issue's
//! evaluation and generation targets): perplexity scoring of a batch, and batch-1 greedy
//! generation with the KV cache. One mode per process, so each peak RSS is its own;
//! `crates/gpt2/bench/llama_vs_transformers.py` runs both sides and prints the ratio table.
//!
//! `llama-bench --mode eval|gen [--shape llama30m|smollm135m | --model DIR] [--steps 3]
//! [--batch 4] [--seq 256] [--prompt 16] [--new 200] [--threads 2]` prints one JSON line.
//! `--model DIR` loads a Hugging Face checkpoint directory (`config.json` and
//! `model.safetensors` or a sharded index, any dtype on disk) through the crate's own loader,
//! memory-mapped, and reports the load time: `crates/gpt2/bench/tinyllama.py` uses it for
//! the 1.1B TinyLlama shape.

use posthuman_gpt2::SeededRng;
use posthuman_gpt2::candle_core::{D, DType, Device, IndexOp, Tensor};
use posthuman_gpt2::candle_nn::VarBuilder;
use posthuman_gpt2::llama::{self, Llama, LlamaCache};
use posthuman_gpt2::llama_weights;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    mode: String,
    shape: String,
    model: Option<PathBuf>,
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
        model: None,
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
            "--model" => a.model = Some(v()?.into()),
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
    let load0 = Instant::now();
    let (cfg, model) = match &a.model {
        Some(dir) => {
            // What a checkpoint someone downloaded costs to open: config, then every tensor
            // mapped, checked against the config and converted to f32.
            let cfg = llama::Config::from_json(&std::fs::read_to_string(dir.join("config.json"))?)?;
            let model = llama_weights::load_checkpoint(dir, &cfg)?.model(&cfg, &Device::Cpu)?;
            (cfg, model)
        }
        None => {
            let cfg = posthuman_gpt2::bench::llama_shape(&a.shape)?;
            // Plain tensors, not variables: inference builds no graph, as the worker's
            // model loads.
            let vm = llama::init_weights(&cfg, 1)?;
            let tensors: HashMap<String, Tensor> = vm
                .data()
                .lock()
                .map_err(|_| "var map lock poisoned")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
                .collect();
            drop(vm);
            let model =
                Llama::new(&cfg, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))?;
            (cfg, model)
        }
    };
    let load_s = load0.elapsed().as_secs_f64();
    let mut rng = SeededRng::new(2);
    let cpu0;
    let mut generated: Vec<u32> = Vec::new();
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
            let prompt = if a.model.is_some() {
                // A checkpoint's prompt as tinyllama.py writes it, so both sides decode the
                // same tokens from the same weights and their outputs can be compared.
                (1..=a.prompt).map(|i| ((i * 7919) % cfg.vocab_size) as u32).collect()
            } else {
                random_ids(&mut rng, a.prompt, cfg.vocab_size)
            };
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
            let secs = t0.elapsed().as_secs_f64();
            generated = ids[a.prompt..].to_vec();
            (a.new, secs, ids.iter().map(|&t| t as f64).sum::<f64>())
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    let cpu = posthuman_gpt2::bench::cpu_secs() - cpu0;
    let cfg_params =
        llama::param_shapes(&cfg).iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>();
    println!(
        "{}",
        serde_json::json!({
            "side": format!("candle {}", a.mode),
            "kernel": posthuman_gpt2::ops::cpu_matmul_kernel(),
            "mode": a.mode,
            "shape": a.model.as_ref().map_or(a.shape.clone(), |d| d.display().to_string()),
            "params": cfg_params,
            "load_s": load_s,
            "tok_per_s": tokens as f64 / secs,
            "tok_per_cpu_s": tokens as f64 / cpu,
            "cpu_ms_per_tok": 1e3 * cpu / tokens as f64,
            "peak_rss_mib": posthuman_gpt2::bench::peak_rss_mib(),
            "check": check,
            "tokens": generated,
        })
    );
    Ok(())
}
