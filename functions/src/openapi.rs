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
use posthuman_types::requests::{JobRequest, PublishRequest};
use posthuman_types::views::ErrorBody;

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
    doc
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
