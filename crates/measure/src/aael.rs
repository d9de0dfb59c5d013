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
        let n = i + 2;
        let line = line.trim_end();
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
            seq: i as u64,
            domain: domain.to_string(),
            op: op.to_string(),
            content,
        };
        if record.aael_line()? != line {
            return Err(AaelError::NotCanonical { line: n });
        }
        records.push(record);
    }
    validate_sequence(&records)?;
    Ok(records)
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
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn arb_content() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(1i64 << 53)..=(1i64 << 53)).prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_log() -> impl Strategy<Value = Vec<Record>> {
        prop::collection::vec(("[a-z.]{1,16}", arb_content()), 0..12).prop_map(|events| {
            events
                .into_iter()
                .enumerate()
                .map(|(i, (op, content))| Record::new(i as u64, op, content))
                .collect()
        })
    }

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
