//! The embedded default: the whole product on one machine behind one function, [`serve`].
//!
//! `serve(config, listener, shutdown)` (mini-redis style: the caller binds the listener, so
//! tests use port 0, and passes the shutdown signal) wires:
//! - anvil, spawned through the chain crate with its state persisted in the data dir; on the
//!   first start the operator account is funded and the Ocean stack plus the lineage contract
//!   are deployed, and the address book is written to the data dir (later starts reuse both);
//! - the operator key, created on first start in `<data>/operator.key` with mode 0600;
//! - the filesystem store (`<data>/store`), the SQLite catalogue (`<data>/catalogue.sqlite`)
//!   and the local job queue running the worker binary (`<data>/queue.sqlite`);
//! - the one axum router, plus the SPA's static files when a directory is configured.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy::primitives::U256;
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::{AddressBook, Anvil, AnvilConfig, Chain, deploy_stack};
use posthuman_store::{LocalStore, ObjectStore};

use crate::catalogue::SqliteCatalogue;
use crate::deps::{ApiConfig, Deps};
use crate::handlers::complete::on_job_done;
use crate::queue::{
    CompletionHook, DEFAULT_MAX_ATTEMPTS, DeliveryError, JobDone, LocalQueue, LocalQueueConfig,
    WorkerCommand,
};
use crate::sweep::SweepPolicy;

/// Everything the embedded server needs, resolved once by the binary.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Holds the chain state, address book, operator key, store, catalogue and queue.
    pub data_dir: PathBuf,
    /// How to run anvil (its `state` is set to `<data>/chain/anvil-state.json`; its
    /// `chain_id` is the data dir's own once it has a deployment, see [`start`]).
    pub anvil: AnvilConfig,
    /// The chain id asked for on the command line. A new data dir's chain gets it
    /// (default [`posthuman_chain::DEV_CHAIN_ID`]); a data dir already deployed keeps the id
    /// its contracts, receipts and signed requests are bound to, and a different one asked
    /// for is refused rather than silently ignored or half-applied.
    pub chain_id: Option<u64>,
    /// The worker program (and leading args); the queue appends `run --spec … --store …`.
    pub worker: WorkerCommand,
    /// Jobs running at once.
    pub concurrency: usize,
    /// The built SPA (`index.html` and assets), served at `/` when present.
    pub static_dir: Option<PathBuf>,
    /// The operator key file (default `<data>/operator.key`).
    pub operator_key_file: Option<PathBuf>,
    pub api: ApiConfig,
    /// Seconds a finished train job's checkpoints are kept for audits before they are pruned
    /// ([`crate::prune`]).
    pub audit_window_secs: u64,
    /// Confirmations an order needs before it pays for a job; `None`: the chain's default
    /// ([`posthuman_chain::default_min_confirmations`]: 0 on the local anvil, more elsewhere).
    pub min_confirmations: Option<u64>,
}

impl ServerConfig {
    /// Defaults for a data dir and a worker binary.
    pub fn new(data_dir: impl Into<PathBuf>, worker_program: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            anvil: AnvilConfig::default(),
            chain_id: None,
            worker: WorkerCommand { program: worker_program.into(), args: vec![] },
            concurrency: 1,
            static_dir: None,
            operator_key_file: None,
            api: ApiConfig::default(),
            audit_window_secs: crate::prune::DEFAULT_AUDIT_WINDOW_SECS,
            min_confirmations: None,
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data dir {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("operator key {path}: {reason}")]
    OperatorKey { path: String, reason: String },
    #[error("chain: {0}")]
    Chain(#[from] posthuman_chain::ChainError),
    #[error("store: {0}")]
    Store(#[from] posthuman_store::StoreError),
    #[error("catalogue: {0}")]
    Catalogue(#[from] crate::catalogue::CatalogueError),
    #[error("job queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error("http server: {0}")]
    Http(String),
    #[error(
        "chain id {asked} was asked for, but the data dir {path} holds a deployment on chain \
         {deployed} (its receipts and signed requests are bound to it): drop the setting, or \
         use another data dir"
    )]
    ChainIdMismatch { path: String, asked: u64, deployed: u64 },
}

fn data_err(path: &Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::DataDir { path: path.display().to_string(), reason: e.to_string() }
}

/// Loads the operator key, or creates it (mode 0600) on first start. Returns the key and
/// whether it was created.
pub fn load_or_create_operator_key(path: &Path) -> Result<(PrivateKeySigner, bool), ServerError> {
    let err = |e: &dyn std::fmt::Display| ServerError::OperatorKey {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| err(&e))?;
        let key = text.trim().parse::<PrivateKeySigner>().map_err(|e| err(&e))?;
        return Ok((key, false));
    }
    let key = PrivateKeySigner::random();
    let hex = format!("0x{}\n", alloy::hex::encode(key.to_bytes()));
    write_private(path, hex.as_bytes()).map_err(|e| err(&e))?;
    Ok((key, true))
}

/// Writes a file readable by its owner only, created with that mode (never world-readable,
/// not even for an instant) and renamed into place.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The running pieces of the embedded default, for callers (tests, benches) that want to
/// drive them directly.
pub struct Embedded {
    pub deps: Arc<Deps>,
    pub queue: LocalQueue,
    /// anvil's RPC endpoint.
    pub rpc_url: String,
    /// Keeps anvil alive; dropping it stops anvil and saves its state.
    pub anvil: Anvil,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").field("rpc_url", &self.rpc_url).finish_non_exhaustive()
    }
}

/// The chain id anvil runs with: the one the data dir's deployment was made on, if any (a
/// data dir made before the default moved from anvil's 31337 to Ocean's 8996 keeps 31337),
/// else the one asked for, else [`ServerConfig::anvil`]'s.
fn chain_id_for(cfg: &ServerConfig, book_path: &Path) -> Result<u64, ServerError> {
    let deployed = book_path.exists().then(|| AddressBook::load(book_path)).transpose()?;
    match (deployed, cfg.chain_id) {
        (Some(book), Some(asked)) if asked != book.chain_id => Err(ServerError::ChainIdMismatch {
            path: cfg.data_dir.display().to_string(),
            asked,
            deployed: book.chain_id,
        }),
        (Some(book), _) => Ok(book.chain_id),
        (None, asked) => Ok(asked.unwrap_or(cfg.anvil.chain_id)),
    }
}

/// Starts anvil, deploys on first start, opens the store, catalogue and queue.
pub async fn start(cfg: &ServerConfig) -> Result<Embedded, ServerError> {
    let d = &cfg.data_dir;
    // Refuse a bad setting before anything is started or deployed.
    let configured_confirmations =
        cfg.min_confirmations.map(posthuman_chain::validate_min_confirmations).transpose()?;
    for sub in ["chain", "store", "queue"] {
        std::fs::create_dir_all(d.join(sub)).map_err(|e| data_err(&d.join(sub), e))?;
    }
    let key_file = cfg.operator_key_file.clone().unwrap_or_else(|| d.join("operator.key"));
    let (operator, _) = load_or_create_operator_key(&key_file)?;
    let mut anvil_cfg = cfg.anvil.clone();
    anvil_cfg.state = Some(d.join("chain/anvil-state.json"));
    let book_path = d.join("chain/address-book.json");
    anvil_cfg.chain_id = chain_id_for(cfg, &book_path)?;
    let anvil = Anvil::start(&anvil_cfg)?;
    let rpc_url = anvil.endpoint();
    let book = match AddressBook::load(&book_path) {
        // A book whose contracts are not on the chain (anvil crashed before its state was
        // saved) is stale: deploy again.
        Ok(book) if deployed(&rpc_url, &operator, &book).await? => book,
        _ => {
            // First start: fund the operator (a fresh random key) and deploy everything.
            let funder = Chain::connect(&rpc_url, operator.clone(), placeholder_book(&operator))?;
            let wei = U256::from(10u128.pow(24));
            funder
                .provider()
                .anvil_set_balance(operator.address(), wei)
                .await
                .map_err(posthuman_chain::ChainError::from)?;
            let (book, _) = deploy_stack(&rpc_url, &operator).await?;
            book.save(&book_path)?;
            book
        }
    };
    // Beside our book, the same deployment in Ocean's format, for Ocean's tools (ocean.js's
    // `ADDRESS_FILE`); rewritten at every start, so it never disagrees with the book.
    write_ocean_address_file(&book, &d.join("chain/ocean-address.json"))?;
    let min_confirmations = configured_confirmations
        .unwrap_or_else(|| posthuman_chain::default_min_confirmations(book.chain_id, &rpc_url));
    let mut chain = Chain::connect(&rpc_url, operator.clone(), book)?;
    chain.min_confirmations = min_confirmations;
    let chain = Arc::new(chain);
    let store_root = d.join("store");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(store_root.clone())?);
    let catalogue = Arc::new(SqliteCatalogue::open(&d.join("catalogue.sqlite"))?);
    let queue = LocalQueue::open(LocalQueueConfig {
        db_path: d.join("queue/queue.sqlite"),
        work_dir: d.join("queue"),
        store_root,
        worker: cfg.worker.clone(),
        concurrency: cfg.concurrency,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
    })?;
    // The server hosts its clients' direct uploads itself.
    let uploads = Arc::new(crate::uploads::LocalUploads::new(
        store.clone(),
        crate::uploads::local_secret(&operator),
        cfg.api.spool_dir(),
    ));
    let deps = Arc::new(Deps {
        store,
        uploads,
        queue: Arc::new(queue.clone()),
        catalogue,
        chain,
        operator,
        cfg: cfg.api.clone(),
        publishes: Arc::new(crate::publishes::LocalPublishes),
        ocean_dids: Default::default(),
    });
    queue.start(completion_hook(deps.clone())).await?;
    Ok(Embedded { deps, queue, rpc_url, anvil })
}

async fn deployed(
    rpc_url: &str,
    operator: &PrivateKeySigner,
    book: &AddressBook,
) -> Result<bool, ServerError> {
    use alloy::providers::Provider;
    let c = Chain::connect(rpc_url, operator.clone(), book.clone())?;
    let code =
        c.provider().get_code_at(book.lineage).await.map_err(posthuman_chain::ChainError::from)?;
    Ok(!code.is_empty())
}

fn placeholder_book(operator: &PrivateKeySigner) -> AddressBook {
    let z = alloy::primitives::Address::ZERO;
    AddressBook {
        chain_id: 0,
        operator: operator.address(),
        ocean: z,
        opf_collector: z,
        router: z,
        fixed_rate: z,
        dispenser: z,
        erc20_template: z,
        erc721_template: z,
        factory: z,
        lineage: z,
        market: z,
        deployed_at_block: 0,
    }
}

/// The local twin of EventBridge → on-job-done: one call of the completion handler. Its
/// error says whether to deliver again ([`DeliveryError`]); the queue retries with backoff
/// for as long as it takes and acknowledges only a completion that landed.
pub fn completion_hook(deps: Arc<Deps>) -> CompletionHook {
    Arc::new(move |done: JobDone| {
        let deps = deps.clone();
        Box::pin(async move { on_job_done(&deps, &done).await.map_err(DeliveryError::from) })
    })
}

/// Serves the embedded default on `listener` until `shutdown` resolves, then stops the
/// queue (running jobs resume on the next start) and anvil (state saved).
pub async fn serve(
    cfg: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let embedded = start(&cfg).await?;
    let app =
        crate::api::router(embedded.deps.clone(), cfg.static_dir.as_deref().filter(|p| p.is_dir()));
    let addr = listener.local_addr().map_err(|e| ServerError::Http(e.to_string()))?;
    tracing::info!(%addr, rpc = %embedded.rpc_url, "posthuman embedded server listening");
    let pruner = crate::prune::spawn_periodic(embedded.deps.clone(), cfg.audit_window_secs);
    // Paid jobs a crash left between the order claim and the queue; the local queue delivers
    // its own completions until they land, so the sweep does not redeliver them.
    let sweeper = crate::sweep::spawn_periodic(embedded.deps.clone(), SweepPolicy::default());
    // Direct uploads never used: their staged files go once they expired.
    let upload_sweeper = crate::uploads::spawn_periodic(embedded.deps.clone());
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    upload_sweeper.abort();
    pruner.abort();
    sweeper.abort();
    embedded.queue.shutdown().await;
    embedded.anvil.stop();
    served.map_err(|e| ServerError::Http(e.to_string()))
}

/// Writes `book` as Ocean's `address.json` to `path` (temp file + rename).
fn write_ocean_address_file(book: &AddressBook, path: &Path) -> Result<(), ServerError> {
    let text =
        serde_json::to_string_pretty(&book.ocean_address_file()).map_err(|e| data_err(path, e))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(|e| data_err(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| data_err(path, e))
}
