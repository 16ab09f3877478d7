//! The `posthuman` binary against a real embedded server (anvil, Ocean v4, the API over
//! HTTP): wallets, the chain discovery at `/api/chain`, JSON output, and the documented exit
//! codes for wrong passwords, refused requests and unreachable APIs. Jobs and trades run in
//! the workspace's demo test (`tests/tests/demo.rs`), whose `posthuman-demo` drives the same
//! functions.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns may unwrap too

mod common;

use std::path::Path;
use std::process::{Command, Output};

use posthuman_functions::server::ServerConfig;

const BIN: &str = env!("CARGO_BIN_EXE_posthuman");
const PASSWORD: &str = "correct horse battery staple";

async fn posthuman(api: &str, wallet: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--api").arg(api).arg("--wallet").arg(wallet).args(args);
    cmd.env("POSTHUMAN_WALLET_PASSWORD", PASSWORD).env_remove("POSTHUMAN_RPC");
    tokio::task::spawn_blocking(move || cmd.output().expect("run posthuman")).await.unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_catalogue_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    // This test runs no job, so the queue's worker program is never started.
    let cfg = ServerConfig::new(dir.path().join("server"), "/nonexistent/posthuman-worker");
    let (emb, api) = common::serve(&cfg).await;
    let wallet = dir.path().join("alice.json");

    // Create: an encrypted keystore, owner-only.
    let o = posthuman(&api, &wallet, &["--json", "wallet", "create"]).await;
    let address = json(&o)["address"].as_str().unwrap().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&wallet).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let o = posthuman(&api, &wallet, &["--json", "wallet", "address"]).await;
    assert_eq!(json(&o)["address"], address);

    // Balances: the chain is found through the API's /api/chain.
    let o = posthuman(&api, &wallet, &["--json", "wallet", "balances"]).await;
    let b = json(&o);
    assert_eq!(b["address"], address);
    assert_eq!(b["tokens"][0]["symbol"], "OCEAN");
    assert_eq!(b["tokens"][0]["amount"], "0");

    let o = posthuman(&api, &wallet, &["--json", "models", "list"]).await;
    assert_eq!(json(&o), serde_json::json!([]));
    let o = posthuman(&api, &wallet, &["--json", "jobs", "list"]).await;
    assert_eq!(json(&o), serde_json::json!([]));

    // Exit codes: usage (2), refused by the API (3), unreachable (4).
    let o = posthuman(&api, &wallet, &["wallet", "create"]).await;
    assert_eq!(o.status.code(), Some(2), "overwriting a wallet is refused");
    let mut cmd = Command::new(BIN);
    cmd.args(["--api", &api, "--wallet"]).arg(&wallet).args(["wallet", "address"]);
    cmd.env("POSTHUMAN_WALLET_PASSWORD", "wrong password");
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("password"));
    let o = posthuman(&api, &wallet, &["jobs", "status", "j-000000000000000000000000"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let o = posthuman("http://127.0.0.1:9", &wallet, &["models", "list"]).await;
    assert_eq!(o.status.code(), Some(4));
    let o = posthuman(&api, &wallet, &["models", "show", "0xnot-an-nft"]).await;
    assert!(matches!(o.status.code(), Some(3)), "{}", String::from_utf8_lossy(&o.stderr));
    // A royalty vault only a derived model has: any other address is a usage error (2),
    // found on chain through the API's /api/chain.
    let nobody = "0x00000000000000000000000000000000000000aa";
    let o = posthuman(&api, &wallet, &["models", "royalties", nobody, "--distribute"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a derived model"));

    emb.queue.shutdown().await;
    emb.anvil.stop();
}
