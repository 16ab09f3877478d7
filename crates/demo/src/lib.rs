//! `posthuman-demo`: the seed's story, every step real, on a fresh embedded deployment.
//!
//! 1. start the embedded default (anvil + Ocean v4 + ModelLineage, API server, local queue);
//! 2. fund Alice, Bob, Charlie, Derek and Elena with test OCEAN;
//! 3. Alice trains a tokenizer and a base GPT-2 on WikiText-2 and publishes it as M1;
//! 4. Bob buys M1 datatokens, trains → M2 (published by the lineage contract, Bob rewarded);
//! 5. Bob sells M2 datatokens to Charlie, who trains → M3 (Charlie and Bob rewarded);
//! 6. Derek buys M3 datatokens and runs inference;
//! 7. Elena evaluates M1, M2 and M3 on WikiText-2 test text (M1 is M3's baseline);
//! 8. the summary: lineage, balances and where they came from, perplexities, Derek's text,
//!    every receipt verified — and [`Summary::check`] asserts it all adds up exactly.
//!
//! Users act only through the functions users call (`posthuman_cli::commands::*`), over HTTP
//! and their own chain transactions; the operator's side is the embedded server (and its
//! audit, `posthuman_operator`). It is its own crate and binary because it links everything
//! — server, worker, chain — which the user CLI `posthuman` must not.
//!
//! Modules: [`args`] (flags, parsed once in `main`); `base` (Alice's own tokenizer and base
//! model); `story` ([`play`]: the steps, timed); `summary` ([`Summary`]: what happened, and
//! [`Summary::check`]).

pub mod args;
mod base;
mod story;
mod summary;

use std::path::PathBuf;

pub use story::play;
pub use summary::Summary;

use crate::args::DemoArgs;
pub use crate::args::{DemoFamily, DemoSize};
use posthuman_cli::error::CliError;
use posthuman_cli::output::Out;
use posthuman_functions::queue::WorkerCommand;
use posthuman_operator::AuditError;

/// Model and job sizes of a demo run.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub vocab: usize,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub context: usize,
    pub batch: u32,
    /// Alice's base training: steps, peak learning rate, corpus bytes.
    pub base_steps: u32,
    pub base_lr: f64,
    pub base_bytes: usize,
    /// Bob's and Charlie's fine-tunes: steps, learning rate, dataset bytes each.
    pub ft_steps: u32,
    pub ft_lr: f64,
    pub ft_bytes: usize,
    /// Tokens Elena's evaluation scores, and the test text it reads.
    pub eval_tokens: u64,
    pub eval_bytes: usize,
    pub infer_tokens: u32,
}

impl Sizes {
    pub fn of(size: DemoSize) -> Sizes {
        match size {
            DemoSize::Full => Sizes {
                vocab: 2048,
                n_layer: 2,
                n_embd: 128,
                n_head: 4,
                context: 128,
                batch: 16,
                base_steps: 240,
                base_lr: 3e-3,
                base_bytes: 600_000,
                ft_steps: 60,
                ft_lr: 1e-3,
                ft_bytes: 240_000,
                eval_tokens: 16_384,
                eval_bytes: 200_000,
                infer_tokens: 40,
            },
            DemoSize::Tiny => Sizes {
                vocab: 320,
                n_layer: 1,
                n_embd: 32,
                n_head: 2,
                context: 32,
                batch: 4,
                base_steps: 30,
                base_lr: 5e-3,
                base_bytes: 40_000,
                ft_steps: 12,
                ft_lr: 2e-3,
                ft_bytes: 12_000,
                eval_tokens: 2_048,
                eval_bytes: 20_000,
                infer_tokens: 12,
            },
        }
    }
}

/// Everything a demo run needs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// A fresh directory; `None` makes a temporary one (removed afterwards).
    pub data_dir: Option<PathBuf>,
    pub sizes: Sizes,
    /// WikiText-2 directory with `valid.txt` (training) and `test.txt` (evaluation).
    pub wikitext: PathBuf,
    /// How the local queue runs the batch worker.
    pub worker: WorkerCommand,
    /// Make M2 and M3 as LoRA derivations of this rank (None: full fine-tunes).
    pub lora_rank: Option<u32>,
    /// The base model's family.
    pub family: DemoFamily,
}

/// The worker the demo's queue runs: `posthuman-worker` next to this executable (how
/// `scripts/demo.sh` builds them), or the program named by `POSTHUMAN_WORKER`.
pub fn default_worker() -> Result<WorkerCommand, CliError> {
    if let Some(p) = std::env::var_os("POSTHUMAN_WORKER") {
        return Ok(WorkerCommand { program: PathBuf::from(p), args: vec![] });
    }
    let exe = std::env::current_exe().map_err(|e| CliError::Internal(e.to_string()))?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for d in [dir.clone(), dir.join("..")] {
        let p = d.join("posthuman-worker");
        if p.is_file() {
            return Ok(WorkerCommand { program: p, args: vec![] });
        }
    }
    Err(CliError::Usage(format!(
        "no posthuman-worker next to {}: build it (`cargo build --release -p posthuman-worker`) or set POSTHUMAN_WORKER",
        exe.display()
    )))
}

/// The operator's audit fails the demo as the CLI's errors do, class for class (the same
/// exit codes `posthuman verify --audit` had).
fn audit_err(e: AuditError) -> CliError {
    match e {
        AuditError::Usage(_) | AuditError::NotATrainJob(_) => CliError::Usage(e.to_string()),
        AuditError::Pruned(_) => CliError::Unavailable(e.to_string()),
        AuditError::Unavailable(m) => CliError::Unavailable(m),
        AuditError::Chain(c) => c.into(),
        AuditError::Failed(m) => CliError::VerificationFailed(m),
        AuditError::Store(_) => CliError::Io(e.to_string()),
    }
}

/// `posthuman-demo`: plays the story, prints the summary (JSON with `--json`), checks it.
pub async fn run(a: DemoArgs) -> Result<(), CliError> {
    let out = Out::new(a.json);
    let out = &out;
    let opts = DemoOptions {
        data_dir: a.data_dir,
        sizes: Sizes::of(a.size),
        wikitext: a.wikitext,
        worker: default_worker()?,
        lora_rank: a.lora_rank,
        family: a.family,
    };
    let summary = play(out, &opts).await?;
    out.emit(&summary, || summary.render());
    summary.check().map_err(CliError::VerificationFailed)
}
