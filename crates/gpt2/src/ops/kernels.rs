//! Raw f32 building blocks of the fused CPU ops: slice access into candle storage, a checked
//! `gemm` wrapper, and branch-free exp/tanh that vectorise.
//!
//! Hot loops are compiled twice (baseline x86-64 and AVX2+FMA, picked at run time; never
//! `target-cpu=native`). LLVM does not contract `a*b+c` into FMA without fast-math, and every
//! reduction below has a fixed association order, so both versions give the same bits.

use candle_core::{CpuStorage, Device, Layout, Result, Shape, Storage, Tensor, WithDType, bail};

/// Compiles `$body` for baseline x86-64 and for AVX2+FMA, dispatching at run time.
macro_rules! simd_kernel {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident : $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])* $vis fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn imp($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($a: $t),*) $(-> $r)? { imp($($a),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the running CPU supports the features `avx2` is compiled for.
                    return unsafe { avx2($($a),*) };
                }
            }
            imp($($a),*)
        }
    };
}
pub(crate) use simd_kernel;

/// The contiguous elements of a CPU storage viewed through `l`.
pub(crate) fn cpu_slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) if b <= data.len() => Ok(&data[a..b]),
        _ => bail!("fused op needs a contiguous input"),
    }
}

/// Runs `f` on the contiguous CPU data of `t` (copying only if `t` is strided).
pub(crate) fn with_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(c) => f(cpu_slice::<T>(c, l)?),
        _ => bail!("fused op called on a non-CPU tensor"),
    }
}

pub(crate) fn tensor(v: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)
}

pub(crate) fn storage(v: Vec<f32>) -> CpuStorage {
    CpuStorage::F32(v)
}

/// A strided read-only matrix view.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major (rows, cols) with row stride `rs`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        Self { data, rows, cols, rs, cs: 1 }
    }
    /// The transpose of a row-major (cols, rows) matrix with row stride `rs`.
    pub fn t(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        Self { data, rows, cols, rs: 1, cs: rs }
    }
    /// The same matrix transposed (a view, nothing copied).
    pub fn transposed(&self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// gemm splits its work over the rayon pool it runs in, so it asks that pool for its size.
/// (candle's `get_num_threads` re-reads `/proc/cpuinfo` on every call unless
/// `RAYON_NUM_THREADS` is set: ~9% of the demo's base-model training went there.)
pub(crate) fn parallelism(parallel: bool) -> gemm::Parallelism {
    let n = rayon::current_num_threads();
    if parallel && n > 1 { gemm::Parallelism::Rayon(n) } else { gemm::Parallelism::None }
}

/// dst (row-major, row stride `dst_rs`) = a · b, or += when `accumulate`.
pub(crate) fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    parallel: bool,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || !a.fits() || !b.fits() {
        bail!("matmul: bad operand shapes ({m}x{k}) · ({}x{n})", b.rows);
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if (m - 1) * dst_rs + n > dst.len() || dst_rs < n {
        bail!("matmul: destination too small");
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return Ok(());
    }
    // Small products (decoding one token) lose more to waking threads than they gain.
    let parallel = parallel && m * n * k >= 1 << 20;
    #[cfg(target_arch = "x86_64")]
    if super::amx::worth(m, n, k) {
        super::amx::matmul(dst, dst_rs, a, b, accumulate, parallel);
        return Ok(());
    }
    gemm_product(dst, dst_rs, a, b, accumulate, parallel);
    Ok(())
}

/// One product of [`matmul_many`]: `dst` (row stride `rs`) = A[a] · B[b].
pub(crate) struct Out<'a> {
    pub dst: &'a mut [f32],
    pub rs: usize,
    pub a: usize,
    pub b: usize,
}

/// Each `outs[i].dst` = `a[outs[i].a]` · `b[outs[i].b]` (or += when `accumulate`): several
/// products over shared operands, each with the bits its own [`matmul`] gives. On AMX every
/// distinct operand is packed once (splitting and laying out an operand costs ~15% of a
/// product at a Llama layer's sizes, and q, k and v read one input); elsewhere, one
/// [`matmul`] per product. All operands must share k.
pub(crate) fn matmul_many(
    a: &[Mat],
    b: &[Mat],
    outs: &mut [Out],
    accumulate: bool,
    parallel: bool,
) -> Result<()> {
    let Some(k) = a.first().map(|m| m.cols) else { return Ok(()) };
    if a.iter().any(|m| m.cols != k || !m.fits()) || b.iter().any(|m| m.rows != k || !m.fits()) {
        bail!("matmul: operands of a shared product disagree on k or their storage");
    }
    if outs.iter().any(|o| o.a >= a.len() || o.b >= b.len()) {
        bail!("matmul: a shared product names an operand it was not given");
    }
    #[cfg(target_arch = "x86_64")]
    if outs.iter().all(|o| {
        let (m, n) = (a[o.a].rows, b[o.b].cols);
        let fits = m > 0 && n > 0 && o.rs >= n && (m - 1) * o.rs + n <= o.dst.len();
        fits && super::amx::worth(m, n, k)
    }) {
        super::amx::matmul_many(a, b, outs, accumulate, parallel);
        return Ok(());
    }
    // Each product alone (its own checks, and the gemm crate or AMX by its own size).
    for o in outs.iter_mut() {
        matmul(o.dst, o.rs, a[o.a], b[o.b], accumulate, parallel)?;
    }
    Ok(())
}

/// The AVX-512 `gemm` product, for the AMX tests to compare against.
#[cfg(test)]
pub(crate) fn gemm_only(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool) {
    gemm_product(dst, dst_rs, a, b, accumulate, false)
}

/// `matmul`'s product on the `gemm` crate, after its checks.
fn gemm_product(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // SAFETY: every index gemm touches, (i*rs + j*cs) for i < rows, j < cols of each operand and
    // of dst, was bounds-checked above; dst is exclusively borrowed and cannot alias a or b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(parallel),
        );
    }
}

/// exp(x) to ~1 ulp (Cephes polynomial), branch-free so loops over it vectorise.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let (y, t, _) = exp_parts(x);
    // 2^n from t's own bits: t = 1.5·2^23 + n with a unit ulp, so its low bits are n. Same
    // value as `n as i32` for every input (x is clamped), but `as i32` saturates, which LLVM
    // does lane by lane (compare, cmov, insert): ~18 scalar instructions per 8 lanes, most of
    // the exp's time (the SwiGLU gate and softmaxes of a Llama eval, measured with perf).
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    y * f32::from_bits((ni.wrapping_add(127) as u32) << 23)
}

/// exp(x) = y · 2^n for the clamped x: (y, t, n) with t = 1.5·2^23 + n.
#[inline(always)]
#[allow(clippy::excessive_precision)] // coefficients as published (Cephes)
fn exp_parts(x: f32) -> (f32, f32, f32) {
    let x = x.clamp(-87.0, 88.0);
    // Round-to-nearest through the 1.5·2^23 trick (no SSE4.1 `round` needed).
    let t = x * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = t - 12_582_912.0;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    (p * r * r + r + 1.0, t, n)
}

/// tanh(x) to a few ulp (Eigen's rational approximation), branch-free.
#[inline(always)]
#[allow(clippy::excessive_precision)] // coefficients as published (Eigen)
pub(crate) fn tanh_f32(x: f32) -> f32 {
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16f32;
    p = p * x2 + 2.000_187_9e-13;
    p = p * x2 + -8.604_671_5e-11;
    p = p * x2 + 5.122_297e-8;
    p = p * x2 + 1.485_722_4e-5;
    p = p * x2 + 6.372_619_3e-4;
    p = p * x2 + 4.893_524_6e-3;
    let mut q = 1.198_258_4e-6f32;
    q = q * x2 + 1.185_347_1e-4;
    q = q * x2 + 2.268_434_6e-3;
    q = q * x2 + 4.893_525_2e-3;
    x * p / q
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

simd_kernel! {
    /// y = gelu_new(z) (tanh approximation, as HF `gelu_new`).
    pub(crate) fn gelu_fwd(z: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(z) {
            let t = tanh_f32(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
            *y = 0.5 * x * (1.0 + t);
        }
    }
}

simd_kernel! {
    /// y = gelu_new(z), and z ← gelu_new'(z) in place: the derivative backward multiplies by,
    /// from the same tanh (one tanh per element for forward and backward together).
    pub(crate) fn gelu_fwd_grad(z: &mut [f32], y: &mut [f32]) {
        for (y, x) in y.iter_mut().zip(z.iter_mut()) {
            let v = *x;
            let v2 = v * v;
            let t = tanh_f32(SQRT_2_OVER_PI * (v + GELU_C * v2 * v));
            *y = 0.5 * v * (1.0 + t);
            *x = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * v2);
        }
    }
}

/// Sum with 8 independent accumulators in a fixed order (vectorises, same bits everywhere).
#[inline(always)]
pub(crate) fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rem {
        s += v;
    }
    s
}

/// Dot product with 8 fixed accumulators (same association everywhere).
#[inline(always)]
pub(crate) fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let n = a.len().min(b.len());
    let (ca, cb) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

simd_kernel! {
    /// Softmax backward of one row, in place: dp ← p ⊙ (dp − ⟨dp, p⟩) · scale.
    pub(crate) fn softmax_bwd_row(dp: &mut [f32], p: &[f32], scale: f32) {
        let dot = dot8(dp, p);
        for (a, &b) in dp.iter_mut().zip(p) {
            *a = b * (*a - dot) * scale;
        }
    }
}

#[inline(always)]
pub(crate) fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let mut m = acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &v in rem {
        m = m.max(v);
    }
    m
}

simd_kernel! {
    /// In place: x ← softmax(scale · x); returns nothing. `x` must be non-empty.
    pub(crate) fn softmax_scaled(x: &mut [f32], scale: f32) {
        let m = max8(x) * scale;
        for v in x.iter_mut() {
            *v = exp_f32(*v * scale - m);
        }
        let inv = 1.0 / sum8(x);
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
}

simd_kernel! {
    /// Row of logits → (log-sum-exp, and x ← softmax(x) when `write_probs`).
    pub(crate) fn log_softmax_row(x: &mut [f32], write_probs: bool) -> f32 {
        let m = max8(x);
        let mut acc = [0f32; 8];
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            for i in 0..8 {
                let e = exp_f32(c[i] - m);
                if write_probs {
                    c[i] = e;
                }
                acc[i] += e;
            }
        }
        let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for v in chunks.into_remainder() {
            let e = exp_f32(*v - m);
            if write_probs {
                *v = e;
            }
            s += e;
        }
        if write_probs {
            let inv = 1.0 / s;
            for v in x.iter_mut() {
                *v *= inv;
            }
        }
        m + s.ln()
    }
}

/// Column sums of a row-major (rows, cols) matrix, in fixed-size row blocks combined in order,
/// so the result does not depend on the thread count.
pub(crate) fn col_sums(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const BLOCK: usize = 64;
    let partials: Vec<Vec<f32>> = x[..rows * cols]
        .par_chunks(BLOCK * cols)
        .map(|blk| {
            let mut acc = vec![0f32; cols];
            for row in blk.chunks_exact(cols) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        })
        .collect();
    let mut out = vec![0f32; cols];
    for p in partials {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

simd_kernel! {
    /// h = silu(g) ⊙ u, silu(v) = v / (1 + e^−v) (the SwiGLU gate).
    pub(crate) fn silu_mul_fwd(g: &[f32], u: &[f32], h: &mut [f32]) {
        for ((h, &g), &u) in h.iter_mut().zip(g).zip(u) {
            *h = g / (1.0 + exp_f32(-g)) * u;
        }
    }
}

simd_kernel! {
    /// The SwiGLU gate's backward from upstream d, with s = sigmoid(g):
    /// dg = d ⊙ u ⊙ s(1 + g(1 − s)), du = d ⊙ silu(g), in one pass.
    pub(crate) fn silu_mul_bwd(g: &[f32], u: &[f32], d: &[f32], dg: &mut [f32], du: &mut [f32]) {
        for i in 0..d.len().min(g.len()).min(u.len()).min(dg.len()).min(du.len()) {
            let (gi, di) = (g[i], d[i]);
            let s = 1.0 / (1.0 + exp_f32(-gi));
            dg[i] = di * u[i] * (s * (1.0 + gi * (1.0 - s)));
            du[i] = di * (gi * s);
        }
    }
}

#[cfg(test)]
mod tests {
    /// [`super::exp_f32`] as it was written before its 2^n came from t's bits: the same
    /// polynomial, 2^n by the saturating cast.
    fn exp_saturating_cast(x: f32) -> f32 {
        let (y, _, n) = super::exp_parts(x);
        y * f32::from_bits(((n as i32 + 127) as u32) << 23)
    }

    /// The exponent from t's bits gives the saturating cast's bits for every input: a sweep
    /// through and past the clamp, the clamp's ends, infinities; NaN stays NaN.
    #[test]
    fn exp_bits_are_unchanged() {
        let mut x = -120.0f32;
        while x < 120.0 {
            assert_eq!(super::exp_f32(x).to_bits(), exp_saturating_cast(x).to_bits(), "{x}");
            x += 0.000_731;
        }
        for x in [-87.0, 88.0, -87.5, 88.5, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0] {
            assert_eq!(super::exp_f32(x).to_bits(), exp_saturating_cast(x).to_bits(), "{x}");
        }
        assert!(super::exp_f32(f32::NAN).is_nan());
    }
}
