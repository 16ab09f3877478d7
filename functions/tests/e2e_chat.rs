//! A chat through the whole product (issue 15): a Llama published with its
//! `tokenizer_config.json` (chat template) and `generation_config.json` (stop ids), an infer
//! job ordered and paid with `messages`, rendered by the real worker with the model's
//! template; the receipt binds the messages only under the buyer's salt and never names them.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod harness;

use axum::http::StatusCode;
use harness::*;
use posthuman_functions::queue::WorkerCommand;
use posthuman_types::{ChatMessage, InferParams, JobParams, RewardScheme, Sampling};

#[tokio::test]
async fn a_chat_job_renders_the_published_template_and_keeps_the_messages_private() {
    let Some(worker) = worker_or_skip("e2e_chat") else { return };
    let files = tiny_llama_with_worker(&worker, &corpus(), 7);
    let mut env = env(WorkerCommand { program: worker, args: vec![] }, |c| c.concurrency = 1).await;
    let operator = env.operator.clone();
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let tc = serde_json::to_vec(&serde_json::json!({
        "eos_token": "<|endoftext|>",
        "chat_template": "{% for m in messages %}<{{ m.role }}> {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
    }))
    .unwrap();
    let gc = br#"{"eos_token_id": [0]}"#;
    let extra: [(&str, &[u8]); 2] = [("tokenizer_config", &tc), ("generation_config", gc)];
    let (st, m1) = publish_with(&env, &operator, &files, &scheme, "chat-pub", &extra).await;
    assert_eq!(st, StatusCode::CREATED, "{m1}");
    let nft = m1["nft"].as_str().unwrap().to_string();

    let bob = env.wallet(100).await;
    env.buy(&bob, &m1, 2).await;
    let messages =
        vec![ChatMessage::new("system", "be brief"), ChatMessage::new("user", "the cat")];
    let infer = JobParams::Infer(InferParams {
        prompts: vec![],
        max_new_tokens: 6,
        sampling: Sampling::default(),
        stop: vec![],
        messages: messages.clone(),
    });
    let order = env.order(&nft, &infer, 0, &bob, bob.address()).await;
    let req = job_request(&nft, &order, bob.address(), &infer, None, "chat-1");
    let (st, sub) = submit(&env, &bob, &req, None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{sub}");
    let id = sub["job_id"].as_str().unwrap().to_string();
    let done = wait_done(&env, &id, &mut false).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, res) = env.result(&id, &bob).await;
    assert_eq!(res["completions"].as_array().unwrap().len(), 1, "{res}");
    assert_eq!(
        res["completions"][0]["prompt"], "<system> be brief\n<user> the cat\n<assistant>",
        "{res}"
    );
    let salted = posthuman_receipts::salted_hash(
        &salt_for("chat-1"),
        &posthuman_receipts::messages_hash(&messages),
    );
    assert_eq!(res["receipt"]["body"]["input_data_hash"], serde_json::to_value(salted).unwrap());
    assert!(!res["receipt"].to_string().contains("the cat"), "{res}");
    env.emb.queue.shutdown().await;
}
