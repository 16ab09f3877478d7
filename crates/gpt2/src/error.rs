//! The crate's error type: each variant says what the caller can do about it.

use std::path::PathBuf;

/// Everything the model library can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Gpt2Error {
    /// The config is self-inconsistent or asks for something this implementation does not do.
    #[error("invalid GPT-2 config: {0}")]
    InvalidConfig(String),
    /// The bytes are not a well-formed safetensors file (header, offsets, sizes).
    #[error("malformed weights file: {0}")]
    MalformedWeights(String),
    /// A tensor the config requires is absent from the file.
    #[error("missing tensor `{name}`")]
    MissingTensor { name: String },
    /// The file holds a tensor the model does not know (and that is not a known HF buffer).
    #[error("unexpected tensor `{name}`")]
    UnexpectedTensor { name: String },
    /// A tensor's shape disagrees with the config.
    #[error("tensor `{tensor}` has shape {got:?}, the config needs {expected:?}")]
    ConfigMismatch { tensor: String, expected: Vec<usize>, got: Vec<usize> },
    /// A tensor is stored in a dtype we do not load (F32, F16 and BF16 are accepted).
    #[error("tensor `{tensor}` has unsupported dtype {dtype}")]
    UnsupportedDType { tensor: String, dtype: String },
    /// Optimizer state that does not belong to these parameters or is damaged.
    #[error("invalid optimizer state: {0}")]
    OptimizerState(String),
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A tensor operation failed (shape bugs, unsupported device…).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
