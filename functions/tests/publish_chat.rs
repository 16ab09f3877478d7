//! Publishing a model with the optional HF files that say how it is prompted (issue 15):
//! `tokenizer_config.json` (chat template, special tokens) and `generation_config.json`
//! (stop ids), and a standalone `chat_template.jinja`, are checked with the worker's parser, refused naming the part, and stored
//! beside the model under its `_COMPLETE` manifest so the worker loads them.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod harness;

use axum::http::StatusCode;
use harness::*;
use posthuman_types::RewardScheme;

#[tokio::test]
async fn chat_configs_are_validated_and_stored_beside_the_model() {
    let env = env(sleeper(), |_| {}).await;
    let operator = env.operator.clone();
    let files = tiny_model_unrunnable(3);
    let scheme = RewardScheme::geometric(1000 * WEI, 5000, 3);
    let tc = br#"{"eos_token": {"content": "a"}, "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}"#;
    let gc = br#"{"eos_token_id": [0]}"#;

    // Wrong types are refused, naming the part; nothing is published.
    let bad: [(&str, &[u8]); 8] = [
        ("chat_template", b"  "),
        // Templates that do not parse (an unclosed block), from either place they live.
        ("chat_template", b"{% for m in messages %}{{ m.content }}"),
        ("tokenizer_config", br#"{"chat_template": "{{ messages[0].content "}"#),
        ("generation_config", br#"{"eos_token_id": "0"}"#),
        ("tokenizer_config", br#"{"add_bos_token": 1}"#),
        ("tokenizer_config", b"not json"),
        // Tokens the tokenizer (one word, "a") does not have: they could never stop anything.
        ("tokenizer_config", br#"{"eos_token": "</s>"}"#),
        ("generation_config", br#"{"eos_token_id": [0, 1]}"#),
    ];
    for (i, (part, body)) in bad.into_iter().enumerate() {
        let nonce = format!("bad-{i}");
        let (st, body) =
            publish_with(&env, &operator, &files, &scheme, &nonce, &[(part, body)]).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("invalid {part}:")), "{body}");
    }

    let ct = b"{{ messages[0].content }}";
    let extra: [(&str, &[u8]); 3] =
        [("tokenizer_config", tc), ("generation_config", gc), ("chat_template", ct)];
    let (st, model) = publish_with(&env, &operator, &files, &scheme, "ok", &extra).await;
    assert_eq!(st, StatusCode::CREATED, "{model}");
    let models = env.dir.path().join("data/store/models");
    let dirs: Vec<_> = std::fs::read_dir(&models).unwrap().map(|d| d.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = &dirs[0];
    assert_eq!(std::fs::read(dir.join("tokenizer_config.json")).unwrap(), tc);
    assert_eq!(std::fs::read(dir.join("generation_config.json")).unwrap(), gc);
    assert_eq!(std::fs::read(dir.join("chat_template.jinja")).unwrap(), ct);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("_COMPLETE")).unwrap()).unwrap();
    assert_eq!(manifest["files"]["tokenizer_config.json"], serde_json::json!(sha(tc)));
    assert_eq!(manifest["files"]["generation_config.json"], serde_json::json!(sha(gc)));
    assert_eq!(manifest["files"]["chat_template.jinja"], serde_json::json!(sha(ct)));
    env.emb.queue.shutdown().await;
}
