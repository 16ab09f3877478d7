//! The lineage & reward contract (`contracts/src/ModelLineage.sol`) through the client:
//! commit-before-reveal training commitments, child models owned by the contract,
//! exactly-once derivations paying rewards, and lineage reads.

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::Ethereum;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionReceipt;
use posthuman_types::{Hash32, RewardScheme};

use crate::bindings::ModelLineage;
use crate::client::{b256, hash32};
use crate::{Chain, ChainError};

/// Where a training job stands in the lineage contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Unknown,
    Committed,
    ChildCreated,
    Recorded,
}

/// A training job's on-chain commitment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commitment {
    pub job_id: Hash32,
    pub state: JobState,
    pub parent: Address,
    pub trainer: Address,
    pub output_weights_hash: Hash32,
    pub receipt_hash: Hash32,
    pub child_nft: Option<Address>,
}

/// One model in a lineage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineageEntry {
    pub nft: Address,
    /// `None` for a root.
    pub parent: Option<Address>,
    pub depth: u32,
    /// The trainer (the owner, for a root).
    pub trainer: Address,
    pub root: Address,
    pub datatoken: Address,
    pub weights_hash: Hash32,
    /// The training job that produced it (`None` for a root).
    pub job_id: Option<Hash32>,
}

/// A child model created by the lineage contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildModel {
    pub nft: Address,
    pub datatoken: Address,
    pub gas_used: u64,
}

/// A recorded derivation and the rewards it paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derivation {
    pub tx_hash: B256,
    pub gas_used: u64,
    /// (beneficiary, amount) per mint, in mint order.
    pub rewards: Vec<(Address, U256)>,
}

/// Sends an operator transaction to the lineage contract, decoding its custom errors into
/// `ChainError::LineageRejected`-style messages.
async fn send_lineage<P, D>(
    call: CallBuilder<P, D, Ethereum>,
) -> Result<TransactionReceipt, ChainError>
where
    P: Provider<Ethereum>,
    D: CallDecoder,
{
    let pending = match call.send().await {
        Ok(p) => p,
        Err(e) => {
            if let Some(err) = e.as_decoded_interface_error::<ModelLineage::ModelLineageErrors>() {
                return Err(ChainError::LineageRejected(format!("{err:?}")));
            }
            return Err(e.into());
        }
    };
    let receipt = pending.get_receipt().await?;
    if !receipt.status() {
        return Err(ChainError::Reverted(format!("{}", receipt.transaction_hash)));
    }
    Ok(receipt)
}

fn entry(nft: Address, m: &ModelLineage::Model) -> LineageEntry {
    LineageEntry {
        nft,
        parent: (m.parent != Address::ZERO).then_some(m.parent),
        depth: m.depth,
        trainer: m.trainer,
        root: m.root,
        datatoken: m.datatoken,
        weights_hash: hash32(m.weightsHash),
        job_id: (m.jobId != B256::ZERO).then(|| hash32(m.jobId)),
    }
}

impl Chain {
    fn lineage_contract(
        &self,
    ) -> ModelLineage::ModelLineageInstance<&alloy::providers::DynProvider> {
        ModelLineage::new(self.book.lineage, &self.provider)
    }

    /// Registers a root model (operator only): its NFT must be held by `owner` and carry
    /// `weights_hash` in its ERC725Y store; fixes the reward scheme for its derivatives.
    /// `root_owner` is the owner of record (the root's trainer, paid every derivation's
    /// remainder); it differs from `owner` when a custodian holds the NFT for a publisher.
    #[allow(clippy::too_many_arguments)] // mirrors the contract function one to one
    pub async fn register_root(
        &self,
        nft: Address,
        datatoken: Address,
        weights_hash: Hash32,
        owner: Address,
        root_owner: Address,
        total_reward: u128,
        shares_bps: &[u16],
    ) -> Result<TransactionReceipt, ChainError> {
        let c = self.lineage_contract();
        send_lineage(c.registerRoot(
            nft,
            datatoken,
            b256(&weights_hash),
            owner,
            root_owner,
            total_reward,
            shares_bps.to_vec(),
        ))
        .await
    }

    /// Commits a training job's outcome before anything is revealed (operator only, once
    /// per job id).
    pub async fn commit_training(
        &self,
        job_id: Hash32,
        parent_nft: Address,
        trainer: Address,
        output_weights_hash: Hash32,
        receipt_hash: Hash32,
    ) -> Result<TransactionReceipt, ChainError> {
        let c = self.lineage_contract();
        let call = c.commitTraining(
            b256(&job_id),
            parent_nft,
            trainer,
            b256(&output_weights_hash),
            b256(&receipt_hash),
        );
        send_lineage(call).await
    }

    /// Has the lineage contract create the child model's NFT + datatoken for a committed job.
    pub async fn create_child(
        &self,
        job_id: Hash32,
        name: &str,
        symbol: &str,
        token_uri: &str,
    ) -> Result<ChildModel, ChainError> {
        let c = self.lineage_contract();
        let r = send_lineage(c.createChild(
            b256(&job_id),
            name.to_string(),
            symbol.to_string(),
            token_uri.to_string(),
        ))
        .await?;
        let ev = r.decoded_log::<ModelLineage::ChildCreated>().ok_or(ChainError::MissingEvent {
            event: "ChildCreated",
            tx: r.transaction_hash.to_string(),
        })?;
        Ok(ChildModel { nft: ev.childNft, datatoken: ev.childDatatoken, gas_used: r.gas_used })
    }

    /// Records the derivation (operator only, exactly once per job) and pays the rewards.
    pub async fn record_derivation(
        &self,
        job_id: Hash32,
        child_nft: Address,
        child_datatoken: Address,
    ) -> Result<Derivation, ChainError> {
        let c = self.lineage_contract();
        let r = send_lineage(c.recordDerivation(b256(&job_id), child_nft, child_datatoken)).await?;
        let rewards = r
            .inner
            .logs()
            .iter()
            .filter(|l| l.address() == self.book.lineage)
            .filter_map(|l| l.log_decode::<ModelLineage::RewardPaid>().ok())
            .map(|l| (l.inner.data.beneficiary, l.inner.data.amount))
            .collect();
        Ok(Derivation { tx_hash: r.transaction_hash, gas_used: r.gas_used, rewards })
    }

    /// A job's commitment (state `Unknown` if never committed).
    pub async fn commitment(&self, job_id: Hash32) -> Result<Commitment, ChainError> {
        let j = self.lineage_contract().getJob(b256(&job_id)).call().await?;
        let state = match j.state {
            1 => JobState::Committed,
            2 => JobState::ChildCreated,
            3 => JobState::Recorded,
            _ => JobState::Unknown,
        };
        Ok(Commitment {
            job_id,
            state,
            parent: j.parent,
            trainer: j.trainer,
            output_weights_hash: hash32(j.outputWeightsHash),
            receipt_hash: hash32(j.receiptHash),
            child_nft: (j.childNft != Address::ZERO).then_some(j.childNft),
        })
    }

    /// A model's lineage record, or `None` if the contract does not know it.
    pub async fn model(&self, nft: Address) -> Result<Option<LineageEntry>, ChainError> {
        let m = self.lineage_contract().getModel(nft).call().await?;
        Ok(m.exists.then(|| entry(nft, &m)))
    }

    /// The lineage from `nft` up to its root (`nft` first), in one call.
    pub async fn lineage(&self, nft: Address) -> Result<Vec<LineageEntry>, ChainError> {
        let c = self.lineage_contract();
        let chain = match c.lineage(nft).call().await {
            Ok(v) => v,
            Err(e) => {
                if let Some(err) =
                    e.as_decoded_interface_error::<ModelLineage::ModelLineageErrors>()
                {
                    return Err(ChainError::LineageRejected(format!("{err:?}")));
                }
                return Err(e.into());
            }
        };
        let mut out = Vec::with_capacity(chain.len());
        let mut cursor = nft;
        for m in &chain {
            out.push(entry(cursor, m));
            cursor = m.parent;
        }
        Ok(out)
    }

    /// The reward scheme fixed for a root.
    pub async fn scheme_of(&self, root: Address) -> Result<RewardScheme, ChainError> {
        let s = self.lineage_contract().schemeOf(root).call().await?;
        Ok(RewardScheme {
            total_reward: s.totalReward.to_string(),
            shares_bps: s.sharesBps,
            royalty: "0".into(),
        })
    }
}
