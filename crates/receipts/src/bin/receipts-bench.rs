//! Receipt figures: size (JSON and EIP-712 encoding), signing and verification time
//! (median of 1,000), and checkpoint Merkle proof verification time.
//!
//! Run: `cargo run --release -p posthuman-receipts --bin receipts-bench`.

use std::time::Instant;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use anyhow::Result;
use posthuman_receipts::merkle::Checkpoint;
use posthuman_receipts::{
    AuditPolicy, Receipt, ReceiptDomain, SignedReceipt, json_hash, merkle, plan_audit,
    receipt_params, sign, worker_version,
};
use posthuman_types::{Hash32, JobKind, JobParams, TrainParams};

const RUNS: usize = 1000;

fn median_us(mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..RUNS)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[RUNS / 2]
}

/// A made-up checkpoint `i` after `step` (the bench times hashing, not training).
fn leaf(i: usize, step: u32) -> Checkpoint {
    Checkpoint {
        step,
        weights: Hash32([(i % 251) as u8; 32]),
        optimizer: Hash32([(i % 241) as u8 ^ 0x80; 32]),
    }
}

fn main() -> Result<()> {
    let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(1))?;
    let domain = ReceiptDomain::new(31337, Address::repeat_byte(0x11));
    let mut p = TrainParams::new(2000, 3e-4, 8, 256);
    p.checkpoint_every = 20;
    let params = receipt_params(&JobParams::Train(p));
    let receipt = Receipt {
        job_id: "job-0123456789abcdef".into(),
        kind: JobKind::Train,
        model: Address::repeat_byte(0xa1),
        datatoken: Address::repeat_byte(0xd1),
        order_tx: Hash32([0x77; 32]),
        consumer: Address::repeat_byte(0xc1),
        input_weights_hash: Hash32([1; 32]),
        input_data_hash: Hash32([2; 32]),
        worker_version: worker_version(env!("CARGO_PKG_VERSION"), "0123456789ab", &["x86-v4"]),
        params_hash: json_hash(&params),
        params,
        seed: 0,
        checkpoint_root: Hash32([3; 32]),
        checkpoint_interval: 20,
        output_weights_hash: Hash32([4; 32]),
        output_hash: Hash32([5; 32]),
        started_at: 1_780_000_000,
        ended_at: 1_780_000_600,
    };
    let signed = sign(receipt.clone(), &key, &domain)?;
    let json = serde_json::to_string(&signed)?;
    let back: SignedReceipt = serde_json::from_str(&json)?;

    println!("receipt size");
    println!("  signed receipt, compact JSON     {:>6} bytes", json.len());
    println!(
        "  signed receipt, pretty JSON      {:>6} bytes",
        serde_json::to_string_pretty(&signed)?.len()
    );
    println!("  EIP-712 encodeData (17 fields)   {:>6} bytes", receipt.eip712_encoding().len());
    println!("  signature                        {:>6} bytes", 65);
    println!("  on chain: receipt hash           {:>6} bytes", 32);

    let sign_us = median_us(|| {
        let _ = std::hint::black_box(sign(receipt.clone(), &key, &domain));
    });
    let verify_us = median_us(|| {
        let _ = std::hint::black_box(back.verify(key.address(), &domain));
    });
    let hash_us = median_us(|| {
        let _ = std::hint::black_box(receipt.receipt_hash(&domain));
    });
    println!("\ntimes (median of {RUNS})");
    println!("  receipt hash (EIP-712 digest)    {hash_us:>8.1} µs");
    println!("  sign (checks + digest + ECDSA)   {sign_us:>8.1} µs");
    println!("  verify (checks + ecrecover)      {verify_us:>8.1} µs");

    println!("\ncheckpoint Merkle proofs (median of {RUNS} verifications)");
    for n in [10usize, 100, 1000, 5000] {
        let leaves: Vec<Checkpoint> = (0..n).map(|i| leaf(i, (i as u32 + 1) * 10)).collect();
        let root = merkle::root(&leaves);
        let i = n / 3;
        let proof = merkle::proof(&leaves, i).unwrap_or_default();
        let us = median_us(|| {
            assert!(merkle::verify(&root, &leaves[i], &proof));
        });
        println!("  {n:>5} checkpoints: {:>2} siblings  {us:>8.2} µs", proof.len());
    }

    println!("\naudit cost at the default policy (5% budget, final segment always, min 1)");
    println!("  steps  every  segments  audited  steps re-run  ratio");
    for (steps, every) in
        [(24u32, 4u32), (200, 10), (400, 10), (1000, 10), (2000, 20), (10_000, 50)]
    {
        let mut p = TrainParams::new(steps, 3e-4, 8, 256);
        p.checkpoint_every = every;
        let leaves: Vec<Checkpoint> = merkle::checkpoint_steps(steps, every)
            .into_iter()
            .enumerate()
            .map(|(i, s)| leaf(i, s))
            .collect();
        let mut r = Receipt::for_job("job-cost", &JobParams::Train(p));
        r.worker_version = receipt.worker_version.clone();
        r.checkpoint_root = merkle::root(&leaves);
        r.output_weights_hash = leaves[leaves.len() - 1].weights;
        let v = sign(r, &key, &domain)?.verify(key.address(), &domain)?;
        let weights: Vec<Hash32> = leaves.iter().map(|l| l.weights).collect();
        let optimizer: Vec<Hash32> = leaves.iter().map(|l| l.optimizer).collect();
        let plan = plan_audit(&v, &weights, &optimizer, None, &AuditPolicy::default())?;
        println!(
            "  {steps:>5}  {every:>5}  {:>8}  {:>7}  {:>12}  {:>5.1}%",
            plan.total_segments,
            plan.segments.len(),
            plan.audit_steps,
            100.0 * plan.cost_ratio
        );
    }
    Ok(())
}
