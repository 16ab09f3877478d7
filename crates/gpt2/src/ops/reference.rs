//! The same ops composed from differentiable candle primitives (every one of which has a
//! backward). They run on any device and dtype: the CUDA path and f64 use them, and the tests
//! check the fused CPU kernels against them.

use super::{Activation, IGNORE_INDEX};
use crate::rng::keep;
use candle_core::{D, DType, Result, Tensor};

pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(w)?.broadcast_add(b)
}

pub fn gelu_new(x: &Tensor) -> Result<Tensor> {
    let inner =
        ((x + x.powf(3.0)?.affine(0.044_715, 0.0)?)? * (2.0 / std::f64::consts::PI).sqrt())?;
    (x * 0.5)? * (inner.tanh()? + 1.0)?
}

pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, act: Activation) -> Result<Tensor> {
    let (k, m) = w.dims2()?;
    let mut dims = x.dims().to_vec();
    let x2 = x.reshape(((), k))?;
    let z = x2.matmul(w)?.broadcast_add(b)?;
    if let Some(last) = dims.last_mut() {
        *last = m;
    }
    let z = z.reshape(dims)?;
    match act {
        Activation::Identity => Ok(z),
        Activation::GeluNew => gelu_new(&z),
    }
}

/// Dropout mask (values 0 or 1/(1-p)) with the fused kernels' element numbering.
pub fn dropout_mask(
    shape: &[usize],
    p: f32,
    seed: u64,
    dtype: DType,
    dev: &candle_core::Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let s = 1.0 / (1.0 - p);
    let v: Vec<f32> = (0..n as u64).map(|i| if keep(seed, i, p) { s } else { 0.0 }).collect();
    Tensor::from_vec(v, shape, dev)?.to_dtype(dtype)
}

/// Multi-head attention of q (B, Tq, C) over k, v (B, Tk, C); query i sees keys ≤ Tk-Tq+i.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    n_head: usize,
    dropout: Option<(f32, u64)>,
) -> Result<Tensor> {
    let (b, tq, c) = q.dims3()?;
    let tk = k.dim(1)?;
    let d = c / n_head;
    let heads =
        |t: &Tensor, len: usize| t.reshape((b, len, n_head, d))?.transpose(1, 2)?.contiguous();
    let (qh, kh, vh) = (heads(q, tq)?, heads(k, tk)?, heads(v, tk)?);
    let att = (qh.matmul(&kh.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let offset = tk - tq;
    let bias: Vec<f32> =
        (0..tq * tk).map(|i| if i % tk > offset + i / tk { -1e30 } else { 0.0 }).collect();
    let bias = Tensor::from_vec(bias, (tq, tk), q.device())?.to_dtype(q.dtype())?;
    let att = att.broadcast_add(&bias)?;
    let max = att.max_keepdim(D::Minus1)?.detach();
    let e = att.broadcast_sub(&max)?.exp()?;
    let mut p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    if let Some((pd, seed)) = dropout {
        p = (p * dropout_mask(&[b, n_head, tq, tk], pd, seed, q.dtype(), q.device())?)?;
    }
    p.matmul(&vh)?.transpose(1, 2)?.reshape((b, tq, c))
}

pub fn causal_attention(
    qkv: &Tensor,
    n_head: usize,
    dropout: Option<(f32, u64)>,
) -> Result<Tensor> {
    let c = qkv.dim(2)? / 3;
    let (q, k, v) = (qkv.narrow(2, 0, c)?, qkv.narrow(2, c, c)?, qkv.narrow(2, 2 * c, c)?);
    attention(&q, &k, &v, n_head, dropout)
}

pub fn embed(ids: &Tensor, wte: &Tensor, wpe: &Tensor, offset: usize) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    let c = wte.dim(1)?;
    let tok = wte.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, c))?;
    tok.broadcast_add(&wpe.narrow(0, offset, t)?.unsqueeze(0)?)
}

/// Per-row NLL of h (N, C) against the tied head wte (V, C); ignored targets give 0.
pub fn lm_head_nll(h: &Tensor, wte: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = h.matmul(&wte.t()?)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let tv = targets.to_vec1::<u32>()?;
    let valid: Vec<f32> = tv.iter().map(|&t| if t == IGNORE_INDEX { 0.0 } else { 1.0 }).collect();
    let safe: Vec<u32> = tv.iter().map(|&t| if t == IGNORE_INDEX { 0 } else { t }).collect();
    let n = tv.len();
    let safe = Tensor::from_vec(safe, (n, 1), h.device())?;
    let picked = shifted.gather(&safe, 1)?;
    let valid = Tensor::from_vec(valid, (n, 1), h.device())?.to_dtype(h.dtype())?;
    ((lse - picked)? * valid)?.squeeze(1)
}

pub fn lm_head_loss(h: &Tensor, wte: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let count = targets.to_vec1::<u32>()?.iter().filter(|&&t| t != IGNORE_INDEX).count();
    lm_head_nll(h, wte, targets)?.sum_all()? / count.max(1) as f64
}
