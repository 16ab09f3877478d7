//! Fused RMSNorm with a hand-written backward, for CPU f32 (candle_nn's `rms_norm` has no
//! backward and silently cuts the graph; the composed version allocates five temporaries).

use super::kernels::{cpu_slice, dot8, storage, tensor, with_slice};
use super::scratch;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Rows per block when summing dw: fixed, so the sum order never depends on threads.
const BLOCK: usize = 64;

pub(crate) struct RmsNorm {
    pub eps: f32,
}

/// 1 / sqrt(mean(x²) + eps) of one row.
#[inline(always)]
fn rstd(x: &[f32], eps: f32) -> f32 {
    1.0 / (dot8(x, x) / x.len() as f32 + eps).sqrt()
}

pub(crate) fn fwd(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let c = w.len();
    let mut y = scratch::take(x.len());
    y.par_chunks_mut(c * BLOCK).zip(x.par_chunks(c * BLOCK)).for_each(|(yb, xb)| {
        for (yr, xr) in yb.chunks_exact_mut(c).zip(xb.chunks_exact(c)) {
            let r = rstd(xr, eps);
            for i in 0..c {
                yr[i] = xr[i] * r * w[i];
            }
        }
    });
    y
}

/// (dx, dw) for upstream `g`: dx = r·(g⊙w − x̂·mean(g⊙w⊙x̂)), dw = Σ_rows g⊙x̂, x̂ = x·r.
/// dw sums fixed 64-row blocks in order, so it does not depend on the thread count.
pub(crate) fn bwd(x: &[f32], w: &[f32], g: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let c = w.len();
    let mut dx = scratch::take(x.len());
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(c * BLOCK)
        .zip(x.par_chunks(c * BLOCK).zip(g.par_chunks(c * BLOCK)))
        .map(|(dxb, (xb, gb))| {
            let mut dw = vec![0f32; c];
            let mut gw = vec![0f32; c];
            for ((dxr, xr), gr) in
                dxb.chunks_exact_mut(c).zip(xb.chunks_exact(c)).zip(gb.chunks_exact(c))
            {
                let r = rstd(xr, eps);
                for i in 0..c {
                    gw[i] = gr[i] * w[i];
                    dw[i] += gr[i] * xr[i] * r;
                }
                let m = dot8(&gw, xr) * r / c as f32;
                for i in 0..c {
                    dxr[i] = r * (gw[i] - xr[i] * r * m);
                }
            }
            dw
        })
        .collect();
    let mut dw = vec![0f32; c];
    for p in partials {
        for i in 0..c {
            dw[i] += p[i];
        }
    }
    (dx, dw)
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (cpu_slice::<f32>(s1, l1)?, cpu_slice::<f32>(s2, l2)?);
        let c = w.len();
        if c == 0 || l1.dims().last() != Some(&c) {
            bail!("rms norm: weight size {c} does not match input {:?}", l1.dims());
        }
        Ok((storage(fwd(x, w, self.eps)), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let eps = self.eps;
        let shape = x.shape().clone();
        with_slice::<f32, _>(x, |x| {
            with_slice::<f32, _>(w, |w| {
                with_slice::<f32, _>(grad, |g| {
                    let (dx, dw) = bwd(x, w, g, eps);
                    let c = dw.len();
                    Ok((Some(tensor(dx, shape.clone())?), Some(tensor(dw, c)?)))
                })
            })
        })
    }
}
