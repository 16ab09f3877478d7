//! Wiring the same handlers to AWS for the Lambda binaries: S3 for objects and the
//! catalogue (conditional writes), AWS Batch for jobs, a chain RPC endpoint, the operator key
//! read from Secrets Manager at cold start ([`crate::secrets`]; the environment names only the
//! secret).

use std::sync::Arc;

use alloy::signers::local::PrivateKeySigner;
use posthuman_chain::{AddressBook, Chain};
use posthuman_store::{ObjectStore, S3Config, S3Store};
use posthuman_types::pricing::{Device, Rates};

use crate::catalogue::ObjectCatalogue;
use crate::deps::{ApiConfig, Deps};
use crate::queue::{BatchQueue, BatchQueueConfig};

/// The typed configuration of a Lambda, parsed once in `main`.
#[derive(Clone, Debug)]
pub struct AwsConfig {
    pub s3: S3Config,
    pub batch: BatchQueueConfig,
    pub rpc_url: String,
    /// Where the deployment's address book comes from.
    pub address_book: AddressBookSource,
    /// A non-AWS SSM endpoint (moto / LocalStack).
    pub ssm_endpoint: Option<String>,
    /// The Secrets Manager secret (ARN or name) holding the operator key.
    pub operator_key_secret: String,
    /// A non-AWS Secrets Manager endpoint (moto / LocalStack).
    pub secrets_endpoint: Option<String>,
    pub api: ApiConfig,
    /// The publish function the API starts publishes on (`POSTHUMAN_PUBLISH_FUNCTION`,
    /// required by the API function); `None`: a task in this process (local runs only).
    pub publish_function: Option<String>,
    /// A non-AWS Lambda endpoint (the runtime emulator in CI).
    pub lambda_endpoint: Option<String>,
    /// Confirmations an order needs before it pays for a job; `None`: the chain's default
    /// ([`posthuman_chain::default_min_confirmations`], never 0 on a real chain).
    pub min_confirmations: Option<u64>,
}

impl AwsConfig {
    /// Reads `POSTHUMAN_*` variables (see `infra/`): BUCKET, S3_ENDPOINT, BATCH_QUEUE,
    /// BATCH_JOB_DEFINITION, BATCH_ENDPOINT, RPC_URL, PUBLIC_RPC_URL, PUBLIC_API_URL (required on
    /// Lambda), ADDRESS_BOOK, ADDRESS_BOOK_PARAM, SSM_ENDPOINT, OPERATOR_KEY_SECRET,
    /// SECRETS_ENDPOINT, RATES, MIN_CONFIRMATIONS, SPOOL_DIR, PUBLISH_FUNCTION, LAMBDA_ENDPOINT,
    /// AWS_REGION.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`AwsConfig::from_env`] over any source of variables (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let var = |k: &str| get(k).ok_or_else(|| format!("{k} is not set"));
        let opt = |k: &str| get(k).filter(|v| !v.is_empty());
        let region = opt("AWS_REGION").unwrap_or_else(|| "us-east-1".into());
        Ok(AwsConfig {
            s3: S3Config {
                bucket: var("POSTHUMAN_BUCKET")?,
                endpoint_url: opt("POSTHUMAN_S3_ENDPOINT"),
                region: region.clone(),
                force_path_style: opt("POSTHUMAN_S3_ENDPOINT").is_some(),
            },
            batch: BatchQueueConfig {
                job_queue: var("POSTHUMAN_BATCH_QUEUE")?,
                job_definition: var("POSTHUMAN_BATCH_JOB_DEFINITION")?,
                region,
                endpoint_url: opt("POSTHUMAN_BATCH_ENDPOINT"),
            },
            rpc_url: var("POSTHUMAN_RPC_URL")?,
            // The parameter's name is preferred: it is read at every cold start, so a
            // redeploy of the contracts reaches the functions without a stack update.
            address_book: match opt("POSTHUMAN_ADDRESS_BOOK_PARAM") {
                Some(name) => AddressBookSource::Parameter(name),
                None => AddressBookSource::Inline(var("POSTHUMAN_ADDRESS_BOOK")?),
            },
            ssm_endpoint: opt("POSTHUMAN_SSM_ENDPOINT"),
            operator_key_secret: var("POSTHUMAN_OPERATOR_KEY_SECRET")?,
            secrets_endpoint: opt("POSTHUMAN_SECRETS_ENDPOINT"),
            publish_function: opt("POSTHUMAN_PUBLISH_FUNCTION"),
            lambda_endpoint: opt("POSTHUMAN_LAMBDA_ENDPOINT"),
            min_confirmations: opt("POSTHUMAN_MIN_CONFIRMATIONS")
                .map(|v| parse_min_confirmations(&v))
                .transpose()?,
            api: ApiConfig {
                public_rpc_url: opt("POSTHUMAN_PUBLIC_RPC_URL"),
                // The API's own URL, written into every model's DDO.
                public_api_url: public_api_url(
                    opt("POSTHUMAN_PUBLIC_API_URL"),
                    opt("AWS_LAMBDA_RUNTIME_API").is_some(),
                )?,
                // Uploads' files while they are checked (default: the temp dir, /tmp on
                // Lambda).
                spool_dir: opt("POSTHUMAN_SPOOL_DIR").map(std::path::PathBuf::from),
                // The operator's published rates (JSON of `pricing::Rates`); unset: the defaults,
                // with wall-clock limits from the Batch GPU's rate.
                rates: match opt("POSTHUMAN_RATES") {
                    Some(j) => {
                        let r: Rates = serde_json::from_str(&j)
                            .map_err(|e| format!("POSTHUMAN_RATES: {e}"))?;
                        r.validate().map_err(|e| format!("POSTHUMAN_RATES: {e}"))?;
                        r
                    }
                    None => Rates { runs_on: Device::Gpu, ..Rates::default() },
                },
                ..ApiConfig::default()
            },
        })
    }
}

/// The API's public URL (`POSTHUMAN_PUBLIC_API_URL`, the stack passes the HTTP API's
/// endpoint). Required on Lambda (`AWS_LAMBDA_RUNTIME_API` set): there the local default is a
/// loopback address that no Ocean client reaching a model's DDO could call, so a function
/// without it fails its cold start instead of publishing DDOs naming that address.
fn public_api_url(value: Option<String>, on_lambda: bool) -> Result<String, String> {
    let Some(url) = value else {
        if on_lambda {
            return Err("POSTHUMAN_PUBLIC_API_URL is not set: every model's DDO names the Ocean \
                        Provider under the API's public URL (the stack passes the HTTP API's \
                        endpoint)"
                .into());
        }
        return Ok(posthuman_types::DEFAULT_API_URL.to_string());
    };
    let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    if host.is_none_or(|h| h.trim_end_matches('/').is_empty()) {
        return Err(format!("POSTHUMAN_PUBLIC_API_URL {url:?} is not an http(s):// URL"));
    }
    Ok(url)
}

/// Parses `POSTHUMAN_MIN_CONFIRMATIONS` (a cold start with a bad value fails at once rather
/// than accepting orders on a wrong setting).
pub fn parse_min_confirmations(v: &str) -> Result<u64, String> {
    let n: u64 = v
        .trim()
        .parse()
        .map_err(|_| format!("POSTHUMAN_MIN_CONFIRMATIONS: {v:?} is not a whole number"))?;
    posthuman_chain::validate_min_confirmations(n)
        .map_err(|e| format!("POSTHUMAN_MIN_CONFIRMATIONS: {e}"))
}

/// Where a Lambda finds the address book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressBookSource {
    /// An SSM parameter's name, read at cold start (the deployed stack).
    Parameter(String),
    /// The JSON itself (local runs).
    Inline(String),
}

fn parse_address_book(json: &str, from: &str) -> Result<AddressBook, String> {
    serde_json::from_str(json).map_err(|e| {
        format!("the address book in {from} is not the deployment's AddressBook JSON: {e}")
    })
}

/// An SSM client from the ambient AWS configuration; `endpoint_url` for a local twin.
pub async fn ssm_client(region: &str, endpoint_url: Option<&str>) -> aws_sdk_ssm::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()));
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    aws_sdk_ssm::Client::new(&loader.load().await)
}

/// Reads the address book from SSM parameter `name` (written by the deploy after the
/// contracts are deployed); each failure names the parameter.
pub async fn address_book_from_ssm(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
) -> Result<AddressBook, String> {
    let out = ssm.get_parameter().name(name).send().await.map_err(|e| {
        format!(
            "the address book parameter {name} cannot be read (deploy the contracts and write \
             it first): {}",
            aws_sdk_ssm::error::DisplayErrorContext(&e)
        )
    })?;
    let value = out
        .parameter()
        .and_then(|p| p.value())
        .ok_or_else(|| format!("the address book parameter {name} has no value"))?;
    parse_address_book(value, &format!("SSM parameter {name}"))
}

/// Builds the handlers' dependencies over AWS services.
pub async fn deps(cfg: AwsConfig) -> Result<Arc<Deps>, String> {
    let s3 = S3Store::new(cfg.s3).await.map_err(|e| e.to_string())?;
    // Clients PUT their files straight to the bucket (API Gateway takes at most 6 MB).
    let uploads = Arc::new(crate::uploads::S3Uploads::new(&s3));
    let store: Arc<dyn ObjectStore> = Arc::new(s3);
    let book = match &cfg.address_book {
        AddressBookSource::Inline(json) => parse_address_book(json, "POSTHUMAN_ADDRESS_BOOK")?,
        AddressBookSource::Parameter(name) => {
            let ssm = ssm_client(&cfg.batch.region, cfg.ssm_endpoint.as_deref()).await;
            address_book_from_ssm(&ssm, name).await?
        }
    };
    let secrets = crate::secrets::client(&cfg.batch.region, cfg.secrets_endpoint.as_deref()).await;
    let key = crate::secrets::operator_key(&secrets, &cfg.operator_key_secret)
        .await
        .map_err(|e| e.to_string())?;
    let operator: PrivateKeySigner =
        key.parse().map_err(|_| "operator key: not a private key".to_string())?;
    let min_confirmations = cfg
        .min_confirmations
        .unwrap_or_else(|| posthuman_chain::default_min_confirmations(book.chain_id, &cfg.rpc_url));
    let mut chain =
        Chain::connect(&cfg.rpc_url, operator.clone(), book).map_err(|e| e.to_string())?;
    chain.min_confirmations = min_confirmations;
    let publishes: Arc<dyn crate::publishes::PublishRunner> = match cfg.publish_function {
        Some(f) => Arc::new(
            crate::publishes::LambdaPublishes::new(
                f,
                &cfg.batch.region,
                cfg.lambda_endpoint.as_deref(),
            )
            .await,
        ),
        None => Arc::new(crate::publishes::LocalPublishes),
    };
    Ok(Arc::new(Deps {
        catalogue: Arc::new(ObjectCatalogue::new(store.clone(), "state")),
        store,
        uploads,
        queue: Arc::new(BatchQueue::new(cfg.batch).await),
        chain: Arc::new(chain),
        operator,
        cfg: cfg.api,
        publishes,
        ocean_dids: Default::default(),
    }))
}

/// Checks that the operator key is the one the lineage contract obeys now. The stack
/// generates the key into Secrets Manager while the contracts' deployer becomes their
/// operator; until the owner hands the role over (`setOperator`), every derivation the key
/// sends reverts, so job-done refuses to start instead (its events wait in Lambda's retries
/// and the sweep redelivers the finished jobs once the keys agree). One `eth_call`.
pub async fn check_lineage_operator(deps: &Deps, secret: &str) -> Result<(), String> {
    let obeyed = deps.chain.lineage_operator().await.map_err(|e| {
        format!("reading the lineage contract's operator (is the address book this chain's?): {e}")
    })?;
    let key = deps.operator.address();
    if obeyed != key {
        return Err(format!(
            "the operator key in secret {secret} is {key}, but the lineage contract {} obeys \
             {obeyed}: its owner must call setOperator({key}), or the secret must hold the \
             key of {obeyed}",
            deps.chain.book().lineage
        ));
    }
    Ok(())
}

/// Logging for the Lambda binaries: `RUST_LOG`'s filter, no timestamps (CloudWatch stamps
/// each line) and no ANSI colours (CloudWatch would show the escape codes as text).
pub fn init_lambda_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .with_ansi(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the stack sets on every function (`infra/`), as a lookup.
    fn stack_env(extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut m: std::collections::HashMap<String, String> = [
            ("POSTHUMAN_BUCKET", "data"),
            ("POSTHUMAN_BATCH_QUEUE", "arn:aws:batch:us-east-1:1:job-queue/q"),
            ("POSTHUMAN_BATCH_JOB_DEFINITION", "arn:aws:batch:us-east-1:1:job-definition/w:1"),
            ("POSTHUMAN_RPC_URL", "https://rpc.example.org"),
            ("POSTHUMAN_ADDRESS_BOOK_PARAM", "/posthuman/address-book"),
            ("POSTHUMAN_OPERATOR_KEY_SECRET", "arn:aws:secretsmanager:us-east-1:1:secret:k"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        m.retain(|_, v| !v.is_empty());
        move |k| m.get(k).cloned()
    }

    /// Every model's DDO names its Ocean Provider under the public API URL. On Lambda the
    /// local default is a loopback address nobody can reach, so a function without the URL
    /// refuses to start rather than publish DDOs naming it.
    #[test]
    fn on_lambda_the_public_api_url_is_required() {
        const RT: (&str, &str) = ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001");
        let url = "https://abc123.execute-api.us-east-1.amazonaws.com";
        let e = AwsConfig::from_lookup(stack_env(&[RT])).unwrap_err();
        assert!(e.contains("POSTHUMAN_PUBLIC_API_URL"), "{e}");
        let c =
            AwsConfig::from_lookup(stack_env(&[RT, ("POSTHUMAN_PUBLIC_API_URL", url)])).unwrap();
        assert_eq!(c.api.public_api_url, url);
        for bad in ["abc123.execute-api.us-east-1.amazonaws.com", "ftp://x", "https://"] {
            let e = AwsConfig::from_lookup(stack_env(&[RT, ("POSTHUMAN_PUBLIC_API_URL", bad)]))
                .unwrap_err();
            assert!(e.contains("POSTHUMAN_PUBLIC_API_URL"), "{bad}: {e}");
        }
        // Off Lambda (a local run of the functions' wiring) the default still applies.
        let c = AwsConfig::from_lookup(stack_env(&[])).unwrap();
        assert_eq!(c.api.public_api_url, posthuman_types::DEFAULT_API_URL);
        assert_eq!(c.address_book, AddressBookSource::Parameter("/posthuman/address-book".into()));
    }

    #[test]
    fn min_confirmations_are_validated_at_cold_start() {
        assert_eq!(parse_min_confirmations("12"), Ok(12));
        assert_eq!(parse_min_confirmations(" 0 "), Ok(0));
        for bad in ["-1", "three", "1.5", "", "1001"] {
            let e = parse_min_confirmations(bad).unwrap_err();
            assert!(e.starts_with("POSTHUMAN_MIN_CONFIRMATIONS"), "{bad}: {e}");
        }
    }
}
