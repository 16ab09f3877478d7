//! Reading without serde's array form of structs: [`MapStructs`], a pass-through deserializer
//! for JSON readers that asks for a *map* wherever a struct (or a struct variant) is wanted.
//!
//! serde's derived `Deserialize` for a struct carries two readers: `visit_map` (the JSON
//! object every writer in this project produces) and `visit_seq` (the struct as an array of
//! its field values, `[1, "a"]`, which nothing here writes). serde_json's `deserialize_struct`
//! accepts both, so every struct a program reads drags its array form into the binary: a
//! second copy of the field-by-field decoding. In the storefront's wasm, where code size is
//! download size, that was 34.5 KB raw, 13.3 KB gzipped (2026-12-07). Read through
//! [`MapStructs`], the array form is never instantiated, and an array where a struct belongs
//! is refused as serde_json refuses any other wrong type ("invalid type: sequence, expected
//! struct X"). Everything else (objects, defaults, unknown fields, enums, options, numbers,
//! error positions) is the inner deserializer's own code: the adapter only forwards.
//!
//! `posthuman_receipts::json::from_str` is `serde_json::from_str` through it; `de::tests` and
//! `views::tests` check that every wire type reads the same through both.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// A deserializer that forwards to `D`, reading structs and struct variants as maps. Every
/// visitor, seed and access it hands out wraps again, so the nested values read the same way.
/// For self-describing formats (JSON), where a struct is a map with its field names.
pub struct MapStructs<D>(pub D);

/// A visitor that wraps what it is given (deserializers, accesses) in [`MapStructs`].
struct Wrap<V>(V);

/// A seed whose deserializer is wrapped in [`MapStructs`].
struct Seed<S>(S);

/// A visitor that takes a map only: `visit_seq` is serde's default, a type error, so the
/// wrapped visitor's own is never reached.
struct MapOnly<V>(V);

macro_rules! forward {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method(Wrap(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapStructs<D> {
    type Error = D::Error;

    forward! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, Wrap(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, Wrap(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, Wrap(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, Wrap(visitor))
    }

    /// The point of the adapter: a map, so the visitor's `visit_seq` is never reached. (Not
    /// the inner `deserialize_struct` with a map-only visitor: serde_json's keeps an array
    /// branch, with its own type error, for every struct: 2.4 KB more gzipped, measured.)
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Wrap(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, Wrap(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(MapStructs(d))
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for MapOnly<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Wrap(map))
    }
}

macro_rules! visit {
    ($($method:ident($t:ty))*) => {$(
        fn $method<E: de::Error>(self, v: $t) -> Result<V::Value, E> {
            self.0.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    visit! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64)
        visit_i128(i128) visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64)
        visit_u128(u128) visit_f32(f32) visit_f64(f64) visit_char(char) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(MapStructs(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(MapStructs(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(Wrap(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Wrap(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(Wrap(data))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Seed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Wrap<A> {
    type Error = A::Error;
    type Variant = Wrap<A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Wrap<A::Variant>), A::Error> {
        let (value, variant) = self.0.variant_seed(Seed(seed))?;
        Ok((value, Wrap(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Wrap<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Seed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Wrap(visitor))
    }

    /// The inner deserializer reads the variant's value as a struct, which reaches the
    /// visitor's array form unless the visitor takes a map only.
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, MapOnly(visitor))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Debug;

    use serde::Deserialize;
    use serde::de::DeserializeOwned;

    use super::*;

    /// `text` read through [`MapStructs`], as `posthuman_receipts::json::from_str` reads it.
    pub(crate) fn read<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
        let mut de = serde_json::Deserializer::from_str(text);
        let v = T::deserialize(MapStructs(&mut de))?;
        de.end()?;
        Ok(v)
    }

    /// `text` reads to the same value, or fails with the same words and position, through
    /// [`MapStructs`] as through plain serde_json.
    pub(crate) fn same<T: DeserializeOwned + PartialEq + Debug>(text: &str) {
        let plain = serde_json::from_str::<T>(text).map_err(|e| e.to_string());
        assert_eq!(read::<T>(text).map_err(|e| e.to_string()), plain, "{text}");
    }

    fn seven() -> u8 {
        7
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        x: String,
        #[serde(default = "seven")]
        y: u8,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Newtype(u64);

    #[derive(Debug, PartialEq, Deserialize)]
    struct Pair(u8, String);

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum External {
        Unit,
        New(Inner),
        Tuple(u8, u8),
        Struct {
            a: u8,
            #[serde(default)]
            b: Option<Inner>,
        },
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Internal {
        One(Inner),
        Two { z: i64 },
        Three,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "status", content = "reason", rename_all = "snake_case")]
    enum Adjacent {
        Ok,
        Failed(String),
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(untagged)]
    enum Untagged {
        Number(f64),
        Word(String),
        Inner(Inner),
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Flat {
        id: u32,
        #[serde(flatten)]
        inner: Inner,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Everything {
        a: u32,
        #[serde(default)]
        b: Option<String>,
        c: Vec<Inner>,
        d: BTreeMap<String, u64>,
        e: f64,
        f: bool,
        g: i64,
        h: char,
        n: Newtype,
        p: Pair,
        u: (),
        ext: Vec<External>,
        int: Vec<Internal>,
        adj: Vec<Adjacent>,
        unt: Vec<Untagged>,
        flat: Option<Flat>,
        any: serde_json::Value,
    }

    const EVERYTHING: &str = r#"{"a":1,"c":[{"x":"é\n\"q\"","y":2},{"x":""}],"d":{"k":3},
        "e":-1.5e-3,"f":true,"g":-9007199254740993,"h":"ü","n":5,"p":[1,"two"],"u":null,
        "ext":["unit",{"new":{"x":"n"}},{"tuple":[1,2]},{"struct":{"a":3,"b":{"x":"s"}}},
               {"struct":{"a":4}}],
        "int":[{"kind":"one","x":"i"},{"kind":"two","z":-2},{"kind":"three"}],
        "adj":[{"status":"ok"},{"status":"failed","reason":"why"}],
        "unt":[1.25,"w",{"x":"u"}],
        "flat":{"id":9,"x":"f","y":1},
        "any":{"b":[1,2.5,null,{"c":"d"}],"a":true},
        "unknown":{"ignored":[1,{"deep":[]}]}}"#;

    #[test]
    fn every_serde_shape_reads_as_serde_json_reads_it() {
        let v: Everything = read(EVERYTHING).unwrap();
        assert_eq!(v.ext[3], External::Struct { a: 3, b: Some(Inner { x: "s".into(), y: 7 }) });
        assert_eq!(v.c[1].y, 7, "a default function");
        same::<Everything>(EVERYTHING);
        // Wrong input fails with serde_json's words and position.
        for bad in [
            r#"{"a":1}"#,
            r#"{"a":"1"}"#,
            r#"{"a":1,"c":[{"x":"x","z":1}]}"#,
            r#"{"a":1,"c":[],"d":{},"e":1,"f":true,"g":1,"h":"ab"}"#,
            r#"{"a":1} x"#,
            r#"{"a":1"#,
            "",
            "null",
        ] {
            same::<Everything>(bad);
        }
        for bad in [
            r#""new""#,
            r#""struct""#,
            r#""tuple""#,
            r#"{"unit":1}"#,
            r#"{"struct":{"b":null}}"#,
            r#"{"struct":{"a":1,"b":{"x":"s","w":0}}}"#,
            r#"{"nope":1}"#,
            r#"{"new":{"x":"n"},"unit":null}"#,
        ] {
            same::<External>(bad);
        }
        same::<Internal>(r#"{"kind":"two"}"#);
        same::<Internal>(r#"{"x":"i"}"#);
        same::<Adjacent>(r#"{"status":"failed"}"#);
        same::<Untagged>("true");
        same::<Flat>(r#"{"id":1,"x":"f","extra":2}"#);
        same::<Vec<u8>>("[1,2,256]");
        same::<Option<Inner>>("null");
        same::<Option<Inner>>(r#"{"x":"o"}"#);
        same::<BTreeMap<String, Inner>>(r#"{"a":{"x":"1"},"b":{"y":2}}"#);
        same::<serde_json::Value>(r#"[{"a":[1e400]}]"#);
    }

    /// The one difference: a struct (or struct variant) written as an array of its fields,
    /// which serde_json reads and nothing in this project writes.
    #[test]
    fn a_struct_as_an_array_is_refused_in_serde_jsons_words() {
        let plain = serde_json::from_str::<Inner>(r#"["x", 2]"#).unwrap();
        assert_eq!(plain, Inner { x: "x".into(), y: 2 });
        assert_eq!(
            read::<Inner>(r#"["x", 2]"#).unwrap_err().to_string(),
            "invalid type: sequence, expected struct Inner at line 1 column 0"
        );
        assert!(serde_json::from_str::<External>(r#"{"struct":[1,null]}"#).is_ok());
        assert_eq!(
            read::<External>(r#"{"struct":[1,null]}"#).unwrap_err().to_string(),
            "invalid type: sequence, expected struct variant External::Struct at line 1 column 11"
        );
        // Tuples and tuple structs are arrays on the wire, and still read.
        assert_eq!(read::<Pair>(r#"[1,"a"]"#).unwrap(), Pair(1, "a".into()));
    }
}
