//! Cached decoding of the Llama family on the CPU in f32: the generation hot path.
//!
//! Generating one token reads every weight once (135 MB for the 30M-parameter bench shape)
//! and does little else, so its speed is memory bandwidth plus whatever the step adds on top.
//! Through candle's ops a step cost ~2.5x its weight reads: ~60 tensor ops per layer, each
//! allocating its output, single-threaded one-row products, and the KV cache re-`cat`ed
//! (copied whole) every step. Here a step is plain loops over the weights' storage:
//!
//! - [`KvBuf`]: each layer's keys and values in one buffer with room to spare, written in
//!   place; it grows in blocks (doubling), never per token. [`LlamaCache`] holds them for the
//!   prompt pass too ([`cached_attention`]), so the prompt and the tokens after it share one
//!   cache.
//! - [`decode_step`]: one token (batch 1) through every layer with fused RMSNorm, q/k/v in
//!   one product, RoPE from the model's table row, single-query attention without a mask,
//!   gate/up/SiLU fused, and each residual added by the product that produces it.
//! - Matrix-vector products split their output rows in fixed 32-row chunks over rayon's
//!   threads. Every output value is one dot product with a fixed association order (16
//!   lanes, a fixed tree), whichever thread computes it, so the bits never depend on the
//!   thread count; multiply then add, no FMA, so the AVX-512, AVX2 and portable kernels
//!   agree too (a unit test checks all three).
//! - The whole step runs on the pool's threads (one hand-off per token), and the vector
//!   kernels prefetch the rows they read next: without these a step spent ~40% of its time
//!   waking threads and waiting on weight reads the hardware prefetchers did not foresee.
//!
//! The result equals [`Llama::forward`]'s rows to f32 rounding (the tests compare both).

use super::{Llama, LlamaCache};
use crate::ops::attention::{Dims, Qkv, attention_fwd};
use crate::ops::kernels::{dot8, simd_kernel, softmax_scaled, with_slice};
use crate::ops::scratch;
use candle_core::{CpuStorage, Device, Result, Storage, Tensor, bail};
use rayon::prelude::*;
use std::ops::Deref;
use std::ops::Range;

/// Output rows per parallel task (fixed: it decides nothing about the bits, only the split).
const ROWS: usize = 32;

/// Positions a fresh [`KvBuf`] makes room for at least (one allocation for short prompts).
const MIN_POSITIONS: usize = 64;

/// Below this many multiply-adds a product stays on the calling thread: waking the pool
/// costs more than it saves.
const PAR_MIN: usize = 1 << 15;

/// One layer's cached keys and values (after RoPE), laid out (batch, capacity, width) with
/// width = kv heads · head_dim: position `p` of batch row `b` starts at `(b·cap + p)·width`.
#[derive(Clone, Debug, Default)]
pub(super) struct KvBuf {
    k: Vec<f32>,
    v: Vec<f32>,
    cap: usize,
}

impl KvBuf {
    /// Room for `need` positions of `batch` rows, keeping the first `len` of each: `hint`
    /// positions at first when that is enough, else twice the old room (at least
    /// [`MIN_POSITIONS`], at most `max`), so growing copies the past only every so often.
    fn reserve(
        &mut self,
        batch: usize,
        width: usize,
        len: usize,
        need: usize,
        hint: usize,
        max: usize,
    ) {
        if need <= self.cap && self.k.len() == batch * self.cap * width {
            return;
        }
        let cap =
            if self.cap == 0 && hint >= need { hint } else { (2 * self.cap).max(MIN_POSITIONS) };
        let cap = cap.min(max).max(need);
        let grow = |old: &[f32]| {
            let mut new = vec![0f32; batch * cap * width];
            if len > 0 {
                for b in 0..batch {
                    let src = &old[b * self.cap * width..][..len * width];
                    new[b * cap * width..][..len * width].copy_from_slice(src);
                }
            }
            new
        };
        (self.k, self.v) = (grow(&self.k), grow(&self.v));
        self.cap = cap;
    }

    pub(super) fn capacity(&self) -> usize {
        self.cap
    }

    /// Batch row `b`'s first `n` positions: (keys, values), `n · width` values each.
    fn rows(&self, b: usize, n: usize, width: usize) -> (&[f32], &[f32]) {
        let at = b * self.cap * width;
        (&self.k[at..at + n * width], &self.v[at..at + n * width])
    }

    /// Writes `k`, `v` (`t` rows of `width`) at positions `pos..pos + t` of batch row `b`.
    fn write(&mut self, b: usize, pos: usize, width: usize, k: &[f32], v: &[f32]) {
        let at = (b * self.cap + pos) * width;
        self.k[at..at + k.len()].copy_from_slice(k);
        self.v[at..at + v.len()].copy_from_slice(v);
    }
}

/// A read lock on a CPU f32 tensor's contiguous values, held while a step reads them: the
/// decode step, the batched forward ([`super::prefill`]) and the layer training step
/// ([`super::train`], which keeps views in its structs, hence the boxed guard whose lock
/// type candle does not name).
pub(super) struct View<'a> {
    guard: Box<dyn Deref<Target = Storage> + 'a>,
    range: Range<usize>,
}

/// A read view of `t`'s values; an error for a strided or non-CPU-f32 tensor.
pub(super) fn view(t: &Tensor) -> Result<View<'_>> {
    let (guard, layout) = t.storage_and_layout();
    let Some((a, b)) = layout.contiguous_offsets() else {
        bail!("weight {:?} is not contiguous", t.dims());
    };
    match &*guard {
        Storage::Cpu(CpuStorage::F32(v)) if b <= v.len() => {}
        _ => bail!("weight {:?} is not a CPU f32 tensor", t.dims()),
    }
    Ok(View { guard: Box::new(guard), range: a..b })
}

impl View<'_> {
    pub(super) fn s(&self) -> &[f32] {
        match &**self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.range.clone()],
            // `view` checked the storage, and a read lock keeps it.
            _ => &[],
        }
    }
}

/// Lanes per dot-product accumulator: a fixed association order for every row.
const LANES: usize = 16;

/// How many rows ahead the vector kernels prefetch the weights they read next. A row of the
/// bench shape is only 2-5.5 KB, so the kernels' 4 or 8 interleaved row streams each end
/// after a few dozen cache lines, and the hardware prefetchers (which stop at 4 KB pages)
/// keep retraining instead of running ahead: asking for the line 16 rows down (one line
/// per row per 16 columns, the rate the loop consumes them) keeps enough misses in flight.
/// Measured on the 2-core SPR host, llama30m gen: ~150 -> ~200 tok/s interleaved; 8 or 32
/// rows ahead were within the noise of 16. Prefetches never fault, past the end included,
/// and change no value.
const PREFETCH_ROWS: usize = 16;

/// Σ acc (a fixed pairwise tree) + Σ w·x over the tail past the last full chunk, in order.
#[inline(always)]
fn finish(acc: &[f32; LANES], w: &[f32], x: &[f32]) -> f32 {
    let mut a = *acc;
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            a[i] += a[i + n];
        }
    }
    let mut s = a[0];
    for (w, x) in w.iter().zip(x) {
        s += w * x;
    }
    s
}

/// y[r] = ⟨w row r, x⟩ for the `y.len()` rows of `w` (row length `x.len()`): lane i of a
/// row's accumulator sums w[j]·x[j] for j ≡ i (mod 16) in order, then [`finish`].
fn dot_rows_portable(w: &[f32], x: &[f32], y: &mut [f32]) {
    let k = x.len();
    let (xc, xt) = x.as_chunks::<LANES>();
    let full = xc.len() * LANES;
    for (r, out) in y.iter_mut().enumerate() {
        let s = &w[r * k..(r + 1) * k];
        let mut acc = [0f32; LANES];
        for (ws, xs) in s[..full].as_chunks::<LANES>().0.iter().zip(xc) {
            for i in 0..LANES {
                acc[i] += ws[i] * xs[i];
            }
        }
        *out = finish(&acc, &s[full..], xt);
    }
}

/// [`dot_rows_portable`]'s arithmetic in AVX2 registers (two 8-lane halves per row, a
/// multiply then an add, as the portable loop rounds), four rows at a time so each load of
/// x serves four rows and the adds form eight independent chains; prefetching as the
/// AVX-512 kernel does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_rows_avx2(w: &[f32], x: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::{__m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps};
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch, _mm256_setzero_ps, _mm256_storeu_ps};
    let k = x.len();
    let full = k / LANES * LANES;
    let rows = y.len();
    if w.len() < rows * k {
        return dot_rows_portable(w, x, y);
    }
    let store = |a: __m256, b: __m256| {
        let mut out = [0f32; LANES];
        let (lo, hi) = out.split_at_mut(8);
        // SAFETY: each half holds the 8 values a store writes.
        unsafe {
            _mm256_storeu_ps(lo.as_mut_ptr(), a);
            _mm256_storeu_ps(hi.as_mut_ptr(), b);
        }
        out
    };
    let mut r = 0;
    while r + 4 <= rows {
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut j = 0;
        while j < full {
            // SAFETY: j + 16 ≤ full ≤ k, and rows r..r+4 of k values lie in w (checked above).
            unsafe {
                let x0 = _mm256_loadu_ps(x.as_ptr().add(j));
                let x1 = _mm256_loadu_ps(x.as_ptr().add(j + 8));
                for q in 0..4 {
                    let p = w.as_ptr().add((r + q) * k + j);
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_ROWS * k).cast());
                    acc[2 * q] = _mm256_add_ps(acc[2 * q], _mm256_mul_ps(_mm256_loadu_ps(p), x0));
                    let hi = _mm256_mul_ps(_mm256_loadu_ps(p.add(8)), x1);
                    acc[2 * q + 1] = _mm256_add_ps(acc[2 * q + 1], hi);
                }
            }
            j += LANES;
        }
        for q in 0..4 {
            let row = &w[(r + q) * k..(r + q + 1) * k];
            y[r + q] = finish(&store(acc[2 * q], acc[2 * q + 1]), &row[full..], &x[full..]);
        }
        r += 4;
    }
    dot_rows_portable(&w[r * k..], x, &mut y[r..]);
}

/// [`dot_rows_portable`]'s arithmetic in AVX-512 registers (one 16-lane register per row),
/// eight rows at a time: eight independent add chains, each load of x serving eight rows,
/// with the rows [`PREFETCH_ROWS`] further down prefetched as it goes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dot_rows_avx512(w: &[f32], x: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch, _mm512_setzero_ps, _mm512_storeu_ps};
    use std::arch::x86_64::{_mm512_add_ps, _mm512_loadu_ps, _mm512_mul_ps};
    const R: usize = 8;
    let k = x.len();
    let full = k / LANES * LANES;
    let rows = y.len();
    if w.len() < rows * k {
        return dot_rows_portable(w, x, y);
    }
    let mut r = 0;
    while r + R <= rows {
        let mut acc = [_mm512_setzero_ps(); R];
        let mut j = 0;
        while j < full {
            // SAFETY: j + 16 ≤ full ≤ k, and rows r..r+8 of k values lie in w (checked above).
            unsafe {
                let xs = _mm512_loadu_ps(x.as_ptr().add(j));
                for (q, a) in acc.iter_mut().enumerate() {
                    let p = w.as_ptr().add((r + q) * k + j);
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_ROWS * k).cast());
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(_mm512_loadu_ps(p), xs));
                }
            }
            j += LANES;
        }
        for (q, a) in acc.into_iter().enumerate() {
            let mut lanes = [0f32; LANES];
            // SAFETY: `lanes` holds the 16 values a store writes.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), a) };
            let row = &w[(r + q) * k..(r + q + 1) * k];
            y[r + q] = finish(&lanes, &row[full..], &x[full..]);
        }
        r += R;
    }
    dot_rows_portable(&w[r * k..], x, &mut y[r..]);
}

/// y[r] = ⟨w row r, x⟩: AVX-512 or AVX2 where the CPU has them, the same bits every way
/// (lane-wise multiply then add, no FMA).
fn dot_rows(w: &[f32], x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the running CPU supports AVX-512F, the only feature the function is built for.
        return unsafe { dot_rows_avx512(w, x, y) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the running CPU supports AVX2, the only feature the function is built for.
        return unsafe { dot_rows_avx2(w, x, y) };
    }
    dot_rows_portable(w, x, y)
}

/// Runs `f(first_row, chunk)` over the fixed [`ROWS`]-row chunks of `y`, on rayon's threads
/// when the product (`y.len()` rows of `k`) is large enough to pay for waking them.
fn par_rows(y: &mut [f32], k: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if y.len() * k < PAR_MIN {
        y.chunks_mut(ROWS).enumerate().for_each(|(i, c)| f(i * ROWS, c));
    } else {
        y.par_chunks_mut(ROWS).enumerate().for_each(|(i, c)| f(i * ROWS, c));
    }
}

/// y = [W₀; W₁; …]·x for matrices of row length `x.len()` stacked (the q, k, v projections
/// in one pass over the pool): `y` holds every matrix's rows in order.
fn gemv_stacked(mats: &[&[f32]], x: &[f32], y: &mut [f32]) {
    let k = x.len();
    par_rows(y, k, |r0, out| {
        let (mut r, end) = (r0, r0 + out.len());
        let mut start = 0;
        for m in mats {
            let rows = m.len() / k.max(1);
            if r < start + rows && r < end {
                let stop = end.min(start + rows);
                dot_rows(&m[(r - start) * k..(stop - start) * k], x, &mut out[r - r0..stop - r0]);
                r = stop;
            }
            start += rows;
        }
    });
}

/// x += W·a (a projection and its residual add in one pass).
fn gemv_residual(w: &[f32], a: &[f32], x: &mut [f32]) {
    let k = a.len();
    par_rows(x, k, |r0, out| {
        let mut tmp = [0f32; ROWS];
        let tmp = &mut tmp[..out.len()];
        dot_rows(&w[r0 * k..(r0 + out.len()) * k], a, tmp);
        for (o, t) in out.iter_mut().zip(tmp.iter()) {
            *o += t;
        }
    });
}

/// h = silu(gate·x) ⊙ (up·x), both products chunk by chunk (candle's silu: v / (1 + e^−v)).
fn swiglu(gate: &[f32], up: &[f32], x: &[f32], h: &mut [f32]) {
    let k = x.len();
    par_rows(h, 2 * k, |r0, out| {
        let (mut g, mut u) = ([0f32; ROWS], [0f32; ROWS]);
        let n = out.len();
        dot_rows(&gate[r0 * k..(r0 + n) * k], x, &mut g[..n]);
        dot_rows(&up[r0 * k..(r0 + n) * k], x, &mut u[..n]);
        for ((o, &g), &u) in out.iter_mut().zip(&g[..n]).zip(&u[..n]) {
            *o = g / ((-g).exp() + 1.0) * u;
        }
    });
}

/// y = x / sqrt(mean(x²) + eps) · w, as the fused RMSNorm kernel computes each row.
pub(super) fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let r = 1.0 / (dot8(x, x) / x.len() as f32 + eps).sqrt();
    for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
        *y = x * r * w;
    }
}

/// Rotates each `cos.len() · 2`-wide head of `x` in place (HF `rotate_half` pairs), as the
/// fused RoPE kernel does.
pub(super) fn rope_row(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in x.chunks_exact_mut(2 * half) {
        let (x1, x2) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (x1[i], x2[i]);
            x1[i] = a * cos[i] - b * sin[i];
            x2[i] = b * cos[i] + a * sin[i];
        }
    }
}

/// One query row (H heads of `d`) over `n` cached key/value rows (Hkv heads each): no mask,
/// the query is the newest position. Heads run in parallel when the cache is long; each
/// head's arithmetic is the same either way.
fn attend_one(q: &[f32], k: &[f32], v: &[f32], h: usize, hkv: usize, d: usize, out: &mut [f32]) {
    let (w, group) = (hkv * d, h / hkv);
    let n = k.len() / w;
    let scale = 1.0 / (d as f32).sqrt();
    let head = |hi: usize, o: &mut [f32]| {
        let g = hi / group;
        let mut p = scratch::take(n);
        attend_head(&q[hi * d..(hi + 1) * d], &k[g * d..], &v[g * d..], w, scale, &mut p, o);
        scratch::give([p]);
    };
    if n * h * d < PAR_MIN {
        out.chunks_exact_mut(d).enumerate().for_each(|(hi, o)| head(hi, o));
    } else {
        out.par_chunks_exact_mut(d).enumerate().for_each(|(hi, o)| head(hi, o));
    }
}

simd_kernel! {
    /// One query head `qh` over the cached rows `k`, `v` (row `t` of this head starts at
    /// `t · w`), probabilities in `p`, output in `o`. In AVX2 registers where the CPU has
    /// them (the portable loop was SSE-wide: ~9% of a 400-token generation); Rust never
    /// fuses a multiply and an add, so the bits are the portable loop's either way.
    fn attend_head(qh: &[f32], k: &[f32], v: &[f32], w: usize, scale: f32, p: &mut [f32], o: &mut [f32]) {
        let d = qh.len();
        for (t, p) in p.iter_mut().enumerate() {
            *p = dot8(qh, &k[t * w..t * w + d]);
        }
        softmax_scaled(p, scale);
        o.fill(0.0);
        for (t, &p) in p.iter().enumerate() {
            for (o, &v) in o.iter_mut().zip(&v[t * w..t * w + d]) {
                *o += p * v;
            }
        }
    }
}

/// True when [`decode_step`] can run `ids` (B, T) on `model`: one token of batch 1 continuing
/// a batch-1 (or empty) cache, CPU f32 weights, no LoRA branch.
pub(super) fn applies(model: &Llama, ids: &Tensor, cache: &LlamaCache) -> bool {
    ids.dims() == [1, 1]
        && (cache.len == 0 || cache.batch == 1)
        && crate::ops::llama::fused_f32(&[&model.embed, &model.lm_head])
        && !model.has_lora()
}

/// Logits (1, 1, V) of `token` at position `cache.len()`, appending its keys and values to
/// `cache`: [`Llama::forward_cached`] for one token, without candle's per-op overhead.
pub(super) fn decode_step(m: &Llama, token: u32, cache: &mut LlamaCache) -> Result<Tensor> {
    // The step runs on one of the pool's threads, so each of its ~45 parallel products forks
    // and joins among workers already awake (work stealing); called from outside the pool,
    // every product would instead hand its work over and put the caller to sleep on a lock
    // until the pool is done (two futex round trips per product: ~1.6 ms of a 7.1 ms token
    // on the 2-core SPR host, llama30m).
    // Inside the pool already (`scope` notices), nothing changes. Which thread runs the
    // step decides nothing about the bits: the row chunks are fixed.
    rayon::scope(|_| step(m, token, cache))
}

/// [`decode_step`]'s work, on whichever thread calls it.
fn step(m: &Llama, token: u32, cache: &mut LlamaCache) -> Result<Tensor> {
    let cfg = &m.cfg;
    let (c, h, hkv, d) =
        (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let (qd, w, pos) = (h * d, hkv * d, cache.len);
    let eps = cfg.rms_norm_eps as f32;
    let tok = token as usize;
    let embed = view(&m.embed)?;
    let Some(row) = embed.s().get(tok * c..(tok + 1) * c) else {
        bail!("token id {token} is outside the vocabulary of {}", cfg.vocab_size);
    };
    let mut x = row.to_vec();
    drop(embed);
    let (cos, sin) = (view(&m.rope.cos)?, view(&m.rope.sin)?);
    let half = d / 2;
    let (Some(cos), Some(sin)) =
        (cos.s().get(pos * half..(pos + 1) * half), sin.s().get(pos * half..(pos + 1) * half))
    else {
        bail!(
            "1 token after {pos} cached positions: need 1..={} in all",
            cfg.max_position_embeddings
        );
    };
    let mut xn = vec![0f32; c];
    let mut qkv = vec![0f32; qd + 2 * w];
    let mut att = vec![0f32; qd];
    let mut hid = vec![0f32; cfg.intermediate_size];
    if cache.bufs.len() != m.layers.len() {
        bail!("cache has {} layers, the model {}", cache.bufs.len(), m.layers.len());
    }
    for (l, buf) in m.layers.iter().zip(cache.bufs.iter_mut()) {
        rms_norm_row(&x, view(&l.ln_1)?.s(), eps, &mut xn);
        let (wq, wk, wv) = (view(&l.q.w)?, view(&l.k.w)?, view(&l.v.w)?);
        gemv_stacked(&[wq.s(), wk.s(), wv.s()], &xn, &mut qkv);
        let (q, kv) = qkv.split_at_mut(qd);
        let (k, v) = kv.split_at_mut(w);
        for (p, y) in [(&l.q, &mut *q), (&l.k, &mut *k), (&l.v, &mut *v)] {
            if let Some(b) = &p.b {
                for (y, b) in y.iter_mut().zip(view(b)?.s()) {
                    *y += b;
                }
            }
        }
        for (norm, y) in [(&l.q_norm, &mut *q), (&l.k_norm, &mut *k)] {
            if let Some(nw) = norm {
                let nw = view(nw)?;
                let mut tmp = vec![0f32; d];
                for head in y.chunks_exact_mut(d) {
                    rms_norm_row(head, nw.s(), eps, &mut tmp);
                    head.copy_from_slice(&tmp);
                }
            }
        }
        rope_row(q, cos, sin);
        rope_row(k, cos, sin);
        buf.reserve(1, w, pos, pos + 1, cache.hint, cfg.max_position_embeddings);
        buf.write(0, pos, w, k, v);
        let (ks, vs) = buf.rows(0, pos + 1, w);
        attend_one(q, ks, vs, h, hkv, d, &mut att);
        gemv_residual(view(&l.o.w)?.s(), &att, &mut x);
        rms_norm_row(&x, view(&l.ln_2)?.s(), eps, &mut xn);
        swiglu(view(&l.gate.w)?.s(), view(&l.up.w)?.s(), &xn, &mut hid);
        gemv_residual(view(&l.down.w)?.s(), &hid, &mut x);
    }
    rms_norm_row(&x, view(&m.norm)?.s(), eps, &mut xn);
    let mut logits = vec![0f32; cfg.vocab_size];
    gemv_stacked(&[view(&m.lm_head)?.s()], &xn, &mut logits);
    cache.len += 1;
    cache.batch = 1;
    Tensor::from_vec(logits, (1, 1, cfg.vocab_size), &Device::Cpu)
}

/// Attention of q (B, T, H·D) at positions `pos..pos + T` over layer `li`'s cached rows and
/// k, v (B, T, Hkv·D), which are written into the cache in place (no copy of the past):
/// the prompt pass and batched decoding on the CPU in f32.
pub(super) fn cached_attention(
    cache: &mut LlamaCache,
    li: usize,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    (h, hkv): (usize, usize),
    max: usize,
) -> Result<Tensor> {
    let (b, t, c) = q.dims3()?;
    let (_, _, w) = k.dims3()?;
    if h == 0 || hkv == 0 || !h.is_multiple_of(hkv) || !c.is_multiple_of(h) || w != hkv * (c / h) {
        bail!("attention: q {:?}, k {:?} for {h} heads over {hkv} kv heads", q.dims(), k.dims());
    }
    let (pos, hint) = (cache.len, cache.hint);
    let Some(buf) = cache.bufs.get_mut(li) else { bail!("cache has no layer {li}") };
    buf.reserve(b, w, pos, pos + t, hint, max);
    with_slice::<f32, _>(k, |ks| {
        with_slice::<f32, _>(v, |vs| {
            for bi in 0..b {
                let r = bi * t * w..(bi + 1) * t * w;
                buf.write(bi, pos, w, &ks[r.clone()], &vs[r]);
            }
            Ok(())
        })
    })?;
    let d = c / h;
    let dm = Dims { b: 1, tq: t, tk: pos + t, h, hkv, d };
    with_slice::<f32, _>(q, |qs| {
        let mut out = Vec::with_capacity(b * t * c);
        for bi in 0..b {
            let (kb, vb) = buf.rows(bi, pos + t, w);
            let x = Qkv { q: &qs[bi * t * c..(bi + 1) * t * c], qs: c, k: kb, ks: w, v: vb, vs: w };
            let (o, probs) = attention_fwd(&x, dm, None)?;
            out.extend_from_slice(&o);
            scratch::give(probs);
            scratch::give([o]);
        }
        Tensor::from_vec(out, (b, t, c), &Device::Cpu)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every compiled kernel gives every row the portable loop's bits (row counts and
    /// lengths off the 4-, 8- and 16-wide blocks included), so results do not depend on the
    /// CPU's vector width either.
    #[test]
    fn the_vector_kernels_give_the_portable_bits() {
        let mut state = 1u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (rows, k) in [(37, 131), (8, 16), (5, 7), (64, 512)] {
            let w: Vec<f32> = (0..rows * k).map(|_| next()).collect();
            let x: Vec<f32> = (0..k).map(|_| next()).collect();
            let mut want = vec![0f32; rows];
            dot_rows_portable(&w, &x, &mut want);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            #[cfg(target_arch = "x86_64")]
            {
                let mut got = vec![0f32; rows];
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    unsafe { dot_rows_avx2(&w, &x, &mut got) };
                    assert_eq!(bits(&got), bits(&want), "avx2, {rows}x{k}");
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    unsafe { dot_rows_avx512(&w, &x, &mut got) };
                    assert_eq!(bits(&got), bits(&want), "avx512, {rows}x{k}");
                }
            }
            let mut got = vec![0f32; rows];
            gemv_stacked(&[&w], &x, &mut got);
            assert_eq!(bits(&got), bits(&want), "stacked, {rows}x{k}");
        }
    }
}
