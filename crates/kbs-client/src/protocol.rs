//! Names both ends of the KBS protocol agree on.

/// The KBS protocol version spoken here.
pub const PROTOCOL_VERSION: &str = "0.4.0";

/// The cookie that carries the session id from `/auth` to `/attest` and `/resource`.
pub const SESSION_COOKIE: &str = "kbs-session-id";

/// The resource a KBS in quick mode serves (the Conker facade's key, `vouch run --quick`).
pub const QUICK_RESOURCE: &str = "conker/secret/json";

/// Whether `s` may be one segment of a resource path: letters, digits, '-', '_' or '.', at most
/// 128 bytes, and not only dots (so never `.` or `..`).
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().any(|b| b != b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        for ok in ["default", "key-1", "a_b.c", "x".repeat(128).as_str()] {
            assert!(valid_segment(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "...",
            "a/b",
            "a b",
            "é",
            "x".repeat(129).as_str(),
        ] {
            assert!(!valid_segment(bad), "{bad}");
        }
    }
}
