//! Models in the object store: HF layout under a prefix, loaded strictly and written so that
//! no half-written model is ever visible.
//!
//! A model prefix holds `config.json`, `model.safetensors` and `tokenizer.json`, in the HF
//! layout of the family `config.json`'s `model_type` names ([`posthuman_gpt2::family`]),
//! and optionally `tokenizer_config.json`, `generation_config.json` and `chat_template.jinja`
//! (stop ids, BOS, chat template: [`posthuman_gpt2::chat_config`]), which a derived model
//! inherits byte for byte.
//! A derived model keeps its parent's family; a Llama `config.json` is written back as read. The worker
//! writes those three first and the `_COMPLETE` manifest last; the manifest names the
//! canonical weights hash and the SHA-256 of each file. Readers (the worker itself, the
//! handlers that publish a derived model) treat a prefix without `_COMPLETE` as absent when
//! it was produced by a job; models uploaded by owners may come without one. When a manifest
//! is present, every file is checked against it on load.

use std::collections::BTreeMap;

use bytes::Bytes;
use posthuman_gpt2::chat_config::{
    CHAT_TEMPLATE_FILE, GENERATION_CONFIG, MAX_CHAT_TEMPLATE_BYTES, MAX_GENERATION_CONFIG_BYTES,
    MAX_TOKENIZER_CONFIG_BYTES, TOKENIZER_CONFIG,
};
use posthuman_gpt2::family::{AnyConfig, AnyWeights};
use posthuman_store::{ObjectStore, StoreError};
use posthuman_types::Hash32;
use serde::{Deserialize, Serialize};

use crate::data::dataset_hash;
use crate::error::WorkerError;
use crate::tokenizer::{MAX_TOKENIZER_BYTES, Tok};

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const TOKENIZER: &str = "tokenizer.json";
pub const COMPLETE: &str = "_COMPLETE";
pub(crate) const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// `<prefix>/<name>`, or `name` alone for the store root.
pub fn join(prefix: &str, name: &str) -> String {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() { name.to_string() } else { format!("{p}/{name}") }
}

/// The `_COMPLETE` manifest: written last, it makes a model prefix visible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// Canonical content hash of the weights ([`posthuman_gpt2::weights_hash`]).
    pub weights_hash: Hash32,
    /// SHA-256 of each file's bytes.
    pub files: BTreeMap<String, Hash32>,
}

const MANIFEST_FORMAT: &str = "posthuman-model-v1";

/// A model loaded and cross-checked: config, weights and tokenizer agree.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub cfg: AnyConfig,
    pub weights: AnyWeights,
    pub tok: Tok,
    pub weights_hash: Hash32,
}

fn missing_is(e: StoreError, on_missing: WorkerError) -> WorkerError {
    match e {
        StoreError::NotFound { .. } => on_missing,
        StoreError::TooLarge { size, limit, .. } => WorkerError::BadWeights(format!(
            "a model file is {size} bytes, over the limit of {limit}"
        )),
        other => other.into(),
    }
}

/// Parses and validates `config.json` as the family its `model_type` names (an unknown one
/// is refused, naming the supported ones).
pub fn parse_config(bytes: &[u8]) -> Result<AnyConfig, WorkerError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| WorkerError::BadWeights("config.json is not UTF-8".into()))?;
    AnyConfig::from_json(text).map_err(|e| WorkerError::BadWeights(e.to_string()))
}

/// Checks that the tokenizer fits the model's embedding table.
pub fn check_tokenizer(cfg: &AnyConfig, tok: &Tok) -> Result<(), WorkerError> {
    if tok.vocab_size() > cfg.vocab_size() {
        return Err(WorkerError::BadWeights(format!(
            "the tokenizer has {} tokens but the model's vocab_size is {}",
            tok.vocab_size(),
            cfg.vocab_size()
        )));
    }
    Ok(())
}

/// Loads the model under `prefix`, refusing weights over `max_weights_bytes`.
pub async fn load_model(
    store: &dyn ObjectStore,
    prefix: &str,
    max_weights_bytes: u64,
) -> Result<LoadedModel, WorkerError> {
    let cfg_bytes = store
        .get(&join(prefix, CONFIG), MAX_CONFIG_BYTES)
        .await
        .map_err(|e| missing_is(e, WorkerError::BadWeights("config.json is missing".into())))?;
    let cfg = parse_config(&cfg_bytes)?;
    let tok_bytes =
        store.get(&join(prefix, TOKENIZER), MAX_TOKENIZER_BYTES).await.map_err(|e| {
            missing_is(e, WorkerError::MissingTokenizer("tokenizer.json is missing".into()))
        })?;
    let tc = optional(store, prefix, TOKENIZER_CONFIG, MAX_TOKENIZER_CONFIG_BYTES).await?;
    let gc = optional(store, prefix, GENERATION_CONFIG, MAX_GENERATION_CONFIG_BYTES).await?;
    let ct = optional(store, prefix, CHAT_TEMPLATE_FILE, MAX_CHAT_TEMPLATE_BYTES as u64).await?;
    let tok = Tok::load(&tok_bytes, tc.as_deref(), gc.as_deref(), ct.as_deref())?;
    check_tokenizer(&cfg, &tok)?;
    let w_bytes = spool_weights(store, &join(prefix, WEIGHTS), max_weights_bytes).await?;
    let weights = AnyWeights::from_safetensors_bytes(&w_bytes, &cfg)
        .map_err(|e| WorkerError::BadWeights(e.to_string()))?;
    let weights_hash = weights.hash().map_err(WorkerError::internal)?;
    match store.get(&join(prefix, COMPLETE), MAX_CONFIG_BYTES).await {
        Ok(m) => {
            let m: Manifest = serde_json::from_slice(&m).map_err(|_| {
                WorkerError::BadWeights("the _COMPLETE manifest is malformed".into())
            })?;
            let mut files: Vec<(&str, &[u8])> =
                vec![(CONFIG, &cfg_bytes), (WEIGHTS, &w_bytes), (TOKENIZER, &tok_bytes)];
            files.extend(tok.side_files().iter().map(|(n, b)| (*n, b.as_slice())));
            // Every file read is vouched for, and every file vouched for was read: an
            // optional config added or removed after the manifest is a mismatch too.
            let files_ok = files.len() == m.files.len()
                && files.iter().all(|(n, b)| m.files.get(*n) == Some(&dataset_hash(b)));
            if m.weights_hash != weights_hash || !files_ok {
                return Err(WorkerError::BadWeights(
                    "the model files do not match their _COMPLETE manifest".into(),
                ));
            }
        }
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(LoadedModel { cfg, weights, tok, weights_hash })
}

/// A model's weights file copied from the store into a private temporary file and mapped
/// read-only. Read into the heap (as every job did), the file's bytes sat beside their f32
/// conversion until the load ended: an f32 checkpoint needed twice its size in anonymous
/// memory, which the preflight estimate does not count and a container's limit kills for.
/// Mapped, they are file-backed pages the kernel reclaims under pressure. The temporary file
/// is removed when this is dropped.
struct SpooledFile {
    map: memmap2::Mmap,
    _file: tempfile::NamedTempFile,
}

impl std::ops::Deref for SpooledFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

/// The object `key` as a [`SpooledFile`], refusing one over `max` bytes before copying it
/// (and after, should it have been replaced meanwhile) as [`ObjectStore::get`] would.
async fn spool_weights(
    store: &dyn ObjectStore,
    key: &str,
    max: u64,
) -> Result<SpooledFile, WorkerError> {
    let missing = || WorkerError::BadWeights("model.safetensors is missing".into());
    let too_large = |size| StoreError::TooLarge { key: key.to_string(), size, limit: max };
    match store.head(key).await? {
        None => return Err(missing()),
        Some(size) if size > max => return Err(missing_is(too_large(size), missing())),
        Some(_) => {}
    }
    let file = tempfile::NamedTempFile::new().map_err(WorkerError::internal)?;
    let size = store.get_to_file(key, file.path()).await.map_err(|e| missing_is(e, missing()))?;
    if size > max {
        return Err(missing_is(too_large(size), missing()));
    }
    // The store's copy may have replaced the temporary file at that path: open what is there.
    let opened = std::fs::File::open(file.path()).map_err(WorkerError::internal)?;
    // SAFETY: a private temporary file this process just wrote and nobody else knows of; it is
    // only read while the map lives.
    let map = unsafe { memmap2::Mmap::map(&opened) }.map_err(WorkerError::internal)?;
    Ok(SpooledFile { map, _file: file })
}

/// An optional model file: `None` when absent; over `max` bytes it is the seller's bad upload.
async fn optional(
    store: &dyn ObjectStore,
    prefix: &str,
    name: &str,
    max: u64,
) -> Result<Option<Bytes>, WorkerError> {
    match store.get(&join(prefix, name), max).await {
        Ok(b) => Ok(Some(b)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(StoreError::TooLarge { size, limit, .. }) => Err(WorkerError::MissingTokenizer(
            format!("{name} is {size} bytes, over the limit of {limit}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Writes a model under `prefix`: the three files (and the tokenizer's optional configs,
/// unchanged), then `_COMPLETE`. Returns the keys written
/// (in order) and the canonical weights hash. On error the caller removes what was written.
pub async fn save_model(
    store: &dyn ObjectStore,
    prefix: &str,
    cfg: &AnyConfig,
    weights: &AnyWeights,
    tok: &Tok,
    written: &mut Vec<String>,
) -> Result<Hash32, WorkerError> {
    let weights_hash = weights.hash().map_err(WorkerError::internal)?;
    let mut files: Vec<(&str, Vec<u8>)> =
        vec![(CONFIG, cfg.to_json().into_bytes()), (TOKENIZER, tok.to_json()?.into_bytes())];
    files.extend(tok.side_files().iter().map(|(n, b)| (*n, b.clone())));
    files.push((WEIGHTS, weights.to_safetensors_bytes().map_err(WorkerError::internal)?));
    let mut manifest =
        Manifest { format: MANIFEST_FORMAT.into(), weights_hash, files: BTreeMap::new() };
    // A stale manifest from an earlier attempt must not vouch for files being replaced.
    store.delete(&join(prefix, COMPLETE)).await?;
    for (name, body) in files {
        manifest.files.insert(name.to_string(), dataset_hash(&body));
        let key = join(prefix, name);
        written.push(key.clone());
        store.put(&key, Bytes::from(body)).await?;
    }
    let key = join(prefix, COMPLETE);
    written.push(key.clone());
    let body = serde_json::to_vec_pretty(&manifest).map_err(WorkerError::internal)?;
    store.put(&key, Bytes::from(body)).await?;
    Ok(weights_hash)
}

/// Best-effort removal of partially written outputs, manifest first so the model turns
/// invisible before its files go.
pub async fn remove_written(store: &dyn ObjectStore, written: &[String]) {
    let mut keys: Vec<&String> = written.iter().collect();
    keys.sort_by_key(|k| !k.ends_with(COMPLETE));
    for k in keys {
        if let Err(e) = store.delete(k).await {
            tracing::warn!(error = %e, "could not remove a partial output");
        }
    }
}
