//! The graph-free batched forward of the Llama family on the CPU in f32: evaluation's
//! per-token NLL ([`Llama::token_nll`]) without candle's per-op overhead.
//!
//! Through candle's ops an evaluation pass built ~20 tensors per layer: every elementwise step
//! (residual adds, RoPE, the SwiGLU gate) allocated and wrote its output, attention gathered
//! each head's output into place, and each parallel section was handed to the pool from
//! outside it. Measured on the 2-core SPR host (llama30m, 4×256, `perf record` of
//! `llama-bench --mode eval`): GEMM ~62% of the pass (microkernels) + ~10% packing, attention
//! ~9% (softmax ~4%), the lm head's log-softmax ~5%, the gate ~4%, memset and allocation
//! ~6%, candle's elementwise ops the rest. Here a pass is the same products on a handful of
//! buffers reused by every layer:
//!
//! - RMSNorm over rows; q, k and v by three products into one (N, q + 2·kv) buffer (bias,
//!   Qwen3's per-head q/k norm and RoPE then in one pass over its rows);
//! - causal attention per (sequence, 64-query block), every head of the block in turn:
//!   scores for the block's visible keys only, exact softmax per row, the product by v
//!   written straight into the block's output rows (no per-head buffers, no gather);
//! - o-proj and down-proj into one scratch buffer, added to the residual stream over row
//!   chunks; gate and up by two products into one (N, 2I) buffer, the gate applied in place
//!   and read by down-proj through its row stride;
//! - the final norm, then the lm head and NLL per 512-row block ([`crate::ops::loss`]: the
//!   B·T·V logits never exist at once).
//!
//! Determinism: the products are the `gemm` crate's (its split over threads never changes a
//! value), the elementwise passes run over fixed row chunks and the attention blocks are
//! fixed, so the bits do not depend on the thread count. Every value is computed with the
//! arithmetic of the op it replaces (same kernels, same association order), so the NLLs are
//! the graph path's bits and evaluation reports (bound into receipts) do not move. Letting
//! gemm add the products into the residual stream (`accumulate`) saved ~2% more, but where
//! gemm splits k into blocks (down-proj, k = 1376 at llama30m) it adds the stream to the
//! first block's partial sum instead of to the whole product: up to 9e-6 relative apart
//! (measured at llama30m with large random weights), so it is not done.

use super::Llama;
use super::decode::{rms_norm_row, rope_row, view};
use crate::ops::kernels::{Mat, exp_f32, matmul, simd_kernel, softmax_scaled};
use crate::ops::{loss, scratch};
use candle_core::{Result, bail};
use rayon::prelude::*;

/// Rows per task of the elementwise passes (a fixed split: no value depends on it).
const ROWS: usize = 32;

/// Query rows per attention block: a block reads only keys up to its last row, so the causal
/// upper triangle is mostly never computed (the graph path's block size: the same products).
const QB: usize = 64;

/// True when [`token_nll`] can run `m`: CPU f32 weights and no LoRA branch attached (a LoRA
/// derivation is evaluated on its merged weights, which this path runs).
pub(super) fn applies(m: &Llama) -> bool {
    crate::ops::llama::fused_f32(&[&m.embed, &m.lm_head]) && !m.has_lora()
}

/// Per-token NLL (B·T values) of `targets` after `ids`, both (B, T) row-major and already
/// checked against the vocabulary and the context ([`crate::ops::IGNORE_INDEX`] rows are 0).
pub(super) fn token_nll(
    m: &Llama,
    ids: &[u32],
    targets: &[u32],
    b: usize,
    t: usize,
) -> Result<Vec<f32>> {
    // On one of the pool's threads, each parallel section forks among awake workers instead
    // of handing its work over and sleeping until it is done (as in decode.rs).
    rayon::scope(|_| {
        let h = hidden(m, ids, b, t)?;
        let (v, c) = m.lm_head.dims2()?;
        let head = view(&m.lm_head)?;
        let (nll, _) = loss::lm_head_nll(&h, head.s(), targets, c, v, false)?;
        scratch::give([h]);
        Ok(nll)
    })
}

/// Runs `f(first_row, rows)` over fixed [`ROWS`]-row chunks of `buf` (rows of `width`).
fn par_rows(buf: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    buf.par_chunks_mut(ROWS * width).enumerate().for_each(|(i, c)| f(i * ROWS, c));
}

/// y = RMSNorm(x) · w row by row (the fused kernel's arithmetic).
fn norm_rows(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let c = w.len();
    par_rows(y, c, |r0, out| {
        for (i, yr) in out.chunks_exact_mut(c).enumerate() {
            rms_norm_row(&x[(r0 + i) * c..(r0 + i + 1) * c], w, eps, yr);
        }
    });
}

/// x += y, row chunk by row chunk.
fn add_rows(x: &mut [f32], y: &[f32], c: usize) {
    par_rows(x, c, |r0, rows| {
        for (a, &b) in rows.iter_mut().zip(&y[r0 * c..]) {
            *a += b;
        }
    });
}

simd_kernel! {
    /// g ← silu(g) ⊙ u in place, as [`crate::ops::kernels::silu_mul_fwd`] computes it.
    fn silu_mul_in_place(g: &mut [f32], u: &[f32]) {
        for (g, &u) in g.iter_mut().zip(u) {
            *g = *g / (1.0 + exp_f32(-*g)) * u;
        }
    }
}

/// The final hidden states after `model.norm`, (B·T, C) row-major, in a pooled buffer.
fn hidden(m: &Llama, ids: &[u32], b: usize, t: usize) -> Result<Vec<f32>> {
    let cfg = &m.cfg;
    let (c, h, hkv, d) =
        (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let (qd, w, inter) = (h * d, hkv * d, cfg.intermediate_size);
    let wq = qd + 2 * w;
    let n = b * t;
    let eps = cfg.rms_norm_eps as f32;
    if ids.len() != n || t > m.rope.cos.dim(0)? {
        bail!(
            "prefill: {} ids for ({b}, {t}) within {} positions",
            ids.len(),
            cfg.max_position_embeddings
        );
    }
    let mut x = scratch::take(n * c);
    {
        let embed = view(&m.embed)?;
        let table = embed.s();
        for (row, &id) in x.chunks_exact_mut(c).zip(ids) {
            let Some(e) = table.get(id as usize * c..(id as usize + 1) * c) else {
                bail!("token id {id} is outside the vocabulary of {}", cfg.vocab_size);
            };
            row.copy_from_slice(e);
        }
    }
    let mut xn = scratch::take(n * c);
    let mut qkv = scratch::take(n * wq);
    let mut att = scratch::take(n * qd);
    let mut gu = scratch::take(n * 2 * inter);
    let (cos, sin) = (view(&m.rope.cos)?, view(&m.rope.sin)?);
    let (cos, sin) = (cos.s(), sin.s());
    let half = d / 2;
    for l in &m.layers {
        norm_rows(&x, view(&l.ln_1)?.s(), eps, &mut xn);
        let xm = Mat::rows(&xn, n, c, c);
        let mut col = 0;
        for (p, out) in [(&l.q, qd), (&l.k, w), (&l.v, w)] {
            let pw = view(&p.w)?;
            matmul(&mut qkv[col..], wq, xm, Mat::t(pw.s(), c, out, c), false, true)?;
            col += out;
        }
        // Bias (Qwen2), per-head norm (Qwen3), then RoPE at each row's position.
        let (bq, bk, bv) = (
            l.q.b.as_ref().map(view).transpose()?,
            l.k.b.as_ref().map(view).transpose()?,
            l.v.b.as_ref().map(view).transpose()?,
        );
        let (nq, nk) =
            (l.q_norm.as_ref().map(view).transpose()?, l.k_norm.as_ref().map(view).transpose()?);
        let (bq, bk, bv) =
            (bq.as_ref().map(|v| v.s()), bk.as_ref().map(|v| v.s()), bv.as_ref().map(|v| v.s()));
        let (nq, nk) = (nq.as_ref().map(|v| v.s()), nk.as_ref().map(|v| v.s()));
        par_rows(&mut qkv, wq, |r0, rows| {
            let mut tmp = vec![0f32; d];
            for (i, row) in rows.chunks_exact_mut(wq).enumerate() {
                let pos = (r0 + i) % t;
                let (q, kv) = row.split_at_mut(qd);
                let (k, v) = kv.split_at_mut(w);
                for (y, bs) in [(&mut *q, bq), (&mut *k, bk), (&mut *v, bv)] {
                    if let Some(bs) = bs {
                        for (y, b) in y.iter_mut().zip(bs) {
                            *y += b;
                        }
                    }
                }
                for (y, nw) in [(&mut *q, nq), (&mut *k, nk)] {
                    if let Some(nw) = nw {
                        for head in y.chunks_exact_mut(d) {
                            rms_norm_row(head, nw, eps, &mut tmp);
                            head.copy_from_slice(&tmp);
                        }
                    }
                }
                let (cs, sn) =
                    (&cos[pos * half..(pos + 1) * half], &sin[pos * half..(pos + 1) * half]);
                rope_row(q, cs, sn);
                rope_row(k, cs, sn);
            }
        });
        attention(&qkv, &mut att, (b, t), (h, hkv, d))?;
        let o = view(&l.o.w)?;
        matmul(&mut xn, c, Mat::rows(&att, n, qd, qd), Mat::t(o.s(), qd, c, qd), false, true)?;
        add_rows(&mut x, &xn, c);
        norm_rows(&x, view(&l.ln_2)?.s(), eps, &mut xn);
        let xm = Mat::rows(&xn, n, c, c);
        let (wg, wu) = (view(&l.gate.w)?, view(&l.up.w)?);
        matmul(&mut gu, 2 * inter, xm, Mat::t(wg.s(), c, inter, c), false, true)?;
        matmul(&mut gu[inter..], 2 * inter, xm, Mat::t(wu.s(), c, inter, c), false, true)?;
        par_rows(&mut gu, 2 * inter, |_, rows| {
            for row in rows.chunks_exact_mut(2 * inter) {
                let (g, u) = row.split_at_mut(inter);
                silu_mul_in_place(g, u);
            }
        });
        let down = view(&l.down.w)?;
        let hm = Mat::rows(&gu, n, inter, 2 * inter);
        matmul(&mut xn, c, hm, Mat::t(down.s(), inter, c, inter), false, true)?;
        add_rows(&mut x, &xn, c);
    }
    norm_rows(&x, view(&m.norm)?.s(), eps, &mut xn);
    scratch::give([x, qkv, att, gu]);
    Ok(xn)
}

/// Causal attention of the q columns of `qkv` (rows (B·T, q + 2·kv), RoPE applied) over its
/// k and v columns into `out` (B·T, H·D). One task per (sequence, [`QB`]-query block), which
/// runs the block's heads in turn: scores against the keys up to the block's last row,
/// softmax over each row's visible prefix (the rest zeroed: the product by v then sums the
/// same terms as the graph path's), the product by v written into the head's columns.
fn attention(
    qkv: &[f32],
    out: &mut [f32],
    (b, t): (usize, usize),
    (h, hkv, d): (usize, usize, usize),
) -> Result<()> {
    let (qd, w) = (h * d, hkv * d);
    let wq = qd + 2 * w;
    let group = h / hkv;
    let scale = 1.0 / (d as f32).sqrt();
    // The blocks as disjoint row ranges of `out`: (sequence, first row, rows).
    let mut blocks = Vec::with_capacity(b * t.div_ceil(QB));
    let mut rest = &mut *out;
    for bi in 0..b {
        for r0 in (0..t).step_by(QB) {
            let r = QB.min(t - r0);
            let (blk, tail) = rest.split_at_mut(r * qd);
            blocks.push((bi, r0, blk));
            rest = tail;
        }
    }
    blocks.into_par_iter().try_for_each(|(bi, r0, blk)| -> Result<()> {
        let r = blk.len() / qd;
        let kend = r0 + r;
        let seq = &qkv[bi * t * wq..(bi + 1) * t * wq];
        let mut p = scratch::take(r * kend);
        for hi in 0..h {
            let g = hi / group;
            let q = Mat::rows(&seq[r0 * wq + hi * d..], r, d, wq);
            let kt = Mat::t(&seq[qd + g * d..], d, kend, wq);
            matmul(&mut p, kend, q, kt, false, false)?;
            for (i, row) in p.chunks_exact_mut(kend).enumerate() {
                let valid = r0 + i + 1;
                softmax_scaled(&mut row[..valid], scale);
                row[valid..].fill(0.0);
            }
            let v = Mat::rows(&seq[qd + w + g * d..], kend, d, wq);
            matmul(&mut blk[hi * d..], qd, Mat::rows(&p, r, kend, kend), v, false, false)?;
        }
        scratch::give([p]);
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{Config, Llama, param_shapes};
    use crate::SeededRng;
    use crate::ops::IGNORE_INDEX;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use std::collections::HashMap;

    /// A model with every weight drawn at random (norm weights around 1, biases nonzero), so
    /// each feature of the family changes the result.
    fn model(cfg: &Config, seed: u64) -> Llama {
        let mut rng = SeededRng::new(seed);
        let tensors: HashMap<String, Tensor> = param_shapes(cfg)
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let base = if shape.len() == 1 && !name.ends_with(".bias") { 1.0 } else { 0.0 };
                let vals: Vec<f32> = (0..n).map(|_| base + (rng.normal() * 0.15) as f32).collect();
                (name, Tensor::from_vec(vals, shape, &Device::Cpu).unwrap())
            })
            .collect();
        Llama::new(cfg, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).unwrap()
    }

    /// (ids, targets) of `b` sequences of `t` tokens, a few targets ignored.
    fn batch(vocab: usize, b: usize, t: usize) -> (Tensor, Tensor) {
        let mut rng = SeededRng::new(9);
        let ids: Vec<u32> = (0..b * t).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
        let tg: Vec<u32> = (0..b * t)
            .map(|i| if i % 7 == 3 { IGNORE_INDEX } else { (rng.next_u64() % vocab as u64) as u32 })
            .collect();
        let dev = &Device::Cpu;
        (Tensor::from_vec(ids, (b, t), dev).unwrap(), Tensor::from_vec(tg, (b, t), dev).unwrap())
    }

    /// Llama with GQA (untied and tied), Qwen2 (q/k/v biases), Qwen3 (q/k norm, head_dim
    /// apart from hidden/heads).
    fn variants() -> Vec<(&'static str, Config)> {
        let gqa = Config::tiny(97, 64, 2, 4, 2);
        let tied = Config { tie_word_embeddings: true, ..gqa.clone() };
        let qwen2 = Config { qkv_bias: true, ..Config::tiny(97, 64, 2, 4, 1) };
        let qwen3 = Config { qk_norm: true, head_dim: 24, ..Config::tiny(97, 64, 2, 4, 2) };
        vec![
            ("llama gqa", gqa),
            ("llama tied", tied),
            ("qwen2 bias", qwen2),
            ("qwen3 qk norm", qwen3),
        ]
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn every_variant_matches_the_graph_path() {
        for (name, cfg) in variants() {
            let m = model(&cfg, 3);
            assert!(super::applies(&m));
            // 70 tokens: two attention blocks, the second partial.
            let (x, y) = batch(cfg.vocab_size, 3, 70);
            let got = m.token_nll(&x, &y).unwrap().to_vec2::<f32>().unwrap();
            let want = m.graph_token_nll(&x, &y).unwrap().to_vec2::<f32>().unwrap();
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert_eq!(g.to_bits(), w.to_bits(), "{name}: {g} vs {w}");
            }
            let mean: f32 = want.iter().flatten().sum::<f32>() / 210.0;
            assert!(mean > 1.0, "{name}: the weights must matter (mean NLL {mean})");
        }
    }

    /// At the bench shape gemm splits the down-projection's k = 1376 into blocks: the NLLs
    /// are still the graph path's bits (with gemm adding into the residual stream they were
    /// not).
    #[test]
    fn the_bench_shape_gives_the_graph_paths_bits() {
        let cfg = crate::bench::llama_shape("llama30m").unwrap();
        let m = model(&cfg, 3);
        let (x, y) = batch(cfg.vocab_size, 2, 256);
        assert_eq!(bits(&m.token_nll(&x, &y).unwrap()), bits(&m.graph_token_nll(&x, &y).unwrap()));
    }

    #[test]
    fn the_bits_do_not_depend_on_the_thread_count() {
        let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
        let (one, two) = (pool(1), pool(2));
        for (name, cfg) in variants() {
            let m = model(&cfg, 5);
            let (x, y) = batch(cfg.vocab_size, 2, 128);
            let a = one.install(|| bits(&m.token_nll(&x, &y).unwrap()));
            let b = two.install(|| bits(&m.token_nll(&x, &y).unwrap()));
            let c = two.install(|| bits(&m.token_nll(&x, &y).unwrap()));
            assert_eq!(a, b, "{name}: 1 vs 2 threads");
            assert_eq!(b, c, "{name}: two runs");
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let cfg = Config::tiny(97, 64, 2, 4, 2);
        let m = model(&cfg, 1);
        let (x, y) = batch(97, 1, 8);
        let dev = &Device::Cpu;
        let bad = Tensor::from_vec(vec![5u32, 97, 3], (1, 3), dev).unwrap();
        let err = m.token_nll(&bad, &y.narrow(1, 0, 3).unwrap()).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
        let long = Tensor::zeros((1, 129), DType::U32, dev).unwrap();
        let err = m.token_nll(&long, &long).unwrap_err().to_string();
        assert!(err.contains("tokens after 0 cached positions"), "{err}");
        let err = m.token_nll(&x, &x.narrow(1, 0, 4).unwrap()).unwrap_err().to_string();
        assert!(err.contains("targets"), "{err}");
        let tg = Tensor::from_vec(vec![1u32, 2, 200, 4, 5, 6, 7, 8], (1, 8), dev).unwrap();
        let err = m.token_nll(&x, &tg).unwrap_err().to_string();
        assert!(err.contains("out of vocabulary"), "{err}");
    }
}
