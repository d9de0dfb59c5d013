//! What every vouch crate needs and nothing else: one clock, one way to put an error and its
//! causes on a line, the Prometheus text the services' `/metrics` write, the framing of
//! container logs ([`logframe`]), and the capability set containers hold ([`DEFAULT_CAPS`]). No I/O beyond
//! reading the system clock; no dependency on another vouch crate.

pub mod logframe;

/// Docker's default capability set: all a vouch container's process ever holds (a request may
/// drop some; none is added). The runtime builds specs with it, the containerd shim checks
/// containerd's specs against it.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

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

pub mod metrics {
    //! Prometheus text exposition (format 0.0.4) for the services' `/metrics`: counters with
    //! labels, gauges, and latency summaries (count and sum). Each service defines its metrics
    //! in one module of its own; this is only how they are kept and written.

    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    /// A counter per label value (one label), created on first use.
    #[derive(Debug, Default)]
    pub struct Counter {
        values: Mutex<BTreeMap<String, u64>>,
    }

    impl Counter {
        pub fn inc(&self, label: &str) {
            let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
            *v.entry(label.to_string()).or_default() += 1;
        }

        pub fn get(&self, label: &str) -> u64 {
            let v = self.values.lock().unwrap_or_else(|p| p.into_inner());
            v.get(label).copied().unwrap_or(0)
        }

        fn snapshot(&self) -> Vec<(String, u64)> {
            let v = self.values.lock().unwrap_or_else(|p| p.into_inner());
            v.iter().map(|(k, n)| (k.clone(), *n)).collect()
        }
    }

    /// How long something took: count and total seconds (a Prometheus summary without
    /// quantiles: rate(sum) / rate(count) is the mean latency).
    #[derive(Debug, Default)]
    pub struct Latency {
        count: AtomicU64,
        micros: AtomicU64,
    }

    impl Latency {
        pub fn observe(&self, d: Duration) {
            self.count.fetch_add(1, Ordering::Relaxed);
            let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            self.micros.fetch_add(us, Ordering::Relaxed);
        }

        pub fn count(&self) -> u64 {
            self.count.load(Ordering::Relaxed)
        }
    }

    /// A label value as Prometheus quotes it.
    fn quote(v: &str) -> String {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    /// The text of one scrape.
    #[derive(Debug, Default)]
    pub struct Text(String);

    impl Text {
        fn head(&mut self, name: &str, kind: &str, help: &str) {
            let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }

        /// A counter with one label, every value seen so far.
        pub fn counter(&mut self, name: &str, help: &str, label: &str, c: &Counter) {
            self.head(name, "counter", help);
            for (v, n) in c.snapshot() {
                let _ = writeln!(self.0, "{name}{{{label}=\"{}\"}} {n}", quote(&v));
            }
        }

        /// A gauge per label value.
        pub fn gauges(&mut self, name: &str, help: &str, label: &str, values: &[(String, u64)]) {
            self.head(name, "gauge", help);
            for (v, n) in values {
                let _ = writeln!(self.0, "{name}{{{label}=\"{}\"}} {n}", quote(v));
            }
        }

        /// One gauge.
        pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
            self.head(name, "gauge", help);
            let _ = writeln!(self.0, "{name} {value}");
        }

        /// A latency summary (`NAME_count`, `NAME_sum` in seconds).
        pub fn latency(&mut self, name: &str, help: &str, l: &Latency) {
            self.head(name, "summary", help);
            let micros = l.micros.load(Ordering::Relaxed);
            let _ = writeln!(
                self.0,
                "{name}_count {}\n{name}_sum {}.{:06}",
                l.count(),
                micros / 1_000_000,
                micros % 1_000_000
            );
        }

        pub fn finish(self) -> String {
            self.0
        }
    }

    /// The content type of the text format.
    pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn text_format() {
            let c = Counter::default();
            c.inc("ok");
            c.inc("ok");
            c.inc("bad \"x\"\n");
            let l = Latency::default();
            l.observe(Duration::from_micros(1_500_250));
            l.observe(Duration::from_micros(250));
            let mut t = Text::default();
            t.counter("x_total", "Things.", "outcome", &c);
            t.gauge("y", "Now.", 7);
            t.latency("z_seconds", "Took.", &l);
            assert_eq!(
                t.finish(),
                "# HELP x_total Things.\n# TYPE x_total counter\n\
                 x_total{outcome=\"bad \\\"x\\\"\\n\"} 1\nx_total{outcome=\"ok\"} 2\n\
                 # HELP y Now.\n# TYPE y gauge\ny 7\n\
                 # HELP z_seconds Took.\n# TYPE z_seconds summary\n\
                 z_seconds_count 2\nz_seconds_sum 1.500500\n"
            );
            assert_eq!(c.get("ok"), 2);
            assert_eq!(c.get("none"), 0);
        }
    }
}
