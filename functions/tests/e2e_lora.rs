//! LoRA derivations through the product (issue 16), on the embedded default with the real
//! worker: a LoRA train job is quoted below the same full fine-tune, LoRA settings that do not
//! fit the model are refused at the quote (before payment) naming the field, and two paid
//! LoRA jobs make M2 = M1 + an adapter and M3 = M2 + a second adapter, each published with
//! lineage, reward and a card saying what it is; M3 then runs inference. And an owner
//! publishes base weights with a PEFT adapter: the listed model is the merge.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use alloy::primitives::U256;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use harness::*;
use posthuman_functions::queue::WorkerCommand;
use posthuman_types::{Hash32, JobParams, LoraParams, RewardScheme, TrainParams};

async fn quote(
    env: &Env,
    nft: &str,
    params: &JobParams,
    bytes: usize,
) -> (StatusCode, serde_json::Value) {
    let body = serde_json::json!({ "params": params, "dataset_bytes": bytes });
    let req = Request::post(format!("/api/models/{nft}/quote"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    env.call(req).await
}

fn lora_train(r: u32, targets: &[&str]) -> TrainParams {
    let mut t = TrainParams::new(6, 3e-2, 2, 16);
    t.checkpoint_every = 2;
    t.seed = 3;
    t.lora = Some(LoraParams::new(r, targets));
    t
}

#[tokio::test]
async fn lora_derivations_are_quoted_published_and_composed() {
    let Some(worker) = worker_or_skip("e2e_lora") else { return };
    let files = tiny_model_with_worker(&worker, &corpus(), 7);
    let mut env = env(WorkerCommand { program: worker, args: vec![] }, |c| c.concurrency = 1).await;
    let operator = env.operator.clone();
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let (st, m1) = publish(&env, &operator, &files, &scheme, "lora-pub-1").await;
    assert_eq!(st, StatusCode::CREATED, "{m1}");
    let m1_nft = m1["nft"].as_str().unwrap().to_string();
    let data = corpus().into_bytes();

    // The quote prices LoRA by its own compute: below the same job as a full fine-tune.
    let lora = JobParams::Train(lora_train(4, &["c_attn"]));
    let mut full_t = lora_train(4, &["c_attn"]);
    full_t.lora = None;
    let (st, ql) = quote(&env, &m1_nft, &lora, data.len()).await;
    assert_eq!(st, StatusCode::OK, "{ql}");
    let (_, qf) = quote(&env, &m1_nft, &JobParams::Train(full_t), data.len()).await;
    let flops = |q: &serde_json::Value| q["estimate"]["flops"].as_u64().unwrap();
    let ckpt = |q: &serde_json::Value| q["estimate"]["checkpoint_bytes"].as_u64().unwrap();
    assert!(flops(&ql) < flops(&qf), "{ql} vs {qf}");
    // The quote bounds the adapter by every layer LoRA could target (r × Σ(in + out)).
    assert!(ckpt(&ql) * 5 < ckpt(&qf), "{ql} vs {qf}");

    // Settings that do not fit a GPT-2 are refused before anything is paid, naming the field.
    for bad in [lora_train(4, &["q_proj"]), lora_train(200, &["c_attn"])] {
        let (st, body) = quote(&env, &m1_nft, &JobParams::Train(bad), data.len()).await;
        assert!(st.is_client_error(), "{st} {body}");
        assert!(body.to_string().contains("lora"), "{body}");
    }

    // Bob: M2 = M1 + his adapter.
    let bob = env.wallet(100).await;
    let (st, sub) =
        submit_paid_train(&env, &bob, &m1, lora_train(4, &["c_attn"]), &data, "lora-1").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let id2 = sub["job_id"].as_str().unwrap().to_string();
    let done = wait_done(&env, &id2, &mut false).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let m2_nft = done["derived_model"]["nft"].as_str().unwrap().to_string();
    let (_, m2) = env.get(&format!("/api/models/{m2_nft}")).await;
    assert_eq!(m2["parent"], m1_nft.as_str());
    // Unnamed by Bob: the parent's name and symbol, counting its derivations (issue 14).
    assert_eq!(m2["name"], format!("{} · LoRA fine-tune 1", m1["name"].as_str().unwrap()));
    assert_eq!(m2["symbol"], format!("{}-FT1", m1["symbol"].as_str().unwrap()));
    assert_eq!(m2["lora"]["r"], 4, "{m2}");
    assert_eq!(m2["lora"]["target_modules"][0], "c_attn", "{m2}");
    let dt: alloy::primitives::Address =
        done["derived_model"]["datatoken"].as_str().unwrap().parse().unwrap();
    let (paid, _) = scheme.split(1).unwrap();
    assert_eq!(env.chain.balance_of(dt, bob.address()).await.unwrap(), U256::from(paid[0]));
    // Private storage: the PEFT adapter beside the merged weights; the result (the buyer's)
    // names the adapter's hash, never its values.
    let root = env.dir.path().join("data/store");
    let private = root.join(format!("jobs/{id2}/private"));
    assert!(private.join("adapter/adapter_model.safetensors").is_file());
    assert!(private.join("adapter/adapter_config.json").is_file());
    let (st, res) = env.result(&id2, &bob).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(res["metrics"]["lora"]["adapter_hash"], m2["lora"]["adapter_hash"], "{res}");
    assert_eq!(res["receipt"]["body"]["output_weights_hash"], m2["weights_hash"]);

    // M3 = M2 + a second adapter on other layers, paid with the M2 datatokens Bob was
    // rewarded (a derived model has no exchange until its owner opens one).
    let t3 = JobParams::Train(lora_train(2, &["c_proj", "c_fc"]));
    let order = env.order(&m2_nft, &t3, data.len(), &bob, bob.address()).await;
    let req = job_request(&m2_nft, &order, bob.address(), &t3, Some(&data), "lora-2");
    let (st, sub) = submit(&env, &bob, &req, Some(&data)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let id3 = sub["job_id"].as_str().unwrap().to_string();
    let done = wait_done(&env, &id3, &mut false).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let m3_nft = done["derived_model"]["nft"].as_str().unwrap().to_string();
    let (_, m3) = env.get(&format!("/api/models/{m3_nft}")).await;
    assert_eq!(m3["parent"], m2_nft.as_str());
    assert_eq!(m3["lora"]["r"], 2, "{m3}");
    assert_ne!(m3["weights_hash"], m2["weights_hash"]);

    // Inference on the composed model.
    let infer = common::infer_params();
    let order = env.order(&m3_nft, &infer, 0, &bob, bob.address()).await;
    let req = job_request(&m3_nft, &order, bob.address(), &infer, None, "lora-infer");
    let (st, sub) = submit(&env, &bob, &req, None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let done = wait_done(&env, sub["job_id"].as_str().unwrap(), &mut false).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    env.emb.queue.shutdown().await;
}

/// A PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`, PEFT's names) with
/// non-zero A and B for `cfg`'s GPT-2, over the given targets.
fn peft_adapter(
    cfg: &posthuman_gpt2::Config,
    r: usize,
    targets: &[&str],
    seed: u64,
) -> (Vec<u8>, Vec<u8>) {
    use posthuman_gpt2::candle_core::{Device, Tensor};
    use posthuman_gpt2::lora::{Family, LoraAdapter, LoraBase, LoraConfig};
    let base = LoraBase::gpt2(cfg);
    let lc = LoraConfig::new(Family::Gpt2, r, 2.0 * r as f64, 0.0, targets);
    let init = LoraAdapter::init(lc.clone(), &base, seed).unwrap();
    let mut rng = posthuman_gpt2::SeededRng::new(seed + 1);
    let tensors = init
        .tensors()
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let n = t.elem_count();
            let v: Vec<f32> = (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * 0.2).collect();
            (name, Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap())
        })
        .collect();
    let a = LoraAdapter::from_tensors(lc, &base, tensors).unwrap();
    (a.config().to_json().unwrap().into_bytes(), a.safetensors_bytes().unwrap())
}

async fn publish_with_adapter(
    env: &Env,
    files: &ModelFiles,
    adapter: Option<(&[u8], &[u8])>,
    signed_sha: Option<Hash32>,
    nonce: &str,
) -> (StatusCode, serde_json::Value) {
    let publisher = env.operator.clone();
    let mut req = serde_json::json!({
        "name": "Tiny GPT + adapter", "symbol": "TADP", "description": "base + PEFT adapter",
        "owner": format!("{:#x}", publisher.address()),
        "price": (2 * WEI).to_string(),
        "reward_scheme": RewardScheme::geometric(1000 * WEI, 5000, 3),
        "weights_sha256": sha(&files.weights),
        "nonce": nonce, "expires_at": now() + 600,
    });
    if let Some(h) = signed_sha {
        req["adapter_sha256"] = serde_json::to_value(h).unwrap();
    }
    let req = serde_json::to_vec(&req).unwrap();
    let sig = sign_typed(env, &publisher, posthuman_receipts::request::PUBLISH_MODEL, &req);
    let mut parts: Vec<(&str, &[u8])> = vec![
        ("request", &req),
        ("signature", sig.as_bytes()),
        ("config", &files.config),
        ("weights", &files.weights),
        ("tokenizer", &files.tokenizer),
    ];
    if let Some((c, w)) = adapter {
        parts.push(("adapter_config", c));
        parts.push(("adapter_weights", w));
    }
    env.post_multipart("/api/models", &parts).await
}

/// Issue 16: an owner publishes base weights plus a PEFT adapter; the listed model is the
/// merge (its identity the merged weights' hash, its card naming the adapter), and the worker
/// runs it. An adapter for another base, a target the family has not, a file that is not
/// PEFT's or not the one signed for: a 422 naming the part, and nothing listed.
#[tokio::test]
async fn an_owner_publishes_base_weights_with_a_peft_adapter() {
    let Some(worker) = worker_or_skip("e2e_lora") else { return };
    let files = tiny_model_with_worker(&worker, &corpus(), 7);
    let mut env = env(WorkerCommand { program: worker, args: vec![] }, |c| c.concurrency = 1).await;
    let text = std::str::from_utf8(&files.config).unwrap();
    let cfg = posthuman_gpt2::Config::from_json(text).unwrap();
    let (ac, aw) = peft_adapter(&cfg, 4, &["c_attn", "c_fc"], 11);

    // The merge the API must list, computed here with the model crate.
    let any = posthuman_gpt2::family::AnyConfig::from_json(text).unwrap();
    let base =
        posthuman_gpt2::family::AnyWeights::from_safetensors_bytes(&files.weights, &any).unwrap();
    let adapter = posthuman_gpt2::lora::LoraAdapter::from_bytes(
        std::str::from_utf8(&ac).unwrap(),
        &aw,
        &any.lora_base(),
    )
    .unwrap();
    let merged = base.merged(&any, &adapter).unwrap().hash().unwrap();
    assert_ne!(merged, base.hash().unwrap());

    // Refusals first: nothing may be listed by any of them.
    let (other_c, other_w) =
        peft_adapter(&posthuman_gpt2::Config::new(cfg.vocab_size, 64, 48, 2, 2), 4, &["c_attn"], 3);
    let unknown = String::from_utf8(ac.clone()).unwrap().replace("\"c_fc\"", "\"q_proj\"");
    let garbage = b"not a safetensors file".to_vec();
    // (what, adapter_config, adapter_weights, signed sha, the field the 422 names)
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], Option<Hash32>, &'a str);
    let cases: Vec<Case> = vec![
        ("another base's adapter", &other_c, &other_w, Some(sha(&other_w)), "adapter"),
        ("an unknown target", unknown.as_bytes(), &aw, Some(sha(&aw)), "adapter"),
        ("not PEFT", &ac, &garbage, Some(sha(&garbage)), "adapter"),
        ("not the signed adapter", &ac, &aw, Some(sha(b"other")), "adapter_sha256"),
        ("unsigned", &ac, &aw, None, "adapter_sha256"),
    ];
    for (i, (what, c, w, h, field)) in cases.into_iter().enumerate() {
        let (st, body) =
            publish_with_adapter(&env, &files, Some((c, w)), h, &format!("bad-{i}")).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
        assert!(body.to_string().contains(field), "{what}: {body}");
    }
    let (_, list) = env.get("/api/models").await;
    assert_eq!(list.as_array().unwrap().len(), 0, "nothing listed: {list}");

    let (st, m) =
        publish_with_adapter(&env, &files, Some((&ac, &aw)), Some(sha(&aw)), "good").await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    assert_eq!(m["weights_hash"], serde_json::to_value(merged).unwrap(), "{m}");
    assert_eq!(m["lora"]["r"], 4, "{m}");
    assert_eq!(m["lora"]["adapter_hash"], serde_json::to_value(adapter.hash().unwrap()).unwrap());
    let nft = m["nft"].as_str().unwrap().to_string();

    // The worker runs the merge (its manifest and hash check on load pass).
    let bob = env.wallet(100).await;
    env.buy(&bob, &m, 3).await;
    let infer = common::infer_params();
    let order = env.order(&nft, &infer, 0, &bob, bob.address()).await;
    let req = job_request(&nft, &order, bob.address(), &infer, None, "adp-infer");
    let (st, sub) = submit(&env, &bob, &req, None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let done = wait_done(&env, sub["job_id"].as_str().unwrap(), &mut false).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    env.emb.queue.shutdown().await;
}

/// Issue 16: an adapter saved by PyTorch's `peft` (the committed fixture: a tiny GPT-2 and
/// the adapter peft trained on it) is published over its base, and the worker's evaluation
/// of the merged model gives the perplexity PyTorch + peft compute from their own logits on
/// the same tokens (within 1e-4 relative).
#[tokio::test]
async fn a_peft_saved_adapter_evaluates_as_in_pytorch() {
    use posthuman_gpt2::candle_core::{D, DType, Device};
    let Some(worker) = worker_or_skip("e2e_lora") else { return };
    let fx = manifest_dir().join("../crates/gpt2/tests/fixtures/lora/gpt2");
    let read = |p: &str| std::fs::read(fx.join(p)).unwrap();
    // The fixture's vocabulary is 64 ids (63 is its eos): one word per id, so a text of
    // words tokenizes to exactly the ids PyTorch scored.
    let mut vocab = serde_json::Map::new();
    for i in 0..63 {
        vocab.insert(format!("t{i}"), i.into());
    }
    vocab.insert("<|endoftext|>".into(), 63.into());
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 63, "content": "<|endoftext|>", "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|endoftext|>"},
    });
    let files = ModelFiles {
        config: read("base/config.json"),
        weights: read("base/model.safetensors"),
        tokenizer: serde_json::to_vec(&tokenizer).unwrap(),
    };
    let (ac, aw) = (
        read("adapter_final/adapter_config.json"),
        read("adapter_final/adapter_model.safetensors"),
    );
    let mut env = env(WorkerCommand { program: worker, args: vec![] }, |c| c.concurrency = 1).await;
    let (st, m) =
        publish_with_adapter(&env, &files, Some((&ac, &aw)), Some(sha(&aw)), "peft").await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    let nft = m["nft"].as_str().unwrap().to_string();

    // PyTorch + peft's logits of the merged model on the fixture's first sequence.
    let t = posthuman_gpt2::candle_core::safetensors::load(
        fx.join("expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ids: Vec<u32> = t["inputs"]
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let logp = posthuman_gpt2::candle_nn::ops::log_softmax(
        &t["logits_merged"].get(0).unwrap().to_dtype(DType::F64).unwrap(),
        D::Minus1,
    )
    .unwrap()
    .to_vec2::<f64>()
    .unwrap();
    let nll: f64 = (0..ids.len() - 1).map(|j| -logp[j][ids[j + 1] as usize]).sum();
    let reference = (nll / (ids.len() - 1) as f64).exp();

    let data: Vec<u8> = ids
        .iter()
        .map(|i| if *i == 63 { "<|endoftext|>".into() } else { format!("t{i}") })
        .collect::<Vec<_>>()
        .join(" ")
        .into_bytes();
    let bob = env.wallet(100).await;
    env.buy(&bob, &m, 3).await;
    let eval = JobParams::Evaluate(posthuman_types::EvalParams {
        context_len: 16,
        stride: 16,
        max_tokens: ids.len() as u64,
        baseline: None,
    });
    let order = env.order(&nft, &eval, data.len(), &bob, bob.address()).await;
    let req = job_request(&nft, &order, bob.address(), &eval, Some(&data), "peft-eval");
    let (st, sub) = submit(&env, &bob, &req, Some(&data)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let id = sub["job_id"].as_str().unwrap().to_string();
    let done = wait_done(&env, &id, &mut false).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, res) = env.result(&id, &bob).await;
    let ppl = res["report"]["perplexity"].as_f64().unwrap();
    let rel = (ppl - reference).abs() / reference;
    assert!(rel < 1e-4, "worker {ppl} vs PyTorch + peft {reference} (rel {rel:.2e})");
    eprintln!(
        "peft adapter: worker perplexity {ppl:.6}, PyTorch + peft {reference:.6} (rel {rel:.1e})"
    );
    env.emb.queue.shutdown().await;
}

/// The package's directory as cargo hands it to the running test, not the one compiled in:
/// a build cache shared by two checkouts can run a test binary built in the other one.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from)
}
