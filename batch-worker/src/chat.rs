//! Chat templates: an infer job's `messages` rendered into one prompt by the model's
//! `chat_template` (from `tokenizer_config.json`), as Hugging Face's `apply_chat_template`
//! does with `add_generation_prompt=True`.
//!
//! The engine is MiniJinja configured like transformers' Jinja environment: `trim_blocks`
//! and `lstrip_blocks`, `raise_exception(msg)`, and Python's string methods (`strip`,
//! `startswith`, …) through `minijinja-contrib`'s pycompat. The template sees `messages`
//! (`role`, `content`), `add_generation_prompt`, and `bos_token` / `eos_token` when the
//! model names them. `strftime_now` is deliberately absent: a template that reads the clock
//! would make the prompt (and so the completion) depend on when the job ran; the published
//! templates that use it fall back to a fixed date when it is undefined.
//!
//! Whose fault a failure is decides its exit code: a template that does not parse or breaks
//! while rendering is the seller's ([`WorkerError::BadChatTemplate`]); a model without a
//! template, or a template that refuses these messages through `raise_exception` (roles
//! that do not alternate, say), is the buyer's request ([`WorkerError::ChatRefused`]).
//! Rendering is bounded by MiniJinja's fuel (instructions) and the output's length, so a
//! hostile template cannot spin or fill memory.

use std::sync::{Arc, Mutex};

use minijinja::{Environment, Error, ErrorKind, Value};
use posthuman_gpt2::chat_config::ChatConfig;
use posthuman_types::ChatMessage;

use crate::error::WorkerError;

/// Template instructions one render may execute: published templates need a few thousand
/// per message; 64 messages at this budget leave a factor of ~100.
const FUEL: u64 = 20_000_000;
/// Longest rendered prompt: the messages' bytes (≤ 64 KiB by the spec's bounds) plus far
/// more template text than any published template adds.
const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// Renders `messages` with the model's chat template and the generation prompt.
pub fn render(chat: &ChatConfig, messages: &[ChatMessage]) -> Result<String, WorkerError> {
    let Some(template) = &chat.chat_template else {
        return Err(WorkerError::ChatRefused(
            "the model has no chat template (tokenizer_config.json's chat_template); send prompts instead"
                .into(),
        ));
    };
    let refusal: Arc<Mutex<Option<String>>> = Arc::default();
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    let seen = Arc::clone(&refusal);
    env.add_function("raise_exception", move |msg: String| -> Result<Value, Error> {
        if let Ok(mut r) = seen.lock() {
            *r = Some(msg.clone());
        }
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template_owned("chat_template", template.clone())
        .map_err(|e| WorkerError::BadChatTemplate(format!("it does not parse ({e})")))?;
    let mut ctx = std::collections::BTreeMap::new();
    ctx.insert("messages", Value::from_serialize(messages));
    ctx.insert("add_generation_prompt", Value::from(true));
    if let Some(b) = &chat.bos_token {
        ctx.insert("bos_token", Value::from(b.as_str()));
    }
    if let Some(e) = &chat.eos_token {
        ctx.insert("eos_token", Value::from(e.as_str()));
    }
    let tmpl = env.get_template("chat_template").map_err(WorkerError::internal)?;
    let rendered =
        tmpl.render(ctx).map_err(|e| match refusal.lock().ok().and_then(|mut r| r.take()) {
            Some(msg) => {
                WorkerError::ChatRefused(format!("the model's template refused them: {msg}"))
            }
            None => WorkerError::BadChatTemplate(format!("it failed to render ({e})")),
        })?;
    if rendered.len() > MAX_RENDERED_BYTES {
        return Err(WorkerError::BadChatTemplate(format!(
            "it rendered {} bytes, over {MAX_RENDERED_BYTES}",
            rendered.len()
        )));
    }
    Ok(rendered)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(t: &str) -> ChatConfig {
        ChatConfig {
            chat_template: Some(t.into()),
            bos_token: Some("<s>".into()),
            ..ChatConfig::default()
        }
    }

    #[test]
    fn renders_like_transformers_and_classifies_failures() {
        let m = [ChatMessage::new("user", "  hi  ")];
        // lstrip/trim blocks, pycompat's strip, bos_token, the generation prompt.
        let t = "{{ bos_token }}\n{% for m in messages %}\n[{{ m.role }}] {{ m['content'].strip() }}\n{% endfor %}\n{% if add_generation_prompt %}[assistant]{% endif %}";
        assert_eq!(render(&cfg(t), &m).unwrap(), "<s>\n[user] hi\n[assistant]");
        // An undefined eos_token renders empty, as in Jinja.
        assert_eq!(render(&cfg("{{ eos_token }}x"), &m).unwrap(), "x");
        let code = |t: &str| render(&cfg(t), &m).unwrap_err().exit_code();
        assert_eq!(code("{% for %}"), crate::exit::BAD_CHAT_TEMPLATE);
        assert_eq!(code("{{ messages | nosuchfilter }}"), crate::exit::BAD_CHAT_TEMPLATE);
        assert_eq!(
            code("{{ raise_exception('roles must alternate') }}"),
            crate::exit::CHAT_REFUSED
        );
        // A template that never ends runs out of fuel.
        let spin =
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
        assert_eq!(code(spin), crate::exit::BAD_CHAT_TEMPLATE);
        let e = render(&ChatConfig::default(), &m).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::CHAT_REFUSED);
    }
}
