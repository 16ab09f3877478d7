//! The test harness for the API: an embedded default (anvil + deployed contracts + local
//! queue + filesystem store) in a temp dir, a tiny real GPT-2, wallets, signed multipart
//! requests sent through the very router the server uses (`tower::ServiceExt::oneshot`).
#![allow(dead_code)]

pub mod direct;

use std::path::PathBuf;
use std::sync::Arc;

use alloy::primitives::{Address, B256, Bytes as ABytes, U256};
use alloy::providers::ext::AnvilApi;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use posthuman_chain::{Chain, ProviderFee};
use posthuman_functions::queue::WorkerCommand;
use posthuman_functions::server::{Embedded, ServerConfig, start};
use posthuman_types::{Hash32, JobParams, RewardScheme};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

pub const WEI: u128 = 1_000_000_000_000_000_000;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub emb: Embedded,
    pub app: axum::Router,
    /// A chain client holding the operator key and every test wallet.
    pub chain: Chain,
    pub operator: PrivateKeySigner,
    /// Every response body, for the private-weights scan.
    pub bodies: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// The real worker binary next to this test's target dir, if built.
pub fn worker_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("POSTHUMAN_WORKER_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("posthuman-worker");
    p.is_file().then_some(p)
}

/// The worker binary for a suite that runs real jobs. Where it is not built the suite is
/// skipped, loudly; in CI (or with `POSTHUMAN_REQUIRE_TWINS=1`) a missing worker fails it.
pub fn worker_or_skip(suite: &str) -> Option<PathBuf> {
    let w = worker_binary();
    if w.is_none() {
        let required = std::env::var("CI").is_ok()
            || std::env::var("POSTHUMAN_REQUIRE_TWINS").as_deref() == Ok("1");
        assert!(!required, "the posthuman-worker binary is not built");
        eprintln!(
            "\n!!!!!!!! SKIPPED {suite}: build posthuman-worker first (cargo build -p posthuman-worker) !!!!!!!!\n"
        );
    }
    w
}

/// A worker that just sleeps: for suites about requests and payments, where queued jobs
/// never need to run.
pub fn sleeper() -> WorkerCommand {
    WorkerCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "sleep 30".into(), "sh".into()],
    }
}

pub async fn env(worker: WorkerCommand, tweak: impl FnOnce(&mut ServerConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(dir.path().join("data"), "unused");
    cfg.worker = worker;
    tweak(&mut cfg);
    let emb = start(&cfg).await.unwrap();
    let key_text = std::fs::read_to_string(dir.path().join("data/operator.key")).unwrap();
    let operator: PrivateKeySigner = key_text.trim().parse().unwrap();
    let chain =
        Chain::connect(&emb.rpc_url, operator.clone(), emb.deps.chain.book().clone()).unwrap();
    let app = posthuman_functions::api::router(emb.deps.clone(), None);
    Env { dir, emb, app, chain, operator, bodies: Default::default() }
}

impl Env {
    /// A funded wallet (ETH for gas, `ocean` whole OCEAN) the chain client can send from.
    pub async fn wallet(&mut self, ocean: u128) -> PrivateKeySigner {
        let w = PrivateKeySigner::random();
        self.chain.add_signer(w.clone()).unwrap();
        self.chain
            .provider()
            .anvil_set_balance(w.address(), U256::from(10u128.pow(21)))
            .await
            .unwrap();
        if ocean > 0 {
            let book = self.chain.book().clone();
            self.chain
                .transfer(self.operator.address(), book.ocean, w.address(), U256::from(ocean * WEI))
                .await
                .unwrap();
        }
        w
    }

    /// Sends a request through the router; returns status and JSON (Null if not JSON).
    pub async fn call(&self, req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        self.bodies.lock().unwrap().push(body);
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, serde_json::Value) {
        self.call(Request::get(path).body(Body::empty()).unwrap()).await
    }

    pub async fn post_multipart(
        &self,
        path: &str,
        parts: &[(&str, &[u8])],
    ) -> (StatusCode, serde_json::Value) {
        let (ctype, body) = multipart(parts);
        self.call(Request::post(path).header("content-type", ctype).body(Body::from(body)).unwrap())
            .await
    }

    /// The deployment's signing domain.
    pub fn domain(&self) -> posthuman_receipts::ReceiptDomain {
        posthuman_functions::auth::domain(&self.emb.deps)
    }

    /// A buyer's signed read of a job's results.
    pub async fn result(
        &self,
        job_id: &str,
        reader: &PrivateKeySigner,
    ) -> (StatusCode, serde_json::Value) {
        let expires = now() + 60;
        let sig = posthuman_receipts::request::SignableRequest::read(
            posthuman_receipts::request::READ_RESULT,
            job_id,
            expires,
        )
        .sign(&self.domain(), reader)
        .unwrap();
        let req = Request::get(format!("/api/jobs/{job_id}/result"))
            .header("x-posthuman-reader", format!("{:#x}", reader.address()))
            .header("x-posthuman-signature", sig)
            .header("x-posthuman-expires", expires.to_string())
            .body(Body::empty())
            .unwrap();
        self.call(req).await
    }

    /// Buys `n` datatokens of a model on its exchange as `buyer`.
    pub async fn buy(&self, buyer: &PrivateKeySigner, model: &serde_json::Value, n: u128) {
        let id: B256 = model["exchange_id"].as_str().unwrap().parse().unwrap();
        self.chain.buy(buyer.address(), id, U256::from(n * WEI)).await.unwrap();
    }

    /// Quotes a job with these terms on `nft` through the API (`POST …/quote`) and starts
    /// an order for `consumer` with its provider fee, paid by `payer`; returns the order tx.
    pub async fn order(
        &self,
        nft: &str,
        params: &JobParams,
        dataset_bytes: usize,
        payer: &PrivateKeySigner,
        consumer: Address,
    ) -> String {
        let body = serde_json::json!({ "params": params, "dataset_bytes": dataset_bytes });
        let req = Request::post(format!("/api/models/{nft}/quote"))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        let (st, q) = self.call(req).await;
        assert_eq!(st, StatusCode::OK, "{q}");
        let f = &q["provider_fee"];
        let fee = ProviderFee {
            address: f["provider_fee_address"].as_str().unwrap().parse().unwrap(),
            token: f["provider_fee_token"].as_str().unwrap().parse().unwrap(),
            amount: f["provider_fee_amount"].as_str().unwrap().parse().unwrap(),
            v: f["v"].as_u64().unwrap() as u8,
            r: f["r"].as_str().unwrap().parse().unwrap(),
            s: f["s"].as_str().unwrap().parse().unwrap(),
            valid_until: U256::from(f["valid_until"].as_u64().unwrap()),
            data: f["provider_data"].as_str().unwrap().parse().unwrap(),
        };
        self.order_with_fee(
            q["datatoken"].as_str().unwrap(),
            q["service_index"].as_u64().unwrap(),
            payer,
            consumer,
            &fee,
        )
        .await
    }

    pub async fn order_with_fee(
        &self,
        datatoken: &str,
        service: u64,
        payer: &PrivateKeySigner,
        consumer: Address,
        fee: &ProviderFee,
    ) -> String {
        let dt: Address = datatoken.parse().unwrap();
        let o = self.chain.start_order(payer.address(), dt, consumer, service, fee).await.unwrap();
        format!("{:#x}", o.tx_hash)
    }

    /// A provider fee signed by the operator with any expiry (the API only quotes future ones).
    pub fn fee_expiring_at(&self, valid_until: u64) -> ProviderFee {
        self.chain.sign_provider_fee(valid_until, ABytes::from_static(b"x")).unwrap()
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub fn sha(bytes: &[u8]) -> Hash32 {
    Hash32(Sha256::digest(bytes).into())
}

/// An EIP-191 `personal_sign` over `bytes`: what requests were signed with before they
/// became typed data (the API refuses it now).
pub fn sign(key: &PrivateKeySigner, bytes: &[u8]) -> String {
    key.sign_message_sync(bytes).unwrap().to_string()
}

/// A JSON request body signed for `action` as EIP-712 typed data under `env`'s deployment.
pub fn sign_typed(env: &Env, key: &PrivateKeySigner, action: &str, body: &[u8]) -> String {
    use posthuman_receipts::request::SignableRequest;
    // A body that names no nonce/expiry (the hostile cases) is signed over its bytes alone;
    // the API refuses it for its shape.
    SignableRequest::of_json_body(action, body)
        .unwrap_or_else(|_| SignableRequest::new(action, body, 0, ""))
        .sign(&env.domain(), key)
        .unwrap()
}

/// A multipart/form-data body.
pub fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "posthuman-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A tiny real GPT-2 with a BPE tokenizer trained on `corpus`.
pub struct ModelFiles {
    pub config: Vec<u8>,
    pub weights: Vec<u8>,
    pub tokenizer: Vec<u8>,
}

/// A tiny random GPT-2 built with the model crate alone, with a minimal tokenizer file
/// (enough for the API's checks; jobs on it are never run).
pub fn tiny_model_unrunnable(seed: u64) -> ModelFiles {
    let cfg = posthuman_gpt2::Config::new(300, 64, 32, 2, 2);
    let vm = posthuman_gpt2::init_weights(&cfg, seed).unwrap();
    let w = posthuman_gpt2::Weights::from_var_map(&cfg, &vm).unwrap();
    ModelFiles {
        config: cfg.to_json().into_bytes(),
        weights: posthuman_gpt2::safetensors_bytes(&w).unwrap(),
        tokenizer:
            br#"{"version":"1.0","model":{"type":"WordLevel","vocab":{"a":0},"unk_token":"a"}}"#
                .to_vec(),
    }
}

/// A tiny real GPT-2 and BPE tokenizer trained on `corpus`, made by the worker's own CLI
/// (`train-tokenizer`, `init-model`), so the worker can run it.
pub fn tiny_model_with_worker(worker: &std::path::Path, corpus: &str, seed: u64) -> ModelFiles {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("corpus.txt");
    std::fs::write(&c, corpus).unwrap();
    let tok = dir.path().join("tokenizer.json");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(worker).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "train-tokenizer",
        "--corpus",
        c.to_str().unwrap(),
        "--vocab-size",
        "300",
        "--out",
        tok.to_str().unwrap(),
    ]);
    let m = dir.path().join("model");
    let seed = seed.to_string();
    run(&[
        "init-model",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--n-layer",
        "2",
        "--n-embd",
        "32",
        "--n-head",
        "2",
        "--n-positions",
        "64",
        "--seed",
        &seed,
        "--out",
        m.to_str().unwrap(),
    ]);
    ModelFiles {
        config: std::fs::read(m.join("config.json")).unwrap(),
        weights: std::fs::read(m.join("model.safetensors")).unwrap(),
        tokenizer: std::fs::read(m.join("tokenizer.json")).unwrap(),
    }
}

/// A tiny random Llama (grouped-query attention, untied head) in HF layout, built with the
/// model crate, with a BPE tokenizer trained on `corpus` by the worker's CLI: the files a
/// Llama publisher uploads, runnable by the worker.
pub fn tiny_llama_with_worker(worker: &std::path::Path, corpus: &str, seed: u64) -> ModelFiles {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("corpus.txt");
    std::fs::write(&c, corpus).unwrap();
    let tok = dir.path().join("tokenizer.json");
    let out = std::process::Command::new(worker)
        .args(["train-tokenizer", "--corpus", c.to_str().unwrap(), "--vocab-size", "300"])
        .args(["--out", tok.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tokenizer = std::fs::read(&tok).unwrap();
    // The embedding covers every id the tokenizer can produce (its vocabulary and added
    // tokens), as the worker checks.
    let t: serde_json::Value = serde_json::from_slice(&tokenizer).unwrap();
    let ids = t["model"]["vocab"].as_object().unwrap().values().map(|v| v.as_u64().unwrap());
    let added = t["added_tokens"].as_array().unwrap().iter().map(|a| a["id"].as_u64().unwrap());
    let vocab = ids.chain(added).max().unwrap() + 1;
    let config = serde_json::to_vec_pretty(&serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "torch_dtype": "float32",
    }))
    .unwrap();
    let cfg =
        posthuman_gpt2::llama::Config::from_json(std::str::from_utf8(&config).unwrap()).unwrap();
    let vm = posthuman_gpt2::llama::init_weights(&cfg, seed).unwrap();
    let w = posthuman_gpt2::llama_weights::LlamaWeights::from_var_map(&cfg, &vm).unwrap();
    let weights = posthuman_gpt2::llama_weights::safetensors_bytes(&w).unwrap();
    ModelFiles { config, weights, tokenizer }
}

pub fn corpus() -> String {
    let base = "The quick brown fox jumps over the lazy dog. Posthuman trains models on private weights. \
                A marketplace sells access to compute, never the weights themselves. ";
    base.repeat(40)
}

/// Publishes `files` as `publisher` through the API.
pub async fn publish(
    env: &Env,
    publisher: &PrivateKeySigner,
    files: &ModelFiles,
    scheme: &RewardScheme,
    nonce: &str,
) -> (StatusCode, serde_json::Value) {
    publish_with(env, publisher, files, scheme, nonce, &[]).await
}

/// [`publish`] with more multipart parts (the optional `tokenizer_config`, say).
pub async fn publish_with(
    env: &Env,
    publisher: &PrivateKeySigner,
    files: &ModelFiles,
    scheme: &RewardScheme,
    nonce: &str,
    extra: &[(&str, &[u8])],
) -> (StatusCode, serde_json::Value) {
    publish_request(env, publisher, files, scheme, nonce, extra, serde_json::json!({})).await
}

/// [`publish`] under a licence (the request's `license`, as sent).
pub async fn publish_licensed(
    env: &Env,
    publisher: &PrivateKeySigner,
    files: &ModelFiles,
    scheme: &RewardScheme,
    nonce: &str,
    license: &str,
) -> (StatusCode, serde_json::Value) {
    let fields = serde_json::json!({ "license": license });
    publish_request(env, publisher, files, scheme, nonce, &[], fields).await
}

/// [`publish_with`], the signed request's `fields` added to (or replacing) the test's own.
async fn publish_request(
    env: &Env,
    publisher: &PrivateKeySigner,
    files: &ModelFiles,
    scheme: &RewardScheme,
    nonce: &str,
    extra: &[(&str, &[u8])],
    fields: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let mut req = serde_json::json!({
        "name": "Tiny GPT", "symbol": "TINY", "description": "a tiny test model",
        "owner": format!("{:#x}", publisher.address()),
        "price": (2 * WEI).to_string(),
        "reward_scheme": scheme,
        "weights_sha256": sha(&files.weights),
        "nonce": nonce, "expires_at": now() + 600,
    });
    for (k, v) in fields.as_object().into_iter().flatten() {
        req[k] = v.clone();
    }
    let req = serde_json::to_vec(&req).unwrap();
    let sig = sign_typed(env, publisher, posthuman_receipts::request::PUBLISH_MODEL, &req);
    let mut parts: Vec<(&str, &[u8])> = vec![
        ("request", &req),
        ("signature", sig.as_bytes()),
        ("config", &files.config),
        ("weights", &files.weights),
        ("tokenizer", &files.tokenizer),
    ];
    parts.extend_from_slice(extra);
    env.post_multipart("/api/models", &parts).await
}

/// The salt a test request carries: derived from its nonce, so a test can recompute it.
pub fn salt_for(nonce: &str) -> Hash32 {
    sha(format!("salt:{nonce}").as_bytes())
}

/// A signed job request body.
pub fn job_request(
    model: &str,
    order_tx: &str,
    consumer: Address,
    params: &JobParams,
    dataset: Option<&[u8]>,
    nonce: &str,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": model, "order_tx": order_tx, "consumer": format!("{consumer:#x}"),
        "params": params, "dataset_sha256": dataset.map(sha), "salt": salt_for(nonce), "nonce": nonce, "expires_at": now() + 600,
    }))
    .unwrap()
}

pub async fn submit(
    env: &Env,
    signer: &PrivateKeySigner,
    request: &[u8],
    dataset: Option<&[u8]>,
) -> (StatusCode, serde_json::Value) {
    let sig = sign_typed(env, signer, posthuman_receipts::request::SUBMIT_JOB, request);
    let mut parts: Vec<(&str, &[u8])> = vec![("request", request), ("signature", sig.as_bytes())];
    if let Some(d) = dataset {
        parts.push(("dataset", d));
    }
    env.post_multipart("/api/jobs", &parts).await
}

/// Polls a job's status until it completes or fails; `saw_progress` is set once a status
/// carried the worker's progress object.
pub async fn wait_done(env: &Env, job_id: &str, saw_progress: &mut bool) -> serde_json::Value {
    for _ in 0..1200 {
        let (st, s) = env.get(&format!("/api/jobs/{job_id}")).await;
        assert_eq!(st, StatusCode::OK, "{s}");
        if s["progress"].is_object() {
            *saw_progress = true;
        }
        if s["completed"] == true || s["state"] == "failed" {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("job {job_id} did not finish");
}

/// The paid path of a train job: `buyer` buys 3 datatokens of `model`, orders a train job
/// over `data` and submits it signed (nonce `nonce`). Returns the submit's answer.
pub async fn submit_paid_train(
    env: &Env,
    buyer: &PrivateKeySigner,
    model: &serde_json::Value,
    params: posthuman_types::TrainParams,
    data: &[u8],
    nonce: &str,
) -> (StatusCode, serde_json::Value) {
    env.buy(buyer, model, 3).await;
    let nft = model["nft"].as_str().unwrap();
    let params = JobParams::Train(params);
    let order = env.order(nft, &params, data.len(), buyer, buyer.address()).await;
    let req = job_request(nft, &order, buyer.address(), &params, Some(data), nonce);
    submit(env, buyer, &req, Some(data)).await
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

/// The DDO `nft` carries on chain (issue 18): read from its `MetadataCreated` event, checked
/// against `metaDataHash` (SHA-256 of the stored bytes) and `getMetaData` (active), its
/// services pointing at the API's public URL, and nothing private in it (no storage prefix).
pub async fn ddo_on_chain(env: &Env, nft: &str) -> serde_json::Value {
    use alloy::providers::Provider;
    use alloy::sol_types::SolEvent;
    use posthuman_chain::bindings::ERC721Template::MetadataCreated;
    let nft: Address = nft.parse().unwrap();
    let filter = alloy::rpc::types::Filter::new()
        .address(nft)
        .event_signature(MetadataCreated::SIGNATURE_HASH)
        .from_block(0);
    let logs = env.chain.provider().get_logs(&filter).await.unwrap();
    assert_eq!(logs.len(), 1, "one MetadataCreated from {nft}");
    let ev = logs[0].log_decode::<MetadataCreated>().unwrap().inner.data;
    assert_eq!(ev.metaDataHash.0, <[u8; 32]>::from(Sha256::digest(&ev.data)), "hash of the DDO");
    assert_eq!((ev.state, ev.flags.as_ref()), (0, &[0u8][..]), "active, plain JSON");
    let md = env.chain.metadata(nft).await.unwrap();
    assert!(md.has_metadata && md.state == 0, "getMetaData: {md:?}");
    let text = std::str::from_utf8(&ev.data).unwrap();
    for private in ["models/", "jobs/", "safetensors", env.dir.path().to_str().unwrap()] {
        assert!(!text.contains(private), "the DDO names nothing private ({private}): {text}");
    }
    let ddo: serde_json::Value = serde_json::from_str(text).unwrap();
    let chain_id = env.chain.book().chain_id;
    assert_eq!(ddo["id"], posthuman_chain::ddo::did(nft, chain_id));
    assert_eq!(ddo["chainId"], chain_id);
    for s in ddo["services"].as_array().unwrap() {
        let provider =
            posthuman_functions::handlers::ocean::provider_url(&env.emb.deps.cfg.public_api_url);
        assert_eq!(s["serviceEndpoint"], provider.as_str());
    }
    ddo
}

/// Every DDO `nft` was given on chain, oldest first: `MetadataCreated` then each
/// `MetadataUpdated` (Ocean's indexers read both), each checked against its `metaDataHash`
/// (SHA-256 of the bytes), active and plain JSON, with the transaction that set it.
pub async fn ddo_versions(env: &Env, nft: &str) -> Vec<(serde_json::Value, B256)> {
    use alloy::providers::Provider;
    use alloy::sol_types::SolEvent;
    use posthuman_chain::bindings::ERC721Template::{MetadataCreated, MetadataUpdated};
    let nft: Address = nft.parse().unwrap();
    let filter = alloy::rpc::types::Filter::new()
        .address(nft)
        .event_signature(vec![MetadataCreated::SIGNATURE_HASH, MetadataUpdated::SIGNATURE_HASH])
        .from_block(0);
    let logs = env.chain.provider().get_logs(&filter).await.unwrap();
    let mut out = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let (state, flags, data, hash) = if i == 0 {
            let e = log.log_decode::<MetadataCreated>().expect("the first is MetadataCreated");
            let e = e.inner.data;
            (e.state, e.flags, e.data, e.metaDataHash)
        } else {
            let e = log.log_decode::<MetadataUpdated>().expect("later ones are MetadataUpdated");
            let e = e.inner.data;
            (e.state, e.flags, e.data, e.metaDataHash)
        };
        assert_eq!(hash.0, <[u8; 32]>::from(Sha256::digest(&data)), "hash of DDO {i}");
        assert_eq!((state, flags.as_ref()), (0, &[0u8][..]), "active, plain JSON");
        let ddo: serde_json::Value = serde_json::from_slice(&data).unwrap();
        out.push((ddo, log.transaction_hash.unwrap()));
    }
    out
}

/// Gas used by transaction `tx`.
pub async fn gas_of(env: &Env, tx: B256) -> u64 {
    use alloy::providers::Provider;
    env.chain.provider().get_transaction_receipt(tx).await.unwrap().unwrap().gas_used
}

/// A card edit (`POST /api/models/{nft}/card`) of `fields` (description, tags, or anything
/// else to see it refused) signed by `who` for `action` with `nonce`, expiring in 10 minutes.
pub async fn edit_card(
    env: &Env,
    nft: &str,
    who: &PrivateKeySigner,
    fields: serde_json::Value,
    nonce: &str,
) -> (StatusCode, serde_json::Value) {
    edit_card_as(env, nft, who, posthuman_receipts::request::EDIT_CARD, fields, nonce, now() + 600)
        .await
}

/// [`edit_card`] with the action and expiry chosen.
pub async fn edit_card_as(
    env: &Env,
    nft: &str,
    who: &PrivateKeySigner,
    action: &str,
    fields: serde_json::Value,
    nonce: &str,
    expires_at: u64,
) -> (StatusCode, serde_json::Value) {
    let mut body = serde_json::json!({ "model": nft, "nonce": nonce, "expires_at": expires_at });
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    let body = serde_json::to_vec(&body).unwrap();
    let sig = sign_typed(env, who, action, &body);
    let req = Request::post(format!("/api/models/{nft}/card"))
        .header("content-type", "application/json")
        .header("x-posthuman-signature", sig)
        .body(Body::from(body))
        .unwrap();
    env.call(req).await
}
