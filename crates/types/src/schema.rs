//! JSON Schemas of the wire types whose serde is written by hand (feature `openapi`).
//!
//! `#[derive(utoipa::ToSchema)]` reads serde's derive attributes, not a hand-written
//! `Serialize`: [`Hash32`] and [`Ocean`] are strings on the wire, and an unbounded `f64`
//! ([`crate::outputs::unbounded`]) is a number or `"inf"`. Their schemas are written here,
//! beside nothing else, so the API's OpenAPI document (`posthuman-functions`) says what the
//! JSON really holds.

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::Hash32;
use crate::pricing::Ocean;

impl PartialSchema for Hash32 {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^0x[0-9a-f]{64}$"))
            .description(Some(
                "A 32-byte hash (SHA-256 or keccak-256, by what it commits to) as lowercase \
                 0x-prefixed hex.",
            ))
            .into()
    }
}

impl ToSchema for Hash32 {}

impl PartialSchema for Ocean {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]+$"))
            .description(Some(
                "An amount of OCEAN in base units (10^-18 OCEAN) as a decimal string.",
            ))
            .into()
    }
}

impl ToSchema for Ocean {}

/// A number that may be +∞, written `"inf"` (for `#[schema(schema_with = …)]`).
pub fn unbounded() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double))),
        )
        .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["inf"])))
        .description(Some("A number, or \"inf\" when unbounded."))
        .into()
}
