//! The README's main command, in its tiny size: every step of the story runs for real
//! (anvil, Ocean v4, the lineage contract, the API over HTTP, the worker as processes), and
//! its summary is asserted — balances equal the scheme's amounts exactly, the lineage is
//! M1 → M2 → M3, every receipt verifies, and M3's perplexity beats M1's. The operator's
//! audit runs as its own binary (`posthuman-operator audit`) over the deployment it left.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns may unwrap too

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use alloy::primitives::U256;
use posthuman_chain::AddressBook;
use posthuman_cli::output::Out;
use posthuman_demo::{DemoFamily, DemoOptions, DemoSize, Sizes, play};
use posthuman_functions::queue::WorkerCommand;
use posthuman_functions::server::{ServerConfig, start};
use posthuman_operator::audit::audit_job;
use posthuman_receipts::{AuditPolicy, ReceiptDomain};
use posthuman_store::{LocalStore, ObjectStore};
use posthuman_types::JobSpec;

/// A binary cargo built for this workspace (`cargo test --workspace` builds the binaries of
/// every crate with integration tests, the worker's and the operator's among them).
fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir =
        exe.parent().and_then(|d| d.parent()).expect("target/PROFILE/deps").to_path_buf();
    let program = profile_dir.join(name);
    assert!(
        program.is_file(),
        "{} is missing: run `cargo build -p posthuman-worker -p posthuman-operator` \
         (scripts/test.sh builds them)",
        program.display()
    );
    program
}

fn worker() -> WorkerCommand {
    WorkerCommand { program: built("posthuman-worker"), args: vec![] }
}

/// `posthuman-operator audit JOB --json` over the operator's data dir, the chain found through
/// the API at `api`.
async fn operator_audit(op: &Path, job: &str, api: &str) -> Output {
    let mut cmd = Command::new(built("posthuman-operator"));
    cmd.args(["audit", job, "--json", "--api", api, "--data-dir"]).arg(op);
    cmd.env_remove("POSTHUMAN_RPC");
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn wikitext() -> PathBuf {
    manifest_dir().join("../data/wikitext-2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        data_dir: Some(dir.path().join("demo")),
        sizes: Sizes::of(DemoSize::Tiny),
        wikitext: wikitext(),
        worker: worker(),
        lora_rank: None,
        family: DemoFamily::Gpt2,
    };
    let s = play(&Out::quiet(), &opts).await.unwrap();
    println!("{}", s.render());
    s.check().unwrap();

    // The checks above, spelled out where a regression would hide.
    let [m1, m2, m3] = &s.lineage[..] else { panic!("three models") };
    assert_eq!(m3.lineage, vec![m2.nft.clone(), m1.nft.clone()]);
    assert!(m3.perplexity < m1.perplexity, "{} vs {}", m3.perplexity, m1.perplexity);
    // In hundredths of a datatoken.
    let cents = |n: u64| U256::from(n) * U256::from(10u64).pow(U256::from(16u64));
    let get = |who: &str, sym: &str| {
        let a = s.accounts.iter().find(|a| a.name == who).unwrap();
        a.held.get(sym).copied().unwrap_or_default()
    };
    // Scheme 50/25/12.5/6.25 % of 100 per derivation, remainder to Alice (the root owner);
    // each order pays its spent datatoken, less Ocean's 0.03 community fee, to the model's
    // payment collector (its trainer, or its publisher for M1).
    // M2: Bob 50 − 2 sold (Charlie, Elena) + 2 × 0.97 from their orders; Alice 50.
    assert_eq!(get("bob", "M2"), cents(4994));
    assert_eq!(get("alice", "M2"), cents(5000));
    // M3: Charlie 50 − 2 sold (Derek, Elena) + 2 × 0.97; Bob 25; Alice 25.
    assert_eq!(get("charlie", "M3"), cents(4994));
    assert_eq!(get("bob", "M3"), cents(2500));
    assert_eq!(get("alice", "M3"), cents(2500));
    // M1: Bob's and Elena's orders pay Alice 2 × 0.97.
    assert_eq!(get("alice", "M1"), cents(194));
    // Every datatoken bought for a job was spent by its order.
    for who in ["derek", "elena"] {
        for sym in ["M1", "M2", "M3"] {
            assert_eq!(get(who, sym), U256::ZERO, "{who} {sym}");
        }
    }
    assert!(s.jobs.iter().all(|j| j.verified), "{:?}", s.jobs);
    // Each buyer proves, with the salt they kept, which dataset or prompts their job ran on
    // (the public receipts name them only salted).
    assert!(s.jobs.iter().all(|j| j.data_bound), "{:?}", s.jobs);
    // Lineage royalties, 0.5 OCEAN per order of a derived model: M2's two orders (Charlie's
    // training, Elena's evaluation) pay its only ancestor's owner, Alice; M3's two (Derek's
    // inference, Elena's evaluation) pay Bob (M2's trainer, 50%) and Alice the rest.
    let paid = |model: &str, to: &str| {
        s.royalties
            .iter()
            .filter(|r| r.model == model && r.to == to)
            .map(|r| r.amount)
            .sum::<U256>()
    };
    let half = cents(50);
    assert_eq!(paid("M2", "alice"), half + half);
    assert_eq!(paid("M3", "bob"), half);
    assert_eq!(paid("M3", "alice"), half);
    assert_eq!(paid("M3", "charlie"), U256::ZERO, "a model's own trainer is no ancestor");
    assert!(s.audits.iter().all(|a| a.passed && a.segments >= 1), "{:?}", s.audits);

    // The operator's tool audits the same job over the deployment the demo left, the server
    // serving it again (anvil reloads the saved chain), as an operator runs it.
    let op = dir.path().join("demo/operator");
    let job = &s.audits[0].job_id;
    let emb = start(&ServerConfig::new(&op, worker().program)).await.unwrap();
    let app = posthuman_functions::api::router(emb.deps.clone(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let o = operator_audit(&op, job, &api).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["job_id"], job.as_str());
    assert!(!rep["results"].as_array().unwrap().is_empty(), "{rep}");

    // The audit is real: swap the weights of the checkpoint the final segment starts from
    // (an operator covering up skipped or different training) and it no longer passes.
    let book = AddressBook::load(&op.join("chain/address-book.json")).unwrap();
    let store = LocalStore::new(op.join("store")).unwrap();
    let spec: JobSpec = serde_json::from_slice(
        &store.get(&posthuman_functions::queue::spec_key(job), 1 << 20).await.unwrap(),
    )
    .unwrap();
    let mut ckpts: Vec<String> = store
        .list(&format!("{}/checkpoints", spec.private_prefix))
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.ends_with("/model.safetensors"))
        .collect();
    ckpts.sort();
    // The last stored checkpoint starts the final segment, which every audit re-runs (the
    // final checkpoint itself is committed, not stored).
    let Some(last_stored) = ckpts.last() else { panic!("no stored checkpoint") };
    let parent = store.get(&format!("{}/model.safetensors", spec.model_prefix), u64::MAX).await;
    store.put(last_stored, parent.unwrap()).await.unwrap();
    let domain = ReceiptDomain::new(book.chain_id, book.lineage);
    let rep =
        audit_job(&store, job, book.operator, &domain, &AuditPolicy::default()).await.unwrap();
    assert!(!rep.passed(), "a tampered checkpoint must fail the audit: {rep:?}");
    let o = operator_audit(&op, job, &api).await;
    assert_eq!(o.status.code(), Some(7), "a failed audit exits 7");
    assert!(String::from_utf8_lossy(&o.stderr).contains("did not reproduce"));
    emb.queue.shutdown().await;
    emb.anvil.stop();
    assert_eq!(s.jobs.len(), 6, "2 train, 1 infer, 3 evaluate");
    assert!(!s.generated.trim().is_empty());
}

/// Issue 16: the same story with M2 and M3 as LoRA derivations (M3 = M1 + Bob's adapter +
/// Charlie's adapter): it adds up the same way, each derived card names its adapter, and the
/// operator's audit replays a LoRA segment (adapter checkpoints) and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lora_story_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        data_dir: Some(dir.path().join("demo")),
        sizes: Sizes::of(DemoSize::Tiny),
        wikitext: wikitext(),
        worker: worker(),
        lora_rank: Some(4),
        family: DemoFamily::Gpt2,
    };
    let s = play(&Out::quiet(), &opts).await.unwrap();
    println!("{}", s.render());
    s.check().unwrap();
    let [m1, m2, m3] = &s.lineage[..] else { panic!("three models") };
    assert!(m1.adapter.is_none());
    for m in [m2, m3] {
        assert!(m.adapter.is_some(), "{}", m.label);
        assert!(m.derivation.starts_with("LoRA r 4 (c_attn, c_fc) over "), "{}", m.derivation);
    }
    assert!(!s.audits.is_empty() && s.audits.iter().all(|a| a.passed), "{:?}", s.audits);
}

/// Issue 15/16: the story on a Llama-family base (RoPE, RMSNorm, GQA, tied embeddings) with M2
/// and M3 as LoRA derivations on attention and MLP projections: balances, royalties, receipts,
/// the audit and M3 beating M1 all hold as for GPT-2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llama_lora_story_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        data_dir: Some(dir.path().join("demo")),
        sizes: Sizes::of(DemoSize::Tiny),
        wikitext: wikitext(),
        worker: worker(),
        lora_rank: Some(4),
        family: DemoFamily::Llama,
    };
    let s = play(&Out::quiet(), &opts).await.unwrap();
    println!("{}", s.render());
    s.check().unwrap();
    let [_, m2, m3] = &s.lineage[..] else { panic!("three models") };
    for m in [m2, m3] {
        assert!(
            m.derivation.starts_with("LoRA r 4 (q_proj, v_proj, up_proj, down_proj)"),
            "{}",
            m.derivation
        );
    }
    assert!(!s.audits.is_empty() && s.audits.iter().all(|a| a.passed), "{:?}", s.audits);
}

/// The package's directory as cargo hands it to the running test, not the one compiled in:
/// a build cache shared by two checkouts can run a test binary built in the other one.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from)
}
