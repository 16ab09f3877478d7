//! Demo setup without a model hub: a random-init GPT-2 in HF layout with its tokenizer.

use posthuman_gpt2::{Config, Weights, init_weights};
use posthuman_store::ObjectStore;
use posthuman_types::Hash32;

use crate::error::WorkerError;
use crate::model_io;
use crate::tokenizer::Tok;

/// Sizes of a fresh model; `vocab_size` defaults to the tokenizer's.
#[derive(Debug, Clone)]
pub struct ModelShape {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_positions: usize,
    pub vocab_size: Option<usize>,
}

/// A seeded GPT-2 initialisation matching `tok` (EOT as bos/eos).
pub fn init_model(
    tok: &Tok,
    shape: &ModelShape,
    seed: u64,
) -> Result<(Config, Weights), WorkerError> {
    let vocab = shape.vocab_size.unwrap_or(tok.vocab_size());
    let mut cfg = Config::new(vocab, shape.n_positions, shape.n_embd, shape.n_layer, shape.n_head);
    (cfg.bos_token_id, cfg.eos_token_id) = (tok.eot(), tok.eot());
    cfg.validate().map_err(|e| WorkerError::OutOfRange(e.to_string()))?;
    model_io::check_tokenizer(&cfg, tok)?;
    let vm = init_weights(&cfg, seed).map_err(|e| WorkerError::OutOfRange(e.to_string()))?;
    let w = Weights::from_var_map(&cfg, &vm).map_err(WorkerError::internal)?;
    Ok((cfg, w))
}

/// Initialises and writes a model (config, weights, tokenizer, `_COMPLETE`) under `prefix`.
pub async fn init_model_to_store(
    store: &dyn ObjectStore,
    prefix: &str,
    tok: &Tok,
    shape: &ModelShape,
    seed: u64,
) -> Result<Hash32, WorkerError> {
    let (cfg, w) = init_model(tok, shape, seed)?;
    let mut written = Vec::new();
    let r = model_io::save_model(store, prefix, &cfg, &w, tok, &mut written).await;
    if r.is_err() {
        model_io::remove_written(store, &written).await;
    }
    r
}
