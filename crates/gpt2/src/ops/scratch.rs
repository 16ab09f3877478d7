//! Reusable f32 buffers for the CPU training step and evaluation.
//!
//! A training step allocates ~350 MB of activations and their gradients (4L/256d, batch 8,
//! ctx 256) and frees them before the next step. Fresh, those allocations cost zeroing (or page
//! faults and the kernel's zeroing, for the large ones) that the kernels then overwrite
//! anyway, and the cost moves with whatever else the machine's memory is doing. The sizes
//! repeat step after step, so the step hands its buffers back here and takes them again.
//!
//! [`take`] returns a buffer whose contents are unspecified: only for outputs that are written
//! in full before they are read. In builds with debug assertions (the tests) it is filled with
//! NaN, so a read before a write poisons the result and fails the bit-for-bit and gradient
//! tests instead of reading a previous step's stale values. [`zeroed`] is for accumulators.
//! Buffers never handed back are simply freed: giving back is an optimisation, never needed
//! for correctness.

use rayon::prelude::*;
use std::sync::Mutex;

/// Most bytes kept: above this, returned buffers are freed (a bound, not a target: one step's
/// working set is well under it).
const MAX_POOLED_BYTES: usize = 1 << 30;

struct Pool {
    free: Vec<Vec<f32>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { free: Vec::new(), bytes: 0 });

/// A buffer of `len` values whose contents are unspecified (NaN with debug assertions).
pub(crate) fn take(len: usize) -> Vec<f32> {
    let reused = POOL.lock().ok().and_then(|mut p| {
        // Best fit: the smallest pooled buffer that holds `len`, and not much more: the
        // buffer may end up inside a tensor the graph keeps (LoRA keeps every layer's), where
        // capacity past `len` is resident memory nobody uses.
        let i = (0..p.free.len())
            .filter(|&i| (len..=len + len / 8).contains(&p.free[i].capacity()))
            .min_by_key(|&i| p.free[i].capacity())?;
        let v = p.free.swap_remove(i);
        p.bytes -= 4 * v.capacity();
        Some(v)
    });
    let mut v = match reused {
        Some(mut v) => {
            if v.len() >= len {
                v.truncate(len);
            } else {
                v.resize(len, f32::NAN);
            }
            v
        }
        None => fresh(len),
    };
    if cfg!(debug_assertions) {
        v.fill(f32::NAN);
    }
    v
}

/// A new buffer of `len` zeros, written (over rayon's threads when large), never calloc'd.
/// `vec![0.0; len]` zeroes on the calling thread (glibc's calloc memsets whatever it reuses
/// from the heap, which after the first step is nearly everything), and a training step's
/// outputs that are not handed back are several hundred MB a step: measured ~6% of a Llama
/// full fine-tune's samples, all on the main thread while the pool's threads waited. And a
/// fresh calloc'd buffer's pages map the shared zero page until written, so a
/// read-modify-write (AdamW's first update of its moments, which live on) costs a
/// copy-on-write fault per 4 KiB page, each flushing the other core's TLB: ~1.5 s of a
/// llama30m full fine-tune's first step.
pub(crate) fn fresh(len: usize) -> Vec<f32> {
    if len < PAR_MIN {
        let mut v = Vec::with_capacity(len);
        // Opaque to the optimiser, which would otherwise fold the allocation and the fill
        // below back into a calloc.
        std::hint::black_box(&mut v);
        v.resize(len, 0.0);
        return v;
    }
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len].par_chunks_mut(BLOCK).for_each(|c| {
        for x in c {
            x.write(0.0);
        }
    });
    // SAFETY: the loop above initialised all `len` values, within the capacity.
    unsafe { v.set_len(len) };
    v
}

/// Values per block when a fill or copy is split over rayon's threads.
const BLOCK: usize = 1 << 15;

/// Below this many values a fill or copy stays on the calling thread: waking the pool costs
/// more than it saves. (Per-head buffers in attention, 256 KiB, stay serial; whole-batch
/// activations of several MB do not.)
pub(crate) const PAR_MIN: usize = 1 << 17;

/// Runs `f(i, chunk)` over the consecutive `chunk`-value chunks of `dst` (chunk `i` starts at
/// `i * chunk`; the last may be shorter), on rayon's threads when `dst` is large. Each value
/// is written by exactly one call, so the result never depends on the thread count.
pub(crate) fn par_chunks(
    dst: &mut [f32],
    chunk: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let chunk = chunk.max(1);
    if dst.len() < PAR_MIN {
        dst.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        dst.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Runs `f` over blocks of whole rows of `row` values (at least [`BLOCK`] values) of `dst`,
/// as [`par_chunks`] does.
pub(crate) fn par_rows(dst: &mut [f32], row: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    par_chunks(dst, BLOCK.div_ceil(row.max(1)) * row.max(1), |_, blk| f(blk));
}

/// A buffer of `len` zeros.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    let mut v = take(len);
    par_rows(&mut v, 1, |b| b.fill(0.0));
    v
}

/// A copy of `x` in a pooled buffer.
pub(crate) fn copy(x: &[f32]) -> Vec<f32> {
    let mut v = take(x.len());
    par_chunks(&mut v, BLOCK, |i, d| d.copy_from_slice(&x[i * BLOCK..i * BLOCK + d.len()]));
    v
}

/// Hands buffers back for reuse.
pub(crate) fn give(bufs: impl IntoIterator<Item = Vec<f32>>) {
    let Ok(mut p) = POOL.lock() else { return };
    for v in bufs {
        let bytes = 4 * v.capacity();
        if bytes == 0 || p.bytes + bytes > MAX_POOLED_BYTES {
            continue;
        }
        p.bytes += bytes;
        p.free.push(v);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_with_the_asked_length() {
        give([vec![1.0; 64]]);
        let v = take(40);
        assert_eq!(v.len(), 40);
        assert!(zeroed(100).iter().all(|&x| x == 0.0));
        assert_eq!(copy(&[1.0, 2.0]), vec![1.0, 2.0]);
        // Large ones go through the blocked, parallel paths.
        let big: Vec<f32> = (0..PAR_MIN * 3 + 5).map(|i| i as f32).collect();
        assert_eq!(copy(&big), big);
        assert!(zeroed(big.len()).iter().all(|&x| x == 0.0));
        let mut rows = vec![0f32; 7 * PAR_MIN];
        par_rows(&mut rows, 7, |b| {
            for r in b.chunks_exact_mut(7) {
                r.copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
            }
        });
        assert!(rows.chunks_exact(7).all(|r| r == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]));
        // Chunk indices on both paths: chunk i holds i, the short last one included.
        for len in [1000, PAR_MIN * 2 + 3] {
            let mut x = vec![f32::NAN; len];
            par_chunks(&mut x, 999, |i, c| c.fill(i as f32));
            assert!(x.iter().enumerate().all(|(j, &v)| v == (j / 999) as f32));
        }
        if cfg!(debug_assertions) {
            assert!(take(8).iter().all(|x| x.is_nan()), "unwritten values are poisoned");
        }
        give([v, Vec::new()]);
    }
}
