//! An optional system BLAS for the CPU f32 matmuls, loaded at run time.
//!
//! `cblas_sgemm` comes from the first of `POSTHUMAN_BLAS` (a library path, or `off` to
//! disable) or Debian's `libopenblas.so.0` (package `libopenblas0-pthread`) that loads. Without
//! one, every caller falls back to the `gemm` crate (candle's matmul), so builds and tests need
//! no BLAS. Loading at run time rather than linking keeps the binary the same with and
//! without the library, and lets a bench A/B both paths in one process.
//!
//! Threads: the BLAS runs single-threaded and each product's rows are split over rayon's pool
//! (`RAYON_NUM_THREADS`), which the fused kernels also use: a second pool (OpenBLAS's own)
//! spin-waits between products and took cores from the kernels in between — on 2 loaded
//! cores, eval ran at 0.75x the rayon split's throughput with it (`gemm-bench` compares both).
//! The row blocks have a fixed size, so a product's bits do not depend on the thread count.

use super::kernels::Mat;
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor, bail};
use std::ffi::c_int;
use std::sync::OnceLock;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

type SgemmFn = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);

/// The ILP64 form (64-bit ints), as the `scipy-openblas64` wheel numpy bundles exports it.
type Sgemm64Fn = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    i64,
    i64,
    i64,
    f32,
    *const f32,
    i64,
    *const f32,
    i64,
    f32,
    *mut f32,
    i64,
);

#[derive(Clone, Copy)]
enum Sgemm {
    Lp64(SgemmFn),
    Ilp64(Sgemm64Fn),
}

/// A loaded `cblas_sgemm` (the library stays loaded for the process's life).
pub struct Blas {
    sgemm: Sgemm,
    /// Split each product's rows over rayon's pool, the BLAS single-threaded, instead of
    /// letting the BLAS's own pool run it.
    pub split: bool,
    /// Where it was loaded from, for logs and bench tables.
    pub path: String,
    _lib: libloading::Library,
}

static BLAS: OnceLock<Option<Blas>> = OnceLock::new();

/// The default library: Debian's OpenBLAS (pthread variant via update-alternatives).
pub const DEFAULT_LIB: &str = "libopenblas.so.0";

/// Rows of dst per sgemm call in the rayon split. A fixed size, not one block per thread:
/// OpenBLAS's result bits depend on how many rows a call has (measured: a 256-row product
/// differs from its two 128-row halves in the last bits), so a split by thread count would
/// make training weights depend on the thread count.
const ROW_BLOCK: usize = 128;

/// The process's BLAS, loaded on first use; None where disabled or not installed.
pub fn blas() -> Option<&'static Blas> {
    BLAS.get_or_init(|| {
        let path = std::env::var("POSTHUMAN_BLAS").unwrap_or_else(|_| DEFAULT_LIB.to_string());
        if path.is_empty() || path == "off" {
            return None;
        }
        Blas::load(&path, rayon::current_num_threads(), true).ok()
    })
    .as_ref()
}

/// The BLAS for an m×k · k×n product where it pays: not for thin ones (decoding a token, a
/// LoRA rank), where `gemm` was measured faster (OpenBLAS 0.3.21 runs 1×512·512×512 at a
/// fifth of its speed).
pub(crate) fn for_product(m: usize, n: usize, k: usize) -> Option<&'static Blas> {
    if m.min(n).min(k) >= 32 && m * n * k >= 1 << 20 { blas() } else { None }
}

impl Blas {
    /// Loads `cblas_sgemm` from `path` and sets its pool to `threads` where the library
    /// exports a setter (OpenBLAS, MKL).
    pub fn load(path: &str, threads: usize, split: bool) -> std::result::Result<Self, String> {
        // SAFETY: loading a BLAS runs only its initialisers, which touch no Rust state.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
        // SAFETY: each symbol has the C signature of its type: CBLAS's (LP64: Debian's
        // OpenBLAS, MKL's mkl_rt, `scipy-openblas32` with its `scipy_` prefix) or the ILP64
        // one of `scipy-openblas64`.
        let sgemm = unsafe {
            if let Ok(f) = lib.get::<SgemmFn>(b"cblas_sgemm\0") {
                Sgemm::Lp64(*f)
            } else if let Ok(f) = lib.get::<SgemmFn>(b"scipy_cblas_sgemm\0") {
                Sgemm::Lp64(*f)
            } else {
                Sgemm::Ilp64(
                    *lib.get::<Sgemm64Fn>(b"scipy_cblas_sgemm64_\0").map_err(|e| e.to_string())?,
                )
            }
        };
        let n = if split { 1 } else { threads.max(1) as c_int };
        // SAFETY: both setters are `void f(int)` (mkl_service.h, cblas.h of OpenBLAS).
        unsafe {
            for name in [
                &b"openblas_set_num_threads\0"[..],
                b"scipy_openblas_set_num_threads\0",
                b"scipy_openblas_set_num_threads64_\0",
                b"MKL_Set_Num_Threads\0",
            ] {
                if let Ok(f) = lib.get::<unsafe extern "C" fn(c_int)>(name) {
                    f(n);
                    break;
                }
            }
        }
        Ok(Self { sgemm, split, path: path.to_string(), _lib: lib })
    }

    /// dst (m×n, row stride ldc) = op(a) · op(b) (+ dst when `accumulate`), all row-major:
    /// op(a) is a (m×k, row stride lda) or, when `ta`, the transpose of a (k×m, row stride lda);
    /// likewise b. The caller checks the extents (see [`super::kernels::matmul`]).
    ///
    /// # Safety
    /// Every element op(a), op(b) and dst address under these strides must be in bounds, and
    /// dst must not alias a or b.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn sgemm(
        &self,
        (m, n, k): (usize, usize, usize),
        a: *const f32,
        lda: usize,
        ta: bool,
        b: *const f32,
        ldb: usize,
        tb: bool,
        dst: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        if self.split && m > ROW_BLOCK {
            // Row blocks of dst: op(a)'s rows start r0 rows down (r0 columns across when
            // transposed); b is shared. Pointers cross threads as addresses.
            let (a, b, dst) = (a as usize, b as usize, dst as usize);
            let step = ROW_BLOCK;
            rayon::scope(|s| {
                for r0 in (0..m).step_by(step) {
                    let rows = step.min(m - r0);
                    s.spawn(move |_| {
                        let a = a as *const f32;
                        let a = if ta { a.wrapping_add(r0) } else { a.wrapping_add(r0 * lda) };
                        // SAFETY: a sub-block of the caller's checked extents; the blocks of
                        // dst are disjoint.
                        unsafe {
                            self.sgemm_one(
                                (rows, n, k),
                                a,
                                lda,
                                ta,
                                b as *const f32,
                                ldb,
                                tb,
                                (dst as *mut f32).wrapping_add(r0 * ldc),
                                ldc,
                                accumulate,
                            );
                        }
                    });
                }
            });
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.sgemm_one((m, n, k), a, lda, ta, b, ldb, tb, dst, ldc, accumulate) }
    }

    #[allow(clippy::too_many_arguments)]
    unsafe fn sgemm_one(
        &self,
        (m, n, k): (usize, usize, usize),
        a: *const f32,
        lda: usize,
        ta: bool,
        b: *const f32,
        ldb: usize,
        tb: bool,
        dst: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let t = |x: bool| if x { TRANS } else { NO_TRANS };
        let beta = if accumulate { 1.0 } else { 0.0 };
        let (m, n, k) = (m as i64, n as i64, k as i64);
        let (lda, ldb, ldc) = (lda as i64, ldb as i64, ldc as i64);
        // SAFETY: forwarded from the caller (extents below 2³¹ in the LP64 form: the callers'
        // matrices are far smaller).
        unsafe {
            match self.sgemm {
                Sgemm::Lp64(f) => f(
                    ROW_MAJOR,
                    t(ta),
                    t(tb),
                    m as c_int,
                    n as c_int,
                    k as c_int,
                    1.0,
                    a,
                    lda as c_int,
                    b,
                    ldb as c_int,
                    beta,
                    dst,
                    ldc as c_int,
                ),
                Sgemm::Ilp64(f) => {
                    f(ROW_MAJOR, t(ta), t(tb), m, n, k, 1.0, a, lda, b, ldb, beta, dst, ldc)
                }
            }
        }
    }
}

/// a · b for 2-D tensors: CPU f32 products that [`for_product`] picks go through the system
/// BLAS, and so does their backward (da = g·bᵀ, db = aᵀ·g, for the inputs in a graph);
/// anything else is candle's `matmul`. Transposed views (`w.t()`) are read in place, as CBLAS
/// takes either orientation.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if let (Ok((m, k)), Ok((k2, n))) = (a.dims2(), b.dims2())
        && k == k2
        && super::fused(a)
        && super::fused(b)
        && for_product(m, n, k).is_some()
    {
        return in_place_view(a)?.apply_op2(&in_place_view(b)?, BlasMatmul);
    }
    a.matmul(b)
}

/// `t` itself when CBLAS can read it as it lies (row-major or its transpose), else a copy.
fn in_place_view(t: &Tensor) -> Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    match t.stride() {
        [rs, 1] if *rs >= cols => Ok(t.clone()),
        [1, cs] if *cs >= rows => Ok(t.clone()),
        _ => t.contiguous(),
    }
}

struct BlasMatmul;

/// The matrix a layout describes in CPU storage (2-D, any strides).
fn mat<'a>(s: &'a CpuStorage, l: &Layout) -> Result<Mat<'a>> {
    let (rows, cols) = l.shape().dims2()?;
    let data = &s.as_slice::<f32>()?[l.start_offset()..];
    match l.stride() {
        [rs, cs] => Ok(Mat { data, rows, cols, rs: *rs, cs: *cs }),
        _ => bail!("blas matmul: not a matrix"),
    }
}

impl candle_core::CustomOp2 for BlasMatmul {
    fn name(&self) -> &'static str {
        "blas-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (mat(s1, l1)?, mat(s2, l2)?);
        let mut dst = vec![0f32; a.rows * b.cols];
        super::kernels::matmul(&mut dst, b.cols, a, b, false, true)?;
        Ok((CpuStorage::F32(dst), Shape::from((a.rows, b.cols))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // A frozen (detached) operand gets no gradient: its product would be as many FLOPs
        // as the forward, for nothing.
        let da = if a.track_op() { Some(matmul(grad, &b.t()?)?) } else { None };
        let db = if b.track_op() { Some(matmul(&a.t()?, grad)?) } else { None };
        Ok((da, db))
    }
}
