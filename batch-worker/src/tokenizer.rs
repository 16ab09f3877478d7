//! Tokenizer: load a `tokenizer.json` (the `tokenizers` crate, pure-Rust regex backend) and
//! train a GPT-2-style byte-level BPE tokenizer from a corpus.
//!
//! There is no model hub at run time, so the demo's base model gets its tokenizer from
//! [`train_bpe`]. Training is deterministic: the BPE trainer breaks count ties by pair ids,
//! and with the full 256-symbol byte alphabet every id is assigned in a fixed order.

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder, TokenizerImpl};

use crate::error::WorkerError;

/// The end-of-text token that separates documents (GPT-2's spelling).
pub const EOT: &str = "<|endoftext|>";

/// Largest `tokenizer.json` the worker reads (GPT-2's is ~1.4 MB).
pub const MAX_TOKENIZER_BYTES: u64 = 64 * 1024 * 1024;

/// A loaded tokenizer and its end-of-text id.
#[derive(Clone)]
pub struct Tok {
    inner: tokenizers::Tokenizer,
    eot: u32,
    /// Cached: `tokenizers` answers `get_vocab_size(true)` by building the whole vocabulary
    /// map, which cost ~1 ms per generated token when the sampler asked every step.
    vocab: usize,
}

impl std::fmt::Debug for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tok").field("vocab", &self.vocab_size()).field("eot", &self.eot).finish()
    }
}

impl Tok {
    /// Parses `tokenizer.json`. The tokenizer must define `<|endoftext|>`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WorkerError> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| {
            WorkerError::MissingTokenizer(format!("tokenizer.json is invalid ({e})"))
        })?;
        let eot = inner.token_to_id(EOT).ok_or_else(|| {
            WorkerError::MissingTokenizer(format!("tokenizer has no {EOT} token"))
        })?;
        let vocab = inner.get_vocab_size(true);
        Ok(Tok { inner, eot, vocab })
    }

    /// Serialized `tokenizer.json`.
    pub fn to_json(&self) -> Result<String, WorkerError> {
        self.inner.to_string(false).map_err(WorkerError::internal)
    }

    pub fn eot(&self) -> u32 {
        self.eot
    }

    /// Vocabulary size including added tokens (must be ≤ the model's `vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Token ids of `text`; special-token strings inside buyer text are matched too, exactly
    /// as Hugging Face tokenizers do.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, WorkerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| WorkerError::BadDataset(format!("text could not be tokenized ({e})")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, keeping special tokens out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, WorkerError> {
        self.inner.decode(ids, true).map_err(WorkerError::internal)
    }
}

/// Trains a byte-level BPE tokenizer (GPT-2 pre-tokenization, no prefix space) with
/// `<|endoftext|>` as token 0, up to `vocab_size` tokens (≥ 257: 256 bytes + EOT).
pub fn train_bpe(corpus: &str, vocab_size: usize) -> Result<Tok, WorkerError> {
    if vocab_size < 257 {
        return Err(WorkerError::OutOfRange(format!(
            "vocab_size {vocab_size} is below 257 (256 byte symbols plus {EOT})"
        )));
    }
    if corpus.is_empty() {
        return Err(WorkerError::BadDataset("the tokenizer corpus is empty".into()));
    }
    let byte_level = ByteLevel::default().add_prefix_space(false).trim_offsets(false);
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tk: TokenizerImpl<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel> =
        TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(byte_level))
            .with_post_processor(Some(byte_level))
            .with_decoder(Some(byte_level))
            .build()
            .map_err(WorkerError::internal)?;
    // One "sequence" per line keeps the trainer's word counting streaming-friendly; the
    // byte-level pre-tokenizer splits on whitespace anyway, so the counts are the same.
    tk.train(&mut trainer, corpus.split_inclusive('\n')).map_err(WorkerError::internal)?;
    let json = tk.to_string(false).map_err(WorkerError::internal)?;
    Tok::from_bytes(json.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn corpus() -> String {
        "the quick brown fox jumps over the lazy dog. ".repeat(50)
            + "pack my box with five dozen liquor jugs.\n"
    }

    #[test]
    fn trained_tokenizer_round_trips_and_is_deterministic() {
        let a = train_bpe(&corpus(), 300).unwrap();
        let b = train_bpe(&corpus(), 300).unwrap();
        assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
        assert_eq!(a.eot(), 0);
        assert!(a.vocab_size() <= 300 && a.vocab_size() > 257);
        let text = "the lazy fox, über naïve 🦊\n";
        let ids = a.encode(text).unwrap();
        assert_eq!(a.decode(&ids).unwrap(), text);
        let reloaded = Tok::from_bytes(a.to_json().unwrap().as_bytes()).unwrap();
        assert_eq!(reloaded.encode(text).unwrap(), ids);
    }

    #[test]
    fn rejects_garbage_and_tokenizers_without_eot() {
        assert!(matches!(Tok::from_bytes(b"{not json"), Err(WorkerError::MissingTokenizer(_))));
        assert!(matches!(train_bpe("", 300), Err(WorkerError::BadDataset(_))));
        assert!(matches!(train_bpe("abc", 10), Err(WorkerError::OutOfRange(_))));
    }
}
