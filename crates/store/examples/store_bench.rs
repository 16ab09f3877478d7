//! Throughput of the stores for model-sized files: `put_file` and `get_to_file` on the
//! filesystem store, and on S3 when a twin is configured (`POSTHUMAN_S3_ENDPOINT`).
//!
//! `cargo run --release -p posthuman-store --example store_bench [-- SIZE_MIB]`

use std::time::Instant;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use posthuman_store::{LocalStore, ObjectStore, S3Store};

async fn bench(
    name: &str,
    store: &dyn ObjectStore,
    src: &std::path::Path,
    dir: &std::path::Path,
    mib: u64,
) -> anyhow::Result<()> {
    let reps = 3;
    let (mut put, mut get) = (f64::MAX, f64::MAX);
    for i in 0..reps {
        let key = format!("bench/{i}/model.safetensors");
        let t = Instant::now();
        store.put_file(&key, src).await?;
        put = put.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let n = store.get_to_file(&key, &dir.join("out.bin")).await?;
        get = get.min(t.elapsed().as_secs_f64());
        anyhow::ensure!(n == mib << 20, "size mismatch");
        store.delete(&key).await?;
    }
    println!(
        "| {name:<10} | {mib:>5} MiB | {:>8.0} MiB/s | {:>8.0} MiB/s |",
        mib as f64 / put,
        mib as f64 / get
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src.bin");
    let block: Vec<u8> =
        (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&src)?;
        for _ in 0..mib {
            f.write_all(&block)?;
        }
    }
    println!("| store      | size      | put_file (best of 3) | get_to_file |");
    println!("|------------|-----------|----------------|----------------|");
    let local = LocalStore::new(dir.path().join("store"))?;
    bench("local", &local, &src, dir.path(), mib).await?;
    if let Ok(endpoint) = std::env::var("POSTHUMAN_S3_ENDPOINT") {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
            .build();
        let bucket = format!("ph-bench-{}", std::process::id());
        let s3 = S3Store::from_client(aws_sdk_s3::Client::from_conf(conf), bucket);
        s3.create_bucket().await?;
        bench("localstack", &s3, &src, dir.path(), mib).await?;
    } else {
        println!("(S3 skipped: POSTHUMAN_S3_ENDPOINT unset)");
    }
    Ok(())
}
