//! Job completion: the local queue's callback and the Batch state-change Lambda both call
//! [`on_job_done`].
//!
//! Delivery is at least once, so every step is idempotent and resumable, keyed by the job id:
//! 1. the operator-signed receipt is created once (`put_if_absent` of `receipt.json`) and
//!    read back, so a retry signs nothing new and commits the same hash;
//! 2. train jobs then follow the lineage contract's own per-job state machine, which makes
//!    each transaction happen once: `commitTraining` (commit-before-reveal: receipt hash and
//!    output weights hash go on chain before the model exists), `createChild` (the derived
//!    model's NFT + datatoken), `recordDerivation` (lineage, rewards minted);
//! 3. the catalogue entry of the derived model and the job record are upserts.
//!
//! A crash between any two steps resumes at the first step not yet done on the next
//! delivery. A failed job is marked failed with the worker's reason. Its order is released
//! unless the exit code says the buyer's input caused the failure
//! ([`posthuman_types::exit::classify`]): then the order is consumed, since the same request
//! would fail the same way. A released order lets the buyer submit a new signed request
//! naming it (the API's retry policy; no refund transaction is needed because no datatoken was
//! consumed twice).

use alloy::primitives::{Address, B256};
use bytes::Bytes;
use posthuman_chain::lineage::JobState as ChainJobState;
use posthuman_receipts::{Receipt, Signed};
use posthuman_types::{
    EvalReport, Hash32, JobKind, JobParams, LoraOutput, ModelCard, TrainMetrics, exit,
};

use super::chain_err;
use super::models::lower;
use crate::catalogue::{ChildAsset, JobPhase, JobRecord, ModelRecord, now_secs};
use crate::deps::Deps;
use crate::error::ApiError;
use crate::queue::{JobDone, QueueState};

/// Handles one completion (idempotent). Errors mean "deliver again later".
pub async fn on_job_done(deps: &Deps, done: &JobDone) -> Result<(), ApiError> {
    let Some(mut job) = deps.catalogue.get_job(&done.job_id).await? else {
        tracing::warn!(job_id = %done.job_id, "completion for an unknown job; ignored");
        return Ok(());
    };
    // Done, or failed (released or consumed): a duplicate or late event changes nothing.
    if job.completion.done || job.order_released || matches!(job.phase, JobPhase::Failed { .. }) {
        return Ok(());
    }
    match &done.state {
        QueueState::Failed { reason, exit_code } => fail(deps, &mut job, reason, *exit_code).await,
        QueueState::Succeeded => succeed(deps, &mut job).await,
        other => Err(ApiError::Internal(format!("completion with a non-terminal state {other:?}"))),
    }
}

async fn read_public(deps: &Deps, job: &JobRecord, name: &str) -> Result<Option<Bytes>, ApiError> {
    match deps.store.get(&format!("{}/{name}", job.spec.public_prefix), 16 << 20).await {
        Ok(b) => Ok(Some(b)),
        Err(posthuman_store::StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn fail(
    deps: &Deps,
    job: &mut JobRecord,
    queue_reason: &str,
    exit_code: Option<i32>,
) -> Result<(), ApiError> {
    // The worker's own sanitized sentence beats the queue's generic one.
    let reason = match read_public(deps, job, "error.json").await? {
        Some(b) => serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| queue_reason.to_string()),
        None => queue_reason.to_string(),
    };
    // A failure caused by the buyer's input would fail again on the same request, and the
    // compute was spent: the order is consumed. Any other failure releases it.
    let class = exit::classify(exit_code);
    if class.releases_order() {
        let released = deps.catalogue.release_order(&order_key_of(job)?, &job.job_id).await?;
        tracing::info!(job_id = %job.job_id, released, "job failed; order released for a retry");
    } else {
        tracing::info!(job_id = %job.job_id, ?exit_code, "job failed on its input; order consumed");
    }
    job.phase = JobPhase::Failed { reason, exit_code };
    job.order_released = class.releases_order();
    job.updated_at = now_secs();
    deps.catalogue.put_job(job).await?;
    Ok(())
}

/// The order-ledger key the order check claimed (tx hash and its OrderStarted log index).
fn order_key_of(job: &JobRecord) -> Result<String, ApiError> {
    Ok(format!("{}-{}", job.order_tx, job.order_log_index))
}

async fn succeed(deps: &Deps, job: &mut JobRecord) -> Result<(), ApiError> {
    let model = deps.catalogue.get_model(&job.model).await?.ok_or_else(|| {
        ApiError::Internal(format!("job {} names unknown model {}", job.job_id, job.model))
    })?;
    let output_name = match job.kind {
        JobKind::Train => "metrics.json",
        JobKind::Infer => "completions.json",
        JobKind::Evaluate => "report.json",
    };
    let output = read_public(deps, job, output_name).await?.ok_or_else(|| {
        ApiError::Internal(format!("job {} succeeded without {output_name}", job.job_id))
    })?;
    // Defence in depth behind the worker's own NO_TRAINING check: weights equal to the
    // parent's are a clone, not a derivation. Nothing is signed or published; the failure
    // is the buyer's input (hyperparameters that cannot move f32 weights), so the order is
    // consumed.
    let mut lora = None;
    if job.kind == JobKind::Train {
        let m: TrainMetrics = serde_json::from_slice(&output)
            .map_err(|e| ApiError::Internal(format!("metrics.json: {e}")))?;
        lora = m.lora;
        if m.output_weights_hash == model.card.weights_hash {
            let reason = format!(
                "the trained weights are identical to its parent's ({}): no derivation to \
                 publish",
                model.card.weights_hash
            );
            return fail(deps, job, &reason, Some(exit::NO_TRAINING)).await;
        }
    }
    let signed = receipt_once(deps, job, &model, &output).await?;
    let domain = crate::auth::domain(deps);
    let receipt_hash = signed.body.receipt_hash(&domain);
    job.receipt_hash = Some(receipt_hash);
    job.input_data_hash = Some(signed.body.input_data_hash);
    if job.kind == JobKind::Evaluate {
        job.perplexity = serde_json::from_slice::<EvalReport>(&output).ok().map(|r| r.perplexity);
    }
    if job.kind == JobKind::Train {
        derive_model(deps, job, &model, &signed.body, receipt_hash, lora).await?;
    }
    if let JobParams::Infer(p) = &job.spec.params {
        attest_once(deps, job, &model, p, &output).await?;
    }
    job.phase = JobPhase::Succeeded;
    job.completion.done = true;
    job.updated_at = now_secs();
    deps.catalogue.put_job(job).await?;
    Ok(())
}

/// Builds, signs and stores the job's receipt exactly once; returns the stored one.
async fn receipt_once(
    deps: &Deps,
    job: &JobRecord,
    model: &ModelRecord,
    output: &Bytes,
) -> Result<Signed<Receipt>, ApiError> {
    let key = format!("{}/receipt.json", job.spec.public_prefix);
    if deps.store.head(&key).await?.is_none() {
        let receipt = build_receipt(deps, job, model, output)?;
        let signed = posthuman_receipts::sign(receipt, &deps.operator, &crate::auth::domain(deps))
            .map_err(|e| ApiError::Internal(format!("receipt: {e}")))?;
        let body = serde_json::to_vec_pretty(&signed).map_err(ApiError::internal)?;
        deps.store.put_if_absent(&key, Bytes::from(body)).await?;
    }
    let stored = deps.store.get(&key, 1 << 20).await?;
    serde_json::from_slice(&stored).map_err(|e| ApiError::Internal(format!("stored receipt: {e}")))
}

/// Signs one attestation per completion of an infer job — (weights hash, prompt hash,
/// output hash, sampling parameters, seed) — so a buyer can prove what the model answered;
/// stored once as the public `attestations.json`.
async fn attest_once(
    deps: &Deps,
    job: &JobRecord,
    model: &ModelRecord,
    params: &posthuman_types::InferParams,
    completions: &Bytes,
) -> Result<(), ApiError> {
    let key = format!("{}/attestations.json", job.spec.public_prefix);
    if deps.store.head(&key).await?.is_some() {
        return Ok(());
    }
    let completions: Vec<posthuman_types::Completion> = serde_json::from_slice(completions)
        .map_err(|e| ApiError::Internal(format!("completions.json: {e}")))?;
    let domain = crate::auth::domain(deps);
    let mut signed = Vec::with_capacity(completions.len());
    for (i, c) in completions.iter().enumerate() {
        let index = u32::try_from(i).map_err(ApiError::internal)?;
        let a = posthuman_receipts::Attestation::new(
            &job.job_id,
            index,
            model.card.weights_hash,
            params,
            &c.prompt,
            &c.text,
        );
        signed.push(
            posthuman_receipts::sign(a, &deps.operator, &domain)
                .map_err(|e| ApiError::Internal(format!("attestation: {e}")))?,
        );
    }
    let body = serde_json::to_vec_pretty(&signed).map_err(ApiError::internal)?;
    deps.store.put_if_absent(&key, Bytes::from(body)).await?;
    Ok(())
}

fn parse_addr(s: &str) -> Result<Address, ApiError> {
    s.parse().map_err(|_| ApiError::Internal(format!("bad stored address {s}")))
}

fn build_receipt(
    deps: &Deps,
    job: &JobRecord,
    model: &ModelRecord,
    output: &Bytes,
) -> Result<Receipt, ApiError> {
    let params = posthuman_receipts::receipt_params(&job.spec.params);
    let (input_data_hash, seed, checkpoint_root, checkpoint_interval, output_weights_hash) =
        match &job.spec.params {
            JobParams::Train(t) => {
                let m: TrainMetrics = serde_json::from_slice(output)
                    .map_err(|e| ApiError::Internal(format!("metrics.json: {e}")))?;
                if m.input_weights_hash != model.card.weights_hash {
                    return Err(ApiError::Internal(format!(
                        "job {} trained from weights {} but the model commits to {}",
                        job.job_id, m.input_weights_hash, model.card.weights_hash
                    )));
                }
                (
                    m.dataset_hash,
                    t.seed,
                    m.checkpoint_root,
                    m.checkpoint_every,
                    m.output_weights_hash,
                )
            }
            JobParams::Evaluate(_) => {
                let r: EvalReport = serde_json::from_slice(output)
                    .map_err(|e| ApiError::Internal(format!("report.json: {e}")))?;
                (r.dataset_hash, 0, Hash32::ZERO, 0, Hash32::ZERO)
            }
            // The worker salts the dataset hash in the public outputs above; the prompts'
            // (or the chat's) hash is ours to salt (the spec keeps the buyer's salt, never
            // published).
            JobParams::Infer(i) => (
                {
                    let h = if i.messages.is_empty() {
                        posthuman_receipts::prompts_hash(&i.prompts)
                    } else {
                        posthuman_receipts::messages_hash(&i.messages)
                    };
                    match &job.spec.salt {
                        Some(s) => posthuman_receipts::salted_hash(s, &h),
                        None => h,
                    }
                },
                i.sampling.seed,
                Hash32::ZERO,
                0,
                Hash32::ZERO,
            ),
        };
    let order_tx: B256 =
        job.order_tx.parse().map_err(|_| ApiError::Internal("bad stored order tx".into()))?;
    Ok(Receipt {
        job_id: job.job_id.clone(),
        kind: job.kind,
        model: parse_addr(&model.card.nft)?,
        datatoken: parse_addr(&model.card.datatoken)?,
        order_tx: Hash32(order_tx.0),
        consumer: parse_addr(&job.consumer)?,
        input_weights_hash: model.card.weights_hash,
        input_data_hash,
        worker_version: deps.cfg.worker_version.clone(),
        params_hash: posthuman_receipts::json_hash(&params),
        params,
        seed,
        checkpoint_root,
        checkpoint_interval,
        output_weights_hash,
        output_hash: posthuman_receipts::bytes_hash(output),
        started_at: job.created_at,
        ended_at: now_secs().max(job.created_at),
    })
}

/// Commit, create the child, record the derivation: each at most once, resuming from the
/// lineage contract's state for this job.
async fn derive_model(
    deps: &Deps,
    job: &mut JobRecord,
    parent: &ModelRecord,
    receipt: &Receipt,
    receipt_hash: Hash32,
    lora: Option<LoraOutput>,
) -> Result<(), ApiError> {
    let chain = &deps.chain;
    let jid = posthuman_receipts::job_id_hash(&job.job_id);
    let parent_nft = parse_addr(&parent.card.nft)?;
    let trainer = parse_addr(&job.consumer)?;
    let mut state = chain.commitment(jid).await.map_err(chain_err)?.state;
    if state == ChainJobState::Unknown {
        let r = chain
            .commit_training(jid, parent_nft, trainer, receipt.output_weights_hash, receipt_hash)
            .await
            .map_err(chain_err)?;
        job.completion.commit_tx = Some(format!("{:#x}", r.transaction_hash));
        deps.catalogue.put_job(job).await?;
        state = ChainJobState::Committed;
    }
    let (child_name, child_symbol) = match &job.completion.child_names {
        Some(names) => names.clone(),
        None => {
            let names = child_names(deps, parent, job).await?;
            job.completion.child_names = Some(names.clone());
            deps.catalogue.put_job(job).await?;
            names
        }
    };
    if state == ChainJobState::Committed {
        chain.create_child(jid, &child_name, &child_symbol, "").await.map_err(chain_err)?;
    }
    let commitment = chain.commitment(jid).await.map_err(chain_err)?;
    let child_nft = commitment
        .child_nft
        .ok_or_else(|| ApiError::Internal(format!("job {} has no child on chain", job.job_id)))?;
    let entry = chain.model(child_nft).await.map_err(chain_err)?.ok_or_else(|| {
        ApiError::Internal(format!("child {child_nft} unknown to the lineage contract"))
    })?;
    job.completion.child = Some(ChildAsset {
        nft: lower(child_nft),
        datatoken: lower(entry.datatoken),
        exchange_id: None,
    });
    deps.catalogue.put_job(job).await?;
    if commitment.state == ChainJobState::ChildCreated {
        let d =
            chain.record_derivation(jid, child_nft, entry.datatoken).await.map_err(chain_err)?;
        job.completion.derivation_tx = Some(format!("{:#x}", d.tx_hash));
    }
    let child = ModelRecord {
        card: ModelCard {
            nft: lower(child_nft),
            datatoken: lower(entry.datatoken),
            name: child_name,
            symbol: child_symbol,
            description: match &lora {
                Some(l) => format!(
                    "{} with a LoRA adapter (r {}, alpha {}, on {}) trained by {} (job {})",
                    parent.card.name,
                    l.r,
                    l.lora_alpha,
                    l.target_modules.join(", "),
                    job.consumer,
                    job.job_id
                ),
                None => format!(
                    "{} fine-tuned by {} (job {})",
                    parent.card.name, job.consumer, job.job_id
                ),
            },
            owner: job.consumer.clone(),
            weights_hash: receipt.output_weights_hash,
            parent: Some(parent.card.nft.clone()),
            trainer: Some(job.consumer.clone()),
            architecture: parent.card.architecture.clone(),
            parameters: parent.card.parameters,
            exchange_id: None,
            price: None,
            reward_scheme: parent.card.reward_scheme.clone(),
            lora,
            tags: vec![],
            // A derivative stays under its root's licence (Llama's terms bind a Llama
            // fine-tune), as the root's owner has it now.
            license: super::models::root_license(deps, parent).await?,
        },
        storage_prefix: job.spec.private_prefix.clone(),
        created_at: job.created_at.max(parent.created_at + 1),
        source_job: Some(job.job_id.clone()),
        receipt_hash: Some(receipt_hash),
        n_positions: parent.n_positions,
        featured: vec![],
        card_updated_at: None,
        ddo_pending: false,
    };
    // The child's DDO, once (a resumed completion finds it set): the lineage contract owns
    // the NFT and forwards the operator's setMetaData.
    if !chain.metadata(child_nft).await.map_err(chain_err)?.has_metadata {
        let ddo = super::models::model_ddo(deps, &child)?;
        chain.set_child_metadata(&ddo).await.map_err(chain_err)?;
    }
    deps.catalogue.put_model(&child).await?;
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// How many derivations a parent may have counted for a default name (beyond it, N stops
/// growing and the symbol still differs by the job id).
const MAX_COUNTED_CHILDREN: usize = 100_000;

/// The derived model's name and datatoken symbol, the same on chain and in the catalogue: the
/// trainer's (validated with the request), else "<parent name> · fine-tune N" and
/// [`default_symbol`], N being the job's number among the parent's derivations, claimed in
/// the catalogue: counting the children already published gave two sibling jobs finishing
/// at once the same N (a child enters the catalogue only at the end of its completion).
/// Called once per job by the completion, which keeps the result; public for its tests.
pub async fn child_names(
    deps: &Deps,
    parent: &ModelRecord,
    job: &JobRecord,
) -> Result<(String, String), ApiError> {
    let (name, symbol, lora) = match &job.spec.params {
        JobParams::Train(t) => (t.name.clone(), t.symbol.clone(), t.lora.is_some()),
        _ => (None, None, false),
    };
    let n = if name.is_none() || symbol.is_none() {
        // Derivations made before numbers were claimed hold 1..=their count: claims start
        // above them.
        let before = deps.catalogue.children(&parent.card.nft, MAX_COUNTED_CHILDREN).await?.len();
        deps.catalogue.claim_child_ordinal(&parent.card.nft, &job.job_id, before as u64).await?
    } else {
        0
    };
    let how = if lora { "LoRA fine-tune" } else { "fine-tune" };
    let name = name.unwrap_or_else(|| format!("{} · {how} {n}", truncate(&parent.card.name, 48)));
    let symbol = symbol.unwrap_or_else(|| {
        default_symbol(&parent.card.symbol, parent.card.parent.is_none(), n, &job.job_id)
    });
    Ok((name, symbol))
}

/// "<parent symbol>-FT<N>" for a root's N-th derivation, "<parent symbol>-<N>" below (so the
/// symbol spells the path: AGPT-FT2-1 is the first derivation of AGPT's second); the parent's
/// symbol reduced to the characters a symbol may hold. When that passes the symbol limit, the
/// parent's first characters and the job id's last six keep it short and distinct.
fn default_symbol(parent_symbol: &str, parent_is_root: bool, n: u64, job_id: &str) -> String {
    let mut stem: String =
        parent_symbol.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    if stem.is_empty() {
        stem = "M".into();
    }
    let symbol = if parent_is_root { format!("{stem}-FT{n}") } else { format!("{stem}-{n}") };
    if symbol.len() <= posthuman_types::job::limits::MAX_SYMBOL_BYTES {
        return symbol;
    }
    let short: String = job_id
        .chars()
        .rev()
        .filter(char::is_ascii_alphanumeric)
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{}-{}", truncate(&stem, 8), short.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::default_symbol;

    #[test]
    fn default_symbols_spell_the_path_and_stay_valid() {
        assert_eq!(default_symbol("AGPT", true, 2, "j-1"), "AGPT-FT2");
        assert_eq!(default_symbol("AGPT-FT2", false, 1, "j-1"), "AGPT-FT2-1");
        // Too long for a symbol: the parent's first characters and the job id's last six.
        assert_eq!(default_symbol("AGPT-FT2-1-12-3", false, 40, "j-b9dba0ef12"), "AGPT-FT2-A0EF12");
        assert_eq!(default_symbol("Ω ω", true, 1, "j-1"), "M-FT1");
        for s in [
            default_symbol("AGPT", true, 99_999, "j-x"),
            default_symbol("AGPT-FT2-1-12-3", false, 40, "j-b9dba0ef12"),
            default_symbol("Ω ω", true, 1, "j-1"),
            default_symbol("ABCDEFGHIJKLMNOP", true, 7, "j-0123456789abcdef"),
        ] {
            posthuman_types::job::validate_symbol("symbol", &s).unwrap();
        }
    }
}
