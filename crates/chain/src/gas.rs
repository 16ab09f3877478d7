//! Where a transaction's first-time gas goes: the storage slots it created (zero before,
//! non-zero after), read with the node's prestate tracer (`debug_traceTransaction`,
//! `prestateTracer` in diff mode; anvil and geth answer it).
//!
//! Each such slot costs 20,000 gas more than rewriting a non-zero one (EIP-2200/2929), so
//! comparing two orders' gas is only like for like when they create the same slots. The
//! chain bench prints them per order; the royalty tests pin which slots a derived model's
//! first order creates.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use serde_json::{Value, json};

use crate::{Chain, ChainError};

/// One storage slot a transaction took from zero to non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CreatedSlot {
    pub contract: Address,
    pub slot: B256,
    pub value: U256,
}

impl Chain {
    /// The storage slots transaction `tx` created, sorted. Needs a node with the prestate
    /// tracer (a debug API): a node without one answers `ChainError::Rpc`.
    pub async fn created_slots(&self, tx: B256) -> Result<Vec<CreatedSlot>, ChainError> {
        let opts = json!({"tracer": "prestateTracer", "tracerConfig": {"diffMode": true}});
        let diff: Value = self
            .provider
            .raw_request("debug_traceTransaction".into(), (tx, opts))
            .await
            .map_err(|e| ChainError::Rpc(format!("debug_traceTransaction {tx}: {e}")))?;
        created_in(&diff)
    }
}

fn malformed(detail: impl std::fmt::Display) -> ChainError {
    ChainError::Rpc(format!("malformed prestate diff: {detail}"))
}

/// Slots that are non-zero in `post` and zero (or, as the tracer writes zero, absent) in
/// `pre`.
fn created_in(diff: &Value) -> Result<Vec<CreatedSlot>, ChainError> {
    let accounts = |side: &str| -> Result<serde_json::Map<String, Value>, ChainError> {
        match diff.get(side) {
            Some(Value::Object(m)) => Ok(m.clone()),
            None | Some(Value::Null) => Ok(Default::default()),
            Some(other) => Err(malformed(format!("{side} is {other}"))),
        }
    };
    let (pre, post) = (accounts("pre")?, accounts("post")?);
    let word = |v: &Value| -> Result<U256, ChainError> {
        let s = v.as_str().ok_or_else(|| malformed(format!("slot value {v}")))?;
        s.parse::<U256>().map_err(|e| malformed(format!("slot value {s}: {e}")))
    };
    let mut out = Vec::new();
    for (account, state) in &post {
        let Some(Value::Object(storage)) = state.get("storage") else { continue };
        let contract: Address =
            account.parse().map_err(|e| malformed(format!("{account}: {e}")))?;
        for (slot, value) in storage {
            let value = word(value)?;
            let before = pre
                .get(account)
                .and_then(|s| s.get("storage"))
                .and_then(|s| s.get(slot))
                .map(word)
                .transpose()?
                .unwrap_or(U256::ZERO);
            if before.is_zero() && !value.is_zero() {
                let slot: B256 = slot.parse().map_err(|e| malformed(format!("{slot}: {e}")))?;
                out.push(CreatedSlot { contract, slot, value });
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot absent from `pre` (the tracer omits zeros) or zero there and non-zero in
    /// `post` was created; a changed non-zero slot and a cleared one were not.
    #[test]
    fn created_slots_are_zero_before_and_non_zero_after() {
        let a = "0x00000000000000000000000000000000000000aa";
        let (s1, s2, s3, s4) = (
            format!("0x{:064x}", 1),
            format!("0x{:064x}", 2),
            format!("0x{:064x}", 3),
            format!("0x{:064x}", 4),
        );
        let diff = json!({
            "pre": {a: {"storage": {&s2: "0x05", &s3: "0x07", &s4: "0x0"}}},
            "post": {a: {"storage": {&s1: "0x01", &s2: "0x06", &s4: "0x09"}}},
        });
        let got = created_in(&diff).unwrap();
        let contract: Address = a.parse().unwrap();
        assert_eq!(
            got,
            vec![
                CreatedSlot { contract, slot: s1.parse().unwrap(), value: U256::from(1) },
                CreatedSlot { contract, slot: s4.parse().unwrap(), value: U256::from(9) },
            ]
        );
        assert!(created_in(&json!({"pre": 1})).is_err());
    }
}
