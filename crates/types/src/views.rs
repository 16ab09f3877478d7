//! The API's public views: what `GET /api/models`, `/api/jobs`, the quote and the submit
//! answer, as the API serialises them and as its clients (the CLI, the storefront in wasm32)
//! read them. One definition here, so a field added to a view reaches every reader and a
//! reader can never drift from the JSON the API writes (`posthuman-functions` pins that JSON
//! in its tests).
//!
//! Only the shapes live here; the API builds them from its private records
//! (`posthuman_functions::handlers::views`), which hold storage prefixes and job specs that a
//! view must never carry. Readers ignore unknown fields, so the API may grow a view without
//! breaking deployed storefronts.

use serde::{Deserialize, Serialize};

use crate::pricing::{ComputeEstimate, PriceBreakdown};
use crate::{Budget, Hash32, JobKind, JobParams, JobProgress, ModelCard};

mod flat;

/// Job counts by kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCounts {
    pub train: u64,
    pub infer: u64,
    pub evaluate: u64,
}

/// An evaluation shown on a model's card, labelled with who ran it on what: any buyer may
/// evaluate a model, so only `featured` ones are endorsed by its owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvaluationView {
    pub job_id: String,
    /// `"inf"` on the wire when unbounded.
    #[serde(with = "crate::outputs::unbounded")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::unbounded))]
    pub perplexity: f64,
    pub receipt_hash: Option<Hash32>,
    /// The buyer who ran it (the job's consumer).
    pub evaluator: String,
    /// The dataset's commitment as its public receipt states it (salted by the buyer).
    pub dataset_commitment: Option<Hash32>,
    pub context_len: Option<u32>,
    pub stride: Option<u32>,
    /// The model's owner featured it (listed first).
    pub featured: bool,
}

/// A catalogue entry (`GET /api/models` items and `GET /api/models/{nft}`).
///
/// Written with the card's fields flattened in; read through a flat twin that names them
/// inline (`views/flat.rs`: the same JSON, without serde's flatten buffering).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "flat::FlatModelView")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelView {
    #[serde(flatten)]
    pub card: ModelCard,
    /// NFTs from this model's parent up to its root (empty for a root).
    pub lineage: Vec<String>,
    /// NFTs of the models derived from this one, oldest first (at most the API's
    /// `CARD_LATEST`).
    pub children: Vec<String>,
    /// The training job that produced it and its receipt (derived models).
    pub source_job: Option<String>,
    pub receipt_hash: Option<Hash32>,
    pub jobs: JobCounts,
    pub evaluations: Vec<EvaluationView>,
    /// Receipts of the jobs run on this model.
    pub receipts: Vec<Hash32>,
    pub created_at: u64,
    /// The longest context the model attends over: a job's `context_len` is at most this
    /// (the storefront bounds its order form with it, as quote and submit do).
    pub n_positions: u32,
}

/// Where a job stands, for its buyer's progress view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStateView {
    Queued,
    Running,
    /// The worker finished; for a train job, `derived_model` appears once published.
    Succeeded,
    /// The worker failed. `order_reusable`: the order was released and may pay for a retry
    /// (submit a new signed request naming the same order).
    Failed {
        reason: String,
        exit_code: Option<i32>,
        order_reusable: bool,
    },
}

/// A derived model created by a train job's completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChildAsset {
    pub nft: String,
    pub datatoken: String,
    #[serde(default)]
    pub exchange_id: Option<Hash32>,
}

/// A job's public status (`GET /api/jobs/{id}` and the items of `GET /api/jobs?consumer=`).
///
/// Written with the state's tag and fields flattened in; read through a flat twin
/// (`views/flat.rs`: the same JSON, without serde's flatten buffering).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "flat::FlatJobView")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    pub job_id: String,
    pub kind: JobKind,
    pub model: String,
    pub consumer: String,
    pub order_tx: String,
    #[serde(flatten)]
    pub state: JobStateView,
    pub progress: Option<JobProgress>,
    /// A train job's derived model, once created on chain.
    pub derived_model: Option<ChildAsset>,
    /// True when every completion step (receipt, commitment, publication, rewards) is done.
    pub completed: bool,
    pub receipt_hash: Option<Hash32>,
    pub created_at: u64,
    pub updated_at: u64,
}

impl JobView {
    /// Whether the job may still change (so a progress view keeps polling): queued,
    /// running, or succeeded with completion steps (receipt, commitment, publication) left.
    pub fn in_flight(&self) -> bool {
        match self.state {
            JobStateView::Queued | JobStateView::Running => true,
            JobStateView::Succeeded => !self.completed,
            JobStateView::Failed { .. } => false,
        }
    }
}

/// What `POST /api/jobs` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmittedView {
    pub job_id: String,
    pub status_url: String,
}

/// What a quote prices (the body of `POST /api/models/{nft}/quote`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuoteTerms {
    pub params: JobParams,
    /// The dataset's length in bytes (train and evaluate; 0 for infer). The submitted
    /// dataset may be shorter, never longer.
    #[serde(default)]
    pub dataset_bytes: u64,
}

impl QuoteTerms {
    /// The terms the storefront lists for a kind (`GET …/quote?kind=`): a 100-step
    /// fine-tune or a 1 MB evaluation at context ≤ 256, one 256-token generation. Their fee
    /// pays only for exactly these terms.
    pub fn default_for(kind: JobKind, n_positions: u32) -> QuoteTerms {
        use crate::{EvalParams, InferParams, Sampling, TrainParams};
        let context = n_positions.clamp(crate::job::limits::MIN_CONTEXT, 256);
        match kind {
            JobKind::Train => QuoteTerms {
                params: JobParams::Train(TrainParams::new(100, 3e-4, 8, context)),
                dataset_bytes: 1_000_000,
            },
            JobKind::Evaluate => QuoteTerms {
                params: JobParams::Evaluate(EvalParams {
                    context_len: context,
                    stride: context / 2,
                    max_tokens: 0,
                    baseline: None,
                }),
                dataset_bytes: 1_000_000,
            },
            JobKind::Infer => QuoteTerms {
                params: JobParams::Infer(InferParams {
                    prompts: vec![String::new()],
                    max_new_tokens: 256,
                    sampling: Sampling::default(),
                    stop: vec![],
                    messages: vec![],
                }),
                dataset_bytes: 0,
            },
        }
    }
}

/// A provider fee as `startOrder` takes it (amounts and words as decimal / `0x` strings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderFeeView {
    pub provider_fee_address: String,
    pub provider_fee_token: String,
    pub provider_fee_amount: String,
    pub v: u8,
    pub r: String,
    pub s: String,
    pub valid_until: u64,
    pub provider_data: String,
}

/// A quote: the job's terms, their compute and price, and the provider fee that pays for
/// exactly them (`POST /api/models/{nft}/quote`; `GET …/quote?kind=` quotes the kind's
/// default terms, which the storefront lists).
///
/// `Terms` is how a reader takes the echoed terms: the API writes [`QuoteTerms`]; a client
/// that checks the fee against the terms it asked for itself (the storefront) may read
/// them as `serde::de::IgnoredAny`, which skips them without parsing job parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quote<Terms = QuoteTerms> {
    pub model: String,
    pub datatoken: String,
    pub kind: JobKind,
    /// The service index to pass to `startOrder`.
    pub service_index: u64,
    /// Datatokens one job costs.
    pub datatokens: String,
    /// OCEAN base units to buy one datatoken on the exchange (fees included), if on sale.
    pub price: Option<String>,
    pub exchange_id: Option<Hash32>,
    /// What this quote prices; its fee pays for these terms only.
    pub terms: Terms,
    /// The job's compute: tokens, FLOPs, checkpoint bytes, seconds on GPU and CPU.
    pub estimate: ComputeEstimate,
    /// One line per component with its formula; the total is the provider fee.
    pub breakdown: PriceBreakdown,
    /// What the fee buys: the worker refuses more, the queue stops the job at `max_seconds`.
    pub budget: Budget,
    /// Paid inside `startOrder` besides the provider fee: the datatoken's publish-market fee
    /// (for a derived model, its lineage's royalty; 0 for roots).
    pub royalty: RoyaltyLine,
    pub provider_fee: ProviderFeeView,
    /// The fee (and so this quote) is void for orders placed after this time: the order
    /// check compares it with the order's block time.
    pub expires_at: u64,
}

/// The royalty every order of a datatoken pays (Ocean's publish-market fee).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoyaltyLine {
    pub label: String,
    pub token: String,
    /// Base units of `token`.
    pub amount: String,
    pub recipient: String,
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Stable machine-readable code (`bad_request`, `payment_invalid`, …).
    pub error: String,
    /// A human-readable sentence.
    pub message: String,
}

/// The public results of a job (`GET /api/jobs/{job_id}/result`), only to its buyer. Each
/// output is the JSON the worker (or, for the receipt, the operator) wrote, absent until
/// written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobResult {
    pub job: JobView,
    /// Train: `metrics.json` (a `TrainMetrics`: loss curve, hashes).
    pub metrics: Option<serde_json::Value>,
    /// Infer: `completions.json` (`Completion`s: text and token counts).
    pub completions: Option<serde_json::Value>,
    /// Evaluate: `report.json` (an `EvalReport`).
    pub report: Option<serde_json::Value>,
    /// Failed jobs: the worker's `error.json` (class, exit code, public message).
    pub error: Option<serde_json::Value>,
    /// The operator-signed EIP-712 receipt.
    pub receipt: Option<serde_json::Value>,
    /// Infer: one operator-signed attestation per completion.
    #[serde(default)]
    pub attestations: Option<serde_json::Value>,
    /// Evaluate: `report.json` byte for byte (UTF-8), so the buyer can check it against the
    /// output hash the receipt commits to (a re-serialised JSON value would not match).
    #[serde(default)]
    pub report_text: Option<String>,
}

/// `GET /api/chain`: where clients find the chain and the deployment's contracts, for
/// clients that send their own transactions.
///
/// `Book` is the address book as a reader takes it: the API and the CLI use
/// `posthuman_chain::AddressBook` (every contract, as `alloy` addresses); the storefront,
/// which cannot link `posthuman-chain` in wasm32, reads the fields it uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainInfo<Book> {
    /// The RPC clients should use: the configured public URL, or the operator's own when it
    /// is a bare loopback endpoint (the embedded default's anvil); `null` otherwise, since an
    /// operator's provider URL may carry its key. Clients then need their own RPC.
    pub rpc_url: Option<String>,
    /// The deployment: Ocean v4 contracts, `ModelLineage`, `PeerMarket`, the operator.
    pub address_book: Book,
    /// Confirmations an order needs before a job submitted with it is accepted (0 on a
    /// local dev chain, 3 by default elsewhere; a submit sooner gets 425 and may be resent
    /// unchanged). Older servers omit it: 0.
    #[serde(default)]
    pub min_confirmations: u64,
}

/// `GET /api/pricing`: the operator's published rates and the formulas every quote applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PricingView {
    pub rates: crate::pricing::Rates,
    /// The fee token (OCEAN) every provider fee is paid in.
    pub token: String,
    /// `(name, formula)` pairs, in words.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<String>>))]
    pub formulas: Vec<(String, String)>,
}

/// `GET /api/health`: the server is up, and which version it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `"ok"`.
    pub status: String,
    /// The server's crate version.
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::de::tests::same;

    #[test]
    fn a_job_view_as_the_api_writes_it_parses_and_unknown_fields_are_ignored() {
        let v: JobView = serde_json::from_value(serde_json::json!({
            "job_id": "j-1", "kind": "train", "model": "0x01", "consumer": "0x02",
            "order_tx": "0x03", "state": "running",
            "progress": {"kind": "train", "phase": "training", "done": 3, "total": 10,
                         "loss": 4.5, "tokens_per_sec": 100.0, "elapsed_secs": 1.0, "eta_secs": 2.0},
            "derived_model": null, "completed": false, "receipt_hash": null,
            "created_at": 1, "updated_at": 2, "extra_field_from_a_newer_api": true
        }))
        .unwrap();
        assert_eq!(v.state, JobStateView::Running);
        assert!(v.in_flight());
        assert_eq!(v.progress.unwrap().done, 3);
        let failed: JobStateView = serde_json::from_value(serde_json::json!({
            "state": "failed", "reason": "oom", "exit_code": 3, "order_reusable": true
        }))
        .unwrap();
        assert_eq!(
            failed,
            JobStateView::Failed { reason: "oom".into(), exit_code: Some(3), order_reusable: true }
        );
    }

    #[test]
    fn a_succeeded_job_is_in_flight_until_its_completion_is_done() {
        let mut v = JobView {
            job_id: "j-1".into(),
            kind: JobKind::Train,
            model: "0x01".into(),
            consumer: "0x02".into(),
            order_tx: "0x03".into(),
            state: JobStateView::Succeeded,
            progress: None,
            derived_model: None,
            completed: false,
            receipt_hash: None,
            created_at: 1,
            updated_at: 2,
        };
        assert!(v.in_flight());
        v.completed = true;
        assert!(!v.in_flight());
        v.state =
            JobStateView::Failed { reason: "x".into(), exit_code: None, order_reusable: false };
        assert!(!v.in_flight());
    }

    /// The declarations as they were before `views/flat.rs`: serde's own flatten reading,
    /// the reference the flat twins must agree with.
    mod flattened {
        use super::super::*;

        #[derive(Debug, PartialEq, Deserialize)]
        pub struct ModelView {
            #[serde(flatten)]
            pub card: ModelCard,
            pub lineage: Vec<String>,
            pub children: Vec<String>,
            pub source_job: Option<String>,
            pub receipt_hash: Option<Hash32>,
            pub jobs: JobCounts,
            pub evaluations: Vec<EvaluationView>,
            pub receipts: Vec<Hash32>,
            pub created_at: u64,
            pub n_positions: u32,
        }

        #[derive(Debug, PartialEq, Deserialize)]
        pub struct JobView {
            pub job_id: String,
            pub kind: JobKind,
            pub model: String,
            pub consumer: String,
            pub order_tx: String,
            #[serde(flatten)]
            pub state: JobStateView,
            pub progress: Option<JobProgress>,
            pub derived_model: Option<ChildAsset>,
            pub completed: bool,
            pub receipt_hash: Option<Hash32>,
            pub created_at: u64,
            pub updated_at: u64,
        }
    }

    fn model_view(derived: bool) -> ModelView {
        let h = |b| Hash32([b; 32]);
        ModelView {
            card: ModelCard {
                nft: "0x01".into(),
                datatoken: "0x02".into(),
                name: "M2 · fine-tune \"1\"".into(),
                symbol: "M2-1".into(),
                description: "a\nb".into(),
                owner: "0x03".into(),
                weights_hash: h(4),
                parent: derived.then(|| "0x05".into()),
                trainer: derived.then(|| "0x06".into()),
                architecture: "gpt2 4L/256d/4h ctx256 vocab8000".into(),
                parameters: 3_300_000,
                exchange_id: derived.then(|| h(7)),
                price: derived.then(|| "1500000000000000000".into()),
                reward_scheme: crate::RewardScheme::geometric(10, 5000, 2).with_royalty(3),
                lora: derived.then(|| crate::LoraOutput {
                    r: 8,
                    lora_alpha: 16.0,
                    lora_dropout: 0.05,
                    target_modules: vec!["c_attn".into(), "c_fc".into()],
                    targeted_layers: 8,
                    adapter_params: 65_536,
                    adapter_hash: h(8),
                    adapter_bytes: 262_144,
                    checkpoint_bytes: 786_432,
                }),
                tags: if derived { vec!["chat".into()] } else { vec![] },
                license: derived.then(|| "LicenseRef-llama3.2-community".into()),
            },
            lineage: if derived { vec!["0x05".into()] } else { vec![] },
            children: vec!["0x09".into()],
            source_job: derived.then(|| "j-1".into()),
            receipt_hash: derived.then(|| h(10)),
            jobs: JobCounts { train: 1, infer: 2, evaluate: 3 },
            evaluations: vec![EvaluationView {
                job_id: "j-2".into(),
                perplexity: if derived { 40.5 } else { f64::INFINITY },
                receipt_hash: Some(h(11)),
                evaluator: "0x0c".into(),
                dataset_commitment: None,
                context_len: Some(128),
                stride: None,
                featured: derived,
            }],
            receipts: vec![h(12), h(13)],
            created_at: 1_700_000_000,
            n_positions: 256,
        }
    }

    /// Read as serde's flatten read it, written as before (`Serialize` is unchanged), and the
    /// text read back is the text written: the wire format the API, CLI and JS tests read.
    #[test]
    fn a_model_view_reads_as_the_flattened_declaration_read_it() {
        for derived in [false, true] {
            let v = model_view(derived);
            let text = serde_json::to_string(&v).unwrap();
            same::<ModelView>(&text);
            let back: ModelView = serde_json::from_str(&text).unwrap();
            assert_eq!(back, v);
            assert_eq!(serde_json::to_string(&back).unwrap(), text, "byte-identical");
            let old: flattened::ModelView = serde_json::from_str(&text).unwrap();
            assert_eq!(old.card, back.card);
            assert_eq!(format!("{:?}", old.evaluations), format!("{:?}", back.evaluations));
        }
        // The card's fields sit beside the view's own, in declaration order.
        let text = serde_json::to_string(&model_view(false)).unwrap();
        assert!(text.starts_with(r#"{"nft":"0x01","datatoken":"0x02","name":"#), "{text}");
        assert!(
            text.contains(r#""royalty":"3"},"tags":[],"lineage":[],"children":["0x09"],"#),
            "{text}"
        );
        assert!(!text.contains("lora"), "None is skipped: {text}");
        assert!(!text.contains("license"), "None is skipped: {text}");
        assert!(text.contains(r#""perplexity":"inf""#), "{text}");

        // What older APIs omit takes the card's defaults; unknown fields are ignored; what
        // is required stays required, with serde's words.
        let mut j = serde_json::to_value(model_view(true)).unwrap();
        let o = j.as_object_mut().unwrap();
        for k in ["parent", "trainer", "exchange_id", "price", "lora", "license"] {
            o.remove(k);
        }
        o.insert("a_field_from_a_newer_api".into(), true.into());
        let text = j.to_string();
        same::<ModelView>(&text);
        let new: ModelView = serde_json::from_str(&text).unwrap();
        let old: flattened::ModelView = serde_json::from_str(&text).unwrap();
        assert_eq!((&new.card.parent, &new.card.lora), (&None, &None));
        assert_eq!(new.card.license_text(), crate::model::MODEL_LICENSE);
        assert_eq!(new.card, old.card);
        assert_eq!((new.lineage, new.n_positions), (old.lineage, old.n_positions));
        for k in ["nft", "reward_scheme", "n_positions", "jobs"] {
            let mut j = serde_json::to_value(model_view(true)).unwrap();
            j.as_object_mut().unwrap().remove(k);
            same::<ModelView>(&j.to_string());
            let e = serde_json::from_str::<ModelView>(&j.to_string()).unwrap_err();
            assert!(e.to_string().contains(&format!("missing field `{k}`")), "{e}");
            assert!(serde_json::from_str::<flattened::ModelView>(&j.to_string()).is_err());
        }
        let mut j = serde_json::to_value(model_view(true)).unwrap();
        j["parameters"] = "many".into();
        same::<ModelView>(&j.to_string());
        assert!(serde_json::from_str::<ModelView>(&j.to_string()).is_err());
    }

    #[test]
    fn a_job_view_reads_as_the_flattened_declaration_read_it_in_every_state() {
        let states = [
            JobStateView::Queued,
            JobStateView::Running,
            JobStateView::Succeeded,
            JobStateView::Failed { reason: "oom".into(), exit_code: Some(3), order_reusable: true },
            JobStateView::Failed { reason: "x".into(), exit_code: None, order_reusable: false },
        ];
        for state in states {
            let v = JobView {
                job_id: "j-1".into(),
                kind: JobKind::Evaluate,
                model: "0x01".into(),
                consumer: "0x02".into(),
                order_tx: "0x03".into(),
                state,
                progress: Some(JobProgress {
                    kind: JobKind::Evaluate,
                    phase: "evaluating".into(),
                    done: 3,
                    total: 10,
                    loss: None,
                    tokens_per_sec: 100.5,
                    elapsed_secs: 1.0,
                    eta_secs: Some(2.0),
                }),
                derived_model: Some(ChildAsset {
                    nft: "0x04".into(),
                    datatoken: "0x05".into(),
                    exchange_id: Some(Hash32([6; 32])),
                }),
                completed: true,
                receipt_hash: Some(Hash32([7; 32])),
                created_at: 1,
                updated_at: 2,
            };
            let text = serde_json::to_string(&v).unwrap();
            same::<JobView>(&text);
            let back: JobView = serde_json::from_str(&text).unwrap();
            assert_eq!(back, v);
            assert_eq!(serde_json::to_string(&back).unwrap(), text, "byte-identical");
            let old: flattened::JobView = serde_json::from_str(&text).unwrap();
            assert_eq!(old.state, back.state);
        }
        let failed = r#"{"job_id":"j","kind":"train","model":"m","consumer":"c","order_tx":"t",
            "state":"failed","reason":"r","order_reusable":false,"progress":null,
            "derived_model":null,"completed":true,"receipt_hash":null,"created_at":1,"updated_at":2}"#;
        let text =
            serde_json::to_string(&serde_json::from_str::<JobView>(failed).unwrap()).unwrap();
        assert!(text.contains(r#""order_tx":"t","state":"failed","reason":"r","exit_code":null,"order_reusable":false,"progress":null"#), "{text}");
        // A state's fields are required where the state has them and ignored elsewhere, an
        // unknown state is refused: as the flattened enum read them.
        let with = |from: &str, to: &str| failed.replace(from, to);
        let cases = [
            (with(r#""reason":"r","#, ""), false),
            (with(r#""order_reusable":false,"#, ""), false),
            (with(r#""state":"failed""#, r#""state":"running""#), true),
            (with(r#""state":"failed""#, r#""state":"lost""#), false),
            (with(r#""state":"failed","#, ""), false),
            (with(r#""reason":"r""#, r#""reason":7"#), false),
        ];
        for (doc, ok) in cases {
            same::<JobView>(&doc);
            let new = serde_json::from_str::<JobView>(&doc);
            let old = serde_json::from_str::<flattened::JobView>(&doc);
            assert_eq!((new.is_ok(), old.is_ok()), (ok, ok), "{doc}");
            if let (Ok(n), Ok(o)) = (new, old) {
                assert_eq!(n.state, o.state);
            }
        }
    }

    #[test]
    fn quote_terms_refuse_unknown_fields() {
        let mut body = serde_json::json!({
            "params": {"kind": "infer", "prompts": ["a"], "max_new_tokens": 1},
            "dataset_bytes": 0
        });
        let terms: QuoteTerms = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(terms.params.kind(), JobKind::Infer);
        body["surprise"] = 1.into();
        assert!(serde_json::from_value::<QuoteTerms>(body).is_err());
    }
    /// A quote as the API writes it reads the same through `de::MapStructs` (the storefront's
    /// reader), with its terms parsed or skipped.
    #[test]
    fn a_quote_reads_the_same_through_map_structs() {
        let h = "0x".to_string() + &"ab".repeat(32);
        let quote = format!(
            r#"{{"model":"0x01","datatoken":"0x02","kind":"infer","service_index":0,
            "datatokens":"1000000000000000000","price":null,"exchange_id":"{h}",
            "terms":{{"params":{{"kind":"infer","prompts":["a"],"max_new_tokens":1}},"dataset_bytes":0}},
            "estimate":{{"tokens":1,"flops":2,"checkpoint_bytes":0,"seconds_gpu":1,"seconds_cpu":3}},
            "breakdown":{{"lines":[{{"label":"compute","formula":"1 s × 2","amount":"2"}}],"total":"2"}},
            "budget":{{"tokens":1,"flops":2,"checkpoint_bytes":0,"max_seconds":60}},
            "royalty":{{"label":"royalty","token":"0x03","amount":"0","recipient":"0x04"}},
            "provider_fee":{{"provider_fee_address":"0x05","provider_fee_token":"0x06",
              "provider_fee_amount":"2","v":27,"r":"0x07","s":"0x08","valid_until":9,
              "provider_data":"0x09"}},
            "expires_at":10}}"#
        );
        let q: Quote = serde_json::from_str(&quote).unwrap();
        assert_eq!(q.breakdown.total.0, 2);
        same::<Quote>(&quote);
        same::<Quote<serde::de::IgnoredAny>>(&quote);
        same::<Quote>(&quote.replace(r#""total":"2""#, r#""total":"2","x":1"#));
        same::<Quote>(&quote.replace(r#""v":27"#, r#""v":270"#));
        same::<ErrorBody>(r#"{"error":"too_large","message":"m"}"#);
    }
}
