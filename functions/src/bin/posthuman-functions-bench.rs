//! `posthuman-functions-bench`: figures for the functions layer (loopback only, bounded loops).
//!
//! 1. Catalogue reads: `GET /api/models` (20 models, lineage and job counts) over HTTP/1.1
//!    keep-alive against the embedded server's router, C concurrent connections × N requests.
//!    Target: ≥ 2,000 req/s with p99 ≤ 20 ms on 2 cores.
//! 2. Paid submit → first training step on the embedded default: the signed submit (order
//!    check on anvil, claim, dataset, spec, queue) until the worker's `progress.json` reports
//!    step 1. Target: ≤ 0.5 s.
//!
//! Usage: `posthuman-functions-bench --worker target/release/posthuman-worker [--requests N]`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::primitives::{B256, U256};
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use posthuman_chain::{Chain, ProviderFee};
use posthuman_functions::handlers::pricing::QuoteTerms;
use posthuman_functions::handlers::{jobs, models};
use posthuman_functions::server::{ServerConfig, start};
use posthuman_functions::spool::Spooled;
use posthuman_types::{JobParams, RewardScheme, TrainParams};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const WEI: u128 = 1_000_000_000_000_000_000;

#[derive(Parser, Debug)]
struct Args {
    /// The worker binary (the training-latency figure needs it).
    #[arg(long)]
    worker: PathBuf,
    /// Requests per connection for the catalogue figure.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Paid submits measured for the latency figure.
    #[arg(long, default_value_t = 5)]
    submits: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The worker reports every step, so the first step is seen when it happens.
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("POSTHUMAN_PROGRESS_SECS", "0") };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(args))
}

fn sha(b: &[u8]) -> posthuman_types::Hash32 {
    posthuman_types::Hash32(Sha256::digest(b).into())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Files {
    config: Vec<u8>,
    weights: Vec<u8>,
    tokenizer: Vec<u8>,
}

fn make_model(worker: &Path, dir: &Path, seed: u64) -> Result<Files> {
    let corpus =
        "The quick brown fox jumps over the lazy dog. Posthuman sells compute on private weights. "
            .repeat(60);
    let c = dir.join("corpus.txt");
    std::fs::write(&c, &corpus)?;
    let tok = dir.join("tokenizer.json");
    let m = dir.join(format!("model-{seed}"));
    for args in [
        vec![
            "train-tokenizer".to_string(),
            "--corpus".into(),
            c.display().to_string(),
            "--vocab-size".into(),
            "300".into(),
            "--out".into(),
            tok.display().to_string(),
        ],
        vec![
            "init-model".into(),
            "--tokenizer".into(),
            tok.display().to_string(),
            "--n-layer".into(),
            "2".into(),
            "--n-embd".into(),
            "64".into(),
            "--n-head".into(),
            "2".into(),
            "--n-positions".into(),
            "64".into(),
            "--seed".into(),
            seed.to_string(),
            "--out".into(),
            m.display().to_string(),
        ],
    ] {
        let out = std::process::Command::new(worker).args(&args).output()?;
        if !out.status.success() {
            bail!("worker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(Files {
        config: std::fs::read(m.join("config.json"))?,
        weights: std::fs::read(m.join("model.safetensors"))?,
        tokenizer: std::fs::read(m.join("tokenizer.json"))?,
    })
}

async fn run(args: Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = ServerConfig::new(dir.path().join("data"), args.worker.clone());
    cfg.concurrency = 1;
    let emb = start(&cfg).await?;
    let deps = emb.deps.clone();
    let op_key: PrivateKeySigner =
        std::fs::read_to_string(dir.path().join("data/operator.key"))?.trim().parse()?;

    // 20 published models.
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let mut nfts = Vec::new();
    for i in 0..20u64 {
        let f = make_model(&args.worker, dir.path(), i)?;
        let req = serde_json::to_vec(&serde_json::json!({
            "name": format!("Bench {i}"), "symbol": "BNCH", "owner": format!("{:#x}", op_key.address()),
            "price": (2 * WEI).to_string(), "reward_scheme": scheme, "weights_sha256": sha(&f.weights),
            "nonce": format!("pub-{i}"), "expires_at": now() + 600,
        }))?;
        let domain = posthuman_functions::auth::domain(&deps);
        let signature = posthuman_receipts::request::SignableRequest::of_json_body(
            posthuman_receipts::request::PUBLISH_MODEL,
            &req,
        )?
        .sign(&domain, &op_key)?;
        let up = models::PublishUpload {
            request: Bytes::from(req),
            signature,
            config: Bytes::from(f.config),
            weights: Spooled::from_bytes(dir.path(), &f.weights)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            tokenizer: Bytes::from(f.tokenizer),
            adapter: None,
            tokenizer_config: None,
            generation_config: None,
            chat_template: None,
        };
        let v = models::publish_model(&deps, up).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        nfts.push((v.card.nft.clone(), v.card.datatoken.clone(), v.card.exchange_id));
    }

    // ---- 1. catalogue reads over HTTP
    let app = posthuman_functions::api::router(deps.clone(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Warm-up.
    get_n(addr, 50).await?;
    let t0 = Instant::now();
    let tasks: Vec<_> =
        (0..args.connections).map(|_| tokio::spawn(get_n(addr, args.requests))).collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let wall = t0.elapsed().as_secs_f64();
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    let rps = lat.len() as f64 / wall;
    println!(
        "\ncatalogue reads: GET /api/models (20 models), {} connections x {} requests, 2 tokio workers, loopback",
        args.connections, args.requests
    );
    println!("| figure | measured | target | ratio (measured/target) |");
    println!("|---|---|---|---|");
    println!("| throughput (req/s) | {rps:.0} | >= 2000 | {:.2} |", rps / 2000.0);
    println!("| p50 latency (ms) | {:.2} | - | - |", pct(0.50));
    println!("| p99 latency (ms) | {:.2} | <= 20 | {:.2} |", pct(0.99), pct(0.99) / 20.0);

    // ---- 2. paid submit -> first training step
    let mut chain = Chain::connect(&emb.rpc_url, op_key.clone(), deps.chain.book().clone())?;
    let bob = PrivateKeySigner::random();
    chain.add_signer(bob.clone())?;
    chain.provider().anvil_set_balance(bob.address(), U256::from(10u128.pow(21))).await?;
    chain
        .transfer(op_key.address(), chain.book().ocean, bob.address(), U256::from(1000 * WEI))
        .await?;
    let (nft, dt, ex) = nfts[0].clone();
    let ex: B256 = B256::from(ex.context("exchange")?.0);
    chain.buy(bob.address(), ex, U256::from(args.submits as u128 * WEI)).await?;
    let data = "The quick brown fox jumps over the lazy dog. ".repeat(200).into_bytes();
    let store_root = dir.path().join("data/store");
    let mut rows = Vec::new();
    let mut quotes = Vec::new();
    for i in 0..args.submits {
        let mut t = TrainParams::new(3, 1e-3, 2, 32);
        t.checkpoint_every = 3;
        let terms =
            QuoteTerms { params: JobParams::Train(t.clone()), dataset_bytes: data.len() as u64 };
        // The priced quote: model shape from the store, estimate, price, exchange price,
        // royalty read and the fee signature.
        let tq = Instant::now();
        let q = models::quote(&deps, &nft, terms).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        quotes.push(tq.elapsed().as_secs_f64() * 1e3);
        let f = &q.provider_fee;
        let fee = ProviderFee {
            address: f.provider_fee_address.parse()?,
            token: f.provider_fee_token.parse()?,
            amount: f.provider_fee_amount.parse()?,
            v: f.v,
            r: f.r.parse()?,
            s: f.s.parse()?,
            valid_until: U256::from(f.valid_until),
            data: f.provider_data.parse()?,
        };
        let order = chain.start_order(bob.address(), dt.parse()?, bob.address(), 0, &fee).await?;
        let req = serde_json::to_vec(&serde_json::json!({
            "model": nft, "order_tx": format!("{:#x}", order.tx_hash), "consumer": format!("{:#x}", bob.address()),
            "params": JobParams::Train(t), "dataset_sha256": sha(&data), "salt": sha(format!("salt-{i}").as_bytes()), "nonce": format!("b-{i}"), "expires_at": now() + 600,
        }))?;
        let domain = posthuman_functions::auth::domain(&deps);
        let signature = posthuman_receipts::request::SignableRequest::of_json_body(
            posthuman_receipts::request::SUBMIT_JOB,
            &req,
        )?
        .sign(&domain, &bob)?;
        let up = jobs::JobUpload {
            request: Bytes::from(req),
            signature,
            dataset: Some(
                Spooled::from_bytes(dir.path(), &data).await.map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
        };
        let t0 = Instant::now();
        let sub = jobs::submit_job(&deps, up).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let accepted = t0.elapsed();
        let progress = store_root.join(format!("jobs/{}/public/progress.json", sub.job_id));
        let first_step = loop {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("no training step within 60 s");
            }
            if let Ok(b) = std::fs::read(&progress)
                && let Ok(p) = serde_json::from_slice::<posthuman_types::JobProgress>(&b)
                && p.done >= 1
            {
                break t0.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        rows.push((accepted, first_step));
        // Let the job finish before the next one (one slot).
        loop {
            let v =
                jobs::job_status(&deps, &sub.job_id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            if v.completed
                || matches!(
                    v.state,
                    posthuman_functions::handlers::views::JobStateView::Failed { .. }
                )
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    quotes.sort_by(f64::total_cmp);
    if !quotes.is_empty() {
        println!(
            "\npriced quote (POST /api/models/{{nft}}/quote handler): median {:.2} ms, max {:.2} ms over {} quotes",
            quotes[quotes.len() / 2],
            quotes[quotes.len() - 1],
            quotes.len()
        );
    }
    println!(
        "\npaid submit -> first training step (embedded default, local queue, tiny GPT-2 2L/64d)"
    );
    println!("| run | submit accepted (ms) | first step (ms) | target (ms) | ratio |");
    println!("|---|---|---|---|---|");
    let mut firsts: Vec<f64> = Vec::new();
    for (i, (a, f)) in rows.iter().enumerate() {
        let ms = f.as_secs_f64() * 1e3;
        firsts.push(ms);
        println!(
            "| {} | {:.1} | {:.1} | 500 | {:.2} |",
            i + 1,
            a.as_secs_f64() * 1e3,
            ms,
            ms / 500.0
        );
    }
    firsts.sort_by(f64::total_cmp);
    println!(
        "| median | | {:.1} | 500 | {:.2} |",
        firsts[firsts.len() / 2],
        firsts[firsts.len() / 2] / 500.0
    );
    emb.queue.shutdown().await;
    Ok(())
}

/// `n` keep-alive GETs of `/api/models` on one connection; returns each latency.
async fn get_n(addr: std::net::SocketAddr, n: usize) -> Result<Vec<Duration>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut out = Vec::with_capacity(n);
    let mut line = String::new();
    for _ in 0..n {
        let t = Instant::now();
        w.write_all(b"GET /api/models HTTP/1.1\r\nHost: bench\r\n\r\n").await?;
        let mut len = 0usize;
        let mut status_ok = false;
        loop {
            line.clear();
            r.read_line(&mut line).await?;
            if line.starts_with("HTTP/1.1 200") {
                status_ok = true;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse()?;
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        if !status_ok || len == 0 {
            bail!("bad response");
        }
        out.push(t.elapsed());
    }
    Ok(out)
}
