//! Ocean provider fees: the operator signs `(providerData, address, token, amount,
//! validUntil)` exactly as `ERC20Template.startOrder` checks it.

use alloy::primitives::{Address, B256, Bytes, Signature, U256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;

use crate::ChainError;
use crate::bindings::ERC20Template;

/// A signed provider fee, as passed to `startOrder` and echoed in its `ProviderFee` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderFee {
    pub address: Address,
    pub token: Address,
    pub amount: U256,
    pub v: u8,
    pub r: B256,
    pub s: B256,
    /// Unix seconds. Not enforced on chain: the order check enforces it.
    pub valid_until: U256,
    pub data: Bytes,
}

/// `keccak256(abi.encodePacked(providerData, providerFeeAddress, providerFeeToken,
/// providerFeeAmount, validUntil))`, the digest Ocean signs with the personal-message prefix.
pub fn provider_fee_digest(
    data: &[u8],
    address: Address,
    token: Address,
    amount: U256,
    valid_until: U256,
) -> B256 {
    let mut buf = Vec::with_capacity(data.len() + 20 + 20 + 32 + 32);
    buf.extend_from_slice(data);
    buf.extend_from_slice(address.as_slice());
    buf.extend_from_slice(token.as_slice());
    buf.extend_from_slice(&amount.to_be_bytes::<32>());
    buf.extend_from_slice(&valid_until.to_be_bytes::<32>());
    keccak256(&buf)
}

/// Signs a provider fee with `signer` (whose address becomes the fee address).
pub fn sign_provider_fee(
    signer: &PrivateKeySigner,
    token: Address,
    amount: U256,
    valid_until: u64,
    data: Bytes,
) -> Result<ProviderFee, ChainError> {
    let address = signer.address();
    let valid_until = U256::from(valid_until);
    let digest = provider_fee_digest(&data, address, token, amount, valid_until);
    let sig = signer.sign_message_sync(digest.as_slice())?;
    Ok(ProviderFee {
        address,
        token,
        amount,
        v: 27 + u8::from(sig.v()),
        r: B256::from(sig.r()),
        s: B256::from(sig.s()),
        valid_until,
        data,
    })
}

/// The address that signed a provider fee (whatever `fee.address` claims), or `None` if the
/// signature is malformed.
pub fn recover_provider_fee_signer(fee: &ProviderFee) -> Option<Address> {
    let parity = match fee.v {
        27 | 0 => false,
        28 | 1 => true,
        _ => return None,
    };
    let sig = Signature::from_scalars_and_parity(fee.r, fee.s, parity);
    let digest =
        provider_fee_digest(&fee.data, fee.address, fee.token, fee.amount, fee.valid_until);
    sig.recover_address_from_msg(digest.as_slice()).ok()
}

impl ProviderFee {
    pub(crate) fn to_sol(&self) -> ERC20Template::providerFee {
        ERC20Template::providerFee {
            providerFeeAddress: self.address,
            providerFeeToken: self.token,
            providerFeeAmount: self.amount,
            v: self.v,
            r: self.r,
            s: self.s,
            validUntil: self.valid_until,
            providerData: self.data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_fee_recovers_to_its_signer_and_tampering_changes_the_signer() {
        let signer =
            PrivateKeySigner::from_bytes(&B256::repeat_byte(3)).unwrap_or_else(|e| panic!("{e}"));
        let fee = sign_provider_fee(
            &signer,
            Address::repeat_byte(1),
            U256::from(5),
            1_900_000_000,
            Bytes::from_static(b"d"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fee.address, signer.address());
        assert!(fee.v == 27 || fee.v == 28);
        assert_eq!(recover_provider_fee_signer(&fee), Some(signer.address()));
        let mut later = fee.clone();
        later.valid_until += U256::from(1);
        assert_ne!(recover_provider_fee_signer(&later), Some(signer.address()));
        let mut bad_v = fee;
        bad_v.v = 29;
        assert_eq!(recover_provider_fee_signer(&bad_v), None);
    }

    #[test]
    fn digest_is_abi_encode_packed() {
        // 1 data byte + 20 + 20 + 32 + 32 bytes, hashed once.
        let mut packed = vec![0xab];
        packed.extend_from_slice(&[0x11; 20]);
        packed.extend_from_slice(&[0x22; 20]);
        packed.extend_from_slice(&U256::from(7).to_be_bytes::<32>());
        packed.extend_from_slice(&U256::from(9).to_be_bytes::<32>());
        let d = provider_fee_digest(
            &[0xab],
            Address::repeat_byte(0x11),
            Address::repeat_byte(0x22),
            U256::from(7),
            U256::from(9),
        );
        assert_eq!(d, keccak256(&packed));
    }
}
