//! What the benchmark binaries (`gpt2-bench`, `lora-bench`, `llama-bench`) share: the
//! process's peak RSS, and the Llama shapes the side-by-side scripts in `bench/` measure
//! (the Python side declares the same ones).

use crate::llama;

/// This process's peak resident set (`VmHWM`) in MiB; NaN where /proc is unavailable.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// User + system CPU seconds of this process so far (getrusage): on a shared machine, tokens
/// per CPU-second moves less with other people's load than tokens per wall second.
pub fn cpu_secs() -> f64 {
    let mut ru = std::mem::MaybeUninit::<LibcRusage>::zeroed();
    // SAFETY: getrusage writes a `struct rusage` into the buffer, which is large enough.
    let rc = unsafe { getrusage(0, ru.as_mut_ptr()) };
    if rc != 0 {
        return f64::NAN;
    }
    // SAFETY: initialised by the successful call above.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: [i64; 2]| t[0] as f64 + t[1] as f64 * 1e-6;
    tv(ru.utime) + tv(ru.stime)
}

/// The leading fields of Linux's `struct rusage` (timevals), padded to its full size.
#[repr(C)]
struct LibcRusage {
    utime: [i64; 2],
    stime: [i64; 2],
    _rest: [i64; 14],
}

unsafe extern "C" {
    fn getrusage(who: i32, usage: *mut LibcRusage) -> i32;
}

/// The issues' benchmark shapes, random init: a ~30M-parameter Llama and SmolLM2-135M.
pub fn llama_shape(name: &str) -> Result<llama::Config, String> {
    let mut c = match name {
        "llama30m" => {
            let mut c = llama::Config::tiny(8192, 512, 8, 8, 8);
            c.intermediate_size = 1376;
            c
        }
        "smollm135m" => {
            let mut c = llama::Config::tiny(49152, 576, 30, 9, 3);
            c.intermediate_size = 1536;
            c.tie_word_embeddings = true;
            c
        }
        other => return Err(format!("unknown shape {other}")),
    };
    c.max_position_embeddings = 2048;
    Ok(c)
}

/// dst (m × n, row-major) = a · b on AMX (`a` (m × k) or, when `ta`, its transpose stored
/// (k × m); `b` likewise), as the model's `matmul` runs it where AMX is on: packing included.
/// Products too small for AMX run as the model runs them (on the gemm crate). False where
/// the CPU or kernel offers no AMX. For `gemm-bench`.
pub fn amx_product(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::ops::kernels::Mat;
        let fits = dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n;
        if !crate::ops::amx::supported() || !fits || m.min(n).min(k) == 0 {
            return false;
        }
        let am = if ta { Mat::t(a, m, k, m) } else { Mat::rows(a, m, k, k) };
        let bm = if tb { Mat::t(b, k, n, k) } else { Mat::rows(b, k, n, n) };
        if crate::ops::amx::large_enough(m, n, k) {
            crate::ops::amx::matmul(dst, n, am, bm, false, true);
        } else {
            // What the model runs for it (one-row decoding stays on the gemm crate).
            let _ = crate::ops::kernels::matmul(dst, n, am, bm, false, true);
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dst, m, n, k, a, ta, b, tb);
        false
    }
}
