//! Llama checkpoints in Hugging Face layout: strict loading of `model.safetensors` or a sharded
//! `model.safetensors.index.json` + shards (memory-mapped, one typed error per way a checkpoint
//! can be wrong, naming the tensor and file), f32/f16/bf16 on disk converted to f32, tied
//! embeddings honoured; HF-layout f32 save; the canonical content hash; a sharded
//! checkpoint assembled into its single file ([`merge_sharded`], for publishing).
//!
//! The hash is [`crate::weights_hash`] over the f32 values under HF names, so it does not depend
//! on how the checkpoint is sharded, on tensor order, or on the on-disk dtype of values that are
//! equal in f32 (an f16 checkpoint and its f32 conversion hash equal).
//!
//! A directory is read the way `transformers` would find the weights, but strictly: with an
//! index, every `*.safetensors` file in the directory must be one the index names (a stray
//! `model.safetensors` next to an index is refused, not silently preferred); without one,
//! `model.safetensors` must be the only safetensors file.

use crate::llama::{Config, Llama, param_shapes};
use crate::{Gpt2Error, weights_hash};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use posthuman_types::Hash32;
use safetensors::Dtype;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// HF's single-file weights name.
pub const SAFE_WEIGHTS_NAME: &str = "model.safetensors";
/// HF's shard index name.
pub const SAFE_WEIGHTS_INDEX_NAME: &str = "model.safetensors.index.json";

/// Why a Llama checkpoint cannot be loaded; each variant names the file and/or tensor to fix.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The config itself is unusable (fix `config.json`).
    #[error("invalid Llama config: {0}")]
    Config(#[from] crate::llama::ConfigError),
    /// Reading a file failed (permissions, disk).
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The directory holds neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("no model.safetensors or model.safetensors.index.json in {dir}")]
    NoWeights { dir: PathBuf },
    /// The index is not HF's format (JSON object with a `weight_map` of tensor → file name).
    #[error("malformed shard index {path}: {reason}")]
    MalformedIndex { path: PathBuf, reason: String },
    /// A safetensors file's header or offsets are damaged.
    #[error("malformed safetensors file `{file}`: {reason}")]
    MalformedFile { file: String, reason: String },
    /// The index names a shard file that is not in the directory.
    #[error("shard `{file}` named by the index is missing")]
    MissingShard { file: String },
    /// A safetensors file in the directory is not part of the checkpoint (not named by the
    /// index, or next to a single-file checkpoint); remove it or fix the index.
    #[error("unexpected safetensors file `{file}`: not named by the index")]
    UnexpectedShard { file: String },
    /// The index puts a tensor in one shard but it is stored in another.
    #[error("index puts tensor `{tensor}` in `{index_says}`, but it is in `{found_in}`")]
    WrongShard { tensor: String, index_says: String, found_in: String },
    /// The index names a tensor that its shard does not hold (nor does any other).
    #[error("index puts tensor `{tensor}` in `{file}`, which does not hold it")]
    NotInShard { tensor: String, file: String },
    /// A shard holds a tensor the index does not list.
    #[error("tensor `{tensor}` in `{file}` is not listed in the index")]
    NotInIndex { tensor: String, file: String },
    /// Two shards' `__metadata__` give one key different values, so no single file can
    /// carry both (fix the shards' metadata).
    #[error("metadata `{key}` differs between `{first}` and `{second}`")]
    MetadataConflict { key: String, first: String, second: String },
    /// The same tensor is stored in two shards.
    #[error("tensor `{tensor}` is stored in both `{first}` and `{second}`")]
    DuplicateTensor { tensor: String, first: String, second: String },
    /// A tensor the config requires is in no file.
    #[error("missing tensor `{tensor}`")]
    MissingTensor { tensor: String },
    /// A tensor the model does not have (and that is not a buffer HF also ignores).
    #[error("unexpected tensor `{tensor}` in `{file}`")]
    UnexpectedTensor { tensor: String, file: String },
    /// A tensor's shape disagrees with the config.
    #[error("tensor `{tensor}` in `{file}` has shape {got:?}, the config needs {expected:?}")]
    ShapeMismatch { tensor: String, file: String, expected: Vec<usize>, got: Vec<usize> },
    /// A dtype other than F32, F16 or BF16.
    #[error("tensor `{tensor}` in `{file}` has unsupported dtype {dtype} (F32, F16, BF16 load)")]
    UnsupportedDType { tensor: String, file: String, dtype: String },
    /// NaN or infinity in a weight.
    #[error("tensor `{tensor}` in `{file}` has non-finite values")]
    NonFinite { tensor: String, file: String },
    /// A tensor operation failed (out of memory, a candle bug).
    #[error(transparent)]
    Model(#[from] Gpt2Error),
}

impl From<candle_core::Error> for CheckpointError {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(Gpt2Error::Candle(e))
    }
}

/// A complete, validated set of f32 CPU tensors of a Llama model under HF names
/// ([`param_shapes`]: no `lm_head.weight` when the head is tied).
#[derive(Clone, Debug)]
pub struct LlamaWeights {
    tensors: BTreeMap<String, Tensor>,
}

const IN_MEMORY: &str = "<in memory>";

impl LlamaWeights {
    /// Checks that `tensors` holds exactly the config's parameters with the right shapes.
    pub fn from_tensors(
        cfg: &Config,
        tensors: BTreeMap<String, Tensor>,
    ) -> Result<Self, CheckpointError> {
        cfg.validate()?;
        let expected: BTreeMap<String, Vec<usize>> = param_shapes(cfg).into_iter().collect();
        if let Some(extra) = tensors.keys().find(|k| !expected.contains_key(*k)) {
            return Err(CheckpointError::UnexpectedTensor {
                tensor: extra.clone(),
                file: IN_MEMORY.into(),
            });
        }
        let mut out = BTreeMap::new();
        for (name, shape) in expected {
            let t = tensors
                .get(&name)
                .ok_or_else(|| CheckpointError::MissingTensor { tensor: name.clone() })?;
            if t.dims() != shape.as_slice() {
                return Err(CheckpointError::ShapeMismatch {
                    tensor: name,
                    file: IN_MEMORY.into(),
                    expected: shape,
                    got: t.dims().to_vec(),
                });
            }
            let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.detach();
            out.insert(name, t);
        }
        Ok(Self { tensors: out })
    }

    /// Snapshot of a training `VarMap` (copies the current values).
    pub fn from_var_map(cfg: &Config, vm: &VarMap) -> Result<Self, CheckpointError> {
        Self::from_tensors(cfg, crate::weights::snapshot_var_map(vm)?)
    }

    /// Trainable copies of these weights on `device`.
    pub fn to_var_map(&self, device: &Device) -> Result<VarMap, CheckpointError> {
        Ok(crate::weights::var_map_of(&self.tensors, device)?)
    }

    /// A frozen model (inference / evaluation) on `device`.
    pub fn model(&self, cfg: &Config, device: &Device) -> Result<Llama, CheckpointError> {
        let map: HashMap<String, Tensor> = self.tensors.clone().into_iter().collect();
        Ok(Llama::new(cfg, VarBuilder::from_tensors(map, DType::F32, device))?)
    }

    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Canonical content hash: [`weights_hash`] over (HF name, shape, f32 values).
    pub fn hash(&self) -> Result<Hash32, CheckpointError> {
        Ok(weights_hash(self.tensors.iter().map(|(k, v)| (k.as_str(), v)))?)
    }
}

/// Buffers old HF Llama checkpoints carry and the model recomputes (`transformers` ignores
/// them on load too).
fn is_known_buffer(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// Loads the checkpoint in `dir` (see the module docs for which files count).
pub fn load_checkpoint(dir: &Path, cfg: &Config) -> Result<LlamaWeights, CheckpointError> {
    let index = dir.join(SAFE_WEIGHTS_INDEX_NAME);
    if index.is_file() {
        return load_sharded(&index, cfg);
    }
    let single = dir.join(SAFE_WEIGHTS_NAME);
    if !single.is_file() {
        return Err(CheckpointError::NoWeights { dir: dir.to_path_buf() });
    }
    let files = BTreeSet::from([SAFE_WEIGHTS_NAME.to_string()]);
    if let Some(extra) = safetensors_in(dir)?.into_iter().find(|f| !files.contains(f)) {
        return Err(CheckpointError::UnexpectedShard { file: extra });
    }
    load_safetensors(&single, cfg)
}

/// The `*.safetensors` file names directly in `dir`, sorted.
fn safetensors_in(dir: &Path) -> Result<BTreeSet<String>, CheckpointError> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") {
            out.insert(name);
        }
    }
    Ok(out)
}

/// Loads one safetensors file (memory-mapped) holding the whole model.
pub fn load_safetensors(path: &Path, cfg: &Config) -> Result<LlamaWeights, CheckpointError> {
    let file = path
        .file_name()
        .map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned());
    load_files(cfg, &[(file, path.to_path_buf())], None)
}

/// Loads a sharded checkpoint from HF's `model.safetensors.index.json`; shards are looked up
/// next to the index.
pub fn load_sharded(index_path: &Path, cfg: &Config) -> Result<LlamaWeights, CheckpointError> {
    let (weight_map, shards) = read_index(index_path)?;
    load_files(cfg, &shards, Some(&weight_map))
}

/// An index's tensor → shard file name map.
type WeightMap = BTreeMap<String, String>;
/// A checkpoint's files as (file name, path).
type ShardFiles = Vec<(String, PathBuf)>;

/// Reads HF's shard index and checks it against the directory it is in: the weight map
/// (tensor → shard file name), and every shard as (file name, path), sorted. Refuses a
/// malformed index, a shard it names that is missing, and a `*.safetensors` file it does not
/// name.
fn read_index(index_path: &Path) -> Result<(WeightMap, ShardFiles), CheckpointError> {
    let bad =
        |reason: String| CheckpointError::MalformedIndex { path: index_path.to_path_buf(), reason };
    let text = std::fs::read_to_string(index_path).map_err(io(index_path))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let Some(map) = v.get("weight_map").and_then(|m| m.as_object()) else {
        return Err(bad("no `weight_map` object".into()));
    };
    let mut weight_map = BTreeMap::new();
    for (tensor, file) in map {
        let Some(file) = file.as_str() else {
            return Err(bad(format!("`weight_map.{tensor}` is not a file name")));
        };
        // Shards live next to the index: a path would let an index read any file.
        if file.is_empty()
            || file.contains(['/', '\\'])
            || file == "."
            || file == ".."
            || !file.ends_with(".safetensors")
        {
            return Err(bad(format!("`weight_map.{tensor}` = `{file}` is not a shard file name")));
        }
        weight_map.insert(tensor.clone(), file.to_string());
    }
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let files: BTreeSet<String> = weight_map.values().cloned().collect();
    for file in &files {
        if !dir.join(file).is_file() {
            return Err(CheckpointError::MissingShard { file: file.clone() });
        }
    }
    if let Some(extra) = safetensors_in(dir)?.into_iter().find(|f| !files.contains(f)) {
        return Err(CheckpointError::UnexpectedShard { file: extra });
    }
    let shards = files.iter().map(|f| (f.clone(), dir.join(f))).collect();
    Ok((weight_map, shards))
}

/// The single `model.safetensors` a sharded checkpoint stands for, assembled at the
/// safetensors level (for uploading a sharded model where one file is taken): every tensor
/// keeps its on-disk dtype and bytes, in safetensors' canonical order (by dtype, then name,
/// as any single-file save writes it), under the shards' `__metadata__` (their union). So a
/// checkpoint split into shards assembles to the bytes its single-file save has, and the
/// canonical weights hash is the same.
///
/// The index and shards get the loader's checks that need no config ([`load_sharded`]'s
/// errors: malformed index, missing or unnamed shard, tensor in the wrong shard or in none,
/// tensor missing from the index, duplicate tensor); the config's checks are the loader's
/// when the assembled file is loaded. Memory: the returned image and one tensor at a time.
/// Headers are parsed from memory maps, but tensor bytes are read from the files into the
/// image (mapped pages, once touched, would count against the process beside the image).
pub fn merge_sharded(index_path: &Path) -> Result<Vec<u8>, CheckpointError> {
    let (weight_map, shards) = read_index(index_path)?;
    let mut opened = Vec::with_capacity(shards.len());
    for (file, path) in &shards {
        let f = std::fs::File::open(path).map_err(io(path))?;
        // SAFETY: only the header is read through the mapping, while `opened` lives; a file
        // changed underneath gives a refused header or wrong bytes (caught by the content
        // hash), not unsoundness we rely on.
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io(path))?;
        opened.push((file.as_str(), path.as_path(), f, m));
    }
    let mut metadata: BTreeMap<String, (String, &str)> = BTreeMap::new();
    let mut sources = Vec::with_capacity(opened.len());
    let mut headers = Vec::with_capacity(opened.len());
    for (file, _, _, m) in &opened {
        let malformed = |e: safetensors::SafeTensorError| CheckpointError::MalformedFile {
            file: file.to_string(),
            reason: e.to_string(),
        };
        let (n, header) = safetensors::SafeTensors::read_metadata(m).map_err(malformed)?;
        let own: BTreeMap<&String, &String> = header.metadata().iter().flatten().collect();
        for (key, value) in own {
            match metadata.get(key) {
                Some((first, in_file)) if first != value => {
                    return Err(CheckpointError::MetadataConflict {
                        key: key.clone(),
                        first: in_file.to_string(),
                        second: file.to_string(),
                    });
                }
                Some(_) => {}
                None => {
                    metadata.insert(key.clone(), (value.clone(), *file));
                }
            }
        }
        sources.push((
            *file,
            Source::Bytes(safetensors::SafeTensors::deserialize(m).map_err(malformed)?),
        ));
        headers.push((n, header));
    }
    locate(&sources, Some(&weight_map))?;
    let failed = std::cell::RefCell::new(None);
    let mut tensors = Vec::new();
    for ((_, path, f, _), (n, header)) in opened.iter().zip(&headers) {
        // Offsets in the header count from the end of the header (its 8-byte length first).
        let data_start = 8 + *n as u64;
        for (name, info) in header.tensors() {
            let (begin, end) = info.data_offsets;
            tensors.push((
                name,
                ShardTensor {
                    file: f,
                    path,
                    start: data_start + begin as u64,
                    len: end - begin,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    failed: &failed,
                },
            ));
        }
    }
    let metadata = (!metadata.is_empty())
        .then(|| metadata.into_iter().map(|(k, (v, _))| (k, v)).collect::<HashMap<_, _>>());
    let image = safetensors::serialize(tensors, metadata)
        .map_err(|e| CheckpointError::Model(Gpt2Error::MalformedWeights(e.to_string())))?;
    if let Some((path, source)) = failed.into_inner() {
        return Err(CheckpointError::Io { path, source });
    }
    Ok(image)
}

/// One tensor of a shard, read from its file when [`merge_sharded`]'s image is written. A
/// read error (the header said the bytes are there) is kept in `failed` for the caller, with
/// zeros in place so the image keeps its layout until it is discarded.
struct ShardTensor<'a> {
    file: &'a std::fs::File,
    path: &'a Path,
    start: u64,
    len: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    failed: &'a std::cell::RefCell<Option<(PathBuf, std::io::Error)>>,
}

impl safetensors::View for ShardTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        use std::io::{Read, Seek, SeekFrom};
        let mut buf = vec![0u8; self.len];
        let mut f = self.file;
        if let Err(e) = f.seek(SeekFrom::Start(self.start)).and_then(|_| f.read_exact(&mut buf)) {
            let mut failed = self.failed.borrow_mut();
            if failed.is_none() {
                *failed = Some((self.path.to_path_buf(), e));
            }
        }
        std::borrow::Cow::Owned(buf)
    }

    fn data_len(&self) -> usize {
        self.len
    }
}

/// Where a checkpoint file's tensors come from: a memory map of a file on disk, or bytes
/// already in memory (the worker reads models from its object store).
enum Source<'a> {
    Mapped(MmapedSafetensors),
    Bytes(safetensors::SafeTensors<'a>),
}

impl Source<'_> {
    fn tensors(&self) -> Vec<(String, safetensors::tensor::TensorView<'_>)> {
        match self {
            Source::Mapped(m) => m.tensors(),
            Source::Bytes(b) => b.tensors(),
        }
    }

    fn get(
        &self,
        file: &str,
        name: &str,
    ) -> Result<safetensors::tensor::TensorView<'_>, CheckpointError> {
        match self {
            Source::Mapped(m) => Ok(m.get(name)?),
            Source::Bytes(b) => b.tensor(name).map_err(|e| CheckpointError::MalformedFile {
                file: file.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

/// A single-file checkpoint already in memory (`model.safetensors`'s bytes), with
/// [`load_safetensors`]' checks.
pub fn load_safetensors_bytes(bytes: &[u8], cfg: &Config) -> Result<LlamaWeights, CheckpointError> {
    cfg.validate()?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        CheckpointError::MalformedFile { file: SAFE_WEIGHTS_NAME.into(), reason: e.to_string() }
    })?;
    check_and_convert(cfg, vec![(SAFE_WEIGHTS_NAME, Source::Bytes(st))], None)
}

/// Maps every file, checks the files against the index and each other, then the tensors
/// against the config, converting to f32 one tensor at a time from the mapping.
fn load_files(
    cfg: &Config,
    files: &[(String, PathBuf)],
    weight_map: Option<&BTreeMap<String, String>>,
) -> Result<LlamaWeights, CheckpointError> {
    cfg.validate()?;
    let mut maps = Vec::with_capacity(files.len());
    for (file, path) in files {
        if !path.is_file() {
            return Err(CheckpointError::MissingShard { file: file.clone() });
        }
        // SAFETY: the mapping is only read while `maps` lives; a file modified underneath
        // would give wrong values (caught by the content hash), not unsoundness we rely on.
        let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
            CheckpointError::MalformedFile { file: file.clone(), reason: e.to_string() }
        })?;
        maps.push((file.as_str(), Source::Mapped(st)));
    }
    check_and_convert(cfg, maps, weight_map)
}

/// Where each tensor is stored (headers only, in a deterministic order), checked against
/// the other files and, for a sharded checkpoint, against the index.
fn locate<'f>(
    maps: &[(&'f str, Source<'_>)],
    weight_map: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, &'f str>, CheckpointError> {
    let mut found: BTreeMap<String, &'f str> = BTreeMap::new();
    for (file, st) in maps {
        let mut names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
        names.sort();
        for name in names {
            if let Some(first) = found.insert(name.clone(), *file) {
                return Err(CheckpointError::DuplicateTensor {
                    tensor: name,
                    first: first.to_string(),
                    second: file.to_string(),
                });
            }
        }
    }
    if let Some(wm) = weight_map {
        for (tensor, file) in &found {
            match wm.get(tensor) {
                None => {
                    return Err(CheckpointError::NotInIndex {
                        tensor: tensor.clone(),
                        file: file.to_string(),
                    });
                }
                Some(said) if said != file => {
                    return Err(CheckpointError::WrongShard {
                        tensor: tensor.clone(),
                        index_says: said.clone(),
                        found_in: file.to_string(),
                    });
                }
                Some(_) => {}
            }
        }
        if let Some((tensor, file)) = wm.iter().find(|(t, _)| !found.contains_key(*t)) {
            return Err(CheckpointError::NotInShard { tensor: tensor.clone(), file: file.clone() });
        }
    }
    Ok(found)
}

fn check_and_convert(
    cfg: &Config,
    maps: Vec<(&str, Source<'_>)>,
    weight_map: Option<&BTreeMap<String, String>>,
) -> Result<LlamaWeights, CheckpointError> {
    let found = locate(&maps, weight_map)?;
    let expected: HashMap<String, Vec<usize>> = param_shapes(cfg).into_iter().collect();
    let head_shape = vec![cfg.vocab_size, cfg.hidden_size];
    // Names and shapes first: a wrong checkpoint is refused before any value is converted.
    for (name, file) in &found {
        if is_known_buffer(name) {
            continue;
        }
        let want = match expected.get(name) {
            Some(s) => s,
            // Tied head: transformers drops it on save and re-ties it on load; accept it.
            None if name == "lm_head.weight" && cfg.tie_word_embeddings => &head_shape,
            None => {
                return Err(CheckpointError::UnexpectedTensor {
                    tensor: name.clone(),
                    file: file.to_string(),
                });
            }
        };
        let Some((_, st)) = maps.iter().find(|(f, _)| f == file) else { continue };
        let view = st.get(file, name)?;
        if view.shape() != want.as_slice() {
            return Err(CheckpointError::ShapeMismatch {
                tensor: name.clone(),
                file: file.to_string(),
                expected: want.clone(),
                got: view.shape().to_vec(),
            });
        }
        if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(CheckpointError::UnsupportedDType {
                tensor: name.clone(),
                file: file.to_string(),
                dtype: format!("{:?}", view.dtype()),
            });
        }
    }
    if let Some((name, _)) = param_shapes(cfg).into_iter().find(|(n, _)| !found.contains_key(n)) {
        return Err(CheckpointError::MissingTensor { tensor: name });
    }
    let mut tensors = BTreeMap::new();
    // Shard by shard, each mapping dropped once its tensors are converted: the peak is the
    // f32 model plus one shard's pages, not plus the whole checkpoint.
    for (file, st) in maps {
        for (name, view) in st.tensors() {
            if !expected.contains_key(&name) {
                continue; // a known buffer or the tied head, checked above
            }
            let Some(vals) = to_f32_finite(view.dtype(), view.data()) else {
                return Err(CheckpointError::NonFinite { tensor: name, file: file.to_string() });
            };
            tensors.insert(name, Tensor::from_vec(vals, view.shape(), &Device::Cpu)?);
        }
    }
    LlamaWeights::from_tensors(cfg, tensors)
}

/// Values per parallel chunk when converting: fixed, so the work split never depends on the
/// thread count (the result could not anyway: each value converts on its own).
const CONVERT_CHUNK: usize = 1 << 16;

/// A tensor's little-endian f32, f16 or bf16 bytes as f32 values in one parallel pass
/// straight from the file's pages (no intermediate tensors), or None if any value is not
/// finite. f16 and bf16 widen exactly; the dtype was checked before.
fn to_f32_finite(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    use rayon::prelude::*;
    let width = match dtype {
        Dtype::F16 | Dtype::BF16 => 2,
        _ => 4,
    };
    let mut out = vec![0f32; data.len() / width];
    let finite = out.par_chunks_mut(CONVERT_CHUNK).zip(data.par_chunks(CONVERT_CHUNK * width)).all(
        |(dst, src)| {
            let mut ok = true;
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(width)) {
                *d = match dtype {
                    Dtype::BF16 => {
                        f32::from_bits(u32::from(u16::from_le_bytes([s[0], s[1]])) << 16)
                    }
                    Dtype::F16 => half::f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32(),
                    _ => f32::from_le_bytes([s[0], s[1], s[2], s[3]]),
                };
                ok &= d.is_finite();
            }
            ok
        },
    );
    finite.then_some(out)
}

/// HF-layout f32 safetensors image as `save_pretrained` writes it: HF names, no
/// `lm_head.weight` when tied, `format: pt` metadata (which `transformers` requires).
pub fn safetensors_bytes(weights: &LlamaWeights) -> Result<Vec<u8>, CheckpointError> {
    let mut data: Vec<(&str, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in &weights.tensors {
        let vals = t.flatten_all()?.to_vec1::<f32>()?;
        let mut buf = Vec::with_capacity(vals.len() * 4);
        for v in vals {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        data.push((name, t.dims().to_vec(), buf));
    }
    let malformed = |e: safetensors::SafeTensorError| Gpt2Error::MalformedWeights(e.to_string());
    let views = data
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.to_string(), v))
                .map_err(malformed)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    Ok(safetensors::serialize(views, Some(meta)).map_err(malformed)?)
}

/// Writes [`safetensors_bytes`] to `path` atomically (e.g. `dir/model.safetensors`).
pub fn save_safetensors(weights: &LlamaWeights, path: &Path) -> Result<(), CheckpointError> {
    let bytes = safetensors_bytes(weights)?;
    Ok(crate::weights::write_atomic(path, &bytes)?)
}
