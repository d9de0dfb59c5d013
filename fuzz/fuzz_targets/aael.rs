//! The AAEL text of vouch's event log, as a verifier reads it: every event line that parses is
//! its record's canonical line (so the records render back to the same lines and parse again to
//! themselves), and the text replays to the same register as its records.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouch_measure::aael;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let replayed = aael::replay_text(text);
    if let Ok(records) = aael::parse_text(text) {
        let back = aael::to_text(&records).expect("parsed records render");
        let lines = |t: &str| t.lines().map(|l| l.trim_end().to_string()).collect::<Vec<_>>();
        assert_eq!(lines(&back), lines(text), "a non-canonical AAEL line was accepted");
        assert_eq!(aael::parse_text(&back).ok(), Some(records.clone()), "no round trip");
        let register = vouch_measure::replay(&records).expect("parsed records replay");
        assert_eq!(replayed.ok(), Some(register), "the text and its records replay apart");
    }
});
