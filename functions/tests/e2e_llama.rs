//! The Llama family through the product (issue 15), on the embedded default with the real
//! worker: a tiny random Llama is published (its card names the family and its parameter
//! count, quotes price its shape), trained into a derived Llama with lineage and reward,
//! then inferred and evaluated on; and a `model_type` the worker cannot run is refused at
//! publish with a 400 naming the supported families.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use alloy::primitives::U256;
use axum::http::StatusCode;
use harness::*;
use posthuman_functions::queue::WorkerCommand;
use posthuman_types::{EvalParams, InferParams, JobParams, RewardScheme, Sampling, TrainParams};

#[tokio::test]
async fn publish_train_infer_evaluate_a_llama() {
    let Some(worker) = worker_or_skip("e2e_llama") else { return };
    let files = tiny_llama_with_worker(&worker, &corpus(), 7);
    let mut env = env(WorkerCommand { program: worker, args: vec![] }, |c| c.concurrency = 1).await;
    let operator = env.operator.clone();
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);

    let (st, m1) = publish(&env, &operator, &files, &scheme, "llama-pub-1").await;
    assert_eq!(st, StatusCode::CREATED, "{m1}");
    let arch = m1["architecture"].as_str().unwrap();
    assert!(arch.starts_with("llama 2L/32d/4h/2kv"), "{m1}");
    // embed + lm_head (untied) + 2 layers of q,o (32·32), k,v (16·32), 3 MLP (64·32), 2 norms
    // + the final norm.
    let vocab = m1["parameters"].as_u64().unwrap() - 2 * (2 * 1024 + 2 * 512 + 3 * 2048 + 64) - 32;
    assert_eq!(vocab % 64, 0, "{m1}");
    let m1_nft = m1["nft"].as_str().unwrap().to_string();
    let ddo = ddo_on_chain(&env, &m1_nft).await;
    assert!(ddo.to_string().contains("\"llama\""), "the DDO names the family: {ddo}");

    // A train job on it: quoted by the Llama's shape, run by the worker, derived with lineage.
    let bob = env.wallet(100).await;
    let data = corpus().into_bytes();
    let mut t = TrainParams::new(6, 3e-3, 2, 16);
    t.checkpoint_every = 2;
    t.seed = 3;
    let (st, sub) = submit_paid_train(&env, &bob, &m1, t, &data, "ltrain-1").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let train_id = sub["job_id"].as_str().unwrap().to_string();
    let done = wait_done(&env, &train_id, &mut false).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let m2_nft = done["derived_model"]["nft"].as_str().unwrap().to_string();
    let (_, m2) = env.get(&format!("/api/models/{m2_nft}")).await;
    assert_eq!(m2["parent"], m1_nft.as_str());
    assert_eq!(m2["architecture"], m1["architecture"]);
    assert_ne!(m2["weights_hash"], m1["weights_hash"]);
    let (st, res) = env.result(&train_id, &bob).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert_eq!(res["receipt"]["body"]["job_id"], train_id.as_str());
    // The derived model is stored in HF layout with the publisher's config.json unchanged.
    let root = env.dir.path().join("data/store");
    let cfg = std::fs::read(root.join(format!("jobs/{train_id}/private/config.json"))).unwrap();
    assert_eq!(cfg, files.config);
    let dt: alloy::primitives::Address =
        done["derived_model"]["datatoken"].as_str().unwrap().parse().unwrap();
    let (paid, _) = scheme.split(1).unwrap();
    assert_eq!(env.chain.balance_of(dt, bob.address()).await.unwrap(), U256::from(paid[0]));

    // Inference and evaluation on the derived Llama.
    let infer = JobParams::Infer(InferParams {
        prompts: vec!["The quick brown".into()],
        max_new_tokens: 8,
        sampling: Sampling::default(),
        stop: vec![],
        messages: vec![],
    });
    let order = env.order(&m2_nft, &infer, 0, &bob, bob.address()).await;
    let req = job_request(&m2_nft, &order, bob.address(), &infer, None, "linfer-1");
    let (st, sub) = submit(&env, &bob, &req, None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let infer_id = sub["job_id"].as_str().unwrap().to_string();
    let done = wait_done(&env, &infer_id, &mut false).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, res) = env.result(&infer_id, &bob).await;
    let c = &res["completions"][0];
    assert_eq!(c["prompt"], "The quick brown", "{res}");
    assert!(c["completion_tokens"].as_u64().unwrap() > 0, "{res}");

    let eval = JobParams::Evaluate(EvalParams {
        context_len: 32,
        stride: 16,
        max_tokens: 0,
        baseline: None,
    });
    let order = env.order(&m2_nft, &eval, data.len(), &bob, bob.address()).await;
    let req = job_request(&m2_nft, &order, bob.address(), &eval, Some(&data), "leval-1");
    let (st, sub) = submit(&env, &bob, &req, Some(&data)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let eval_id = sub["job_id"].as_str().unwrap().to_string();
    let done = wait_done(&env, &eval_id, &mut false).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, res) = env.result(&eval_id, &bob).await;
    let ppl = res["report"]["perplexity"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{res}");
    assert_eq!(res["report"]["weights_hash"], m2["weights_hash"]);
    env.emb.queue.shutdown().await;
}

#[tokio::test]
async fn an_unknown_model_type_is_refused_at_publish_naming_the_supported_families() {
    let env = env(sleeper(), |_| {}).await;
    let operator = env.operator.clone();
    let mut files = tiny_model_unrunnable(3);
    let mut cfg: serde_json::Value = serde_json::from_slice(&files.config).unwrap();
    cfg["model_type"] = "mamba".into();
    files.config = serde_json::to_vec(&cfg).unwrap();
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let (st, body) = publish(&env, &operator, &files, &scheme, "mamba-1").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let text = body.to_string();
    assert!(text.contains("mamba") && text.contains("gpt2, llama"), "{text}");
    // A Llama config over GPT-2 weights: refused for the weights, naming a missing tensor.
    let llama_cfg = serde_json::json!({
        "model_type": "llama", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 64,
    });
    files.config = serde_json::to_vec(&llama_cfg).unwrap();
    let (st, body) = publish(&env, &operator, &files, &scheme, "mix-1").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("tensor"), "{body}");
    assert_eq!(env.get("/api/models").await.1.as_array().unwrap().len(), 0);
    env.emb.queue.shutdown().await;
}
