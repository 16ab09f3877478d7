//! Training-grade ops: fused CPU f32 kernels with hand-written backward, and the same ops
//! composed from differentiable candle primitives ([`reference`](mod@reference)) for every other device or
//! dtype (CUDA, f64). Each public function picks the fused path when it can.
//!
//! Fused ops keep backward state (attention probabilities, GELU pre-activations, lm-head
//! gradients) only when their input is part of a graph (`Tensor::track_op`).

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
pub(crate) mod attention;
pub(crate) mod dense;
pub(crate) mod kernels;
pub(crate) mod linear;
pub mod llama;
pub(crate) mod loss;
pub(crate) mod norm;
pub mod reference;
pub(crate) mod rms_norm;
pub(crate) mod rows;
pub(crate) mod scratch;

pub(crate) use dense::seeded_backward;
pub use linear::Activation;
pub use loss::IGNORE_INDEX;

use candle_core::{DType, Result, Tensor, bail};
use std::sync::Mutex;

/// The CPU matrix-product kernel this process runs large f32 products on: `amx-bf16x3` on a
/// CPU with Intel AMX unless `POSTHUMAN_AMX=0` (see `amx`: f32-accurate, but other last bits
/// than the `gemm` crate's), else `gemm-f32` (the `gemm` crate, AVX-512/AVX2). A job's receipt names it: a
/// bit-for-bit audit must replay on the same kernel.
pub fn cpu_matmul_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if amx::enabled() {
        return "amx-bf16x3";
    }
    "gemm-f32"
}

fn fused(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

fn tracked(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.track_op())
}

/// Layer norm over the last dimension (weight and bias of that size).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op3(w, b, norm::LayerNorm { eps: eps as f32 })
    } else {
        reference::layer_norm(x, w, b, eps)
    }
}

/// act(x · w + b) with HF Conv1D weight w (in, out), over the last dimension of x.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, act: Activation) -> Result<Tensor> {
    if fused(x) {
        let op = linear::Linear { act, keep: tracked(&[x, w, b]), pre_act: Mutex::new(None) };
        x.contiguous()?.apply_op3(&w.contiguous()?, b, op)
    } else {
        reference::linear(x, w, b, act)
    }
}

/// Causal self-attention on packed qkv (B, T, 3C) → (B, T, C); `dropout` = (p, mask seed).
pub fn causal_attention(
    qkv: &Tensor,
    n_head: usize,
    dropout: Option<(f32, u64)>,
) -> Result<Tensor> {
    if n_head == 0 {
        bail!("attention: n_head must be positive");
    }
    if fused(qkv) {
        let dropout = dropout.filter(|d| d.0 > 0.0).map(|(p, seed)| attention::Dropout { p, seed });
        let op = attention::CausalAttention {
            n_head,
            dropout,
            keep: qkv.track_op(),
            probs: Mutex::new(None),
        };
        qkv.contiguous()?.apply_op1(op)
    } else {
        reference::causal_attention(qkv, n_head, dropout)
    }
}

/// No-grad attention of q (B, Tq, C) over cached k, v (B, Tk, C) for generation.
pub fn attention_cached(q: &Tensor, k: &Tensor, v: &Tensor, n_head: usize) -> Result<Tensor> {
    if !(fused(q) && fused(k) && fused(v)) {
        return reference::attention(q, k, v, n_head, None);
    }
    let (b, tq, c) = q.dims3()?;
    let tk = k.dim(1)?;
    if n_head == 0
        || c % n_head != 0
        || k.dims3()? != (b, tk, c)
        || v.dims3()? != (b, tk, c)
        || tq > tk
    {
        bail!("attention: q {:?}, k {:?}, v {:?}", q.dims(), k.dims(), v.dims());
    }
    let dm = attention::Dims { b, tq, tk, h: n_head, hkv: n_head, d: c / n_head };
    kernels::with_slice::<f32, _>(q, |qs| {
        kernels::with_slice::<f32, _>(k, |ks| {
            kernels::with_slice::<f32, _>(v, |vs| {
                let x = attention::Qkv { q: qs, qs: c, k: ks, ks: c, v: vs, vs: c };
                let (out, _) = attention::attention_fwd(&x, dm, None)?;
                kernels::tensor(out, (b, tq, c))
            })
        })
    })
}

/// Token + position embedding: ids (B, T) u32 → (B, T, C), positions from `offset`.
pub fn embed(ids: &Tensor, wte: &Tensor, wpe: &Tensor, offset: usize) -> Result<Tensor> {
    if fused(wte) {
        ids.contiguous()?.apply_op3(&wte.contiguous()?, &wpe.contiguous()?, loss::Embed { offset })
    } else {
        reference::embed(ids, wte, wpe, offset)
    }
}

/// Mean cross-entropy of the tied lm head: h (N, C), wte (V, C), targets (N) u32
/// ([`IGNORE_INDEX`] skipped). Never materialises all logits on the fused path.
pub fn lm_head_loss(h: &Tensor, wte: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if fused(h) {
        let op = loss::LmHeadLoss {
            keep: tracked(&[h, wte]),
            dw: wte.track_op(),
            grads: Mutex::new(None),
        };
        h.contiguous()?.apply_op3(&wte.contiguous()?, &targets.contiguous()?, op)
    } else {
        reference::lm_head_loss(h, wte, targets)
    }
}

/// Per-row NLL (N) f32 of the tied lm head, without building a graph.
pub fn lm_head_nll(h: &Tensor, wte: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if !fused(h) {
        return reference::lm_head_nll(&h.detach(), &wte.detach(), targets)?.to_dtype(DType::F32);
    }
    let (_, c) = h.dims2()?;
    let (v, _) = wte.dims2()?;
    kernels::with_slice::<f32, _>(h, |hs| {
        kernels::with_slice::<f32, _>(wte, |ws| {
            kernels::with_slice::<u32, _>(targets, |ts| {
                let (nll, _) = loss::lm_head_nll(hs, ws, ts, c, v, false)?;
                let n = nll.len();
                kernels::tensor(nll, n)
            })
        })
    })
}

/// Inverted dropout with a mask drawn from `seed` (differentiable: a multiply by the mask).
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    x.mul(&reference::dropout_mask(x.dims(), p, seed, x.dtype(), x.device())?)
}

#[doc(hidden)]
pub mod fast_math {
    //! Exposed for accuracy tests only.
    pub fn exp(x: f32) -> f32 {
        super::kernels::exp_f32(x)
    }
    pub fn tanh(x: f32) -> f32 {
        super::kernels::tanh_f32(x)
    }
}
