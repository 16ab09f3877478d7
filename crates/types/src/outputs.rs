//! What a job may publish — the public allowlist — and how it reports progress.
//!
//! Nothing here can carry weights: metrics are scalars and short curves, generated text is
//! text, and hashes are commitments. The worker writes these as JSON under the job's public
//! prefix; the API serves them to the buyer who paid.

use serde::{Deserialize, Serialize};

use crate::{Hash32, JobKind};

/// Live progress, rewritten by the worker as it goes (`progress.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobProgress {
    pub kind: JobKind,
    /// What the worker is doing: `loading`, `training`, `evaluating`, `generating`, `saving`.
    pub phase: String,
    /// Units done and total (optimizer steps, windows or tokens, by kind).
    pub done: u64,
    pub total: u64,
    /// Most recent training loss, if training.
    #[serde(default)]
    pub loss: Option<f64>,
    pub tokens_per_sec: f64,
    pub elapsed_secs: f64,
    /// Estimated seconds left, once known.
    #[serde(default)]
    pub eta_secs: Option<f64>,
}

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running {
        #[serde(default)]
        progress: Option<JobProgress>,
    },
    Succeeded,
    /// The worker's reason is one sanitized sentence; `exit_code` is the worker's exit code.
    Failed {
        reason: String,
        exit_code: Option<i32>,
    },
}

impl JobStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed { .. })
    }
}

/// One committed training checkpoint: the state after optimizer step `step`, as a leaf of the
/// checkpoint Merkle tree a train receipt commits to (the worker's `merkle` module hashes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkpoint {
    pub step: u32,
    /// Canonical weights hash.
    pub weights: Hash32,
    /// Canonical optimizer-state hash (AdamW step counter and moments).
    pub optimizer: Hash32,
}

/// Result of a train job (`metrics.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrainMetrics {
    pub steps: u32,
    pub tokens_trained: u64,
    pub final_loss: f64,
    /// (step, loss) pairs, at most a few hundred, for the loss curve.
    pub loss_curve: Vec<(u32, f64)>,
    pub tokens_per_sec: f64,
    pub wall_secs: f64,
    pub input_weights_hash: Hash32,
    pub output_weights_hash: Hash32,
    pub dataset_hash: Hash32,
    /// Merkle root over the checkpoints, and the interval between checkpoints.
    pub checkpoint_root: Hash32,
    pub checkpoint_every: u32,
    /// Canonical weights hash of each checkpoint, in step order (the Merkle leaves commit to
    /// them with the optimizer-state hashes below).
    pub checkpoint_hashes: Vec<Hash32>,
    /// Canonical optimizer-state hash (AdamW step counter and moments) of each checkpoint.
    /// For a LoRA job: the trained state's hash, binding the adapter and its moments
    /// (`posthuman_worker::train::lora_state_hash`).
    pub checkpoint_optimizer_hashes: Vec<Hash32>,
    /// A LoRA job's adapter (absent for a full fine-tune). `input_weights_hash` is then the
    /// parent the adapter is over and `output_weights_hash` the merged (effective) weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraOutput>,
}

/// What a LoRA train job made: the adapter PEFT loads, described without its values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoraOutput {
    pub r: u32,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// The module names asked for, as given.
    pub target_modules: Vec<String>,
    /// How many linear layers they matched.
    pub targeted_layers: u32,
    /// Trained values (the A and B matrices).
    pub adapter_params: u64,
    /// Canonical hash of the adapter's tensors under PEFT's names.
    pub adapter_hash: Hash32,
    /// Size of `adapter_model.safetensors`.
    pub adapter_bytes: u64,
    /// Tensor bytes of one checkpoint: the adapter and its AdamW moments (a full fine-tune
    /// stores the whole model and its moments).
    pub checkpoint_bytes: u64,
}

/// Why generation stopped for one prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `max_new_tokens` reached.
    Length,
    /// A stop string appeared (it is cut from the text).
    Stop,
    /// The model emitted its end-of-text token.
    EndOfText,
    /// The model's context is full.
    Context,
}

/// One generated completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Completion {
    pub prompt: String,
    pub text: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub stop_reason: StopReason,
}

/// Result of an evaluate job (`report.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvalReport {
    pub weights_hash: Hash32,
    pub dataset_hash: Hash32,
    pub tokens_scored: u64,
    pub context_len: u32,
    pub stride: u32,
    /// Mean negative log-likelihood per scored token (nats); +∞ when a scored token had
    /// probability 0 (serde_json writes it as `null`, read back as +∞).
    #[serde(deserialize_with = "unbounded::deserialize")]
    pub mean_nll: f64,
    /// `exp(mean_nll)`; +∞ (`null` on the wire) when unbounded.
    #[serde(deserialize_with = "unbounded::deserialize")]
    pub perplexity: f64,
    #[serde(default)]
    pub baseline_label: Option<String>,
    #[serde(default)]
    pub baseline_perplexity: Option<f64>,
    /// `perplexity / baseline_perplexity` (< 1 means better than the baseline).
    #[serde(default)]
    pub ratio_to_baseline: Option<f64>,
    pub tokens_per_sec: f64,
}

/// Serde for an `f64` that may be +∞, such as a perplexity: JSON has no infinity and
/// serde_json writes one as `null`. [`serialize`] writes a finite value as a number and any
/// other as the string `"inf"`; [`deserialize`] reads a number, `"inf"` or `null` (both +∞),
/// so a report written either way is read as unbounded rather than refused. [`option`] does
/// the same for an `Option<f64>` (a missing field or `None` stays `None`).
pub mod unbounded {
    use serde::Serializer;
    use serde::de::{Deserializer, Error, Visitor};

    /// The wire forms, read by one visitor: `#[serde(untagged)]` over `f64 | String` would
    /// buffer every value into serde's private `Content` first, and that buffering was the
    /// last thing keeping serde's `Content` code in the storefront's wasm. `None` is `null`.
    struct Wire;

    impl<'de> Visitor<'de> for Wire {
        type Value = Option<f64>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number, \"inf\" or null")
        }
        fn visit_f64<E: Error>(self, x: f64) -> Result<Self::Value, E> {
            Ok(Some(x))
        }
        fn visit_u64<E: Error>(self, x: u64) -> Result<Self::Value, E> {
            Ok(Some(x as f64))
        }
        fn visit_i64<E: Error>(self, x: i64) -> Result<Self::Value, E> {
            Ok(Some(x as f64))
        }
        fn visit_str<E: Error>(self, t: &str) -> Result<Self::Value, E> {
            match t {
                "inf" => Ok(Some(f64::INFINITY)),
                _ => Err(E::custom(format!("expected a number or \"inf\", not {t:?}"))),
            }
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        d.deserialize_option(Wire)
    }

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() { s.serialize_f64(*x) } else { s.serialize_str("inf") }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(read(d)?.unwrap_or(f64::INFINITY))
    }

    /// The same for `Option<f64>`: `Some(+∞)` is written `"inf"`, `None` is `null`.
    pub mod option {
        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            match x {
                Some(x) => super::serialize(x, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            super::read(d)
        }
    }

    #[cfg(test)]
    mod tests {
        use serde::{Deserialize, Serialize};

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Ppl {
            #[serde(with = "super")]
            x: f64,
            #[serde(default, with = "super::option")]
            y: Option<f64>,
        }

        fn read(s: &str) -> Result<Ppl, String> {
            serde_json::from_str(s).map_err(|e| e.to_string())
        }

        /// Every form the wire may carry, as the untagged `f64 | String` enum read them.
        #[test]
        fn numbers_inf_and_null_are_read_and_anything_else_refused() {
            let p = |x, y| Ppl { x, y };
            assert_eq!(read(r#"{"x": 40.5, "y": 2}"#), Ok(p(40.5, Some(2.0))));
            assert_eq!(read(r#"{"x": -3, "y": null}"#), Ok(p(-3.0, None)));
            assert_eq!(read(r#"{"x": "inf"}"#), Ok(p(f64::INFINITY, None)));
            assert_eq!(
                read(r#"{"x": null, "y": "inf"}"#),
                Ok(p(f64::INFINITY, Some(f64::INFINITY)))
            );
            assert_eq!(read(r#"{"x": 1e308, "y": 0.1}"#), Ok(p(1e308, Some(0.1))));
            let e = read(r#"{"x": "nan"}"#).unwrap_err();
            assert!(e.contains(r#"expected a number or "inf", not "nan""#), "{e}");
            assert!(read(r#"{"x": true}"#).is_err());
            assert!(read(r#"{"x": [1]}"#).is_err());
            assert!(read(r#"{"y": 1}"#).is_err(), "x has no default");
            // Written back: finite as numbers, +∞ as "inf", None as null.
            let s = serde_json::to_string(&p(f64::INFINITY, Some(1.5))).unwrap();
            assert_eq!(s, r#"{"x":"inf","y":1.5}"#);
            assert_eq!(serde_json::to_string(&p(2.0, None)).unwrap(), r#"{"x":2.0,"y":null}"#);
        }
    }
}
