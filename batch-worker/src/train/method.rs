//! What a train job moves: every weight (a full fine-tune) or a LoRA adapter over the frozen
//! input weights (`TrainParams::lora`).
//!
//! A LoRA job commits the same Merkle leaves as a full one, so receipts, `plan_audit` and the
//! completion read both kinds alike: a leaf's weights hash is the canonical hash of the
//! *effective* (merged) weights — the last leaf is the derived model's identity — and its
//! optimizer hash is [`lora_state_hash`] of the adapter and its AdamW moments. The second
//! binds the adapter's factors themselves: two factorisations of one product B·A train
//! differently from there on, and a replay continues from the factors.
//!
//! Storage: a LoRA checkpoint holds the adapter and its moments (a full one holds the whole
//! model and its moments); the finished job stores the adapter in PEFT's layout under
//! `adapter/` and the merged weights as the model (the private cache inference, evaluation
//! and further derivations load, merged once).

use candle_core::Tensor;
use posthuman_gpt2::family::{AnyConfig, AnyWeights};
use posthuman_gpt2::lora::{LoraAdapter, LoraBase, LoraConfig};
use posthuman_gpt2::{AdamW, optimizer_state_hash};
use posthuman_types::{Hash32, TrainParams};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::error::WorkerError;

/// The sub-prefix of a finished LoRA job's private prefix that holds the PEFT adapter.
pub const ADAPTER_DIR: &str = "adapter";

/// How a job trains; for LoRA, everything needed to build, load and merge its adapter.
pub enum Method {
    Full,
    Lora(Box<LoraSetup>),
}

/// A LoRA job's fixed parts: the PEFT config, the base's targetable layers and the frozen
/// input weights.
pub struct LoraSetup {
    pub config: LoraConfig,
    pub base: LoraBase,
    pub weights: AnyWeights,
}

/// The name an adapter gives its base (`base_model_name_or_path`): the parent's canonical
/// weights hash, so an adapter applied to any other weights is refused on load.
pub fn base_name(input_hash: &Hash32) -> String {
    format!("posthuman:{input_hash}")
}

/// The hash binding a LoRA checkpoint's trained state: the adapter's canonical hash and its
/// AdamW state's, domain-separated.
pub fn lora_state_hash(adapter: &Hash32, optimizer: &Hash32) -> Hash32 {
    let mut d = Sha256::new();
    d.update(b"posthuman-lora-state-v1");
    d.update(adapter.0);
    d.update(optimizer.0);
    Hash32(d.finalize().into())
}

/// The adapter's A matrices are drawn from the job seed, on a stream apart from batching's.
fn init_seed(seed: u64) -> u64 {
    seed ^ 0x4C6F_5241_496E_6974 // "LoRAInit"
}

fn internal(e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Internal(e.to_string())
}

impl Method {
    /// The method `p` asks for on a model of `cfg` whose weights are `weights` (hash
    /// `input_hash`). A LoRA config that does not fit the model (a module the family has
    /// not, a rank above a targeted layer) is the buyer's: [`WorkerError::BadLora`].
    pub fn new(
        cfg: &AnyConfig,
        p: &TrainParams,
        weights: &AnyWeights,
        input_hash: &Hash32,
    ) -> Result<Self, WorkerError> {
        let Some(lp) = &p.lora else { return Ok(Method::Full) };
        let name = base_name(input_hash);
        let base = cfg.lora_base().named(name.clone());
        let mut config = LoraConfig::from_params(base.family(), lp);
        config.base_model_name_or_path = Some(name);
        config.validate(&base).map_err(|e| WorkerError::BadLora(e.to_string()))?;
        Ok(Method::Lora(Box::new(LoraSetup { config, base, weights: weights.clone() })))
    }

    pub fn lora(&self) -> Option<&LoraSetup> {
        match self {
            Method::Full => None,
            Method::Lora(l) => Some(l),
        }
    }

    /// The file a checkpoint keeps its trained tensors in.
    pub fn checkpoint_file(&self) -> &'static str {
        match self {
            Method::Full => "model.safetensors",
            Method::Lora(_) => posthuman_gpt2::lora::ADAPTER_WEIGHTS_NAME,
        }
    }

    /// A checkpoint's trained tensors from their file, checked, as named tensors (the names
    /// of the optimizer's variables), and the leaf's hashes given the optimizer state's.
    pub fn load_checkpoint(
        &self,
        cfg: &AnyConfig,
        bytes: &[u8],
        optimizer: &Hash32,
    ) -> Result<(BTreeMap<String, Tensor>, Hash32, Hash32), WorkerError> {
        match self {
            Method::Full => {
                let w = AnyWeights::from_safetensors_bytes(bytes, cfg).map_err(internal)?;
                let h = w.hash().map_err(internal)?;
                Ok((w.tensors().clone(), h, *optimizer))
            }
            Method::Lora(l) => {
                let a = l.adapter_from_bytes(bytes)?;
                let (w, s) = l.leaf(cfg, &a, optimizer)?;
                Ok((a.tensors().map_err(internal)?, w, s))
            }
        }
    }

    /// The leaf of a checkpoint file pair (trained tensors, `optimizer.safetensors`).
    pub fn leaf_of_files(
        &self,
        cfg: &AnyConfig,
        tensors: &[u8],
        optimizer: &[u8],
    ) -> Result<(Hash32, Hash32), WorkerError> {
        let o = optimizer_state_hash(optimizer).map_err(internal)?;
        let (_, w, s) = self.load_checkpoint(cfg, tensors, &o)?;
        Ok((w, s))
    }
}

impl LoraSetup {
    /// A fresh adapter (PEFT's init: B = 0, so the adapted model starts as its base).
    pub fn init(&self, seed: u64) -> Result<LoraAdapter, WorkerError> {
        LoraAdapter::init(self.config.clone(), &self.base, init_seed(seed)).map_err(internal)
    }

    /// An adapter from `adapter_model.safetensors` bytes of this job's config.
    pub fn adapter_from_bytes(&self, bytes: &[u8]) -> Result<LoraAdapter, WorkerError> {
        let json = self.config.to_json().map_err(internal)?;
        LoraAdapter::from_bytes(&json, bytes, &self.base).map_err(internal)
    }

    /// The effective weights: the frozen input with `adapter` merged in.
    pub fn merged(
        &self,
        cfg: &AnyConfig,
        adapter: &LoraAdapter,
    ) -> Result<AnyWeights, WorkerError> {
        self.weights.merged(cfg, adapter).map_err(internal)
    }

    /// A checkpoint leaf: (effective weights hash, [`lora_state_hash`]), given the hash of the
    /// adapter's AdamW state.
    pub fn leaf(
        &self,
        cfg: &AnyConfig,
        adapter: &LoraAdapter,
        optimizer: &Hash32,
    ) -> Result<(Hash32, Hash32), WorkerError> {
        let w = self.merged(cfg, adapter)?.hash().map_err(internal)?;
        let a = adapter.hash().map_err(internal)?;
        Ok((w, lora_state_hash(&a, optimizer)))
    }

    /// The leaf of the running adapter and optimizer.
    pub fn leaf_now(
        &self,
        cfg: &AnyConfig,
        adapter: &LoraAdapter,
        opt: &AdamW,
    ) -> Result<(Hash32, Hash32), WorkerError> {
        self.leaf(cfg, adapter, &opt.state_hash())
    }
}
