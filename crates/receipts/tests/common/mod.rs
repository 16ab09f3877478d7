//! Shared fixtures: fixed keys, a domain, and receipts of each kind.
#![allow(dead_code)]

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use posthuman_receipts::{
    Receipt, ReceiptDomain, SignedReceipt, json_hash, prompts_hash, receipt_params, sign,
    worker_version,
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
        r.checkpoint_interval = 10;
        r.seed = 7;
    })
}

/// A receipt of `params`' kind with every field set to something plausible, then `edit`.
pub fn receipt_with(job: &str, params: JobParams, edit: impl FnOnce(&mut Receipt)) -> Receipt {
    let kind = params.kind();
    let params_v = receipt_params(&params);
    let mut r = Receipt {
        job_id: job.to_string(),
        kind,
        model: addr(0xa1),
        datatoken: addr(0xd1),
        order_tx: h(0x77),
        consumer: addr(0xc1),
        input_weights_hash: h(0x01),
        input_data_hash: match &params {
            JobParams::Infer(p) => prompts_hash(&p.prompts),
            _ => h(0xda),
        },
        worker_version: worker_version("0.1.0", "0123456789ab", &["x86-v4"]),
        params_hash: json_hash(&params_v),
        params: params_v,
        seed: 0,
        checkpoint_root: Hash32::ZERO,
        checkpoint_interval: 0,
        output_weights_hash: Hash32::ZERO,
        output_hash: h(0x0f),
        started_at: 1_780_000_000,
        ended_at: 1_780_000_600,
    };
    if kind == JobKind::Train {
        r.checkpoint_root = h(0xcc);
        r.checkpoint_interval = 10;
        r.output_weights_hash = h(0x02);
        r.seed = 7;
    }
    if let JobParams::Infer(p) = &params {
        r.seed = p.sampling.seed;
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
    }
}

pub fn eval_params() -> EvalParams {
    EvalParams { context_len: 64, stride: 32, max_tokens: 0, baseline: None }
}

pub fn signed(r: Receipt) -> SignedReceipt {
    sign(r, &operator(), &domain()).unwrap()
}
