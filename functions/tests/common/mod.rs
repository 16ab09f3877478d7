//! Helpers shared by the integration tests: specs, twins (moto/LocalStack) discovery.
#![allow(dead_code)]

use posthuman_types::{InferParams, JobParams, JobSpec, Sampling};

/// Small valid infer parameters: one short prompt, four new tokens.
pub fn infer_params() -> JobParams {
    JobParams::Infer(InferParams {
        prompts: vec!["hello".into()],
        max_new_tokens: 4,
        sampling: Sampling::default(),
        stop: vec![],
        messages: vec![],
    })
}

/// A small valid infer spec (no dataset needed).
pub fn infer_spec(job_id: &str) -> JobSpec {
    JobSpec {
        job_id: job_id.to_string(),
        model_prefix: "models/m1".into(),
        dataset_key: None,
        private_prefix: format!("jobs/{job_id}/private"),
        public_prefix: format!("jobs/{job_id}/public"),
        params: infer_params(),
        budget: None,
        salt: None,
    }
}

/// The endpoint of a local AWS twin from `env_var`, or `None` after printing a loud SKIPPED
/// line — unless CI or POSTHUMAN_REQUIRE_TWINS=1 demands the twins, then it panics.
pub fn twin_endpoint(env_var: &str, test: &str) -> Option<String> {
    match std::env::var(env_var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let required = std::env::var("CI").is_ok()
                || std::env::var("POSTHUMAN_REQUIRE_TWINS").as_deref() == Ok("1");
            assert!(!required, "{test}: {env_var} is not set but the twins are required");
            eprintln!(
                "\n!!!!!!!! SKIPPED {test}: {env_var} is unset (run under localstack/twins.sh) !!!!!!!!\n"
            );
            None
        }
    }
}

/// A unique suffix per test run, for names in shared twins.
pub fn unique(tag: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{tag}-{:x}-{}", nanos, std::process::id())
}

// ------------------------------------------------ offline handler deps (no chain, no server)

/// The model every offline test's jobs run on.
pub const MODEL: &str = "0x00000000000000000000000000000000000000aa";

/// Handler deps over `dir` (SQLite catalogue, filesystem store, an unstarted local queue) with
/// a chain client pointed at a closed port: any chain call fails, which the offline paths
/// (completion failures, sweeps) must not make.
pub fn offline_deps(dir: &std::path::Path) -> posthuman_functions::deps::Deps {
    use std::sync::Arc;

    use alloy::signers::local::PrivateKeySigner;
    use posthuman_chain::{AddressBook, Chain};
    use posthuman_functions::catalogue::SqliteCatalogue;
    use posthuman_functions::deps::{ApiConfig, Deps};
    use posthuman_functions::queue::{LocalQueue, LocalQueueConfig, WorkerCommand};
    use posthuman_store::LocalStore;

    let operator = PrivateKeySigner::random();
    let z = "0x0000000000000000000000000000000000000000";
    let book: AddressBook = serde_json::from_value(serde_json::json!({
        "chain_id": 31337, "operator": operator.address(), "ocean": z, "opf_collector": z,
        "router": z, "fixed_rate": z, "dispenser": z, "erc20_template": z,
        "erc721_template": z, "factory": z, "lineage": z, "market": z, "deployed_at_block": 0
    }))
    .unwrap();
    // Port 9 (discard) is closed.
    let chain = Chain::connect("http://127.0.0.1:9", operator.clone(), book).unwrap();
    let store_root = dir.join("store");
    let queue = LocalQueue::open(LocalQueueConfig {
        db_path: dir.join("queue.sqlite"),
        work_dir: dir.join("queue"),
        store_root: store_root.clone(),
        worker: WorkerCommand { program: "/bin/false".into(), args: vec![] },
        concurrency: 1,
        max_attempts: 1,
    })
    .unwrap();
    let store: Arc<dyn posthuman_store::ObjectStore> =
        Arc::new(LocalStore::new(store_root).unwrap());
    Deps {
        uploads: Arc::new(posthuman_functions::uploads::LocalUploads::new(
            store.clone(),
            [7; 32],
            dir.to_path_buf(),
        )),
        store,
        queue: Arc::new(queue),
        catalogue: Arc::new(SqliteCatalogue::open(&dir.join("catalogue.sqlite")).unwrap()),
        chain: Arc::new(chain),
        operator,
        cfg: ApiConfig::default(),
        publishes: Arc::new(posthuman_functions::publishes::LocalPublishes),
        ocean_dids: Default::default(),
    }
}

/// The catalogue record of [`MODEL`].
pub fn model_record() -> posthuman_functions::catalogue::ModelRecord {
    use posthuman_types::{Hash32, ModelCard, RewardScheme};
    posthuman_functions::catalogue::ModelRecord {
        card: ModelCard {
            nft: MODEL.into(),
            datatoken: "0x00000000000000000000000000000000000000d1".into(),
            name: "m1".into(),
            symbol: "M1".into(),
            description: "a tiny model".into(),
            owner: "0x00000000000000000000000000000000000000a1".into(),
            weights_hash: Hash32([7; 32]),
            parent: None,
            trainer: None,
            architecture: "gpt2".into(),
            parameters: 1,
            exchange_id: None,
            price: None,
            reward_scheme: RewardScheme::geometric(1000, 5000, 3),
            lora: None,
            tags: vec![],
            license: None,
        },
        storage_prefix: "models/m1".into(),
        created_at: 1,
        source_job: None,
        receipt_hash: None,
        n_positions: 64,
        featured: vec![],
        card_updated_at: None,
        ddo_pending: false,
    }
}

/// A record as `submit` leaves it, last written at `updated_at`, holding its own order (the
/// ledger key is `<tx>-<log index>`), stored in `deps`' catalogue.
pub async fn seeded_job(
    deps: &posthuman_functions::deps::Deps,
    id: &str,
    n: u8,
    phase: posthuman_functions::catalogue::JobPhase,
    updated_at: u64,
) -> posthuman_functions::catalogue::JobRecord {
    use posthuman_functions::catalogue::{JobPhase, JobRecord, OrderClaim};
    use posthuman_types::JobKind;

    let job = JobRecord {
        job_id: id.to_string(),
        kind: JobKind::Infer,
        model: MODEL.into(),
        consumer: "0x00000000000000000000000000000000000000b0".into(),
        order_tx: format!("0x{}", format!("{n:02x}").repeat(32)),
        order_log_index: 0,
        spec: infer_spec(id),
        queue_ref: match phase {
            JobPhase::Queued => Some(id.to_string()),
            _ => None,
        },
        phase,
        created_at: updated_at,
        updated_at,
        completion: Default::default(),
        order_released: false,
        receipt_hash: None,
        perplexity: None,
        input_data_hash: None,
    };
    let key = format!("{}-0", job.order_tx);
    assert_eq!(deps.catalogue.claim_order(&key, id).await.unwrap(), OrderClaim::Claimed);
    deps.catalogue.put_job(&job).await.unwrap();
    job
}
