//! Before submitting a job, the CLI waits (with a spinner) until its order has the API's
//! `min_confirmations`, so the submit is not refused as too early.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::anvil::ANVIL_DEV_KEY_0;
use posthuman_chain::{Anvil, AnvilConfig, Chain, deploy_stack};
use posthuman_cli::client::ApiClient;
use posthuman_cli::commands::jobs::wait_for_confirmations;
use posthuman_cli::output::Out;
use posthuman_cli::session::Session;

#[tokio::test]
async fn the_cli_waits_for_the_apis_confirmations() {
    let anvil = Anvil::start(&AnvilConfig::default()).unwrap();
    let rpc = anvil.endpoint();
    let key: PrivateKeySigner = ANVIL_DEV_KEY_0.parse().unwrap();
    let (book, _) = deploy_stack(&rpc, &key).await.unwrap();
    let api = ApiClient::new("http://127.0.0.1:9").unwrap();
    let s = Session::connect(api, &rpc, book, key).unwrap();
    let out = Out { json: false, quiet: true };
    let tx = s.chain.send_eth(Address::repeat_byte(9), U256::from(1)).await.unwrap();
    assert_eq!(s.chain.confirmations(tx).await.unwrap(), Some(1));

    // Nothing to wait for at 0 or 1.
    wait_for_confirmations(&s, &out, tx, 0).await.unwrap();
    wait_for_confirmations(&s, &out, tx, 1).await.unwrap();

    // At 4 it waits for three more blocks, mined in the background.
    let miner = {
        let c =
            Chain::connect(&rpc, ANVIL_DEV_KEY_0.parse().unwrap(), s.chain.book().clone()).unwrap();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                c.provider().anvil_mine(Some(1), None).await.unwrap();
            }
        })
    };
    let start = Instant::now();
    wait_for_confirmations(&s, &out, tx, 4).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(1100), "returned before the blocks");
    assert!(s.chain.confirmations(tx).await.unwrap().unwrap() >= 4);
    miner.await.unwrap();
}
