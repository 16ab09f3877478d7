//! A 32-byte digest written as lowercase `0x`-prefixed hex on the wire.
//!
//! Used for canonical weights hashes, dataset hashes, receipt hashes and Merkle roots. The
//! hex codec is written out here (rather than pulling a crate) to keep this crate serde-only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte digest (SHA-256 or keccak-256, depending on what it commits to).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub [u8; 32]);

/// Why a string is not a [`Hash32`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseHashError(&'static str);

impl fmt::Display for ParseHashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid 32-byte hash: {}", self.0)
    }
}

impl std::error::Error for ParseHashError {}

impl Hash32 {
    /// The all-zero hash, used as "absent" on chain (e.g. no parent).
    pub const ZERO: Hash32 = Hash32([0; 32]);

    /// Lowercase hex with a `0x` prefix.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(66);
        s.push_str("0x");
        for b in self.0 {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 0xf) as usize] as char);
        }
        s
    }

    /// The first 4 bytes as hex, for logs and tables.
    pub fn short(&self) -> String {
        self.to_hex()[..10].to_string()
    }
}

impl FromStr for Hash32 {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
        if hex.len() != 64 {
            return Err(ParseHashError("expected 64 hex digits"));
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(ParseHashError("non-hex digit")),
        };
        let bytes = hex.as_bytes();
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (nibble(bytes[2 * i])? << 4) | nibble(bytes[2 * i + 1])?;
        }
        Ok(Hash32(out))
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", self.to_hex())
    }
}

impl From<[u8; 32]> for Hash32 {
    fn from(b: [u8; 32]) -> Self {
        Hash32(b)
    }
}

impl Serialize for Hash32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trips(bytes in any::<[u8; 32]>()) {
            let h = Hash32(bytes);
            prop_assert_eq!(h.to_hex().parse::<Hash32>().unwrap(), h);
            let json = serde_json::to_string(&h).unwrap();
            prop_assert_eq!(serde_json::from_str::<Hash32>(&json).unwrap(), h);
        }

        #[test]
        fn garbage_never_panics(s in ".{0,80}") {
            let _ = s.parse::<Hash32>();
        }
    }

    #[test]
    fn rejects_wrong_length_and_digits() {
        assert!("0x12".parse::<Hash32>().is_err());
        assert!(format!("0x{}", "g".repeat(64)).parse::<Hash32>().is_err());
        // Multi-byte UTF-8 of the right byte length must not panic on slicing.
        assert!("é".repeat(32).parse::<Hash32>().is_err());
    }
}
