//! The model config, mirroring Hugging Face's `GPT2Config` (`config.json`).
//!
//! Unknown keys (e.g. `architectures`, `task_specific_params`) are kept in `extra` so a config
//! read from the hub is written back unchanged.

use crate::Gpt2Error;
use serde::{Deserialize, Serialize};

fn d_vocab() -> usize {
    50257
}
fn d_positions() -> usize {
    1024
}
fn d_embd() -> usize {
    768
}
fn d_layer() -> usize {
    12
}
fn d_head() -> usize {
    12
}
fn d_eps() -> f64 {
    1e-5
}
fn d_act() -> String {
    "gelu_new".into()
}
fn d_pdrop() -> f64 {
    0.1
}
fn d_init() -> f64 {
    0.02
}
fn d_token() -> u32 {
    50256
}
fn d_model_type() -> String {
    "gpt2".into()
}
fn d_true() -> bool {
    true
}

/// GPT-2 hyperparameters with HF's field names and defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default = "d_model_type")]
    pub model_type: String,
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_positions")]
    pub n_positions: usize,
    #[serde(default = "d_embd")]
    pub n_embd: usize,
    #[serde(default = "d_layer")]
    pub n_layer: usize,
    #[serde(default = "d_head")]
    pub n_head: usize,
    /// MLP width; `None` means 4 × n_embd.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "d_act")]
    pub activation_function: String,
    #[serde(default = "d_pdrop")]
    pub resid_pdrop: f64,
    #[serde(default = "d_pdrop")]
    pub embd_pdrop: f64,
    #[serde(default = "d_pdrop")]
    pub attn_pdrop: f64,
    #[serde(default = "d_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "d_init")]
    pub initializer_range: f64,
    #[serde(default = "d_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "d_true")]
    pub tie_word_embeddings: bool,
    #[serde(default = "d_token")]
    pub bos_token_id: u32,
    #[serde(default = "d_token")]
    pub eos_token_id: u32,
    /// Every other key of the HF config, preserved verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for Config {
    /// HF's `GPT2Config()` defaults (GPT-2 small).
    fn default() -> Self {
        Self {
            model_type: d_model_type(),
            vocab_size: d_vocab(),
            n_positions: d_positions(),
            n_embd: d_embd(),
            n_layer: d_layer(),
            n_head: d_head(),
            n_inner: None,
            activation_function: d_act(),
            resid_pdrop: d_pdrop(),
            embd_pdrop: d_pdrop(),
            attn_pdrop: d_pdrop(),
            layer_norm_epsilon: d_eps(),
            initializer_range: d_init(),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: true,
            bos_token_id: d_token(),
            eos_token_id: d_token(),
            extra: serde_json::Map::new(),
        }
    }
}

impl Config {
    /// A config with the given sizes and HF defaults for the rest; dropout off (set the
    /// `*_pdrop` fields to train with dropout). Token ids default to the last vocab entry.
    pub fn new(
        vocab_size: usize,
        n_positions: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
    ) -> Self {
        let last = u32::try_from(vocab_size.saturating_sub(1)).unwrap_or(u32::MAX);
        Self {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            resid_pdrop: 0.0,
            embd_pdrop: 0.0,
            attn_pdrop: 0.0,
            bos_token_id: last,
            eos_token_id: last,
            ..Self::default()
        }
    }

    /// Parses and validates a `config.json`.
    pub fn from_json(s: &str) -> Result<Self, Gpt2Error> {
        let cfg: Self =
            serde_json::from_str(s).map_err(|e| Gpt2Error::InvalidConfig(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// HF-compatible JSON (adds `architectures` when absent so `transformers` picks the LM head).
    pub fn to_json(&self) -> String {
        let mut c = self.clone();
        c.extra
            .entry("architectures".to_string())
            .or_insert_with(|| serde_json::json!(["GPT2LMHeadModel"]));
        // Serialising plain data to a String cannot fail.
        serde_json::to_string_pretty(&c).unwrap_or_default()
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// The shape pricing needs (`posthuman_types::pricing`): the API quotes with it and the
    /// worker re-estimates a paid spec with it, from the same `config.json`.
    pub fn shape(&self) -> posthuman_types::pricing::ModelShape {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        posthuman_types::pricing::ModelShape {
            parameters: self.num_params() as u64,
            n_layer: n(self.n_layer),
            n_embd: n(self.n_embd),
            vocab_size: n(self.vocab_size),
            n_positions: n(self.n_positions),
            lora_in_out: crate::lora::LoraBase::gpt2(self).in_out_sum(),
        }
    }

    /// Number of scalar parameters (tied lm_head counted once).
    pub fn num_params(&self) -> usize {
        let (c, f) = (self.n_embd, self.inner_dim());
        let block = 4 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * f + f) + (f * c + c);
        self.vocab_size * c + self.n_positions * c + self.n_layer * block + 2 * c
    }

    /// Rejects configs this implementation cannot run faithfully.
    pub fn validate(&self) -> Result<(), Gpt2Error> {
        let bad = |m: String| Err(Gpt2Error::InvalidConfig(m));
        if self.model_type != "gpt2" {
            return bad(format!("model_type must be \"gpt2\", got {:?}", self.model_type));
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.inner_dim()),
        ] {
            if v == 0 || v > 1 << 24 {
                return bad(format!("{name} = {v} is out of range"));
            }
        }
        if self.vocab_size > u32::MAX as usize {
            return bad("vocab_size does not fit token ids".into());
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd {} is not a multiple of n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if !matches!(self.activation_function.as_str(), "gelu_new" | "gelu_pytorch_tanh") {
            return bad(format!(
                "activation_function {:?} unsupported (gelu_new / gelu_pytorch_tanh only)",
                self.activation_function
            ));
        }
        for (name, p) in [
            ("resid_pdrop", self.resid_pdrop),
            ("embd_pdrop", self.embd_pdrop),
            ("attn_pdrop", self.attn_pdrop),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} = {p} must be in [0, 1)"));
            }
        }
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon < 1.0) {
            return bad(format!("layer_norm_epsilon {} out of range", self.layer_norm_epsilon));
        }
        if !self.scale_attn_weights || self.scale_attn_by_inverse_layer_idx {
            return bad(
                "only scale_attn_weights=true, scale_attn_by_inverse_layer_idx=false".into()
            );
        }
        if !self.tie_word_embeddings {
            return bad("untied lm_head is unsupported".into());
        }
        Ok(())
    }
}
