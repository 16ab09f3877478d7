//! Signed job receipts (EIP-712), inference attestations, public verification against the
//! chain, and proof-of-learning audits.
//!
//! Where it sits: when a job completes, the functions layer builds a [`Receipt`] from the
//! spec, the order and the worker's public outputs and signs it with the operator key
//! ([`sign`]). For a train job, [`Receipt::receipt_hash`] — the EIP-712 digest — is what
//! `ModelLineage.commitTraining` records before the derived model is revealed. Anyone can
//! then check a receipt against the chain ([`verify_job`], [`verify_lineage`],
//! [`verify_evaluation`]) without the weights, and an auditor holding the weights re-runs
//! sampled training segments ([`plan_audit`], then [`audit`] or [`audit_async`]).
//!
//! Modules:
//! - [`canonical`]: the content hashes receipts commit to (canonical JSON, prompts, outputs,
//!   job ids) and the worker version string.
//! - [`receipt`]: the [`Receipt`], its EIP-712 struct and domain, and its consistency rules.
//! - [`signed`]: signing and verification with precise failure reasons ([`ReceiptError`]).
//! - [`attestation`]: per-completion inference attestations.
//! - [`facts`]: the [`ChainFacts`] trait (what verification reads from the chain) and a
//!   serialisable snapshot of such facts.
//! - [`request`]: the EIP-712 struct of signed API requests (submit, publish, reads), signed
//!   by the CLI and the storefront and checked by the API, under the same domain.
//! - [`json`]: JSON text read without serde's array form of structs (the storefront's size).
//! - [`report`]: verification reports: named checks with pass / fail (reason) / skipped.
//! - [`verify`]: public verification against [`ChainFacts`].
//! - [`merkle`]: the worker's checkpoint Merkle tree (the very source file of
//!   `batch-worker/src/merkle.rs`, compiled here too, so there is one definition).
//! - [`audit`]: proof-of-learning audit plans (segment sampling within a compute budget)
//!   and the re-execution driver.
//! - [`chain_facts`] (feature `chain`): [`ChainFacts`] over the chain crate's client.
//! - [`rpc_facts`]: the same facts over raw JSON-RPC through any transport (the browser's
//!   `fetch`), and [`gather`]: running a verification against a source that cannot be asked
//!   from inside it, fetching exactly the facts it reads.
//!
//! Everything except `chain_facts` is pure and builds for `wasm32-unknown-unknown`: the
//! storefront (`web/`) runs these very checks in the browser.

// Unit tests may unwrap (a panic is the failure report).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod attestation;
pub mod audit;
pub mod canonical;
#[cfg(feature = "chain")]
pub mod chain_facts;
pub mod facts;
pub mod fee_binding;
pub mod gather;
pub mod json;
pub mod receipt;
pub mod report;
pub mod request;
pub mod rpc_facts;
pub mod signed;
pub mod verify;

/// The checkpoint Merkle tree, compiled from the worker's own source so that receipts,
/// audits and the worker can never disagree on it.
/// (Lints that the worker's own crate answers for are not re-litigated here.)
#[path = "../../../batch-worker/src/merkle.rs"]
#[allow(clippy::manual_is_multiple_of)]
pub mod merkle;

pub use attestation::{Attestation, SignedAttestation, VerifiedAttestation, sampling_params};
pub use audit::{
    AuditError, AuditPlan, AuditPolicy, AuditReport, Pick, Replay, Segment, SegmentResult,
    SegmentVerdict, audit, audit_async, plan_audit,
};
pub use canonical::{
    bytes_hash, canonical_json, dataset_hash, job_id_hash, json_hash, messages_hash, prompt_hash,
    prompts_hash, receipt_params, salted_hash, text_hash, worker_version,
};
pub use facts::{
    ChainFacts, FactsError, FactsSnapshot, ModelFacts, OperatorTerm, OrderFacts,
    TrainingCommitment, held_operator_role,
};
pub use fee_binding::{FeeBinding, terms_hash};
pub use gather::{Answer, Query, Recorder};
pub use receipt::{JobReceipt, Receipt, ReceiptDomain};
pub use report::{Check, CheckKind, LineageReport, LinkReport, Outcome, Report};
pub use request::{RequestError, SignableRequest};
pub use rpc_facts::{JsonRpc, RpcFacts};
pub use signed::{ReceiptError, Signable, Signed, Verified, parse_signature, sign, sign_async};
pub use verify::{verify_evaluation, verify_job, verify_lineage};

/// The address type of this crate's API (re-exported so that callers without their own
/// `alloy` dependency, like the storefront, name the same type).
pub use alloy::primitives::Address;

/// A signed job receipt.
pub type SignedReceipt = Signed<Receipt>;
/// A job receipt whose signature, signer, domain and consistency were checked.
pub type VerifiedReceipt = Verified<Receipt>;
