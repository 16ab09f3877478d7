//! `publish_weights_bench`: what `POST /api/models` does with a direct upload's weights before
//! any transaction, timed phase by phase against an S3 (LocalStack here), with the handler's
//! own functions in the handler's order:
//!
//! 1. `Spooled::from_store`: the staged object downloaded to the spool dir (/tmp on Lambda),
//!    then read once more for its length, SHA-256 and UTF-8 state (`Claimed::fetch`);
//! 2. `check_safetensors_file`: the header, every tensor's name/shape/dtype against the
//!    config, finite values, and the canonical hash (`check_model`);
//! 3. `put_file`: the weights stored under the model's prefix (`publish_model`).
//!
//! Each phase prints wall and CPU seconds (user + system of this process) and MB/s, so the
//! CPU-bound part can be scaled to a Lambda's CPU share (1,769 MB of memory = one vCPU).
//!
//! ```sh
//! publish_weights_bench --endpoint http://127.0.0.1:4566 --bucket B --config config.json --weights model.safetensors
//! publish_weights_bench ... --generate 17   # first writes both: GPT-2, 17 layers of 1024 (0.99 GiB f32)
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use posthuman_functions::spool::Spooled;
use posthuman_gpt2::family::{AnyConfig, check_safetensors_file};
use posthuman_store::{ObjectStore, S3Config, S3Store};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    bucket: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// The model's config.json.
    #[arg(long)]
    config: PathBuf,
    /// The weights (model.safetensors).
    #[arg(long)]
    weights: PathBuf,
    /// Where the handler spools (default: the temp dir, as on Lambda).
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// First write `--config` and `--weights`: a GPT-2 of this many layers (n_embd 1024,
    /// vocabulary 50257, context 1024), f32 weights of small finite values.
    #[arg(long)]
    generate: Option<usize>,
}

/// Writes a GPT-2 config and safetensors file of `n_layer` layers (see `--generate`).
fn generate(n_layer: usize, config: &std::path::Path, weights: &std::path::Path) -> Result<()> {
    use std::io::Write;
    let json = serde_json::json!({
        "model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 1024,
        "n_layer": n_layer, "n_head": 16,
    });
    std::fs::write(config, serde_json::to_vec_pretty(&json)?)?;
    let cfg: posthuman_gpt2::Config = serde_json::from_value(json)?;
    let shapes = posthuman_gpt2::param_shapes(&cfg);
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &shapes {
        let n = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut text = serde_json::to_vec(&header)?;
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(weights)?);
    f.write_all(&(text.len() as u64).to_le_bytes())?;
    f.write_all(&text)?;
    // Small finite values from an LCG, one MiB block repeated: the checks read every value.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let block: Vec<u8> = (0..1 << 18)
        .flat_map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04).to_le_bytes()
        })
        .collect();
    let mut left = offset;
    while left > 0 {
        let n = left.min(block.len());
        f.write_all(&block[..n])?;
        left -= n;
    }
    f.flush()?;
    Ok(())
}

/// User + system CPU seconds of this process so far.
fn cpu_secs() -> f64 {
    // SAFETY: rusage is plain data (all-zero is valid) and getrusage only writes into it.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Phase {
    t: Instant,
    cpu: f64,
}

impl Phase {
    fn start() -> Self {
        Phase { t: Instant::now(), cpu: cpu_secs() }
    }

    fn done(self, name: &str, bytes: u64) -> (f64, f64) {
        let (wall, cpu) = (self.t.elapsed().as_secs_f64(), cpu_secs() - self.cpu);
        println!(
            "{name:<34} wall {wall:6.2} s  cpu {cpu:6.2} s  {:7.1} MB/s",
            bytes as f64 / 1e6 / wall
        );
        (wall, cpu)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(n_layer) = a.generate {
        generate(n_layer, &a.config, &a.weights)?;
    }
    let cfg = AnyConfig::from_json(&std::fs::read_to_string(&a.config)?)
        .map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let bytes = std::fs::metadata(&a.weights).context("the weights")?.len();
    let store = S3Store::new(S3Config {
        bucket: a.bucket.clone(),
        endpoint_url: a.endpoint.clone(),
        region: a.region.clone(),
        force_path_style: a.endpoint.is_some(),
    })
    .await?;
    let staged = "uploads/u-00000000000000000000000000000000/files/weights";
    let p = Phase::start();
    store.put_file(staged, &a.weights).await?;
    p.done("client's upload (not the handler)", bytes);

    let spool = a.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut total = (0.0, 0.0);
    let mut add = |(w, c): (f64, f64)| {
        total.0 += w;
        total.1 += c;
    };
    let p = Phase::start();
    let spooled = Spooled::from_store(&store, staged, &spool)
        .await
        .map_err(|e| anyhow::anyhow!("fetch: {e}"))?;
    add(p.done("1 fetch: download + SHA-256 pass", bytes));
    let p = Phase::start();
    let path = spooled.path().to_path_buf();
    let hash = tokio::task::spawn_blocking(move || check_safetensors_file(&path, &cfg)).await??;
    add(p.done("2 check: header, finite, canonical", bytes));
    let p = Phase::start();
    store.put_file("models/bench/model.safetensors", spooled.path()).await?;
    add(p.done("3 store under models/", bytes));
    println!(
        "handler's weight work: wall {:.2} s, cpu {:.2} s for {bytes} bytes (canonical hash {})",
        total.0,
        total.1,
        hash.to_hex()
    );
    store.delete(staged).await?;
    store.delete("models/bench/model.safetensors").await?;
    Ok(())
}
