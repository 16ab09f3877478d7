//! One contract suite for the direct-upload boundary (`posthuman_functions::uploads`), run
//! against both implementations over real HTTP: the embedded server's own PUT route
//! (`LocalUploads`, here on a loopback port) and S3 presigned PUTs on LocalStack
//! (`S3Uploads`, when POSTHUMAN_S3_ENDPOINT is set: `eval "$(localstack/twins.sh start)"`).
//! What was declared arrives and checks out; a body with other bytes of the same length, a
//! longer one, a shorter one and a PUT after the URL's expiry are refused by the store
//! itself, and leave nothing a publish or submit would take. The refusals that rest on the
//! URL's signature (its expiry, a tampered URL) need a LocalStack that checks signatures
//! (`S3_SKIP_SIGNATURE_VALIDATION=0`, as `localstack/twins.sh` starts it); on one that does
//! not they are skipped, loudly.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;

use std::sync::Arc;

use alloy::transports::http::reqwest;
use posthuman_functions::uploads::{
    DeclaredFile, DirectUploads, LocalUploads, PutQuery, PutTarget, S3Uploads, Staged,
};
use posthuman_store::{LocalStore, ObjectStore, S3Config, S3Store};
use posthuman_types::Hash32;
use sha2::{Digest, Sha256};

/// An implementation under test, and the base its relative URLs resolve against.
struct Fixture {
    uploads: Arc<dyn DirectUploads>,
    base: String,
    /// Whether the store checks the URL's signature (a LocalStack started without
    /// `S3_SKIP_SIGNATURE_VALIDATION=0` takes any).
    checks_signatures: bool,
    _dir: tempfile::TempDir,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn declared(name: &str, bytes: &[u8]) -> DeclaredFile {
    DeclaredFile {
        name: name.into(),
        bytes: bytes.len() as u64,
        sha256: Hash32(Sha256::digest(bytes).into()),
    }
}

/// The embedded server's twin behind a minimal router on a loopback port: the same
/// `receive` the API's `PUT /api/uploads/{upload_id}/{file}` calls.
async fn local() -> Fixture {
    use axum::extract::{Path, Query, State};
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("store")).unwrap());
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let uploads: Arc<dyn DirectUploads> =
        Arc::new(LocalUploads::new(store, Sha256::digest(common::unique("secret")).into(), spool));
    async fn put(
        State(u): State<Arc<dyn DirectUploads>>,
        Path((id, file)): Path<(String, String)>,
        Query(q): Query<PutQuery>,
        body: axum::body::Body,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        match u.receive(&id, &file, &q, body).await {
            Ok(()) => axum::http::StatusCode::OK.into_response(),
            Err(e) => e.into_response(),
        }
    }
    let app = axum::Router::new()
        .route("/api/uploads/{upload_id}/{file}", axum::routing::put(put))
        .with_state(uploads.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Fixture { uploads, base, checks_signatures: true, _dir: dir }
}

async fn s3() -> Option<Fixture> {
    let endpoint = common::twin_endpoint("POSTHUMAN_S3_ENDPOINT", "upload_contract::s3")?;
    let cfg = S3Config {
        bucket: common::unique("uploads"),
        endpoint_url: Some(endpoint),
        region: "us-east-1".into(),
        force_path_style: true,
    };
    let store = S3Store::new(cfg).await.unwrap();
    store.create_bucket().await.unwrap();
    let uploads: Arc<dyn DirectUploads> = Arc::new(S3Uploads::new(&store));
    let mut fx = Fixture {
        uploads,
        base: String::new(),
        checks_signatures: true,
        _dir: tempfile::tempdir().unwrap(),
    };
    // Probe: the right body to a URL whose signature was altered.
    let f = declared("dataset", b"probe");
    let t = fx.uploads.presign(&upload_id(), &f, now() + 600).await.unwrap().target;
    let st = send(&fx, &tampered(&t), b"probe".to_vec()).await;
    fx.checks_signatures = !(200..300).contains(&st);
    Some(fx)
}

/// `t` with the last hex digit of its signature (or token) changed.
fn tampered(t: &PutTarget) -> PutTarget {
    let mut t = t.clone();
    let at = t.url.find("Signature=").or_else(|| t.url.find("token=")).unwrap();
    let end = t.url[at..].find('&').map_or(t.url.len(), |e| at + e);
    let (cut, last) = (end - 1, t.url.as_bytes()[end - 1]);
    let swapped = if last == b'0' { "1" } else { "0" };
    t.url.replace_range(cut..=cut, swapped);
    t
}

/// Whether `fx` can show a refusal that rests on the URL's signature; a loud skip if not.
fn signatures_checked(fx: &Fixture, test: &str) -> bool {
    if !fx.checks_signatures {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED {test}: this LocalStack does not check signatures (restart the twins: \
             localstack/twins.sh stop; eval \"$(localstack/twins.sh start)\") ***"
        );
    }
    fx.checks_signatures
}

/// Sends `body` as `t` says (its headers, the body's own length), as a client does.
async fn send(fx: &Fixture, t: &PutTarget, body: Vec<u8>) -> u16 {
    let url = if t.url.starts_with('/') { format!("{}{}", fx.base, t.url) } else { t.url.clone() };
    let method = reqwest::Method::from_bytes(t.method.as_bytes()).unwrap();
    let mut r = reqwest::Client::new().request(method, url);
    for (k, v) in &t.headers {
        if k != "content-length" && k != "host" {
            r = r.header(k, v);
        }
    }
    r.body(body).send().await.unwrap().status().as_u16()
}

fn upload_id() -> String {
    format!("u-{}", &hex::encode(Sha256::digest(common::unique("id")))[..32])
}

async fn declared_file_arrives_and_checks_out(fx: &Fixture) {
    let id = upload_id();
    let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let f = declared("weights", &data);
    let t = fx.uploads.presign(&id, &f, now() + 600).await.unwrap().target;
    assert_eq!(t.method, "PUT");
    if let Some(at) = t.url.find("X-Amz-SignedHeaders=") {
        // S3: the signature covers the exact length and the checksum, not just the key.
        let signed = t.url[at..].split('&').next().unwrap().to_ascii_lowercase();
        for h in ["content-length", "x-amz-checksum-sha256"] {
            assert!(signed.contains(h), "{h} is not signed: {signed}");
        }
    }
    assert!(fx.uploads.check(&id, &f).await.unwrap() == Staged::Missing, "nothing yet");
    let st = send(fx, &t, data.clone()).await;
    assert!((200..300).contains(&st), "honest PUT: {st}");
    assert_eq!(fx.uploads.check(&id, &f).await.unwrap(), Staged::Ready);
    // The same object checked against another declaration (a hash or a length the client
    // did not send) is not ready.
    let mut other = f.clone();
    other.sha256 = Hash32([9; 32]);
    assert!(matches!(fx.uploads.check(&id, &other).await.unwrap(), Staged::Differs(_)));
    other = f.clone();
    other.bytes += 1;
    assert!(matches!(fx.uploads.check(&id, &other).await.unwrap(), Staged::Differs(_)));
}

async fn other_bytes_are_refused(fx: &Fixture) {
    let id = upload_id();
    let data = b"the declared dataset\n".to_vec();
    let f = declared("dataset", &data);
    let t = fx.uploads.presign(&id, &f, now() + 600).await.unwrap().target;
    let mut same_len = data.clone();
    same_len[3] ^= 0x20;
    let longer = [data.as_slice(), b"and more"].concat();
    let shorter = data[..data.len() - 1].to_vec();
    for (what, body) in [("other bytes", same_len), ("longer", longer), ("shorter", shorter)] {
        let st = send(fx, &t, body).await;
        assert!((400..500).contains(&st), "{what}: {st}");
        assert_eq!(fx.uploads.check(&id, &f).await.unwrap(), Staged::Missing, "{what}");
    }
    // The honest body still goes in with the same URL.
    let st = send(fx, &t, data).await;
    assert!((200..300).contains(&st), "honest PUT after refusals: {st}");
    assert_eq!(fx.uploads.check(&id, &f).await.unwrap(), Staged::Ready);
}

async fn an_expired_url_is_refused(fx: &Fixture) {
    if !signatures_checked(fx, "an_expired_url_is_refused") {
        return;
    }
    let id = upload_id();
    let data = b"late".to_vec();
    let f = declared("dataset", &data);
    let t = fx.uploads.presign(&id, &f, now() + 1).await.unwrap().target;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let st = send(fx, &t, data).await;
    assert!((400..500).contains(&st), "expired URL: {st}");
    assert_eq!(fx.uploads.check(&id, &f).await.unwrap(), Staged::Missing);
}

async fn a_tampered_url_is_refused(fx: &Fixture) {
    if !signatures_checked(fx, "a_tampered_url_is_refused") {
        return;
    }
    let id = upload_id();
    let data = b"declared".to_vec();
    let f = declared("dataset", &data);
    let t = fx.uploads.presign(&id, &f, now() + 600).await.unwrap().target;
    let st = send(fx, &tampered(&t), data.clone()).await;
    assert!((400..500).contains(&st), "tampered URL: {st}");
    // Nor may the client drop a header the URL was signed with (S3: the checksum).
    let mut bare = t.clone();
    bare.headers.clear();
    if t.headers.contains_key("x-amz-checksum-sha256") {
        let st = send(fx, &bare, data).await;
        assert!((400..500).contains(&st), "without the signed checksum header: {st}");
        assert_eq!(fx.uploads.check(&id, &f).await.unwrap(), Staged::Missing);
    }
}

macro_rules! contract {
    ($name:ident, $fixture:expr) => {
        mod $name {
            contract!(@each $fixture; declared_file_arrives_and_checks_out,
                other_bytes_are_refused, an_expired_url_is_refused, a_tampered_url_is_refused);
        }
    };
    (@each $fixture:expr; $($test:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let Some(fx) = $fixture.await else { return };
                super::$test(&fx).await;
            }
        )*
    };
}

contract!(local_server, async { Some(super::local().await) });
contract!(s3_localstack, super::s3());
