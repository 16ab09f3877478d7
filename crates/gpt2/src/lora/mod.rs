//! LoRA adapters in PEFT's format, for GPT-2 and the Llama family.
//!
//! Files: `config.rs` (what to adapt: [`LoraConfig`], [`LoraBase`]) and `adapter.rs` (the
//! trained matrices: [`LoraAdapter`]); the errors of both are [`LoraError`].
//!
//! - [`LoraConfig`]: PEFT's `adapter_config.json` (`r`, `lora_alpha`, `lora_dropout`,
//!   `target_modules`, `fan_in_fan_out`, …), round-tripped with the keys we do not read kept
//!   in `extra`, and validated against a base ([`LoraConfig::validate`]) with one typed error
//!   per way it can be wrong ([`LoraError`]).
//! - [`LoraBase`]: the linear layers of a base model that LoRA can target, under PEFT's module
//!   paths (`transformer.h.0.attn.c_attn`, `model.layers.0.self_attn.q_proj`), with their base
//!   weight names and sizes.
//! - [`LoraAdapter`]: the A (r, in) and B (out, r) matrices of every targeted layer in a
//!   `VarMap` under PEFT's tensor names (`base_model.model.<module>.lora_A.weight`), so AdamW
//!   over [`LoraAdapter::var_map`] trains the adapter and nothing else; PEFT's init (A
//!   kaiming-uniform with a = √5, i.e. U(±1/√in), B zero) from [`crate::SeededRng`]; strict load of
//!   `adapter_model.safetensors`; save in the layout `peft` loads unchanged; [`LoraAdapter::merge`]
//!   into ordinary base weights (W + scale·B·A, transposed for GPT-2's Conv1D (in, out) layout),
//!   whose canonical hash is the derived model's identity.
//!
//! The models take an adapter with `Gpt2::with_lora` / `Llama::with_lora`: they freeze
//! (detach) the base weights and add x·Aᵀ·Bᵀ·scale (after LoRA dropout, seeded from the step's
//! `DropoutRng`) to each targeted linear's output, on the autograd path.
//!
//! Supported PEFT features: plain LoRA and rsLoRA (`use_rslora`: scale α/√r); a config asking
//! for anything else that changes the arithmetic (DoRA, per-module rank/alpha patterns, bias
//! training, `modules_to_save`, layer subsets, regex targets) is refused, never ignored.

mod adapter;
mod config;

pub use adapter::LoraAdapter;
pub(crate) use adapter::LoraBranch;
pub use config::{Family, LinearLayer, LoraBase, LoraConfig};

use crate::Gpt2Error;
use std::path::PathBuf;

/// PEFT's config file name.
pub const ADAPTER_CONFIG_NAME: &str = "adapter_config.json";
/// PEFT's weights file name.
pub const ADAPTER_WEIGHTS_NAME: &str = "adapter_model.safetensors";
/// The largest rank we train or load: far above what LoRA is used with (4–64), low enough that
/// an adapter stays a small fraction of its base.
pub const MAX_RANK: usize = 256;

/// The prefix PEFT puts before module paths in adapter tensor names (PeftModel.base_model.model).
pub(crate) const PEFT_PREFIX: &str = "base_model.model.";

/// Why a LoRA config or adapter cannot be used with a base; each variant says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// `adapter_config.json` is not JSON or a field has the wrong JSON type.
    #[error("malformed adapter_config.json: {0}")]
    MalformedConfig(String),
    /// The config is a PEFT config of another method (prefix tuning, IA³, …).
    #[error("peft_type is `{0}`, expected `LORA`")]
    NotLora(String),
    /// A PEFT option this implementation does not run; the adapter would compute something else.
    #[error("unsupported {field} = {value} (supported: {supported})")]
    Unsupported { field: &'static str, value: String, supported: &'static str },
    /// A PEFT option that changes the arithmetic (DoRA, rank patterns, …) is set.
    #[error("unsupported PEFT option {key} = {value} (must be unset)")]
    UnsupportedOption { key: String, value: String },
    /// `r` is outside 1..=[`MAX_RANK`].
    #[error("rank r = {r} is outside 1..={max}")]
    RankOutOfRange { r: usize, max: usize },
    /// `r` exceeds the smaller side of a targeted layer (the update could not be low-rank).
    #[error(
        "rank r = {r} exceeds layer `{module}` ({in_features} → {out_features}); use r ≤ {max}"
    )]
    RankTooLarge { module: String, r: usize, in_features: usize, out_features: usize, max: usize },
    /// `lora_alpha` is not a positive finite number.
    #[error("lora_alpha = {0} must be positive and finite")]
    InvalidAlpha(f64),
    /// `lora_dropout` is not in [0, 1).
    #[error("lora_dropout = {0} must be in [0, 1)")]
    InvalidDropout(f64),
    /// `target_modules` is empty.
    #[error("target_modules is empty (allowed: {allowed})")]
    NoTargetModules { allowed: String },
    /// A target module name matches no linear layer of the base.
    #[error("target module `{name}` is not a linear layer of {family} (allowed: {allowed})")]
    UnknownTargetModule { name: String, family: &'static str, allowed: String },
    /// `fan_in_fan_out` contradicts the base's weight layout (true for GPT-2's Conv1D only).
    #[error("fan_in_fan_out = {got}, but {family} stores its weights for {expected}")]
    FanInFanOut { got: bool, expected: bool, family: &'static str },
    /// The adapter names another base model than the one it is applied to.
    #[error("adapter was made for base `{adapter}`, not `{base}`")]
    BaseMismatch { adapter: String, base: String },
    /// The adapter weights are not a well-formed safetensors file.
    #[error("malformed adapter_model.safetensors: {0}")]
    MalformedWeights(String),
    /// A targeted layer has no A or B tensor in the file.
    #[error("adapter tensor `{name}` is missing")]
    MissingTensor { name: String },
    /// The file holds a tensor that is not an A or B of a targeted layer of this base.
    #[error("unexpected adapter tensor `{name}` (not a LoRA matrix of a targeted layer)")]
    UnexpectedTensor { name: String },
    /// A tensor's shape does not fit this base and rank: the adapter belongs to another base.
    #[error("adapter tensor `{tensor}` has shape {got:?}, this base and r need {expected:?}")]
    ShapeMismatch { tensor: String, expected: Vec<usize>, got: Vec<usize> },
    /// A tensor is stored in a dtype we do not load (F32, F16 and BF16 are accepted).
    #[error("adapter tensor `{tensor}` has unsupported dtype {dtype}")]
    UnsupportedDType { tensor: String, dtype: String },
    /// The adapter was made for another family (GPT-2 vs Llama) or other base sizes.
    #[error("adapter does not fit this model: {0}")]
    WrongBase(String),
    /// The base weights given to [`LoraAdapter::merge`] lack a targeted layer's weight.
    #[error("base weights have no `{name}`")]
    BaseTensorMissing { name: String },
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<Gpt2Error> for LoraError {
    /// The weights helpers this module shares ([`crate::weights`]) fail only on files and
    /// tensor operations.
    fn from(e: Gpt2Error) -> Self {
        match e {
            Gpt2Error::Io { path, source } => Self::Io { path, source },
            Gpt2Error::Candle(e) => Self::Candle(e),
            other => Self::Candle(candle_core::Error::Msg(other.to_string())),
        }
    }
}
