//! The end-to-end walk-through behind the interim main command: a fresh local chain, the
//! Ocean stack and our contract, Alice publishes a model, Bob buys datatokens and orders a
//! job, the operator verifies the order, and a training derivation pays its rewards.

use std::fmt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use posthuman_types::{Hash32, RewardScheme};

use crate::AddressBook;
use crate::anvil::ANVIL_DEV_KEY_0;
use crate::{
    Anvil, AnvilConfig, Chain, ChainError, MemorySpentOrders, OrderQuery, OrderVerdict,
    PublishRequest, deploy_stack,
};

/// One whole datatoken / OCEAN (18 decimals).
pub const ONE: u128 = 1_000_000_000_000_000_000;

/// How to run the story.
#[derive(Clone, Debug, Default)]
pub struct StoryConfig {
    pub anvil: AnvilConfig,
    /// Write the address book here (JSON) if set.
    pub address_book: Option<PathBuf>,
}

/// What happened, step by step (printable).
#[derive(Clone, Debug, Default)]
pub struct StorySummary {
    pub rpc_url: String,
    pub lines: Vec<String>,
    pub model_nft: Address,
    pub datatoken: Address,
    pub child_nft: Address,
    pub order_tx: B256,
    pub order_accepted: bool,
}

impl fmt::Display for StorySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// Connects as the operator with Alice and Bob as local signers, each funded with 10 ETH
/// for gas, and Bob with 100 OCEAN to buy with: the cast of the walk-through and the bench.
pub async fn connect_alice_and_bob(
    url: &str,
    operator: PrivateKeySigner,
    book: &AddressBook,
) -> Result<(Chain, Address, Address), ChainError> {
    let mut chain = Chain::connect(url, operator, book.clone())?;
    let alice = dev_wallet("alice")?;
    let bob = dev_wallet("bob")?;
    let (a, b) = (alice.address(), bob.address());
    chain.add_signer(alice)?;
    chain.add_signer(bob)?;
    for w in [a, b] {
        chain.send_eth(w, U256::from(10 * ONE)).await?;
    }
    chain.transfer(chain.operator(), book.ocean, b, U256::from(100 * ONE)).await?;
    Ok((chain, a, b))
}

/// A deterministic local wallet for a story character (never use on a real network).
pub fn dev_wallet(label: &str) -> Result<PrivateKeySigner, ChainError> {
    PrivateKeySigner::from_bytes(&keccak256(format!("posthuman dev wallet {label}")))
        .map_err(|e| ChainError::Signing(e.to_string()))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

fn tokens(x: U256) -> String {
    let whole = x / U256::from(ONE);
    let frac = (x % U256::from(ONE)) * U256::from(10_000u64) / U256::from(ONE);
    format!("{whole}.{frac:0>4}")
}

/// Runs the story on a fresh anvil (stopped when this returns) and reports what happened.
pub async fn story(cfg: &StoryConfig) -> Result<StorySummary, ChainError> {
    let anvil = Anvil::start(&cfg.anvil)?;
    let url = anvil.endpoint();
    let mut out = StorySummary { rpc_url: url.clone(), ..StorySummary::default() };
    let mut say = |s: String| out.lines.push(s);
    say(format!("anvil listening on {url}"));

    let operator: PrivateKeySigner =
        ANVIL_DEV_KEY_0.parse().map_err(|e| ChainError::Signing(format!("{e}")))?;
    let (book, report) = deploy_stack(&url, &operator).await?;
    say(format!(
        "deployed Ocean v4 (factory {}, fixed-rate {}) + ModelLineage {} — {} gas",
        book.factory,
        book.fixed_rate,
        book.lineage,
        report.total_gas()
    ));
    if let Some(path) = &cfg.address_book {
        book.save(path)?;
        say(format!("address book written to {}", path.display()));
    }

    let (chain, a, b) = connect_alice_and_bob(&url, operator, &book).await?;
    say(format!("Alice {a} and Bob {b} funded (Bob holds 100 OCEAN)"));

    let weights = Hash32(keccak256("demo GPT-2 weights").0);
    let scheme = RewardScheme::geometric(100 * ONE, 5000, 4);
    let req = PublishRequest {
        name: "Alice GPT-2".into(),
        symbol: "AGPT".into(),
        token_uri: "posthuman://models/alice-gpt2".into(),
        weights_hash: weights,
        card_json: Some(r#"{"architecture":"gpt2 4L/256d/4h ctx256"}"#.into()),
        reward: scheme.clone(),
        root_owner: None,
    };
    let m = chain.publish_model(a, &req).await?;
    let publish_gas: u64 = m.gas.iter().map(|(_, g)| g).sum();
    say(format!(
        "Alice published M1: data NFT {} datatoken {} weights {} ({} gas; reward {:?} bps of 100 DT)",
        m.nft,
        m.datatoken,
        weights.short(),
        publish_gas,
        scheme.shares_bps
    ));
    out.model_nft = m.nft;
    out.datatoken = m.datatoken;

    let ex = chain.create_fixed_rate(a, m.datatoken, U256::from(2 * ONE), true).await?;
    say(format!("fixed-rate exchange {} at 2 OCEAN per datatoken ({} gas)", ex.id, ex.gas));
    let cost = chain.quote(ex.id, U256::from(2 * ONE)).await?;
    let (_, buy) = chain.buy(b, ex.id, U256::from(2 * ONE)).await?;
    say(format!(
        "Bob bought 2 datatokens for {} OCEAN (tx {}, {} gas)",
        tokens(cost),
        buy.transaction_hash,
        buy.gas_used
    ));

    let job_id = "job-story-1";
    let now = unix_now();
    let fee = chain.sign_provider_fee(now + 3600, Bytes::from(job_id.as_bytes().to_vec()))?;
    let order = chain.start_order(b, m.datatoken, b, 0, &fee).await?;
    out.order_tx = order.tx_hash;
    say(format!("Bob ordered a job: startOrder tx {} ({} gas)", order.tx_hash, order.gas_used));

    let spent = MemorySpentOrders::new();
    let q = OrderQuery {
        tx_hash: order.tx_hash.to_string(),
        datatoken: m.datatoken,
        service_index: 0,
        consumer: b,
        job_id: job_id.into(),
    };
    let verdict = chain.verify_order(&q, &spent).await?;
    out.order_accepted = verdict.is_accepted();
    say(format!("operator verified the order: {}", verdict_line(&verdict)));
    let reuse =
        chain.verify_order(&OrderQuery { job_id: "job-story-2".into(), ..q }, &spent).await?;
    say(format!("the same order for a second job: {}", verdict_line(&reuse)));

    // The training job's outcome, committed before the derived model exists, then revealed.
    let job = Hash32(keccak256(job_id).0);
    let m2_weights = Hash32(keccak256("demo GPT-2 weights, fine-tuned by Bob").0);
    let receipt = Hash32(keccak256("demo receipt").0);
    let c = chain.commit_training(job, m.nft, b, m2_weights, receipt).await?;
    say(format!(
        "committed training {} → weights {} ({} gas)",
        job.short(),
        m2_weights.short(),
        c.gas_used
    ));
    let child = chain.create_child(job, "Bob GPT-2", "BGPT", "posthuman://models/bob-gpt2").await?;
    out.child_nft = child.nft;
    let d = chain.record_derivation(job, child.nft, child.datatoken).await?;
    let paid: Vec<String> = d
        .rewards
        .iter()
        .map(|(w, amt)| {
            format!(
                "{} {}",
                if *w == a {
                    "Alice"
                } else if *w == b {
                    "Bob"
                } else {
                    "?"
                },
                tokens(*amt)
            )
        })
        .collect();
    say(format!(
        "M2 {} created by the lineage contract; derivation recorded ({} gas), rewards: {}",
        child.nft,
        d.gas_used,
        paid.join(", ")
    ));
    let lineage = chain.lineage(child.nft).await?;
    let path: Vec<String> =
        lineage.iter().rev().map(|e| format!("{} ({})", e.nft, e.weights_hash.short())).collect();
    say(format!("lineage: {}", path.join(" → ")));
    drop(anvil);
    Ok(out)
}

fn verdict_line(v: &OrderVerdict) -> String {
    match v {
        OrderVerdict::Accepted(o) => format!("ACCEPTED (order {}, consumer {})", o.id, o.consumer),
        OrderVerdict::Rejected(r) => format!("REJECTED: {r}"),
    }
}
