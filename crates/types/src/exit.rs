//! The batch worker's process exit codes and what each means for the job's buyer — the one
//! place both are defined.
//!
//! The worker exits with one of these codes (`batch-worker/src/error.rs` maps its error
//! classes onto them); the local queue and AWS Batch report the code; three readers act on
//! [`classify`]:
//! - the local queue retries a [`FailureClass::Retryable`] failure up to its attempt bound
//!   and never retries the others;
//! - AWS Batch does the same through the job definition's retry strategy, generated in
//!   `infra/` from [`BUYER_INPUT`] and [`FINAL`] (`evaluateOnExit`: EXIT on those, RETRY on
//!   the rest, attempts bounded);
//! - the completion handler consumes the order of a [`FailureClass::BuyerInput`] failure
//!   (running the same request again fails the same way, and the compute was spent) and
//!   releases it otherwise, so the order pays for a retry.
//!
//! A code outside [`BUYER_INPUT_RANGE`] that this module does not know (a signal, a crash, a
//! code added to the worker but not here) is [`FailureClass::Retryable`]: never the buyer's
//! fault unless proven.

use std::ops::RangeInclusive;

/// The job spec is unreadable, not JSON, or names invalid ids/keys. The API builds specs, so
/// this is the operator's bug, not the buyer's input.
pub const BAD_SPEC: i32 = 10;
/// The model's weights or config are malformed or inconsistent (the seller's upload).
pub const BAD_WEIGHTS: i32 = 11;
/// The model prefix has no usable `tokenizer.json` (the seller's upload).
pub const MISSING_TOKENIZER: i32 = 12;
/// The model's chat template (`tokenizer_config.json`, the seller's upload) does not parse,
/// fails while rendering other than by refusing the messages, or renders a prompt longer than
/// the quote's bound for it ([`crate::pricing::chat_prompt_tokens`]): not the buyer's input,
/// so the order is released, like [`BAD_WEIGHTS`].
pub const BAD_CHAT_TEMPLATE: i32 = 13;
/// The buyer's dataset is empty, not UTF-8, or yields no tokens.
pub const BAD_DATASET: i32 = 40;
/// The buyer's dataset is larger than the configured cap.
pub const DATASET_TOO_LARGE: i32 = 41;
/// A buyer's hyperparameter is out of its bounds (including context > the model's maximum).
pub const OUT_OF_RANGE: i32 = 42;
/// Training on the buyer's data and hyperparameters produced a NaN or infinite loss.
pub const NON_FINITE_LOSS: i32 = 43;
/// The preflight memory estimate of the buyer's batch/context exceeds the worker's limit.
pub const MEMORY_REFUSED: i32 = 44;
/// The object store failed (read or write): transient.
pub const STORE: i32 = 18;
/// The worker requires a GPU and none could be opened: the host's fault.
pub const NO_GPU: i32 = 19;
/// The spec asks for more compute (tokens, FLOPs or checkpoint bytes, re-estimated from the
/// real model and dataset) than its provider fee paid for: refused before any work.
pub const OVER_BUDGET: i32 = 45;
/// A train job's weights came out bit-identical to its input (every update rounded away in
/// f32): the buyer's hyperparameters; no derivation is published.
pub const NO_TRAINING: i32 = 46;
/// A LoRA job's adapter does not fit the model: a target module the model's family has
/// not, or a rank above a targeted layer's smaller side (the buyer's parameters).
pub const BAD_LORA: i32 = 47;
/// An infer job sent chat `messages` that the model cannot take: it has no chat template (it
/// serves raw prompts only, as its files say), or its template refused these messages through
/// `raise_exception` (e.g. roles that do not alternate). The buyer's input, like [`BAD_LORA`]:
/// the same messages fail the same way on every run.
pub const CHAT_REFUSED: i32 = 48;
/// A bug or an unexpected condition inside the worker.
pub const INTERNAL: i32 = 70;
/// Not a failure: training stopped after a checkpoint on request; running the same spec
/// again resumes it. (BSD `EX_TEMPFAIL`.)
pub const INTERRUPTED: i32 = 75;
/// Set by the queue, never by the worker: the job ran past its paid wall-clock budget
/// (`JobSpec.budget.max_seconds`) and was killed (`timeout(1)`'s code).
pub const WALL_CLOCK_EXCEEDED: i32 = 124;

/// The buyer-input range: every code in it is the buyer's input by definition (the worker
/// exits in it only for the [`BUYER_INPUT`] classes; nothing else sets a code here — a panic
/// is 101, a signal 128 + n). One contiguous decade because AWS Batch matches exit codes only
/// by prefix (`4*`) in at most 5 rules: so its retry rules (infra/) equal [`classify`] exactly
/// for every exit status, with `4` carved out before `4*`.
pub const BUYER_INPUT_RANGE: RangeInclusive<i32> = 40..=49;

/// Codes caused by what the buyer sent: never retried, and the failure consumes the order.
/// All in [`BUYER_INPUT_RANGE`].
pub const BUYER_INPUT: &[i32] = &[
    BAD_DATASET,
    DATASET_TOO_LARGE,
    OUT_OF_RANGE,
    NON_FINITE_LOSS,
    MEMORY_REFUSED,
    NO_TRAINING,
    OVER_BUDGET,
    BAD_LORA,
    CHAT_REFUSED,
];

/// Codes that are not the buyer's fault but that running the same spec again cannot cure:
/// never retried, and the order is released. A job that outruns the wall-clock budget the
/// operator's own quote estimated is the operator's mis-estimate, so the buyer keeps the
/// order; re-running the same spec under the same budget would only time out again.
pub const FINAL: &[i32] = &[WALL_CLOCK_EXCEEDED];

/// Every code the worker may exit with on failure, for tests that each is classified.
pub const ALL: &[i32] = &[
    BAD_SPEC,
    BAD_WEIGHTS,
    MISSING_TOKENIZER,
    BAD_CHAT_TEMPLATE,
    BAD_DATASET,
    DATASET_TOO_LARGE,
    OUT_OF_RANGE,
    NON_FINITE_LOSS,
    MEMORY_REFUSED,
    STORE,
    NO_GPU,
    OVER_BUDGET,
    NO_TRAINING,
    BAD_LORA,
    CHAT_REFUSED,
    INTERNAL,
    INTERRUPTED,
    WALL_CLOCK_EXCEEDED,
];

/// What a failed job's exit code means for retries and for its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// The buyer's input caused it: not retried; the order is consumed.
    BuyerInput,
    /// Not the buyer's fault and not curable by running again: not retried; the order is
    /// released so it can pay for a new request.
    Final,
    /// Operator-side or transient (store, host, crash, signal, bug): retried a bounded number
    /// of times; if every attempt fails, the order is released.
    Retryable,
}

impl FailureClass {
    /// Whether the order that paid for the job may pay for another one.
    pub fn releases_order(self) -> bool {
        !matches!(self, FailureClass::BuyerInput)
    }
}

/// Classifies a failed job's exit code (`None`: killed by a signal, or never started).
pub fn classify(code: Option<i32>) -> FailureClass {
    match code {
        Some(c) if BUYER_INPUT_RANGE.contains(&c) => FailureClass::BuyerInput,
        Some(c) if FINAL.contains(&c) => FailureClass::Final,
        _ => FailureClass::Retryable,
    }
}

/// Whether `code` is one this module documents (tests assert the worker has no other).
pub fn is_known(code: i32) -> bool {
    ALL.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buyer_input_codes_are_never_retried_and_consume_the_order() {
        for &c in BUYER_INPUT {
            assert_eq!(classify(Some(c)), FailureClass::BuyerInput, "{c}");
            assert!(!classify(Some(c)).releases_order());
        }
        for c in
            [BAD_SPEC, BAD_WEIGHTS, BAD_CHAT_TEMPLATE, STORE, NO_GPU, INTERNAL, INTERRUPTED, 137, 1]
        {
            assert_eq!(classify(Some(c)), FailureClass::Retryable, "{c}");
            assert!(classify(Some(c)).releases_order());
        }
        assert_eq!(classify(None), FailureClass::Retryable);
        assert_eq!(classify(Some(WALL_CLOCK_EXCEEDED)), FailureClass::Final);
        assert!(FailureClass::Final.releases_order());
    }

    #[test]
    fn the_buyer_input_range_holds_exactly_the_buyer_input_classes() {
        for &c in BUYER_INPUT {
            assert!(BUYER_INPUT_RANGE.contains(&c), "{c}");
        }
        for &c in ALL {
            let buyer = BUYER_INPUT.contains(&c);
            assert_eq!(BUYER_INPUT_RANGE.contains(&c), buyer, "{c}");
        }
        // Every exit status a process can have falls in exactly one class, the range's
        // unused codes included (Batch's prefix rules stop on them too).
        for c in 1..=255 {
            let want = if BUYER_INPUT_RANGE.contains(&c) {
                FailureClass::BuyerInput
            } else if FINAL.contains(&c) {
                FailureClass::Final
            } else {
                FailureClass::Retryable
            };
            assert_eq!(classify(Some(c)), want, "{c}");
        }
    }

    #[test]
    fn codes_are_distinct_and_listed() {
        let mut all = ALL.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), ALL.len());
        assert!(BUYER_INPUT.iter().chain(FINAL).all(|c| is_known(*c)));
    }
}
