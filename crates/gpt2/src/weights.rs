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
    let mut h = Sha256::new();
    h.update(b"posthuman-gpt2-weights-v1\0");
    for (name, t) in sorted {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((t.rank() as u64).to_le_bytes());
        for &d in t.dims() {
            h.update((d as u64).to_le_bytes());
        }
        let vals = f32_vec(t)?;
        let mut buf = Vec::with_capacity(vals.len() * 4);
        for v in vals {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        h.update(&buf);
    }
    Ok(Hash32(h.finalize().into()))
}

/// HF buffers that old checkpoints carry and the model recomputes (causal mask, -1e4).
fn is_known_buffer(name: &str) -> bool {
    name.starts_with("h.") && (name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias"))
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
        let want = if name == "lm_head.weight" {
            vec![cfg.vocab_size, cfg.n_embd]
        } else {
            expected
                .get(&name)
                .cloned()
                .ok_or_else(|| Gpt2Error::UnexpectedTensor { name: raw.clone() })?
        };
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
