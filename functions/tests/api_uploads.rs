//! Hostile uploads (issue 13 §6): 20 concurrent 1 GiB garbage uploads, sent over real TCP to
//! the real router, leave the server's memory flat and every honest request served. The
//! signed parts come first and are checked before any file part is read, uploads share a
//! fixed number of slots (a 503 at once beyond them), and bodies have a deadline.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use axum::http::StatusCode;
use harness::*;
use posthuman_receipts::request::{PUBLISH_MODEL, SUBMIT_JOB};
use posthuman_types::RewardScheme;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GIB: u64 = 1 << 30;
const BOUNDARY: &str = "hostile-boundary-4f2a";

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

/// Sends `POST path` whose multipart body is `small` parts then one part `big_name` of
/// `big_len` zero bytes, generated as it is written (the client holds 1 MiB at a time).
/// Returns the status the server answered with (it may answer and close long before the body
/// is sent) and how many bytes were written.
async fn hostile_upload(
    addr: std::net::SocketAddr,
    path: &str,
    small: Vec<(&'static str, Vec<u8>)>,
    big_name: &str,
    big_len: u64,
) -> (Option<u16>, u64) {
    let mut prefix = Vec::new();
    for (name, data) in &small {
        prefix.extend_from_slice(part_head(name).as_bytes());
        prefix.extend_from_slice(data);
        prefix.extend_from_slice(b"\r\n");
    }
    prefix.extend_from_slice(part_head(big_name).as_bytes());
    let suffix = format!("\r\n--{BOUNDARY}--\r\n");
    let len = prefix.len() as u64 + big_len + suffix.len() as u64;
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
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
        text.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok())
    });
    let chunk = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    let write = async {
        wr.write_all(head.as_bytes()).await?;
        wr.write_all(&prefix).await?;
        while sent < big_len {
            let n = chunk.len().min((big_len - sent) as usize);
            wr.write_all(&chunk[..n]).await?;
            sent += n as u64;
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
