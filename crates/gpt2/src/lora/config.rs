//! What a LoRA adapter adapts: PEFT's `adapter_config.json` ([`LoraConfig`]) and the
//! targetable linear layers of a base ([`LoraBase`]), with the validation that ties them.

use super::{LoraError, MAX_RANK};
use crate::llama;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The model families LoRA applies to, with what PEFT calls their linear layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Gpt2,
    Llama,
}

impl Family {
    pub(crate) fn name(self) -> &'static str {
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

    /// Σ (in + out) over every targetable layer: a rank-r adapter has at most r × this many
    /// parameters (pricing's `ModelShape::lora_in_out`).
    pub fn in_out_sum(&self) -> u64 {
        self.layers.iter().map(|l| (l.in_features + l.out_features) as u64).sum()
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

    /// The config of a LoRA train job (`posthuman_types::LoraParams`) for a `family` model.
    pub fn from_params(family: Family, p: &posthuman_types::LoraParams) -> Self {
        let targets: Vec<&str> = p.target_modules.iter().map(String::as_str).collect();
        Self::new(family, p.r as usize, p.lora_alpha, p.lora_dropout, &targets)
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
