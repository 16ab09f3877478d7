//! `posthuman_receipts::json::from_str` (the storefront's JSON reader) reads receipts,
//! evaluation reports and request bodies exactly as `serde_json::from_str` does, and the
//! receipt's text survives the round trip byte for byte (its hash is over those bytes).

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use std::fmt::Debug;

use common::*;
use posthuman_receipts::{SignedReceipt, json};
use posthuman_types::{EvalReport, JobParams};
use serde::de::DeserializeOwned;

/// The same value (or the same error, in the same words) through both readers.
fn same<T: DeserializeOwned + PartialEq + Debug>(text: &str) -> Option<T> {
    let plain = serde_json::from_str::<T>(text).map_err(|e| e.to_string());
    let ours = json::from_str::<T>(text).map_err(|e| e.to_string());
    assert_eq!(ours, plain, "{text}");
    ours.ok()
}

#[test]
fn signed_receipts_of_every_kind_read_the_same_and_round_trip() {
    for params in [
        JobParams::Train(train_params()),
        JobParams::Infer(infer_params()),
        JobParams::Evaluate(eval_params()),
    ] {
        let s = signed(receipt_with("job-1", params, |_| {}));
        let text = serde_json::to_string(&s).unwrap();
        let back: SignedReceipt = same(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text, "byte-identical");
        let pretty = serde_json::to_string_pretty(&s).unwrap();
        same::<SignedReceipt>(&pretty);
        // Damaged: a field missing, a wrong type, trailing text.
        same::<SignedReceipt>(&text.replacen(r#""signature""#, r#""sig""#, 1));
        same::<SignedReceipt>(&text.replacen(
            r#""started_at":1780000000"#,
            r#""started_at":"x""#,
            1,
        ));
        same::<SignedReceipt>(&format!("{text} ]"));
    }
}

#[test]
fn evaluation_reports_read_the_same_bounded_or_not() {
    let h = format!("0x{}", "ab".repeat(32));
    let report = format!(
        r#"{{"weights_hash":"{h}","dataset_hash":"{h}","tokens_scored":10,"context_len":64,
        "stride":32,"mean_nll":1.5,"perplexity":4.4816890703380645,"baseline_label":"gpt2",
        "baseline_perplexity":9.5,"ratio_to_baseline":0.47,"tokens_per_sec":100.25}}"#
    );
    let r: EvalReport = same(&report).unwrap();
    assert_eq!((r.tokens_scored, r.baseline_perplexity), (10, Some(9.5)));
    let unbounded = report.replace("1.5,", "null,").replace("4.4816890703380645", "null");
    assert!(same::<EvalReport>(&unbounded).unwrap().perplexity.is_infinite());
    same::<EvalReport>(&report.replace(r#""stride":32,"#, ""));
    same::<serde_json::Value>(&report);
}

#[test]
fn values_read_the_same_through_from_value() {
    let v = serde_json::to_value(train_params()).unwrap();
    let ours: posthuman_types::TrainParams = json::from_value(v.clone()).unwrap();
    assert_eq!(ours, serde_json::from_value(v.clone()).unwrap());
    let mut extra = v.clone();
    extra["surprise"] = 1.into();
    assert_eq!(
        json::from_value::<posthuman_types::TrainParams>(extra.clone()).unwrap_err().to_string(),
        serde_json::from_value::<posthuman_types::TrainParams>(extra).unwrap_err().to_string()
    );
    // A train receipt's params read back as TrainParams through it.
    let r = receipt_with("job-1", JobParams::Train(train_params()), |_| {});
    assert_eq!(r.train_params().unwrap(), train_params());
    // The one difference: a struct as an array of its fields.
    let arr = serde_json::json!([1, 2, 3]);
    assert!(serde_json::from_value::<posthuman_types::views::JobCounts>(arr.clone()).is_ok());
    assert!(json::from_value::<posthuman_types::views::JobCounts>(arr).is_err());
}
