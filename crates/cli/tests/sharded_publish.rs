//! `posthuman models publish` of a sharded checkpoint (`model.safetensors.index.json` and the
//! shards it names, as `transformers` saves models of real size): the directory's weights
//! are the one file its unsharded save is, byte for byte (so the signed SHA-256 and the
//! canonical weights hash the API computes are the unsharded model's), on-disk dtypes kept;
//! and each inconsistent shard set is refused by the binary with exit code 9 and the file or
//! tensor named, before the wallet, the API or the chain is touched. End to end against the
//! embedded server (anvil, Ocean v4, the API over HTTP), both layouts publish as the same
//! weights hash. A tiny random Llama, written by the test itself.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use posthuman_cli::client::ModelFiles;
use posthuman_gpt2::candle_core::DType;
use posthuman_gpt2::family::{AnyConfig, AnyWeights, init_weights};

const BIN: &str = env!("CARGO_BIN_EXE_posthuman");
const INDEX: &str = "model.safetensors.index.json";

fn config_json() -> String {
    serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
    })
    .to_string()
}

/// A model directory around `weights` (written by `write`), with config and tokenizer.
fn model_dir(write: impl FnOnce(&Path)) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("config.json"), config_json()).unwrap();
    // The smallest tokenizer.json the API takes (it checks there is a model).
    let tokenizer = r#"{"model": {"type": "BPE", "vocab": {}, "merges": []}}"#;
    std::fs::write(d.path().join("tokenizer.json"), tokenizer).unwrap();
    write(d.path());
    d
}

/// What `transformers`' `save_pretrained(max_shard_size=…)` writes for the single file
/// `single`: `n` shards of its tensors (by name), each with `format: pt`, and the index.
fn shard(dir: &Path, single: &[u8], n: usize) {
    let st = safetensors::SafeTensors::deserialize(single).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut weight_map = BTreeMap::new();
    for (i, chunk) in names.chunks(names.len().div_ceil(n)).enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        let views = chunk.iter().map(|k| (k.clone(), st.tensor(k).unwrap()));
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        std::fs::write(dir.join(&file), safetensors::serialize(views, Some(meta)).unwrap())
            .unwrap();
        for k in chunk {
            weight_map.insert(k.clone(), file.clone());
        }
    }
    let index =
        serde_json::json!({"metadata": {"total_size": single.len()}, "weight_map": weight_map});
    std::fs::write(dir.join(INDEX), index.to_string()).unwrap();
}

/// The single-file checkpoint of a seeded tiny Llama: f32 as the API's own writer saves it,
/// or every tensor in bf16 (what Llama checkpoints ship), both with `format: pt`.
fn single_file(cfg: &AnyConfig, dtype: DType) -> (Vec<u8>, AnyWeights) {
    let w = AnyWeights::from_var_map(cfg, &init_weights(cfg, 3).unwrap()).unwrap();
    let f32_bytes = w.to_safetensors_bytes().unwrap();
    if dtype == DType::F32 {
        return (f32_bytes, w);
    }
    let cast: HashMap<String, _> =
        w.tensors().iter().map(|(k, t)| (k.clone(), t.to_dtype(dtype).unwrap())).collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cast.safetensors");
    posthuman_gpt2::candle_core::safetensors::save(&cast, &path).unwrap();
    let plain = std::fs::read(&path).unwrap();
    let views = safetensors::SafeTensors::deserialize(&plain).unwrap().tensors();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    (safetensors::serialize(views, Some(meta)).unwrap(), w)
}

#[test]
fn a_sharded_directory_publishes_its_unsharded_file_byte_for_byte() {
    let cfg = AnyConfig::from_json(&config_json()).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let (single, w) = single_file(&cfg, dtype);
        let one = model_dir(|d| std::fs::write(d.join("model.safetensors"), &single).unwrap());
        let want = ModelFiles::read(one.path()).unwrap().weights;
        assert!(want == single, "a single-file directory is uploaded as it is");
        let want_hash = AnyWeights::from_safetensors_bytes(&want, &cfg).unwrap().hash().unwrap();
        if dtype == DType::F32 {
            assert_eq!(want_hash, w.hash().unwrap());
        }
        for n in [2, 3] {
            let sharded = model_dir(|d| shard(d, &single, n));
            let files = ModelFiles::read(sharded.path()).unwrap();
            assert!(files.weights == want, "{dtype:?}, {n} shards: assembled bytes differ");
            assert_eq!(
                AnyWeights::from_safetensors_bytes(&files.weights, &cfg).unwrap().hash().unwrap(),
                want_hash
            );
        }
    }
}

/// Runs `posthuman models publish DIR` against an API that does not exist with a wallet that
/// does not exist: local input is judged first, so this shows what is refused before any
/// upload.
fn publish(dir: &Path) -> (Option<i32>, String) {
    let o = Command::new(BIN)
        .args(["--api", "http://127.0.0.1:9", "--wallet"])
        .arg(dir.join("no-wallet.json"))
        .args(["models", "publish"])
        .arg(dir)
        .args(["--name", "Tiny", "--symbol", "TINY", "--price", "1"])
        .env("POSTHUMAN_WALLET_PASSWORD", "correct horse battery staple")
        .env_remove("POSTHUMAN_RPC")
        .env_remove("POSTHUMAN_API")
        .output()
        .unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn inconsistent_shard_sets_exit_9_naming_the_file_before_any_upload() {
    let cfg = AnyConfig::from_json(&config_json()).unwrap();
    let (single, _) = single_file(&cfg, DType::F32);
    let s2 = "model-00002-of-00003.safetensors";
    let edit_index = |d: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join(INDEX)).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(d.join(INDEX), v.to_string()).unwrap();
    };
    type Damage<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        ("missing shard", Box::new(|d: &Path| std::fs::remove_file(d.join(s2)).unwrap()), s2),
        (
            "shard the index does not name",
            Box::new(|d: &Path| {
                std::fs::copy(d.join(s2), d.join("model-00004-of-00003.safetensors")).unwrap();
            }),
            "model-00004-of-00003.safetensors",
        ),
        (
            "stray single file beside the index",
            Box::new(|d: &Path| {
                std::fs::write(d.join("model.safetensors"), &single).unwrap();
            }),
            "model.safetensors",
        ),
        (
            "index names a tensor its shard lacks",
            Box::new(|d: &Path| {
                edit_index(d, &|v| v["weight_map"]["model.layers.7.mlp.up_proj.weight"] = s2.into())
            }),
            "model.layers.7.mlp.up_proj.weight",
        ),
        (
            "malformed index JSON",
            Box::new(|d: &Path| std::fs::write(d.join(INDEX), "{\"weight_map\": {").unwrap()),
            INDEX,
        ),
    ];
    for (what, damage, named) in cases {
        let d = model_dir(|d| shard(d, &single, 3));
        damage(d.path());
        let e = match ModelFiles::read(d.path()) {
            Err(e) => e,
            Ok(_) => panic!("{what}: accepted"),
        };
        assert_eq!(e.exit_code(), 9, "{what}: {e}");
        let (code, stderr) = publish(d.path());
        assert_eq!(code, Some(9), "{what}: {stderr}");
        assert!(stderr.contains(named), "{what}: {stderr} does not name {named}");
    }

    // The intact shard set gets past the files: it fails only on the missing wallet (exit 2).
    let d = model_dir(|d| shard(d, &single, 3));
    let (code, stderr) = publish(d.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no-wallet.json"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_and_single_file_publish_as_the_same_model_end_to_end() {
    use posthuman_chain::anvil::ANVIL_DEV_KEY_0;
    use posthuman_functions::server::ServerConfig;
    let cfg = AnyConfig::from_json(&config_json()).unwrap();
    let (single, _) = single_file(&cfg, DType::BF16);
    let one = model_dir(|d| std::fs::write(d.join("model.safetensors"), &single).unwrap());
    let three = model_dir(|d| shard(d, &single, 3));

    let dir = tempfile::tempdir().unwrap();
    // This test runs no job, so the queue's worker program is never started.
    let mut server = ServerConfig::new(dir.path().join("server"), "/nonexistent/posthuman-worker");
    let key: alloy_signer_local::PrivateKeySigner = ANVIL_DEV_KEY_0.parse().unwrap();
    server.api.publishers = vec![key.address()];
    let (emb, api) = common::serve(&server).await;

    let mut hashes = Vec::new();
    for (d, symbol) in [(&one, "ONE"), (&three, "THREE")] {
        let mut cmd = Command::new(BIN);
        cmd.args(["--api", &api, "--key-env", "SHARDS_TEST_KEY", "--json", "models", "publish"])
            .arg(d.path())
            .args(["--name", "Tiny Llama", "--symbol", symbol, "--price", "1"])
            .env("SHARDS_TEST_KEY", ANVIL_DEV_KEY_0)
            .env_remove("POSTHUMAN_RPC");
        let o = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
        assert!(o.status.success(), "{symbol}: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        hashes.push(v["weights_hash"].as_str().unwrap().to_string());
    }
    assert_eq!(hashes[0], hashes[1], "sharded and single-file weights hash differently");
    let want = AnyWeights::from_safetensors_bytes(&single, &cfg).unwrap().hash().unwrap();
    assert_eq!(serde_json::to_value(want).unwrap(), serde_json::Value::String(hashes[0].clone()));

    emb.queue.shutdown().await;
    emb.anvil.stop();
}
