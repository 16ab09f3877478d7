//! `posthuman models edit NFT --description … --tags …` (issue 18): the binary signs the edit
//! with the wallet and the API changes the card and re-sets the model's DDO on chain; bad
//! input is refused before anything is signed (exit 2), someone else's model by the API
//! (exit 3). Against a real embedded server (anvil, Ocean v4, the API over HTTP).

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;

use std::process::{Command, Output};

use alloy::signers::local::PrivateKeySigner;
use posthuman_functions::server::ServerConfig;

const BIN: &str = env!("CARGO_BIN_EXE_posthuman");

/// Runs the binary with the raw key `key` in an environment variable (`--key-env`).
async fn posthuman(api: &str, key: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["--api", api, "--key-env", "EDIT_TEST_KEY"]).args(args);
    cmd.env("EDIT_TEST_KEY", key).env_remove("POSTHUMAN_RPC").env_remove("POSTHUMAN_WALLET");
    tokio::task::spawn_blocking(move || cmd.output().expect("run posthuman")).await.unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// A tiny random GPT-2 in HF layout (enough for the API's checks; never run).
fn model_dir(dir: &std::path::Path) {
    let cfg = posthuman_gpt2::Config::new(300, 64, 32, 2, 2);
    let vm = posthuman_gpt2::init_weights(&cfg, 5).unwrap();
    let w = posthuman_gpt2::Weights::from_var_map(&cfg, &vm).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), cfg.to_json()).unwrap();
    std::fs::write(dir.join("model.safetensors"), posthuman_gpt2::safetensors_bytes(&w).unwrap())
        .unwrap();
    let tokenizer =
        r#"{"version":"1.0","model":{"type":"WordLevel","vocab":{"a":0},"unk_token":"a"}}"#;
    std::fs::write(dir.join("tokenizer.json"), tokenizer).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_edits_a_card_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig::new(dir.path().join("server"), "/nonexistent/posthuman-worker");
    let (emb, api) = common::serve(&cfg).await;
    // The operator is the only publisher of this deployment.
    let op = std::fs::read_to_string(dir.path().join("server/operator.key")).unwrap();
    let op = op.trim();
    let files = dir.path().join("model");
    model_dir(&files);
    let args = ["--json", "models", "publish", files.to_str().unwrap(), "--name", "Tiny"];
    let listing = ["--symbol", "TINY", "--price", "2"];
    // A licence neither listed nor LicenseRef-… is refused before anything is uploaded.
    let o = posthuman(&api, op, &[&args[..], &listing, &["--license", "GPL-2.0"]].concat()).await;
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--license"), "{o:?}");
    let o = posthuman(&api, op, &[&args[..], &listing, &["--license", "mit"]].concat()).await;
    let published = json(&o);
    assert_eq!(published["license"], "MIT", "in SPDX's spelling");
    let nft = published["nft"].as_str().unwrap().to_string();
    let o = posthuman(&api, op, &["models", "show", &nft]).await;
    assert!(String::from_utf8_lossy(&o.stdout).contains("  licence    MIT\n"), "{o:?}");

    let o = posthuman(
        &api,
        op,
        &[
            "--json",
            "models",
            "edit",
            &nft,
            "--description",
            "Edited from the CLI",
            "--tags",
            "cli, tiny",
        ],
    )
    .await;
    let card = json(&o);
    assert_eq!(card["description"], "Edited from the CLI");
    assert_eq!(card["tags"], serde_json::json!(["cli", "tiny"]));
    let o = posthuman(&api, op, &["models", "show", &nft]).await;
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("Edited from the CLI") && shown.contains("cli, tiny"), "{shown}");
    // The root's owner changes its licence (models derived from it afterwards inherit it).
    let edit = ["--json", "models", "edit", &nft, "--license", "LicenseRef-acme-1.0"];
    assert_eq!(json(&posthuman(&api, op, &edit).await)["license"], "LicenseRef-acme-1.0");
    let o = posthuman(&api, op, &["models", "show", &nft]).await;
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("  licence    LicenseRef-acme-1.0\n"), "{shown}");

    // Bad input is refused before anything is signed or sent: usage, exit 2.
    for bad in [
        &["--tags", "Not OK"][..],
        &["--description", "bell\u{7}"],
        &["--license", "LicenseRef-a b"],
        &[],
    ] {
        let o = posthuman(&api, op, &[&["models", "edit", &nft][..], bad].concat()).await;
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    // Someone else's wallet: the API refuses it (exit 3) and says why.
    let stranger = alloy::hex::encode(PrivateKeySigner::random().to_bytes());
    let o = posthuman(&api, &stranger, &["models", "edit", &nft, "--description", "mine"]).await;
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("owner"), "{o:?}");
    emb.queue.shutdown().await;
}
