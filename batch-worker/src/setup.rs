//! Demo and test setup without a model hub: random-init models in HF layout with their
//! tokenizer — GPT-2 ([`init_model`]) or Llama ([`init_llama`]).

use posthuman_gpt2::family::{AnyConfig, AnyWeights, init_weights};
use posthuman_gpt2::{Config, Weights};
use posthuman_store::ObjectStore;
use posthuman_types::Hash32;

use crate::error::WorkerError;
use crate::model_io;
use crate::tokenizer::Tok;

/// Sizes of a fresh GPT-2; `vocab_size` defaults to the tokenizer's.
#[derive(Debug, Clone)]
pub struct ModelShape {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_positions: usize,
    pub vocab_size: Option<usize>,
}

/// Sizes of a fresh Llama; the vocabulary is the tokenizer's.
#[derive(Debug, Clone)]
pub struct LlamaShape {
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub context: usize,
    pub tie_word_embeddings: bool,
}

/// A seeded GPT-2 initialisation matching `tok` (EOT as bos/eos).
pub fn init_model(
    tok: &Tok,
    shape: &ModelShape,
    seed: u64,
) -> Result<(AnyConfig, AnyWeights), WorkerError> {
    let vocab = shape.vocab_size.unwrap_or(tok.vocab_size());
    let mut cfg = Config::new(vocab, shape.n_positions, shape.n_embd, shape.n_layer, shape.n_head);
    (cfg.bos_token_id, cfg.eos_token_id) = (tok.eot(), tok.eot());
    cfg.validate().map_err(|e| WorkerError::OutOfRange(e.to_string()))?;
    let cfg = AnyConfig::Gpt2(cfg);
    model_io::check_tokenizer(&cfg, tok)?;
    let vm = init_weights(&cfg, seed).map_err(|e| WorkerError::OutOfRange(e.to_string()))?;
    let AnyConfig::Gpt2(c) = &cfg else { return Err(WorkerError::internal("not GPT-2")) };
    let w = Weights::from_var_map(c, &vm).map_err(WorkerError::internal)?;
    Ok((cfg, AnyWeights::Gpt2(w)))
}

/// A seeded Llama initialisation (HF's `_init_weights`) matching `tok`, with the
/// `config.json` `transformers` writes for `LlamaForCausalLM` (EOT as bos/eos).
pub fn init_llama(
    tok: &Tok,
    shape: &LlamaShape,
    seed: u64,
) -> Result<(AnyConfig, AnyWeights), WorkerError> {
    let json = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": tok.vocab_size(),
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "max_position_embeddings": shape.context,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "tie_word_embeddings": shape.tie_word_embeddings,
        "bos_token_id": tok.eot(),
        "eos_token_id": tok.eot(),
        "torch_dtype": "float32",
    });
    let text = serde_json::to_string_pretty(&json).map_err(WorkerError::internal)?;
    let cfg = AnyConfig::from_json(&text).map_err(|e| WorkerError::OutOfRange(e.to_string()))?;
    model_io::check_tokenizer(&cfg, tok)?;
    let vm = init_weights(&cfg, seed).map_err(|e| WorkerError::OutOfRange(e.to_string()))?;
    let w = AnyWeights::from_var_map(&cfg, &vm).map_err(WorkerError::internal)?;
    Ok((cfg, w))
}

/// Writes a model (config, weights, tokenizer, `_COMPLETE`) under `prefix`; on failure what
/// was written is removed.
pub async fn save_new_model(
    store: &dyn ObjectStore,
    prefix: &str,
    cfg: &AnyConfig,
    weights: &AnyWeights,
    tok: &Tok,
) -> Result<Hash32, WorkerError> {
    let mut written = Vec::new();
    let r = model_io::save_model(store, prefix, cfg, weights, tok, &mut written).await;
    if r.is_err() {
        model_io::remove_written(store, &written).await;
    }
    r
}

/// Initialises and writes a GPT-2 under `prefix`.
pub async fn init_model_to_store(
    store: &dyn ObjectStore,
    prefix: &str,
    tok: &Tok,
    shape: &ModelShape,
    seed: u64,
) -> Result<Hash32, WorkerError> {
    let (cfg, w) = init_model(tok, shape, seed)?;
    save_new_model(store, prefix, &cfg, &w, tok).await
}
