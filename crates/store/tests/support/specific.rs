//! Tests of one implementation's own promises (the shared contract is in `suite.rs`).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use posthuman_store::{LocalStore, ObjectStore, S3Config, S3Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{FailingReader, PART_SIZE, data, localstack, twin_endpoint};

fn local_store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("root")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn local_refuses_keys_through_symlinks() {
    let (dir, store) = local_store();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"operator key").unwrap();
    std::os::unix::fs::symlink(&outside, store.root().join("evil")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), store.root().join("link")).unwrap();

    let inv = |r: Result<(), StoreError>| matches!(r, Err(StoreError::InvalidKey { .. }));
    assert!(inv(store.put("evil/x", Bytes::from_static(b"x")).await));
    assert!(inv(store.get("evil/secret", 100).await.map(|_| ())));
    assert!(inv(store.get("link", 100).await.map(|_| ())));
    assert!(inv(store.head("link").await.map(|_| ())));
    assert!(inv(store.delete("link").await));
    assert!(inv(store.list("evil/").await.map(|_| ())));
    assert!(!outside.join("x").exists(), "nothing was written outside the root");
    assert!(outside.join("secret").exists());
    assert!(store.list("").await.unwrap().is_empty(), "symlinks are not objects");
}

#[tokio::test]
async fn local_objects_are_private_and_temp_files_invisible() {
    let (_dir, store) = local_store();
    store.put("m/w.safetensors", Bytes::from_static(b"w")).await.unwrap();
    let mode =
        std::fs::metadata(store.root().join("m/w.safetensors")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "weights must not be group/world readable: {mode:o}");
    // A temp file left by a crashed writer is not an object.
    std::fs::write(store.root().join("m/.w.safetensors.~123.0.0~"), b"partial").unwrap();
    assert_eq!(store.list("").await.unwrap(), ["m/w.safetensors"]);
}

#[tokio::test]
async fn local_object_and_prefix_conflicts_are_invalid_keys() {
    let (_dir, store) = local_store();
    store.put("a", Bytes::from_static(b"x")).await.unwrap();
    let r = store.put("a/b", Bytes::from_static(b"y")).await;
    assert!(matches!(r, Err(StoreError::InvalidKey { .. })), "{r:?}");
    store.put("c/d", Bytes::from_static(b"x")).await.unwrap();
    let r = store.put_if_absent("c", Bytes::from_static(b"y")).await;
    assert!(matches!(r, Err(StoreError::InvalidKey { .. })), "{r:?}");
    // Deleting the last object under a prefix removes the prefix too.
    store.delete("c/d").await.unwrap();
    assert!(!store.root().join("c").exists());
    store.put("c", Bytes::from_static(b"now a file")).await.unwrap();
}

#[tokio::test]
async fn local_failed_download_leaves_no_file() {
    let (dir, store) = local_store();
    store.put("k", Bytes::from(data(1000, 1))).await.unwrap();
    let r = store.get_to_file("k", &dir.path().join("missing-dir/out")).await;
    assert!(matches!(r, Err(StoreError::Io(_))), "{r:?}");
    // The file is complete or absent: the temp file is cleaned up on failure.
    assert_eq!(store.get_to_file("k", &dir.path().join("out")).await.unwrap(), 1000);
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| !n.to_string_lossy().contains('~')), "{names:?}");
}

/// An HTTP peer answering every request with `head` (status line and headers) and `body`,
/// then holding the connection open: a body shorter than announced never completes.
async fn raw_http(head: String, body: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (head, body) = (head.clone(), body.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = sock.write_all(format!("{head}\r\n\r\n{body}").as_bytes()).await;
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            });
        }
    });
    addr
}

/// Answers every request with `status` and an S3 error `code`.
async fn fake_s3(status: u16, code: &'static str) -> SocketAddr {
    let body = format!("<Error><Code>{code}</Code><Message>m</Message></Error>");
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close",
        body.len()
    );
    raw_http(head, body).await
}

#[tokio::test]
async fn s3_get_refuses_from_the_announced_length_without_reading() {
    // 1 GB announced, 5 bytes sent, connection held open: reading the body would hang.
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000000000";
    let addr = raw_http(head.into(), "12345".into()).await;
    let store = S3Store::from_client(client_at(&format!("http://{addr}")), "bucket");
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), store.get("big", 1 << 20))
        .await
        .expect("get read the body instead of refusing on Content-Length");
    match r {
        Err(StoreError::TooLarge { size: 1_000_000_000, limit: 1_048_576, .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

fn client_at(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test]
async fn s3_errors_map_to_what_the_caller_can_do() {
    type Check = fn(&StoreError) -> bool;
    let cases: [(u16, &str, Check); 5] = [
        (503, "SlowDown", |e| matches!(e, StoreError::Unavailable(_))),
        (500, "InternalError", |e| matches!(e, StoreError::Unavailable(_))),
        (404, "NoSuchKey", |e| matches!(e, StoreError::NotFound { .. })),
        (403, "AccessDenied", |e| matches!(e, StoreError::Io(_))),
        (404, "NoSuchBucket", |e| matches!(e, StoreError::Io(_))),
    ];
    for (status, code, expected) in cases {
        let addr = fake_s3(status, code).await;
        let store = S3Store::from_client(client_at(&format!("http://{addr}")), "bucket");
        let err = store.get("k", 10).await.unwrap_err();
        assert!(expected(&err), "{status} {code} mapped to {err:?}");
    }
    // Nothing listening: connection refused is transient.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = S3Store::from_client(client_at(&format!("http://127.0.0.1:{port}")), "bucket");
    let err = store.head("k").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn s3_large_upload_is_multipart_and_failures_are_aborted() {
    let Some(fx) = localstack().await else { return };
    let s = &*fx.store;
    let body = data(2 * PART_SIZE + 10, 3);
    let src = fx.scratch("f");
    std::fs::write(&src, &body).unwrap();
    s.put_file("mp/obj", &src).await.unwrap();
    let head = s.client().head_object().bucket(s.bucket()).key("mp/obj").send().await.unwrap();
    // A multipart object's ETag is "<md5 of part md5s>-<part count>".
    assert!(head.e_tag().unwrap_or("").trim_matches('"').ends_with("-3"), "{:?}", head.e_tag());

    let r = s.put_reader("mp/failed", FailingReader { remaining: PART_SIZE + 1 }).await;
    assert!(r.is_err());
    let pending = s.client().list_multipart_uploads().bucket(s.bucket()).send().await.unwrap();
    assert!(pending.uploads().is_empty(), "failed upload not aborted: {:?}", pending.uploads());
}

#[tokio::test]
async fn s3_new_uses_the_default_credential_chain() {
    let Some(endpoint) = twin_endpoint("POSTHUMAN_S3_ENDPOINT") else { return };
    assert!(
        std::env::var_os("AWS_ACCESS_KEY_ID").is_some(),
        "the twin env sets AWS_ACCESS_KEY_ID=test; use `localstack/twins.sh env`"
    );
    let cfg = S3Config {
        bucket: super::unique_bucket(),
        endpoint_url: Some(endpoint),
        region: "eu-west-1".into(),
        force_path_style: true,
    };
    let store = S3Store::new(cfg).await.unwrap();
    store.create_bucket().await.unwrap();
    store.create_bucket().await.unwrap(); // idempotent
    store.put("x", Bytes::from_static(b"1")).await.unwrap();
    assert_eq!(store.get("x", 1).await.unwrap(), Bytes::from_static(b"1"));
}
