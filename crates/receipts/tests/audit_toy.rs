//! Proof-of-learning audits against planted cheating, on a TOY trainer.
//!
//! THE TRAINING HERE IS A TOY: a deterministic, seeded, 32-parameter "model" trained by a
//! gradient step on a tiny dataset, defined in this file. `audit_worker.rs` runs the same
//! audit against the real worker's train loop; this file complements it with runs long
//! enough (40 segments) to exercise the sampler under the default 5% budget — largest
//! updates, seeded random picks, the cost ratio — in milliseconds. What is under test is the
//! real audit code; the toy only has to be deterministic and sensitive to its inputs, as the
//! worker's training is. The toy optimizer is plain SGD: its state is the step counter, whose
//! hash stands in for the worker's optimizer-state hash in the checkpoint leaves.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use common::*;
use posthuman_receipts::merkle::{self, Checkpoint};
use posthuman_receipts::{
    AuditError, AuditPolicy, Pick, Replay, Segment, SegmentVerdict, VerifiedReceipt, audit,
    bytes_hash, plan_audit, sign,
};
use posthuman_types::{Hash32, JobParams, TrainParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

const DIM: usize = 32;
const STEPS: u32 = 400;
const EVERY: u32 = 10;

/// TOY "training configuration": what the receipt commits to.
#[derive(Clone)]
struct ToyJob {
    data: Vec<f32>,
    lr: f32,
    seed: u64,
}

/// TOY canonical weights hash (the worker's is over named tensors; same idea).
fn toy_hash(w: &[f32]) -> Hash32 {
    let mut d = Sha256::new();
    for x in w {
        d.update(x.to_le_bytes());
    }
    Hash32(d.finalize().into())
}

/// TOY optimizer step `step` (0-based): a seeded sample of the data, a nonlinear gradient,
/// and a cosine learning rate — deterministic, and sensitive to data, lr, seed and step.
fn toy_step(w: &mut [f32], job: &ToyJob, step: u32) {
    let mut rng = ChaCha8Rng::seed_from_u64(job.seed ^ u64::from(step).wrapping_mul(0x9E37_79B9));
    let lr = job.lr * (0.55 + 0.45 * (std::f32::consts::PI * step as f32 / STEPS as f32).cos());
    for x in w.iter_mut() {
        let target = job.data[rng.random_range(0..job.data.len())];
        let g = (*x - target) + 0.1 * x.tanh();
        *x -= lr * g;
    }
}

/// TOY optimizer-state hash after `step` steps (SGD keeps only the step counter).
fn toy_opt_hash(step: u32) -> Hash32 {
    let mut d = Sha256::new();
    d.update(b"toy-sgd");
    d.update(step.to_le_bytes());
    Hash32(d.finalize().into())
}

fn toy_init() -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn toy_data(seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..64).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// What the operator stores and publishes after a run.
struct Run {
    /// Stored checkpoint weights (leaf i), as the auditor will load them.
    stored: Vec<Vec<f32>>,
    /// Published checkpoint hashes (leaves), committed via the receipt's root.
    hashes: Vec<Hash32>,
    /// Published optimizer-state hashes of the same checkpoints.
    opt_hashes: Vec<Hash32>,
    output: Hash32,
}

/// An honest run, with a hook that lets a cheater alter each step or checkpoint.
fn train(job: &ToyJob, mut cheat: impl FnMut(u32, &mut Vec<f32>) -> bool) -> Run {
    let mut w = toy_init();
    let mut stored = Vec::new();
    for step in 0..STEPS {
        // `cheat` returns false to skip the step.
        if cheat(step, &mut w) {
            toy_step(&mut w, job, step);
        }
        if (step + 1) % EVERY == 0 {
            stored.push(w.clone());
        }
    }
    let hashes: Vec<Hash32> = stored.iter().map(|w| toy_hash(w)).collect();
    let opt_hashes = merkle::checkpoint_steps(STEPS, EVERY).into_iter().map(toy_opt_hash).collect();
    let output = *hashes.last().unwrap();
    Run { stored, hashes, opt_hashes, output }
}

fn params(job: &ToyJob) -> TrainParams {
    let mut p = TrainParams::new(STEPS, f64::from(job.lr), 1, 8);
    p.checkpoint_every = EVERY;
    p.seed = job.seed;
    p
}

/// The operator's signed, verified receipt for a run (as published).
fn receipt(job: &ToyJob, run: &Run) -> VerifiedReceipt {
    let steps = merkle::checkpoint_steps(STEPS, EVERY);
    let leaves: Vec<Checkpoint> = (0..steps.len())
        .map(|i| Checkpoint {
            step: steps[i],
            weights: run.hashes[i],
            optimizer: run.opt_hashes[i],
        })
        .collect();
    let r = receipt_with("job-audit", JobParams::Train(params(job)), |r| {
        r.input_weights_hash = toy_hash(&toy_init());
        r.input_data_hash =
            bytes_hash(&job.data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>());
        r.checkpoint_root = merkle::root(&leaves);
        r.output_weights_hash = run.output;
    });
    sign(r, &operator(), &domain()).unwrap().verify(operator().address(), &domain()).unwrap()
}

/// The auditor's re-execution: load the stored start checkpoint, hash it, re-run the
/// segment's steps with the committed configuration (the buyer's dataset, the receipt's
/// lr and seed), hash the result.
fn reexecute<'a>(
    honest: &'a ToyJob,
    stored: &'a [Vec<f32>],
) -> impl FnMut(&Segment) -> Result<Replay, String> + 'a {
    move |seg: &Segment| {
        let mut w = if seg.index == 0 { toy_init() } else { stored[seg.index - 1].clone() };
        let start_hash = toy_hash(&w);
        let start_optimizer = (seg.index > 0).then(|| toy_opt_hash(seg.start_step));
        for step in seg.start_step..seg.end_step {
            toy_step(&mut w, honest, step);
        }
        Ok(Replay {
            start_hash,
            start_optimizer,
            end_hash: toy_hash(&w),
            end_optimizer: toy_opt_hash(seg.end_step),
        })
    }
}

/// Per-segment update norms from the stored checkpoints (what the auditor computes).
fn update_norms(stored: &[Vec<f32>]) -> Vec<f64> {
    let init = toy_init();
    (0..stored.len())
        .map(|i| {
            let prev = if i == 0 { &init } else { &stored[i - 1] };
            prev.iter().zip(&stored[i]).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt()
        })
        .collect()
}

fn honest_job() -> ToyJob {
    ToyJob { data: toy_data(7), lr: 0.05, seed: 7 }
}

/// Plans with the default policy (5% budget) and audits; returns the report.
fn default_audit(job: &ToyJob, run: &Run, seed: u64) -> posthuman_receipts::AuditReport {
    let r = receipt(job, run);
    let norms = update_norms(&run.stored);
    let plan =
        plan_audit(&r, &run.hashes, &run.opt_hashes, Some(&norms), &AuditPolicy::seeded(seed))
            .unwrap();
    assert!(plan.cost_ratio <= 0.05, "ratio {}", plan.cost_ratio);
    audit(&plan, reexecute(&honest_job(), &run.stored))
}

#[test]
fn honest_training_passes_within_five_percent() {
    let job = honest_job();
    let run = train(&job, |_, _| true);
    // Determinism, which the audit relies on.
    assert_eq!(train(&job, |_, _| true).hashes, run.hashes);
    for seed in 0..5 {
        let rep = default_audit(&job, &run, seed);
        assert!(rep.passed(), "{rep:?}");
        // 400 steps, checkpoints every 10: 5% is 20 steps, i.e. two segments.
        assert_eq!(rep.results.len(), 2);
        assert_eq!(rep.audit_steps, 20);
        assert!((rep.cost_ratio - 0.05).abs() < 1e-12);
        assert!(rep.results.iter().any(|r| r.pick == Pick::Final));
        assert!(rep.results.iter().any(|r| matches!(r.pick, Pick::LargestUpdate { .. })));
    }
    // A full audit reproduces every segment too.
    let r = receipt(&job, &run);
    let plan = plan_audit(&r, &run.hashes, &run.opt_hashes, None, &AuditPolicy::full()).unwrap();
    assert_eq!(plan.segments.len(), 40);
    assert!((plan.cost_ratio - 1.0).abs() < 1e-12);
    assert!(audit(&plan, reexecute(&job, &run.stored)).passed());
}

#[test]
fn tampered_checkpoint_is_caught() {
    // The operator replaced the weights at checkpoint 17 (step 170) with other weights and
    // trained on from them, committing hashes of what it stored: the tree is consistent,
    // but segment 17 does not reproduce, and its update is the largest.
    let job = honest_job();
    let run = train(&job, |step, w| {
        if step == 169 {
            toy_step(w, &honest_job(), step);
            for x in w.iter_mut() {
                *x += 2.0;
            }
            return false;
        }
        true
    });
    let rep = default_audit(&job, &run, 0);
    assert!(!rep.passed());
    let bad: Vec<_> = rep.failures().collect();
    assert_eq!(bad.len(), 1, "{rep:?}");
    assert_eq!(bad[0].index, 16);
    assert!(matches!(bad[0].pick, Pick::LargestUpdate { .. }));
    assert!(matches!(bad[0].verdict, SegmentVerdict::EndMismatch { .. }));

    // A stored checkpoint that differs from the committed hash is caught on load.
    let mut stored = run.stored.clone();
    stored[38][0] += 1e-6;
    let r = receipt(&job, &run);
    let plan = plan_audit(&r, &run.hashes, &run.opt_hashes, None, &AuditPolicy::seeded(3)).unwrap();
    let rep = audit(&plan, reexecute(&job, &stored));
    let last = rep.results.last().unwrap();
    assert_eq!(last.pick, Pick::Final);
    assert!(matches!(last.verdict, SegmentVerdict::StartMismatch { .. }), "{rep:?}");
}

#[test]
fn skipped_steps_are_caught() {
    // One step in every ten skipped (10% less compute), the receipt still claims 400 steps.
    let job = honest_job();
    let run = train(&job, |step, _| step % EVERY != 3);
    for seed in 0..5 {
        let rep = default_audit(&job, &run, seed);
        assert!(!rep.passed());
        assert!(rep.failures().all(|r| matches!(r.verdict, SegmentVerdict::EndMismatch { .. })));
    }
}

#[test]
fn a_different_dataset_is_caught() {
    let cheat = ToyJob { data: toy_data(8), ..honest_job() };
    let run = train(&cheat, |_, _| true);
    // The receipt claims the buyer's dataset; the auditor re-runs with it.
    let rep = default_audit(&honest_job(), &run, 1);
    assert!(!rep.passed());
    assert_eq!(rep.failures().count(), rep.results.len());
}

#[test]
fn a_different_learning_rate_is_caught() {
    let cheat = ToyJob { lr: 0.051, ..honest_job() };
    let run = train(&cheat, |_, _| true);
    let rep = default_audit(&honest_job(), &run, 2);
    assert!(!rep.passed());
    assert_eq!(rep.failures().count(), rep.results.len());
}

#[test]
fn swapped_final_weights_are_caught() {
    let job = honest_job();
    let honest = train(&job, |_, _| true);
    let other = toy_hash(&[0.25f32; DIM]);

    // (a) The receipt names other output weights than the last committed checkpoint:
    // caught without any compute.
    let mut run = train(&job, |_, _| true);
    run.output = other;
    let r = receipt(&job, &run);
    let err =
        plan_audit(&r, &run.hashes, &run.opt_hashes, None, &AuditPolicy::default()).unwrap_err();
    assert_eq!(err, AuditError::FinalMismatch { output: other, last: honest.output });

    // (b) The last checkpoint is swapped too (tree rebuilt): the final segment, always
    // audited, does not reproduce.
    let mut run = train(&job, |_, _| true);
    *run.hashes.last_mut().unwrap() = other;
    *run.stored.last_mut().unwrap() = vec![0.25f32; DIM];
    run.output = other;
    let rep = default_audit(&job, &run, 4);
    let bad: Vec<_> = rep.failures().collect();
    assert_eq!(bad.len(), 1, "{rep:?}");
    assert_eq!(bad[0].pick, Pick::Final);
    assert_eq!(
        bad[0].verdict,
        SegmentVerdict::EndMismatch { committed: other, reproduced: honest.output }
    );
}

#[test]
fn published_hashes_must_match_the_commitment() {
    let job = honest_job();
    let run = train(&job, |_, _| true);
    let r = receipt(&job, &run);
    let mut hashes = run.hashes.clone();
    hashes[5] = h(9);
    assert!(matches!(
        plan_audit(&r, &hashes, &run.opt_hashes, None, &AuditPolicy::default()),
        Err(AuditError::RootMismatch { .. })
    ));
    assert_eq!(
        plan_audit(&r, &run.hashes[1..], &run.opt_hashes, None, &AuditPolicy::default())
            .unwrap_err(),
        AuditError::LeafCount { expected: 40, got: 39, got_optimizer: 40 }
    );
    // A plan edited after it was made (a leaf swapped) fails its proofs.
    let mut plan =
        plan_audit(&r, &run.hashes, &run.opt_hashes, None, &AuditPolicy::seeded(5)).unwrap();
    plan.segments[0].end_hash = h(9);
    let rep = audit(&plan, reexecute(&job, &run.stored));
    assert_eq!(rep.results[0].verdict, SegmentVerdict::ProofInvalid);
}

#[test]
fn sampling_respects_the_budget_and_the_seed() {
    let job = honest_job();
    let run = train(&job, |_, _| true);
    let r = receipt(&job, &run);
    let norms = update_norms(&run.stored);
    let picks = |seed: u64, ratio: f64| {
        let pol = AuditPolicy { budget_ratio: ratio, ..AuditPolicy::seeded(seed) };
        let plan = plan_audit(&r, &run.hashes, &run.opt_hashes, Some(&norms), &pol).unwrap();
        assert!(plan.cost_ratio <= ratio + 1e-12, "{} > {ratio}", plan.cost_ratio);
        plan.segments.iter().map(|s| s.index).collect::<Vec<_>>()
    };
    assert_eq!(picks(1, 0.2), picks(1, 0.2));
    assert_ne!(picks(1, 0.2), picks(2, 0.2));
    assert_eq!(picks(1, 0.2).len(), 8);
    // The largest updates are early in training (the toy converges): they are picked.
    let mut by_norm: Vec<usize> = (0..norms.len()).collect();
    by_norm.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]));
    let p = picks(9, 0.2);
    for i in &by_norm[..4] {
        assert!(p.contains(i), "top update {i} not in {p:?}");
    }
    // A run too short for the budget is still audited once, and says what it costs.
    let short = AuditPolicy { budget_ratio: 0.01, ..AuditPolicy::default() };
    let plan = plan_audit(&r, &run.hashes, &run.opt_hashes, None, &short).unwrap();
    assert_eq!(plan.segments.len(), 1);
    assert!((plan.cost_ratio - 0.025).abs() < 1e-12);
}

#[test]
fn committed_optimizer_states_must_be_the_ones_training_produced() {
    // The operator committed (and stored) other moments at checkpoint 20 than its training
    // produced, e.g. to steer later segments: the weights still reproduce, the optimizer
    // state does not, at both ends it touches.
    let job = honest_job();
    let mut run = train(&job, |_, _| true);
    run.opt_hashes[20] = h(7);
    let r = receipt(&job, &run);
    let plan = plan_audit(&r, &run.hashes, &run.opt_hashes, None, &AuditPolicy::full()).unwrap();
    let rep = audit(&plan, reexecute(&job, &run.stored));
    let bad: Vec<_> = rep.failures().collect();
    assert_eq!(bad.len(), 2, "{rep:?}");
    assert_eq!(
        bad[0].verdict,
        SegmentVerdict::EndOptimizerMismatch { committed: h(7), reproduced: toy_opt_hash(210) }
    );
    assert_eq!(
        bad[1].verdict,
        SegmentVerdict::StartOptimizerMismatch {
            committed: Some(h(7)),
            loaded: Some(toy_opt_hash(210))
        }
    );
    // Without the optimizer hashes the published list does not match the commitment.
    let stale = vec![Hash32::ZERO; run.hashes.len()];
    assert!(matches!(
        plan_audit(&r, &run.hashes, &stale, None, &AuditPolicy::default()),
        Err(AuditError::RootMismatch { .. })
    ));
}
