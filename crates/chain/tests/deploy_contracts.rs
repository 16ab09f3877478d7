//! `posthuman-deploy-contracts` against anvil, as `scripts/deploy.sh` runs it: a full
//! deployment into a fresh address book, an idempotent rerun that sends nothing, a deployment
//! of only ours on top of an existing Ocean (the book it writes works for a publish), and the
//! refusals: a book for another chain or naming contracts with no code, an unset key variable,
//! an unfunded deployer. The key is never printed.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use std::path::Path;
use std::process::{Command, Output};

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use common::{operator_key, start_anvil};
use posthuman_chain::anvil::ANVIL_DEV_KEY_0;
use posthuman_chain::{AddressBook, AnvilConfig, Chain, PublishRequest, alloy};
use posthuman_types::{Hash32, RewardScheme};

const KEY_VAR: &str = "POSTHUMAN_TEST_DEPLOYER_KEY";

fn deployer(rpc: &str, key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_posthuman-deploy-contracts"));
    cmd.args(["--rpc-url", rpc, "--key-env", KEY_VAR]).args(args);
    match key {
        Some(k) => cmd.env(KEY_VAR, k),
        None => cmd.env_remove(KEY_VAR),
    };
    let out = cmd.output().unwrap();
    let all =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains(&ANVIL_DEV_KEY_0[2..]), "the deployer key was printed:\n{all}");
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn nonce(chain: &Chain) -> u64 {
    chain.provider().get_transaction_count(chain.operator()).await.unwrap()
}

async fn has_code(chain: &Chain, addr: Address) -> bool {
    !chain.provider().get_code_at(addr).await.unwrap().is_empty()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn deploys_all_then_nothing_then_only_ours_on_an_existing_ocean() {
    let anvil = start_anvil(&AnvilConfig::default());
    let rpc = anvil.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("address-book.json");

    // 1. Everything, into a fresh book.
    let out = deployer(&rpc, Some(ANVIL_DEV_KEY_0), &["--out", path_str(&first)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("deploying ERC721Factory"), "no progress: {}", text(&out));
    let book = AddressBook::load(&first).unwrap();
    assert_eq!(
        (book.chain_id, book.operator),
        (posthuman_chain::DEV_CHAIN_ID, operator_key().address())
    );
    let mut chain = Chain::connect(&rpc, operator_key(), book.clone()).unwrap();
    for addr in [book.ocean, book.factory, book.fixed_rate, book.lineage, book.market] {
        assert!(has_code(&chain, addr).await, "{addr} has no code");
    }

    // 2. Rerun: the book's contracts are there, so nothing is sent and the book is unchanged.
    let before = (nonce(&chain).await, std::fs::read(&first).unwrap());
    let out = deployer(&rpc, Some(ANVIL_DEV_KEY_0), &["--out", path_str(&first)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already deployed"), "{}", text(&out));
    assert_eq!((nonce(&chain).await, std::fs::read(&first).unwrap()), before);

    // 3. Only ours, on top of the Ocean deployment the first book records.
    let second = dir.path().join("ours.json");
    let sent = nonce(&chain).await;
    let out = deployer(
        &rpc,
        Some(ANVIL_DEV_KEY_0),
        &["--out", path_str(&second), "--ocean-book", path_str(&first)],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("deploying OceanToken"), "{}", text(&out));
    assert_eq!(nonce(&chain).await - sent, 2, "ModelLineage and PeerMarket only");
    let ours = AddressBook::load(&second).unwrap();
    assert_eq!(ours.ocean_book(), book.ocean_book());
    assert_ne!((ours.lineage, ours.market), (book.lineage, book.market));
    assert!(has_code(&chain, ours.lineage).await && has_code(&chain, ours.market).await);
    // The new book works: a model published through it is registered in the new lineage.
    chain = Chain::connect(&rpc, operator_key(), ours).unwrap();
    let req = PublishRequest {
        name: "Reuse".into(),
        symbol: "RE".into(),
        token_uri: "https://posthuman.invalid/m/reuse".into(),
        weights_hash: Hash32([7; 32]),
        card_json: None,
        reward: RewardScheme::geometric(1000, 5000, 3),
        root_owner: None,
    };
    let published = chain.publish_model(chain.operator(), &req).await.unwrap();
    let entry = chain.model(published.nft).await.unwrap().expect("registered in the new lineage");
    assert_eq!(entry.weights_hash, Hash32([7; 32]));
}

#[tokio::test]
async fn refuses_what_it_cannot_deploy_or_must_not_overwrite() {
    let anvil = start_anvil(&AnvilConfig::default());
    let rpc = anvil.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let book_path = dir.path().join("book.json");
    let out = deployer(&rpc, Some(ANVIL_DEV_KEY_0), &["--out", path_str(&book_path)]);
    assert!(out.status.success(), "{}", text(&out));
    let book = AddressBook::load(&book_path).unwrap();

    let refused = |out: &Output, why: &str| {
        assert!(!out.status.success(), "expected a refusal ({why}): {}", text(out));
        assert!(text(out).contains(why), "expected '{why}' in: {}", text(out));
    };
    // A book for another chain, and one naming contracts this chain does not have.
    let other = dir.path().join("other-chain.json");
    AddressBook { chain_id: 11155111, ..book.clone() }.save(&other).unwrap();
    let out = deployer(&rpc, Some(ANVIL_DEV_KEY_0), &["--out", path_str(&other)]);
    refused(&out, "is for chain 11155111, the RPC URL's is 8996");
    let ghost = dir.path().join("ghost.json");
    AddressBook { lineage: Address::repeat_byte(0x42), ..book.clone() }.save(&ghost).unwrap();
    let out = deployer(&rpc, Some(ANVIL_DEV_KEY_0), &["--out", path_str(&ghost)]);
    refused(&out, "has no code on chain 8996");
    assert_eq!(AddressBook::load(&ghost).unwrap().market, book.market, "overwritten");
    // An Ocean book for another chain.
    let fresh = dir.path().join("fresh.json");
    let out = deployer(
        &rpc,
        Some(ANVIL_DEV_KEY_0),
        &["--out", path_str(&fresh), "--ocean-book", path_str(&other)],
    );
    refused(&out, "the Ocean book: it is for chain 11155111");
    // No key in the environment; a malformed one; a deployer with nothing to pay gas with.
    refused(&deployer(&rpc, None, &["--out", path_str(&fresh)]), "is not set");
    refused(
        &deployer(&rpc, Some("0xnotakey"), &["--out", path_str(&fresh)]),
        "not a hex private key",
    );
    let broke = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x11)).unwrap();
    let broke_hex = format!("0x{}", alloy::hex::encode(broke.to_bytes()));
    refused(&deployer(&rpc, Some(&broke_hex), &["--out", path_str(&fresh)]), "fund it");
    refused(
        &deployer("ftp://127.0.0.1:1", Some(ANVIL_DEV_KEY_0), &["--out", path_str(&fresh)]),
        "--rpc-url is not an http(s):// URL",
    );
    assert!(!fresh.exists());

    // The URL from $POSTHUMAN_RPC_URL instead (how deploy.sh keeps it out of the arguments).
    let out = Command::new(env!("CARGO_BIN_EXE_posthuman-deploy-contracts"))
        .args(["--key-env", KEY_VAR, "--out", path_str(&book_path)])
        .env("POSTHUMAN_RPC_URL", &rpc)
        .env(KEY_VAR, ANVIL_DEV_KEY_0)
        .output()
        .unwrap();
    assert!(out.status.success() && text(&out).contains("already deployed"), "{}", text(&out));
}

/// `--operator-env`: the runtime operator's key (the stack's secret) takes the lineage
/// contract's operator role from the deployer, and the book names it; a rerun sends nothing;
/// an operator with no ether is warned about; only the contract's owner can hand it over.
/// Without this step a deployment's job-done function holds a key the contract does not obey.
#[tokio::test]
async fn the_runtime_operator_takes_the_role_from_the_deployer() {
    const OP_VAR: &str = "POSTHUMAN_TEST_OPERATOR_KEY";
    let anvil = start_anvil(&AnvilConfig::default());
    let rpc = anvil.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("address-book.json");
    let op = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x42)).unwrap();
    let op_hex = format!("0x{}", alloy::hex::encode(op.to_bytes()));
    let run = |key: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_posthuman-deploy-contracts"));
        cmd.args(["--rpc-url", &rpc, "--key-env", KEY_VAR, "--operator-env", OP_VAR])
            .args(["--out", path_str(&path)])
            .env(KEY_VAR, key)
            .env(OP_VAR, &op_hex);
        let out = cmd.output().unwrap();
        assert!(!text(&out).contains(&op_hex[2..]), "the operator key was printed");
        out
    };
    let out = run(ANVIL_DEV_KEY_0);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("to {}", op.address())), "{}", text(&out));
    assert!(text(&out).contains("holds no ether"), "{}", text(&out));
    let book = AddressBook::load(&path).unwrap();
    assert_eq!(book.operator, op.address(), "the book names the runtime operator");
    let owner: PrivateKeySigner = ANVIL_DEV_KEY_0.parse().unwrap();
    let chain = Chain::connect(&rpc, owner.clone(), book).unwrap();
    assert_eq!(chain.lineage_operator().await.unwrap(), op.address());
    assert_eq!(chain.lineage_owner().await.unwrap(), owner.address(), "the deployer stays owner");

    // Again: nothing sent.
    let before = chain.provider().get_transaction_count(owner.address()).await.unwrap();
    let out = run(ANVIL_DEV_KEY_0);
    assert!(out.status.success() && text(&out).contains("already the lineage"), "{}", text(&out));
    assert_eq!(chain.provider().get_transaction_count(owner.address()).await.unwrap(), before);

    // --fund-operator: the deployer sends the shortfall once; a rerun sends nothing.
    let fund = |amount: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_posthuman-deploy-contracts"));
        cmd.args(["--rpc-url", &rpc, "--key-env", KEY_VAR, "--operator-env", OP_VAR])
            .args(["--out", path_str(&path), "--fund-operator", amount])
            .env(KEY_VAR, ANVIL_DEV_KEY_0)
            .env(OP_VAR, &op_hex);
        cmd.output().unwrap()
    };
    let out = fund("0.25");
    assert!(out.status.success() && text(&out).contains("funded with 0.25"), "{}", text(&out));
    assert!(!text(&out).contains("holds no ether"), "{}", text(&out));
    let quarter = alloy::primitives::U256::from(250_000_000_000_000_000u64);
    assert_eq!(chain.eth_balance(op.address()).await.unwrap(), quarter);
    let before = chain.provider().get_transaction_count(owner.address()).await.unwrap();
    let out = fund("0.25");
    assert!(out.status.success() && text(&out).contains("no top-up needed"), "{}", text(&out));
    assert_eq!(chain.provider().get_transaction_count(owner.address()).await.unwrap(), before);
    for bad in ["0", "-1", "lots"] {
        let out = fund(bad);
        assert!(!out.status.success(), "--fund-operator {bad}: {}", text(&out));
        assert!(text(&out).contains("--fund-operator"), "{}", text(&out));
    }
    assert_eq!(chain.eth_balance(op.address()).await.unwrap(), quarter, "bad amounts send nothing");

    // A key that is not the owner's cannot take the role back for another operator.
    let other = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x43)).unwrap();
    let other_hex = format!("0x{}", alloy::hex::encode(other.to_bytes()));
    // (the deployer check passes: the book's contracts exist; the owner check refuses)
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_posthuman-deploy-contracts"));
    let out = cmd
        .args(["--rpc-url", &rpc, "--key-env", KEY_VAR, "--operator-env", OP_VAR])
        .args(["--out", path_str(&path)])
        .env(KEY_VAR, "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
        .env(OP_VAR, &other_hex)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("only the owner"), "{}", text(&out));
    assert_eq!(chain.lineage_operator().await.unwrap(), op.address());
}
