//! Row-wise f32 kernels on plain slices for the graph-free Llama layer step
//! ([`crate::llama`]'s `train` module): rotary embeddings over (b, t, h) rows, bias adds,
//! residual sums, scaled adds and LoRA's dropout mask.
//!
//! Every kernel splits its work into fixed-size chunks (never a split that depends on the
//! thread count) and computes each value exactly as the candle op it stands in for does
//! (`x + y`, `broadcast_add`, `affine(s, 0)`, `x.mul(mask)`), so the layer step's forward is
//! the same bits as the graph's.

use super::scratch;
use crate::rng::keep;

/// Values per chunk of the element-wise kernels (a fixed split: thread-count independent).
const CHUNK: usize = 1 << 14;

/// Rotates every `d`-value row of `x` (rows ordered (b, t, h), `h` rows per position) by the
/// angles of its position `t`: cos and sin are (T, d/2) from the first position of the
/// sequence. `sign` −1 applies the inverse (transposed) rotation, the backward. HF's
/// `rotate_half` layout: o1 = x1·c − x2·s, o2 = x2·c + x1·s.
pub(crate) fn rope(
    x: &[f32],
    t: usize,
    h: usize,
    d: usize,
    cos: &[f32],
    sin: &[f32],
    sign: f32,
) -> Vec<f32> {
    let half = d / 2;
    let mut out = scratch::take(x.len());
    scratch::par_chunks(&mut out, t * h * d, |bi, seq| {
        let src = &x[bi * t * h * d..];
        for (r, o) in seq.chunks_exact_mut(d).enumerate() {
            let ti = r / h;
            let (c, s) = (&cos[ti * half..(ti + 1) * half], &sin[ti * half..(ti + 1) * half]);
            let xr = &src[r * d..(r + 1) * d];
            let (x1, x2) = xr.split_at(half);
            let (o1, o2) = o.split_at_mut(half);
            for i in 0..half {
                let si = sign * s[i];
                o1[i] = x1[i] * c[i] - x2[i] * si;
                o2[i] = x2[i] * c[i] + x1[i] * si;
            }
        }
    });
    out
}

/// y[r, j] += bias[j] for every row of `y`.
pub(crate) fn add_bias(y: &mut [f32], bias: &[f32]) {
    let w = bias.len();
    scratch::par_rows(y, w, |blk| {
        for row in blk.chunks_exact_mut(w) {
            for (v, &c) in row.iter_mut().zip(bias) {
                *v += c;
            }
        }
    });
}

/// a + b, element by element, in a pooled buffer.
pub(crate) fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = scratch::take(a.len().min(b.len()));
    scratch::par_chunks(&mut out, CHUNK, |i, o| {
        let s = i * CHUNK..i * CHUNK + o.len();
        for ((o, &x), &y) in o.iter_mut().zip(&a[s.clone()]).zip(&b[s]) {
            *o = x + y;
        }
    });
    out
}

/// y += t·s + 0 (candle's `affine(s, 0)` of t, then the add), in place.
pub(crate) fn add_scaled(y: &mut [f32], t: &[f32], s: f32) {
    scratch::par_chunks(y, CHUNK, |i, yc| {
        for (v, &tv) in yc.iter_mut().zip(&t[i * CHUNK..]) {
            *v += tv * s + 0.0;
        }
    });
}

/// t·s + 0 (candle's `affine(s, 0)`), in a pooled buffer.
pub(crate) fn scaled(t: &[f32], s: f32) -> Vec<f32> {
    let mut out = scratch::take(t.len());
    scratch::par_chunks(&mut out, CHUNK, |i, o| {
        for (v, &tv) in o.iter_mut().zip(&t[i * CHUNK..]) {
            *v = tv * s + 0.0;
        }
    });
    out
}

/// The inverted-dropout mask value of element `i` (1/(1−p) kept, 0 dropped), as
/// [`super::reference::dropout_mask`] draws it.
#[inline(always)]
fn mask(seed: u64, i: usize, p: f32, s: f32) -> f32 {
    if keep(seed, i as u64, p) { s } else { 0.0 }
}

/// x ⊙ mask(seed, p): the values `ops::dropout` gives (x times the mask tensor).
pub(crate) fn dropout(x: &[f32], p: f32, seed: u64) -> Vec<f32> {
    let s = 1.0 / (1.0 - p);
    let mut out = scratch::take(x.len());
    scratch::par_chunks(&mut out, CHUNK, |i, o| {
        let base = i * CHUNK;
        for (j, (v, &xv)) in o.iter_mut().zip(&x[base..]).enumerate() {
            *v = xv * mask(seed, base + j, p, s);
        }
    });
    out
}

/// dst += src ⊙ mask(seed, p): a dropout's backward added into an input's gradient.
pub(crate) fn add_masked(dst: &mut [f32], src: &[f32], p: f32, seed: u64) {
    let s = 1.0 / (1.0 - p);
    scratch::par_chunks(dst, CHUNK, |i, o| {
        let base = i * CHUNK;
        for (j, (v, &g)) in o.iter_mut().zip(&src[base..]).enumerate() {
            *v += g * mask(seed, base + j, p, s);
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rope_backward_is_the_inverse_rotation() {
        let (t, h, d) = (3, 2, 4);
        let x: Vec<f32> = (0..2 * t * h * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let cos: Vec<f32> = (0..t * d / 2).map(|i| (i as f32 * 0.3).cos()).collect();
        let sin: Vec<f32> = (0..t * d / 2).map(|i| (i as f32 * 0.3).sin()).collect();
        let y = rope(&x, t, h, d, &cos, &sin, 1.0);
        let back = rope(&y, t, h, d, &cos, &sin, -1.0);
        assert!(x.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn dropout_matches_its_backward_mask() {
        let x = vec![1.0f32; 1000];
        let y = dropout(&x, 0.25, 9);
        let mut g = vec![0f32; 1000];
        add_masked(&mut g, &x, 0.25, 9);
        assert_eq!(y, g);
        let kept = y.iter().filter(|&&v| v > 0.0).count();
        assert!((650..850).contains(&kept), "{kept} of 1000 kept at p 0.25");
    }
}
