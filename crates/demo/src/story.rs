//! The story, step by step, with wall-clock timings per phase.

use std::collections::BTreeMap;
use std::time::Instant;

use alloy::primitives::{Address, U256};
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use posthuman_functions::handlers::jobs::JobResult;
use posthuman_functions::handlers::views::{JobStateView, ModelView};
use posthuman_functions::server::{ServerConfig, start};
use posthuman_types::{
    EvalParams, InferParams, JobParams, RewardScheme, Sampling, TrainParams, job::Baseline,
};

use posthuman_cli::args::PublishArgs;
use posthuman_cli::client::ApiClient;
use posthuman_cli::commands::jobs::Consent;
use posthuman_cli::commands::{jobs, market, models, rewards, verify};
use posthuman_cli::error::CliError;
use posthuman_cli::output::Out;
use posthuman_cli::session::{self, Session};
use posthuman_cli::units;
use posthuman_operator::audit::{audit_job, operator_of_commitment};
use posthuman_types::pricing::Ocean;

use crate::summary::{Account, AuditLine, JobLine, ModelLine, RoyaltyLine, Summary};
use crate::{DemoFamily, DemoOptions, audit_err, base};

/// Reward per derivation (whole datatokens) and the geometric scheme's first share.
const REWARD_TOTAL: &str = "100";
const FIRST_BPS: u16 = 5000;
const DEPTH: usize = 4;
/// OCEAN every order of a model derived from M1 pays its ancestors (Derek's order of M3).
const ROYALTY: &str = "0.5";
/// The licence Alice publishes M1 under; M2 and M3 inherit it.
const DEMO_LICENSE: &str = "Apache-2.0";

/// Who holds how much of which model's datatoken, as the story's own bookkeeping; the
/// summary compares it with the chain.
#[derive(Default)]
struct Ledger(BTreeMap<(String, String), U256>);

impl Ledger {
    fn add(&mut self, who: &str, sym: &str, v: U256) {
        *self.0.entry((who.into(), sym.into())).or_default() += v;
    }
    fn sub(&mut self, who: &str, sym: &str, v: U256) {
        let e = self.0.entry((who.into(), sym.into())).or_default();
        *e = e.saturating_sub(v);
    }
}

struct Person {
    name: &'static str,
    s: Session,
}

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::Internal(e.to_string())
}

/// The demo's text, read once before anything starts: Alice's corpus, Bob's and Charlie's
/// datasets (consecutive slices of `valid.txt`) and Elena's evaluation text (`test.txt`).
struct Corpus {
    base: String,
    bob: String,
    charlie: String,
    test: Vec<u8>,
}

impl Corpus {
    /// Refuses (a usage error, naming the file and `--wikitext`) a missing or unreadable file,
    /// and one too short to give every slice text: the story would otherwise fail minutes in,
    /// after the chain is up, or with the API's refusal of an empty dataset.
    fn read(dir: &std::path::Path, z: &crate::Sizes) -> Result<Corpus, CliError> {
        let valid = read_file(&dir.join("valid.txt"), z.base_bytes + 2 * z.ft_bytes)?;
        let test = read_file(&dir.join("test.txt"), z.eval_bytes)?;
        Ok(Corpus {
            base: slice(&valid, z.base_bytes, 0),
            bob: slice(&valid, z.ft_bytes, z.base_bytes),
            charlie: slice(&valid, z.ft_bytes, z.base_bytes + z.ft_bytes),
            test: slice(&test, z.eval_bytes, 0).into_bytes(),
        })
    }
}

/// A UTF-8 text file of at least `need` bytes.
fn read_file(path: &std::path::Path, need: usize) -> Result<String, CliError> {
    let all = std::fs::read_to_string(path).map_err(|e| {
        CliError::Usage(format!("cannot read {} ({e}): pass --wikitext DIR", path.display()))
    })?;
    if all.len() < need {
        return Err(CliError::Usage(format!(
            "{} holds {} bytes; this demo size reads {need}: pass --wikitext DIR with WikiText-2",
            path.display(),
            all.len()
        )));
    }
    Ok(all)
}

/// `bytes` of `all` from `skip`, cut on line boundaries so every slice is whole sentences of
/// UTF-8.
fn slice(all: &str, bytes: usize, skip: usize) -> String {
    let start = all[..skip.min(all.len())].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let rest = &all[start..];
    let end = rest[..bytes.min(rest.len())].rfind('\n').map(|i| i + 1).unwrap_or(rest.len());
    rest[..end].to_string()
}

/// Runs the whole story and returns its summary (not yet checked).
pub async fn play(out: &Out, o: &DemoOptions) -> Result<Summary, CliError> {
    let z = &o.sizes;
    let mut timings: Vec<(String, f64)> = Vec::new();
    let mut lap = Instant::now();
    let mut mark = |name: &str, timings: &mut Vec<(String, f64)>| {
        timings.push((name.to_string(), lap.elapsed().as_secs_f64()));
        lap = Instant::now();
    };
    let tmp;
    let dir = match &o.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().map_err(err)?;
            tmp.path().to_path_buf()
        }
    };
    if dir.join("operator").exists() {
        return Err(CliError::Usage(format!(
            "{} is not fresh: pick an empty --data-dir",
            dir.display()
        )));
    }
    let Corpus { base: corpus, bob: bob_data, charlie: charlie_data, test } =
        Corpus::read(&o.wikitext, z)?;

    // 1. The embedded default.
    let sp = out.spinner("starting anvil, deploying Ocean v4 + ModelLineage, starting the API");
    let names = ["alice", "bob", "charlie", "derek", "elena"];
    let keys: Vec<PrivateKeySigner> =
        names.iter().map(|n| posthuman_chain::story::dev_wallet(n)).collect::<Result<_, _>>()?;
    let mut cfg = ServerConfig::new(dir.join("operator"), o.worker.program.clone());
    cfg.worker = o.worker.clone();
    cfg.api.publishers = vec![keys[0].address()];
    // Bound first: every model's DDO names this URL as its services' endpoint.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(err)?;
    let url = format!("http://{}", listener.local_addr().map_err(err)?);
    cfg.api.public_api_url = url.clone();
    let emb = start(&cfg).await.map_err(|e| CliError::Unavailable(e.to_string()))?;
    let app = posthuman_functions::api::router(emb.deps.clone(), None);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    let book = emb.deps.chain.book().clone();
    let operator = emb.deps.chain.clone();
    sp.finish_and_clear();
    mark("chain: anvil + deploy + API", &mut timings);

    // 2. Fund the five with ETH for gas and test OCEAN.
    let mut people = Vec::new();
    for (name, key) in names.iter().zip(keys) {
        operator
            .provider()
            .anvil_set_balance(key.address(), U256::from(10u128.pow(20)))
            .await
            .map_err(|e| CliError::Unavailable(e.to_string()))?;
        operator
            .transfer(
                operator.operator(),
                book.ocean,
                key.address(),
                units::parse("ocean", "1000")?,
            )
            .await?;
        let s = Session::connect(ApiClient::new(&url)?, &emb.rpc_url, book.clone(), key)?;
        people.push(Person { name, s });
    }
    let [alice, bob, charlie, derek, elena] = &people[..] else { return Err(err("five people")) };
    // Ocean's community fee on each order (datatoken units): `startOrder` pays the rest of
    // the spent datatoken to the model's payment collector — its trainer, or the publisher.
    let opc_fee = posthuman_chain::bindings::FactoryRouter::new(book.router, operator.provider())
        .getOPCConsumeFee()
        .call()
        .await
        .map_err(|e| CliError::Unavailable(format!("reading Ocean's order fee: {e}")))?;
    out.say(format!("API {url}, chain {} (chain id {})", emb.rpc_url, book.chain_id));
    mark("chain: funding 5 accounts", &mut timings);

    // 3. Alice's base model, trained on her machine, published as M1.
    out.say("Alice trains a tokenizer and a base GPT-2 on WikiText-2 (her own machine)");
    let (export, base_metrics) =
        base::train_base(out, &dir.join("alice"), &corpus, z, o.family).await?;
    out.say(format!(
        "Alice's base model: {} steps, loss {:.3}, {:.0} tok/s",
        base_metrics.steps, base_metrics.final_loss, base_metrics.tokens_per_sec
    ));
    mark("training: Alice's tokenizer + base model", &mut timings);
    let m1 = models::publish(
        &alice.s,
        out,
        &PublishArgs {
            dir: export,
            adapter: None,
            name: "Posthuman base".into(),
            symbol: "M1".into(),
            description: format!(
                "{} base model trained from scratch on WikiText-2 (demo)",
                match o.family {
                    DemoFamily::Gpt2 => "GPT-2",
                    DemoFamily::Llama => "Llama-family",
                }
            ),
            // Alice trained it from scratch: the terms are hers to choose, and every model
            // derived from M1 carries them.
            license: Some(DEMO_LICENSE.into()),
            price: "2".into(),
            reward_total: REWARD_TOTAL.into(),
            reward_first_bps: FIRST_BPS,
            reward_depth: DEPTH,
            royalty: ROYALTY.into(),
        },
    )
    .await?;
    out.say(format!(
        "Alice published M1 {} (weights {}, licence {})",
        m1.card.nft,
        m1.card.weights_hash.short(),
        m1.card.license_text()
    ));
    mark("publication: M1", &mut timings);

    let mut ledger = Ledger::default();
    let one = units::one();
    let order_pay = one - opc_fee;
    let scheme: RewardScheme = m1.card.reward_scheme.clone();
    let train_params = |seed: u64| {
        let mut p = TrainParams::new(z.ft_steps, z.ft_lr, z.batch, z.context as u32);
        p.warmup_steps = z.ft_steps / 10;
        // 20 segments, so the operator's audit (one segment, the final one) re-runs 5% of
        // the training: the default audit budget. Fewer, longer segments would cost more.
        p.checkpoint_every = (z.ft_steps / 20).max(1);
        p.seed = seed;
        if let Some(r) = o.lora_rank {
            let targets: &[&str] = match o.family {
                DemoFamily::Gpt2 => &["c_attn", "c_fc"],
                DemoFamily::Llama => &["q_proj", "v_proj", "up_proj", "down_proj"],
            };
            p.lora = Some(posthuman_types::LoraParams::new(r, targets));
            // Same learning rate as the full fine-tune: on the tiny demo's slices 3× and 10×
            // it (LoRA's usual advice) overshot, leaving M3 behind M1 on the test text.
        }
        JobParams::Train(p)
    };
    let mut job_lines = Vec::new();
    // Each buyer's input and salt, kept to prove the data binding at the end.
    let mut inputs: std::collections::HashMap<String, verify::Input> = Default::default();

    // 4. Bob buys an M1 datatoken and trains on his slice → M2.
    market::buy(&bob.s, market::exchange_of(&bob.s, &m1.card.nft).await?, one).await?;
    ledger.add("bob", "M1", one);
    let (r, fee, input) = train(bob, out, &m1, train_params(2), bob_data).await?;
    inputs.insert(r.job.job_id.clone(), input);
    ledger.sub("bob", "M1", one);
    ledger.add("alice", "M1", order_pay);
    let m2 = derived(&bob.s, &r).await?;
    reward(&mut ledger, &scheme, &[("bob", "M2")], "alice", "M2")?;
    job_lines.push(JobLine::of("bob", &r, fee));
    out.say(format!(
        "Bob's fine-tune published as M2 {} (weights {})",
        m2.card.nft,
        m2.card.weights_hash.short()
    ));
    mark("training: Bob → M2 (paid job, publication, rewards)", &mut timings);

    // 5. Bob offers M2 datatokens for sale; Charlie buys from him and trains → M3.
    let m2_dt: Address = session::address("datatoken", &m2.card.datatoken)?;
    let offer =
        market::sell(&bob.s, m2_dt, units::parse("price", "3")?, one * U256::from(5)).await?;
    let m2_offer: U256 = offer.offer_id.parse().map_err(err)?;
    market::buy_offer(&charlie.s, m2_offer, one, &market::Wanted { token: m2_dt, max_cost: None })
        .await?;
    ledger.sub("bob", "M2", one);
    ledger.add("charlie", "M2", one);
    let (r, fee, input) = train(charlie, out, &m2, train_params(3), charlie_data).await?;
    inputs.insert(r.job.job_id.clone(), input);
    ledger.sub("charlie", "M2", one);
    ledger.add("bob", "M2", order_pay);
    let m3 = derived(&charlie.s, &r).await?;
    reward(&mut ledger, &scheme, &[("charlie", "M3"), ("bob", "M3")], "alice", "M3")?;
    job_lines.push(JobLine::of("charlie", &r, fee));
    // A derivative stays under its root's licence, two steps down too.
    if m3.card.license != m1.card.license {
        return Err(err(format!(
            "M3 is under {}, not its root M1's {}",
            m3.card.license_text(),
            m1.card.license_text()
        )));
    }
    out.say(format!(
        "Charlie's fine-tune published as M3 {} (weights {}, licence {} from M1)",
        m3.card.nft,
        m3.card.weights_hash.short(),
        m3.card.license_text()
    ));
    mark("training: Charlie → M3 (paid job, publication, rewards)", &mut timings);

    // Charlie offers M3 for sale: Derek and Elena buy from him.
    let m3_dt: Address = session::address("datatoken", &m3.card.datatoken)?;
    let offer =
        market::sell(&charlie.s, m3_dt, units::parse("price", "4")?, one * U256::from(5)).await?;
    let m3_offer: U256 = offer.offer_id.parse().map_err(err)?;

    // 6. Derek: inference on M3.
    market::buy_offer(&derek.s, m3_offer, one, &market::Wanted { token: m3_dt, max_cost: None })
        .await?;
    ledger.sub("charlie", "M3", one);
    let prompts = vec!["The history of the".to_string()];
    let params = JobParams::Infer(InferParams {
        prompts: prompts.clone(),
        max_new_tokens: z.infer_tokens,
        sampling: Sampling { temperature: 0.0, top_k: None, top_p: None, seed: 0 },
        stop: vec![],
        messages: vec![],
    });
    let (id, q, salt) =
        jobs::order_and_submit(&derek.s, out, &m3.card.nft, params, None, Consent::Given).await?;
    inputs.insert(id.clone(), verify::Input::Prompts { salt, prompts });
    let r = finished(jobs::follow(&derek.s, out, &id).await?)?;
    ledger.add("charlie", "M3", order_pay);
    job_lines.push(JobLine::of("derek", &r, q.breakdown.total));
    let generated = r
        .completions
        .as_ref()
        .and_then(|c| c.get(0))
        .map(|c| {
            format!("{}{}", c["prompt"].as_str().unwrap_or(""), c["text"].as_str().unwrap_or(""))
        })
        .unwrap_or_default();
    mark("inference: Derek on M3", &mut timings);

    // 7. Elena: perplexity of M1, M2 and M3 on WikiText-2 test text; M1 is the baseline.
    market::buy(&elena.s, market::exchange_of(&elena.s, &m1.card.nft).await?, one).await?;
    market::buy_offer(&elena.s, m2_offer, one, &market::Wanted { token: m2_dt, max_cost: None })
        .await?;
    ledger.sub("bob", "M2", one);
    market::buy_offer(&elena.s, m3_offer, one, &market::Wanted { token: m3_dt, max_cost: None })
        .await?;
    ledger.sub("charlie", "M3", one);
    let mut ppl = Vec::new();
    let mut baseline: Option<Baseline> = None;
    for (m, collector, label) in [(&m1, "alice", "M1"), (&m2, "bob", "M2"), (&m3, "charlie", "M3")]
    {
        let p = JobParams::Evaluate(EvalParams {
            context_len: z.context as u32,
            stride: (z.context / 2) as u32,
            max_tokens: z.eval_tokens,
            baseline: baseline.clone(),
        });
        let data = Some(test.clone());
        let (id, q, salt) =
            jobs::order_and_submit(&elena.s, out, &m.card.nft, p, data, Consent::Given).await?;
        inputs.insert(id.clone(), verify::Input::Dataset { salt, bytes: test.clone() });
        let r = finished(jobs::follow(&elena.s, out, &id).await?)?;
        ledger.add(collector, label, order_pay);
        let v = r
            .report
            .as_ref()
            .and_then(|rep| rep["perplexity"].as_f64())
            .ok_or_else(|| err("no perplexity"))?;
        if baseline.is_none() {
            baseline = Some(Baseline {
                label: format!("M1 {}", m1.card.weights_hash.short()),
                perplexity: v,
            });
        }
        ppl.push(v);
        job_lines.push(JobLine::of("elena", &r, q.breakdown.total));
    }
    let listed = elena.s.api.jobs_of(&elena.s.me().to_string()).await?;
    if listed.len() != 3 {
        return Err(err(format!("Elena's job list has {} jobs, not her 3", listed.len())));
    }
    mark("evaluation: Elena on M1, M2, M3", &mut timings);

    // Lineage royalties: each order of M2 (Charlie's training, Elena's evaluation) and of M3
    // (Derek's inference, Elena's evaluation) paid Alice's royalty into the model's vault.
    // Anyone may pay a vault out; Derek does, and every wei is checked against the scheme.
    let labels = [
        (session::address("nft", &m1.card.nft)?, "M1"),
        (session::address("nft", &m2.card.nft)?, "M2"),
        (session::address("nft", &m3.card.nft)?, "M3"),
    ];
    let mut royalties = Vec::new();
    for (i, depth) in [(1usize, 1usize), (2, 2)] {
        let paid = distribute_royalties(&derek.s, &people, labels[i], depth, 2, &scheme, &labels);
        royalties.extend(paid.await?);
    }
    for r in &royalties {
        out.say(format!(
            "royalty from orders of {}: {} OCEAN to {} ({})",
            r.model,
            units::show(r.amount),
            r.to,
            r.why
        ));
    }
    mark("royalties: M2 and M3 vaults paid to their ancestors", &mut timings);

    // 8. Verify every receipt publicly, gather balances and rewards.
    for j in &mut job_lines {
        let who = people.iter().find(|p| p.name == j.buyer).ok_or_else(|| err("buyer"))?;
        // Each buyer kept the salt and the input: the data binding is checked too.
        let rep = verify::verify_input(&who.s, &j.job_id, inputs.get(&j.job_id)).await?;
        j.data_bound = rep.data_binding == Some(true);
        j.verified = rep.passed;
        j.verification = rep.failures;
        j.lineage_links = rep.lineage.len();
        j.attested = rep.attested;
        j.evaluation_bound = rep.evaluation.as_ref().is_some_and(|e| e.passed());
    }
    let mut models_now: Vec<ModelView> = Vec::new();
    for m in [&m1, &m2, &m3] {
        models_now.push(alice.s.api.model(&m.card.nft).await?);
    }
    let lineage = ["M1", "M2", "M3"]
        .iter()
        .zip(&models_now)
        .zip(ppl)
        .map(|((label, m), p)| ModelLine::of(label, m, p))
        .collect();
    let mut accounts = Vec::new();
    for p in &people {
        let mut held = BTreeMap::new();
        for (label, m) in ["M1", "M2", "M3"].iter().zip(&models_now) {
            let dt = session::address("datatoken", &m.card.datatoken)?;
            held.insert(label.to_string(), p.s.chain.balance_of(dt, p.s.me()).await?);
        }
        let expected = ["M1", "M2", "M3"]
            .iter()
            .map(|sym| {
                (
                    sym.to_string(),
                    ledger
                        .0
                        .get(&(p.name.to_string(), sym.to_string()))
                        .copied()
                        .unwrap_or_default(),
                )
            })
            .collect();
        accounts.push(Account {
            name: p.name.to_string(),
            address: p.s.me().to_string(),
            ocean: p.s.chain.balance_of(book.ocean, p.s.me()).await?,
            held,
            expected,
            rewards: rewards::rewards(&p.s).await?,
        });
    }
    mark("verification: receipts, balances", &mut timings);

    // The operator audits both training jobs from its private store (proof of learning).
    let store = posthuman_store::LocalStore::new(dir.join("operator/store")).map_err(err)?;
    let domain = posthuman_receipts::ReceiptDomain::new(book.chain_id, book.lineage);
    let policy = posthuman_receipts::AuditPolicy::default();
    let mut audits = Vec::new();
    for j in job_lines.iter().filter(|j| j.kind == "train") {
        let operator =
            operator_of_commitment(&emb.deps.chain, &j.job_id).await.map_err(audit_err)?;
        let rep =
            audit_job(&store, &j.job_id, operator, &domain, &policy).await.map_err(audit_err)?;
        audits.push(AuditLine {
            trainer: j.buyer.clone(),
            job_id: j.job_id.clone(),
            passed: rep.passed(),
            segments: rep.results.len(),
            audit_steps: rep.audit_steps,
            total_steps: rep.total_steps,
            cost_ratio: rep.cost_ratio,
        });
    }
    mark("audit: re-running sampled training segments", &mut timings);

    let _ = stop_tx.send(());
    let _ = server.await;
    emb.queue.shutdown().await;
    emb.anvil.stop();
    Ok(Summary { lineage, royalties, accounts, generated, jobs: job_lines, audits, timings })
}

/// Pays out the vault of derived model `(nft, label)` at `depth` after `orders` orders, as
/// `payer`, and checks it to the wei: it held exactly `orders` royalties (besides the seed it
/// keeps), and each ancestor got what `RewardScheme::royalty_split` says (nothing else left
/// behind).
async fn distribute_royalties(
    payer: &Session,
    people: &[Person],
    (nft, label): (Address, &str),
    depth: usize,
    orders: u128,
    scheme: &RewardScheme,
    labels: &[(Address, &str)],
) -> Result<Vec<RoyaltyLine>, CliError> {
    let terms = payer.chain.royalty_terms(nft).await?.ok_or_else(|| err("no royalty vault"))?;
    // What `distribute()` pays: the vault's balance but the seed `createChild` put there.
    let held = payer.chain.royalty_pending(nft).await?.ok_or_else(|| err("no royalty vault"))?;
    let each = scheme.royalty().map_err(err)?;
    if held != U256::from(each * orders) || terms.amount != U256::from(each) {
        return Err(err(format!(
            "{label}'s vault holds {held}, not {orders} orders × {each} OCEAN of royalty"
        )));
    }
    let paid = payer.chain.distribute_royalty(payer.me(), nft).await?;
    let (shares, to_root) = scheme.royalty_split(depth, held.to::<u128>()).map_err(err)?;
    let line = payer.chain.lineage(nft).await?; // the model first, its root last
    let mut expected: Vec<(Address, Address, u128)> = shares
        .iter()
        .enumerate()
        .filter_map(|(i, a)| line.get(i + 1).map(|m| (m.nft, m.trainer, *a)))
        .collect();
    let root = line.last().ok_or_else(|| err("empty lineage"))?;
    expected.push((root.nft, root.trainer, to_root));
    expected.retain(|(_, _, a)| *a > 0);
    let got: Vec<(Address, Address, u128)> =
        paid.iter().map(|p| (p.ancestor, p.beneficiary, p.amount.to::<u128>())).collect();
    if got != expected {
        return Err(err(format!("{label}'s royalty paid {got:?}, the scheme says {expected:?}")));
    }
    let name_of = |a: Address| people.iter().find(|p| p.s.me() == a).map_or("?", |p| p.name);
    let label_of = |a: Address| labels.iter().find(|(n, _)| *n == a).map_or("?", |(_, l)| *l);
    Ok(paid
        .iter()
        .map(|p| RoyaltyLine {
            model: label.to_string(),
            to: name_of(p.beneficiary).to_string(),
            why: if p.ancestor == root.nft {
                format!("{}'s owner: remainder", label_of(p.ancestor))
            } else {
                format!("{}'s trainer", label_of(p.ancestor))
            },
            amount: p.amount,
        })
        .collect())
}

/// Orders and follows a train job for `p` on `model` with `data`; fails unless it succeeded
/// and its derived model was published. Returns the result and the compute fee paid.
async fn train(
    p: &Person,
    out: &Out,
    model: &ModelView,
    params: JobParams,
    data: String,
) -> Result<(JobResult, Ocean, verify::Input), CliError> {
    let bytes = data.into_bytes();
    let (id, q, salt) = jobs::order_and_submit(
        &p.s,
        out,
        &model.card.nft,
        params,
        Some(bytes.clone()),
        Consent::Given,
    )
    .await?;
    let r = finished(jobs::follow(&p.s, out, &id).await?)?;
    Ok((r, q.breakdown.total, verify::Input::Dataset { salt, bytes }))
}

fn finished(r: JobResult) -> Result<JobResult, CliError> {
    match &r.job.state {
        JobStateView::Succeeded => Ok(r),
        JobStateView::Failed { reason, .. } => Err(CliError::JobFailed(reason.clone())),
        other => Err(err(format!("job {} ended in state {other:?}", r.job.job_id))),
    }
}

async fn derived(s: &Session, r: &JobResult) -> Result<ModelView, CliError> {
    let d = r.job.derived_model.as_ref().ok_or_else(|| err("train job without a derived model"))?;
    s.api.model(&d.nft).await
}

/// Books the scheme's split of one derivation: `trainers` most recent first, remainder to
/// the root owner.
fn reward(
    ledger: &mut Ledger,
    scheme: &RewardScheme,
    trainers: &[(&str, &str)],
    root_owner: &str,
    sym: &str,
) -> Result<(), CliError> {
    let (paid, rest) = scheme.split(trainers.len()).map_err(err)?;
    for ((who, s), amount) in trainers.iter().zip(paid) {
        ledger.add(who, s, U256::from(amount));
    }
    ledger.add(root_owner, sym, U256::from(rest));
    Ok(())
}
