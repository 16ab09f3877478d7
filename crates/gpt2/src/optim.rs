//! AdamW (PyTorch semantics, decoupled weight decay), gradient accumulation, global-norm
//! clipping, and optimizer state files for checkpoint/resume.
//!
//! Weight decay follows nanoGPT: tensors of rank ≥ 2 (every matmul weight and the `wte`/`wpe`
//! embeddings) decay; rank-1 tensors (biases, LayerNorm weights and biases) do not. (HF
//! Trainer's name-based rule misses GPT-2's `ln_*` names and would decay them.)

use crate::Gpt2Error;
use crate::NamedGrads;
use crate::weights::write_atomic;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Tensor, Var};
use candle_nn::VarMap;
use posthuman_types::Hash32;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// nanoGPT's GPT-2 settings: betas (0.9, 0.95), eps 1e-8, weight decay 0.1.
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub decay: bool,
}

/// Gradients of the optimizer's parameters (same order), summed over micro-batches.
#[derive(Clone, Debug)]
pub struct Grads {
    grads: Vec<Vec<f32>>,
}

fn to_f32(t: &Tensor) -> Result<Vec<f32>, Gpt2Error> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// g += t, element by element (no order to depend on the thread count), read in place from CPU
/// f32 storage: a full fine-tune's step adds every weight's gradient once, and the copy that
/// `to_vec1` makes plus a single-threaded add cost as much as a layer's element-wise backward.
fn add_into(g: &mut [f32], t: &Tensor) -> Result<(), Gpt2Error> {
    if t.device().is_cpu() && t.dtype() == DType::F32 {
        crate::ops::kernels::with_slice::<f32, _>(t, |b| {
            add(g, b);
            Ok(())
        })?;
    } else {
        add(g, &to_f32(t)?);
    }
    Ok(())
}

/// g += b in fixed chunks over the rayon pool (each value added once: no order to vary).
fn add(g: &mut [f32], b: &[f32]) {
    const CH: usize = 1 << 14;
    g.par_chunks_mut(CH).zip(b.par_chunks(CH)).for_each(|(a, b)| {
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
    })
}

/// A parameter and its gradient, from a hand-written backward.
pub type ParamGrad = (Tensor, Vec<f32>);

/// One stage of a training step's gradients, as
/// [`crate::llama::Llama::loss_and_grads_layerwise`] hands them over: a candle `GradStore`
/// (the head, the embeddings, the graph fallback) or one decoder layer's parameters with their
/// gradients from the hand-written backward.
pub enum StepGrads<'a> {
    Store(&'a GradStore),
    Params(&'a [ParamGrad]),
}

impl Grads {
    /// Adds one stage's gradients: a store as [`Grads::accumulate`] does, parameters by
    /// identity (a tensor the optimizer does not hold is skipped, as a store's would be).
    pub fn accumulate_step(&mut self, opt: &AdamW, grads: StepGrads<'_>) -> Result<(), Gpt2Error> {
        let params = match grads {
            StepGrads::Store(s) => return self.accumulate(opt, s),
            StepGrads::Params(p) => p,
        };
        for (t, g) in params {
            let Some(i) = opt.params.iter().position(|p| p.var.as_tensor().id() == t.id()) else {
                continue;
            };
            if self.grads[i].len() != g.len() {
                return Err(Gpt2Error::OptimizerState(format!(
                    "gradient of {} has the wrong size",
                    opt.params[i].name
                )));
            }
            add(&mut self.grads[i], g);
        }
        Ok(())
    }

    /// All-zero gradients for `opt`'s parameters, in the CPU step's pooled buffers where the
    /// last step's were handed back ([`Grads::recycle`]): fresh ones each step were ~22k page
    /// faults a step at llama30m (the heap's top given back to the kernel and faulted in again).
    pub fn zeros(opt: &AdamW) -> Self {
        let zeroed = |p: &Param| crate::ops::scratch::zeroed(p.var.elem_count());
        Self { grads: opt.params.iter().map(zeroed).collect() }
    }

    /// Adds one micro-batch's gradients (accumulation is a sum; scale afterwards to average).
    pub fn accumulate(&mut self, opt: &AdamW, store: &GradStore) -> Result<(), Gpt2Error> {
        for (g, p) in self.grads.iter_mut().zip(&opt.params) {
            if let Some(t) = store.get(p.var.as_tensor()) {
                add_into(g, t)?;
            }
        }
        Ok(())
    }

    /// Adds gradients given by parameter name ([`crate::Gpt2::loss_and_grads`]); a name the
    /// optimizer does not hold, or a size mismatch, is an error.
    pub fn accumulate_named(
        &mut self,
        opt: &AdamW,
        named: &[(String, Vec<f32>)],
    ) -> Result<(), Gpt2Error> {
        for (name, vals) in named {
            let i = opt
                .params
                .binary_search_by(|p| p.name.as_str().cmp(name))
                .map_err(|_| Gpt2Error::OptimizerState(format!("no parameter named {name}")))?;
            let g = &mut self.grads[i];
            if g.len() != vals.len() {
                return Err(Gpt2Error::OptimizerState(format!(
                    "gradient of {name} has the wrong size"
                )));
            }
            for (a, &b) in g.iter_mut().zip(vals) {
                *a += b;
            }
        }
        Ok(())
    }

    /// One micro-batch's gradients by name, moved into place (no zeroed buffers, no adding):
    /// the same values as [`Grads::zeros`] + [`Grads::accumulate_named`]. Parameters missing
    /// from `named` get zeros.
    pub fn from_named(opt: &AdamW, named: NamedGrads) -> Result<Self, Gpt2Error> {
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; opt.params.len()];
        for (name, vals) in named {
            let i = opt
                .params
                .binary_search_by(|p| p.name.as_str().cmp(&name))
                .map_err(|_| Gpt2Error::OptimizerState(format!("no parameter named {name}")))?;
            if vals.len() != opt.params[i].var.elem_count() {
                return Err(Gpt2Error::OptimizerState(format!(
                    "gradient of {name} has the wrong size"
                )));
            }
            grads[i] = Some(vals);
        }
        let grads = grads
            .into_iter()
            .zip(&opt.params)
            .map(|(g, p)| g.unwrap_or_else(|| vec![0.0; p.var.elem_count()]))
            .collect();
        Ok(Self { grads })
    }

    pub fn from_store(opt: &AdamW, store: &GradStore) -> Result<Self, Gpt2Error> {
        let mut g = Self::zeros(opt);
        g.accumulate(opt, store)?;
        Ok(g)
    }

    pub fn scale(&mut self, s: f32) {
        self.grads.iter_mut().flatten().for_each(|x| *x *= s);
    }

    /// Global L2 norm in f64: fixed 4,096-value blocks, each summed with four accumulators,
    /// the blocks in parallel and their sums added in order — the same bits for any thread
    /// count (a single sequential f64 chain took ~6 ms a step at 5M parameters).
    pub fn norm(&self) -> f64 {
        const BLOCK: usize = 4096;
        let sums: Vec<f64> = self
            .grads
            .par_iter()
            .flat_map_iter(|g| g.chunks(BLOCK))
            .map(|blk| {
                let mut acc = [0f64; 4];
                let quads = blk.chunks_exact(4);
                let rest = quads.remainder();
                for q in quads {
                    for i in 0..4 {
                        acc[i] += (q[i] as f64) * (q[i] as f64);
                    }
                }
                let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
                for &x in rest {
                    s += (x as f64) * (x as f64);
                }
                s
            })
            .collect();
        sums.iter().sum::<f64>().sqrt()
    }

    /// The gradient of parameter `i` (optimizer order).
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        self.grads.get(i).map(|g| g.as_slice())
    }

    /// Whether every value is finite.
    pub fn is_finite(&self) -> bool {
        self.grads.par_iter().all(|g| g.iter().all(|x| x.is_finite()))
    }

    /// Scales the gradients whose global norm is `norm` ([`Grads::norm`]) so that it is at
    /// most `max_norm` (torch's `clip_grad_norm_`: factor max_norm / (norm + 1e-6)).
    pub fn clip_to(&mut self, norm: f64, max_norm: f64) {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            self.scale(coef as f32);
        }
    }

    /// Hands the gradient buffers to the CPU step's scratch pool, so the next step writes its
    /// gradients there instead of into fresh allocations.
    pub fn recycle(self) {
        crate::ops::scratch::give(self.grads);
    }
}

/// Scales `grads` so their global norm is at most `max_norm` (as torch's `clip_grad_norm_`,
/// factor max_norm / (norm + 1e-6)); returns the norm before clipping. (The norm is NaN or
/// infinite exactly when some gradient is: squares of f32 values sum in f64 without overflow.)
pub fn clip_grad_norm(grads: &mut Grads, max_norm: f64) -> f64 {
    let norm = grads.norm();
    grads.clip_to(norm, max_norm);
    norm
}

/// One parameter's AdamW update, written into the parameter's own CPU storage (no new tensor,
/// no copy back into the variable).
struct AdamUpdate<'a> {
    g: &'a [f32],
    moments: RefCell<(&'a mut [f32], &'a mut [f32])>,
    decay: f32,
    step_size: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    bc2_sqrt: f32,
}

impl AdamUpdate<'_> {
    /// torch.optim.AdamW's arithmetic, elementwise (splitting it over threads never changes a
    /// bit): `w_old` in, the new weights into `w` (which may be `w_old` itself).
    fn apply(&self, w: &mut [f32]) -> Result<(), Gpt2Error> {
        const CH: usize = 1 << 14;
        let mut mv = self
            .moments
            .try_borrow_mut()
            .map_err(|_| Gpt2Error::OptimizerState("optimizer moments borrowed twice".into()))?;
        let (m, v) = &mut *mv;
        if w.len() != self.g.len() || m.len() != w.len() || v.len() != w.len() {
            return Err(Gpt2Error::OptimizerState("gradient and weights differ in size".into()));
        }
        let (decay, step_size, b1, b2, eps, bc2_sqrt) =
            (self.decay, self.step_size, self.b1, self.b2, self.eps, self.bc2_sqrt);
        w.par_chunks_mut(CH)
            .zip(self.g.par_chunks(CH))
            .zip(m.par_chunks_mut(CH).zip(v.par_chunks_mut(CH)))
            .for_each(|((w, g), (m, v))| {
                for j in 0..w.len() {
                    let wd = w[j] * decay;
                    m[j] += (g[j] - m[j]) * (1.0 - b1);
                    v[j] = v[j] * b2 + (1.0 - b2) * g[j] * g[j];
                    let denom = v[j].sqrt() / bc2_sqrt + eps;
                    w[j] = wd + -step_size * (m[j] / denom);
                }
            });
        Ok(())
    }
}

impl InplaceOp1 for AdamUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("adamw: parameters must be f32");
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("adamw: parameters must be contiguous");
        };
        let Some(w) = data.get_mut(a..b) else { candle_core::bail!("adamw: bad layout") };
        self.apply(w).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

/// `data` as little-endian bytes: on little-endian hosts a view of the values themselves. A
/// copy here doubled the state image's cost: a checkpoint held the moments, a copy of their
/// bytes and the serialised image at once (2 × 257 MiB at llama30m; measured over the
/// training step's peak: +290 MiB before, +232 MiB with the view).
fn le_bytes(data: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: any f32 is 4 initialised bytes, u8 has alignment 1, and the view borrows
        // `data` for its lifetime.
        Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data))
        })
    } else {
        Cow::Owned(data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// SHA-256 over the tag, the step counter, then per parameter in name order: name, shape, m and
/// v as little-endian f32 (every length-prefixed), so no two states share a preimage.
struct StateHasher(Sha256);

impl StateHasher {
    fn new(step: u64) -> Self {
        let mut h = Sha256::new();
        h.update(b"posthuman-adamw-state-v1\0");
        h.update(step.to_le_bytes());
        Self(h)
    }

    fn param(&mut self, name: &str, dims: &[usize], m: &[f32], v: &[f32]) {
        let h = &mut self.0;
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((dims.len() as u64).to_le_bytes());
        for &d in dims {
            h.update((d as u64).to_le_bytes());
        }
        for x in [m, v] {
            let mut buf = Vec::with_capacity(4 * x.len());
            for v in x {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            h.update((x.len() as u64).to_le_bytes());
            h.update(&buf);
        }
    }

    fn finish(self) -> Hash32 {
        Hash32(self.0.finalize().into())
    }
}

/// The `format` metadata of an AdamW state image ([`AdamW::state_bytes`]).
const STATE_FORMAT: &str = "posthuman-adamw-v1";

/// The step counter and tensors of an AdamW state image, its header checked.
fn read_state_image(bytes: &[u8]) -> Result<(u64, SafeTensors<'_>), Gpt2Error> {
    let bad = |m: String| Gpt2Error::OptimizerState(m);
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(STATE_FORMAT) {
        return Err(bad("not an AdamW state file".into()));
    }
    let step: u64 = meta
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no step counter".into()))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    Ok((step, st))
}

/// [`AdamW::state_hash`] of a state image written by [`AdamW::state_bytes`], read without an
/// optimizer (an auditor checks a stored checkpoint's moments against a commitment before
/// using them). Malformed images are errors.
pub fn optimizer_state_hash(bytes: &[u8]) -> Result<Hash32, Gpt2Error> {
    let bad = |m: String| Gpt2Error::OptimizerState(m);
    let (step, st) = read_state_image(bytes)?;
    let mut names: Vec<&str> =
        st.names().into_iter().filter_map(|n| n.strip_prefix("m.")).collect();
    names.sort_unstable();
    if 2 * names.len() != st.len() {
        return Err(bad("moments do not pair up".into()));
    }
    let read = |name: String| -> Result<(Vec<usize>, Vec<f32>), Gpt2Error> {
        let t = st.tensor(&name).map_err(|_| bad(format!("missing {name}")))?;
        if t.dtype() != Dtype::F32 {
            return Err(bad(format!("{name} is not f32")));
        }
        let vals = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((t.shape().to_vec(), vals))
    };
    let mut h = StateHasher::new(step);
    for name in names {
        let (dims, m) = read(format!("m.{name}"))?;
        let (vdims, v) = read(format!("v.{name}"))?;
        if dims != vdims {
            return Err(bad(format!("the moments of {name} differ in shape")));
        }
        h.param(name, &dims, &m, &v);
    }
    Ok(h.finish())
}

/// AdamW over the variables of a `VarMap`, in name order.
#[derive(Debug)]
pub struct AdamW {
    params: Vec<Param>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: u64,
    cfg: AdamWConfig,
}

impl AdamW {
    pub fn new(vm: &VarMap, cfg: AdamWConfig) -> Result<Self, Gpt2Error> {
        let data = vm
            .data()
            .lock()
            .map_err(|_| Gpt2Error::OptimizerState("var map lock poisoned".into()))?;
        let mut params: Vec<Param> = data
            .iter()
            .map(|(name, var)| Param {
                name: name.clone(),
                var: var.clone(),
                decay: var.rank() >= 2,
            })
            .collect();
        drop(data);
        params.sort_by(|a, b| a.name.cmp(&b.name));
        let zeros = |p: &Param| crate::ops::scratch::fresh(p.var.elem_count());
        Ok(Self {
            m: params.iter().map(zeros).collect(),
            v: params.iter().map(zeros).collect(),
            params,
            step: 0,
            cfg,
        })
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Steps taken so far (the bias-correction counter).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr` (torch.optim.AdamW arithmetic, in f32).
    pub fn step(&mut self, grads: &Grads, lr: f64) -> Result<(), Gpt2Error> {
        if grads.grads.len() != self.params.len() {
            return Err(Gpt2Error::OptimizerState(
                "gradients belong to another parameter set".into(),
            ));
        }
        self.step += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - c.beta2.powi(self.step as i32)).sqrt() as f32;
        let step_size = (lr / bc1) as f32;
        let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.eps as f32);
        for (i, p) in self.params.iter().enumerate() {
            let g = &grads.grads[i];
            if g.len() != p.var.elem_count() {
                return Err(Gpt2Error::OptimizerState(format!(
                    "gradient of {} has the wrong size",
                    p.name
                )));
            }
            let decay = if p.decay { (1.0 - lr * c.weight_decay) as f32 } else { 1.0 };
            let up = AdamUpdate {
                g,
                moments: RefCell::new((&mut self.m[i], &mut self.v[i])),
                decay,
                step_size,
                b1,
                b2,
                eps,
                bc2_sqrt,
            };
            let t = p.var.as_tensor();
            if t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous() {
                // In place: the variable's storage is what the model reads.
                t.inplace_op1(&up)?;
            } else {
                // Other devices: the update on a host copy, sent back.
                let mut w = to_f32(t)?;
                up.apply(&mut w)?;
                let t =
                    Tensor::from_vec(w, p.var.shape(), &Device::Cpu)?.to_device(p.var.device())?;
                p.var.set(&t)?;
            }
        }
        Ok(())
    }

    /// Moments and step counter as a safetensors image (`m.<name>`, `v.<name>`).
    pub fn state_bytes(&self) -> Result<Vec<u8>, Gpt2Error> {
        let mut bufs: Vec<(String, Vec<usize>, Cow<[u8]>)> = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            for (kind, data) in [("m", &self.m[i]), ("v", &self.v[i])] {
                bufs.push((format!("{kind}.{}", p.name), p.var.dims().to_vec(), le_bytes(data)));
            }
        }
        let views = bufs
            .iter()
            .map(|(n, s, b)| {
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Gpt2Error::OptimizerState(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let meta = HashMap::from([
            ("format".to_string(), STATE_FORMAT.to_string()),
            ("step".to_string(), self.step.to_string()),
        ]);
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Gpt2Error::OptimizerState(e.to_string()))
    }

    /// Restores moments and step counter saved by [`AdamW::state_bytes`] for the same params.
    pub fn load_state_bytes(&mut self, bytes: &[u8]) -> Result<(), Gpt2Error> {
        let bad = |m: String| Gpt2Error::OptimizerState(m);
        let (step, st) = read_state_image(bytes)?;
        if st.len() != 2 * self.params.len() {
            return Err(bad(format!("{} tensors for {} parameters", st.len(), self.params.len())));
        }
        let mut m = Vec::with_capacity(self.params.len());
        let mut v = Vec::with_capacity(self.params.len());
        for p in &self.params {
            for (kind, out) in [("m", &mut m), ("v", &mut v)] {
                let name = format!("{kind}.{}", p.name);
                let t = st.tensor(&name).map_err(|_| bad(format!("missing {name}")))?;
                if t.dtype() != Dtype::F32 || t.shape() != p.var.dims() {
                    return Err(bad(format!("{name} has the wrong dtype or shape")));
                }
                let vals: Vec<f32> = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                out.push(vals);
            }
        }
        (self.m, self.v, self.step) = (m, v, step);
        Ok(())
    }

    /// Canonical content hash of the optimizer state (step counter and both moments of every
    /// parameter): the same as [`optimizer_state_hash`] of [`AdamW::state_bytes`], whatever the
    /// file's layout. Checkpoints commit to it, so the moments a resumed run or an audit
    /// starts from are bound as tightly as the weights.
    pub fn state_hash(&self) -> Hash32 {
        let mut h = StateHasher::new(self.step);
        for (i, p) in self.params.iter().enumerate() {
            h.param(&p.name, p.var.dims(), &self.m[i], &self.v[i]);
        }
        h.finish()
    }

    /// A checkpoint's two commitments, (weights hash, optimizer state hash), the two SHA-256
    /// streams run side by side: the moments are twice the weights' bytes, so hashing the
    /// weights on a second thread hides them (the compute pool is idle at a checkpoint).
    pub fn checkpoint_hashes(
        &self,
        weights: &crate::Weights,
    ) -> Result<(Hash32, Hash32), Gpt2Error> {
        std::thread::scope(|s| {
            let w = s.spawn(|| weights.hash());
            let o = self.state_hash();
            // A panic there is re-raised here, as if both ran on this thread.
            let w = w.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            Ok((w?, o))
        })
    }

    pub fn save_state(&self, path: &Path) -> Result<(), Gpt2Error> {
        write_atomic(path, &self.state_bytes()?)
    }

    pub fn load_state(&mut self, path: &Path) -> Result<(), Gpt2Error> {
        let bytes = std::fs::read(path)
            .map_err(|source| Gpt2Error::Io { path: path.to_path_buf(), source })?;
        self.load_state_bytes(&bytes)
    }
}
