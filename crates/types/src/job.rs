//! The job spec: what the handlers queue and the batch worker runs.
//!
//! A spec is written by the operator's handlers (never by a buyer directly): buyer-supplied
//! hyperparameters, prompts and evaluation settings are copied in only after
//! [`JobSpec::validate`] accepts them. The worker validates again on read, because the queue
//! is a trust boundary too. Bounds that depend on the model (context length ≤ the model's
//! `n_positions`) are checked by the worker against the model's config via
//! [`JobSpec::validate_against_context`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Hash32;

/// Hard caps that keep one job within one GPU node's budget and the API's memory.
pub mod limits {
    /// Longest training run accepted, in optimizer steps.
    pub const MAX_STEPS: u32 = 100_000;
    /// Largest micro-batch (sequences per forward pass).
    pub const MAX_BATCH: u32 = 256;
    /// Largest gradient-accumulation factor.
    pub const MAX_GRAD_ACCUM: u32 = 64;
    /// Shortest context worth training or evaluating on.
    pub const MIN_CONTEXT: u32 = 8;
    /// Longest context accepted before the model's own limit is known.
    pub const MAX_CONTEXT: u32 = 8192;
    /// Highest peak learning rate accepted.
    pub const MAX_LR: f64 = 0.1;
    /// Lowest peak learning rate accepted: an f32 AdamW step of ~1e-6 is still ~8 ulps of a
    /// weight of magnitude 1 (fine-tunes use 1e-5–1e-3); far below it the update rounds away.
    pub const MIN_LR: f64 = 1e-6;
    /// Most prompts in one inference job.
    pub const MAX_PROMPTS: usize = 64;
    /// Longest prompt, in bytes.
    pub const MAX_PROMPT_BYTES: usize = 16 * 1024;
    /// Most messages in one chat (an infer job's `messages`).
    pub const MAX_MESSAGES: usize = 64;
    /// Most bytes of message content in one chat, all messages together (each message's
    /// content is also at most [`MAX_PROMPT_BYTES`]).
    pub const MAX_CHAT_BYTES: usize = 64 * 1024;
    /// Most tokens generated per prompt.
    pub const MAX_NEW_TOKENS: u32 = 2048;
    /// Most stop strings per job, and the longest one in bytes.
    pub const MAX_STOPS: usize = 8;
    pub const MAX_STOP_BYTES: usize = 64;
    /// Longest job id (it becomes part of object-store keys).
    pub const MAX_JOB_ID: usize = 64;
    /// Most checkpoints one train job commits: `ceil(steps / checkpoint_every)` ≤ this.
    /// Each is the weights plus both AdamW moments (3× the model in f32), kept for the
    /// operator's audit window. The audit policy (5% of the training compute, at least one
    /// segment, `posthuman_receipts::AuditPolicy`) needs ≥ 20 segments for one segment to fit
    /// its budget; 100 lets it re-run 5 (the final one, the largest updates, random ones)
    /// while a 124M-parameter job stores at most 99 × 1.5 GB during the window.
    pub const MAX_CHECKPOINTS: u32 = 100;
    /// Largest LoRA rank (`posthuman_gpt2::lora::MAX_RANK`): far above the 4–64 LoRA is used
    /// with, low enough that an adapter stays a small fraction of its base.
    pub const MAX_LORA_RANK: u32 = 256;
    /// Largest `lora_alpha` (the branch is scaled by α/r; published adapters use α ≤ 4r).
    pub const MAX_LORA_ALPHA: f64 = 4096.0;
    /// Most entries in `target_modules` (a family has at most 7 linear layers a block).
    pub const MAX_LORA_TARGETS: usize = 8;
    /// Longest `target_modules` entry.
    pub const MAX_LORA_TARGET_BYTES: usize = 64;
    /// Longest name a trainer may give the derived model (bytes; it is the data NFT's and the
    /// datatoken's name on chain, and the catalogue's title).
    pub const MAX_MODEL_NAME_BYTES: usize = 64;
    /// Longest datatoken symbol a trainer may give the derived model.
    pub const MAX_SYMBOL_BYTES: usize = 16;
}

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Train,
    Infer,
    Evaluate,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Train => "train",
            JobKind::Infer => "infer",
            JobKind::Evaluate => "evaluate",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One job for the batch worker. Object-store keys are operator-chosen prefixes, never
/// buyer input; they are not part of any public output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Unique id; `[a-z0-9-]`, at most [`limits::MAX_JOB_ID`] bytes.
    pub job_id: String,
    /// Prefix holding `config.json`, `model.safetensors` and `tokenizer.json` (private).
    pub model_prefix: String,
    /// Key of the buyer's dataset (UTF-8 text), when the job reads one.
    #[serde(default)]
    pub dataset_key: Option<String>,
    /// Prefix the worker writes new private weights and checkpoints under (train only).
    pub private_prefix: String,
    /// Prefix the worker writes public outputs under: metrics, text, report, progress.
    pub public_prefix: String,
    /// Kind-specific parameters.
    pub params: JobParams,
    /// The compute the buyer paid for (the priced quote's estimate). The worker refuses a
    /// spec whose own estimate exceeds it, and the queue kills a job that runs longer than
    /// `max_seconds`. `None` only for operator-internal jobs (base training, tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The buyer's 32-byte salt (from the signed request). Every public output names the
    /// dataset or prompts only salted with it (`SHA-256("posthuman:salted:" || salt || H)`),
    /// so a public receipt cannot confirm a guessed input; the buyer, who keeps the salt,
    /// can still prove the binding. Private: it never leaves the spec. `None` only for
    /// operator-internal jobs (base training, tests), whose outputs name the plain hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<Hash32>,
}

/// What a paid job may consume: the compute its provider fee paid for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Tokens the model processes (forward passes; training counts each micro-batch token).
    pub tokens: u64,
    /// Floating-point operations (forward + backward), as the pricing formula counts them.
    pub flops: u64,
    /// Bytes of checkpoints (weights + optimizer state) the job may store.
    pub checkpoint_bytes: u64,
    /// Wall-clock limit for one attempt, in seconds.
    pub max_seconds: u64,
}

/// Kind-specific parameters, tagged by kind on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobParams {
    Train(TrainParams),
    Infer(InferParams),
    Evaluate(EvalParams),
}

impl JobParams {
    pub fn kind(&self) -> JobKind {
        match self {
            JobParams::Train(_) => JobKind::Train,
            JobParams::Infer(_) => JobKind::Infer,
            JobParams::Evaluate(_) => JobKind::Evaluate,
        }
    }

    /// The context length the job will run the model at, checked against the model.
    pub fn context_len(&self) -> Option<u32> {
        match self {
            JobParams::Train(t) => Some(t.context_len),
            JobParams::Evaluate(e) => Some(e.context_len),
            JobParams::Infer(_) => None,
        }
    }
}

/// Fine-tuning hyperparameters (AdamW, linear warmup then cosine decay to `min_lr_ratio`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// Optimizer steps.
    pub steps: u32,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Linear warmup steps (≤ steps).
    #[serde(default)]
    pub warmup_steps: u32,
    /// Final learning rate as a fraction of the peak, in [0, 1].
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// Sequences per micro-batch.
    pub batch_size: u32,
    /// Micro-batches accumulated per optimizer step.
    #[serde(default = "one")]
    pub grad_accum: u32,
    /// Tokens per packed training sequence.
    pub context_len: u32,
    /// AdamW decoupled weight decay, in [0, 1].
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// AdamW betas, each in [0, 1).
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// AdamW epsilon, in (0, 1e-3].
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Global gradient-norm clip; 0 disables clipping.
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
    /// Dropout probability during training, in [0, 0.5].
    #[serde(default)]
    pub dropout: f64,
    /// A checkpoint (and its hash, for the proof-of-learning Merkle tree) every k steps.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u32,
    /// Seed for batching order and dropout (and a LoRA adapter's initial A).
    #[serde(default)]
    pub seed: u64,
    /// `Some`: train a LoRA adapter over the frozen model instead of every weight. Absent from
    /// the JSON of a full fine-tune, so its encoding (and every hash of it) is what it was
    /// before LoRA existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraParams>,
    /// The derived model's name (`None`: "<parent name> · fine-tune N", N counting the
    /// parent's derivations). Like `lora`, absent from the JSON when not given, so a request
    /// without it hashes as it did before names existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The derived model's datatoken symbol (`None`: "<parent symbol>-FT<N>").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
}

/// A LoRA fine-tune's adapter, in PEFT's vocabulary (`adapter_config.json`'s keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoraParams {
    /// The adapter's rank.
    pub r: u32,
    /// The branch is scaled by `lora_alpha / r`.
    pub lora_alpha: f64,
    /// Dropout on the branch's input during training, in [0, 0.5].
    #[serde(default)]
    pub lora_dropout: f64,
    /// Module names PEFT matches against the model's linear layers (`c_attn`, `q_proj`, …);
    /// which names exist depends on the model's family, checked where the model is known.
    pub target_modules: Vec<String>,
}

impl LoraParams {
    /// The common choice: attention projections at rank `r`, α = 2r, no dropout.
    pub fn new(r: u32, target_modules: &[&str]) -> Self {
        LoraParams {
            r,
            lora_alpha: 2.0 * f64::from(r),
            lora_dropout: 0.0,
            target_modules: target_modules.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Bounds that need no model; the family's module names and layer sizes are checked by
    /// `posthuman_gpt2::lora::LoraConfig::validate` where the model is known (API, worker).
    pub fn validate(&self) -> Result<(), SpecError> {
        check_range_u32("lora.r", self.r, 1, limits::MAX_LORA_RANK)?;
        if !(self.lora_alpha > 0.0 && self.lora_alpha <= limits::MAX_LORA_ALPHA) {
            return Err(bad(
                "lora.lora_alpha",
                format!("{} is outside (0, {}]", self.lora_alpha, limits::MAX_LORA_ALPHA),
            ));
        }
        check_range_f64("lora.lora_dropout", self.lora_dropout, 0.0, 0.5)?;
        let n = self.target_modules.len();
        if n == 0 || n > limits::MAX_LORA_TARGETS {
            return Err(bad(
                "lora.target_modules",
                format!("{n} names; give 1 to {}", limits::MAX_LORA_TARGETS),
            ));
        }
        for (i, t) in self.target_modules.iter().enumerate() {
            let ok = !t.is_empty()
                && t.len() <= limits::MAX_LORA_TARGET_BYTES
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                && !t.starts_with('.')
                && !t.ends_with('.');
            if !ok {
                return Err(bad(
                    "lora.target_modules",
                    format!(
                        "`{}` is not a module name (letters, digits, `_` and inner `.`, at most {} bytes)",
                        t.escape_debug(),
                        limits::MAX_LORA_TARGET_BYTES
                    ),
                ));
            }
            if self.target_modules[..i].contains(t) {
                return Err(bad("lora.target_modules", format!("`{t}` is named twice")));
            }
        }
        Ok(())
    }
}

fn one() -> u32 {
    1
}
fn default_min_lr_ratio() -> f64 {
    0.1
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_grad_clip() -> f64 {
    1.0
}
fn default_checkpoint_every() -> u32 {
    10
}

impl TrainParams {
    /// Sensible defaults for a short fine-tune; callers override what they need.
    pub fn new(steps: u32, learning_rate: f64, batch_size: u32, context_len: u32) -> Self {
        TrainParams {
            steps,
            learning_rate,
            warmup_steps: 0,
            min_lr_ratio: default_min_lr_ratio(),
            batch_size,
            grad_accum: 1,
            context_len,
            weight_decay: default_weight_decay(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            grad_clip: default_grad_clip(),
            dropout: 0.0,
            checkpoint_every: default_checkpoint_every(),
            seed: 0,
            lora: None,
            name: None,
            symbol: None,
        }
    }
}

/// Sampling settings; `temperature == 0` means greedy decoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    #[serde(default)]
    pub temperature: f64,
    /// Keep only the k most likely tokens (1..=vocab), if set.
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Nucleus sampling mass in (0, 1], if set.
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_k: None, top_p: None, seed: 0 }
    }
}

/// The roles a chat message may have (those every published chat template knows).
pub const CHAT_ROLES: &[&str] = &["system", "user", "assistant"];

/// One turn of a chat, rendered into a prompt by the model's chat template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// One of [`CHAT_ROLES`].
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// Text generation from a batch of prompts, or from one chat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InferParams {
    /// Raw prompts, each generated independently. Empty when `messages` is given.
    #[serde(default)]
    pub prompts: Vec<String>,
    pub max_new_tokens: u32,
    #[serde(default)]
    pub sampling: Sampling,
    /// Generation stops (per prompt) once any of these strings appears in the output.
    #[serde(default)]
    pub stop: Vec<String>,
    /// A chat instead of `prompts`: the worker renders it with the model's chat template
    /// (with the generation prompt) and generates one completion. Omitted from the JSON when
    /// empty, so the parameters (and receipt hashes) of prompt jobs are what they always were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<ChatMessage>,
}

/// Sliding-window perplexity (the Hugging Face method: windows of `context_len` tokens
/// advanced by `stride`, scoring only the tokens not scored by the previous window).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EvalParams {
    pub context_len: u32,
    pub stride: u32,
    /// Score at most this many tokens of the dataset (0 = all of it).
    #[serde(default)]
    pub max_tokens: u64,
    /// A published perplexity to compare against (e.g. the parent model's).
    #[serde(default)]
    pub baseline: Option<Baseline>,
}

/// A reference perplexity, named by what produced it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub label: String,
    pub perplexity: f64,
}

/// A model's name: 1..=[`limits::MAX_MODEL_NAME_BYTES`] bytes of printable text, without
/// leading or trailing blanks (names are shown, and must not pass for one another).
pub fn validate_model_name(field: &'static str, name: &str) -> Result<(), SpecError> {
    if name.is_empty() || name.len() > limits::MAX_MODEL_NAME_BYTES {
        return Err(bad(field, format!("must be 1..={} bytes", limits::MAX_MODEL_NAME_BYTES)));
    }
    if name.chars().any(char::is_control) {
        return Err(bad(field, "may not contain control characters"));
    }
    if name.trim() != name {
        return Err(bad(field, "may not start or end with blanks"));
    }
    Ok(())
}

/// A datatoken symbol: 1..=[`limits::MAX_SYMBOL_BYTES`] of ASCII letters, digits and '-'
/// (what wallets and exchanges show beside an amount).
pub fn validate_symbol(field: &'static str, symbol: &str) -> Result<(), SpecError> {
    if symbol.is_empty() || symbol.len() > limits::MAX_SYMBOL_BYTES {
        return Err(bad(field, format!("must be 1..={} characters", limits::MAX_SYMBOL_BYTES)));
    }
    if !symbol.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad(field, "may contain only ASCII letters, digits and '-'"));
    }
    Ok(())
}

/// A spec field that is out of bounds, and why. Returned to buyers verbatim (HTTP 422).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub field: &'static str,
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for SpecError {}

fn bad(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError { field, reason: reason.into() }
}

fn check_range_u32(field: &'static str, v: u32, lo: u32, hi: u32) -> Result<(), SpecError> {
    if v < lo || v > hi {
        return Err(bad(field, format!("{v} is outside {lo}..={hi}")));
    }
    Ok(())
}

fn check_range_f64(field: &'static str, v: f64, lo: f64, hi: f64) -> Result<(), SpecError> {
    // `!(a <= b)` rather than `a > b` so NaN is rejected too.
    if !(v >= lo && v <= hi) {
        return Err(bad(field, format!("{v} is outside [{lo}, {hi}]")));
    }
    Ok(())
}

/// Checks an id or key segment: non-empty, `[a-z0-9-]`, bounded length.
pub fn validate_id(field: &'static str, id: &str) -> Result<(), SpecError> {
    if id.is_empty() || id.len() > limits::MAX_JOB_ID {
        return Err(bad(field, format!("must be 1..={} characters", limits::MAX_JOB_ID)));
    }
    if !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(bad(field, "may contain only a-z, 0-9 and '-'"));
    }
    Ok(())
}

/// Checks an object-store key or prefix: relative, no `..`, no empty segments, printable ASCII.
pub fn validate_key(field: &'static str, key: &str) -> Result<(), SpecError> {
    if key.is_empty() || key.len() > 512 {
        return Err(bad(field, "must be 1..=512 bytes"));
    }
    if key.starts_with('/') || key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(bad(field, "must be a relative path without empty, '.' or '..' segments"));
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b)) {
        return Err(bad(field, "may contain only ASCII letters, digits and '-_./'"));
    }
    Ok(())
}

impl TrainParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_range_u32("steps", self.steps, 1, limits::MAX_STEPS)?;
        // The optimizer runs in f32 (24-bit mantissa: one ulp of a weight w is ~1.2e-7·|w|).
        // An AdamW step moves each weight by about lr (m̂/√v̂ is ~±1), so the bounds below keep
        // that move many ulps wide for the weights a GPT-2 holds (|w| ≲ 1); outside them a
        // "fine-tune" can leave the parent's weights bit-identical (a clone for one datatoken).
        // The worker and the completion also refuse an output equal to its input, whatever
        // the parameters.
        check_range_f64("learning_rate", self.learning_rate, limits::MIN_LR, limits::MAX_LR)?;
        check_range_u32("warmup_steps", self.warmup_steps, 0, self.steps)?;
        check_range_f64("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)?;
        check_range_u32("batch_size", self.batch_size, 1, limits::MAX_BATCH)?;
        check_range_u32("grad_accum", self.grad_accum, 1, limits::MAX_GRAD_ACCUM)?;
        check_range_u32("context_len", self.context_len, limits::MIN_CONTEXT, limits::MAX_CONTEXT)?;
        // Decoupled decay multiplies every weight by (1 − lr·wd) a step: real fine-tunes use
        // 0–0.1; above 0.5 (5% a step at the largest lr) it erases the parent instead.
        check_range_f64("weight_decay", self.weight_decay, 0.0, 0.5)?;
        // 1 − β is what a moment learns per step; it must stay far above f32's ulp at 1
        // (6e-8), or β rounds to 1 in f32 and the moment stops moving: ≥ 1e-3 for β1
        // (0.999 already averages over 1000 steps), ≥ 1e-5 for β2. β2 ≥ 0.9 keeps v̂ a
        // variance estimate (Adam's own analysis needs β1² < √β2, checked below).
        check_range_f64("beta1", self.beta1, 0.0, 0.999)?;
        check_range_f64("beta2", self.beta2, 0.9, 0.999_99)?;
        if self.beta1 * self.beta1 >= self.beta2.sqrt() {
            return Err(bad("beta1", "beta1² must be below √beta2 (Adam diverges otherwise)"));
        }
        // ε is added to √v̂ in f32: above 1e-6 it dominates the small gradients of a
        // converged model and shrinks the step by orders of magnitude (no update in f32);
        // below 1e-12 it no longer guards the division (f32 √v̂ of a tiny gradient).
        check_range_f64("eps", self.eps, 1e-12, 1e-6)?;
        // Clipping to a tiny norm scales gradients under ε and so zeroes the step: 0
        // disables clipping, otherwise 1e-2 ≤ clip ≤ 1e3 (real fine-tunes use 0.5–5).
        if self.grad_clip != 0.0 {
            check_range_f64("grad_clip", self.grad_clip, 1e-2, 1e3)?;
        }
        check_range_f64("dropout", self.dropout, 0.0, 0.5)?;
        if let Some(l) = &self.lora {
            l.validate()?;
        }
        if let Some(n) = &self.name {
            validate_model_name("name", n)?;
        }
        if let Some(s) = &self.symbol {
            validate_symbol("symbol", s)?;
        }
        check_range_u32("checkpoint_every", self.checkpoint_every, 1, self.steps)?;
        let least = self.steps.div_ceil(limits::MAX_CHECKPOINTS);
        if self.steps.div_ceil(self.checkpoint_every) > limits::MAX_CHECKPOINTS {
            return Err(bad(
                "checkpoint_every",
                format!(
                    "{} steps every {} make {} checkpoints, over the limit of {}: use at least {least}",
                    self.steps,
                    self.checkpoint_every,
                    self.steps.div_ceil(self.checkpoint_every),
                    limits::MAX_CHECKPOINTS
                ),
            ));
        }
        Ok(())
    }
}

impl InferParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.messages.is_empty() {
            self.validate_prompts()?;
        } else if !self.prompts.is_empty() {
            return Err(bad("messages", "send prompts or messages, not both"));
        } else {
            self.validate_messages()?;
        }
        check_range_u32("max_new_tokens", self.max_new_tokens, 1, limits::MAX_NEW_TOKENS)?;
        check_range_f64("sampling.temperature", self.sampling.temperature, 0.0, 5.0)?;
        if let Some(k) = self.sampling.top_k {
            check_range_u32("sampling.top_k", k, 1, 1_000_000)?;
        }
        if let Some(p) = self.sampling.top_p {
            check_range_f64("sampling.top_p", p, f64::MIN_POSITIVE, 1.0)?;
        }
        if self.stop.len() > limits::MAX_STOPS {
            return Err(bad("stop", format!("at most {} stop strings", limits::MAX_STOPS)));
        }
        if self.stop.iter().any(|s| s.is_empty() || s.len() > limits::MAX_STOP_BYTES) {
            return Err(bad("stop", format!("each must be 1..={} bytes", limits::MAX_STOP_BYTES)));
        }
        Ok(())
    }
}

impl InferParams {
    fn validate_prompts(&self) -> Result<(), SpecError> {
        if self.prompts.is_empty() || self.prompts.len() > limits::MAX_PROMPTS {
            return Err(bad(
                "prompts",
                format!("need 1..={} prompts (or a chat in messages)", limits::MAX_PROMPTS),
            ));
        }
        if let Some(i) = self.prompts.iter().position(|p| p.len() > limits::MAX_PROMPT_BYTES) {
            return Err(bad(
                "prompts",
                format!("prompt {i} is over {} bytes", limits::MAX_PROMPT_BYTES),
            ));
        }
        Ok(())
    }

    fn validate_messages(&self) -> Result<(), SpecError> {
        let m = &self.messages;
        if m.len() > limits::MAX_MESSAGES {
            return Err(bad("messages", format!("at most {} messages", limits::MAX_MESSAGES)));
        }
        for (i, msg) in m.iter().enumerate() {
            if !CHAT_ROLES.contains(&msg.role.as_str()) {
                return Err(bad(
                    "messages",
                    format!("message {i}'s role must be one of {}", CHAT_ROLES.join(", ")),
                ));
            }
            if msg.content.len() > limits::MAX_PROMPT_BYTES {
                return Err(bad(
                    "messages",
                    format!("message {i} is over {} bytes", limits::MAX_PROMPT_BYTES),
                ));
            }
        }
        let total: usize = m.iter().map(|msg| msg.content.len()).sum();
        if total > limits::MAX_CHAT_BYTES {
            return Err(bad(
                "messages",
                format!("{total} bytes of content, over {}", limits::MAX_CHAT_BYTES),
            ));
        }
        Ok(())
    }
}

impl EvalParams {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_range_u32("context_len", self.context_len, limits::MIN_CONTEXT, limits::MAX_CONTEXT)?;
        check_range_u32("stride", self.stride, 1, self.context_len)?;
        if let Some(b) = &self.baseline {
            if b.label.is_empty() || b.label.len() > 128 {
                return Err(bad("baseline.label", "must be 1..=128 bytes"));
            }
            check_range_f64("baseline.perplexity", b.perplexity, 1.0, 1e12)?;
        }
        Ok(())
    }
}

impl JobSpec {
    /// Checks every bound that does not depend on the model itself.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_id("job_id", &self.job_id)?;
        validate_key("model_prefix", &self.model_prefix)?;
        validate_key("private_prefix", &self.private_prefix)?;
        validate_key("public_prefix", &self.public_prefix)?;
        match (&self.dataset_key, self.params.kind()) {
            (Some(k), _) => validate_key("dataset_key", k)?,
            (None, JobKind::Train | JobKind::Evaluate) => {
                return Err(bad("dataset_key", "train and evaluate jobs need a dataset"));
            }
            (None, JobKind::Infer) => {}
        }
        match &self.params {
            JobParams::Train(t) => t.validate(),
            JobParams::Infer(i) => i.validate(),
            JobParams::Evaluate(e) => e.validate(),
        }
    }

    /// Checks the bounds that depend on the model: the context must fit its positions.
    pub fn validate_against_context(&self, n_positions: u32) -> Result<(), SpecError> {
        match self.params.context_len() {
            Some(c) if c > n_positions => Err(bad(
                "context_len",
                format!("{c} exceeds the model's maximum context of {n_positions}"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train_spec() -> JobSpec {
        JobSpec {
            job_id: "job-1".into(),
            model_prefix: "models/m1".into(),
            dataset_key: Some("jobs/job-1/data.txt".into()),
            private_prefix: "models/m2".into(),
            public_prefix: "jobs/job-1/public".into(),
            params: JobParams::Train(TrainParams::new(20, 3e-4, 4, 64)),
            budget: None,
            salt: None,
        }
    }

    #[test]
    fn good_spec_round_trips_and_validates() {
        let s = train_spec();
        s.validate().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"kind\":\"train\""));
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), s);
    }

    #[test]
    fn out_of_range_is_named() {
        let mut s = train_spec();
        if let JobParams::Train(t) = &mut s.params {
            t.learning_rate = f64::NAN;
        }
        assert_eq!(s.validate().unwrap_err().field, "learning_rate");
        let mut s = train_spec();
        s.job_id = "../etc".into();
        assert_eq!(s.validate().unwrap_err().field, "job_id");
        let mut s = train_spec();
        s.dataset_key = Some("a/../../b".into());
        assert_eq!(s.validate().unwrap_err().field, "dataset_key");
        let s = train_spec();
        assert_eq!(s.validate_against_context(32).unwrap_err().field, "context_len");
    }

    fn train_with(f: impl FnOnce(&mut TrainParams)) -> Result<(), SpecError> {
        let mut s = train_spec();
        if let JobParams::Train(t) = &mut s.params {
            f(t);
        }
        s.validate()
    }

    /// Issue 13 §2: hyperparameters under which f32 AdamW leaves the weights as they were
    /// (a "derivation" that is a clone) are refused, field by field.
    #[test]
    fn hyperparameters_that_cannot_train_in_f32_are_refused() {
        for (field, f) in [
            (
                "learning_rate",
                Box::new(|t: &mut TrainParams| t.learning_rate = 1e-300)
                    as Box<dyn FnOnce(&mut TrainParams)>,
            ),
            ("learning_rate", Box::new(|t: &mut TrainParams| t.learning_rate = 1e-9)),
            ("eps", Box::new(|t: &mut TrainParams| t.eps = 1e-3)),
            ("eps", Box::new(|t: &mut TrainParams| t.eps = 1e-30)),
            ("beta1", Box::new(|t: &mut TrainParams| t.beta1 = 0.999_999)),
            ("beta2", Box::new(|t: &mut TrainParams| t.beta2 = 0.999_999_9)),
            ("beta2", Box::new(|t: &mut TrainParams| t.beta2 = 0.0)),
            ("grad_clip", Box::new(|t: &mut TrainParams| t.grad_clip = 1e-30)),
            ("weight_decay", Box::new(|t: &mut TrainParams| t.weight_decay = 1.0)),
        ] {
            assert_eq!(train_with(f).unwrap_err().field, field);
        }
        // What real fine-tunes use stays accepted.
        train_with(|t| {
            t.learning_rate = 1e-5;
            t.eps = 1e-6;
            t.beta1 = 0.9;
            t.beta2 = 0.95;
            t.grad_clip = 0.0;
            t.weight_decay = 0.1;
        })
        .unwrap();
    }

    /// Issue 16: LoRA hyperparameters are bounded like every other, field by field; a full
    /// fine-tune's JSON (and so its hash) carries no `lora` key.
    #[test]
    fn lora_parameters_are_validated_and_absent_from_full_fine_tunes() {
        let with = |f: fn(&mut LoraParams)| {
            train_with(|t| {
                let mut l = LoraParams::new(8, &["c_attn"]);
                f(&mut l);
                t.lora = Some(l);
            })
        };
        with(|_| {}).unwrap();
        for (field, f) in [
            ("lora.r", (|l| l.r = 0) as fn(&mut LoraParams)),
            ("lora.r", |l| l.r = limits::MAX_LORA_RANK + 1),
            ("lora.lora_alpha", |l| l.lora_alpha = 0.0),
            ("lora.lora_alpha", |l| l.lora_alpha = f64::NAN),
            ("lora.lora_alpha", |l| l.lora_alpha = f64::INFINITY),
            ("lora.lora_dropout", |l| l.lora_dropout = 0.9),
            ("lora.target_modules", |l| l.target_modules.clear()),
            ("lora.target_modules", |l| l.target_modules = vec!["c_attn".into(); 2]),
            ("lora.target_modules", |l| l.target_modules = vec!["../x".into()]),
            ("lora.target_modules", |l| l.target_modules = vec!["q_proj.".into()]),
            ("lora.target_modules", |l| l.target_modules = vec!["x".repeat(65)]),
            ("lora.target_modules", |l| l.target_modules = vec!["m".into(); 9]),
        ] {
            assert_eq!(with(f).unwrap_err().field, field);
        }
        let full = serde_json::to_string(&TrainParams::new(20, 3e-4, 4, 64)).unwrap();
        assert!(!full.contains("lora"), "{full}");
        let t: TrainParams = serde_json::from_str(
            r#"{"steps":5,"learning_rate":0.001,"batch_size":1,"context_len":8,
                "lora":{"r":4,"lora_alpha":8,"target_modules":["q_proj","v_proj"]}}"#,
        )
        .unwrap();
        assert_eq!(t.lora.unwrap().lora_dropout, 0.0);
        // PEFT keys we do not run are refused, not ignored.
        assert!(
            serde_json::from_str::<LoraParams>(
                r#"{"r":4,"lora_alpha":8,"target_modules":["q_proj"],"use_dora":true}"#
            )
            .is_err()
        );
    }

    /// Issue 14: the trainer may name the derived model; names and symbols are bounded field
    /// by field, and a request naming nothing serializes exactly as before names existed.
    #[test]
    fn derived_model_names_are_validated_and_absent_when_not_given() {
        let named = |n: Option<&str>, s: Option<&str>| {
            train_with(|t| {
                t.name = n.map(str::to_string);
                t.symbol = s.map(str::to_string);
            })
        };
        named(Some("Bob's WikiText GPT · v2"), Some("BOB-WT2")).unwrap();
        named(Some(&"é".repeat(32)), Some(&"S".repeat(16))).unwrap();
        for (field, n, s) in [
            ("name", Some(""), None),
            ("name", Some(" padded"), None),
            ("name", Some("tab\there"), None),
            ("name", Some("line\nbreak"), None),
            ("name", Some(&*"n".repeat(65)), None),
            ("symbol", None, Some("")),
            ("symbol", None, Some("WAY-TOO-LONG-SYMBOL")),
            ("symbol", None, Some("BÖB")),
            ("symbol", None, Some("A B")),
            ("symbol", None, Some("<script>")),
        ] {
            assert_eq!(named(n, s).unwrap_err().field, field, "{n:?} {s:?}");
        }
        let plain = serde_json::to_string(&TrainParams::new(20, 3e-4, 4, 64)).unwrap();
        assert!(!plain.contains("name") && !plain.contains("symbol"), "{plain}");
        let t: TrainParams = serde_json::from_str(
            r#"{"steps":5,"learning_rate":0.001,"batch_size":1,"context_len":8,"name":"M","symbol":"M-1"}"#,
        )
        .unwrap();
        assert_eq!((t.name.as_deref(), t.symbol.as_deref()), (Some("M"), Some("M-1")));
    }

    /// Issue 13 §3: checkpoints per job are bounded; the error names the smallest interval
    /// that fits.
    #[test]
    fn checkpoints_per_job_are_bounded() {
        let steps: u32 = 100_000;
        let least = steps.div_ceil(limits::MAX_CHECKPOINTS);
        let e = train_with(|t| {
            t.steps = steps;
            t.checkpoint_every = 1;
        })
        .unwrap_err();
        assert_eq!(e.field, "checkpoint_every");
        assert!(e.reason.contains(&format!("at least {least}")), "{e}");
        train_with(|t| {
            t.steps = steps;
            t.checkpoint_every = least - 1;
        })
        .unwrap_err();
        train_with(|t| {
            t.steps = steps;
            t.checkpoint_every = least;
        })
        .unwrap();
        // A short run may checkpoint every step.
        train_with(|t| {
            t.steps = limits::MAX_CHECKPOINTS;
            t.checkpoint_every = 1;
        })
        .unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let json = r#"{"kind":"infer","prompts":["hi"],"max_new_tokens":4,"evil":1}"#;
        assert!(serde_json::from_str::<JobParams>(json).is_err());
    }

    #[test]
    fn infer_bounds() {
        let mut p = InferParams {
            prompts: vec!["hello".into()],
            max_new_tokens: 8,
            sampling: Sampling::default(),
            stop: vec![],
            messages: vec![],
        };
        p.validate().unwrap();
        p.sampling.top_p = Some(0.0);
        assert_eq!(p.validate().unwrap_err().field, "sampling.top_p");
        p.sampling.top_p = None;
        p.stop = vec![String::new()];
        assert_eq!(p.validate().unwrap_err().field, "stop");
    }

    #[test]
    fn infer_takes_prompts_or_one_chat() {
        let mut p = InferParams {
            prompts: vec![],
            max_new_tokens: 8,
            sampling: Sampling::default(),
            stop: vec![],
            messages: vec![ChatMessage::new("system", "be brief"), ChatMessage::new("user", "hi")],
        };
        p.validate().unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<InferParams>(&json).unwrap(), p);
        // Neither, or both.
        let chat = std::mem::take(&mut p.messages);
        assert_eq!(p.validate().unwrap_err().field, "prompts");
        p.prompts = vec!["x".into()];
        p.messages = chat.clone();
        assert_eq!(p.validate().unwrap_err().field, "messages");
        p.prompts.clear();
        // Roles, sizes, count.
        p.messages = vec![ChatMessage::new("tool", "x")];
        assert_eq!(p.validate().unwrap_err().field, "messages");
        p.messages = vec![ChatMessage::new("user", &"x".repeat(limits::MAX_PROMPT_BYTES + 1))];
        assert_eq!(p.validate().unwrap_err().field, "messages");
        p.messages = vec![ChatMessage::new("user", &"x".repeat(limits::MAX_PROMPT_BYTES)); 5];
        assert_eq!(p.validate().unwrap_err().field, "messages");
        p.messages = vec![ChatMessage::new("user", "x"); limits::MAX_MESSAGES + 1];
        assert_eq!(p.validate().unwrap_err().field, "messages");
        p.messages = vec![ChatMessage::new("user", "x"); limits::MAX_MESSAGES];
        p.validate().unwrap();
        // Unknown keys in a message are refused like everywhere else.
        let bad = r#"{"prompts":[],"max_new_tokens":4,"messages":[{"role":"user","content":"hi","name":"x"}]}"#;
        assert!(serde_json::from_str::<InferParams>(bad).is_err());
    }

    #[test]
    fn prompt_jobs_serialize_as_before() {
        // The JSON of a prompt job (what its receipt's params hash covers) has no `messages`,
        // and JSON written before chats existed still reads.
        let old = r#"{"prompts":["hi"],"max_new_tokens":4,"sampling":{"temperature":0.0,"top_k":null,"top_p":null,"seed":0},"stop":[]}"#;
        let p: InferParams = serde_json::from_str(old).unwrap();
        assert!(p.messages.is_empty());
        assert_eq!(serde_json::to_string(&p).unwrap(), old);
    }
}
