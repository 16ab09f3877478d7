//! Prompting a model as its HF files say (issue 15): stop ids from `generation_config.json`
//! (a list) and `tokenizer_config.json`, BOS as `tokenizer.json` and `add_bos_token` define
//! it (never doubled), the optional configs carried to a derived model, and chat templates
//! rendered for `messages`, with their exit codes when a model cannot take them.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use posthuman_store::ObjectStore;
use posthuman_types::{JobParams, StopReason};
use posthuman_worker::model_io;
use posthuman_worker::setup::{LlamaShape, init_llama, save_new_model};
use posthuman_worker::tokenizer::Tok;
use posthuman_worker::{JobOutcome, run_job};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

const CHAT: &str = "models/chat";

/// The trained test tokenizer plus Llama/ChatML special tokens; with `bos_processor` its
/// post-processor prepends `<s>` as Llama's `tokenizer.json` does.
fn tokenizer_json(bos_processor: bool) -> String {
    let mut t: Tokenizer = tokenizer().to_json().unwrap().parse().unwrap();
    let specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"];
    t.add_special_tokens(&specials.map(|s| AddedToken::from(s, true)));
    if bos_processor {
        let bos = t.token_to_id("<s>").unwrap();
        let p = TemplateProcessing::builder()
            .try_single("<s> $A")
            .unwrap()
            .special_tokens(vec![("<s>", bos)])
            .build()
            .unwrap();
        t.with_post_processor(Some(p));
    }
    t.to_string(false).unwrap()
}

fn id(tok: &Tok, s: &str) -> u32 {
    tok.encode_rendered(s).unwrap()[0]
}

/// SmolLM2-Instruct's published template (ChatML with a default system message).
const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn tokenizer_config(template: Option<&str>, add_bos: Option<bool>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
        "eos_token": "<|im_end|>",
        "model_max_length": 64,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(t) = template {
        v["chat_template"] = t.into();
    }
    if let Some(b) = add_bos {
        v["add_bos_token"] = b.into();
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

fn shape() -> LlamaShape {
    LlamaShape {
        layers: 2,
        hidden: 32,
        intermediate: 64,
        heads: 4,
        kv_heads: 2,
        // Room for SmolLM2's default system message (~90 tokens with this small vocabulary).
        context: 128,
        tie_word_embeddings: false,
    }
}

/// The fixture store plus a tiny Llama at `prefix` whose tokenizer is `tok`.
async fn save_llama(store: &dyn ObjectStore, prefix: &str, tok: &Tok) {
    let (cfg, w) = init_llama(tok, &shape(), 7).unwrap();
    save_new_model(store, prefix, &cfg, &w, tok).await.unwrap();
}

fn infer_spec(id: &str, prefix: &str, p: posthuman_types::InferParams) -> posthuman_types::JobSpec {
    let mut s = spec(id, JobParams::Infer(p));
    s.model_prefix = prefix.into();
    s.dataset_key = None;
    s
}

async fn infer(
    store: &dyn ObjectStore,
    s: &posthuman_types::JobSpec,
) -> Vec<posthuman_types::Completion> {
    match run_job(store, &wc(), &spec_bytes(s)).await.unwrap() {
        JobOutcome::Inferred(c) => c,
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[test]
fn bos_follows_tokenizer_json_and_add_bos_token_without_doubling() {
    let with_proc = tokenizer_json(true);
    let without = tokenizer_json(false);
    let tc = |b| tokenizer_config(None, b);
    // tokenizer.json's post-processor adds BOS: once, whatever add_bos_token says.
    for add in [None, Some(true)] {
        let t = Tok::with_configs(with_proc.as_bytes(), Some(&tc(add)), None).unwrap();
        let bos = id(&t, "<s>");
        let ids = t.encode_prompt("the cat").unwrap();
        assert_eq!(ids[0], bos, "{add:?}");
        assert_eq!(ids.iter().filter(|&&i| i == bos).count(), 1, "{add:?}: {ids:?}");
        // A prompt that itself starts with the BOS text still gets one BOS from the
        // tokenizer plus the buyer's own: the buyer's text is not rewritten.
        assert_eq!(&ids[1..], t.encode_rendered("the cat").unwrap().as_slice());
    }
    // No post-processor BOS: add_bos_token true prepends it, otherwise there is none.
    let t = Tok::with_configs(without.as_bytes(), Some(&tc(Some(true))), None).unwrap();
    let bos = id(&t, "<s>");
    let ids = t.encode_prompt("the cat").unwrap();
    assert_eq!(ids[0], bos);
    assert_eq!(&ids[1..], t.encode_rendered("the cat").unwrap().as_slice());
    for add in [None, Some(false)] {
        let t = Tok::with_configs(without.as_bytes(), Some(&tc(add)), None).unwrap();
        assert!(!t.encode_prompt("the cat").unwrap().contains(&bos), "{add:?}");
    }
    // The GPT-2 tokenizers of every existing model encode prompts exactly as before.
    let g = tokenizer();
    assert_eq!(g.encode_prompt("the cat sat").unwrap(), g.encode("the cat sat").unwrap());
}

#[test]
fn stop_ids_come_from_both_configs_and_must_exist() {
    let json = tokenizer_json(true);
    let base = Tok::with_configs(json.as_bytes(), None, None).unwrap();
    let (eot, im_end, eos) = (base.eot(), id(&base, "<|im_end|>"), id(&base, "</s>"));
    assert_eq!(base.stop_ids(), &[eot]);
    let gc = format!(r#"{{"eos_token_id": [{eos}, {eot}], "bos_token_id": 1}}"#);
    let t = Tok::with_configs(
        json.as_bytes(),
        Some(&tokenizer_config(None, None)),
        Some(gc.as_bytes()),
    )
    .unwrap();
    let mut want = vec![eot, im_end, eos];
    want.sort_unstable();
    assert_eq!(t.stop_ids(), want.as_slice());
    // A stop id the tokenizer cannot produce, or an eos_token it lacks, is the seller's
    // broken upload (exit 12), not a generation that never stops.
    let far = format!(r#"{{"eos_token_id": [{eos}, 999999]}}"#);
    let e = Tok::with_configs(json.as_bytes(), None, Some(far.as_bytes())).unwrap_err();
    assert_eq!(e.exit_code(), posthuman_worker::exit::MISSING_TOKENIZER, "{e}");
    let e = Tok::with_configs(json.as_bytes(), Some(br#"{"eos_token": "<|nope|>"}"#), None)
        .unwrap_err();
    assert_eq!(e.exit_code(), posthuman_worker::exit::MISSING_TOKENIZER, "{e}");
}

#[tokio::test]
async fn generation_stops_at_any_listed_eos_id_and_derived_models_keep_the_configs() {
    let (_dir, store) = store().await;
    let store = store.as_ref();
    let json = tokenizer_json(true);
    let plain = Tok::with_configs(json.as_bytes(), None, None).unwrap();
    save_llama(store, "models/plain", &plain).await;
    // The random model's greedy continuation, computed here with its own forward pass.
    let m = model_io::load_model(store, "models/plain", u64::MAX).await.unwrap();
    let model = m.weights.model(&m.cfg, &candle_core::Device::Cpu).unwrap();
    let mut cache = model.new_cache();
    let mut ids = plain.encode_prompt("the cat").unwrap();
    let mut greedy = Vec::new();
    for _ in 0..8 {
        let x = candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model.forward_cached(&x, &mut cache).unwrap();
        let last = logits.get(0).unwrap().get(ids.len() - 1).unwrap().to_vec1::<f32>().unwrap();
        let next = posthuman_worker::sampling::argmax(&last[..plain.vocab_size()]);
        greedy.push(next);
        ids = vec![next];
    }
    let mut p = infer_params();
    p.prompts = vec!["the cat".into()];
    p.max_new_tokens = 8;
    let free = infer(store, &infer_spec("free", "models/plain", p.clone())).await;
    assert_eq!(free[0].completion_tokens, 8, "{greedy:?}");
    assert_eq!(free[0].stop_reason, StopReason::Length);

    // The same weights with generation_config listing the third greedy token second: the
    // generation stops where that token first comes.
    let other = id(&plain, "</s>");
    let stop = greedy[2];
    let gc = format!(r#"{{"eos_token_id": [{other}, {stop}]}}"#);
    let tc = tokenizer_config(Some(SMOLLM2_TEMPLATE), None);
    let tok = Tok::with_configs(json.as_bytes(), Some(&tc), Some(gc.as_bytes())).unwrap();
    save_llama(store, CHAT, &tok).await;
    let stopped = infer(store, &infer_spec("stopped", CHAT, p.clone())).await;
    let at = greedy.iter().position(|&g| g == stop || g == other || g == plain.eot()).unwrap();
    assert!(at <= 2);
    assert_eq!(stopped[0].completion_tokens as usize, at, "{greedy:?} {stopped:?}");
    assert_eq!(stopped[0].stop_reason, StopReason::EndOfText);

    // A model trained from it carries both configs byte for byte, vouched by its manifest.
    let mut tp = train_params();
    (tp.steps, tp.checkpoint_every) = (8, 8);
    let mut ts = spec("derive", JobParams::Train(tp));
    ts.model_prefix = CHAT.into();
    let out = run_job(store, &wc(), &spec_bytes(&ts)).await.unwrap();
    assert!(matches!(out, JobOutcome::Trained(_)), "{out:?}");
    for f in ["tokenizer_config.json", "generation_config.json"] {
        let parent = store.get(&format!("{CHAT}/{f}"), 1 << 20).await.unwrap();
        let child = store.get(&format!("models/derive/{f}"), 1 << 20).await.unwrap();
        assert_eq!(parent, child, "{f}");
    }
    let child = model_io::load_model(store, "models/derive", u64::MAX).await.unwrap();
    assert_eq!(child.tok.stop_ids(), tok.stop_ids());
    // A config dropped after the manifest was written is caught on load.
    store.delete("models/derive/generation_config.json").await.unwrap();
    let e = model_io::load_model(store, "models/derive", u64::MAX).await.unwrap_err();
    assert_eq!(e.exit_code(), posthuman_worker::exit::BAD_WEIGHTS, "{e}");
}

/// Mistral-7B-Instruct-v0.1's published template: BOS from the template, strict roles.
const MISTRAL_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

fn chat_params(messages: &[(&str, &str)]) -> posthuman_types::InferParams {
    let mut p = infer_params();
    p.prompts.clear();
    p.max_new_tokens = 6;
    p.messages = messages.iter().map(|(r, c)| posthuman_types::ChatMessage::new(r, c)).collect();
    p
}

/// A tiny Llama at `prefix` with `template` (BOS-prepending `tokenizer.json`).
async fn chat_model(store: &dyn ObjectStore, prefix: &str, template: Option<&str>) -> Tok {
    let json = tokenizer_json(true);
    let tc = tokenizer_config(template, Some(true));
    let tok =
        Tok::with_configs(json.as_bytes(), Some(&tc), Some(br#"{"eos_token_id": [2]}"#)).unwrap();
    save_llama(store, prefix, &tok).await;
    tok
}

#[tokio::test]
async fn messages_render_with_the_model_template_and_bos_is_not_doubled() {
    let (_dir, store) = store().await;
    let store = store.as_ref();
    // ChatML (SmolLM2): the default system message, each turn, the generation prompt.
    let tok = chat_model(store, "models/smol", Some(SMOLLM2_TEMPLATE)).await;
    let s = infer_spec("smol", "models/smol", chat_params(&[("user", "the cat")]));
    let c = infer(store, &s).await;
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode_rendered(&c[0].prompt).unwrap();
    assert_eq!(c[0].prompt_tokens as usize, ids.len());
    assert_eq!(ids[0], id(&tok, "<|im_start|>"), "the template wrote no BOS, none is added");
    assert_eq!(infer(store, &s).await, c, "deterministic");

    // Mistral's template writes BOS itself; tokenizer.json would add one too for a raw
    // prompt (and add_bos_token is true), but a rendered chat gets exactly the template's.
    let tok = chat_model(store, "models/mistral", Some(MISTRAL_TEMPLATE)).await;
    let msgs = [("user", "the cat"), ("assistant", "sat"), ("user", "on the mat")];
    let c = infer(store, &infer_spec("mis", "models/mistral", chat_params(&msgs))).await;
    assert_eq!(c[0].prompt, "<s>[INST] the cat [/INST]sat<|im_end|>[INST] on the mat [/INST]");
    let ids = tok.encode_rendered(&c[0].prompt).unwrap();
    let bos = id(&tok, "<s>");
    assert_eq!(ids[0], bos);
    assert_eq!(ids.iter().filter(|&&i| i == bos).count(), 1, "{ids:?}");
    assert_eq!(c[0].prompt_tokens as usize, ids.len());
    // The raw-prompt path of the same model: one BOS, from tokenizer.json.
    let raw = tok.encode_prompt("the cat").unwrap();
    assert_eq!(raw.iter().filter(|&&i| i == bos).count(), 1, "{raw:?}");
}

#[tokio::test]
async fn chats_a_model_cannot_take_get_their_exit_codes() {
    let (_dir, store) = store().await;
    let store = store.as_ref();
    let fails = |prefix: &'static str, msgs: &'static [(&str, &str)]| async move {
        let s = infer_spec("bad", prefix, chat_params(msgs));
        run_job(store, &wc(), &spec_bytes(&s)).await.unwrap_err()
    };
    let hi: &[(&str, &str)] = &[("user", "hi")];
    // No template: the buyer asked a raw-prompt model for a chat.
    chat_model(store, "models/none", None).await;
    let e = fails("models/none", hi).await;
    assert_eq!(e.exit_code(), posthuman_worker::exit::CHAT_REFUSED, "{e}");
    // The template refuses the messages (raise_exception): still the buyer's messages.
    chat_model(store, "models/mistral", Some(MISTRAL_TEMPLATE)).await;
    let e = fails("models/mistral", &[("system", "be brief"), ("user", "hi")]).await;
    assert_eq!(e.exit_code(), posthuman_worker::exit::CHAT_REFUSED, "{e}");
    assert!(e.to_string().contains("Conversation roles must alternate"), "{e}");
    // A template that does not parse, or breaks while rendering: the seller's.
    chat_model(store, "models/broken", Some("{% for m in messages %}{{ m.content }")).await;
    let e = fails("models/broken", hi).await;
    assert_eq!(e.exit_code(), posthuman_worker::exit::BAD_CHAT_TEMPLATE, "{e}");
    chat_model(store, "models/filter", Some("{{ messages | no_such_filter }}")).await;
    let e = fails("models/filter", hi).await;
    assert_eq!(e.exit_code(), posthuman_worker::exit::BAD_CHAT_TEMPLATE, "{e}");
    // A template that pads the prompt past the quote's bound would run unpaid compute.
    let pad = "{% for i in range(400) %}<|im_end|>{% endfor %}{{ messages[0].content }}";
    chat_model(store, "models/pad", Some(pad)).await;
    let e = fails("models/pad", hi).await;
    assert_eq!(e.exit_code(), posthuman_worker::exit::BAD_CHAT_TEMPLATE, "{e}");
    assert!(e.to_string().contains("quote allows"), "{e}");
    // The error report says which class it was, for the buyer.
    let report = store.get("jobs/bad/public/error.json", 1 << 16).await.unwrap();
    assert!(String::from_utf8_lossy(&report).contains("bad_chat_template"));
}

#[tokio::test]
async fn a_chat_template_file_wins_and_is_stored_with_the_model() {
    let (_dir, store) = store().await;
    let store = store.as_ref();
    let json = tokenizer_json(true);
    let tc = tokenizer_config(Some(SMOLLM2_TEMPLATE), None);
    let file = b"{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
    let tok = Tok::load(json.as_bytes(), Some(&tc), None, Some(file)).unwrap();
    save_llama(store, "models/file", &tok).await;
    let s = infer_spec("file", "models/file", chat_params(&[("user", "the cat")]));
    assert_eq!(infer(store, &s).await[0].prompt, "<s>user: the cat\n");
    let loaded = model_io::load_model(store, "models/file", u64::MAX).await.unwrap();
    let names: Vec<&str> = loaded.tok.side_files().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["tokenizer_config.json", "chat_template.jinja"]);
    // A template file that is not UTF-8 is the seller's broken template.
    let e = Tok::load(json.as_bytes(), None, None, Some(&[0xff, 0xfe])).unwrap_err();
    assert_eq!(e.exit_code(), posthuman_worker::exit::BAD_CHAT_TEMPLATE, "{e}");
}
