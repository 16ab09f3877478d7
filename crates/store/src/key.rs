//! Key and prefix rules shared by every implementation.
//!
//! Keys follow `posthuman_types::job::validate_key` (the rule the job spec already enforces):
//! 1..=512 bytes of ASCII letters, digits and `-_./`, no leading `/`, no empty, `.` or `..`
//! segments. On the filesystem that means a key is always a relative path that stays under
//! the root (symlinks are refused separately, in [`crate::local`]).

use crate::StoreError;

/// Checks a full object key.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    posthuman_types::job::validate_key("key", key).map_err(|e| StoreError::invalid(key, e.reason))
}

/// Checks a `list` prefix: empty (everything), or a key, or a key followed by `/`.
/// A prefix may end mid-segment (`models/m` matches `models/m1/...`), like S3.
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Err(StoreError::invalid(prefix, "a prefix may not be just '/'"));
    }
    validate_key(trimmed).map_err(|e| match e {
        StoreError::InvalidKey { reason, .. } => StoreError::invalid(prefix, reason),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["a", "models/m1/model.safetensors", "a-b_c.d/e", "x/.hidden"] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "/abs", "a//b", "a/", "../x", "a/../b", "./a", "a/.", "é", "a b", "a\\b", "a\0"]
        {
            assert!(matches!(validate_key(bad), Err(StoreError::InvalidKey { .. })), "{bad:?}");
        }
        assert!(validate_key(&"a".repeat(513)).is_err());
    }

    #[test]
    fn prefixes() {
        for ok in ["", "models/", "models/m", "a/b/"] {
            assert!(validate_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["/", "//", "/a", "a//", "../", "a/../", "é/"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
