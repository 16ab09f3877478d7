//! Alice's own compute: she has no hub to download from, so she trains a byte-level BPE
//! tokenizer and a small GPT-2 or Llama base model on WikiText-2 text with the worker library,
//! on her machine, before publishing it. Nothing here is paid or private to the operator.

use std::path::Path;

use posthuman_store::{LocalStore, ObjectStore};
use posthuman_types::{JobParams, JobSpec, TrainMetrics, TrainParams};
use posthuman_worker::setup::{
    LlamaShape, ModelShape, init_llama, init_model_to_store, save_new_model,
};
use posthuman_worker::tokenizer::train_bpe;
use posthuman_worker::{JobOutcome, WorkerConfig, runner};

use posthuman_cli::error::CliError;
use posthuman_cli::output::Out;

use crate::{DemoFamily, Sizes};

fn worker_err(e: posthuman_worker::WorkerError) -> CliError {
    CliError::Internal(format!("base model: {e}"))
}

/// Trains the tokenizer and base model under `dir` and exports the HF-layout files to
/// `dir/export`. Returns the export directory and the training metrics.
pub async fn train_base(
    out: &Out,
    dir: &Path,
    corpus: &str,
    sizes: &Sizes,
    family: DemoFamily,
) -> Result<(std::path::PathBuf, TrainMetrics), CliError> {
    let store = LocalStore::new(dir.join("store"))
        .map_err(|e| CliError::Io(format!("Alice's workspace: {e}")))?;
    let (text, vocab) = (corpus.to_string(), sizes.vocab);
    let tok = tokio::task::spawn_blocking(move || train_bpe(&text, vocab))
        .await
        .map_err(|e| CliError::Internal(e.to_string()))?
        .map_err(worker_err)?;
    match family {
        DemoFamily::Gpt2 => {
            let shape = ModelShape {
                n_layer: sizes.n_layer,
                n_embd: sizes.n_embd,
                n_head: sizes.n_head,
                n_positions: sizes.context,
                vocab_size: None,
            };
            init_model_to_store(&store, "base/init", &tok, &shape, 1).await.map_err(worker_err)?;
        }
        DemoFamily::Llama => {
            // The same width and depth; grouped-query attention (half as many K/V heads),
            // Llama's 8/3 MLP ratio rounded to 8, tied embeddings (as SmolLM2 ships).
            let shape = LlamaShape {
                layers: sizes.n_layer,
                hidden: sizes.n_embd,
                intermediate: (sizes.n_embd * 8 / 3).div_ceil(8) * 8,
                heads: sizes.n_head,
                kv_heads: (sizes.n_head / 2).max(1),
                context: sizes.context,
                tie_word_embeddings: true,
            };
            let (cfg, w) = init_llama(&tok, &shape, 1).map_err(worker_err)?;
            save_new_model(&store, "base/init", &cfg, &w, &tok).await.map_err(worker_err)?;
        }
    }
    store
        .put("base/corpus.txt", bytes::Bytes::copy_from_slice(corpus.as_bytes()))
        .await
        .map_err(|e| CliError::Io(e.to_string()))?;
    let mut p =
        TrainParams::new(sizes.base_steps, sizes.base_lr, sizes.batch, sizes.context as u32);
    p.warmup_steps = sizes.base_steps / 10;
    p.checkpoint_every = sizes.base_steps;
    p.seed = 1;
    let spec = JobSpec {
        job_id: "alice-base".into(),
        model_prefix: "base/init".into(),
        dataset_key: Some("base/corpus.txt".into()),
        private_prefix: "base/trained".into(),
        public_prefix: "base/public".into(),
        params: JobParams::Train(p),
        budget: None,
        salt: None,
    };
    spec.validate().map_err(|e| CliError::Internal(e.to_string()))?;
    let wc = WorkerConfig { progress_interval_secs: 0.5, ..WorkerConfig::default() };
    // The worker reports progress through the store, as it does for paid jobs: follow it.
    let bar = out.bar(u64::from(sizes.base_steps), "base model");
    let watcher = {
        let (bar, reader) = (
            bar.clone(),
            LocalStore::new(dir.join("store")).map_err(|e| CliError::Io(e.to_string()))?,
        );
        tokio::spawn(async move {
            loop {
                if let Ok(b) = reader.get("base/public/progress.json", 1 << 16).await
                    && let Ok(p) = serde_json::from_slice::<posthuman_types::JobProgress>(&b)
                {
                    bar.set_position(p.done);
                    let loss = p.loss.map(|l| format!("loss {l:.3}  ")).unwrap_or_default();
                    bar.set_message(format!("{loss}{:.0} tok/s", p.tokens_per_sec));
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        })
    };
    let outcome = runner::run_spec(&store, &wc, &spec).await;
    watcher.abort();
    bar.finish_and_clear();
    let metrics = match outcome.map_err(worker_err)? {
        JobOutcome::Trained(m) => m,
        other => return Err(CliError::Internal(format!("base training ended as {other:?}"))),
    };
    let export = dir.join("export");
    std::fs::create_dir_all(&export).map_err(|e| CliError::Io(e.to_string()))?;
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        let b = store
            .get(&format!("base/trained/{name}"), u64::MAX)
            .await
            .map_err(|e| CliError::Io(format!("reading the trained {name}: {e}")))?;
        std::fs::write(export.join(name), &b).map_err(|e| CliError::Io(e.to_string()))?;
    }
    Ok((export, metrics))
}
