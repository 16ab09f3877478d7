//! Fused causal multi-head attention on the packed `c_attn` output (B, T, 3C), with a
//! hand-written backward. Heads are read in place through row strides (no split/permute
//! copies); each (batch, head) pair is independent, so running them in parallel never changes
//! the bits. Softmax probabilities are kept for backward only while a graph is being built.

use super::kernels::{
    Mat, cpu_slice, matmul, softmax_bwd_row, softmax_scaled, storage, tensor, with_slice,
};
use super::scratch;
use crate::rng::keep;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;
use std::sync::Mutex;

/// Sizes of one attention call: queries `tq` attend to keys `tk` (`tk - tq` cached positions).
/// `hkv` key/value heads serve the `h` query heads (grouped-query attention: query head `hi`
/// reads kv head `hi / (h / hkv)`, as HF's `repeat_kv` lays them out); GPT-2 has `hkv == h`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub b: usize,
    pub tq: usize,
    pub tk: usize,
    pub h: usize,
    pub hkv: usize,
    pub d: usize,
}

/// Strided views of q, k, v: row `t` of batch `bi`, head `hi` starts at
/// `base + (bi*T + t)*stride + hi*d`.
#[derive(Clone, Copy)]
pub(crate) struct Qkv<'a> {
    pub q: &'a [f32],
    pub qs: usize,
    pub k: &'a [f32],
    pub ks: usize,
    pub v: &'a [f32],
    pub vs: usize,
}

#[derive(Clone, Copy)]
pub(crate) struct Dropout {
    pub p: f32,
    pub seed: u64,
}

impl Dims {
    fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }
    fn q_at<'a>(&self, x: &Qkv<'a>, bi: usize, hi: usize) -> Mat<'a> {
        Mat::rows(&x.q[(bi * self.tq) * x.qs + hi * self.d..], self.tq, self.d, x.qs)
    }
    /// The kv head query head `hi` reads.
    fn kv(&self, hi: usize) -> usize {
        hi / (self.h / self.hkv)
    }
    fn k_at<'a>(&self, x: &Qkv<'a>, bi: usize, hi: usize) -> Mat<'a> {
        Mat::rows(&x.k[(bi * self.tk) * x.ks + self.kv(hi) * self.d..], self.tk, self.d, x.ks)
    }
    fn v_off(&self, x: &Qkv, bi: usize, hi: usize) -> usize {
        (bi * self.tk) * x.vs + self.kv(hi) * self.d
    }
}

/// Applies the dropout mask of head `bh` to probabilities `p` (tq × tk) in place.
fn apply_mask(p: &mut [f32], dr: Dropout, bh: usize, tq: usize, tk: usize) {
    let scale = 1.0 / (1.0 - dr.p);
    let base = (bh * tq * tk) as u64;
    for (i, v) in p.iter_mut().enumerate() {
        *v = if keep(dr.seed, base + i as u64, dr.p) { *v * scale } else { 0.0 };
    }
}

/// Query rows per block: block `r0..r0+QB` only needs keys `..offset+r0+QB`, so the causal
/// upper triangle is mostly never computed.
const QB: usize = 64;

/// Rows `r0..r0+rows`, first `cols` columns of `m`.
fn sub<'a>(m: Mat<'a>, r0: usize, rows: usize, cols: usize) -> Mat<'a> {
    Mat { data: &m.data[r0 * m.rs..], rows, cols, rs: m.rs, cs: m.cs }
}

/// Forward for one (batch, head): returns (output tq × d, probabilities tq × tk).
fn head_fwd(
    x: &Qkv,
    dm: Dims,
    bi: usize,
    hi: usize,
    dr: Option<Dropout>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (tq, tk, d) = (dm.tq, dm.tk, dm.d);
    let offset = tk - tq;
    // Every value is written: the causal blocks by the products, the rest of each row by the
    // zero fill after its softmax.
    let mut p = scratch::take(tq * tk);
    let (q, k) = (dm.q_at(x, bi, hi), dm.k_at(x, bi, hi));
    let scale = dm.scale();
    for r0 in (0..tq).step_by(QB) {
        let (r, kend) = (QB.min(tq - r0), offset + (r0 + QB).min(tq));
        let kt = Mat::t(k.data, d, kend, x.ks);
        matmul(&mut p[r0 * tk..], tk, sub(q, r0, r, d), kt, false, false)?;
    }
    for (i, row) in p.chunks_exact_mut(tk).enumerate() {
        let valid = offset + i + 1;
        softmax_scaled(&mut row[..valid], scale);
        row[valid..].fill(0.0);
    }
    let mut out = scratch::take(tq * d);
    let vo = dm.v_off(x, bi, hi);
    let mut pd_owned = None;
    let pd: &[f32] = match dr {
        Some(dr) => {
            let mut t = scratch::copy(&p);
            apply_mask(&mut t, dr, bi * dm.h + hi, tq, tk);
            &*pd_owned.insert(t)
        }
        None => &p,
    };
    for r0 in (0..tq).step_by(QB) {
        let (r, kend) = (QB.min(tq - r0), offset + (r0 + QB).min(tq));
        let v = Mat::rows(&x.v[vo..], kend, d, x.vs);
        matmul(&mut out[r0 * d..], d, Mat::rows(&pd[r0 * tk..], r, kend, tk), v, false, false)?;
    }
    scratch::give(pd_owned);
    Ok((out, p))
}

/// Attention over all heads; returns (B, tq, C) rows and the per-head probabilities.
pub(crate) fn attention_fwd(
    x: &Qkv,
    dm: Dims,
    dr: Option<Dropout>,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    if dm.tq > dm.tk || dm.d == 0 || dm.hkv == 0 || !dm.h.is_multiple_of(dm.hkv) {
        bail!(
            "attention: {} queries over {} keys, {} heads over {} kv heads",
            dm.tq,
            dm.tk,
            dm.h,
            dm.hkv
        );
    }
    let c = dm.h * dm.d;
    let heads: Vec<(Vec<f32>, Vec<f32>)> = (0..dm.b * dm.h)
        .into_par_iter()
        .map(|bh| head_fwd(x, dm, bh / dm.h, bh % dm.h, dr))
        .collect::<Result<_>>()?;
    let (outs, probs): (Vec<Vec<f32>>, Vec<Vec<f32>>) = heads.into_iter().unzip();
    // Gather the heads side by side into (B, tq, C) rows, a sequence per task when the batch
    // is large (a serial copy here leaves the pool idle).
    let gather = |bi: usize, seq: &mut [f32]| {
        for (hi, o) in outs[bi * dm.h..(bi + 1) * dm.h].iter().enumerate() {
            for (row, src) in seq.chunks_exact_mut(c).zip(o.chunks_exact(dm.d)) {
                row[hi * dm.d..(hi + 1) * dm.d].copy_from_slice(src);
            }
        }
    };
    let mut out = scratch::take(dm.b * dm.tq * c);
    scratch::par_chunks(&mut out, dm.tq * c, gather);
    scratch::give(outs);
    Ok((out, probs))
}

/// Backward for one (batch, head): returns (dq tq×d, dk tk×d, dv tk×d). Key-side gradients
/// accumulate over query blocks in a fixed order.
fn head_bwd(
    x: &Qkv,
    g: &[f32],
    p: &[f32],
    dm: Dims,
    bi: usize,
    hi: usize,
    dr: Option<Dropout>,
) -> Result<[Vec<f32>; 3]> {
    let (tq, tk, d, c) = (dm.tq, dm.tk, dm.d, dm.h * dm.d);
    let offset = tk - tq;
    let bh = bi * dm.h + hi;
    let d_o = Mat::rows(&g[(bi * tq) * c + hi * d..], tq, d, c);
    let vo = dm.v_off(x, bi, hi);
    let mut pd_owned = None;
    let pd: &[f32] = match dr {
        Some(dr) => {
            let mut t = scratch::copy(p);
            apply_mask(&mut t, dr, bh, tq, tk);
            &*pd_owned.insert(t)
        }
        None => p,
    };
    // dv and dk accumulate over query blocks; dp's columns past each block's keys are never
    // written by the products but are read by the softmax backward: all three start at zero.
    let mut dv = scratch::zeroed(tk * d);
    let mut dp = scratch::zeroed(tq * tk);
    for r0 in (0..tq).step_by(QB) {
        let (r, kend) = (QB.min(tq - r0), offset + (r0 + QB).min(tq));
        let dob = sub(d_o, r0, r, d);
        matmul(&mut dv, d, Mat::t(&pd[r0 * tk..], kend, r, tk), dob, true, false)?;
        let vt = Mat::t(&x.v[vo..], d, kend, x.vs);
        matmul(&mut dp[r0 * tk..], tk, dob, vt, false, false)?;
    }
    if let Some(dr) = dr {
        apply_mask(&mut dp, dr, bh, tq, tk);
    }
    let scale = dm.scale();
    for (dpr, pr) in dp.chunks_exact_mut(tk).zip(p.chunks_exact(tk)) {
        softmax_bwd_row(dpr, pr, scale);
    }
    scratch::give(pd_owned);
    let mut dq = scratch::take(tq * d);
    let mut dk = scratch::zeroed(tk * d);
    let (q, k) = (dm.q_at(x, bi, hi), dm.k_at(x, bi, hi));
    for r0 in (0..tq).step_by(QB) {
        let (r, kend) = (QB.min(tq - r0), offset + (r0 + QB).min(tq));
        let ds = Mat::rows(&dp[r0 * tk..], r, kend, tk);
        matmul(&mut dq[r0 * d..], d, ds, sub(k, 0, kend, d), false, false)?;
        matmul(&mut dk, d, Mat::t(&dp[r0 * tk..], kend, r, tk), sub(q, r0, r, d), true, false)?;
    }
    scratch::give([dp]);
    Ok([dq, dk, dv])
}

/// Backward of causal attention on packed qkv (B, T, 3C) for upstream `g` (B, T, C), from the
/// forward's per-head probabilities: d(qkv).
pub(crate) fn attention_bwd(
    qkv: &[f32],
    g: &[f32],
    probs: &[Vec<f32>],
    dm: Dims,
    dropout: Option<Dropout>,
) -> Result<Vec<f32>> {
    let c = dm.h * dm.d;
    if probs.len() != dm.b * dm.h {
        bail!("attention backward: {} probability blocks for {} heads", probs.len(), dm.b * dm.h);
    }
    let x = views(qkv, c);
    let grads: Vec<[Vec<f32>; 3]> = (0..dm.b * dm.h)
        .into_par_iter()
        .map(|bh| head_bwd(&x, g, &probs[bh], dm, bh / dm.h, bh % dm.h, dropout))
        .collect::<Result<_>>()?;
    // Scatter each head's (dq, dk, dv) into its columns of the packed rows, a sequence per task
    // when the batch is large (a serial copy here leaves the pool idle).
    let scatter = |bi: usize, seq: &mut [f32]| {
        for (hi, parts) in grads[bi * dm.h..(bi + 1) * dm.h].iter().enumerate() {
            for (which, part) in parts.iter().enumerate() {
                let col = which * c + hi * dm.d;
                for (row, src) in seq.chunks_exact_mut(3 * c).zip(part.chunks_exact(dm.d)) {
                    row[col..col + dm.d].copy_from_slice(src);
                }
            }
        }
    };
    let mut dqkv = scratch::take(qkv.len());
    scratch::par_chunks(&mut dqkv, dm.tq * 3 * c, scatter);
    scratch::give(grads.into_iter().flatten());
    Ok(dqkv)
}

/// Sizes of causal self-attention over packed qkv of shape (b, t, 3·h·d).
pub(crate) fn causal_dims(b: usize, t: usize, h: usize, d: usize) -> Dims {
    Dims { b, tq: t, tk: t, h, hkv: h, d }
}

/// Causal self-attention forward on packed qkv: (out (B, T, C), per-head probabilities).
pub(crate) fn causal_fwd(
    qkv: &[f32],
    dm: Dims,
    dropout: Option<Dropout>,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    attention_fwd(&views(qkv, dm.h * dm.d), dm, dropout)
}

/// The graph op: qkv (B, T, 3C) → (B, T, C).
pub(crate) struct CausalAttention {
    pub n_head: usize,
    pub dropout: Option<Dropout>,
    pub keep: bool,
    pub probs: Mutex<Option<Vec<Vec<f32>>>>,
}

impl CausalAttention {
    fn dims(&self, shape: &[usize]) -> Result<Dims> {
        let &[b, t, c3] = shape else { bail!("attention: qkv must be (B, T, 3C), got {shape:?}") };
        if c3 % (3 * self.n_head) != 0 {
            bail!("attention: width {c3} is not 3 × n_head × head_dim");
        }
        Ok(Dims { b, tq: t, tk: t, h: self.n_head, hkv: self.n_head, d: c3 / 3 / self.n_head })
    }
}

fn views(qkv: &[f32], c: usize) -> Qkv<'_> {
    Qkv { q: qkv, qs: 3 * c, k: &qkv[c..], ks: 3 * c, v: &qkv[2 * c..], vs: 3 * c }
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "fused-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dm = self.dims(l.dims())?;
        let qkv = cpu_slice::<f32>(s, l)?;
        let c = dm.h * dm.d;
        let (out, probs) = attention_fwd(&views(qkv, c), dm, self.dropout)?;
        if self.keep
            && let Ok(mut slot) = self.probs.lock()
        {
            *slot = Some(probs);
        }
        Ok((storage(out), Shape::from((dm.b, dm.tq, c))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dm = self.dims(arg.dims())?;
        let c = dm.h * dm.d;
        with_slice::<f32, _>(arg, |qkv| {
            with_slice::<f32, _>(grad, |g| {
                let x = views(qkv, c);
                let stored = self.probs.lock().ok().and_then(|mut s| s.take());
                let probs = match stored {
                    Some(p) => p,
                    None => attention_fwd(&x, dm, self.dropout)?.1,
                };
                let dqkv = attention_bwd(qkv, g, &probs, dm, self.dropout)?;
                Ok(Some(tensor(dqkv, arg.shape().clone())?))
            })
        })
    }
}

/// Backward of grouped-query attention over separate q (B, tq, H·D), k and v (B, tk, Hkv·D)
/// rows for upstream `g` (B, tq, H·D), from the forward's per-head probabilities:
/// [dq, dk, dv] in the inputs' shapes. A kv head's gradient is the sum over the query heads
/// that read it, added in head order, so the bits never depend on the thread count.
pub(crate) fn gqa_bwd(x: &Qkv, g: &[f32], probs: &[Vec<f32>], dm: Dims) -> Result<[Vec<f32>; 3]> {
    if probs.len() != dm.b * dm.h {
        bail!("attention backward: {} probability blocks for {} heads", probs.len(), dm.b * dm.h);
    }
    let (c, ckv) = (dm.h * dm.d, dm.hkv * dm.d);
    let grads: Vec<[Vec<f32>; 3]> = (0..dm.b * dm.h)
        .into_par_iter()
        .map(|bh| head_bwd(x, g, &probs[bh], dm, bh / dm.h, bh % dm.h, None))
        .collect::<Result<_>>()?;
    let mut dq = scratch::take(dm.b * dm.tq * c);
    scratch::par_chunks(&mut dq, dm.tq * c, |bi, seq| {
        for (hi, parts) in grads[bi * dm.h..(bi + 1) * dm.h].iter().enumerate() {
            for (row, src) in seq.chunks_exact_mut(c).zip(parts[0].chunks_exact(dm.d)) {
                row[hi * dm.d..(hi + 1) * dm.d].copy_from_slice(src);
            }
        }
    });
    let kv_grad = |which: usize| {
        let mut out = scratch::zeroed(dm.b * dm.tk * ckv);
        scratch::par_chunks(&mut out, dm.tk * ckv, |bi, seq| {
            for (hi, parts) in grads[bi * dm.h..(bi + 1) * dm.h].iter().enumerate() {
                let col = dm.kv(hi) * dm.d;
                for (row, src) in seq.chunks_exact_mut(ckv).zip(parts[which].chunks_exact(dm.d)) {
                    for (o, s) in row[col..col + dm.d].iter_mut().zip(src) {
                        *o += s;
                    }
                }
            }
        });
        out
    };
    let (dk, dv) = (kv_grad(1), kv_grad(2));
    scratch::give(grads.into_iter().flatten());
    Ok([dq, dk, dv])
}

/// The graph op of causal grouped-query attention (no cache: `tq == tk`): q (B, T, H·D), k and
/// v (B, T, Hkv·D) → (B, T, H·D). Keeps one probability matrix per head for the backward
/// (while a graph is built), where the composed op keeps the scores, the scaled and masked
/// scores, their exponentials and the probabilities, and copies k and v once per query head.
pub(crate) struct GqaAttention {
    pub h: usize,
    pub hkv: usize,
    pub keep: bool,
    pub probs: Mutex<Option<Vec<Vec<f32>>>>,
}

impl GqaAttention {
    fn dims(&self, q: &[usize], k: &[usize], v: &[usize]) -> Result<Dims> {
        let (&[b, t, c], &[bk, tk, ckv]) = (q, k) else {
            bail!("attention: q {q:?} and k {k:?} must be (B, T, width)")
        };
        if self.hkv == 0
            || !self.h.is_multiple_of(self.hkv)
            || c % self.h != 0
            || (bk, tk) != (b, t)
            || ckv != c / self.h * self.hkv
            || v != k
        {
            bail!(
                "attention: q {q:?}, k {k:?}, v {v:?} for {} heads over {} kv heads",
                self.h,
                self.hkv
            );
        }
        Ok(Dims { b, tq: t, tk: t, h: self.h, hkv: self.hkv, d: c / self.h })
    }
}

fn gqa_views<'a>(q: &'a [f32], k: &'a [f32], v: &'a [f32], dm: Dims) -> Qkv<'a> {
    let (c, ckv) = (dm.h * dm.d, dm.hkv * dm.d);
    Qkv { q, qs: c, k, ks: ckv, v, vs: ckv }
}

impl candle_core::CustomOp3 for GqaAttention {
    fn name(&self) -> &'static str {
        "fused-gqa-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dm = self.dims(ql.dims(), kl.dims(), vl.dims())?;
        let (q, k, v) =
            (cpu_slice::<f32>(qs, ql)?, cpu_slice::<f32>(ks, kl)?, cpu_slice::<f32>(vs, vl)?);
        let (out, probs) = attention_fwd(&gqa_views(q, k, v, dm), dm, None)?;
        if self.keep
            && let Ok(mut slot) = self.probs.lock()
        {
            *slot = Some(probs);
        } else {
            scratch::give(probs);
        }
        Ok((storage(out), Shape::from((dm.b, dm.tq, dm.h * dm.d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dm = self.dims(q.dims(), k.dims(), v.dims())?;
        let grad = grad.contiguous()?;
        with_slice::<f32, _>(q, |qd| {
            with_slice::<f32, _>(k, |kd| {
                with_slice::<f32, _>(v, |vd| {
                    with_slice::<f32, _>(&grad, |g| {
                        let x = gqa_views(qd, kd, vd, dm);
                        let stored = self.probs.lock().ok().and_then(|mut s| s.take());
                        let probs = match stored {
                            Some(p) => p,
                            None => attention_fwd(&x, dm, None)?.1,
                        };
                        let [dq, dk, dv] = gqa_bwd(&x, g, &probs, dm)?;
                        scratch::give(probs);
                        Ok((
                            Some(tensor(dq, q.shape().clone())?),
                            Some(tensor(dk, k.shape().clone())?),
                            Some(tensor(dv, v.shape().clone())?),
                        ))
                    })
                })
            })
        })
    }
}
