//! Receipts and attestations: signing, verification, and each refusal with its own reason.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON rules)

mod common;

use alloy::primitives::{B256, U256, keccak256};
use alloy::sol_types::SolValue;
use common::*;
use posthuman_receipts::{
    Attestation, Receipt, ReceiptDomain, ReceiptError, SignedAttestation, SignedReceipt,
    parse_signature, sign,
};
use posthuman_types::{Hash32, JobParams};
use serde_json::Value;

fn train() -> Receipt {
    receipt_with("job-train-1", JobParams::Train(train_params()), |_| {})
}

#[test]
fn good_receipts_of_every_kind_verify_after_a_json_round_trip() {
    let receipts = [
        train(),
        receipt_with("job-infer-1", JobParams::Infer(infer_params()), |_| {}),
        receipt_with("job-eval-1", JobParams::Evaluate(eval_params()), |_| {}),
    ];
    for r in receipts {
        let s = signed(r.clone());
        let json = serde_json::to_string_pretty(&s).unwrap();
        let back: SignedReceipt = serde_json::from_str(&json).unwrap();
        let v = back.verify(operator().address(), &domain()).unwrap();
        assert_eq!(v.body(), &r);
        assert_eq!(v.signer(), operator().address());
        // The digest that was signed is the documented on-chain receipt hash.
        assert_eq!(v.digest(), r.receipt_hash(&domain()));
        assert_eq!(back.digest(), r.receipt_hash(&domain()));
    }
}

/// Recomputes the EIP-712 digest from its definition, independently of `sol!`, so the type
/// string and encoding documented for the contract and for wallets are the ones used.
#[test]
fn receipt_hash_is_the_eip712_digest_as_documented() {
    let r = train();
    let d = domain();
    let type_string = "JobReceipt(string jobId,string kind,address model,address datatoken,\
        bytes32 orderTx,address consumer,bytes32 inputWeightsHash,bytes32 inputDataHash,\
        string workerVersion,bytes32 paramsHash,uint64 seed,bytes32 checkpointRoot,\
        uint32 checkpointInterval,bytes32 outputWeightsHash,bytes32 outputHash,\
        uint64 startedAt,uint64 endedAt)";
    let b = |h: &Hash32| B256::from(h.0);
    let fields = (
        keccak256(type_string),
        keccak256(r.job_id.as_bytes()),
        keccak256(r.kind.as_str()),
        r.model,
        r.datatoken,
        b(&r.order_tx),
        r.consumer,
        b(&r.input_weights_hash),
        b(&r.input_data_hash),
        keccak256(r.worker_version.as_bytes()),
        b(&r.params_hash),
        U256::from(r.seed),
    );
    let rest = (
        b(&r.checkpoint_root),
        U256::from(r.checkpoint_interval),
        b(&r.output_weights_hash),
        b(&r.output_hash),
        U256::from(r.started_at),
        U256::from(r.ended_at),
    );
    let mut enc = fields.abi_encode();
    enc.extend(rest.abi_encode());
    let struct_hash = keccak256(&enc);
    assert_eq!(Hash32(struct_hash.0), r.struct_hash());
    let domain_type =
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
    let sep = keccak256(
        (
            keccak256(domain_type),
            keccak256("Posthuman"),
            keccak256("1"),
            U256::from(d.chain_id),
            d.verifying_contract,
        )
            .abi_encode(),
    );
    assert_eq!(Hash32(sep.0), d.separator());
    let mut pre = vec![0x19, 0x01];
    pre.extend_from_slice(sep.as_slice());
    pre.extend_from_slice(struct_hash.as_slice());
    assert_eq!(Hash32(keccak256(&pre).0), r.receipt_hash(&d));
    assert_eq!(r.eip712_encoding().len(), 17 * 32);
}

#[test]
fn wrong_signer_is_named() {
    let s = sign(train(), &key(9), &domain()).unwrap();
    let e = s.verify(operator().address(), &domain()).unwrap_err();
    assert_eq!(
        e,
        ReceiptError::WrongSigner { expected: operator().address(), found: key(9).address() }
    );
}

#[test]
fn forged_signer_claim_is_a_signature_mismatch() {
    // Signed by another key but claiming to be the operator's.
    let mut s = sign(train(), &key(9), &domain()).unwrap();
    s.signer = operator().address();
    let e = s.verify(operator().address(), &domain()).unwrap_err();
    assert_eq!(
        e,
        ReceiptError::SignatureMismatch {
            claimed: operator().address(),
            recovered: key(9).address()
        }
    );
}

#[test]
fn wrong_domain_is_named() {
    let other = ReceiptDomain::new(1, addr(0x11));
    let s = sign(train(), &operator(), &other).unwrap();
    let e = s.verify(operator().address(), &domain()).unwrap_err();
    assert_eq!(e, ReceiptError::WrongDomain { expected: domain(), found: other });
    // Relabelling the domain does not help: the signature covers it.
    let mut relabelled = s.clone();
    relabelled.domain = domain();
    assert!(matches!(
        relabelled.verify(operator().address(), &domain()),
        Err(ReceiptError::SignatureMismatch { .. })
    ));
    // Same chain, another lineage contract.
    let other_contract = ReceiptDomain::new(31337, addr(0x12));
    assert_ne!(train().receipt_hash(&other_contract), train().receipt_hash(&domain()));
}

/// Every signed field, edited after signing, breaks the signature; editing the carried
/// params breaks their hash instead.
#[test]
fn every_edited_field_is_caught() {
    let s = signed(train());
    let v = serde_json::to_value(&s).unwrap();
    let body = v["body"].as_object().unwrap().clone();
    assert_eq!(body.len(), 18, "a field was added: extend this test's expectations");
    for (field, value) in &body {
        let edited = match value {
            Value::String(t) if t.starts_with("0x") && t.len() == 66 => Value::String(format!(
                "0x{}",
                if t.ends_with('0') { "1".repeat(64) } else { "0".repeat(64) }
            )),
            Value::String(t) if t.starts_with("0x") && t.len() == 42 => {
                Value::String(format!("0x{}", "ab".repeat(20)))
            }
            Value::String(t) if field == "kind" => {
                Value::String(if t == "train" { "evaluate" } else { "train" }.into())
            }
            Value::String(t) => Value::String(format!("{t}-x")),
            Value::Number(n) => Value::from(n.as_u64().unwrap() + 1),
            Value::Object(_) => {
                let mut p = value.clone();
                p["learning_rate"] = Value::from(0.1);
                p
            }
            other => panic!("unexpected field {field}: {other}"),
        };
        let mut t = v.clone();
        t["body"][field.as_str()] = edited;
        let tampered: SignedReceipt = match serde_json::from_value(t) {
            Ok(x) => x,
            Err(e) => panic!("edit of {field} should still parse: {e}"),
        };
        let err = tampered.verify(operator().address(), &domain()).unwrap_err();
        match field.as_str() {
            "params" => {
                assert!(matches!(err, ReceiptError::ParamsMismatch { .. }), "{field}: {err}")
            }
            _ => assert!(matches!(err, ReceiptError::SignatureMismatch { .. }), "{field}: {err}"),
        }
    }
}

#[test]
fn malformed_signatures_are_named() {
    let s = signed(train());
    let good = s.signature.clone();
    let cases = [
        good[..good.len() - 2].to_string(),       // 64 bytes
        format!("{}zz", &good[..good.len() - 2]), // not hex
        format!("{}05", &good[..good.len() - 2]), // v = 5
        format!("0x{}", "00".repeat(65)),         // r = s = 0
        String::new(),
    ];
    for c in cases {
        let mut t = s.clone();
        t.signature = c.clone();
        let e = t.verify(operator().address(), &domain()).unwrap_err();
        assert!(matches!(e, ReceiptError::MalformedSignature(_)), "{c}: {e}");
    }
    // The high-s twin of a valid signature recovers the same key: refused as non-canonical.
    let sig = parse_signature(&good).unwrap();
    let n = U256::from_str_radix(
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
        16,
    )
    .unwrap();
    let twin = alloy::primitives::Signature::new(sig.r(), n - sig.s(), !sig.v());
    let mut t = s.clone();
    t.signature = twin.to_string();
    assert!(matches!(
        t.verify(operator().address(), &domain()),
        Err(ReceiptError::MalformedSignature(m)) if m.contains("lower half")
    ));
}

#[test]
fn inconsistent_receipts_are_never_signed() {
    let cases: Vec<(Receipt, &str)> = vec![
        (
            receipt_with("job-i", JobParams::Infer(infer_params()), |r| r.checkpoint_root = h(5)),
            "checkpoint_root",
        ),
        (
            receipt_with("job-e", JobParams::Evaluate(eval_params()), |r| {
                r.output_weights_hash = h(5)
            }),
            "output_weights_hash",
        ),
        (
            receipt_with("job-t", JobParams::Train(train_params()), |r| {
                r.output_weights_hash = Hash32::ZERO
            }),
            "output_weights_hash",
        ),
        (
            receipt_with("job-t", JobParams::Train(train_params()), |r| r.checkpoint_interval = 5),
            "checkpoint_interval",
        ),
        (receipt_with("job-t", JobParams::Train(train_params()), |r| r.seed = 8), "seed"),
        (
            receipt_with("job-t", JobParams::Train(train_params()), |r| {
                r.kind = posthuman_types::JobKind::Infer
            }),
            "params",
        ),
        (
            receipt_with("job-t", JobParams::Train(train_params()), |r| {
                r.ended_at = r.started_at - 1
            }),
            "ended_at",
        ),
        (receipt_with("Job/../x", JobParams::Train(train_params()), |_| {}), "job_id"),
    ];
    for (r, field) in cases {
        match sign(r, &operator(), &domain()) {
            Err(ReceiptError::Inconsistent { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected Inconsistent, got {other:?}"),
        }
    }
    let r = receipt_with("job-t", JobParams::Train(train_params()), |r| r.params_hash = h(3));
    assert!(matches!(sign(r, &operator(), &domain()), Err(ReceiptError::ParamsMismatch { .. })));
}

#[test]
fn inference_attestations_sign_verify_and_bind_the_text() {
    let p = infer_params();
    let a = Attestation::new("job-infer-1", 1, h(0x33), &p, &p.prompts[1], " Paris.");
    let s = sign(a, &operator(), &domain()).unwrap();
    let back: SignedAttestation =
        serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    let v = back.verify(operator().address(), &domain()).unwrap();
    v.matches(&p.prompts[1], " Paris.").unwrap();
    assert!(matches!(
        v.matches(&p.prompts[1], " Lyon."),
        Err(ReceiptError::Inconsistent { field: "output_hash", .. })
    ));
    assert!(matches!(
        v.matches(&p.prompts[0], " Paris."),
        Err(ReceiptError::Inconsistent { field: "prompt_hash", .. })
    ));
    assert_eq!(v.body().sampling["top_k"], 40);
    assert_eq!(v.body().seed, 42);

    // Claiming other weights, another seed or other sampling settings breaks it.
    let mut t = back.clone();
    t.body.weights_hash = h(0x34);
    assert!(matches!(
        t.verify(operator().address(), &domain()),
        Err(ReceiptError::SignatureMismatch { .. })
    ));
    let mut t = back.clone();
    t.body.seed = 43;
    assert!(matches!(
        t.verify(operator().address(), &domain()),
        Err(ReceiptError::SignatureMismatch { .. })
    ));
    let mut t = back.clone();
    t.body.sampling["temperature"] = Value::from(0.0);
    assert!(matches!(
        t.verify(operator().address(), &domain()),
        Err(ReceiptError::ParamsMismatch { .. })
    ));
    let mut t = back;
    t.signer = key(9).address();
    assert!(matches!(
        t.verify(operator().address(), &domain()),
        Err(ReceiptError::WrongSigner { .. })
    ));
}
