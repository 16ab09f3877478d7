//! [`StoreError`]: each variant says what the caller can do about it.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist: a 404 for a client, a missing input for the worker.
    #[error("no object at key {key:?}")]
    NotFound { key: String },
    /// The key (or list prefix) breaks the key rules; fix the caller, retrying is pointless.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// The object is bigger than the caller's limit; nothing was read.
    #[error("object {key:?} is {size} bytes, over the limit of {limit}")]
    TooLarge { key: String, size: u64, limit: u64 },
    /// Transient (throttling, 5xx, connection refused/reset, timeout): retry later.
    #[error("store unavailable (transient, retry later): {0}")]
    Unavailable(String),
    /// Anything else (permissions, disk full, a malformed response…).
    #[error("store i/o error: {0}")]
    Io(String),
}

impl StoreError {
    /// True when retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> Self {
        StoreError::InvalidKey { key: key.to_owned(), reason: reason.into() }
    }

    pub(crate) fn not_found(key: &str) -> Self {
        StoreError::NotFound { key: key.to_owned() }
    }
}
