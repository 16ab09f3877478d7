//! Ethereum access (alloy): Ocean v4 datatokens, the lineage contract, and the order check.
//!
//! - [`anvil`]: a local anvil process (free port, persisted state, stopped on drop).
//! - [`deploy`]: deploys the genuine Ocean v4 stack (or reuses one already on the chain) plus
//!   our `ModelLineage` and `PeerMarket` contracts and writes an [`AddressBook`].
//! - [`client`]: the [`Chain`] client (operator key + any local signers) with the Ocean
//!   operations: publish a model asset, mint, transfer, approve, balances, fixed-rate
//!   exchanges.
//! - [`ddo`]: the Ocean DDO of a model asset (schema 4.1.0, three compute services), set on
//!   chain with the data NFT's `setMetaData` so Ocean's indexers list it.
//! - [`fees`]: provider fees signed exactly as Ocean's `startOrder` checks them.
//! - [`gas`]: the storage slots a transaction created (where first-time gas goes).
//! - [`orders`]: `startOrder` and [`Chain::verify_order`], the payment check returning a typed
//!   [`OrderVerdict`], with the [`SpentOrders`] record that makes an order pay for one job.
//! - [`lineage`]: commit-before-reveal training commitments, child models created and owned
//!   by the lineage contract, exactly-once derivations paying rewards, lineage reads.
//! - [`market`]: the peer market: any holder (e.g. of reward datatokens) offers any ERC-20 at
//!   a fixed OCEAN price; buyers take part or all.
//! - [`sale`]: a derived model's datatokens on sale on Ocean's own fixed-rate exchange (the
//!   trainer's `openSale`: burnt from him, minted to buyers, never past the cap).
//! - [`story`]: the end-to-end walk-through used by the interim main command.
//!
//! Contract bindings come from the committed artifacts in `contracts/out/` (regenerate with
//! `node contracts/build.mjs`), so building needs no npm; running the tests needs anvil
//! (`npm ci --prefix contracts`).

pub mod anvil;
pub mod bindings;
pub mod client;
pub mod ddo;
pub mod deploy;
pub mod error;
pub mod fees;
pub mod gas;
pub mod lineage;
pub mod market;
pub mod orders;
pub mod sale;
pub mod story;

pub use alloy;
pub use anvil::{Anvil, AnvilConfig, DEV_CHAIN_ID};
pub use client::{Chain, Exchange, PublishRequest, PublishedModel};
pub use deploy::{
    AddressBook, ContractsDeployment, DeployOutcome, DeployReport, OceanBook, deploy_contracts,
    deploy_stack,
};
pub use error::ChainError;
pub use fees::ProviderFee;
pub use market::Offer;
pub use orders::{
    Claim, DEFAULT_MIN_CONFIRMATIONS, MemorySpentOrders, OrderId, OrderQuery, OrderVerdict,
    Rejection, SpentOrders, VerifiedOrder, default_min_confirmations, validate_min_confirmations,
};
