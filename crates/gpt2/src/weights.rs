//! Weights: GPT-2 init, strict safetensors load/save in HF layout, and the canonical hash.

use crate::model::param_shapes;
use crate::{Config, Gpt2, Gpt2Error, SeededRng};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use posthuman_types::Hash32;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A complete, validated set of f32 CPU tensors under canonical HF names (no prefix).
#[derive(Clone, Debug)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
}

fn f32_vec(t: &Tensor) -> Result<Vec<f32>, Gpt2Error> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl Weights {
    /// Checks that `tensors` holds exactly the config's parameters with the right shapes.
    pub fn from_tensors(
        cfg: &Config,
        tensors: BTreeMap<String, Tensor>,
    ) -> Result<Self, Gpt2Error> {
        cfg.validate()?;
        let expected = param_shapes(cfg);
        let mut out = BTreeMap::new();
        for (name, shape) in &expected {
            let t =
                tensors.get(name).ok_or_else(|| Gpt2Error::MissingTensor { name: name.clone() })?;
            if t.dims() != shape.as_slice() {
                return Err(Gpt2Error::ConfigMismatch {
                    tensor: name.clone(),
                    expected: shape.clone(),
                    got: t.dims().to_vec(),
                });
            }
            out.insert(name.clone(), t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.detach());
        }
        if let Some(extra) = tensors.keys().find(|k| !out.contains_key(*k)) {
            return Err(Gpt2Error::UnexpectedTensor { name: extra.clone() });
        }
        Ok(Self { tensors: out })
    }

    /// Snapshot of a training `VarMap` (copies the current values).
    pub fn from_var_map(cfg: &Config, vm: &VarMap) -> Result<Self, Gpt2Error> {
        Self::from_tensors(cfg, snapshot_var_map(vm)?)
    }

    /// Trainable copies of these weights on `device`.
    pub fn to_var_map(&self, device: &Device) -> Result<VarMap, Gpt2Error> {
        var_map_of(&self.tensors, device)
    }

    /// A frozen model (inference / evaluation) on `device`.
    pub fn model(&self, cfg: &Config, device: &Device) -> Result<Gpt2, Gpt2Error> {
        let map: HashMap<String, Tensor> = self.tensors.clone().into_iter().collect();
        Ok(Gpt2::new(cfg, VarBuilder::from_tensors(map, DType::F32, device))?)
    }

    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Canonical content hash (see [`weights_hash`]).
    pub fn hash(&self) -> Result<Hash32, Gpt2Error> {
        weights_hash(self.tensors.iter().map(|(k, v)| (k.as_str(), v)))
    }
}

/// Copies of a `VarMap`'s current values by name (any family's weights snapshot).
pub fn snapshot_var_map(vm: &VarMap) -> Result<BTreeMap<String, Tensor>, Gpt2Error> {
    let data =
        vm.data().lock().map_err(|_| Gpt2Error::InvalidConfig("var map lock poisoned".into()))?;
    data.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?))).collect()
}

/// A trainable `VarMap` holding copies of `tensors` on `device`.
pub fn var_map_of(
    tensors: &BTreeMap<String, Tensor>,
    device: &Device,
) -> Result<VarMap, Gpt2Error> {
    let vm = VarMap::new();
    {
        let mut data = vm
            .data()
            .lock()
            .map_err(|_| Gpt2Error::InvalidConfig("var map lock poisoned".into()))?;
        for (k, t) in tensors {
            data.insert(k.clone(), Var::from_tensor(&t.to_device(device)?)?);
        }
    }
    Ok(vm)
}

/// GPT-2 initialisation as HF `_init_weights`: N(0, initializer_range) for matrices and
/// embeddings, N(0, range/√(2·n_layer)) for the residual projections (`c_proj`), zero biases,
/// unit LayerNorm weights. Draws from [`SeededRng`] in [`param_shapes`] order.
pub fn init_weights(cfg: &Config, seed: u64) -> Result<VarMap, Gpt2Error> {
    cfg.validate()?;
    let mut rng = SeededRng::new(seed);
    let vm = VarMap::new();
    let mut data =
        vm.data().lock().map_err(|_| Gpt2Error::InvalidConfig("var map lock poisoned".into()))?;
    for (name, shape) in param_shapes(cfg) {
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = if shape.len() == 1 {
            let one = name.contains("ln_") && name.ends_with(".weight");
            vec![if one { 1.0 } else { 0.0 }; n]
        } else {
            let std = if name.ends_with("c_proj.weight") {
                cfg.initializer_range / (2.0 * cfg.n_layer as f64).sqrt()
            } else {
                cfg.initializer_range
            };
            (0..n).map(|_| (rng.normal() * std) as f32).collect()
        };
        data.insert(name, Var::from_tensor(&Tensor::from_vec(vals, shape, &Device::Cpu)?)?);
    }
    drop(data);
    Ok(vm)
}

/// Canonical SHA-256 over (name, shape, f32 little-endian values) in name order: independent
/// of file layout, tensor order and storage dtype of the source file.
pub fn weights_hash<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
) -> Result<Hash32, Gpt2Error> {
    let mut sorted: Vec<(&str, &Tensor)> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = CanonicalHasher::new();
    for (name, t) in sorted {
        h.tensor(name, t.dims());
        h.values(&f32_vec(t)?);
    }
    Ok(h.finish())
}

/// The canonical hash's byte stream, in one place: [`weights_hash`] feeds it whole tensors,
/// [`check_safetensors_file`] a chunk at a time. Tensors must come in name order, each
/// header followed by all its values.
struct CanonicalHasher(Sha256);

impl CanonicalHasher {
    fn new() -> Self {
        let mut h = Sha256::new();
        h.update(b"posthuman-gpt2-weights-v1\0");
        Self(h)
    }

    fn tensor(&mut self, name: &str, dims: &[usize]) {
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update((dims.len() as u64).to_le_bytes());
        for &d in dims {
            self.0.update((d as u64).to_le_bytes());
        }
    }

    fn values(&mut self, vals: &[f32]) {
        let mut buf = Vec::with_capacity(vals.len() * 4);
        for v in vals {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        self.0.update(&buf);
    }

    fn finish(self) -> Hash32 {
        Hash32(self.0.finalize().into())
    }
}

/// HF buffers that old checkpoints carry and the model recomputes (causal mask, -1e4).
fn is_known_buffer(name: &str) -> bool {
    name.starts_with("h.") && (name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias"))
}

/// The shape a stored tensor must have (an untied `lm_head.weight` is the embedding's), or
/// the tensor is one a GPT-2 checkpoint does not have. `raw` is its stored name.
fn expected_shape(
    expected: &HashMap<String, Vec<usize>>,
    name: &str,
    raw: &str,
    cfg: &Config,
) -> Result<Vec<usize>, Gpt2Error> {
    if name == "lm_head.weight" {
        return Ok(vec![cfg.vocab_size, cfg.n_embd]);
    }
    expected.get(name).cloned().ok_or_else(|| Gpt2Error::UnexpectedTensor { name: raw.to_string() })
}

/// Strictly parses a safetensors image against `cfg`: every expected tensor present once with
/// the right shape, F32/F16/BF16 only, finite values, nothing unknown besides HF's attention
/// buffers and a tied `lm_head.weight`; names may carry a `transformer.` prefix.
pub fn load_safetensors_bytes(bytes: &[u8], cfg: &Config) -> Result<Weights, Gpt2Error> {
    cfg.validate()?;
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| Gpt2Error::MalformedWeights(e.to_string()))?;
    let expected: HashMap<String, Vec<usize>> = param_shapes(cfg).into_iter().collect();
    let mut tensors = BTreeMap::new();
    for (raw, view) in st.tensors() {
        let name = raw.strip_prefix("transformer.").unwrap_or(&raw).to_string();
        if is_known_buffer(&name) {
            continue;
        }
        let want = expected_shape(&expected, &name, &raw, cfg)?;
        if view.shape() != want.as_slice() {
            return Err(Gpt2Error::ConfigMismatch {
                tensor: name,
                expected: want,
                got: view.shape().to_vec(),
            });
        }
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(Gpt2Error::UnsupportedDType {
                    tensor: name,
                    dtype: format!("{other:?}"),
                });
            }
        };
        if name == "lm_head.weight" {
            continue; // tied to wte: HF drops it on save; accept it on load
        }
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)?
            .to_dtype(DType::F32)?;
        if f32_vec(&t)?.iter().any(|v| !v.is_finite()) {
            return Err(Gpt2Error::MalformedWeights(format!(
                "tensor `{name}` has non-finite values"
            )));
        }
        if tensors.insert(name.clone(), t).is_some() {
            return Err(Gpt2Error::MalformedWeights(format!("tensor `{name}` appears twice")));
        }
    }
    Weights::from_tensors(cfg, tensors)
}

/// What [`check_safetensors_file`] reads of a file at once: a few MiB per check, whatever
/// the file's size (a multiple of every accepted dtype's size).
const CHECK_CHUNK: usize = 1 << 20;

/// The largest safetensors header accepted (the `safetensors` crate's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// A tensor the file holds under a canonical name: where its bytes are and how to read them.
struct Stored {
    dtype: DType,
    shape: Vec<usize>,
    /// Byte range within the data section.
    start: u64,
    end: u64,
}

/// Exactly [`load_safetensors_bytes`]'s checks on a file, and the canonical hash
/// ([`Weights::hash`]) of the weights it would load, read in bounded chunks: memory is the
/// header plus a few MiB whatever the file's size, where loading holds every weight. For
/// validating uploads (the API streams them to disk first); the file is not loaded.
pub fn check_safetensors_file(path: &Path, cfg: &Config) -> Result<Hash32, Gpt2Error> {
    use safetensors::SafeTensorError as E;
    use std::io::{Read, Seek, SeekFrom};
    cfg.validate()?;
    let io = |source| Gpt2Error::Io { path: path.to_path_buf(), source };
    let malformed = |e: E| Gpt2Error::MalformedWeights(e.to_string());
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();

    // The header, with `SafeTensors::read_metadata`'s checks: a length within the limit and
    // the file, UTF-8 JSON, offsets that tile the data section exactly to the end of the file.
    if file_len < 8 {
        return Err(malformed(E::HeaderTooSmall));
    }
    let mut len8 = [0u8; 8];
    file.read_exact(&mut len8).map_err(io)?;
    let n = u64::from_le_bytes(len8);
    if n > MAX_HEADER {
        return Err(malformed(E::HeaderTooLarge));
    }
    if 8 + n > file_len {
        return Err(malformed(E::InvalidHeaderLength));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    let text = std::str::from_utf8(&header).map_err(|e| malformed(E::InvalidHeader(e)))?;
    let meta: safetensors::tensor::Metadata =
        serde_json::from_str(text).map_err(|e| malformed(E::InvalidHeaderDeserialization(e)))?;
    if meta.data_len() as u64 + 8 + n != file_len {
        return Err(malformed(E::MetadataIncompleteBuffer));
    }

    // Names, shapes and dtypes, as load_safetensors_bytes checks them.
    let expected: HashMap<String, Vec<usize>> = param_shapes(cfg).into_iter().collect();
    let mut stored: BTreeMap<String, Stored> = BTreeMap::new();
    for (raw, info) in meta.tensors() {
        let name = raw.strip_prefix("transformer.").unwrap_or(&raw).to_string();
        if is_known_buffer(&name) {
            continue;
        }
        let want = expected_shape(&expected, &name, &raw, cfg)?;
        if info.shape != want {
            return Err(Gpt2Error::ConfigMismatch {
                tensor: name,
                expected: want,
                got: info.shape.clone(),
            });
        }
        let dtype = match info.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(Gpt2Error::UnsupportedDType {
                    tensor: name,
                    dtype: format!("{other:?}"),
                });
            }
        };
        if name == "lm_head.weight" {
            continue; // tied to wte, as on load
        }
        let (start, end) = (info.data_offsets.0 as u64, info.data_offsets.1 as u64);
        let t = Stored { dtype, shape: info.shape.clone(), start, end };
        if stored.insert(name.clone(), t).is_some() {
            return Err(Gpt2Error::MalformedWeights(format!("tensor `{name}` appears twice")));
        }
    }
    if let Some((name, _)) = param_shapes(cfg).into_iter().find(|(n, _)| !stored.contains_key(n)) {
        return Err(Gpt2Error::MissingTensor { name });
    }

    // Values: finite, hashed in name order as f32, a chunk at a time.
    let mut h = CanonicalHasher::new();
    let mut buf = vec![0u8; CHECK_CHUNK];
    for (name, t) in &stored {
        h.tensor(name, &t.shape);
        file.seek(SeekFrom::Start(8 + n + t.start)).map_err(io)?;
        let mut left = t.end - t.start;
        while left > 0 {
            let k = CHECK_CHUNK.min(left as usize);
            file.read_exact(&mut buf[..k]).map_err(io)?;
            let count = k / t.dtype.size_in_bytes();
            let vals = Tensor::from_raw_buffer(&buf[..k], t.dtype, &[count], &Device::Cpu)?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?;
            if vals.iter().any(|v| !v.is_finite()) {
                return Err(Gpt2Error::MalformedWeights(format!(
                    "tensor `{name}` has non-finite values"
                )));
            }
            h.values(&vals);
            left -= k as u64;
        }
    }
    Ok(h.finish())
}

pub fn load_safetensors(path: &Path, cfg: &Config) -> Result<Weights, Gpt2Error> {
    let bytes =
        std::fs::read(path).map_err(|source| Gpt2Error::Io { path: path.to_path_buf(), source })?;
    load_safetensors_bytes(&bytes, cfg)
}

/// HF-layout safetensors image (names without prefix, `format: pt` metadata that
/// `transformers` requires).
pub fn safetensors_bytes(weights: &Weights) -> Result<Vec<u8>, Gpt2Error> {
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in &weights.tensors {
        let mut buf = Vec::with_capacity(t.elem_count() * 4);
        for v in f32_vec(t)? {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        data.push((name.clone(), t.dims().to_vec(), buf));
    }
    let views = data
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Gpt2Error::MalformedWeights(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(meta))
        .map_err(|e| Gpt2Error::MalformedWeights(e.to_string()))
}

/// Writes [`safetensors_bytes`] to `path` atomically (temp file in the same dir + rename).
pub fn save_safetensors(weights: &Weights, path: &Path) -> Result<(), Gpt2Error> {
    let bytes = safetensors_bytes(weights)?;
    write_atomic(path, &bytes)
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Gpt2Error> {
    let io = |source| Gpt2Error::Io { path: path.to_path_buf(), source };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
