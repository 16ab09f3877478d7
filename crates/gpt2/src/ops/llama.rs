//! Differentiable ops of the Llama family (Llama 2/3/3.x, TinyLlama, SmolLM2, and Mistral,
//! Qwen2 and Qwen3 through the same module; Qwen3's q/k norm is this RMSNorm over head_dim):
//! RMSNorm, rotary embeddings (HF `rotate_half` layout, `rope_theta`, the "llama3"
//! `rope_scaling` frequency rule), the SiLU-gated MLP and causal grouped-query attention.
//!
//! Every op is composed from candle primitives that have a backward (mul, div, sqrt, exp,
//! narrow, cat, matmul, index_select, silu), on any device and dtype; RMSNorm also has a
//! fused CPU f32 kernel with a hand-written backward, checked against the composed one. candle_nn's own
//! `ops::rms_norm` and `rotary_emb::rope` are custom ops without a backward: inside a training
//! graph they silently cut it (tests/ops_grad.rs pins that down), as its layer norm and
//! softmax do; its softmax is avoided here the same way. Linear weights are in HF `nn.Linear`
//! layout (out, in), without biases as Llama ships them.

use candle_core::{D, DType, Device, Result, Tensor, bail};

/// RMSNorm over the last dimension: x / sqrt(mean(x²) + eps) · w (HF `LlamaRMSNorm`); a
/// fused kernel with a hand-written backward for CPU f32, [`rms_norm_composed`] elsewhere.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if super::fused(x) && w.dtype() == DType::F32 {
        x.contiguous()?.apply_op2(&w.contiguous()?, super::rms_norm::RmsNorm { eps: eps as f32 })
    } else {
        rms_norm_composed(x, w, eps)
    }
}

/// [`rms_norm`] from differentiable candle primitives: any device and dtype, the f64 reference.
pub fn rms_norm_composed(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// x · wᵀ over the last dimension of x, with w (out, in) as HF `nn.Linear` stores it.
pub fn linear_no_bias(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&inp) {
        bail!("linear: input {:?} does not end in {inp}", x.dims());
    }
    let y = x.reshape(((), inp))?.matmul(&w.t()?)?;
    if let Some(last) = dims.last_mut() {
        *last = out;
    }
    y.reshape(dims)
}

/// [`linear_no_bias`] with `w` frozen (LoRA's base weights): the same values, but the backward
/// gives x its gradient g·w and nothing else. candle's matmul backward always computes the
/// weight gradient too (xᵀ·g, as many FLOPs as the forward) even when the weight is detached;
/// a LoRA step needs it for no base layer. CPU f32 only (the pass-through below copies CPU
/// storage); elsewhere it is [`linear_no_bias`].
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    // Outside a graph (inference, or the layers before the first LoRA branch) there is no
    // backward to trim.
    if !(super::fused(x) && w.dtype() == DType::F32 && x.track_op()) {
        return linear_no_bias(x, w);
    }
    let (out, inp) = w.dims2()?;
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&inp) {
        bail!("linear: input {:?} does not end in {inp}", x.dims());
    }
    let x2 = x.reshape(((), inp))?;
    let w = w.detach();
    let y = x2.detach().matmul(&w.t()?)?;
    let y = x2.apply_op2(&y, FrozenLinearGrad { w })?;
    if let Some(last) = dims.last_mut() {
        *last = out;
    }
    y.reshape(dims)
}

/// The graph node of y = x·wᵀ for a frozen w: forwards y (computed outside the graph)
/// unchanged, and gives x the gradient g·w in the backward.
struct FrozenLinearGrad {
    w: Tensor,
}

impl candle_core::CustomOp2 for FrozenLinearGrad {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
        y: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let y = super::kernels::cpu_slice::<f32>(y, l)?;
        Ok((candle_core::CpuStorage::F32(y.to_vec()), l.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(&self.w)?), None))
    }
}

/// The SiLU-gated MLP: down(silu(gate(x)) ⊙ up(x)), weights (I, C), (I, C), (C, I).
pub fn swiglu_mlp(x: &Tensor, gate: &Tensor, up: &Tensor, down: &Tensor) -> Result<Tensor> {
    let g = linear_no_bias(x, gate)?.silu()?;
    linear_no_bias(&(g * linear_no_bias(x, up)?)?, down)
}

/// Llama 3's `rope_scaling` ("rope_type": "llama3"): long wavelengths slowed by `factor`,
/// short ones kept, a smooth blend between.
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Rotary inverse frequencies θ^(-2i/d), i < d/2, with the llama3 rule applied when given
/// (HF `_compute_llama3_parameters`, computed in f64).
pub fn rope_inv_freq(head_dim: usize, theta: f64, scaling: Option<&Llama3Scaling>) -> Vec<f64> {
    let base = (0..head_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64));
    let Some(s) = scaling else { return base.collect() };
    let old = s.original_max_position_embeddings as f64;
    let low_wavelen = old / s.low_freq_factor;
    let high_wavelen = old / s.high_freq_factor;
    base.map(|f| {
        let wavelen = 2.0 * std::f64::consts::PI / f;
        if wavelen < high_wavelen {
            f
        } else if wavelen > low_wavelen {
            f / s.factor
        } else {
            let smooth =
                (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
            (1.0 - smooth) * f / s.factor + smooth * f
        }
    })
    .collect()
}

/// cos and sin tables (positions, head_dim/2) for positions `0..positions`.
#[derive(Clone, Debug)]
pub struct RopeTable {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RopeTable {
    /// Angles are computed in f32 as HF does (`inv_freq` f32 × position f32), then cast.
    pub fn new(inv_freq: &[f64], positions: usize, dtype: DType, dev: &Device) -> Result<Self> {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in inv_freq {
                let a = (p as f32) * (f as f32);
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let t = |v: Vec<f32>| Tensor::from_vec(v, (positions, half), dev)?.to_dtype(dtype);
        Ok(Self { cos: t(cos)?, sin: t(sin)? })
    }

    /// Rotates x (B, H, T, D) at positions offset..offset+T.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let t = x.dim(2)?;
        if offset + t > self.cos.dim(0)? {
            bail!("rope: positions up to {} exceed the table's {}", offset + t, self.cos.dim(0)?);
        }
        // A no-op when the dtypes agree; lets one table serve f64 checks and f32 runs.
        let part = |m: &Tensor| m.narrow(0, offset, t)?.to_dtype(x.dtype());
        rope(x, &part(&self.cos)?, &part(&self.sin)?)
    }
}

/// Rotary embedding in HF's `rotate_half` layout: x (B, H, T, D), cos/sin (T, D/2);
/// out = x·cos + rotate_half(x)·sin, where the first and second halves of D form the pairs.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if d % 2 != 0 || cos.dims() != [x.dim(2)?, d / 2] || sin.dims() != cos.dims() {
        bail!("rope: x {:?}, cos {:?}, sin {:?}", x.dims(), cos.dims(), sin.dims());
    }
    let (x1, x2) = (x.narrow(D::Minus1, 0, d / 2)?, x.narrow(D::Minus1, d / 2, d / 2)?);
    let o1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let o2 = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    Tensor::cat(&[&o1, &o2], D::Minus1)
}

/// Repeats each of the H_kv key/value heads `n_rep` times: (B, H_kv, T, D) → (B, H_kv·n_rep,
/// T, D), head h of the result reading kv head h / n_rep (HF `repeat_kv`).
pub fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, h, t, d) = x.dims4()?;
    Tensor::cat(&vec![x; n_rep], 2)?.reshape((b, h * n_rep, t, d))
}

/// Causal grouped-query attention: q (B, H, Tq, D), k and v (B, H_kv, Tk, D) with H_kv
/// dividing H; query i sees keys ≤ Tk−Tq+i. Returns (B, H, Tq, D). The softmax is composed
/// (max-shifted exp over the sum) so it keeps the graph.
pub fn gqa_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, h, tq, d) = q.dims4()?;
    let (bk, hkv, tk, dk) = k.dims4()?;
    if hkv == 0 || h % hkv != 0 || bk != b || dk != d || v.dims() != k.dims() || tq > tk {
        bail!("attention: q {:?}, k {:?}, v {:?}", q.dims(), k.dims(), v.dims());
    }
    let (k, v) = (repeat_kv(k, h / hkv)?, repeat_kv(v, h / hkv)?);
    let att = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * (1.0 / (d as f64).sqrt()))?;
    let offset = tk - tq;
    let bias: Vec<f32> = (0..tq * tk)
        .map(|i| if i % tk > offset + i / tk { f32::NEG_INFINITY } else { 0.0 })
        .collect();
    let bias = Tensor::from_vec(bias, (tq, tk), q.device())?.to_dtype(q.dtype())?;
    let att = att.broadcast_add(&bias)?;
    // The shift only guards exp against overflow; it cancels in the ratio, so no gradient.
    let max = att.max_keepdim(D::Minus1)?.detach();
    let e = att.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.matmul(&v.contiguous()?)
}
