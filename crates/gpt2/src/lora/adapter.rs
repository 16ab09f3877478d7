//! The adapter's matrices: PEFT init, strict load, save, merge, and the branch the models
//! apply.

use super::{
    ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, LoraBase, LoraConfig, LoraError, PEFT_PREFIX,
};
use crate::SeededRng;
use crate::weights::{weights_hash, write_atomic};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use posthuman_types::Hash32;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// PEFT's tensor names of a module's A and B.
fn tensor_names(module: &str) -> (String, String) {
    (format!("{PEFT_PREFIX}{module}.lora_A.weight"), format!("{PEFT_PREFIX}{module}.lora_B.weight"))
}

/// One targeted layer's LoRA branch as a model applies it: y += dropout(x)·Aᵀ·Bᵀ·scale.
#[derive(Clone, Debug)]
pub(crate) struct LoraBranch {
    pub a: Tensor,
    pub b: Tensor,
    pub a_name: String,
    pub b_name: String,
    pub scale: f64,
    pub dropout: f32,
}

impl LoraBranch {
    /// The branch's output for x (…, in) → (…, out); `seed` draws the dropout mask. Without
    /// `grad` the adapter is detached (inference builds no graph).
    pub fn apply(&self, x: &Tensor, seed: Option<u64>, grad: bool) -> candle_core::Result<Tensor> {
        let (a, b) = if grad {
            (self.a.clone(), self.b.clone())
        } else {
            (self.a.detach(), self.b.detach())
        };
        let x = match seed {
            Some(s) if self.dropout > 0.0 => crate::ops::dropout(x, self.dropout, s)?,
            _ => x.clone(),
        };
        let (out, inp) = (self.b.dim(0)?, self.a.dim(1)?);
        let mut dims = x.dims().to_vec();
        let y = x.reshape(((), inp))?.matmul(&a.t()?)?.matmul(&b.t()?)?;
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        (y * self.scale)?.reshape(dims)
    }
}

/// A LoRA adapter over one base: its config, the targeted layers, and A/B as trainable vars.
/// (Not `Clone`: a `VarMap` clone would share the variables, and training one copy would
/// move the other.)
pub struct LoraAdapter {
    cfg: LoraConfig,
    base: LoraBase,
    targets: Vec<usize>,
    vm: VarMap,
}

impl std::fmt::Debug for LoraAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter")
            .field("cfg", &self.cfg)
            .field("base", &self.base)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LoraError + '_ {
    move |source| LoraError::Io { path: path.to_path_buf(), source }
}

impl LoraAdapter {
    /// A fresh adapter with PEFT's init: A ~ U(±1/√in) (torch's `kaiming_uniform_(a=√5)`),
    /// B = 0, so the adapted model starts equal to its base. A's are drawn from `seed` in
    /// module order.
    pub fn init(cfg: LoraConfig, base: &LoraBase, seed: u64) -> Result<Self, LoraError> {
        let targets = cfg.validate(base)?;
        match cfg.extra.get("init_lora_weights") {
            None | Some(Value::Null | Value::Bool(true)) => {}
            Some(other) => {
                return Err(LoraError::Unsupported {
                    field: "init_lora_weights",
                    value: other.to_string(),
                    supported: "true (PEFT's default init)",
                });
            }
        }
        let mut rng = SeededRng::new(seed);
        let mut tensors = BTreeMap::new();
        for &i in &targets {
            let l = &base.layers()[i];
            let bound = 1.0 / (l.in_features as f64).sqrt();
            let a: Vec<f32> = (0..cfg.r * l.in_features)
                .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
                .collect();
            let (an, bn) = tensor_names(&l.module);
            tensors.insert(an, Tensor::from_vec(a, (cfg.r, l.in_features), &Device::Cpu)?);
            tensors.insert(bn, Tensor::zeros((l.out_features, cfg.r), DType::F32, &Device::Cpu)?);
        }
        Self::from_tensors(cfg, base, tensors)
    }

    /// An adapter from tensors under PEFT's names, checked strictly against `cfg` and `base`.
    pub fn from_tensors(
        cfg: LoraConfig,
        base: &LoraBase,
        mut tensors: BTreeMap<String, Tensor>,
    ) -> Result<Self, LoraError> {
        let targets = cfg.validate(base)?;
        let vm = VarMap::new();
        {
            let mut data = vm.data().lock().map_err(|_| {
                LoraError::Candle(candle_core::Error::Msg("adapter var map lock poisoned".into()))
            })?;
            for &i in &targets {
                let l = &base.layers()[i];
                let (an, bn) = tensor_names(&l.module);
                for (name, shape) in [(an, [cfg.r, l.in_features]), (bn, [l.out_features, cfg.r])] {
                    let t = tensors
                        .remove(&name)
                        .ok_or_else(|| LoraError::MissingTensor { name: name.clone() })?;
                    if t.dims() != shape {
                        return Err(LoraError::ShapeMismatch {
                            tensor: name,
                            expected: shape.to_vec(),
                            got: t.dims().to_vec(),
                        });
                    }
                    let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.detach();
                    data.insert(name, Var::from_tensor(&t)?);
                }
            }
        }
        if let Some(name) = tensors.into_keys().next() {
            return Err(LoraError::UnexpectedTensor { name });
        }
        Ok(Self { cfg, base: base.clone(), targets, vm })
    }

    /// Parses PEFT's two files' contents: the config JSON and the safetensors bytes
    /// (f32/f16/bf16, converted to f32).
    pub fn from_bytes(
        config_json: &str,
        weights: &[u8],
        base: &LoraBase,
    ) -> Result<Self, LoraError> {
        let cfg = LoraConfig::from_json(config_json)?;
        cfg.validate(base)?;
        let st = SafeTensors::deserialize(weights)
            .map_err(|e| LoraError::MalformedWeights(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                other => {
                    return Err(LoraError::UnsupportedDType {
                        tensor: name,
                        dtype: format!("{other:?}"),
                    });
                }
            };
            let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)?;
            tensors.insert(name, t);
        }
        Self::from_tensors(cfg, base, tensors)
    }

    /// Loads `adapter_config.json` + `adapter_model.safetensors` from `dir` (as `peft` saves).
    pub fn load(dir: &Path, base: &LoraBase) -> Result<Self, LoraError> {
        let cp = dir.join(ADAPTER_CONFIG_NAME);
        let wp = dir.join(ADAPTER_WEIGHTS_NAME);
        let cfg = std::fs::read_to_string(&cp).map_err(io_err(&cp))?;
        let w = std::fs::read(&wp).map_err(io_err(&wp))?;
        Self::from_bytes(&cfg, &w, base)
    }

    /// The current A/B values under PEFT's names (copies, on the CPU: what is saved,
    /// hashed and merged into the CPU-resident base weights).
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>, LoraError> {
        crate::weights::snapshot_var_map(&self.vm)?
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?)))
            .collect()
    }

    /// The same adapter with its variables on `device` (the model it trains with lives
    /// there; an adapter is made on the CPU).
    pub fn to_device(self, device: &Device) -> Result<Self, LoraError> {
        if device.same_device(&Device::Cpu) {
            return Ok(self);
        }
        let vm = crate::weights::var_map_of(&self.tensors()?, device)?;
        Ok(Self { vm, ..self })
    }

    /// `adapter_model.safetensors` bytes: f32, PEFT's names, `format: pt` metadata as peft writes.
    pub fn safetensors_bytes(&self) -> Result<Vec<u8>, LoraError> {
        let tensors = self.tensors()?;
        let mut bufs = Vec::with_capacity(tensors.len());
        for (name, t) in &tensors {
            let vals = t.flatten_all()?.to_vec1::<f32>()?;
            let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            bufs.push((name.clone(), t.dims().to_vec(), bytes));
        }
        let views = bufs
            .iter()
            .map(|(n, shape, b)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| LoraError::MalformedWeights(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::tensor::serialize(views, Some(meta))
            .map_err(|e| LoraError::MalformedWeights(e.to_string()))
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir` (created if
    /// needed), each atomically.
    pub fn save(&self, dir: &Path) -> Result<(), LoraError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        write_atomic(&dir.join(ADAPTER_WEIGHTS_NAME), &self.safetensors_bytes()?)?;
        write_atomic(&dir.join(ADAPTER_CONFIG_NAME), self.cfg.to_json()?.as_bytes())?;
        Ok(())
    }

    pub fn config(&self) -> &LoraConfig {
        &self.cfg
    }

    pub fn base(&self) -> &LoraBase {
        &self.base
    }

    /// The trainable A/B variables, for [`crate::AdamW::new`]: the base stays frozen.
    pub fn var_map(&self) -> &VarMap {
        &self.vm
    }

    /// What the adapter is, without its values: its settings, the layers and values it
    /// trains, its hash, and the sizes the caller measured (its file; one checkpoint of it).
    pub fn describe(
        &self,
        adapter_bytes: u64,
        checkpoint_bytes: u64,
    ) -> Result<posthuman_types::LoraOutput, LoraError> {
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(posthuman_types::LoraOutput {
            r: n(self.cfg.r),
            lora_alpha: self.cfg.lora_alpha,
            lora_dropout: self.cfg.lora_dropout,
            target_modules: self.cfg.target_modules.clone(),
            targeted_layers: n(self.targets.len()),
            adapter_params: self.num_params() as u64,
            adapter_hash: self.hash()?,
            adapter_bytes,
            checkpoint_bytes,
        })
    }

    /// Trainable values in the adapter.
    pub fn num_params(&self) -> usize {
        self.targets
            .iter()
            .map(|&i| {
                self.cfg.r
                    * (self.base.layers()[i].in_features + self.base.layers()[i].out_features)
            })
            .sum()
    }

    /// The canonical hash of the adapter tensors ([`crate::weights_hash`] over PEFT's names).
    pub fn hash(&self) -> Result<Hash32, LoraError> {
        let t = self.tensors()?;
        Ok(weights_hash(t.iter().map(|(k, v)| (k.as_str(), v)))?)
    }

    /// The branch of the layer at PEFT module path `module`, if targeted; the tensors are the
    /// adapter's variables, so gradients reach them.
    pub(crate) fn branch(&self, module: &str) -> Result<Option<LoraBranch>, LoraError> {
        if !self.targets.iter().any(|&i| self.base.layers()[i].module == module) {
            return Ok(None);
        }
        let (a_name, b_name) = tensor_names(module);
        let data = self.vm.data().lock().map_err(|_| {
            LoraError::Candle(candle_core::Error::Msg("adapter var map lock poisoned".into()))
        })?;
        let get = |n: &str| {
            data.get(n)
                .map(|v| v.as_tensor().clone())
                .ok_or_else(|| LoraError::MissingTensor { name: n.to_string() })
        };
        Ok(Some(LoraBranch {
            a: get(&a_name)?,
            b: get(&b_name)?,
            a_name,
            b_name,
            scale: self.cfg.scale(),
            dropout: self.cfg.lora_dropout as f32,
        }))
    }

    /// Checks that this adapter was made for `base` (same family, layers and sizes).
    pub(crate) fn check_base(&self, base: &LoraBase) -> Result<(), LoraError> {
        if self.base.family() != base.family() || self.base.layers() != base.layers() {
            return Err(LoraError::WrongBase(format!(
                "the adapter targets a {} base of other sizes or family than this {} model",
                self.base.family().name(),
                base.family().name()
            )));
        }
        Ok(())
    }

    /// The base weights (this crate's names) with every targeted W replaced by
    /// W + scale·B·A (transposed when the base stores (in, out)): ordinary weights of the
    /// derived model, whose canonical hash is its identity. Untargeted tensors are unchanged.
    pub fn merge(
        &self,
        base_weights: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, LoraError> {
        let mut out = base_weights.clone();
        let tensors = self.tensors()?;
        for &i in &self.targets {
            let l = &self.base.layers()[i];
            let (an, bn) = tensor_names(&l.module);
            let (Some(a), Some(b)) = (tensors.get(&an), tensors.get(&bn)) else {
                return Err(LoraError::MissingTensor { name: an });
            };
            let w = out
                .get(&l.weight)
                .ok_or_else(|| LoraError::BaseTensorMissing { name: l.weight.clone() })?;
            let mut delta = (b.matmul(a)? * self.cfg.scale())?;
            if self.base.family().fan_in_fan_out() {
                delta = delta.t()?.contiguous()?;
            }
            if w.dims() != delta.dims() {
                return Err(LoraError::ShapeMismatch {
                    tensor: l.weight.clone(),
                    expected: delta.dims().to_vec(),
                    got: w.dims().to_vec(),
                });
            }
            let merged = (w.to_dtype(DType::F32)?.detach() + delta)?;
            out.insert(l.weight.clone(), merged);
        }
        Ok(out)
    }
}
