//! Datasets: validation, hashing, tokenization, sequence packing and seeded batch order.
//!
//! The buyer's dataset is hostile input: it must be UTF-8, non-empty, under the size cap,
//! and yield tokens. Its identity is the SHA-256 of its exact bytes (the receipt's dataset
//! hash). Training packs the token stream into windows of `context + 1` tokens (inputs and
//! shifted targets), documents separated by `<|endoftext|>`.
//!
//! Batch order is a pure function of `(seed, step, micro-batch)` ([`Packed::batch_indices`]):
//! window `g` of the run is taken from epoch `g / n` under a permutation seeded by
//! `(seed, epoch)`. A resumed run therefore needs only the step number to continue with the
//! exact batches an uninterrupted run would have seen, and an auditor can re-run any segment.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

use bytes::Bytes;
use posthuman_store::{ObjectStore, StoreError};
use posthuman_types::Hash32;

use crate::error::WorkerError;
use crate::tokenizer::Tok;

/// Reads the dataset at `key`, refusing it (before reading) when over `max_bytes`, and
/// returns its bytes and hash. A missing dataset is a bad dataset, not a store failure.
pub async fn fetch(
    store: &dyn ObjectStore,
    key: &str,
    max_bytes: u64,
) -> Result<(Bytes, Hash32), WorkerError> {
    let size = store
        .head(key)
        .await?
        .ok_or_else(|| WorkerError::BadDataset("the dataset does not exist".into()))?;
    if size > max_bytes {
        return Err(WorkerError::DatasetTooLarge { size, limit: max_bytes });
    }
    let bytes = store.get(key, max_bytes).await.map_err(|e| match e {
        StoreError::TooLarge { size, limit, .. } => WorkerError::DatasetTooLarge { size, limit },
        StoreError::NotFound { .. } => WorkerError::BadDataset("the dataset does not exist".into()),
        other => other.into(),
    })?;
    let h = dataset_hash(&bytes);
    Ok((bytes, h))
}

/// SHA-256 of the dataset bytes.
pub fn dataset_hash(bytes: &[u8]) -> Hash32 {
    Hash32(Sha256::digest(bytes).into())
}

/// The domain tag of a salted input hash.
pub const SALT_TAG: &[u8] = b"posthuman:salted:";

/// `SHA-256("posthuman:salted:" || salt || h)`: what public outputs name instead of a
/// dataset or prompts hash `h`, so that nobody without the buyer's salt can confirm a guessed
/// input against them. Must equal `posthuman_receipts::salted_hash` (tested there).
pub fn salted_hash(salt: &Hash32, h: &Hash32) -> Hash32 {
    let mut d = Sha256::new();
    d.update(SALT_TAG);
    d.update(salt.0);
    d.update(h.0);
    Hash32(d.finalize().into())
}

/// The input hash a public output names: salted when the spec carries the buyer's salt,
/// plain for operator-internal jobs (no buyer, nothing to hide).
pub fn public_hash(salt: Option<&Hash32>, h: &Hash32) -> Hash32 {
    match salt {
        Some(s) => salted_hash(s, h),
        None => *h,
    }
}

/// Checks the dataset is non-empty UTF-8 text and returns it as `&str`.
pub fn validate_text(bytes: &[u8]) -> Result<&str, WorkerError> {
    if bytes.is_empty() {
        return Err(WorkerError::BadDataset("the dataset is empty".into()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        WorkerError::BadDataset(format!(
            "the dataset is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    if text.trim().is_empty() {
        return Err(WorkerError::BadDataset("the dataset contains only whitespace".into()));
    }
    Ok(text)
}

/// Tokenizes a validated dataset into one stream ending in `<|endoftext|>`.
pub fn tokenize(tok: &Tok, text: &str) -> Result<Vec<u32>, WorkerError> {
    let mut ids = tok.encode(text)?;
    if ids.is_empty() {
        return Err(WorkerError::BadDataset("the dataset yields no tokens".into()));
    }
    ids.push(tok.eot());
    Ok(ids)
}

/// The token stream packed into training windows of `context + 1` tokens.
#[derive(Debug, Clone)]
pub struct Packed {
    tokens: Vec<u32>,
    context: usize,
    n_windows: usize,
}

impl Packed {
    /// Packs `stream` (which ends in EOT). Window `i` is `tokens[i*context ..= (i+1)*context]`
    /// so consecutive windows share one boundary token and every token is a target once.
    /// A stream shorter than one window is repeated (EOT-separated) until one window fits.
    pub fn new(stream: &[u32], context: usize) -> Result<Self, WorkerError> {
        if stream.is_empty() || context == 0 {
            return Err(WorkerError::BadDataset("the dataset yields no tokens".into()));
        }
        let mut tokens = stream.to_vec();
        while tokens.len() < context + 1 {
            tokens.extend_from_slice(stream);
        }
        let n_windows = (tokens.len() - 1) / context;
        tokens.truncate(n_windows * context + 1);
        Ok(Packed { tokens, context, n_windows })
    }

    pub fn n_windows(&self) -> usize {
        self.n_windows
    }

    pub fn context(&self) -> usize {
        self.context
    }

    /// Window `i` (`context + 1` tokens).
    pub fn window(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.context..=(i + 1) * self.context]
    }

    /// The window indices of micro-batch `micro` of optimizer step `step` (0-based), for a
    /// run with `batch` sequences per micro-batch and `accum` micro-batches per step.
    pub fn batch_indices(
        &self,
        seed: u64,
        step: u64,
        micro: u64,
        batch: usize,
        accum: usize,
    ) -> Vec<usize> {
        let n = self.n_windows as u64;
        let first = (step * accum as u64 + micro) * batch as u64;
        let mut out = Vec::with_capacity(batch);
        let mut cached: Option<(u64, Vec<usize>)> = None;
        for g in first..first + batch as u64 {
            let epoch = g / n;
            if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
                cached = Some((epoch, permutation(seed, epoch, self.n_windows)));
            }
            if let Some((_, perm)) = &cached {
                out.push(perm[(g % n) as usize]);
            }
        }
        out
    }

    /// Inputs and targets of a micro-batch, flattened row-major as (batch, context).
    pub fn inputs_targets(&self, idx: &[usize]) -> (Vec<u32>, Vec<u32>) {
        let mut x = Vec::with_capacity(idx.len() * self.context);
        let mut y = Vec::with_capacity(idx.len() * self.context);
        for &i in idx {
            let w = self.window(i);
            x.extend_from_slice(&w[..self.context]);
            y.extend_from_slice(&w[1..]);
        }
        (x, y)
    }
}

/// A seeded permutation of `0..n` for one epoch (ChaCha20, domain-separated from dropout).
fn permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut rng);
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn validates_text() {
        assert!(matches!(validate_text(b""), Err(WorkerError::BadDataset(_))));
        assert!(matches!(validate_text(b"  \n"), Err(WorkerError::BadDataset(_))));
        assert!(matches!(validate_text(&[0x66, 0xff, 0x66]), Err(WorkerError::BadDataset(_))));
        assert_eq!(validate_text("héllo".as_bytes()).unwrap(), "héllo");
    }

    #[test]
    fn packing_covers_every_token_once() {
        let stream: Vec<u32> = (0..101).collect();
        let p = Packed::new(&stream, 10).unwrap();
        assert_eq!(p.n_windows(), 10);
        assert_eq!(p.window(0), &(0..11).collect::<Vec<_>>()[..]);
        assert_eq!(p.window(9).last(), Some(&100));
        // Short streams are repeated until one window fits.
        let p = Packed::new(&[5, 6, 0], 8).unwrap();
        assert_eq!(p.window(0), &[5, 6, 0, 5, 6, 0, 5, 6, 0]);
    }

    #[test]
    fn batches_are_seeded_epoch_permutations() {
        let stream: Vec<u32> = (0..81).collect();
        let p = Packed::new(&stream, 8).unwrap();
        let n = p.n_windows();
        let epoch0: Vec<usize> = (0..5).flat_map(|s| p.batch_indices(7, s, 0, 2, 1)).collect();
        let mut sorted = epoch0.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        assert_eq!(p.batch_indices(7, 3, 1, 2, 2), p.batch_indices(7, 3, 1, 2, 2));
        assert_ne!(epoch0, (0..5).flat_map(|s| p.batch_indices(8, s, 0, 2, 1)).collect::<Vec<_>>());
    }
}
