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
}

/// A snapshot of chain facts (serialisable). Fill it from any source; it answers
/// [`ChainFacts`] from memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactsSnapshot {
    pub commitments: BTreeMap<Hash32, TrainingCommitment>,
    pub models: BTreeMap<Address, ModelFacts>,
    pub nft_weights: BTreeMap<Address, Hash32>,
    pub orders: BTreeMap<Hash32, Vec<OrderFacts>>,
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
}
