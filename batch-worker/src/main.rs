//! `posthuman-worker`: the thin binary over the `posthuman_worker` library.
//!
//! Parses the command line and environment once into typed config, opens the object store,
//! calls one library function, and maps its error class to the exit code (see
//! [`posthuman_worker::exit`]). `0` success, `2` usage error, `10..=19`/`70` job failures,
//! `75` interrupted after a checkpoint (resumable).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use posthuman_store::{LocalStore, ObjectStore, S3Config, S3Store};
use posthuman_worker::setup::{ModelShape, init_model_to_store};
use posthuman_worker::tokenizer::{Tok, train_bpe};
use posthuman_worker::{JobOutcome, WorkerConfig, WorkerError, exit, runner};

#[derive(Parser, Debug)]
#[command(
    name = "posthuman-worker",
    version,
    about = "Posthuman batch worker: GPT-2 train / infer / evaluate"
)]
struct Cli {
    /// Compute threads (candle/gemm/rayon). Training is bit-identical for 1 or 2.
    #[arg(long, env = "POSTHUMAN_THREADS", global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one job spec (train, infer or evaluate).
    Run(RunArgs),
    /// Train a byte-level BPE tokenizer (GPT-2 style, with <|endoftext|>) on a text corpus.
    TrainTokenizer {
        /// UTF-8 corpus file.
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long, default_value_t = 8000)]
        vocab_size: usize,
        /// Output tokenizer.json path.
        #[arg(long)]
        out: PathBuf,
    },
    /// Random-init a GPT-2 and save it in HF layout (config.json, model.safetensors,
    /// tokenizer.json, _COMPLETE) into a directory.
    InitModel {
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long, default_value_t = 4)]
        n_layer: usize,
        #[arg(long, default_value_t = 256)]
        n_embd: usize,
        #[arg(long, default_value_t = 4)]
        n_head: usize,
        #[arg(long, default_value_t = 256)]
        n_positions: usize,
        /// Embedding rows (defaults to the tokenizer's vocabulary size).
        #[arg(long)]
        vocab_size: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory (created if absent).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Job spec: a local file path if one exists, otherwise a key in the store.
    #[arg(long, env = "POSTHUMAN_SPEC")]
    spec: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Largest dataset accepted, MiB.
    #[arg(long, env = "POSTHUMAN_MAX_DATASET_MIB", default_value_t = 256)]
    max_dataset_mib: u64,
    /// Largest model.safetensors accepted, MiB.
    #[arg(long, env = "POSTHUMAN_MAX_WEIGHTS_MIB", default_value_t = 8192)]
    max_weights_mib: u64,
    /// Memory budget for the job, MiB (preflight estimate must fit); default 16384. Either
    /// way capped at the container's cgroup memory limit less a headroom, so a job too large
    /// for the container is refused instead of OOM-killed.
    #[arg(long, env = "POSTHUMAN_MEMORY_LIMIT_MIB")]
    memory_limit_mib: Option<u64>,
    /// Minimum seconds between progress.json writes.
    #[arg(long, env = "POSTHUMAN_PROGRESS_SECS", default_value_t = 2.0)]
    progress_secs: f64,
    /// Stop (exit 75) right after writing the checkpoint of this step; rerun to resume.
    #[arg(long, env = "POSTHUMAN_STOP_AFTER_CHECKPOINT")]
    stop_after_checkpoint: Option<u32>,
    /// Refuse to run (exit 19) unless a GPU can be opened (set on Batch's GPU queue).
    // Boolish: the job definition sets POSTHUMAN_REQUIRE_GPU=1, which clap's default parser
    // for a bool refuses ("true"/"false" only): every GPU-queue job exited 2 before running.
    #[arg(long, env = "POSTHUMAN_REQUIRE_GPU", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    require_gpu: bool,
}

#[derive(Args, Debug)]
struct StoreArgs {
    /// Local store root directory (the embedded default).
    #[arg(
        long,
        env = "POSTHUMAN_STORE_DIR",
        conflicts_with = "s3_bucket",
        required_unless_present = "s3_bucket"
    )]
    store: Option<PathBuf>,
    /// S3 bucket (credentials from the standard AWS environment).
    #[arg(long, env = "POSTHUMAN_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// S3 endpoint override (LocalStack / moto).
    #[arg(long, env = "POSTHUMAN_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Path-style addressing (needed by LocalStack / moto).
    #[arg(long, env = "POSTHUMAN_S3_PATH_STYLE", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    s3_path_style: bool,
}

impl StoreArgs {
    async fn open(&self) -> Result<Box<dyn ObjectStore>, WorkerError> {
        if let Some(dir) = &self.store {
            return Ok(Box::new(LocalStore::new(dir.clone())?));
        }
        let bucket =
            self.s3_bucket.clone().ok_or_else(|| WorkerError::BadSpec("no store given".into()))?;
        let cfg = S3Config {
            bucket,
            endpoint_url: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            force_path_style: self.s3_path_style,
        };
        Ok(Box::new(S3Store::new(cfg).await?))
    }
}

fn mib(x: u64) -> u64 {
    x.saturating_mul(1024 * 1024)
}

async fn run(args: RunArgs) -> Result<JobOutcome, WorkerError> {
    let wc = WorkerConfig {
        max_dataset_bytes: mib(args.max_dataset_mib),
        max_weights_bytes: mib(args.max_weights_mib),
        memory_limit_bytes: posthuman_worker::config::effective_memory_limit_bytes(
            args.memory_limit_mib,
            posthuman_worker::config::cgroup_memory_limit_bytes(),
        ),
        progress_interval_secs: args.progress_secs,
        stop_after_checkpoint: args.stop_after_checkpoint,
        require_gpu: args.require_gpu,
    };
    let store = args.store.open().await?;
    let path = PathBuf::from(&args.spec);
    let bytes = if path.is_file() {
        let meta = std::fs::metadata(&path)
            .map_err(|_| WorkerError::BadSpec("the job spec file is unreadable".into()))?;
        if meta.len() > runner::MAX_SPEC_BYTES {
            return Err(WorkerError::BadSpec("the job spec file is too large".into()));
        }
        std::fs::read(&path)
            .map_err(|_| WorkerError::BadSpec("the job spec file is unreadable".into()))?
    } else {
        runner::fetch_spec(store.as_ref(), &args.spec).await?
    };
    runner::run_job(store.as_ref(), &wc, &bytes).await
}

fn read_local(path: &PathBuf, on_err: fn(String) -> WorkerError) -> Result<Vec<u8>, WorkerError> {
    std::fs::read(path)
        .map_err(|e| on_err(format!("cannot read {} ({})", path.display(), e.kind())))
}

async fn dispatch(cmd: Cmd) -> Result<Option<JobOutcome>, WorkerError> {
    match cmd {
        Cmd::Run(args) => run(args).await.map(Some),
        Cmd::TrainTokenizer { corpus, vocab_size, out } => {
            let bytes = read_local(&corpus, WorkerError::BadDataset)?;
            let text = posthuman_worker::data::validate_text(&bytes)?;
            let tok = train_bpe(text, vocab_size)?;
            std::fs::write(&out, tok.to_json()?).map_err(|e| {
                WorkerError::Internal(format!("cannot write {} ({})", out.display(), e.kind()))
            })?;
            println!("tokenizer with {} tokens written to {}", tok.vocab_size(), out.display());
            Ok(None)
        }
        Cmd::InitModel {
            tokenizer,
            n_layer,
            n_embd,
            n_head,
            n_positions,
            vocab_size,
            seed,
            out,
        } => {
            let tok = Tok::from_bytes(&read_local(&tokenizer, WorkerError::MissingTokenizer)?)?;
            std::fs::create_dir_all(&out).map_err(|e| {
                WorkerError::Internal(format!("cannot create {} ({})", out.display(), e.kind()))
            })?;
            let store = LocalStore::new(out.clone())?;
            let shape = ModelShape { n_layer, n_embd, n_head, n_positions, vocab_size };
            let h = init_model_to_store(&store, "", &tok, &shape, seed).await?;
            println!("model written to {} with weights hash {h}", out.display());
            Ok(None)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: Batch sends stderr to CloudWatch, which
        // would show the escape codes as text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // SAFETY: single-threaded here — before the runtime and any compute pool start.
    unsafe { posthuman_gpt2::configure_threads(cli.threads) };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL as u8);
        }
    };
    match rt.block_on(dispatch(cli.cmd)) {
        Ok(Some(JobOutcome::Interrupted { step })) => {
            eprintln!("stopped after the checkpoint of step {step}; run again to resume");
            ExitCode::from(exit::INTERRUPTED as u8)
        }
        Ok(Some(outcome)) => {
            let summary = match outcome {
                JobOutcome::Trained(m) => format!(
                    "trained {} steps, final loss {:.4}, weights {}",
                    m.steps, m.final_loss, m.output_weights_hash
                ),
                JobOutcome::Inferred(c) => format!("{} completions", c.len()),
                JobOutcome::Evaluated(r) => {
                    format!("perplexity {:.4} over {} tokens", r.perplexity, r.tokens_scored)
                }
                JobOutcome::Interrupted { .. } => String::new(),
            };
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.public_message());
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
