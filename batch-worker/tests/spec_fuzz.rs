//! Fuzzing the job-spec boundary: arbitrary bytes, arbitrary JSON and mutated valid specs
//! never panic, and whatever parses has passed validation.
#![allow(clippy::unwrap_used)]

mod common;

use proptest::prelude::*;
use serde_json::Value;

use posthuman_worker::{exit, parse_spec};

fn valid_json() -> Value {
    serde_json::to_value(common::train_spec("job-z")).unwrap()
}

/// Arbitrary JSON values, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 6] =
    ["job_id", "model_prefix", "dataset_key", "private_prefix", "public_prefix", "params"];
const TRAIN_FIELDS: [&str; 9] = [
    "steps",
    "learning_rate",
    "batch_size",
    "context_len",
    "warmup_steps",
    "grad_accum",
    "eps",
    "dropout",
    "checkpoint_every",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = parse_spec(&bytes) {
            prop_assert!(e.exit_code() == exit::BAD_SPEC || e.exit_code() == exit::OUT_OF_RANGE);
        }
    }

    #[test]
    fn arbitrary_json_is_rejected_cleanly(v in any_json()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(spec) = parse_spec(&bytes) {
            prop_assert!(spec.validate().is_ok());
        }
    }

    #[test]
    fn mutated_specs_are_validated(field in 0usize..6, tfield in 0usize..9, v in any_json(), top in any::<bool>()) {
        let mut spec = valid_json();
        if top {
            spec[FIELDS[field]] = v;
        } else {
            spec["params"][TRAIN_FIELDS[tfield]] = v;
        }
        let bytes = serde_json::to_vec(&spec).unwrap();
        match parse_spec(&bytes) {
            Ok(s) => prop_assert!(s.validate().is_ok()),
            Err(e) => prop_assert!(e.exit_code() == exit::BAD_SPEC || e.exit_code() == exit::OUT_OF_RANGE),
        }
    }

    #[test]
    fn out_of_range_numbers_are_out_of_range(steps in 100_001u64..u32::MAX as u64, lr in 0.1001f64..1e6) {
        let mut spec = valid_json();
        spec["params"]["steps"] = steps.into();
        prop_assert_eq!(parse_spec(&serde_json::to_vec(&spec).unwrap()).unwrap_err().exit_code(), exit::OUT_OF_RANGE);
        let mut spec = valid_json();
        spec["params"]["learning_rate"] = lr.into();
        prop_assert_eq!(parse_spec(&serde_json::to_vec(&spec).unwrap()).unwrap_err().exit_code(), exit::OUT_OF_RANGE);
    }
}

#[test]
fn the_valid_spec_parses() {
    let bytes = serde_json::to_vec(&valid_json()).unwrap();
    assert_eq!(parse_spec(&bytes).unwrap(), common::train_spec("job-z"));
}
