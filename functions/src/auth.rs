//! Who is asking: EIP-191 signatures over the exact request bytes, with nonces and expiry.
//!
//! A signed request carries its JSON body as raw bytes plus a `personal_sign` signature over
//! those bytes (the same prefix wallets use), so there is no canonicalisation to disagree
//! on. Every signed body names a `nonce` (used once per signer, stored in the catalogue) and
//! an `expires_at` (unix seconds, at most [`MAX_VALIDITY_SECS`] ahead), so a captured
//! request can neither be replayed nor kept for later.
//!
//! Reads of job results are authenticated with a signature over
//! [`read_message`]`(job_id, expires_at)`, sent in the `x-posthuman-signature` and
//! `x-posthuman-expires` headers; they change nothing, so they need no nonce.

use alloy::primitives::{Address, Signature};

use crate::error::ApiError;

/// The furthest in the future a signed request may expire.
pub const MAX_VALIDITY_SECS: u64 = 3600;

/// The address that `personal_sign`ed `message`.
pub fn recover_signer(message: &[u8], signature: &str) -> Result<Address, ApiError> {
    let sig: Signature = signature
        .trim()
        .parse()
        .map_err(|_| ApiError::Unauthorized("the signature is not 65 bytes of hex".into()))?;
    sig.recover_address_from_msg(message)
        .map_err(|_| ApiError::Unauthorized("the signature does not recover to an address".into()))
}

/// Parses an address from a request field.
pub fn parse_address(field: &str, s: &str) -> Result<Address, ApiError> {
    s.trim().parse::<Address>().map_err(|_| ApiError::Invalid {
        field: field.into(),
        reason: "not a 20-byte hex address".into(),
    })
}

/// Checks that `signer` is the address the body claims, in constant form.
pub fn require_signer(claimed: &Address, signer: &Address) -> Result<(), ApiError> {
    if claimed != signer {
        return Err(ApiError::Unauthorized(format!(
            "the request names {claimed} but was signed by {signer}"
        )));
    }
    Ok(())
}

/// Checks `expires_at` against `now`: not past, not too far ahead.
pub fn check_expiry(expires_at: u64, now: u64) -> Result<(), ApiError> {
    if expires_at < now {
        return Err(ApiError::Unauthorized(format!(
            "the request expired at {expires_at} (now {now})"
        )));
    }
    if expires_at > now + MAX_VALIDITY_SECS {
        return Err(ApiError::Unauthorized(format!(
            "expires_at may be at most {MAX_VALIDITY_SECS} s ahead"
        )));
    }
    Ok(())
}

/// Checks a nonce's shape (it becomes part of a storage key).
pub fn check_nonce(nonce: &str) -> Result<(), ApiError> {
    if nonce.is_empty()
        || nonce.len() > 64
        || !nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ApiError::Invalid {
            field: "nonce".into(),
            reason: "1..=64 of [A-Za-z0-9-]".into(),
        });
    }
    Ok(())
}

/// The message a buyer signs to read a job's results.
pub fn read_message(job_id: &str, expires_at: u64) -> String {
    format!("posthuman: read job {job_id} until {expires_at}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    #[test]
    fn recovers_the_signer_and_rejects_tampering() {
        let key = PrivateKeySigner::random();
        let body = br#"{"nonce":"n-1"}"#;
        let sig = key.sign_message_sync(body).unwrap().to_string();
        assert_eq!(recover_signer(body, &sig).unwrap(), key.address());
        // Any other body recovers to someone else.
        let other = recover_signer(br#"{"nonce":"n-2"}"#, &sig).unwrap();
        assert_ne!(other, key.address());
        assert!(matches!(recover_signer(body, "0x1234"), Err(ApiError::Unauthorized(_))));
        assert!(matches!(recover_signer(body, "not hex at all"), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn expiry_window() {
        assert!(check_expiry(100, 100).is_ok());
        assert!(check_expiry(99, 100).is_err());
        assert!(check_expiry(100 + MAX_VALIDITY_SECS + 1, 100).is_err());
    }

    #[test]
    fn nonce_shape() {
        assert!(check_nonce("abc-123").is_ok());
        for bad in ["", "a/b", "../x", &"x".repeat(65)] {
            assert!(check_nonce(bad).is_err(), "{bad}");
        }
    }
}
