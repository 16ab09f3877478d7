//! `worker-bench`: the Rust side of the PyTorch side-by-side benchmark (`bench/bench.sh`).
//!
//! Every measurement goes through the worker's own job paths (train and evaluate jobs via
//! `run_job` on a LocalStore, generation via `infer::generate`) in its own process, and
//! prints one JSON line (throughput and peak RSS). `prepare` builds the benchmark model and
//! data; `agree` also dumps the exact batches, learning rates and evaluation token ids so
//! the PyTorch script can replay them for the numerical-agreement check.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use posthuman_store::{LocalStore, ObjectStore};
use posthuman_types::job::EvalParams;
use posthuman_types::{InferParams, JobParams, JobSpec, Sampling, TrainParams};
use posthuman_worker::data::{self, Packed};
use posthuman_worker::setup::{ModelShape, init_model_to_store};
use posthuman_worker::tokenizer::train_bpe;
use posthuman_worker::train::schedule::lr_at;
use posthuman_worker::{JobOutcome, WorkerConfig, infer, model_io, run_job};
use serde_json::json;

type AnyResult<T> = anyhow::Result<T>;

#[derive(Parser)]
struct Cli {
    /// Benchmark directory (holds `store/`, written by `prepare`).
    #[arg(long)]
    dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Tokenizer (vocab 8000) + random-init model (4L/256d/4h/ctx 256) + datasets.
    Prepare {
        #[arg(long)]
        train_text: PathBuf,
        #[arg(long)]
        eval_text: PathBuf,
    },
    /// Train job for the agreement check; dumps batches, lrs, eval ids and losses.
    Agree {
        #[arg(long, default_value_t = 20)]
        steps: u32,
        #[arg(long, default_value_t = 16384)]
        eval_tokens: u64,
    },
    /// Train throughput (tokens/s) through a train job.
    Train {
        #[arg(long, default_value_t = 20)]
        steps: u32,
    },
    /// Evaluation throughput and perplexity of the model under `store/<prefix>`.
    Eval {
        #[arg(long, default_value = "models/base")]
        prefix: String,
        #[arg(long, default_value_t = 16384)]
        eval_tokens: u64,
    },
    /// Generation throughput with the KV cache (greedy, one prompt).
    Gen {
        #[arg(long, default_value_t = 200)]
        tokens: u32,
    },
}

const BATCH: u32 = 8;
const CTX: u32 = 256;
const STRIDE: u32 = 128;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn train_params(steps: u32) -> TrainParams {
    let mut p = TrainParams::new(steps, 3e-4, BATCH, CTX);
    p.warmup_steps = 2;
    p.min_lr_ratio = 0.1;
    p.weight_decay = 0.01;
    p.grad_clip = 1.0;
    p.checkpoint_every = steps;
    p.seed = 1;
    p
}

fn spec(id: &str, model: &str, params: JobParams) -> JobSpec {
    JobSpec {
        job_id: id.into(),
        model_prefix: model.into(),
        dataset_key: Some(match params {
            JobParams::Train(_) => "data/train.txt".into(),
            _ => "data/eval.txt".into(),
        }),
        private_prefix: format!("out/{id}"),
        public_prefix: format!("out/{id}/public"),
        params,
        budget: None,
        salt: None,
    }
}

fn wc() -> WorkerConfig {
    WorkerConfig { progress_interval_secs: 1e9, ..WorkerConfig::default() }
}

async fn run(store: &dyn ObjectStore, s: &JobSpec) -> AnyResult<JobOutcome> {
    // Fresh outputs each time (a leftover checkpoint would be resumed, not retrained).
    for k in store.list(&format!("out/{}", s.job_id)).await? {
        store.delete(&k).await?;
    }
    run_job(store, &wc(), &serde_json::to_vec(s)?).await.map_err(|e| anyhow::anyhow!("{e}"))
}

fn write_u32s(path: &Path, v: &[u32]) -> AnyResult<()> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes)?;
    Ok(())
}

async fn main_async(cli: Cli) -> AnyResult<()> {
    let store = LocalStore::new(cli.dir.join("store"))?;
    match cli.cmd {
        Cmd::Prepare { train_text, eval_text } => {
            let train = std::fs::read_to_string(&train_text)?;
            let t0 = Instant::now();
            let tok = train_bpe(&train, 8000)?;
            let tok_secs = t0.elapsed().as_secs_f64();
            let shape = ModelShape {
                n_layer: 4,
                n_embd: 256,
                n_head: 4,
                n_positions: CTX as usize,
                vocab_size: Some(8000),
            };
            let h = init_model_to_store(&store, "models/base", &tok, &shape, 0).await?;
            store.put("data/train.txt", Bytes::from(train)).await?;
            store.put("data/eval.txt", Bytes::from(std::fs::read(&eval_text)?)).await?;
            println!(
                "{}",
                json!({"tokenizer_vocab": tok.vocab_size(), "tokenizer_train_secs": tok_secs, "weights_hash": h})
            );
        }
        Cmd::Agree { steps, eval_tokens } => {
            let p = train_params(steps);
            let JobOutcome::Trained(m) =
                run(&store, &spec("agree", "models/base", JobParams::Train(p.clone()))).await?
            else {
                anyhow::bail!("train job did not finish");
            };
            // The exact windows the job trained on, in order, and its learning rates.
            let base = model_io::load_model(&store, "models/base", u64::MAX).await?;
            let (bytes, _) = data::fetch(&store, "data/train.txt", u64::MAX).await?;
            let stream = data::tokenize(&base.tok, data::validate_text(&bytes)?)?;
            let packed = Packed::new(&stream, CTX as usize)?;
            let mut windows = Vec::new();
            for step in 0..steps {
                for i in packed.batch_indices(p.seed, u64::from(step), 0, BATCH as usize, 1) {
                    windows.extend_from_slice(packed.window(i));
                }
            }
            write_u32s(&cli.dir.join("batches.bin"), &windows)?;
            let (eb, _) = data::fetch(&store, "data/eval.txt", u64::MAX).await?;
            let mut ids = base.tok.encode(data::validate_text(&eb)?)?;
            ids.truncate(eval_tokens as usize);
            write_u32s(&cli.dir.join("eval_ids.bin"), &ids)?;
            let ep = EvalParams {
                context_len: CTX,
                stride: STRIDE,
                max_tokens: eval_tokens,
                baseline: None,
            };
            let JobOutcome::Evaluated(r) =
                run(&store, &spec("agree-eval", "models/base", JobParams::Evaluate(ep))).await?
            else {
                anyhow::bail!("evaluate job did not finish");
            };
            let lrs: Vec<f64> = (0..steps).map(|s| lr_at(&p, s)).collect();
            let out = json!({
                "losses": m.loss_curve.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
                "lrs": lrs, "batch": BATCH, "ctx": CTX, "stride": STRIDE,
                "weight_decay": p.weight_decay, "beta1": p.beta1, "beta2": p.beta2, "eps": p.eps,
                "grad_clip": p.grad_clip, "perplexity": r.perplexity, "tokens_scored": r.tokens_scored,
            });
            std::fs::write(cli.dir.join("rust_agree.json"), serde_json::to_vec_pretty(&out)?)?;
            println!("{out}");
        }
        Cmd::Train { steps } => {
            let JobOutcome::Trained(m) =
                run(&store, &spec("speed", "models/base", JobParams::Train(train_params(steps))))
                    .await?
            else {
                anyhow::bail!("train job did not finish");
            };
            println!(
                "{}",
                json!({"train_tok_s": m.tokens_per_sec, "final_loss": m.final_loss, "peak_rss_mib": peak_rss_mib()})
            );
        }
        Cmd::Eval { prefix, eval_tokens } => {
            let ep = EvalParams {
                context_len: CTX,
                stride: STRIDE,
                max_tokens: eval_tokens,
                baseline: None,
            };
            let JobOutcome::Evaluated(r) =
                run(&store, &spec("speed-eval", &prefix, JobParams::Evaluate(ep))).await?
            else {
                anyhow::bail!("evaluate job did not finish");
            };
            println!(
                "{}",
                json!({"eval_tok_s": r.tokens_per_sec, "perplexity": r.perplexity, "tokens_scored": r.tokens_scored, "peak_rss_mib": peak_rss_mib()})
            );
        }
        Cmd::Gen { tokens } => {
            let m = model_io::load_model(&store, "models/base", u64::MAX).await?;
            // The worker's compute device: the CPU, or the GPU in a `cuda` build on a GPU host.
            let model = m.weights.model(&m.cfg, &posthuman_worker::device::compute())?;
            let p = InferParams {
                prompts: vec!["The game 's".into()],
                max_new_tokens: tokens,
                sampling: Sampling::default(),
                stop: vec![],
                messages: vec![],
            };
            // A random-init model may emit end-of-text early: keep generating from further
            // prompts until `tokens` tokens were produced, and time all of it.
            let prompts = ["The game 's", "In 1995 ,", "The river", "He was", "It is"];
            let (mut total, mut calls) = (0u32, 0usize);
            let t0 = Instant::now();
            while total < tokens {
                let prompt = prompts[calls % prompts.len()];
                let mut q = p.clone();
                q.max_new_tokens = tokens - total;
                total +=
                    infer::generate(&model, &m.cfg, &m.tok, prompt, &q, calls)?.completion_tokens;
                calls += 1;
            }
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "{}",
                json!({"gen_tok_s": f64::from(total) / secs, "tokens": total, "calls": calls, "peak_rss_mib": peak_rss_mib()})
            );
        }
    }
    Ok(())
}

fn main() -> AnyResult<()> {
    let cli = Cli::parse();
    // SAFETY: single-threaded here, before any pool starts (threads from RAYON_NUM_THREADS,
    // which bench.sh sets for both sides).
    unsafe { posthuman_gpt2::configure_threads(None) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(main_async(cli))
}
