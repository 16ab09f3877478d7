//! Publish a model, read the catalogue, quote a job.

use alloy::primitives::{Address, U256};
use bytes::Bytes;
use posthuman_chain::PublishRequest as ChainPublish;
use posthuman_chain::ddo::ModelDdo;
use posthuman_gpt2::chat_config::{
    CHAT_TEMPLATE_FILE, ChatConfig, ChatConfigError, GENERATION_CONFIG, TOKENIZER_CONFIG,
};
use posthuman_gpt2::family::{AnyConfig, AnyWeights, FamilyError, check_safetensors_file};
use posthuman_gpt2::llama_weights::CheckpointError;
use posthuman_gpt2::lora::LoraAdapter;
use posthuman_types::{Hash32, JobKind, LoraOutput, ModelCard};
use sha2::{Digest, Sha256};

use super::chain_err;
use super::pricing::{
    QuoteTerms, check_chat, check_lora, fee_binding, model_config, price_terms, validate_params,
};
use super::views::{self, ModelView, Paged};
use crate::auth;
use crate::catalogue::{Cursor, ModelRecord, now_secs};
use crate::deps::{Deps, keys, service_index};
use crate::error::ApiError;
use crate::publishes::{BYTES, Progress, TRANSACTIONS};
use crate::spool::Spooled;

/// The signed JSON part of a publish request (its shape is `posthuman_types`, which clients
/// share).
pub use posthuman_types::requests::PublishRequest;

/// A publish upload: the signed request and the three model files, plus the two optional
/// HF files that say how the model is prompted (stop ids, BOS, chat template). The weights
/// (up to `max_weights_bytes`) come spooled to disk, never whole in memory.
#[derive(Debug)]
pub struct PublishUpload {
    pub request: Bytes,
    pub signature: String,
    pub config: Bytes,
    pub weights: Spooled,
    pub tokenizer: Bytes,
    /// A PEFT LoRA adapter over these weights: `adapter_config.json` and the spooled
    /// `adapter_model.safetensors`.
    pub adapter: Option<(Bytes, Spooled)>,
    /// `tokenizer_config.json`, if the model has one.
    pub tokenizer_config: Option<Bytes>,
    /// `generation_config.json`, if the model has one.
    pub generation_config: Option<Bytes>,
    /// `chat_template.jinja`, if the model keeps its template in that file.
    pub chat_template: Option<Bytes>,
}

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::Invalid { field: field.into(), reason: reason.into() }
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.trim().is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(invalid(field, format!("1..={max} bytes of printable text")));
    }
    Ok(())
}

/// Validated model files: the parsed config (any family the worker runs) and the canonical
/// weights hash.
struct CheckedModel {
    cfg: AnyConfig,
    weights_hash: Hash32,
    /// With an adapter: the merged weights (whose hash is `weights_hash`) and the adapter.
    merged: Option<Merged>,
}

/// A published base merged with its PEFT adapter.
struct Merged {
    weights: Bytes,
    /// The merged weights' canonical hash (the model's identity).
    hash: Hash32,
    adapter: LoraOutput,
}

/// Loads the uploaded PEFT adapter strictly against the base (`adapter_config.json`'s
/// settings, every tensor's name and shape against the base's layers: an adapter made for
/// another base does not fit) and merges it into the base weights.
fn merge_adapter(
    cfg: &AnyConfig,
    base_path: &std::path::Path,
    adapter_config: &[u8],
    adapter_path: &std::path::Path,
) -> Result<Merged, ApiError> {
    let bad = |e: String| invalid("adapter", e);
    let json = std::str::from_utf8(adapter_config)
        .map_err(|_| bad("adapter_config.json is not UTF-8".into()))?;
    let aw = std::fs::read(adapter_path).map_err(ApiError::internal)?;
    let adapter =
        LoraAdapter::from_bytes(json, &aw, &cfg.lora_base()).map_err(|e| bad(e.to_string()))?;
    let base = std::fs::read(base_path).map_err(ApiError::internal)?;
    let base = AnyWeights::from_safetensors_bytes(&base, cfg).map_err(ApiError::internal)?;
    let merged = base.merged(cfg, &adapter).map_err(|e| bad(e.to_string()))?;
    // A published adapter was trained elsewhere: no checkpoint of it is stored here.
    let adapter_info = adapter.describe(aw.len() as u64, 0).map_err(ApiError::internal)?;
    let hash = merged.hash().map_err(ApiError::internal)?;
    let weights = merged.to_safetensors_bytes().map_err(ApiError::internal)?;
    Ok(Merged { weights: Bytes::from(weights), hash, adapter: adapter_info })
}

/// Strict checks (config, every tensor's name/shape/dtype, finite values) and the canonical
/// content hash, off the async threads (it reads every weight, from the spooled file a chunk
/// at a time).
async fn check_model(
    config: Bytes,
    weights: &Spooled,
    tokenizer: &Bytes,
    adapter: Option<(Bytes, &Spooled)>,
) -> Result<CheckedModel, ApiError> {
    serde_json::from_slice::<serde_json::Value>(tokenizer)
        .ok()
        .filter(|v| v.get("model").is_some())
        .ok_or_else(|| invalid("tokenizer", "not a tokenizers tokenizer.json"))?;
    let path = weights.path().to_path_buf();
    let adapter = adapter.map(|(c, w)| (c, w.path().to_path_buf()));
    tokio::task::spawn_blocking(move || {
        let text = std::str::from_utf8(&config).map_err(|_| invalid("config", "not UTF-8"))?;
        // `model_type` picks the family; one the worker cannot run is refused here, naming
        // the supported ones.
        let cfg = AnyConfig::from_json(text).map_err(|e| invalid("config", e.to_string()))?;
        let weights_hash = check_safetensors_file(&path, &cfg).map_err(|e| match e {
            // The spool file itself failing to read is the server's trouble.
            FamilyError::Gpt2(posthuman_gpt2::Gpt2Error::Io { .. })
            | FamilyError::LlamaCheckpoint(CheckpointError::Io { .. }) => ApiError::internal(e),
            e => invalid("weights", e.to_string()),
        })?;
        // Base + adapter: the model listed (and stored, and run) is the merge; its hash is
        // the identity, as for a LoRA derivation.
        let Some((ac, ap)) = adapter else {
            return Ok(CheckedModel { cfg, weights_hash, merged: None });
        };
        let m = merge_adapter(&cfg, &path, &ac, &ap)?;
        Ok(CheckedModel { cfg, weights_hash: m.hash, merged: Some(m) })
    })
    .await
    .map_err(ApiError::internal)?
}

/// A publish request whose signature and fields were checked; nothing of its files was read.
#[derive(Clone, Debug)]
pub struct SignedPublish {
    pub signer: Address,
    pub owner: Address,
    pub req: PublishRequest,
    price: U256,
    license: Option<String>,
}

/// The cheap half of a publish: the signature (this deployment, the owner it names, an
/// allowed publisher), expiry, the nonce's shape, names, description, licence, price and
/// reward scheme. The nonce is not used here: the caller does that once it decided to go on.
pub fn check_publish_request(
    deps: &Deps,
    request: &[u8],
    signature: &str,
) -> Result<SignedPublish, ApiError> {
    let s = recheck_publish_request(deps, request, signature)?;
    auth::check_expiry(s.req.expires_at, now_secs())?;
    Ok(s)
}

/// [`check_publish_request`] but for the expiry: for the background work of a request that
/// passed it when accepted (the work may outlast the request's validity).
pub fn recheck_publish_request(
    deps: &Deps,
    request: &[u8],
    signature: &str,
) -> Result<SignedPublish, ApiError> {
    let signer = auth::recover_request(
        &auth::domain(deps),
        posthuman_receipts::request::PUBLISH_MODEL,
        request,
        signature,
    )?;
    let req: PublishRequest =
        serde_json::from_slice(request).map_err(|e| ApiError::bad(format!("request: {e}")))?;
    let owner = auth::parse_address("owner", &req.owner)?;
    auth::require_signer(&owner, &signer)?;
    auth::require_publisher(deps, &signer)?;
    auth::check_nonce(&req.nonce)?;
    check_text("name", &req.name, 64)?;
    check_text("symbol", &req.symbol, 16)?;
    posthuman_types::card::check_description(&req.description)
        .map_err(super::card::card_invalid)?;
    let license = match &req.license {
        Some(l) => posthuman_types::card::check_license(l).map_err(super::card::card_invalid)?,
        None => None,
    };
    let price: U256 =
        req.price.parse().map_err(|_| invalid("price", "a decimal integer (OCEAN base units)"))?;
    if price.is_zero() {
        return Err(invalid("price", "must be positive"));
    }
    req.reward_scheme.validate().map_err(|e| invalid("reward_scheme", e.to_string()))?;
    Ok(SignedPublish { signer, owner, req, price, license })
}

/// The weights' SHA-256 and the adapter weights' (if an adapter came) are the ones the
/// request signs for: the multipart route checks the bytes it received, an asynchronous
/// publish the hashes its upload declared (verified against the bytes as they arrived).
pub fn check_signed_hashes(
    req: &PublishRequest,
    weights: Hash32,
    adapter: Option<Hash32>,
) -> Result<(), ApiError> {
    if weights != req.weights_sha256 {
        return Err(invalid("weights_sha256", "does not match the uploaded weights"));
    }
    match (adapter, req.adapter_sha256) {
        (None, None) => Ok(()),
        (Some(w), Some(h)) if w == h => Ok(()),
        (Some(_), Some(_)) => Err(invalid("adapter_sha256", "does not match the uploaded adapter")),
        (Some(_), None) => Err(invalid("adapter_sha256", "an uploaded adapter must be signed for")),
        (None, Some(_)) => {
            Err(invalid("adapter", "adapter_sha256 is set but no adapter was uploaded"))
        }
    }
}

/// Uses the request's single-use nonce: a replayed request is a 409.
pub async fn use_publish_nonce(deps: &Deps, s: &SignedPublish) -> Result<(), ApiError> {
    if !deps.catalogue.use_nonce(&s.signer.to_string(), &s.req.nonce).await? {
        return Err(ApiError::Conflict("nonce already used (replayed request)".into()));
    }
    Ok(())
}

/// `POST /models` (multipart, synchronous): validates and stores the files privately,
/// creates the asset on chain (data NFT + datatoken + weights commitment + lineage root with
/// its reward scheme), puts it on sale, and lists it.
pub async fn publish_model(deps: &Deps, up: PublishUpload) -> Result<ModelView, ApiError> {
    let signed = check_publish_request(deps, &up.request, &up.signature)?;
    publish_checked(deps, signed, up, true, &Progress::default()).await
}

/// The weight work and the rest of a publish whose request passed
/// [`check_publish_request`]: the files against the signed hashes, the strict model checks,
/// then (with `use_nonce`, the nonce first) the files under `models/`, the three
/// transactions and the listing, reporting each phase on `progress`. Nothing is listed on
/// failure.
pub async fn publish_checked(
    deps: &Deps,
    signed: SignedPublish,
    up: PublishUpload,
    use_nonce: bool,
    progress: &Progress,
) -> Result<ModelView, ApiError> {
    let SignedPublish { signer: _, owner, req, price, license } = signed.clone();
    check_signed_hashes(&req, up.weights.sha256(), up.adapter.as_ref().map(|(_, w)| w.sha256()))?;
    let weights_bytes = up.weights.len();
    progress.phase("checking", weights_bytes, BYTES);
    let adapter = up.adapter.as_ref().map(|(c, w)| (c.clone(), w));
    let checked = check_model(up.config.clone(), &up.weights, &up.tokenizer, adapter).await?;
    progress.done(weights_bytes);
    // The worker's own parser and bounds, and its rule that every token the configs name
    // exists in tokenizer.json: a file the worker would refuse is never published.
    let chat_error = |e: ChatConfigError| {
        let field = match e.file {
            TOKENIZER_CONFIG => "tokenizer_config",
            GENERATION_CONFIG => "generation_config",
            _ => "chat_template",
        };
        invalid(field, e.reason)
    };
    let mut chat =
        ChatConfig::parse(up.tokenizer_config.as_deref(), up.generation_config.as_deref())
            .map_err(chat_error)?;
    let template_file = match &up.chat_template {
        Some(t) => {
            chat = chat.with_template_file(t).map_err(chat_error)?;
            CHAT_TEMPLATE_FILE
        }
        None => TOKENIZER_CONFIG,
    };
    // A template that does not parse would fail every chat job: refused here, naming its part.
    chat.check_template_syntax(template_file).map_err(chat_error)?;
    let tokenizer: serde_json::Value = serde_json::from_slice(&up.tokenizer)
        .map_err(|_| invalid("tokenizer", "not a tokenizers tokenizer.json"))?;
    chat.check_tokens(&tokenizer).map_err(chat_error)?;
    if use_nonce {
        use_publish_nonce(deps, &signed).await?;
    }

    // Files first (private store, _COMPLETE last as the worker expects), then the chain.
    let prefix = keys::model_prefix(&checked.weights_hash.to_hex());
    progress.phase("storing", weights_bytes, BYTES);
    let (config_bytes, tokenizer_bytes) = (up.config.clone(), up.tokenizer.clone());
    deps.store.put(&format!("{prefix}/config.json"), up.config).await?;
    let weights_sha256 = match &checked.merged {
        None => {
            deps.store.put_file(&format!("{prefix}/model.safetensors"), up.weights.path()).await?;
            req.weights_sha256
        }
        Some(m) => {
            // The adapter as uploaded (PEFT's layout), and the merge the worker runs.
            if let Some((c, w)) = &up.adapter {
                use posthuman_gpt2::lora::{ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME};
                deps.store
                    .put(&format!("{prefix}/adapter/{ADAPTER_CONFIG_NAME}"), c.clone())
                    .await?;
                deps.store
                    .put_file(&format!("{prefix}/adapter/{ADAPTER_WEIGHTS_NAME}"), w.path())
                    .await?;
            }
            deps.store.put(&format!("{prefix}/model.safetensors"), m.weights.clone()).await?;
            Hash32(Sha256::digest(&m.weights).into())
        }
    };
    progress.done(weights_bytes);
    deps.store.put(&format!("{prefix}/tokenizer.json"), up.tokenizer).await?;
    // The worker's manifest (format posthuman-model-v1): the canonical weights hash and the
    // SHA-256 of each file, checked by the worker on every load.
    let mut files = serde_json::json!({
        "config.json": Hash32(Sha256::digest(&config_bytes).into()),
        "model.safetensors": weights_sha256,
        "tokenizer.json": Hash32(Sha256::digest(&tokenizer_bytes).into()),
    });
    let optional = [
        (TOKENIZER_CONFIG, up.tokenizer_config),
        (GENERATION_CONFIG, up.generation_config),
        (CHAT_TEMPLATE_FILE, up.chat_template),
    ];
    for (name, body) in optional {
        if let Some(body) = body {
            files[name] = serde_json::json!(Hash32(Sha256::digest(&body).into()));
            deps.store.put(&format!("{prefix}/{name}"), body).await?;
        }
    }
    let manifest = serde_json::json!({
        "format": "posthuman-model-v1",
        "weights_hash": checked.weights_hash,
        "files": files,
    });
    let manifest = serde_json::to_vec_pretty(&manifest).map_err(ApiError::internal)?;
    deps.store.put(&format!("{prefix}/_COMPLETE"), Bytes::from(manifest)).await?;

    let c = &checked.cfg;
    // The family is the line's first word (the card, the DDO's `family` and tags read it).
    let architecture = c.architecture();
    let operator = deps.chain.operator();
    let card_json = serde_json::json!({
        "name": req.name, "description": req.description, "architecture": architecture,
        "parameters": c.num_params(),
    })
    .to_string();
    progress.phase("chain", 3, TRANSACTIONS);
    progress.step("asset", 0);
    let published = deps
        .chain
        .publish_model(
            operator,
            &ChainPublish {
                name: req.name.clone(),
                symbol: req.symbol.clone(),
                token_uri: String::new(),
                weights_hash: checked.weights_hash,
                card_json: Some(card_json),
                reward: req.reward_scheme.clone(),
                // The operator holds the NFT in custody; the signer is the owner of record,
                // paid every derivation's remainder.
                root_owner: Some(owner),
            },
        )
        .await
        .map_err(chain_err)?;
    progress.step("exchange", 1);
    let exchange = deps
        .chain
        .create_fixed_rate(operator, published.datatoken, price, true)
        .await
        .map_err(chain_err)?;
    let record = ModelRecord {
        card: ModelCard {
            nft: lower(published.nft),
            datatoken: lower(published.datatoken),
            name: req.name,
            symbol: req.symbol,
            description: req.description,
            owner: lower(owner),
            weights_hash: checked.weights_hash,
            parent: None,
            trainer: None,
            architecture,
            parameters: c.num_params() as u64,
            exchange_id: Some(Hash32(exchange.id.0)),
            price: Some(price.to_string()),
            reward_scheme: req.reward_scheme,
            lora: checked.merged.as_ref().map(|m| m.adapter.clone()),
            tags: vec![],
            license,
        },
        storage_prefix: prefix,
        created_at: now_secs(),
        source_job: None,
        receipt_hash: None,
        n_positions: u32::try_from(c.context()).unwrap_or(u32::MAX),
        featured: vec![],
        card_updated_at: None,
        ddo_pending: false,
    };
    // Ocean's publish flow: the DDO on the NFT (the operator holds it), so Ocean's indexers
    // list the model.
    let ddo = model_ddo(deps, &record)?;
    progress.step("ddo", 2);
    deps.chain.set_metadata(operator, &ddo).await.map_err(chain_err)?;
    progress.phase("listing", 1, "records");
    deps.catalogue.put_model(&record).await?;
    progress.done(1);
    Ok(views::model_view(&record, vec![], &[]))
}

/// What a model's DDO says it may be used under when its publisher named no licence (one
/// definition, shown by the storefront too).
pub use posthuman_types::model::MODEL_LICENSE;

/// A model's Ocean DDO from its catalogue record: public facts only (never its storage
/// prefix), its services served at the API's public URL; `created` is the catalogue's date,
/// `updated` the card's last edit. The tags are the fixed ones, then the owner's.
pub(crate) fn model_ddo(deps: &Deps, record: &ModelRecord) -> Result<ModelDdo, ApiError> {
    let card = &record.card;
    let addr = |what: &str, s: &str| {
        s.parse::<Address>().map_err(|e| ApiError::Internal(format!("model {what} {s}: {e}")))
    };
    let family = card.family().to_string();
    let mut tags = posthuman_types::card::fixed_tags(card);
    tags.extend(card.tags.iter().cloned());
    let created = record.created_at;
    Ok(ModelDdo {
        chain_id: deps.chain.book().chain_id,
        nft: addr("nft", &card.nft)?,
        datatoken: addr("datatoken", &card.datatoken)?,
        name: card.name.clone(),
        description: card.description.clone(),
        author: addr("owner", &card.owner)?.to_checksum(None),
        license: card.license_text().into(),
        tags,
        family,
        architecture: card.architecture.clone(),
        parameters: card.parameters,
        weights_hash: card.weights_hash.0.into(),
        parent: card.parent.as_deref().map(|p| addr("parent", p)).transpose()?,
        // The Ocean Provider facade: what ocean.js calls the node URI.
        service_endpoint: super::ocean::provider_url(&deps.cfg.public_api_url),
        created,
        updated: record.card_updated_at.unwrap_or(created).max(created),
    })
}

/// The licence of `model`'s root, read up the catalogue's parent links (bounded by the
/// contract's depth cap): what a model derived from `model` inherits.
pub(crate) async fn root_license(
    deps: &Deps,
    model: &ModelRecord,
) -> Result<Option<String>, ApiError> {
    let mut card = model.card.clone();
    for _ in 0..=posthuman_types::model::MAX_DEPTH {
        let Some(parent) = &card.parent else { return Ok(card.license) };
        card = match deps.catalogue.get_model(parent).await? {
            Some(r) => r.card,
            None => {
                return Err(ApiError::Internal(format!("ancestor {parent} not in the catalogue")));
            }
        };
    }
    Err(ApiError::Internal(format!("{}: lineage deeper than the contract allows", model.card.nft)))
}

/// Lowercase `0x…` form used as catalogue keys and in views.
pub(crate) fn lower(a: Address) -> String {
    format!("{a:#x}")
}

pub(crate) async fn view(deps: &Deps, m: &ModelRecord) -> Result<ModelView, ApiError> {
    // Lineage from the catalogue's own parent links (bounded: the contract caps depth); the
    // derived models through the catalogue's per-parent index.
    let mut lineage = Vec::new();
    let mut parent = m.card.parent.clone();
    while let Some(p) = parent {
        if lineage.len() >= 64 || lineage.contains(&p) {
            break;
        }
        parent = deps.catalogue.get_model(&p).await?.and_then(|r| r.card.parent);
        lineage.push(p);
    }
    // The card's counts and newest results through the catalogue's per-model indexes, and
    // the (at most MAX_FEATURED) featured evaluations by id: never every job on the model.
    let activity = deps.catalogue.model_activity(&m.card.nft, views::CARD_LATEST).await?;
    let mut featured = Vec::new();
    for id in &m.featured {
        match activity.evaluations.iter().find(|j| j.job_id == *id) {
            Some(j) => featured.push(j.clone()),
            None => featured.extend(deps.catalogue.get_job(id).await?),
        }
    }
    let children = deps.catalogue.children(&m.card.nft, views::CARD_LATEST).await?;
    Ok(views::model_view_with_activity(m, lineage, children, &activity, &featured))
}

/// `GET /models`: one page of the catalogue, oldest first, and the next page's cursor.
pub async fn list_models(
    deps: &Deps,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<Paged<ModelView>, ApiError> {
    let page = deps.catalogue.models_page(after, limit).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for m in &page.items {
        items.push(view(deps, m).await?);
    }
    Ok(Paged { items, next: page.next.map(|c| c.encode()) })
}

/// The model record for an NFT given in a path (hostile input).
/// The model an owner's signed edit is for (a card edit, featured evaluations): found, the one
/// the URL names (`named` is the request's own `model`), and `signer` its owner of record —
/// otherwise 403 saying that only that owner may `what`.
pub(crate) async fn model_of_owner(
    deps: &Deps,
    nft: &str,
    named: &str,
    signer: Address,
    what: &str,
) -> Result<ModelRecord, ApiError> {
    let model = find_model(deps, nft).await?;
    if named.to_ascii_lowercase() != model.card.nft {
        return Err(ApiError::bad("the signed request names another model than the URL"));
    }
    let owner = model.card.owner_of_record().to_ascii_lowercase();
    if lower(signer) != owner {
        return Err(ApiError::Forbidden(format!(
            "only the model's owner of record ({owner}) may {what}"
        )));
    }
    Ok(model)
}

pub(crate) async fn find_model(deps: &Deps, nft: &str) -> Result<ModelRecord, ApiError> {
    let addr =
        nft.parse::<Address>().map_err(|_| ApiError::not_found(format!("model {nft:.64}")))?;
    deps.catalogue
        .get_model(&lower(addr))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("model {}", lower(addr))))
}

/// `GET /models/{nft}`.
pub async fn get_model(deps: &Deps, nft: &str) -> Result<ModelView, ApiError> {
    let m = find_model(deps, nft).await?;
    view(deps, &m).await
}

/// The quote's shapes are `posthuman_types::views` (the CLI and the storefront read them).
pub use posthuman_types::views::{ProviderFeeView, Quote, RoyaltyLine};

/// `GET /models/{nft}/quote?kind=`: the quote for the kind's default terms.
pub async fn quote_default(deps: &Deps, nft: &str, kind: JobKind) -> Result<Quote, ApiError> {
    let m = find_model(deps, nft).await?;
    quote_model(deps, &m, QuoteTerms::default_for(kind, m.n_positions)).await
}

/// `POST /models/{nft}/quote`: validates the terms exactly as submit would, prices them and
/// signs the total as the provider fee bound to them.
pub async fn quote(deps: &Deps, nft: &str, terms: QuoteTerms) -> Result<Quote, ApiError> {
    let m = find_model(deps, nft).await?;
    quote_model(deps, &m, terms).await
}

pub(crate) async fn quote_model(
    deps: &Deps,
    m: &ModelRecord,
    terms: QuoteTerms,
) -> Result<Quote, ApiError> {
    let kind = terms.params.kind();
    validate_params(&terms.params, m.n_positions)?;
    if kind == JobKind::Infer && terms.dataset_bytes != 0 {
        return Err(invalid("dataset_bytes", "infer jobs take no dataset"));
    }
    if kind != JobKind::Infer && terms.dataset_bytes == 0 {
        return Err(invalid("dataset_bytes", format!("a {kind} job needs a dataset")));
    }
    if terms.dataset_bytes > deps.cfg.limits.max_dataset_bytes {
        return Err(invalid(
            "dataset_bytes",
            format!("at most {} bytes", deps.cfg.limits.max_dataset_bytes),
        ));
    }
    let cfg = model_config(deps, m).await?;
    check_lora(&terms.params, &cfg)?;
    check_chat(deps, m, &terms.params).await?;
    let priced = price_terms(&terms, &cfg.shape(), &deps.cfg.rates)?;
    let price = match m.card.exchange_id {
        Some(id) => Some(
            deps.chain
                .quote(alloy::primitives::B256::from(id.0), U256::from(10u128.pow(18)))
                .await
                .map_err(chain_err)?
                .to_string(),
        ),
        None => None,
    };
    let datatoken = auth::parse_address("model.datatoken", &m.card.datatoken)?;
    let (collector, royalty_token, royalty) =
        deps.chain.publishing_market_fee(datatoken).await.map_err(chain_err)?;
    let valid_until = now_secs() + deps.cfg.fee_validity_secs;
    let data = alloy::primitives::Bytes::from(fee_binding(deps, m, &terms)?.encode());
    let fee = deps
        .chain
        .sign_provider_fee_for(U256::from(priced.breakdown.total.0), valid_until, data)
        .map_err(chain_err)?;
    Ok(Quote {
        model: m.card.nft.clone(),
        datatoken: m.card.datatoken.clone(),
        kind,
        service_index: service_index(kind),
        datatokens: "1000000000000000000".into(),
        price,
        exchange_id: m.card.exchange_id,
        terms,
        estimate: priced.estimate,
        breakdown: priced.breakdown,
        budget: priced.budget,
        royalty: RoyaltyLine {
            label: "royalty: paid to the lineage's ancestors".into(),
            token: lower(royalty_token),
            amount: royalty.to_string(),
            recipient: lower(collector),
        },
        provider_fee: ProviderFeeView {
            provider_fee_address: lower(fee.address),
            provider_fee_token: lower(fee.token),
            provider_fee_amount: fee.amount.to_string(),
            v: fee.v,
            r: fee.r.to_string(),
            s: fee.s.to_string(),
            valid_until,
            provider_data: fee.data.to_string(),
        },
        expires_at: valid_until,
    })
}

/// `GET /api/chain` with the whole address book (`posthuman_types::views::ChainInfo`).
pub type ChainInfo = posthuman_types::views::ChainInfo<posthuman_chain::AddressBook>;

pub fn chain_info(deps: &Deps) -> ChainInfo {
    let own = deps.chain.rpc_url();
    ChainInfo {
        rpc_url: deps
            .cfg
            .public_rpc_url
            .clone()
            .or_else(|| is_bare_loopback(own).then(|| own.to_string())),
        address_book: deps.chain.book().clone(),
        min_confirmations: deps.chain.min_confirmations,
    }
}

/// True for `http(s)://<loopback>:<port>` with no credentials, path, query or fragment: an
/// endpoint on this machine that carries no secret. Anything else may be a provider URL
/// with an API key in its path, user info or query.
pub fn is_bare_loopback(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return false;
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return false;
    }
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return false,
        None => authority,
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}
