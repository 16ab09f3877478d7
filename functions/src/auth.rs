//! Who is asking: EIP-712 typed-data signatures over the exact request bytes, bound to this
//! deployment, with nonces and expiry.
//!
//! A signed request carries its JSON body as raw bytes plus a signature over the typed data
//! [`posthuman_receipts::request::SignableRequest`]: the action (`submit-job`,
//! `publish-model`, `read-result`), keccak256 of those bytes, the body's own `expires_at` and
//! `nonce`, under the deployment's domain (name `Posthuman`, version `1`, the chain id and
//! the `ModelLineage` contract; the same domain receipts use). So there is no
//! canonicalisation to disagree on, a wallet shows what it signs (`eth_signTypedData_v4`),
//! and a signature made for one action, chain or deployment recovers to another address
//! anywhere else and is refused. Every signed body names a `nonce` (used once per signer,
//! stored in the catalogue) and an `expires_at` (unix seconds, at most
//! [`MAX_VALIDITY_SECS`] ahead), so a captured request can neither be replayed nor kept.
//!
//! Reads of job results are authenticated with a [`READ_RESULT`] request over the job id
//! and an expiry, sent in the `x-posthuman-signature` and `x-posthuman-expires` headers;
//! they change nothing, so they need no nonce.

use alloy::primitives::Address;
use posthuman_receipts::ReceiptDomain;
use posthuman_receipts::request::{READ_RESULT, SignableRequest};

use crate::deps::Deps;
use crate::error::ApiError;

/// The furthest in the future a signed request may expire.
pub const MAX_VALIDITY_SECS: u64 = 3600;

/// The domain every signed request to this deployment is made under.
pub fn domain(deps: &Deps) -> ReceiptDomain {
    let book = deps.chain.book();
    ReceiptDomain::new(book.chain_id, book.lineage)
}

fn unauthorized(e: posthuman_receipts::request::RequestError) -> ApiError {
    ApiError::Unauthorized(e.to_string())
}

/// The address that signed `body` (a JSON request naming its `nonce` and `expires_at`) for
/// `action` under `domain`.
pub fn recover_request(
    domain: &ReceiptDomain,
    action: &str,
    body: &[u8],
    signature: &str,
) -> Result<Address, ApiError> {
    let req = SignableRequest::of_json_body(action, body).map_err(|e| match e {
        posthuman_receipts::request::RequestError::MissingField(f) => {
            ApiError::bad(format!("request: the body has no {f}"))
        }
        other => unauthorized(other),
    })?;
    req.recover(domain, signature).map_err(unauthorized)
}

/// The address that signed a read of job `job_id`'s results until `expires_at`.
pub fn recover_read(
    domain: &ReceiptDomain,
    job_id: &str,
    expires_at: u64,
    signature: &str,
) -> Result<Address, ApiError> {
    SignableRequest::read(READ_RESULT, job_id, expires_at)
        .recover(domain, signature)
        .map_err(unauthorized)
}

/// Ocean's request signature, as ocean.js 8.6.2 makes it (`getSignature` / `signRequest`): an
/// EIP-191 `personal_sign` over the 32 bytes of keccak256 of the UTF-8 text
/// `consumer + nonce + command`, with `consumer` exactly as the request spells it. Returns the
/// address it recovers to (the caller compares it with `consumer`). Unlike our typed
/// requests it names no chain or deployment: the nonce's freshness and single use
/// ([`check_ocean_nonce`]) are what keep it from being replayed.
pub fn recover_ocean(
    consumer: &str,
    nonce: &str,
    command: &str,
    signature: &str,
) -> Result<Address, ApiError> {
    let digest = alloy::primitives::keccak256(format!("{consumer}{nonce}{command}").as_bytes());
    let sig: alloy::primitives::Signature = signature
        .trim()
        .parse()
        .map_err(|e| ApiError::Unauthorized(format!("malformed signature: {e}")))?;
    sig.recover_address_from_msg(digest.as_slice())
        .map_err(|e| ApiError::Unauthorized(format!("no public key recovers: {e}")))
}

/// How far an Ocean nonce may lag the server's clock (microseconds): ten minutes.
pub const OCEAN_NONCE_WINDOW_US: u64 = 10 * 60 * 1_000_000;

/// Checks an Ocean request nonce: a decimal microsecond timestamp (the provider's `nonce`
/// route hands out its clock; ocean.js signs that plus one) no older than
/// [`OCEAN_NONCE_WINDOW_US`] and not ahead of `now_us` by more than a minute of clock skew.
/// Returns it in the shape our nonce ledger keys it by (`ocean-<n>`); the caller spends it.
pub fn check_ocean_nonce(nonce: &str, now_us: u64) -> Result<String, ApiError> {
    let n: u64 = nonce.trim().parse().map_err(|_| ApiError::Invalid {
        field: "nonce".into(),
        reason: "a decimal number (take the provider's nonce route and add one)".into(),
    })?;
    if n.saturating_add(OCEAN_NONCE_WINDOW_US) < now_us || n > now_us + 60_000_000 {
        return Err(ApiError::Unauthorized(format!(
            "stale nonce {n}: sign again with the provider's current nonce plus one"
        )));
    }
    Ok(format!("ocean-{n}"))
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

/// Checks that `signer` may publish: one of the configured publishers, or (none configured)
/// the operator itself.
pub fn require_publisher(deps: &Deps, signer: &Address) -> Result<(), ApiError> {
    let allowed = if deps.cfg.publishers.is_empty() {
        *signer == deps.chain.operator()
    } else {
        deps.cfg.publishers.contains(signer)
    };
    if !allowed {
        return Err(ApiError::Forbidden(format!("{signer} is not an allowed publisher")));
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    #[test]
    fn recovers_the_signer_and_rejects_tampering() {
        use posthuman_receipts::request::{PUBLISH_MODEL, SUBMIT_JOB};
        let key = PrivateKeySigner::random();
        let here = ReceiptDomain::new(31337, Address::repeat_byte(1));
        let body = br#"{"nonce":"n-1","expires_at":100}"#;
        let sig =
            SignableRequest::of_json_body(SUBMIT_JOB, body).unwrap().sign(&here, &key).unwrap();
        assert_eq!(recover_request(&here, SUBMIT_JOB, body, &sig).unwrap(), key.address());
        // Any other body, action or domain recovers to someone else.
        let other = br#"{"nonce":"n-2","expires_at":100}"#;
        assert_ne!(recover_request(&here, SUBMIT_JOB, other, &sig).unwrap(), key.address());
        assert_ne!(recover_request(&here, PUBLISH_MODEL, body, &sig).unwrap(), key.address());
        let there = ReceiptDomain::new(1, Address::repeat_byte(1));
        assert_ne!(recover_request(&there, SUBMIT_JOB, body, &sig).unwrap(), key.address());
        // A personal_sign over the same bytes is not a typed signature.
        let personal = key.sign_message_sync(body).unwrap().to_string();
        assert_ne!(recover_request(&here, SUBMIT_JOB, body, &personal).unwrap(), key.address());
        for bad in ["0x1234", "not hex at all"] {
            assert!(matches!(
                recover_request(&here, SUBMIT_JOB, body, bad),
                Err(ApiError::Unauthorized(_))
            ));
        }
        assert!(matches!(
            recover_request(&here, SUBMIT_JOB, b"{}", &sig),
            Err(ApiError::BadRequest(_))
        ));
        let read = SignableRequest::read(READ_RESULT, "j-1", 100).sign(&here, &key).unwrap();
        assert_eq!(recover_read(&here, "j-1", 100, &read).unwrap(), key.address());
        assert_ne!(recover_read(&here, "j-2", 100, &read).unwrap(), key.address());
    }

    #[test]
    fn ocean_signatures_and_nonces() {
        let key = PrivateKeySigner::random();
        let who = key.address().to_checksum(None);
        // What ocean.js signs: personal_sign over keccak256(address + nonce + command).
        let digest = alloy::primitives::keccak256(format!("{who}17startCompute").as_bytes());
        let sig = key.sign_message_sync(digest.as_slice()).unwrap().to_string();
        assert_eq!(recover_ocean(&who, "17", "startCompute", &sig).unwrap(), key.address());
        for (nonce, command) in [("18", "startCompute"), ("17", "getComputeResult")] {
            assert_ne!(recover_ocean(&who, nonce, command, &sig).unwrap(), key.address());
        }
        assert!(matches!(recover_ocean(&who, "17", "x", "0x12"), Err(ApiError::Unauthorized(_))));
        let now = 1_800_000_000_000_000;
        assert_eq!(
            check_ocean_nonce(&(now - 5).to_string(), now).unwrap(),
            format!("ocean-{}", now - 5)
        );
        let stale = (now - OCEAN_NONCE_WINDOW_US - 1).to_string();
        assert!(matches!(check_ocean_nonce(&stale, now), Err(ApiError::Unauthorized(_))));
        assert!(check_ocean_nonce(&(now + 120_000_000).to_string(), now).is_err());
        assert!(matches!(check_ocean_nonce("1e3", now), Err(ApiError::Invalid { .. })));
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
