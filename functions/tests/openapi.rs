//! `functions/openapi.json` is the document generated from the route table and the wire types
//! (`posthuman_functions::openapi`), and that document describes every route fully.
//!
//! Regenerate the file after changing a route or a wire type:
//! `POSTHUMAN_WRITE_OPENAPI=1 cargo test -p posthuman-functions --test openapi`.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

use std::collections::BTreeSet;

use posthuman_functions::api::{
    EXPIRES_HEADER, NEXT_CURSOR_HEADER, OPENAPI, READER_HEADER, SIGNATURE_HEADER, routes,
};
use posthuman_functions::deps::Limits;
use posthuman_functions::openapi;
use posthuman_functions::uploads::{UPLOAD_HEADER, publish_files, submit_files};
use serde_json::Value;

const REGENERATE: &str =
    "POSTHUMAN_WRITE_OPENAPI=1 cargo test -p posthuman-functions --test openapi";

fn doc() -> Value {
    serde_json::from_str(&openapi::json()).expect("the generated document is JSON")
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let path = manifest_dir().join("openapi.json");
    let generated = openapi::json();
    if std::env::var_os("POSTHUMAN_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "functions/openapi.json differs from the document the routes and types generate \
             (first at line {}): regenerate it with\n    {REGENERATE}\nand commit it",
            line + 1
        );
    }
    // What `/api/openapi.json` serves is that file.
    assert_eq!(OPENAPI, committed);
}

/// The operations of the document, with their method and path.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

#[test]
fn every_route_is_described_once_with_a_summary_and_a_success() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    let described: BTreeSet<(String, String)> =
        ops.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
    let routed: BTreeSet<(String, String)> =
        routes().iter().map(|r| (r.method.as_str().to_ascii_lowercase(), r.path.clone())).collect();
    assert_eq!(described, routed);
    assert_eq!(ops.len(), routes().len(), "a route is listed twice");
    for (m, p, op) in &ops {
        assert!(op["summary"].as_str().is_some_and(|s| s.len() > 10), "{m} {p}: no summary");
        let ok: Vec<&String> =
            op["responses"].as_object().unwrap().keys().filter(|s| s.starts_with('2')).collect();
        if (m.as_str(), p.as_str()) == ("post", "/api/models") {
            // Its two forms: multipart publishes before answering, JSON (a direct upload)
            // is accepted and runs in the background.
            assert_eq!(ok, ["201", "202"], "{m} {p}: the two forms' successes");
        } else {
            assert_eq!(ok.len(), 1, "{m} {p}: one success status");
        }
        // Path parameters are declared.
        for name in p.split('{').skip(1).filter_map(|s| s.split('}').next()) {
            let declared = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|q| q["in"] == "path" && q["name"] == name && q["required"] == true);
            assert!(declared, "{m} {p}: path parameter {name} is not declared");
        }
    }
}

/// Every `$ref` in `v` names a component that exists.
fn refs_resolve(v: &Value, doc: &Value, at: &str) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("$ref") {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("{at}: $ref {r} is not a component schema"));
                assert!(doc["components"]["schemas"].get(name).is_some(), "{at}: {r} is missing");
            }
            for (k, x) in o {
                refs_resolve(x, doc, &format!("{at}/{k}"));
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs_resolve(x, doc, at)),
        _ => {}
    }
}

#[test]
fn bodies_have_schemas_and_every_reference_resolves() {
    let doc = doc();
    refs_resolve(&doc, &doc, "");
    for (m, p, op) in operations(&doc) {
        if m == "post" || m == "put" {
            let body = op["requestBody"]["content"].as_object();
            // The sale sync reads the exchange, not a body.
            if p != "/api/models/{nft}/sale" {
                let body = body.unwrap_or_else(|| panic!("{m} {p}: no request body"));
                assert!(
                    body.values().all(|c| c["schema"].is_object()),
                    "{m} {p}: a body without a schema"
                );
            }
        }
        for (status, r) in op["responses"].as_object().unwrap() {
            assert!(r["description"].as_str().is_some_and(|d| !d.is_empty()), "{m} {p} {status}");
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{m} {p} {status}: errors are the error body"
                );
            }
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ModelView",
        "JobView",
        "Quote",
        "QuoteTerms",
        "JobRequest",
        "PublishRequest",
        "UploadRequest",
        "UploadGrant",
        "JobResult",
        "PricingView",
        "ErrorBody",
        "Hash32",
        "JobParams",
        "FeatureRequest",
        "InitializeCompute",
        "ComputeStart",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}: {:?}", schemas.keys());
    }
    // The error body as clients read it.
    assert_eq!(schemas["ErrorBody"]["required"], serde_json::json!(["error", "message"]));
}

#[test]
fn the_signed_request_headers_are_the_ones_the_api_reads() {
    let doc = doc();
    let mut headers = BTreeSet::new();
    for (_, _, op) in operations(&doc) {
        for q in op["parameters"].as_array().into_iter().flatten() {
            if q["in"] == "header" {
                headers.insert(q["name"].as_str().unwrap().to_string());
            }
        }
    }
    let want: BTreeSet<String> = [SIGNATURE_HEADER, EXPIRES_HEADER, READER_HEADER, UPLOAD_HEADER]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(headers, want);
    let result = &doc["paths"]["/api/jobs/{job_id}/result"]["get"]["parameters"];
    for h in [SIGNATURE_HEADER, EXPIRES_HEADER, READER_HEADER] {
        assert!(
            result.as_array().unwrap().iter().any(|q| q["name"] == h && q["required"] == true),
            "{h} is required to read a result"
        );
    }
    let page = &doc["paths"]["/api/models"]["get"]["responses"]["200"]["headers"];
    assert!(page.get(NEXT_CURSOR_HEADER).is_some(), "{page}");
}

#[test]
fn the_multipart_forms_list_the_parts_the_handlers_read() {
    let doc = doc();
    let l = Limits::default();
    let form = |route: &str| {
        let f = &doc["paths"][route]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
            ["$ref"];
        let name = f.as_str().unwrap().rsplit('/').next().unwrap().to_string();
        let s = doc["components"]["schemas"][&name].clone();
        let props: BTreeSet<String> =
            s["properties"].as_object().unwrap().keys().cloned().collect();
        let required: BTreeSet<String> =
            s["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
        (props, required)
    };
    let signed = ["request", "signature"].map(String::from);
    let (props, required) = form("/api/models");
    let mut want: BTreeSet<String> = signed.iter().cloned().collect();
    want.extend(publish_files(&l).iter().map(|(n, _, _)| n.to_string()));
    assert_eq!(props, want);
    let want_required: BTreeSet<String> =
        ["request", "signature", "config", "weights", "tokenizer"].map(String::from).into();
    assert_eq!(required, want_required);
    let (props, required) = form("/api/jobs");
    let mut want: BTreeSet<String> = signed.iter().cloned().collect();
    want.extend(submit_files(&l).iter().map(|(n, _, _)| n.to_string()));
    assert_eq!(props, want);
    assert_eq!(required, signed.into_iter().collect());
}

/// The document's request examples are requests the server reads (their schemas' check is
/// `functions/check-openapi.sh`), and every JSON request body of our own API shows one.
#[test]
fn every_request_example_is_a_request_the_server_reads() {
    for e in openapi::request_examples() {
        if let Err(why) = (e.parse)(&e.body) {
            panic!("example {} of {}: the server refuses it: {why}", e.name, e.schema);
        }
    }
    let doc = doc();
    for (method, path, op) in operations(&doc) {
        let Some(json) = op["requestBody"]["content"].get("application/json") else { continue };
        if path.starts_with("/api/ocean/") {
            continue; // Ocean's own wire format (ocean.js writes it), exercised by tests/ocean.
        }
        let examples = json["examples"].as_object().map(|m| m.len()).unwrap_or(0);
        assert!(examples > 0, "{method} {path}: its JSON body has no example");
    }
}

/// The package's directory as cargo hands it to the running test, not the one compiled in:
/// a build cache shared by two checkouts can run a test binary built in the other one.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from)
}
