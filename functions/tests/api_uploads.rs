//! Uploads and memory (issue 13 §6): 20 concurrent 1 GiB garbage uploads, sent over real TCP
//! to the real router, leave the server's memory flat and every honest request served. The
//! signed parts come first and are checked before any file part is read, uploads share a
//! fixed number of slots (a 503 at once beyond them), and bodies have a deadline. Honest
//! uploads are not held in memory either: concurrent publishes of large weights leave the
//! server's peak memory far below one upload's size.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use axum::http::StatusCode;
use harness::*;
use posthuman_receipts::request::{PUBLISH_MODEL, SUBMIT_JOB};
use posthuman_types::{Hash32, RewardScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const BOUNDARY: &str = "hostile-boundary-4f2a";

/// The tests here measure this process's memory (the server runs in it): one at a time, so
/// one test's uploads never count in another's figures.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This process's resident set and its high-water mark, in MiB (the server runs in it).
fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap()
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn part_head(name: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
}

/// Where a part's bytes come from.
enum Data {
    Bytes(Vec<u8>),
    /// This many zero bytes, generated as they are written.
    Zeros(u64),
    /// A file's contents, read as they are written.
    File(std::path::PathBuf),
}

/// Sends `POST path` with a multipart body of `parts`, the client holding 1 MiB of a large
/// part at a time. Returns the status the server answered with (it may answer and close long
/// before the body is sent) and how many bytes of large parts were written.
async fn upload(
    addr: std::net::SocketAddr,
    path: &str,
    parts: Vec<(&str, Data)>,
) -> (Option<u16>, u64) {
    let mut len = 0u64;
    for (name, data) in &parts {
        len += part_head(name).len() as u64 + 2;
        len += match data {
            Data::Bytes(b) => b.len() as u64,
            Data::Zeros(n) => *n,
            Data::File(p) => std::fs::metadata(p).unwrap().len(),
        };
    }
    let suffix = format!("--{BOUNDARY}--\r\n");
    len += suffix.len() as u64;
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let path = path.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; \
         boundary={BOUNDARY}\r\nContent-Length: {len}\r\n\r\n"
    );
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
        // A failed honest upload says why (its short JSON body comes with the head).
        if status.is_some_and(|s| s >= 500) {
            let _ = tokio::time::timeout(Duration::from_secs(1), rd.read(&mut buf)).await;
            eprintln!("{path}: {text}{}", String::from_utf8_lossy(&buf));
        }
        status
    });
    let mut chunk = vec![0u8; MIB as usize];
    let mut sent = 0u64;
    let write = async {
        wr.write_all(head.as_bytes()).await?;
        for (name, data) in parts {
            wr.write_all(part_head(name).as_bytes()).await?;
            match data {
                Data::Bytes(b) => wr.write_all(&b).await?,
                Data::Zeros(n) => {
                    chunk.fill(0);
                    let mut left = n;
                    while left > 0 {
                        let k = chunk.len().min(left as usize);
                        wr.write_all(&chunk[..k]).await?;
                        left -= k as u64;
                        sent += k as u64;
                    }
                }
                Data::File(p) => {
                    let mut f = tokio::fs::File::open(p).await?;
                    loop {
                        let k = f.read(&mut chunk).await?;
                        if k == 0 {
                            break;
                        }
                        wr.write_all(&chunk[..k]).await?;
                        sent += k as u64;
                    }
                }
            }
            wr.write_all(b"\r\n").await?;
        }
        wr.write_all(suffix.as_bytes()).await
    };
    // Stop writing as soon as the server has answered (it closes the connection after).
    let mut reader = reader;
    let status = tokio::select! {
        s = &mut reader => s.unwrap(),
        _ = write => reader.await.unwrap(),
    };
    (status, sent)
}

/// `small` parts, then one part `big_name` of `big_len` zero bytes.
async fn hostile_upload(
    addr: std::net::SocketAddr,
    path: &str,
    small: Vec<(&'static str, Vec<u8>)>,
    big_name: &'static str,
    big_len: u64,
) -> (Option<u16>, u64) {
    let mut parts: Vec<(&str, Data)> =
        small.into_iter().map(|(n, b)| (n, Data::Bytes(b))).collect();
    parts.push((big_name, Data::Zeros(big_len)));
    upload(addr, path, parts).await
}

fn publish_body(owner: &PrivateKeySigner, nonce: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "name": "Flood", "symbol": "FLD", "description": "",
        "owner": format!("{:#x}", owner.address()),
        "price": (2 * WEI).to_string(),
        "reward_scheme": RewardScheme::geometric(1000 * WEI, 5000, 3),
        "weights_sha256": sha(b"garbage"),
        "nonce": nonce, "expires_at": now() + 600,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_gib_garbage_uploads_cost_little_and_honest_requests_are_served() {
    let _one_at_a_time = MEASURING.lock().await;
    let env = env(sleeper(), |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = env.app.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // A model to submit against, published the honest way.
    let (st, model) = publish(
        &env,
        &env.operator,
        &tiny_model_unrunnable(1),
        &RewardScheme::geometric(1000 * WEI, 5000, 3),
        "pub-0",
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{model}");
    let nft = model["nft"].as_str().unwrap().to_string();

    let stranger = PrivateKeySigner::random();
    let (rss0, hwm0) = rss_mib();
    let t0 = Instant::now();
    let mut flood = Vec::new();
    for i in 0..20u32 {
        let (path, small, big): (&'static str, Vec<(&'static str, Vec<u8>)>, &'static str) = match i
            % 4
        {
            // A forged signature on a publish.
            0 => {
                let body = publish_body(&env.operator, &format!("f-{i}"));
                ("/api/models", vec![("request", body), ("signature", b"0x00".to_vec())], "weights")
            }
            // A stranger's well-signed publish: not an allowed publisher.
            1 => {
                let body = publish_body(&stranger, &format!("s-{i}"));
                let sig = sign_typed(&env, &stranger, PUBLISH_MODEL, &body);
                ("/api/models", vec![("request", body), ("signature", sig.into_bytes())], "weights")
            }
            // The file before the signed parts.
            2 => ("/api/models", vec![], "weights"),
            // A stranger's submit for a model that does not exist, with a huge "dataset".
            _ => {
                let body = job_request(
                    "0x000000000000000000000000000000000000dead",
                    "0x00",
                    stranger.address(),
                    &posthuman_types::JobParams::Train(posthuman_types::TrainParams::new(
                        10, 1e-3, 2, 16,
                    )),
                    None,
                    &format!("d-{i}"),
                );
                let sig = sign_typed(&env, &stranger, SUBMIT_JOB, &body);
                ("/api/jobs", vec![("request", body), ("signature", sig.into_bytes())], "dataset")
            }
        };
        flood.push(tokio::spawn(hostile_upload(addr, path, small, big, GIB)));
    }

    // Honest traffic while the flood is on: reads, and a real publish (which, like any
    // client, retries on a 503 when every upload slot is busy).
    let mut honest_reads = 0;
    for _ in 0..10 {
        let (st, body) = env.get("/api/models").await;
        assert_eq!(st, StatusCode::OK, "{body}");
        honest_reads += 1;
    }
    let files = tiny_model_unrunnable(2);
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let mut honest_publish = None;
    for attempt in 0..50 {
        let (st, v) =
            publish(&env, &env.operator, &files, &scheme, &format!("pub-h{attempt}")).await;
        if st != StatusCode::SERVICE_UNAVAILABLE {
            honest_publish = Some((st, v));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, v) = honest_publish.expect("the honest publish never got an upload slot");
    assert_eq!(st, StatusCode::CREATED, "{v}");

    let mut statuses = Vec::new();
    let mut written = 0u64;
    for f in flood {
        let (status, sent) = f.await.unwrap();
        statuses.push(status);
        written += sent;
    }
    let elapsed = t0.elapsed();
    let (rss1, hwm1) = rss_mib();
    // Each garbage upload got a 4xx (or a 503 while every slot was busy) long before its GiB.
    for (i, s) in statuses.iter().enumerate() {
        let s = s.unwrap_or_else(|| panic!("upload {i} got no answer"));
        assert!(matches!(s, 400 | 401 | 403 | 404 | 503), "upload {i}: {s}");
    }
    assert!(written < 20 * GIB / 4, "the server read {written} bytes of garbage");
    // Memory: flat. Buffering even one of them would add 1 GiB.
    assert!(hwm1 < hwm0 + 128, "peak RSS went from {hwm0} to {hwm1} MiB");
    eprintln!(
        "20 x 1 GiB garbage uploads: answered in {:.2} s, {} MiB written by clients before the \
         answers, RSS {rss0} -> {rss1} MiB, peak {hwm0} -> {hwm1} MiB, {honest_reads} honest \
         reads and one honest publish served; statuses {statuses:?}",
        elapsed.as_secs_f64(),
        written >> 20
    );
    server.abort();
    env.emb.queue.shutdown().await;
    let _ = nft;
}

/// A body that trickles in slower than the upload deadline is cut off, and its slot freed.
#[tokio::test]
async fn a_slow_upload_is_cut_off_at_its_deadline() {
    let _one_at_a_time = MEASURING.lock().await;
    let env = env(sleeper(), |c| {
        c.api.limits.upload_timeout_secs = 1;
        c.api.limits.max_concurrent_uploads = 1;
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = env.app.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Headers and a partial first part, then silence.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/models HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; \
         boundary={BOUNDARY}\r\nContent-Length: 100000\r\n\r\n{}{{\"name\":",
        part_head("request")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let t0 = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(t0.elapsed() < Duration::from_secs(10), "cut off only after {:?}", t0.elapsed());
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((400..500).contains(&status), "{text}");
    // The single upload slot is free again: an honest publish is served.
    let (st, v) = publish(
        &env,
        &env.operator,
        &tiny_model_unrunnable(3),
        &RewardScheme::geometric(1000 * WEI, 5000, 3),
        "after-slow",
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    server.abort();
    env.emb.queue.shutdown().await;
}

/// A valid f32 safetensors image for `cfg` at `path`: `seed` as its first value, zeros
/// elsewhere, written a MiB at a time. Returns its size and SHA-256.
fn write_weights(cfg: &posthuman_gpt2::Config, seed: u32, path: &std::path::Path) -> (u64, Hash32) {
    use sha2::Digest;
    use std::io::Write;
    let mut header = serde_json::Map::new();
    let mut end = 0u64;
    for (name, shape) in posthuman_gpt2::param_shapes(cfg) {
        let n = shape.iter().product::<usize>() as u64 * 4;
        header.insert(
            name,
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [end, end + n]}),
        );
        end += n;
    }
    let mut head = serde_json::to_vec(&header).unwrap();
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = sha2::Sha256::new();
    let mut put = |b: &[u8]| {
        h.update(b);
        f.write_all(b).unwrap();
    };
    put(&(head.len() as u64).to_le_bytes());
    put(&head);
    put(&(seed as f32).to_le_bytes());
    let zeros = vec![0u8; MIB as usize];
    let mut left = end - 4;
    while left > 0 {
        let k = zeros.len().min(left as usize);
        put(&zeros[..k]);
        left -= k as u64;
    }
    f.flush().unwrap();
    (8 + head.len() as u64 + end, Hash32(h.finalize().into()))
}

/// Honest uploads are streamed, not buffered: four concurrent publishes of 256 MiB weights
/// (a valid model whose embedding is wide enough) all succeed, are stored whole, and the
/// server's peak memory grows by far less than one upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_large_honest_publishes_are_not_held_in_memory() {
    let _one_at_a_time = MEASURING.lock().await;
    let env = env(sleeper(), |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = env.app.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // vocab 2^21 x 32 wide: the token embedding alone is 256 MiB of f32.
    let cfg = posthuman_gpt2::Config::new(1 << 21, 64, 32, 1, 2);
    let files = tiny_model_unrunnable(0);
    let uploads = 4u32;
    let mut weights = Vec::new();
    for i in 0..uploads {
        let path = env.dir.path().join(format!("weights-{i}.safetensors"));
        let (size, sha) = write_weights(&cfg, i + 1, &path);
        weights.push((path, size, sha));
    }
    let size = weights[0].1;
    assert!(size >= 256 * MIB, "{size}");

    let (rss0, hwm0) = rss_mib();
    let t0 = Instant::now();
    let publish_parts = |i: usize| {
        let (path, _, sha) = &weights[i];
        let req = serde_json::to_vec(&serde_json::json!({
            "name": format!("Wide {i}"), "symbol": "WIDE", "description": "",
            "owner": format!("{:#x}", env.operator.address()),
            "price": (2 * WEI).to_string(),
            "reward_scheme": RewardScheme::geometric(1000 * WEI, 5000, 3),
            "weights_sha256": sha,
            "nonce": format!("wide-{i}"), "expires_at": now() + 600,
        }))
        .unwrap();
        let sig = sign_typed(&env, &env.operator, PUBLISH_MODEL, &req);
        vec![
            ("request", Data::Bytes(req)),
            ("signature", Data::Bytes(sig.into_bytes())),
            ("config", Data::Bytes(cfg.to_json().into_bytes())),
            ("weights", Data::File(path.clone())),
            ("tokenizer", Data::Bytes(files.tokenizer.clone())),
        ]
    };
    let tasks: Vec<_> = (0..uploads as usize)
        .map(|i| tokio::spawn(upload(addr, "/api/models", publish_parts(i))))
        .collect();
    let mut sent = 0;
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, n) = t.await.unwrap();
        statuses.push(status);
        sent += n;
    }
    // Every publish sends operator transactions; they run concurrently here, so this also
    // checks that the chain client gives each its own nonce (none answers 500 after its
    // files were stored).
    let elapsed = t0.elapsed();
    let (rss1, hwm1) = rss_mib();
    assert!(statuses.iter().all(|s| *s == Some(201)), "{statuses:?}");
    assert_eq!(sent, uploads as u64 * size);

    // Each stored whole, under its own weights hash.
    let models = env.dir.path().join("data/store/models");
    let stored: Vec<u64> = std::fs::read_dir(&models)
        .unwrap()
        .filter_map(|d| std::fs::metadata(d.unwrap().path().join("model.safetensors")).ok())
        .map(|m| m.len())
        .filter(|&n| n == size)
        .collect();
    assert_eq!(stored.len(), uploads as usize, "{stored:?}");

    eprintln!(
        "{uploads} concurrent honest publishes of {} MiB weights: {:.1} s, RSS {rss0} -> {rss1} \
         MiB, peak {hwm0} -> {hwm1} MiB (+{} MiB; {} MiB uploaded)",
        size / MIB,
        elapsed.as_secs_f64(),
        hwm1.saturating_sub(hwm0),
        sent / MIB
    );
    // Buffering would hold every upload at once; streaming holds a few chunks each.
    assert!(
        hwm1 < hwm0 + size / MIB / 4,
        "peak RSS grew from {hwm0} to {hwm1} MiB for {uploads} uploads of {} MiB",
        size / MIB
    );
    server.abort();
    env.emb.queue.shutdown().await;
}

/// The spool files in `dir`.
fn spooled(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(posthuman_functions::spool::PREFIX))
        .collect()
}

/// Waits up to 10 s for `dir`'s spool files to satisfy `ok`.
async fn spool_becomes(dir: &std::path::Path, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let t0 = Instant::now();
    loop {
        let files = spooled(dir);
        if ok(&files) || t0.elapsed() > Duration::from_secs(10) {
            return files;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A spooled upload leaves no file behind on any path: a client that hangs up mid-file, a
/// file over its cap, a file that does not match its signed hash, and a publish that
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_files_are_removed_on_every_path() {
    let _one_at_a_time = MEASURING.lock().await;
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().to_path_buf();
    let env = env(sleeper(), |c| {
        c.api.spool_dir = Some(spool_dir.clone());
        c.api.limits.max_weights_bytes = 16 * MIB;
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = env.app.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let files = tiny_model_unrunnable(7);
    let signed = |weights_sha: Hash32, nonce: &str| {
        let req = serde_json::to_vec(&serde_json::json!({
            "name": "Spool", "symbol": "SPL", "description": "",
            "owner": format!("{:#x}", env.operator.address()),
            "price": (2 * WEI).to_string(),
            "reward_scheme": RewardScheme::geometric(1000 * WEI, 5000, 3),
            "weights_sha256": weights_sha,
            "nonce": nonce, "expires_at": now() + 600,
        }))
        .unwrap();
        let sig = sign_typed(&env, &env.operator, PUBLISH_MODEL, &req);
        vec![
            ("request", Data::Bytes(req)),
            ("signature", Data::Bytes(sig.into_bytes())),
            ("config", Data::Bytes(files.config.clone())),
        ]
    };

    // 1. The client hangs up halfway through the weights: the file was being spooled, and
    //    is gone once the server sees the connection drop.
    let mut parts = signed(sha(&files.weights), "abort");
    let mut body = Vec::new();
    for (name, data) in parts.drain(..) {
        let Data::Bytes(b) = data else { unreachable!() };
        body.extend_from_slice(part_head(name).as_bytes());
        body.extend_from_slice(&b);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(part_head("weights").as_bytes());
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/models HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; \
         boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len() as u64 + 8 * MIB + 64
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    s.write_all(&vec![1u8; 4 * MIB as usize]).await.unwrap();
    let during = spool_becomes(&spool_dir, |f| {
        f.len() == 1 && std::fs::metadata(spool_dir.join(&f[0])).is_ok_and(|m| m.len() >= MIB)
    })
    .await;
    assert_eq!(during.len(), 1, "the weights were not spooled to the configured dir");
    drop(s);
    let after = spool_becomes(&spool_dir, |f| f.is_empty()).await;
    assert!(after.is_empty(), "left behind by an aborted upload: {after:?}");

    // 2. Over its cap: 413, nothing left.
    let mut parts = signed(sha(b"x"), "too-big");
    parts.push(("weights", Data::Zeros(17 * MIB)));
    parts.push(("tokenizer", Data::Bytes(files.tokenizer.clone())));
    let (st, _) = upload(addr, "/api/models", parts).await;
    assert_eq!(st, Some(413));
    assert_eq!(spool_becomes(&spool_dir, |f| f.is_empty()).await, Vec::<String>::new());

    // 3. Spooled whole, then refused (not the signed hash): 422, nothing left.
    let mut parts = signed(sha(b"other weights"), "bad-sha");
    parts.push(("weights", Data::Bytes(files.weights.clone())));
    parts.push(("tokenizer", Data::Bytes(files.tokenizer.clone())));
    let (st, _) = upload(addr, "/api/models", parts).await;
    assert_eq!(st, Some(422));
    assert_eq!(spool_becomes(&spool_dir, |f| f.is_empty()).await, Vec::<String>::new());

    // 4. Published: stored, nothing left in the spool.
    let mut parts = signed(sha(&files.weights), "ok");
    parts.push(("weights", Data::Bytes(files.weights.clone())));
    parts.push(("tokenizer", Data::Bytes(files.tokenizer.clone())));
    let (st, _) = upload(addr, "/api/models", parts).await;
    assert_eq!(st, Some(201));
    assert_eq!(spooled(&spool_dir), Vec::<String>::new());

    server.abort();
    env.emb.queue.shutdown().await;
}
