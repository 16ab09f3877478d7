//! What an Ocean v4 provider fee pays for: the `providerData` the operator signs with the
//! fee's amount, in 32 bytes.
//!
//! `providerData` = a digest of `(chain id, deployment, model, job kind, quoted dataset length,
//! terms hash)`. It rides in the `startOrder` calldata and in the datatoken's `ProviderFee`
//! event, so every byte is paid for in gas on every order: a JSON binding was 200 bytes
//! (10.5k gas, enough to put a derived model's first order over its target), and even 40 bytes
//! (the length in clear + the digest) cost a second calldata/memory word and 1.306x of the
//! baseline; one word binds the same facts. Everyone who holds the terms (the API at submit,
//! the CLI and the storefront before they pay) recomputes the same digest, so a fee quoted for
//! model A / infer cannot pay for model B / train, nor for other parameters, another chain or
//! another deployment. The quoted dataset length is one of the terms the submitter states
//! (the submitted dataset may be shorter than quoted, never longer).

use alloy::primitives::{Address, keccak256};
use posthuman_types::{Hash32, JobKind, JobParams};
use serde::Serialize;

/// Domain tag of the digest (its version).
const TAG: &[u8] = b"posthuman:provider-fee:v1";

/// The facts a provider fee binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeeBinding {
    pub chain_id: u64,
    /// The deployment: its lineage contract.
    pub deployment: Address,
    /// The model's NFT.
    pub model: Address,
    pub kind: JobKind,
    /// The longest dataset this fee pays for.
    pub dataset_bytes: u64,
    /// [`terms_hash`] of the quoted terms.
    pub terms: Hash32,
}

impl FeeBinding {
    /// The length of an encoded binding (one EVM word).
    pub const LEN: usize = 32;

    /// The digest of every bound fact.
    pub fn digest(&self) -> [u8; 32] {
        let mut buf = Vec::with_capacity(TAG.len() + 8 + 20 + 20 + 16 + 8 + 32);
        buf.extend_from_slice(TAG);
        buf.extend_from_slice(&self.chain_id.to_be_bytes());
        buf.extend_from_slice(self.deployment.as_slice());
        buf.extend_from_slice(self.model.as_slice());
        // Fixed width, so no two (kind, rest) pairs share an encoding.
        let mut kind = [0u8; 16];
        let k = self.kind.as_str().as_bytes();
        kind[..k.len()].copy_from_slice(k);
        buf.extend_from_slice(&kind);
        buf.extend_from_slice(&self.dataset_bytes.to_be_bytes());
        buf.extend_from_slice(&self.terms.0);
        keccak256(&buf).0
    }

    /// The `providerData` to sign: the digest.
    pub fn encode(&self) -> Vec<u8> {
        self.digest().to_vec()
    }

    /// Whether `data` is exactly this binding.
    pub fn matches(&self, data: &[u8]) -> bool {
        data == self.encode().as_slice()
    }
}

/// keccak256 of the quoted terms' canonical JSON: `{"params":…,"dataset_bytes":…}`, compact,
/// fields in that order (the body of `POST /api/models/{nft}/quote`).
pub fn terms_hash(params: &JobParams, dataset_bytes: u64) -> Result<Hash32, serde_json::Error> {
    #[derive(Serialize)]
    struct Terms<'a> {
        params: &'a JobParams,
        dataset_bytes: u64,
    }
    let json = serde_json::to_vec(&Terms { params, dataset_bytes })?;
    Ok(Hash32(keccak256(json).0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthuman_types::{InferParams, Sampling};

    fn binding() -> FeeBinding {
        FeeBinding {
            chain_id: 31337,
            deployment: Address::repeat_byte(1),
            model: Address::repeat_byte(2),
            kind: JobKind::Infer,
            dataset_bytes: 1234,
            terms: Hash32([7; 32]),
        }
    }

    #[test]
    fn one_word_that_binds_every_fact() {
        let b = binding();
        let data = b.encode();
        assert_eq!(data.len(), FeeBinding::LEN);
        assert!(b.matches(&data));
        let others = [
            FeeBinding { chain_id: 1, ..b.clone() },
            FeeBinding { deployment: Address::repeat_byte(9), ..b.clone() },
            FeeBinding { model: Address::repeat_byte(9), ..b.clone() },
            FeeBinding { kind: JobKind::Train, ..b.clone() },
            FeeBinding { dataset_bytes: 1235, ..b.clone() },
            FeeBinding { terms: Hash32([8; 32]), ..b.clone() },
        ];
        for o in others {
            assert!(!o.matches(&data), "{o:?}");
        }
        assert!(!b.matches(&data[..31]));
        assert!(!b.matches(b"{\"model\":1}"));
    }

    #[test]
    fn terms_hash_is_the_quote_bodys_canonical_json() {
        let params = JobParams::Infer(InferParams {
            prompts: vec!["hi".into()],
            max_new_tokens: 4,
            sampling: Sampling::default(),
            stop: vec![],
            messages: vec![],
        });
        let json = format!(
            "{{\"params\":{},\"dataset_bytes\":0}}",
            serde_json::to_string(&params).unwrap()
        );
        assert_eq!(terms_hash(&params, 0).unwrap(), Hash32(keccak256(json).0));
        assert_ne!(terms_hash(&params, 0).unwrap(), terms_hash(&params, 1).unwrap());
    }
}
