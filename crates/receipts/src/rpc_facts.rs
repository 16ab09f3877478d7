//! Chain facts read over raw Ethereum JSON-RPC, for callers without alloy's provider stack:
//! the storefront verifies receipts in the browser by talking to the chain's node itself
//! (`eth_call`, `eth_getTransactionReceipt`), not to the operator's API.
//!
//! The transport is a trait ([`JsonRpc`]: one JSON body in, one JSON body out) with no `Send`
//! bound, so the browser's `fetch` can implement it. Answers mean exactly what
//! [`crate::ChainFacts`] over the chain crate's client means (`chain_facts`, feature `chain`),
//! and a test on anvil checks that both readers agree on every fact of a real lineage.
//! They are deliberately two implementations: this one shares no decoding code with the
//! operator's client, so the cross-check can catch a mistake in either.

use alloy::primitives::{Address, B256, Bytes, Signature, keccak256};
use alloy::sol;
use alloy::sol_types::{SolCall, SolEvent};
use posthuman_types::Hash32;
use serde_json::{Value, json};

use crate::facts::{FactsError, ModelFacts, OperatorTerm, OrderFacts, TrainingCommitment};
use crate::gather::{Answer, Query};

sol! {
    /// `ModelLineage.getModel` / `getJob` (the contract's structs, field for field).
    struct LineageModel {
        address parent;
        uint32 depth;
        bool exists;
        address trainer;
        address root;
        address datatoken;
        bytes32 weightsHash;
        bytes32 jobId;
    }
    struct LineageJob {
        address parent;
        uint8 state;
        uint64 committedAt;
        address trainer;
        bytes32 outputWeightsHash;
        bytes32 receiptHash;
        address childNft;
    }
    function getModel(address nft) external view returns (LineageModel memory);
    function getJob(bytes32 jobId) external view returns (LineageJob memory);
    /// The lineage contract's operator: the key that signs receipts for this deployment now.
    function operator() external view returns (address);
    /// `ModelLineage.OperatorTerm`: one operator's term.
    struct LineageOperatorTerm {
        address operator;
        uint64 fromBlock;
    }
    /// Every operator so far, oldest first.
    function operatorHistory() external view returns (LineageOperatorTerm[] memory);
    /// ERC725Y value of an Ocean data NFT.
    function getData(bytes32 key) external view returns (bytes memory);
    /// Ocean v4 `ERC20Template` events emitted by `startOrder`.
    event OrderStarted(address indexed consumer, address payer, uint256 amount, uint256 serviceIndex, uint256 timestamp, address indexed publishMarketAddress, uint256 blockNumber);
    event ProviderFee(address indexed providerFeeAddress, address indexed providerFeeToken, uint256 providerFeeAmount, bytes providerData, uint8 v, bytes32 r, bytes32 s, uint256 validUntil);
}

/// A JSON-RPC transport: posts one request body and returns the response body.
/// `Err` is a transport failure (node unreachable, HTTP error): "could not ask".
#[async_trait::async_trait(?Send)]
pub trait JsonRpc {
    async fn post(&self, body: Value) -> Result<Value, FactsError>;
}

/// A JSON-RPC error *response*: the node's verdict (e.g. "execution reverted").
struct NodeError(String);

/// [`crate::ChainFacts`]' questions answered over a [`JsonRpc`] transport.
pub struct RpcFacts<T> {
    rpc: T,
    lineage: Address,
}

/// The ERC725Y key under which a model's NFT stores its weights hash.
pub fn weights_hash_key() -> B256 {
    keccak256("posthuman.weightsHash")
}

fn bad(what: &str, detail: impl std::fmt::Display) -> FactsError {
    FactsError(format!("malformed JSON-RPC answer to {what}: {detail}"))
}

fn hash32(b: B256) -> Hash32 {
    Hash32(b.0)
}

fn nonzero(a: Address) -> Option<Address> {
    (a != Address::ZERO).then_some(a)
}

impl<T: JsonRpc> RpcFacts<T> {
    /// Reads facts through `rpc`; `lineage` is the `ModelLineage` contract (from the address
    /// book).
    pub fn new(rpc: T, lineage: Address) -> Self {
        RpcFacts { rpc, lineage }
    }

    async fn call(
        &self,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, NodeError>, FactsError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = self.rpc.post(body).await?;
        if let Some(e) = resp.get("error") {
            let msg = e.get("message").and_then(Value::as_str).unwrap_or("error");
            return Ok(Err(NodeError(msg.to_string())));
        }
        resp.get("result").cloned().map(Ok).ok_or_else(|| bad(method, "no result"))
    }

    /// `eth_call` at the latest block; `Ok(Err)` when the node refused the call (revert).
    async fn eth_call(
        &self,
        to: Address,
        data: Vec<u8>,
    ) -> Result<Result<Bytes, NodeError>, FactsError> {
        let params = json!([{"to": to, "data": Bytes::from(data)}, "latest"]);
        Ok(match self.call("eth_call", params).await? {
            Ok(v) => Ok(crate::json::from_value::<Bytes>(v).map_err(|e| bad("eth_call", e))?),
            Err(e) => Err(e),
        })
    }

    async fn lineage_call(&self, data: Vec<u8>, what: &str) -> Result<Bytes, FactsError> {
        self.eth_call(self.lineage, data)
            .await?
            .map_err(|NodeError(e)| FactsError(format!("the lineage contract refused {what}: {e}")))
    }

    /// The lineage contract's commitment of training job `job_id`.
    pub async fn training_commitment(
        &self,
        job_id: Hash32,
    ) -> Result<Option<TrainingCommitment>, FactsError> {
        let out = self
            .lineage_call(getJobCall { jobId: B256::from(job_id.0) }.abi_encode(), "getJob")
            .await?;
        let j = getJobCall::abi_decode_returns(&out).map_err(|e| bad("getJob", e))?;
        if j.state == 0 {
            return Ok(None);
        }
        Ok(Some(TrainingCommitment {
            parent: j.parent,
            trainer: j.trainer,
            output_weights_hash: hash32(j.outputWeightsHash),
            receipt_hash: hash32(j.receiptHash),
            child_nft: nonzero(j.childNft),
            committed_at_block: j.committedAt,
        }))
    }

    /// A model's lineage entry.
    pub async fn model(&self, nft: Address) -> Result<Option<ModelFacts>, FactsError> {
        let out = self.lineage_call(getModelCall { nft }.abi_encode(), "getModel").await?;
        let m = getModelCall::abi_decode_returns(&out).map_err(|e| bad("getModel", e))?;
        Ok(m.exists.then(|| ModelFacts {
            nft,
            parent: nonzero(m.parent),
            trainer: m.trainer,
            datatoken: m.datatoken,
            weights_hash: hash32(m.weightsHash),
            job_id: (m.jobId != B256::ZERO).then(|| hash32(m.jobId)),
        }))
    }

    /// The weights hash in `nft`'s ERC725Y store. An address that is not a data NFT (no
    /// code, a revert, an undecodable answer) has none; only transport failures are errors.
    pub async fn weights_commitment(&self, nft: Address) -> Result<Option<Hash32>, FactsError> {
        let Ok(out) =
            self.eth_call(nft, getDataCall { key: weights_hash_key() }.abi_encode()).await?
        else {
            return Ok(None);
        };
        let Ok(data) = getDataCall::abi_decode_returns(&out) else { return Ok(None) };
        Ok(<[u8; 32]>::try_from(data.as_ref()).ok().map(Hash32))
    }

    /// The orders started by transaction `tx`; `None` if it does not exist, is not mined, or
    /// reverted.
    pub async fn orders(&self, tx: Hash32) -> Result<Option<Vec<OrderFacts>>, FactsError> {
        let what = "eth_getTransactionReceipt";
        let r = self
            .call(what, json!([B256::from(tx.0)]))
            .await?
            .map_err(|NodeError(e)| FactsError(format!("{what}: {e}")))?;
        if r.is_null() {
            return Ok(None);
        }
        let status = r.get("status").and_then(Value::as_str);
        let block = match r.get("blockNumber") {
            None | Some(Value::Null) => return Ok(None), // not mined
            Some(b) => quantity(b).ok_or_else(|| bad(what, format!("blockNumber {b}")))?,
        };
        if status != Some("0x1") {
            return Ok(None);
        }
        let logs: Vec<RawLog> =
            crate::json::from_value(r.get("logs").cloned().unwrap_or(Value::Null))
                .map_err(|e| bad(what, e))?;
        Ok(Some(orders_in(&logs, block)))
    }

    /// Every operator of the lineage contract, oldest first.
    pub async fn operator_history(&self) -> Result<Vec<OperatorTerm>, FactsError> {
        let out = self.lineage_call(operatorHistoryCall {}.abi_encode(), "operatorHistory").await?;
        let terms =
            operatorHistoryCall::abi_decode_returns(&out).map_err(|e| bad("operatorHistory", e))?;
        Ok(terms
            .into_iter()
            .map(|t| OperatorTerm { operator: t.operator, from_block: t.fromBlock })
            .collect())
    }

    /// The chain id the node serves (`eth_chainId`).
    pub async fn chain_id(&self) -> Result<u64, FactsError> {
        let v = self
            .call("eth_chainId", json!([]))
            .await?
            .map_err(|NodeError(e)| FactsError(format!("eth_chainId: {e}")))?;
        quantity(&v).ok_or_else(|| bad("eth_chainId", &v))
    }

    /// The lineage contract's current operator: the only key it accepts commitments from
    /// now. The contract's owner may rotate it, so a receipt signed before a rotation was
    /// signed by an earlier operator: verification reads [`Self::operator_history`].
    pub async fn lineage_operator(&self) -> Result<Address, FactsError> {
        let out = self.lineage_call(operatorCall {}.abi_encode(), "operator").await?;
        operatorCall::abi_decode_returns(&out).map_err(|e| bad("operator", e))
    }

    /// Answers one [`Query`].
    pub async fn answer(&self, q: Query) -> Result<Answer, FactsError> {
        Ok(match q {
            Query::Commitment(k) => Answer::Commitment(self.training_commitment(k).await?),
            Query::Model(k) => Answer::Model(self.model(k).await?),
            Query::Weights(k) => Answer::Weights(self.weights_commitment(k).await?),
            Query::Orders(k) => Answer::Orders(self.orders(k).await?),
            Query::Operators => Answer::Operators(self.operator_history().await?),
        })
    }
}

/// A log as `eth_getTransactionReceipt` returns it (the fields read here).
#[derive(Debug, serde::Deserialize)]
struct RawLog {
    address: Address,
    topics: Vec<B256>,
    data: Bytes,
}

/// A JSON-RPC quantity (`"0x…"` hex) as a number.
fn quantity(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.strip_prefix("0x")?, 16).ok()
}

/// Each `OrderStarted` with the first `ProviderFee` of the same datatoken after it
/// (`startOrder` emits the fee event later in the same call), mined in `block`.
fn orders_in(logs: &[RawLog], block: u64) -> Vec<OrderFacts> {
    let mut out = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        if log.topics.first() != Some(&OrderStarted::SIGNATURE_HASH) {
            continue;
        }
        let Ok(order) = OrderStarted::decode_raw_log(log.topics.iter().copied(), &log.data) else {
            continue;
        };
        let fee = logs[i + 1..]
            .iter()
            .filter(|l| {
                l.address == log.address && l.topics.first() == Some(&ProviderFee::SIGNATURE_HASH)
            })
            .find_map(|l| ProviderFee::decode_raw_log(l.topics.iter().copied(), &l.data).ok());
        out.push(OrderFacts {
            datatoken: log.address,
            consumer: order.consumer,
            payer: order.payer,
            service_index: u64::try_from(order.serviceIndex).unwrap_or(u64::MAX),
            provider_fee_signer: fee.as_ref().and_then(fee_signer),
            block,
        });
    }
    out
}

/// Who signed a provider fee: Ocean's digest `keccak256(abi.encodePacked(providerData,
/// providerFeeAddress, providerFeeToken, providerFeeAmount, validUntil))` under the
/// personal-message prefix, as `ERC20Template.startOrder` checks it.
fn fee_signer(f: &ProviderFee) -> Option<Address> {
    let parity = match f.v {
        27 | 0 => false,
        28 | 1 => true,
        _ => return None,
    };
    let mut buf = Vec::with_capacity(f.providerData.len() + 104);
    buf.extend_from_slice(&f.providerData);
    buf.extend_from_slice(f.providerFeeAddress.as_slice());
    buf.extend_from_slice(f.providerFeeToken.as_slice());
    buf.extend_from_slice(&f.providerFeeAmount.to_be_bytes::<32>());
    buf.extend_from_slice(&f.validUntil.to_be_bytes::<32>());
    let digest = keccak256(&buf);
    let sig = Signature::from_scalars_and_parity(f.r, f.s, parity);
    sig.recover_address_from_msg(digest.as_slice()).ok()
}
