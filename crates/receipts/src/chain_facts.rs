//! [`ChainFacts`] over the chain crate's client: the lineage contract, NFT commitments and
//! `startOrder` transactions, read over JSON-RPC. Read-only: it sends no transaction and
//! needs no key but the client's.

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::Log;
use alloy::sol_types::SolEvent;
use posthuman_chain::bindings::ERC20Template;
use posthuman_chain::fees::recover_provider_fee_signer;
use posthuman_chain::lineage::{JobState, LineageEntry};
use posthuman_chain::{Chain, ChainError, ProviderFee};
use posthuman_types::Hash32;

use crate::facts::{
    ChainFacts, FactsError, ModelFacts, OperatorTerm, OrderFacts, TrainingCommitment,
};

fn err(e: ChainError) -> FactsError {
    FactsError(e.to_string())
}

fn model_facts(e: LineageEntry) -> ModelFacts {
    ModelFacts {
        nft: e.nft,
        parent: e.parent,
        trainer: e.trainer,
        datatoken: e.datatoken,
        weights_hash: e.weights_hash,
        job_id: e.job_id,
    }
}

/// The orders in a transaction's logs: each `OrderStarted` with the first `ProviderFee` of
/// the same datatoken after it (`startOrder` emits the fee event later in the same call),
/// mined in `block`.
fn orders_in(logs: &[Log], block: u64) -> Vec<OrderFacts> {
    let mut out = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        if log.topics().first() != Some(&ERC20Template::OrderStarted::SIGNATURE_HASH) {
            continue;
        }
        let Ok(order) = ERC20Template::OrderStarted::decode_log_data(log.data()) else {
            continue;
        };
        let fee = logs[i + 1..]
            .iter()
            .filter(|l| {
                l.address() == log.address()
                    && l.topics().first() == Some(&ERC20Template::ProviderFee::SIGNATURE_HASH)
            })
            .find_map(|l| ERC20Template::ProviderFee::decode_log_data(l.data()).ok());
        let provider_fee_signer = fee.and_then(|f| {
            recover_provider_fee_signer(&ProviderFee {
                address: f.providerFeeAddress,
                token: f.providerFeeToken,
                amount: f.providerFeeAmount,
                v: f.v,
                r: f.r,
                s: f.s,
                valid_until: f.validUntil,
                data: f.providerData,
            })
        });
        out.push(OrderFacts {
            datatoken: log.address(),
            consumer: order.consumer,
            payer: order.payer,
            service_index: u64::try_from(order.serviceIndex).unwrap_or(u64::MAX),
            provider_fee_signer,
            block,
        });
    }
    out
}

#[async_trait::async_trait]
impl ChainFacts for Chain {
    async fn training_commitment(
        &self,
        job_id: Hash32,
    ) -> Result<Option<TrainingCommitment>, FactsError> {
        let c = self.commitment(job_id).await.map_err(err)?;
        if c.state == JobState::Unknown {
            return Ok(None);
        }
        Ok(Some(TrainingCommitment {
            parent: c.parent,
            trainer: c.trainer,
            output_weights_hash: c.output_weights_hash,
            receipt_hash: c.receipt_hash,
            child_nft: c.child_nft,
            committed_at_block: c.committed_at_block,
        }))
    }

    async fn model(&self, nft: Address) -> Result<Option<ModelFacts>, FactsError> {
        Ok(Chain::model(self, nft).await.map_err(err)?.map(model_facts))
    }

    async fn weights_commitment(&self, nft: Address) -> Result<Option<Hash32>, FactsError> {
        // An address without code (or not an NFT) has no commitment; only transport
        // failures are errors.
        match Chain::weights_commitment(self, nft).await {
            Ok(h) => Ok(h),
            Err(ChainError::Rpc(e)) => Err(FactsError(e)),
            Err(_) => Ok(None),
        }
    }

    async fn orders(&self, tx: Hash32) -> Result<Option<Vec<OrderFacts>>, FactsError> {
        let receipt = self
            .provider()
            .get_transaction_receipt(B256::from(tx.0))
            .await
            .map_err(|e| FactsError(e.to_string()))?;
        let Some(receipt) = receipt else { return Ok(None) };
        let Some(block) = receipt.block_number else { return Ok(None) };
        if !receipt.status() {
            return Ok(None);
        }
        Ok(Some(orders_in(receipt.inner.logs(), block)))
    }

    async fn operator_history(&self) -> Result<Vec<OperatorTerm>, FactsError> {
        Ok(Chain::operator_history(self)
            .await
            .map_err(err)?
            .into_iter()
            .map(|t| OperatorTerm { operator: t.operator, from_block: t.from_block })
            .collect())
    }
}
