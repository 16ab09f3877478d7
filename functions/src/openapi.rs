//! The API's OpenAPI 3.1 document, generated from the route table and the wire types.
//!
//! Every route in [`crate::api::routes`] carries its operation: `#[utoipa::path]` on its
//! handler (the handler's doc comment is the summary and description, the attribute names its
//! parameters, body and statuses), and the bodies' schemas come from the types the handler
//! really reads and writes (`posthuman_types`, feature `openapi`). [`document`] walks that one
//! table, so a route cannot be served without being described, nor described without being
//! served.
//!
//! Conventions the attributes rely on, applied here once ([`add_error_bodies`]): a response
//! of status 4xx/5xx without a body has the [`ErrorBody`] body, and every operation may
//! answer 500 `internal`.
//!
//! `functions/openapi.json` is this document, committed for readers and served as is at
//! `/api/openapi.json` (so serving it costs nothing at cold start);
//! `tests/openapi.rs` fails when the two differ and says how to regenerate the file.

use axum::http::Method;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{
    ComponentsBuilder, Content, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref,
    RefOr, Response, ResponseBuilder,
};
use utoipa::{PartialSchema, ToSchema};

use posthuman_chain::AddressBook;
use posthuman_types::card::CardEdit;
use posthuman_types::requests::{FeatureRequest, JobRequest, PublishRequest};
use posthuman_types::uploads::UploadRequest;
use posthuman_types::views::{ErrorBody, QuoteTerms};
use serde_json::{Value, json};
use utoipa::openapi::example::ExampleBuilder;

/// The API's version as the document states it: the API's, not the crate's (a checkout may
/// build its crates under another version; the committed document must not change with it).
const API_VERSION: &str = "0.1.0";

/// What the document says of the API as a whole: how requests are signed and paid for.
const DESCRIPTION: &str = "Paid compute-to-data on private transformer weights.

**Signed requests.** A request that changes state carries a JSON body signed by the wallet \
it names, as EIP-712 typed data `PosthumanRequest(string action,bytes32 bodyHash,uint64 \
expiresAt,string nonce)` with `bodyHash` = keccak256 of the body's exact bytes, under the \
domain `{name: Posthuman, version: 1, chainId, verifyingContract: the address book's \
lineage}` (so a signature for one chain or deployment is refused on another). The body \
carries a single-use `nonce` and an `expires_at` at most 3600 s ahead; the signature is \
0x-hex, 65 bytes. Actions: `publish-model`, `submit-job`, `create-upload`, \
`feature-evaluations`; reading a job's results signs `read-result` over the job id.

**Uploads.** Publish and submit take their files either as a multipart body whose first two \
parts are the signed ones (`request`, then `signature`; a file part before them is a 400, \
and the sender is authorised from them before any file part is read; all upload slots busy \
is a 503 `unavailable` to retry, and a body slower than the upload deadline is cut off), or, \
where the API runs behind API Gateway (6 MB per request), as a direct upload: declare the \
files with `POST /api/uploads`, PUT each where it answers, then send the signed request as \
the JSON body with its signature in `x-posthuman-signature` and the upload in \
`x-posthuman-upload`.

**Payment.** Jobs are paid by an Ocean v4 `startOrder` on the model's datatoken with service \
index 0 (train), 1 (infer) or 2 (evaluate) and the provider fee of a quote \
(`/api/models/{nft}/quote`). A failed job releases its order: submit a new signed request \
naming the same `order_tx` to retry (no refund transaction; the datatoken was spent once).

**Errors** are `{\"error\": code, \"message\": sentence}` (`ErrorBody`), the code stable.";

/// The multipart form of `POST /api/models`. The signed parts come first.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the form; the handler reads it part by part.
pub struct PublishForm {
    /// The signed request (JSON; its exact bytes are signed).
    request: PublishRequest,
    /// The request's signature (0x-hex, 65 bytes).
    signature: String,
    /// HF `config.json` (≤ 64 KiB): GPT-2, Llama, Mistral, Qwen2/3.
    #[schema(format = Binary)]
    config: String,
    /// `model.safetensors` in HF layout (≤ 1 GiB by default); its SHA-256 is
    /// `weights_sha256`.
    #[schema(format = Binary)]
    weights: String,
    /// `tokenizer.json` (≤ 32 MiB).
    #[schema(format = Binary)]
    tokenizer: String,
    /// A PEFT `adapter_config.json`: the model is `weights` plus this LoRA adapter.
    #[schema(format = Binary)]
    adapter_config: Option<String>,
    /// A PEFT `adapter_model.safetensors` (with `adapter_config`); its SHA-256 is
    /// `adapter_sha256`.
    #[schema(format = Binary)]
    adapter_weights: Option<String>,
    /// HF `tokenizer_config.json` (BOS, chat template).
    #[schema(format = Binary)]
    tokenizer_config: Option<String>,
    /// HF `generation_config.json` (stop ids).
    #[schema(format = Binary)]
    generation_config: Option<String>,
    /// A chat template (Jinja), when `tokenizer_config.json` has none.
    #[schema(format = Binary)]
    chat_template: Option<String>,
}

/// A body of raw bytes (a direct upload's file): a string of octets, not an array of numbers.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Describes the body; the handler streams it.
pub struct Octets(Vec<u8>);

/// The multipart form of `POST /api/jobs`. The signed parts come first.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the form; the handler reads it part by part.
pub struct SubmitForm {
    /// The signed request (JSON; its exact bytes are signed).
    request: JobRequest,
    /// The request's signature (0x-hex, 65 bytes).
    signature: String,
    /// UTF-8 text (train and evaluate; ≤ 64 MiB by default); its SHA-256 is
    /// `dataset_sha256`.
    #[schema(format = Binary)]
    dataset: Option<String>,
}

/// The document: every route of [`crate::api::routes`], the schemas they name.
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    let mut schemas = Vec::new();
    for route in crate::api::routes() {
        let operation = (route.doc)(&mut schemas);
        paths.add_path_operation(&route.path, vec![http_method(&route.method)], operation);
    }
    let mut components = ComponentsBuilder::new().schema(ErrorBody::name(), ErrorBody::schema());
    // A generic type's schema names its argument without collecting it: `ChainInfo<Book>`.
    components = components.schema(AddressBook::name(), AddressBook::schema());
    for (name, schema) in schemas {
        components = components.schema(name, schema);
    }
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Posthuman API")
                .version(API_VERSION)
                .description(Some(DESCRIPTION))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build();
    add_error_bodies(&mut doc);
    inline_closed_tagged_variants(&mut doc);
    add_request_examples(&mut doc);
    doc
}

/// serde's internally tagged enums (`JobParams`: `{"kind": "train", …}`) come out of utoipa
/// as `oneOf` of `allOf: [$ref Variant, {kind}]`. When the variant refuses unknown fields
/// (`additionalProperties: false`, from `deny_unknown_fields`), that `allOf` refuses every
/// body: the variant's schema rejects `kind` and the tag's object requires it, although
/// serde takes the tag out before the variant reads the rest. Each such branch becomes one
/// closed object, the variant's properties plus the tag, which is what the server accepts.
fn inline_closed_tagged_variants(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_mut() else { return };
    let as_json: Vec<(String, Value)> = components
        .schemas
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), serde_json::to_value(v).ok()?)))
        .collect();
    let lookup = |name: &str| as_json.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    for (name, schema) in &as_json {
        let Some(branches) = schema["oneOf"].as_array() else { continue };
        let mut changed = false;
        let mut out = Vec::with_capacity(branches.len());
        for branch in branches {
            match merge_tagged_branch(branch, &lookup) {
                Some(merged) => {
                    out.push(merged);
                    changed = true;
                }
                None => out.push(branch.clone()),
            }
        }
        if !changed {
            continue;
        }
        let mut patched = schema.clone();
        patched["oneOf"] = Value::Array(out);
        if let Ok(s) = serde_json::from_value::<RefOr<Schema>>(patched) {
            components.schemas.insert(name.clone(), s);
        }
    }
}

/// `allOf: [{$ref: V}, {type: object, required: [tag], properties: {tag}}]` with V closed →
/// V's object with the tag added; anything else → `None` (left as it is).
fn merge_tagged_branch<'a>(
    branch: &Value,
    lookup: &impl Fn(&str) -> Option<&'a Value>,
) -> Option<Value> {
    let [variant, tag] = branch["allOf"].as_array()?.as_slice() else { return None };
    let target = variant["$ref"].as_str()?.strip_prefix("#/components/schemas/")?;
    let mut merged = lookup(target)?.clone();
    if merged["additionalProperties"] != Value::Bool(false) {
        return None;
    }
    let tag_props = tag["properties"].as_object()?;
    let props = merged["properties"].as_object_mut()?;
    for (k, v) in tag_props {
        props.insert(k.clone(), v.clone());
    }
    let mut required = tag["required"].as_array()?.clone();
    for name in merged["required"].as_array().into_iter().flatten() {
        if !required.contains(name) {
            required.push(name.clone());
        }
    }
    merged["required"] = Value::Array(required);
    merged["title"] = Value::String(target.to_string());
    Some(merged)
}

/// One example of a JSON request body: the schema it is an instance of, its name and summary
/// in the document, the body, and the check that the server's own type reads it.
pub struct RequestExample {
    pub schema: &'static str,
    pub name: &'static str,
    pub summary: &'static str,
    pub body: Value,
    /// Deserializes `body` into the Rust type the handler reads (`Err`: serde's message).
    pub parse: fn(&Value) -> Result<(), String>,
}

fn parses<T: serde::de::DeserializeOwned>(v: &Value) -> Result<(), String> {
    serde_json::from_value::<T>(v.clone()).map(drop).map_err(|e| e.to_string())
}

/// The request bodies the document shows as examples. They are real requests: the server's
/// types read each one (`tests/openapi.rs`), and `functions/check-openapi.sh` validates each
/// against its schema in the document, so a schema that refuses what the server accepts (or
/// the reverse, for these bodies) fails a test.
pub fn request_examples() -> Vec<RequestExample> {
    const NFT: &str = "0x5fbdb2315678afecb367f032d93f642f64180aa3";
    const ALICE: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
    const BOB: &str = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc";
    const TX: &str = "0x8f3c0a6b1d2e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e";
    const SHA: &str = "0x2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const SALT: &str = "0x9a3b7c1d5e2f4a6b8c0d1e3f5a7b9c2d4e6f8a0b1c3d5e7f9a2b4c6d8e0f1a3b";
    let job = |params: Value, dataset: bool| {
        let mut body = json!({
            "model": NFT, "order_tx": TX, "consumer": BOB, "params": params,
            "salt": SALT, "nonce": "d41d8cd98f00b204", "expires_at": 1_796_000_000u64,
        });
        if dataset {
            body["dataset_sha256"] = json!(SHA);
        }
        body
    };
    let train = json!({"kind": "train", "steps": 200, "learning_rate": 3e-4, "warmup_steps": 20,
        "batch_size": 8, "context_len": 256, "seed": 7,
        "name": "M1 · fine-tune 2", "symbol": "M1FT2"});
    let lora = json!({"kind": "train", "steps": 200, "learning_rate": 2e-4, "batch_size": 8,
        "context_len": 256, "lora": {"r": 8, "lora_alpha": 16.0, "lora_dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}});
    let infer = json!({"kind": "infer", "max_new_tokens": 64,
        "messages": [{"role": "user", "content": "Write a haiku about private weights."}],
        "sampling": {"temperature": 0.7, "top_p": 0.9, "seed": 1}});
    let evaluate = json!({"kind": "evaluate", "context_len": 256, "stride": 128,
        "baseline": {"label": "M1", "perplexity": 41.3}});
    vec![
        RequestExample {
            schema: "PublishRequest",
            name: "publish",
            summary: "A base model whose trainers share 1,000 datatokens per derivation",
            body: json!({"name": "Posthuman base", "symbol": "PHBASE",
                "description": "A small Llama-shape model trained on WikiText-2.",
                "owner": ALICE, "price": "2000000000000000000",
                "reward_scheme": {"total_reward": "1000000000000000000000",
                    "shares_bps": [7000, 3000], "royalty": "1000000000000000000"},
                "weights_sha256": SHA, "nonce": "5f4dcc3b5aa765d6", "expires_at": 1_796_000_000u64}),
            parse: parses::<PublishRequest>,
        },
        RequestExample {
            schema: "JobRequest",
            name: "train",
            summary: "Full fine-tuning that names its derived model",
            body: job(train.clone(), true),
            parse: parses::<JobRequest>,
        },
        RequestExample {
            schema: "JobRequest",
            name: "train-lora",
            summary: "LoRA r 8 on the attention projections",
            body: job(lora.clone(), true),
            parse: parses::<JobRequest>,
        },
        RequestExample {
            schema: "JobRequest",
            name: "infer",
            summary: "Chat inference (the model's chat template renders the messages)",
            body: job(infer.clone(), false),
            parse: parses::<JobRequest>,
        },
        RequestExample {
            schema: "JobRequest",
            name: "evaluate",
            summary: "Perplexity against a baseline",
            body: job(evaluate.clone(), true),
            parse: parses::<JobRequest>,
        },
        RequestExample {
            schema: "QuoteTerms",
            name: "train",
            summary: "The price of a train job on a 1 MiB dataset",
            body: json!({"params": train, "dataset_bytes": 1_048_576}),
            parse: parses::<QuoteTerms>,
        },
        RequestExample {
            schema: "QuoteTerms",
            name: "infer",
            summary: "The price of an infer job",
            body: json!({"params": infer}),
            parse: parses::<QuoteTerms>,
        },
        RequestExample {
            schema: "FeatureRequest",
            name: "feature",
            summary: "Feature two evaluations on the card",
            body: json!({"model": NFT, "job_ids": ["j-6f2d64e6a1b2c3d4", "j-b9dba0ef5e6f7a8b"],
                "nonce": "0cc175b9c0f1b6a8", "expires_at": 1_796_000_000u64}),
            parse: parses::<FeatureRequest>,
        },
        RequestExample {
            schema: "CardEdit",
            name: "edit",
            summary: "A new description and two tags",
            body: json!({"model": NFT, "description": "Fine-tuned on legal English.",
                "tags": ["legal", "english"], "nonce": "92eb5ffee6ae2fec", "expires_at": 1_796_000_000u64}),
            parse: parses::<CardEdit>,
        },
        RequestExample {
            schema: "UploadRequest",
            name: "dataset",
            summary: "A dataset to upload straight to storage",
            body: json!({"purpose": "dataset", "owner": BOB,
                "files": [{"name": "dataset", "bytes": 1_048_576, "sha256": SHA}],
                "nonce": "4a8a08f09d37b737", "expires_at": 1_796_000_000u64}),
            parse: parses::<UploadRequest>,
        },
    ]
}

/// Puts [`request_examples`] on the JSON request bodies whose schema they are instances of.
fn add_request_examples(doc: &mut OpenApi) {
    let examples = request_examples();
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            let Some(RefOr::T(body)) = op.request_body.as_mut() else { continue };
            let Some(RefOr::T(content)) = body.content.get_mut("application/json") else {
                continue;
            };
            let Some(RefOr::Ref(r)) = &content.schema else { continue };
            let name = r.ref_location.trim_start_matches("#/components/schemas/").to_string();
            for e in examples.iter().filter(|e| e.schema == name) {
                let example =
                    ExampleBuilder::new().summary(e.summary).value(Some(e.body.clone())).build();
                content.examples.insert(e.name.to_string(), RefOr::T(example));
            }
        }
    }
}

/// The document as committed and served: pretty JSON, one trailing newline.
pub fn json() -> String {
    let mut s = serde_json::to_string_pretty(&document()).unwrap_or_default();
    s.push('\n');
    s
}

/// The conventions of the module docs: error statuses without a body get [`ErrorBody`], and
/// every operation lists 500.
fn add_error_bodies(doc: &mut OpenApi) {
    let error = || Content::new(Some(Ref::from_schema_name(ErrorBody::name())));
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            for (status, response) in op.responses.responses.iter_mut() {
                let is_error = status.starts_with('4') || status.starts_with('5');
                if let RefOr::T(r) = response
                    && is_error
                    && r.content.is_empty()
                {
                    r.content.insert("application/json".into(), RefOr::T(error()));
                }
            }
            let internal: Response = ResponseBuilder::new()
                .description("`internal`: a bug or an unexpected backend failure (details are logged, not returned)")
                .content("application/json", error())
                .build();
            op.responses.responses.entry("500".into()).or_insert(RefOr::T(internal));
        }
    }
}

/// The route table's method as OpenAPI names it.
fn http_method(m: &Method) -> HttpMethod {
    match *m {
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::DELETE => HttpMethod::Delete,
        Method::PATCH => HttpMethod::Patch,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        Method::TRACE => HttpMethod::Trace,
        _ => HttpMethod::Get,
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// What a route contributes to the document: its operation, and the schemas it names pushed
/// onto the list (a route's `doc` in [`crate::api::Route`]).
pub type RouteDoc = fn(&mut Vec<(String, RefOr<Schema>)>) -> Operation;

/// The [`RouteDoc`] of the handler whose `#[utoipa::path]` generated `P`.
pub fn route_doc<P: utoipa::Path + utoipa::__dev::SchemaReferences>(
    schemas: &mut Vec<(String, RefOr<Schema>)>,
) -> Operation {
    P::schemas(schemas);
    P::operation()
}
