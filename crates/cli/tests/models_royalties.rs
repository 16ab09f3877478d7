//! `models royalties NFT [--distribute]`: the OCEAN two orders of a derived model paid into
//! its vault is shown, then paid out by the vault's `distribute()` from a buyer's own wallet
//! to the model's ancestors by the root's scheme, to the wei; a second `--distribute` sends
//! nothing; a root and a malformed address are refused as usage errors. On a fresh anvil
//! with the full deployment (the command reads and writes the chain only; the API is not
//! asked).

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::anvil::ANVIL_DEV_KEY_0;
use posthuman_chain::{Anvil, AnvilConfig, Chain, PublishRequest, deploy_stack};
use posthuman_cli::CliError;
use posthuman_cli::args::RoyaltiesArgs;
use posthuman_cli::client::ApiClient;
use posthuman_cli::commands::royalties;
use posthuman_cli::session::Session;
use posthuman_types::{Hash32, RewardScheme};

const ONE: u128 = 1_000_000_000_000_000_000;
/// The root's royalty per order of a derived model: 0.5 OCEAN plus an odd wei, so the 50 %
/// share rounds and the root owner's remainder must take the odd wei.
const ROYALTY: u128 = ONE / 2 + 1;

fn args(nft: Address, distribute: bool) -> RoyaltiesArgs {
    RoyaltiesArgs { nft: format!("{nft:#x}"), distribute }
}

fn key(b: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::repeat_byte(b)).unwrap()
}

#[tokio::test]
async fn a_buyer_pays_out_a_derived_models_royalties_to_its_ancestors() {
    let anvil = Anvil::start(&AnvilConfig::default()).unwrap();
    let rpc = anvil.endpoint();
    let op_key: PrivateKeySigner = ANVIL_DEV_KEY_0.parse().unwrap();
    let op = op_key.address();
    let (book, _) = deploy_stack(&rpc, &op_key).await.unwrap();
    let mut c = Chain::connect(&rpc, op_key, book.clone()).unwrap();
    let (alice, bob, carol, derek) = (key(1), key(2), key(3), key(4));
    for k in [&alice, &bob, &carol, &derek] {
        c.add_signer(k.clone()).unwrap();
        c.send_eth(k.address(), U256::from(10 * ONE)).await.unwrap();
    }
    c.transfer(op, book.ocean, derek.address(), U256::from(10 * ONE)).await.unwrap();
    // Alice's root M1 (50 % / 25 %, royalty ROYALTY); Bob trains M2, Carol trains M3.
    let scheme = RewardScheme::geometric(100 * ONE, 5000, 2).with_royalty(ROYALTY);
    let m1 = c
        .publish_model(
            op,
            &PublishRequest {
                name: "Root".into(),
                symbol: "M1".into(),
                token_uri: "https://posthuman.invalid/m/1".into(),
                weights_hash: Hash32([1; 32]),
                card_json: None,
                reward: scheme.clone(),
                root_owner: Some(alice.address()),
            },
        )
        .await
        .unwrap();
    let derive = async |n: u8, parent: Address, trainer: Address, symbol: &str| {
        let job = Hash32([n; 32]);
        c.commit_training(job, parent, trainer, Hash32([n + 1; 32]), Hash32([n + 2; 32]))
            .await
            .unwrap();
        let child = c.create_child(job, symbol, symbol, "").await.unwrap();
        c.record_derivation(job, child.nft, child.datatoken).await.unwrap();
        child
    };
    let m2 = derive(10, m1.nft, bob.address(), "M2").await;
    let m3 = derive(20, m2.nft, carol.address(), "M3").await;
    // Derek gets 2 M3 datatokens from Carol's reward and orders M3 twice: each order pays
    // ROYALTY into M3's vault.
    c.transfer(carol.address(), m3.datatoken, derek.address(), U256::from(2 * ONE)).await.unwrap();
    for i in 0..2u8 {
        let fee =
            c.sign_provider_fee_for(U256::from(ONE), u64::MAX / 2, Bytes::from(vec![i])).unwrap();
        c.start_order(derek.address(), m3.datatoken, derek.address(), 0, &fee).await.unwrap();
    }

    let api = ApiClient::new("http://127.0.0.1:9").unwrap();
    let s = Session::connect(api, &rpc, book.clone(), derek.clone()).unwrap();
    let ocean = async |who: Address| c.balance_of(book.ocean, who).await.unwrap();

    // Shown, nothing sent.
    let v = royalties::vault(&s, &args(m3.nft, false)).await.unwrap();
    let terms = c.royalty_terms(m3.nft).await.unwrap().unwrap();
    assert_eq!(
        (v.model.as_str(), v.vault.as_str(), v.per_order.as_str(), v.pending.as_str()),
        (
            format!("{:#x}", m3.nft).as_str(),
            format!("{:#x}", terms.vault).as_str(),
            ROYALTY.to_string().as_str(),
            (2 * ROYALTY).to_string().as_str()
        )
    );
    assert!(v.paid.is_empty());
    assert!(royalties::human(&v, false).contains("1.000000000000000002 OCEAN waiting"), "{v:?}");

    // Paid out by Derek's wallet: M3's parent's trainer (Bob) 50 %, the root owner (Alice)
    // the rest; Carol (M3's own trainer) is paid by the datatoken, not the royalty.
    let before =
        [ocean(alice.address()).await, ocean(bob.address()).await, ocean(carol.address()).await];
    let v = royalties::vault(&s, &args(m3.nft, true)).await.unwrap();
    let held = 2 * ROYALTY;
    let (shares, to_root) = scheme.royalty_split(2, held).unwrap(); // M3 is at depth 2
    assert_eq!(shares, vec![held * 5000 / 10_000]);
    assert_eq!(shares[0] + to_root, held);
    let paid: Vec<_> = v
        .paid
        .iter()
        .map(|p| (p.beneficiary.clone(), p.ancestor.clone(), p.amount.clone()))
        .collect();
    assert_eq!(
        paid,
        vec![
            (format!("{:#x}", bob.address()), format!("{:#x}", m2.nft), shares[0].to_string()),
            (format!("{:#x}", alice.address()), format!("{:#x}", m1.nft), to_root.to_string()),
        ]
    );
    assert_eq!(ocean(bob.address()).await - before[1], U256::from(shares[0]));
    assert_eq!(ocean(alice.address()).await - before[0], U256::from(to_root));
    assert_eq!(ocean(carol.address()).await, before[2]);
    assert_eq!(v.pending, "0");
    assert!(v.paid.iter().all(|p| p.tx.len() == 66));

    // Nothing left: a second --distribute reports so and sends no transaction.
    let nonce = c.provider().get_transaction_count(derek.address()).await.unwrap();
    let v = royalties::vault(&s, &args(m3.nft, true)).await.unwrap();
    assert!(v.paid.is_empty());
    assert_eq!(c.provider().get_transaction_count(derek.address()).await.unwrap(), nonce);
    assert!(royalties::human(&v, true).contains("nothing to pay out"));

    // A root pays no royalty; a malformed address is refused before the chain is asked.
    let r = royalties::vault(&s, &args(m1.nft, false)).await;
    assert!(matches!(r, Err(CliError::Usage(ref m)) if m.contains("not a derived model")), "{r:?}");
    let r = royalties::vault(&s, &RoyaltiesArgs { nft: "M3".into(), distribute: true }).await;
    assert!(matches!(r, Err(CliError::Usage(ref m)) if m.contains("0x… address")), "{r:?}");
}
