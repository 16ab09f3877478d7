//! The production path of the binary: the worker reads its spec, the private weights and the
//! dataset from S3 and writes the new weights and public outputs back (LocalStack here, via
//! `POSTHUMAN_S3_ENDPOINT`, which `scripts/test.sh` starts). The same job on the local store
//! must end on the same weights, so the store is only a transport.
//!
//! Without the twin the test says SKIPPED on stderr; under `scripts/test.sh`
//! (`POSTHUMAN_REQUIRE_TWINS=1`) or CI a missing twin fails it instead.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use bytes::Bytes;
use posthuman_store::{LocalStore, ObjectStore, S3Config, S3Store};
use posthuman_types::{JobSpec, TrainMetrics};
use posthuman_worker::exit;
use posthuman_worker::model_io::load_model;

fn endpoint() -> Option<String> {
    if let Some(url) = std::env::var("POSTHUMAN_S3_ENDPOINT").ok().filter(|u| !u.is_empty()) {
        return Some(url);
    }
    let required = std::env::var_os("CI").is_some()
        || std::env::var("POSTHUMAN_REQUIRE_TWINS").is_ok_and(|v| v == "1");
    assert!(!required, "POSTHUMAN_S3_ENDPOINT is not set but twins are required");
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: no S3 twin (POSTHUMAN_S3_ENDPOINT unset): run under \
         `localstack/twins.sh run -- cargo test -p posthuman-worker --test s3` ***"
    );
    None
}

fn bucket_name() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("ph-worker-{}-{nanos}", std::process::id())
}

async fn s3(endpoint: &str, bucket: &str) -> S3Store {
    // Credentials from the environment, as on Batch (the twins script exports test ones).
    S3Store::new(S3Config {
        bucket: bucket.into(),
        endpoint_url: Some(endpoint.into()),
        region: "us-east-1".into(),
        force_path_style: true,
    })
    .await
    .unwrap()
}

/// Copies every object from `from` into `to`.
async fn mirror(from: &LocalStore, to: &S3Store) {
    for key in from.list("").await.unwrap() {
        to.put(&key, from.get(&key, u64::MAX).await.unwrap()).await.unwrap();
    }
}

/// `posthuman-worker run` with the spec given as a key in the store.
fn run_on_s3(endpoint: &str, bucket: &str, spec_key: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_posthuman-worker"))
        .args(["--threads", "2", "run", "--progress-secs", "0", "--spec", spec_key])
        .args(["--s3-bucket", bucket, "--s3-endpoint", endpoint, "--s3-path-style"])
        .env("AWS_ACCESS_KEY_ID", std::env::var("AWS_ACCESS_KEY_ID").unwrap_or("test".into()))
        .env(
            "AWS_SECRET_ACCESS_KEY",
            std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or("test".into()),
        )
        .output()
        .unwrap()
}

async fn metrics(store: &dyn ObjectStore, spec: &JobSpec) -> TrainMetrics {
    let b = store.get(&format!("{}/metrics.json", spec.public_prefix), 1 << 20).await.unwrap();
    serde_json::from_slice(&b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_train_job_on_s3_ends_on_the_local_stores_weights() {
    let Some(endpoint) = endpoint() else { return };
    let (_dir, local) = common::store().await;
    let bucket = bucket_name();
    let remote = s3(&endpoint, &bucket).await;
    remote.create_bucket().await.unwrap();
    mirror(&local, &remote).await;

    let spec = common::train_spec("job-s3");
    remote.put("specs/job-s3.json", Bytes::from(common::spec_bytes(&spec))).await.unwrap();
    let out = run_on_s3(&endpoint, &bucket, "specs/job-s3.json");
    assert!(out.status.success(), "worker on S3: {}", String::from_utf8_lossy(&out.stderr));

    // The same job in-process on the local store.
    posthuman_worker::runner::run_spec(local.as_ref(), &common::wc(), &spec).await.unwrap();
    let (on_s3, on_fs) = (metrics(&remote, &spec).await, metrics(local.as_ref(), &spec).await);
    assert_eq!(on_s3.output_weights_hash, on_fs.output_weights_hash);
    assert_eq!(on_s3.checkpoint_root, on_fs.checkpoint_root);

    // The new private model is complete on S3 (manifest checked) and hashes as committed.
    let m = load_model(&remote, &spec.private_prefix, u64::MAX).await.unwrap();
    assert_eq!(m.weights_hash, on_s3.output_weights_hash);
    // Public outputs are the same set of files either way, and never weights.
    let public = |keys: Vec<String>| -> Vec<String> {
        let mut k: Vec<String> = keys
            .into_iter()
            .filter(|k| !k.ends_with("progress.json"))
            .map(|k| k.rsplit('/').next().unwrap_or_default().to_string())
            .collect();
        k.sort();
        k
    };
    let s3_public = public(remote.list(&spec.public_prefix).await.unwrap());
    assert_eq!(s3_public, public(local.list(&spec.public_prefix).await.unwrap()));
    assert!(s3_public.iter().all(|k| !k.ends_with(".safetensors")), "{s3_public:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_inputs_on_s3_get_distinct_exit_codes() {
    let Some(endpoint) = endpoint() else { return };
    let bucket = bucket_name();
    let remote = s3(&endpoint, &bucket).await;
    remote.create_bucket().await.unwrap();

    // No such spec key in the bucket: a spec error, not a crash.
    let out = run_on_s3(&endpoint, &bucket, "specs/absent.json");
    assert_eq!(out.status.code(), Some(exit::BAD_SPEC), "{}", String::from_utf8_lossy(&out.stderr));

    // A spec naming a model that is not there: nothing is written under the output prefixes.
    let spec = common::train_spec("job-nomodel");
    remote.put("specs/nomodel.json", Bytes::from(common::spec_bytes(&spec))).await.unwrap();
    let out = run_on_s3(&endpoint, &bucket, "specs/nomodel.json");
    assert!(
        matches!(out.status.code(), Some(exit::BAD_WEIGHTS | exit::STORE)),
        "{:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(remote.list(&spec.private_prefix).await.unwrap().is_empty());

    // A bucket that does not exist: the store's exit code.
    let out = run_on_s3(&endpoint, &format!("{bucket}-absent"), "specs/nomodel.json");
    assert_eq!(out.status.code(), Some(exit::STORE), "{}", String::from_utf8_lossy(&out.stderr));
}
