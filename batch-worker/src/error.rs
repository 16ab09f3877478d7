//! The worker's error classes and their exit codes — the one place they are mapped.
//!
//! Every failure a job can meet falls in exactly one class; each class has a distinct process
//! exit code (read by the local queue and by AWS Batch's state-change events) and a one-sentence
//! public message, which the runner also writes as `<public_prefix>/error.json`. Messages never
//! carry weights, private keys or raw buyer bytes: only sizes, steps, field names and reasons.

use posthuman_store::StoreError;
use posthuman_types::SpecError;

/// Exit codes, one per class, defined once in `posthuman_types::exit` (which the queue, the
/// completion handler and infra's Batch retry rules classify by): a copy here once drifted
/// when the buyer's codes moved to their own range. `0` is success; `2` is clap's usage error.
pub use posthuman_types::exit;

/// Why a job failed. Variants are the classes of [`exit`].
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid job spec: {0}")]
    BadSpec(String),
    #[error("invalid model weights or config: {0}")]
    BadWeights(String),
    #[error("missing or invalid tokenizer: {0}")]
    MissingTokenizer(String),
    #[error("the model's chat template is unusable: {0}")]
    BadChatTemplate(String),
    #[error("the chat messages cannot be used with this model: {0}")]
    ChatRefused(String),
    #[error("invalid dataset: {0}")]
    BadDataset(String),
    #[error("dataset is {size} bytes, over the limit of {limit} bytes")]
    DatasetTooLarge { size: u64, limit: u64 },
    #[error("hyperparameter out of range: {0}")]
    OutOfRange(String),
    #[error("training diverged: non-finite loss at step {step}")]
    NonFiniteLoss { step: u32 },
    #[error("job needs about {needed_mib} MiB of memory, over the limit of {limit_mib} MiB")]
    MemoryRefused { needed_mib: u64, limit_mib: u64 },
    #[error("object store failure: {0}")]
    Store(String),
    #[error("this worker requires a GPU and none could be opened; nothing was started")]
    NoGpu,
    #[error(
        "after {steps} steps the trained weights are bit-identical to its input: the updates \
         rounded away in f32 (raise the learning rate); no model was published"
    )]
    NoTraining { steps: u32 },
    #[error(
        "the job needs {need} {field} but its fee paid for {paid}; nothing was started (quote these terms again)"
    )]
    OverBudget { field: &'static str, need: u64, paid: u64 },
    #[error("the LoRA settings do not fit this model: {0}")]
    BadLora(String),
    #[error("internal worker error: {0}")]
    Internal(String),
}

impl WorkerError {
    /// The process exit code of this class.
    pub fn exit_code(&self) -> i32 {
        match self {
            WorkerError::BadSpec(_) => exit::BAD_SPEC,
            WorkerError::BadWeights(_) => exit::BAD_WEIGHTS,
            WorkerError::MissingTokenizer(_) => exit::MISSING_TOKENIZER,
            WorkerError::BadChatTemplate(_) => exit::BAD_CHAT_TEMPLATE,
            WorkerError::ChatRefused(_) => exit::CHAT_REFUSED,
            WorkerError::BadDataset(_) => exit::BAD_DATASET,
            WorkerError::DatasetTooLarge { .. } => exit::DATASET_TOO_LARGE,
            WorkerError::OutOfRange(_) => exit::OUT_OF_RANGE,
            WorkerError::NonFiniteLoss { .. } => exit::NON_FINITE_LOSS,
            WorkerError::MemoryRefused { .. } => exit::MEMORY_REFUSED,
            WorkerError::Store(_) => exit::STORE,
            WorkerError::NoGpu => exit::NO_GPU,
            WorkerError::NoTraining { .. } => exit::NO_TRAINING,
            WorkerError::OverBudget { .. } => exit::OVER_BUDGET,
            WorkerError::BadLora(_) => exit::BAD_LORA,
            WorkerError::Internal(_) => exit::INTERNAL,
        }
    }

    /// A short stable name of the class, for `error.json` and logs.
    pub fn class(&self) -> &'static str {
        match self {
            WorkerError::BadSpec(_) => "bad_spec",
            WorkerError::BadWeights(_) => "bad_weights",
            WorkerError::MissingTokenizer(_) => "missing_tokenizer",
            WorkerError::BadChatTemplate(_) => "bad_chat_template",
            WorkerError::ChatRefused(_) => "chat_refused",
            WorkerError::BadDataset(_) => "bad_dataset",
            WorkerError::DatasetTooLarge { .. } => "dataset_too_large",
            WorkerError::OutOfRange(_) => "out_of_range",
            WorkerError::NonFiniteLoss { .. } => "non_finite_loss",
            WorkerError::MemoryRefused { .. } => "memory_refused",
            WorkerError::Store(_) => "store",
            WorkerError::NoGpu => "no_gpu",
            WorkerError::NoTraining { .. } => "no_training",
            WorkerError::OverBudget { .. } => "over_budget",
            WorkerError::BadLora(_) => "bad_lora",
            WorkerError::Internal(_) => "internal",
        }
    }

    /// The public message: one sentence, single line, bounded length, printable.
    pub fn public_message(&self) -> String {
        sanitize(&self.to_string())
    }

    /// Classifies a spec validation failure: structural fields (ids, keys) are a bad spec,
    /// everything else is a hyperparameter out of range.
    pub fn from_spec(e: SpecError) -> Self {
        match e.field {
            "job_id" | "model_prefix" | "private_prefix" | "public_prefix" | "dataset_key" => {
                WorkerError::BadSpec(e.to_string())
            }
            _ => WorkerError::OutOfRange(e.to_string()),
        }
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        WorkerError::Internal(e.to_string())
    }
}

impl From<StoreError> for WorkerError {
    /// Keys are private (they name the operator's prefixes), so the public message keeps only
    /// the kind of failure; the full error goes to the operator's log.
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "object store failure");
        let what = match e {
            StoreError::NotFound { .. } => "an input object is missing",
            StoreError::InvalidKey { .. } => "a key was rejected",
            StoreError::TooLarge { .. } => "an input object is over its size limit",
            StoreError::Unavailable(_) => "the store is unavailable (transient)",
            StoreError::Io(_) => "a read or write failed",
        };
        WorkerError::Store(what.to_string())
    }
}

impl From<candle_core::Error> for WorkerError {
    fn from(e: candle_core::Error) -> Self {
        WorkerError::Internal(e.to_string())
    }
}

/// Keeps a message to one printable line of at most 300 characters.
pub fn sanitize(s: &str) -> String {
    let line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(300).collect();
    line.trim().to_string()
}

/// The body of `<public_prefix>/error.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ErrorReport {
    pub class: String,
    pub exit_code: i32,
    pub message: String,
}

impl From<&WorkerError> for ErrorReport {
    fn from(e: &WorkerError) -> Self {
        ErrorReport {
            class: e.class().to_string(),
            exit_code: e.exit_code(),
            message: e.public_message(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let all = [
            WorkerError::BadSpec(String::new()),
            WorkerError::BadWeights(String::new()),
            WorkerError::MissingTokenizer(String::new()),
            WorkerError::BadChatTemplate(String::new()),
            WorkerError::ChatRefused(String::new()),
            WorkerError::BadDataset(String::new()),
            WorkerError::DatasetTooLarge { size: 0, limit: 0 },
            WorkerError::OutOfRange(String::new()),
            WorkerError::NonFiniteLoss { step: 0 },
            WorkerError::MemoryRefused { needed_mib: 0, limit_mib: 0 },
            WorkerError::Store(String::new()),
            WorkerError::NoGpu,
            WorkerError::NoTraining { steps: 0 },
            WorkerError::OverBudget { field: "flops", need: 2, paid: 1 },
            WorkerError::BadLora(String::new()),
            WorkerError::Internal(String::new()),
        ];
        let mut codes: Vec<i32> = all.iter().map(WorkerError::exit_code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(codes.iter().all(|&c| c != 0 && c != 1 && c != 2 && c < 126));
        // Each class is what the queue, the completion and Batch's rules take it for: the
        // buyer's input consumes the order and is never retried; nothing else is.
        for e in &all {
            let buyer = matches!(
                e,
                WorkerError::BadDataset(_)
                    | WorkerError::DatasetTooLarge { .. }
                    | WorkerError::OutOfRange(_)
                    | WorkerError::NonFiniteLoss { .. }
                    | WorkerError::MemoryRefused { .. }
                    | WorkerError::NoTraining { .. }
                    | WorkerError::OverBudget { .. }
                    | WorkerError::BadLora(_)
                    | WorkerError::ChatRefused(_)
            );
            let class = exit::classify(Some(e.exit_code()));
            assert_eq!(class == exit::FailureClass::BuyerInput, buyer, "{}", e.class());
            assert!(exit::is_known(e.exit_code()), "{}", e.class());
        }
    }

    #[test]
    fn messages_are_one_line() {
        let e = WorkerError::BadDataset("line one\nline two\u{7}".into());
        assert!(!e.public_message().contains('\n'));
        assert!(!e.public_message().contains('\u{7}'));
    }
}
