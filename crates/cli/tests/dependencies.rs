//! What the users' `posthuman` binary links, read from `cargo metadata`'s resolved graph: not
//! the worker's training code, nor the demo or the operator's tooling that bring it (issue 17:
//! the demo and the audit moved out, and the wire types into posthuman-types, so the CLI links
//! neither the server nor the worker).

#![allow(clippy::unwrap_used)] // a test: a failed step is the failure

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Crates `posthuman-cli` must never depend on, directly or not, in its normal (linked)
/// dependencies: the worker (candle training, tokenizers' trainer, chat templates), the
/// server (axum, the AWS SDKs, SQLite), and the crates that exist to link them.
const NEVER: [&str; 4] =
    ["posthuman-worker", "posthuman-functions", "posthuman-demo", "posthuman-operator"];

/// Crates the CLI itself must not name: it reads no operator store.
const NOT_DIRECT: [&str; 1] = ["posthuman-store"];

/// The normal dependency closure of `root` (package ids), and its direct normal dependencies,
/// by package name.
fn normal_deps(meta: &serde_json::Value, root: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    // Only `kind: null` edges are linked into the binary (dev and build ones are not).
    let normal = |id: &str| -> Vec<String> {
        nodes[id]["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
            .map(|d| d["pkg"].as_str().unwrap().to_string())
            .collect()
    };
    let root_id = *names.iter().find(|(_, n)| **n == root).expect("the CLI package").0;
    let direct = normal(root_id).iter().map(|id| names[id.as_str()].to_string()).collect();
    let (mut seen, mut todo) = (BTreeSet::new(), vec![root_id.to_string()]);
    while let Some(id) = todo.pop() {
        for d in normal(&id) {
            if seen.insert(d.clone()) {
                todo.push(d);
            }
        }
    }
    let all = seen.iter().map(|id| names[id.as_str()].to_string()).collect();
    (all, direct)
}

#[test]
fn the_cli_links_neither_the_worker_nor_the_demo_nor_operator_tooling() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = manifest_dir().join("../../Cargo.toml");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--manifest-path"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (all, direct) = normal_deps(&meta, "posthuman-cli");
    assert!(all.contains("alloy"), "the graph was read: {} crates", all.len());
    for name in NEVER {
        assert!(
            !all.contains(name),
            "posthuman-cli links {name}: keep it out of the users' binary"
        );
    }
    for name in NOT_DIRECT {
        assert!(!direct.contains(name), "posthuman-cli depends on {name} directly");
    }
}

/// The package's directory as cargo hands it to the running test, not the one compiled in:
/// a build cache shared by two checkouts can run a test binary built in the other one.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from)
}
