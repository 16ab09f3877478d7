//! The train job: AdamW with warmup + cosine, clipping, accumulation, checkpoints, resume.
//!
//! Flow: load and cross-check the model, preflight the memory estimate, read and pack the
//! dataset, resume from this job's latest checkpoint if one exists, then run the steps.
//! After every `checkpoint_every` steps (and the last) the canonical weights and optimizer
//! state hashes become a Merkle leaf ([`crate::merkle`]), and (but for the last, which the
//! output model supersedes) the weights, optimizer state and step go to the private prefix.
//! At the end the model goes to the private prefix (`_COMPLETE` last) and `metrics.json` to
//! the public prefix; on any failure what was written is removed.
//!
//! Determinism: batches and dropout masks derive from `(seed, step, micro-batch)` alone and
//! the model's kernels reduce in a fixed order, so the same inputs and seed give bit-identical
//! weights with 1 or 2 threads, and a resumed run ends where an uninterrupted one does.

pub mod checkpoint;
pub mod method;
pub mod schedule;

use std::time::Instant;

use bytes::Bytes;
use candle_core::Tensor;
use posthuman_gpt2::family::{AnyConfig, AnyModel, AnyWeights};
use posthuman_gpt2::lora::LoraAdapter;
use posthuman_gpt2::{AdamW, AdamWConfig, DropoutRng, Grads};
use posthuman_store::ObjectStore;
use posthuman_types::{Hash32, JobKind, JobSpec, LoraOutput, TrainMetrics, TrainParams};

use crate::config::WorkerConfig;
use crate::data::{self, Packed};
use crate::error::WorkerError;
use crate::memory;
use crate::merkle;
use crate::model_io::{self, LoadedModel, join};
use crate::progress::Progress;
use checkpoint::{CheckpointState, Trained};
use method::Method;

/// Public file the train job writes.
pub const METRICS: &str = "metrics.json";
/// Most points kept in the public loss curve.
const CURVE_POINTS: usize = 200;

/// How a train run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainOutcome {
    /// All steps done; model and metrics written.
    Done(Box<TrainMetrics>),
    /// Stopped on request right after the checkpoint of `step` (resumable).
    Stopped { step: u32 },
}

impl TrainOutcome {
    /// The committed checkpoint the run ended on: a finished run's last leaf (from its
    /// metrics: the last checkpoint is not stored), or the stored checkpoint it stopped at
    /// (hashed from its files). What an audit's replay of a segment compares.
    pub async fn end_checkpoint(
        &self,
        store: &dyn ObjectStore,
        private_prefix: &str,
        cfg: &AnyConfig,
        method: &Method,
    ) -> Result<merkle::Checkpoint, WorkerError> {
        match self {
            TrainOutcome::Done(m) => {
                match (m.checkpoint_hashes.last(), m.checkpoint_optimizer_hashes.last()) {
                    (Some(&weights), Some(&optimizer)) => {
                        Ok(merkle::Checkpoint { step: m.steps, weights, optimizer })
                    }
                    _ => Err(WorkerError::internal("a finished run without checkpoints")),
                }
            }
            TrainOutcome::Stopped { step } => {
                checkpoint::stored(store, private_prefix, *step, cfg, method).await
            }
        }
    }
}

/// The dropout stream of one micro-batch: a pure function of the job seed and position.
fn dropout_seed(seed: u64, step: u32, micro: u32) -> u64 {
    let pos = (u64::from(step) << 8) | u64::from(micro);
    seed ^ pos.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The public loss curve: at most [`CURVE_POINTS`] `(step, loss)` pairs, last step included.
fn downsample(losses: &[f64]) -> Vec<(u32, f64)> {
    let every = losses.len().div_ceil(CURVE_POINTS).max(1);
    let mut v: Vec<(u32, f64)> = losses
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) % every == 0 || i + 1 == losses.len())
        .map(|(i, l)| (i as u32 + 1, *l))
        .collect();
    v.dedup_by_key(|p| p.0);
    v
}

/// Runs a train job end to end (see the module docs).
pub async fn run(
    store: &dyn ObjectStore,
    wc: &WorkerConfig,
    spec: &JobSpec,
    p: &TrainParams,
) -> Result<TrainOutcome, WorkerError> {
    let started = Instant::now();
    let mut progress =
        Progress::new(store, &spec.public_prefix, JobKind::Train, wc.progress_interval_secs);
    progress.update("loading", 0, u64::from(p.steps), None, 0.0, None, true).await;

    let LoadedModel { cfg, weights, tok, weights_hash: input_hash } =
        model_io::load_model(store, &spec.model_prefix, wc.max_weights_bytes).await?;
    spec.validate_against_context(cfg.context() as u32).map_err(WorkerError::from_spec)?;
    // LoRA settings that do not fit the model are refused before the dataset is read.
    let method = Method::new(&cfg, p, &weights, &input_hash)?;
    let dataset_key = spec
        .dataset_key
        .as_deref()
        .ok_or_else(|| WorkerError::BadSpec("train jobs need a dataset".into()))?;

    // Preflight before reading the dataset: its byte size bounds its token count.
    let size = store.head(dataset_key).await?.unwrap_or(0);
    let (batch, ctx) = (p.batch_size as usize, p.context_len as usize);
    let need = match &p.lora {
        None => memory::train_bytes(&cfg, batch as u64, ctx as u64, size + 1),
        Some(l) => {
            let adapter = u64::from(l.r).saturating_mul(cfg.lora_base().in_out_sum());
            memory::lora_train_bytes(&cfg, batch as u64, ctx as u64, size + 1, adapter)
        }
    };
    if need > wc.memory_limit_bytes {
        return Err(WorkerError::MemoryRefused {
            needed_mib: need >> 20,
            limit_mib: wc.memory_limit_bytes >> 20,
        });
    }
    let (bytes, dataset_hash) = data::fetch(store, dataset_key, wc.max_dataset_bytes).await?;
    let text = data::validate_text(&bytes)?;
    let stream = data::tokenize(&tok, text)?;
    let packed = Packed::new(&stream, ctx)?;
    drop(bytes);

    let device = crate::device::compute();
    let mut train_cfg = cfg.clone();
    match &mut train_cfg {
        AnyConfig::Gpt2(c) => {
            (c.resid_pdrop, c.embd_pdrop, c.attn_pdrop) = (p.dropout, p.dropout, p.dropout)
        }
        // Llama has no hidden dropout in HF (and attention dropout 0 in every release):
        // a buyer asking for dropout would silently get none.
        AnyConfig::Llama { .. } if p.dropout > 0.0 => {
            return Err(WorkerError::OutOfRange(format!(
                "dropout {} is not available for the {} family (use 0)",
                p.dropout,
                cfg.family()
            )));
        }
        AnyConfig::Llama { .. } => {}
    }
    let adam =
        AdamWConfig { beta1: p.beta1, beta2: p.beta2, eps: p.eps, weight_decay: p.weight_decay };
    // Full: every weight is a variable. LoRA: the input weights stay frozen (no copy) and
    // the adapter's A and B are the only variables.
    let (state, model) = match &method {
        Method::Full => {
            let vm = weights.to_var_map(&device).map_err(WorkerError::internal)?;
            let m =
                AnyModel::from_var_map(&train_cfg, &vm, &device).map_err(WorkerError::internal)?;
            (State::Full(vm), m)
        }
        Method::Lora(l) => {
            let adapter = l.init(p.seed)?.to_device(&device).map_err(WorkerError::internal)?;
            let m = weights
                .model(&train_cfg, &device)
                .and_then(|m| Ok(m.with_lora(&adapter)?))
                .map_err(WorkerError::internal)?;
            (State::Lora(Box::new(adapter)), m)
        }
    };
    drop(weights);
    let mut opt = AdamW::new(state.var_map(), adam).map_err(WorkerError::internal)?;

    let fp = checkpoint::fingerprint(p, &dataset_hash, &input_hash);
    let mut st = CheckpointState {
        format: String::new(),
        fingerprint: fp,
        step: 0,
        weights_hash: input_hash,
        optimizer_hash: Hash32::ZERO,
        tokens_trained: 0,
        losses: Vec::new(),
        checkpoints: Vec::new(),
    };
    if let Some(r) =
        checkpoint::latest(store, &spec.private_prefix, &fp, &cfg, &method, &mut opt).await?
    {
        for prm in opt.params() {
            let t = r
                .tensors
                .get(&prm.name)
                .ok_or_else(|| WorkerError::internal("checkpoint lacks a tensor"))?;
            // The checkpoint loads on the CPU; the variables live on the compute device.
            prm.var.set(&t.to_device(prm.var.device())?)?;
        }
        tracing::info!(step = r.state.step, "resuming from checkpoint");
        st = r.state;
    }

    let lora_dropout = p.lora.as_ref().map_or(0.0, |l| l.lora_dropout);
    let ckpt_steps = merkle::checkpoint_steps(p.steps, p.checkpoint_every);
    let tokens_per_step = (batch * ctx * p.grad_accum as usize) as u64;
    let session_start = Instant::now();
    let first_step = st.step;
    for step in first_step..p.steps {
        let lr = schedule::lr_at(p, step);
        let mut grads: Option<Grads> = None;
        let mut loss_sum = 0f64;
        for micro in 0..p.grad_accum {
            let idx = packed.batch_indices(
                p.seed,
                u64::from(step),
                u64::from(micro),
                batch,
                p.grad_accum as usize,
            );
            let (x, y) = packed.inputs_targets(&idx);
            let x = Tensor::from_vec(x, (batch, ctx), &device)?;
            let y = Tensor::from_vec(y, (batch, ctx), &device)?;
            let mut drng = DropoutRng::new(dropout_seed(p.seed, step, micro));
            // GPT-2: the graph-free step on the CPU (bit-identical to `loss` + `backward`);
            // Llama: its autograd graph. The first micro-batch's gradients are moved into
            // `grads`, later ones added.
            let drop = (p.dropout > 0.0 || lora_dropout > 0.0).then_some(&mut drng);
            let loss = model
                .train_micro_batch(&x, &y, drop, &opt, &mut grads)
                .map_err(WorkerError::internal)?;
            let lv = f64::from(loss);
            if !lv.is_finite() {
                return Err(WorkerError::NonFiniteLoss { step: step + 1 });
            }
            loss_sum += lv;
        }
        let Some(mut grads) = grads else {
            return Err(WorkerError::internal("a step with no micro-batch"));
        };
        if p.grad_accum > 1 {
            grads.scale(1.0 / p.grad_accum as f32);
        }
        // One pass for both: the global norm is finite exactly when every gradient is.
        let norm = grads.norm();
        if !norm.is_finite() {
            return Err(WorkerError::NonFiniteLoss { step: step + 1 });
        }
        if p.grad_clip > 0.0 {
            grads.clip_to(norm, p.grad_clip);
        }
        opt.step(&grads, lr).map_err(WorkerError::internal)?;
        grads.recycle();
        let loss = loss_sum / f64::from(p.grad_accum);
        st.losses.push(loss);
        st.tokens_trained += tokens_per_step;
        st.step = step + 1;

        let secs = session_start.elapsed().as_secs_f64().max(1e-9);
        let done_here = f64::from(st.step - first_step);
        progress
            .update(
                "training",
                u64::from(st.step),
                u64::from(p.steps),
                Some(loss),
                done_here * tokens_per_step as f64 / secs,
                Some(done_here / secs),
                false,
            )
            .await;

        if ckpt_steps.contains(&st.step) {
            let snap = match &state {
                State::Full(vm) => {
                    let w = AnyWeights::from_var_map(&cfg, vm).map_err(WorkerError::internal)?;
                    (st.weights_hash, st.optimizer_hash) =
                        w.checkpoint_hashes(&opt).map_err(WorkerError::internal)?;
                    Some(w)
                }
                State::Lora(a) => {
                    let l = method.lora().ok_or_else(|| WorkerError::internal("no LoRA setup"))?;
                    (st.weights_hash, st.optimizer_hash) = l.leaf_now(&cfg, a, &opt)?;
                    None
                }
            };
            st.checkpoints.push(merkle::Checkpoint {
                step: st.step,
                weights: st.weights_hash,
                optimizer: st.optimizer_hash,
            });
            st.format = checkpoint::FORMAT.into();
            // The last checkpoint is committed (its leaf binds the output weights) but not
            // stored: the finished job's model is written next, and nothing resumes from the
            // end of training or replays a segment from it (~0.3 s of writes per job).
            if st.step < p.steps {
                let trained = match (&snap, &state) {
                    (Some(w), _) => Trained::Weights(w),
                    (None, State::Lora(a)) => Trained::Adapter(a),
                    (None, State::Full(_)) => return Err(WorkerError::internal("no snapshot")),
                };
                checkpoint::save(store, &spec.private_prefix, trained, &opt, &st).await?;
            }
            if wc.stop_after_checkpoint == Some(st.step) && st.step < p.steps {
                return Ok(TrainOutcome::Stopped { step: st.step });
            }
        }
    }

    progress
        .update(
            "saving",
            u64::from(p.steps),
            u64::from(p.steps),
            st.losses.last().copied(),
            0.0,
            None,
            true,
        )
        .await;
    // A derivation must carry real training: weights that came out bit-identical to the
    // input (every update rounded away in f32) would be published as a "child" that is the
    // parent itself. The last leaf's weights hash is the output's (checked when it is saved).
    if st.checkpoints.last().map(|c| c.weights) == Some(input_hash) {
        return Err(WorkerError::NoTraining { steps: p.steps });
    }
    let (final_weights, lora) = match (&state, method.lora()) {
        (State::Full(vm), _) => {
            (AnyWeights::from_var_map(&cfg, vm).map_err(WorkerError::internal)?, None)
        }
        (State::Lora(a), Some(l)) => (l.merged(&cfg, a)?, Some((a, lora_output(a, &opt)?))),
        (State::Lora(_), None) => return Err(WorkerError::internal("no LoRA setup")),
    };
    let wall = started.elapsed().as_secs_f64();
    let session_tokens = u64::from(p.steps - first_step) * tokens_per_step;
    let metrics = TrainMetrics {
        steps: p.steps,
        tokens_trained: st.tokens_trained,
        final_loss: st.losses.last().copied().unwrap_or(f64::NAN),
        loss_curve: downsample(&st.losses),
        tokens_per_sec: session_tokens as f64 / session_start.elapsed().as_secs_f64().max(1e-9),
        wall_secs: wall,
        input_weights_hash: input_hash,
        output_weights_hash: Hash32::ZERO,
        // metrics.json is public: it names the dataset only salted (the checkpoint
        // fingerprint above stays on the plain hash; it is private).
        dataset_hash: data::public_hash(spec.salt.as_ref(), &dataset_hash),
        checkpoint_root: merkle::root(&st.checkpoints),
        checkpoint_every: p.checkpoint_every,
        checkpoint_hashes: st.checkpoints.iter().map(|c| c.weights).collect(),
        checkpoint_optimizer_hashes: st.checkpoints.iter().map(|c| c.optimizer).collect(),
        lora: lora.as_ref().map(|(_, o)| o.clone()),
    };
    let mut written = Vec::new();
    let adapter = lora.map(|(a, _)| a.as_ref());
    let out =
        write_outputs(store, spec, &cfg, &final_weights, adapter, &tok, metrics, &mut written);
    match out.await {
        Ok(m) => {
            progress
                .update(
                    "done",
                    u64::from(p.steps),
                    u64::from(p.steps),
                    Some(m.final_loss),
                    m.tokens_per_sec,
                    None,
                    true,
                )
                .await;
            Ok(TrainOutcome::Done(Box::new(m)))
        }
        Err(e) => {
            model_io::remove_written(store, &written).await;
            Err(e)
        }
    }
}

/// The trained variables of a running job.
enum State {
    Full(posthuman_gpt2::candle_nn::VarMap),
    Lora(Box<LoraAdapter>),
}

impl State {
    fn var_map(&self) -> &posthuman_gpt2::candle_nn::VarMap {
        match self {
            State::Full(vm) => vm,
            State::Lora(a) => a.var_map(),
        }
    }
}

/// The public description of a finished LoRA job's adapter.
fn lora_output(a: &LoraAdapter, opt: &AdamW) -> Result<LoraOutput, WorkerError> {
    let bytes = a.safetensors_bytes().map_err(WorkerError::internal)?.len() as u64;
    let moments = opt.state_bytes().map_err(WorkerError::internal)?.len() as u64;
    a.describe(bytes, bytes + moments).map_err(WorkerError::internal)
}

/// Writes the derived model (for LoRA: the merged weights, and the PEFT adapter under
/// [`method::ADAPTER_DIR`] first) and `metrics.json`, recording every key in `written`.
#[allow(clippy::too_many_arguments)] // one call site; each argument is a distinct output
async fn write_outputs(
    store: &dyn ObjectStore,
    spec: &JobSpec,
    cfg: &AnyConfig,
    weights: &AnyWeights,
    adapter: Option<&LoraAdapter>,
    tok: &crate::tokenizer::Tok,
    mut metrics: TrainMetrics,
    written: &mut Vec<String>,
) -> Result<TrainMetrics, WorkerError> {
    if let Some(a) = adapter {
        use posthuman_gpt2::lora::{ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME};
        let d = join(&spec.private_prefix, method::ADAPTER_DIR);
        let w = a.safetensors_bytes().map_err(WorkerError::internal)?;
        let c = a.config().to_json().map_err(WorkerError::internal)?;
        for (name, body) in [(ADAPTER_WEIGHTS_NAME, w), (ADAPTER_CONFIG_NAME, c.into_bytes())] {
            let key = join(&d, name);
            written.push(key.clone());
            store.put(&key, Bytes::from(body)).await?;
        }
    }
    // The model (for LoRA the merged weights) goes last: its `_COMPLETE` makes the job's
    // output visible.
    let h = model_io::save_model(store, &spec.private_prefix, cfg, weights, tok, written).await?;
    if metrics.checkpoint_hashes.last() != Some(&h) {
        return Err(WorkerError::internal("final weights differ from the last checkpoint"));
    }
    metrics.output_weights_hash = h;
    let key = join(&spec.public_prefix, METRICS);
    written.push(key.clone());
    let body = serde_json::to_vec_pretty(&metrics).map_err(WorkerError::internal)?;
    store.put(&key, Bytes::from(body)).await?;
    Ok(metrics)
}
