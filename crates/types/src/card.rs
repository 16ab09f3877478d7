//! Editing a model's card: what its owner may change after publication, and the bounds.
//!
//! A card edit (`POST /api/models/{nft}/card`, signed like every write) changes the model's
//! **description**, the **tags** its owner adds on top of the fixed ones and, for a root
//! only, its **licence**; the catalogue card and the model's Ocean DDO (re-set on chain) both
//! follow. Nothing else is editable: the name and symbol live in the data NFT and the
//! datatoken (ERC-721 / ERC-20, fixed at creation), and the hashes, lineage and scheme are
//! what buyers and auditors rely on.
//!
//! The licence is chosen at publication ([`check_license`]: an SPDX identifier from a short
//! list, or a `LicenseRef-…` for terms such as Llama's community licences) and a derived
//! model inherits its root's: a derivative of Llama weights stays under Llama's terms, so
//! its trainer cannot change it, while the root's owner may (derivations made afterwards
//! carry the new one; those made before keep the terms they were made under).
//!
//! The API, the CLI and the storefront check an edit with the same functions here, so a
//! form refuses exactly what the API would.

use serde::{Deserialize, Serialize};

use crate::ModelCard;

/// Longest description, in bytes of UTF-8 (as publication allows).
pub const MAX_DESCRIPTION_BYTES: usize = 2048;
/// Most tags an owner adds (the DDO lists the fixed ones besides).
pub const MAX_TAGS: usize = 8;
/// Longest tag, in characters.
pub const MAX_TAG_LEN: usize = 32;
/// The fields an edit may name besides `model`, `nonce` and `expires_at`.
pub const EDITABLE: [&str; 3] = ["description", "tags", "license"];
/// The SPDX identifiers a publisher may name as such: the open families' own (Apache-2.0 for
/// Mistral, Qwen2.5, SmolLM2 and TinyLlama; MIT for GPT-2) and the few others model weights
/// are commonly released under. Anything else is a `LicenseRef-…`.
pub const SPDX_LICENSES: [&str; 8] = [
    "Apache-2.0",
    "MIT",
    "BSD-3-Clause",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "CC-BY-NC-4.0",
    "CC-BY-NC-SA-4.0",
    "CC0-1.0",
];
/// SPDX's prefix for a licence outside its list (`LicenseRef-llama3.2-community`).
pub const LICENSE_REF: &str = "LicenseRef-";
/// Longest licence identifier, in bytes (ASCII).
pub const MAX_LICENSE_LEN: usize = 64;

/// The signed body of a card edit. A field left out keeps its value; `tags` replaces the
/// owner's tags as a whole (`[]` removes them all).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CardEdit {
    /// The model's NFT, as in the URL (a signature for one model is no use on another).
    pub model: String,
    /// At most 2,048 bytes of UTF-8, no control characters but line breaks, no bidirectional
    /// controls; left out: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 2048))]
    pub description: Option<String>,
    /// Replaces the owner's tags: at most 8, lowercase letters, digits and inner hyphens (2 to
    /// 32 characters), none of the fixed ones (posthuman, the family, compute-to-data,
    /// derived), none twice; left out: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_items = 8))]
    pub tags: Option<Vec<String>>,
    /// A root's new licence: an SPDX identifier from the list (Apache-2.0, MIT, BSD-3-Clause,
    /// CC-BY-4.0, CC-BY-SA-4.0, CC-BY-NC-4.0, CC-BY-NC-SA-4.0, CC0-1.0) or `LicenseRef-`
    /// followed by letters, digits, `.` and `-` (at most 64 bytes in all); `""` names none
    /// (the default, "proprietary: compute-to-data only"). A derived model keeps its root's:
    /// changing it is refused. Left out: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub license: Option<String>,
    pub nonce: String,
    pub expires_at: u64,
}

/// Why an edit is refused: the field and what it must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardError {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for CardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for CardError {}

fn refuse(field: &str, reason: impl Into<String>) -> CardError {
    CardError { field: field.into(), reason: reason.into() }
}

/// Characters that make text display other than it reads: the Unicode bidirectional
/// embeddings, overrides and isolates (a description could otherwise show a reversed
/// address or price).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A description: at most [`MAX_DESCRIPTION_BYTES`] bytes, no control characters except the
/// line break (a description may have paragraphs), no bidirectional controls. May be empty.
pub fn check_description(s: &str) -> Result<(), CardError> {
    if s.len() > MAX_DESCRIPTION_BYTES {
        return Err(refuse(
            "description",
            format!("at most {MAX_DESCRIPTION_BYTES} bytes (this one is {})", s.len()),
        ));
    }
    if let Some(c) = s.chars().find(|&c| (c.is_control() && c != '\n') || is_bidi_control(c)) {
        return Err(refuse(
            "description",
            format!("no control characters (found U+{:04X}); line breaks are allowed", c as u32),
        ));
    }
    Ok(())
}

/// The tags every model's DDO carries, which its owner can neither add nor remove:
/// `posthuman`, its family, `compute-to-data`, and `derived` for a derived model.
pub fn fixed_tags(card: &ModelCard) -> Vec<String> {
    let mut tags = vec!["posthuman".to_string(), card.family().to_string()];
    tags.push("compute-to-data".into());
    if card.parent.is_some() {
        tags.push("derived".into());
    }
    tags
}

/// The owner's tags for `card`: at most [`MAX_TAGS`], each 1..=[`MAX_TAG_LEN`] of lowercase
/// `a-z`, `0-9` and inner `-`, none twice, none of the fixed tags (nor `derived`, which says
/// how the model came to be).
pub fn check_tags(tags: &[String], card: &ModelCard) -> Result<(), CardError> {
    if tags.len() > MAX_TAGS {
        return Err(refuse("tags", format!("at most {MAX_TAGS}")));
    }
    let fixed = fixed_tags(card);
    for (i, t) in tags.iter().enumerate() {
        let shown: String = t.chars().take(MAX_TAG_LEN + 1).collect();
        let ok = !t.is_empty()
            && t.len() <= MAX_TAG_LEN
            && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !t.starts_with('-')
            && !t.ends_with('-');
        if !ok {
            return Err(refuse(
                "tags",
                format!("{shown:?}: 1..={MAX_TAG_LEN} of lowercase a-z, 0-9 and inner hyphens"),
            ));
        }
        if fixed.contains(t) || t == "derived" {
            return Err(refuse("tags", format!("{t:?} is one of the model's fixed tags")));
        }
        if tags[..i].contains(t) {
            return Err(refuse("tags", format!("{t:?} is listed twice")));
        }
    }
    Ok(())
}

/// The licence a publisher names, in its canonical spelling: `""` (or only spaces) names none
/// (`None`: [`crate::model::MODEL_LICENSE`] applies); an SPDX identifier from
/// [`SPDX_LICENSES`] matches in any case (`mit` is `MIT`, as SPDX matches identifiers);
/// `LicenseRef-` (any case) followed by 1 or more of ASCII letters, digits, `.` and `-` is
/// kept as typed after the prefix, at most [`MAX_LICENSE_LEN`] bytes in all. Licence
/// expressions (`MIT OR Apache-2.0`) are refused: a model is listed under one licence.
pub fn check_license(s: &str) -> Result<Option<String>, CardError> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let shown: String = t.chars().take(MAX_LICENSE_LEN + 1).collect();
    if let Some(id) = SPDX_LICENSES.iter().find(|id| id.eq_ignore_ascii_case(t)) {
        return Ok(Some(id.to_string()));
    }
    let listed = SPDX_LICENSES.join(", ");
    let prefix = t.get(..LICENSE_REF.len()).filter(|p| p.eq_ignore_ascii_case(LICENSE_REF));
    let Some(_) = prefix else {
        return Err(refuse(
            "license",
            format!(
                "{shown:?} is not one of the SPDX identifiers accepted ({listed}) nor a \
                 {LICENSE_REF}… identifier (e.g. {LICENSE_REF}llama3.2-community)"
            ),
        ));
    };
    let rest = &t[LICENSE_REF.len()..];
    let ok = t.len() <= MAX_LICENSE_LEN
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !ok {
        return Err(refuse(
            "license",
            format!(
                "{shown:?}: {LICENSE_REF} then 1 or more ASCII letters, digits, '.' and '-', \
                 at most {MAX_LICENSE_LEN} bytes in all"
            ),
        ));
    }
    Ok(Some(format!("{LICENSE_REF}{rest}")))
}

/// Tags typed as one line ("nlp, small wiki") split into tags: by commas and whitespace,
/// empties dropped. What the CLI's `--tags` and the storefront's field take.
pub fn split_tags(line: &str) -> Vec<String> {
    line.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

impl CardEdit {
    /// `card` with this edit applied, after checking each field it names; an edit naming
    /// no field is refused (it could change nothing), and so is a new licence for a derived
    /// model (it keeps its root's; naming the one it has changes nothing and passes).
    pub fn apply(&self, card: &ModelCard) -> Result<ModelCard, CardError> {
        if self.description.is_none() && self.tags.is_none() && self.license.is_none() {
            return Err(refuse("description", "name a description, tags or a licence to change"));
        }
        let mut out = card.clone();
        if let Some(d) = &self.description {
            check_description(d)?;
            out.description = d.clone();
        }
        if let Some(t) = &self.tags {
            check_tags(t, card)?;
            out.tags = t.clone();
        }
        if let Some(l) = &self.license {
            let license = check_license(l)?;
            if license != card.license && card.parent.is_some() {
                return Err(refuse(
                    "license",
                    format!(
                        "a derived model keeps its root's licence ({}); only the root's owner \
                         may change it, for derivations made afterwards",
                        card.license_text()
                    ),
                ));
            }
            out.license = license;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hash32, RewardScheme};

    fn card(parent: bool) -> ModelCard {
        ModelCard {
            nft: "0x01".into(),
            datatoken: "0x02".into(),
            name: "Tiny".into(),
            symbol: "TINY".into(),
            description: "old".into(),
            owner: "0x03".into(),
            weights_hash: Hash32([1; 32]),
            parent: parent.then(|| "0x04".into()),
            trainer: None,
            architecture: "gpt2 2L/32d/2h ctx64 vocab300".into(),
            parameters: 1,
            exchange_id: None,
            price: None,
            reward_scheme: RewardScheme::geometric(1, 5000, 1),
            lora: None,
            tags: vec![],
            license: None,
        }
    }

    fn edit(description: Option<&str>, tags: Option<&[&str]>) -> CardEdit {
        CardEdit {
            model: "0x01".into(),
            description: description.map(str::to_string),
            tags: tags.map(|t| t.iter().map(|s| s.to_string()).collect()),
            license: None,
            nonce: "n".into(),
            expires_at: 1,
        }
    }

    fn relicense(license: &str) -> CardEdit {
        CardEdit { license: Some(license.into()), ..edit(None, None) }
    }

    #[test]
    fn licences_are_listed_spdx_ids_or_license_refs() {
        let ok = |s: &str| check_license(s).unwrap();
        assert_eq!(ok(""), None);
        assert_eq!(ok("  "), None);
        assert_eq!(ok("Apache-2.0").as_deref(), Some("Apache-2.0"));
        // SPDX matches identifiers case-insensitively: stored in its canonical spelling.
        assert_eq!(ok("mit").as_deref(), Some("MIT"));
        assert_eq!(ok(" cc-by-sa-4.0 ").as_deref(), Some("CC-BY-SA-4.0"));
        assert_eq!(
            ok("licenseref-llama3.2-community").as_deref(),
            Some("LicenseRef-llama3.2-community")
        );
        let longest = format!("{LICENSE_REF}{}", "a".repeat(MAX_LICENSE_LEN - LICENSE_REF.len()));
        assert_eq!(ok(&longest).as_deref(), Some(longest.as_str()));
        for bad in [
            "GPL-3.0-only".to_string(),
            "MIT OR Apache-2.0".into(),
            "LicenseRef-".into(),
            "LicenseRef-llama 3".into(),
            "LicenseRef-llama_3".into(),
            "LicenseRef-ünï".into(),
            "LicenseRef-a\u{202E}".into(),
            "proprietary: compute-to-data only".into(),
            format!("{longest}a"),
        ] {
            let e = check_license(&bad).unwrap_err();
            assert_eq!(e.field, "license", "{bad:?}");
        }
        assert!(check_license("GPL-3.0-only").unwrap_err().reason.contains("Apache-2.0, MIT"));
    }

    #[test]
    fn a_root_changes_its_licence_a_derived_model_keeps_its_roots() {
        let root = card(false);
        assert_eq!(root.license_text(), crate::model::MODEL_LICENSE);
        let mit = relicense("MIT").apply(&root).unwrap();
        assert_eq!((mit.license.as_deref(), mit.license_text()), (Some("MIT"), "MIT"));
        assert_eq!(relicense("").apply(&mit).unwrap().license, None, "back to the default");
        let derived = ModelCard { license: Some("MIT".into()), ..card(true) };
        let e = relicense("Apache-2.0").apply(&derived).unwrap_err();
        assert_eq!(e.field, "license");
        assert!(e.reason.contains("root's licence (MIT)"), "{}", e.reason);
        assert_eq!(relicense("").apply(&derived).unwrap_err().field, "license");
        // Naming the licence it has changes nothing: a form sending every field passes.
        assert_eq!(relicense("mit").apply(&derived).unwrap(), derived);
        assert_eq!(relicense("nope").apply(&derived).unwrap_err().field, "license");
    }

    #[test]
    fn applies_what_it_names_and_keeps_the_rest() {
        let c = card(false);
        let d = edit(Some("new\nparagraph — ünïcode"), None).apply(&c).unwrap();
        assert_eq!((d.description.as_str(), d.tags.len()), ("new\nparagraph — ünïcode", 0));
        let t = edit(None, Some(&["wiki", "small-2"])).apply(&c).unwrap();
        assert_eq!(
            (t.description.as_str(), t.tags.clone()),
            ("old", vec!["wiki".into(), "small-2".into()])
        );
        assert_eq!(edit(Some(""), Some(&[])).apply(&t).unwrap().tags, Vec::<String>::new());
        assert!(edit(None, None).apply(&c).is_err(), "an edit of nothing");
    }

    #[test]
    fn refuses_out_of_bounds_text_and_tags() {
        let c = card(true);
        let long = "x".repeat(MAX_DESCRIPTION_BYTES + 1);
        for bad in [long.as_str(), "tab\there", "cr\r", "nul\0", "bell\u{7}", "rtl\u{202E}1.0"] {
            let e = edit(Some(bad), None).apply(&c).unwrap_err();
            assert_eq!(e.field, "description", "{bad:?}");
        }
        assert!(check_description(&"é".repeat(MAX_DESCRIPTION_BYTES / 2)).is_ok());
        let nine: Vec<&str> = ["a", "b", "c", "d", "e", "f", "g", "h", "i"].to_vec();
        let too_long = "a".repeat(MAX_TAG_LEN + 1);
        for bad in [
            &nine[..],
            &["Upper"],
            &["with space"],
            &["-lead"],
            &["trail-"],
            &[""],
            &[too_long.as_str()],
            &["ünï"],
            &["posthuman"],
            &["gpt2"],
            &["derived"],
            &["x", "x"],
        ] {
            let e = edit(None, Some(bad)).apply(&c).unwrap_err();
            assert_eq!(e.field, "tags", "{bad:?}");
        }
    }

    #[test]
    fn fixed_tags_and_typed_lines() {
        assert_eq!(fixed_tags(&card(false)), ["posthuman", "gpt2", "compute-to-data"]);
        assert_eq!(fixed_tags(&card(true)).last().map(String::as_str), Some("derived"));
        assert_eq!(split_tags(" nlp, small  wiki,,"), ["nlp", "small", "wiki"]);
    }

    #[test]
    fn an_edit_names_only_editable_fields() {
        let name = r#"{"model":"0x01","name":"New","nonce":"n","expires_at":1}"#;
        assert!(serde_json::from_str::<CardEdit>(name).is_err());
        let ok = r#"{"model":"0x01","tags":["a"],"nonce":"n","expires_at":1}"#;
        assert_eq!(serde_json::from_str::<CardEdit>(ok).unwrap().tags.unwrap(), ["a"]);
        let lic = r#"{"model":"0x01","license":"MIT","nonce":"n","expires_at":1}"#;
        assert_eq!(serde_json::from_str::<CardEdit>(lic).unwrap().license.unwrap(), "MIT");
    }
}
