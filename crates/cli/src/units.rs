//! Token amounts: 18-decimal fixed point, parsed from and printed as decimal strings.

use alloy::primitives::U256;
use alloy::primitives::utils::{format_units, parse_units};

use crate::error::CliError;

/// One whole token in base units.
pub fn one() -> U256 {
    U256::from(10u64).pow(U256::from(18u64))
}

/// Parses "2.5" into base units (18 decimals); negative, empty or over-precise is refused.
pub fn parse(what: &str, s: &str) -> Result<U256, CliError> {
    let t = s.trim();
    if t.is_empty() || t.starts_with('-') {
        return Err(CliError::Usage(format!("{what} must be a non-negative decimal, not {s:?}")));
    }
    parse_units(t, 18).map(|p| p.get_absolute()).map_err(|_| {
        CliError::Usage(format!("{what} must be a decimal with ≤ 18 decimals, not {s:?}"))
    })
}

/// Base units as a decimal string without trailing zeros ("2.5", "100").
pub fn show(v: U256) -> String {
    let s = format_units(v, 18).unwrap_or_else(|_| v.to_string());
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(parse("x", "2.5").unwrap(), one() * U256::from(5) / U256::from(2));
        assert_eq!(show(parse("x", "2.5").unwrap()), "2.5");
        assert_eq!(show(parse("x", "100").unwrap()), "100");
        assert_eq!(show(U256::ZERO), "0");
        assert!(parse("x", "-1").is_err());
        assert!(parse("x", "abc").is_err());
        assert!(parse("x", "").is_err());
    }
}
