//! Proof-of-learning audits (Jia et al., IEEE S&P 2021): re-run sampled training segments
//! between committed checkpoints and compare the resulting training state bit for bit.
//!
//! A train receipt commits to the Merkle root of the checkpoints (the worker's tree,
//! [`crate::merkle`]: each leaf binds the weights hash and the optimizer-state hash after a
//! step) and the interval. Segment `i` runs from checkpoint `i - 1` (the input weights and a
//! fresh optimizer for `i = 0`) to checkpoint `i`. Training is deterministic, so an auditor
//! holding the weights reproduces checkpoint `i`'s weights and optimizer state exactly — or
//! has caught a lie. Both ends of a segment are checked against the commitment, so neither
//! stored weights nor stored moments can be swapped under a re-run.
//!
//! - [`plan_audit`] first checks what needs no compute: the published checkpoint hashes
//!   hash to the committed root, there is one per checkpoint step, and the last one is the
//!   receipt's output weights. Then it samples segments within a compute budget (default
//!   5% of the training steps): the final segment (it binds the output weights), the
//!   segments with the largest weight updates (where spoofed updates show, per Jia et al.),
//!   then random ones from a seeded RNG. The plan reports its cost ratio.
//! - [`audit`] runs the caller's re-execution (the worker's train loop from checkpoint
//!   `i - 1` for the segment's steps) on each sampled segment and reports per segment.

use std::fmt::Display;

use posthuman_types::{Hash32, JobKind};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::VerifiedReceipt;
use crate::merkle::{self, Checkpoint};
use crate::signed::ReceiptError;

/// How many and which segments to re-run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditPolicy {
    /// Re-executed steps as a fraction of the training steps (default 0.05).
    pub budget_ratio: f64,
    /// Segments audited even if they exceed the budget (default 1: a run too short for
    /// the budget is still audited once, and the report shows the true ratio).
    pub min_segments: usize,
    /// Always audit the final segment, which binds the output weights (default true).
    pub include_final: bool,
    /// Fraction of the remaining picks given to the largest weight updates, when update
    /// norms are supplied (default 0.5); the rest are random.
    pub top_update_share: f64,
    /// Seed of the random picks. Choose it after the commitment (e.g. from a later block
    /// hash, or the auditor's secret) so the operator cannot predict it.
    pub seed: u64,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        AuditPolicy {
            budget_ratio: 0.05,
            min_segments: 1,
            include_final: true,
            top_update_share: 0.5,
            seed: 0,
        }
    }
}

impl AuditPolicy {
    /// The default policy with a given seed.
    pub fn seeded(seed: u64) -> Self {
        AuditPolicy { seed, ..Default::default() }
    }

    /// Re-run every segment (a full audit, 100% of the training compute).
    pub fn full() -> Self {
        AuditPolicy { budget_ratio: 1.0, ..Default::default() }
    }
}

/// Why a segment was picked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum Pick {
    Final,
    LargestUpdate { norm: f64 },
    Random,
}

/// One training segment: from the training state at `start_step` (weights `start_hash`,
/// optimizer `start_optimizer`) through `end_step`, which must yield `end_hash` and
/// `end_optimizer`. Proofs tie both ends to the committed root.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Index of the segment's end checkpoint (leaf) in the tree.
    pub index: usize,
    pub start_step: u32,
    pub end_step: u32,
    /// Input weights (segment 0) or the previous checkpoint's weights hash.
    pub start_hash: Hash32,
    /// The previous checkpoint's optimizer-state hash (`None` for segment 0, which starts
    /// from a fresh optimizer).
    pub start_optimizer: Option<Hash32>,
    pub end_hash: Hash32,
    pub end_optimizer: Hash32,
    /// Inclusion proof of the start checkpoint (`None` for segment 0: its start is the
    /// receipt's input weights hash).
    pub start_proof: Option<Vec<(Hash32, bool)>>,
    pub end_proof: Vec<(Hash32, bool)>,
    pub pick: Pick,
}

impl Segment {
    /// Optimizer steps to re-run.
    pub fn steps(&self) -> u32 {
        self.end_step - self.start_step
    }

    /// The committed checkpoint the segment starts from (`None` for segment 0).
    pub fn start(&self) -> Option<Checkpoint> {
        self.start_optimizer.map(|optimizer| Checkpoint {
            step: self.start_step,
            weights: self.start_hash,
            optimizer,
        })
    }

    /// The committed checkpoint the segment must reproduce.
    pub fn end(&self) -> Checkpoint {
        Checkpoint { step: self.end_step, weights: self.end_hash, optimizer: self.end_optimizer }
    }
}

/// The segments to re-run and what that costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditPlan {
    pub job_id: String,
    pub root: Hash32,
    pub steps: u32,
    pub interval: u32,
    pub total_segments: usize,
    /// The picked segments, in step order.
    pub segments: Vec<Segment>,
    /// Steps re-run, and their share of the training steps.
    pub audit_steps: u64,
    pub cost_ratio: f64,
    pub budget_ratio: f64,
}

/// Why a plan cannot be made: each is itself a failed audit (no compute needed to see it),
/// except `NotTrain`, `BadNorms` and `BadPolicy`, which are caller mistakes.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AuditError {
    #[error("only train jobs have checkpoints to audit (this is a {0} job)")]
    NotTrain(JobKind),
    #[error("the receipt's train parameters are unusable: {0}")]
    Params(ReceiptError),
    #[error(
        "{got} checkpoint hashes ({got_optimizer} optimizer-state hashes) published, {expected} checkpoints committed"
    )]
    LeafCount { expected: usize, got: usize, got_optimizer: usize },
    #[error(
        "the published checkpoint hashes hash to {computed}, the receipt commits to {committed}"
    )]
    RootMismatch { committed: Hash32, computed: Hash32 },
    #[error("the last checkpoint {last} is not the receipt's output weights {output}")]
    FinalMismatch { output: Hash32, last: Hash32 },
    #[error("{got} update norms supplied for {expected} segments")]
    BadNorms { expected: usize, got: usize },
    #[error("invalid audit policy: {0}")]
    BadPolicy(String),
}

/// Checks the published checkpoint hashes (weights and optimizer state, in step order, as a
/// train job's `metrics.json` lists them) against a verified train receipt and samples
/// segments under `policy`. `update_norms[i]`, if given, is the size of segment `i`'s
/// weight update (e.g. the L2 norm of checkpoint `i` minus checkpoint `i - 1`).
pub fn plan_audit(
    receipt: &VerifiedReceipt,
    checkpoint_hashes: &[Hash32],
    optimizer_hashes: &[Hash32],
    update_norms: Option<&[f64]>,
    policy: &AuditPolicy,
) -> Result<AuditPlan, AuditError> {
    let r = receipt.body();
    if r.kind != JobKind::Train {
        return Err(AuditError::NotTrain(r.kind));
    }
    let budget_ok = policy.budget_ratio > 0.0 && policy.budget_ratio <= 1.0;
    if !budget_ok || !(0.0..=1.0).contains(&policy.top_update_share) {
        return Err(AuditError::BadPolicy(
            "budget_ratio in (0, 1], top_update_share in [0, 1]".into(),
        ));
    }
    let params = r.train_params().map_err(AuditError::Params)?;
    let steps = merkle::checkpoint_steps(params.steps, r.checkpoint_interval);
    let n = steps.len();
    if checkpoint_hashes.len() != n || optimizer_hashes.len() != n {
        return Err(AuditError::LeafCount {
            expected: n,
            got: checkpoint_hashes.len(),
            got_optimizer: optimizer_hashes.len(),
        });
    }
    let leaves: Vec<Checkpoint> = (0..n)
        .map(|i| Checkpoint {
            step: steps[i],
            weights: checkpoint_hashes[i],
            optimizer: optimizer_hashes[i],
        })
        .collect();
    let computed = merkle::root(&leaves);
    if computed != r.checkpoint_root {
        return Err(AuditError::RootMismatch { committed: r.checkpoint_root, computed });
    }
    let last = checkpoint_hashes[n - 1];
    if last != r.output_weights_hash {
        return Err(AuditError::FinalMismatch { output: r.output_weights_hash, last });
    }
    if let Some(norms) = update_norms.filter(|v| v.len() != n) {
        return Err(AuditError::BadNorms { expected: n, got: norms.len() });
    }

    let picks = pick_segments(n, params.steps, r.checkpoint_interval, update_norms, policy);
    let mut segments: Vec<Segment> = picks
        .into_iter()
        .map(|(i, pick)| {
            let (start_step, start_hash, start_optimizer, start_proof) = if i == 0 {
                (0, r.input_weights_hash, None, None)
            } else {
                let s = leaves[i - 1];
                (s.step, s.weights, Some(s.optimizer), merkle::proof(&leaves, i - 1))
            };
            Segment {
                index: i,
                start_step,
                end_step: steps[i],
                start_hash,
                start_optimizer,
                end_hash: leaves[i].weights,
                end_optimizer: leaves[i].optimizer,
                start_proof,
                end_proof: merkle::proof(&leaves, i).unwrap_or_default(),
                pick,
            }
        })
        .collect();
    segments.sort_by_key(|s| s.index);
    let audit_steps: u64 = segments.iter().map(|s| u64::from(s.steps())).sum();
    Ok(AuditPlan {
        job_id: r.job_id.clone(),
        root: r.checkpoint_root,
        steps: params.steps,
        interval: r.checkpoint_interval,
        total_segments: n,
        segments,
        audit_steps,
        cost_ratio: audit_steps as f64 / f64::from(params.steps.max(1)),
        budget_ratio: policy.budget_ratio,
    })
}

/// Picks `(segment, why)`: Q = max(min_segments, ⌊budget·steps / interval⌋) segments
/// (every segment but the last is `interval` long, the last at most that, so Q of them fit
/// the budget), the final one first, then the largest updates, then random ones.
fn pick_segments(
    n: usize,
    steps: u32,
    interval: u32,
    norms: Option<&[f64]>,
    policy: &AuditPolicy,
) -> Vec<(usize, Pick)> {
    let budget_steps = (policy.budget_ratio * f64::from(steps)).floor() as u64;
    let fit = (budget_steps / u64::from(interval.max(1))) as usize;
    let q = fit.max(policy.min_segments).min(n);
    let mut picked: Vec<(usize, Pick)> = Vec::with_capacity(q);
    let mut taken = vec![false; n];
    if policy.include_final && q > 0 {
        picked.push((n - 1, Pick::Final));
        taken[n - 1] = true;
    }
    if let Some(norms) = norms {
        let want = ((q - picked.len()) as f64 * policy.top_update_share).ceil() as usize;
        let mut by_norm: Vec<usize> = (0..n).filter(|&i| !taken[i]).collect();
        // Largest first; NaN (a broken run) sorts first too, ties by index.
        by_norm.sort_by(|&a, &b| {
            norms[b].partial_cmp(&norms[a]).unwrap_or(std::cmp::Ordering::Less).then(a.cmp(&b))
        });
        for i in by_norm.into_iter().take(want) {
            picked.push((i, Pick::LargestUpdate { norm: norms[i] }));
            taken[i] = true;
        }
    }
    let mut rest: Vec<usize> = (0..n).filter(|&i| !taken[i]).collect();
    rest.shuffle(&mut ChaCha8Rng::seed_from_u64(policy.seed));
    let room = q.saturating_sub(picked.len());
    picked.extend(rest.into_iter().take(room).map(|i| (i, Pick::Random)));
    picked
}

/// What re-running a segment produced: the hashes of the state it started from (as loaded;
/// `start_optimizer` is `None` when it started from a fresh optimizer) and of the state after
/// its last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    pub start_hash: Hash32,
    pub start_optimizer: Option<Hash32>,
    pub end_hash: Hash32,
    pub end_optimizer: Hash32,
}

/// One segment's audit outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum SegmentVerdict {
    /// Re-execution reproduced the committed checkpoint bit for bit.
    Reproduced,
    /// A checkpoint of the plan is not under the committed root (the plan was tampered).
    ProofInvalid,
    /// The weights the segment starts from are not the committed ones (a stored checkpoint
    /// differs from what was committed).
    StartMismatch { committed: Hash32, loaded: Hash32 },
    /// The optimizer state the segment starts from is not the committed one (stored moments
    /// differ from what was committed, or a fresh optimizer where a checkpoint's was due).
    StartOptimizerMismatch { committed: Option<Hash32>, loaded: Option<Hash32> },
    /// Re-execution produced other weights than the committed checkpoint.
    EndMismatch { committed: Hash32, reproduced: Hash32 },
    /// Re-execution reproduced the weights but another optimizer state than the committed one
    /// (the committed moments were not the ones training produced).
    EndOptimizerMismatch { committed: Hash32, reproduced: Hash32 },
    /// The segment could not be re-run (missing checkpoint, worker error).
    ReplayFailed { reason: String },
}

/// One audited segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentResult {
    pub index: usize,
    pub start_step: u32,
    pub end_step: u32,
    pub pick: Pick,
    pub verdict: SegmentVerdict,
}

/// The audit's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub job_id: String,
    pub results: Vec<SegmentResult>,
    pub audit_steps: u64,
    pub total_steps: u32,
    pub cost_ratio: f64,
}

impl AuditReport {
    /// True when every audited segment was reproduced (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.results.is_empty()
            && self.results.iter().all(|r| r.verdict == SegmentVerdict::Reproduced)
    }

    /// The segments that were not reproduced.
    pub fn failures(&self) -> impl Iterator<Item = &SegmentResult> {
        self.results.iter().filter(|r| r.verdict != SegmentVerdict::Reproduced)
    }
}

/// Re-runs each segment of `plan` with `reexecute` and compares the result bit for bit with
/// the commitment. `reexecute` loads the weights at `segment.start_step` (the input weights
/// or the stored checkpoint), trains `segment.steps()` steps from there exactly as the job
/// did, and returns both hashes.
pub fn audit<E: Display>(
    plan: &AuditPlan,
    mut reexecute: impl FnMut(&Segment) -> Result<Replay, E>,
) -> AuditReport {
    let results = plan
        .segments
        .iter()
        .map(|seg| {
            let run = if proofs_hold(plan, seg) { Some(reexecute(seg)) } else { None };
            judge(seg, run)
        })
        .collect();
    report(plan, results)
}

/// [`audit`] with an asynchronous re-execution (the worker's train loop is async).
pub async fn audit_async<E, F, Fut>(plan: &AuditPlan, mut reexecute: F) -> AuditReport
where
    E: Display,
    F: FnMut(&Segment) -> Fut,
    Fut: std::future::Future<Output = Result<Replay, E>>,
{
    let mut results = Vec::with_capacity(plan.segments.len());
    for seg in &plan.segments {
        let run = if proofs_hold(plan, seg) { Some(reexecute(seg).await) } else { None };
        results.push(judge(seg, run));
    }
    report(plan, results)
}

/// Both ends of the segment are under the committed root (segment 0 starts from the input
/// weights, which the receipt names directly).
fn proofs_hold(plan: &AuditPlan, seg: &Segment) -> bool {
    let start_ok = match (seg.start(), &seg.start_proof) {
        (None, None) => seg.index == 0 && seg.start_step == 0,
        (Some(c), Some(p)) => merkle::verify(&plan.root, &c, p),
        _ => false,
    };
    start_ok && merkle::verify(&plan.root, &seg.end(), &seg.end_proof)
}

/// The verdict on one segment: `run` is `None` when its proofs failed (not re-run).
fn judge<E: Display>(seg: &Segment, run: Option<Result<Replay, E>>) -> SegmentResult {
    let verdict = match run {
        None => SegmentVerdict::ProofInvalid,
        Some(Err(e)) => SegmentVerdict::ReplayFailed { reason: e.to_string() },
        Some(Ok(r)) if r.start_hash != seg.start_hash => {
            SegmentVerdict::StartMismatch { committed: seg.start_hash, loaded: r.start_hash }
        }
        Some(Ok(r)) if r.start_optimizer != seg.start_optimizer => {
            SegmentVerdict::StartOptimizerMismatch {
                committed: seg.start_optimizer,
                loaded: r.start_optimizer,
            }
        }
        Some(Ok(r)) if r.end_hash != seg.end_hash => {
            SegmentVerdict::EndMismatch { committed: seg.end_hash, reproduced: r.end_hash }
        }
        Some(Ok(r)) if r.end_optimizer != seg.end_optimizer => {
            SegmentVerdict::EndOptimizerMismatch {
                committed: seg.end_optimizer,
                reproduced: r.end_optimizer,
            }
        }
        Some(Ok(_)) => SegmentVerdict::Reproduced,
    };
    SegmentResult {
        index: seg.index,
        start_step: seg.start_step,
        end_step: seg.end_step,
        pick: seg.pick.clone(),
        verdict,
    }
}

fn report(plan: &AuditPlan, results: Vec<SegmentResult>) -> AuditReport {
    AuditReport {
        job_id: plan.job_id.clone(),
        results,
        audit_steps: plan.audit_steps,
        total_steps: plan.steps,
        cost_ratio: plan.cost_ratio,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthuman_types::job::limits::MAX_CHECKPOINTS;

    /// Issue 13 §3: at the most checkpoints a train job may commit
    /// ([`MAX_CHECKPOINTS`]), the default policy still re-runs at most 5% of the training
    /// steps, and more than the final segment alone.
    #[test]
    fn the_default_policy_costs_at_most_5_percent_at_the_checkpoint_bound() {
        let n = MAX_CHECKPOINTS as usize;
        for every in [1u32, 7, 1000] {
            let steps = MAX_CHECKPOINTS * every;
            let picks = pick_segments(n, steps, every, None, &AuditPolicy::default());
            let rerun = picks.len() as u64 * u64::from(every);
            assert!(rerun * 20 <= u64::from(steps), "{rerun} of {steps} steps re-run");
            assert!(picks.len() > 1, "only {} segment(s) audited", picks.len());
        }
    }
}
