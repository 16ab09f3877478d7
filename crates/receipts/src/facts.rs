//! What public verification reads from the chain, as a narrow trait.
//!
//! [`ChainFacts`] is implemented over the chain crate's RPC client (feature `chain`) and by
//! [`FactsSnapshot`], a serialisable set of facts fetched earlier (by the CLI, or served to
//! the storefront, which cannot speak JSON-RPC itself). Verification logic sees only this
//! trait, so it is the same code whichever source the facts come from.

use std::collections::BTreeMap;

use alloy::primitives::Address;
use posthuman_types::Hash32;
use serde::{Deserialize, Serialize};

/// The lineage contract's record of a training job (`getJob`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingCommitment {
    /// The parent model's data NFT.
    pub parent: Address,
    pub trainer: Address,
    pub output_weights_hash: Hash32,
    /// The receipt hash committed (the receipt's EIP-712 digest).
    pub receipt_hash: Hash32,
    /// The child model, once the contract created it.
    pub child_nft: Option<Address>,
    /// The block `commitTraining` was mined in: the operator of that block signed the
    /// receipt (facts written before the contract dated commitments read 0).
    #[serde(default)]
    pub committed_at_block: u64,
}

/// A model's entry in the lineage contract (`getModel`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFacts {
    pub nft: Address,
    /// `None` for a root.
    pub parent: Option<Address>,
    /// The trainer (the owner, for a root).
    pub trainer: Address,
    pub datatoken: Address,
    pub weights_hash: Hash32,
    /// The on-chain job id ([`crate::job_id_hash`]) that produced it; `None` for a root.
    pub job_id: Option<Hash32>,
}

/// One `OrderStarted` event of a transaction, with the signer of its provider fee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFacts {
    /// The datatoken that emitted the order (and burnt the payment).
    pub datatoken: Address,
    pub consumer: Address,
    pub payer: Address,
    pub service_index: u64,
    /// Who signed the order's provider fee (`None`: no fee, or an unrecoverable signature).
    pub provider_fee_signer: Option<Address>,
    /// The block the order was mined in.
    #[serde(default)]
    pub block: u64,
}

/// One operator's term in the lineage contract (`operatorHistory`): from `from_block` until
/// the next term's `from_block`, that block included (in a rotation's block the old key
/// acted before the rotation, the new one after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorTerm {
    pub operator: Address,
    pub from_block: u64,
}

/// Whether `who` was the operator at any moment of blocks `from..=to` (`to` `None`: up to
/// now), by `terms` (oldest first, as the contract keeps them).
pub fn held_operator_role(
    terms: &[OperatorTerm],
    who: Address,
    from: u64,
    to: Option<u64>,
) -> bool {
    terms.iter().enumerate().any(|(i, t)| {
        let until = terms.get(i + 1).map(|next| next.from_block); // None: still in office
        t.operator == who
            && to.is_none_or(|to| t.from_block <= to)
            && until.is_none_or(|until| until >= from)
    })
}

/// Reading the facts failed (RPC down, malformed answer): not a verdict, retry later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("could not read chain facts: {0}")]
pub struct FactsError(pub String);

/// The on-chain facts public verification needs. `Ok(None)` means "the chain says there is
/// no such thing"; `Err` means "could not ask".
#[async_trait::async_trait]
pub trait ChainFacts: Send + Sync {
    /// The commitment of training job `job_id` (the `bytes32` on-chain id).
    async fn training_commitment(
        &self,
        job_id: Hash32,
    ) -> Result<Option<TrainingCommitment>, FactsError>;
    /// A model's lineage entry.
    async fn model(&self, nft: Address) -> Result<Option<ModelFacts>, FactsError>;
    /// The weights hash stored in a data NFT's ERC725Y store: what the model on sale claims.
    async fn weights_commitment(&self, nft: Address) -> Result<Option<Hash32>, FactsError>;
    /// The orders started by a transaction; `None` if the transaction does not exist, is not
    /// mined, or reverted.
    async fn orders(&self, tx: Hash32) -> Result<Option<Vec<OrderFacts>>, FactsError>;
    /// Every operator of the lineage contract, oldest first (empty: none known).
    async fn operator_history(&self) -> Result<Vec<OperatorTerm>, FactsError>;
}

/// A snapshot of chain facts (serialisable). Fill it from any source; it answers
/// [`ChainFacts`] from memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactsSnapshot {
    pub commitments: BTreeMap<Hash32, TrainingCommitment>,
    pub models: BTreeMap<Address, ModelFacts>,
    pub nft_weights: BTreeMap<Address, Hash32>,
    pub orders: BTreeMap<Hash32, Vec<OrderFacts>>,
    /// The lineage contract's operators, oldest first.
    #[serde(default)]
    pub operators: Vec<OperatorTerm>,
}

#[async_trait::async_trait]
impl ChainFacts for FactsSnapshot {
    async fn training_commitment(
        &self,
        job_id: Hash32,
    ) -> Result<Option<TrainingCommitment>, FactsError> {
        Ok(self.commitments.get(&job_id).cloned())
    }
    async fn model(&self, nft: Address) -> Result<Option<ModelFacts>, FactsError> {
        Ok(self.models.get(&nft).cloned())
    }
    async fn weights_commitment(&self, nft: Address) -> Result<Option<Hash32>, FactsError> {
        Ok(self.nft_weights.get(&nft).copied())
    }
    async fn orders(&self, tx: Hash32) -> Result<Option<Vec<OrderFacts>>, FactsError> {
        Ok(self.orders.get(&tx).cloned())
    }
    async fn operator_history(&self) -> Result<Vec<OperatorTerm>, FactsError> {
        Ok(self.operators.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A term covers its first block through the block of the next rotation (both keys acted
    /// in that block); the last term runs until now; a key never in office holds nothing.
    #[test]
    fn operator_terms_cover_their_blocks_through_the_rotation() {
        let (a, b, c) = (Address::repeat_byte(1), Address::repeat_byte(2), Address::repeat_byte(3));
        let terms = [
            OperatorTerm { operator: a, from_block: 5 },
            OperatorTerm { operator: b, from_block: 10 },
            OperatorTerm { operator: a, from_block: 20 },
        ];
        let at = |who, block| held_operator_role(&terms, who, block, Some(block));
        assert!(!at(a, 4), "before the deployment");
        assert!(at(a, 5) && at(a, 9) && at(a, 10), "a until the rotation's block");
        assert!(!at(a, 11) && !at(a, 19), "a rotated out");
        assert!(at(b, 10) && at(b, 20) && !at(b, 9) && !at(b, 21));
        assert!(at(a, 20) && at(a, 1_000), "a back in office, until now");
        assert!(!at(c, 10));
        // From a block on: b held the role after block 15 (until 20), not after 21.
        assert!(held_operator_role(&terms, b, 15, None));
        assert!(!held_operator_role(&terms, b, 21, None));
        assert!(held_operator_role(&terms, a, 11, None), "a again from 20");
        assert!(!held_operator_role(&[], a, 0, None), "no history: nobody");
    }
}
