//! Shared test setup: a fresh anvil + full deployment per test (≈0.3 s), so tests run in
//! parallel without sharing chain state.

#![allow(dead_code)]

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::alloy;
use posthuman_chain::anvil::{ANVIL_DEV_KEY_0, default_anvil_path};
use posthuman_chain::{Anvil, AnvilConfig, Chain, PublishRequest, PublishedModel, deploy_stack};
use posthuman_types::{Hash32, RewardScheme};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct Env {
    pub anvil: Anvil,
    pub chain: Chain,
    pub rng: ChaCha8Rng,
}

pub fn operator_key() -> PrivateKeySigner {
    ANVIL_DEV_KEY_0.parse().unwrap()
}

pub fn start_anvil(cfg: &AnvilConfig) -> Anvil {
    let path = default_anvil_path();
    assert!(
        path.is_file(),
        "anvil not found at {}: run `npm ci --prefix contracts` first",
        path.display()
    );
    Anvil::start(cfg).unwrap()
}

pub async fn env(seed: u64) -> Env {
    let anvil = start_anvil(&AnvilConfig::default());
    let op = operator_key();
    let (book, _) = deploy_stack(&anvil.endpoint(), &op).await.unwrap();
    let chain = Chain::connect(&anvil.endpoint(), op, book).unwrap();
    Env { anvil, chain, rng: ChaCha8Rng::seed_from_u64(seed) }
}

impl Env {
    /// A new local wallet, registered with the client and funded with 10 ETH and `ocean`.
    pub async fn wallet(&mut self, ocean: u128) -> Address {
        let key: [u8; 32] = self.rng.random();
        let signer = PrivateKeySigner::from_bytes(&B256::from(key)).unwrap();
        let addr = signer.address();
        self.chain.add_signer(signer).unwrap();
        self.chain.send_eth(addr, U256::from(10u128.pow(19))).await.unwrap();
        if ocean > 0 {
            let op = self.chain.operator();
            let ocean_token = self.chain.book().ocean;
            self.chain.transfer(op, ocean_token, addr, U256::from(ocean)).await.unwrap();
        }
        addr
    }

    pub fn hash(&mut self) -> Hash32 {
        Hash32(self.rng.random())
    }

    pub async fn publish(&mut self, publisher: Address, reward: RewardScheme) -> PublishedModel {
        self.publish_for(publisher, reward, None).await
    }

    /// Publishes as `publisher` (the NFT holder) with `root_owner` as owner of record.
    pub async fn publish_for(
        &mut self,
        publisher: Address,
        reward: RewardScheme,
        root_owner: Option<Address>,
    ) -> PublishedModel {
        let req = PublishRequest {
            name: "Alice GPT".into(),
            symbol: "AGPT".into(),
            token_uri: "https://posthuman.invalid/m/1".into(),
            weights_hash: self.hash(),
            card_json: Some(r#"{"architecture":"gpt2 2L/64d"}"#.into()),
            reward,
            root_owner,
        };
        self.chain.publish_model(publisher, &req).await.unwrap()
    }
}

pub const ONE: u128 = 1_000_000_000_000_000_000;
