//! LoRA adapters in PEFT's format, for GPT-2 and the Llama family.
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
//!   kaiming-uniform with a = √5, i.e. U(±1/√in), B zero) from [`SeededRng`]; strict load of
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

use crate::weights::{weights_hash, write_atomic};
use crate::{Gpt2Error, SeededRng, llama};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use posthuman_types::Hash32;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// PEFT's config file name.
pub const ADAPTER_CONFIG_NAME: &str = "adapter_config.json";
/// PEFT's weights file name.
pub const ADAPTER_WEIGHTS_NAME: &str = "adapter_model.safetensors";
/// The largest rank we train or load: far above what LoRA is used with (4–64), low enough that
/// an adapter stays a small fraction of its base.
pub const MAX_RANK: usize = 256;

/// The prefix PEFT puts before module paths in adapter tensor names (PeftModel.base_model.model).
const PEFT_PREFIX: &str = "base_model.model.";

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
    fn from(e: Gpt2Error) -> Self {
        match e {
            Gpt2Error::Io { path, source } => Self::Io { path, source },
            Gpt2Error::Candle(e) => Self::Candle(e),
            other => Self::Candle(candle_core::Error::Msg(other.to_string())),
        }
    }
}

/// The model families LoRA applies to, with what PEFT calls their linear layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Gpt2,
    Llama,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Gpt2 => "GPT-2",
            Family::Llama => "Llama",
        }
    }

    /// The short target names users write (PEFT matches them as module-path suffixes).
    pub fn module_names(self) -> &'static [&'static str] {
        match self {
            // `c_proj` is both the attention output and the MLP output projection; write
            // `attn.c_proj` or `mlp.c_proj` for one of them.
            Family::Gpt2 => &["c_attn", "c_proj", "c_fc", "attn.c_proj", "mlp.c_proj"],
            Family::Llama => {
                &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            }
        }
    }

    /// Whether the base stores weights as (in, out) (HF's GPT-2 Conv1D), which PEFT calls
    /// `fan_in_fan_out`.
    pub fn fan_in_fan_out(self) -> bool {
        self == Family::Gpt2
    }
}

/// One linear layer LoRA can target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearLayer {
    /// PEFT's module path inside the causal-LM model (`transformer.h.0.attn.c_attn`).
    pub module: String,
    /// The base weight's name in this crate's weights (`h.0.attn.c_attn.weight`).
    pub weight: String,
    pub in_features: usize,
    pub out_features: usize,
}

/// The targetable linear layers of a base model, in module order, and optionally its name
/// (compared with an adapter's `base_model_name_or_path` when both are known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoraBase {
    family: Family,
    layers: Vec<LinearLayer>,
    name: Option<String>,
}

impl LoraBase {
    /// GPT-2's `c_attn`, `attn.c_proj`, `c_fc` and `mlp.c_proj` of every block.
    pub fn gpt2(cfg: &crate::Config) -> Self {
        let (c, f) = (cfg.n_embd, cfg.inner_dim());
        let mut layers = Vec::new();
        for i in 0..cfg.n_layer {
            for (m, inp, out) in [
                ("attn.c_attn", c, 3 * c),
                ("attn.c_proj", c, c),
                ("mlp.c_fc", c, f),
                ("mlp.c_proj", f, c),
            ] {
                layers.push(LinearLayer {
                    module: format!("transformer.h.{i}.{m}"),
                    weight: format!("h.{i}.{m}.weight"),
                    in_features: inp,
                    out_features: out,
                });
            }
        }
        Self { family: Family::Gpt2, layers, name: None }
    }

    /// Llama's attention (`q/k/v/o_proj`) and MLP (`gate/up/down_proj`) of every layer.
    pub fn llama(cfg: &llama::Config) -> Self {
        let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (q, kv) =
            (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
        let mut layers = Vec::new();
        for l in 0..cfg.num_hidden_layers {
            for (m, inp, out) in [
                ("self_attn.q_proj", c, q),
                ("self_attn.k_proj", c, kv),
                ("self_attn.v_proj", c, kv),
                ("self_attn.o_proj", q, c),
                ("mlp.gate_proj", c, i),
                ("mlp.up_proj", c, i),
                ("mlp.down_proj", i, c),
            ] {
                let module = format!("model.layers.{l}.{m}");
                layers.push(LinearLayer {
                    weight: format!("{module}.weight"),
                    module,
                    in_features: inp,
                    out_features: out,
                });
            }
        }
        Self { family: Family::Llama, layers, name: None }
    }

    /// The same base, known under `name` (an adapter naming another base is refused).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn layers(&self) -> &[LinearLayer] {
        &self.layers
    }

    /// PEFT's rule: a module is targeted when its path equals a target or ends in `.target`.
    fn matches(module: &str, target: &str) -> bool {
        module == target || module.strip_suffix(target).is_some_and(|head| head.ends_with('.'))
    }
}

/// PEFT's `adapter_config.json` for LoRA. Keys this module does not read stay in `extra` and
/// are written back unchanged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    #[serde(default = "d_peft_type")]
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: Vec<String>,
    #[serde(default = "d_bias")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn d_peft_type() -> String {
    "LORA".into()
}
fn d_bias() -> String {
    "none".into()
}

/// Keys of PEFT's config that never change what a loaded adapter computes (bookkeeping, or
/// initialisation schemes, which only matter before the weights exist). Every other key we
/// do not read names an option that changes the arithmetic (DoRA, rank/alpha patterns,
/// `modules_to_save`, layer subsets, newer LoRA variants): it must be absent or unset (null,
/// false, {} or []), so a config we cannot honour is refused instead of silently ignored.
const HARMLESS_KEYS: &[&str] = &[
    "peft_version",
    "revision",
    "inference_mode",
    "auto_mapping",
    "init_lora_weights",
    "loftq_config",
    "eva_config",
    "corda_config",
    "lora_ga_config",
    "megatron_core",
    "qalora_group_size",
    "ensure_weight_tying",
];

fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Number(_) => false,
        Value::Bool(true) => false,
    }
}

impl LoraConfig {
    /// A causal-LM LoRA config for `family` (its `fan_in_fan_out`, bias off, no base name).
    pub fn new(
        family: Family,
        r: usize,
        lora_alpha: f64,
        lora_dropout: f64,
        targets: &[&str],
    ) -> Self {
        Self {
            peft_type: d_peft_type(),
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: None,
            r,
            lora_alpha,
            lora_dropout,
            target_modules: targets.iter().map(|s| s.to_string()).collect(),
            bias: d_bias(),
            fan_in_fan_out: family.fan_in_fan_out(),
            use_rslora: false,
            extra: Map::new(),
        }
    }

    /// Parses `adapter_config.json` text (checks the JSON shape only; see [`Self::validate`]).
    pub fn from_json(s: &str) -> Result<Self, LoraError> {
        let v: Value =
            serde_json::from_str(s).map_err(|e| LoraError::MalformedConfig(e.to_string()))?;
        let Value::Object(m) = &v else {
            return Err(LoraError::MalformedConfig("not a JSON object".into()));
        };
        if let Some(Value::String(t)) = m.get("target_modules") {
            return Err(LoraError::Unsupported {
                field: "target_modules",
                value: format!("{t:?} (a regex or `all-linear`)"),
                supported: "a list of module names",
            });
        }
        serde_json::from_value(v).map_err(|e| LoraError::MalformedConfig(e.to_string()))
    }

    /// The JSON PEFT reads.
    pub fn to_json(&self) -> Result<String, LoraError> {
        serde_json::to_string_pretty(self).map_err(|e| LoraError::MalformedConfig(e.to_string()))
    }

    /// The factor on B·A: α/r, or α/√r with rsLoRA.
    pub fn scale(&self) -> f64 {
        let r = self.r.max(1) as f64;
        if self.use_rslora { self.lora_alpha / r.sqrt() } else { self.lora_alpha / r }
    }

    /// Checks the config against `base`; returns the indices (into [`LoraBase::layers`]) of the
    /// targeted layers, in module order.
    pub fn validate(&self, base: &LoraBase) -> Result<Vec<usize>, LoraError> {
        let fam = base.family;
        let allowed = || fam.module_names().join(", ");
        if self.peft_type != "LORA" {
            return Err(LoraError::NotLora(self.peft_type.clone()));
        }
        if let Some(t) = &self.task_type
            && t != "CAUSAL_LM"
        {
            return Err(LoraError::Unsupported {
                field: "task_type",
                value: t.clone(),
                supported: "CAUSAL_LM",
            });
        }
        if self.bias != "none" {
            return Err(LoraError::Unsupported {
                field: "bias",
                value: self.bias.clone(),
                supported: "none",
            });
        }
        if let Some((key, v)) =
            self.extra.iter().find(|(k, v)| !HARMLESS_KEYS.contains(&k.as_str()) && !is_unset(v))
        {
            return Err(LoraError::UnsupportedOption { key: key.clone(), value: v.to_string() });
        }
        if !(1..=MAX_RANK).contains(&self.r) {
            return Err(LoraError::RankOutOfRange { r: self.r, max: MAX_RANK });
        }
        if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
            return Err(LoraError::InvalidAlpha(self.lora_alpha));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(LoraError::InvalidDropout(self.lora_dropout));
        }
        if self.fan_in_fan_out != fam.fan_in_fan_out() {
            return Err(LoraError::FanInFanOut {
                got: self.fan_in_fan_out,
                expected: fam.fan_in_fan_out(),
                family: fam.name(),
            });
        }
        if let (Some(a), Some(b)) = (&self.base_model_name_or_path, &base.name)
            && !a.is_empty()
            && a != b
        {
            return Err(LoraError::BaseMismatch { adapter: a.clone(), base: b.clone() });
        }
        if self.target_modules.is_empty() {
            return Err(LoraError::NoTargetModules { allowed: allowed() });
        }
        let mut hit = vec![false; base.layers.len()];
        for t in &self.target_modules {
            let mut any = false;
            for (h, l) in hit.iter_mut().zip(&base.layers) {
                if LoraBase::matches(&l.module, t) {
                    *h = true;
                    any = true;
                }
            }
            if !any {
                return Err(LoraError::UnknownTargetModule {
                    name: t.clone(),
                    family: fam.name(),
                    allowed: allowed(),
                });
            }
        }
        let targets: Vec<usize> = (0..hit.len()).filter(|&i| hit[i]).collect();
        for &i in &targets {
            let l = &base.layers[i];
            let max = l.in_features.min(l.out_features);
            if self.r > max {
                return Err(LoraError::RankTooLarge {
                    module: l.module.clone(),
                    r: self.r,
                    in_features: l.in_features,
                    out_features: l.out_features,
                    max,
                });
            }
        }
        Ok(targets)
    }
}

/// PEFT's tensor names of a module's A and B.
fn tensor_names(module: &str) -> (String, String) {
    (format!("{PEFT_PREFIX}{module}.lora_A.weight"), format!("{PEFT_PREFIX}{module}.lora_B.weight"))
}

/// One targeted layer's LoRA branch as a model applies it: y += dropout(x)·Aᵀ·Bᵀ·scale.
#[derive(Clone, Debug)]
pub(crate) struct LoraBranch {
    pub a: Tensor,
    pub b: Tensor,
    pub a_name: String,
    pub b_name: String,
    pub scale: f64,
    pub dropout: f32,
}

impl LoraBranch {
    /// The branch's output for x (…, in) → (…, out); `seed` draws the dropout mask. Without
    /// `grad` the adapter is detached (inference builds no graph).
    pub fn apply(&self, x: &Tensor, seed: Option<u64>, grad: bool) -> candle_core::Result<Tensor> {
        let (a, b) = if grad {
            (self.a.clone(), self.b.clone())
        } else {
            (self.a.detach(), self.b.detach())
        };
        let x = match seed {
            Some(s) if self.dropout > 0.0 => crate::ops::dropout(x, self.dropout, s)?,
            _ => x.clone(),
        };
        let (out, inp) = (self.b.dim(0)?, self.a.dim(1)?);
        let mut dims = x.dims().to_vec();
        let y = x.reshape(((), inp))?.matmul(&a.t()?)?.matmul(&b.t()?)?;
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        (y * self.scale)?.reshape(dims)
    }
}

/// A LoRA adapter over one base: its config, the targeted layers, and A/B as trainable vars.
/// (Not `Clone`: a `VarMap` clone would share the variables, and training one copy would
/// move the other.)
pub struct LoraAdapter {
    cfg: LoraConfig,
    base: LoraBase,
    targets: Vec<usize>,
    vm: VarMap,
}

impl std::fmt::Debug for LoraAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter")
            .field("cfg", &self.cfg)
            .field("base", &self.base)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LoraError + '_ {
    move |source| LoraError::Io { path: path.to_path_buf(), source }
}

impl LoraAdapter {
    /// A fresh adapter with PEFT's init: A ~ U(±1/√in) (torch's `kaiming_uniform_(a=√5)`),
    /// B = 0, so the adapted model starts equal to its base. A's are drawn from `seed` in
    /// module order.
    pub fn init(cfg: LoraConfig, base: &LoraBase, seed: u64) -> Result<Self, LoraError> {
        let targets = cfg.validate(base)?;
        match cfg.extra.get("init_lora_weights") {
            None | Some(Value::Null | Value::Bool(true)) => {}
            Some(other) => {
                return Err(LoraError::Unsupported {
                    field: "init_lora_weights",
                    value: other.to_string(),
                    supported: "true (PEFT's default init)",
                });
            }
        }
        let mut rng = SeededRng::new(seed);
        let mut tensors = BTreeMap::new();
        for &i in &targets {
            let l = &base.layers[i];
            let bound = 1.0 / (l.in_features as f64).sqrt();
            let a: Vec<f32> = (0..cfg.r * l.in_features)
                .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
                .collect();
            let (an, bn) = tensor_names(&l.module);
            tensors.insert(an, Tensor::from_vec(a, (cfg.r, l.in_features), &Device::Cpu)?);
            tensors.insert(bn, Tensor::zeros((l.out_features, cfg.r), DType::F32, &Device::Cpu)?);
        }
        Self::from_tensors(cfg, base, tensors)
    }

    /// An adapter from tensors under PEFT's names, checked strictly against `cfg` and `base`.
    pub fn from_tensors(
        cfg: LoraConfig,
        base: &LoraBase,
        mut tensors: BTreeMap<String, Tensor>,
    ) -> Result<Self, LoraError> {
        let targets = cfg.validate(base)?;
        let vm = VarMap::new();
        {
            let mut data = vm
                .data()
                .lock()
                .map_err(|_| LoraError::WrongBase("var map lock poisoned".into()))?;
            for &i in &targets {
                let l = &base.layers[i];
                let (an, bn) = tensor_names(&l.module);
                for (name, shape) in [(an, [cfg.r, l.in_features]), (bn, [l.out_features, cfg.r])] {
                    let t = tensors
                        .remove(&name)
                        .ok_or_else(|| LoraError::MissingTensor { name: name.clone() })?;
                    if t.dims() != shape {
                        return Err(LoraError::ShapeMismatch {
                            tensor: name,
                            expected: shape.to_vec(),
                            got: t.dims().to_vec(),
                        });
                    }
                    let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.detach();
                    data.insert(name, Var::from_tensor(&t)?);
                }
            }
        }
        if let Some(name) = tensors.into_keys().next() {
            return Err(LoraError::UnexpectedTensor { name });
        }
        Ok(Self { cfg, base: base.clone(), targets, vm })
    }

    /// Parses PEFT's two files' contents: the config JSON and the safetensors bytes
    /// (f32/f16/bf16, converted to f32).
    pub fn from_bytes(
        config_json: &str,
        weights: &[u8],
        base: &LoraBase,
    ) -> Result<Self, LoraError> {
        let cfg = LoraConfig::from_json(config_json)?;
        cfg.validate(base)?;
        let st = SafeTensors::deserialize(weights)
            .map_err(|e| LoraError::MalformedWeights(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                other => {
                    return Err(LoraError::UnsupportedDType {
                        tensor: name,
                        dtype: format!("{other:?}"),
                    });
                }
            };
            let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)?;
            tensors.insert(name, t);
        }
        Self::from_tensors(cfg, base, tensors)
    }

    /// Loads `adapter_config.json` + `adapter_model.safetensors` from `dir` (as `peft` saves).
    pub fn load(dir: &Path, base: &LoraBase) -> Result<Self, LoraError> {
        let cp = dir.join(ADAPTER_CONFIG_NAME);
        let wp = dir.join(ADAPTER_WEIGHTS_NAME);
        let cfg = std::fs::read_to_string(&cp).map_err(io_err(&cp))?;
        let w = std::fs::read(&wp).map_err(io_err(&wp))?;
        Self::from_bytes(&cfg, &w, base)
    }

    /// The current A/B values under PEFT's names (copies).
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>, LoraError> {
        Ok(crate::weights::snapshot_var_map(&self.vm)?)
    }

    /// `adapter_model.safetensors` bytes: f32, PEFT's names, `format: pt` metadata as peft writes.
    pub fn safetensors_bytes(&self) -> Result<Vec<u8>, LoraError> {
        let tensors = self.tensors()?;
        let mut bufs = Vec::with_capacity(tensors.len());
        for (name, t) in &tensors {
            let vals = t.flatten_all()?.to_vec1::<f32>()?;
            let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            bufs.push((name.clone(), t.dims().to_vec(), bytes));
        }
        let views = bufs
            .iter()
            .map(|(n, shape, b)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| LoraError::MalformedWeights(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::tensor::serialize(views, Some(meta))
            .map_err(|e| LoraError::MalformedWeights(e.to_string()))
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir` (created if
    /// needed), each atomically.
    pub fn save(&self, dir: &Path) -> Result<(), LoraError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        write_atomic(&dir.join(ADAPTER_WEIGHTS_NAME), &self.safetensors_bytes()?)?;
        write_atomic(&dir.join(ADAPTER_CONFIG_NAME), self.cfg.to_json()?.as_bytes())?;
        Ok(())
    }

    pub fn config(&self) -> &LoraConfig {
        &self.cfg
    }

    pub fn base(&self) -> &LoraBase {
        &self.base
    }

    /// The trainable A/B variables, for [`crate::AdamW::new`]: the base stays frozen.
    pub fn var_map(&self) -> &VarMap {
        &self.vm
    }

    /// Trainable values in the adapter.
    pub fn num_params(&self) -> usize {
        self.targets
            .iter()
            .map(|&i| {
                self.cfg.r * (self.base.layers[i].in_features + self.base.layers[i].out_features)
            })
            .sum()
    }

    /// The canonical hash of the adapter tensors ([`crate::weights_hash`] over PEFT's names).
    pub fn hash(&self) -> Result<Hash32, LoraError> {
        let t = self.tensors()?;
        Ok(weights_hash(t.iter().map(|(k, v)| (k.as_str(), v)))?)
    }

    /// The branch of the layer at PEFT module path `module`, if targeted; the tensors are the
    /// adapter's variables, so gradients reach them.
    pub(crate) fn branch(&self, module: &str) -> Result<Option<LoraBranch>, LoraError> {
        if !self.targets.iter().any(|&i| self.base.layers[i].module == module) {
            return Ok(None);
        }
        let (a_name, b_name) = tensor_names(module);
        let data = self
            .vm
            .data()
            .lock()
            .map_err(|_| LoraError::WrongBase("var map lock poisoned".into()))?;
        let get = |n: &str| {
            data.get(n)
                .map(|v| v.as_tensor().clone())
                .ok_or_else(|| LoraError::MissingTensor { name: n.to_string() })
        };
        Ok(Some(LoraBranch {
            a: get(&a_name)?,
            b: get(&b_name)?,
            a_name,
            b_name,
            scale: self.cfg.scale(),
            dropout: self.cfg.lora_dropout as f32,
        }))
    }

    /// Checks that this adapter was made for `base` (same family, layers and sizes).
    pub(crate) fn check_base(&self, base: &LoraBase) -> Result<(), LoraError> {
        if self.base.family != base.family || self.base.layers != base.layers {
            return Err(LoraError::WrongBase(format!(
                "the adapter targets a {} base of other sizes or family than this {} model",
                self.base.family.name(),
                base.family.name()
            )));
        }
        Ok(())
    }

    /// The base weights (this crate's names) with every targeted W replaced by
    /// W + scale·B·A (transposed when the base stores (in, out)): ordinary weights of the
    /// derived model, whose canonical hash is its identity. Untargeted tensors are unchanged.
    pub fn merge(
        &self,
        base_weights: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, LoraError> {
        let mut out = base_weights.clone();
        let tensors = self.tensors()?;
        for &i in &self.targets {
            let l = &self.base.layers[i];
            let (an, bn) = tensor_names(&l.module);
            let (Some(a), Some(b)) = (tensors.get(&an), tensors.get(&bn)) else {
                return Err(LoraError::MissingTensor { name: an });
            };
            let w = out
                .get(&l.weight)
                .ok_or_else(|| LoraError::BaseTensorMissing { name: l.weight.clone() })?;
            let mut delta = (b.matmul(a)? * self.cfg.scale())?;
            if self.base.family.fan_in_fan_out() {
                delta = delta.t()?.contiguous()?;
            }
            if w.dims() != delta.dims() {
                return Err(LoraError::ShapeMismatch {
                    tensor: l.weight.clone(),
                    expected: delta.dims().to_vec(),
                    got: w.dims().to_vec(),
                });
            }
            let merged = (w.to_dtype(DType::F32)?.detach() + delta)?;
            out.insert(l.weight.clone(), merged);
        }
        Ok(out)
    }
}
