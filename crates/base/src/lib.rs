//! What every vouch crate needs and nothing else: one clock and one way to put an error and its
//! causes on a line. No I/O beyond reading the system clock; no dependency on another vouch
//! crate.

pub mod clock {
    //! The system clock, read in one place.

    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Seconds since the Unix epoch (0 if the clock is before it).
    pub fn unix_secs() -> u64 {
        since_epoch().as_secs()
    }

    /// Milliseconds since the Unix epoch (0 if the clock is before it).
    pub fn unix_millis() -> u64 {
        u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long ago `t` was (zero if it is in the future).
    pub fn since(t: SystemTime) -> Duration {
        SystemTime::now().duration_since(t).unwrap_or_default()
    }

    /// Now as RFC 3339 (UTC, millisecond precision).
    pub fn rfc3339_millis() -> String {
        humantime::format_rfc3339_millis(SystemTime::now()).to_string()
    }

    /// The time `ms` milliseconds after the epoch as RFC 3339; a value beyond the year 9999
    /// (which RFC 3339 cannot write: only a damaged record holds one) is shown as now.
    pub fn rfc3339_from_millis(ms: u64) -> String {
        /// 9999-12-31T23:59:59.999Z
        const LAST: u64 = 253_402_300_799_999;
        match UNIX_EPOCH.checked_add(Duration::from_millis(ms)) {
            Some(t) if ms <= LAST => humantime::format_rfc3339_millis(t).to_string(),
            _ => rfc3339_millis(),
        }
    }

    fn since_epoch() -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// An error and its causes on one line, `error: cause: cause`, each cause once: a cause whose
/// text the line already holds (libraries often repeat their source in their own message) is
/// not written again.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn each_cause_is_written_once() {
        let e = E(
            "pull failed",
            Some(Box::new(E(
                "connect: refused",
                Some(Box::new(E("refused", None))),
            ))),
        );
        assert_eq!(error_chain(&e), "pull failed: connect: refused");
        assert_eq!(error_chain(&E("alone", None)), "alone");
    }

    #[test]
    fn every_millisecond_count_gives_a_timestamp() {
        assert_eq!(clock::rfc3339_from_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            clock::rfc3339_from_millis(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
        for huge in [253_402_300_800_000, u64::MAX] {
            assert!(clock::rfc3339_from_millis(huge).starts_with("20"), "{huge}");
        }
        assert!(clock::unix_secs() > 1_700_000_000);
        assert!(clock::unix_millis() / 1000 >= clock::unix_secs() - 1);
    }
}
