//! Next-token choice: greedy, or temperature with top-k and top-p, from a seeded RNG.
//!
//! Everything is computed in f64 over a sorted candidate list with index tie-breaks, so the
//! same logits, settings and RNG state always give the same token.

use rand::Rng;
use rand_chacha::ChaCha20Rng;

use posthuman_types::Sampling;

/// The index of the largest logit (the lowest index among equals).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Picks the next token from `logits` (only the first `vocab` entries are eligible, so
/// padding rows of a larger embedding table are never sampled).
pub fn sample(logits: &[f32], vocab: usize, s: &Sampling, rng: &mut ChaCha20Rng) -> u32 {
    let logits = &logits[..vocab.min(logits.len()).max(1)];
    if s.temperature <= 0.0 || s.top_k == Some(1) {
        return argmax(logits);
    }
    let mut cand: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| (i, f64::from(v) / s.temperature))
        .collect();
    if cand.is_empty() {
        return 0;
    }
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(k) = s.top_k {
        cand.truncate((k as usize).max(1));
    }
    let max = cand[0].1;
    let mut probs: Vec<f64> = cand.iter().map(|(_, v)| (v - max).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = s.top_p {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        cand.truncate(keep);
        let t: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= t);
    }
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return cand[i].0 as u32;
        }
    }
    cand[cand.len() - 1].0 as u32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn s(temperature: f64, top_k: Option<u32>, top_p: Option<f64>) -> Sampling {
        Sampling { temperature, top_k, top_p, seed: 0 }
    }

    #[test]
    fn greedy_and_filters() {
        let logits = [0.1f32, 3.0, 2.9, -1.0];
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert_eq!(sample(&logits, 4, &s(0.0, None, None), &mut rng), 1);
        // top-k 2 never yields tokens 0 or 3.
        for _ in 0..200 {
            let t = sample(&logits, 4, &s(1.0, Some(2), None), &mut rng);
            assert!(t == 1 || t == 2);
        }
        // A tiny nucleus keeps only the best token.
        for _ in 0..50 {
            assert_eq!(sample(&logits, 4, &s(1.0, None, Some(0.01)), &mut rng), 1);
        }
        // Only the first `vocab` logits are eligible.
        assert_eq!(sample(&[0.0, 1.0, 9.0], 2, &s(0.0, None, None), &mut rng), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| sample(&logits, 50, &s(1.3, Some(20), Some(0.9)), &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }
}
