//! How numbers, amounts, times and hashes read on the page.

use posthuman_types::JobProgress;

/// A token amount in base units (18 decimals, as a decimal string) as whole tokens with up
/// to 4 decimals, e.g. `"2500000000000000000"` → `"2.5"`. Non-numeric input is shown as is.
pub fn tokens(base_units: &str) -> String {
    if base_units.is_empty() || !base_units.bytes().all(|b| b.is_ascii_digit()) {
        return base_units.to_string();
    }
    let digits = base_units.trim_start_matches('0');
    let padded = format!("{digits:0>19}");
    let (whole, frac) = padded.split_at(padded.len() - 18);
    let frac = frac[..4].trim_end_matches('0');
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    if frac.is_empty() { whole.to_string() } else { format!("{whole}.{frac}") }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), valid for every u64 second we can see.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `0x1234…cdef` for long hex strings.
pub fn short(hex: &str) -> String {
    if hex.len() > 14 {
        format!("{}…{}", &hex[..6], &hex[hex.len() - 4..])
    } else {
        hex.to_string()
    }
}

/// A job's progress as a percentage (0–100) and one line of text.
pub fn progress(p: &JobProgress) -> (u32, String) {
    let pct = (p.done.min(p.total) * 100).checked_div(p.total).unwrap_or(0) as u32;
    let mut line = format!("{} {}/{} ({pct}%)", p.phase, p.done, p.total);
    if let Some(loss) = p.loss {
        line.push_str(&format!(", loss {loss:.3}"));
    }
    if p.tokens_per_sec > 0.0 {
        line.push_str(&format!(", {:.0} tok/s", p.tokens_per_sec));
    }
    if let Some(eta) = p.eta_secs {
        line.push_str(&format!(", ~{eta:.0} s left"));
    }
    (pct, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthuman_types::JobKind;

    #[test]
    fn token_amounts_read_as_whole_tokens() {
        assert_eq!(tokens("2500000000000000000"), "2.5");
        assert_eq!(tokens("1000000000000000000"), "1");
        assert_eq!(tokens("100000000000000000000"), "100");
        assert_eq!(tokens("1"), "0");
        assert_eq!(tokens("123456789000000000"), "0.1234");
        assert_eq!(tokens("0"), "0");
        assert_eq!(tokens("n/a"), "n/a");
    }

    #[test]
    fn unix_seconds_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_780_000_600), "2026-05-28 20:36:40 UTC");
    }

    #[test]
    fn progress_reads_as_a_line() {
        let p = JobProgress {
            kind: JobKind::Train,
            phase: "training".into(),
            done: 5,
            total: 20,
            loss: Some(4.25),
            tokens_per_sec: 1000.0,
            elapsed_secs: 1.0,
            eta_secs: Some(3.0),
        };
        assert_eq!(
            progress(&p),
            (25, "training 5/20 (25%), loss 4.250, 1000 tok/s, ~3 s left".into())
        );
    }
}
