//! Publishing a model from the browser, as plain data: the files checked before any
//! upload (sizes within the API's caps, which `GET /api/uploads` answers; `config.json` a
//! JSON object with a `model_type` the worker runs, `tokenizer.json` a tokenizers file,
//! `model.safetensors` with a readable header whose tensors cover the file exactly), the form's values → the signed
//! `PublishRequest` (the API's fields, the CLI's reward scheme), and the typed data the
//! wallet signs for it (`publish-model`, as `posthuman models publish` signs). The browser
//! side is [`crate::app::publish`]; this module is unit-tested natively.
//!
//! The API checks everything again (every tensor's name, shape and values against the
//! config): these checks only say early, in words, what it would refuse after the upload.

use posthuman_receipts::ReceiptDomain;
use posthuman_receipts::request::{PUBLISH_MODEL, SignableRequest};
use posthuman_types::model::{MAX_BENEFICIARIES, MAX_ROYALTY};
use posthuman_types::{Hash32, RewardScheme, SpecError};
use serde::Serialize;
use serde_json::Value;

/// safetensors' own cap on its JSON header.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// The `model_type`s the worker runs (`posthuman_gpt2::family::SUPPORTED`).
pub const MODEL_TYPES: [&str; 5] = ["gpt2", "llama", "mistral", "qwen2", "qwen3"];

fn bad(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError { field, reason: reason.into() }
}

/// A file's size against its limit (an empty file is refused too).
pub fn check_size(field: &'static str, name: &str, len: u64, max: u64) -> Result<(), SpecError> {
    if len == 0 {
        return Err(bad(field, format!("{name} is empty")));
    }
    if len > max {
        return Err(bad(field, format!("{name} is {len} bytes, over the API's limit of {max}")));
    }
    Ok(())
}

/// JSON read from its UTF-8 text (JSON is UTF-8). Not `serde_json::from_slice`: the rest of
/// the storefront parses text, and a second reader type doubles serde_json's code in the wasm
/// (~27 KB of it on 2026-12-07).
fn json_text<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text ({e})"))?;
    posthuman_receipts::json::from_str(text).map_err(|e| e.to_string())
}

/// `config.json`: a JSON object whose `model_type` the worker runs; returns that type.
pub fn check_config(bytes: &[u8]) -> Result<String, SpecError> {
    let v: Value =
        json_text(bytes).map_err(|e| bad("config", format!("config.json is not JSON: {e}")))?;
    let t = v
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("config", "config.json has no string `model_type`"))?;
    if !MODEL_TYPES.contains(&t) {
        return Err(bad(
            "config",
            format!("model_type `{t}` is not supported (supported: {})", MODEL_TYPES.join(", ")),
        ));
    }
    Ok(t.to_string())
}

/// `tokenizer.json`: a tokenizers file (a JSON object with a `model`), as the API checks it.
pub fn check_tokenizer(bytes: &[u8]) -> Result<(), SpecError> {
    json_text::<Value>(bytes)
        .ok()
        .filter(|v| v.get("model").is_some())
        .map(|_| ())
        .ok_or_else(|| bad("tokenizer", "tokenizer.json is not a tokenizers tokenizer.json"))
}

/// The safetensors header's length, from the file's first 8 bytes (little-endian u64),
/// checked against the file's size.
pub fn header_len(first8: &[u8], total: u64) -> Result<u64, SpecError> {
    let b: [u8; 8] = first8
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("weights", format!("model.safetensors is {total} bytes: too short")))?;
    let n = u64::from_le_bytes(b);
    if n > MAX_HEADER_BYTES || n > total.saturating_sub(8) {
        return Err(bad(
            "weights",
            format!(
                "model.safetensors is not safetensors (a header of {n} bytes in a {total}-byte file)"
            ),
        ));
    }
    Ok(n)
}

/// What a readable safetensors header holds.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightsHeader {
    pub tensors: usize,
    /// Elements over every tensor (the parameter count, tied weights once).
    pub elements: u64,
}

/// The JSON header (`header_len` bytes after the first 8): every tensor with a dtype, a
/// shape and data offsets, the offsets covering the data that follows exactly.
pub fn check_header(json: &[u8], header_len: u64, total: u64) -> Result<WeightsHeader, SpecError> {
    let w = |r: String| bad("weights", format!("model.safetensors: {r}"));
    let v: serde_json::Map<String, Value> =
        json_text(json).map_err(|e| w(format!("its header is not JSON: {e}")))?;
    let data = total - 8 - header_len;
    let (mut tensors, mut elements, mut end) = (0, 0u64, 0u64);
    for (name, t) in v.iter().filter(|(k, _)| *k != "__metadata__") {
        let dtype = t.get("dtype").and_then(Value::as_str);
        let shape: Option<Vec<u64>> = t
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().map(Value::as_u64).collect());
        let offsets: Option<Vec<u64>> = t
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().map(Value::as_u64).collect());
        let (Some(_), Some(shape), Some([a, b])) = (dtype, shape, offsets.as_deref()) else {
            return Err(w(format!("tensor `{name}` lacks a dtype, shape or data offsets")));
        };
        if a > b || *b > data {
            return Err(w(format!("tensor `{name}` lies outside the file's {data} data bytes")));
        }
        tensors += 1;
        elements = elements.saturating_add(shape.iter().product::<u64>());
        end = end.max(*b);
    }
    if tensors == 0 {
        return Err(w("its header names no tensor".into()));
    }
    if end != data {
        return Err(w(format!("its tensors end at byte {end} of {data} data bytes")));
    }
    Ok(WeightsHeader { tensors, elements })
}

/// A decimal amount with at most 18 decimals, in base units (OCEAN and datatokens).
pub fn parse_units(field: &'static str, s: &str) -> Result<u128, SpecError> {
    let t = s.trim();
    let refuse = || bad(field, format!("{s:?} is not a decimal amount (at most 18 decimals)"));
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if (int.is_empty() && frac.is_empty())
        || frac.len() > 18
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(refuse());
    }
    let digits = format!("{int}{frac:0<18}");
    digits.parse::<u128>().map_err(|_| refuse())
}

/// What the licence box takes (`posthuman_types::card::check_license`); models derived from
/// this one inherit it.
pub const LICENSE_HELP: &str = "an SPDX identifier (Apache-2.0, MIT, BSD-3-Clause, CC-BY-4.0, CC-BY-SA-4.0, CC-BY-NC-4.0, CC-BY-NC-SA-4.0, CC0-1.0) or LicenseRef-… for other terms (e.g. LicenseRef-llama3.2-community), which models derived from it keep; empty: proprietary, compute-to-data only";

/// The publish form, as typed.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishForm {
    pub name: String,
    pub symbol: String,
    pub description: String,
    /// OCEAN per datatoken on the fixed-rate exchange.
    pub price: String,
    /// Datatokens minted per derivation.
    pub reward_total: String,
    /// The latest trainer's share in basis points; each earlier one gets half.
    pub reward_first_bps: String,
    /// How many trainers (most recent first) the scheme pays.
    pub reward_depth: String,
    /// OCEAN every order of a derived model pays to its ancestors.
    pub royalty: String,
    /// The licence (SPDX identifier or `LicenseRef-…`); empty: the default terms.
    pub license: String,
}

impl Default for PublishForm {
    /// `posthuman models publish`'s defaults.
    fn default() -> Self {
        PublishForm {
            name: String::new(),
            symbol: String::new(),
            description: String::new(),
            price: "1".into(),
            reward_total: "100".into(),
            reward_first_bps: "5000".into(),
            reward_depth: "4".into(),
            royalty: "0".into(),
            license: String::new(),
        }
    }
}

/// The signed JSON part of `POST /api/models` (`posthuman-functions`' `PublishRequest`,
/// which refuses unknown fields: these are exactly its fields).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PublishRequest {
    pub name: String,
    pub symbol: String,
    pub description: String,
    pub owner: String,
    /// OCEAN base units per whole datatoken.
    pub price: String,
    pub reward_scheme: RewardScheme,
    /// SHA-256 of the `model.safetensors` bytes uploaded.
    pub weights_sha256: Hash32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    pub nonce: String,
    pub expires_at: u64,
}

fn text(field: &'static str, s: &str, max: usize) -> Result<String, SpecError> {
    let t = s.trim();
    if t.is_empty() || t.len() > max || t.chars().any(char::is_control) {
        return Err(bad(field, format!("1 to {max} bytes of printable text")));
    }
    Ok(t.to_string())
}

impl PublishForm {
    /// The reward scheme as the CLI builds it (geometric shares, then the royalty), checked
    /// as the API checks it.
    pub fn reward_scheme(&self) -> Result<RewardScheme, SpecError> {
        let total = parse_units("reward_total", &self.reward_total)?;
        let first: u16 = self.reward_first_bps.trim().parse().map_err(|_| {
            bad("reward_first_bps", format!("{:?} is not 0 to 10000", self.reward_first_bps))
        })?;
        let depth: usize = self
            .reward_depth
            .trim()
            .parse()
            .ok()
            .filter(|d| (1..=MAX_BENEFICIARIES).contains(d))
            .ok_or_else(|| {
                bad(
                    "reward_depth",
                    format!("{:?} is not 1 to {MAX_BENEFICIARIES}", self.reward_depth),
                )
            })?;
        let royalty = parse_units("royalty", &self.royalty)?;
        if royalty > MAX_ROYALTY {
            return Err(bad("royalty", "at most 10 OCEAN per order"));
        }
        let s = RewardScheme::geometric(total, first, depth).with_royalty(royalty);
        s.validate().map_err(|e| bad("reward_scheme", e.0))?;
        Ok(s)
    }

    /// Checks the fields as the API does, before anything is hashed or signed.
    pub fn check(&self) -> Result<(), SpecError> {
        self.fields().map(|_| ())
    }

    /// The licence as the API takes it (`None`: the default terms).
    fn license(&self) -> Result<Option<String>, SpecError> {
        posthuman_types::card::check_license(&self.license).map_err(|e| bad("license", e.reason))
    }

    #[allow(clippy::type_complexity)]
    fn fields(&self) -> Result<(String, String, String, u128, RewardScheme), SpecError> {
        let name = text("name", &self.name, 64)?;
        let symbol = text("symbol", &self.symbol, 16)?;
        if self.description.len() > 2048 {
            return Err(bad("description", "at most 2048 bytes"));
        }
        let price = parse_units("price", &self.price)?;
        if price == 0 {
            return Err(bad("price", "must be positive"));
        }
        self.license()?;
        Ok((name, symbol, self.description.clone(), price, self.reward_scheme()?))
    }

    /// The request the wallet signs.
    pub fn request(
        &self,
        owner: &str,
        weights_sha256: Hash32,
        nonce: String,
        expires_at: u64,
    ) -> Result<PublishRequest, SpecError> {
        let (name, symbol, description, price, reward_scheme) = self.fields()?;
        Ok(PublishRequest {
            name,
            symbol,
            description,
            owner: owner.to_string(),
            price: price.to_string(),
            reward_scheme,
            weights_sha256,
            license: self.license()?,
            nonce,
            expires_at,
        })
    }
}

/// The typed data the wallet signs for a publish request body (`eth_signTypedData_v4`'s
/// second param, as JSON text: `order::sign_params` quotes it), exactly the CLI's
/// `publish-model` signature.
pub fn publish_typed_data(domain: &ReceiptDomain, body: &[u8]) -> Result<String, String> {
    let req = SignableRequest::of_json_body(PUBLISH_MODEL, body).map_err(|e| e.to_string())?;
    Ok(req.typed_data(domain).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The form's help names every identifier the API accepts, and the form refuses what
    /// the API refuses before anything is signed.
    #[test]
    fn the_licence_box_takes_what_the_api_takes() {
        for id in posthuman_types::card::SPDX_LICENSES {
            assert!(
                LICENSE_HELP.contains(&format!("{id},"))
                    || LICENSE_HELP.contains(&format!("{id})")),
                "{id}"
            );
        }
        let form = |license: &str| PublishForm {
            name: "M".into(),
            symbol: "M".into(),
            license: license.into(),
            ..PublishForm::default()
        };
        let req = |f: PublishForm| f.request("0x01", Hash32([1; 32]), "n".into(), 1);
        assert_eq!(req(form("")).unwrap().license, None);
        assert_eq!(req(form("apache-2.0")).unwrap().license.as_deref(), Some("Apache-2.0"));
        let json = serde_json::to_string(&req(form("")).unwrap()).unwrap();
        assert!(!json.contains("license"), "none named, none sent: {json}");
        assert_eq!(form("GPL-2.0").check().unwrap_err().field, "license");
    }

    /// A safetensors file: header JSON, then `data` bytes.
    fn st(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.resize(b.len() + data, 0);
        b
    }

    fn check(b: &[u8]) -> Result<WeightsHeader, SpecError> {
        let total = b.len() as u64;
        let n = header_len(b, total)?;
        check_header(&b[8..8 + n as usize], n, total)
    }

    #[test]
    fn weights_need_a_readable_header_covering_the_file() {
        let ok = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F32","shape":[2],"data_offsets":[24,32]}}"#;
        assert_eq!(check(&st(ok, 32)).unwrap(), WeightsHeader { tensors: 2, elements: 8 });
        // Data missing or trailing: the offsets do not cover the file.
        assert!(check(&st(ok, 16)).unwrap_err().reason.contains("outside"));
        assert!(check(&st(ok, 40)).unwrap_err().reason.contains("end at byte 32 of 40"));
        assert!(check(&st(r#"{"__metadata__":{}}"#, 0)).unwrap_err().reason.contains("no tensor"));
        assert!(
            check(&st(r#"{"a":{"dtype":"F32","shape":[1]}}"#, 4))
                .unwrap_err()
                .reason
                .contains("`a`")
        );
        assert!(check(&st("not json", 0)).unwrap_err().reason.contains("not JSON"));
        // A header length past the file's end, or a file shorter than the length itself.
        let mut b = st(ok, 32);
        b[..8].copy_from_slice(&10_000u64.to_le_bytes());
        assert!(check(&b).unwrap_err().reason.contains("not safetensors"));
        assert_eq!(check(&[1, 2, 3]).unwrap_err().field, "weights");
    }

    #[test]
    fn config_and_tokenizer_are_checked_as_the_api_checks_them() {
        assert_eq!(check_config(br#"{"model_type":"gpt2","n_layer":1}"#).unwrap(), "gpt2");
        assert_eq!(check_config(br#"{"model_type":"qwen3"}"#).unwrap(), "qwen3");
        let e = check_config(br#"{"model_type":"bert"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config: model_type `bert` is not supported (supported: gpt2, llama, mistral, qwen2, qwen3)"
        );
        assert!(check_config(b"{").unwrap_err().reason.contains("not JSON"));
        assert!(check_config(b"{}").unwrap_err().reason.contains("model_type"));
        assert!(check_tokenizer(br#"{"model":{"type":"BPE"}}"#).is_ok());
        assert!(check_tokenizer(br#"{"vocab":{}}"#).is_err());
        assert!(check_size("weights", "model.safetensors", 0, 10).is_err());
        assert_eq!(
            check_size("config", "config.json", 70_000, 64 << 10).unwrap_err().to_string(),
            "config: config.json is 70000 bytes, over the API's limit of 65536"
        );
    }

    #[test]
    fn the_request_has_the_apis_fields_and_the_clis_scheme() {
        assert_eq!(parse_units("price", "2.5").unwrap(), 2_500_000_000_000_000_000);
        assert_eq!(parse_units("price", "100").unwrap(), 100 * 10u128.pow(18));
        assert_eq!(parse_units("price", ".5").unwrap(), 5 * 10u128.pow(17));
        for s in ["", "-1", "1.2.3", "1e3", "0.0000000000000000001", "."] {
            assert!(parse_units("price", s).is_err(), "{s}");
        }
        let mut f = PublishForm::default();
        assert_eq!(f.check().unwrap_err().field, "name");
        (f.name, f.symbol, f.price) = ("Tiny".into(), "TINY".into(), "2".into());
        let r = f.request("0xabc", Hash32([7; 32]), "n-1".into(), 99).unwrap();
        assert_eq!(r.price, "2000000000000000000");
        assert_eq!(r.reward_scheme, RewardScheme::geometric(100 * 10u128.pow(18), 5000, 4));
        let mut keys: Vec<String> =
            serde_json::to_value(&r).unwrap().as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "description",
                "expires_at",
                "name",
                "nonce",
                "owner",
                "price",
                "reward_scheme",
                "symbol",
                "weights_sha256"
            ]
        );
        for (field, g) in [
            ("price", (|f| f.price = "0".into()) as fn(&mut PublishForm)),
            ("symbol", |f| f.symbol = "X".repeat(17)),
            ("royalty", |f| f.royalty = "11".into()),
            ("reward_depth", |f| f.reward_depth = "0".into()),
            ("reward_scheme", |f| f.reward_first_bps = "20000".into()),
        ] {
            let mut bad = f.clone();
            g(&mut bad);
            assert_eq!(bad.check().unwrap_err().field, field);
        }
        let domain = ReceiptDomain::new(31337, alloy::primitives::Address::ZERO);
        let body = serde_json::to_vec(&r).unwrap();
        let td = publish_typed_data(&domain, &body).unwrap();
        assert!(td.contains("publish-model"));
    }
}
