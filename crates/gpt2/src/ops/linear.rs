//! Fused `act(x · W + b)` for HF Conv1D weights (W is (in, out)), with a hand-written backward:
//! dx = dz·Wᵀ, dW = xᵀ·dz, db = Σ dz. One graph node instead of matmul + broadcast-add (+ the
//! ~12 elementwise nodes of a composed GELU backward).

use super::kernels::{
    Mat, col_sums, cpu_slice, gelu_fwd, gelu_fwd_grad, matmul, storage, tensor, with_slice,
};
use super::scratch;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    /// HF `gelu_new` (tanh approximation).
    GeluNew,
}

pub(crate) struct Linear {
    pub act: Activation,
    /// Keep the pre-activation for backward (only when a graph is being built).
    pub keep: bool,
    pub pre_act: Mutex<Option<Vec<f32>>>,
}

fn out_shape(l: &Layout, m: usize) -> Shape {
    let mut d = l.dims().to_vec();
    if let Some(last) = d.last_mut() {
        *last = m;
    }
    Shape::from(d)
}

/// z = x·W + b for row-major x (n, k), W (k, m).
fn affine(x: &[f32], w: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> Result<Vec<f32>> {
    let mut z = scratch::take(n * m);
    // The bias rows are the output's first values (gemm then accumulates the product onto
    // them): 18 MB a layer in training, written on the pool rather than on one thread.
    scratch::par_rows(&mut z, m, |blk| {
        for row in blk.chunks_exact_mut(m) {
            row.copy_from_slice(b);
        }
    });
    matmul(&mut z, m, Mat::rows(x, n, k, k), Mat::rows(w, k, m, m), true, true)?;
    Ok(z)
}

/// act(x · W + b) for x with rows of `k`, W (k, m): (y, and for GELU with `keep_pre` the
/// activation's derivative at the pre-activation, which backward multiplies by).
pub(crate) fn linear_fwd(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    k: usize,
    m: usize,
    act: Activation,
    keep_pre: bool,
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let n = x.len() / k.max(1);
    let z = affine(x, w, b, n, k, m)?;
    Ok(match act {
        Activation::Identity => (z, None),
        Activation::GeluNew if keep_pre => {
            let mut z = z;
            let mut y = scratch::take(z.len());
            gelu_fwd_grad_par(&mut z, &mut y);
            (y, Some(z))
        }
        Activation::GeluNew => {
            use rayon::prelude::*;
            let mut y = scratch::take(z.len());
            y.par_chunks_mut(1 << 15).zip(z.par_chunks(1 << 15)).for_each(|(y, z)| gelu_fwd(z, y));
            scratch::give([z]);
            (y, None)
        }
    })
}

/// GELU and its derivative over a large buffer, in blocks on rayon's threads (elementwise:
/// same bits for any thread count).
fn gelu_fwd_grad_par(z: &mut [f32], y: &mut [f32]) {
    use rayon::prelude::*;
    y.par_chunks_mut(1 << 15).zip(z.par_chunks_mut(1 << 15)).for_each(|(y, z)| gelu_fwd_grad(z, y));
}

/// Backward of [`linear_fwd`] for upstream `dy` (consumed): (dx, dW, db). `pre` is the GELU
/// derivative [`linear_fwd`] kept (recomputed from x when absent).
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_bwd(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    dz: Vec<f32>,
    pre: Option<&[f32]>,
    k: usize,
    m: usize,
    act: Activation,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let (dx, dw, db) = linear_bwd_parts(x, w, b, dz, pre, k, m, act, true)?;
    Ok((dx, dw.unwrap_or_default(), db))
}

/// (dx, dW if asked for, db).
type LinearGrads = (Vec<f32>, Option<Vec<f32>>, Vec<f32>);

/// [`linear_bwd`], computing dW only when `want_dw`: a frozen weight (LoRA's base) needs no
/// gradient, and xᵀ·dz costs as many FLOPs as the forward.
#[allow(clippy::too_many_arguments)] // the kernel's operands and shapes
fn linear_bwd_parts(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    mut dz: Vec<f32>,
    pre: Option<&[f32]>,
    k: usize,
    m: usize,
    act: Activation,
    want_dw: bool,
) -> Result<LinearGrads> {
    let n = x.len() / k.max(1);
    if act == Activation::GeluNew {
        let d_owned;
        let d = match pre {
            Some(d) => d,
            None => {
                let mut z = affine(x, w, b, n, k, m)?;
                let mut y = scratch::take(z.len());
                gelu_fwd_grad_par(&mut z, &mut y);
                scratch::give([y]);
                d_owned = z;
                &d_owned
            }
        };
        mul_into(&mut dz, d);
    }
    let mut dx = scratch::take(n * k);
    matmul(&mut dx, k, Mat::rows(&dz, n, m, m), Mat::t(w, m, k, m), false, true)?;
    // dW leaves the step as a gradient; the training loop hands it back ([`crate::Grads::recycle`]).
    let dw = if want_dw {
        let mut dw = scratch::take(k * m);
        matmul(&mut dw, m, Mat::t(x, k, n, k), Mat::rows(&dz, n, m, m), false, true)?;
        Some(dw)
    } else {
        None
    };
    let db = col_sums(&dz, n, m);
    scratch::give([dz]);
    Ok((dx, dw, db))
}

/// g ← g ⊙ d, in blocks on rayon's threads.
fn mul_into(g: &mut [f32], d: &[f32]) {
    use rayon::prelude::*;
    g.par_chunks_mut(1 << 15).zip(d.par_chunks(1 << 15)).for_each(|(g, d)| {
        for (a, &b) in g.iter_mut().zip(d) {
            *a *= b;
        }
    });
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) =
            (cpu_slice::<f32>(s1, l1)?, cpu_slice::<f32>(s2, l2)?, cpu_slice::<f32>(s3, l3)?);
        let (k, m) = l2.shape().dims2()?;
        if l1.dims().last() != Some(&k) || b.len() != m {
            bail!("linear: input {:?}, weight ({k}, {m}), bias {}", l1.dims(), b.len());
        }
        let (y, pre) = linear_fwd(x, w, b, k, m, self.act, self.keep)?;
        if let Some(z) = pre
            && let Ok(mut slot) = self.pre_act.lock()
        {
            *slot = Some(z);
        }
        Ok((storage(y), out_shape(l1, m)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (k, m) = w.dims2()?;
        let x_shape = x.shape().clone();
        let (w_tracked, b_tracked) = (w.track_op(), b.track_op());
        with_slice::<f32, _>(x, |x| {
            with_slice::<f32, _>(w, |w| {
                with_slice::<f32, _>(grad, |g| {
                    let stored = self.pre_act.lock().ok().and_then(|mut s| s.take());
                    // A weight outside the graph (detached: LoRA's frozen base) gets no
                    // gradient, so none is computed.
                    let want_dw = w_tracked;
                    let (dx, dw, db) = with_slice::<f32, _>(b, |b| {
                        let pre = stored.as_deref();
                        linear_bwd_parts(x, w, b, g.to_vec(), pre, k, m, self.act, want_dw)
                    })?;
                    Ok((
                        Some(tensor(dx, x_shape.clone())?),
                        dw.map(|dw| tensor(dw, (k, m))).transpose()?,
                        if b_tracked { Some(tensor(db, m)?) } else { None },
                    ))
                })
            })
        })
    }
}
