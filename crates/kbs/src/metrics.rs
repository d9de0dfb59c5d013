//! vouch-kbs's metrics, all defined here, served as Prometheus text at `/metrics` on the KBS's
//! listener to a scraper that presents the metrics token (`--metrics-token-file`); without one
//! configured, `/metrics` is off. Labels are fixed names only (outcomes, the CoCo error kinds),
//! never a resource path, a session id or anything a client sent.

use vouch_base::metrics::{Counter, Latency, Text};

#[derive(Debug, Default)]
pub(crate) struct KbsMetrics {
    /// `/auth` by outcome: `challenged` or the error kind.
    pub auth: Counter,
    /// `/attest` by outcome: `attested` or the error kind (`EvidenceFailed`, ...).
    pub attest: Counter,
    /// Verification time of an attestation (all of `/attest`).
    pub attestation: Latency,
    /// `/resource` reads, the end of a round trip, by outcome: `released` or the error kind.
    pub round_trips: Counter,
}

impl KbsMetrics {
    /// One scrape, with the session table's size at this moment.
    pub fn render(&self, sessions: usize) -> String {
        let mut t = Text::default();
        t.counter(
            "vouch_kbs_auth_total",
            "Session requests (/kbs/v0/auth) by outcome.",
            "outcome",
            &self.auth,
        );
        t.counter(
            "vouch_kbs_attestations_total",
            "Attestations (/kbs/v0/attest) by outcome.",
            "outcome",
            &self.attest,
        );
        t.latency(
            "vouch_kbs_attestation_seconds",
            "Time to verify an attestation.",
            &self.attestation,
        );
        t.counter(
            "vouch_kbs_round_trips_total",
            "Resource requests (the end of a round trip) by outcome.",
            "outcome",
            &self.round_trips,
        );
        t.gauge(
            "vouch_kbs_sessions",
            "Open sessions in the table.",
            sessions as u64,
        );
        t.finish()
    }
}

/// Whether `presented` is the configured token, compared in constant time.
pub(crate) fn token_matches(configured: &str, presented: &str) -> bool {
    use ring::digest::{digest, SHA256};
    // Equal-length digests compared without an early exit: the time says nothing of where the
    // tokens differ, nor of their lengths.
    let a = digest(&SHA256, configured.as_bytes());
    let b = digest(&SHA256, presented.as_bytes());
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_token() {
        let m = KbsMetrics::default();
        m.auth.inc("challenged");
        m.round_trips.inc("released");
        m.round_trips.inc("PolicyDenied");
        let text = m.render(3);
        assert!(text.contains("vouch_kbs_auth_total{outcome=\"challenged\"} 1\n"));
        assert!(text.contains("vouch_kbs_round_trips_total{outcome=\"PolicyDenied\"} 1\n"));
        assert!(text.contains("vouch_kbs_sessions 3\n"));
        assert!(token_matches("s3cret-token", "s3cret-token"));
        assert!(!token_matches("s3cret-token", "s3cret-tokem"));
        assert!(!token_matches("s3cret-token", ""));
    }
}
