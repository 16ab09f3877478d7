//! Direct uploads from the browser, as plain data (the browser side is
//! [`crate::app::upload`]): a publish's files and a job's dataset never ride in the API's
//! request body (behind API Gateway a Lambda takes at most 6 MB), they go where
//! `POST /api/uploads` says — S3 presigned PUTs on AWS, the embedded server's own PUT route
//! locally — and the publish or submit names the upload id ([`UPLOAD_HEADER`]). The protocol
//! is the CLI's (`crates/cli/src/client.rs`), with the wire types of
//! [`posthuman_types::uploads`].
//!
//! Here: which files of a picked model folder the API takes ([`MODEL_FILES`],
//! [`pick_folder`]), the checks against the API's caps before anything is signed
//! ([`check_files`]), the declaration the wallet signs ([`declaration`],
//! [`upload_typed_data`]), and every refusal in words ([`api_refusal`], [`put_refusal`]).

use posthuman_receipts::ReceiptDomain;
use posthuman_receipts::request::{CREATE_UPLOAD, SignableRequest};
use posthuman_types::Hash32;
pub use posthuman_types::uploads::{
    DeclaredFile, PutTarget, UPLOAD_HEADER, UploadGrant, UploadLimits, UploadPurpose,
    UploadRequest, code,
};

use crate::wire::ErrorBody;

/// The files of an HF-layout model folder the API takes: (file name, the name it is declared
/// under, required). The order is the API's (`publish_files` in `functions/src/uploads.rs`).
pub const MODEL_FILES: [(&str, &str, bool); 8] = [
    ("config.json", "config", true),
    ("model.safetensors", "weights", true),
    ("tokenizer.json", "tokenizer", true),
    // A PEFT LoRA adapter over the weights: both files or neither.
    ("adapter_config.json", "adapter_config", false),
    ("adapter_model.safetensors", "adapter_weights", false),
    ("tokenizer_config.json", "tokenizer_config", false),
    ("generation_config.json", "generation_config", false),
    ("chat_template.jinja", "chat_template", false),
];

/// The file name a declared name stands for (`weights` → `model.safetensors`).
pub fn file_name(declared: &str) -> &str {
    MODEL_FILES.iter().find(|f| f.1 == declared).map_or(declared, |f| f.0)
}

/// The weights as sharded checkpoints name their index: the API takes one file.
const SHARD_INDEX: &str = "model.safetensors.index.json";

/// What a picked folder holds of [`MODEL_FILES`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FolderPick {
    /// (index in [`MODEL_FILES`], index of the file in the picked list), in
    /// [`MODEL_FILES`]' order.
    pub found: Vec<(usize, usize)>,
    /// File names of required files the folder lacks.
    pub missing: Vec<&'static str>,
    /// Why a missing file is missing, when the folder says (a sharded checkpoint).
    pub note: Option<String>,
}

/// Picks [`MODEL_FILES`] by name from the paths of a folder pick (`webkitRelativePath`,
/// `folder/config.json`; a bare name when files were picked one by one). Only the folder's
/// top level counts: a checkpoint subfolder's `config.json` is not the model's.
pub fn pick_folder(paths: &[String]) -> FolderPick {
    let top: Vec<Option<&str>> = paths
        .iter()
        .map(|p| {
            let rest = p.split_once('/').map_or(p.as_str(), |(_, r)| r);
            (!rest.contains('/')).then_some(rest)
        })
        .collect();
    let mut pick = FolderPick::default();
    for (slot, (file, _, required)) in MODEL_FILES.into_iter().enumerate() {
        match top.iter().position(|n| *n == Some(file)) {
            Some(i) => pick.found.push((slot, i)),
            None if required => pick.missing.push(file),
            None => {}
        }
    }
    if pick.missing.contains(&"model.safetensors") && top.contains(&Some(SHARD_INDEX)) {
        pick.note = Some(format!(
            "the folder holds a sharded checkpoint ({SHARD_INDEX}): the API takes one \
             model.safetensors; merge the shards first (`posthuman models publish` does)"
        ));
    }
    pick
}

/// A byte count in words (`64 KiB`, `1 GiB`, `1.5 MiB`).
pub fn size(n: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 || x.fract() == 0.0 {
        format!("{x} {}", UNITS[u])
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

/// Each file (declared name, length) against the API's caps for `purpose`, before anything
/// is hashed or signed: a file it does not take, an empty one, one over its cap, an adapter
/// without its other half.
pub fn check_files(
    limits: &UploadLimits,
    purpose: UploadPurpose,
    files: &[(&str, u64)],
) -> Result<(), String> {
    for &(name, len) in files {
        let file = if purpose == UploadPurpose::Model { file_name(name) } else { name };
        let cap = limits.cap(purpose, name).ok_or_else(|| {
            let p = if purpose == UploadPurpose::Model { "model" } else { "dataset" };
            format!("the API takes no file {file} in a {p} upload")
        })?;
        if len == 0 {
            return Err(format!("{file} is empty"));
        }
        if len > cap {
            return Err(format!(
                "{file} is {} ({len} bytes), over the API's limit of {} ({cap} bytes)",
                size(len),
                size(cap)
            ));
        }
    }
    let has = |n: &str| files.iter().any(|f| f.0 == n);
    if has("adapter_config") != has("adapter_weights") {
        return Err(
            "a LoRA adapter needs both adapter_config.json and adapter_model.safetensors".into()
        );
    }
    Ok(())
}

/// The limits in words, for the page (`config.json ≤ 64 KiB, …`).
pub fn limits_words(limits: &UploadLimits, purpose: UploadPurpose) -> String {
    let files = if purpose == UploadPurpose::Model { &limits.model } else { &limits.dataset };
    let words: Vec<String> = files
        .iter()
        .map(|f| {
            let name = if purpose == UploadPurpose::Model { file_name(&f.name) } else { "dataset" };
            format!("{name} ≤ {}", size(f.max_bytes))
        })
        .collect();
    words.join(", ")
}

/// The signed declaration of `files` (declared name, length, SHA-256).
pub fn declaration(
    purpose: UploadPurpose,
    owner: &str,
    files: &[(&str, u64, Hash32)],
    nonce: String,
    expires_at: u64,
) -> UploadRequest {
    UploadRequest {
        purpose,
        owner: owner.to_string(),
        files: files
            .iter()
            .map(|&(name, bytes, sha256)| DeclaredFile { name: name.into(), bytes, sha256 })
            .collect(),
        nonce,
        expires_at,
    }
}

/// The typed data the wallet signs for a declaration body (`create-upload`, as the CLI signs
/// it): `eth_signTypedData_v4`'s second param.
pub fn upload_typed_data(domain: &ReceiptDomain, body: &[u8]) -> Result<String, String> {
    let req = SignableRequest::of_json_body(CREATE_UPLOAD, body).map_err(|e| e.to_string())?;
    Ok(req.typed_data(domain).to_string())
}

/// An API refusal of an upload step (`POST /api/uploads`, its PUT, the publish or submit
/// naming it) in words: what happened and what to do.
pub fn refusal(error: &str, message: &str) -> String {
    let what = match error {
        code::EXPIRED => "the upload expired before it was used: send the files again",
        code::TOO_LARGE => "a file is over the API's limit",
        code::MISMATCH => {
            "a file that arrived is not the one declared (was it changed while uploading?): \
             pick it again"
        }
        code::MISSING => "a file never arrived: send the files again",
        code::USED => "that upload was already used: send the files again",
        code::UNKNOWN => "the API knows no such upload (swept after expiry?): send the files again",
        code::FOREIGN => "another account staged that upload",
        code::PURPOSE => "that upload was staged for another purpose",
        code::URL_REFUSED => "the upload URL was refused (expired or altered)",
        _ => return format!("{message} ({error})"),
    };
    format!("{what}. The API said: {message} ({error})")
}

/// An API answer that is not a 2xx, in words ([`refusal`] for its error code).
pub fn api_refusal(status: u16, text: &str) -> String {
    match posthuman_receipts::json::from_str::<ErrorBody>(text) {
        Ok(e) => refusal(&e.error, &e.message),
        Err(_) => format!("HTTP {status}"),
    }
}

/// The text of XML element `tag` in an S3 error body.
fn xml(text: &str, tag: &str) -> Option<String> {
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + text[start..].find(&format!("</{tag}>"))?;
    Some(text[start..end].to_string())
}

/// A refused PUT of file `name` in words: the embedded server answers the API's JSON, S3 its
/// XML (`<Code>`, `<Message>`).
pub fn put_refusal(name: &str, status: u16, text: &str) -> String {
    let why = if let (Some(c), m) = (xml(text, "Code"), xml(text, "Message")) {
        let m = m.unwrap_or_default();
        let what = match c.as_str() {
            "AccessDenied" if m.contains("expired") => "the upload URL expired: send it again",
            "BadDigest" | "XAmzContentSHA256Mismatch" | "InvalidDigest" | "IncompleteBody" => {
                "the bytes sent are not the ones declared"
            }
            "SignatureDoesNotMatch" | "AccessDenied" => "S3 refused the upload URL",
            "EntityTooLarge" => "the file is over the upload's limit",
            _ => "S3 refused it",
        };
        format!("{what} (S3: {c}: {m})")
    } else {
        api_refusal(status, text)
    };
    format!("Uploading {name} was refused: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthuman_types::uploads::FileCap;

    fn limits() -> UploadLimits {
        let cap = |name: &str, max_bytes| FileCap { name: name.into(), max_bytes };
        UploadLimits {
            model: vec![
                cap("config", 64 << 10),
                cap("weights", 1 << 30),
                cap("tokenizer", 32 << 20),
                cap("adapter_config", 64 << 10),
                cap("adapter_weights", 1 << 30),
            ],
            dataset: vec![cap("dataset", 16384)],
            validity_secs: 900,
        }
    }

    #[test]
    fn a_folder_gives_its_top_level_files_by_name() {
        let paths: Vec<String> = [
            "m/README.md",
            "m/tokenizer.json",
            "m/config.json",
            "m/checkpoint-5/model.safetensors",
            "m/tokenizer_config.json",
        ]
        .map(String::from)
        .into();
        let p = pick_folder(&paths);
        // config.json, tokenizer.json, tokenizer_config.json (slots 0, 2, 5 of MODEL_FILES).
        assert_eq!(p.found, [(0, 2), (2, 1), (5, 4)]);
        assert_eq!(p.missing, ["model.safetensors"]);
        assert_eq!(p.note, None);
        let mut sharded = paths.clone();
        sharded.push("m/model.safetensors.index.json".into());
        assert!(pick_folder(&sharded).note.unwrap().contains("sharded checkpoint"));
        // Files picked one by one have bare names.
        let p = pick_folder(&["model.safetensors".into(), "config.json".into()]);
        assert_eq!(p.found, [(0, 1), (1, 0)]);
        assert_eq!(p.missing, ["tokenizer.json"]);
    }

    #[test]
    fn files_are_checked_against_the_apis_caps_before_signing() {
        let l = limits();
        let m = UploadPurpose::Model;
        assert!(check_files(&l, m, &[("config", 10), ("weights", 1 << 30)]).is_ok());
        assert_eq!(
            check_files(&l, m, &[("config", 70_000)]).unwrap_err(),
            "config.json is 68.4 KiB (70000 bytes), over the API's limit of 64 KiB (65536 bytes)"
        );
        assert_eq!(check_files(&l, m, &[("tokenizer", 0)]).unwrap_err(), "tokenizer.json is empty");
        assert!(check_files(&l, m, &[("adapter_config", 5)]).unwrap_err().contains("both"));
        assert!(check_files(&l, m, &[("chat_template", 5)]).unwrap_err().contains("takes no file"));
        let d = UploadPurpose::Dataset;
        assert_eq!(
            check_files(&l, d, &[("dataset", 20_000)]).unwrap_err(),
            "dataset is 19.5 KiB (20000 bytes), over the API's limit of 16 KiB (16384 bytes)"
        );
        assert_eq!(
            limits_words(&l, m),
            "config.json ≤ 64 KiB, model.safetensors ≤ 1 GiB, tokenizer.json ≤ 32 MiB, \
             adapter_config.json ≤ 64 KiB, adapter_model.safetensors ≤ 1 GiB"
        );
        assert_eq!(limits_words(&l, d), "dataset ≤ 16 KiB");
        assert_eq!(size(100), "100 bytes");
    }

    #[test]
    fn the_declaration_is_the_clis_and_signed_as_create_upload() {
        let r = declaration(
            UploadPurpose::Dataset,
            "0xabc",
            &[("dataset", 4, Hash32([1; 32]))],
            "n-1".into(),
            99,
        );
        let body = serde_json::to_vec(&r).unwrap();
        let back: UploadRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, r);
        let domain = ReceiptDomain::new(31337, alloy::primitives::Address::ZERO);
        let td = upload_typed_data(&domain, &body).unwrap();
        assert!(td.contains("create-upload"));
    }

    #[test]
    fn every_refusal_is_said_in_words() {
        let body = r#"{"error":"upload_expired","message":"upload u-1 expired at 5: upload the files again"}"#;
        assert_eq!(
            api_refusal(410, body),
            "the upload expired before it was used: send the files again. The API said: upload u-1 expired at 5: upload the files again (upload_expired)"
        );
        assert!(
            api_refusal(413, r#"{"error":"too_large","message":"m"}"#)
                .starts_with("a file is over")
        );
        assert!(
            api_refusal(422, r#"{"error":"upload_mismatch","message":"m"}"#)
                .contains("not the one declared")
        );
        assert_eq!(api_refusal(502, "<html>"), "HTTP 502");
        let s3 = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        assert_eq!(
            put_refusal("weights", 403, s3),
            "Uploading weights was refused: the upload URL expired: send it again (S3: AccessDenied: Request has expired)"
        );
        let bad = "<Error><Code>BadDigest</Code><Message>The SHA256 you specified did not match the calculated checksum.</Message></Error>";
        assert!(put_refusal("dataset", 400, bad).contains("not the ones declared"));
        let local = r#"{"error":"upload_mismatch","message":"the SHA-256 of the body is not the declared one"}"#;
        assert!(
            put_refusal("dataset", 422, local)
                .starts_with("Uploading dataset was refused: a file that arrived")
        );
    }
}
