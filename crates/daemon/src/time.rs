//! Timestamps as RFC 3339 strings (UTC, millisecond precision).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The time `ms` milliseconds after the epoch; a value beyond the year 9999 (which RFC 3339
/// cannot write: only a damaged record holds one) is shown as now.
pub fn from_ms(ms: u64) -> String {
    /// 9999-12-31T23:59:59.999Z
    const LAST: u64 = 253_402_300_799_999;
    match UNIX_EPOCH.checked_add(Duration::from_millis(ms)) {
        Some(t) if ms <= LAST => humantime::format_rfc3339_millis(t).to_string(),
        _ => now(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_millisecond_count_gives_a_timestamp() {
        assert_eq!(super::from_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::from_ms(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
        for huge in [253_402_300_800_000, u64::MAX] {
            assert!(super::from_ms(huge).starts_with("20"), "{huge}");
        }
    }
}
