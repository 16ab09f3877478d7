//! Preflight memory estimate: refuse a job before starting when it cannot fit.
//!
//! The estimate is deliberately an upper bound of what the f32 CPU path allocates: weights,
//! the gradient store plus the accumulated gradients and both AdamW moments (training), the
//! activations the backward pass keeps per layer (with the T×T attention scores per head),
//! the logits with their gradient, and the token stream. Per family: GPT-2's graph-free step
//! keeps the fused kernels' saved tensors; Llama's autograd graph keeps more (RMSNorm,
//! RoPE and SiLU-gate intermediates, the scores before and after softmax), and its keys and
//! values are `kv_width` wide under grouped-query attention. Qwen2's biased q/k/v and Qwen3's
//! q/k norms keep one more copy of q and k each; Qwen3's queries are heads × head_dim wide,
//! which may exceed the hidden size.

use posthuman_gpt2::family::{AnyConfig, Family};

const F32: u64 = 4;

/// Width of the queries: heads × head_dim (the hidden size, except where Qwen3 says otherwise).
fn q_width(cfg: &AnyConfig) -> u64 {
    match cfg {
        AnyConfig::Llama { cfg, .. } => (cfg.num_attention_heads * cfg.head_dim) as u64,
        AnyConfig::Gpt2(_) => cfg.dims().d_model,
    }
}

/// Bytes a train job needs: `batch` sequences of `context` tokens per micro-batch.
pub fn train_bytes(cfg: &AnyConfig, batch: u64, context: u64, dataset_tokens: u64) -> u64 {
    let d = cfg.dims();
    let (c, l, h, v, f, kv) = (d.d_model, d.layers, d.heads, d.vocab, d.ffn, d.kv_width);
    let q = q_width(cfg);
    let bt = batch * context;
    // weights + grad store + accumulated grads + m + v + one update scratch
    let params = 6 * d.params * F32;
    let per_layer = match cfg.family() {
        // ln outs, qkv, attention out, proj, residuals, mlp pre/post-activation, plus the
        // attention probabilities (B·H·T·T) kept for backward
        Family::Gpt2 => bt * (12 * c + 2 * f) + batch * h * context * context,
        // norms, q and RoPE'd q, k/v before and after RoPE and GQA expansion, o, residuals,
        // gate, up, silu(gate), their product; scores before and after softmax
        Family::Llama | Family::Mistral => {
            bt * (12 * c + 4 * q + 6 * kv + 5 * f) + 2 * batch * h * context * context
        }
        // Llama's, plus q and k before their bias (Qwen2) or norm (Qwen3)
        Family::Qwen2 | Family::Qwen3 => {
            bt * (12 * c + 5 * q + 7 * kv + 5 * f) + 2 * batch * h * context * context
        }
    };
    let acts = l * per_layer * F32 * 2;
    // logits and their gradient, and the final hidden state
    let head = bt * (2 * v + 2 * c) * F32;
    params + acts + head + dataset_tokens * 2 * F32
}

/// Bytes a LoRA train job needs when its adapter has at most `adapter_params` values: the
/// frozen weights and one merged copy (each checkpoint hashes the effective weights), the
/// adapter with its gradients and both moments, and the autograd graph's activations (LoRA
/// trains on the graph for every family, so GPT-2 is counted with Llama's graph intermediates,
/// plus the branches' rank-wide products, bounded by the widest layer).
pub fn lora_train_bytes(
    cfg: &AnyConfig,
    batch: u64,
    context: u64,
    dataset_tokens: u64,
    adapter_params: u64,
) -> u64 {
    let d = cfg.dims();
    let (c, l, h, v, f, kv) = (d.d_model, d.layers, d.heads, d.vocab, d.ffn, d.kv_width);
    let q = q_width(cfg);
    let bt = batch * context;
    let params = (2 * d.params + 6 * adapter_params) * F32;
    let extra = match cfg.family() {
        Family::Qwen2 | Family::Qwen3 => bt * (q + kv),
        Family::Gpt2 | Family::Llama | Family::Mistral => 0,
    };
    let per_layer =
        bt * (12 * c + 4 * q + 6 * kv + 5 * f) + extra + 2 * batch * h * context * context;
    let acts = l * per_layer * F32 * 2;
    let head = bt * (2 * v + 2 * c) * F32;
    params + acts + head + dataset_tokens * 2 * F32
}

/// Bytes an inference or evaluation job needs with `batch` sequences of `context` tokens.
pub fn forward_bytes(cfg: &AnyConfig, batch: u64, context: u64, dataset_tokens: u64) -> u64 {
    let d = cfg.dims();
    let (c, l, h, v, f) = (d.d_model, d.layers, d.heads, d.vocab, d.ffn);
    let q = q_width(cfg);
    let bt = batch * context;
    let kv = 2 * l * bt * d.kv_width;
    let acts = match cfg.family() {
        Family::Gpt2 => bt * (6 * c + f) + batch * h * context * context,
        Family::Llama | Family::Mistral | Family::Qwen2 | Family::Qwen3 => {
            bt * (6 * c + 2 * q + 3 * f) + 2 * batch * h * context * context
        }
    };
    d.params * F32 + (kv + acts + 2 * bt * v) * F32 + dataset_tokens * 2 * F32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use posthuman_gpt2::Config;

    /// A LoRA job keeps the frozen weights (and a merged copy), not their gradients and
    /// moments: on a model whose weights dominate, it needs well under the full fine-tune.
    #[test]
    fn lora_needs_less_than_a_full_fine_tune_where_weights_dominate() {
        let cfg = AnyConfig::Gpt2(Config::new(50_257, 1024, 768, 12, 12));
        let adapter = 8 * cfg.lora_base().in_out_sum();
        let (full, lora) =
            (train_bytes(&cfg, 1, 128, 0), lora_train_bytes(&cfg, 1, 128, 0, adapter));
        assert!(lora * 2 < full, "LoRA {lora} vs full {full}");
        assert!(lora > 2 * cfg.dims().params * F32, "the weights twice at least");
    }

    #[test]
    fn bench_config_fits_in_a_gib() {
        // The benchmark model trains in well under 1 GiB at batch 8.
        let cfg = AnyConfig::Gpt2(Config::new(8000, 256, 256, 4, 4));
        let b = train_bytes(&cfg, 8, 256, 300_000);
        assert!(b > 100 << 20 && b < 1 << 30, "{b}");
        assert!(forward_bytes(&cfg, 1, 256, 0) < train_bytes(&cfg, 1, 256, 0));
    }

    #[test]
    fn a_tinyllama_shape_needs_more_than_its_weights_and_optimizer() {
        // TinyLlama 1.1B: 22 layers, 2048 wide, 32 heads / 4 kv heads, ffn 5632, vocab 32000.
        let json = serde_json::json!({
            "model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
            "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 4, "max_position_embeddings": 2048,
        });
        let cfg = AnyConfig::from_json(&json.to_string()).unwrap();
        let p = cfg.num_params() as u64;
        assert!((1_000_000_000..1_200_000_000).contains(&p), "{p}");
        let t = train_bytes(&cfg, 1, 512, 0);
        assert!(t > 6 * p * 4, "{t}");
        // Inference alone fits 24 GB; full fine-tuning in f32 with AdamW does not.
        assert!(forward_bytes(&cfg, 1, 2048, 0) < 24 << 30);
        assert!(t > 24 << 30);
    }

    #[test]
    fn qwen3_queries_wider_than_the_hidden_size_are_counted() {
        // Qwen3-0.6B's attention: 16 heads × head_dim 128 = 2048 wide queries on a 1024 model.
        let qwen3 = |head_dim: usize| {
            let json = serde_json::json!({
                "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024,
                "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
                "num_key_value_heads": 8, "head_dim": head_dim, "tie_word_embeddings": true,
            });
            AnyConfig::from_json(&json.to_string()).unwrap()
        };
        let (wide, narrow) = (qwen3(128), qwen3(64));
        assert_eq!(wide.family(), Family::Qwen3);
        let (w, n) = (wide.dims(), narrow.dims());
        // Beyond the extra parameters and the wider keys/values (at most 8 copies kept per
        // layer), the wider queries' activations are counted.
        let extra_params = 6 * (w.params - n.params) * F32;
        let extra_kv = w.layers * 512 * 8 * (w.kv_width - n.kv_width) * F32 * 2;
        let grown = train_bytes(&wide, 1, 512, 0) - train_bytes(&narrow, 1, 512, 0);
        assert!(grown > extra_params + extra_kv, "{grown}");
        let kv_cache = 2 * w.layers * 512 * (w.kv_width - n.kv_width) * F32;
        let grown = forward_bytes(&wide, 1, 512, 0) - forward_bytes(&narrow, 1, 512, 0);
        assert!(grown > (w.params - n.params) * F32 + kv_cache, "{grown}");
    }
}
