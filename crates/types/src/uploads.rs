//! The wire types of direct uploads (`functions/src/uploads.rs` has the protocol): a client
//! declares its files with a signed [`UploadRequest`] (`POST /api/uploads`), gets an
//! [`UploadGrant`] with one [`PutTarget`] per file, sends each file as its target says, then
//! names the upload id in [`UPLOAD_HEADER`] on the publish or submit. `GET /api/uploads`
//! answers the caps ([`UploadLimits`]) so a client can refuse a file before anything is signed.
//!
//! One definition for the API, the CLI and the storefront (wasm): the JSON is the API's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Hash32;

/// The request header naming the upload a publish or submit takes its files from.
pub const UPLOAD_HEADER: &str = "x-posthuman-upload";

/// The error codes (`ErrorBody::error`) of a refused upload, one per way it can fail.
pub mod code {
    /// 404: no such upload (or it was swept): declare the files again.
    pub const UNKNOWN: &str = "upload_unknown";
    /// 410: its time ran out: declare and send the files again.
    pub const EXPIRED: &str = "upload_expired";
    /// 403: another account staged it.
    pub const FOREIGN: &str = "upload_foreign";
    /// 409: a publish or submit already used it.
    pub const USED: &str = "upload_used";
    /// 422: staged for the other route (a dataset named on a publish, or the reverse).
    pub const PURPOSE: &str = "upload_purpose";
    /// 409: a declared file has not arrived.
    pub const MISSING: &str = "upload_missing";
    /// 422: a staged file is not what was declared (length or SHA-256).
    pub const MISMATCH: &str = "upload_mismatch";
    /// 403: a PUT to the API's own upload route with a bad or expired token.
    pub const URL_REFUSED: &str = "upload_url_refused";
    /// 413 (the API's general code): a declared file over its cap.
    pub const TOO_LARGE: &str = "too_large";
}

/// What the files are for: each purpose allows the file parts its route takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UploadPurpose {
    /// A publish's files (`POST /api/models`).
    Model,
    /// A submit's dataset (`POST /api/jobs`).
    Dataset,
}

/// One file as the client declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeclaredFile {
    /// The multipart part it replaces: a model upload's `config`, `weights`, `tokenizer`,
    /// `adapter_config`, `adapter_weights`, `tokenizer_config`, `generation_config`,
    /// `chat_template`; a dataset upload's `dataset`.
    pub name: String,
    /// Its exact length: at most that part's cap (413 `too_large` otherwise).
    pub bytes: u64,
    /// SHA-256 of its bytes.
    pub sha256: Hash32,
}

/// The signed body of `POST /api/uploads` (action `create-upload`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    pub purpose: UploadPurpose,
    /// The uploader: must sign the request (and, for a model, be an allowed publisher).
    pub owner: String,
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 8))]
    pub files: Vec<DeclaredFile>,
    pub nonce: String,
    pub expires_at: u64,
}

/// How to send one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PutTarget {
    pub name: String,
    /// Absolute (S3), or relative to the API's base URL (the embedded server's own route).
    pub url: String,
    pub method: String,
    /// Headers to send exactly as given (besides the body's `Content-Length`).
    pub headers: BTreeMap<String, String>,
}

/// The answer to `POST /api/uploads`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadGrant {
    pub upload_id: String,
    /// Unix seconds (15 minutes ahead by default): the URLs and the id are refused after this.
    /// Sooner when the API's temporary AWS credentials expire first: a presigned URL dies
    /// with the credentials that signed it, so each ends a minute before them.
    pub expires_at: u64,
    pub files: Vec<PutTarget>,
}

/// One file an upload of some purpose may declare, and its cap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileCap {
    /// The declared name (the multipart part it replaces).
    pub name: String,
    /// The most bytes the API takes for it.
    pub max_bytes: u64,
}

/// The answer to `GET /api/uploads`: the files each purpose takes with this deployment's
/// caps (an operator may set other caps than the defaults), and how long a grant is valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadLimits {
    /// A publish's files, in the order the API lists them.
    pub model: Vec<FileCap>,
    /// A submit's files (the dataset).
    pub dataset: Vec<FileCap>,
    /// Seconds from a grant to its expiry.
    pub validity_secs: u64,
}

impl UploadLimits {
    /// The cap of file `name` for `purpose`; `None`: the purpose takes no such file.
    pub fn cap(&self, purpose: UploadPurpose, name: &str) -> Option<u64> {
        let files = match purpose {
            UploadPurpose::Model => &self.model,
            UploadPurpose::Dataset => &self.dataset,
        };
        files.iter().find(|f| f.name == name).map(|f| f.max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serialises `v`, checks it is exactly `json` (as the API wrote it before these types
    /// moved here from `functions`), and that `json` parses back to `v`.
    fn exact<T>(v: &T, json: &str)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        assert_eq!(serde_json::to_string(v).unwrap(), json);
        assert_eq!(&serde_json::from_str::<T>(json).unwrap(), v);
        // The storefront's reader (`de::MapStructs`) too.
        assert_eq!(&crate::de::tests::read::<T>(json).unwrap(), v);
    }

    fn sha(b: u8) -> Hash32 {
        Hash32([b; 32])
    }

    #[test]
    fn the_wire_json_is_byte_for_byte_the_apis() {
        let req = UploadRequest {
            purpose: UploadPurpose::Model,
            owner: "0x00000000000000000000000000000000000000aa".into(),
            files: vec![
                DeclaredFile { name: "config".into(), bytes: 12, sha256: sha(1) },
                DeclaredFile { name: "weights".into(), bytes: 1 << 30, sha256: sha(0xab) },
            ],
            nonce: "n-1".into(),
            expires_at: 1_800_000_000,
        };
        let h1 = "0x".to_string() + &"01".repeat(32);
        let hab = "0x".to_string() + &"ab".repeat(32);
        exact(
            &req,
            &format!(
                r#"{{"purpose":"model","owner":"0x00000000000000000000000000000000000000aa","files":[{{"name":"config","bytes":12,"sha256":"{h1}"}},{{"name":"weights","bytes":1073741824,"sha256":"{hab}"}}],"nonce":"n-1","expires_at":1800000000}}"#
            ),
        );
        exact(&UploadPurpose::Dataset, r#""dataset""#);
        let grant = UploadGrant {
            upload_id: "u-0123456789abcdef0123456789abcdef".into(),
            expires_at: 1_800_000_900,
            files: vec![PutTarget {
                name: "dataset".into(),
                url: "https://b.s3.amazonaws.com/uploads/u-1/files/dataset?X-Amz-Signature=x"
                    .into(),
                method: "PUT".into(),
                headers: BTreeMap::from([
                    ("x-amz-checksum-sha256".into(), "AQE=".into()),
                    ("content-length".into(), "4".into()),
                ]),
            }],
        };
        exact(
            &grant,
            r#"{"upload_id":"u-0123456789abcdef0123456789abcdef","expires_at":1800000900,"files":[{"name":"dataset","url":"https://b.s3.amazonaws.com/uploads/u-1/files/dataset?X-Amz-Signature=x","method":"PUT","headers":{"content-length":"4","x-amz-checksum-sha256":"AQE="}}]}"#,
        );
        let limits = UploadLimits {
            model: vec![FileCap { name: "config".into(), max_bytes: 65536 }],
            dataset: vec![FileCap { name: "dataset".into(), max_bytes: 16384 }],
            validity_secs: 900,
        };
        exact(
            &limits,
            r#"{"model":[{"name":"config","max_bytes":65536}],"dataset":[{"name":"dataset","max_bytes":16384}],"validity_secs":900}"#,
        );
        assert_eq!(limits.cap(UploadPurpose::Dataset, "dataset"), Some(16384));
        assert_eq!(limits.cap(UploadPurpose::Model, "dataset"), None);
    }

    #[test]
    fn declarations_refuse_unknown_fields() {
        let h = "0x".to_string() + &"00".repeat(32);
        let extra = format!(r#"{{"name":"dataset","bytes":1,"sha256":"{h}","url":"x"}}"#);
        assert!(serde_json::from_str::<DeclaredFile>(&extra).is_err());
        let extra =
            r#"{"purpose":"model","owner":"0x","files":[],"nonce":"n","expires_at":1,"x":1}"#;
        assert!(serde_json::from_str::<UploadRequest>(extra).is_err());
        assert!(serde_json::from_str::<UploadPurpose>(r#""weights""#).is_err());
    }
}
