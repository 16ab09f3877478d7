//! Throughput benchmark of the GPT-2 core: training (forward + backward + clip + AdamW),
//! no-grad evaluation, KV-cache generation, a measured matmul peak (→ MFU) and peak RSS.
//!
//! `gpt2-bench [--threads N] [--steps N] [--json]` (defaults: 2 threads, the config:
//! n_layer 4, n_embd 256, n_head 4, context 256, vocab 8000, batch 8). The PyTorch side-by-side
//! run lives in the worker's benchmark; the reference column here quotes the figures.

use posthuman_gpt2::candle_core::{DType, Device, Tensor};
use posthuman_gpt2::candle_nn::VarBuilder;
use posthuman_gpt2::{
    AdamW, AdamWConfig, Config, Gpt2, Grads, KvCache, SeededRng, clip_grad_norm, init_weights,
};
use std::time::Instant;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    threads: usize,
    steps: usize,
    json: bool,
    /// Only the generation workload (for profiling it).
    gen_only: bool,
}

fn args() -> AnyResult<Args> {
    let mut a = Args { threads: 2, steps: 10, json: false, gen_only: false };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--threads" => a.threads = it.next().ok_or("--threads needs a value")?.parse()?,
            "--steps" => a.steps = it.next().ok_or("--steps needs a value")?.parse()?,
            "--json" => a.json = true,
            "--gen-only" => a.gen_only = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn tokens(rng: &mut SeededRng, b: usize, t: usize, vocab: usize) -> AnyResult<Tensor> {
    let v: Vec<u32> = (0..b * t).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
    Ok(Tensor::from_vec(v, (b, t), &Device::Cpu)?)
}

/// Best GFLOP/s of an (m,k)·(k,n) f32 matmul over a few repetitions.
fn matmul_peak() -> AnyResult<f64> {
    let mut rng = SeededRng::new(1);
    let mut best = 0f64;
    for &(m, k, n) in &[(2048usize, 256usize, 1024usize), (1024, 1024, 1024), (2048, 256, 8000)] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.next_f32()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.next_f32()).collect();
        let (a, b) = (
            Tensor::from_vec(a, (m, k), &Device::Cpu)?,
            Tensor::from_vec(b, (k, n), &Device::Cpu)?,
        );
        for _ in 0..5 {
            let t = Instant::now();
            let c = a.matmul(&b)?;
            let dt = t.elapsed().as_secs_f64();
            drop(c);
            best = best.max(2.0 * (m * k * n) as f64 / dt / 1e9);
        }
    }
    Ok(best)
}

/// Matmul FLOPs of one forward token (linears, full-square attention, tied lm head).
fn fwd_flops_per_token(cfg: &Config, t: usize) -> f64 {
    let (c, l) = (cfg.n_embd as f64, cfg.n_layer as f64);
    let f = cfg.inner_dim() as f64;
    2.0 * l * (3.0 * c * c + c * c + 2.0 * c * f)
        + 4.0 * l * t as f64 * c
        + 2.0 * cfg.vocab_size as f64 * c
}

fn main() -> AnyResult<()> {
    let a = args()?;
    // SAFETY: still single-threaded; rayon and candle read these before starting any pool.
    unsafe { posthuman_gpt2::configure_threads(Some(a.threads)) };
    let cfg = Config::new(8000, 256, 256, 4, 4);
    let (batch, ctx) = (8usize, 256usize);
    let peak = matmul_peak()?;

    let vm = init_weights(&cfg, 0)?;
    let model = Gpt2::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
    let mut opt = AdamW::new(&vm, AdamWConfig::default())?;
    let mut rng = SeededRng::new(2);
    // The two training paths alternate step by step (same model, same optimizer), so machine
    // noise hits both alike: [0] the graph (`loss` + `backward`), [1] the graph-free step.
    let mut train_time = [0f64; 2];
    let mut phase = [0f64; 2];
    let mut last_loss = 0f32;
    let train_steps = if a.gen_only { 0 } else { 2 * a.steps + 2 };
    for step in 0..train_steps {
        let (x, y) = (
            tokens(&mut rng, batch, ctx, cfg.vocab_size)?,
            tokens(&mut rng, batch, ctx, cfg.vocab_size)?,
        );
        let path = step % 2;
        let t0 = Instant::now();
        let mut g = if path == 0 {
            let loss = model.loss(&x, &y, None)?;
            last_loss = loss.to_scalar::<f32>()?;
            Grads::from_store(&opt, &loss.backward()?)?
        } else {
            let (loss, named) = model.loss_and_grads(&x, &y, None)?;
            last_loss = loss;
            let mut g = Grads::zeros(&opt);
            g.accumulate_named(&opt, &named)?;
            g
        };
        let t1 = Instant::now();
        clip_grad_norm(&mut g, 1.0);
        opt.step(&g, 1e-4)?;
        let t2 = Instant::now();
        if step >= 2 {
            train_time[path] += (t2 - t0).as_secs_f64();
            phase[path] += (t2 - t1).as_secs_f64();
        }
    }
    let train_rss = posthuman_gpt2::bench::peak_rss_mib();
    let train_tps = train_time.map(|t| (a.steps * batch * ctx) as f64 / t);
    let train_gflops = train_tps.map(|t| t * 3.0 * fwd_flops_per_token(&cfg, ctx) / 1e9);

    // Proof-of-learning cost: the canonical hashes of every checkpoint (weights and optimizer
    // state, the Merkle leaf), against the training time between two checkpoints (the
    // worker's default: one every 10 steps).
    let mut hash_s = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let _ = opt.checkpoint_hashes(&posthuman_gpt2::Weights::from_var_map(&cfg, &vm)?)?;
        hash_s.push(t0.elapsed().as_secs_f64());
    }
    hash_s.sort_by(f64::total_cmp);
    let hash_ms = 1000.0 * hash_s[2];
    let step_ms = if train_steps > 0 { 1000.0 * train_time[1] / a.steps as f64 } else { f64::NAN };
    let hash_overhead = hash_ms / (10.0 * step_ms);

    let frozen = posthuman_gpt2::Weights::from_var_map(&cfg, &vm)?.model(&cfg, &Device::Cpu)?;
    let mut eval_time = 0f64;
    let eval_iters = if a.gen_only { 0 } else { a.steps.max(3) };
    for i in 0..eval_iters + usize::from(!a.gen_only) {
        let (x, y) = (
            tokens(&mut rng, batch, ctx, cfg.vocab_size)?,
            tokens(&mut rng, batch, ctx, cfg.vocab_size)?,
        );
        let t0 = Instant::now();
        let nll = frozen.token_nll(&x, &y)?;
        let _ = nll.sum_all()?.to_scalar::<f32>()?;
        if i > 0 {
            eval_time += t0.elapsed().as_secs_f64();
        }
    }
    let eval_tps = (eval_iters * batch * ctx) as f64 / eval_time;
    let eval_gflops = eval_tps * fwd_flops_per_token(&cfg, ctx) / 1e9;

    // Greedy generation, batch 1: 16-token prompt, 128 new tokens (× 20 rounds with --gen-only).
    let (prompt_len, new_tokens, rounds) = (16usize, 128usize, if a.gen_only { 20 } else { 1 });
    let t0 = Instant::now();
    for _ in 0..rounds {
        let prompt = tokens(&mut rng, 1, prompt_len, cfg.vocab_size)?;
        let mut cache = KvCache::new(&cfg, 1);
        let mut logits = frozen.forward(&prompt, Some(&mut cache))?;
        for _ in 0..new_tokens {
            let last = logits.narrow(1, logits.dim(1)? - 1, 1)?.flatten_all()?;
            let next = last.argmax(0)?.to_scalar::<u32>()?;
            logits = frozen.forward(&Tensor::new(&[[next]], &Device::Cpu)?, Some(&mut cache))?;
        }
    }
    let gen_tps = (rounds * new_tokens) as f64 / t0.elapsed().as_secs_f64();
    let rss = posthuman_gpt2::bench::peak_rss_mib();

    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "threads": a.threads, "train_tok_s": train_tps[1], "train_graph_tok_s": train_tps[0],
                "eval_tok_s": eval_tps, "gen_tok_s": gen_tps,
                "matmul_peak_gflops": peak, "train_gflops": train_gflops[1], "eval_gflops": eval_gflops,
                "peak_rss_train_mib": train_rss, "peak_rss_mib": rss, "final_loss": last_loss,
                "checkpoint_hash_ms": hash_ms, "checkpoint_hash_overhead_every_10": hash_overhead,
            })
        );
        return Ok(());
    }
    let per = |x: f64| 1000.0 * x / a.steps as f64;
    println!(
        "posthuman-gpt2 benchmark: {} threads, n_layer 4, n_embd 256, n_head 4, ctx 256, vocab 8000, batch 8",
        a.threads
    );
    println!("matmul peak (gemm, best of 3 shapes): {peak:.1} GFLOP/s");
    println!(
        "train step: graph {:.1} ms, graph-free {:.1} ms (of which clip + AdamW {:.1} ms)",
        per(train_time[0]),
        per(train_time[1]),
        per(phase[1])
    );
    println!(
        "graph-free / graph training step: {:.2}x (measured alternately in this run)",
        train_tps[1] / train_tps[0]
    );
    println!(
        "{:<28}{:>12}{:>12}{:>8}{:>20}{:>8}",
        "workload", "tok/s", "GFLOP/s", "MFU", "issue's PyTorch", "ratio"
    );
    for (name, tps, gf, reference) in [
        ("train, graph path", train_tps[0], train_gflops[0], 4601.0),
        ("train (graph-free step)", train_tps[1], train_gflops[1], 4601.0),
        ("eval (no-grad NLL)", eval_tps, eval_gflops, 11000.0),
        ("generate (KV cache, b=1)", gen_tps, f64::NAN, 426.0),
    ] {
        println!(
            "{name:<28}{tps:>12.0}{gf:>12.1}{:>7.0}%{reference:>20.0}{:>7.2}x",
            100.0 * gf / peak,
            tps / reference
        );
    }
    println!(
        "peak RSS: {train_rss:.0} MiB after training, {rss:.0} MiB overall (target ≤ 819 MiB)"
    );
    println!(
        "checkpoint hashing: {hash_ms:.1} ms per checkpoint = {:.2}% of training at one checkpoint every 10 steps (target ≤ 2%)",
        100.0 * hash_overhead
    );
    Ok(())
}
