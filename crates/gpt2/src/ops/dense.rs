//! Fused CPU f32 pieces of the Llama layers' training and evaluation: the bias-free linear map
//! over rows (x·wᵀ, w in HF `nn.Linear` (out, in) layout) and the SwiGLU gate silu(g)⊙u, each
//! with a hand-written backward.
//!
//! Composed from candle primitives, a linear layer's backward went through `w.t()`: candle
//! computes the gradient of the transposed view and adds it into w's through a strided
//! (transposing, unvectorised) loop on one thread, and every matmul output starts as a zeroed
//! allocation; the gate took a silu, a mul, and in the backward nine single-threaded passes
//! (neg, exp, +1, recip, affine, muls, adds) over the widest activations. Here the products go
//! straight to gemm on the rayon pool, w's gradient comes out in its own layout, and the gate is
//! one parallel pass each way. Element-wise work is split into fixed-size chunks, so no value
//! depends on the thread count.

use super::kernels::{
    Mat, cpu_slice, matmul, silu_mul_bwd, silu_mul_fwd, storage, tensor, with_slice,
};
use super::scratch;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Values per chunk of the element-wise gate (a fixed split: thread-count independent).
const CHUNK: usize = 1 << 14;

/// y (…, out) = x (…, in) · wᵀ for w (out, in), over x's rows whatever its rank (no reshape
/// nodes around it: each would cost the backward another zeroed gradient and an add); both
/// contiguous CPU f32. The backward gives
/// x its gradient g·w and w its gradient gᵀ·x (in w's own layout), each only when that input
/// is part of a graph: a frozen (detached) weight costs no weight-gradient product.
pub(crate) struct LinearRows;

impl CustomOp2 for LinearRows {
    fn name(&self) -> &'static str {
        "fused-linear-rows"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (cpu_slice::<f32>(xs, xl)?, cpu_slice::<f32>(ws, wl)?);
        let (out, inp) = wl.shape().dims2()?;
        let mut dims = xl.dims().to_vec();
        if dims.last() != Some(&inp) {
            bail!("linear: x {:?} against w {:?}", xl.dims(), wl.dims());
        }
        let n = x.len() / inp.max(1);
        let mut y = scratch::take(n * out);
        matmul(&mut y, out, Mat::rows(x, n, inp, inp), Mat::t(w, inp, out, inp), false, true)?;
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        Ok((storage(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (out, inp) = w.dims2()?;
        let n = x.elem_count() / inp.max(1);
        with_slice::<f32, _>(g, |gs| {
            let dx = if x.track_op() {
                Some(with_slice::<f32, _>(w, |ws| {
                    let mut dx = scratch::take(n * inp);
                    let (gm, wm) = (Mat::rows(gs, n, out, out), Mat::rows(ws, out, inp, inp));
                    matmul(&mut dx, inp, gm, wm, false, true)?;
                    tensor(dx, x.shape().clone())
                })?)
            } else {
                None
            };
            let dw = if w.track_op() {
                Some(with_slice::<f32, _>(x, |xs| {
                    let mut dw = scratch::take(out * inp);
                    let (gt, xm) = (Mat::t(gs, out, n, out), Mat::rows(xs, n, inp, inp));
                    matmul(&mut dw, inp, gt, xm, false, true)?;
                    tensor(dw, (out, inp))
                })?)
            } else {
                None
            };
            Ok((dx, dw))
        })
    }
}

/// h = silu(g) ⊙ u for g and u of one shape, contiguous CPU f32; keeps nothing but its inputs
/// (which the graph holds anyway) for the backward.
pub(crate) struct SiluMul;

/// h = silu(g) ⊙ u over fixed chunks, on the rayon pool when large.
pub(crate) fn silu_mul_values(g: &[f32], u: &[f32]) -> Result<Vec<f32>> {
    if g.len() != u.len() {
        bail!("silu gate: {} values against {}", g.len(), u.len());
    }
    let mut h = scratch::take(g.len());
    scratch::par_chunks(&mut h, CHUNK, |i, hc| {
        let s = i * CHUNK..i * CHUNK + hc.len();
        silu_mul_fwd(&g[s.clone()], &u[s], hc);
    });
    Ok(h)
}

/// (dg, du) of h = silu(g) ⊙ u for upstream d, over fixed chunks.
pub(crate) fn silu_mul_grads(g: &[f32], u: &[f32], d: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
    if g.len() != u.len() || g.len() != d.len() {
        bail!("silu gate: {}, {} and {} values", g.len(), u.len(), d.len());
    }
    let mut dg = scratch::take(g.len());
    let mut du = scratch::take(g.len());
    // One pass reads g, u and d once and writes dg and du, chunk i of each from chunk i of all.
    let run = |(i, (dgc, duc)): (usize, (&mut [f32], &mut [f32]))| {
        let s = i * CHUNK..i * CHUNK + dgc.len();
        silu_mul_bwd(&g[s.clone()], &u[s.clone()], &d[s], dgc, duc);
    };
    if g.len() < scratch::PAR_MIN {
        dg.chunks_mut(CHUNK).zip(du.chunks_mut(CHUNK)).enumerate().for_each(run);
    } else {
        dg.par_chunks_mut(CHUNK).zip(du.par_chunks_mut(CHUNK)).enumerate().for_each(run);
    }
    Ok((dg, du))
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if gl.shape() != ul.shape() {
            bail!("silu gate: g {:?} against u {:?}", gl.dims(), ul.dims());
        }
        let h = silu_mul_values(cpu_slice::<f32>(gs, gl)?, cpu_slice::<f32>(us, ul)?)?;
        Ok((storage(h), gl.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        d: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dg, du) = with_slice::<f32, _>(g, |gs| {
            with_slice::<f32, _>(u, |us| with_slice::<f32, _>(d, |ds| silu_mul_grads(gs, us, ds)))
        })?;
        let keep = |t: &Tensor, v: Vec<f32>| -> Result<Option<Tensor>> {
            if t.track_op() {
                Ok(Some(tensor(v, t.shape().clone())?))
            } else {
                scratch::give([v]);
                Ok(None)
            }
        };
        Ok((keep(g, dg)?, keep(u, du)?))
    }
}

/// The gradients of sum(y ⊙ g) with respect to everything y depends on: a backward pass
/// seeded with `g` as y's gradient, for activation checkpointing (a layer's backward from its
/// output's gradient). On CPU f32 a scalar node whose backward hands y exactly `g` (what the
/// product's backward gives, 1·g), without computing the product, its sum, or the product by
/// ones; elsewhere the composed sum.
pub(crate) fn seeded_backward(y: &Tensor, g: &Tensor) -> Result<candle_core::backprop::GradStore> {
    if super::fused(y) && super::fused(g) && y.dims() == g.dims() {
        y.apply_op1(Seed { g: g.detach() })?.backward()
    } else {
        (y * g)?.sum_all()?.backward()
    }
}

struct Seed {
    g: Tensor,
}

impl candle_core::CustomOp1 for Seed {
    fn name(&self) -> &'static str {
        "backward-seed"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((storage(vec![0.0]), Shape::from(())))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, _grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.g.clone()))
    }
}

/// h = silu(x·gateᵀ) ⊙ (x·upᵀ) for x (…, C), gate and up (I, C): the SwiGLU MLP's first half
/// as one node. Against [`LinearRows`] twice and [`SiluMul`], the backward skips two zeroed
/// gradients and adds candle would make for g and u (the widest activations), and x's two
/// gradient products are summed by gemm (the second accumulates into the first) instead of a
/// separate add. Keeps g and u (as the separate nodes' graph would) for the backward.
pub(crate) struct GateUp {
    pub kept: std::sync::Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

impl candle_core::CustomOp3 for GateUp {
    fn name(&self) -> &'static str {
        "fused-gate-up"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, wg, wu) =
            (cpu_slice::<f32>(xs, xl)?, cpu_slice::<f32>(gs, gl)?, cpu_slice(us, ul)?);
        let (i, c) = gl.shape().dims2()?;
        let mut dims = xl.dims().to_vec();
        if dims.last() != Some(&c) || ul.dims() != gl.dims() {
            bail!("gate/up: x {:?}, gate {:?}, up {:?}", xl.dims(), gl.dims(), ul.dims());
        }
        let n = x.len() / c.max(1);
        let xm = Mat::rows(x, n, c, c);
        let mut g = scratch::take(n * i);
        matmul(&mut g, i, xm, Mat::t(wg, c, i, c), false, true)?;
        let mut u = scratch::take(n * i);
        matmul(&mut u, i, xm, Mat::t(wu, c, i, c), false, true)?;
        let h = silu_mul_values(&g, &u)?;
        match self.kept.lock() {
            Ok(mut k) => *k = Some((g, u)),
            Err(_) => bail!("gate/up: poisoned state"),
        }
        if let Some(last) = dims.last_mut() {
            *last = i;
        }
        Ok((storage(h), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wg: &Tensor,
        wu: &Tensor,
        _res: &Tensor,
        d: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some((g, u)) = self.kept.lock().ok().and_then(|mut k| k.take()) else {
            bail!("gate/up: the backward ran twice, or before the forward");
        };
        let (i, c) = wg.dims2()?;
        let n = x.elem_count() / c.max(1);
        let (dg, du) = with_slice::<f32, _>(d, |ds| silu_mul_grads(&g, &u, ds))?;
        // g, u, dg and du are freed, not pooled: nothing of their size is taken again before
        // the next layer's forward, so pooling them only raised the peak (+23 MiB measured).
        drop((g, u));
        let out = with_slice::<f32, _>(x, |xs| {
            let (dgm, dum) = (Mat::rows(&dg, n, i, i), Mat::rows(&du, n, i, i));
            let dx = if x.track_op() {
                let mut dx = scratch::take(n * c);
                with_slice::<f32, _>(wg, |w| {
                    matmul(&mut dx, c, dgm, Mat::rows(w, i, c, c), false, true)
                })?;
                with_slice::<f32, _>(wu, |w| {
                    matmul(&mut dx, c, dum, Mat::rows(w, i, c, c), true, true)
                })?;
                Some(tensor(dx, x.shape().clone())?)
            } else {
                None
            };
            let dw = |w: &Tensor, dy: &[f32]| -> Result<Option<Tensor>> {
                if !w.track_op() {
                    return Ok(None);
                }
                let mut dw = scratch::take(i * c);
                matmul(&mut dw, c, Mat::t(dy, i, n, i), Mat::rows(xs, n, c, c), false, true)?;
                Ok(Some(tensor(dw, (i, c))?))
            };
            Ok((dx, dw(wg, &dg)?, dw(wu, &du)?))
        });
        drop((dg, du));
        out
    }
}
