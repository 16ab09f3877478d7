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

/// CPU seconds (user + system, all threads) this process has used, from `/proc/self/stat`
/// (10 ms ticks); NaN where /proc is unavailable. On a shared host a timed loop's CPU time
/// moves far less with the load than its wall time, so A/B runs report both.
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are the 14th and
            // 15th of the whole line, the 12th and 13th after it.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(f64::NAN)
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
