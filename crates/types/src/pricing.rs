//! Pricing: what a job's compute is, and what it costs at the operator's published rates.
//!
//! A quote runs three pure steps, shared by the API (which signs the result as the Ocean v4
//! provider fee), the worker (which refuses a spec whose own estimate exceeds what was paid)
//! and the storefront:
//!
//! 1. [`estimate`]: tokens processed, FLOPs, checkpoint bytes and seconds on the production
//!    GPU and on a CPU, from the job's parameters, the model's [`ModelShape`] and the
//!    dataset's length in bytes. Every count is an *upper bound* of what the worker does, so
//!    the worker's re-estimate of the same terms never exceeds the budget the quote sold.
//! 2. [`price`]: one [`PriceLine`] per component (compute, checkpoint storage, the kind's
//!    fixed fee that covers the completion's gas, a minimum-fee top-up), each with its
//!    formula in words and numbers, and the total in OCEAN base units.
//! 3. [`budget`]: the [`Budget`] the job spec carries (the wall-clock limit is the deployment
//!    device's seconds times a safety factor plus a start-up allowance).
//!
//! Arithmetic is integer and checked: counts that overflow `u64` refuse the job with a
//! [`SpecError`] (nothing that large is a job), amounts saturate at `u128::MAX` (and would
//! then be refused by any wallet).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::job::{Budget, ChatMessage, JobKind, JobParams, SpecError};

/// Template tokens a quote allows for each chat message beyond its role and content bytes:
/// the role markers and separators a template wraps a turn in (ChatML's
/// `<|im_start|>user\n…<|im_end|>\n` and Llama 3's header tokens are ≤ 8 tokens).
pub const CHAT_TOKENS_PER_MESSAGE: u64 = 32;
/// Template tokens a quote allows once per chat: BOS, a default system message the template
/// adds (SmolLM2's is 17 tokens, Llama 3.1's date header ~25) and the generation prompt.
pub const CHAT_TOKENS_PER_CHAT: u64 = 256;

/// The quote's bound on a rendered chat prompt, in tokens, without rendering it (the API has
/// no template): each message's role and content bytes (a token of a byte-level or
/// byte-fallback BPE covers at least one byte, and the template copies them once) plus
/// [`CHAT_TOKENS_PER_MESSAGE`] each, plus [`CHAT_TOKENS_PER_CHAT`]. The worker renders the
/// template and refuses a prompt over this bound (`BAD_CHAT_TEMPLATE`, the seller's template
/// at fault), so the job never runs more than the quote sold.
pub fn chat_prompt_tokens(messages: &[ChatMessage]) -> u64 {
    messages.iter().fold(CHAT_TOKENS_PER_CHAT, |acc, m| {
        let own = (m.role.len() as u64).saturating_add(m.content.len() as u64);
        acc.saturating_add(own).saturating_add(CHAT_TOKENS_PER_MESSAGE)
    })
}

/// An amount of OCEAN in base units (10⁻¹⁸ OCEAN), a decimal string on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ocean(pub u128);

/// Base units per whole OCEAN.
pub const OCEAN: u128 = 1_000_000_000_000_000_000;

impl Ocean {
    /// `thousandths` / 1000 OCEAN.
    pub const fn milli(thousandths: u128) -> Ocean {
        Ocean(thousandths * (OCEAN / 1000))
    }
}

impl fmt::Display for Ocean {
    /// "1.25 OCEAN": whole units and the significant decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / OCEAN, self.0 % OCEAN);
        if frac == 0 {
            return write!(f, "{whole} OCEAN");
        }
        let digits = format!("{frac:018}");
        write!(f, "{whole}.{} OCEAN", digits.trim_end_matches('0'))
    }
}

impl Serialize for Ocean {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Ocean {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(serde::de::Error::custom("an amount is a decimal string of base units"));
        }
        s.parse::<u128>().map(Ocean).map_err(serde::de::Error::custom)
    }
}

/// What pricing needs to know of a model, any family (`posthuman_gpt2::family` reads it from
/// `config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    /// Every parameter, embeddings and an untied LM head included: 2 FLOPs per parameter per
    /// token forward is exact for tied weights and an upper bound for untied ones (the input
    /// embedding is a lookup, not a matmul), so a quote never under-prices.
    pub parameters: u64,
    pub n_layer: u32,
    /// Hidden width (`n_embd`).
    pub n_embd: u32,
    pub vocab_size: u32,
    /// The longest context the model attends over.
    pub n_positions: u32,
    /// Σ (in + out) over every linear layer LoRA can target: a rank-r adapter on any subset
    /// of them has at most r × this many parameters (0 for shapes written before LoRA: such a
    /// model is quoted no LoRA job).
    #[serde(default)]
    pub lora_in_out: u64,
}

/// Where a deployment's worker runs; its FLOP rate sets the wall-clock limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Gpu,
    Cpu,
}

/// The fixed fee per job kind: the completion's gas (a train job's completion sends
/// `commitTraining` + `createChild` + `recordDerivation`; other kinds commit a receipt).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KindFees {
    pub train: Ocean,
    pub infer: Ocean,
    pub evaluate: Ocean,
}

impl KindFees {
    pub fn of(&self, kind: JobKind) -> Ocean {
        match kind {
            JobKind::Train => self.train,
            JobKind::Infer => self.infer,
            JobKind::Evaluate => self.evaluate,
        }
    }
}

/// The operator's published rates (`GET /api/pricing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rates {
    /// OCEAN base units per TFLOP (10¹² floating-point operations).
    pub per_tflop: Ocean,
    /// OCEAN base units per GB (10⁹ bytes) of checkpoints stored for the audit window.
    pub per_checkpoint_gb: Ocean,
    /// Per-kind fixed fee covering the completion's gas.
    pub fixed: KindFees,
    /// No job costs less than this.
    pub minimum: Ocean,
    /// Effective FLOP/s of the production GPU on these jobs (not its datasheet peak).
    pub gpu_flops_per_sec: u64,
    /// Effective FLOP/s of one CPU worker.
    pub cpu_flops_per_sec: u64,
    /// Where this deployment's worker runs (its rate sets the wall-clock limit).
    pub runs_on: Device,
    /// The wall-clock limit is the estimated seconds times this many percent (≥ 100).
    pub safety_percent: u32,
    /// Seconds added to every wall-clock limit: start-up, model and data loading.
    pub startup_seconds: u64,
}

impl Default for Rates {
    /// Demo rates: the demo's jobs cost a few OCEAN. A real deployment sets its own.
    fn default() -> Self {
        Rates {
            per_tflop: Ocean(2 * OCEAN),
            per_checkpoint_gb: Ocean(OCEAN),
            fixed: KindFees {
                train: Ocean(OCEAN),
                infer: Ocean::milli(100),
                evaluate: Ocean::milli(100),
            },
            minimum: Ocean::milli(100),
            gpu_flops_per_sec: 10_000_000_000_000,
            cpu_flops_per_sec: 10_000_000_000,
            runs_on: Device::Cpu,
            safety_percent: 1000,
            startup_seconds: 600,
        }
    }
}

impl Rates {
    /// Rates a deployment can run on: non-zero FLOP rates, a safety factor of at least 1.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.gpu_flops_per_sec == 0 || self.cpu_flops_per_sec == 0 {
            return Err(bad("rates", "FLOP rates must be positive"));
        }
        if self.safety_percent < 100 {
            return Err(bad("rates.safety_percent", "must be at least 100"));
        }
        Ok(())
    }

    /// The formulas the quote applies, in words (published with the rates).
    pub fn formulas() -> Vec<(&'static str, &'static str)> {
        vec![
            ("train tokens", "steps × batch_size × grad_accum × context_len"),
            (
                "train FLOPs",
                "6 × parameters × tokens + 6 × n_layer × context_len × n_embd × tokens (attention)",
            ),
            (
                "evaluate tokens",
                "windows of context_len advanced by stride over at most min(dataset bytes, max_tokens) tokens (a byte-level BPE token is at least one byte)",
            ),
            ("evaluate FLOPs", "(2 × parameters + 2 × n_layer × context_len × n_embd) × tokens"),
            (
                "infer tokens",
                "Σ over prompts of (prompt bytes + max_new_tokens); a chat is one prompt of Σ over messages of (role + content bytes + 32) + 256 tokens (the template's allowance, enforced by the worker)",
            ),
            (
                "infer FLOPs",
                "(2 × parameters + 2 × n_layer × min(length, n_positions) × n_embd) × tokens (KV-cache decoding)",
            ),
            (
                "checkpoint bytes",
                "ceil(steps / checkpoint_every) × 3 × parameters × 4 (weights and both AdamW moments, f32)",
            ),
            ("compute fee", "ceil(FLOPs × per_tflop / 10¹²)"),
            ("storage fee", "ceil(checkpoint bytes × per_checkpoint_gb / 10⁹)"),
            ("total", "max(compute + storage + the kind's fixed fee, minimum)"),
            (
                "wall-clock limit",
                "ceil(FLOPs / the deployment device's FLOP/s) × safety_percent / 100 + startup_seconds",
            ),
        ]
    }
}

/// What one job computes (each an upper bound of what the worker does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ComputeEstimate {
    /// Tokens through the model (training counts every micro-batch token).
    pub tokens: u64,
    pub flops: u64,
    /// Checkpoints stored (weights + AdamW moments, f32).
    pub checkpoint_bytes: u64,
    /// Seconds of compute on the production GPU at the published effective rate.
    pub seconds_gpu: u64,
    /// Seconds of compute on one CPU worker.
    pub seconds_cpu: u64,
}

impl ComputeEstimate {
    /// The first field where `self` needs more than `paid` allows, if any.
    pub fn exceeds(&self, paid: &Budget) -> Option<(&'static str, u64, u64)> {
        [
            ("tokens", self.tokens, paid.tokens),
            ("flops", self.flops, paid.flops),
            ("checkpoint_bytes", self.checkpoint_bytes, paid.checkpoint_bytes),
        ]
        .into_iter()
        .find(|(_, need, have)| need > have)
    }
}

/// One component of a price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PriceLine {
    pub label: String,
    /// The formula in words, with its numbers.
    pub formula: String,
    pub amount: Ocean,
}

/// A price: its lines and their total (what the provider fee must be).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PriceBreakdown {
    pub lines: Vec<PriceLine>,
    pub total: Ocean,
}

fn bad(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError { field, reason: reason.into() }
}

fn too_large(what: &str) -> SpecError {
    bad("params", format!("the job's {what} is too large to price (over 2^64)"))
}

/// `a × b × …` in u128, refused (as the named quantity) if it does not fit u64.
fn product(what: &str, factors: &[u64]) -> Result<u64, SpecError> {
    let mut acc: u128 = 1;
    for &f in factors {
        acc = acc.checked_mul(u128::from(f)).ok_or_else(|| too_large(what))?;
    }
    u64::try_from(acc).map_err(|_| too_large(what))
}

fn sum(what: &str, terms: &[u64]) -> Result<u64, SpecError> {
    terms.iter().try_fold(0u64, |a, &t| a.checked_add(t)).ok_or_else(|| too_large(what))
}

/// FLOPs per token through the model, forward only: 2 per parameter plus attention over
/// `span` positions (QKᵀ and AV: 2 × n_layer × span × n_embd).
fn forward_flops_per_token(shape: &ModelShape, span: u64) -> Result<u64, SpecError> {
    let dense = product("FLOPs", &[2, shape.parameters])?;
    let attention =
        product("FLOPs", &[2, u64::from(shape.n_layer), span, u64::from(shape.n_embd)])?;
    sum("FLOPs", &[dense, attention])
}

/// Tokens a sliding-window evaluation runs through the model when it scores `scored` tokens:
/// the first window reads `min(scored, context)`, every later one a whole context to score
/// `stride` new tokens.
fn eval_tokens(scored: u64, context: u64, stride: u64) -> Result<u64, SpecError> {
    if scored <= context {
        return Ok(scored);
    }
    let later_windows = (scored - context).div_ceil(stride.max(1));
    sum("tokens", &[context, product("tokens", &[later_windows, context])?])
}

/// The compute of a job (see the module docs). `dataset_bytes` is the buyer's dataset
/// length (train and evaluate; ignored for infer). Parameters are assumed validated.
pub fn estimate(
    params: &JobParams,
    shape: &ModelShape,
    dataset_bytes: u64,
) -> Result<ComputeEstimate, SpecError> {
    let (tokens, flops, checkpoint_bytes) = match params {
        JobParams::Train(t) => {
            let context = u64::from(t.context_len);
            let tokens = product(
                "tokens",
                &[u64::from(t.steps), u64::from(t.batch_size), u64::from(t.grad_accum), context],
            )?;
            let forward = forward_flops_per_token(shape, context)?;
            let checkpoints = u64::from(t.steps).div_ceil(u64::from(t.checkpoint_every.max(1)));
            let (per_token, trained) = match &t.lora {
                // Full: forward + backward ≈ 3 × forward (the backward computes the gradient
                // of every activation and of every weight), at full context.
                None => (product("FLOPs", &[3, forward])?, shape.parameters),
                // LoRA: the frozen base needs the activations' gradients (≈ one more forward)
                // but no weight gradients; the adapter adds 6 FLOPs per parameter per token
                // (forward, its two gradients). Its parameters are bounded by r × every
                // targetable layer's (in + out), so the quote never under-prices a subset.
                Some(l) => {
                    if shape.lora_in_out == 0 {
                        return Err(SpecError {
                            field: "lora",
                            reason: "this model's shape does not list its LoRA layers".into(),
                        });
                    }
                    let adapter =
                        product("adapter parameters", &[u64::from(l.r), shape.lora_in_out])?;
                    let branch = product("FLOPs", &[6, adapter])?;
                    (sum("FLOPs", &[product("FLOPs", &[2, forward])?, branch])?, adapter)
                }
            };
            let flops = product("FLOPs", &[per_token, tokens])?;
            // A checkpoint holds the trained tensors and their two AdamW moments, in f32.
            let bytes = product("checkpoint bytes", &[checkpoints, 3, trained, 4])?;
            (tokens, flops, bytes)
        }
        JobParams::Evaluate(e) => {
            let scored =
                if e.max_tokens > 0 { dataset_bytes.min(e.max_tokens) } else { dataset_bytes };
            let context = u64::from(e.context_len);
            let tokens = eval_tokens(scored, context, u64::from(e.stride))?;
            let flops = product("FLOPs", &[forward_flops_per_token(shape, context)?, tokens])?;
            (tokens, flops, 0)
        }
        JobParams::Infer(i) => {
            let (mut tokens, mut flops) = (0u64, 0u64);
            // A prompt's tokens are at most its bytes; a chat's at most its template bound.
            let chat = (!i.messages.is_empty()).then(|| chat_prompt_tokens(&i.messages));
            let prompts = i.prompts.iter().map(|p| p.len() as u64).chain(chat);
            for prompt in prompts {
                let len = sum("tokens", &[prompt, u64::from(i.max_new_tokens)])?;
                let span = len.min(u64::from(shape.n_positions));
                let f = product("FLOPs", &[forward_flops_per_token(shape, span)?, len])?;
                tokens = sum("tokens", &[tokens, len])?;
                flops = sum("FLOPs", &[flops, f])?;
            }
            (tokens, flops, 0)
        }
    };
    Ok(ComputeEstimate { tokens, flops, checkpoint_bytes, seconds_gpu: 0, seconds_cpu: 0 })
}

/// [`estimate`] with the seconds filled in at `rates`' FLOP rates.
pub fn estimate_at(
    params: &JobParams,
    shape: &ModelShape,
    dataset_bytes: u64,
    rates: &Rates,
) -> Result<ComputeEstimate, SpecError> {
    let mut e = estimate(params, shape, dataset_bytes)?;
    e.seconds_gpu = e.flops.div_ceil(rates.gpu_flops_per_sec.max(1));
    e.seconds_cpu = e.flops.div_ceil(rates.cpu_flops_per_sec.max(1));
    Ok(e)
}

/// `ceil(quantity × rate / unit)`, saturating.
fn scaled(quantity: u64, rate: Ocean, unit: u128) -> Ocean {
    let q = u128::from(quantity);
    match q.checked_mul(rate.0) {
        Some(p) => Ocean(p.div_ceil(unit)),
        // Too large for one multiplication: divide first (rounding up), still saturating.
        None => Ocean(q.div_ceil(unit).saturating_mul(rate.0)),
    }
}

/// Thousands separators, so formulas stay readable.
fn grouped(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The price of `e` for a `kind` job at `rates` (see the module docs).
pub fn price(e: &ComputeEstimate, rates: &Rates, kind: JobKind) -> PriceBreakdown {
    const TERA: u128 = 1_000_000_000_000;
    const GIGA: u128 = 1_000_000_000;
    let mut lines = vec![PriceLine {
        label: "compute".into(),
        formula: format!(
            "{} FLOPs ({} tokens) × {} per TFLOP",
            grouped(u128::from(e.flops)),
            grouped(u128::from(e.tokens)),
            rates.per_tflop
        ),
        amount: scaled(e.flops, rates.per_tflop, TERA),
    }];
    if kind == JobKind::Train {
        lines.push(PriceLine {
            label: "checkpoint storage".into(),
            formula: format!(
                "{} bytes of checkpoints × {} per GB",
                grouped(u128::from(e.checkpoint_bytes)),
                rates.per_checkpoint_gb
            ),
            amount: scaled(e.checkpoint_bytes, rates.per_checkpoint_gb, GIGA),
        });
    }
    lines.push(PriceLine {
        label: format!("{kind} completion"),
        formula: match kind {
            JobKind::Train => {
                "fixed: the completion's gas (commitTraining + createChild + recordDerivation)"
                    .into()
            }
            _ => "fixed: the completion's gas (the receipt's commitment)".into(),
        },
        amount: rates.fixed.of(kind),
    });
    let subtotal = lines.iter().fold(0u128, |a, l| a.saturating_add(l.amount.0));
    if subtotal < rates.minimum.0 {
        lines.push(PriceLine {
            label: "minimum fee".into(),
            formula: format!("top-up to the minimum of {}", rates.minimum),
            amount: Ocean(rates.minimum.0 - subtotal),
        });
    }
    PriceBreakdown { total: Ocean(subtotal.max(rates.minimum.0)), lines }
}

/// The budget a priced estimate buys: its counts, and a wall-clock limit of the deployment
/// device's seconds × `safety_percent` / 100 + `startup_seconds`.
pub fn budget(e: &ComputeEstimate, rates: &Rates) -> Budget {
    let seconds = match rates.runs_on {
        Device::Gpu => e.seconds_gpu,
        Device::Cpu => e.seconds_cpu,
    };
    let padded = (u128::from(seconds) * u128::from(rates.safety_percent)).div_ceil(100);
    let max_seconds =
        u64::try_from(padded).unwrap_or(u64::MAX).saturating_add(rates.startup_seconds);
    Budget { tokens: e.tokens, flops: e.flops, checkpoint_bytes: e.checkpoint_bytes, max_seconds }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{EvalParams, InferParams, Sampling, TrainParams};

    /// GPT-2 small's shape.
    fn gpt2_small() -> ModelShape {
        ModelShape {
            parameters: 124_439_808,
            n_layer: 12,
            n_embd: 768,
            vocab_size: 50_257,
            n_positions: 1024,
            // 12 × (c_attn 768+2304, attn.c_proj 768+768, c_fc 768+3072, mlp.c_proj 3072+768).
            lora_in_out: 12 * (3_072 + 1_536 + 3_840 + 3_840),
        }
    }

    fn tiny() -> ModelShape {
        ModelShape {
            parameters: 1_000,
            n_layer: 2,
            n_embd: 10,
            vocab_size: 50,
            n_positions: 64,
            lora_in_out: 0,
        }
    }

    #[test]
    fn a_lora_job_is_priced_by_its_own_compute_and_adapter_checkpoints() {
        let rates = Rates::default();
        let full = TrainParams::new(100, 3e-4, 8, 1024);
        let mut lora = full.clone();
        lora.lora = Some(crate::job::LoraParams::new(8, &["c_attn"]));
        let est = |t: &TrainParams| estimate(&JobParams::Train(t.clone()), &gpt2_small(), 0);
        let (f, l) = (est(&full).unwrap(), est(&lora).unwrap());
        assert_eq!(f.tokens, l.tokens);
        // Per token: full 3 × forward; LoRA 2 × forward + 6 × r × Σ(in + out).
        let forward = 2 * 124_439_808 + 2 * 12 * 1_024 * 768;
        let adapter = 8 * 12 * (3_072 + 1_536 + 3_840 + 3_840);
        assert_eq!(f.flops, 3 * forward * f.tokens);
        assert_eq!(l.flops, (2 * forward + 6 * adapter) * l.tokens);
        assert!(l.flops * 10 < f.flops * 7, "LoRA is under 0.7× the full compute");
        // 10 checkpoints of the trained tensors and two moments, in f32.
        assert_eq!(f.checkpoint_bytes, 10 * 3 * 124_439_808 * 4);
        assert_eq!(l.checkpoint_bytes, 10 * 3 * adapter * 4);
        let (pf, pl) = (price(&f, &rates, JobKind::Train), price(&l, &rates, JobKind::Train));
        assert!(pl.total < pf.total);
        // A shape that does not list its LoRA layers is quoted no LoRA job.
        let e = estimate(&JobParams::Train(lora), &tiny(), 0).unwrap_err();
        assert_eq!(e.field, "lora");
    }

    #[test]
    fn train_counts_tokens_flops_and_checkpoints_by_hand() {
        let mut t = TrainParams::new(10, 1e-3, 4, 16);
        t.grad_accum = 2;
        t.checkpoint_every = 3;
        let e = estimate(&JobParams::Train(t), &tiny(), 0).unwrap();
        // 10 × 4 × 2 × 16 = 1,280 tokens.
        assert_eq!(e.tokens, 1_280);
        // Per token: 3 × (2 × 1,000 + 2 × 2 × 16 × 10) = 3 × 2,640 = 7,920.
        assert_eq!(e.flops, 7_920 * 1_280);
        // ceil(10 / 3) = 4 checkpoints × 3 × 1,000 × 4 bytes.
        assert_eq!(e.checkpoint_bytes, 48_000);
    }

    #[test]
    fn evaluate_bounds_tokens_by_bytes_windows_and_max_tokens() {
        let p = |max_tokens| {
            JobParams::Evaluate(EvalParams {
                context_len: 16,
                stride: 8,
                max_tokens,
                baseline: None,
            })
        };
        // 100 bytes ≥ 100 tokens: first window 16, then ceil(84 / 8) = 11 windows of 16.
        let e = estimate(&p(0), &tiny(), 100).unwrap();
        assert_eq!(e.tokens, 16 + 11 * 16);
        assert_eq!(e.flops, (2 * 1_000 + 2 * 2 * 16 * 10) * e.tokens);
        assert_eq!(e.checkpoint_bytes, 0);
        // max_tokens caps the scored tokens; short data is one partial window.
        assert_eq!(estimate(&p(40), &tiny(), 100).unwrap().tokens, 16 + 3 * 16);
        assert_eq!(estimate(&p(0), &tiny(), 10).unwrap().tokens, 10);
    }

    #[test]
    fn infer_counts_prompt_bytes_and_new_tokens_with_a_bounded_span() {
        let p = InferParams {
            prompts: vec!["abcd".into(), "x".repeat(100)],
            max_new_tokens: 6,
            sampling: Sampling::default(),
            stop: vec![],
            messages: vec![],
        };
        let e = estimate(&JobParams::Infer(p), &tiny(), 0).unwrap();
        assert_eq!(e.tokens, 10 + 106);
        // Spans: 10, and 106 capped at n_positions = 64.
        let f = (2_000 + 2 * 2 * 10 * 10) * 10 + (2_000 + 2 * 2 * 64 * 10) * 106;
        assert_eq!(e.flops, f);
    }

    #[test]
    fn a_chat_is_one_prompt_of_its_template_bound() {
        let messages = vec![ChatMessage::new("system", "be brief"), ChatMessage::new("user", "hi")];
        // (6 + 8 + 32) + (4 + 2 + 32) + 256 = 340 tokens.
        assert_eq!(chat_prompt_tokens(&messages), 340);
        let p = InferParams {
            prompts: vec![],
            max_new_tokens: 6,
            sampling: Sampling::default(),
            stop: vec![],
            messages,
        };
        let e = estimate(&JobParams::Infer(p), &tiny(), 0).unwrap();
        assert_eq!(e.tokens, 346);
        assert_eq!(e.flops, (2_000 + 2 * 2 * 64 * 10) * 346);
    }

    #[test]
    fn a_train_job_is_priced_by_its_compute() {
        let rates = Rates::default();
        let quote = |steps| {
            let mut t = TrainParams::new(steps, 3e-4, 8, 1024);
            t.checkpoint_every = steps;
            let e = estimate_at(&JobParams::Train(t), &gpt2_small(), 0, &rates).unwrap();
            (e, price(&e, &rates, JobKind::Train))
        };
        let (e1, p1) = quote(100);
        let (e2, p2) = quote(200);
        assert_eq!(e2.flops, 2 * e1.flops);
        assert_eq!(p2.lines[0].amount.0, 2 * p1.lines[0].amount.0, "compute doubles");
        // 100 × 8 × 1,024 = 819,200 tokens; per token 3 × (2 × 124,439,808 + 2 × 12 × 1,024
        // × 768) = 3 × 267,753,984 = 803,261,952 FLOPs; total 658,032,191,078,400 (658 TFLOP)
        // → ceil(658.0321910784 × 2 OCEAN).
        assert_eq!(e1.flops, 658_032_191_078_400);
        assert_eq!(p1.lines[0].amount, Ocean(1_316_064_382_156_800_000_000));
        // One checkpoint: 3 × 124,439,808 × 4 = 1,493,277,696 bytes × 1 OCEAN per GB.
        assert_eq!(p1.lines[1].amount, Ocean(1_493_277_696_000_000_000));
        assert_eq!(p1.lines[2].amount, Ocean(OCEAN));
        let total: u128 = p1.lines.iter().map(|l| l.amount.0).sum();
        assert_eq!(p1.total.0, total);
        assert!(p1.lines[0].formula.contains("658,032,191,078,400 FLOPs"), "{:?}", p1.lines[0]);
        // Seconds at 10 TFLOP/s (GPU) and 10 GFLOP/s (CPU), rounded up.
        assert_eq!(e1.seconds_gpu, 66);
        assert_eq!(e1.seconds_cpu, 65_804);
        let b = budget(&e1, &rates);
        assert_eq!(b.max_seconds, 65_804 * 10 + 600);
        assert_eq!((b.tokens, b.flops), (e1.tokens, e1.flops));
    }

    #[test]
    fn the_minimum_fee_tops_up_tiny_jobs() {
        let mut rates = Rates::default();
        rates.fixed.infer = Ocean(0);
        let p = InferParams {
            prompts: vec!["hi".into()],
            max_new_tokens: 1,
            sampling: Sampling::default(),
            stop: vec![],
            messages: vec![],
        };
        let e = estimate(&JobParams::Infer(p), &tiny(), 0).unwrap();
        let pb = price(&e, &rates, JobKind::Infer);
        assert_eq!(pb.total, rates.minimum);
        assert_eq!(pb.lines.last().map(|l| l.label.as_str()), Some("minimum fee"));
    }

    #[test]
    fn overflow_is_refused_and_amounts_saturate() {
        let huge = ModelShape { parameters: u64::MAX / 2, ..gpt2_small() };
        let t = TrainParams::new(100_000, 1e-3, 256, 8192);
        let err = estimate(&JobParams::Train(t), &huge, 0).unwrap_err();
        assert!(err.reason.contains("too large"), "{err}");
        let e = ComputeEstimate { flops: u64::MAX, ..Default::default() };
        let rates = Rates { per_tflop: Ocean(u128::MAX), ..Rates::default() };
        assert_eq!(price(&e, &rates, JobKind::Infer).total, Ocean(u128::MAX));
    }

    #[test]
    fn over_budget_names_the_first_field() {
        let e =
            ComputeEstimate { tokens: 10, flops: 100, checkpoint_bytes: 5, ..Default::default() };
        let b = Budget { tokens: 10, flops: 99, checkpoint_bytes: 5, max_seconds: 1 };
        assert_eq!(e.exceeds(&b), Some(("flops", 100, 99)));
        assert_eq!(e.exceeds(&Budget { flops: 100, ..b }), None);
    }

    #[test]
    fn amounts_are_decimal_strings_and_display_with_decimals() {
        let r = Rates::default();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"per_tflop\":\"2000000000000000000\""), "{json}");
        assert_eq!(serde_json::from_str::<Rates>(&json).unwrap(), r);
        assert!(serde_json::from_str::<Ocean>("\"-1\"").is_err());
        assert!(serde_json::from_str::<Ocean>("12").is_err());
        assert_eq!(Ocean(1_250_000_000_000_000_000).to_string(), "1.25 OCEAN");
        assert_eq!(Ocean(3 * OCEAN).to_string(), "3 OCEAN");
        assert_eq!(Ocean(1).to_string(), "0.000000000000000001 OCEAN");
    }
}
