//! Fixtures for the worker's integration tests: a tokenizer trained on generated text, a
//! tiny random GPT-2, a dataset, specs, and a store wrapper that fails on demand.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use posthuman_store::{Hooked, LocalStore, ObjectStore, StoreError, StoreHook, StoreOp};
use posthuman_types::{
    EvalParams, InferParams, JobParams, JobSpec, Sampling, TrainMetrics, TrainParams,
};
use posthuman_worker::setup::{ModelShape, init_model_to_store};
use posthuman_worker::tokenizer::{Tok, train_bpe};
use posthuman_worker::{JobOutcome, WorkerConfig, run_job};

/// A small repeating corpus: easy to learn, so the loss must fall.
pub fn corpus() -> String {
    let lines = [
        "the cat sat on the mat and looked at the dog.",
        "the dog sat on the log and looked at the cat.",
        "a bird sang in the tree while the sun rose.",
        "we read the book and wrote the answer down.",
    ];
    let mut s = String::new();
    for i in 0..40 {
        s.push_str(lines[i % lines.len()]);
        s.push('\n');
    }
    s
}

pub fn tokenizer() -> Tok {
    train_bpe(&corpus(), 320).unwrap()
}

pub fn shape() -> ModelShape {
    ModelShape { n_layer: 2, n_embd: 32, n_head: 2, n_positions: 64, vocab_size: None }
}

pub const BASE: &str = "models/base";
pub const DATA: &str = "datasets/d.txt";

/// A LocalStore in a temp dir with the base model and dataset in place.
pub async fn store() -> (tempfile::TempDir, Arc<LocalStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::new(dir.path()).unwrap());
    init_model_to_store(store.as_ref(), BASE, &tokenizer(), &shape(), 7).await.unwrap();
    store.put(DATA, Bytes::from(corpus())).await.unwrap();
    (dir, store)
}

pub fn train_params() -> TrainParams {
    let mut p = TrainParams::new(24, 3e-3, 4, 16);
    p.warmup_steps = 3;
    p.checkpoint_every = 8;
    p.seed = 11;
    p
}

pub fn spec(id: &str, params: JobParams) -> JobSpec {
    JobSpec {
        job_id: id.into(),
        model_prefix: BASE.into(),
        dataset_key: Some(DATA.into()),
        private_prefix: format!("models/{id}"),
        public_prefix: format!("jobs/{id}/public"),
        params,
        budget: None,
        salt: None,
    }
}

pub fn train_spec(id: &str) -> JobSpec {
    spec(id, JobParams::Train(train_params()))
}

pub fn infer_params() -> InferParams {
    InferParams {
        prompts: vec!["the cat".into(), "a bird".into()],
        max_new_tokens: 12,
        sampling: Sampling::default(),
        stop: vec![],
        messages: vec![],
    }
}

pub fn eval_params() -> EvalParams {
    EvalParams { context_len: 32, stride: 16, max_tokens: 0, baseline: None }
}

pub fn wc() -> WorkerConfig {
    WorkerConfig { progress_interval_secs: 0.0, ..WorkerConfig::default() }
}

pub fn spec_bytes(s: &JobSpec) -> Vec<u8> {
    serde_json::to_vec(s).unwrap()
}

/// Runs a train spec to the end and returns its metrics (any other outcome fails the test).
pub async fn train(store: &dyn ObjectStore, spec: &JobSpec, wc: &WorkerConfig) -> TrainMetrics {
    match run_job(store, wc, &spec_bytes(spec)).await.unwrap() {
        JobOutcome::Trained(m) => m,
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// Every key under `prefix`.
pub async fn keys(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    store.list(prefix).await.unwrap_or_default()
}

/// Fails every write of a key containing `pattern` (`put`, `put_file`, `put_if_absent`) once
/// `after` matching writes have succeeded — a store that dies mid-write.
#[derive(Debug)]
pub struct DiesOnWrite {
    pub pattern: String,
    pub after: usize,
    pub seen: AtomicUsize,
}

#[async_trait::async_trait]
impl StoreHook for DiesOnWrite {
    async fn before(&self, op: StoreOp, key: &str) -> Result<(), StoreError> {
        let put = matches!(op, StoreOp::Put | StoreOp::PutFile | StoreOp::PutIfAbsent);
        if put
            && key.contains(&self.pattern)
            && self.seen.fetch_add(1, Ordering::SeqCst) >= self.after
        {
            return Err(StoreError::Io("injected failure: disk full".into()));
        }
        Ok(())
    }
}

/// `inner` failing as [`DiesOnWrite`] says.
pub fn failing_store(inner: Arc<LocalStore>, pattern: &str, after: usize) -> Hooked<DiesOnWrite> {
    Hooked::new(inner, DiesOnWrite { pattern: pattern.into(), after, seen: AtomicUsize::new(0) })
}

/// The worker binary, as a command.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_posthuman-worker"))
}

/// Runs `cmd`, failing the test with its stderr unless it succeeds.
pub fn run_ok(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
}

/// A tokenizer trained by the binary (`train-tokenizer`, 320 tokens) on [`corpus`], written
/// under `root`; returns its path.
pub fn cli_tokenizer(root: &Path) -> std::path::PathBuf {
    let text = root.join("corpus.txt");
    std::fs::write(&text, corpus()).unwrap();
    let tok = root.join("tokenizer.json");
    run_ok(
        bin()
            .args(["train-tokenizer", "--vocab-size", "320", "--corpus"])
            .arg(&text)
            .arg("--out")
            .arg(&tok),
    );
    tok
}
