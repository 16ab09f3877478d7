//! Shared fixtures: fixed keys, a domain, and receipts of each kind.
#![allow(dead_code)]

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use posthuman_receipts::{
    Receipt, ReceiptDomain, SignedReceipt, prompts_hash, sign, worker_version,
};
use posthuman_types::{EvalParams, Hash32, InferParams, JobKind, JobParams, Sampling, TrainParams};

pub fn key(n: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::repeat_byte(n)).unwrap()
}

pub fn operator() -> PrivateKeySigner {
    key(1)
}

pub fn addr(n: u8) -> Address {
    Address::repeat_byte(n)
}

pub fn h(n: u8) -> Hash32 {
    Hash32([n; 32])
}

pub fn domain() -> ReceiptDomain {
    ReceiptDomain::new(31337, addr(0x11))
}

pub fn train_params() -> TrainParams {
    let mut p = TrainParams::new(100, 3e-4, 4, 64);
    p.checkpoint_every = 10;
    p.seed = 7;
    p
}

/// A train receipt on `model` (datatoken `datatoken`) paid by `order` of `consumer`.
#[allow(clippy::too_many_arguments)]
pub fn train_receipt(
    job: &str,
    model: Address,
    datatoken: Address,
    order: Hash32,
    consumer: Address,
    input: Hash32,
    output: Hash32,
    root: Hash32,
) -> Receipt {
    receipt_with(job, JobParams::Train(train_params()), |r| {
        r.model = model;
        r.datatoken = datatoken;
        r.order_tx = order;
        r.consumer = consumer;
        r.input_weights_hash = input;
        r.output_weights_hash = output;
        r.checkpoint_root = root;
    })
}

/// A receipt of `params`' kind with every field set to something plausible, then `edit`.
pub fn receipt_with(job: &str, params: JobParams, edit: impl FnOnce(&mut Receipt)) -> Receipt {
    let mut r = Receipt::for_job(job, &params);
    r.model = addr(0xa1);
    r.datatoken = addr(0xd1);
    r.order_tx = h(0x77);
    r.consumer = addr(0xc1);
    r.input_weights_hash = h(0x01);
    r.input_data_hash = match &params {
        JobParams::Infer(p) => prompts_hash(&p.prompts),
        _ => h(0xda),
    };
    r.worker_version = worker_version("0.1.0", "0123456789ab", &["x86-v4"]);
    r.output_hash = h(0x0f);
    r.started_at = 1_780_000_000;
    r.ended_at = 1_780_000_600;
    if r.kind == JobKind::Train {
        r.checkpoint_root = h(0xcc);
        r.output_weights_hash = h(0x02);
    }
    edit(&mut r);
    r
}

pub fn infer_params() -> InferParams {
    InferParams {
        prompts: vec!["Once upon a time".into(), "The capital of France is".into()],
        max_new_tokens: 16,
        sampling: Sampling { temperature: 0.8, top_k: Some(40), top_p: Some(0.95), seed: 42 },
        stop: vec!["\n".into()],
        messages: vec![],
    }
}

pub fn eval_params() -> EvalParams {
    EvalParams { context_len: 64, stride: 32, max_tokens: 0, baseline: None }
}

pub fn signed(r: Receipt) -> SignedReceipt {
    sign(r, &operator(), &domain()).unwrap()
}
