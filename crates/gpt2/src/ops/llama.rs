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

/// True when every tensor is CPU f32, where the fused kernels run.
pub fn fused_f32(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| super::fused(t))
}

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

/// x · wᵀ over the last dimension of x, with w (out, in) as HF `nn.Linear` stores it. On CPU
/// f32 with more than one row, a fused op ([`super::dense`]) whose backward computes only the
/// gradients its inputs need (none for a detached weight); a single row (batch-1 decoding)
/// stays on candle's matmul.
pub fn linear_no_bias(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&inp) {
        bail!("linear: input {:?} does not end in {inp}", x.dims());
    }
    if fused_f32(&[x, w]) && x.elem_count() > inp && w.is_contiguous() {
        return x.contiguous()?.apply_op2(w, super::dense::LinearRows);
    }
    let y = x.reshape(((), inp))?.matmul(&w.t()?)?;
    if let Some(last) = dims.last_mut() {
        *last = out;
    }
    y.reshape(dims)
}

/// [`linear_no_bias`] with `w` frozen (LoRA's base weights): the same values, but the backward
/// gives x its gradient g·w and nothing else (candle's matmul backward would also compute the
/// weight's, xᵀ·g, as many FLOPs as the forward, even for a detached weight; the fused op
/// skips it for any input outside the graph).
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    linear_no_bias(x, &w.detach())
}

/// silu(g) ⊙ u, the SwiGLU gate: one fused pass each way on CPU f32, candle's `silu` and `mul`
/// elsewhere.
pub fn silu_mul(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    if fused_f32(&[g, u]) && g.dims() == u.dims() {
        g.contiguous()?.apply_op2(&u.contiguous()?, super::dense::SiluMul)
    } else {
        g.silu()? * u
    }
}

/// x·wᵀ (+ bias) + scale·(x·aᵀ)·bᵀ for a frozen `w` (and bias) under a LoRA branch a (r, in),
/// b (out, r): one graph node that keeps only x·aᵀ (r values per row) for its backward, where
/// the composed graph keeps the base output, the branch output, its scaled copy and their sum
/// (four out-wide tensors per projection) — most of a LoRA step's activation memory. The
/// forward runs the composed form's products (the same gemm calls as [`linear_no_bias`]) and
/// its scale-and-add in one pass, so the outputs are the same bits. CPU f32 only; the caller
/// falls back to the composed form elsewhere (and for dropout, whose mask needs its own input).
pub fn frozen_lora_linear(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let r = a.dim(0)?;
    if x.dims().last() != Some(&inp)
        || a.dim(1)? != inp
        || b.dims2()? != (out, r)
        || bias.is_some_and(|t| t.dims() != [out])
    {
        bail!(
            "lora linear: x {:?}, w {:?}, a {:?}, b {:?}",
            x.dims(),
            w.dims(),
            a.dims(),
            b.dims()
        );
    }
    let op = FrozenLora {
        w: w.detach().contiguous()?,
        bias: bias.map(|t| t.detach().contiguous()).transpose()?,
        scale,
        xa: std::sync::Mutex::new(None),
    };
    x.contiguous()?.apply_op3(&a.contiguous()?, &b.contiguous()?, op)
}

/// The node of [`frozen_lora_linear`] over x (…, in), a, b: computes y in its forward, keeping
/// x·aᵀ, and in the backward gives x, a and b their gradients from g (with gs = scale·g and
/// d = gs·b): dx = g·w + d·a, da = dᵀ·x, db = gsᵀ·(x·aᵀ), each only when its input is tracked.
struct FrozenLora {
    w: Tensor,
    bias: Option<Tensor>,
    scale: f64,
    /// x·aᵀ (N, r), from the forward.
    xa: std::sync::Mutex<Option<Vec<f32>>>,
}

impl candle_core::CustomOp3 for FrozenLora {
    fn name(&self) -> &'static str {
        "frozen-lora-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &candle_core::CpuStorage,
        xl: &candle_core::Layout,
        as_: &candle_core::CpuStorage,
        al: &candle_core::Layout,
        bs: &candle_core::CpuStorage,
        bl: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use super::kernels::{Mat, cpu_slice, matmul, with_slice};
        use super::scratch;
        let (x, a, b) =
            (cpu_slice::<f32>(xs, xl)?, cpu_slice::<f32>(as_, al)?, cpu_slice::<f32>(bs, bl)?);
        let (out, r) = bl.shape().dims2()?;
        let inp = al.dim(1)?;
        let n = x.len() / inp.max(1);
        let mut y = scratch::take(n * out);
        with_slice::<f32, _>(&self.w, |w| {
            matmul(&mut y, out, Mat::rows(x, n, inp, inp), Mat::t(w, inp, out, inp), false, true)
        })?;
        if let Some(bias) = &self.bias {
            with_slice::<f32, _>(bias, |bv| {
                scratch::par_rows(&mut y, out, |blk| {
                    for row in blk.chunks_exact_mut(out) {
                        for (v, &c) in row.iter_mut().zip(bv) {
                            *v += c;
                        }
                    }
                });
                Ok(())
            })?;
        }
        let mut xa = scratch::take(n * r);
        matmul(&mut xa, r, Mat::rows(x, n, inp, inp), Mat::t(a, inp, r, inp), false, true)?;
        let mut t = scratch::take(n * out);
        matmul(&mut t, out, Mat::rows(&xa, n, r, r), Mat::t(b, r, out, r), false, true)?;
        // y + (t·scale), with the scale as candle's affine applies it (v·mul + add).
        let s = self.scale as f32;
        scratch::par_chunks(&mut y, 1 << 15, |i, yc| {
            let tc = &t[i << 15..(i << 15) + yc.len()];
            for (v, &tv) in yc.iter_mut().zip(tc) {
                *v += tv * s + 0.0;
            }
        });
        scratch::give([t]);
        if let Ok(mut slot) = self.xa.lock() {
            *slot = Some(xa);
        }
        let mut dims = xl.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        Ok((super::kernels::storage(y), candle_core::Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        use super::kernels::{Mat, matmul, tensor, with_slice};
        use super::scratch;
        let Some(xa) = self.xa.lock().ok().and_then(|mut s| s.take()) else {
            bail!("lora linear: the backward ran twice, or before the forward");
        };
        let (out, r) = b.dims2()?;
        let inp = a.dim(1)?;
        let n = x.elem_count() / inp.max(1);
        let s = self.scale as f32;
        let res = with_slice::<f32, _>(grad, |g| {
            with_slice::<f32, _>(x, |xv| {
                with_slice::<f32, _>(a, |av| {
                    with_slice::<f32, _>(b, |bv| {
                        // gs = g·scale, as candle's affine computes it.
                        let mut gs = scratch::take(g.len());
                        scratch::par_chunks(&mut gs, 1 << 15, |i, c| {
                            for (o, &v) in c.iter_mut().zip(&g[i << 15..]) {
                                *o = v * s + 0.0;
                            }
                        });
                        let mut d = scratch::take(n * r);
                        let gsm = Mat::rows(&gs, n, out, out);
                        matmul(&mut d, r, gsm, Mat::rows(bv, out, r, r), false, true)?;
                        let dx = if x.track_op() {
                            let mut dx = scratch::take(n * inp);
                            with_slice::<f32, _>(&self.w, |w| {
                                let gm = Mat::rows(g, n, out, out);
                                matmul(&mut dx, inp, gm, Mat::rows(w, out, inp, inp), false, true)
                            })?;
                            let dm = Mat::rows(&d, n, r, r);
                            matmul(&mut dx, inp, dm, Mat::rows(av, r, inp, inp), true, true)?;
                            Some(tensor(dx, x.shape().clone())?)
                        } else {
                            None
                        };
                        let da = if a.track_op() {
                            let mut da = scratch::take(r * inp);
                            let xm = Mat::rows(xv, n, inp, inp);
                            matmul(&mut da, inp, Mat::t(&d, r, n, r), xm, false, true)?;
                            Some(tensor(da, (r, inp))?)
                        } else {
                            None
                        };
                        let db = if b.track_op() {
                            let mut db = scratch::take(out * r);
                            let xam = Mat::rows(&xa, n, r, r);
                            matmul(&mut db, r, Mat::t(&gs, out, n, out), xam, false, true)?;
                            Some(tensor(db, (out, r))?)
                        } else {
                            None
                        };
                        scratch::give([gs, d]);
                        Ok((dx, da, db))
                    })
                })
            })
        });
        scratch::give([xa]);
        res
    }
}

/// The SiLU-gated MLP with frozen weights (a LoRA step whose adapter does not target the
/// MLP): one graph node that keeps only gate(x) and up(x) for its backward; the composed
/// graph also keeps silu(gate(x)) and the product, which a frozen `down` never needs (its
/// weight gets no gradient). The forward computes exactly what [`swiglu_mlp`] computes.
pub fn frozen_swiglu_mlp(x: &Tensor, gate: &Tensor, up: &Tensor, down: &Tensor) -> Result<Tensor> {
    let (gate, up, down) = (gate.detach(), up.detach(), down.detach());
    let xd = x.detach();
    let g = linear_no_bias(&xd, &gate)?;
    let u = linear_no_bias(&xd, &up)?;
    let y = linear_no_bias(&silu_mul(&g, &u)?, &down)?;
    if !x.track_op() {
        return Ok(y);
    }
    let op = FrozenSwiGluGrad { gate, up, down, g, u, y: std::sync::Mutex::new(Some(y)) };
    x.apply_op1(op)
}

/// The graph node of [`frozen_swiglu_mlp`]: with s = sigmoid(g) and d = grad·down,
/// dx = (d ⊙ u ⊙ s(1 + g(1 − s)))·gate + (d ⊙ silu(g))·up.
struct FrozenSwiGluGrad {
    gate: Tensor,
    up: Tensor,
    down: Tensor,
    g: Tensor,
    u: Tensor,
    /// The output, moved into the graph by the forward (kept once, as the output).
    y: std::sync::Mutex<Option<Tensor>>,
}

impl candle_core::CustomOp1 for FrozenSwiGluGrad {
    fn name(&self) -> &'static str {
        "frozen-swiglu-mlp"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let Some(y) = self.y.lock().ok().and_then(|mut s| s.take()) else {
            bail!("swiglu mlp: the forward ran twice");
        };
        let shape = y.shape().clone();
        let y = super::kernels::with_slice::<f32, _>(&y, |v| Ok(v.to_vec()))?;
        Ok((candle_core::CpuStorage::F32(y), shape))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if fused_f32(&[grad, &self.g, &self.u]) {
            return self.cpu_bwd(grad).map(Some);
        }
        // The products back to the input width: y·w for each weight w (out, in).
        let back = |y: &Tensor, w: &Tensor| y.broadcast_matmul(w);
        let d = back(&grad.detach(), &self.down)?;
        let s = candle_nn::ops::sigmoid(&self.g)?;
        // silu'(g) = s·(1 + g·(1 − s))
        let dsilu = (&s * ((&self.g * (1.0 - &s)?)? + 1.0)?)?;
        let (dg, du) = (((&d * &self.u)? * dsilu)?, (d * self.g.silu()?)?);
        Ok(Some((back(&dg, &self.gate)? + back(&du, &self.up)?)?))
    }
}

impl FrozenSwiGluGrad {
    /// The backward on CPU f32: d = grad·down, the gate's (dg, du) in one pass, and
    /// dx = dg·gate + du·up with the second product accumulated by gemm into the first (no
    /// zeroed outputs, no separate add).
    fn cpu_bwd(&self, grad: &Tensor) -> Result<Tensor> {
        use super::kernels::{Mat, matmul, tensor, with_slice};
        let (i, c) = self.gate.dims2()?;
        let n = grad.elem_count() / c.max(1);
        let mut d = super::scratch::take(n * i);
        with_slice::<f32, _>(grad, |g| {
            with_slice::<f32, _>(&self.down, |w| {
                matmul(&mut d, i, Mat::rows(g, n, c, c), Mat::rows(w, c, i, i), false, true)
            })
        })?;
        let (dg, du) = with_slice::<f32, _>(&self.g, |g| {
            with_slice::<f32, _>(&self.u, |u| super::dense::silu_mul_grads(g, u, &d))
        })?;
        let mut dx = super::scratch::take(n * c);
        let (dgm, dum) = (Mat::rows(&dg, n, i, i), Mat::rows(&du, n, i, i));
        with_slice::<f32, _>(&self.gate, |w| {
            matmul(&mut dx, c, dgm, Mat::rows(w, i, c, c), false, true)
        })?;
        with_slice::<f32, _>(&self.up, |w| {
            matmul(&mut dx, c, dum, Mat::rows(w, i, c, c), true, true)
        })?;
        tensor(dx, grad.shape().clone())
    }
}

/// silu(x·gateᵀ) ⊙ (x·upᵀ), the SwiGLU MLP's hidden activation, for gate and up (I, C): one
/// fused node on CPU f32 with more than one row ([`super::dense`]); elsewhere (and for a
/// single row, batch-1 decoding) [`linear_no_bias`] twice and [`silu_mul`], the same values.
pub fn gate_up(x: &Tensor, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let c = gate.dim(1)?;
    if fused_f32(&[x, gate, up])
        && x.dims().last() == Some(&c)
        && x.elem_count() > c
        && gate.dims() == up.dims()
    {
        let op = super::dense::GateUp { kept: std::sync::Mutex::new(None) };
        return x.contiguous()?.apply_op3(&gate.contiguous()?, &up.contiguous()?, op);
    }
    silu_mul(&linear_no_bias(x, gate)?, &linear_no_bias(x, up)?)
}

/// The SiLU-gated MLP: down(silu(gate(x)) ⊙ up(x)), weights (I, C), (I, C), (C, I).
pub fn swiglu_mlp(x: &Tensor, gate: &Tensor, up: &Tensor, down: &Tensor) -> Result<Tensor> {
    linear_no_bias(&gate_up(x, gate, up)?, down)
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

    /// Rotates x (B, T, H, D), the projections' own layout (no head transposes), at
    /// positions offset..offset+T: equal to [`RopeTable::apply`] on the heads. On CPU f32 a
    /// fused op that keeps nothing for its backward (the rotation's transpose needs only the
    /// tables), where the composed one keeps six half-width products and their sums per call.
    pub fn apply_rows(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, t, _, d) = x.dims4()?;
        if d % 2 != 0 || offset + t > self.cos.dim(0)? || self.cos.dim(1)? != d / 2 {
            bail!(
                "rope: x {:?} at offset {offset} against a table of {:?}",
                x.dims(),
                self.cos.dims()
            );
        }
        let part = |m: &Tensor| m.narrow(0, offset, t)?.to_dtype(x.dtype());
        let (cos, sin) = (part(&self.cos)?, part(&self.sin)?);
        if super::fused(x) {
            return x
                .contiguous()?
                .apply_op1(RopeRows { cos: cos.contiguous()?, sin: sin.contiguous()? });
        }
        let (c, s) = (cos.reshape((t, 1, d / 2))?, sin.reshape((t, 1, d / 2))?);
        let (x1, x2) = (x.narrow(D::Minus1, 0, d / 2)?, x.narrow(D::Minus1, d / 2, d / 2)?);
        let o1 = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
        let o2 = (x2.broadcast_mul(&c)? + x1.broadcast_mul(&s)?)?;
        Tensor::cat(&[&o1, &o2], D::Minus1)
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

/// The fused rotation of [`RopeTable::apply_rows`]: x (B, T, H, D) with cos, sin (T, D/2).
/// Each output value is computed as the composed op computes it (x1·c − x2·s, x2·c + x1·s),
/// so the two agree bit for bit.
struct RopeRows {
    cos: Tensor,
    sin: Tensor,
}

impl RopeRows {
    /// Rotates every D-row of `x` (rows ordered (b, t, h)) by the angles of its position;
    /// `sign` −1 applies the inverse (transposed) rotation, the backward.
    fn rotate(&self, x: &[f32], dims: &[usize], sign: f32) -> Result<Vec<f32>> {
        let &[_, t, h, d] = dims else { bail!("rope: x must be (B, T, H, D), got {dims:?}") };
        super::kernels::with_slice::<f32, _>(&self.cos, |cos| {
            super::kernels::with_slice::<f32, _>(&self.sin, |sin| {
                Ok(super::rows::rope(x, t, h, d, cos, sin, sign))
            })
        })
    }
}

impl candle_core::CustomOp1 for RopeRows {
    fn name(&self) -> &'static str {
        "fused-rope-rows"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = super::kernels::cpu_slice::<f32>(s, l)?;
        let out = self.rotate(x, l.dims(), 1.0)?;
        Ok((super::kernels::storage(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = super::kernels::with_slice::<f32, _>(grad, |g| self.rotate(g, arg.dims(), -1.0))?;
        Ok(Some(super::kernels::tensor(dx, arg.shape().clone())?))
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

/// Causal grouped-query self-attention on rows: q (B, T, H·D), k and v (B, T, Hkv·D), the
/// projections' own layout (no head transposes) → (B, T, H·D), equal to [`gqa_attention`]
/// over the heads. On CPU f32 a fused op with a hand-written backward that keeps one
/// probability matrix per head (the composed graph keeps five score-sized tensors per head and
/// k, v repeated per query head); elsewhere the composed op.
pub fn causal_gqa_rows(q: &Tensor, k: &Tensor, v: &Tensor, h: usize, hkv: usize) -> Result<Tensor> {
    let (b, t, c) = q.dims3()?;
    if h == 0 || hkv == 0 || !h.is_multiple_of(hkv) || !c.is_multiple_of(h) {
        bail!("attention: q {:?} for {h} heads over {hkv} kv heads", q.dims());
    }
    let d = c / h;
    if k.dims() != [b, t, hkv * d] || v.dims() != k.dims() {
        bail!("attention: q {:?}, k {:?}, v {:?}", q.dims(), k.dims(), v.dims());
    }
    if super::fused(q) && super::fused(k) && super::fused(v) {
        let op = super::attention::GqaAttention {
            h,
            hkv,
            keep: super::tracked(&[q, k, v]),
            probs: std::sync::Mutex::new(None),
        };
        return q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op);
    }
    let heads = |x: &Tensor, n: usize| x.reshape((b, t, n, d))?.transpose(1, 2);
    gqa_attention(&heads(q, h)?, &heads(k, hkv)?, &heads(v, hkv)?)?
        .transpose(1, 2)?
        .reshape((b, t, c))
}

/// Grouped-query attention of queries q (B, Tq, H·D) over cached and new keys and values
/// (B, Tk, Hkv·D), Tk ≥ Tq (query i sees keys ≤ Tk−Tq+i), for generation: no graph. On CPU
/// f32 the fused kernel reads the cache in place; elsewhere the composed op on the heads.
pub fn cached_gqa_rows(q: &Tensor, k: &Tensor, v: &Tensor, h: usize, hkv: usize) -> Result<Tensor> {
    let (b, tq, c) = q.dims3()?;
    let (bk, tk, ckv) = k.dims3()?;
    if h == 0 || hkv == 0 || !h.is_multiple_of(hkv) || !c.is_multiple_of(h) {
        bail!("attention: q {:?} for {h} heads over {hkv} kv heads", q.dims());
    }
    let d = c / h;
    if bk != b || ckv != hkv * d || tk < tq || v.dims() != k.dims() {
        bail!("attention: q {:?}, k {:?}, v {:?}", q.dims(), k.dims(), v.dims());
    }
    if super::fused(q) && super::fused(k) && super::fused(v) {
        let dm = super::attention::Dims { b, tq, tk, h, hkv, d };
        return super::kernels::with_slice::<f32, _>(q, |qs| {
            super::kernels::with_slice::<f32, _>(k, |ks| {
                super::kernels::with_slice::<f32, _>(v, |vs| {
                    let x = super::attention::Qkv { q: qs, qs: c, k: ks, ks: ckv, v: vs, vs: ckv };
                    let (out, probs) = super::attention::attention_fwd(&x, dm, None)?;
                    super::scratch::give(probs);
                    super::kernels::tensor(out, (b, tq, c))
                })
            })
        });
    }
    let heads = |x: &Tensor, n: usize, t: usize| x.reshape((b, t, n, d))?.transpose(1, 2);
    gqa_attention(&heads(q, h, tq)?, &heads(k, hkv, tk)?, &heads(v, hkv, tk)?)?
        .transpose(1, 2)?
        .reshape((b, tq, c))
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
