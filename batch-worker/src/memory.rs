//! Preflight memory estimate: refuse a job before starting when it cannot fit.
//!
//! The estimate is deliberately an upper bound of what the f32 CPU path allocates: weights,
//! the gradient store plus the accumulated gradients and both AdamW moments (training), the
//! activations the backward pass keeps per layer (with the T×T attention scores per head),
//! the logits with their gradient, and the token stream.

use posthuman_gpt2::Config;

const F32: u64 = 4;

/// Bytes a train job needs: `batch` sequences of `context` tokens per micro-batch.
pub fn train_bytes(cfg: &Config, batch: u64, context: u64, dataset_tokens: u64) -> u64 {
    let p = cfg.num_params() as u64;
    let (c, l, h, v) =
        (cfg.n_embd as u64, cfg.n_layer as u64, cfg.n_head as u64, cfg.vocab_size as u64);
    let f = cfg.inner_dim() as u64;
    let bt = batch * context;
    // weights + grad store + accumulated grads + m + v + one update scratch
    let params = 6 * p * F32;
    // per layer: ln outs, qkv, attention out, proj, residuals, mlp pre/post-activation, plus
    // the attention probabilities (B·H·T·T) kept for backward
    let per_layer = bt * (12 * c + 2 * f) + batch * h * context * context;
    let acts = l * per_layer * F32 * 2;
    // logits and their gradient, and the final hidden state
    let head = bt * (2 * v + 2 * c) * F32;
    params + acts + head + dataset_tokens * 2 * F32
}

/// Bytes an inference or evaluation job needs with `batch` sequences of `context` tokens.
pub fn forward_bytes(cfg: &Config, batch: u64, context: u64, dataset_tokens: u64) -> u64 {
    let p = cfg.num_params() as u64;
    let (c, l, h, v) =
        (cfg.n_embd as u64, cfg.n_layer as u64, cfg.n_head as u64, cfg.vocab_size as u64);
    let f = cfg.inner_dim() as u64;
    let bt = batch * context;
    let kv = 2 * l * bt * c;
    let acts = bt * (6 * c + f) + batch * h * context * context;
    p * F32 + (kv + acts + 2 * bt * v) * F32 + dataset_tokens * 2 * F32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bench_config_fits_in_a_gib() {
        // The benchmark model trains in well under 1 GiB at batch 8.
        let cfg = Config::new(8000, 256, 256, 4, 4);
        let b = train_bytes(&cfg, 8, 256, 300_000);
        assert!(b > 100 << 20 && b < 1 << 30, "{b}");
        assert!(forward_bytes(&cfg, 1, 256, 0) < train_bytes(&cfg, 1, 256, 0));
    }
}
