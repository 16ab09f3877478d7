//! A signed-in user: the API client plus a chain client acting with the user's own key.
//!
//! The chain endpoint and the deployment's address book come from the API (`GET
//! /api/chain`), so a user needs only the API URL and a wallet; `--rpc` overrides the
//! endpoint (e.g. a user's own node for a public chain).

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::{AddressBook, Chain};
use serde::{Deserialize, Serialize};

use crate::Config;
use crate::client::ApiClient;
use crate::error::CliError;

/// What `GET /api/chain` answers: where the chain is and what is deployed on it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChainInfo {
    pub rpc_url: String,
    pub address_book: AddressBook,
}

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
        let rpc = cfg.rpc.clone().unwrap_or(info.rpc_url);
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
