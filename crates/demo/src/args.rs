//! Command-line arguments (clap), parsed once in `main`: the flags `posthuman demo` took.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// How big the demo's models and jobs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoSize {
    /// The README's demo: a base model that learns something in about a minute.
    Full,
    /// A seconds-long run for CI (tiny model, few steps).
    Tiny,
}

/// The demo base model's family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoFamily {
    /// GPT-2 (learned positions, LayerNorm, GELU MLP).
    Gpt2,
    /// Llama (RoPE, RMSNorm, SiLU-gated MLP, grouped-query attention, tied embeddings as
    /// SmolLM2 ships them).
    Llama,
}

/// posthuman-demo: the whole Alice → Elena story on a fresh embedded deployment (anvil, Ocean
/// v4 + ModelLineage, the API, the worker), every step real, and its summary checked.
#[derive(Debug, Parser)]
#[command(name = "posthuman-demo", version, about, long_about = None)]
pub struct DemoArgs {
    /// A fresh directory for the demo's chain, store and keys (default: a temporary one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DemoSize::Full)]
    pub size: DemoSize,
    /// WikiText-2 directory (valid.txt, test.txt).
    #[arg(long, default_value = "data/wikitext-2")]
    pub wikitext: PathBuf,
    /// Make M2 and M3 as LoRA derivations of this rank (adapters on c_attn and c_fc)
    /// instead of full fine-tunes.
    #[arg(long)]
    pub lora_rank: Option<u32>,
    /// The family of Alice's base model (and so of M2 and M3).
    #[arg(long, value_enum, default_value_t = DemoFamily::Gpt2)]
    pub family: DemoFamily,
    /// Machine-readable JSON (the summary) on stdout instead of text and progress bars.
    #[arg(long)]
    pub json: bool,
}
