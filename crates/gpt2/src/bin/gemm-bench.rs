//! f32 GEMM throughput at the Llama benches' shapes: candle's matmul (the `gemm` crate)
//! beside a system BLAS's `cblas_sgemm` (OpenBLAS by default, `--blas PATH` more, e.g. MKL's
//! `libmkl_rt.so.2`), on the same buffers with the same thread count. Each repetition times
//! every implementation once per shape, interleaved, so load from other processes hits all
//! alike; the table gives min and median GFLOP/s over the repetitions.
//!
//! `gemm-bench [--shape llama30m|smollm135m] [--tokens 1024] [--reps 7] [--threads 2]
//! [--blas PATH]...`

use posthuman_gpt2::candle_core::{Device, Tensor};
use posthuman_gpt2::ops::blas::{Blas, DEFAULT_LIB};
use std::time::Instant;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// One product as the model runs it: dst (m×n) = op(a) · op(b).
struct Case {
    name: String,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
}

fn cases(shape: &str, t: usize) -> AnyResult<Vec<Case>> {
    let cfg = posthuman_gpt2::bench::llama_shape(shape)?;
    let (h, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let kv = cfg.num_key_value_heads * (h / cfg.num_attention_heads);
    let mut out = Vec::new();
    let mut add = |name: &str, m, n, k, ta, tb| {
        out.push(Case { name: name.to_string(), m, n, k, ta, tb });
    };
    // Forward y = x·wᵀ (w is (out, in)), the backward's dx = g·w and dw = gᵀ·x.
    for (layer, o, i) in
        [("q/o", h, h), ("k/v", kv, h), ("gate/up", f, h), ("down", h, f), ("lm_head", v, h)]
    {
        if layer == "k/v" && kv == h {
            continue;
        }
        add(&format!("{layer} fwd x·wT"), t, o, i, false, true);
        add(&format!("{layer} bwd dx=g·w"), t, i, o, false, false);
        add(&format!("{layer} bwd dw=gT·x"), o, i, t, true, false);
    }
    // Batch-1 decoding: one row through each projection.
    for (layer, o, i) in [("q/o", h, h), ("gate/up", f, h), ("down", h, f), ("lm_head", v, h)] {
        add(&format!("{layer} decode 1 row"), 1, o, i, false, true);
    }
    Ok(out)
}

fn main() -> AnyResult<()> {
    let (mut shape, mut tokens, mut reps, mut threads) = ("llama30m".to_string(), 1024, 7, 2);
    let mut libs = vec![DEFAULT_LIB.to_string()];
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--shape" => shape = v()?,
            "--tokens" => tokens = v()?.parse()?,
            "--reps" => reps = v()?.parse()?,
            "--threads" => threads = v()?.parse()?,
            "--blas" => libs.push(v()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { posthuman_gpt2::configure_threads(Some(threads)) };
    // Each library twice: its own pool, and single-threaded with rows split over rayon.
    let blases: Vec<Blas> = libs
        .iter()
        .flat_map(|p| [(p, false), (p, true)])
        .filter_map(|(p, split)| match Blas::load(p, threads, split) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("skipping {p}: {e}");
                None
            }
        })
        .collect();
    let names: Vec<String> = std::iter::once("candle".to_string())
        .chain(blases.iter().map(|b| {
            let name = b.path.rsplit('/').next().unwrap_or(&b.path);
            format!("{}{}", &name[..name.len().min(8)], if b.split { "/rayon" } else { "" })
        }))
        .collect();
    println!(
        "{shape}, {tokens} tokens, {threads} threads, {reps} interleaved reps; GFLOP/s best/median, then ratios to candle"
    );
    print!("{:<24}{:>6}{:>6}{:>6}", "product", "m", "n", "k");
    for n in &names {
        print!("{:>22}", format!("{n} best/med"));
    }
    for n in names.iter().skip(1) {
        print!("{:>18}", n);
    }
    println!();
    for c in cases(&shape, tokens)? {
        let (ar, ac) = if c.ta { (c.k, c.m) } else { (c.m, c.k) };
        let (br, bc) = if c.tb { (c.n, c.k) } else { (c.k, c.n) };
        let a: Vec<f32> = (0..ar * ac).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect();
        let b: Vec<f32> = (0..br * bc).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01).collect();
        let at = Tensor::from_slice(&a, (ar, ac), &Device::Cpu)?;
        let bt = Tensor::from_slice(&b, (br, bc), &Device::Cpu)?;
        let (at, bt) = (if c.ta { at.t()? } else { at }, if c.tb { bt.t()? } else { bt });
        let mut dst = vec![0f32; c.m * c.n];
        let flop = 2.0 * (c.m * c.n * c.k) as f64;
        // Enough calls per sample that one sample takes a few ms.
        let inner = ((2e7 / flop).ceil() as usize).max(1);
        let mut secs = vec![Vec::new(); names.len()];
        let mut worst = vec![0f32; names.len()];
        let mut want = Vec::new();
        for rep in 0..=reps {
            let t0 = Instant::now();
            let mut y = None;
            for _ in 0..inner {
                y = Some(at.matmul(&bt)?);
            }
            if rep > 0 {
                secs[0].push(t0.elapsed().as_secs_f64() / inner as f64);
            }
            if let Some(y) = y {
                want = y.flatten_all()?.to_vec1::<f32>()?;
            }
            for (j, bl) in blases.iter().enumerate() {
                let t0 = Instant::now();
                for _ in 0..inner {
                    // SAFETY: a, b and dst hold exactly these row-major extents.
                    unsafe {
                        bl.sgemm(
                            (c.m, c.n, c.k),
                            a.as_ptr(),
                            ac,
                            c.ta,
                            b.as_ptr(),
                            bc,
                            c.tb,
                            dst.as_mut_ptr(),
                            c.n,
                            false,
                        );
                    }
                }
                if rep > 0 {
                    secs[j + 1].push(t0.elapsed().as_secs_f64() / inner as f64);
                }
                let diff = dst.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                worst[j + 1] = worst[j + 1].max(diff);
            }
        }
        let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max).max(1e-30);
        for (j, w) in worst.iter().enumerate().skip(1) {
            if *w > 1e-5 * scale {
                eprintln!("{}: {} differs from candle by {w} (max |y| {scale})", c.name, names[j]);
            }
        }
        let gf = |s: &mut Vec<f64>| {
            s.sort_by(|x, y| x.total_cmp(y));
            (flop / s[0] / 1e9, flop / s[s.len() / 2] / 1e9)
        };
        let stats: Vec<(f64, f64)> = secs.iter_mut().map(gf).collect();
        print!("{:<24}{:>6}{:>6}{:>6}", c.name, c.m, c.n, c.k);
        for (best, med) in &stats {
            print!("{:>22}", format!("{best:.1}/{med:.1}"));
        }
        for (best, med) in stats.iter().skip(1) {
            print!("{:>18}", format!("{:.2}/{:.2}", best / stats[0].0, med / stats[0].1));
        }
        println!();
    }
    Ok(())
}
