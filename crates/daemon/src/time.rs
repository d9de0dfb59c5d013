//! Timestamps as RFC 3339 strings (UTC, millisecond precision).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub fn from_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
