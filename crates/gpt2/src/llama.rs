//! The Llama family (Llama 2/3/3.x incl. `rope_scaling` "llama3", TinyLlama, SmolLM/SmolLM2)
//! in candle-transformers' shape: [`Config`] from HF `config.json`, [`Llama::new`] over a
//! `VarBuilder` with HF tensor names, [`Llama::forward`] → logits, [`Llama::loss`] for
//! training, [`Llama::forward_cached`] with a [`LlamaCache`] for generation. Built from the
//! differentiable ops in [`crate::ops::llama`], so every parameter gets a gradient; the
//! lm-head cross-entropy reuses the fused [`crate::ops::lm_head_loss`] (HF `lm_head` and
//! `embed_tokens` are both (V, C)).
//!
//! Qwen2/Qwen2.5 and Qwen3 are this network with two optional features, set from their
//! `model_type`: biases on the q/k/v projections ([`Config::qkv_bias`], Qwen2) and a per-head
//! RMSNorm of q and k before RoPE ([`Config::qk_norm`], Qwen3, whose `head_dim` may differ
//! from hidden/heads). One forward and one backward serve all of them.
//!
//! Evaluation ([`Llama::token_nll`]) on the CPU in f32 runs a graph-free batched forward
//! (`llama/prefill.rs`) with the graph path's bits; generation's one-token steps run the fused
//! decode step (`llama/decode.rs`).
//!
//! The worker and the API reach it through [`crate::family`]. Training on the CPU in f32 runs
//! each decoder layer through a hand-written forward and backward without a graph (`train`,
//! [`Llama::loss_and_grads_layerwise`]), one layer's activations alive at a time; elsewhere
//! it runs on the autograd graph.

use crate::lora::{LoraAdapter, LoraBase, LoraBranch, LoraError};
use crate::ops::{self, llama as lops};
use crate::optim::StepGrads;
use crate::{DropoutRng, SeededRng};
use candle_core::{DType, Device, Result, Tensor, Var, bail};
use candle_nn::{VarBuilder, VarMap};
use serde_json::{Map, Value};

mod decode;
mod prefill;
mod train;

/// Why a `config.json` is not a Llama config we can run; each variant names what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or a field has the wrong JSON type.
    #[error("malformed Llama config.json: {0}")]
    Malformed(String),
    /// `model_type` is another family (or absent).
    #[error("model_type is `{0}`, expected `llama`, `qwen2` or `qwen3`")]
    WrongModelType(String),
    /// A value HF accepts but this implementation does not run (yet).
    #[error("unsupported {field} = {value} (supported: {supported})")]
    Unsupported { field: &'static str, value: String, supported: &'static str },
    /// Values that contradict each other or are out of range.
    #[error("invalid Llama config: {0}")]
    Invalid(String),
}

/// A Llama, Qwen2 or Qwen3 `config.json`, with HF's field names and defaults (those of the
/// file's `model_type`). Keys this module does not read (`architectures`, `bos_token_id`,
/// `torch_dtype`, …) stay in `extra`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// `head_dim` when given, else hidden_size / num_attention_heads.
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<lops::Llama3Scaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub initializer_range: f64,
    /// q_proj, k_proj and v_proj carry biases (Qwen2; o_proj never does here).
    pub qkv_bias: bool,
    /// q and k go through a per-head RMSNorm (`self_attn.q_norm` / `k_norm`, [head_dim])
    /// after projection and before RoPE (Qwen3).
    pub qk_norm: bool,
    pub extra: Map<String, Value>,
}

const READ: &[&str] = &[
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "max_position_embeddings",
    "tie_word_embeddings",
    "initializer_range",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
    "pretraining_tp",
    "rope_parameters",
];

/// Read for Qwen2/Qwen3 only (in a Llama file they stay in `extra`, as before).
const READ_QWEN: &[&str] =
    &["use_sliding_window", "sliding_window", "max_window_layers", "layer_types"];

/// The `model_type`s [`Config::from_json`] parses, each with its HF defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Llama,
    Qwen2,
    Qwen3,
}

fn field<T: serde::de::DeserializeOwned>(
    m: &Map<String, Value>,
    key: &str,
    default: Option<T>,
) -> std::result::Result<T, ConfigError> {
    match m.get(key) {
        None | Some(Value::Null) => {
            default.ok_or_else(|| ConfigError::Malformed(format!("missing `{key}`")))
        }
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| ConfigError::Malformed(format!("`{key}`: {e}"))),
    }
}

fn rope_scaling(
    v: Option<&Value>,
) -> std::result::Result<Option<lops::Llama3Scaling>, ConfigError> {
    let Some(Value::Object(m)) = v else {
        return match v {
            None | Some(Value::Null) => Ok(None),
            Some(other) => Err(ConfigError::Malformed(format!("`rope_scaling`: {other}"))),
        };
    };
    // Newer files say `rope_type`, older ones `type`.
    let kind: String = match m.get("rope_type").or_else(|| m.get("type")) {
        Some(Value::String(s)) => s.clone(),
        other => {
            return Err(ConfigError::Malformed(format!("`rope_scaling.rope_type`: {other:?}")));
        }
    };
    match kind.as_str() {
        "default" => Ok(None),
        "llama3" => {
            let s = lops::Llama3Scaling {
                factor: field(m, "factor", None)?,
                low_freq_factor: field(m, "low_freq_factor", None)?,
                high_freq_factor: field(m, "high_freq_factor", None)?,
                original_max_position_embeddings: field(
                    m,
                    "original_max_position_embeddings",
                    None,
                )?,
            };
            if !(s.factor > 0.0
                && s.low_freq_factor > 0.0
                && s.high_freq_factor > s.low_freq_factor
                && s.original_max_position_embeddings > 0)
            {
                return Err(ConfigError::Invalid(format!("rope_scaling {s:?}")));
            }
            Ok(Some(s))
        }
        _ => Err(ConfigError::Unsupported {
            field: "rope_scaling.rope_type",
            value: kind,
            supported: "default, llama3",
        }),
    }
}

/// `rope_theta` and the scaling rule, from the top-level keys older files use
/// (`rope_theta`, `rope_scaling`) or from `rope_parameters`, where transformers 5 writes both.
fn rope(
    m: &Map<String, Value>,
) -> std::result::Result<(f64, Option<lops::Llama3Scaling>), ConfigError> {
    let params = match m.get("rope_parameters") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(p),
        Some(other) => return Err(ConfigError::Malformed(format!("`rope_parameters`: {other}"))),
    };
    let theta = match (m.get("rope_theta"), params) {
        (Some(v), _) if !v.is_null() => field(m, "rope_theta", None)?,
        (_, Some(p)) => field(p, "rope_theta", Some(10_000.0))?,
        _ => 10_000.0,
    };
    let scaling = match (m.get("rope_scaling"), params) {
        (Some(v), _) if !v.is_null() => rope_scaling(Some(v))?,
        // `rope_parameters` without a type is the default rule with its theta.
        (_, Some(p)) if p.contains_key("rope_type") || p.contains_key("type") => {
            rope_scaling(m.get("rope_parameters"))?
        }
        _ => None,
    };
    Ok((theta, scaling))
}

/// Qwen2/Qwen3 sliding-window attention is not implemented: refused when switched on
/// (`use_sliding_window`) or when `layer_types` names a sliding layer.
fn check_no_sliding_window(m: &Map<String, Value>) -> std::result::Result<(), ConfigError> {
    if field::<bool>(m, "use_sliding_window", Some(false))? {
        return Err(ConfigError::Unsupported {
            field: "use_sliding_window",
            value: "true".into(),
            supported: "false (sliding-window attention is not implemented)",
        });
    }
    let layers: Vec<String> = field(m, "layer_types", Some(Vec::new()))?;
    if let Some(t) = layers.into_iter().find(|t| t != "full_attention") {
        return Err(ConfigError::Unsupported {
            field: "layer_types",
            value: t,
            supported: "full_attention",
        });
    }
    Ok(())
}

impl Config {
    /// A small config for tests and from-scratch training (untied head, HF defaults).
    pub fn tiny(vocab: usize, hidden: usize, layers: usize, heads: usize, kv_heads: usize) -> Self {
        Self {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: hidden * 8 / 3,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim: hidden / heads.max(1),
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            rope_scaling: None,
            max_position_embeddings: 128,
            tie_word_embeddings: false,
            initializer_range: 0.02,
            qkv_bias: false,
            qk_norm: false,
            extra: Map::new(),
        }
    }

    /// Parses and validates HF `config.json` text (`model_type` llama, qwen2 or qwen3).
    pub fn from_json(s: &str) -> std::result::Result<Self, ConfigError> {
        let v: Value =
            serde_json::from_str(s).map_err(|e| ConfigError::Malformed(e.to_string()))?;
        let Value::Object(m) = v else {
            return Err(ConfigError::Malformed("not a JSON object".into()));
        };
        let mt: String = field(&m, "model_type", Some(String::new()))?;
        let kind = match mt.as_str() {
            "llama" => Kind::Llama,
            "qwen2" => Kind::Qwen2,
            "qwen3" => Kind::Qwen3,
            _ => return Err(ConfigError::WrongModelType(mt)),
        };
        let act: String = field(&m, "hidden_act", Some("silu".into()))?;
        if act != "silu" {
            return Err(ConfigError::Unsupported {
                field: "hidden_act",
                value: act,
                supported: "silu",
            });
        }
        // Llama's attention_bias biases all four projections, Qwen3's too; Qwen2 always has
        // q/k/v biases and no such key.
        let bias_keys: &[&'static str] = match kind {
            Kind::Llama => &["attention_bias", "mlp_bias"],
            Kind::Qwen2 => &[],
            Kind::Qwen3 => &["attention_bias"],
        };
        for &key in bias_keys {
            if field::<bool>(&m, key, Some(false))? {
                return Err(ConfigError::Unsupported {
                    field: key,
                    value: "true".into(),
                    supported: "false",
                });
            }
        }
        if kind != Kind::Llama {
            check_no_sliding_window(&m)?;
        }
        // pretraining_tp > 1 only changes how HF splits matmuls, not the result.
        let _: usize = field(&m, "pretraining_tp", Some(1))?;
        let (d_vocab, d_hidden, d_inter, d_pos) = match kind {
            Kind::Llama => (32000, 4096, 11008, 2048),
            Kind::Qwen2 | Kind::Qwen3 => (151_936, 4096, 22016, 32768),
        };
        let heads: usize = field(&m, "num_attention_heads", Some(32))?;
        let hidden: usize = field(&m, "hidden_size", Some(d_hidden))?;
        // Qwen3Config's head_dim defaults to 128, not hidden/heads.
        let d_head = match kind {
            Kind::Qwen3 => 128,
            _ => hidden.checked_div(heads).unwrap_or(0),
        };
        let (rope_theta, rope_scaling) = rope(&m)?;
        let read = |k: &str| READ.contains(&k) || (kind != Kind::Llama && READ_QWEN.contains(&k));
        let cfg = Self {
            vocab_size: field(&m, "vocab_size", Some(d_vocab))?,
            hidden_size: hidden,
            intermediate_size: field(&m, "intermediate_size", Some(d_inter))?,
            num_hidden_layers: field(&m, "num_hidden_layers", Some(32))?,
            num_attention_heads: heads,
            num_key_value_heads: field(&m, "num_key_value_heads", Some(heads))?,
            head_dim: field(&m, "head_dim", Some(d_head))?,
            rms_norm_eps: field(&m, "rms_norm_eps", Some(1e-6))?,
            rope_theta,
            rope_scaling,
            max_position_embeddings: field(&m, "max_position_embeddings", Some(d_pos))?,
            tie_word_embeddings: field(&m, "tie_word_embeddings", Some(false))?,
            initializer_range: field(&m, "initializer_range", Some(0.02))?,
            qkv_bias: kind == Kind::Qwen2,
            qk_norm: kind == Kind::Qwen3,
            extra: m.into_iter().filter(|(k, _)| !read(k.as_str())).collect(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sizes are positive and consistent (heads divide, head_dim even for RoPE).
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
            self.max_position_embeddings,
        ]
        .contains(&0)
        {
            return bad("every size must be positive".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!(
                "num_key_value_heads {} must divide num_attention_heads {}",
                self.num_key_value_heads, self.num_attention_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for rotary embeddings", self.head_dim));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0 && self.initializer_range >= 0.0) {
            return bad("rms_norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }
}

/// Every parameter with its HF name and shape, in HF module order (`lm_head` only untied).
pub fn param_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let (c, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, c])];
    for l in 0..cfg.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        for (name, out_dim) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            out.push((p(&format!("self_attn.{name}.weight")), vec![out_dim, c]));
            if cfg.qkv_bias {
                out.push((p(&format!("self_attn.{name}.bias")), vec![out_dim]));
            }
        }
        out.push((p("self_attn.o_proj.weight"), vec![c, q]));
        if cfg.qk_norm {
            out.push((p("self_attn.q_norm.weight"), vec![cfg.head_dim]));
            out.push((p("self_attn.k_norm.weight"), vec![cfg.head_dim]));
        }
        out.extend([
            (p("mlp.gate_proj.weight"), vec![i, c]),
            (p("mlp.up_proj.weight"), vec![i, c]),
            (p("mlp.down_proj.weight"), vec![c, i]),
            (p("input_layernorm.weight"), vec![c]),
            (p("post_attention_layernorm.weight"), vec![c]),
        ]);
    }
    out.push(("model.norm.weight".to_string(), vec![c]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![v, c]));
    }
    out
}

/// HF `LlamaPreTrainedModel._init_weights`: N(0, initializer_range) for every matrix and
/// the embedding, unit norm weights, zero biases; drawn from [`SeededRng`] in
/// [`param_shapes`] order.
pub fn init_weights(cfg: &Config, seed: u64) -> std::result::Result<VarMap, crate::Gpt2Error> {
    cfg.validate().map_err(|e| crate::Gpt2Error::InvalidConfig(e.to_string()))?;
    let mut rng = SeededRng::new(seed);
    let vm = VarMap::new();
    let mut data = vm
        .data()
        .lock()
        .map_err(|_| crate::Gpt2Error::InvalidConfig("var map lock poisoned".into()))?;
    for (name, shape) in param_shapes(cfg) {
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; n]
        } else if shape.len() == 1 {
            vec![1.0; n]
        } else {
            (0..n).map(|_| (rng.normal() * cfg.initializer_range) as f32).collect()
        };
        data.insert(name, Var::from_tensor(&Tensor::from_vec(vals, shape, &Device::Cpu)?)?);
    }
    drop(data);
    Ok(vm)
}

/// A linear layer (HF (out, in) weight, a bias where the family has one) with its LoRA
/// branch, if any.
#[derive(Clone, Debug)]
struct Proj {
    w: Tensor,
    b: Option<Tensor>,
    lora: Option<LoraBranch>,
    /// W is frozen (under LoRA): its backward skips the weight gradient.
    frozen: bool,
}

impl Proj {
    fn new(w: Tensor) -> Self {
        Self { w, b: None, lora: None, frozen: false }
    }

    fn with_bias(w: Tensor, b: Option<Tensor>) -> Self {
        Self { b, ..Self::new(w) }
    }

    /// Frozen, without a bias or a LoRA branch: a constant linear map.
    fn plain_frozen(&self) -> bool {
        self.frozen && self.b.is_none() && self.lora.is_none()
    }

    /// x·Wᵀ (+ b) (+ the LoRA branch, its dropout mask drawn from `drop` when p > 0).
    fn fwd(&self, x: &Tensor, drop: &mut Option<&mut DropoutRng>) -> Result<Tensor> {
        // LoRA training on CPU f32 without dropout: one node keeping x·Aᵀ only.
        if let Some(br) = &self.lora
            && self.frozen
            && (br.dropout == 0.0 || drop.is_none())
            && lops::fused_f32(&[x, &self.w, &br.a, &br.b])
        {
            return lops::frozen_lora_linear(x, &self.w, self.b.as_ref(), &br.a, &br.b, br.scale);
        }
        let y = if self.frozen {
            lops::frozen_linear(x, &self.w)?
        } else {
            lops::linear_no_bias(x, &self.w)?
        };
        let y = match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let Some(br) = &self.lora else { return Ok(y) };
        let seed = match drop.as_deref_mut() {
            Some(rng) if br.dropout > 0.0 => Some(rng.next_seed()),
            _ => None,
        };
        y + br.apply(x, seed, true)?
    }
}

#[derive(Clone, Debug)]
struct Layer {
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    gate: Proj,
    up: Proj,
    down: Proj,
    ln_1: Tensor,
    ln_2: Tensor,
    /// Per-head RMSNorm weights of q and k, [head_dim] (Qwen3).
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
}

impl Layer {
    fn projs_mut(&mut self) -> [(&mut Proj, &'static str); 7] {
        [
            (&mut self.q, "self_attn.q_proj"),
            (&mut self.k, "self_attn.k_proj"),
            (&mut self.v, "self_attn.v_proj"),
            (&mut self.o, "self_attn.o_proj"),
            (&mut self.gate, "mlp.gate_proj"),
            (&mut self.up, "mlp.up_proj"),
            (&mut self.down, "mlp.down_proj"),
        ]
    }
}

/// Past keys and values per layer, rows (B, T_past, H_kv·head_dim) each, after RoPE: on the
/// CPU in f32 in buffers written in place that grow in blocks ([`decode`]), elsewhere as
/// tensors extended by `cat`.
#[derive(Clone, Debug)]
pub struct LlamaCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    bufs: Vec<decode::KvBuf>,
    batch: usize,
    len: usize,
    /// Positions the CPU buffers make room for on their first write.
    hint: usize,
}

impl LlamaCache {
    pub fn new(cfg: &Config) -> Self {
        Self::with_capacity(cfg, 0)
    }
    /// An empty cache whose CPU buffers are sized for `positions` (prompt + new tokens) at
    /// once; past that they still grow.
    pub fn with_capacity(cfg: &Config, positions: usize) -> Self {
        let n = cfg.num_hidden_layers;
        Self {
            layers: vec![None; n],
            bufs: vec![decode::KvBuf::default(); n],
            batch: 0,
            len: 0,
            hint: positions.min(cfg.max_position_embeddings),
        }
    }
    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Positions the CPU buffers hold before they next grow (0 before the first write, and
    /// off the CPU, where the cache is tensors).
    pub fn capacity(&self) -> usize {
        self.bufs.first().map_or(0, decode::KvBuf::capacity)
    }
}

/// Which decoder layers a CPU training step ([`Llama::loss_and_grads_layerwise`]) keeps the
/// forward's activations of for the backward, instead of running the layer again from its
/// input (activation checkpointing). The last layer's are always kept: its backward comes
/// right after the head's, so keeping them costs no more peak memory. Either way the
/// gradients are the same bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeptLayers {
    /// As many layers, from the last, as fit in the trained parameters' own state (weights,
    /// gradients and both AdamW moments: 16 bytes each); every layer under LoRA, whose
    /// adapter's state is tiny but whose base weights are not trained.
    #[default]
    Auto,
    /// At most this many (at least the last).
    AtMost(usize),
}

/// A Llama decoder with its lm head (tied to `embed_tokens` or its own `lm_head`).
#[derive(Clone, Debug)]
pub struct Llama {
    cfg: Config,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    rope: lops::RopeTable,
    kept: KeptLayers,
}

impl Llama {
    /// Builds the model from `vb` with HF names; over a `VarMap` the parameters are `Var`s.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        if let Err(e) = cfg.validate() {
            bail!("{e}");
        }
        let (c, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (q, kv) =
            (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let vb = vb.pp(format!("model.layers.{l}"));
            let (a, m) = (vb.pp("self_attn"), vb.pp("mlp"));
            let biased = |name: &str, out: usize| -> Result<Proj> {
                let b =
                    if cfg.qkv_bias { Some(a.get(out, &format!("{name}.bias"))?) } else { None };
                Ok(Proj::with_bias(a.get((out, c), &format!("{name}.weight"))?, b))
            };
            let norm = |name: &str| -> Result<Option<Tensor>> {
                cfg.qk_norm.then(|| a.get(cfg.head_dim, name)).transpose()
            };
            layers.push(Layer {
                q: biased("q_proj", q)?,
                k: biased("k_proj", kv)?,
                v: biased("v_proj", kv)?,
                o: Proj::new(a.get((c, q), "o_proj.weight")?),
                gate: Proj::new(m.get((i, c), "gate_proj.weight")?),
                up: Proj::new(m.get((i, c), "up_proj.weight")?),
                down: Proj::new(m.get((c, i), "down_proj.weight")?),
                ln_1: vb.get(c, "input_layernorm.weight")?,
                ln_2: vb.get(c, "post_attention_layernorm.weight")?,
                q_norm: norm("q_norm.weight")?,
                k_norm: norm("k_norm.weight")?,
            });
        }
        let embed = vb.get((v, c), "model.embed_tokens.weight")?;
        let lm_head =
            if cfg.tie_word_embeddings { embed.clone() } else { vb.get((v, c), "lm_head.weight")? };
        let inv_freq = lops::rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling.as_ref());
        let rope = lops::RopeTable::new(
            &inv_freq,
            cfg.max_position_embeddings,
            embed.dtype(),
            embed.device(),
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm: vb.get(c, "model.norm.weight")?,
            lm_head,
            rope,
            kept: KeptLayers::Auto,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Sets which layers a CPU training step keeps the activations of ([`KeptLayers`]).
    pub fn set_kept_layers(&mut self, kept: KeptLayers) {
        self.kept = kept;
    }

    /// This model with `adapter`'s branches on the layers it targets and every base weight
    /// frozen (detached): `loss` + `backward` then reaches only the adapter's A and B (AdamW
    /// over [`LoraAdapter::var_map`]). [`LoraAdapter::merge`] gives the same function as
    /// plain weights.
    pub fn with_lora(&self, adapter: &LoraAdapter) -> std::result::Result<Self, LoraError> {
        adapter.check_base(&LoraBase::llama(&self.cfg))?;
        let mut m = self.clone();
        m.embed = m.embed.detach();
        m.norm = m.norm.detach();
        m.lm_head = m.lm_head.detach();
        for (l, layer) in m.layers.iter_mut().enumerate() {
            layer.ln_1 = layer.ln_1.detach();
            layer.ln_2 = layer.ln_2.detach();
            layer.q_norm = layer.q_norm.as_ref().map(Tensor::detach);
            layer.k_norm = layer.k_norm.as_ref().map(Tensor::detach);
            for (p, name) in layer.projs_mut() {
                p.w = p.w.detach();
                p.b = p.b.as_ref().map(Tensor::detach);
                p.frozen = true;
                p.lora = adapter.branch(&format!("model.layers.{l}.{name}"))?;
            }
        }
        Ok(m)
    }

    fn check_ids(&self, ids: &Tensor, offset: usize) -> Result<(usize, usize)> {
        if ids.dtype() != DType::U32 {
            bail!("input ids must be u32, got {:?}", ids.dtype());
        }
        let (b, t) = ids.dims2()?;
        if b == 0 || t == 0 || offset + t > self.cfg.max_position_embeddings {
            bail!(
                "{t} tokens after {offset} cached positions: need 1..={} in all",
                self.cfg.max_position_embeddings
            );
        }
        let max = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if max as usize >= self.cfg.vocab_size {
            bail!("token id {max} is outside the vocabulary of {}", self.cfg.vocab_size);
        }
        Ok((b, t))
    }

    /// The final hidden states (B, T, C) after `model.norm`; with a cache, the ids follow its
    /// positions and their keys/values (after RoPE) are appended to it.
    /// `drop` draws the LoRA dropout masks (none without it).
    fn hidden(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut LlamaCache>,
        mut drop: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let offset = cache.as_ref().map_or(0, |c| c.len);
        let (b, t) = self.check_ids(ids, offset)?;
        if let Some(c) = &cache
            && c.len > 0
            && c.batch != b
        {
            bail!("cache holds batch {}, ids have {b}", c.batch);
        }
        let mut x = self.embed_ids(&self.embed, ids, b, t)?;
        for (li, l) in self.layers.iter().enumerate() {
            x = self.layer_fwd(l, li, x, offset, cache.as_deref_mut(), &mut drop)?;
        }
        if let Some(c) = cache {
            c.len += t;
            c.batch = b;
        }
        lops::rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)
    }

    /// Token embeddings (B, T, C) of ids (B, T) from `table` (the model's, or a copy of it).
    fn embed_ids(&self, table: &Tensor, ids: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        table.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, self.cfg.hidden_size))
    }

    /// One decoder layer on x (B, T, C) at positions offset..offset+T; with a cache, the
    /// layer's keys and values (after RoPE) are appended to it.
    fn layer_fwd(
        &self,
        l: &Layer,
        li: usize,
        x: Tensor,
        offset: usize,
        cache: Option<&mut LlamaCache>,
        drop: &mut Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (h, hkv, d) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let (b, t, _) = x.dims3()?;
        // (B, T, n·D) → (B, T, n, D), through the per-head norm (over D) when there is one.
        let rows = |y: Tensor, n: usize, norm: Option<&Tensor>| {
            let y = y.reshape((b, t, n, d))?;
            match norm {
                Some(w) => lops::rms_norm(&y, w, cfg.rms_norm_eps),
                None => Ok(y),
            }
        };
        let xn = lops::rms_norm(&x, &l.ln_1, cfg.rms_norm_eps)?;
        let q = self.rope.apply_rows(&rows(l.q.fwd(&xn, drop)?, h, l.q_norm.as_ref())?, offset)?;
        let k =
            self.rope.apply_rows(&rows(l.k.fwd(&xn, drop)?, hkv, l.k_norm.as_ref())?, offset)?;
        let (q, k) = (q.reshape((b, t, h * d))?, k.reshape((b, t, hkv * d))?);
        let v = l.v.fwd(&xn, drop)?;
        // Attention over the projections' rows, without head transposes: fused on CPU f32
        // (far less kept for a backward); with a cache, over the cached rows in place.
        let a = match cache {
            None => lops::causal_gqa_rows(&q, &k, &v, h, hkv)?,
            Some(c) if lops::fused_f32(&[&q, &k, &v]) => {
                let max = cfg.max_position_embeddings;
                decode::cached_attention(c, li, (&q, &k, &v), (h, hkv), max)?
            }
            Some(c) => {
                let Some(slot) = c.layers.get_mut(li) else { bail!("cache has no layer {li}") };
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
                    None => (k, v),
                };
                *slot = Some((k.clone(), v.clone()));
                lops::cached_gqa_rows(&q, &k, &v, h, hkv)?
            }
        };
        let x = (x + l.o.fwd(&a, drop)?)?;
        let xn = lops::rms_norm(&x, &l.ln_2, cfg.rms_norm_eps)?;
        if [&l.gate, &l.up, &l.down].iter().all(|p| p.plain_frozen())
            && lops::fused_f32(&[&xn, &l.gate.w])
        {
            // A LoRA step whose adapter leaves the MLP alone: one node keeping gate(x) and up(x).
            &x + lops::frozen_swiglu_mlp(&xn, &l.gate.w, &l.up.w, &l.down.w)?
        } else if l.gate.lora.is_none()
            && l.up.lora.is_none()
            && l.gate.b.is_none()
            && l.up.b.is_none()
        {
            // Gate and up without LoRA branches (a full fine-tune): one fused node.
            &x + l.down.fwd(&lops::gate_up(&xn, &l.gate.w, &l.up.w)?, drop)?
        } else {
            // lops::swiglu_mlp's arithmetic, with the projections' LoRA branches.
            let h = lops::silu_mul(&l.gate.fwd(&xn, drop)?, &l.up.fwd(&xn, drop)?)?;
            &x + l.down.fwd(&h, drop)?
        }
    }

    /// True when a LoRA adapter's branches are attached ([`Llama::with_lora`]).
    pub fn has_lora(&self) -> bool {
        self.layers.iter().any(|l| {
            [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].iter().any(|p| p.lora.is_some())
        })
    }

    /// A training step's loss ([`Llama::loss_with_dropout`]'s, the same bits) with its
    /// gradients handed to `sink` stage by stage. On the CPU in f32 (a full fine-tune or a LoRA
    /// adapter, with or without dropout) a forward without a graph keeps each layer's input,
    /// the activations of the layers [`KeptLayers`] says, and draws the LoRA dropout seeds in
    /// the graph's order; the head (final norm, lm head) is differentiated by hand, then each
    /// layer from the last (run again from its input unless kept) (`train`), then the
    /// embedding, each stage's parameters' gradients handed over as [`StepGrads::Params`].
    /// Gradients are the graph's sums added in another order; every reduction has a fixed
    /// order, so the bits do not depend on the thread count.
    ///
    /// Fallbacks (other devices and dtypes): without an adapter, the same checkpointing with
    /// each layer's candle graph ([`Llama::loss_and_grads_checkpointed`]); with one, the whole
    /// graph (its dropout masks cannot be replayed by a graph re-run).
    pub fn loss_and_grads_layerwise(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        dropout: Option<&mut DropoutRng>,
        mut sink: impl FnMut(StepGrads<'_>) -> Result<()>,
    ) -> Result<f32> {
        if train::applies(self, ids.device().is_cpu()) {
            return train::loss_and_grads(self, ids, targets, dropout, &mut sink);
        }
        if !self.has_lora() {
            return self.checkpointed_graph(ids, targets, |s| sink(StepGrads::Store(s)));
        }
        let loss = self.loss_with_dropout(ids, targets, dropout)?;
        sink(StepGrads::Store(&loss.backward()?))?;
        loss.to_dtype(DType::F32)?.to_scalar::<f32>()
    }

    /// [`Llama::loss`] and its gradients, one decoder layer at a time, each stage's gradients
    /// as a candle `GradStore` ([`Llama::loss_and_grads_layerwise`] without dropout, its
    /// layers' gradients put in a store). Refused with a LoRA adapter off the CPU.
    pub fn loss_and_grads_checkpointed(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        mut sink: impl FnMut(&candle_core::backprop::GradStore) -> Result<()>,
    ) -> Result<f32> {
        if !train::applies(self, ids.device().is_cpu()) {
            return self.checkpointed_graph(ids, targets, sink);
        }
        self.loss_and_grads_layerwise(ids, targets, None, |g| match g {
            StepGrads::Store(s) => sink(s),
            StepGrads::Params(ps) => {
                // An empty store: a backward from a constant holds only the constant's own.
                let root = Tensor::zeros((), DType::F32, &Device::Cpu)?;
                let mut store = root.backward()?;
                store.remove(&root);
                for (p, v) in ps {
                    store.insert(p, Tensor::from_slice(v, p.shape(), &Device::Cpu)?);
                }
                sink(&store)
            }
        })
    }

    /// [`Llama::loss`] and its gradients with one decoder layer's graph alive at a time
    /// (activation checkpointing): a forward without a graph keeps each layer's input, then
    /// the head's graph gives the last hidden state's gradient, and each layer, from the last,
    /// is run again from its input with a graph whose backward from (output · gradient) gives
    /// its parameters' gradients and its input's. Each stage's gradients are handed to `sink`
    /// (last layer first, the embedding last) and dropped. The loss is the same bits as
    /// [`Llama::loss`]'s (the recomputed forward is the same arithmetic); gradients are the
    /// same sums added in another order. Costs one more forward of the layers; keeps one
    /// layer's activations instead of all of them. No LoRA dropout (its masks would have to be
    /// replayed): refused with an adapter attached. The fallback of
    /// [`Llama::loss_and_grads_layerwise`] off the CPU or outside f32.
    fn checkpointed_graph(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        mut sink: impl FnMut(&candle_core::backprop::GradStore) -> Result<()>,
    ) -> Result<f32> {
        if self.has_lora() {
            bail!("layer checkpointing does not replay LoRA dropout masks: use loss + backward");
        }
        let (b, t) = self.check_ids(ids, 0)?;
        if targets.dims() != [b, t] {
            bail!("targets {:?} must match ids ({b}, {t})", targets.dims());
        }
        let c = self.cfg.hidden_size;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = self.embed_ids(&self.embed.detach(), ids, b, t)?;
        for (li, l) in self.layers.iter().enumerate() {
            let y = self.layer_fwd(l, li, x.clone(), 0, None, &mut None)?.detach();
            inputs.push(x);
            x = y;
        }
        let last = candle_core::Var::from_tensor(&x)?;
        drop(x);
        let hn = lops::rms_norm(last.as_tensor(), &self.norm, self.cfg.rms_norm_eps)?;
        let loss =
            ops::lm_head_loss(&hn.reshape((b * t, c))?, &self.lm_head, &targets.flatten_all()?)?;
        let store = loss.backward()?;
        let loss = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        sink(&store)?;
        let mut g = store.get(last.as_tensor()).cloned();
        drop(store);
        for (li, l) in self.layers.iter().enumerate().rev() {
            let Some(gy) = g.take() else { bail!("no gradient reached layer {li}'s output") };
            let x_in = candle_core::Var::from_tensor(&inputs[li])?;
            let y = self.layer_fwd(l, li, x_in.as_tensor().clone(), 0, None, &mut None)?;
            let store = ops::seeded_backward(&y, &gy)?;
            sink(&store)?;
            g = store.get(x_in.as_tensor()).cloned();
            inputs.truncate(li);
        }
        let Some(gx) = g else { bail!("no gradient reached the embeddings") };
        let store = ops::seeded_backward(&self.embed_ids(&self.embed, ids, b, t)?, &gx)?;
        sink(&store)?;
        Ok(loss)
    }

    /// Logits (B, T, V) for u32 ids (B, T).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        lops::linear_no_bias(&self.hidden(ids, None, None)?, &self.lm_head)
    }

    /// Logits (B, T, V) for ids that continue `cache` (empty: a fresh prompt), for
    /// incremental decoding; equal to the matching rows of [`Llama::forward`] on the whole
    /// sequence. Detach the parameters (or use a non-`Var` builder) to avoid building a graph.
    /// On the CPU in f32, one token of batch 1 takes the fused decode step ([`decode`]).
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut LlamaCache) -> Result<Tensor> {
        if decode::applies(self, ids, cache) {
            self.check_ids(ids, cache.len)?;
            let token = ids.flatten_all()?.to_vec1::<u32>()?[0];
            return decode::decode_step(self, token, cache);
        }
        lops::linear_no_bias(&self.hidden(ids, Some(cache), None)?, &self.lm_head)
    }

    /// Mean next-token cross-entropy of `targets` (B, T) u32 ([`ops::IGNORE_INDEX`] skipped),
    /// as a graph for `backward`.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        self.loss_with_dropout(ids, targets, None)
    }

    /// [`Llama::loss`] with LoRA dropout (p = the adapter's `lora_dropout`) whose masks are
    /// drawn from `dropout`, one seed per targeted projection in module order.
    pub fn loss_with_dropout(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        dropout: Option<&mut DropoutRng>,
    ) -> Result<Tensor> {
        let h = self.hidden(ids, None, dropout)?;
        let (b, t, c) = h.dims3()?;
        if targets.dims() != [b, t] {
            bail!("targets {:?} must match ids ({b}, {t})", targets.dims());
        }
        ops::lm_head_loss(&h.reshape((b * t, c))?, &self.lm_head, &targets.flatten_all()?)
    }

    /// Per-token NLL (B, T) f32 of `targets` ([`ops::IGNORE_INDEX`] rows are 0) without a
    /// graph, for evaluation: the same hidden states as [`Llama::forward`], scored by the
    /// lm-head NLL kernel GPT-2's evaluation uses.
    /// On the CPU in f32 without LoRA branches, the graph-free batched forward
    /// (`llama/prefill.rs`), with the same bits.
    pub fn token_nll(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        if prefill::applies(self) {
            let (b, t) = self.check_ids(ids, 0)?;
            if targets.dims() != [b, t] || targets.dtype() != DType::U32 {
                bail!("targets {:?} must be u32 shaped like the ids ({b}, {t})", targets.dims());
            }
            let ids = ids.flatten_all()?.to_vec1::<u32>()?;
            let tg = targets.flatten_all()?.to_vec1::<u32>()?;
            let nll = prefill::token_nll(self, &ids, &tg, b, t)?;
            return Tensor::from_vec(nll, (b, t), &Device::Cpu);
        }
        self.graph_token_nll(ids, targets)
    }

    /// [`Llama::token_nll`] through candle's ops (any device or dtype, LoRA branches): the
    /// reference the batched forward is tested against.
    #[doc(hidden)]
    pub fn graph_token_nll(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let h = self.hidden(ids, None, None)?.detach();
        let (b, t, c) = h.dims3()?;
        if targets.dims() != [b, t] || targets.dtype() != DType::U32 {
            bail!("targets {:?} must be u32 shaped like the ids ({b}, {t})", targets.dims());
        }
        ops::lm_head_nll(&h.reshape((b * t, c))?, &self.lm_head.detach(), &targets.flatten_all()?)?
            .reshape((b, t))
    }
}
