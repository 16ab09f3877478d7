//! `posthuman jobs …`: quote, order (spend one datatoken with `startOrder`), submit the
//! signed request, follow live progress, fetch the public result.

use std::time::{Duration, Instant};

use alloy::primitives::{B256, Bytes, U256};
use posthuman_chain::ProviderFee;
use posthuman_receipts::FeeBinding;
use posthuman_types::pricing::Ocean;
use posthuman_types::requests::JobRequest;
use posthuman_types::views::{JobResult, JobStateView, JobView, Quote, QuoteTerms};
use posthuman_types::{
    EvalParams, Hash32, InferParams, JobKind, JobParams, Sampling, TrainParams, job::Baseline,
};
use sha2::{Digest, Sha256};

use crate::args::{InferArgs, JobsCmd};
use crate::client::{expiry, nonce};
use crate::error::CliError;
use crate::output::Out;
use crate::session::Session;
use crate::{Config, units};

/// How long `follow` waits for a job before giving up (the job itself goes on).
const FOLLOW_LIMIT: Duration = Duration::from_secs(6 * 3600);
const POLL: Duration = Duration::from_millis(200);
/// How long the CLI waits for an order to reach the API's `min_confirmations` (a few blocks
/// on any chain; far longer means the chain or the RPC is stuck).
const CONFIRM_LIMIT: Duration = Duration::from_secs(30 * 60);
const CONFIRM_POLL: Duration = Duration::from_millis(500);

pub async fn run(cfg: &Config, out: &Out, cmd: JobsCmd) -> Result<(), CliError> {
    let s = Session::open(cfg).await?;
    let consent = if cfg.yes { Consent::Given } else { Consent::Ask };
    let (result, salt) = match cmd {
        JobsCmd::Train {
            nft,
            data,
            steps,
            lr,
            batch,
            context,
            warmup,
            checkpoint_every,
            seed,
            lora,
            name,
            symbol,
            detach,
        } => {
            let mut p = TrainParams::new(steps, lr, batch, context);
            p.name = name;
            p.symbol = symbol;
            p.warmup_steps = warmup;
            p.checkpoint_every = checkpoint_every.min(steps.max(1));
            p.seed = seed;
            p.lora = lora_params(&s, &nft, lora).await?;
            let dataset = read(&data)?;
            let (id, q, salt) =
                order_and_submit(&s, out, &nft, JobParams::Train(p), Some(dataset), consent)
                    .await?;
            if detach {
                out.emit(&serde_json::json!({ "job_id": id, "quote": q, "salt": salt }), || {
                    id.clone()
                });
                return Ok(());
            }
            (follow(&s, out, &id).await?, Some(salt))
        }
        JobsCmd::Infer(a) => {
            let nft = a.nft.clone();
            let params = JobParams::Infer(infer_params(a));
            let (id, _, salt) = order_and_submit(&s, out, &nft, params, None, consent).await?;
            (follow(&s, out, &id).await?, Some(salt))
        }
        JobsCmd::Evaluate { nft, data, context, stride, max_tokens, baseline } => {
            let baseline = match baseline {
                Some(b) => Some(parse_baseline(&s, &b).await?),
                None => None,
            };
            let p = EvalParams { context_len: context, stride, max_tokens, baseline };
            let data = Some(read(&data)?);
            let (id, _, salt) =
                order_and_submit(&s, out, &nft, JobParams::Evaluate(p), data, consent).await?;
            (follow(&s, out, &id).await?, Some(salt))
        }
        JobsCmd::List => {
            let vs = s.api.jobs_of(&s.me().to_string()).await?;
            out.emit(&vs, || {
                if vs.is_empty() {
                    return "no jobs yet: see `posthuman jobs train|infer|evaluate --help`".into();
                }
                vs.iter().map(status_line).collect::<Vec<_>>().join("\n")
            });
            return Ok(());
        }
        JobsCmd::Status { job } => {
            let v = s.api.job(&job).await?;
            out.emit(&v, || status_line(&v));
            return Ok(());
        }
        JobsCmd::Follow { job } => (follow(&s, out, &job).await?, None),
        JobsCmd::Result { job } => (s.api.result(&s.signer, &s.domain(), &job).await?, None),
    };
    match salt {
        // The JSON output keeps the salt next to the job id: the buyer's only copy.
        Some(salt) => {
            let mut v =
                serde_json::to_value(&result).map_err(|e| CliError::Internal(e.to_string()))?;
            if let Some(m) = v.as_object_mut() {
                m.insert("salt".into(), serde_json::to_value(salt).unwrap_or_default());
            }
            out.emit(&v, || render_result(&result))
        }
        None => out.emit(&result, || render_result(&result)),
    }
    match &result.job.state {
        JobStateView::Failed { reason, .. } => Err(CliError::JobFailed(reason.clone())),
        _ => Ok(()),
    }
}

fn read(p: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(p).map_err(|e| CliError::Usage(format!("cannot read {} ({e})", p.display())))
}

/// Sampling flags → validated-on-submit parameters.
pub fn infer_params(a: InferArgs) -> InferParams {
    InferParams {
        prompts: a.prompts,
        max_new_tokens: a.max_new_tokens,
        sampling: Sampling {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
        stop: a.stop,
        messages: a.messages,
    }
}

/// `LABEL=PPL`, or a model NFT whose best published evaluation becomes the baseline.
async fn parse_baseline(s: &Session, b: &str) -> Result<Baseline, CliError> {
    if let Some((label, ppl)) = b.split_once('=') {
        let perplexity = ppl.trim().parse().map_err(|_| {
            CliError::Usage(format!("--baseline LABEL=PERPLEXITY needs a number, not {ppl:?}"))
        })?;
        return Ok(Baseline { label: label.trim().to_string(), perplexity });
    }
    let m = s.api.model(b).await?;
    let e = m.evaluations.last().ok_or_else(|| {
        CliError::Usage(format!(
            "{} has no published evaluation to use as a baseline",
            m.card.symbol
        ))
    })?;
    Ok(Baseline {
        label: format!("{} ({})", m.card.symbol, m.card.weights_hash.short()),
        perplexity: e.perplexity,
    })
}

fn fee_of(q: &Quote) -> Result<ProviderFee, CliError> {
    let f = &q.provider_fee;
    let bad = |what: &str| CliError::Internal(format!("the API's quote has a malformed {what}"));
    Ok(ProviderFee {
        address: f.provider_fee_address.parse().map_err(|_| bad("fee address"))?,
        token: f.provider_fee_token.parse().map_err(|_| bad("fee token"))?,
        amount: f.provider_fee_amount.parse().map_err(|_| bad("fee amount"))?,
        v: f.v,
        r: f.r.parse::<B256>().map_err(|_| bad("signature"))?,
        s: f.s.parse::<B256>().map_err(|_| bad("signature"))?,
        valid_until: U256::from(f.valid_until),
        data: f.provider_data.parse::<Bytes>().map_err(|_| bad("provider data"))?,
    })
}

/// How the buyer accepts a quote: already (`--yes`, the demo), or asked on the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    Given,
    Ask,
}

/// One line per price component, the total, the royalty and the budget it buys.
pub fn describe_quote(q: &Quote) -> String {
    let mut s = format!("Quote for a {} job on {}:\n", q.kind, q.model);
    for l in &q.breakdown.lines {
        s += &format!("  {:<22} {:>24}   {}\n", l.label, l.amount.to_string(), l.formula);
    }
    s += &format!(
        "  {:<22} {:>24}   paid to the operator inside startOrder\n",
        "compute fee (total)",
        q.breakdown.total.to_string()
    );
    let royalty = q.royalty.amount.parse::<u128>().map(Ocean).unwrap_or_default();
    s += &format!(
        "  {:<22} {:>24}   {} (token {})\n",
        "royalty",
        royalty.to_string(),
        q.royalty.label,
        q.royalty.token
    );
    s += &format!(
        "  {:<22} {:>24}   spent by startOrder\n",
        "datatoken",
        format!("{} of {}", units::show(q.datatokens.parse().unwrap_or_default()), q.datatoken)
    );
    let e = &q.estimate;
    s += &format!(
        "  buys: {} tokens, {} FLOPs, {} checkpoint bytes (~{} s on the GPU, ~{} s on a CPU); wall-clock limit {} s",
        e.tokens, e.flops, e.checkpoint_bytes, e.seconds_gpu, e.seconds_cpu, q.budget.max_seconds
    );
    s
}

/// Asks "Pay … ? [y/N]" on a terminal; without one, only `--yes` accepts.
fn accept(q: &Quote, consent: Consent) -> Result<(), CliError> {
    use std::io::{BufRead, IsTerminal, Write};
    if consent == Consent::Given {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "a {} job costs {} in compute fees: pass --yes to accept the quote without a terminal",
            q.kind, q.breakdown.total
        )));
    }
    let mut err = std::io::stderr();
    let _ =
        write!(err, "Pay {} (+ 1 datatoken) for this {} job? [y/N] ", q.breakdown.total, q.kind);
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| CliError::Io(e.to_string()))?;
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::Usage("quote declined; nothing was paid".into()))
    }
}

/// The fee the API signed must be what the buyer accepted: OCEAN of this deployment, to the
/// operator the API advertises, the printed total, binding exactly these terms on this model
/// in this deployment.
fn check_quote_fee(
    s: &Session,
    nft: &str,
    terms: &QuoteTerms,
    q: &Quote,
    fee: &ProviderFee,
) -> Result<(), CliError> {
    let book = s.chain.book();
    let refuse = |what: String| {
        CliError::VerificationFailed(format!("the quote's provider fee {what}; nothing was paid"))
    };
    if fee.token != book.ocean {
        return Err(refuse(format!(
            "is in {:#x}, not the deployment's OCEAN {:#x}",
            fee.token, book.ocean
        )));
    }
    if fee.address != book.operator {
        return Err(refuse(format!(
            "goes to {:#x}, not the operator {:#x}",
            fee.address, book.operator
        )));
    }
    if fee.amount != U256::from(q.breakdown.total.0) {
        return Err(refuse(format!(
            "is {} base units, not the total of {}",
            fee.amount, q.breakdown.total
        )));
    }
    let mine = FeeBinding {
        chain_id: book.chain_id,
        deployment: book.lineage,
        model: crate::session::address("model", nft)?,
        kind: terms.params.kind(),
        dataset_bytes: terms.dataset_bytes,
        terms: posthuman_receipts::terms_hash(&terms.params, terms.dataset_bytes)
            .map_err(|e| CliError::Internal(e.to_string()))?,
    };
    if mine.matches(&fee.data) {
        Ok(())
    } else {
        Err(refuse(format!("does not bind these terms for a {} job on {nft}", q.kind)))
    }
}

/// Quote (the real terms) → show it and ask → check the datatoken balance and the fee →
/// `startOrder` → signed submit. Returns the job id, the quote and the request's salt: 32
/// fresh random bytes (a CSPRNG seeded from the OS) that the receipt's input hash is salted
/// with, so only their holder can prove which dataset or prompts the job ran on.
pub async fn order_and_submit(
    s: &Session,
    out: &Out,
    nft: &str,
    params: JobParams,
    dataset: Option<Vec<u8>>,
    consent: Consent,
) -> Result<(String, Quote, Hash32), CliError> {
    let kind = params.kind();
    let terms = QuoteTerms {
        params: params.clone(),
        dataset_bytes: dataset.as_ref().map_or(0, |d| d.len() as u64),
    };
    let q = s.api.quote_terms(nft, &terms).await?;
    let dt = crate::session::address("datatoken", &q.datatoken)?;
    let cost: U256 = q.datatokens.parse().map_err(|_| CliError::Internal("bad quote".into()))?;
    let held = s.chain.balance_of(dt, s.me()).await?;
    if held < cost {
        return Err(CliError::Usage(format!(
            "a {kind} job costs {} datatoken(s) of {nft} and you hold {}: buy with `posthuman market buy {nft}`",
            units::show(cost),
            units::show(held)
        )));
    }
    out.say(describe_quote(&q));
    accept(&q, consent)?;
    let fee = fee_of(&q)?;
    check_quote_fee(s, nft, &terms, &q, &fee)?;
    // Asked before paying: the API refuses an order with fewer confirmations.
    let need = s.api.chain_info().await?.min_confirmations;
    let sp = out.spinner(&format!("ordering a {kind} job (startOrder)"));
    let order = s.chain.start_order(s.me(), dt, s.me(), q.service_index, &fee).await;
    sp.finish_and_clear();
    let order = order?;
    wait_for_confirmations(s, out, order.tx_hash, need).await?;
    let salt = Hash32(rand::random::<[u8; 32]>());
    let req = JobRequest {
        model: q.model.clone(),
        order_tx: order.tx_hash.to_string(),
        consumer: s.me().to_string(),
        params,
        dataset_sha256: dataset.as_ref().map(|d| Hash32(Sha256::digest(d).into())),
        salt,
        nonce: nonce(),
        expires_at: expiry(),
        // Quoted for exactly this dataset.
        quoted_dataset_bytes: None,
    };
    let bar = out.bytes_bar("dataset");
    let sub = s.api.submit(&s.signer, &s.domain(), &req, dataset, &bar).await;
    bar.finish_and_clear();
    let sub = sub?;
    out.say(format!("{kind} job {} submitted (order {})", sub.job_id, order.tx_hash));
    out.say(format!(
        "salt {salt}: keep this salt to prove your data later \
         (posthuman verify {} --salt {salt} --data FILE, or --prompt TEXT per prompt); \
         it is stored nowhere else",
        sub.job_id
    ));
    Ok((sub.job_id, q, salt))
}

/// Waits (with a spinner) until the order `tx` has `need` confirmations, so the submit is
/// not refused as too early.
pub async fn wait_for_confirmations(
    s: &Session,
    out: &Out,
    tx: B256,
    need: u64,
) -> Result<(), CliError> {
    if need == 0 {
        return Ok(());
    }
    let start = Instant::now();
    let sp = out.spinner(&format!("waiting for {need} confirmations of order {tx}"));
    let result = loop {
        let have = match s.chain.confirmations(tx).await {
            Ok(h) => h.unwrap_or(0),
            Err(e) => break Err(CliError::from(e)),
        };
        if have >= need {
            break Ok(());
        }
        sp.set_message(format!("waiting for {need} confirmations of order {tx} ({have} so far)"));
        if start.elapsed() > CONFIRM_LIMIT {
            break Err(CliError::Unavailable(format!(
                "order {tx} has {have} of the {need} confirmations the API needs after {} min; \
                 the order is not used yet",
                CONFIRM_LIMIT.as_secs() / 60
            )));
        }
        tokio::time::sleep(CONFIRM_POLL).await;
    };
    sp.finish_and_clear();
    result
}

/// True once nothing more will happen to the job (a train job also needs its derived model
/// published and rewarded).
fn finished(v: &JobView) -> bool {
    match v.state {
        JobStateView::Failed { .. } => true,
        JobStateView::Succeeded => v.kind != JobKind::Train || v.completed,
        _ => false,
    }
}

/// Follows a job with a live progress bar until it ends, then fetches its result.
pub async fn follow(s: &Session, out: &Out, job_id: &str) -> Result<JobResult, CliError> {
    let start = Instant::now();
    let bar = out.bar(1, "queued");
    loop {
        let v = s.api.job(job_id).await?;
        if let Some(p) = &v.progress {
            bar.set_length(p.total.max(1));
            bar.set_position(p.done.min(p.total));
            bar.set_prefix(p.phase.clone());
            let loss = p.loss.map(|l| format!("loss {l:.3}  ")).unwrap_or_default();
            bar.set_message(format!("{loss}{:.0} tok/s", p.tokens_per_sec));
        }
        if finished(&v) {
            bar.finish_and_clear();
            break;
        }
        if start.elapsed() > FOLLOW_LIMIT {
            bar.abandon();
            return Err(CliError::Unavailable(format!(
                "job {job_id} is still running; follow it later with `posthuman jobs follow {job_id}`"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    s.api.result(&s.signer, &s.domain(), job_id).await
}

fn status_line(v: &JobView) -> String {
    let state = match &v.state {
        JobStateView::Queued => "queued".to_string(),
        JobStateView::Running => "running".to_string(),
        JobStateView::Succeeded if v.completed || v.kind != JobKind::Train => {
            "succeeded".to_string()
        }
        JobStateView::Succeeded => "succeeded (publishing the derived model)".to_string(),
        JobStateView::Failed { reason, order_reusable, .. } => format!(
            "failed: {reason}{}",
            if *order_reusable {
                " — the order was released: submit again with the same order tx"
            } else {
                ""
            }
        ),
    };
    let progress = v
        .progress
        .as_ref()
        .map(|p| format!(" [{} {}/{}]", p.phase, p.done, p.total))
        .unwrap_or_default();
    format!("{} {} on {}: {state}{progress}", v.job_id, v.kind, v.model)
}

/// Human rendering of a result: the outputs that matter per kind.
pub fn render_result(r: &JobResult) -> String {
    let mut s = status_line(&r.job);
    if let Some(m) = &r.metrics {
        s.push_str(&format!(
            "\n  final loss {}  tokens {}  {} tok/s\n  output weights {}",
            m["final_loss"].as_f64().map(|l| format!("{l:.4}")).unwrap_or_default(),
            m["tokens_trained"],
            m["tokens_per_sec"].as_f64().map(|t| format!("{t:.0}")).unwrap_or_default(),
            m["output_weights_hash"].as_str().unwrap_or("?")
        ));
    }
    if let Some(d) = &r.job.derived_model {
        s.push_str(&format!("\n  derived model {} (datatoken {})", d.nft, d.datatoken));
    }
    if let Some(cs) = r.completions.as_ref().and_then(|c| c.as_array()) {
        for c in cs {
            s.push_str(&format!(
                "\n  > {}{}",
                c["prompt"].as_str().unwrap_or(""),
                c["text"].as_str().unwrap_or("")
            ));
        }
    }
    if let Some(rep) = &r.report {
        s.push_str(&format!(
            "\n  perplexity {:.3} over {} tokens",
            rep["perplexity"].as_f64().unwrap_or(f64::NAN),
            rep["tokens_scored"]
        ));
        if let Some(b) = rep["baseline_perplexity"].as_f64() {
            s.push_str(&format!(" (baseline {b:.3})"));
        }
    }
    if let Some(h) = &r.job.receipt_hash {
        s.push_str(&format!("\n  receipt {h}"));
    }
    s
}

/// The LoRA settings of `--lora-*`, if `--lora-rank` was given; without `--lora-target`, the
/// attention projections of the model's family (read from its card's architecture).
async fn lora_params(
    s: &Session,
    nft: &str,
    a: crate::args::LoraArgs,
) -> Result<Option<posthuman_types::LoraParams>, CliError> {
    let Some(r) = a.lora_rank else { return Ok(None) };
    let target_modules = if a.lora_target.is_empty() {
        let m = s.api.model(nft).await?;
        default_lora_targets(&m.card.architecture).iter().map(|t| t.to_string()).collect()
    } else {
        a.lora_target
    };
    Ok(Some(posthuman_types::LoraParams {
        r,
        lora_alpha: a.lora_alpha.unwrap_or(2.0 * f64::from(r)),
        lora_dropout: a.lora_dropout,
        target_modules,
    }))
}

/// LoRA's usual targets for a family, by the architecture line's first word.
fn default_lora_targets(architecture: &str) -> &'static [&'static str] {
    match architecture.split_whitespace().next() {
        Some("gpt2") => &["c_attn"],
        _ => &["q_proj", "v_proj"],
    }
}
