//! Ordering a job from the browser, as plain data: the order form's values → the job's
//! parameters (checked with the API's own bounds, `posthuman_types`' `validate`, before any
//! quote is asked), the quote's terms, the fee check the CLI makes, the transactions the
//! wallet will be asked to send (encoded with `sol!`, exactly the calls `posthuman jobs` and
//! `posthuman market buy` make through `posthuman-chain`), the signed job request and the
//! signed result read. The browser side is [`crate::app::order`]; this module is unit-tested
//! natively.
//!
//! The order, as the CLI places it (crates/chain `Chain::buy` and `Chain::start_order`):
//! 1. with no datatoken held: `approve(fixedRate, cost)` on OCEAN, where `cost` is the
//!    exchange's own `calcBaseInGivenOutDT(exchange, 1 datatoken, 0)`, then
//!    `buyDT(exchange, 1 datatoken, cost, operator, 0)`;
//! 2. `approve(datatoken, fee [+ royalty when it is in the fee's token])` on OCEAN (and the
//!    royalty's token apart when it differs);
//! 3. `startOrder(consumer, serviceIndex, providerFee, zero consume-market fee)` on the
//!    datatoken, with the quote's operator-signed provider fee;
//! 4. the job request (`posthuman-functions`' `JobRequest`) signed as EIP-712 typed data
//!    (`eth_signTypedData_v4`, [`SignableRequest::typed_data`]) and posted as the JSON body,
//!    the signature in a header and the dataset, if any, named by its direct upload
//!    ([`crate::upload`], sent before step 1).

use alloy::hex;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol;
use alloy::sol_types::SolCall;
use posthuman_receipts::request::{READ_RESULT, SUBMIT_JOB, SignableRequest};
use posthuman_receipts::{FeeBinding, ReceiptDomain, terms_hash};
use posthuman_types::job::Baseline;
use posthuman_types::pricing::Ocean;
use posthuman_types::{
    EvalParams, Hash32, InferParams, JobKind, JobParams, LoraParams, Sampling, SpecError,
    TrainParams,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::wire::{AddressBook, Quote};

sol! {
    /// ERC-20 (OCEAN, datatokens).
    function approve(address spender, uint256 amount) external returns (bool);
    /// Ocean's fixed-rate exchange.
    function calcBaseInGivenOutDT(bytes32 exchangeId, uint256 datatokenAmount, uint256 consumeMarketSwapFeeAmount) external view returns (uint256 baseTokenAmount, uint256 oceanFeeAmount, uint256 publishMarketFeeAmount, uint256 consumeMarketFeeAmount);
    function buyDT(bytes32 exchangeId, uint256 datatokenAmount, uint256 maxBaseTokenAmount, address consumeMarketAddress, uint256 consumeMarketSwapFeeAmount) external;
    /// Ocean's datatoken (ERC20Template).
    function getPublishingMarketFee() external view returns (address collector, address token, uint256 amount);
    #[derive(Debug, PartialEq)]
    struct providerFee {
        address providerFeeAddress;
        address providerFeeToken;
        uint256 providerFeeAmount;
        uint8 v;
        bytes32 r;
        bytes32 s;
        uint256 validUntil;
        bytes providerData;
    }
    struct consumeMarketFee {
        address consumeMarketFeeAddress;
        address consumeMarketFeeToken;
        uint256 consumeMarketFeeAmount;
    }
    function startOrder(address consumer, uint256 serviceIndex, providerFee _providerFee, consumeMarketFee _consumeMarketFee) external;
}

/// One datatoken, in base units (18 decimals): what one job spends.
pub const ONE_DATATOKEN: u128 = 1_000_000_000_000_000_000;

/// How long a signed request stays valid (the API accepts at most an hour).
pub const REQUEST_VALIDITY_SECS: u64 = 600;

/// The order form, as typed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderForm {
    pub kind: Option<JobKind>,
    // infer
    pub prompt: String,
    pub max_new_tokens: String,
    pub temperature: String,
    // evaluate and train
    pub context: String,
    pub stride: String,
    pub steps: String,
    pub learning_rate: String,
    pub batch: String,
    /// Evaluate: the baseline the perplexity is compared with (both empty: none).
    pub baseline_label: String,
    pub baseline_perplexity: String,
    /// Length of the picked dataset file (train, evaluate).
    pub dataset_bytes: Option<u64>,
    /// Train: a LoRA adapter instead of a full fine-tune.
    pub lora: bool,
    pub lora_r: String,
    /// Empty: 2r (PEFT's common choice, and the CLI's default).
    pub lora_alpha: String,
    pub lora_dropout: String,
    /// The ticked module names, in the family's order.
    pub lora_targets: Vec<String>,
    /// Train: the derived model's name and symbol (empty: the API's defaults).
    pub name: String,
    pub symbol: String,
}

/// The linear layers LoRA can adapt in a model family (the first word of the card's
/// `architecture`, as the API writes it), in the order the form lists them; `None` for a
/// family the storefront does not know (the form then offers no LoRA).
pub fn lora_modules(architecture: &str) -> Option<&'static [&'static str]> {
    match architecture.split_whitespace().next()? {
        "gpt2" => Some(&["c_attn", "c_proj", "c_fc"]),
        "llama" | "mistral" | "qwen2" | "qwen3" => {
            Some(&["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        }
        _ => None,
    }
}

/// The modules ticked when the form opens: the attention projections, as `posthuman jobs
/// train --lora-rank` picks them without `--lora-target`.
fn default_lora_targets(architecture: &str) -> Vec<String> {
    let picks: &[&str] = match lora_modules(architecture) {
        Some(m) if m[0] == "c_attn" => &["c_attn"],
        Some(_) => &["q_proj", "v_proj"],
        None => &[],
    };
    picks.iter().map(|s| s.to_string()).collect()
}

/// A number typed in the form, in JSON's number syntax (`100`, `0.0003`, `3e-4`; a leading
/// `+` and a bare leading or trailing `.` are completed first, as `str::parse` took them),
/// read by serde_json's parser. Not `str::parse`: `f64`'s `FromStr` is core's own float
/// parser, which brought a 10 KB table of powers of five into the wasm beside the parser
/// serde_json carries anyway (13 KB gzipped, 2026-12-07), for the five decimals this form
/// takes.
fn num<T: DeserializeOwned>(field: &'static str, s: &str) -> Result<T, SpecError> {
    let not_a_number = || SpecError { field, reason: format!("{s:?} is not a number") };
    let t = s.trim();
    let (sign, digits) = match t.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", t.strip_prefix('+').unwrap_or(t)),
    };
    if digits.starts_with(['+', '-']) {
        return Err(not_a_number());
    }
    let bare = digits.len() > 1 && !digits.starts_with(['e', 'E']);
    let lead = if bare && digits.starts_with('.') { "0" } else { "" };
    let trail = if bare && digits.ends_with('.') { "0" } else { "" };
    posthuman_receipts::json::from_str(&format!("{sign}{lead}{digits}{trail}"))
        .map_err(|_| not_a_number())
}

impl OrderForm {
    /// The form as the storefront opens it: the API's listed defaults.
    pub fn new(kind: JobKind) -> Self {
        OrderForm {
            kind: Some(kind),
            max_new_tokens: "64".into(),
            temperature: "0".into(),
            context: "128".into(),
            stride: "64".into(),
            steps: "100".into(),
            learning_rate: "0.0003".into(),
            batch: "8".into(),
            lora_r: "8".into(),
            lora_dropout: "0".into(),
            ..Default::default()
        }
    }

    /// The LoRA choices opened for a model of this `architecture` (its family's attention
    /// projections ticked).
    pub fn for_architecture(mut self, architecture: &str) -> Self {
        self.lora_targets = default_lora_targets(architecture);
        self
    }

    /// The LoRA adapter as the form states it (`None`: a full fine-tune), checked with the
    /// API's own bounds (`LoraParams::validate`).
    pub fn lora_params(&self) -> Result<Option<LoraParams>, SpecError> {
        if !self.lora {
            return Ok(None);
        }
        let r: u32 = num("lora.r", &self.lora_r)?;
        let lora_alpha = if self.lora_alpha.trim().is_empty() {
            2.0 * f64::from(r)
        } else {
            num("lora.lora_alpha", &self.lora_alpha)?
        };
        let l = LoraParams {
            r,
            lora_alpha,
            lora_dropout: num("lora.lora_dropout", &self.lora_dropout)?,
            target_modules: self.lora_targets.clone(),
        };
        l.validate()?;
        Ok(Some(l))
    }

    /// The form opened within a model's context: a default context (or stride) longer than
    /// the model's `n_positions` becomes it, so the defaults are always a valid order.
    pub fn within_context(mut self, n_positions: Option<u32>) -> Self {
        if let Some(n) = n_positions {
            for v in [&mut self.context, &mut self.stride] {
                if v.parse::<u32>().is_ok_and(|c| c > n) {
                    *v = n.to_string();
                }
            }
        }
        self
    }

    /// The evaluation's baseline: none when both fields are empty, else both are needed (the
    /// API's own bounds then apply, in `EvalParams::validate`).
    fn baseline(&self) -> Result<Option<Baseline>, SpecError> {
        let label = self.baseline_label.trim();
        match (label.is_empty(), self.baseline_perplexity.trim().is_empty()) {
            (true, true) => Ok(None),
            (true, false) => Err(SpecError {
                field: "baseline.label",
                reason: "name the baseline the perplexity is compared with".into(),
            }),
            _ => Ok(Some(Baseline {
                label: label.to_string(),
                perplexity: num("baseline.perplexity", &self.baseline_perplexity)?,
            })),
        }
    }

    /// The job's parameters, checked with the API's own bounds (and the model's context):
    /// a value the API would refuse is refused here, before any quote is asked.
    pub fn params(&self, n_positions: Option<u32>) -> Result<(JobParams, u64), SpecError> {
        let kind = self.kind.unwrap_or(JobKind::Infer);
        let dataset = |kind: JobKind| {
            self.dataset_bytes.filter(|n| *n > 0).ok_or(SpecError {
                field: "dataset",
                reason: format!("a {kind} job needs a dataset: pick a non-empty text file"),
            })
        };
        let (params, bytes) = match kind {
            JobKind::Infer => {
                if self.prompt.trim().is_empty() {
                    return Err(SpecError { field: "prompt", reason: "write a prompt".into() });
                }
                let p = InferParams {
                    prompts: vec![self.prompt.clone()],
                    max_new_tokens: num("max_new_tokens", &self.max_new_tokens)?,
                    sampling: Sampling {
                        temperature: num("sampling.temperature", &self.temperature)?,
                        ..Sampling::default()
                    },
                    stop: vec![],
                    messages: vec![],
                };
                p.validate()?;
                (JobParams::Infer(p), 0)
            }
            JobKind::Evaluate => {
                let p = EvalParams {
                    context_len: num("context_len", &self.context)?,
                    stride: num("stride", &self.stride)?,
                    max_tokens: 0,
                    baseline: self.baseline()?,
                };
                p.validate()?;
                (JobParams::Evaluate(p), dataset(kind)?)
            }
            JobKind::Train => {
                let mut p = TrainParams::new(
                    num("steps", &self.steps)?,
                    num("learning_rate", &self.learning_rate)?,
                    num("batch_size", &self.batch)?,
                    num("context_len", &self.context)?,
                );
                p.lora = self.lora_params()?;
                let given = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
                (p.name, p.symbol) = (given(&self.name), given(&self.symbol));
                p.validate()?;
                (JobParams::Train(p), dataset(kind)?)
            }
        };
        if let (Some(c), Some(n)) = (params.context_len(), n_positions)
            && c > n
        {
            return Err(SpecError {
                field: "context_len",
                reason: format!("{c} exceeds the model's maximum context of {n}"),
            });
        }
        Ok((params, bytes))
    }
}

/// A train job's method in words, as the quote states what it prices (`None`: not a train
/// job).
pub fn train_method(params: &JobParams) -> Option<String> {
    let JobParams::Train(t) = params else { return None };
    Some(match &t.lora {
        Some(l) => format!(
            "LoRA r {}, alpha {}, dropout {}, on {}",
            l.r,
            l.lora_alpha,
            l.lora_dropout,
            l.target_modules.join(", ")
        ),
        None => "full fine-tune".into(),
    })
}

/// A picked dataset file, checked as the API checks it at submit (UTF-8 text), before any
/// quote is asked: the API would refuse it only after the order is paid.
pub fn check_dataset(name: &str, bytes: &[u8]) -> Result<(), SpecError> {
    if bytes.is_empty() {
        return Err(SpecError { field: "dataset", reason: format!("{name} is empty") });
    }
    std::str::from_utf8(bytes).map(|_| ()).map_err(|e| SpecError {
        field: "dataset",
        reason: format!(
            "{name} is not UTF-8 text (invalid byte at offset {}): the API takes plain text",
            e.valid_up_to()
        ),
    })
}

/// The body of `POST /api/models/{nft}/quote`: the API's own definition.
pub use posthuman_types::views::QuoteTerms;

/// The signed JSON part of `POST /api/jobs` (`posthuman-functions`' `JobRequest`, which
/// refuses unknown fields: these are exactly its fields).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobRequest {
    pub model: String,
    pub order_tx: String,
    pub consumer: String,
    pub params: JobParams,
    pub dataset_sha256: Option<Hash32>,
    pub salt: Hash32,
    pub nonce: String,
    pub expires_at: u64,
}

fn amount(what: &str, s: &str) -> Result<U256, String> {
    s.parse::<U256>().map_err(|_| format!("the quote's {what} is not an amount ({s:?})"))
}

/// The quote's provider fee as `startOrder` takes it.
pub fn provider_fee(q: &Quote) -> Result<providerFee, String> {
    let f = &q.provider_fee;
    let addr = |what: &str, s: &str| {
        s.parse::<Address>().map_err(|_| format!("the quote's {what} is not an address"))
    };
    let word = |s: &str| s.parse::<B256>().map_err(|_| "the quote's fee signature is malformed");
    Ok(providerFee {
        providerFeeAddress: addr("fee address", &f.provider_fee_address)?,
        providerFeeToken: addr("fee token", &f.provider_fee_token)?,
        providerFeeAmount: amount("fee", &f.provider_fee_amount)?,
        v: f.v,
        r: word(&f.r)?,
        s: word(&f.s)?,
        validUntil: U256::from(f.valid_until),
        providerData: f
            .provider_data
            .parse::<Bytes>()
            .map_err(|_| "the quote's provider data is not hex".to_string())?,
    })
}

/// The checks the CLI makes before paying (`check_quote_fee`): the fee the operator signed
/// is in this deployment's OCEAN, to its operator, exactly the quote's total, and its
/// `providerData` is the binding ([`FeeBinding`], shared with the API) of this chain,
/// deployment, model, kind and the very terms this page asked to be quoted. `Err` says what
/// is wrong; nothing is sent then.
pub fn check_fee(
    q: &Quote,
    book: &AddressBook,
    nft: &str,
    terms: &QuoteTerms,
) -> Result<providerFee, String> {
    let fee = provider_fee(q)?;
    let refuse = |what: String| format!("The quote's provider fee {what}; nothing was sent.");
    if Some(fee.providerFeeToken) != book.ocean {
        return Err(refuse(format!(
            "is in {:#x}, not the deployment's OCEAN",
            fee.providerFeeToken
        )));
    }
    if fee.providerFeeAddress != book.operator {
        return Err(refuse(format!("goes to {:#x}, not the operator", fee.providerFeeAddress)));
    }
    if fee.providerFeeAmount != U256::from(q.breakdown.total.0) {
        return Err(refuse(format!(
            "is {} base units, not the total of {}",
            fee.providerFeeAmount, q.breakdown.total
        )));
    }
    let model: Address = nft.parse().map_err(|_| refuse(format!("names no model ({nft})")))?;
    let binding = FeeBinding {
        chain_id: book.chain_id,
        deployment: book.lineage,
        model,
        kind: terms.params.kind(),
        dataset_bytes: terms.dataset_bytes,
        terms: terms_hash(&terms.params, terms.dataset_bytes).map_err(|e| e.to_string())?,
    };
    if q.kind != terms.params.kind() || !binding.matches(&fee.providerData) {
        return Err(refuse(format!(
            "does not pay for these {} terms on {nft}",
            terms.params.kind()
        )));
    }
    Ok(fee)
}

/// An `eth_sendTransaction` the wallet will be asked for, described in words first.
#[derive(Clone, Debug, PartialEq)]
pub struct Tx {
    /// What it does, for people (shown before and while it is sent).
    pub words: String,
    pub to: Address,
    pub data: Vec<u8>,
}

impl Tx {
    /// `eth_sendTransaction` params from `from` (JSON text, as [`crate::wallet`] writes
    /// params).
    pub fn params(&self, from: Address) -> String {
        format!(
            r#"[{{"from":"{from:#x}","to":"{:#x}","data":"{}"}}]"#,
            self.to,
            hex::encode_prefixed(&self.data)
        )
    }
}

/// `eth_call` params.
pub fn call_params(to: Address, data: &[u8]) -> String {
    format!(r#"[{{"to":"{to:#x}","data":"{}"}},"latest"]"#, hex::encode_prefixed(data))
}

/// `eth_signTypedData_v4` params: the signer, then the typed data as a JSON string (as
/// wallets expect it).
pub fn sign_params(signer: Address, typed_data: &str) -> String {
    format!(r#"["{signer:#x}",{}]"#, crate::wallet::json_str(typed_data))
}

fn unhex(v: &Value) -> Result<Vec<u8>, String> {
    let s = v.as_str().ok_or_else(|| format!("the node answered {v}"))?;
    crate::wallet::unhex(s).ok_or_else(|| format!("the node answered {s}"))
}

/// `calcBaseInGivenOutDT(exchange, 1 datatoken, 0)`: the call and the reading of its answer
/// (the OCEAN one datatoken costs now, fees included).
pub fn cost_call(book: &AddressBook, exchange: B256) -> String {
    let data = calcBaseInGivenOutDTCall {
        exchangeId: exchange,
        datatokenAmount: U256::from(ONE_DATATOKEN),
        consumeMarketSwapFeeAmount: U256::ZERO,
    }
    .abi_encode();
    call_params(book.fixed_rate, &data)
}

pub fn parse_cost(v: &Value) -> Result<U256, String> {
    calcBaseInGivenOutDTCall::abi_decode_returns(&unhex(v)?)
        .map(|r| r.baseTokenAmount)
        .map_err(|e| format!("the exchange's price could not be read: {e}"))
}

/// `getPublishingMarketFee()` of a datatoken: `(collector, token, amount)`.
pub fn market_fee_call(datatoken: Address) -> String {
    call_params(datatoken, &getPublishingMarketFeeCall {}.abi_encode())
}

pub fn parse_market_fee(v: &Value) -> Result<(Address, Address, U256), String> {
    getPublishingMarketFeeCall::abi_decode_returns(&unhex(v)?)
        .map(|r| (r.collector, r.token, r.amount))
        .map_err(|e| format!("the datatoken's royalty could not be read: {e}"))
}

/// What the order needs from the chain before its transactions are known.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainState {
    /// The buyer's datatokens of this model.
    pub datatokens: U256,
    /// The buyer's OCEAN.
    pub ocean: U256,
    /// OCEAN for one datatoken on the exchange now (`None`: not on sale).
    pub cost: Option<U256>,
    /// The datatoken's publish-market fee (the lineage royalty): collector, token, amount.
    pub royalty: (Address, Address, U256),
}

fn ocean(u: U256) -> String {
    Ocean(u.try_into().unwrap_or(u128::MAX)).to_string()
}

/// The transactions of an order, in the order they are sent, or why it cannot be placed
/// (no datatoken and none on sale; not enough OCEAN). Mirrors `Chain::buy` and
/// `Chain::start_order`.
pub fn plan(
    q: &Quote,
    book: &AddressBook,
    fee: &providerFee,
    buyer: Address,
    s: &ChainState,
) -> Result<Vec<Tx>, String> {
    let datatoken: Address =
        q.datatoken.parse().map_err(|_| "the quote's datatoken is not an address")?;
    let need_dt = amount("datatokens", &q.datatokens)?;
    let mut txs = Vec::new();
    let mut spend = U256::ZERO;
    if s.datatokens < need_dt {
        let (Some(exchange), Some(cost)) = (q.exchange_id, s.cost) else {
            return Err(format!(
                "You hold no datatoken of this model and it is not on sale on an exchange: \
                 ask a holder for one ({} needed).",
                crate::format::tokens(&q.datatokens)
            ));
        };
        if need_dt != U256::from(ONE_DATATOKEN) {
            return Err("this job costs more than one datatoken: buy them first".into());
        }
        let exchange = B256::from(exchange.0);
        spend += cost;
        txs.push(Tx {
            words: format!("Allow the exchange to take {} for one datatoken", ocean(cost)),
            to: book.ocean.ok_or("the deployment names no OCEAN token")?,
            data: approveCall { spender: book.fixed_rate, amount: cost }.abi_encode(),
        });
        txs.push(Tx {
            words: format!("Buy one datatoken of this model for {}", ocean(cost)),
            to: book.fixed_rate,
            data: buyDTCall {
                exchangeId: exchange,
                datatokenAmount: U256::from(ONE_DATATOKEN),
                maxBaseTokenAmount: cost,
                consumeMarketAddress: book.operator,
                consumeMarketSwapFeeAmount: U256::ZERO,
            }
            .abi_encode(),
        });
    }
    let (to, rtoken, ramount) = s.royalty;
    // Ocean skips the publish-market fee when any of its three parts is zero.
    let royalty = !(to.is_zero() || rtoken.is_zero() || ramount.is_zero());
    let fee_amount = fee.providerFeeAmount;
    let mut approve = |token: Address, amount: U256, what: &str| {
        txs.push(Tx {
            words: format!("Allow the datatoken to take {what}"),
            to: token,
            data: approveCall { spender: datatoken, amount }.abi_encode(),
        })
    };
    if royalty && rtoken == fee.providerFeeToken {
        let both = fee_amount.checked_add(ramount).ok_or("fee plus royalty overflows")?;
        approve(
            fee.providerFeeToken,
            both,
            &format!(
                "{} (compute fee {} + royalty {})",
                ocean(both),
                ocean(fee_amount),
                ocean(ramount)
            ),
        );
    } else {
        if !fee_amount.is_zero() {
            approve(
                fee.providerFeeToken,
                fee_amount,
                &format!("the compute fee, {}", ocean(fee_amount)),
            );
        }
        if royalty {
            approve(rtoken, ramount, &format!("the royalty, {ramount} base units of {rtoken:#x}"));
        }
    }
    if Some(fee.providerFeeToken) == book.ocean {
        spend += fee_amount;
    }
    if royalty && Some(rtoken) == book.ocean {
        spend += ramount;
    }
    if s.ocean < spend {
        return Err(format!(
            "Insufficient balance: this order needs {} and your wallet holds {}.",
            ocean(spend),
            ocean(s.ocean)
        ));
    }
    txs.push(Tx {
        words: format!(
            "Start the order: spend one datatoken and pay the compute fee ({}) to the operator",
            ocean(fee_amount)
        ),
        to: datatoken,
        data: startOrderCall {
            consumer: buyer,
            serviceIndex: U256::from(q.service_index),
            _providerFee: fee.clone(),
            _consumeMarketFee: consumeMarketFee {
                consumeMarketFeeAddress: Address::ZERO,
                consumeMarketFeeToken: Address::ZERO,
                consumeMarketFeeAmount: U256::ZERO,
            },
        }
        .abi_encode(),
    });
    Ok(txs)
}

/// A mined transaction's receipt: its block, or why it failed (`None`: not mined yet).
pub fn parse_receipt(v: &Value) -> Option<Result<u64, String>> {
    if v.is_null() {
        return None;
    }
    let block = v.get("blockNumber").and_then(crate::wallet::parse_quantity)?;
    Some(match v.get("status").and_then(|s| s.as_str()) {
        Some("0x1") => Ok(block),
        _ => Err("the transaction was mined but reverted (nothing was spent but gas)".into()),
    })
}

/// The signed request's random parts: a nonce and the salt the receipt's input hash is
/// salted with (the buyer's only copy).
pub fn nonce_of(r: &[u8; 16]) -> String {
    format!("n-{}", hex::encode(r))
}

/// The typed data the wallet signs for a job request body (`eth_signTypedData_v4`'s second
/// param, as JSON text: [`sign_params`] quotes it).
pub fn submit_typed_data(domain: &ReceiptDomain, body: &[u8]) -> Result<String, String> {
    let req = SignableRequest::of_json_body(SUBMIT_JOB, body).map_err(|e| e.to_string())?;
    Ok(req.typed_data(domain).to_string())
}

/// The typed data of a result read of `job_id` until `expires_at`.
pub fn read_typed_data(domain: &ReceiptDomain, job_id: &str, expires_at: u64) -> String {
    SignableRequest::read(READ_RESULT, job_id, expires_at).typed_data(domain).to_string()
}

/// The headers of a signed result read.
pub fn read_headers(
    signature: &str,
    expires_at: u64,
    reader: Address,
) -> [(&'static str, String); 3] {
    [
        ("x-posthuman-signature", signature.to_string()),
        ("x-posthuman-expires", expires_at.to_string()),
        ("x-posthuman-reader", format!("{reader:#x}")),
    ]
}

/// The generated texts of an infer result's `completions.json`.
pub fn completions(result: &Value) -> Vec<(String, String)> {
    result["completions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    Some((c["prompt"].as_str()?.to_string(), c["text"].as_str()?.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A train job's loss curve from its signed result (`metrics.json`'s `loss_curve`, (step,
/// loss) pairs); `None` when the result carries none.
pub fn loss_curve(result: &Value) -> Option<Vec<(u32, f64)>> {
    let pts = result["metrics"]["loss_curve"].as_array()?;
    pts.iter()
        .map(|p| Some((u32::try_from(p[0].as_u64()?).ok()?, p[1].as_f64()?)))
        .collect::<Option<Vec<_>>>()
        .filter(|v| !v.is_empty())
}

/// An evaluation's perplexity and its baseline (label, perplexity) from its signed result's
/// `report`; an unbounded perplexity (`null` in the report) is +∞.
pub fn evaluation(result: &Value) -> Option<(f64, Option<(String, f64)>)> {
    let r = result.get("report").filter(|r| r.is_object())?;
    let ppl = match &r["perplexity"] {
        Value::Null => f64::INFINITY,
        v => v.as_f64()?,
    };
    let baseline = match (r["baseline_label"].as_str(), r["baseline_perplexity"].as_f64()) {
        (Some(l), Some(b)) => Some((l.to_string(), b)),
        _ => None,
    };
    Some((ppl, baseline))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_form_opens_within_the_models_context() {
        let f = OrderForm {
            kind: Some(JobKind::Evaluate),
            dataset_bytes: Some(10),
            ..OrderForm::new(JobKind::Evaluate)
        }
        .within_context(Some(48));
        assert_eq!((f.context.as_str(), f.stride.as_str()), ("48", "48"));
        assert!(f.params(Some(48)).is_ok(), "the defaults are a valid order");
        let wide = OrderForm::new(JobKind::Evaluate).within_context(Some(1024));
        assert_eq!((wide.context.as_str(), wide.stride.as_str()), ("128", "64"));
        assert_eq!(OrderForm::new(JobKind::Evaluate).within_context(None).context, "128");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn the_form_is_bounded_as_the_api_bounds_it() {
        let mut f = OrderForm::new(JobKind::Infer);
        assert_eq!(f.params(None).unwrap_err().field, "prompt");
        f.prompt = "The".into();
        let (p, bytes) = f.params(Some(128)).unwrap();
        assert_eq!(bytes, 0);
        assert!(matches!(p, JobParams::Infer(ref i) if i.max_new_tokens == 64));
        f.max_new_tokens = "5000".into();
        let e = f.params(None).unwrap_err();
        assert_eq!(e.to_string(), "max_new_tokens: 5000 is outside 1..=2048");
        f.max_new_tokens = "ten".into();
        assert_eq!(f.params(None).unwrap_err().field, "max_new_tokens");
        let mut e = OrderForm::new(JobKind::Evaluate);
        assert_eq!(e.params(None).unwrap_err().field, "dataset");
        e.dataset_bytes = Some(10);
        assert!(e.params(Some(128)).is_ok());
        assert_eq!(e.params(Some(64)).unwrap_err().field, "context_len");
        let mut t = OrderForm::new(JobKind::Train);
        t.dataset_bytes = Some(10);
        assert!(t.params(Some(128)).is_ok());
        t.learning_rate = "1".into();
        assert_eq!(t.params(Some(128)).unwrap_err().field, "learning_rate");
    }

    /// Numbers are read in JSON's syntax (serde_json's parser, not `str::parse`), completed
    /// where `str::parse` was lenient, and anything else is the field's "not a number".
    #[test]
    fn form_numbers_are_read_as_str_parse_read_them() {
        let f = |s: &str| num::<f64>("x", s);
        for (text, want) in [
            ("0.0003", 3e-4),
            ("3e-4", 3e-4),
            (" 3E-4 ", 3e-4),
            ("+2.5", 2.5),
            (".5", 0.5),
            ("-.5", -0.5),
            ("5.", 5.0),
            ("1", 1.0),
            ("0.1", 0.1),
            ("1.7976931348623157e308", f64::MAX),
        ] {
            assert_eq!(f(text), Ok(want), "{text:?}");
            assert_eq!(text.trim().parse::<f64>(), Ok(want), "as str::parse read {text:?}");
        }
        for bad in [
            "", "ten", "1,5", "0x10", "--1", "1e", "e5", ".", "-.", "+-1", ".e1", "1e400", "inf",
            "NaN",
        ] {
            let e = f(bad).unwrap_err();
            assert_eq!((e.field, e.reason), ("x", format!("{bad:?} is not a number")));
        }
        assert_eq!(num::<u32>("n", " 100 "), Ok(100));
        assert_eq!(num::<u32>("n", "+7"), Ok(7));
        for bad in ["-1", "1.5", "1e2", "4294967296", "0x1"] {
            assert!(num::<u32>("n", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_train_order_names_its_model_as_the_api_bounds_names() {
        let mut t = OrderForm::new(JobKind::Train);
        t.dataset_bytes = Some(100);
        let train = |f: &OrderForm| match f.params(None) {
            Ok((JobParams::Train(p), _)) => Ok((p.name, p.symbol)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.field),
        };
        assert_eq!(train(&t), Ok((None, None)), "empty: the API's defaults");
        (t.name, t.symbol) = (" Bob's GPT ".into(), "BOB-1".into());
        assert_eq!(train(&t), Ok((Some("Bob's GPT".into()), Some("BOB-1".into()))));
        t.symbol = "BOB 1".into();
        assert_eq!(train(&t), Err("symbol"));
        (t.name, t.symbol) = ("n".repeat(65), String::new());
        assert_eq!(train(&t), Err("name"));
    }

    #[test]
    fn lora_is_offered_per_family_and_bounded_as_the_api_bounds_it() {
        assert_eq!(
            lora_modules("gpt2 1L/32d/2h ctx32 vocab320"),
            Some(&["c_attn", "c_proj", "c_fc"][..])
        );
        assert_eq!(
            lora_modules("qwen3 2L/64d/4h/2kv ffn128 ctx64 vocab300").map(|m| m.len()),
            Some(7)
        );
        assert_eq!(lora_modules("bert 12L"), None);
        let mut t = OrderForm::new(JobKind::Train).for_architecture("gpt2 1L/32d/2h ctx32");
        t.dataset_bytes = Some(10);
        // A full fine-tune carries no `lora` (its JSON, and so its quote, has no such key).
        let (JobParams::Train(p), _) = t.params(None).unwrap() else { panic!("a train job") };
        assert_eq!(p.lora, None);
        t.lora = true;
        let (JobParams::Train(p), _) = t.params(None).unwrap() else { panic!("a train job") };
        // α defaults to 2r; the family's attention projection is ticked.
        assert_eq!(p.lora, Some(LoraParams::new(8, &["c_attn"])));
        t.lora_alpha = "4".into();
        t.lora_dropout = "0.1".into();
        t.lora_targets = vec!["c_attn".into(), "c_fc".into()];
        let l = t.lora_params().unwrap().unwrap();
        assert_eq!((l.lora_alpha, l.lora_dropout, l.target_modules.len()), (4.0, 0.1, 2));
        for (field, f) in [
            ("lora.r", (|f| f.lora_r = "0".into()) as fn(&mut OrderForm)),
            ("lora.r", |f| f.lora_r = "eight".into()),
            ("lora.lora_alpha", |f| f.lora_alpha = "-1".into()),
            ("lora.lora_dropout", |f| f.lora_dropout = "0.9".into()),
            ("lora.target_modules", |f| f.lora_targets.clear()),
        ] {
            let mut bad = t.clone();
            f(&mut bad);
            assert_eq!(bad.params(None).unwrap_err().field, field);
        }
        let (params, _) = t.params(None).unwrap();
        assert_eq!(
            train_method(&params).unwrap(),
            "LoRA r 8, alpha 4, dropout 0.1, on c_attn, c_fc"
        );
        let llama = OrderForm::new(JobKind::Train).for_architecture("llama 2L/64d");
        assert_eq!(llama.lora_targets, ["q_proj", "v_proj"]);
    }

    #[test]
    fn a_baseline_needs_a_label_and_the_apis_bounds() {
        let mut e = OrderForm::new(JobKind::Evaluate);
        e.dataset_bytes = Some(10);
        e.baseline_perplexity = "30".into();
        assert_eq!(e.params(None).unwrap_err().field, "baseline.label");
        e.baseline_label = "GPT-2 small".into();
        let (p, _) = e.params(None).unwrap();
        let JobParams::Evaluate(ev) = p else { panic!("an evaluate job") };
        let b = ev.baseline.unwrap();
        assert_eq!((b.label.as_str(), b.perplexity), ("GPT-2 small", 30.0));
        e.baseline_perplexity = "0.5".into();
        assert_eq!(e.params(None).unwrap_err().field, "baseline.perplexity");
        e.baseline_perplexity = String::new();
        assert_eq!(e.params(None).unwrap_err().field, "baseline.perplexity");
    }

    #[test]
    fn results_give_the_loss_curve_and_the_evaluation() {
        let train = json!({"metrics": {"loss_curve": [[1, 9.5], [2, 8.25]]}});
        assert_eq!(loss_curve(&train), Some(vec![(1, 9.5), (2, 8.25)]));
        assert_eq!(loss_curve(&json!({"metrics": null})), None);
        assert_eq!(loss_curve(&json!({"metrics": {"loss_curve": [[1, "x"]]}})), None);
        let eval = json!({"report": {"perplexity": 40.5, "baseline_label": "b", "baseline_perplexity": 50.0}});
        assert_eq!(evaluation(&eval), Some((40.5, Some(("b".into(), 50.0)))));
        assert_eq!(
            evaluation(&json!({"report": {"perplexity": null}})),
            Some((f64::INFINITY, None))
        );
        assert_eq!(evaluation(&json!({"report": null})), None);
    }

    #[test]
    fn datasets_must_be_utf8_text() {
        assert!(check_dataset("a.txt", "héllo".as_bytes()).is_ok());
        assert_eq!(check_dataset("a.txt", b"").unwrap_err().reason, "a.txt is empty");
        let e = check_dataset("b.bin", b"ok\xff\xfe").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dataset: b.bin is not UTF-8 text (invalid byte at offset 2): the API takes plain text"
        );
    }

    #[test]
    fn receipts_and_typed_data_are_read_and_built() {
        assert_eq!(parse_receipt(&Value::Null), None);
        assert_eq!(parse_receipt(&json!({"blockNumber": "0x10", "status": "0x1"})), Some(Ok(16)));
        assert!(matches!(
            parse_receipt(&json!({"blockNumber": "0x10", "status": "0x0"})),
            Some(Err(_))
        ));
        let d = ReceiptDomain::new(31337, Address::repeat_byte(1));
        let td = read_typed_data(&d, "j-1", 100);
        let v: Value = serde_json::from_str(&td).unwrap();
        // Signed as `[signer, typed data as a JSON string]`, the text intact.
        let p: Value = serde_json::from_str(&sign_params(Address::repeat_byte(2), &td)).unwrap();
        assert_eq!(p, json!([format!("0x{}", "02".repeat(20)), td]));
        assert_eq!(v["message"]["action"], "read-result");
        assert_eq!(v["domain"]["chainId"], 31337);
        assert!(submit_typed_data(&d, b"{}").is_err());
        assert_eq!(nonce_of(&[0xab; 16]).len(), 2 + 32);
    }

    fn book() -> AddressBook {
        AddressBook {
            chain_id: 31337,
            operator: Address::repeat_byte(0x0a),
            lineage: Address::repeat_byte(0x11),
            ocean: Some(Address::repeat_byte(0x0c)),
            fixed_rate: Address::repeat_byte(0x0f),
            deployed_at_block: 0,
            market: None,
        }
    }

    const NFT: &str = "0x2222222222222222222222222222222222222222";
    const DT: &str = "0xdddddddddddddddddddddddddddddddddddddddd";

    fn terms() -> QuoteTerms {
        let mut f = OrderForm::new(JobKind::Infer);
        f.prompt = "Hi".into();
        let (params, dataset_bytes) = f.params(None).unwrap();
        QuoteTerms { params, dataset_bytes }
    }

    /// A quote as the API signs it for `t` (the fee's signature is not checked here: the
    /// chain checks it in startOrder).
    fn quote(t: &QuoteTerms, bind_model: Address) -> Quote {
        let b = book();
        let data = FeeBinding {
            chain_id: b.chain_id,
            deployment: b.lineage,
            model: bind_model,
            kind: t.params.kind(),
            dataset_bytes: t.dataset_bytes,
            terms: terms_hash(&t.params, t.dataset_bytes).unwrap(),
        }
        .encode();
        serde_json::from_value(json!({
            "model": NFT, "datatoken": DT, "kind": "infer", "service_index": 1,
            "datatokens": ONE_DATATOKEN.to_string(), "price": "2000000000000000000",
            "exchange_id": format!("0x{}", "ee".repeat(32)), "terms": t,
            "estimate": {"tokens": 1, "flops": 2, "checkpoint_bytes": 0, "seconds_gpu": 1, "seconds_cpu": 1},
            "breakdown": {"lines": [{"label": "compute", "formula": "1 × 1", "amount": "500"}], "total": "500"},
            "budget": {"tokens": 1, "flops": 2, "checkpoint_bytes": 0, "max_seconds": 60},
            "royalty": {"label": "none", "token": format!("{:#x}", Address::ZERO), "amount": "0", "recipient": format!("{:#x}", Address::ZERO)},
            "provider_fee": {
                "provider_fee_address": format!("{:#x}", b.operator),
                "provider_fee_token": format!("{:#x}", b.ocean.unwrap()),
                "provider_fee_amount": "500", "v": 27,
                "r": format!("0x{}", "01".repeat(32)), "s": format!("0x{}", "02".repeat(32)),
                "valid_until": 99, "provider_data": hex::encode_prefixed(&data)
            },
            "expires_at": 99
        }))
        .unwrap()
    }

    #[test]
    fn the_fee_must_pay_for_exactly_the_terms_asked() {
        let t = terms();
        let model: Address = NFT.parse().unwrap();
        let q = quote(&t, model);
        let fee = check_fee(&q, &book(), NFT, &t).unwrap();
        assert_eq!(fee.providerFeeAmount, U256::from(500u64));
        // Another model, other terms, another total, another token: refused.
        let other = quote(&t, Address::repeat_byte(0x33));
        assert!(check_fee(&other, &book(), NFT, &t).unwrap_err().contains("does not pay for"));
        let mut more = t.clone();
        if let JobParams::Infer(i) = &mut more.params {
            i.max_new_tokens += 1;
        }
        assert!(check_fee(&q, &book(), NFT, &more).is_err());
        let mut q2 = q.clone();
        q2.breakdown.total = Ocean(499);
        assert!(check_fee(&q2, &book(), NFT, &t).unwrap_err().contains("not the total"));
        let mut q3 = q.clone();
        q3.provider_fee.provider_fee_token = format!("{:#x}", Address::repeat_byte(9));
        assert!(
            check_fee(&q3, &book(), NFT, &t).unwrap_err().contains("not the deployment's OCEAN")
        );
    }

    #[test]
    fn the_order_is_the_clis_calls_in_the_clis_order() {
        let t = terms();
        let q = quote(&t, NFT.parse().unwrap());
        let b = book();
        let fee = check_fee(&q, &b, NFT, &t).unwrap();
        let me = Address::repeat_byte(0x77);
        let none = (Address::ZERO, Address::ZERO, U256::ZERO);
        let cost = U256::from(2_000u64);
        let poor = ChainState {
            datatokens: U256::ZERO,
            ocean: U256::ZERO,
            cost: Some(cost),
            royalty: none,
        };
        let e = plan(&q, &b, &fee, me, &poor).unwrap_err();
        assert_eq!(
            e,
            "Insufficient balance: this order needs 0.0000000000000025 OCEAN and your wallet holds 0 OCEAN."
        );
        let rich = ChainState { ocean: U256::from(2_500u64), ..poor.clone() };
        let txs = plan(&q, &b, &fee, me, &rich).unwrap();
        let selectors: Vec<[u8; 4]> = txs.iter().map(|t| t.data[..4].try_into().unwrap()).collect();
        assert_eq!(
            selectors,
            [
                approveCall::SELECTOR,
                buyDTCall::SELECTOR,
                approveCall::SELECTOR,
                startOrderCall::SELECTOR
            ]
        );
        let to: Vec<Address> = txs.iter().map(|t| t.to).collect();
        let dt: Address = DT.parse().unwrap();
        assert_eq!(to, [b.ocean.unwrap(), b.fixed_rate, b.ocean.unwrap(), dt]);
        let buy = buyDTCall::abi_decode(&txs[1].data).unwrap();
        assert_eq!(
            (buy.maxBaseTokenAmount, buy.datatokenAmount),
            (cost, U256::from(ONE_DATATOKEN))
        );
        let approve_fee = approveCall::abi_decode(&txs[2].data).unwrap();
        assert_eq!((approve_fee.spender, approve_fee.amount), (dt, U256::from(500u64)));
        let order = startOrderCall::abi_decode(&txs[3].data).unwrap();
        assert_eq!((order.consumer, order.serviceIndex), (me, U256::from(1u64)));
        assert_eq!(order._providerFee, fee);
        let p: Value = serde_json::from_str(&txs[0].params(me)).unwrap();
        assert_eq!(p[0]["from"].as_str().unwrap().parse::<Address>().unwrap(), me);
        assert_eq!(p[0]["to"].as_str().unwrap().parse::<Address>().unwrap(), txs[0].to);
        assert_eq!(p[0]["data"], hex::encode_prefixed(&txs[0].data));
        let c: Value = serde_json::from_str(&call_params(me, &[1, 2])).unwrap();
        assert_eq!(c, json!([{ "to": format!("{me:#x}"), "data": "0x0102" }, "latest"]));
        // Holding a datatoken: no purchase; a royalty in OCEAN is approved with the fee.
        let royalty = (Address::repeat_byte(0x44), b.ocean.unwrap(), U256::from(7u64));
        let holder = ChainState {
            datatokens: U256::from(ONE_DATATOKEN),
            ocean: U256::from(507u64),
            cost: None,
            royalty,
        };
        let txs = plan(&q, &b, &fee, me, &holder).unwrap();
        assert_eq!(txs.len(), 2);
        assert_eq!(approveCall::abi_decode(&txs[0].data).unwrap().amount, U256::from(507u64));
        // Neither held nor on sale.
        let mut unsold = q.clone();
        unsold.exchange_id = None;
        assert!(plan(&unsold, &b, &fee, me, &rich).unwrap_err().contains("not on sale"));
    }
}
