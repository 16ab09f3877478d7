//! The infer job: a batch of prompts (or one chat, rendered by the model's template:
//! [`crate::chat`]), KV-cached generation, sampling, stop strings.
//!
//! Each prompt is generated on its own KV cache with its own RNG stream (`seed`, prompt
//! index), so one prompt's output never depends on the others. A prompt longer than the
//! model's context keeps its last `n_positions - 1` tokens. Generation ends at
//! `max_new_tokens`, a stop id (end-of-text and every eos id the model's configs name), a
//! stop string (cut from the text) or a full context. The public output is
//! `completions.json`: text and token counts only (a chat's completion names the rendered
//! prompt, which is what its attestation commits to).

use std::time::Instant;

use bytes::Bytes;
use candle_core::{IndexOp, Tensor};
use posthuman_gpt2::family::{AnyCache, AnyModel};
use posthuman_store::ObjectStore;
use posthuman_types::{Completion, InferParams, JobKind, JobSpec, StopReason};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::config::WorkerConfig;
use crate::error::WorkerError;
use crate::memory;
use crate::model_io::{self, join};
use crate::progress::Progress;
use crate::sampling::sample;
use crate::tokenizer::Tok;

pub const COMPLETIONS: &str = "completions.json";

/// Last-position logits of a forward pass over `ids`, continuing `cache`.
fn step_logits(
    model: &AnyModel,
    ids: &[u32],
    cache: &mut AnyCache,
) -> Result<Vec<f32>, WorkerError> {
    let t = ids.len();
    let x = Tensor::from_vec(ids.to_vec(), (1, t), &crate::device::compute())?;
    let logits = model.forward_cached(&x, cache).map_err(WorkerError::internal)?;
    Ok(logits.i((0, t - 1))?.to_vec1::<f32>()?)
}

/// The earliest position where any stop string starts in `text`.
fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// Generates one completion for a raw prompt.
pub fn generate(
    model: &AnyModel,
    cfg: &posthuman_gpt2::family::AnyConfig,
    tok: &Tok,
    prompt: &str,
    p: &InferParams,
    index: usize,
) -> Result<Completion, WorkerError> {
    let ids = tok.encode_prompt(prompt)?;
    generate_from(model, cfg, tok, prompt, ids, p, index)
}

/// The prompt of a chat job: `messages` rendered by the model's template, its token ids,
/// refused when the template made it longer than the quote's bound
/// ([`posthuman_types::pricing::chat_prompt_tokens`]): the quote must cover what runs.
pub fn chat_prompt(tok: &Tok, p: &InferParams) -> Result<(String, Vec<u32>), WorkerError> {
    let text = crate::chat::render(tok.chat(), &p.messages)?;
    let ids = tok.encode_rendered(&text)?;
    let bound = posthuman_types::pricing::chat_prompt_tokens(&p.messages);
    if ids.len() as u64 > bound {
        return Err(WorkerError::BadChatTemplate(format!(
            "it renders these messages into {} tokens, over the {bound} the quote allows",
            ids.len()
        )));
    }
    Ok((text, ids))
}

/// Generates one completion from prompt ids (`prompt` is the text the completion names).
pub fn generate_from(
    model: &AnyModel,
    cfg: &posthuman_gpt2::family::AnyConfig,
    tok: &Tok,
    prompt: &str,
    mut ids: Vec<u32>,
    p: &InferParams,
    index: usize,
) -> Result<Completion, WorkerError> {
    let n_pos = cfg.context();
    if ids.is_empty() {
        ids.push(tok.eot());
    }
    if ids.len() >= n_pos {
        ids.drain(..ids.len() + 1 - n_pos);
    }
    let mut rng = ChaCha20Rng::seed_from_u64(p.sampling.seed);
    rng.set_stream(index as u64);
    // Room for the whole generation up front: the cache never grows mid-way.
    let mut cache = model.new_cache_for(ids.len() + p.max_new_tokens as usize);
    let mut logits = step_logits(model, &ids, &mut cache)?;
    let mut out: Vec<u32> = Vec::new();
    let mut reason = StopReason::Length;
    let mut cut: Option<usize> = None;
    while out.len() < p.max_new_tokens as usize {
        let next = sample(&logits, cfg.vocab_size().min(tok.vocab_size()), &p.sampling, &mut rng);
        if tok.is_stop(next) {
            reason = StopReason::EndOfText;
            break;
        }
        out.push(next);
        if !p.stop.is_empty() {
            let text = tok.decode(&out)?;
            if let Some(at) = first_stop(&text, &p.stop) {
                reason = StopReason::Stop;
                cut = Some(at);
                break;
            }
        }
        if out.len() >= p.max_new_tokens as usize {
            break;
        }
        if cache.len() >= n_pos {
            reason = StopReason::Context;
            break;
        }
        logits = step_logits(model, &[next], &mut cache)?;
    }
    let mut text = tok.decode(&out)?;
    if let Some(at) = cut {
        text.truncate(at);
    }
    Ok(Completion {
        prompt: prompt.to_string(),
        text,
        prompt_tokens: ids.len() as u32,
        completion_tokens: out.len() as u32,
        stop_reason: reason,
    })
}

/// Runs an infer job and writes `completions.json`.
pub async fn run(
    store: &dyn ObjectStore,
    wc: &WorkerConfig,
    spec: &JobSpec,
    p: &InferParams,
) -> Result<(Vec<Completion>, posthuman_types::Hash32), WorkerError> {
    let mut progress =
        Progress::new(store, &spec.public_prefix, JobKind::Infer, wc.progress_interval_secs);
    let chat = !p.messages.is_empty();
    let total = if chat { 1 } else { p.prompts.len() as u64 };
    progress.update("loading", 0, total, None, 0.0, None, true).await;
    let m = model_io::load_model(store, &spec.model_prefix, wc.max_weights_bytes).await?;
    // Rendered before the weights become a model: a chat the model cannot take fails fast.
    let prompts: Vec<(String, Vec<u32>)> = if chat {
        vec![chat_prompt(&m.tok, p)?]
    } else {
        p.prompts
            .iter()
            .map(|s| Ok((s.clone(), m.tok.encode_prompt(s)?)))
            .collect::<Result<_, WorkerError>>()?
    };
    let need = memory::forward_bytes(&m.cfg, 1, m.cfg.context() as u64, 0);
    if need > wc.memory_limit_bytes {
        return Err(WorkerError::MemoryRefused {
            needed_mib: need >> 20,
            limit_mib: wc.memory_limit_bytes >> 20,
        });
    }
    let model =
        m.weights.model(&m.cfg, &crate::device::compute()).map_err(WorkerError::internal)?;
    let start = Instant::now();
    let mut out = Vec::with_capacity(prompts.len());
    let mut tokens = 0u64;
    for (i, (prompt, ids)) in prompts.into_iter().enumerate() {
        let c = generate_from(&model, &m.cfg, &m.tok, &prompt, ids, p, i)?;
        tokens += u64::from(c.completion_tokens);
        out.push(c);
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        progress
            .update(
                "generating",
                i as u64 + 1,
                total,
                None,
                tokens as f64 / secs,
                Some((i + 1) as f64 / secs),
                false,
            )
            .await;
    }
    let body = serde_json::to_vec_pretty(&out).map_err(WorkerError::internal)?;
    store.put(&join(&spec.public_prefix, COMPLETIONS), Bytes::from(body)).await?;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    progress.update("done", total, total, None, tokens as f64 / secs, None, true).await;
    Ok((out, m.weights_hash))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_find_the_earliest() {
        let stops = vec!["b".to_string(), "xa".to_string()];
        assert_eq!(first_stop("zxab", &stops), Some(1));
        assert_eq!(first_stop("zzz", &stops), None);
    }
}
