//! Training checkpoints under the PRIVATE prefix, and resuming from the latest one.
//!
//! Checkpoint after step `s` lives under `<private_prefix>/checkpoints/step-<s:06>/`:
//! the trained tensors (`model.safetensors` in HF layout, or a LoRA job's
//! `adapter_model.safetensors`, see [`crate::train::method`]), `optimizer.safetensors` (AdamW
//! moments and counter) and `state.json`, written last, which makes the checkpoint valid. The state names the weights'
//! and the optimizer state's canonical hashes (the Merkle leaf, [`crate::merkle`]); a resume
//! checks both files against them before using either. Batch order and dropout
//! masks are pure functions of `(seed, step)` (see [`crate::data`]), so the step number is
//! the whole data cursor and RNG state. A checkpoint is only resumed by the job that wrote
//! it: `state.json` carries a fingerprint of the hyperparameters, dataset hash and input
//! weights hash.

use std::collections::BTreeMap;

use bytes::Bytes;
use candle_core::Tensor;
use posthuman_gpt2::family::{AnyConfig, AnyWeights};
use posthuman_gpt2::lora::LoraAdapter;
use posthuman_gpt2::{AdamW, optimizer_state_hash};
use posthuman_store::{ObjectStore, StoreError};
use posthuman_types::{Hash32, TrainParams};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::WorkerError;
use crate::merkle::Checkpoint;
use crate::model_io::join;
use crate::train::method::Method;

/// `state.json`'s format (v2: optimizer states are committed as Merkle leaves).
pub const FORMAT: &str = "posthuman-train-ckpt-v2";
const STATE: &str = "state.json";
const MODEL: &str = "model.safetensors";
const OPTIM: &str = "optimizer.safetensors";
/// Bound for reading a checkpoint's state (the per-step loss list of a 100k-step run).
const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// What a checkpoint records besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: String,
    /// Identifies the job configuration this checkpoint belongs to.
    pub fingerprint: Hash32,
    /// Optimizer steps completed.
    pub step: u32,
    /// Canonical weights hash after `step`.
    pub weights_hash: Hash32,
    /// Canonical optimizer-state hash after `step` ([`AdamW::state_hash`]).
    pub optimizer_hash: Hash32,
    pub tokens_trained: u64,
    /// Mean loss of every step so far (the loss curve is downsampled from it).
    pub losses: Vec<f64>,
    /// Every checkpoint so far, this one included (the Merkle leaves).
    pub checkpoints: Vec<Checkpoint>,
}

/// The fingerprint binding checkpoints to one job configuration.
pub fn fingerprint(params: &TrainParams, dataset: &Hash32, input_weights: &Hash32) -> Hash32 {
    let mut d = Sha256::new();
    d.update(FORMAT.as_bytes());
    // serde_json writes struct fields in declaration order: a stable encoding.
    d.update(serde_json::to_vec(params).unwrap_or_default());
    d.update(dataset.0);
    d.update(input_weights.0);
    Hash32(d.finalize().into())
}

fn dir(private_prefix: &str, step: u32) -> String {
    join(&join(private_prefix, "checkpoints"), &format!("step-{step:06}"))
}

/// A checkpoint's trained tensors: the whole model (full fine-tune) or the LoRA adapter.
pub enum Trained<'a> {
    Weights(&'a AnyWeights),
    Adapter(&'a LoraAdapter),
}

/// Writes the checkpoint after `state.step` (whose hashes the caller has set); `state.json`
/// goes last.
pub async fn save(
    store: &dyn ObjectStore,
    private_prefix: &str,
    trained: Trained<'_>,
    opt: &AdamW,
    state: &CheckpointState,
) -> Result<(), WorkerError> {
    let d = dir(private_prefix, state.step);
    let (name, bytes) = match trained {
        Trained::Weights(w) => (MODEL, w.to_safetensors_bytes().map_err(WorkerError::internal)?),
        Trained::Adapter(a) => (
            posthuman_gpt2::lora::ADAPTER_WEIGHTS_NAME,
            a.safetensors_bytes().map_err(WorkerError::internal)?,
        ),
    };
    store.put(&join(&d, name), Bytes::from(bytes)).await?;
    let o = opt.state_bytes().map_err(WorkerError::internal)?;
    store.put(&join(&d, OPTIM), Bytes::from(o)).await?;
    let s = serde_json::to_vec(state).map_err(WorkerError::internal)?;
    store.put(&join(&d, STATE), Bytes::from(s)).await?;
    Ok(())
}

/// A checkpoint to resume from: its state and trained tensors under the optimizer's variable
/// names (the optimizer is restored in place).
#[derive(Debug)]
pub struct Resumed {
    pub state: CheckpointState,
    pub tensors: BTreeMap<String, Tensor>,
}

/// Finds the latest complete checkpoint of this job (same fingerprint) and restores the
/// optimizer from it. Checkpoints of other jobs or damaged ones are skipped.
pub async fn latest(
    store: &dyn ObjectStore,
    private_prefix: &str,
    fp: &Hash32,
    cfg: &AnyConfig,
    method: &Method,
    opt: &mut AdamW,
) -> Result<Option<Resumed>, WorkerError> {
    let keys = match store.list(&join(private_prefix, "checkpoints")).await {
        Ok(k) => k,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut states: Vec<&String> = keys.iter().filter(|k| k.ends_with(STATE)).collect();
    states.sort();
    for key in states.into_iter().rev() {
        match try_load(store, key, fp, cfg, method, opt).await {
            Ok(Some(r)) => return Ok(Some(r)),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "skipping an unusable checkpoint"),
        }
    }
    Ok(None)
}

async fn try_load(
    store: &dyn ObjectStore,
    state_key: &str,
    fp: &Hash32,
    cfg: &AnyConfig,
    method: &Method,
    opt: &mut AdamW,
) -> Result<Option<Resumed>, WorkerError> {
    let state: CheckpointState =
        serde_json::from_slice(&store.get(state_key, MAX_STATE_BYTES).await?)
            .map_err(|e| WorkerError::Internal(format!("checkpoint state unreadable: {e}")))?;
    if state.format != FORMAT || state.fingerprint != *fp {
        return Ok(None);
    }
    let d = state_key.trim_end_matches(STATE).trim_end_matches('/');
    let w = store.get(&join(d, method.checkpoint_file()), u64::MAX).await?;
    let o = store.get(&join(d, OPTIM), u64::MAX).await?;
    let oh = optimizer_state_hash(&o).map_err(WorkerError::internal)?;
    let (tensors, wh, sh) = method.load_checkpoint(cfg, &w, &oh)?;
    if wh != state.weights_hash {
        return Err(WorkerError::Internal("checkpoint weights do not match their hash".into()));
    }
    if sh != state.optimizer_hash {
        return Err(WorkerError::Internal("checkpoint optimizer state does not match".into()));
    }
    opt.load_state_bytes(&o).map_err(WorkerError::internal)?;
    Ok(Some(Resumed { state, tensors }))
}

/// The hashes of the checkpoint stored after `step` under `private_prefix`, computed from its
/// files (not read from its `state.json`): what an auditor compares with the commitment.
pub async fn stored(
    store: &dyn ObjectStore,
    private_prefix: &str,
    step: u32,
    cfg: &AnyConfig,
    method: &Method,
) -> Result<Checkpoint, WorkerError> {
    let d = dir(private_prefix, step);
    let w = store.get(&join(&d, method.checkpoint_file()), u64::MAX).await?;
    let o = store.get(&join(&d, OPTIM), u64::MAX).await?;
    let (weights, optimizer) = method.leaf_of_files(cfg, &w, &o)?;
    Ok(Checkpoint { step, weights, optimizer })
}

/// Copies the checkpoint after `step` from one private prefix to another (an audit replays a
/// segment from a copy), whatever files the method stores.
pub async fn copy(
    store: &dyn ObjectStore,
    from_prefix: &str,
    to_prefix: &str,
    step: u32,
) -> Result<(), WorkerError> {
    let (from, to) = (dir(from_prefix, step), dir(to_prefix, step));
    let mut keys = store.list(&from).await?;
    // state.json last: it is what makes the copy a valid checkpoint.
    keys.sort_by_key(|k| k.ends_with(STATE));
    for k in keys {
        let name = k.trim_start_matches(&from).trim_start_matches('/');
        let b = store.get(&k, u64::MAX).await?;
        store.put(&join(&to, name), b).await?;
    }
    Ok(())
}
