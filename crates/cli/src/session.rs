//! A signed-in user: the API client plus a chain client acting with the user's own key.
//!
//! The chain endpoint and the deployment's address book come from the API (`GET
//! /api/chain`), so a user needs only the API URL and a wallet; `--rpc` overrides the
//! endpoint (e.g. a user's own node for a public chain).

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::{AddressBook, Chain};

use crate::Config;
use crate::client::ApiClient;
use crate::error::CliError;

/// What `GET /api/chain` answers: where the chain is and what is deployed on it.
pub type ChainInfo = posthuman_types::views::ChainInfo<AddressBook>;

/// One user at one deployment.
#[derive(Clone, Debug)]
pub struct Session {
    pub api: ApiClient,
    pub chain: Chain,
    pub signer: PrivateKeySigner,
}

impl Session {
    /// Loads the wallet, asks the API where the chain is, connects.
    pub async fn open(cfg: &Config) -> Result<Session, CliError> {
        let signer = cfg.wallet.load()?;
        let api = ApiClient::new(&cfg.api)?;
        let info = api.chain_info().await?;
        let rpc = cfg.rpc.clone().or(info.rpc_url).ok_or_else(|| {
            CliError::Usage(
                "the API advertises no public RPC for its chain: pass --rpc (or POSTHUMAN_RPC)"
                    .into(),
            )
        })?;
        Session::connect(api, &rpc, info.address_book, signer)
    }

    /// A session from parts (the demo's users share one deployment).
    pub fn connect(
        api: ApiClient,
        rpc: &str,
        book: AddressBook,
        signer: PrivateKeySigner,
    ) -> Result<Session, CliError> {
        let chain = Chain::connect(rpc, signer.clone(), book)?;
        Ok(Session { api, chain, signer })
    }

    /// The deployment's signing domain (its chain and lineage contract): every signed API
    /// request is made under it.
    pub fn domain(&self) -> posthuman_receipts::ReceiptDomain {
        let b = self.chain.book();
        posthuman_receipts::ReceiptDomain::new(b.chain_id, b.lineage)
    }

    pub fn me(&self) -> Address {
        self.signer.address()
    }
}

/// Parses an address the user typed, naming the argument in the error.
pub fn address(what: &str, s: &str) -> Result<Address, CliError> {
    s.trim()
        .parse()
        .map_err(|_| CliError::Usage(format!("{what} must be a 0x… address, not {s:?}")))
}
