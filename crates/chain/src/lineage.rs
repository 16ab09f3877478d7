//! The lineage & reward contract (`contracts/src/ModelLineage.sol`) through the client:
//! commit-before-reveal training commitments, child models owned by the contract,
//! exactly-once derivations paying rewards, lineage reads (bounded by `MAX_DEPTH`), the
//! royalty every order of a derived model pays its ancestors (terms, vault, distribution,
//! who was paid), and the owner's rotation of the operator key with the history of every
//! operator's term (what receipts are verified against).

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::Ethereum;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, TransactionReceipt};
use alloy::sol_types::SolEvent;
use posthuman_types::model::MAX_DEPTH;
use posthuman_types::{Hash32, RewardScheme};

use crate::bindings::{ERC20Template, ModelLineage, OceanToken, RoyaltyVault};
use crate::client::{b256, hash32, send};
use crate::{Chain, ChainError};

/// OCEAN base units `createChild` seeds each royalty vault with, paid by the operator, which
/// `distribute()` never pays out (`RoyaltyVault.SEED`): the vault's balance never returns to
/// zero, so no order pays to create it.
pub const VAULT_SEED: u128 = 1;

/// One operator's term in the lineage contract (`operatorHistory`): from `from_block` until
/// the next term's `from_block`, that block included (the old key acted in the rotation's
/// block before the rotation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperatorTerm {
    pub operator: Address,
    pub from_block: u64,
}

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
    /// The block `commitTraining` was mined in (0 when never committed).
    pub committed_at_block: u64,
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

/// What every order of a derived model pays its ancestors, and where it goes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoyaltyTerms {
    /// The child's vault: its datatoken's publish-market fee address.
    pub vault: Address,
    /// The fee token (OCEAN).
    pub token: Address,
    /// Paid by each `startOrder` of the child.
    pub amount: U256,
}

/// One royalty payment out of a vault (`RoyaltyVault.RoyaltyPaid`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoyaltyPayment {
    /// The derived model whose orders paid it.
    pub child: Address,
    /// The vault that paid it.
    pub vault: Address,
    pub beneficiary: Address,
    /// The ancestor whose trainer the beneficiary is (the root for the remainder).
    pub ancestor: Address,
    pub amount: U256,
    pub tx_hash: Option<B256>,
}

/// Sends an operator transaction to the lineage contract, decoding its custom errors into
/// `ChainError::LineageRejected`-style messages.
pub(crate) async fn send_lineage<P, D>(
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

/// Refuses a lineage longer than the contract can hold (`len` models, the root included).
pub fn check_depth(nft: Address, len: usize) -> Result<(), ChainError> {
    let depth = len.saturating_sub(1);
    if depth > MAX_DEPTH {
        return Err(ChainError::LineageTooDeep { nft, depth, max: MAX_DEPTH });
    }
    Ok(())
}

fn royalty_payment(log: &alloy::rpc::types::Log) -> Result<RoyaltyPayment, ChainError> {
    let ev = log
        .log_decode::<RoyaltyVault::RoyaltyPaid>()
        .map_err(|e| ChainError::Contract(format!("malformed RoyaltyPaid event: {e}")))?;
    let d = ev.inner.data;
    Ok(RoyaltyPayment {
        child: d.childNft,
        vault: log.address(),
        beneficiary: d.beneficiary,
        ancestor: d.ancestorNft,
        amount: d.amount,
        tx_hash: log.transaction_hash,
    })
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
    /// `royalty` (OCEAN base units, ≤ `MAX_ROYALTY`) is what every order of a model derived
    /// from this root will pay its ancestors.
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
        royalty: u128,
    ) -> Result<TransactionReceipt, ChainError> {
        let royalty = alloy::primitives::Uint::<96, 2>::try_from(royalty)
            .map_err(|_| ChainError::Invalid(format!("royalty {royalty} does not fit 96 bits")))?;
        let c = self.lineage_contract();
        send_lineage(c.registerRoot(
            nft,
            datatoken,
            b256(&weights_hash),
            owner,
            root_owner,
            total_reward,
            shares_bps.to_vec(),
            royalty,
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
    /// The operator pays the new vault's [`VAULT_SEED`] of OCEAN: the first time a key does
    /// this, it approves the lineage contract for OCEAN (an unlimited allowance: the
    /// contract's code pulls exactly the seed, from the operator only, in `createChild` only).
    pub async fn create_child(
        &self,
        job_id: Hash32,
        name: &str,
        symbol: &str,
        token_uri: &str,
    ) -> Result<ChildModel, ChainError> {
        let (me, seed) = (self.operator(), U256::from(VAULT_SEED));
        let ocean = OceanToken::new(self.book.ocean, &self.provider);
        let held = ocean.balanceOf(me).call().await?;
        if held < seed {
            return Err(ChainError::OperatorUnfunded { operator: me, held, need: seed });
        }
        if ocean.allowance(me, self.book.lineage).call().await? < seed {
            self.approve(me, self.book.ocean, self.book.lineage, U256::MAX).await?;
        }
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
            committed_at_block: j.committedAt,
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
        check_depth(nft, chain.len())?;
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
            royalty: s.royalty.to_string(),
        })
    }

    /// The lineage contract's current operator (the key it obeys now).
    pub async fn lineage_operator(&self) -> Result<Address, ChainError> {
        Ok(self.lineage_contract().operator().call().await?)
    }

    /// Every operator of the lineage contract so far, oldest first (the last is the current
    /// one).
    pub async fn operator_history(&self) -> Result<Vec<OperatorTerm>, ChainError> {
        let terms = self.lineage_contract().operatorHistory().call().await?;
        Ok(terms
            .into_iter()
            .map(|t| OperatorTerm { operator: t.operator, from_block: t.fromBlock })
            .collect())
    }

    /// The lineage contract's operator at the end of block `block` (`None` before it was
    /// deployed).
    pub async fn operator_at(&self, block: u64) -> Result<Option<Address>, ChainError> {
        let a = self.lineage_contract().operatorAt(U256::from(block)).call().await?;
        Ok((!a.is_zero()).then_some(a))
    }

    /// OCEAN waiting in a derived model's vault for `distribute()`: its balance but the
    /// seed (`None` for a root or an unknown model).
    pub async fn royalty_pending(&self, child_nft: Address) -> Result<Option<U256>, ChainError> {
        let Some(terms) = self.royalty_terms(child_nft).await? else { return Ok(None) };
        let held = self.balance_of(terms.token, terms.vault).await?;
        Ok(Some(held.saturating_sub(U256::from(VAULT_SEED))))
    }

    /// The lineage contract's owner (who may rotate the operator).
    pub async fn lineage_owner(&self) -> Result<Address, ChainError> {
        Ok(self.lineage_contract().owner().call().await?)
    }

    /// Makes `new_operator` the lineage contract's operator, sent by its owner `owner` (a
    /// local signer). The previous operator key loses every power in the same block.
    pub async fn set_lineage_operator(
        &self,
        owner: Address,
        new_operator: Address,
    ) -> Result<TransactionReceipt, ChainError> {
        self.check_signer(owner)?;
        send_lineage(self.lineage_contract().setOperator(new_operator).from(owner)).await
    }

    /// The royalty terms of a derived model (`None` for a root or an unknown model): its
    /// vault and what each order pays there, read from its datatoken's publish-market fee.
    pub async fn royalty_terms(
        &self,
        child_nft: Address,
    ) -> Result<Option<RoyaltyTerms>, ChainError> {
        let vault = self.lineage_contract().royaltyVaultOf(child_nft).call().await?;
        if vault.is_zero() {
            return Ok(None);
        }
        let Some(model) = self.model(child_nft).await? else { return Ok(None) };
        let fee = ERC20Template::new(model.datatoken, &self.provider)
            .getPublishingMarketFee()
            .call()
            .await?;
        Ok(Some(RoyaltyTerms { vault: fee._0, token: fee._1, amount: fee._2 }))
    }

    /// Pays out a derived model's vault to its ancestors (anyone may; `payer` is a local
    /// signer). Returns the payments made (none when the vault was empty).
    pub async fn distribute_royalty(
        &self,
        payer: Address,
        child_nft: Address,
    ) -> Result<Vec<RoyaltyPayment>, ChainError> {
        self.check_signer(payer)?;
        let vault = self.lineage_contract().royaltyVaultOf(child_nft).call().await?;
        if vault.is_zero() {
            return Err(ChainError::Invalid(format!("{child_nft} is not a derived model")));
        }
        let r = send(RoyaltyVault::new(vault, &self.provider).distribute().from(payer)).await?;
        Ok(r.inner
            .logs()
            .iter()
            .filter(|l| l.address() == vault)
            .filter_map(|l| royalty_payment(l).ok())
            .collect())
    }

    /// Every royalty paid to `beneficiary` since the deployment, oldest first. Only payments
    /// by genuine vaults count (the log's address is the lineage contract's vault for the
    /// child it names), so a look-alike event from any other contract is ignored.
    pub async fn royalties_paid_to(
        &self,
        beneficiary: Address,
    ) -> Result<Vec<RoyaltyPayment>, ChainError> {
        let filter = Filter::new()
            .event_signature(RoyaltyVault::RoyaltyPaid::SIGNATURE_HASH)
            .topic2(beneficiary.into_word())
            .from_block(self.book.deployed_at_block);
        let logs = self.provider.get_logs(&filter).await?;
        let c = self.lineage_contract();
        let mut out = Vec::new();
        for log in &logs {
            let Ok(p) = royalty_payment(log) else { continue };
            if c.royaltyVaultOf(p.child).call().await? == p.vault {
                out.push(p);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read-back lineage longer than the contract allows (root + `MAX_DEPTH` models) is
    /// refused, naming the bound; the contract's own deepest lineage is accepted.
    #[test]
    fn lineage_reads_are_bounded_by_the_contract_depth() {
        let nft = Address::repeat_byte(7);
        assert!(check_depth(nft, MAX_DEPTH + 1).is_ok());
        match check_depth(nft, MAX_DEPTH + 2) {
            Err(e @ ChainError::LineageTooDeep { depth, max, .. }) => {
                assert_eq!((depth, max), (MAX_DEPTH + 1, MAX_DEPTH));
                assert!(e.to_string().contains("deeper than the 32"), "{e}");
            }
            other => panic!("expected LineageTooDeep, got {other:?}"),
        }
    }
}
