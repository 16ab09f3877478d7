//! Orders: `startOrder` as a buyer, and the payment check that guards every job.
//!
//! [`Chain::verify_order`] accepts only an order that exists, is mined with enough
//! confirmations, was emitted by the expected datatoken for the expected service, names the
//! request's signer as consumer, carries a provider fee signed by our operator key that was
//! valid when the order was placed (`validUntil` is not enforced on chain; it is compared
//! with the order's own block timestamp, so re-verifying an order later — a retry after a
//! failure that was not the buyer's — still accepts it), and was never used for another job.
//! What the fee must *be* (its token, amount and terms) is the caller's check, on
//! [`VerifiedOrder`]'s fee fields.
//! Every other case is a [`Rejection`] with its own reason; `Err` only means "could not check
//! now" (RPC or spent-store trouble), never a verdict.

use std::collections::HashMap;
use std::sync::Mutex;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Log;
use alloy::sol_types::SolEvent;
use serde::{Deserialize, Serialize};

use crate::bindings::ERC20Template;
use crate::client::send;
use crate::fees::{ProviderFee, recover_provider_fee_signer, sign_provider_fee};
use crate::{Chain, ChainError};

/// One order: the transaction and the index of its `OrderStarted` log (a transaction may
/// hold several orders).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrderId {
    pub tx_hash: B256,
    pub log_index: u64,
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.tx_hash, self.log_index)
    }
}

/// The result of claiming an order for a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Now held by this job (also when this same job already held it: claims are idempotent
    /// per job, so a retried request does not lock itself out).
    Claimed,
    /// Already held by another job.
    HeldBy(String),
}

/// The record of orders already used for jobs. The functions layer persists it (e.g. an
/// object store with put-if-absent); [`MemorySpentOrders`] serves tests and single processes.
/// `claim` must be atomic: two concurrent claims of one order by different jobs must not
/// both succeed.
#[async_trait::async_trait]
pub trait SpentOrders: Send + Sync {
    async fn claim(&self, order: &OrderId, job_id: &str) -> Result<Claim, ChainError>;
    /// Frees an order held by `job_id` (its job failed before doing work, so the buyer may
    /// retry with the same order). `Ok(false)` if `job_id` did not hold it.
    async fn release(&self, order: &OrderId, job_id: &str) -> Result<bool, ChainError>;
    /// The job holding an order, if any.
    async fn holder(&self, order: &OrderId) -> Result<Option<String>, ChainError>;
}

/// In-memory [`SpentOrders`].
#[derive(Debug, Default)]
pub struct MemorySpentOrders {
    held: Mutex<HashMap<OrderId, String>>,
}

impl MemorySpentOrders {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<OrderId, String>>, ChainError> {
        self.held.lock().map_err(|_| ChainError::SpentStore("poisoned lock".into()))
    }
}

#[async_trait::async_trait]
impl SpentOrders for MemorySpentOrders {
    async fn claim(&self, order: &OrderId, job_id: &str) -> Result<Claim, ChainError> {
        let mut held = self.lock()?;
        match held.get(order) {
            Some(j) if j != job_id => Ok(Claim::HeldBy(j.clone())),
            _ => {
                held.insert(*order, job_id.to_string());
                Ok(Claim::Claimed)
            }
        }
    }

    async fn release(&self, order: &OrderId, job_id: &str) -> Result<bool, ChainError> {
        let mut held = self.lock()?;
        if held.get(order).is_some_and(|j| j == job_id) {
            held.remove(order);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn holder(&self, order: &OrderId) -> Result<Option<String>, ChainError> {
        Ok(self.lock()?.get(order).cloned())
    }
}

/// What the order must be for this job.
#[derive(Clone, Debug)]
pub struct OrderQuery {
    /// The transaction hash as the buyer sent it (hostile: parsed here).
    pub tx_hash: String,
    /// The datatoken of the model the job runs on.
    pub datatoken: Address,
    /// The service index of the job kind.
    pub service_index: u64,
    /// The address that signed the job request.
    pub consumer: Address,
    /// The job the order is claimed for.
    pub job_id: String,
}

/// An accepted order, now claimed for the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedOrder {
    pub id: OrderId,
    pub consumer: Address,
    pub payer: Address,
    pub amount: U256,
    pub block_number: u64,
    pub valid_until: U256,
    pub provider_data: Bytes,
    /// The provider fee's token and amount, paid to our operator inside `startOrder`.
    pub fee_token: Address,
    pub fee_amount: U256,
    /// The block timestamp of the order (unix seconds).
    pub ordered_at: u64,
}

/// Why an order does not pay for the job.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the transaction hash is not 32 bytes of hex")]
    MalformedTxHash,
    #[error("no such transaction")]
    NoSuchTransaction,
    #[error("the transaction is not mined yet")]
    NotMined,
    #[error("the transaction reverted")]
    Reverted,
    #[error("only {have} confirmations, {need} needed")]
    NotEnoughConfirmations { have: u64, need: u64 },
    #[error("the transaction started no order")]
    NotAnOrder,
    #[error("the order is for another datatoken ({found:?})")]
    WrongDatatoken { found: Vec<Address> },
    #[error("the order is for service {found}, expected {expected}")]
    WrongServiceIndex { expected: u64, found: U256 },
    #[error("the order's consumer {found} is not the request signer {expected}")]
    ConsumerMismatch { expected: Address, found: Address },
    #[error("the order carries no provider fee")]
    MissingProviderFee,
    #[error(
        "the provider fee was not signed by our operator (fee address {fee_address}, signer {recovered:?})"
    )]
    ProviderFeeNotOurs { fee_address: Address, recovered: Option<Address> },
    #[error(
        "the provider fee expired at {valid_until}, before the order was placed at {ordered_at}"
    )]
    ProviderFeeExpired { valid_until: U256, ordered_at: u64 },
    #[error("the order was already used by job {job}")]
    AlreadyUsed { job: String },
}

impl Rejection {
    /// True when the same order will pass once the chain has moved on (not mined yet, too
    /// few confirmations): the buyer waits and resends; nothing was claimed.
    pub fn is_wait_and_resend(&self) -> bool {
        matches!(self, Rejection::NotMined | Rejection::NotEnoughConfirmations { .. })
    }
}

/// Confirmations an order needs on a chain that is not a local dev chain, when the operator
/// configured none: enough that a short reorg cannot undo a payment a job was started for.
pub const DEFAULT_MIN_CONFIRMATIONS: u64 = 3;

/// The most confirmations an operator may require (beyond this a buyer would wait for hours
/// on any chain; a larger number is a typo).
pub const MAX_MIN_CONFIRMATIONS: u64 = 1_000;

/// Chain ids of local development chains (anvil/hardhat, Ocean's barge).
pub const LOCAL_DEV_CHAIN_IDS: [u64; 2] = [31337, 8996];

/// True when `rpc_url`'s host is this machine (`localhost`, `127.0.0.0/8`, `[::1]`).
pub fn is_loopback_rpc(rpc_url: &str) -> bool {
    let Some(rest) = ["http://", "https://", "ws://", "wss://"]
        .iter()
        .find_map(|scheme| rpc_url.strip_prefix(scheme))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // User info could hide the real host after an `@`: take what follows the last one.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, _)) => h,
            None => return false,
        }
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The confirmations an order needs when the operator configured none: 0 only on a local
/// dev chain (a known dev chain id reached over loopback, where nobody else mines and a
/// reorg cannot happen), [`DEFAULT_MIN_CONFIRMATIONS`] everywhere else. A dev chain id on a
/// remote RPC is not trusted to be a dev chain.
pub fn default_min_confirmations(chain_id: u64, rpc_url: &str) -> u64 {
    if LOCAL_DEV_CHAIN_IDS.contains(&chain_id) && is_loopback_rpc(rpc_url) {
        0
    } else {
        DEFAULT_MIN_CONFIRMATIONS
    }
}

/// Checks an operator-configured confirmation count; `Err` says why it is refused.
pub fn validate_min_confirmations(n: u64) -> Result<u64, ChainError> {
    if n > MAX_MIN_CONFIRMATIONS {
        return Err(ChainError::Invalid(format!(
            "min confirmations {n} is above the maximum of {MAX_MIN_CONFIRMATIONS}"
        )));
    }
    Ok(n)
}

/// The order check's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderVerdict {
    Accepted(VerifiedOrder),
    Rejected(Rejection),
}

impl OrderVerdict {
    pub fn is_accepted(&self) -> bool {
        matches!(self, OrderVerdict::Accepted(_))
    }

    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            OrderVerdict::Rejected(r) => Some(r),
            OrderVerdict::Accepted(_) => None,
        }
    }
}

/// A mined `startOrder`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartedOrder {
    pub tx_hash: B256,
    pub block_number: u64,
    pub gas_used: u64,
}

fn parse_tx_hash(s: &str) -> Option<B256> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex.parse::<B256>().ok().or_else(|| s.parse::<B256>().ok())
}

impl Chain {
    /// Signs a provider fee of `amount` OCEAN base units with the operator key, valid until
    /// `valid_until` (unix seconds), carrying `data` (the quote's terms).
    pub fn sign_provider_fee_for(
        &self,
        amount: U256,
        valid_until: u64,
        data: Bytes,
    ) -> Result<ProviderFee, ChainError> {
        sign_provider_fee(self.operator_signer(), self.book.ocean, amount, valid_until, data)
    }

    /// A zero provider fee (operator-internal orders and tests; the API never quotes one).
    pub fn sign_provider_fee(
        &self,
        valid_until: u64,
        data: Bytes,
    ) -> Result<ProviderFee, ChainError> {
        self.sign_provider_fee_for(U256::ZERO, valid_until, data)
    }

    /// The datatoken's publish-market fee (Ocean's `getPublishingMarketFee()`): what every
    /// `startOrder` of it pays besides the provider fee — `(collector, token, amount)`.
    pub async fn publishing_market_fee(
        &self,
        datatoken: Address,
    ) -> Result<(Address, Address, U256), ChainError> {
        let r =
            ERC20Template::new(datatoken, &self.provider).getPublishingMarketFee().call().await?;
        Ok((r._0, r._1, r._2))
    }

    /// `startOrder` on `datatoken`, sent by `payer` (spends 1 datatoken). Approves first
    /// what the datatoken will pull: the provider fee and the datatoken's publish-market fee
    /// (a derived model's lineage royalty), in one approval when they share a token.
    pub async fn start_order(
        &self,
        payer: Address,
        datatoken: Address,
        consumer: Address,
        service_index: u64,
        fee: &ProviderFee,
    ) -> Result<StartedOrder, ChainError> {
        let dt = ERC20Template::new(datatoken, &self.provider);
        let market_fee = dt.getPublishingMarketFee().call().await?;
        let (market_to, market_token, market_amount) =
            (market_fee._0, market_fee._1, market_fee._2);
        // Ocean skips the publish-market fee when any of its three parts is zero.
        let royalty = !(market_to.is_zero() || market_token.is_zero() || market_amount.is_zero());
        if royalty && market_token == fee.token {
            let both = fee
                .amount
                .checked_add(market_amount)
                .ok_or_else(|| ChainError::Invalid("provider fee plus royalty overflows".into()))?;
            self.approve(payer, fee.token, datatoken, both).await?;
        } else {
            if !fee.amount.is_zero() {
                self.approve(payer, fee.token, datatoken, fee.amount).await?;
            }
            if royalty {
                self.approve(payer, market_token, datatoken, market_amount).await?;
            }
        }
        let market = ERC20Template::consumeMarketFee {
            consumeMarketFeeAddress: Address::ZERO,
            consumeMarketFeeToken: Address::ZERO,
            consumeMarketFeeAmount: U256::ZERO,
        };
        let call =
            dt.startOrder(consumer, U256::from(service_index), fee.to_sol(), market).from(payer);
        let receipt = send(call).await?;
        Ok(StartedOrder {
            tx_hash: receipt.transaction_hash,
            block_number: receipt.block_number.unwrap_or_default(),
            gas_used: receipt.gas_used,
        })
    }

    /// Confirmations of a mined transaction (1 when it is in the head block); `None` while it
    /// is not mined (or unknown). Buyers poll this until it reaches the API's
    /// `min_confirmations` before submitting.
    pub async fn confirmations(&self, tx_hash: B256) -> Result<Option<u64>, ChainError> {
        let Some(receipt) = self.provider.get_transaction_receipt(tx_hash).await? else {
            return Ok(None);
        };
        let Some(block) = receipt.block_number else {
            return Ok(None);
        };
        let head = self.provider.get_block_number().await?;
        Ok(Some(head.saturating_sub(block) + 1))
    }

    /// The payment check (see the module docs). On `Accepted` the order has been claimed for
    /// `q.job_id` in `spent`; release it there if the job fails before doing work. A public
    /// verifier that only asks "did this order pay for that job" passes a fresh
    /// [`MemorySpentOrders`] (nothing is persisted). Job ids must be unique per request: a
    /// claim by the same job id is idempotent.
    pub async fn verify_order(
        &self,
        q: &OrderQuery,
        spent: &dyn SpentOrders,
    ) -> Result<OrderVerdict, ChainError> {
        use OrderVerdict::Rejected;
        let Some(tx_hash) = parse_tx_hash(q.tx_hash.trim()) else {
            return Ok(Rejected(Rejection::MalformedTxHash));
        };
        let Some(receipt) = self.provider.get_transaction_receipt(tx_hash).await? else {
            let pending = self.provider.get_transaction_by_hash(tx_hash).await?;
            return Ok(Rejected(if pending.is_some() {
                Rejection::NotMined
            } else {
                Rejection::NoSuchTransaction
            }));
        };
        if !receipt.status() {
            return Ok(Rejected(Rejection::Reverted));
        }
        let Some(block) = receipt.block_number else {
            return Ok(Rejected(Rejection::NotMined));
        };
        if self.min_confirmations > 0 {
            let head = self.provider.get_block_number().await?;
            let have = head.saturating_sub(block) + 1;
            if have < self.min_confirmations {
                return Ok(Rejected(Rejection::NotEnoughConfirmations {
                    have,
                    need: self.min_confirmations,
                }));
            }
        }
        let logs = receipt.inner.logs();
        let is_order =
            |l: &Log| l.topics().first() == Some(&ERC20Template::OrderStarted::SIGNATURE_HASH);
        let orders: Vec<&Log> = logs.iter().filter(|l| is_order(l)).collect();
        if orders.is_empty() {
            return Ok(Rejected(Rejection::NotAnOrder));
        }
        let ours: Vec<&Log> =
            orders.iter().copied().filter(|l| l.address() == q.datatoken).collect();
        if ours.is_empty() {
            return Ok(Rejected(Rejection::WrongDatatoken {
                found: orders.iter().map(|l| l.address()).collect(),
            }));
        }
        let mut first_rejection = None;
        for order_log in ours {
            match self.check_one(q, tx_hash, block, logs, order_log, spent).await? {
                OrderVerdict::Accepted(v) => return Ok(OrderVerdict::Accepted(v)),
                Rejected(r) => {
                    first_rejection.get_or_insert(r);
                }
            }
        }
        Ok(Rejected(first_rejection.unwrap_or(Rejection::NotAnOrder)))
    }

    async fn check_one(
        &self,
        q: &OrderQuery,
        tx_hash: B256,
        block: u64,
        logs: &[Log],
        order_log: &Log,
        spent: &dyn SpentOrders,
    ) -> Result<OrderVerdict, ChainError> {
        use OrderVerdict::Rejected;
        let Ok(order) = ERC20Template::OrderStarted::decode_log_data(order_log.data()) else {
            return Ok(Rejected(Rejection::NotAnOrder));
        };
        if order.serviceIndex != U256::from(q.service_index) {
            return Ok(Rejected(Rejection::WrongServiceIndex {
                expected: q.service_index,
                found: order.serviceIndex,
            }));
        }
        if order.consumer != q.consumer {
            return Ok(Rejected(Rejection::ConsumerMismatch {
                expected: q.consumer,
                found: order.consumer,
            }));
        }
        // The provider fee of this order: the first ProviderFee log of the same datatoken after
        // the OrderStarted log (startOrder emits it later in the same call).
        let Some(order_index) = order_log.log_index else {
            return Ok(Rejected(Rejection::NotMined));
        };
        let fee = logs
            .iter()
            .filter(|l| {
                l.address() == q.datatoken
                    && l.log_index.is_some_and(|i| i > order_index)
                    && l.topics().first() == Some(&ERC20Template::ProviderFee::SIGNATURE_HASH)
            })
            .find_map(|l| ERC20Template::ProviderFee::decode_log_data(l.data()).ok());
        let Some(fee) = fee else {
            return Ok(Rejected(Rejection::MissingProviderFee));
        };
        let recovered = recover_provider_fee_signer(&ProviderFee {
            address: fee.providerFeeAddress,
            token: fee.providerFeeToken,
            amount: fee.providerFeeAmount,
            v: fee.v,
            r: fee.r,
            s: fee.s,
            valid_until: fee.validUntil,
            data: fee.providerData.clone(),
        });
        if fee.providerFeeAddress != self.operator() || recovered != Some(self.operator()) {
            return Ok(Rejected(Rejection::ProviderFeeNotOurs {
                fee_address: fee.providerFeeAddress,
                recovered,
            }));
        }
        // The order's own time (Ocean's ERC20Template emits block.timestamp), not now: the
        // quote must have been valid when the buyer paid.
        let ordered_at = u64::try_from(order.timestamp).unwrap_or(u64::MAX);
        if fee.validUntil < U256::from(ordered_at) {
            return Ok(Rejected(Rejection::ProviderFeeExpired {
                valid_until: fee.validUntil,
                ordered_at,
            }));
        }
        let id = OrderId { tx_hash, log_index: order_index };
        match spent.claim(&id, &q.job_id).await? {
            Claim::Claimed => Ok(OrderVerdict::Accepted(VerifiedOrder {
                id,
                consumer: order.consumer,
                payer: order.payer,
                amount: order.amount,
                block_number: block,
                valid_until: fee.validUntil,
                provider_data: fee.providerData,
                fee_token: fee.providerFeeToken,
                fee_amount: fee.providerFeeAmount,
                ordered_at,
            })),
            Claim::HeldBy(job) => Ok(Rejected(Rejection::AlreadyUsed { job })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_default_to_zero_only_on_a_local_dev_chain() {
        for id in LOCAL_DEV_CHAIN_IDS {
            for url in [
                "http://127.0.0.1:8545",
                "http://localhost:8545/",
                "http://[::1]:8545",
                "ws://127.0.0.2:8546",
                "http://LOCALHOST:1",
            ] {
                assert_eq!(default_min_confirmations(id, url), 0, "{id} {url}");
            }
        }
        // A dev chain id behind a remote RPC, or a real chain on loopback (a local node or
        // tunnel of mainnet, Sepolia, Polygon), is not a dev chain.
        for (id, url) in [
            (31337, "https://rpc.example.com"),
            (8996, "http://10.0.0.5:8545"),
            (31337, "http://127.0.0.1.evil.com:8545"),
            (31337, "http://user@evil.com:8545"),
            (31337, "http://localhost@evil.com"),
            (31337, "not a url"),
            (1, "http://127.0.0.1:8545"),
            (11155111, "http://localhost:8545"),
            (137, "https://polygon-rpc.com"),
        ] {
            assert_eq!(default_min_confirmations(id, url), DEFAULT_MIN_CONFIRMATIONS, "{id} {url}");
        }
        assert!(is_loopback_rpc("http://evil.com@127.0.0.1:8545"));
        assert_eq!(validate_min_confirmations(12).unwrap(), 12);
        assert!(validate_min_confirmations(MAX_MIN_CONFIRMATIONS + 1).is_err());
        assert!(Rejection::NotEnoughConfirmations { have: 1, need: 2 }.is_wait_and_resend());
        assert!(!Rejection::NotAnOrder.is_wait_and_resend());
    }

    #[test]
    fn tx_hash_parsing_is_strict() {
        let good = format!("0x{}", "ab".repeat(32));
        assert!(parse_tx_hash(&good).is_some());
        assert!(parse_tx_hash(&good.to_uppercase().replacen("0X", "0x", 1)).is_some());
        assert!(parse_tx_hash(&"ab".repeat(32)).is_none(), "0x prefix required");
        assert!(parse_tx_hash(&format!("0x{}", "ab".repeat(31))).is_none());
        assert!(parse_tx_hash(&format!("0x{}", "ab".repeat(33))).is_none());
        assert!(parse_tx_hash(&format!("0x{}g", "a".repeat(63))).is_none());
        assert!(parse_tx_hash("").is_none());
    }

    #[tokio::test]
    async fn memory_claims_are_exclusive_idempotent_and_releasable() {
        let s = MemorySpentOrders::new();
        let id = OrderId { tx_hash: B256::repeat_byte(1), log_index: 0 };
        assert_eq!(s.claim(&id, "a").await.ok(), Some(Claim::Claimed));
        assert_eq!(s.claim(&id, "a").await.ok(), Some(Claim::Claimed));
        assert_eq!(s.claim(&id, "b").await.ok(), Some(Claim::HeldBy("a".into())));
        let other = OrderId { log_index: 1, ..id };
        assert_eq!(s.claim(&other, "b").await.ok(), Some(Claim::Claimed));
        assert_eq!(s.release(&id, "b").await.ok(), Some(false));
        assert_eq!(s.release(&id, "a").await.ok(), Some(true));
        assert_eq!(s.holder(&id).await.ok(), Some(None));
        assert_eq!(s.claim(&id, "b").await.ok(), Some(Claim::Claimed));
    }
}
