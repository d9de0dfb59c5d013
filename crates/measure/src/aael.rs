//! vouch's log in the Attestation Agent Event Log (AAEL) text form that Confidential Containers'
//! attestation agent writes and Trustee's attestation service replays against a runtime register
//! (Trustee, `kbs/docs/confidential-containers-eventlog.md`).
//!
//! The text is an INIT line, `INIT sha384/<register at start, hex>`, then one event line per
//! record, `<domain> <op> <content>` ([`Record::aael_line`]), each ended by a line break. Its
//! replay by AAEL's rules, [`replay_text`], gives the register vouch extended; [`parse_text`]
//! gives back the records (a record's `seq` is its line's position), so nothing is lost by the
//! form: vouch keeps its JSON records as the stored form and measures their AAEL lines.

use crate::digest::{sha384, Digest384};
use crate::eventlog::{init_line, validate_sequence, Record, RecordError, AAEL_HASH};

#[derive(Debug, thiserror::Error)]
pub enum AaelError {
    #[error("the AAEL text is empty: it starts with an INIT line")]
    Empty,
    #[error("line 1 is not an INIT line `INIT sha384/<96 hex digits>`")]
    BadInit,
    #[error("line {line} is not an AAEL event `<domain> <operation> <content>`")]
    BadEvent { line: usize },
    #[error("line {line}: its content is not JSON: {reason}")]
    BadContent { line: usize, reason: String },
    #[error("line {line} is not in vouch's canonical form (RFC 8785 content, escaped for AAEL)")]
    NotCanonical { line: usize },
    #[error("the AAEL log starts at register {0}, not at zero")]
    NotFromZero(String),
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// The log as AAEL text, for a register that started at zero.
pub fn to_text(records: &[Record]) -> Result<String, RecordError> {
    let mut out = init_line(&Digest384::ZERO).into_bytes();
    out.push(b'\n');
    for r in records {
        r.write_aael(&mut out)?;
        out.push(b'\n');
    }
    // Only ASCII is written.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Where AAEL `text` stops being exactly [`to_text`] of `records`: the first differing line
/// (1 is the INIT line), or `None` when it is that text. Each record is written into one reused
/// buffer; the whole text is never built.
pub fn first_difference(records: &[Record], text: &str) -> Result<Option<usize>, RecordError> {
    if !text.ends_with('\n') {
        return Ok(Some(text.lines().count().max(1)));
    }
    let mut lines = text.split_terminator('\n');
    if lines.next() != Some(init_line(&Digest384::ZERO).as_str()) {
        return Ok(Some(1));
    }
    let mut buf = Vec::with_capacity(256);
    for (i, r) in records.iter().enumerate() {
        buf.clear();
        r.write_aael(&mut buf)?;
        if lines.next().map(str::as_bytes) != Some(buf.as_slice()) {
            return Ok(Some(i + 2));
        }
    }
    Ok(lines.next().map(|_| records.len() + 2))
}

/// Replay AAEL text as AAEL's own verifiers do: start from the INIT line's register, extend it
/// with the digest of the INIT line, then with the digest of each event line as written.
pub fn replay_text(text: &str) -> Result<Digest384, AaelError> {
    let mut lines = text.lines();
    let init = parse_init(lines.next().ok_or(AaelError::Empty)?)?;
    let mut register = init.extend(&sha384(init_line(&init).as_bytes()));
    for line in lines {
        register = register.extend(&sha384(line.trim_end().as_bytes()));
    }
    Ok(register)
}

/// The records of AAEL text vouch wrote: every event line must be exactly the canonical line of
/// the record it reads as, so the records replay to what the text does.
pub fn parse_text(text: &str) -> Result<Vec<Record>, AaelError> {
    let mut lines = text.lines();
    let init = parse_init(lines.next().ok_or(AaelError::Empty)?)?;
    if init != Digest384::ZERO {
        return Err(AaelError::NotFromZero(init.to_hex()));
    }
    let mut records = Vec::new();
    for (i, line) in lines.enumerate() {
        records.push(parse_line(line.trim_end(), i as u64, i + 2)?);
    }
    validate_sequence(&records)?;
    Ok(records)
}

/// One event line of a vouch record, `<domain> <op> <content>`, read as record `seq` (line `n`
/// in errors); it must be exactly the record's canonical line, so the record is what the line
/// measures.
pub fn parse_line(line: &str, seq: u64, n: usize) -> Result<Record, AaelError> {
    let mut fields = line.split(' ');
    let (Some(domain), Some(op), Some(content), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(AaelError::BadEvent { line: n });
    };
    let content = serde_json::from_str(content).map_err(|e| AaelError::BadContent {
        line: n,
        reason: e.to_string(),
    })?;
    let record = Record {
        seq,
        domain: domain.to_string(),
        op: op.to_string(),
        content,
    };
    if record.aael_line()? != line {
        return Err(AaelError::NotCanonical { line: n });
    }
    Ok(record)
}

fn parse_init(line: &str) -> Result<Digest384, AaelError> {
    let rest = line
        .trim_end()
        .strip_prefix("INIT ")
        .and_then(|r| r.strip_prefix(AAEL_HASH))
        .and_then(|r| r.strip_prefix('/'))
        .ok_or(AaelError::BadInit)?;
    if rest.len() != 96 {
        return Err(AaelError::BadInit);
    }
    rest.parse().map_err(|_| AaelError::BadInit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::replay;
    use crate::eventlog::tests::arb_log;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// Any log, any content (spaces, control and non-ASCII characters): the AAEL text
        /// replays by AAEL's rules to vouch's register, and reads back as the same records.
        #[test]
        fn aael_text_replays_to_the_register_and_loses_nothing(log in arb_log()) {
            let text = to_text(&log).expect("text");
            prop_assert!(text.bytes().all(|b| b == b'\n' || (0x20..=0x7e).contains(&b)));
            for line in text.lines().skip(1) {
                prop_assert_eq!(line.split(' ').count(), 3);
            }
            prop_assert_eq!(replay_text(&text).expect("replay"), replay(&log).expect("replay"));
            prop_assert_eq!(first_difference(&log, &text).expect("compare"), None);
            prop_assert_eq!(parse_text(&text).expect("parse"), log);
        }

        /// Arbitrary text, and INIT-led text with arbitrary lines: an error or a value, never a
        /// panic.
        #[test]
        fn arbitrary_text_is_refused_or_read_never_a_panic(body in "(.{0,40}\n){0,6}", raw in ".{0,120}") {
            let led = format!("{}\n{body}", init_line(&Digest384::ZERO));
            for text in [led.as_str(), raw.as_str()] {
                let _ = parse_text(text);
                let _ = replay_text(text);
            }
        }
    }

    /// The first line where a text is not the log's: an edited, missing or extra line.
    #[test]
    fn the_first_differing_line_is_named() {
        let log = vec![Record::new(0, "a", json!(1)), Record::new(1, "b", json!(2))];
        let text = to_text(&log).expect("text");
        let diff = |t: &str| first_difference(&log, t).expect("compare");
        assert_eq!(diff(&text), None);
        assert_eq!(diff(&text.replacen("INIT", "INIT ", 1)), Some(1));
        assert_eq!(diff(&text.replace("vouch b 2", "vouch b 3")), Some(3));
        assert_eq!(diff(&text.replace("vouch b 2\n", "")), Some(3));
        assert_eq!(diff(&format!("{text}vouch c 3\n")), Some(4));
        assert_eq!(diff(text.trim_end()), Some(3));
        assert_eq!(
            first_difference(&log[..1], &text).expect("compare"),
            Some(3)
        );
    }

    #[test]
    fn malformed_or_foreign_text_is_refused_by_line() {
        let log = vec![
            Record::new(0, "image.verified", json!({"digest": "sha256:ab"})),
            Record::new(1, "container.create", json!({"id": "c 1"})),
        ];
        let text = to_text(&log).expect("text");
        assert!(text.starts_with(&format!("INIT sha384/{}\n", "0".repeat(96))));
        assert!(matches!(parse_text(""), Err(AaelError::Empty)));
        assert!(matches!(
            parse_text("INIT sha256/00\n"),
            Err(AaelError::BadInit)
        ));
        let extra = text.replace("container.create", "container.create x");
        assert!(matches!(
            parse_text(&extra),
            Err(AaelError::BadEvent { line: 3 })
        ));
        // Same meaning, another spelling: refused, since it would replay differently.
        let respelt = text.replace(r#""sha256:ab""#, r#""sha256:\u0061b""#);
        assert!(matches!(
            parse_text(&respelt),
            Err(AaelError::NotCanonical { line: 2 })
        ));
        assert_ne!(
            replay_text(&respelt).expect("replay"),
            replay_text(&text).expect("replay")
        );
        let foreign = text.replacen(&"0".repeat(96), &"1".repeat(96), 1);
        assert!(matches!(
            parse_text(&foreign),
            Err(AaelError::NotFromZero(_))
        ));
        let bad_json = text.replace(r#"{"id":"c\u00201"}"#, "{nope");
        assert!(matches!(
            parse_text(&bad_json),
            Err(AaelError::BadContent { line: 3, .. })
        ));
    }
}
