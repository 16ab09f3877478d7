//! Learning-rate schedule: linear warmup, then cosine decay to `min_lr_ratio × peak`.

use posthuman_types::TrainParams;

/// The learning rate of optimizer step `step` (0-based) of a run with these parameters.
///
/// Warmup ramps `peak × (step + 1) / warmup` so step 0 already moves the weights; the cosine
/// phase spans the remaining steps and ends exactly at the floor on the last step.
pub fn lr_at(p: &TrainParams, step: u32) -> f64 {
    let peak = p.learning_rate;
    let floor = peak * p.min_lr_ratio;
    if step < p.warmup_steps {
        return peak * f64::from(step + 1) / f64::from(p.warmup_steps);
    }
    let decay_steps = p.steps.saturating_sub(p.warmup_steps).saturating_sub(1);
    if decay_steps == 0 {
        return peak;
    }
    let progress = f64::from(step - p.warmup_steps) / f64::from(decay_steps);
    let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos());
    floor + (peak - floor) * cos
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_floor() {
        let mut p = TrainParams::new(110, 1e-3, 1, 8);
        p.warmup_steps = 10;
        p.min_lr_ratio = 0.1;
        assert!((lr_at(&p, 0) - 1e-4).abs() < 1e-12);
        assert!((lr_at(&p, 9) - 1e-3).abs() < 1e-12);
        assert!((lr_at(&p, 10) - 1e-3).abs() < 1e-12);
        assert!((lr_at(&p, 109) - 1e-4).abs() < 1e-12);
        let mid = lr_at(&p, 60);
        assert!(mid < 1e-3 && mid > 1e-4);
        for s in 10..109 {
            assert!(lr_at(&p, s + 1) <= lr_at(&p, s));
        }
    }
}
