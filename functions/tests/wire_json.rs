//! The API's request and response types, read and written through the paths the API has
//! always exported them at, against JSON pinned byte for byte. The definitions now live in
//! `posthuman_types` (the CLI and the storefront share them, and the OpenAPI document is
//! generated from them); this file ran unchanged against the definitions before the move, so
//! it shows the move changed no byte of any request a client signs or any answer it reads.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

use alloy::primitives::Address;
use posthuman_chain::AddressBook;
use posthuman_functions::handlers::featured::FeatureRequest;
use posthuman_functions::handlers::jobs::{JobRequest, JobResult};
use posthuman_functions::handlers::models::{ChainInfo, PublishRequest};
use posthuman_functions::handlers::ocean::{ComputeStart, InitializeCompute, ResultQuery};
use posthuman_functions::handlers::pricing::PricingView;
use posthuman_functions::handlers::views::{JobStateView, JobView};
use posthuman_types::pricing::Rates;
use posthuman_types::views::ChildAsset;
use posthuman_types::{
    Hash32, InferParams, JobKind, JobParams, JobProgress, RewardScheme, Sampling, TrainParams,
};

/// Writes `value` and checks the exact text, then reads the text back to the same value.
fn pinned<T>(value: &T, json: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(serde_json::to_string(value).unwrap(), json);
    assert_eq!(&serde_json::from_str::<T>(json).unwrap(), value);
}

fn addr(last: u8) -> Address {
    let mut a = [0u8; 20];
    a[19] = last;
    Address::from(a)
}

const H1: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";
const H2: &str = "0x2222222222222222222222222222222222222222222222222222222222222222";

#[test]
fn a_publish_request_is_the_same_json() {
    let mut r = PublishRequest {
        name: "Tiny".into(),
        symbol: "TNY".into(),
        description: "a model".into(),
        owner: "0x00000000000000000000000000000000000000a1".into(),
        price: "1000000000000000000".into(),
        reward_scheme: RewardScheme::geometric(1000, 5000, 2).with_royalty(7),
        weights_sha256: Hash32([0x11; 32]),
        adapter_sha256: None,
        license: None,
        nonce: "n-1".into(),
        expires_at: 1_700_000_000,
    };
    pinned(
        &r,
        &format!(
            r#"{{"name":"Tiny","symbol":"TNY","description":"a model","owner":"0x00000000000000000000000000000000000000a1","price":"1000000000000000000","reward_scheme":{{"total_reward":"1000","shares_bps":[5000,2500],"royalty":"7"}},"weights_sha256":"{H1}","nonce":"n-1","expires_at":1700000000}}"#
        ),
    );
    r.adapter_sha256 = Some(Hash32([0x22; 32]));
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains(&format!(r#""weights_sha256":"{H1}","adapter_sha256":"{H2}","nonce""#)));
    r.license = Some("LicenseRef-llama3.2-community".into());
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains(r#""license":"LicenseRef-llama3.2-community","nonce""#), "{json}");
    // Signed bytes never carry a field the API would drop.
    let extra = json.replacen('{', r#"{"surprise":1,"#, 1);
    assert!(serde_json::from_str::<PublishRequest>(&extra).is_err());
}

#[test]
fn a_job_request_is_the_same_json() {
    let mut params = TrainParams::new(10, 3e-4, 2, 32);
    params.name = Some("Mine".into());
    let mut r = JobRequest {
        model: "0x00000000000000000000000000000000000000aa".into(),
        order_tx: format!("0x{}", "ab".repeat(32)),
        consumer: "0x00000000000000000000000000000000000000b0".into(),
        params: JobParams::Train(params),
        dataset_sha256: Some(Hash32([0x11; 32])),
        salt: Hash32([0x22; 32]),
        nonce: "n-2".into(),
        expires_at: 1_700_000_001,
        quoted_dataset_bytes: None,
    };
    pinned(
        &r,
        &format!(
            r#"{{"model":"0x00000000000000000000000000000000000000aa","order_tx":"0x{}","consumer":"0x00000000000000000000000000000000000000b0","params":{{"kind":"train","steps":10,"learning_rate":0.0003,"warmup_steps":0,"min_lr_ratio":0.1,"batch_size":2,"grad_accum":1,"context_len":32,"weight_decay":0.01,"beta1":0.9,"beta2":0.999,"eps":1e-8,"grad_clip":1.0,"dropout":0.0,"checkpoint_every":10,"seed":0,"name":"Mine"}},"dataset_sha256":"{H1}","salt":"{H2}","nonce":"n-2","expires_at":1700000001}}"#,
            "ab".repeat(32)
        ),
    );
    r.params = JobParams::Infer(InferParams {
        prompts: vec!["Hello".into()],
        max_new_tokens: 4,
        sampling: Sampling { temperature: 0.7, top_k: Some(5), top_p: None, seed: 3 },
        stop: vec![],
        messages: vec![],
    });
    r.dataset_sha256 = None;
    r.quoted_dataset_bytes = Some(99);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains(r#""params":{"kind":"infer","prompts":["Hello"],"max_new_tokens":4,"sampling":{"temperature":0.7,"top_k":5,"top_p":null,"seed":3},"stop":[]},"dataset_sha256":null,"#), "{json}");
    assert!(json.ends_with(r#""expires_at":1700000001,"quoted_dataset_bytes":99}"#), "{json}");
    assert_eq!(serde_json::from_str::<JobRequest>(&json).unwrap(), r);
}

fn job_view() -> JobView {
    JobView {
        job_id: "j-1".into(),
        kind: JobKind::Train,
        model: "0x01".into(),
        consumer: "0x02".into(),
        order_tx: "0x03".into(),
        state: JobStateView::Failed {
            reason: "oom".into(),
            exit_code: Some(3),
            order_reusable: true,
        },
        progress: Some(JobProgress {
            kind: JobKind::Train,
            phase: "training".into(),
            done: 3,
            total: 10,
            loss: Some(4.5),
            tokens_per_sec: 100.0,
            elapsed_secs: 1.0,
            eta_secs: None,
        }),
        derived_model: Some(ChildAsset {
            nft: "0x04".into(),
            datatoken: "0x05".into(),
            exchange_id: None,
        }),
        completed: false,
        receipt_hash: Some(Hash32([0x11; 32])),
        created_at: 1,
        updated_at: 2,
    }
}

#[test]
fn a_job_result_is_the_same_json() {
    let r = JobResult {
        job: job_view(),
        metrics: Some(serde_json::json!({"final_loss": 3.5, "steps": 10})),
        completions: None,
        report: None,
        error: Some(serde_json::json!({"class": "oom", "exit_code": 3})),
        receipt: None,
        attestations: None,
        report_text: Some("{\"perplexity\":12.5}".into()),
    };
    pinned(
        &r,
        &format!(
            r#"{{"job":{{"job_id":"j-1","kind":"train","model":"0x01","consumer":"0x02","order_tx":"0x03","state":"failed","reason":"oom","exit_code":3,"order_reusable":true,"progress":{{"kind":"train","phase":"training","done":3,"total":10,"loss":4.5,"tokens_per_sec":100.0,"elapsed_secs":1.0,"eta_secs":null}},"derived_model":{{"nft":"0x04","datatoken":"0x05","exchange_id":null}},"completed":false,"receipt_hash":"{H1}","created_at":1,"updated_at":2}},"metrics":{{"final_loss":3.5,"steps":10}},"completions":null,"report":null,"error":{{"class":"oom","exit_code":3}},"receipt":null,"attestations":null,"report_text":"{{\"perplexity\":12.5}}"}}"#
        ),
    );
    // Older servers wrote neither `attestations` nor `report_text`.
    let old = r#"{"job":JOB,"metrics":null,"completions":null,"report":null,"error":null,"receipt":null}"#
        .replace("JOB", &serde_json::to_string(&job_view()).unwrap());
    let read: JobResult = serde_json::from_str(&old).unwrap();
    assert_eq!((read.attestations, read.report_text), (None, None));
}

#[test]
fn chain_info_is_the_same_json_and_older_servers_parse() {
    let book = AddressBook {
        chain_id: 31337,
        operator: addr(1),
        ocean: addr(2),
        opf_collector: addr(3),
        router: addr(4),
        fixed_rate: addr(5),
        dispenser: addr(6),
        erc20_template: addr(7),
        erc721_template: addr(8),
        factory: addr(9),
        lineage: addr(10),
        market: addr(11),
        deployed_at_block: 42,
    };
    let info = ChainInfo {
        rpc_url: Some("http://127.0.0.1:8545".into()),
        address_book: book,
        min_confirmations: 3,
    };
    let a = |n: u8| format!("0x{:040x}", n);
    pinned(
        &info,
        &format!(
            r#"{{"rpc_url":"http://127.0.0.1:8545","address_book":{{"chain_id":31337,"operator":"{}","ocean":"{}","opf_collector":"{}","router":"{}","fixed_rate":"{}","dispenser":"{}","erc20_template":"{}","erc721_template":"{}","factory":"{}","lineage":"{}","market":"{}","deployed_at_block":42}},"min_confirmations":3}}"#,
            a(1),
            a(2),
            a(3),
            a(4),
            a(5),
            a(6),
            a(7),
            a(8),
            a(9),
            a(10),
            a(11)
        ),
    );
    let mut old = serde_json::to_value(&info).unwrap();
    old.as_object_mut().unwrap().remove("min_confirmations");
    let read: ChainInfo = serde_json::from_value(old).unwrap();
    assert_eq!(read.min_confirmations, 0);
}

#[test]
fn the_pricing_view_is_the_same_json() {
    let v = PricingView {
        rates: Rates::default(),
        token: "0x02".into(),
        formulas: vec![("compute".into(), "flops × per_tflop".into())],
    };
    let rates = serde_json::to_string(&Rates::default()).unwrap();
    pinned(
        &v,
        &format!(
            r#"{{"rates":{rates},"token":"0x02","formulas":[["compute","flops × per_tflop"]]}}"#
        ),
    );
}

#[test]
fn a_feature_request_reads_as_before_and_refuses_unknown_fields() {
    let body = r#"{"model":"0xaa","job_ids":["j-1","j-2"],"nonce":"n","expires_at":5}"#;
    let r: FeatureRequest = serde_json::from_str(body).unwrap();
    assert_eq!(
        (r.model.as_str(), r.job_ids.len(), r.nonce.as_str(), r.expires_at),
        ("0xaa", 2, "n", 5)
    );
    let extra = body.replacen('{', r#"{"x":1,"#, 1);
    assert!(serde_json::from_str::<FeatureRequest>(&extra).is_err());
}

#[test]
fn ocean_requests_read_as_ocean_js_sends_them() {
    let init: InitializeCompute = serde_json::from_value(serde_json::json!({
        "datasets": [{"documentId": "did:op:1", "serviceId": "infer",
                      "userdata": {"params": {"kind": "infer", "prompts": ["a"], "max_new_tokens": 1}}}],
        "algorithm": {"meta": {}}, "environment": "posthuman",
        "payment": {"chainId": 8996, "token": "0x02"}, "somethingNew": true
    }))
    .unwrap();
    let d = &init.datasets[0];
    assert_eq!((d.document_id.as_str(), d.service_id.as_str()), ("did:op:1", "infer"));
    assert!(matches!(d.userdata.as_ref().unwrap().params, Some(JobParams::Infer(_))));
    assert_eq!(init.payment.unwrap().chain_id, Some(8996));
    // `userdata` is ours: a misspelt key is refused.
    let bad = serde_json::json!({"datasets": [{"documentId": "d", "serviceId": "train",
                                                "userdata": {"param": {}}}]});
    assert!(serde_json::from_value::<InitializeCompute>(bad).is_err());

    let start: ComputeStart = serde_json::from_value(serde_json::json!({
        "consumerAddress": "0xb0", "signature": "0x99", "nonce": 17,
        "datasets": [{"documentId": "did:op:1", "serviceId": "train", "transferTxId": "0xab",
                      "userdata": {"dataset": "text", "salt": H1, "dataset_bytes": 10}}]
    }))
    .unwrap();
    assert_eq!(start.nonce, serde_json::json!(17));
    let u = start.datasets[0].userdata.clone().unwrap();
    assert_eq!(
        (u.dataset.as_deref(), u.salt, u.dataset_bytes),
        (Some("text"), Some(Hash32([0x11; 32])), Some(10))
    );
    assert_eq!(start.datasets[0].transfer_tx_id.as_deref(), Some("0xab"));

    let q: ResultQuery = serde_json::from_value(serde_json::json!({
        "consumerAddress": "0xb0", "jobId": "j-1", "index": 2, "nonce": "5", "signature": "0x99"
    }))
    .unwrap();
    assert_eq!((q.job_id.as_str(), q.index), ("j-1", 2));
}
