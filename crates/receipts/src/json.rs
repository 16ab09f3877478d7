//! JSON text read without serde's array form of structs: [`from_str`] is
//! `serde_json::from_str` through [`posthuman_types::de::MapStructs`] (why: its module docs).
//!
//! One reader type matters as much: a type read both through [`from_str`] and through plain
//! `serde_json::from_str` is compiled twice, so the storefront, and the code of this crate it
//! runs, read JSON text only through [`from_str`].

use posthuman_types::de::MapStructs;
use serde::de::DeserializeOwned;

/// `serde_json::from_str` without the array form of structs: the same value and the same
/// errors, except that a struct written as a JSON array is refused.
pub fn from_str<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = T::deserialize(MapStructs(&mut de))?;
    // Only whitespace may follow, as serde_json::from_str requires.
    de.end()?;
    Ok(value)
}

/// `serde_json::from_value` without the array form of structs (as [`from_str`]).
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> serde_json::Result<T> {
    T::deserialize(MapStructs(value))
}
