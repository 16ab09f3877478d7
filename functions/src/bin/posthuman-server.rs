//! `posthuman-server`: the whole product on one machine (see `posthuman_functions::server`).

use std::path::PathBuf;

use clap::Parser;
use posthuman_functions::server::{ServerConfig, serve};

#[derive(Parser, Debug)]
#[command(
    name = "posthuman-server",
    version,
    about = "Posthuman embedded server: API, local queue, anvil, store"
)]
struct Args {
    /// Data directory (chain state, keys, store, catalogue, queue).
    #[arg(long, env = "POSTHUMAN_DATA_DIR", default_value = ".posthuman")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "POSTHUMAN_LISTEN", default_value = posthuman_types::DEFAULT_API_LISTEN)]
    listen: String,
    /// The batch worker binary.
    #[arg(long, env = "POSTHUMAN_WORKER", default_value = "posthuman-worker")]
    worker: PathBuf,
    /// The anvil binary (default: the npm-installed one, or $POSTHUMAN_ANVIL).
    #[arg(long)]
    anvil: Option<PathBuf>,
    /// The local chain's id for a new data dir (default 8996, Ocean's `development` network,
    /// which ocean.js knows); a data dir already deployed keeps its own.
    #[arg(long, env = "POSTHUMAN_CHAIN_ID")]
    chain_id: Option<u64>,
    /// Jobs running at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// The built SPA directory, served at / when present.
    #[arg(long, env = "POSTHUMAN_STATIC_DIR")]
    static_dir: Option<PathBuf>,
    /// The operator key file (created 0600 if absent; default <data-dir>/operator.key).
    #[arg(long, env = "POSTHUMAN_OPERATOR_KEY_FILE")]
    operator_key_file: Option<PathBuf>,
    /// The operator's published rates (a JSON file of `pricing::Rates`, as `GET /api/pricing`
    /// shows them); default: the demo rates, wall-clock limits at the CPU's rate.
    #[arg(long, env = "POSTHUMAN_RATES_FILE")]
    rates: Option<PathBuf>,
    /// Seconds a finished train job's checkpoints are kept for `posthuman-operator audit`
    /// before they are pruned (default 30 days; the AWS stack's S3 lifecycle rule uses the
    /// same window).
    #[arg(long, env = "POSTHUMAN_AUDIT_WINDOW_SECS", default_value_t = posthuman_functions::prune::DEFAULT_AUDIT_WINDOW_SECS)]
    audit_window_secs: u64,
    /// Confirmations an order needs before it pays for a job (default: 0 on the local anvil,
    /// which only this server mines; 3 on any other chain).
    #[arg(long, env = "POSTHUMAN_MIN_CONFIRMATIONS")]
    min_confirmations: Option<u64>,
    /// The API's public URL, written into every model's Ocean DDO as its services' endpoint
    /// (default: http://<the address listened on>).
    #[arg(long, env = "POSTHUMAN_PUBLIC_API_URL")]
    public_url: Option<String>,
    /// The largest dataset a job may take, in bytes: at most the default (64 MiB), which is
    /// the worker's own cap, so a lower operator limit is refused at quote time, not by the
    /// worker after payment.
    #[arg(long, env = "POSTHUMAN_MAX_DATASET_BYTES")]
    max_dataset_bytes: Option<u64>,
    /// An address allowed to publish models (repeat, or comma-separated in the variable);
    /// default: only the operator.
    #[arg(long = "publisher", env = "POSTHUMAN_PUBLISHERS", value_delimiter = ',')]
    publishers: Vec<alloy::primitives::Address>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let a = Args::parse();
    let mut cfg = ServerConfig::new(a.data_dir, a.worker);
    if let Some(p) = a.anvil {
        cfg.anvil.binary = p;
    }
    cfg.chain_id = a.chain_id;
    cfg.concurrency = a.concurrency;
    cfg.static_dir = a.static_dir;
    cfg.operator_key_file = a.operator_key_file;
    if let Some(path) = &a.rates {
        let rates: posthuman_types::pricing::Rates = serde_json::from_slice(&std::fs::read(path)?)?;
        rates.validate()?;
        cfg.api.rates = rates;
    }
    if let Some(n) = a.max_dataset_bytes {
        let cap = cfg.api.limits.max_dataset_bytes;
        anyhow::ensure!(
            (1..=cap).contains(&n),
            "--max-dataset-bytes {n}: between 1 and the worker's cap of {cap} bytes"
        );
        cfg.api.limits.max_dataset_bytes = n;
    }
    cfg.api.publishers = a.publishers;
    cfg.audit_window_secs = a.audit_window_secs;
    cfg.min_confirmations = a.min_confirmations;
    let listener = tokio::net::TcpListener::bind(&a.listen).await?;
    let local = listener.local_addr()?;
    cfg.api.public_api_url = a.public_url.unwrap_or_else(|| format!("http://{local}"));
    println!("posthuman-server listening on http://{}", listener.local_addr()?);
    serve(cfg, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
