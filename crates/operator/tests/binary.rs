//! The `posthuman-operator` binary: its flags, its clear refusals and their exit codes (the
//! CLI's, class for class), and a real embedded deployment (anvil, Ocean v4, the lineage
//! contract, the API over HTTP) that it reads the chain through. The audit passing on real
//! train jobs, and failing on a tampered checkpoint, runs in the workspace's demo test
//! (`tests/tests/demo.rs`), which keeps a deployment with finished jobs.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns may unwrap too

use std::process::{Command, Output};

use posthuman_functions::server::{ServerConfig, start};

const BIN: &str = env!("CARGO_BIN_EXE_posthuman-operator");

fn operator(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("POSTHUMAN_API")
        .env_remove("POSTHUMAN_RPC")
        .env_remove("POSTHUMAN_DATA_DIR")
        .output()
        .expect("run posthuman-operator")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_flags_and_a_data_dir_without_a_store_are_usage_errors() {
    let help = operator(&["audit", "--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--data-dir", "--api", "--rpc", "--json"] {
        assert!(text.contains(flag), "{flag} in {text}");
    }
    assert_eq!(operator(&["audit"]).status.code(), Some(2), "a job and --data-dir are required");
    let o = operator(&["audit", "job-1", "--data-dir", "/nonexistent/posthuman"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("holds no store"), "{}", stderr(&o));
}

#[test]
fn an_unreachable_api_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("store")).unwrap();
    let d = dir.path().to_str().unwrap();
    // Port 9 (discard) on loopback: nothing listens there on these machines.
    let o = operator(&["audit", "job-1", "--data-dir", d, "--api", "http://127.0.0.1:9"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("127.0.0.1:9/api/chain"), "{}", stderr(&o));
}

/// Against a real deployment: the chain is found through the API, and a job the lineage
/// contract never saw committed is a failed verification (exit 7), said in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_no_commitment_on_chain_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    // This test runs no job, so the queue's worker program is never started.
    let data = dir.path().join("server");
    let emb = start(&ServerConfig::new(&data, "/nonexistent/posthuman-worker")).await.unwrap();
    let app = posthuman_functions::api::router(emb.deps.clone(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let d = data.to_str().unwrap().to_string();
    let o = tokio::task::spawn_blocking(move || {
        operator(&["audit", "job-never-ran", "--data-dir", &d, "--api", &api])
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("has no training commitment on chain"), "{}", stderr(&o));
    emb.queue.shutdown().await;
    emb.anvil.stop();
}
