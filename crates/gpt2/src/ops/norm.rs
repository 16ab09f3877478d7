//! Fused layer norm with a hand-written backward (candle_nn's has none and silently cuts the
//! graph).

use super::kernels::{cpu_slice, storage, sum8, tensor, with_slice};
use super::scratch;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Rows per block when summing dw/db: fixed, so the sum order never depends on threads.
const BLOCK: usize = 64;

pub(crate) struct LayerNorm {
    pub eps: f32,
}

#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let c = x.len() as f32;
    let mean = sum8(x) / c;
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rem = chunks.remainder();
    for ch in chunks {
        for i in 0..8 {
            let d = ch[i] - mean;
            acc[i] += d * d;
        }
    }
    let mut var = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rem {
        var += (v - mean) * (v - mean);
    }
    (mean, 1.0 / (var / c + eps).sqrt())
}

/// y = LN(x) · w + b for one row.
pub(crate) fn layer_norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    let (mean, rstd) = row_stats(x, eps);
    for i in 0..x.len() {
        y[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
}

/// Row-wise layer norm of x (rows of `w.len()`), rows in parallel.
pub(crate) fn ln_fwd(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let c = w.len();
    let mut y = scratch::take(x.len());
    y.par_chunks_mut(c * BLOCK).zip(x.par_chunks(c * BLOCK)).for_each(|(yb, xb)| {
        for (yr, xr) in yb.chunks_exact_mut(c).zip(xb.chunks_exact(c)) {
            layer_norm_row(xr, w, b, eps, yr);
        }
    });
    y
}

/// Backward of [`ln_fwd`] for upstream gradient `g`: (dx, dw, db). dw and db sum fixed
/// 64-row blocks in order, so the result does not depend on the thread count.
pub(crate) fn ln_bwd(x: &[f32], w: &[f32], g: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = w.len();
    let mut dx = scratch::take(x.len());
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(c * BLOCK)
        .zip(x.par_chunks(c * BLOCK).zip(g.par_chunks(c * BLOCK)))
        .map(|(dxb, (xb, gb))| {
            let mut dw = vec![0f32; c];
            let mut db = vec![0f32; c];
            let mut xhat = vec![0f32; c];
            let mut dxhat = vec![0f32; c];
            for ((dxr, xr), gr) in
                dxb.chunks_exact_mut(c).zip(xb.chunks_exact(c)).zip(gb.chunks_exact(c))
            {
                let (mean, rstd) = row_stats(xr, eps);
                for i in 0..c {
                    xhat[i] = (xr[i] - mean) * rstd;
                    dxhat[i] = gr[i] * w[i];
                    dw[i] += gr[i] * xhat[i];
                    db[i] += gr[i];
                }
                let m1 = sum8(&dxhat) / c as f32;
                for i in 0..c {
                    xhat[i] *= dxhat[i];
                }
                let m2 = sum8(&xhat) / c as f32;
                for i in 0..c {
                    // xhat[i] now holds xhat·dxhat; recover xhat from the row.
                    let xh = (xr[i] - mean) * rstd;
                    dxr[i] = rstd * (dxhat[i] - m1 - xh * m2);
                }
            }
            (dw, db)
        })
        .collect();
    let mut dw = vec![0f32; c];
    let mut db = vec![0f32; c];
    for (pw, pb) in partials {
        for i in 0..c {
            dw[i] += pw[i];
            db[i] += pb[i];
        }
    }
    (dx, dw, db)
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
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
        let c = w.len();
        if c == 0 || b.len() != c || l1.dims().last() != Some(&c) {
            bail!("layer norm: weight/bias size {c} does not match input {:?}", l1.dims());
        }
        let y = ln_fwd(x, w, b, self.eps);
        Ok((storage(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let eps = self.eps;
        let shape = x.shape().clone();
        with_slice::<f32, _>(x, |x| {
            with_slice::<f32, _>(w, |w| {
                with_slice::<f32, _>(grad, |g| {
                    let c = w.len();
                    let (dx, dw, db) = ln_bwd(x, w, g, eps);
                    Ok((
                        Some(tensor(dx, shape.clone())?),
                        Some(tensor(dw, c)?),
                        Some(tensor(db, c)?),
                    ))
                })
            })
        })
    }
}
