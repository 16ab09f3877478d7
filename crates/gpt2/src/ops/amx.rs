//! f32 matrix products on Intel AMX tiles, as accurate as an f32 GEMM.
//!
//! AMX multiplies bf16 matrices (8-bit significands) into f32 accumulators, at 1,024
//! multiply-adds per cycle per core against AVX-512's 32 f32 FMAs. To keep f32 accuracy each
//! f32 operand is split exactly into three bf16 parts, x = h + m + l (24 significant bits),
//! and the product keeps the six terms above 2⁻²⁴ relative: hh + hm + mh + hl + lh + mm. The
//! dropped terms (ml, lm, ll) and the rounding of the split are below one f32 ulp of each
//! product, so the result's error is that of an f32 GEMM (the tests check both against f64).
//! Six bf16 products cost 6/32 of an f32 FMA's work per AMX multiply-add: ~2.7× AVX-512's
//! peak on paper; measured with packing, 1.2–1.9× the `gemm` crate at the Llama bench's
//! shapes (`gemm-bench`, 2 cores of a Sapphire Rapids), ~365 GFLOP/s per core from L1.
//!
//! Each output element sums its k terms in one fixed order whatever the thread count (threads
//! split rows, never k; a k chunk stores its f32 accumulators and the next reloads them,
//! exactly), so results are bit-identical for 1 or 2 threads, but they differ in the last bits
//! from the `gemm` path: which one a job used is part of its receipt's worker version
//! ([`cpu_matmul_kernel`](super::cpu_matmul_kernel)), and an audit replays on the same one.
//! `POSTHUMAN_AMX=0` turns it off.
//!
//! Operands are packed into 64-byte-aligned bf16 panels (an unaligned tile load cost ~4× an
//! aligned one here): A as [k step][part][32 rows][32 k] per row block, one k chunk at a time
//! just before use; B whole, as [column block][k step][part][2 column tiles][16 k pairs]
//! [16 columns][2] (AMX's pair-interleaved B layout). Blocks are 32×32 outputs: four
//! accumulator tiles, two A and two B tiles, scheduled so that every loaded tile feeds two
//! products (a tile reloaded before the products reading it are done stalls the TMUL unit).

use super::kernels::{Mat, Out};
use rayon::prelude::*;
use std::arch::asm;
use std::sync::OnceLock;

/// One 64-byte line of packed bf16 values: `Vec<Line>` is the aligned panel storage.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u16; 32]);

/// bf16 values per (block, k step, part): 32 rows (or k pairs × columns) × 32.
const PART: usize = 1024;
/// bf16 values per (block, k step): three parts.
const STEP: usize = 3 * PART;
/// Row blocks one task runs at most, so each B panel read into L2 serves up to 256 rows (with
/// at least two tasks per thread, fewer: small products still use every thread).
const GROUP: usize = 8;
/// k steps per pass over the blocks: 512 of k keep a group's A panels (4 × 96 KiB) and the
/// B panel in use in L2 whatever k is (at k = 8,192 whole panels ran 0.7× the gemm crate).
/// Each output still sums its k terms in order: a pass stores the f32 accumulators and the
/// next loads them back, exactly.
const KC: usize = 16;

/// The tile configuration: palette 1, all eight tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const TILE_CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut i = 0;
    while i < 8 {
        c[16 + 2 * i] = 64;
        c[48 + i] = 16;
        i += 1;
    }
    TileConfig(c)
};

/// How `POSTHUMAN_AMX` sets the AMX path: `0` off, `always` for every product whatever its
/// size (tests run the tiny reference models through it this way), unset or anything else for
/// products large enough to gain, where the CPU has AMX.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Off,
    Large,
    Always,
}

fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("POSTHUMAN_AMX").as_deref() {
        Ok("0") => Mode::Off,
        _ if !supported() => Mode::Off,
        Ok("always") => Mode::Always,
        _ => Mode::Large,
    })
}

/// Whether products run on AMX: `POSTHUMAN_AMX` is not `0`, the CPU has AMX-BF16 and
/// AMX-TILE, and the kernel granted this process the tile state (Linux
/// `arch_prctl(ARCH_REQ_XCOMP_PERM)`). Decided once per process.
pub fn enabled() -> bool {
    mode() != Mode::Off
}

/// Whether this CPU and kernel can run AMX products at all (whatever `POSTHUMAN_AMX` says).
pub(crate) fn supported() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(enable)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn enable() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    let (max_leaf, leaf7) = (__cpuid(0).eax, __cpuid_count(7, 0));
    let amx = max_leaf >= 7 && leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0;
    // The packers are compiled for AVX-512 F/BW/BF16, which every AMX CPU also has.
    let wide = std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512bf16");
    if !amx || !wide {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    let ret: i64;
    // SAFETY: arch_prctl (syscall 158) with ARCH_REQ_XCOMP_PERM only asks the kernel to allow
    // this process the AMX tile state; it touches no memory of ours. It fails (negative
    // errno) on kernels or hypervisors that do not offer AMX, and then AMX stays unused.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") 158i64 => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn enable() -> bool {
    false
}

/// Whether `matmul` should take this product: large enough that packing pays (every
/// dimension at least one 32-wide block, 2²⁰ multiply-adds), and AMX is on.
pub(crate) fn worth(m: usize, n: usize, k: usize) -> bool {
    match mode() {
        Mode::Off => false,
        Mode::Always => true,
        Mode::Large => large_enough(m, n, k),
    }
}

/// Every dimension at least one 32-wide block, and 2²⁰ multiply-adds.
pub(crate) fn large_enough(m: usize, n: usize, k: usize) -> bool {
    m >= 32 && n >= 32 && k >= 32 && m * n * k >= 1 << 20
}

/// dst (row-major, row stride `dst_rs`) = a · b, or += when `accumulate`. The caller has
/// checked the shapes and that dst holds every (i, j) for i < a.rows, j < b.cols, and that
/// [`enabled`] is true.
pub(crate) fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    parallel: bool,
) {
    let mut outs = [Out { dst, rs: dst_rs, a: 0, b: 0 }];
    matmul_many(&[a], &[b], &mut outs, accumulate, parallel);
}

/// Each `outs[i].dst` = `a_ops[outs[i].a]` · `b_ops[outs[i].b]`, or += when `accumulate`, with
/// every distinct operand packed once: a layer's q, k and v products read one normed input
/// (packed once, its chunk then run against all three weights), and their weight gradients
/// read it again as B (packed once, shared by the three). Each output gets the bits a
/// [`matmul`] of its own gives: its blocks run the same kernels over the same k chunks. The
/// caller has checked that every operand has the same k, the indices, that each dst holds its
/// product, and that [`enabled`] is true.
pub(crate) fn matmul_many(
    a_ops: &[Mat],
    b_ops: &[Mat],
    outs: &mut [Out],
    accumulate: bool,
    parallel: bool,
) {
    let Some(k) = a_ops.first().map(|a| a.cols) else { return };
    let ks = k.div_ceil(32);
    // Every B is packed whole into one buffer, shared by every task; each task packs its own
    // rows' A one k chunk at a time, just before use, so that chunk (up to GROUP × KC steps,
    // 768 KiB) is still in L2 when the kernels read it: packed whole, a large A went to memory
    // and back.
    let first_panel: Vec<usize> = b_ops
        .iter()
        .scan(0, |next, b| {
            let first = *next;
            *next += b.cols.div_ceil(32);
            Some(first)
        })
        .collect();
    let pb = pack_b(b_ops, ks, parallel);
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    // Per distinct A, the products reading it: (dst, its row stride, columns, first panel).
    let targets: Vec<Vec<(SendPtr, usize, usize, usize)>> = (0..a_ops.len())
        .map(|ai| {
            outs.iter_mut()
                .filter(|o| o.a == ai)
                .map(|o| (SendPtr(o.dst.as_mut_ptr()), o.rs, b_ops[o.b].cols, first_panel[o.b]))
                .collect()
        })
        .collect();
    let groups: Vec<usize> =
        a_ops.iter().map(|a| a.rows.div_ceil(32).div_ceil(2 * threads).clamp(1, GROUP)).collect();
    let tasks: Vec<(usize, usize)> = (0..a_ops.len())
        .filter(|&ai| !targets[ai].is_empty())
        .flat_map(|ai| (0..a_ops[ai].rows.div_ceil(32).div_ceil(groups[ai])).map(move |g| (ai, g)))
        .collect();
    let task = |&(ai, g): &(usize, usize)| {
        let (a, group) = (&a_ops[ai], groups[ai]);
        let (m, mb) = (a.rows, a.rows.div_ceil(32));
        // SAFETY: the configuration is a valid palette-1 layout; AMX is enabled for this
        // process (`enabled`), and tile state is per thread, so each task configures it.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &TILE_CONFIG, options(nostack, readonly)) };
        let mut edge = [Line([0; 32]); 64];
        let mut buf = [[0f32; 32]; 32];
        let rbs = g * group..((g + 1) * group).min(mb);
        A_CHUNK.with_borrow_mut(|pa| {
            if pa.len() < GROUP * KC * STEP / 32 {
                pa.resize(GROUP * KC * STEP / 32, Line([0; 32]));
            }
            // Packing writes and the kernels read the chunk through this one pointer.
            let chunk: *mut u16 = pa.as_mut_ptr().cast();
            for s0 in (0..ks).step_by(KC) {
                let steps = KC.min(ks - s0);
                // The first pass of a product that overwrites starts from zero accumulators.
                let fresh = s0 == 0 && !accumulate;
                for (j, rb) in rbs.clone().enumerate() {
                    for s in 0..steps {
                        let at = (j * KC + s) * STEP;
                        // SAFETY: Line is 32 u16 with no padding, and step `s` of row block `j`
                        // lies inside the chunk buffer (j < group ≤ GROUP, s < KC); `enabled`
                        // (the caller's precondition) checked the packer's features.
                        unsafe {
                            let out = std::slice::from_raw_parts_mut(chunk.add(at), STEP);
                            pack_a_block(a, rb * 32, (s0 + s) * 32, out, &mut buf);
                        }
                    }
                }
                for &(dst, dst_rs, n, panel0) in &targets[ai] {
                    for cb in 0..n.div_ceil(32) {
                        for (j, rb) in rbs.clone().enumerate() {
                            let (r0, c0) = (rb * 32, cb * 32);
                            let (rows, cols) = ((m - r0).min(32), (n - c0).min(32));
                            // SAFETY: inside the chunk buffer (j < group ≤ GROUP).
                            let ap = unsafe { chunk.add(j * KC * STEP).cast_const() };
                            let bp = pb[((panel0 + cb) * ks + s0) * (STEP / 32)..]
                                .as_ptr()
                                .cast::<u16>();
                            // SAFETY: block (rb, cb) covers rows r0..r0+rows and columns
                            // c0..c0+cols of this product's dst, which the caller checked are
                            // inside it; no other task writes these rows of it; the panels hold
                            // `steps` steps from s0.
                            unsafe {
                                block(
                                    dst.0.add(r0 * dst_rs + c0),
                                    dst_rs,
                                    (rows, cols),
                                    ap,
                                    bp,
                                    steps,
                                    fresh,
                                    &mut edge,
                                )
                            };
                        }
                    }
                }
            }
        });
        // SAFETY: releases this thread's tile state (no tile is live past the kernel).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    };
    if parallel && threads > 1 {
        tasks.par_iter().for_each(task);
    } else {
        tasks.iter().for_each(task);
    }
    give(pb);
}

/// One 32×32 output block at `c` (row stride `ldc`) of which `rows` × `cols` are real: the
/// kernel in place when whole, else on a 32×32 copy in `edge` (padding rows and columns of the
/// panels are zero, so they add nothing).
///
/// # Safety
/// As [`kernel`], for the `rows` × `cols` values at `c`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block(
    c: *mut f32,
    ldc: usize,
    (rows, cols): (usize, usize),
    ap: *const u16,
    bp: *const u16,
    steps: usize,
    fresh: bool,
    edge: &mut [Line; 64],
) {
    // SAFETY: per the contract.
    unsafe {
        if rows == 32 && cols == 32 {
            kernel(c, ldc, ap, bp, steps, fresh);
            return;
        }
        let e = edge.as_mut_ptr().cast::<f32>();
        if !fresh {
            std::ptr::write_bytes(e, 0, 32 * 32);
            for r in 0..rows {
                std::ptr::copy_nonoverlapping(c.add(r * ldc), e.add(r * 32), cols);
            }
        }
        kernel(e, 32, ap, bp, steps, fresh);
        for r in 0..rows {
            std::ptr::copy_nonoverlapping(e.add(r * 32), c.add(r * ldc), cols);
        }
    }
}

thread_local! {
    /// Each thread's packed A chunk (`GROUP` row blocks × `KC` k steps).
    static A_CHUNK: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint row blocks of each product through it (see `matmul_many`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Packs every B of `bs` into 32-column panels of `ks` k steps each, one after another, one
/// panel per task.
fn pack_b(bs: &[Mat], ks: usize, parallel: bool) -> Vec<Line> {
    let per = ks * STEP / 32;
    // Which B and which of its column blocks each panel holds.
    let which: Vec<(usize, usize)> = bs
        .iter()
        .enumerate()
        .flat_map(|(bi, b)| (0..b.cols.div_ceil(32)).map(move |cb| (bi, cb)))
        .collect();
    let panels = which.len();
    let mut out = take(panels * per);
    let run = |(&(bi, cb), panel): (&(usize, usize), &mut [Line])| {
        let x = bs[bi].transposed();
        let mut buf = [[0f32; 32]; 32];
        // SAFETY: Line is 32 u16 with no padding, so a slice of Lines is one of u16s.
        let panel =
            unsafe { std::slice::from_raw_parts_mut(panel.as_mut_ptr().cast::<u16>(), per * 32) };
        for s in 0..ks {
            // SAFETY: `enabled` (the caller's precondition) checked the packer's features.
            unsafe {
                pack_b_block(&x, cb * 32, s * 32, &mut panel[s * STEP..(s + 1) * STEP], &mut buf)
            };
        }
    };
    let dst = &mut out[..panels * per];
    if parallel && panels > 1 && rayon::current_num_threads() > 1 {
        which.par_iter().zip(dst.par_chunks_mut(per)).for_each(run);
    } else {
        which.iter().zip(dst.chunks_mut(per)).for_each(run);
    }
    out
}

/// Panel buffers kept between products: a fresh multi-megabyte allocation per product is an
/// mmap, page faults and, when freed, an munmap whose TLB shootdown interrupts the other core.
static PANELS: std::sync::Mutex<Option<Vec<Line>>> = std::sync::Mutex::new(None);

/// A panel buffer of at least `n` lines (contents unspecified: the packers write every value
/// they use). Never shrunk, so a reused buffer costs no zeroing; one too small is replaced, not
/// grown (growing copied the old panels first).
fn take(n: usize) -> Vec<Line> {
    let v = PANELS.lock().map(|mut p| p.take()).ok().flatten().unwrap_or_default();
    if v.len() >= n {
        return v;
    }
    drop(v);
    vec![Line([0; 32]); n]
}

fn give(v: Vec<Line>) {
    // One buffer is kept, the largest given back: products run one after another need one,
    // and keeping more only raised peak RSS (the lm head's is 25 MiB at llama30m). Attention's
    // per-head products run side by side on the pool, and each takes a small one: keeping the
    // last given back let one of those displace the large one, and the next large product
    // paid a fresh allocation and its page faults (the lm head's first chunk ran at 0.4× of
    // its second's speed).
    if let Ok(mut p) = PANELS.lock()
        && p.as_ref().is_none_or(|kept| kept.len() < v.len())
    {
        *p = Some(v);
    }
}

use std::arch::x86_64::{
    __m256bh, __m256i, __m512, __m512i, _mm512_castpd_ps, _mm512_castps_pd, _mm512_castsi512_ps,
    _mm512_castsi512_si256, _mm512_cvtne2ps_pbh, _mm512_cvtpbh_ps, _mm512_extracti64x4_epi64,
    _mm512_loadu_ps, _mm512_loadu_si512, _mm512_permutex2var_epi16, _mm512_set1_epi32,
    _mm512_shuffle_f32x4, _mm512_storeu_ps, _mm512_storeu_si512, _mm512_sub_ps, _mm512_unpackhi_pd,
    _mm512_unpackhi_ps, _mm512_unpacklo_pd, _mm512_unpacklo_ps,
};

/// The three-way bf16 split of 32 values: (h, m, l), each 32 bf16 in one register, with
/// h + m + l = x to 24 bits: each part is the previous residual rounded to nearest-even
/// (`vcvtne2ps2bf16`), the residual exact in f32. (That instruction reads denormals as zero,
/// so the split of |x| < ~2⁻¹¹⁰ loses its last parts: far below anything a model computes.)
///
/// # Safety
/// The CPU must have AVX-512 F and BF16; `x` must point at 32 readable floats.
#[inline(always)]
unsafe fn split32(x: *const f32) -> [__m512i; 3] {
    // SAFETY: per the contract; the loads read the 32 values at `x`.
    unsafe {
        let (mut lo, mut hi) = (_mm512_loadu_ps(x), _mm512_loadu_ps(x.add(16)));
        let mut out = [_mm512_set1_epi32(0); 3];
        for part in out.iter_mut() {
            let b = _mm512_cvtne2ps_pbh(hi, lo);
            let bits: __m512i = std::mem::transmute(b);
            *part = bits;
            let back_lo = _mm512_cvtpbh_ps(std::mem::transmute::<__m256i, __m256bh>(
                _mm512_castsi512_si256(bits),
            ));
            let back_hi = _mm512_cvtpbh_ps(std::mem::transmute::<__m256i, __m256bh>(
                _mm512_extracti64x4_epi64::<1>(bits),
            ));
            lo = _mm512_sub_ps(lo, back_lo);
            hi = _mm512_sub_ps(hi, back_hi);
        }
        out
    }
}

/// Transposes a 16 × 16 block of 32-bit values in registers (row i becomes column i).
///
/// # Safety
/// The CPU must have AVX-512 F.
#[inline(always)]
unsafe fn transpose16(r: &mut [__m512; 16]) {
    // SAFETY: AVX-512 F, per the contract.
    unsafe {
        let mut t = [_mm512_loadu_ps([0f32; 16].as_ptr()); 16];
        // Pairs of rows interleaved by 32 bits, then by 64: each 128-bit lane of r[4q + j]
        // holds column j (+4, +8, +12 by lane) of rows 4q..4q+4.
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        for q in 0..4 {
            let (a, b, c, d) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
            let (pa, pb, pc, pd) = (
                _mm512_castps_pd(a),
                _mm512_castps_pd(b),
                _mm512_castps_pd(c),
                _mm512_castps_pd(d),
            );
            r[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(pa, pc));
            r[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pa, pc));
            r[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pb, pd));
            r[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pb, pd));
        }
        // Then 128-bit lanes across row groups: (0,4) and (8,12), twice.
        for j in 0..4 {
            t[j] = _mm512_shuffle_f32x4::<0x88>(r[j], r[j + 4]);
            t[j + 4] = _mm512_shuffle_f32x4::<0xDD>(r[j], r[j + 4]);
            t[j + 8] = _mm512_shuffle_f32x4::<0x88>(r[j + 8], r[j + 12]);
            t[j + 12] = _mm512_shuffle_f32x4::<0xDD>(r[j + 8], r[j + 12]);
        }
        for j in 0..8 {
            r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[j + 8]);
            r[j + 8] = _mm512_shuffle_f32x4::<0xDD>(t[j], t[j + 8]);
        }
    }
}

/// The f32 block x[r0.., k0..] (32 × 32, zero past x's edges) into `buf` as 32 rows of 32 k:
/// rows copied where k is contiguous, 16 × 16 register transposes where rows are, element by
/// element otherwise (and at the edges).
///
/// # Safety
/// The CPU must have AVX-512 F.
#[inline(always)]
unsafe fn gather(x: &Mat, r0: usize, k0: usize, buf: &mut [[f32; 32]; 32]) {
    let (rows, cols) = (x.rows.saturating_sub(r0).min(32), x.cols.saturating_sub(k0).min(32));
    let full = rows == 32 && cols == 32;
    if !full {
        *buf = [[0f32; 32]; 32];
    }
    if x.cs == 1 {
        for (r, row) in buf.iter_mut().enumerate().take(rows) {
            let at = (r0 + r) * x.rs + k0;
            row[..cols].copy_from_slice(&x.data[at..at + cols]);
        }
    } else if x.rs == 1 && full {
        let last = (r0 + 31) + (k0 + 31) * x.cs;
        assert!(last < x.data.len(), "amx gather: block past the operand");
        for (i0, k1) in [(0, 0), (0, 16), (16, 0), (16, 16)] {
            // SAFETY: AVX-512 F per the contract; every load reads 16 floats of x's block,
            // all at or below `last` (asserted); stores write rows of `buf`.
            unsafe {
                let mut v = [_mm512_loadu_ps(x.data.as_ptr()); 16];
                for (kk, reg) in v.iter_mut().enumerate() {
                    *reg = _mm512_loadu_ps(x.data.as_ptr().add(r0 + i0 + (k0 + k1 + kk) * x.cs));
                }
                transpose16(&mut v);
                for (i, reg) in v.iter().enumerate() {
                    _mm512_storeu_ps(buf[i0 + i][k1..].as_mut_ptr(), *reg);
                }
            }
        }
    } else {
        for (r, row) in buf.iter_mut().enumerate().take(rows) {
            for (c, v) in row.iter_mut().enumerate().take(cols) {
                *v = x.data[(r0 + r) * x.rs + (k0 + c) * x.cs];
            }
        }
    }
}

/// A step of an A panel: [part][32 rows][32 k].
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16 (every AMX CPU has; [`enabled`] checks).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_a_block(x: &Mat, r0: usize, k0: usize, out: &mut [u16], buf: &mut [[f32; 32]; 32]) {
    assert!(out.len() >= STEP);
    // Rows read in place when whole and k-contiguous; through `buf` otherwise.
    let direct = x.cs == 1 && r0 + 32 <= x.rows && k0 + 32 <= x.cols;
    if direct {
        assert!((r0 + 31) * x.rs + k0 + 32 <= x.data.len(), "amx pack: block past the operand");
    } else {
        // SAFETY: AVX-512 F per the contract.
        unsafe { gather(x, r0, k0, buf) };
    }
    for (r, copy) in buf.iter().enumerate() {
        let row = if direct { x.data[(r0 + r) * x.rs + k0..].as_ptr() } else { copy.as_ptr() };
        // SAFETY: AVX-512 per the contract; `row` has 32 readable floats (asserted above, or
        // a row of `buf`); each store writes 32 u16 inside `out` (asserted).
        unsafe {
            let parts = split32(row);
            for (p, part) in parts.iter().enumerate() {
                _mm512_storeu_si512(out.as_mut_ptr().add(p * PART + r * 32).cast(), *part);
            }
        }
    }
}

/// A step of a B panel: [part][column tile][k pair][column][2], from B's (32 k × 32) block;
/// `x` is bᵀ (B's columns as rows).
///
/// # Safety
/// As [`pack_a_block`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_b_block(x: &Mat, c0: usize, k0: usize, out: &mut [u16], buf: &mut [[f32; 32]; 32]) {
    assert!(out.len() >= STEP);
    let full = c0 + 32 <= x.rows && k0 + 32 <= x.cols;
    if full && x.cs == 1 {
        // B's columns are contiguous in k: split each column into 16 k pairs (32-bit words),
        // then a 16 × 16 word transpose per column tile puts pair p of 16 columns in row p.
        assert!((c0 + 31) * x.rs + k0 + 32 <= x.data.len(), "amx pack: block past the operand");
        // SAFETY: AVX-512 per the contract; each column read has 32 floats (asserted); the
        // stores write 16 rows of 32 u16 inside `out` (asserted).
        unsafe {
            // Written column by column, never zero-filled first (a 6 KiB memset per block,
            // ~1% of a full fine-tune's samples), and in this function's body: a closure
            // (`array::from_fn`) would lose its target features and call every intrinsic.
            let mut cols = [std::mem::MaybeUninit::<[__m512i; 3]>::uninit(); 32];
            for (c, col) in cols.iter_mut().enumerate() {
                col.write(split32(x.data[(c0 + c) * x.rs + k0..].as_ptr()));
            }
            for p in 0..3 {
                for ct in 0..2 {
                    let mut v = [_mm512_castsi512_ps(_mm512_set1_epi32(0)); 16];
                    for (i, reg) in v.iter_mut().enumerate() {
                        // SAFETY: every column was written by the loop above.
                        *reg = _mm512_castsi512_ps(cols[ct * 16 + i].assume_init_ref()[p]);
                    }
                    transpose16(&mut v);
                    for (pair, reg) in v.iter().enumerate() {
                        let at = out.as_mut_ptr().add(p * PART + ct * 512 + pair * 32);
                        _mm512_storeu_ps(at.cast(), *reg);
                    }
                }
            }
        }
        return;
    }
    // Otherwise B's rows, k by k: read in place when n-contiguous, else gathered.
    let direct = full && x.rs == 1;
    let bt = x.transposed();
    if direct {
        assert!((k0 + 31) * bt.rs + c0 + 32 <= bt.data.len(), "amx pack: block past the operand");
    } else {
        // SAFETY: AVX-512 F per the contract.
        unsafe { gather(&bt, k0, c0, buf) };
    }
    let row = |kk: usize| {
        if direct { bt.data[(k0 + kk) * bt.rs + c0..].as_ptr() } else { buf[kk].as_ptr() }
    };
    // SAFETY: AVX-512 per the contract; the index vectors are 32 u16 each; each row read has
    // 32 floats (asserted, or a row of `buf`); each store writes 32 u16 inside `out`.
    unsafe {
        const fn interleave(from: u16) -> [u16; 32] {
            let mut v = [0u16; 32];
            let mut i = 0;
            while i < 16 {
                v[2 * i] = from + i as u16;
                v[2 * i + 1] = from + i as u16 + 32;
                i += 1;
            }
            v
        }
        static LOW: [u16; 32] = interleave(0);
        static HIGH: [u16; 32] = interleave(16);
        let (lo, hi) = (
            _mm512_loadu_si512(LOW.as_ptr().cast::<__m512i>()),
            _mm512_loadu_si512(HIGH.as_ptr().cast::<__m512i>()),
        );
        for pair in 0..16 {
            let (a, b) = (split32(row(2 * pair)), split32(row(2 * pair + 1)));
            for p in 0..3 {
                let base = out.as_mut_ptr().add(p * PART + pair * 32);
                _mm512_storeu_si512(base.cast(), _mm512_permutex2var_epi16(a[p], lo, b[p]));
                _mm512_storeu_si512(
                    base.add(512).cast(),
                    _mm512_permutex2var_epi16(a[p], hi, b[p]),
                );
            }
        }
    }
}

/// C (32 × 32 f32 at `c`, row stride `ldc` floats) += A panel · B panel over `ks` k steps, or
/// = when `fresh` (C is then only written).
///
/// Per k step, 16 tile loads feed 24 products: A's h rows with B's h, m and l columns, A's m
/// rows with B's m and h, A's l rows with B's h (still loaded). Every B tile is used twice,
/// and a register is reloaded only after two products that do not read it.
///
/// # Safety
/// AMX must be configured with [`TILE_CONFIG`] on this thread; `c` must address 32 rows of 32
/// floats at stride `ldc`; `a` and `b` must be 64-byte aligned panels of `ks` steps.
unsafe fn kernel(c: *mut f32, ldc: usize, a: *const u16, b: *const u16, ks: usize, fresh: bool) {
    // SAFETY: per the contract above; the loop reads `ks` steps of each panel.
    unsafe {
        asm!(
            "test {fresh}, {fresh}",
            "jz 3f",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "jmp 2f",
            "3:",
            "tileloadd tmm0, [{c} + {ldc}]",
            "tileloadd tmm1, [{c} + {ldc} + 64]",
            "tileloadd tmm2, [{c16} + {ldc}]",
            "tileloadd tmm3, [{c16} + {ldc} + 64]",
            "2:",
            // A h rows × B h, m, l columns.
            "tileloadd tmm4, [{a} + {s}]",
            "tileloadd tmm5, [{a} + {s} + 1024]",
            "tileloadd tmm6, [{b} + {s}]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tileloadd tmm7, [{b} + {s} + 1024]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm6, [{b} + {s} + 2048]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tileloadd tmm7, [{b} + {s} + 3072]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm6, [{b} + {s} + 4096]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tileloadd tmm7, [{b} + {s} + 5120]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm3, tmm5, tmm7",
            // A m rows × B m, h columns.
            "tileloadd tmm4, [{a} + {s} + 2048]",
            "tileloadd tmm6, [{b} + {s} + 2048]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm5, [{a} + {s} + 3072]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tileloadd tmm7, [{b} + {s} + 3072]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "tileloadd tmm6, [{b} + {s}]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tileloadd tmm7, [{b} + {s} + 1024]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm3, tmm5, tmm7",
            // A l rows × B h columns (in tmm6, tmm7).
            "tileloadd tmm4, [{a} + {s} + 4096]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a} + {s} + 5120]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a}, 6144",
            "add {b}, 6144",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c} + {ldc}], tmm0",
            "tilestored [{c} + {ldc} + 64], tmm1",
            "tilestored [{c16} + {ldc}], tmm2",
            "tilestored [{c16} + {ldc} + 64], tmm3",
            c = in(reg) c,
            c16 = in(reg) c.add(16 * ldc),
            ldc = in(reg) ldc * 4,
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            s = in(reg) 64usize,
            n = inout(reg) ks => _,
            fresh = in(reg) usize::from(fresh),
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::kernels;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // Mixed magnitudes, as activations and gradients have.
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                u * [1.0, 1e-3, 30.0][(s % 3) as usize]
            })
            .collect()
    }

    /// (a, b) as `Mat`s in the given layouts, from row-major (m×k) and (k×n) values.
    fn layouts(
        a: &[f32],
        b: &[f32],
        m: usize,
        k: usize,
        n: usize,
    ) -> Vec<(Vec<f32>, Vec<f32>, bool, bool)> {
        let t = |x: &[f32], r: usize, c: usize| {
            let mut y = vec![0f32; r * c];
            for i in 0..r {
                for j in 0..c {
                    y[j * r + i] = x[i * c + j];
                }
            }
            y
        };
        vec![
            (a.to_vec(), b.to_vec(), false, false),
            (t(a, m, k), b.to_vec(), true, false),
            (a.to_vec(), t(b, k, n), false, true),
        ]
    }

    /// AMX against f64 and against the AVX-512 gemm path, every layout the models use, edges
    /// past whole 32-blocks and accumulation: its error stays within an f32 GEMM's.
    #[test]
    fn products_are_as_accurate_as_f32_gemm() {
        if !supported() {
            eprintln!("skipped: this CPU or kernel offers no AMX");
            return;
        }
        for &(m, k, n) in
            &[(70usize, 45usize, 33usize), (128, 512, 96), (33, 1376, 64), (256, 64, 520)]
        {
            let (a, b) = (data(m * k, 1 + m as u64), data(k * n, 2 + n as u64));
            let init = data(m * n, 3);
            for (av, bv, at, bt) in layouts(&a, &b, m, k, n) {
                let am = if at { Mat::t(&av, m, k, m) } else { Mat::rows(&av, m, k, k) };
                let bm = if bt { Mat::t(&bv, k, n, k) } else { Mat::rows(&bv, k, n, n) };
                for acc in [false, true] {
                    let (mut amx, mut gemm) = (init.clone(), init.clone());
                    matmul(&mut amx, n, am, bm, acc, true);
                    kernels::gemm_only(&mut gemm, n, am, bm, acc);
                    let (mut ea, mut eg) = (0f64, 0f64);
                    for i in 0..m {
                        for j in 0..n {
                            let mut exact = if acc { init[i * n + j] as f64 } else { 0.0 };
                            let mut scale = exact.abs();
                            for l in 0..k {
                                let p = a[i * k + l] as f64 * b[l * n + j] as f64;
                                exact += p;
                                scale += p.abs();
                            }
                            let s = scale.max(1e-30);
                            ea = ea.max((amx[i * n + j] as f64 - exact).abs() / s);
                            eg = eg.max((gemm[i * n + j] as f64 - exact).abs() / s);
                        }
                    }
                    let what = format!("{m}x{k}x{n} a^T {at} b^T {bt} acc {acc}");
                    // An f32 sum of k terms is off by up to ~k·2⁻²⁴ of the sum of magnitudes;
                    // in practice a few ulps. AMX may not be worse than 2× gemm's or 1e-6.
                    assert!(ea <= (2.0 * eg).max(1e-6), "{what}: amx {ea:e} vs gemm {eg:e}");
                }
            }
        }
    }

    #[test]
    fn shared_operands_give_each_product_its_own_bits() {
        if !supported() {
            eprintln!("skipped: this CPU or kernel offers no AMX");
            return;
        }
        // One A against three Bs of other widths (a layer's q, k, v), then three As against
        // one B (their weight gradients), with partial blocks, both accumulate modes.
        let k = 70;
        let (a1, a2, a3) = (data(100 * k, 11), data(40 * k, 12), data(33 * k, 13));
        let (b1, b2, b3) = (data(k * 64, 14), data(k * 50, 15), data(k * 96, 16));
        let am = [Mat::rows(&a1, 100, k, k), Mat::t(&a2, 40, k, 40), Mat::rows(&a3, 33, k, k)];
        let bm = [Mat::t(&b1, k, 64, k), Mat::rows(&b2, k, 50, 50), Mat::t(&b3, k, 96, k)];
        let pairs = [[(0, 0), (0, 1), (0, 2)], [(0, 1), (1, 1), (2, 1)]];
        for pairs in pairs {
            for acc in [false, true] {
                let dsts = || -> Vec<Vec<f32>> {
                    pairs.iter().map(|&(ai, bi)| data(am[ai].rows * bm[bi].cols, 17)).collect()
                };
                let mut alone = dsts();
                for (d, &(ai, bi)) in alone.iter_mut().zip(&pairs) {
                    matmul(d, bm[bi].cols, am[ai], bm[bi], acc, true);
                }
                let mut shared = dsts();
                let mut outs: Vec<Out> = shared
                    .iter_mut()
                    .zip(&pairs)
                    .map(|(d, &(ai, bi))| Out { dst: d, rs: bm[bi].cols, a: ai, b: bi })
                    .collect();
                matmul_many(&am, &bm, &mut outs, acc, true);
                let bits = |v: &Vec<Vec<f32>>| -> Vec<Vec<u32>> {
                    v.iter().map(|d| d.iter().map(|x| x.to_bits()).collect()).collect()
                };
                assert!(bits(&alone) == bits(&shared), "{pairs:?} acc {acc}");
            }
        }
    }

    #[test]
    fn bits_do_not_depend_on_the_thread_count() {
        if !supported() {
            eprintln!("skipped: this CPU or kernel offers no AMX");
            return;
        }
        let (m, k, n) = (300, 200, 150);
        let (a, b) = (data(m * k, 5), data(k * n, 6));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut c = vec![0f32; m * n];
            pool.install(|| {
                matmul(&mut c, n, Mat::rows(&a, m, k, k), Mat::t(&b, k, n, k), false, true)
            });
            c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(2));
        assert_eq!(run(2), run(3));
    }
}

#[cfg(test)]
mod transpose_tests {
    use super::*;

    #[test]
    fn transpose16_transposes() {
        if !supported() {
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        #[target_feature(enable = "avx512f")]
        unsafe fn run(m: &[f32]) -> Vec<f32> {
            let mut out = vec![0f32; 256];
            // SAFETY: AVX-512 F (the caller's contract); 16 rows of 16 inside m and out.
            unsafe {
                let mut v = [_mm512_loadu_ps(m.as_ptr()); 16];
                for (i, r) in v.iter_mut().enumerate() {
                    *r = _mm512_loadu_ps(m[i * 16..].as_ptr());
                }
                transpose16(&mut v);
                for (i, r) in v.iter().enumerate() {
                    _mm512_storeu_ps(out[i * 16..].as_mut_ptr(), *r);
                }
            }
            out
        }
        // SAFETY: `supported` implies AVX-512 F.
        let t = unsafe { run(&m) };
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(t[i * 16 + j], m[j * 16 + i], "({i}, {j})");
            }
        }
    }
}
