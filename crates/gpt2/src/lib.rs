//! GPT-2 in candle with Hugging Face tensor layout, fused ops with hand-written backward, and
//! AdamW.
//!
//! - [`Config`]: HF `config.json` (`model_type: gpt2`, `gelu_new`).
//! - [`Gpt2`]: the network; names match HF checkpoints (`wte.weight`, `h.0.attn.c_attn.weight`
//!   in Conv1D (in, out) layout, …, `ln_f`), lm head tied to `wte`. `forward` (logits, KV
//!   cache), `loss` (training graph), `token_nll` (no-grad evaluation).
//! - [`ops`]: fused CPU f32 kernels — layer norm, linear(+GELU), causal attention, embedding,
//!   lm-head cross-entropy — each with a hand-written backward, because candle_nn's layer norm
//!   and softmax have none and silently cut the graph. Other devices/dtypes use the same ops
//!   composed from differentiable candle primitives ([`ops::reference`]).
//! - [`weights`]: seeded GPT-2 init, strict safetensors load (typed errors, never a panic),
//!   HF-loadable save, canonical content hash.
//! - [`Gpt2::loss_and_grads`]: the training step's forward and backward without a graph on
//!   the CPU (the same kernels in a fixed order, bit-identical to `loss` + `backward`, minus
//!   the graph's overhead); the graph path on other devices.
//! - [`llama`]: the Llama family (Config from HF `config.json`, `Llama::new(cfg, vb)`,
//!   `forward`, `loss`) on the differentiable ops of [`ops::llama`] (RMSNorm, RoPE incl.
//!   llama3 scaling, SiLU-gated MLP, grouped-query attention).
//! - [`llama_weights`]: Llama checkpoints in HF layout — strict, memory-mapped loading of
//!   single-file and sharded safetensors (f32/f16/bf16), f32 save, the canonical hash.
//! - [`family`]: dispatch on `config.json`'s `model_type` (`gpt2`, `llama`): `AnyConfig`
//!   (shape, architecture line), `AnyWeights` (load/save/hash), `AnyModel` (cached logits,
//!   token NLL, a training micro-batch's gradients) for the worker and the API.
//! - [`lora`]: LoRA adapters in PEFT's format (config, PEFT tensor names and init, strict
//!   load/save, merge into base weights); `Gpt2::with_lora` / `Llama::with_lora` freeze the
//!   base and add the adapter's branches on the autograd path.
//! - [`chat_config`]: the optional `tokenizer_config.json` / `generation_config.json` beside
//!   the tokenizer (special tokens, BOS policy, chat template, stop ids), parsed and bounded.
//! - [`optim`]: AdamW, gradient accumulation, global-norm clipping, optimizer state files.
//!
//! Determinism: all randomness comes from [`SeededRng`]; every reduction has a fixed order
//! independent of the thread count (gemm splits work over output tiles only), so training
//! is bit-identical across runs and across 1 or 2 threads.
//!
//! Threads: matmuls and the fused kernels run on rayon's pool (`RAYON_NUM_THREADS`; without
//! it [`configure_threads`] sizes the pool to candle's count of physical cores). candle's own elementwise ops (residual adds, gradient
//! accumulation inside `backward`) use a second, spin-waiting pool sized by
//! `CANDLE_NUM_THREADS`; [`configure_threads`] at process start sets it to 1 so it does not
//! steal cores from gemm (every binary here does). Neither setting changes any result bit.
//!
//! Training loop sketch:
//! ```no_run
//! # use posthuman_gpt2::*;
//! # use candle_core::{DType, Device, Tensor};
//! # fn f(x: &Tensor, y: &Tensor) -> Result<(), Gpt2Error> {
//! let cfg = Config::new(8000, 256, 256, 4, 4);
//! let vm = init_weights(&cfg, 42)?;
//! let model = Gpt2::new(&cfg, candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
//! let mut opt = AdamW::new(&vm, AdamWConfig::default())?;
//! let mut dropout = DropoutRng::new(7);
//! let mut grads = Grads::zeros(&opt);
//! let (_loss, g) = model.loss_and_grads(x, y, Some(&mut dropout))?; // one micro-batch
//! grads.accumulate_named(&opt, &g)?;                 // repeat, then grads.scale(1/n)
//! let _norm = clip_grad_norm(&mut grads, 1.0);
//! opt.step(&grads, 3e-4)?;
//! let hash = Weights::from_var_map(&cfg, &vm)?.hash()?;
//! # Ok(()) }
//! ```

mod backprop;
pub mod bench;
pub mod chat_config;
mod config;
mod error;
pub mod family;
pub mod llama;
pub mod llama_weights;
pub mod lora;
mod model;
pub mod ops;
pub mod optim;
mod rng;
pub mod weights;

pub use backprop::NamedGrads;
pub use config::Config;
pub use error::Gpt2Error;
pub use model::{Gpt2, KvCache, param_shapes};
pub use optim::{
    AdamW, AdamWConfig, Grads, Param, ParamGrad, StepGrads, clip_grad_norm, optimizer_state_hash,
};
pub use rng::{DropoutRng, SeededRng};
pub use weights::{
    Weights, init_weights, load_safetensors, load_safetensors_bytes, safetensors_bytes,
    save_safetensors, weights_hash,
};

/// Sets this process up for the compute kernels: rayon's pool (gemm and the fused kernels) to
/// `threads` when given, else to `RAYON_NUM_THREADS` or candle's physical-core count (written
/// back to `RAYON_NUM_THREADS`: candle's matmul otherwise re-reads `/proc/cpuinfo` on every
/// call to find it); candle's spin-waiting elementwise pool to one thread unless
/// `CANDLE_NUM_THREADS` is already set (with two pools spinning on a small CPU set, candle's
/// steals cores from gemm: +18% training throughput measured on 2 cores). No result bit
/// depends on either setting. (Raising glibc's mmap/trim thresholds to keep freed buffers was
/// tried and measured slower: more kernel page zeroing, not less.)
///
/// # Safety
/// Call at process start, before any other thread exists (it sets environment variables,
/// which rayon and candle read when their pools start).
pub unsafe fn configure_threads(threads: Option<usize>) {
    // SAFETY: the caller guarantees no other thread reads or writes the environment now.
    unsafe {
        match threads {
            Some(n) => std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string()),
            None if std::env::var_os("RAYON_NUM_THREADS").is_none() => std::env::set_var(
                "RAYON_NUM_THREADS",
                candle_core::utils::get_num_threads().to_string(),
            ),
            None => {}
        }
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
    }
}

/// Re-exports so dependents use the exact candle this crate was built with.
pub use candle_core;
pub use candle_nn;
