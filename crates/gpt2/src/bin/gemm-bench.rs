//! f32 GEMM throughput at the Llama benches' shapes: candle's matmul (the `gemm` crate), the
//! model's AMX product where the CPU has AMX (`amx-bf16x3`, packing included; `ops/amx.rs`,
//! what the model runs there), and a system BLAS's `cblas_sgemm`, loaded at run time: Debian's OpenBLAS
//! (`libopenblas0-pthread`, `libopenblas.so.0`) by default, more with `--blas PATH` (MKL's
//! `libmkl_rt.so`, numpy's bundled ILP64 `libscipy_openblas64_*.so`). Each BLAS runs twice:
//! with its own thread pool, and single-threaded on fixed 128-row blocks split over rayon's
//! pool (`/rayon`), the form a model integration would need (see `ROW_BLOCK`). Each
//! repetition times every implementation once per shape, interleaved, so load from other
//! processes hits all alike; the table gives best and median GFLOP/s and their ratios to
//! candle's.
//!
//! `gemm-bench [--shape llama30m|smollm135m] [--tokens 1024] [--reps 7] [--threads 2]
//! [--blas PATH]...`
//!
//! Measured on the 2-core AMD EPYC (AVX2) dev host, shared with other builds (load 2-5):
//! in the `/rayon` form, Debian's OpenBLAS 0.3.21 and MKL 2026.2 match the gemm crate within
//! about ±10% on the decoder's products of llama30m and SmolLM2-135M (best of interleaved reps;
//! 85-170 GFLOP/s as the load allowed), 1.2-1.4x only on llama30m's lm head; with their own
//! pools they stayed near 90 GFLOP/s, and OpenBLAS is 3-5x slower on one-row (decoding)
//! products. Wired into the model (commit df847d5), eval and training ran no faster, so the
//! model stays on the `gemm` crate.

use posthuman_gpt2::candle_core::{Device, Tensor};
use std::ffi::c_int;
use std::time::Instant;

const DEFAULT_LIB: &str = "libopenblas.so.0";

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

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

/// Rows of dst per sgemm call in the rayon split. A fixed size, not one block per thread:
/// OpenBLAS's result bits depend on how many rows a call has (measured: a 256-row product
/// differs from its two 128-row halves in the last bits), so a split by thread count would
/// make training weights depend on the thread count.
const ROW_BLOCK: usize = 128;

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
    /// likewise b.
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

/// One product as the model runs it: dst (m×n) = op(a) · op(b).
struct Case {
    name: String,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
}

fn cases(shape: &str, t: usize) -> AnyResult<Vec<Case>> {
    let cfg = posthuman_gpt2::bench::llama_shape(shape)?;
    let (h, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let kv = cfg.num_key_value_heads * (h / cfg.num_attention_heads);
    let mut out = Vec::new();
    let mut add = |name: &str, m, n, k, ta, tb| {
        out.push(Case { name: name.to_string(), m, n, k, ta, tb });
    };
    // Forward y = x·wᵀ (w is (out, in)), the backward's dx = g·w and dw = gᵀ·x.
    for (layer, o, i) in
        [("q/o", h, h), ("k/v", kv, h), ("gate/up", f, h), ("down", h, f), ("lm_head", v, h)]
    {
        if layer == "k/v" && kv == h {
            continue;
        }
        add(&format!("{layer} fwd x·wT"), t, o, i, false, true);
        add(&format!("{layer} bwd dx=g·w"), t, i, o, false, false);
        add(&format!("{layer} bwd dw=gT·x"), o, i, t, true, false);
    }
    // Batch-1 decoding: one row through each projection.
    for (layer, o, i) in [("q/o", h, h), ("gate/up", f, h), ("down", h, f), ("lm_head", v, h)] {
        add(&format!("{layer} decode 1 row"), 1, o, i, false, true);
    }
    Ok(out)
}

fn main() -> AnyResult<()> {
    let (mut shape, mut tokens, mut reps, mut threads) = ("llama30m".to_string(), 1024, 7, 2);
    let mut libs = vec![DEFAULT_LIB.to_string()];
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--shape" => shape = v()?,
            "--tokens" => tokens = v()?.parse()?,
            "--reps" => reps = v()?.parse()?,
            "--threads" => threads = v()?.parse()?,
            "--blas" => libs.push(v()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { posthuman_gpt2::configure_threads(Some(threads)) };
    // Each library twice: its own pool, and single-threaded with rows split over rayon.
    let blases: Vec<Blas> = libs
        .iter()
        .flat_map(|p| [(p, false), (p, true)])
        .filter_map(|(p, split)| match Blas::load(p, threads, split) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("skipping {p}: {e}");
                None
            }
        })
        .collect();
    let mut probe = [0f32; 1];
    let amx =
        posthuman_gpt2::bench::amx_product(&mut probe, (1, 1, 1), &[0.0], false, &[0.0], false);
    let names: Vec<String> = std::iter::once("candle".to_string())
        .chain(amx.then(|| "amx-bf16x3".to_string()))
        .chain(blases.iter().map(|b| {
            let name = b.path.rsplit('/').next().unwrap_or(&b.path);
            format!("{}{}", &name[..name.len().min(8)], if b.split { "/rayon" } else { "" })
        }))
        .collect();
    println!(
        "{shape}, {tokens} tokens, {threads} threads, {reps} interleaved reps; GFLOP/s best/median, then ratios to candle"
    );
    print!("{:<24}{:>6}{:>6}{:>6}", "product", "m", "n", "k");
    for n in &names {
        print!("{:>22}", format!("{n} best/med"));
    }
    for n in names.iter().skip(1) {
        print!("{:>18}", n);
    }
    println!();
    for c in cases(&shape, tokens)? {
        let (ar, ac) = if c.ta { (c.k, c.m) } else { (c.m, c.k) };
        let (br, bc) = if c.tb { (c.n, c.k) } else { (c.k, c.n) };
        let a: Vec<f32> = (0..ar * ac).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect();
        let b: Vec<f32> = (0..br * bc).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01).collect();
        let at = Tensor::from_slice(&a, (ar, ac), &Device::Cpu)?;
        let bt = Tensor::from_slice(&b, (br, bc), &Device::Cpu)?;
        let (at, bt) = (if c.ta { at.t()? } else { at }, if c.tb { bt.t()? } else { bt });
        let mut dst = vec![0f32; c.m * c.n];
        let flop = 2.0 * (c.m * c.n * c.k) as f64;
        // Enough calls per sample that one sample takes a few ms.
        let inner = ((2e7 / flop).ceil() as usize).max(1);
        let mut secs = vec![Vec::new(); names.len()];
        let mut worst = vec![0f32; names.len()];
        let mut want = Vec::new();
        for rep in 0..=reps {
            let t0 = Instant::now();
            let mut y = None;
            for _ in 0..inner {
                y = Some(at.matmul(&bt)?);
            }
            if rep > 0 {
                secs[0].push(t0.elapsed().as_secs_f64() / inner as f64);
            }
            if let Some(y) = y {
                want = y.flatten_all()?.to_vec1::<f32>()?;
            }
            let first = usize::from(amx);
            if amx {
                let t0 = Instant::now();
                for _ in 0..inner {
                    posthuman_gpt2::bench::amx_product(
                        &mut dst,
                        (c.m, c.n, c.k),
                        &a,
                        c.ta,
                        &b,
                        c.tb,
                    );
                }
                if rep > 0 {
                    secs[1].push(t0.elapsed().as_secs_f64() / inner as f64);
                }
                let diff = dst.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                worst[1] = worst[1].max(diff);
            }
            for (j, bl) in blases.iter().enumerate() {
                let j = j + first;
                let t0 = Instant::now();
                for _ in 0..inner {
                    // SAFETY: a, b and dst hold exactly these row-major extents.
                    unsafe {
                        bl.sgemm(
                            (c.m, c.n, c.k),
                            a.as_ptr(),
                            ac,
                            c.ta,
                            b.as_ptr(),
                            bc,
                            c.tb,
                            dst.as_mut_ptr(),
                            c.n,
                            false,
                        );
                    }
                }
                if rep > 0 {
                    secs[j + 1].push(t0.elapsed().as_secs_f64() / inner as f64);
                }
                let diff = dst.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                worst[j + 1] = worst[j + 1].max(diff);
            }
        }
        let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max).max(1e-30);
        for (j, w) in worst.iter().enumerate().skip(1) {
            if *w > 1e-5 * scale {
                eprintln!("{}: {} differs from candle by {w} (max |y| {scale})", c.name, names[j]);
            }
        }
        let gf = |s: &mut Vec<f64>| {
            s.sort_by(|x, y| x.total_cmp(y));
            (flop / s[0] / 1e9, flop / s[s.len() / 2] / 1e9)
        };
        let stats: Vec<(f64, f64)> = secs.iter_mut().map(gf).collect();
        print!("{:<24}{:>6}{:>6}{:>6}", c.name, c.m, c.n, c.k);
        for (best, med) in &stats {
            print!("{:>22}", format!("{best:.1}/{med:.1}"));
        }
        for (best, med) in stats.iter().skip(1) {
            print!("{:>18}", format!("{:.2}/{:.2}", best / stats[0].0, med / stats[0].1));
        }
        println!();
    }
    Ok(())
}
