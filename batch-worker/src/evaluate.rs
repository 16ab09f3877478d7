//! The evaluate job: sliding-window perplexity (the Hugging Face method) and token NLL.
//!
//! Over the token stream of length `N` (the dataset tokenized as is, without added tokens,
//! as HF's perplexity guide does), windows start at `0, stride, 2·stride, …`; a window spans
//! `[begin, min(begin + context, N))` and scores only its last `end - prev_end` targets (the
//! tokens the previous window did not score), each predicted with the window as context. The
//! first window scores all its tokens but the first. Perplexity is `exp(Σ NLL / scored)`.
//! Windows of equal length are batched; results do not depend on the batching.

use std::time::Instant;

use bytes::Bytes;
use candle_core::Tensor;
use posthuman_gpt2::family::AnyModel;
use posthuman_gpt2::ops::IGNORE_INDEX;
use posthuman_store::ObjectStore;
use posthuman_types::{EvalParams, EvalReport, JobKind, JobSpec};

use crate::config::WorkerConfig;
use crate::data;
use crate::error::WorkerError;
use crate::memory;
use crate::model_io::{self, join};
use crate::progress::Progress;

pub const REPORT: &str = "report.json";
/// Tokens per batched forward pass.
const TOKENS_PER_BATCH: usize = 4096;

/// One window: `ids[begin..end]` as input, scoring targets at window offsets `from..len-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub begin: usize,
    pub end: usize,
    /// First target offset scored (targets are `ids[begin + 1 + j]` for `j` in `from..len-1`).
    pub from: usize,
}

/// The HF sliding windows over `n` tokens.
pub fn windows(n: usize, context: usize, stride: usize) -> Vec<Window> {
    let mut out = Vec::new();
    let mut prev_end = 0usize;
    let mut begin = 0usize;
    while begin < n {
        let end = (begin + context).min(n);
        let trg_len = end - prev_end;
        let len = end - begin;
        // HF masks labels[:-trg_len]; the model shifts, so target j (predicting label j+1)
        // is scored when j + 1 >= len - trg_len.
        let from = (len - trg_len.min(len)).saturating_sub(1);
        if len >= 2 {
            out.push(Window { begin, end, from });
        }
        prev_end = end;
        if end == n {
            break;
        }
        begin += stride;
    }
    out
}

/// Sum of NLL and count of scored tokens over `ids`.
pub fn score(
    model: &AnyModel,
    ids: &[u32],
    context: usize,
    stride: usize,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<(f64, u64), WorkerError> {
    let ws = windows(ids.len(), context, stride);
    let (mut nll, mut count) = (0f64, 0u64);
    let mut i = 0;
    while i < ws.len() {
        let len = ws[i].end - ws[i].begin;
        let max_b = (TOKENS_PER_BATCH / len).max(1);
        let mut j = i;
        while j < ws.len() && j - i < max_b && ws[j].end - ws[j].begin == len {
            j += 1;
        }
        let group = &ws[i..j];
        let t = len - 1;
        let mut x = Vec::with_capacity(group.len() * t);
        let mut y = Vec::with_capacity(group.len() * t);
        for w in group {
            x.extend_from_slice(&ids[w.begin..w.end - 1]);
            // Targets before `from` are context only (scored by an earlier window): ignoring
            // them spares their lm-head rows, as HF's -100 labels would if HF skipped them.
            y.extend(
                (w.begin + 1..w.end)
                    .map(|k| if k - w.begin - 1 < w.from { IGNORE_INDEX } else { ids[k] }),
            );
        }
        let xt = Tensor::from_vec(x, (group.len(), t), &crate::device::compute())?;
        let yt = Tensor::from_vec(y, (group.len(), t), &crate::device::compute())?;
        let rows = model.token_nll(&xt, &yt).map_err(WorkerError::internal)?.to_vec2::<f32>()?;
        for (w, row) in group.iter().zip(rows) {
            for v in &row[w.from..] {
                nll += f64::from(*v);
                count += 1;
            }
        }
        on_batch(j, ws.len());
        i = j;
    }
    Ok((nll, count))
}

/// Runs an evaluate job and writes `report.json`.
pub async fn run(
    store: &dyn ObjectStore,
    wc: &WorkerConfig,
    spec: &JobSpec,
    p: &EvalParams,
) -> Result<EvalReport, WorkerError> {
    let mut progress =
        Progress::new(store, &spec.public_prefix, JobKind::Evaluate, wc.progress_interval_secs);
    progress.update("loading", 0, 0, None, 0.0, None, true).await;
    let m = model_io::load_model(store, &spec.model_prefix, wc.max_weights_bytes).await?;
    spec.validate_against_context(m.cfg.context() as u32).map_err(WorkerError::from_spec)?;
    let key = spec
        .dataset_key
        .as_deref()
        .ok_or_else(|| WorkerError::BadSpec("evaluate jobs need a dataset".into()))?;
    let size = store.head(key).await?.unwrap_or(0);
    let ctx = p.context_len as u64;
    let batch = (TOKENS_PER_BATCH as u64 / ctx).max(1);
    let need = memory::forward_bytes(&m.cfg, batch, ctx, size + 1);
    if need > wc.memory_limit_bytes {
        return Err(WorkerError::MemoryRefused {
            needed_mib: need >> 20,
            limit_mib: wc.memory_limit_bytes >> 20,
        });
    }
    let (bytes, dataset_hash) = data::fetch(store, key, wc.max_dataset_bytes).await?;
    let text = data::validate_text(&bytes)?;
    let mut ids = m.tok.encode(text)?;
    if p.max_tokens > 0 && ids.len() as u64 > p.max_tokens {
        ids.truncate(p.max_tokens as usize);
    }
    if ids.len() < 2 {
        return Err(WorkerError::BadDataset(
            "the dataset has fewer than two tokens to score".into(),
        ));
    }
    let model =
        m.weights.model(&m.cfg, &crate::device::compute()).map_err(WorkerError::internal)?;
    let start = Instant::now();
    let mut done = (0usize, 0usize);
    let (nll, count) =
        score(&model, &ids, p.context_len as usize, p.stride as usize, |d, t| done = (d, t))?;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let mean_nll = nll / count as f64;
    let perplexity = mean_nll.exp();
    let report = EvalReport {
        weights_hash: m.weights_hash,
        // report.json is public (and may be shown on the model's card): salted.
        dataset_hash: data::public_hash(spec.salt.as_ref(), &dataset_hash),
        tokens_scored: count,
        context_len: p.context_len,
        stride: p.stride,
        mean_nll,
        perplexity,
        baseline_label: p.baseline.as_ref().map(|b| b.label.clone()),
        baseline_perplexity: p.baseline.as_ref().map(|b| b.perplexity),
        ratio_to_baseline: p.baseline.as_ref().map(|b| perplexity / b.perplexity),
        tokens_per_sec: count as f64 / secs,
    };
    let body = serde_json::to_vec_pretty(&report).map_err(WorkerError::internal)?;
    store.put(&join(&spec.public_prefix, REPORT), Bytes::from(body)).await?;
    progress
        .update("done", done.0 as u64, done.1 as u64, None, report.tokens_per_sec, None, true)
        .await;
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn windows_score_every_target_once() {
        for (n, ctx, stride) in [(100, 16, 8), (100, 16, 16), (10, 16, 4), (37, 8, 3), (17, 16, 1)]
        {
            let ws = windows(n, ctx, stride);
            let mut scored = vec![0u32; n];
            for w in &ws {
                for j in w.from..(w.end - w.begin - 1) {
                    scored[w.begin + 1 + j] += 1;
                }
            }
            assert_eq!(scored[0], 0);
            assert!(scored.iter().all(|&c| c <= 1), "{n} {ctx} {stride}: {scored:?}");
            if stride < ctx {
                assert!(scored[1..].iter().all(|&c| c == 1), "{n} {ctx} {stride}: {scored:?}");
            } else {
                // As in HF: with stride == context each window's first token has no context.
                let unscored: Vec<usize> = (0..n).filter(|&i| scored[i] == 0).collect();
                assert_eq!(unscored, (0..n).step_by(stride).collect::<Vec<_>>());
            }
        }
    }
}
