//! Content hashes that receipts commit to: canonical JSON, parameters, prompts, outputs,
//! job ids and the worker version string.
//!
//! All of them are keccak-256, the hash the EVM and EIP-712 use, so a contract or a wallet
//! can recompute any of them. (Weights hashes and the checkpoint Merkle tree are the worker's
//! SHA-256 definitions; receipts only carry them.)

use alloy::primitives::keccak256;
use posthuman_types::{Hash32, JobParams};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// keccak-256 of raw bytes, as a [`Hash32`].
pub fn bytes_hash(bytes: &[u8]) -> Hash32 {
    Hash32(keccak256(bytes).0)
}

/// The canonical JSON text of a value: object keys sorted by their UTF-8 bytes, no
/// whitespace, strings and numbers written as `serde_json` writes them (numbers in their
/// shortest round-trip form). Two parties that hold the same value get the same bytes,
/// whatever order or spacing the JSON they received had.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's own compact form (escapes, integer and float formatting).
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// keccak-256 of the canonical JSON of `v`: the receipt's `paramsHash`.
pub fn json_hash(v: &Value) -> Hash32 {
    bytes_hash(canonical_json(v).as_bytes())
}

/// The parameters a receipt carries (and hashes) for a job.
///
/// Train and evaluate jobs carry their full parameters. Infer jobs carry everything except
/// the prompts or chat messages themselves, which are the buyer's private input: they are
/// committed to by the receipt's input data hash ([`prompts_hash`], [`messages_hash`])
/// instead, so a public receipt never reveals them. The `kind` tag is kept, so the JSON says what it describes.
pub fn receipt_params(params: &JobParams) -> Value {
    let mut v = serde_json::to_value(params).unwrap_or(Value::Null);
    if let (JobParams::Infer(_), Value::Object(map)) = (params, &mut v) {
        map.remove("prompts");
        map.remove("messages");
    }
    v
}

/// The hash of one prompt (its UTF-8 bytes): what an inference attestation names.
pub fn prompt_hash(prompt: &str) -> Hash32 {
    bytes_hash(prompt.as_bytes())
}

/// The hash of one generated text (its UTF-8 bytes).
pub fn text_hash(text: &str) -> Hash32 {
    bytes_hash(text.as_bytes())
}

/// The input data hash of an infer job: keccak-256 over the concatenated per-prompt hashes,
/// in order. A buyer who kept the prompts recomputes it; nobody else learns them.
pub fn prompts_hash<S: AsRef<str>>(prompts: &[S]) -> Hash32 {
    let mut buf = Vec::with_capacity(32 * prompts.len());
    for p in prompts {
        buf.extend_from_slice(&prompt_hash(p.as_ref()).0);
    }
    bytes_hash(&buf)
}

/// The input data hash of a chat infer job: keccak-256 over a domain tag and, per message in
/// order, the hashes of its role and of its content — so no chat hashes like a prompt batch.
pub fn messages_hash(messages: &[posthuman_types::ChatMessage]) -> Hash32 {
    let mut buf = Vec::with_capacity(20 + 64 * messages.len());
    buf.extend_from_slice(b"posthuman:messages:v1");
    for m in messages {
        buf.extend_from_slice(&prompt_hash(&m.role).0);
        buf.extend_from_slice(&prompt_hash(&m.content).0);
    }
    bytes_hash(&buf)
}

/// `SHA-256("posthuman:salted:" || salt || h)`: the receipt's input data hash for a buyer's
/// job, where `h` is the dataset's SHA-256 (train, evaluate) or [`prompts_hash`] (infer)
/// and `salt` the 32 bytes the buyer chose and kept. Without the salt, a public receipt
/// cannot confirm a guessed dataset or prompt; with it, the buyer proves the binding
/// (`posthuman verify --salt`). The worker computes the same (`posthuman_worker::data`).
pub fn salted_hash(salt: &Hash32, h: &Hash32) -> Hash32 {
    let mut d = Sha256::new();
    d.update(b"posthuman:salted:");
    d.update(salt.0);
    d.update(h.0);
    Hash32(d.finalize().into())
}

/// The SHA-256 of a dataset: the plain hash the buyer's request names.
pub fn dataset_hash(bytes: &[u8]) -> Hash32 {
    Hash32(Sha256::digest(bytes).into())
}

/// The `bytes32` job id used on chain (`commitTraining`, `getJob`): keccak-256 of the job
/// id's UTF-8 bytes.
pub fn job_id_hash(job_id: &str) -> Hash32 {
    bytes_hash(job_id.as_bytes())
}

/// The worker version string a receipt names: crate version, git commit and build
/// features, e.g. `posthuman-worker 0.1.0 (git 1a2b3c4d5e6f; features: cuda)`. Features are
/// sorted and deduplicated, so the same build always yields the same string.
pub fn worker_version(crate_version: &str, git_commit: &str, features: &[&str]) -> String {
    let mut f: Vec<&str> = features.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    f.sort_unstable();
    f.dedup();
    let features = if f.is_empty() { "none".to_string() } else { f.join(",") };
    let commit = if git_commit.trim().is_empty() { "unknown" } else { git_commit.trim() };
    format!("posthuman-worker {} (git {commit}; features: {features})", crate_version.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthuman_types::{InferParams, Sampling, TrainParams};
    use serde_json::json;

    #[test]
    fn canonical_json_ignores_key_order_and_spacing() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2.5], "x": "é\n"}}"#).unwrap();
        let b = json!({"a": {"x": "é\n", "y": [1, 2.5]}, "b": 1});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"é\n","y":[1,2.5]},"b":1}"#);
        assert_ne!(json_hash(&a), json_hash(&json!({"a": {"x": "é\n", "y": [1, 2.5]}, "b": 2})));
    }

    #[test]
    fn floats_survive_a_round_trip_through_text() {
        let p = JobParams::Train(TrainParams::new(100, 3e-4, 8, 64));
        let v = receipt_params(&p);
        let reparsed: Value = serde_json::from_str(&canonical_json(&v)).unwrap();
        assert_eq!(json_hash(&v), json_hash(&reparsed));
    }

    #[test]
    fn infer_params_never_carry_prompts() {
        let p = JobParams::Infer(InferParams {
            prompts: vec!["secret prompt".into()],
            max_new_tokens: 8,
            sampling: Sampling::default(),
            stop: vec![],
            messages: vec![],
        });
        let v = receipt_params(&p);
        assert!(!canonical_json(&v).contains("secret"));
        assert_eq!(v["kind"], "infer");
        assert_eq!(v["max_new_tokens"], 8);
    }

    #[test]
    fn infer_params_never_carry_chat_messages() {
        let p = JobParams::Infer(InferParams {
            prompts: vec![],
            max_new_tokens: 8,
            sampling: Sampling::default(),
            stop: vec![],
            messages: vec![posthuman_types::ChatMessage::new("user", "secret chat")],
        });
        let v = receipt_params(&p);
        assert!(!canonical_json(&v).contains("secret"), "{v}");
        assert!(v.get("messages").is_none());
        use posthuman_types::ChatMessage as M;
        let h = messages_hash(&[M::new("user", "a"), M::new("assistant", "b")]);
        assert_ne!(h, messages_hash(&[M::new("user", "b"), M::new("assistant", "a")]));
        assert_ne!(h, messages_hash(&[M::new("assistant", "a"), M::new("user", "b")]));
        assert_ne!(h, prompts_hash(&["user", "a", "assistant", "b"]));
    }

    #[test]
    fn prompts_hash_depends_on_order_and_content() {
        assert_ne!(prompts_hash(&["a", "b"]), prompts_hash(&["b", "a"]));
        assert_ne!(prompts_hash(&["ab"]), prompts_hash(&["a", "b"]));
    }

    #[test]
    fn worker_version_is_stable() {
        let a = worker_version("0.1.0", "abc123", &["x86-v4", "cuda", "cuda"]);
        let b = worker_version("0.1.0", "abc123", &["cuda", "x86-v4"]);
        assert_eq!(a, b);
        assert_eq!(a, "posthuman-worker 0.1.0 (git abc123; features: cuda,x86-v4)");
        assert_eq!(
            worker_version("0.1.0", "", &[]),
            "posthuman-worker 0.1.0 (git unknown; features: none)"
        );
    }
}
