//! The crate's error type: each variant says what the caller can do about it.

use alloy::primitives::Address;

/// Why a chain operation failed. Order *rejections* are not errors: see
/// [`crate::orders::Rejection`]; an `Err` from `verify_order` means the check could not be
/// made (retry later), never that the order is good or bad.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The anvil binary is missing: run `npm ci --prefix contracts`.
    #[error("anvil not found at {path}: run `npm ci --prefix contracts` to install it")]
    AnvilMissing { path: String },
    /// anvil could not be started or did not report its port.
    #[error("anvil failed to start: {0}")]
    AnvilStart(String),
    /// The RPC endpoint could not be reached or answered badly: transient, retry.
    #[error("rpc error: {0}")]
    Rpc(String),
    /// A transaction was mined but reverted (the message carries the revert reason if known).
    #[error("transaction reverted: {0}")]
    Reverted(String),
    /// A call the contract refused before sending (e.g. `eth_estimateGas` reverted).
    #[error("contract call failed: {0}")]
    Contract(String),
    /// An expected event was missing from a receipt: the chain is not running the contracts
    /// the address book says it is.
    #[error("missing event {event} in transaction {tx}")]
    MissingEvent { event: &'static str, tx: String },
    /// No local signer for this address: register it with `Chain::add_signer` first.
    #[error("no local signer for {0}")]
    UnknownSigner(Address),
    /// The lineage contract refused the call (custom error name and fields): not operator,
    /// job already committed, wrong job state, …
    #[error("lineage contract rejected the call: {0}")]
    LineageRejected(String),
    /// A lineage read back longer than the contract's `MAX_DEPTH` allows: the endpoint is
    /// not running our contract (or lies); do not trust anything it says about this model.
    #[error("lineage of {nft} has {depth} derivations, deeper than the {max} the contract allows")]
    LineageTooDeep { nft: Address, depth: usize, max: usize },
    /// The peer market refused the call (custom error name and fields): not the seller,
    /// offer cancelled, not enough left, cost above the buyer's maximum, …
    #[error("peer market rejected the call: {0}")]
    MarketRejected(String),
    /// The operator key holds too little OCEAN to seed a new derived model's royalty vault
    /// (`createChild` pulls it from the operator): send the operator some OCEAN, then retry.
    #[error(
        "the operator {operator} holds {held} OCEAN base units, less than the {need} that seed a derived model's royalty vault: send it some OCEAN"
    )]
    OperatorUnfunded {
        operator: Address,
        held: alloy::primitives::U256,
        need: alloy::primitives::U256,
    },
    /// The deployer key holds no native coin on this chain: fund it, then retry.
    #[error("the deployer {deployer} holds nothing on chain {chain_id} to pay for gas: fund it")]
    DeployerUnfunded { deployer: Address, chain_id: u64 },
    /// Invalid input from the caller (bad reward scheme, malformed address, …).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Address book file I/O or JSON.
    #[error("address book {path}: {reason}")]
    AddressBook { path: String, reason: String },
    /// Signing failed (key problem).
    #[error("signing failed: {0}")]
    Signing(String),
    /// The spent-orders store failed: the order was not claimed; retry later.
    #[error("spent-orders store: {0}")]
    SpentStore(String),
}

impl From<alloy::transports::TransportError> for ChainError {
    fn from(e: alloy::transports::TransportError) -> Self {
        // An error *response* (e.g. "execution reverted" from eth_estimateGas) is the node's
        // verdict on the call, not a transport failure: retrying will not help.
        if e.as_error_resp().is_some() {
            ChainError::Contract(e.to_string())
        } else {
            ChainError::Rpc(e.to_string())
        }
    }
}

impl From<alloy::contract::Error> for ChainError {
    fn from(e: alloy::contract::Error) -> Self {
        match e {
            alloy::contract::Error::TransportError(t) => t.into(),
            other => ChainError::Contract(other.to_string()),
        }
    }
}

impl From<alloy::providers::PendingTransactionError> for ChainError {
    fn from(e: alloy::providers::PendingTransactionError) -> Self {
        ChainError::Rpc(e.to_string())
    }
}

impl From<alloy::signers::Error> for ChainError {
    fn from(e: alloy::signers::Error) -> Self {
        ChainError::Signing(e.to_string())
    }
}
