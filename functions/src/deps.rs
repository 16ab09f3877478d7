//! What every handler borrows: the backends behind their traits, the chain client, the
//! operator's signer and the typed API configuration.

use std::sync::Arc;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::Chain;
use posthuman_store::ObjectStore;
use posthuman_types::JobKind;

use crate::catalogue::Catalogue;
use crate::queue::JobQueue;

/// Size caps, each enforced while reading (nothing over a cap is buffered or spooled).
#[derive(Clone, Debug)]
pub struct Limits {
    /// `model.safetensors` on publish.
    pub max_weights_bytes: u64,
    /// `config.json` on publish.
    pub max_config_bytes: u64,
    /// `tokenizer.json` on publish.
    pub max_tokenizer_bytes: u64,
    /// A buyer's dataset on submit.
    pub max_dataset_bytes: u64,
    /// The signed JSON part of a request (prompts included).
    pub max_request_bytes: u64,
    /// Uploads (publish, submit) handled at once; more get a 503 at once rather than a
    /// queue slot, so a flood cannot hold memory or starve other routes.
    pub max_concurrent_uploads: usize,
    /// The longest an upload's body may take to arrive (slow senders are cut off).
    pub upload_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_weights_bytes: 1 << 30,
            max_config_bytes: 64 << 10,
            max_tokenizer_bytes: 32 << 20,
            max_dataset_bytes: 64 << 20,
            max_request_bytes: 2 << 20,
            max_concurrent_uploads: 8,
            upload_timeout_secs: 300,
        }
    }
}

impl Limits {
    /// The whole-body cap the router enforces (every part at its cap, plus framing).
    pub fn max_body_bytes(&self) -> usize {
        let sum = self.max_weights_bytes
            + self.max_config_bytes
            + self.max_tokenizer_bytes
            + self.max_dataset_bytes
            + self.max_request_bytes
            + posthuman_gpt2::chat_config::MAX_TOKENIZER_CONFIG_BYTES
            + posthuman_gpt2::chat_config::MAX_GENERATION_CONFIG_BYTES
            + posthuman_gpt2::chat_config::MAX_CHAT_TEMPLATE_BYTES as u64;
        usize::try_from(sum + (64 << 10)).unwrap_or(usize::MAX)
    }
}

/// API behaviour that is configuration, not code.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub limits: Limits,
    /// How long a quoted provider fee stays valid.
    pub fee_validity_secs: u64,
    /// Addresses allowed to publish root models (publication spends operator gas and puts
    /// weights in the operator's custody). Empty: only the operator.
    pub publishers: Vec<Address>,
    /// The worker build named in receipts.
    pub worker_version: String,
    /// The RPC endpoint clients are told to use (`GET /api/chain`); `None` advertises the
    /// operator's own endpoint, which is right for the embedded default but not for a
    /// provider URL carrying an API key.
    pub public_rpc_url: Option<String>,
    /// The operator's published rates: every quote's provider fee and budget
    /// (`GET /api/pricing`).
    pub rates: posthuman_types::pricing::Rates,
    /// Where file parts of uploads are spooled while they arrive and are checked
    /// ([`crate::spool`]); `None`: the system temp dir. Needs room for
    /// `max_concurrent_uploads` uploads at their caps.
    pub spool_dir: Option<std::path::PathBuf>,
    /// The API's public URL: every model's Ocean DDO names its Ocean Provider facade
    /// (`handlers::ocean::provider_url`, this plus `/api/ocean`) as its compute services'
    /// `serviceEndpoint` (where Ocean clients order jobs).
    pub public_api_url: String,
    /// How long a direct upload's URLs and id stay valid (`crate::uploads`).
    pub upload_validity_secs: u64,
}

impl ApiConfig {
    /// The directory uploads are spooled to.
    pub fn spool_dir(&self) -> std::path::PathBuf {
        self.spool_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            limits: Limits::default(),
            fee_validity_secs: 600,
            publishers: vec![],
            worker_version: format!("posthuman-worker {}", env!("CARGO_PKG_VERSION")),
            public_rpc_url: None,
            rates: posthuman_types::pricing::Rates::default(),
            spool_dir: None,
            public_api_url: posthuman_types::DEFAULT_API_URL.to_string(),
            upload_validity_secs: crate::uploads::UPLOAD_VALIDITY_SECS,
        }
    }
}

/// The dependencies of every handler.
#[derive(Clone, Debug)]
pub struct Deps {
    pub store: Arc<dyn ObjectStore>,
    pub queue: Arc<dyn JobQueue>,
    pub catalogue: Arc<dyn Catalogue>,
    /// Where clients send files directly (`crate::uploads`): S3 presigned PUTs on AWS, this
    /// server's own upload route in the embedded default.
    pub uploads: Arc<dyn crate::uploads::DirectUploads>,
    pub chain: Arc<Chain>,
    /// The operator key: signs provider fees (through `chain`) and receipts.
    pub operator: PrivateKeySigner,
    pub cfg: ApiConfig,
    /// Where an asynchronous publish's work runs (`crate::publishes`): a task in this
    /// process, or the publish function on AWS.
    pub publishes: Arc<dyn crate::publishes::PublishRunner>,
    /// Which model each Ocean DID names (a cache the Ocean Provider routes fill).
    pub ocean_dids: Arc<crate::handlers::ocean::DidIndex>,
}

/// The Ocean service index that pays for each job kind (a datatoken order names one).
pub fn service_index(kind: JobKind) -> u64 {
    match kind {
        JobKind::Train => 0,
        JobKind::Infer => 1,
        JobKind::Evaluate => 2,
    }
}

/// Object-store layout (private unless under a job's `public/`).
pub mod keys {
    /// A model's files: `config.json`, `model.safetensors`, `tokenizer.json`.
    pub fn model_prefix(weights_hash_hex: &str) -> String {
        format!("models/{}", weights_hash_hex.trim_start_matches("0x"))
    }
    pub fn job_prefix(job_id: &str) -> String {
        format!("jobs/{job_id}")
    }
    pub fn dataset(job_id: &str) -> String {
        format!("jobs/{job_id}/dataset.txt")
    }
    pub fn private(job_id: &str) -> String {
        format!("jobs/{job_id}/private")
    }
    pub fn public(job_id: &str) -> String {
        format!("jobs/{job_id}/public")
    }
    /// The allowlist of public outputs the API will serve from a job's public prefix.
    pub const PUBLIC_OUTPUTS: [&str; 7] = [
        "progress.json",
        "metrics.json",
        "completions.json",
        "report.json",
        "error.json",
        "receipt.json",
        "attestations.json",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DDO lists its compute services by position, and an Ocean order names its service
    /// by that position: both orders are this one.
    #[test]
    fn the_ddo_lists_services_in_service_index_order() {
        for kind in [JobKind::Train, JobKind::Infer, JobKind::Evaluate] {
            let (name, _) = posthuman_chain::ddo::SERVICES[service_index(kind) as usize];
            assert_eq!(name, kind.as_str());
        }
    }
}
