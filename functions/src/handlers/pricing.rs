//! Jobs priced by their compute: the quote's terms, their binding into the Ocean v4 provider
//! fee, and the check at submit that an order's fee is the quote for *this* job.
//!
//! The quote prices `{ params, dataset_bytes }` with `posthuman_types::pricing` at the
//! operator's [`Rates`] and signs the total as the provider fee (token OCEAN). The fee's
//! `providerData` is a 32-byte [`FeeBinding`] (a digest naming the chain, the deployment (the
//! lineage contract), the model, the job kind, the quoted dataset length and the hash of the
//! terms); the operator's signature covers it together with the amount. At
//! submit the order's fee must be in OCEAN, bind exactly this request's
//! chain/deployment/model/kind/params, cover a dataset at most as long as quoted, and be no
//! less than the price of those terms; the
//! spec's [`Budget`] is recomputed from the same terms, so the worker enforces what was paid.

use alloy::primitives::U256;
use posthuman_chain::VerifiedOrder;
use posthuman_gpt2::family::AnyConfig;
use posthuman_gpt2::lora::LoraConfig;
use posthuman_receipts::FeeBinding;
use posthuman_types::pricing::{self, ComputeEstimate, ModelShape, PriceBreakdown, Rates};
use posthuman_types::{Budget, Hash32, JobParams, SpecError, TrainParams};
use serde::{Deserialize, Serialize};

use super::models::lower;
use crate::catalogue::ModelRecord;
use crate::deps::Deps;
use crate::error::ApiError;

/// What a quote prices: `posthuman_types::views::QuoteTerms` (the CLI and the storefront
/// send the same definition).
pub use posthuman_types::views::QuoteTerms;

/// keccak256 of the terms' canonical JSON (compact, fields in declaration order), as
/// [`posthuman_receipts::terms_hash`] computes it for every client.
pub fn terms_hash(terms: &QuoteTerms) -> Result<Hash32, ApiError> {
    posthuman_receipts::terms_hash(&terms.params, terms.dataset_bytes).map_err(ApiError::internal)
}

/// The provider fee's `providerData` for `terms` on `model` in this deployment.
pub fn fee_binding(
    deps: &Deps,
    model: &ModelRecord,
    terms: &QuoteTerms,
) -> Result<FeeBinding, ApiError> {
    let book = deps.chain.book();
    Ok(FeeBinding {
        chain_id: book.chain_id,
        deployment: book.lineage,
        model: crate::auth::parse_address("model", &model.card.nft)?,
        kind: terms.params.kind(),
        dataset_bytes: terms.dataset_bytes,
        terms: terms_hash(terms)?,
    })
}

/// A priced job: its compute, price and the budget the price buys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Priced {
    pub estimate: ComputeEstimate,
    pub breakdown: PriceBreakdown,
    pub budget: Budget,
}

/// A model's stored `config.json` (the worker reads the same file), in the family its
/// `model_type` names.
pub async fn model_config(deps: &Deps, model: &ModelRecord) -> Result<AnyConfig, ApiError> {
    let b = deps.store.get(&format!("{}/config.json", model.storage_prefix), 1 << 20).await?;
    let text = std::str::from_utf8(&b).map_err(ApiError::internal)?;
    AnyConfig::from_json(text).map_err(ApiError::internal)
}

/// An infer job given as `messages` needs the model's chat template (`tokenizer_config.json`'s
/// `chat_template` or `chat_template.jinja`, stored beside the weights and inherited by derived
/// models): without one the worker can only refuse the job (`CHAT_REFUSED`), so the buyer is
/// told here, before paying.
pub async fn check_chat(
    deps: &Deps,
    model: &ModelRecord,
    params: &JobParams,
) -> Result<(), ApiError> {
    use posthuman_gpt2::chat_config::{
        CHAT_TEMPLATE_FILE, ChatConfig, MAX_CHAT_TEMPLATE_BYTES, MAX_TOKENIZER_CONFIG_BYTES,
        TOKENIZER_CONFIG,
    };
    let JobParams::Infer(p) = params else { return Ok(()) };
    if p.messages.is_empty() {
        return Ok(());
    }
    let read = |name: &'static str, max: u64| async move {
        match deps.store.get(&format!("{}/{name}", model.storage_prefix), max).await {
            Ok(b) => Ok(Some(b)),
            Err(posthuman_store::StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(ApiError::from(e)),
        }
    };
    let tc = read(TOKENIZER_CONFIG, MAX_TOKENIZER_CONFIG_BYTES).await?;
    let mut chat = ChatConfig::parse(tc.as_deref(), None).map_err(ApiError::internal)?;
    if let Some(t) = read(CHAT_TEMPLATE_FILE, MAX_CHAT_TEMPLATE_BYTES as u64).await? {
        chat = chat.with_template_file(&t).map_err(ApiError::internal)?;
    }
    if chat.chat_template.is_none() {
        return Err(ApiError::Invalid {
            field: "messages".into(),
            reason: "this model has no chat template (tokenizer_config.json's chat_template or \
                     chat_template.jinja): send prompts instead"
                .into(),
        });
    }
    Ok(())
}

/// The checks of a train job's LoRA settings that need the model (its family's module names,
/// its layer sizes): the worker makes the same ones, but a buyer learns of a misfit here,
/// before paying, with the field named.
pub fn check_lora(params: &JobParams, cfg: &AnyConfig) -> Result<(), ApiError> {
    let JobParams::Train(TrainParams { lora: Some(l), .. }) = params else { return Ok(()) };
    let base = cfg.lora_base();
    LoraConfig::from_params(base.family(), l)
        .validate(&base)
        .map(|_| ())
        .map_err(|e| ApiError::Invalid { field: "lora".into(), reason: e.to_string() })
}

/// The checks submit applies to a job's parameters, given the model's context.
pub fn validate_params(params: &JobParams, n_positions: u32) -> Result<(), SpecError> {
    match params {
        JobParams::Train(t) => t.validate()?,
        JobParams::Infer(i) => i.validate()?,
        JobParams::Evaluate(e) => e.validate()?,
    }
    match params.context_len() {
        Some(c) if c > n_positions => Err(SpecError {
            field: "context_len",
            reason: format!("{c} exceeds the model's maximum context of {n_positions}"),
        }),
        _ => Ok(()),
    }
}

/// Prices validated terms on a model of `shape` at `rates`.
pub fn price_terms(
    terms: &QuoteTerms,
    shape: &ModelShape,
    rates: &Rates,
) -> Result<Priced, ApiError> {
    let estimate = pricing::estimate_at(&terms.params, shape, terms.dataset_bytes, rates)?;
    let breakdown = pricing::price(&estimate, rates, terms.params.kind());
    let budget = pricing::budget(&estimate, rates);
    Ok(Priced { estimate, breakdown, budget })
}

fn unpaid(reason: impl Into<String>) -> ApiError {
    ApiError::PaymentInvalid { reason: reason.into() }
}

/// Checks that `order`'s provider fee is the quote for this job (see the module docs) and
/// returns the budget it paid for. `shape` is the model's (from its `config.json`);
/// `dataset_len` is the submitted dataset's length; `quoted` the dataset length the request
/// says it was quoted for (absent: exactly `dataset_len`).
pub async fn check_fee(
    deps: &Deps,
    model: &ModelRecord,
    shape: &ModelShape,
    params: &JobParams,
    dataset_len: u64,
    quoted: Option<u64>,
    order: &VerifiedOrder,
) -> Result<Budget, ApiError> {
    if order.fee_token != deps.chain.book().ocean {
        return Err(unpaid(format!(
            "the provider fee is paid in {}, not OCEAN",
            lower(order.fee_token)
        )));
    }
    let quoted = quoted.unwrap_or(dataset_len);
    if dataset_len > quoted {
        return Err(unpaid(format!(
            "the dataset is {dataset_len} bytes; the request says its fee paid for {quoted}"
        )));
    }
    let terms = QuoteTerms { params: params.clone(), dataset_bytes: quoted };
    if order.provider_data.len() != FeeBinding::LEN {
        return Err(unpaid("the provider fee does not carry a quote's terms (providerData)"));
    }
    if !fee_binding(deps, model, &terms)?.matches(&order.provider_data) {
        return Err(unpaid(format!(
            "the provider fee was quoted for another job: not these parameters and a {quoted}-byte \
             dataset for a {} job on {} in this deployment (quote this job; a request for a \
             shorter dataset than quoted names the quote's length in quoted_dataset_bytes)",
            params.kind(),
            model.card.nft
        )));
    }
    let priced = price_terms(&terms, shape, &deps.cfg.rates)?;
    if order.fee_amount < U256::from(priced.breakdown.total.0) {
        return Err(unpaid(format!(
            "the provider fee is {} base units; these terms cost {}",
            order.fee_amount, priced.breakdown.total.0
        )));
    }
    Ok(priced.budget)
}

/// `GET /api/pricing`: the operator's rates and the formulas the quote applies.
pub use posthuman_types::views::PricingView;

pub fn pricing_view(deps: &Deps) -> PricingView {
    PricingView {
        rates: deps.cfg.rates,
        token: lower(deps.chain.book().ocean),
        formulas: Rates::formulas()
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    }
}
