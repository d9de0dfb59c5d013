//! vouchd's metrics, all defined here, served as Prometheus text at `/metrics` on the daemon's
//! socket (0600: whoever may drive vouchd may read them). No label carries a container's
//! name, an image reference or anything from a request: only fixed outcome and reason names.

use vouch_api::TaskState;
use vouch_base::metrics::{Counter, Latency, Text};

use crate::engine::EngineError;

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Launches by outcome: `started`, `failed`, `cancelled`.
    pub launches: Counter,
    /// Failed launches by reason ([`reason`]).
    pub failures: Counter,
    /// Evidence produced for `/v1/attest` and for KBS round trips.
    pub attestation: Latency,
    /// Secret fetches (a whole KBS round trip) by outcome: `released`, `refused`, `error`,
    /// `cancelled`.
    pub kbs_round_trips: Counter,
    pub kbs_round_trip: Latency,
}

/// The reason a launch failed, as a fixed name.
pub fn reason(e: &EngineError) -> &'static str {
    match e {
        EngineError::Spec(_) | EngineError::BadRequest(_) | EngineError::Refused { .. } => "config",
        EngineError::Store(_) | EngineError::Load(_) => "image",
        EngineError::Journal(_) => "measurement",
        EngineError::Db(_) => "state",
        EngineError::Rootfs(_) => "rootfs",
        EngineError::Secret { .. } => "secret",
        EngineError::Cancelled => "cancelled",
        EngineError::StartFailed { .. } => "start",
        EngineError::Transition { .. } => "transition",
        EngineError::NoSuchContainer(_)
        | EngineError::NoSuchExec(_)
        | EngineError::AmbiguousContainer(_)
        | EngineError::NameInUse { .. }
        | EngineError::Running(_)
        | EngineError::ImageInUse { .. }
        | EngineError::TaskExists(_)
        | EngineError::Internal(_) => "other",
    }
}

impl Metrics {
    /// One scrape: the counters, and the gauges of this moment (tasks by state, records in the
    /// event log).
    pub fn render(&self, tasks: &[(TaskState, u64)], log_records: u64) -> String {
        let mut t = Text::default();
        t.counter(
            "vouch_launches_total",
            "Container launches by outcome.",
            "outcome",
            &self.launches,
        );
        t.counter(
            "vouch_launch_failures_total",
            "Failed launches by reason.",
            "reason",
            &self.failures,
        );
        t.latency(
            "vouch_attestation_seconds",
            "Time to produce evidence (journal quote).",
            &self.attestation,
        );
        t.counter(
            "vouch_kbs_round_trips_total",
            "Secret fetches from a KBS (auth, attest, resource) by outcome.",
            "outcome",
            &self.kbs_round_trips,
        );
        t.latency(
            "vouch_kbs_round_trip_seconds",
            "Time of a whole KBS round trip.",
            &self.kbs_round_trip,
        );
        let tasks: Vec<(String, u64)> = tasks
            .iter()
            .map(|(s, n)| (s.as_str().to_ascii_lowercase(), *n))
            .collect();
        t.gauges("vouch_tasks", "Tasks by state.", "state", &tasks);
        t.gauge(
            "vouch_event_log_records",
            "Records in the measured event log.",
            log_records,
        );
        t.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_only_fixed_labels() {
        let m = Metrics::default();
        m.launches.inc("started");
        m.failures.inc(reason(&EngineError::Cancelled));
        let text = m.render(&[(TaskState::Running, 2)], 9);
        assert!(
            text.contains("vouch_launches_total{outcome=\"started\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("vouch_launch_failures_total{reason=\"cancelled\"} 1\n"));
        assert!(text.contains("vouch_tasks{state=\"running\"} 2\n"));
        assert!(text.contains("vouch_event_log_records 9\n"));
        assert!(text.contains("# TYPE vouch_attestation_seconds summary\n"));
    }
}
