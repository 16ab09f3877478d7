//! What the storefront reads from the API. The API's views (models, jobs, quotes, errors)
//! are `posthuman_types::views`, the very definitions the API serialises, re-exported here;
//! only the address book in `GET /api/chain` is declared here, because the API's
//! `AddressBook` lives in `posthuman-chain`, which does not build for wasm32: these are the
//! fields the storefront uses of it (serde ignores the rest, so the API may grow without
//! breaking deployed storefronts).

use posthuman_receipts::Address;
use serde::Deserialize;

pub use posthuman_types::views::{
    ChildAsset, ErrorBody, EvaluationView, JobCounts, JobStateView, JobView, ModelView,
    ProviderFeeView, RoyaltyLine, SubmittedView,
};

/// A quote as the storefront reads it: the terms the API echoes are skipped, because the
/// page checks the fee against the terms it asked for itself (`order::check_fee`), and
/// parsing them would put a second copy of every job parameter's deserializer in the wasm
/// (about 9 KB of code, 2026-12-07).
pub type Quote = posthuman_types::views::Quote<serde::de::IgnoredAny>;

/// `GET /api/chain`: where the chain is and the deployment's address book (the API's
/// definition, read with the storefront's own [`AddressBook`]).
pub type ChainInfo = posthuman_types::views::ChainInfo<AddressBook>;

/// The parts of the address book the storefront uses.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct AddressBook {
    pub chain_id: u64,
    pub operator: Address,
    /// The `ModelLineage` contract: the receipts' EIP-712 verifying contract.
    pub lineage: Address,
    /// The OCEAN token (the account page reads its balance).
    #[serde(default)]
    pub ocean: Option<Address>,
    /// Ocean's fixed-rate exchange (datatokens are bought there).
    #[serde(default)]
    pub fixed_rate: Address,
    /// The deployment's first block: event reads (the account's rewards) start there.
    #[serde(default)]
    pub deployed_at_block: u64,
    /// The peer market (`PeerMarket`): holders resell datatokens there (`None`: an address
    /// book without one, then the model page offers no resale).
    #[serde(default)]
    pub market: Option<Address>,
}
