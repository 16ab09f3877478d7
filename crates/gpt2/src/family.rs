//! One entry point over the model families, for code that runs any model a `config.json`
//! names (the worker, the API): [`AnyConfig`] dispatches on `model_type`, [`AnyWeights`] loads,
//! saves and hashes that family's HF-layout `model.safetensors`, [`AnyModel`] gives what a
//! job needs (KV-cached logits for generation, per-token NLL for evaluation, one training
//! micro-batch's gradients for the shared AdamW).
//!
//! Adding a family is one variant in each enum and one arm in each `match`; the compiler
//! finds every place. The canonical weights hash is the family's own ([`Weights::hash`],
//! [`LlamaWeights::hash`]): both are [`crate::weights_hash`] over (HF name, shape, f32 values).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use posthuman_types::Hash32;
use posthuman_types::pricing::ModelShape;

use crate::llama::{self, Llama, LlamaCache};
use crate::llama_weights::{self, CheckpointError, LlamaWeights};
use crate::lora::{LoraAdapter, LoraBase, LoraError};
use crate::{AdamW, Config, DropoutRng, Gpt2, Gpt2Error, Grads, KvCache, Weights, weights};

/// The `model_type`s this crate runs, as an error message lists them.
pub const SUPPORTED: &str = "gpt2, llama, mistral, qwen2, qwen3";

/// A model family (`config.json`'s `model_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Gpt2,
    Llama,
    /// Mistral (dense): Llama's network exactly (HF's `MistralForCausalLM` differs only by
    /// sliding-window attention), accepted when the window is off or spans the whole
    /// context, and run by [`Llama`].
    Mistral,
    /// Qwen2 / Qwen2.5: Llama's network with q/k/v biases ([`llama::Config::qkv_bias`]),
    /// sliding-window attention refused; run by [`Llama`].
    Qwen2,
    /// Qwen3 (dense): Llama's network with per-head q/k RMSNorm ([`llama::Config::qk_norm`])
    /// and an explicit `head_dim`; run by [`Llama`].
    Qwen3,
}

impl Family {
    /// The `model_type` string HF writes.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.model_type())
    }
}

/// Why model files cannot be used; each variant says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum FamilyError {
    /// `model_type` names a family this crate does not run.
    #[error("model_type `{0}` is not supported (supported: {SUPPORTED})")]
    UnknownModelType(String),
    /// `config.json` is not a JSON object with a string `model_type`.
    #[error("malformed config.json: {0}")]
    MalformedConfig(String),
    /// A GPT-2 config or checkpoint problem (the message names the field or tensor).
    #[error(transparent)]
    Gpt2(#[from] Gpt2Error),
    /// A Llama config problem.
    #[error(transparent)]
    LlamaConfig(#[from] llama::ConfigError),
    /// A Llama checkpoint problem.
    #[error(transparent)]
    LlamaCheckpoint(#[from] CheckpointError),
    /// The weights are of another family than the config (a caller's mix-up).
    #[error("the weights are {weights}, the config is {config}")]
    FamilyMismatch { config: Family, weights: Family },
    /// A LoRA adapter does not fit these weights.
    #[error(transparent)]
    Lora(#[from] LoraError),
}

impl From<candle_core::Error> for FamilyError {
    fn from(e: candle_core::Error) -> Self {
        Self::Gpt2(Gpt2Error::Candle(e))
    }
}

/// A parsed, validated `config.json` of any supported family.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyConfig {
    Gpt2(Config),
    /// The Llama config with the file's text, written back unchanged (HF layout out: a
    /// derived model's `config.json` is its parent's, byte for byte).
    Llama {
        cfg: llama::Config,
        json: String,
        /// Llama, Mistral, Qwen2 or Qwen3: one network with optional features, named as the
        /// file names it.
        family: Family,
    },
}

impl AnyConfig {
    /// Reads `model_type` and parses the rest as that family's config.
    pub fn from_json(text: &str) -> Result<Self, FamilyError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| FamilyError::MalformedConfig(e.to_string()))?;
        let mt = match v.get("model_type") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(FamilyError::MalformedConfig(format!("`model_type` is {other}")));
            }
            None => return Err(FamilyError::MalformedConfig("no `model_type`".into())),
        };
        match mt.as_str() {
            "gpt2" => {
                let cfg = Config::from_json(text)?;
                cfg.validate()?;
                Ok(AnyConfig::Gpt2(cfg))
            }
            "llama" => Ok(AnyConfig::Llama {
                cfg: llama::Config::from_json(text)?,
                json: text.into(),
                family: Family::Llama,
            }),
            "mistral" => Ok(AnyConfig::Llama {
                cfg: mistral_as_llama(v)?,
                json: text.into(),
                family: Family::Mistral,
            }),
            "qwen2" => Ok(AnyConfig::Llama {
                cfg: llama::Config::from_json(text)?,
                json: text.into(),
                family: Family::Qwen2,
            }),
            "qwen3" => Ok(AnyConfig::Llama {
                cfg: llama::Config::from_json(text)?,
                json: text.into(),
                family: Family::Qwen3,
            }),
            _ => Err(FamilyError::UnknownModelType(mt)),
        }
    }

    pub fn family(&self) -> Family {
        match self {
            AnyConfig::Gpt2(_) => Family::Gpt2,
            AnyConfig::Llama { family, .. } => *family,
        }
    }

    /// The `config.json` to write for this model.
    pub fn to_json(&self) -> String {
        match self {
            AnyConfig::Gpt2(c) => c.to_json(),
            AnyConfig::Llama { json, .. } => json.clone(),
        }
    }

    /// The longest context the model attends over.
    pub fn context(&self) -> usize {
        match self {
            AnyConfig::Gpt2(c) => c.n_positions,
            AnyConfig::Llama { cfg, .. } => cfg.max_position_embeddings,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            AnyConfig::Gpt2(c) => c.vocab_size,
            AnyConfig::Llama { cfg, .. } => cfg.vocab_size,
        }
    }

    /// Number of scalar parameters (a tied head counted once).
    pub fn num_params(&self) -> usize {
        match self {
            AnyConfig::Gpt2(c) => c.num_params(),
            AnyConfig::Llama { cfg, .. } => {
                llama::param_shapes(cfg).iter().map(|(_, s)| s.iter().product::<usize>()).sum()
            }
        }
    }

    /// The shape pricing needs (the API quotes with it, the worker re-estimates with it).
    pub fn shape(&self) -> ModelShape {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        match self {
            AnyConfig::Gpt2(c) => c.shape(),
            AnyConfig::Llama { cfg, .. } => ModelShape {
                parameters: self.num_params() as u64,
                n_layer: n(cfg.num_hidden_layers),
                n_embd: n(cfg.hidden_size),
                vocab_size: n(cfg.vocab_size),
                n_positions: n(cfg.max_position_embeddings),
                lora_in_out: self.lora_base().in_out_sum(),
            },
        }
    }

    /// The linear layers a LoRA adapter can target in this model, under PEFT's module paths.
    pub fn lora_base(&self) -> LoraBase {
        match self {
            AnyConfig::Gpt2(c) => LoraBase::gpt2(c),
            AnyConfig::Llama { cfg, .. } => LoraBase::llama(cfg),
        }
    }

    /// The catalogue card's one-line architecture, family first.
    pub fn architecture(&self) -> String {
        match self {
            AnyConfig::Gpt2(c) => format!(
                "gpt2 {}L/{}d/{}h ctx{} vocab{}",
                c.n_layer, c.n_embd, c.n_head, c.n_positions, c.vocab_size
            ),
            AnyConfig::Llama { cfg: c, family, .. } => format!(
                "{family} {}L/{}d/{}h/{}kv{} ffn{} ctx{} vocab{}{}",
                c.num_hidden_layers,
                c.hidden_size,
                c.num_attention_heads,
                c.num_key_value_heads,
                // An explicit head_dim (Qwen3's) only where it is not hidden / heads.
                if c.head_dim * c.num_attention_heads == c.hidden_size {
                    String::new()
                } else {
                    format!("/{}hd", c.head_dim)
                },
                c.intermediate_size,
                c.max_position_embeddings,
                c.vocab_size,
                if c.tie_word_embeddings { " tied" } else { "" }
            ),
        }
    }

    /// What the memory preflight needs, per family (GPT-2's MLP is 4·d unless `n_inner`).
    pub fn dims(&self) -> Dims {
        match self {
            AnyConfig::Gpt2(c) => Dims {
                params: c.num_params() as u64,
                layers: c.n_layer as u64,
                d_model: c.n_embd as u64,
                heads: c.n_head as u64,
                kv_width: c.n_embd as u64,
                ffn: c.inner_dim() as u64,
                vocab: c.vocab_size as u64,
            },
            AnyConfig::Llama { cfg: c, .. } => Dims {
                params: self.num_params() as u64,
                layers: c.num_hidden_layers as u64,
                d_model: c.hidden_size as u64,
                heads: c.num_attention_heads as u64,
                kv_width: (c.num_key_value_heads * c.head_dim) as u64,
                ffn: c.intermediate_size as u64,
                vocab: c.vocab_size as u64,
            },
        }
    }
}

/// A Mistral `config.json` as the Llama config of the same network: HF `MistralConfig`'s
/// defaults where a key is absent, and sliding-window attention refused unless it is off
/// (`sliding_window` null) or no shorter than the context, where it masks nothing.
fn mistral_as_llama(mut v: serde_json::Value) -> Result<llama::Config, FamilyError> {
    let Some(m) = v.as_object_mut() else {
        return Err(FamilyError::MalformedConfig("not a JSON object".into()));
    };
    for (key, default) in [
        ("intermediate_size", 14336u64),
        ("num_key_value_heads", 8),
        ("max_position_embeddings", 4096 * 32),
    ] {
        if m.get(key).is_none_or(serde_json::Value::is_null) {
            m.insert(key.into(), default.into());
        }
    }
    m.insert("model_type".into(), "llama".into());
    let window = m.remove("sliding_window");
    let cfg = llama::Config::from_json(&v.to_string())?;
    match window {
        None | Some(serde_json::Value::Null) => Ok(cfg),
        Some(w) if w.as_u64().is_some_and(|w| w >= cfg.max_position_embeddings as u64) => Ok(cfg),
        Some(w) => Err(llama::ConfigError::Unsupported {
            field: "sliding_window",
            value: w.to_string(),
            supported: "null or at least max_position_embeddings (sliding-window attention \
                        is not implemented)",
        }
        .into()),
    }
}

/// Sizes a memory estimate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub params: u64,
    pub layers: u64,
    pub d_model: u64,
    pub heads: u64,
    /// Width of the cached keys (and of the values): `d_model` for GPT-2, kv heads × head_dim
    /// under grouped-query attention.
    pub kv_width: u64,
    /// MLP hidden width (Llama's gate and up projections each have it).
    pub ffn: u64,
    pub vocab: u64,
}

/// A complete, validated set of f32 CPU weights of either family.
#[derive(Clone, Debug)]
pub enum AnyWeights {
    Gpt2(Weights),
    Llama(LlamaWeights),
}

fn mismatch(cfg: &AnyConfig, weights: Family) -> FamilyError {
    FamilyError::FamilyMismatch { config: cfg.family(), weights }
}

impl AnyWeights {
    pub fn family(&self) -> Family {
        match self {
            AnyWeights::Gpt2(_) => Family::Gpt2,
            AnyWeights::Llama(_) => Family::Llama,
        }
    }

    /// Strict load of a single-file `model.safetensors` image (every tensor's name, shape,
    /// dtype and finiteness checked against `cfg`).
    pub fn from_safetensors_bytes(bytes: &[u8], cfg: &AnyConfig) -> Result<Self, FamilyError> {
        Ok(match cfg {
            AnyConfig::Gpt2(c) => AnyWeights::Gpt2(weights::load_safetensors_bytes(bytes, c)?),
            AnyConfig::Llama { cfg, .. } => {
                AnyWeights::Llama(llama_weights::load_safetensors_bytes(bytes, cfg)?)
            }
        })
    }

    /// The HF-layout f32 `model.safetensors` image.
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, FamilyError> {
        Ok(match self {
            AnyWeights::Gpt2(w) => weights::safetensors_bytes(w)?,
            AnyWeights::Llama(w) => llama_weights::safetensors_bytes(w)?,
        })
    }

    /// The canonical content hash.
    pub fn hash(&self) -> Result<Hash32, FamilyError> {
        Ok(match self {
            AnyWeights::Gpt2(w) => w.hash()?,
            AnyWeights::Llama(w) => w.hash()?,
        })
    }

    /// Snapshot of a training `VarMap`.
    pub fn from_var_map(cfg: &AnyConfig, vm: &VarMap) -> Result<Self, FamilyError> {
        Ok(match cfg {
            AnyConfig::Gpt2(c) => AnyWeights::Gpt2(Weights::from_var_map(c, vm)?),
            AnyConfig::Llama { cfg, .. } => AnyWeights::Llama(LlamaWeights::from_var_map(cfg, vm)?),
        })
    }

    /// Trainable copies on `device`.
    pub fn to_var_map(&self, device: &Device) -> Result<VarMap, FamilyError> {
        Ok(match self {
            AnyWeights::Gpt2(w) => w.to_var_map(device)?,
            AnyWeights::Llama(w) => w.to_var_map(device)?,
        })
    }

    /// A frozen model (inference, evaluation) on `device`.
    pub fn model(&self, cfg: &AnyConfig, device: &Device) -> Result<AnyModel, FamilyError> {
        Ok(match (self, cfg) {
            (AnyWeights::Gpt2(w), AnyConfig::Gpt2(c)) => AnyModel::Gpt2(w.model(c, device)?),
            (AnyWeights::Llama(w), AnyConfig::Llama { cfg, .. }) => {
                AnyModel::Llama(w.model(cfg, device)?)
            }
            (w, _) => return Err(mismatch(cfg, w.family())),
        })
    }

    /// Every tensor under its HF name.
    pub fn tensors(&self) -> &std::collections::BTreeMap<String, Tensor> {
        match self {
            AnyWeights::Gpt2(w) => w.tensors(),
            AnyWeights::Llama(w) => w.tensors(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        match self {
            AnyWeights::Gpt2(w) => w.get(name),
            AnyWeights::Llama(w) => w.get(name),
        }
    }

    /// These weights with `adapter` merged in (W + scale·B·A on every targeted layer): the
    /// effective weights of a LoRA derivation, whose canonical hash is its identity.
    pub fn merged(&self, cfg: &AnyConfig, adapter: &LoraAdapter) -> Result<Self, FamilyError> {
        let t = adapter.merge(self.tensors())?;
        Ok(match cfg {
            AnyConfig::Gpt2(c) => AnyWeights::Gpt2(Weights::from_tensors(c, t)?),
            AnyConfig::Llama { cfg, .. } => AnyWeights::Llama(LlamaWeights::from_tensors(cfg, t)?),
        })
    }

    /// A checkpoint's two commitments, (weights hash, `opt`'s state hash), hashed side by
    /// side as [`AdamW::checkpoint_hashes`] does for GPT-2.
    pub fn checkpoint_hashes(&self, opt: &AdamW) -> Result<(Hash32, Hash32), FamilyError> {
        match self {
            AnyWeights::Gpt2(w) => Ok(opt.checkpoint_hashes(w)?),
            AnyWeights::Llama(w) => std::thread::scope(|s| {
                let h = s.spawn(|| w.hash());
                let o = opt.state_hash();
                let h = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                Ok((h?, o))
            }),
        }
    }
}

/// Seeded random init of either family (HF's `_init_weights`), for tests and from-scratch
/// models.
pub fn init_weights(cfg: &AnyConfig, seed: u64) -> Result<VarMap, FamilyError> {
    Ok(match cfg {
        AnyConfig::Gpt2(c) => weights::init_weights(c, seed)?,
        AnyConfig::Llama { cfg, .. } => llama::init_weights(cfg, seed)?,
    })
}

/// The hash of the weights a `model.safetensors` on disk holds, after every check a load
/// does (for uploads the API spooled to disk). GPT-2 reads the file in bounded chunks;
/// Llama maps it and converts every tensor to f32 (memory: the weights in f32, once).
pub fn check_safetensors_file(path: &Path, cfg: &AnyConfig) -> Result<Hash32, FamilyError> {
    Ok(match cfg {
        AnyConfig::Gpt2(c) => weights::check_safetensors_file(path, c)?,
        AnyConfig::Llama { cfg, .. } => llama_weights::load_safetensors(path, cfg)?.hash()?,
    })
}

/// A model of either family, built over a `VarBuilder`.
#[derive(Clone, Debug)]
pub enum AnyModel {
    Gpt2(Gpt2),
    Llama(Llama),
}

/// A KV cache for [`AnyModel::forward_cached`] (batch 1 for GPT-2's, as generation uses).
#[derive(Clone, Debug)]
pub enum AnyCache {
    Gpt2(KvCache),
    Llama(LlamaCache),
}

impl AnyCache {
    /// Positions already cached.
    pub fn len(&self) -> usize {
        match self {
            AnyCache::Gpt2(c) => c.len(),
            AnyCache::Llama(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AnyModel {
    /// Builds the model from `vb` (over a `VarMap`, the parameters are trainable `Var`s).
    /// GPT-2's dropout probabilities come from its config.
    pub fn new(cfg: &AnyConfig, vb: VarBuilder) -> Result<Self, FamilyError> {
        Ok(match cfg {
            AnyConfig::Gpt2(c) => AnyModel::Gpt2(Gpt2::new(c, vb)?),
            AnyConfig::Llama { cfg, .. } => AnyModel::Llama(Llama::new(cfg, vb)?),
        })
    }

    /// Over a `VarMap` on `device` in f32.
    pub fn from_var_map(
        cfg: &AnyConfig,
        vm: &VarMap,
        device: &Device,
    ) -> Result<Self, FamilyError> {
        Self::new(cfg, VarBuilder::from_varmap(vm, DType::F32, device))
    }

    /// An empty cache for batch-1 generation.
    pub fn new_cache(&self) -> AnyCache {
        self.new_cache_for(0)
    }

    /// An empty cache for batch-1 generation of about `positions` in all (prompt + new
    /// tokens): a Llama-family cache makes room for them at once instead of growing.
    pub fn new_cache_for(&self, positions: usize) -> AnyCache {
        match self {
            AnyModel::Gpt2(m) => AnyCache::Gpt2(KvCache::new(m.config(), 1)),
            AnyModel::Llama(m) => AnyCache::Llama(LlamaCache::with_capacity(m.config(), positions)),
        }
    }

    /// Logits (B, T, V) for ids (B, T) that continue `cache`, appending to it; no graph.
    pub fn forward_cached(
        &self,
        ids: &Tensor,
        cache: &mut AnyCache,
    ) -> Result<Tensor, FamilyError> {
        Ok(match (self, cache) {
            (AnyModel::Gpt2(m), AnyCache::Gpt2(c)) => m.forward(ids, Some(c))?,
            (AnyModel::Llama(m), AnyCache::Llama(c)) => m.forward_cached(ids, c)?.detach(),
            (m, _) => {
                return Err(FamilyError::Gpt2(Gpt2Error::InvalidConfig(format!(
                    "a cache of another family than the {} model",
                    m.family()
                ))));
            }
        })
    }

    /// Per-token NLL (B, T) f32 of `targets` ([`crate::ops::IGNORE_INDEX`] skipped), no graph.
    pub fn token_nll(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor, FamilyError> {
        Ok(match self {
            AnyModel::Gpt2(m) => m.token_nll(ids, targets)?,
            AnyModel::Llama(m) => m.token_nll(ids, targets)?,
        })
    }

    pub fn family(&self) -> Family {
        match self {
            AnyModel::Gpt2(_) => Family::Gpt2,
            AnyModel::Llama(_) => Family::Llama,
        }
    }

    /// This model with `adapter`'s branches added and every base weight frozen: training it
    /// moves the adapter's variables only ([`LoraAdapter::var_map`]).
    pub fn with_lora(&self, adapter: &LoraAdapter) -> Result<Self, LoraError> {
        Ok(match self {
            AnyModel::Gpt2(m) => AnyModel::Gpt2(m.with_lora(adapter)?),
            AnyModel::Llama(m) => AnyModel::Llama(m.with_lora(adapter)?),
        })
    }

    /// One micro-batch of a training step: its mean loss, with its gradients moved into
    /// `grads` (the first micro-batch) or added to them. GPT-2 on the CPU uses the graph-free
    /// step (bit-identical to `loss` + `backward`); Llama one decoder layer at a time
    /// ([`Llama::loss_and_grads_layerwise`]: by hand on the CPU in f32). Either way the
    /// reductions have a fixed order, so the result does not depend on the thread count.
    pub fn train_micro_batch(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        dropout: Option<&mut DropoutRng>,
        opt: &AdamW,
        grads: &mut Option<Grads>,
    ) -> Result<f32, FamilyError> {
        match self {
            AnyModel::Gpt2(m) => {
                let (loss, g) = m.loss_and_grads(ids, targets, dropout)?;
                match grads.as_mut() {
                    None => *grads = Some(Grads::from_named(opt, g)?),
                    Some(acc) => acc.accumulate_named(opt, &g)?,
                }
                Ok(loss)
            }
            // One layer's activations at a time: on the CPU in f32 by the hand-written layer
            // step (full fine-tune and LoRA alike), elsewhere by candle's graphs.
            AnyModel::Llama(m) => {
                let acc = grads.get_or_insert_with(|| Grads::zeros(opt));
                let loss = m.loss_and_grads_layerwise(ids, targets, dropout, |g| {
                    acc.accumulate_step(opt, g).map_err(candle_core::Error::wrap)
                })?;
                Ok(loss)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::AdamWConfig;

    fn tiny_llama_json(tied: bool) -> String {
        serde_json::json!({
            "model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "tie_word_embeddings": tied,
        })
        .to_string()
    }

    #[test]
    fn model_type_picks_the_family_and_unknown_ones_are_named() {
        let c = AnyConfig::from_json(&tiny_llama_json(false)).unwrap();
        assert_eq!(c.family(), Family::Llama);
        assert_eq!(c.to_json(), tiny_llama_json(false), "Llama config.json is kept verbatim");
        let s = c.shape();
        assert_eq!((s.n_layer, s.n_embd, s.vocab_size, s.n_positions), (2, 32, 64, 32));
        // embed + head 2·64·32, per layer q,o 32·32, k,v 16·32, 3 MLP 48·32, 2 norms, final norm
        let per_layer = 2 * 32 * 32 + 2 * 16 * 32 + 3 * 48 * 32 + 2 * 32;
        assert_eq!(s.parameters, (2 * 64 * 32 + 2 * per_layer + 32) as u64);
        assert!(c.architecture().starts_with("llama 2L/32d/4h/2kv"), "{}", c.architecture());
        let g = AnyConfig::from_json(&Config::new(64, 16, 32, 2, 4).to_json()).unwrap();
        assert_eq!(g.family(), Family::Gpt2);
        let e = AnyConfig::from_json(r#"{"model_type":"mamba","vocab_size":5}"#).unwrap_err();
        assert!(matches!(&e, FamilyError::UnknownModelType(t) if t == "mamba"));
        assert!(e.to_string().contains("supported: gpt2, llama, mistral, qwen2, qwen3"), "{e}");
        assert!(matches!(AnyConfig::from_json("{}"), Err(FamilyError::MalformedConfig(_))));
    }

    fn tiny_mistral_json(window: serde_json::Value) -> String {
        serde_json::json!({
            "model_type": "mistral", "architectures": ["MistralForCausalLM"],
            "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "sliding_window": window, "initializer_range": 0.2,
        })
        .to_string()
    }

    /// Mistral with its window off is Llama's network: the same logits as
    /// candle-transformers' mistral on the same random weights; a window shorter than the
    /// context is refused by name.
    #[test]
    fn mistral_without_a_sliding_window_runs_as_llama_and_matches_candle_transformers() {
        for window in [serde_json::Value::Null, 32.into(), 4096.into()] {
            let c = AnyConfig::from_json(&tiny_mistral_json(window)).unwrap();
            assert_eq!(c.family(), Family::Mistral);
            assert!(c.architecture().starts_with("mistral 2L/32d/4h/2kv"), "{}", c.architecture());
        }
        let e = AnyConfig::from_json(&tiny_mistral_json(16.into())).unwrap_err();
        assert!(e.to_string().contains("sliding_window"), "{e}");

        let c = AnyConfig::from_json(&tiny_mistral_json(serde_json::Value::Null)).unwrap();
        let AnyConfig::Llama { cfg, .. } = &c else { panic!() };
        let vm = init_weights(&c, 9).unwrap();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let ours = AnyModel::new(&c, vb.clone()).unwrap();
        use candle_transformers::models::mistral as ct;
        let ct_cfg = ct::Config {
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            intermediate_size: cfg.intermediate_size,
            num_hidden_layers: cfg.num_hidden_layers,
            num_attention_heads: cfg.num_attention_heads,
            head_dim: Some(cfg.head_dim),
            num_key_value_heads: cfg.num_key_value_heads,
            hidden_act: candle_nn::Activation::Silu,
            max_position_embeddings: cfg.max_position_embeddings,
            rms_norm_eps: cfg.rms_norm_eps,
            rope_theta: cfg.rope_theta,
            sliding_window: None,
            use_flash_attn: false,
        };
        let mut theirs = ct::Model::new(&ct_cfg, vb).unwrap();
        let ids: Vec<u32> = (0..24).map(|i| (i * 13 % 64) as u32).collect();
        let x = Tensor::from_vec(ids, (2, 12), &Device::Cpu).unwrap();
        let want = theirs.forward(&x, 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut cache = ours.new_cache();
        let got = ours.forward_cached(&x, &mut cache).unwrap();
        let got = got.narrow(1, 11, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = got.iter().zip(&want).fold(0f32, |a, (g, w)| a.max((g - w).abs())) / scale;
        assert!(err < 1e-4, "relative error {err}");
    }

    #[test]
    fn llama_weights_round_trip_through_bytes_with_the_same_hash() {
        for tied in [false, true] {
            let cfg = AnyConfig::from_json(&tiny_llama_json(tied)).unwrap();
            let w = AnyWeights::from_var_map(&cfg, &init_weights(&cfg, 3).unwrap()).unwrap();
            let bytes = w.to_safetensors_bytes().unwrap();
            let back = AnyWeights::from_safetensors_bytes(&bytes, &cfg).unwrap();
            assert_eq!(back.hash().unwrap(), w.hash().unwrap());
            // A GPT-2 config refuses Llama tensors with a typed error, never a panic.
            let g = AnyConfig::from_json(&Config::new(64, 16, 32, 2, 4).to_json()).unwrap();
            assert!(AnyWeights::from_safetensors_bytes(&bytes, &g).is_err());
        }
    }

    #[test]
    fn llama_cached_logits_and_nll_match_the_full_forward_and_training_moves_every_param() {
        let cfg = AnyConfig::from_json(&tiny_llama_json(false)).unwrap();
        let vm = init_weights(&cfg, 5).unwrap();
        let w = AnyWeights::from_var_map(&cfg, &vm).unwrap();
        let m = w.model(&cfg, &Device::Cpu).unwrap();
        let ids: Vec<u32> = (0..10).map(|i| (i * 7 % 64) as u32).collect();
        let x = Tensor::from_vec(ids.clone(), (1, 10), &Device::Cpu).unwrap();
        let mut cache = m.new_cache();
        let full = m.forward_cached(&x, &mut cache).unwrap();
        let mut cache = m.new_cache();
        let a = Tensor::from_vec(ids[..6].to_vec(), (1, 6), &Device::Cpu).unwrap();
        m.forward_cached(&a, &mut cache).unwrap();
        let b = Tensor::from_vec(ids[6..].to_vec(), (1, 4), &Device::Cpu).unwrap();
        let tail = m.forward_cached(&b, &mut cache).unwrap();
        let d = (full.narrow(1, 6, 4).unwrap() - tail)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{d}");
        // NLL of token i+1 = -log_softmax(logits_i)[ids[i+1]].
        let y = Tensor::from_vec(
            ids[1..].iter().copied().chain([crate::ops::IGNORE_INDEX]).collect::<Vec<u32>>(),
            (1, 10),
            &Device::Cpu,
        )
        .unwrap();
        let nll = m.token_nll(&x, &y).unwrap().to_vec2::<f32>().unwrap();
        let lsm = candle_nn::ops::log_softmax(&full, 2).unwrap().to_vec3::<f32>().unwrap();
        for i in 0..9 {
            let want = -lsm[0][i][ids[i + 1] as usize];
            assert!((nll[0][i] - want).abs() < 1e-4, "{i}: {} vs {want}", nll[0][i]);
        }

        let model = AnyModel::from_var_map(&cfg, &vm, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
        let y = Tensor::from_vec(ids[1..].to_vec(), (1, 9), &Device::Cpu).unwrap();
        let x = Tensor::from_vec(ids[..9].to_vec(), (1, 9), &Device::Cpu).unwrap();
        let mut grads = None;
        let loss = model.train_micro_batch(&x, &y, None, &opt, &mut grads).unwrap();
        assert!(loss.is_finite() && loss > 3.0, "{loss}"); // ≈ ln 64 at init
        let grads = grads.unwrap();
        for (i, p) in opt.params().iter().enumerate() {
            let g = grads.get(i).unwrap();
            assert!(g.iter().any(|v| *v != 0.0), "{} has no gradient", p.name);
        }
        opt.step(&grads, 1e-3).unwrap();
        let after = AnyWeights::from_var_map(&cfg, &vm).unwrap();
        assert_ne!(after.hash().unwrap(), w.hash().unwrap());
    }
}
