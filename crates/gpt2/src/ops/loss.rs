//! Fused token + position embedding, and the fused tied lm-head + cross-entropy.
//!
//! The loss op never materialises the (N, vocab) logits of the whole batch: it walks row
//! chunks, and while a graph is being built it computes dh and dwte in the same pass (the loss
//! is a scalar, so backward only rescales them).

use super::kernels::{Mat, cpu_slice, log_softmax_row, matmul, storage, tensor};
use super::scratch;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;
use std::sync::Mutex;

/// Targets equal to this are skipped by the loss (HF's -100 as an unsigned id).
pub const IGNORE_INDEX: u32 = u32::MAX;

/// Rows per lm-head chunk: bounds the logits buffer to CHUNK × vocab floats (16 MB at an 8k
/// vocabulary). Each chunk re-packs the embedding for gemm, so bigger chunks pack it less
/// often: 512 rows trained 2.7% faster than 256, and 1024 was within noise of 512 at twice
/// the buffer (gpt2-bench, alternating builds on an idle machine).
const CHUNK: usize = 512;

pub(crate) struct Embed {
    pub offset: usize,
}

/// Rows wte[id] + wpe[offset + i mod t] for ids of sequences of length `t`.
pub(crate) fn embed_fwd(
    ids: &[u32],
    wte: &[f32],
    wpe: &[f32],
    t: usize,
    c: usize,
    offset: usize,
) -> Result<Vec<f32>> {
    let (v, p) = (wte.len() / c.max(1), wpe.len() / c.max(1));
    if offset + t > p {
        bail!("embedding: {t} positions from {offset} exceed n_positions {p}");
    }
    let mut out = scratch::take(ids.len() * c);
    for (i, (row, &id)) in out.chunks_exact_mut(c).zip(ids).enumerate() {
        let id = id as usize;
        if id >= v {
            bail!("embedding: token id {id} out of vocabulary {v}");
        }
        let pos = offset + i % t;
        let (e, q) = (&wte[id * c..(id + 1) * c], &wpe[pos * c..(pos + 1) * c]);
        for j in 0..c {
            row[j] = e[j] + q[j];
        }
    }
    Ok(out)
}

/// Adds the embedding gradient of upstream `g` into dwte and dwpe (a sequential scatter-add:
/// a fixed summation order for repeated tokens).
pub(crate) fn embed_bwd(
    ids: &[u32],
    g: &[f32],
    t: usize,
    c: usize,
    offset: usize,
    dwte: &mut [f32],
    dwpe: &mut [f32],
) {
    for (i, (gr, &id)) in g.chunks_exact(c).zip(ids).enumerate() {
        let (id, pos) = (id as usize, offset + i % t);
        for j in 0..c {
            dwte[id * c + j] += gr[j];
            dwpe[pos * c + j] += gr[j];
        }
    }
}

impl CustomOp3 for Embed {
    fn name(&self) -> &'static str {
        "fused-embedding"
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
        let ids = cpu_slice::<u32>(s1, l1)?;
        let (wte, wpe) = (cpu_slice::<f32>(s2, l2)?, cpu_slice::<f32>(s3, l3)?);
        let (b, t) = l1.shape().dims2()?;
        let (v, c) = l2.shape().dims2()?;
        let (p, c2) = l3.shape().dims2()?;
        if c != c2 || self.offset + t > p {
            bail!("embedding: {t} positions from {} exceed n_positions {p}", self.offset);
        }
        let _ = (v, p);
        let out = embed_fwd(ids, wte, wpe, t, c, self.offset)?;
        Ok((storage(out), Shape::from((b, t, c))))
    }

    fn bwd(
        &self,
        ids: &Tensor,
        wte: &Tensor,
        wpe: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (v, c) = wte.dims2()?;
        let (p, _) = wpe.dims2()?;
        let t = ids.dim(1)?;
        super::kernels::with_slice::<u32, _>(ids, |ids| {
            super::kernels::with_slice::<f32, _>(grad, |g| {
                let mut dwte = vec![0f32; v * c];
                let mut dwpe = vec![0f32; p * c];
                embed_bwd(ids, g, t, c, self.offset, &mut dwte, &mut dwpe);
                Ok((None, Some(tensor(dwte, (v, c))?), Some(tensor(dwpe, (p, c))?)))
            })
        })
    }
}

/// Walks the rows of h (n, c) against the tied embedding wte (v, c); returns per-row NLL and,
/// when `grads`, (dh, dwte) of the *sum* of the row losses.
#[allow(clippy::type_complexity)]
pub(crate) fn lm_head_nll(
    h: &[f32],
    wte: &[f32],
    targets: &[u32],
    c: usize,
    v: usize,
    grads: bool,
) -> Result<(Vec<f32>, Option<(Vec<f32>, Vec<f32>)>)> {
    head_rows(h, wte, targets, c, v, grads, grads)
}

/// [`lm_head_nll`]; with `grads` but not `dw`, dwte stays empty and its product (as many
/// FLOPs as the logits') is skipped: a frozen head under LoRA needs only dh.
#[allow(clippy::type_complexity)]
fn head_rows(
    h: &[f32],
    wte: &[f32],
    targets: &[u32],
    c: usize,
    v: usize,
    grads: bool,
    dw: bool,
) -> Result<(Vec<f32>, Option<(Vec<f32>, Vec<f32>)>)> {
    let n = targets.len();
    if h.len() != n * c || wte.len() != v * c {
        bail!("lm head: h has {} values for {n} rows of {c}", h.len());
    }
    if let Some(&bad) = targets.iter().find(|&&t| t != IGNORE_INDEX && t as usize >= v) {
        bail!("lm head: target id {bad} out of vocabulary {v}");
    }
    if !grads && targets.contains(&IGNORE_INDEX) {
        // Without gradients an ignored row's logits are pure waste (a sliding-window evaluation
        // ignores half its rows): score only the others, in a compacted matrix.
        let keep: Vec<usize> = (0..n).filter(|&i| targets[i] != IGNORE_INDEX).collect();
        let mut hc = Vec::with_capacity(keep.len() * c);
        for &i in &keep {
            hc.extend_from_slice(&h[i * c..(i + 1) * c]);
        }
        let tc: Vec<u32> = keep.iter().map(|&i| targets[i]).collect();
        let (part, _) = lm_head_nll(&hc, wte, &tc, c, v, false)?;
        let mut nll = vec![0f32; n];
        for (&i, x) in keep.iter().zip(part) {
            nll[i] = x;
        }
        return Ok((nll, None));
    }
    let mut nll = vec![0f32; n];
    let (mut dh, mut dwte) = match (grads, dw) {
        (true, true) => (scratch::take(n * c), scratch::take(v * c)),
        (true, false) => (scratch::take(n * c), Vec::new()),
        _ => (Vec::new(), Vec::new()),
    };
    // The logits buffer (16 MB at an 8k vocabulary) is kept per thread between calls: every
    // use overwrites what it reads, and a fresh one costs page faults and zeroing each step.
    let mut logits = LOGITS.with(|l| std::mem::take(&mut *l.borrow_mut()));
    if logits.len() < CHUNK.min(n) * v {
        logits.resize(CHUNK.min(n) * v, 0.0);
    }
    for (ci, tchunk) in targets.chunks(CHUNK).enumerate() {
        let r = tchunk.len();
        let hc = &h[ci * CHUNK * c..(ci * CHUNK + r) * c];
        let lg = &mut logits[..r * v];
        matmul(lg, v, Mat::rows(hc, r, c, c), Mat::t(wte, c, v, c), false, true)?;
        lg.par_chunks_mut(v)
            .zip(nll[ci * CHUNK..ci * CHUNK + r].par_iter_mut())
            .zip(tchunk.par_iter())
            .for_each(|((row, out), &t)| {
                if t == IGNORE_INDEX {
                    *out = 0.0;
                    row.fill(0.0);
                    return;
                }
                let picked = row[t as usize];
                let lse = log_softmax_row(row, grads);
                *out = lse - picked;
                if grads {
                    row[t as usize] -= 1.0;
                }
            });
        if grads {
            matmul(
                &mut dh[ci * CHUNK * c..(ci * CHUNK + r) * c],
                c,
                Mat::rows(lg, r, v, v),
                Mat::rows(wte, v, c, c),
                false,
                true,
            )?;
            if dw {
                matmul(&mut dwte, c, Mat::t(lg, v, r, v), Mat::rows(hc, r, c, c), ci > 0, true)?;
            }
        }
    }
    LOGITS.with(|l| *l.borrow_mut() = logits);
    Ok((nll, grads.then_some((dh, dwte))))
}

thread_local! {
    static LOGITS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The graph op: (h (N, C), wte (V, C), targets (N) u32) → mean NLL over non-ignored targets.
pub(crate) struct LmHeadLoss {
    pub keep: bool,
    /// wte gets a gradient (false for a frozen head: its product is skipped).
    pub dw: bool,
    pub grads: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

fn mean(nll: &[f32], targets: &[u32]) -> (f32, usize) {
    let count = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
    let sum: f64 = nll.iter().map(|&x| x as f64).sum();
    ((sum / count.max(1) as f64) as f32, count)
}

/// Mean NLL over non-ignored targets and, when `grads`, its gradients (dh, dwte).
#[allow(clippy::type_complexity)]
pub(crate) fn lm_head_mean(
    h: &[f32],
    wte: &[f32],
    targets: &[u32],
    c: usize,
    v: usize,
    grads: bool,
) -> Result<(f32, Option<(Vec<f32>, Vec<f32>)>)> {
    head_mean(h, wte, targets, (c, v), grads, grads)
}

/// [`lm_head_mean`], with wte's gradient only when `dw` ([`head_rows`]).
#[allow(clippy::type_complexity)]
pub(crate) fn head_mean(
    h: &[f32],
    wte: &[f32],
    targets: &[u32],
    (c, v): (usize, usize),
    grads: bool,
    dw: bool,
) -> Result<(f32, Option<(Vec<f32>, Vec<f32>)>)> {
    let (nll, g) = head_rows(h, wte, targets, c, v, grads, dw)?;
    let (loss, count) = mean(&nll, targets);
    let g = g.map(|(mut dh, mut dwte)| {
        let inv = 1.0 / count.max(1) as f32;
        let scale = |blk: &mut [f32]| blk.iter_mut().for_each(|x| *x *= inv);
        scratch::par_rows(&mut dh, 1, scale);
        scratch::par_rows(&mut dwte, 1, scale);
        (dh, dwte)
    });
    Ok((loss, g))
}

impl CustomOp3 for LmHeadLoss {
    fn name(&self) -> &'static str {
        "fused-lm-head-cross-entropy"
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
        let (h, wte, tg) =
            (cpu_slice::<f32>(s1, l1)?, cpu_slice::<f32>(s2, l2)?, cpu_slice::<u32>(s3, l3)?);
        let (v, c) = l2.shape().dims2()?;
        let (loss, g) = head_mean(h, wte, tg, (c, v), self.keep, self.dw)?;
        if let Some(g) = g
            && let Ok(mut slot) = self.grads.lock()
        {
            *slot = Some(g);
        }
        Ok((storage(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        h: &Tensor,
        wte: &Tensor,
        _targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some((dh, dwte)) = self.grads.lock().ok().and_then(|mut s| s.take()) else {
            bail!("lm-head loss: backward called twice or without a graph");
        };
        let g = grad.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let g = g.first().copied().unwrap_or(1.0);
        let mut dh = tensor(dh, h.shape().clone())?;
        // Empty when wte is frozen ([`head_rows`] skipped its product).
        let mut dwte = (!dwte.is_empty()).then(|| tensor(dwte, wte.shape().clone())).transpose()?;
        if g != 1.0 {
            dh = dh.affine(g as f64, 0.0)?;
            dwte = dwte.map(|d| d.affine(g as f64, 0.0)).transpose()?;
        }
        Ok((Some(dh), dwte, None))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::SeededRng;

    #[test]
    fn ignored_rows_are_skipped_without_changing_the_others() {
        let (n, c, v) = (300usize, 16usize, 37usize);
        let mut rng = SeededRng::new(4);
        let h: Vec<f32> = (0..n * c).map(|_| rng.next_f32() - 0.5).collect();
        let wte: Vec<f32> = (0..v * c).map(|_| rng.next_f32() - 0.5).collect();
        let dense: Vec<u32> = (0..n).map(|i| (i * 7 % v) as u32).collect();
        let mut sparse = dense.clone();
        for t in sparse.iter_mut().step_by(3) {
            *t = IGNORE_INDEX;
        }
        let (all, _) = lm_head_nll(&h, &wte, &dense, c, v, false).unwrap();
        let (some, _) = lm_head_nll(&h, &wte, &sparse, c, v, false).unwrap();
        for i in 0..n {
            if sparse[i] == IGNORE_INDEX {
                assert_eq!(some[i], 0.0);
            } else {
                assert_eq!(some[i].to_bits(), all[i].to_bits(), "row {i}");
            }
        }
    }
}
