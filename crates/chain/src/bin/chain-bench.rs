//! Gas and latency figures for issue 2: deploy, publish, exchange, buy, startOrder, the
//! lineage contract's commit / record with rewards to 1…4 trainers, the peer market's
//! createOffer / buy (a reward datatoken sold holder to holder), and order-verification
//! latency against anvil. Prints a table with the references and ratios, then the
//! orders like for like (issue 13): first orders against first orders, steady against
//! steady, with the storage slots each created (20,000 gas apiece, read with the node's
//! prestate tracer), since a first order's extra gas is the slots it creates.

use std::time::Instant;

use posthuman_chain::alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use posthuman_chain::anvil::ANVIL_DEV_KEY_0;
use posthuman_chain::story::{ONE, connect_alice_and_bob, dev_wallet};
use posthuman_chain::{
    Anvil, AnvilConfig, ChainError, MemorySpentOrders, OrderQuery, PublishRequest, deploy_stack,
};
use posthuman_types::{Hash32, RewardScheme};

struct Row {
    what: String,
    value: f64,
    unit: &'static str,
    reference: Option<(f64, &'static str)>,
}

fn row(
    rows: &mut Vec<Row>,
    what: impl Into<String>,
    value: f64,
    unit: &'static str,
    reference: Option<(f64, &'static str)>,
) {
    rows.push(Row { what: what.into(), value, unit, reference });
}

fn h(label: &str) -> Hash32 {
    Hash32(keccak256(label).0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ChainError> {
    let anvil = Anvil::start(&AnvilConfig::default())?;
    let url = anvil.endpoint();
    let operator = ANVIL_DEV_KEY_0.parse().map_err(|e| ChainError::Signing(format!("{e}")))?;
    let mut rows = Vec::new();

    let t = Instant::now();
    let (book, report) = deploy_stack(&url, &operator).await?;
    let deploy_ms = t.elapsed().as_secs_f64() * 1e3;
    row(
        &mut rows,
        "deploy stack (Ocean v4 + ModelLineage + PeerMarket, 15 txs)",
        report.total_gas() as f64,
        "gas",
        None,
    );
    for (step, gas) in &report.steps {
        if *step == "ModelLineage" || *step == "PeerMarket" {
            row(&mut rows, format!("  of which {step}"), *gas as f64, "gas", None);
        }
    }
    row(&mut rows, "deploy stack wall time", deploy_ms, "ms", None);

    let (mut chain, a, b) = connect_alice_and_bob(&url, operator, &book).await?;

    let req = PublishRequest {
        name: "Bench GPT".into(),
        symbol: "BGPT".into(),
        token_uri: "posthuman://bench".into(),
        weights_hash: h("w1"),
        card_json: None,
        // Every order of a derived model pays 1 OCEAN of lineage royalty to its ancestors.
        reward: RewardScheme::geometric(100 * ONE, 5000, 4).with_royalty(ONE),
        root_owner: None,
    };
    let m = chain.publish_model(a, &req).await?;
    let mut publish_total = 0;
    for (step, gas) in &m.gas {
        publish_total += gas;
        let reference = (*step == "createNftWithErc20").then_some((1_073_458.0, "Ocean ref"));
        row(&mut rows, format!("publish: {step}"), *gas as f64, "gas", reference);
    }
    // Ocean's publish flow (issue 18): the model's DDO in the NFT's metadata, as the API
    // writes it (a card of typical length, three compute services at a 29-byte URL).
    let ddo = |nft, datatoken, parent| posthuman_chain::ddo::ModelDdo {
        chain_id: book.chain_id,
        nft,
        datatoken,
        name: "Bench GPT".into(),
        description: "A GPT-2 trained on a private corpus, offered for compute-to-data".into(),
        author: a.to_checksum(None),
        license: "proprietary: compute-to-data only".into(),
        tags: vec!["posthuman".into(), "gpt2".into(), "compute-to-data".into()],
        family: "gpt2".into(),
        architecture: "gpt2 12L/768d/12h ctx1024 vocab50257".into(),
        parameters: 124_439_808,
        weights_hash: B256::repeat_byte(0x5a),
        parent,
        service_endpoint: "https://api.posthuman.example".into(),
        created: 1_796_594_096,
        updated: 1_796_594_096,
    };
    let root_ddo = ddo(m.nft, m.datatoken, None);
    let md = chain.set_metadata(a, &root_ddo).await?;
    let ddo_target = Some((1_073_458.0 * 0.15, "15% createNft"));
    let label = format!("publish: setMetaData (DDO, {} B)", root_ddo.encode().0.len());
    row(&mut rows, label, md.gas_used as f64, "gas", ddo_target);
    publish_total += md.gas_used;
    row(&mut rows, "publish model (total)", publish_total as f64, "gas", None);
    let r = chain.mint(a, m.datatoken, b, U256::from(ONE)).await?;
    row(&mut rows, "mint", r.gas_used as f64, "gas", Some((75_528.0, "Ocean ref")));
    let ex = chain.create_fixed_rate(a, m.datatoken, U256::from(2 * ONE), true).await?;
    row(
        &mut rows,
        "create fixed-rate exchange",
        ex.gas as f64,
        "gas",
        Some((478_747.0, "Ocean ref")),
    );
    let (approve_gas, buy) = chain.buy(b, ex.id, U256::from(2 * ONE)).await?;
    row(&mut rows, "buy: approve OCEAN", approve_gas as f64, "gas", None);
    row(&mut rows, "buy: buyDT", buy.gas_used as f64, "gas", Some((193_968.0, "Ocean ref")));

    // Orders, each with the number of storage slots it created.
    let mut like = Like::default();
    let fee = chain.sign_provider_fee(u64::MAX / 2, Bytes::from_static(b"bench"))?;
    let order = chain.start_order(b, m.datatoken, b, 0, &fee).await?;
    row(&mut rows, "startOrder", order.gas_used as f64, "gas", Some((147_766.0, "Ocean ref")));
    like.root_first = Some(counted(&chain, &order).await?);
    // The same order again: what every later order of the root costs.
    chain.mint(a, m.datatoken, b, U256::from(ONE)).await?;
    let again = chain.start_order(b, m.datatoken, b, 0, &fee).await?;
    like.root_steady = Some(counted(&chain, &again).await?);
    // A paid job's order (issue 13): a non-zero OCEAN provider fee to the operator, carrying
    // the API's fee binding as providerData: one 32-byte digest of (chain, deployment, model,
    // kind, quoted dataset length, terms hash) — posthuman_receipts::FeeBinding, which this
    // crate cannot name (receipts depends on chain); the gas depends only on its bytes. The
    // approval is a separate transaction.
    let binding = |model: Address| {
        let digest = keccak256(
            [&book.chain_id.to_be_bytes()[..], book.lineage.as_slice(), model.as_slice(), b"train"]
                .concat(),
        );
        Bytes::from(digest.to_vec())
    };
    chain.mint(a, m.datatoken, b, U256::from(ONE)).await?;
    let paid_fee =
        chain.sign_provider_fee_for(U256::from(3 * ONE), u64::MAX / 2, binding(m.nft))?;
    let paid = chain.start_order(b, m.datatoken, b, 0, &paid_fee).await?;
    row(
        &mut rows,
        "startOrder with a 3 OCEAN provider fee + fee binding",
        paid.gas_used as f64,
        "gas",
        Some((114_656.0 * 1.3, "1.3x 114,656")),
    );
    like.root_paid_steady = Some(counted(&chain, &paid).await?);

    // A lineage M1 → M2 → … → M5 with distinct trainers: derivation k pays k trainers + root.
    let mut parent = m.nft;
    let mut first_reward = None;
    let mut second = None;
    for depth in 1..=4u32 {
        let trainer = dev_wallet(&format!("trainer{depth}"))?.address();
        let job = h(&format!("job{depth}"));
        let c = chain
            .commit_training(job, parent, trainer, h(&format!("w{}", depth + 1)), h("receipt"))
            .await?;
        let child = chain.create_child(job, "Child", "CH", "").await?;
        let d = chain.record_derivation(job, child.nft, child.datatoken).await?;
        if depth == 1 {
            first_reward = Some((trainer, child.nft, child.datatoken));
        }
        if depth == 2 {
            second = Some((child.nft, child.datatoken));
            let child_ddo = ddo(child.nft, child.datatoken, Some(parent));
            let md = chain.set_child_metadata(&child_ddo).await?;
            let label = format!("setChildMetaData (derived DDO, {} B)", child_ddo.encode().0.len());
            row(&mut rows, label, md.gas_used as f64, "gas", ddo_target);
            row(&mut rows, "commitTraining", c.gas_used as f64, "gas", None);
            row(
                &mut rows,
                "createChild (NFT + datatoken by the contract)",
                child.gas_used as f64,
                "gas",
                None,
            );
        }
        let reference = (depth == 3).then_some((250_000.0, "goal"));
        row(
            &mut rows,
            format!(
                "recordDerivation, rewards to {depth} trainer(s) + root ({} mints)",
                d.rewards.len()
            ),
            d.gas_used as f64,
            "gas",
            reference,
        );
        parent = child.nft;
    }

    // Peer market: the first trainer sells part of its M2 reward to Bob for OCEAN.
    if let Some((trainer, m2_nft, m2_dt)) = first_reward {
        chain.add_signer(dev_wallet("trainer1")?)?;
        chain.send_eth(trainer, U256::from(ONE)).await?;
        let (offer, gas) = chain
            .create_offer(trainer, m2_dt, U256::from(3 * ONE / 2), U256::from(10 * ONE))
            .await?;
        for (step, g) in gas {
            row(&mut rows, format!("market offer: {step}"), g as f64, "gas", None);
        }
        let buy = chain.buy_offer(b, offer, U256::from(4 * ONE)).await?;
        row(&mut rows, "market buy (after approving OCEAN)", buy.gas_used as f64, "gas", None);
        let buy = chain.buy_offer(b, offer, U256::from(6 * ONE)).await?;
        row(&mut rows, "market buy, sells out the offer", buy.gas_used as f64, "gas", None);

        // Bob orders M2 (a derived model): the compute fee to the operator and the lineage
        // royalty into M2's vault, both in OCEAN (one approval), in the same startOrder,
        // with the same fee binding as the root's paid order.
        let fee =
            chain.sign_provider_fee_for(U256::from(3 * ONE), u64::MAX / 2, binding(m2_nft))?;
        let order = chain.start_order(b, m2_dt, b, 0, &fee).await?;
        like.derived_first = Some(counted(&chain, &order).await?);
        row(
            &mut rows,
            "startOrder, derived model: compute fee + royalty (first order)",
            order.gas_used as f64,
            "gas",
            Some((149_053.0, "1.3x target")),
        );
        let order = chain.start_order(b, m2_dt, b, 0, &fee).await?;
        like.derived_steady = Some(counted(&chain, &order).await?);
        row(
            &mut rows,
            "startOrder, derived model: compute fee + royalty (second order)",
            order.gas_used as f64,
            "gas",
            Some((149_053.0, "1.3x target")),
        );
        // The first order of another fresh derived model (M3, trainer2's) with a 7-byte
        // providerData: what the fee binding's 32 bytes add to a first order.
        if let Some((m3_nft, m3_dt)) = second {
            chain.add_signer(dev_wallet("trainer2")?)?;
            let trainer2 = dev_wallet("trainer2")?.address();
            chain.send_eth(trainer2, U256::from(ONE)).await?;
            chain.transfer(trainer2, m3_dt, b, U256::from(ONE)).await?;
            let short = chain.sign_provider_fee_for(
                U256::from(3 * ONE),
                u64::MAX / 2,
                Bytes::from_static(b"derived"),
            )?;
            let o = chain.start_order(b, m3_dt, b, 0, &short).await?;
            like.derived_first_short = Some(counted(&chain, &o).await?);
            let _ = m3_nft;
        }
        let paid = chain.distribute_royalty(b, m2_nft).await?;
        row(
            &mut rows,
            format!("royalty distribute() of 2 orders: {} payment(s)", paid.len()),
            paid.iter().map(|p| p.amount.to::<u128>() as f64).sum::<f64>() / ONE as f64,
            "OCEAN",
            None,
        );
    }

    // Order verification latency (fresh spent-store each call, so every call does the work).
    let q = OrderQuery {
        tx_hash: order.tx_hash.to_string(),
        datatoken: m.datatoken,
        service_index: 0,
        consumer: b,
        job_id: "bench".into(),
    };
    let mut times = Vec::new();
    for i in 0..220 {
        let spent = MemorySpentOrders::new();
        let t = Instant::now();
        let v = chain.verify_order(&q, &spent).await?;
        let dt = t.elapsed().as_secs_f64() * 1e3;
        if !v.is_accepted() {
            return Err(ChainError::Invalid(format!("bench order rejected: {v:?}")));
        }
        if i >= 20 {
            times.push(dt);
        }
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    row(
        &mut rows,
        format!("verify_order median ({} calls)", times.len()),
        pct(0.5),
        "ms",
        Some((5.0, "target")),
    );
    row(&mut rows, "verify_order p95", pct(0.95), "ms", Some((5.0, "target")));
    drop(anvil);

    println!(
        "{:<62} {:>12} {:>5} {:>12} {:>10}",
        "operation", "measured", "unit", "reference", "ratio"
    );
    println!("{}", "-".repeat(105));
    for r in rows {
        let v = if r.unit == "ms" { format!("{:.2}", r.value) } else { format!("{:.0}", r.value) };
        let (refv, ratio) = match r.reference {
            Some((x, label)) => (format!("{x:.0} {label}"), format!("{:.2}", r.value / x)),
            None => (String::new(), String::new()),
        };
        println!("{:<62} {:>12} {:>5} {:>12} {:>10}", r.what, v, r.unit, refv, ratio);
    }
    like.print();
    Ok(())
}

/// An order's gas and the storage slots it created.
#[derive(Clone, Copy)]
struct Counted {
    gas: u64,
    created: usize,
}

async fn counted(
    chain: &posthuman_chain::Chain,
    order: &posthuman_chain::orders::StartedOrder,
) -> Result<Counted, ChainError> {
    let created = chain.created_slots(order.tx_hash).await?.len();
    Ok(Counted { gas: order.gas_used, created })
}

/// The orders like for like: the root's first order is the baseline (114,656: its
/// datatoken's reentrancy guard was started by the exchange's creation, Ocean's collector's
/// balance of it is created); the derived model's first order is the first of a fresh
/// model (its vault seeded and guard started by `createChild`). Steady: the next orders,
/// which create nothing. Payer, consumer and the fee's receiver hold balances in every
/// order compared (none of their slots is created).
#[derive(Default)]
struct Like {
    root_first: Option<Counted>,
    root_steady: Option<Counted>,
    root_paid_steady: Option<Counted>,
    derived_first: Option<Counted>,
    derived_steady: Option<Counted>,
    /// A derived model's first order with 7 bytes of providerData instead of the binding.
    derived_first_short: Option<Counted>,
}

impl Like {
    fn print(&self) {
        let cell = |c: Option<Counted>| match c {
            Some(c) => format!(
                "{} ({} new slot{})",
                c.gas,
                c.created,
                if c.created == 1 { "" } else { "s" }
            ),
            None => "-".into(),
        };
        let ratio = |x: Option<Counted>, base: Option<Counted>| match (x, base) {
            (Some(x), Some(b)) => format!("{:.3}x", x.gas as f64 / b.gas as f64),
            _ => "-".into(),
        };
        println!();
        println!("{:<52} {:>22} {:>22}", "orders like for like (gas)", "first order", "steady");
        println!("{}", "-".repeat(98));
        println!(
            "{:<52} {:>22} {:>22}",
            "root, no fee (issue 13's baseline)",
            cell(self.root_first),
            cell(self.root_steady)
        );
        println!(
            "{:<52} {:>22} {:>22}",
            "root, 3 OCEAN compute fee + fee binding",
            "-",
            cell(self.root_paid_steady)
        );
        println!(
            "{:<52} {:>22} {:>22}",
            "derived, compute fee + binding + 1 OCEAN royalty",
            cell(self.derived_first),
            cell(self.derived_steady)
        );
        println!(
            "{:<52} {:>22} {:>22}",
            "ratio derived / root no fee (target <= 1.300x)",
            ratio(self.derived_first, self.root_first),
            ratio(self.derived_steady, self.root_steady)
        );
        println!(
            "{:<52} {:>22}",
            "derived, same with 7 bytes of providerData",
            cell(self.derived_first_short)
        );
        for (what, c) in [
            ("derived first order / 114,656 (the issue's figure)", self.derived_first),
            ("  with 7 bytes of providerData / 114,656", self.derived_first_short),
        ] {
            if let Some(d) = c {
                println!("{:<52} {:>22}", what, format!("{:.3}x", d.gas as f64 / 114_656.0));
            }
        }
    }
}
