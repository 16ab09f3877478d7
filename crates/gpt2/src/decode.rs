//! Batch-1 incremental decoding on the CPU, outside candle: the generation hot path.
//!
//! Decoding one token is a chain of matrix-*vector* products over ~all weights (21 MB for the
//! 4L/256d/8k-vocab config), so its cost is per-op overhead and weight reads, not FLOPs.
//! candle's graph path spends most of a step allocating tensors, concatenating the KV cache
//! and running a gemm sized for matrices. Here the weights are copied once into flat f32
//! arrays ([`DecodeWeights`]), the KV cache is preallocated for the whole context, and each
//! step streams every weight matrix row by row (the order the prefetchers follow), with the
//! big ones and the lm head's dot products split over rayon's threads. No allocation happens
//! per token.
//!
//! Results are deterministic (fixed summation orders, identical with 1 or 2 threads) and agree
//! with [`crate::Gpt2::forward`] to float rounding; they are not bit-identical to it, because
//! the reduction orders differ from gemm's.

use crate::ops::kernels::{dot8, gelu_fwd, softmax_scaled};
use crate::ops::layer_norm_row;
use crate::{Config, Gpt2};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

/// Why a decoding step could not run.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("token id {id} is outside the vocabulary ({vocab})")]
    TokenOutOfVocab { id: u32, vocab: usize },
    #[error("the context is full ({0} positions)")]
    ContextFull(usize),
    #[error("cannot read the weights: {0}")]
    Weights(#[from] candle_core::Error),
}

struct Layer {
    ln_1: (Vec<f32>, Vec<f32>),
    c_attn: (Vec<f32>, Vec<f32>),
    attn_proj: (Vec<f32>, Vec<f32>),
    ln_2: (Vec<f32>, Vec<f32>),
    c_fc: (Vec<f32>, Vec<f32>),
    mlp_proj: (Vec<f32>, Vec<f32>),
}

/// A model's weights as flat row-major f32 arrays (HF layout), shared by any number of
/// [`Decoder`]s.
pub struct DecodeWeights {
    cfg: Config,
    wte: Vec<f32>,
    wpe: Vec<f32>,
    layers: Vec<Layer>,
    ln_f: (Vec<f32>, Vec<f32>),
}

fn flat(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

impl DecodeWeights {
    /// Copies `model`'s weights (from any device or dtype) into CPU f32 arrays.
    pub fn from_model(model: &Gpt2) -> Result<Self, DecodeError> {
        let pair = |w: &Tensor, b: &Tensor| -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
            Ok((flat(w)?, flat(b)?))
        };
        let p = model.parts();
        let layers = p
            .blocks
            .iter()
            .map(|b| {
                Ok(Layer {
                    ln_1: pair(&b.ln_1.w, &b.ln_1.b)?,
                    c_attn: pair(&b.c_attn.w, &b.c_attn.b)?,
                    attn_proj: pair(&b.attn_proj.w, &b.attn_proj.b)?,
                    ln_2: pair(&b.ln_2.w, &b.ln_2.b)?,
                    c_fc: pair(&b.c_fc.w, &b.c_fc.b)?,
                    mlp_proj: pair(&b.mlp_proj.w, &b.mlp_proj.b)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            cfg: model.config().clone(),
            wte: flat(p.wte)?,
            wpe: flat(p.wpe)?,
            layers,
            ln_f: pair(&p.ln_f.w, &p.ln_f.b)?,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

/// One sequence being decoded: its KV cache and scratch buffers.
pub struct Decoder<'w> {
    w: &'w DecodeWeights,
    /// Per layer, (n_positions, C) keys and values.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    scores: Vec<f32>,
    fc: Vec<f32>,
    fc_act: Vec<f32>,
    proj: Vec<f32>,
    logits: Vec<f32>,
}

/// Output columns are split between threads at a multiple of this (whole cache lines).
const TILE: usize = 64;
/// Vocabulary rows per lm-head task.
const VOCAB_CHUNK: usize = 512;

/// y = b + x · W for row-major W (k, m).
fn gemv(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32]) {
    let m = y.len();
    gemv_strided(x, w, m, b, y);
}

/// [`gemv`] with its output tiles split over two rayon tasks when the weight is big enough to
/// be worth a wake-up (a step reads every weight once, so it is bound by memory bandwidth,
/// which a second core adds to). Each output is still computed by one thread in one order.
fn par_gemv(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32]) {
    let m = y.len();
    let half = (m / 2).div_ceil(TILE) * TILE;
    if rayon::current_num_threads() < 2 || x.len() * m < PAR_MIN || half >= m {
        return gemv(x, w, b, y);
    }
    let k = x.len();
    let (y0, y1) = y.split_at_mut(half);
    rayon::join(
        || gemv_cols(x, w, &b[..half], y0, m, 0),
        || gemv_cols(x, w, &b[half..], y1, m, half),
    );
    debug_assert_eq!(w.len(), k * m);
}

/// Columns `j0..j0 + y.len()` of `b + x · W` for row-major W with `m` columns.
fn gemv_cols(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], m: usize, j0: usize) {
    gemv_strided(x, &w[j0..], m, b, y);
}

crate::ops::kernels::simd_kernel! {
    /// y = b + x · W[:, ..y.len()] where W's rows are `rs` apart. W is streamed row after row
    /// (four at a time, so y is loaded and stored once per four rows): sequential reads are
    /// what the prefetchers keep up with, and a step is bound by reading the weights.
    fn gemv_strided(x: &[f32], w: &[f32], rs: usize, b: &[f32], y: &mut [f32]) {
        let m = y.len();
        y.copy_from_slice(&b[..m]);
        let k = x.len();
        let mut i = 0;
        while i + 4 <= k {
            let (x0, x1, x2, x3) = (x[i], x[i + 1], x[i + 2], x[i + 3]);
            let w0 = &w[i * rs..i * rs + m];
            let w1 = &w[(i + 1) * rs..(i + 1) * rs + m];
            let w2 = &w[(i + 2) * rs..(i + 2) * rs + m];
            let w3 = &w[(i + 3) * rs..(i + 3) * rs + m];
            for t in 0..m {
                y[t] += (x0 * w0[t] + x1 * w1[t]) + (x2 * w2[t] + x3 * w3[t]);
            }
            i += 4;
        }
        while i < k {
            let (xi, wi) = (x[i], &w[i * rs..i * rs + m]);
            for t in 0..m {
                y[t] += xi * wi[t];
            }
            i += 1;
        }
    }
}

/// Weights (k·m) below which a GEMV stays on one thread.
const PAR_MIN: usize = 1 << 16;

crate::ops::kernels::simd_kernel! {
    /// out += p · v for one row.
    fn axpy(p: f32, v: &[f32], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(v) {
            *o += p * x;
        }
    }
}

/// Dot product with 32 lanes of accumulators (four independent vector chains, so the add
/// latency is hidden) reduced in a fixed tree.
#[inline(always)]
fn dot32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let full = n / 32 * 32;
    let mut acc = [0f32; 32];
    for (x, y) in a[..full].chunks_exact(32).zip(b[..full].chunks_exact(32)) {
        for l in 0..32 {
            acc[l] += x[l] * y[l];
        }
    }
    for l in 0..16 {
        acc[l] += acc[l + 16];
    }
    for l in 0..8 {
        acc[l] += acc[l + 8];
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for j in full..n {
        s += a[j] * b[j];
    }
    s
}

crate::ops::kernels::simd_kernel! {
    /// logits[r] = ⟨wte row r, h⟩ for the rows of one chunk.
    fn lm_head_rows(wte: &[f32], h: &[f32], logits: &mut [f32]) {
        let c = h.len();
        for (r, l) in logits.iter_mut().enumerate() {
            *l = dot32(&wte[r * c..(r + 1) * c], h);
        }
    }
}

impl<'w> Decoder<'w> {
    pub fn new(w: &'w DecodeWeights) -> Self {
        let cfg = &w.cfg;
        let (c, n, f) = (cfg.n_embd, cfg.n_positions, cfg.inner_dim());
        Self {
            w,
            k: vec![vec![0f32; n * c]; cfg.n_layer],
            v: vec![vec![0f32; n * c]; cfg.n_layer],
            len: 0,
            x: vec![0f32; c],
            h: vec![0f32; c],
            qkv: vec![0f32; 3 * c],
            att: vec![0f32; c],
            scores: vec![0f32; n],
            fc: vec![0f32; f],
            fc_act: vec![0f32; f],
            proj: vec![0f32; c],
            logits: vec![0f32; cfg.vocab_size],
        }
    }

    /// Positions decoded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the sequence (keeps the buffers).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Appends `token` at the next position and returns the logits for the position after it.
    pub fn step(&mut self, token: u32) -> Result<&[f32], DecodeError> {
        let w = self.w;
        let cfg = &w.cfg;
        let (c, nh) = (cfg.n_embd, cfg.n_head);
        let d = c / nh;
        let eps = cfg.layer_norm_epsilon as f32;
        let pos = self.len;
        if pos >= cfg.n_positions {
            return Err(DecodeError::ContextFull(cfg.n_positions));
        }
        let id = token as usize;
        if id >= cfg.vocab_size {
            return Err(DecodeError::TokenOutOfVocab { id: token, vocab: cfg.vocab_size });
        }
        let (e, p) = (&w.wte[id * c..(id + 1) * c], &w.wpe[pos * c..(pos + 1) * c]);
        for j in 0..c {
            self.x[j] = e[j] + p[j];
        }
        let scale = 1.0 / (d as f32).sqrt();
        for (li, l) in w.layers.iter().enumerate() {
            layer_norm_row(&self.x, &l.ln_1.0, &l.ln_1.1, eps, &mut self.h);
            par_gemv(&self.h, &l.c_attn.0, &l.c_attn.1, &mut self.qkv);
            let (kc, vc) = (&mut self.k[li], &mut self.v[li]);
            kc[pos * c..(pos + 1) * c].copy_from_slice(&self.qkv[c..2 * c]);
            vc[pos * c..(pos + 1) * c].copy_from_slice(&self.qkv[2 * c..]);
            self.att.fill(0.0);
            for hd in 0..nh {
                let q = &self.qkv[hd * d..(hd + 1) * d];
                let s = &mut self.scores[..=pos];
                for (t, sc) in s.iter_mut().enumerate() {
                    *sc = dot8(q, &kc[t * c + hd * d..t * c + (hd + 1) * d]);
                }
                softmax_scaled(s, scale);
                let out = &mut self.att[hd * d..(hd + 1) * d];
                for (t, &pt) in s.iter().enumerate() {
                    axpy(pt, &vc[t * c + hd * d..t * c + (hd + 1) * d], out);
                }
            }
            par_gemv(&self.att, &l.attn_proj.0, &l.attn_proj.1, &mut self.proj);
            for j in 0..c {
                self.x[j] += self.proj[j];
            }
            layer_norm_row(&self.x, &l.ln_2.0, &l.ln_2.1, eps, &mut self.h);
            par_gemv(&self.h, &l.c_fc.0, &l.c_fc.1, &mut self.fc);
            gelu_fwd(&self.fc, &mut self.fc_act);
            par_gemv(&self.fc_act, &l.mlp_proj.0, &l.mlp_proj.1, &mut self.proj);
            for j in 0..c {
                self.x[j] += self.proj[j];
            }
        }
        layer_norm_row(&self.x, &w.ln_f.0, &w.ln_f.1, eps, &mut self.h);
        let h = &self.h;
        self.logits.par_chunks_mut(VOCAB_CHUNK).enumerate().for_each(|(i, out)| {
            let r0 = i * VOCAB_CHUNK;
            lm_head_rows(&w.wte[r0 * c..(r0 + out.len()) * c], h, out);
        });
        self.len += 1;
        Ok(&self.logits)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::init_weights;
    use candle_nn::VarBuilder;

    fn model(cfg: &Config) -> Gpt2 {
        let vm = init_weights(cfg, 3).unwrap();
        Gpt2::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap()
    }

    #[test]
    fn decoding_matches_the_full_forward_at_every_position() {
        // Odd sizes exercise the GEMV's tail columns and the lm head's last chunk.
        let cfg = Config::new(1031, 40, 72, 2, 3);
        let m = model(&cfg);
        let ids: Vec<u32> = (0..40).map(|i| (i * 97 + 5) % 1031).collect();
        let full = m
            .forward(&Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu).unwrap(), None)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let w = DecodeWeights::from_model(&m).unwrap();
        let mut dec = Decoder::new(&w);
        for (t, &id) in ids.iter().enumerate() {
            let got = dec.step(id).unwrap();
            let worst = got.iter().zip(&full[t]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "position {t}: max |diff| {worst}");
        }
        assert_eq!(dec.len(), 40);
        assert!(matches!(dec.step(1), Err(DecodeError::ContextFull(40))));
    }

    #[test]
    fn bad_tokens_are_refused_and_reset_restarts() {
        let cfg = Config::new(50, 8, 16, 1, 2);
        let m = model(&cfg);
        let w = DecodeWeights::from_model(&m).unwrap();
        let mut dec = Decoder::new(&w);
        assert!(matches!(dec.step(50), Err(DecodeError::TokenOutOfVocab { id: 50, vocab: 50 })));
        assert!(dec.is_empty());
        let first = dec.step(7).unwrap().to_vec();
        dec.step(8).unwrap();
        dec.reset();
        assert_eq!(dec.step(7).unwrap(), &first[..], "same inputs, same bits");
    }
}
