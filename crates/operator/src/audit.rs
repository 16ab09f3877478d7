//! The proof-of-learning audit (Jia et al., 2021), run by whoever holds the weights — the
//! operator, or an auditor it admits to its store. The receipt's committed checkpoint tree is
//! sampled (final segment, largest updates, seeded random ones, within a compute budget);
//! each sampled segment is re-run with the worker's own train loop from the stored start
//! checkpoint, with the parameters, dataset and input weights the receipt commits to, and
//! must reproduce the committed end checkpoint (weights and optimizer state) bit for bit.

use bytes::Bytes;
use posthuman_functions::prune::{PrunedMarker, pruned_marker_key};
use posthuman_receipts::{
    AuditPolicy, AuditReport, ReceiptDomain, Replay, Segment, SignedReceipt, VerifiedReceipt,
    audit_async, json_hash, plan_audit, receipt_params,
};
use posthuman_store::ObjectStore;
use posthuman_types::{Hash32, JobParams, JobSpec, TrainMetrics, TrainParams};
use posthuman_worker::WorkerConfig;
use posthuman_worker::model_io::{join, load_model};
use posthuman_worker::train;
use posthuman_worker::train::checkpoint::{self, CheckpointState, fingerprint};
use posthuman_worker::train::method::Method;

use crate::error::AuditError;

fn fail(e: impl std::fmt::Display) -> AuditError {
    AuditError::Failed(e.to_string())
}

fn io(e: impl std::fmt::Display) -> AuditError {
    AuditError::Store(e.to_string())
}

fn ckpt(prefix: &str, step: u32, file: &str) -> String {
    join(&format!("{prefix}/checkpoints/step-{step:06}"), file)
}

/// Where the queue keeps a job's spec (the embedded default's and the AWS stack's layout).
fn spec_key(job_id: &str) -> String {
    posthuman_functions::queue::spec_key(job_id)
}

/// The key train job `job_id`'s receipt must be signed by: the lineage contract's operator in
/// the block the job was committed on chain. Operators rotate (`ModelLineage.setOperator`), so
/// the deployment's first operator, or today's, is not it once a rotation happened.
pub async fn operator_of_commitment(
    chain: &posthuman_chain::Chain,
    job_id: &str,
) -> Result<alloy::primitives::Address, AuditError> {
    let c = chain.commitment(posthuman_receipts::canonical::job_id_hash(job_id)).await?;
    if c.state == posthuman_chain::lineage::JobState::Unknown {
        return Err(fail(format!("job {job_id} has no training commitment on chain")));
    }
    chain.operator_at(c.committed_at_block).await?.ok_or_else(|| {
        fail(format!("the lineage contract had no operator at block {}", c.committed_at_block))
    })
}

/// Audits train job `job_id` from the operator's `store` under `policy`; `operator` signed its
/// receipt ([`operator_of_commitment`]).
pub async fn audit_job(
    store: &dyn ObjectStore,
    job_id: &str,
    operator: alloy::primitives::Address,
    domain: &ReceiptDomain,
    policy: &AuditPolicy,
) -> Result<AuditReport, AuditError> {
    let spec: JobSpec =
        serde_json::from_slice(&store.get(&spec_key(job_id), 1 << 20).await.map_err(io)?)
            .map_err(fail)?;
    let JobParams::Train(p) = &spec.params else {
        return Err(AuditError::NotATrainJob(job_id.to_string()));
    };
    // Past the operator's audit window the checkpoints are gone: say so, with the dates,
    // rather than failing on the first missing object.
    let marker = pruned_marker_key(&spec.private_prefix);
    if store.head(&marker).await.map_err(io)?.is_some() {
        let b = store.get(&marker, 1 << 16).await.map_err(io)?;
        let m: PrunedMarker = serde_json::from_slice(&b).map_err(fail)?;
        return Err(AuditError::Pruned(m));
    }
    let public = |name: &str| format!("{}/{name}", spec.public_prefix);
    let signed: SignedReceipt =
        serde_json::from_slice(&store.get(&public("receipt.json"), 1 << 20).await.map_err(io)?)
            .map_err(fail)?;
    let receipt: VerifiedReceipt = signed.verify(operator, domain).map_err(fail)?;
    let metrics: TrainMetrics =
        serde_json::from_slice(&store.get(&public("metrics.json"), 16 << 20).await.map_err(io)?)
            .map_err(fail)?;

    // Replays use what the receipt commits to; refuse a spec that disagrees with it.
    let r = receipt.body();
    if let Some(job) = cpu_kernel(&r.worker_version) {
        let here = posthuman_gpt2::ops::cpu_matmul_kernel();
        if job != here {
            return Err(fail(format!(
                "the job trained with the {job} matrix kernel and this auditor runs {here}: \
                 their last bits differ, so a replay cannot match (amx-bf16x3: a CPU with \
                 AMX; gemm-f32: POSTHUMAN_AMX=0)"
            )));
        }
    }
    if json_hash(&receipt_params(&spec.params)) != r.params_hash {
        return Err(fail("the stored spec's parameters are not the ones the receipt commits to"));
    }
    let data_key = spec.dataset_key.clone().ok_or_else(|| fail("the train job has no dataset"))?;
    let data = store.get(&data_key, u64::MAX).await.map_err(io)?;
    let data_hash = posthuman_worker::data::dataset_hash(&data);
    // The receipt names the dataset salted with the buyer's salt, which the private spec
    // keeps; the replay's checkpoint fingerprint stays on the plain hash, as the worker's did.
    if posthuman_worker::data::public_hash(spec.salt.as_ref(), &data_hash) != r.input_data_hash {
        return Err(fail("the stored dataset is not the one the receipt commits to"));
    }
    let base = load_model(store, &spec.model_prefix, u64::MAX).await.map_err(fail)?;
    if base.weights_hash != r.input_weights_hash {
        return Err(fail("the stored input model is not the one the receipt commits to"));
    }

    let plan = plan_audit(
        &receipt,
        &metrics.checkpoint_hashes,
        &metrics.checkpoint_optimizer_hashes,
        None,
        policy,
    )
    .map_err(fail)?;
    let (cfg, input_hash) = (base.cfg.clone(), base.weights_hash);
    let fp = fingerprint(p, &data_hash, &input_hash);
    // How the job trained (a LoRA job's checkpoints hold its adapter over the input).
    let method = Method::new(&cfg, p, &base.weights, &input_hash).map_err(fail)?;
    let method = &method;
    let replay = |seg: Segment| {
        let (spec, p, cfg) = (spec.clone(), p.clone(), cfg.clone());
        async move {
            replay_segment(store, &spec, &p, &cfg, method, fp, input_hash, &seg)
                .await
                .map_err(|e| e.to_string())
        }
    };
    Ok(audit_async(&plan, |seg| replay(seg.clone())).await)
}

/// The CPU matrix kernel a CPU job's worker version names (`features cpu <kernel>`); receipts
/// from before kernels were named ran the `gemm` crate. None for a GPU job.
fn cpu_kernel(worker_version: &str) -> Option<String> {
    let features = worker_version.rsplit_once("features ")?.1.trim_end_matches(')');
    if features.split(", ").any(|f| f.starts_with("cuda")) {
        return None;
    }
    let cpu = features.split(", ").find_map(|f| f.strip_prefix("cpu"))?;
    let kernel = cpu.trim();
    Some(if kernel.is_empty() { "gemm-f32".to_string() } else { kernel.to_string() })
}

/// Re-runs one segment in a fresh prefix: the stored start checkpoint (its fingerprint set to
/// the committed configuration), resumed and stopped after the segment's last step.
#[allow(clippy::too_many_arguments)] // one call site: the job's parts, then the segment
async fn replay_segment(
    store: &dyn ObjectStore,
    spec: &JobSpec,
    p: &TrainParams,
    cfg: &posthuman_gpt2::family::AnyConfig,
    method: &Method,
    fp: Hash32,
    input_hash: Hash32,
    seg: &Segment,
) -> Result<Replay, AuditError> {
    let prefix = format!("audits/{}/segment-{}", spec.job_id, seg.index);
    for k in store.list(&prefix).await.map_err(io)? {
        store.delete(&k).await.map_err(io)?;
    }
    let s = JobSpec {
        job_id: format!("{}-audit", spec.job_id),
        private_prefix: prefix.clone(),
        public_prefix: format!("{prefix}/public"),
        ..spec.clone()
    };
    let (start_hash, start_optimizer) = if seg.index == 0 {
        (input_hash, None)
    } else {
        checkpoint::copy(store, &spec.private_prefix, &prefix, seg.start_step)
            .await
            .map_err(fail)?;
        let key = ckpt(&prefix, seg.start_step, "state.json");
        let mut st: CheckpointState =
            serde_json::from_slice(&store.get(&key, 1 << 20).await.map_err(io)?).map_err(fail)?;
        st.fingerprint = fp;
        store.put(&key, Bytes::from(serde_json::to_vec(&st).map_err(fail)?)).await.map_err(io)?;
        // What the replay starts from, hashed from the files themselves.
        let c =
            checkpoint::stored(store, &prefix, seg.start_step, cfg, method).await.map_err(fail)?;
        (c.weights, Some(c.optimizer))
    };
    let wc = WorkerConfig {
        progress_interval_secs: 60.0,
        stop_after_checkpoint: Some(seg.end_step),
        ..WorkerConfig::default()
    };
    let outcome = train::run(store, &wc, &s, p).await.map_err(fail)?;
    let end = outcome.end_checkpoint(store, &prefix, cfg, method).await.map_err(fail)?;
    for k in store.list(&prefix).await.map_err(io)? {
        store.delete(&k).await.map_err(io)?;
    }
    Ok(Replay { start_hash, start_optimizer, end_hash: end.weights, end_optimizer: end.optimizer })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use posthuman_store::LocalStore;

    /// Issue 13 §3: after the operator's audit window the checkpoints are pruned; an audit
    /// then says so (and when), instead of failing on a missing object.
    #[tokio::test]
    async fn an_audit_after_the_window_says_the_checkpoints_were_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let spec = JobSpec {
            job_id: "job-old".into(),
            model_prefix: "models/m1".into(),
            dataset_key: Some("jobs/job-old/dataset.txt".into()),
            private_prefix: "jobs/job-old/private".into(),
            public_prefix: "jobs/job-old/public".into(),
            params: JobParams::Train(TrainParams::new(20, 3e-4, 4, 32)),
            budget: None,
            salt: None,
        };
        store
            .put(&spec_key("job-old"), Bytes::from(serde_json::to_vec(&spec).unwrap()))
            .await
            .unwrap();
        let marker = PrunedMarker {
            job_id: "job-old".into(),
            finished_at: 1_000,
            pruned_at: 1_000 + 86_400,
            audit_window_secs: 86_400,
        };
        let key = pruned_marker_key(&spec.private_prefix);
        store.put(&key, Bytes::from(serde_json::to_vec(&marker).unwrap())).await.unwrap();
        let zero = alloy::primitives::Address::ZERO;
        let domain = ReceiptDomain::new(31337, zero);
        let err =
            audit_job(&store, "job-old", zero, &domain, &AuditPolicy::default()).await.unwrap_err();
        let AuditError::Pruned(m) = &err else { panic!("not a clear 'pruned' answer: {err:?}") };
        assert_eq!(m, &marker);
        let msg = err.to_string();
        assert!(msg.contains("pruned") && msg.contains("86400"), "{msg}");
        assert_eq!(err.exit_code(), 4, "unavailable, as the CLI's documented codes say");
    }

    #[test]
    fn the_receipts_cpu_kernel_is_read_from_its_worker_version() {
        let v = |f: &str| format!("posthuman-worker 0.1.0 (git abc; features {f})");
        assert_eq!(cpu_kernel(&v("cpu amx-bf16x3")).as_deref(), Some("amx-bf16x3"));
        assert_eq!(cpu_kernel(&v("cpu gemm-f32")).as_deref(), Some("gemm-f32"));
        // Receipts signed before the kernel was named ran the gemm crate.
        assert_eq!(cpu_kernel(&v("cpu")).as_deref(), Some("gemm-f32"));
        assert_eq!(cpu_kernel(&v("cuda, cpu gemm-f32")), None);
        assert_eq!(cpu_kernel(&v("cuda")), None);
        assert_eq!(cpu_kernel("something else"), None);
    }
}
