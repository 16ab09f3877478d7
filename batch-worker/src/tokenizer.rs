//! Tokenizer: load a `tokenizer.json` (the `tokenizers` crate, pure-Rust regex backend) and
//! train a GPT-2-style byte-level BPE tokenizer from a corpus.
//!
//! There is no model hub at run time, so the demo's base model gets its tokenizer from
//! [`train_bpe`]. Training is deterministic: the BPE trainer breaks count ties by pair ids,
//! and with the full 256-symbol byte alphabet every id is assigned in a fixed order.
//!
//! A model may also ship `tokenizer_config.json` and `generation_config.json`
//! ([`posthuman_gpt2::chat_config`]): [`Tok::with_configs`] takes its stop ids (every
//! `eos_token_id`, the `eos_token`, `<|endoftext|>`), its BOS policy and its chat template
//! from them, and keeps their bytes so a derived model is saved with them unchanged.

use posthuman_gpt2::chat_config::{
    CHAT_TEMPLATE_FILE, ChatConfig, GENERATION_CONFIG, TOKENIZER_CONFIG,
};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder, TokenizerImpl};

use crate::error::WorkerError;

/// The end-of-text token that separates documents (GPT-2's spelling).
pub const EOT: &str = "<|endoftext|>";

/// Largest `tokenizer.json` the worker reads (GPT-2's is ~1.4 MB).
pub const MAX_TOKENIZER_BYTES: u64 = 64 * 1024 * 1024;

/// A loaded tokenizer, its end-of-text id, and what the model's optional HF configs say.
#[derive(Clone)]
pub struct Tok {
    inner: tokenizers::Tokenizer,
    eot: u32,
    /// Cached: `tokenizers` answers `get_vocab_size(true)` by building the whole vocabulary
    /// map, which cost ~1 ms per generated token when the sampler asked every step.
    vocab: usize,
    chat: ChatConfig,
    /// Generation stops at any of these (sorted, distinct; always holds `eot`).
    stop_ids: Vec<u32>,
    /// The BOS id when `tokenizer_config.json` names a `bos_token`.
    bos: Option<u32>,
    /// The optional config files as read, written back unchanged beside a derived model.
    side_files: Vec<(&'static str, Vec<u8>)>,
}

impl std::fmt::Debug for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tok").field("vocab", &self.vocab_size()).field("eot", &self.eot).finish()
    }
}

impl Tok {
    /// Parses `tokenizer.json` alone. The tokenizer must define `<|endoftext|>`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WorkerError> {
        Tok::with_configs(bytes, None, None)
    }

    /// Parses `tokenizer.json` with the model's optional `tokenizer_config.json` and
    /// `generation_config.json`. The end-of-text id is `<|endoftext|>`'s, else the config's
    /// `eos_token`'s, else its first `eos_token_id`. Every special token and stop id the
    /// configs name must exist in the tokenizer: a stop id it cannot produce would never stop.
    pub fn with_configs(
        bytes: &[u8],
        tokenizer_config: Option<&[u8]>,
        generation_config: Option<&[u8]>,
    ) -> Result<Self, WorkerError> {
        Tok::load(bytes, tokenizer_config, generation_config, None)
    }

    /// [`Tok::with_configs`] plus a standalone `chat_template.jinja`, whose template wins
    /// over `tokenizer_config.json`'s `chat_template` (as `transformers` loads them).
    pub fn load(
        bytes: &[u8],
        tokenizer_config: Option<&[u8]>,
        generation_config: Option<&[u8]>,
        chat_template: Option<&[u8]>,
    ) -> Result<Self, WorkerError> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| {
            WorkerError::MissingTokenizer(format!("tokenizer.json is invalid ({e})"))
        })?;
        let vocab = inner.get_vocab_size(true);
        let mut chat = ChatConfig::parse(tokenizer_config, generation_config)
            .map_err(|e| WorkerError::MissingTokenizer(e.to_string()))?;
        if let Some(t) = chat_template {
            chat = chat
                .with_template_file(t)
                .map_err(|e| WorkerError::BadChatTemplate(e.to_string()))?;
        }
        let id_of = |key: &str, token: &Option<String>| -> Result<Option<u32>, WorkerError> {
            match token {
                None => Ok(None),
                Some(t) => inner.token_to_id(t).map(Some).ok_or_else(|| {
                    WorkerError::MissingTokenizer(format!(
                        "tokenizer_config.json's {key} is not a token of tokenizer.json"
                    ))
                }),
            }
        };
        let eos = id_of("eos_token", &chat.eos_token)?;
        let bos = id_of("bos_token", &chat.bos_token)?;
        if let Some(id) = chat.eos_token_ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(WorkerError::MissingTokenizer(format!(
                "generation_config.json's eos_token_id {id} is outside the tokenizer's {vocab} tokens"
            )));
        }
        let eot =
            inner.token_to_id(EOT).or(eos).or(chat.eos_token_ids.first().copied()).ok_or_else(
                || {
                    WorkerError::MissingTokenizer(format!(
                        "tokenizer has no {EOT} token and no eos_token is configured"
                    ))
                },
            )?;
        let mut stop_ids: Vec<u32> = chat.eos_token_ids.iter().copied().chain(eos).collect();
        stop_ids.push(eot);
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let side_files = [
            (TOKENIZER_CONFIG, tokenizer_config),
            (GENERATION_CONFIG, generation_config),
            (CHAT_TEMPLATE_FILE, chat_template),
        ]
        .into_iter()
        .filter_map(|(n, b)| b.map(|b| (n, b.to_vec())))
        .collect();
        Ok(Tok { inner, eot, vocab, chat, stop_ids, bos, side_files })
    }

    /// The model's prompting settings (template, special tokens) from its optional configs.
    pub fn chat(&self) -> &ChatConfig {
        &self.chat
    }

    /// Token ids at which generation stops.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Whether generation stops at `id`.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.binary_search(&id).is_ok()
    }

    /// The optional config files this tokenizer was loaded with, by file name, as read.
    pub fn side_files(&self) -> &[(&'static str, Vec<u8>)] {
        &self.side_files
    }

    /// A buyer's raw prompt as the model's tokenizer prepares it for generation (HF's
    /// `tokenizer(prompt)`): `tokenizer.json`'s post-processor adds its special tokens (a
    /// Llama tokenizer's BOS), and when `tokenizer_config.json` says `add_bos_token: true`
    /// but the post-processor added none, the BOS is prepended — never a second one.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, WorkerError> {
        let enc = self.inner.encode(text, true).map_err(|e| {
            WorkerError::OutOfRange(format!("a prompt could not be tokenized ({e})"))
        })?;
        let mut ids = enc.get_ids().to_vec();
        if let (Some(true), Some(bos)) = (self.chat.add_bos_token, self.bos)
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// A rendered chat prompt's ids: the template already wrote its special tokens (BOS
    /// included, if the model wants one), so none are added (HF's `apply_chat_template`).
    pub fn encode_rendered(&self, text: &str) -> Result<Vec<u32>, WorkerError> {
        let enc = self.inner.encode(text, false).map_err(|e| {
            WorkerError::BadChatTemplate(format!(
                "the rendered prompt could not be tokenized ({e})"
            ))
        })?;
        Ok(enc.get_ids().to_vec())
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
