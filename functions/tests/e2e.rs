//! End to end on the embedded default with the real worker (tiny model, few steps):
//! publish → quote → buy on the exchange → order → submit train → progress → derived model
//! with lineage → the trainer's balance of the new datatoken grew by exactly the scheme's
//! amount; infer and evaluate on the derived model; a failed job releases its order for a
//! retry; and no response body or public output contains any 32-byte run of private weights.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;
mod harness;

use std::collections::HashSet;

use alloy::primitives::{Address, U256};
use axum::http::StatusCode;
use harness::*;
use posthuman_functions::queue::WorkerCommand;
use posthuman_types::{EvalParams, InferParams, JobParams, RewardScheme, Sampling, TrainParams};

/// The tensor data of a safetensors image (the header holds only names and shapes).
fn tensor_data(st: &[u8]) -> &[u8] {
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    &st[8 + n..]
}

fn windows(bytes: &[u8]) -> HashSet<[u8; 32]> {
    bytes.windows(32).map(|w| w.try_into().unwrap()).collect()
}

#[tokio::test]
async fn publish_train_derive_reward_infer_evaluate() {
    let Some(worker) = worker_or_skip("e2e") else { return };
    let files = tiny_model_with_worker(&worker, &corpus(), 7);
    let mut env = env(WorkerCommand { program: worker, args: vec![] }, |c| c.concurrency = 1).await;
    let operator = env.operator.clone();
    let total = 1000 * WEI;
    let scheme = RewardScheme::geometric(total, 5000, 3);

    // Alice (the operator) publishes M1, under a licence M2 inherits.
    let (st, m1) = publish_licensed(&env, &operator, &files, &scheme, "pub-1", "MIT").await;
    assert_eq!(st, StatusCode::CREATED, "{m1}");
    let m1_nft = m1["nft"].as_str().unwrap().to_string();

    // Bob buys datatokens on the exchange, orders a train job and submits it.
    let bob = env.wallet(100).await;
    let data = corpus().into_bytes();
    let mut t = TrainParams::new(6, 3e-3, 2, 16);
    t.checkpoint_every = 2;
    t.seed = 3;
    // Bob names the model he is about to make (issue 14).
    t.name = Some("Bob's WikiText GPT".into());
    t.symbol = Some("BOB-WT".into());
    let (st, sub) = submit_paid_train(&env, &bob, &m1, t, &data, "train-1").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let train_id = sub["job_id"].as_str().unwrap().to_string();
    let mut saw_progress = false;
    let done = wait_done(&env, &train_id, &mut saw_progress).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(saw_progress, "progress.json was never served");

    // M2 appears with its lineage; the chain agrees.
    let m2_nft = done["derived_model"]["nft"].as_str().unwrap().to_string();
    let m2_dt: Address = done["derived_model"]["datatoken"].as_str().unwrap().parse().unwrap();
    let (st, m2) = env.get(&format!("/api/models/{m2_nft}")).await;
    assert_eq!(st, StatusCode::OK, "{m2}");
    assert_eq!(m2["parent"], m1_nft.as_str());
    assert_eq!(m2["lineage"], serde_json::json!([m1_nft]));
    assert_eq!(m2["children"], serde_json::json!([]));
    let (_, m1_view) = env.get(&format!("/api/models/{m1_nft}")).await;
    assert_eq!(m1_view["children"], serde_json::json!([m2_nft]), "M1 names M2 as derived");
    assert_eq!(m2["trainer"], format!("{:#x}", bob.address()));
    assert_eq!(
        (m2["name"].as_str(), m2["symbol"].as_str()),
        (Some("Bob's WikiText GPT"), Some("BOB-WT"))
    );
    let m2_token = posthuman_chain::bindings::ERC20Template::new(m2_dt, env.chain.provider());
    assert_eq!(m2_token.symbol().call().await.unwrap(), "BOB-WT", "the chain names it as asked");
    assert_eq!(m2_token.name().call().await.unwrap(), "Bob's WikiText GPT");
    assert!(m2["exchange_id"].is_null() && m2["price"].is_null(), "not on sale yet: {m2}");
    assert_eq!(m2["source_job"], train_id.as_str());
    assert_eq!((m1["license"].as_str(), m2["license"].as_str()), (Some("MIT"), Some("MIT")));
    let lineage = env.chain.lineage(m2_nft.parse().unwrap()).await.unwrap();
    assert_eq!(lineage.len(), 2);
    assert_eq!(format!("{:#x}", lineage[1].nft), m1_nft);
    assert_eq!(lineage[0].weights_hash.to_hex(), m2["weights_hash"].as_str().unwrap());

    // Bob's reward is exactly the scheme's first share; the root owner gets the rest.
    let (paid, root) = scheme.split(1).unwrap();
    assert_eq!(env.chain.balance_of(m2_dt, bob.address()).await.unwrap(), U256::from(paid[0]));
    assert_eq!(env.chain.balance_of(m2_dt, operator.address()).await.unwrap(), U256::from(root));

    // The train result: metrics and a signed receipt whose hash is committed on chain.
    let (st, res) = env.result(&train_id, &bob).await;
    assert_eq!(st, StatusCode::OK, "{res}");
    assert!(res["metrics"]["loss_curve"].as_array().is_some_and(|c| !c.is_empty()), "{res}");
    assert_eq!(res["receipt"]["body"]["job_id"], train_id.as_str());
    let commitment =
        env.chain.commitment(posthuman_receipts::job_id_hash(&train_id)).await.unwrap();
    assert_eq!(
        Some(commitment.receipt_hash.to_hex()),
        done["receipt_hash"].as_str().map(str::to_string)
    );

    // Nothing public names the plain dataset hash: anyone holding a guessed dataset could
    // confirm it against a public receipt or metrics.json.
    let plain = serde_json::to_value(sha(&data)).unwrap();
    assert_ne!(
        res["receipt"]["body"]["input_data_hash"], plain,
        "a public receipt's input_data_hash equals the plain dataset hash, so a guessed dataset is confirmed"
    );
    assert_ne!(res["metrics"]["dataset_hash"], plain, "metrics.json names the plain dataset hash");
    // Bob, who kept the salt, proves the binding.
    let salted = posthuman_receipts::salted_hash(&salt_for("train-1"), &sha(&data));
    assert_eq!(res["receipt"]["body"]["input_data_hash"], serde_json::to_value(salted).unwrap());
    assert_eq!(res["metrics"]["dataset_hash"], serde_json::to_value(salted).unwrap());

    // A second delivery of the completion changes nothing (exactly once).
    let again = posthuman_functions::queue::JobDone {
        job_id: train_id.clone(),
        state: posthuman_functions::queue::QueueState::Succeeded,
    };
    posthuman_functions::handlers::complete::on_job_done(&env.emb.deps, &again).await.unwrap();
    assert_eq!(env.chain.balance_of(m2_dt, bob.address()).await.unwrap(), U256::from(paid[0]));
    assert_eq!(env.get("/api/models").await.1.as_array().unwrap().len(), 2);
    assert_eq!(env.get(&format!("/api/models/{m2_nft}")).await.1["symbol"], "BOB-WT");

    // Both models are Ocean assets (issue 18): each NFT carries its DDO (set once, even
    // though the completion ran twice), the child's naming its parent.
    let d1 = ddo_on_chain(&env, &m1_nft).await;
    assert_eq!(d1["metadata"]["name"], m1["name"]);
    assert_eq!(
        d1["services"][0]["datatokenAddress"].as_str().map(str::to_lowercase),
        m1["datatoken"].as_str().map(str::to_lowercase)
    );
    let d2 = ddo_on_chain(&env, &m2_nft).await;
    let parent_nft = d2["metadata"]["additionalInformation"]["parentNft"].as_str().unwrap();
    assert_eq!(parent_nft.to_lowercase(), m1_nft);
    assert_eq!(
        d2["services"][1]["datatokenAddress"].as_str().unwrap().parse::<Address>().unwrap(),
        m2_dt
    );
    if let Some(dir) = std::env::var_os("POSTHUMAN_DDO_OUT") {
        std::fs::create_dir_all(&dir).unwrap();
        let dir = std::path::Path::new(&dir);
        std::fs::write(dir.join("api-root.json"), serde_json::to_vec_pretty(&d1).unwrap()).unwrap();
        std::fs::write(dir.join("api-derived.json"), serde_json::to_vec_pretty(&d2).unwrap())
            .unwrap();
    }

    assert_eq!(d2["metadata"]["name"], "Bob's WikiText GPT");
    // The licence M1 was published under, on both DDOs (M2 inherited it).
    assert_eq!(
        (&d1["metadata"]["license"], &d2["metadata"]["license"]),
        (&"MIT".into(), &"MIT".into())
    );

    // Bob, M2's trainer, edits its card: the catalogue and M2's DDO follow, sent by the
    // operator through the lineage contract's setChildMetaData (M2's NFT emits
    // MetadataUpdated). M1's owner may not edit Bob's model.
    let edit = serde_json::json!({"description": "not mine"});
    let (st, b) = edit_card(&env, &m2_nft, &operator, edit, "m2-x").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    // Nor may Bob change the licence M2 inherited from its root.
    let edit = serde_json::json!({"license": "Apache-2.0"});
    let (st, b) = edit_card(&env, &m2_nft, &bob, edit, "m2-l").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(b["message"].as_str().unwrap().starts_with("invalid license:"), "{b}");
    let text = "Alice's GPT fine-tuned on a WikiText-2 slice, 6 steps";
    let edit = serde_json::json!({"description": text, "tags": ["wikitext"]});
    let (st, edited) = edit_card(&env, &m2_nft, &bob, edit, "m2-e").await;
    assert_eq!(st, StatusCode::OK, "{edited}");
    assert_eq!(
        (edited["description"].as_str(), edited["name"].as_str()),
        (Some(text), Some("Bob's WikiText GPT"))
    );
    let versions = ddo_versions(&env, &m2_nft).await;
    assert_eq!(versions.len(), 2, "MetadataCreated, then one MetadataUpdated");
    let (d2e, tx) = &versions[1];
    assert_eq!(d2e["metadata"]["description"], text);
    assert_eq!(
        d2e["metadata"]["tags"],
        serde_json::json!(["posthuman", "gpt2", "compute-to-data", "derived", "wikitext"])
    );
    assert_eq!(d2e["metadata"]["created"], d2["metadata"]["created"], "created unchanged");
    assert!(d2e["metadata"]["updated"].as_str() >= d2["metadata"]["updated"].as_str());
    assert_eq!(d2e["metadata"]["additionalInformation"], d2["metadata"]["additionalInformation"]);
    assert_eq!(d2e["metadata"]["license"], "MIT", "the licence stays");
    assert_eq!(d2e["services"], d2["services"]);
    eprintln!(
        "card edit of a derived model: setChildMetaData update used {} gas",
        gas_of(&env, *tx).await
    );
    if let Some(dir) = std::env::var_os("POSTHUMAN_DDO_OUT") {
        let path = std::path::Path::new(&dir).join("api-derived-edited.json");
        std::fs::write(path, serde_json::to_vec_pretty(d2e).unwrap()).unwrap();
    }

    // Bob puts 5 of his M2 datatokens on sale at 2 OCEAN on Ocean's exchange (with his own
    // key, on chain); the API's card follows the chain; Derek buys through the exchange.
    let m2_addr: Address = m2_nft.parse().unwrap();
    let sale = env
        .chain
        .open_sale(bob.address(), m2_addr, U256::from(2 * WEI), U256::from(5 * WEI))
        .await
        .unwrap();
    let sync = axum::http::Request::post(format!("/api/models/{m2_nft}/sale"))
        .body(axum::body::Body::empty())
        .unwrap();
    let (st, on_sale) = env.call(sync).await;
    assert_eq!(st, StatusCode::OK, "{on_sale}");
    assert_eq!(on_sale["price"], (2 * WEI).to_string());
    assert_eq!(
        on_sale["exchange_id"],
        serde_json::to_value(posthuman_types::Hash32(sale.exchange_id.0)).unwrap()
    );
    assert_eq!(env.get(&format!("/api/models/{m2_nft}")).await.1["price"], on_sale["price"]);
    let derek = env.wallet(100).await;
    env.chain.buy(derek.address(), sale.exchange_id, U256::from(WEI)).await.unwrap();
    assert_eq!(env.chain.balance_of(m2_dt, derek.address()).await.unwrap(), U256::from(WEI));
    // A published model's exchange is not the trainer's to sync.
    let sync = axum::http::Request::post(format!("/api/models/{m1_nft}/sale"))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(env.call(sync).await.0, StatusCode::CONFLICT);

    // Bob pays M2 datatokens (his reward) for inference on M2.
    let infer = JobParams::Infer(InferParams {
        prompts: vec!["The quick brown".into()],
        max_new_tokens: 8,
        sampling: Sampling::default(),
        stop: vec![],
        messages: vec![],
    });
    let order = env.order(&m2_nft, &infer, 0, &bob, bob.address()).await;
    let req = job_request(&m2_nft, &order, bob.address(), &infer, None, "infer-1");
    let (st, sub) = submit(&env, &bob, &req, None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let infer_id = sub["job_id"].as_str().unwrap().to_string();
    let done = wait_done(&env, &infer_id, &mut saw_progress).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, res) = env.result(&infer_id, &bob).await;
    assert!(res["completions"].to_string().contains("The quick brown"), "{res}");
    let plain =
        serde_json::to_value(posthuman_receipts::prompts_hash(&["The quick brown"])).unwrap();
    assert_ne!(
        res["receipt"]["body"]["input_data_hash"], plain,
        "a public receipt's input_data_hash equals the plain prompts hash, so guessed prompts are confirmed"
    );
    let salted = posthuman_receipts::salted_hash(
        &salt_for("infer-1"),
        &posthuman_receipts::prompts_hash(&["The quick brown"]),
    );
    assert_eq!(res["receipt"]["body"]["input_data_hash"], serde_json::to_value(salted).unwrap());

    // An evaluate job that the worker refuses (dataset shorter than one window) fails with
    // its reason. The failure is the buyer's input, so the order is consumed (the same request
    // would fail the same way, and the compute was spent): it pays for no retry, and a good
    // run needs a new order. (A failure that is not the buyer's releases it: completion.rs.)
    let eval = JobParams::Evaluate(EvalParams {
        context_len: 16,
        stride: 8,
        max_tokens: 0,
        baseline: None,
    });
    // Quoted for the longer dataset: the fee pays for any dataset up to it.
    let order = env.order(&m2_nft, &eval, corpus().len(), &bob, bob.address()).await;
    let tiny = b"x".to_vec();
    let mut req: serde_json::Value = serde_json::from_slice(&job_request(
        &m2_nft,
        &order,
        bob.address(),
        &eval,
        Some(&tiny),
        "eval-1",
    ))
    .unwrap();
    // The request names the length the fee was quoted for (the fee's binding includes it).
    req["quoted_dataset_bytes"] = corpus().len().into();
    let req = serde_json::to_vec(&req).unwrap();
    let (st, sub) = submit(&env, &bob, &req, Some(&tiny)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let failed = wait_done(&env, sub["job_id"].as_str().unwrap(), &mut saw_progress).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["order_reusable"], false, "{failed}");
    assert_eq!(failed["exit_code"], posthuman_types::exit::BAD_DATASET, "{failed}");
    assert!(!failed["reason"].as_str().unwrap().is_empty());
    let eval_data = corpus().into_bytes();
    let req = job_request(&m2_nft, &order, bob.address(), &eval, Some(&eval_data), "eval-2");
    let (st, sub) = submit(&env, &bob, &req, Some(&eval_data)).await;
    assert_eq!(st, StatusCode::CONFLICT, "a consumed order paid again: {sub}");
    let order = env.order(&m2_nft, &eval, eval_data.len(), &bob, bob.address()).await;
    let req = job_request(&m2_nft, &order, bob.address(), &eval, Some(&eval_data), "eval-3");
    let (st, sub) = submit(&env, &bob, &req, Some(&eval_data)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "a new order: {sub}");
    let eval_id = sub["job_id"].as_str().unwrap().to_string();
    let done = wait_done(&env, &eval_id, &mut saw_progress).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, res) = env.result(&eval_id, &bob).await;
    let ppl = res["report"]["perplexity"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{res}");
    assert_eq!(res["report"]["weights_hash"], m2["weights_hash"]);
    let (_, m2) = env.get(&format!("/api/models/{m2_nft}")).await;
    assert_eq!(m2["evaluations"][0]["perplexity"].as_f64(), Some(ppl));
    assert_eq!(m2["jobs"], serde_json::json!({"train": 0, "infer": 1, "evaluate": 2}));

    // No 32-byte run of private weights (M1's upload, M2's trained weights) appears in any
    // response body or public output.
    let root = env.dir.path().join("data/store");
    let m2_weights =
        std::fs::read(root.join(format!("jobs/{train_id}/private/model.safetensors"))).unwrap();
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    for b in env.bodies.lock().unwrap().iter() {
        seen.extend(windows(b));
    }
    let mut public = 0;
    for entry in walk(&root.join("jobs")) {
        if entry.components().any(|c| c.as_os_str() == "public") {
            seen.extend(windows(&std::fs::read(&entry).unwrap()));
            public += 1;
        }
    }
    assert!(public >= 6, "public outputs scanned: {public}");
    for w in [tensor_data(&files.weights), tensor_data(&m2_weights)] {
        assert!(w.len() > 10_000);
        assert!(!w.windows(32).any(|x| seen.contains(x)), "a run of private weights leaked");
    }
    env.emb.queue.shutdown().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
