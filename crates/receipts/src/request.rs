//! Signed API requests: the one EIP-712 struct every signed call to the API uses (job
//! submit, model publish, result reads, owner actions), shared by the API that checks it, the
//! CLI and the tests that sign it, and (through `eth_signTypedData_v4`) the storefront.
//!
//! A signature binds four things: the **action** (a short name such as [`SUBMIT_JOB`], so a
//! signature for one route is worthless on another), the **keccak256 of the raw request
//! body** (the JSON part of a multipart upload exactly as sent, so there is no
//! canonicalisation to disagree on; for a read, the id of what is read), **expiresAt** (unix
//! seconds) and a single-use **nonce** (empty for reads, which change nothing). It is signed
//! under the deployment's domain — the same one receipts use ([`ReceiptDomain`]): name
//! `Posthuman`, version `1`, the chain id and, as `verifyingContract`, the deployment's
//! `ModelLineage` contract — so a signature made for one chain or one deployment recovers to
//! a different address on any other and is refused there.
//!
//! The typed data a wallet signs (`eth_signTypedData_v4`, see [`SignableRequest::typed_data`]):
//!
//! ```json
//! {
//!   "types": {
//!     "EIP712Domain": [
//!       {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
//!       {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}
//!     ],
//!     "PosthumanRequest": [
//!       {"name": "action", "type": "string"}, {"name": "bodyHash", "type": "bytes32"},
//!       {"name": "expiresAt", "type": "uint64"}, {"name": "nonce", "type": "string"}
//!     ]
//!   },
//!   "primaryType": "PosthumanRequest",
//!   "domain": {"name": "Posthuman", "version": "1", "chainId": 31337,
//!              "verifyingContract": "0x…ModelLineage"},
//!   "message": {"action": "submit-job", "bodyHash": "0x…keccak256(body)",
//!               "expiresAt": 1767000000, "nonce": "n-…"}
//! }
//! ```
//!
//! The API answers `GET /api/chain` with the address book, whose `chain_id` and `lineage`
//! are the domain's `chainId` and `verifyingContract`.

use alloy::primitives::{Address, B256, keccak256};
use alloy::signers::SignerSync;
use alloy::sol;
use alloy::sol_types::SolStruct;

use crate::receipt::{DOMAIN_NAME, DOMAIN_VERSION, ReceiptDomain};
use crate::signed::parse_signature;

/// Submitting a paid job (`POST /api/jobs`): the body is the job request JSON.
pub const SUBMIT_JOB: &str = "submit-job";
/// Publishing a model (`POST /api/models`): the body is the publish request JSON.
pub const PUBLISH_MODEL: &str = "publish-model";
/// Reading a job's results (`GET /api/jobs/{id}/result`): the body is the job id.
pub const READ_RESULT: &str = "read-result";
/// Featuring evaluations on a model's card (`POST /api/models/{nft}/featured`): the body is
/// the request JSON.
pub const FEATURE_EVALUATIONS: &str = "feature-evaluations";
/// Staging files for a direct upload (`POST /api/uploads`): the body is the upload request
/// JSON (purpose, each file's name, length and SHA-256).
pub const CREATE_UPLOAD: &str = "create-upload";
/// Editing a model's card (`POST /api/models/{nft}/card`): the body is the edit JSON
/// (`posthuman_types::card::CardEdit`).
pub const EDIT_CARD: &str = "edit-card";

sol! {
    /// The EIP-712 struct of a signed API request. Its type string is
    /// `PosthumanRequest(string action,bytes32 bodyHash,uint64 expiresAt,string nonce)`.
    #[derive(Debug, PartialEq, Eq)]
    struct PosthumanRequest {
        string action;
        bytes32 bodyHash;
        uint64 expiresAt;
        string nonce;
    }
}

/// Why a request could not be signed or its signature recovered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The signature is not 65 canonical bytes of hex, or recovers no key: sign again.
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// The body is not a JSON object with a string `nonce` and an integer `expires_at`.
    #[error("the request body has no {0}")]
    MissingField(&'static str),
    /// The signer failed (key problem); nothing was signed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// What a signature covers: an action, a body's hash, an expiry and a nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignableRequest {
    pub action: String,
    pub body_hash: B256,
    pub expires_at: u64,
    pub nonce: String,
}

impl SignableRequest {
    /// A request for `action` over the raw `body` bytes.
    pub fn new(action: &str, body: &[u8], expires_at: u64, nonce: &str) -> Self {
        SignableRequest {
            action: action.to_string(),
            body_hash: keccak256(body),
            expires_at,
            nonce: nonce.to_string(),
        }
    }

    /// A request for `action` over a JSON body that names its own `nonce` and `expires_at`
    /// (every signed API body does): the values signed are the very ones the API reads.
    pub fn of_json_body(action: &str, body: &[u8]) -> Result<Self, RequestError> {
        // From text, not `from_slice`: one serde_json reader type in the storefront's wasm.
        let v: serde_json::Value = std::str::from_utf8(body)
            .ok()
            .and_then(|text| crate::json::from_str(text).ok())
            .ok_or(RequestError::MissingField("JSON object"))?;
        let nonce = v
            .get("nonce")
            .and_then(|n| n.as_str())
            .ok_or(RequestError::MissingField("string nonce"))?;
        let expires_at = v
            .get("expires_at")
            .and_then(|e| e.as_u64())
            .ok_or(RequestError::MissingField("integer expires_at"))?;
        Ok(Self::new(action, body, expires_at, nonce))
    }

    /// A read of `resource` (e.g. a job id) until `expires_at`: no nonce, reads change nothing.
    pub fn read(action: &str, resource: &str, expires_at: u64) -> Self {
        Self::new(action, resource.as_bytes(), expires_at, "")
    }

    /// Its EIP-712 struct.
    pub fn to_sol(&self) -> PosthumanRequest {
        PosthumanRequest {
            action: self.action.clone(),
            bodyHash: self.body_hash,
            expiresAt: self.expires_at,
            nonce: self.nonce.clone(),
        }
    }

    /// The digest a wallet signs under `domain`.
    pub fn signing_hash(&self, domain: &ReceiptDomain) -> B256 {
        self.to_sol().eip712_signing_hash(&domain.eip712())
    }

    /// Signs under `domain`; returns the `0x…` 65-byte signature the API expects.
    pub fn sign<S: SignerSync + ?Sized>(
        &self,
        domain: &ReceiptDomain,
        signer: &S,
    ) -> Result<String, RequestError> {
        signer
            .sign_hash_sync(&self.signing_hash(domain))
            .map(|s| s.to_string())
            .map_err(|e| RequestError::Signing(e.to_string()))
    }

    /// The address that signed this request under `domain`. Under any other domain (chain,
    /// deployment), action, body, expiry or nonce the same signature recovers to someone
    /// else, so callers compare the result with the address the request claims.
    pub fn recover(
        &self,
        domain: &ReceiptDomain,
        signature: &str,
    ) -> Result<Address, RequestError> {
        // parse_signature only refuses malformed text; its reason is passed on as is, not
        // behind a second "malformed signature:" prefix.
        let sig = parse_signature(signature.trim()).map_err(|e| match e {
            crate::ReceiptError::MalformedSignature(why) => RequestError::MalformedSignature(why),
            other => RequestError::MalformedSignature(other.to_string()),
        })?;
        sig.recover_address_from_prehash(&self.signing_hash(domain))
            .map_err(|e| RequestError::MalformedSignature(format!("no public key recovers: {e}")))
    }

    /// The `eth_signTypedData_v4` JSON for this request under `domain` (shape in the module
    /// docs): what a browser wallet is asked to sign.
    pub fn typed_data(&self, domain: &ReceiptDomain) -> serde_json::Value {
        let field = |name: &str, ty: &str| serde_json::json!({ "name": name, "type": ty });
        serde_json::json!({
            "types": {
                "EIP712Domain": [
                    field("name", "string"),
                    field("version", "string"),
                    field("chainId", "uint256"),
                    field("verifyingContract", "address"),
                ],
                "PosthumanRequest": [
                    field("action", "string"),
                    field("bodyHash", "bytes32"),
                    field("expiresAt", "uint64"),
                    field("nonce", "string"),
                ],
            },
            "primaryType": "PosthumanRequest",
            "domain": {
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": domain.chain_id,
                "verifyingContract": format!("{:#x}", domain.verifying_contract),
            },
            "message": {
                "action": self.action,
                "bodyHash": format!("{:#x}", self.body_hash),
                "expiresAt": self.expires_at,
                "nonce": self.nonce,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    fn domain(chain_id: u64, lineage: u8) -> ReceiptDomain {
        ReceiptDomain::new(chain_id, Address::repeat_byte(lineage))
    }

    #[test]
    fn a_signature_binds_domain_action_body_expiry_and_nonce() {
        let key = PrivateKeySigner::random();
        let body = br#"{"nonce":"n-1","expires_at":1000,"model":"0x01"}"#;
        let req = SignableRequest::of_json_body(SUBMIT_JOB, body).unwrap();
        assert_eq!((req.nonce.as_str(), req.expires_at), ("n-1", 1000));
        let d = domain(31337, 7);
        let sig = req.sign(&d, &key).unwrap();
        assert_eq!(req.recover(&d, &sig).unwrap(), key.address());
        // Every other chain, deployment, action, body, expiry or nonce recovers to someone else.
        let others = [
            (domain(1, 7), req.clone()),
            (domain(31337, 8), req.clone()),
            (d, SignableRequest { action: PUBLISH_MODEL.into(), ..req.clone() }),
            (d, SignableRequest::new(SUBMIT_JOB, b"{}", 1000, "n-1")),
            (d, SignableRequest { expires_at: 1001, ..req.clone() }),
            (d, SignableRequest { nonce: "n-2".into(), ..req.clone() }),
        ];
        for (dom, other) in others {
            assert_ne!(other.recover(&dom, &sig).unwrap(), key.address(), "{other:?} {dom:?}");
        }
        let err = req.recover(&d, "0x1234").unwrap_err();
        assert!(matches!(err, RequestError::MalformedSignature(_)));
        // Said once: the 401 a client reads is this text.
        let text = err.to_string();
        assert_eq!(text.matches("malformed signature").count(), 1, "{text}");
        assert!(matches!(
            SignableRequest::of_json_body(SUBMIT_JOB, br#"{"nonce":"n"}"#),
            Err(RequestError::MissingField(_))
        ));
    }

    #[test]
    fn the_typed_data_json_hashes_to_the_signed_digest() {
        // What a browser wallet signs with eth_signTypedData_v4 is this very digest.
        let req = SignableRequest::read(READ_RESULT, "j-0123", 1_767_000_000);
        let d = domain(11155111, 0xab);
        let typed: alloy::dyn_abi::TypedData = serde_json::from_value(req.typed_data(&d)).unwrap();
        assert_eq!(typed.eip712_signing_hash().unwrap(), req.signing_hash(&d));
    }
}
