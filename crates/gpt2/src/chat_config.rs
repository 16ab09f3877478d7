//! The two optional Hugging Face files beside `tokenizer.json` that say how a model is
//! prompted: `tokenizer_config.json` (`bos_token`, `eos_token`, `add_bos_token`,
//! `chat_template`) and `generation_config.json` (`eos_token_id`, one id or a list), and
//! the standalone `chat_template.jinja` newer `transformers` writes instead of the key.
//!
//! Both are parsed leniently about keys we do not use (HF writes dozens) and strictly about
//! the ones we do: a wrong type is an error naming the file and the key, never a silent
//! default, because a mis-read stop id makes generation run to `max_new_tokens`. Sizes are
//! capped before parsing. The API checks a publish upload with the same parser the worker
//! loads a model with, so a file the worker would refuse is never published.

use serde_json::Value;

/// `tokenizer_config.json`'s file name in a model prefix.
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// The standalone template file recent `transformers` releases save instead of the
/// `chat_template` key; when present it is the template (as `transformers` loads it).
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
/// `generation_config.json`'s file name in a model prefix.
pub const GENERATION_CONFIG: &str = "generation_config.json";
/// Largest `tokenizer_config.json` read: Llama 3's is ~55 KB (its `added_tokens_decoder`
/// lists 256 reserved tokens); 4 MiB leaves room for vocabularies with many added tokens.
pub const MAX_TOKENIZER_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// Largest `generation_config.json` read (published ones are a few hundred bytes).
pub const MAX_GENERATION_CONFIG_BYTES: u64 = 64 * 1024;
/// Longest chat template accepted (Llama 3.1's, with tool calling, is ~4 KB).
pub const MAX_CHAT_TEMPLATE_BYTES: usize = 64 * 1024;
/// Most stop ids `generation_config.json` may list.
pub const MAX_EOS_IDS: usize = 16;
/// Longest special-token string (`bos_token`, `eos_token`).
pub const MAX_SPECIAL_TOKEN_BYTES: usize = 256;

/// Why one of the two files was refused: the file, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct ChatConfigError {
    pub file: &'static str,
    pub reason: String,
}

fn err(file: &'static str, reason: impl Into<String>) -> ChatConfigError {
    ChatConfigError { file, reason: reason.into() }
}

/// What the two files say, merged. Every field is optional: a model without the files (every
/// GPT-2 here) has the default, and the worker then relies on `tokenizer.json` alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatConfig {
    /// `tokenizer_config.json`'s `bos_token` (a string or an `AddedToken` object).
    pub bos_token: Option<String>,
    /// `tokenizer_config.json`'s `eos_token`.
    pub eos_token: Option<String>,
    /// `tokenizer_config.json`'s `add_bos_token`: `Some(true)` asks for a BOS at the start of
    /// an encoded prompt (added only if `tokenizer.json`'s post-processor has not already).
    pub add_bos_token: Option<bool>,
    /// The Jinja chat template (`chat_template`; of a list of named templates, `default`).
    pub chat_template: Option<String>,
    /// `generation_config.json`'s `eos_token_id`: generation stops at any of them.
    pub eos_token_ids: Vec<u32>,
}

/// The bounds both files share: size, UTF-8, a JSON object.
fn object(
    file: &'static str,
    bytes: &[u8],
    max: u64,
) -> Result<serde_json::Map<String, Value>, ChatConfigError> {
    if bytes.len() as u64 > max {
        return Err(err(file, format!("{} bytes, over the limit of {max}", bytes.len())));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(err(file, "not a JSON object")),
        Err(e) => Err(err(file, format!("not valid JSON ({e})"))),
    }
}

/// A special token: `null`, a string, or an `AddedToken` object (`{"content": …}`).
fn special_token(
    file: &'static str,
    key: &str,
    v: &Value,
) -> Result<Option<String>, ChatConfigError> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s,
        Value::Object(o) => match o.get("content") {
            Some(Value::String(s)) => s,
            _ => return Err(err(file, format!("`{key}` is an object without a string `content`"))),
        },
        _ => return Err(err(file, format!("`{key}` must be a string or an AddedToken object"))),
    };
    if s.is_empty() || s.len() > MAX_SPECIAL_TOKEN_BYTES {
        return Err(err(file, format!("`{key}` must be 1..={MAX_SPECIAL_TOKEN_BYTES} bytes")));
    }
    Ok(Some(s.clone()))
}

fn template(file: &'static str, v: &Value) -> Result<Option<String>, ChatConfigError> {
    let t = match v {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        // Older HF releases allow several named templates; `default` is the chat one.
        Value::Array(list) => {
            let named =
                list.iter().find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
            match named.and_then(|t| t.get("template")).and_then(Value::as_str) {
                Some(s) => s.to_string(),
                None => {
                    return Err(err(
                        file,
                        "`chat_template` lists templates but none named `default`",
                    ));
                }
            }
        }
        _ => {
            return Err(err(file, "`chat_template` must be a string or a list of named templates"));
        }
    };
    if t.trim().is_empty() || t.len() > MAX_CHAT_TEMPLATE_BYTES {
        return Err(err(
            file,
            format!("`chat_template` must be 1..={MAX_CHAT_TEMPLATE_BYTES} bytes"),
        ));
    }
    Ok(Some(t))
}

fn token_id(file: &'static str, v: &Value) -> Result<u32, ChatConfigError> {
    v.as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| err(file, format!("`eos_token_id` entry {v} is not a token id")))
}

impl ChatConfig {
    /// Parses whichever of the two files the model has.
    pub fn parse(
        tokenizer_config: Option<&[u8]>,
        generation_config: Option<&[u8]>,
    ) -> Result<ChatConfig, ChatConfigError> {
        let mut c = ChatConfig::default();
        if let Some(b) = tokenizer_config {
            let f = TOKENIZER_CONFIG;
            let m = object(f, b, MAX_TOKENIZER_CONFIG_BYTES)?;
            if let Some(v) = m.get("bos_token") {
                c.bos_token = special_token(f, "bos_token", v)?;
            }
            if let Some(v) = m.get("eos_token") {
                c.eos_token = special_token(f, "eos_token", v)?;
            }
            c.add_bos_token = match m.get("add_bos_token") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => return Err(err(f, "`add_bos_token` must be true or false")),
            };
            if let Some(v) = m.get("chat_template") {
                c.chat_template = template(f, v)?;
            }
        }
        if let Some(b) = generation_config {
            let f = GENERATION_CONFIG;
            let m = object(f, b, MAX_GENERATION_CONFIG_BYTES)?;
            c.eos_token_ids = match m.get("eos_token_id") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(list)) => {
                    if list.len() > MAX_EOS_IDS {
                        return Err(err(
                            f,
                            format!("more than {MAX_EOS_IDS} `eos_token_id` entries"),
                        ));
                    }
                    list.iter().map(|v| token_id(f, v)).collect::<Result<_, _>>()?
                }
                Some(v) => vec![token_id(f, v)?],
            };
        }
        Ok(c)
    }
}

impl ChatConfig {
    /// Takes the template from a `chat_template.jinja` file, over `tokenizer_config.json`'s.
    pub fn with_template_file(mut self, bytes: &[u8]) -> Result<ChatConfig, ChatConfigError> {
        let f = CHAT_TEMPLATE_FILE;
        if bytes.len() > MAX_CHAT_TEMPLATE_BYTES {
            return Err(err(f, format!("over the limit of {MAX_CHAT_TEMPLATE_BYTES} bytes")));
        }
        let t = std::str::from_utf8(bytes).map_err(|_| err(f, "not UTF-8"))?;
        if t.trim().is_empty() {
            return Err(err(f, "empty"));
        }
        self.chat_template = Some(t.to_string());
        Ok(self)
    }

    /// Checks that the chat template parses as the worker's MiniJinja engine reads it: what
    /// the API checks on publish, so a template that could never render is refused there
    /// (naming the file it came from) instead of failing every chat job later. Unknown
    /// functions and filters are not parse errors: they are resolved when rendering.
    /// `file` names where the template came from (`tokenizer_config.json` or
    /// `chat_template.jinja`).
    pub fn check_template_syntax(&self, file: &'static str) -> Result<(), ChatConfigError> {
        let Some(t) = &self.chat_template else { return Ok(()) };
        let env = minijinja::Environment::new();
        env.template_from_str(t)
            .map(|_| ())
            .map_err(|e| err(file, format!("`chat_template` does not parse: {e}")))
    }

    /// Checks the special tokens and stop ids against a parsed `tokenizer.json` (its
    /// `model.vocab`, an object for BPE/WordPiece/WordLevel or a list for Unigram, and its
    /// `added_tokens`) without building the tokenizer: what the API can check on publish
    /// for the worker's rule that every named token exists.
    pub fn check_tokens(&self, tokenizer_json: &Value) -> Result<(), ChatConfigError> {
        let vocab = &tokenizer_json["model"]["vocab"];
        let added = tokenizer_json["added_tokens"].as_array();
        let has = |t: &str| {
            let in_vocab = match vocab {
                Value::Object(m) => m.contains_key(t),
                Value::Array(l) => l.iter().any(|e| e.get(0).and_then(Value::as_str) == Some(t)),
                _ => false,
            };
            in_vocab || added.is_some_and(|a| a.iter().any(|e| e["content"].as_str() == Some(t)))
        };
        let ids = match vocab {
            Value::Object(m) => m.values().filter_map(Value::as_u64).max().map(|i| i + 1),
            Value::Array(l) => Some(l.len() as u64),
            _ => None,
        };
        let size = added
            .into_iter()
            .flatten()
            .filter_map(|e| e["id"].as_u64().map(|i| i + 1))
            .chain(ids)
            .max()
            .unwrap_or(0);
        for (key, token) in [("bos_token", &self.bos_token), ("eos_token", &self.eos_token)] {
            if let Some(t) = token
                && !has(t)
            {
                return Err(err(
                    TOKENIZER_CONFIG,
                    format!("`{key}` is not a token of tokenizer.json"),
                ));
            }
        }
        if let Some(id) = self.eos_token_ids.iter().find(|&&id| u64::from(id) >= size) {
            return Err(err(
                GENERATION_CONFIG,
                format!("`eos_token_id` {id} is outside tokenizer.json's {size} tokens"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_hf_files_as_published() {
        // Shapes as Qwen2.5 / Llama 3 / TinyLlama publish them.
        let tc = br#"{"add_bos_token": false, "bos_token": null,
            "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "lstrip": false},
            "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
            "added_tokens_decoder": {"0": {"content": "<unk>"}}, "model_max_length": 32768}"#;
        let gc = br#"{"bos_token_id": 1, "eos_token_id": [151645, 151643], "do_sample": true}"#;
        let c = ChatConfig::parse(Some(tc), Some(gc)).unwrap();
        assert_eq!(c.eos_token.as_deref(), Some("<|im_end|>"));
        assert_eq!(c.bos_token, None);
        assert_eq!(c.add_bos_token, Some(false));
        assert_eq!(c.eos_token_ids, vec![151645, 151643]);
        assert!(c.chat_template.unwrap().starts_with("{% for"));
        let one = ChatConfig::parse(None, Some(br#"{"eos_token_id": 2}"#)).unwrap();
        assert_eq!(one.eos_token_ids, vec![2]);
        let named = br#"{"chat_template": [{"name": "tool_use", "template": "x"},
            {"name": "default", "template": "chat"}], "bos_token": "<s>"}"#;
        let c = ChatConfig::parse(Some(named), None).unwrap();
        assert_eq!(c.chat_template.as_deref(), Some("chat"));
        assert_eq!(c.bos_token.as_deref(), Some("<s>"));
        assert_eq!(ChatConfig::parse(None, None).unwrap(), ChatConfig::default());
    }

    #[test]
    fn refuses_wrong_types_and_sizes_naming_the_file() {
        let bad = |tc: &[u8], gc: &[u8]| {
            let tc = (!tc.is_empty()).then_some(tc);
            let gc = (!gc.is_empty()).then_some(gc);
            ChatConfig::parse(tc, gc).unwrap_err()
        };
        assert_eq!(bad(b"[1]", b"").file, TOKENIZER_CONFIG);
        assert_eq!(bad(b"{not json", b"").file, TOKENIZER_CONFIG);
        assert_eq!(bad(br#"{"add_bos_token": "yes"}"#, b"").file, TOKENIZER_CONFIG);
        assert_eq!(bad(br#"{"eos_token": 2}"#, b"").file, TOKENIZER_CONFIG);
        assert_eq!(bad(br#"{"eos_token": ""}"#, b"").file, TOKENIZER_CONFIG);
        assert_eq!(bad(br#"{"chat_template": 7}"#, b"").file, TOKENIZER_CONFIG);
        assert_eq!(
            bad(br#"{"chat_template": [{"name": "x", "template": "y"}]}"#, b"").file,
            TOKENIZER_CONFIG
        );
        let huge = format!(r#"{{"chat_template": "{}"}}"#, "x".repeat(MAX_CHAT_TEMPLATE_BYTES + 1));
        assert!(bad(huge.as_bytes(), b"").reason.contains("chat_template"));
        assert_eq!(bad(b"", br#"{"eos_token_id": -1}"#).file, GENERATION_CONFIG);
        assert_eq!(bad(b"", br#"{"eos_token_id": [1, "2"]}"#).file, GENERATION_CONFIG);
        assert_eq!(bad(b"", br#"{"eos_token_id": 4294967296}"#).file, GENERATION_CONFIG);
        let many = format!(r#"{{"eos_token_id": {:?}}}"#, (0..17).collect::<Vec<u32>>());
        assert_eq!(bad(b"", many.as_bytes()).file, GENERATION_CONFIG);
        let big = vec![b' '; MAX_GENERATION_CONFIG_BYTES as usize + 1];
        assert!(bad(b"", &big).reason.contains("over the limit"));
    }

    #[test]
    fn a_template_file_wins_over_the_config_key() {
        let tc = br#"{"chat_template": "old"}"#;
        let c = ChatConfig::parse(Some(tc), None).unwrap();
        assert_eq!(
            c.clone().with_template_file(b"new").unwrap().chat_template.as_deref(),
            Some("new")
        );
        assert_eq!(c.clone().with_template_file(b" \n").unwrap_err().file, CHAT_TEMPLATE_FILE);
        assert_eq!(c.clone().with_template_file(&[0xff]).unwrap_err().file, CHAT_TEMPLATE_FILE);
        let big = vec![b'x'; MAX_CHAT_TEMPLATE_BYTES + 1];
        assert_eq!(c.with_template_file(&big).unwrap_err().file, CHAT_TEMPLATE_FILE);
    }

    #[test]
    fn named_tokens_must_exist_in_the_tokenizer() {
        let bpe: Value = serde_json::from_str(
            r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}},
                "added_tokens": [{"id": 2, "content": "<|im_end|>"}]}"#,
        )
        .unwrap();
        let unigram: Value = serde_json::from_str(
            r#"{"model": {"type": "Unigram", "vocab": [["<s>", 0.0], ["a", -1.0]]}}"#,
        )
        .unwrap();
        let ok = |tc: &str, gc: &str, t: &Value| {
            ChatConfig::parse(Some(tc.as_bytes()), Some(gc.as_bytes())).unwrap().check_tokens(t)
        };
        ok(r#"{"eos_token": "<|im_end|>", "bos_token": "a"}"#, r#"{"eos_token_id": [2, 1]}"#, &bpe)
            .unwrap();
        ok(r#"{"bos_token": "<s>"}"#, r#"{"eos_token_id": 1}"#, &unigram).unwrap();
        let e = ok(r#"{"eos_token": "</s>"}"#, "{}", &bpe).unwrap_err();
        assert_eq!(e.file, TOKENIZER_CONFIG);
        let e = ok("{}", r#"{"eos_token_id": [3]}"#, &bpe).unwrap_err();
        assert_eq!(e.file, GENERATION_CONFIG);
        assert!(ok("{}", r#"{"eos_token_id": 2}"#, &unigram).is_err());
    }
}
