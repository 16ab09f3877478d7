//! Signing and verifying EIP-712 payloads (receipts and inference attestations) with the
//! operator key, and the precise reasons a signed payload is refused.
//!
//! A [`Signed`] payload carries, besides the signature, the signer it claims and the domain
//! it was signed under. That is what lets [`Signed::verify`] tell apart "signed by someone
//! else" ([`ReceiptError::WrongSigner`]), "signed for another deployment"
//! ([`ReceiptError::WrongDomain`]) and "edited after signing"
//! ([`ReceiptError::SignatureMismatch`]) — ECDSA recovery alone would report all three as
//! "some other address".

use alloy::primitives::{Address, B256, Signature};
use alloy::signers::{Signer, SignerSync};
use alloy::sol_types::SolStruct;
use posthuman_types::Hash32;
use serde::{Deserialize, Serialize};

use crate::receipt::ReceiptDomain;

/// Why a signed payload is refused (or could not be signed). Each variant names one failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Signed for another chain or lineage contract than the one being checked against.
    #[error("signed for {found}, expected {expected}")]
    WrongDomain { expected: ReceiptDomain, found: ReceiptDomain },
    /// Signed (or claimed to be signed) by a key other than the operator's.
    #[error("signed by {found}, not by the operator {expected}")]
    WrongSigner { expected: Address, found: Address },
    /// The signature is not a 65-byte `r ‖ s ‖ v` secp256k1 signature in canonical form.
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// The signature is well formed but does not cover this content: a field was edited
    /// after signing (or the signature belongs to another payload).
    #[error(
        "signature does not match the content (it recovers to {recovered}, not {claimed}): a field was changed after signing"
    )]
    SignatureMismatch { claimed: Address, recovered: Address },
    /// The carried JSON parameters are not the ones whose hash was signed.
    #[error(
        "params do not match the signed params hash (signed {committed}, params hash to {actual})"
    )]
    ParamsMismatch { committed: Hash32, actual: Hash32 },
    /// A field contradicts the kind or another field (checked before signing and after
    /// verifying).
    #[error("inconsistent {field}: {reason}")]
    Inconsistent { field: &'static str, reason: String },
    /// The signer failed (key problem); nothing was signed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A payload that is signed as an EIP-712 struct.
pub trait Signable {
    /// Its EIP-712 struct.
    type Sol: SolStruct;
    fn to_sol(&self) -> Self::Sol;
    /// Internal consistency, checked before signing and after verifying.
    fn check(&self) -> Result<(), ReceiptError>;
}

/// A payload with the operator's signature, the signer it claims and the domain it was
/// signed under. Serialises as `{"body": …, "signer": "0x…", "domain": {…}, "signature": "0x…"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed<T> {
    pub body: T,
    pub signer: Address,
    pub domain: ReceiptDomain,
    /// 65 bytes `r ‖ s ‖ v` as `0x…` hex (kept as text so a malformed one is reported as
    /// such by `verify`, not as a JSON error).
    pub signature: String,
}

/// A payload whose signature, signer, domain and consistency have been checked. Only
/// [`Signed::verify`] makes one.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified<T> {
    body: T,
    signer: Address,
    domain: ReceiptDomain,
    digest: Hash32,
}

impl<T> Verified<T> {
    pub fn body(&self) -> &T {
        &self.body
    }
    pub fn signer(&self) -> Address {
        self.signer
    }
    pub fn domain(&self) -> &ReceiptDomain {
        &self.domain
    }
    /// The EIP-712 digest that was signed (for a receipt: the on-chain receipt hash).
    pub fn digest(&self) -> Hash32 {
        self.digest
    }
    pub fn into_body(self) -> T {
        self.body
    }
}

/// The EIP-712 signing digest of `payload` under `domain`.
pub fn digest<T: Signable>(payload: &T, domain: &ReceiptDomain) -> B256 {
    payload.to_sol().eip712_signing_hash(&domain.eip712())
}

/// Signs `payload` with `signer` under `domain`, after checking its consistency (an
/// inconsistent payload is never signed).
pub fn sign<T, S>(payload: T, signer: &S, domain: &ReceiptDomain) -> Result<Signed<T>, ReceiptError>
where
    T: Signable,
    S: SignerSync + Signer + ?Sized,
{
    payload.check()?;
    let d = digest(&payload, domain);
    let sig = signer.sign_hash_sync(&d).map_err(|e| ReceiptError::Signing(e.to_string()))?;
    Ok(Signed {
        body: payload,
        signer: signer.address(),
        domain: *domain,
        signature: sig.to_string(),
    })
}

/// Signs with an asynchronous signer (e.g. a KMS key); otherwise like [`sign`].
pub async fn sign_async<T, S>(
    payload: T,
    signer: &S,
    domain: &ReceiptDomain,
) -> Result<Signed<T>, ReceiptError>
where
    T: Signable,
    S: Signer + ?Sized,
{
    payload.check()?;
    let d = digest(&payload, domain);
    let sig = signer.sign_hash(&d).await.map_err(|e| ReceiptError::Signing(e.to_string()))?;
    Ok(Signed {
        body: payload,
        signer: signer.address(),
        domain: *domain,
        signature: sig.to_string(),
    })
}

/// Parses a 65-byte `0x…` signature, refusing non-canonical (high-s) forms so that one
/// payload has exactly one valid signature per key.
pub fn parse_signature(text: &str) -> Result<Signature, ReceiptError> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    if hex.len() != 130 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReceiptError::MalformedSignature(format!(
            "expected 0x and 130 hex digits, got {} characters",
            text.len()
        )));
    }
    let sig: Signature =
        text.parse().map_err(|e| ReceiptError::MalformedSignature(format!("{e}")))?;
    if sig.normalize_s().is_some() {
        return Err(ReceiptError::MalformedSignature(
            "s is not in the lower half of the curve order".into(),
        ));
    }
    if sig.r().is_zero() || sig.s().is_zero() {
        return Err(ReceiptError::MalformedSignature("r or s is zero".into()));
    }
    Ok(sig)
}

impl<T: Signable + Clone> Signed<T> {
    /// The EIP-712 digest of the body under the domain it claims.
    pub fn digest(&self) -> Hash32 {
        Hash32(digest(&self.body, &self.domain).0)
    }

    /// Verifies the payload was signed by `expected_operator` under `domain`, unchanged,
    /// and is internally consistent. Checks in order: domain, claimed signer, signature
    /// form, signature over the content, consistency — the first failure is returned.
    pub fn verify(
        &self,
        expected_operator: Address,
        domain: &ReceiptDomain,
    ) -> Result<Verified<T>, ReceiptError> {
        if self.domain != *domain {
            return Err(ReceiptError::WrongDomain { expected: *domain, found: self.domain });
        }
        if self.signer != expected_operator {
            return Err(ReceiptError::WrongSigner {
                expected: expected_operator,
                found: self.signer,
            });
        }
        let sig = parse_signature(&self.signature)?;
        let d = digest(&self.body, domain);
        let recovered = sig.recover_address_from_prehash(&d).map_err(|e| {
            ReceiptError::MalformedSignature(format!("no public key recovers: {e}"))
        })?;
        if recovered != self.signer {
            return Err(ReceiptError::SignatureMismatch { claimed: self.signer, recovered });
        }
        self.body.check()?;
        Ok(Verified {
            body: self.body.clone(),
            signer: recovered,
            domain: *domain,
            digest: Hash32(d.0),
        })
    }
}
