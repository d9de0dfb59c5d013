//! Event-log records and replay.
//!
//! A record is `{seq, domain, op, content}`, stored as its RFC 8785 canonical JSON. What is
//! measured is the record as an event line of the Attestation Agent Event Log (AAEL) that
//! Confidential Containers adopted from ACON: `<domain> <op> <content>`, the content being the
//! RFC 8785 JSON of the record's content with spaces and non-ASCII characters written as
//! `\uXXXX` escapes (AAEL fields are printable ASCII without spaces). A record's digest is the
//! SHA-384 of that line; `seq` is its position in the log (checked by [`validate_sequence`]).
//! Replay starts, as AAEL does, from the register extended with the digest of the INIT line
//! `INIT sha384/<96 zeros>`, and folds each line's digest into it: a log exported in AAEL form
//! ([`crate::aael`]) replays, by AAEL's own rules, to the same register.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(test)]
use crate::canonical::to_canonical_vec;
use crate::canonical::CanonicalError;
use crate::digest::{sha384, Digest384};

/// The domain of every record vouch writes.
pub const DOMAIN: &str = "vouch";

/// One measured event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the log, starting at 0 and increasing by one.
    pub seq: u64,
    /// Who wrote the record; always [`DOMAIN`] for vouch's own records.
    pub domain: String,
    /// The operation, such as `image.verified` or `container.create`.
    pub op: String,
    /// What the operation measured.
    pub content: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record {seq}: cannot be canonicalized")]
    Canonical {
        seq: u64,
        #[source]
        source: CanonicalError,
    },
    #[error("record at position {position} has sequence number {seq}")]
    OutOfSequence { position: usize, seq: u64 },
    #[error("record {seq} has domain {domain:?}, expected {DOMAIN:?}")]
    Domain { seq: u64, domain: String },
    #[error(
        "record {seq}: its {field} is not printable ASCII without spaces, as an AAEL field must be"
    )]
    NotAael { seq: u64, field: &'static str },
}

/// The hash algorithm the AAEL INIT line names: the register's.
pub(crate) const AAEL_HASH: &str = "sha384";

/// The AAEL INIT line for a register that starts at `init`.
pub(crate) fn init_line(init: &Digest384) -> String {
    format!("INIT {AAEL_HASH}/{}", init.to_hex())
}

/// The digest of the INIT line of a register that starts at zero: the first extension of every
/// vouch register.
pub fn init_digest() -> Digest384 {
    sha384(init_line(&Digest384::ZERO).as_bytes())
}

/// The register of an empty log: zero extended with [`init_digest`].
pub fn initial_register() -> Digest384 {
    Digest384::ZERO.extend(&init_digest())
}

fn check_aael_field(seq: u64, field: &'static str, value: &str) -> Result<(), RecordError> {
    if value.is_empty() || !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(RecordError::NotAael { seq, field });
    }
    Ok(())
}

/// Rewrite canonical JSON written at `out[start..]` so that it is printable ASCII without
/// spaces: a space or a character outside 0x21..=0x7e can only be inside a string there (RFC 8785
/// writes no whitespace and escapes control characters), where `\uXXXX` means the same.
fn escape_for_aael(out: &mut Vec<u8>, start: usize) {
    if out[start..].iter().all(|b| (0x21..=0x7e).contains(b)) {
        return;
    }
    let tail = out.split_off(start);
    let text = String::from_utf8(tail).unwrap_or_else(|e| {
        // Canonical JSON is written from Rust strings: always UTF-8.
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    });
    for c in text.chars() {
        if ('\u{21}'..='\u{7e}').contains(&c) {
            out.push(c as u8);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
            }
        }
    }
}

impl Record {
    pub fn new(seq: u64, op: impl Into<String>, content: Value) -> Self {
        Record {
            seq,
            domain: DOMAIN.to_string(),
            op: op.into(),
            content,
        }
    }

    /// The canonical bytes that are hashed and stored: RFC 8785 JSON of the record, written
    /// directly (members in canonical order: content, domain, op, seq) rather than through an
    /// intermediate JSON value; a property test checks it equals the generic canonicalization.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::with_capacity(160);
        self.write_canonical(&mut out)?;
        Ok(out)
    }

    /// Append the canonical bytes to `out` (lets a replay reuse one buffer).
    pub(crate) fn write_canonical(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let err = |source| RecordError::Canonical {
            seq: self.seq,
            source,
        };
        if self.seq > 1 << 53 {
            return Err(err(CanonicalError::UnsupportedNumber(self.seq.to_string())));
        }
        out.extend_from_slice(b"{\"content\":");
        crate::canonical::write_value(&self.content, out).map_err(err)?;
        out.extend_from_slice(b",\"domain\":");
        crate::canonical::write_string(&self.domain, out);
        out.extend_from_slice(b",\"op\":");
        crate::canonical::write_string(&self.op, out);
        out.extend_from_slice(b",\"seq\":");
        crate::canonical::write_int(out, self.seq as i128);
        out.push(b'}');
        Ok(())
    }

    /// Append the record's AAEL event line (no line break) to `out`.
    pub(crate) fn write_aael(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        check_aael_field(self.seq, "domain", &self.domain)?;
        check_aael_field(self.seq, "op", &self.op)?;
        out.extend_from_slice(self.domain.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.op.as_bytes());
        out.push(b' ');
        let start = out.len();
        crate::canonical::write_value(&self.content, out).map_err(|source| {
            RecordError::Canonical {
                seq: self.seq,
                source,
            }
        })?;
        escape_for_aael(out, start);
        Ok(())
    }

    /// The record's AAEL event line, `<domain> <op> <content>`.
    pub(crate) fn aael_line(&self) -> Result<String, RecordError> {
        let mut out = Vec::with_capacity(160);
        self.write_aael(&mut out)?;
        // Only ASCII was written.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// SHA-384 of the record's AAEL event line: what extends the register.
    pub fn digest(&self) -> Result<Digest384, RecordError> {
        let mut out = Vec::with_capacity(160);
        self.write_aael(&mut out)?;
        Ok(sha384(&out))
    }
}

/// Fold a log into a register that starts at zero (extended first with the AAEL INIT line).
pub fn replay<'a, I>(records: I) -> Result<Digest384, RecordError>
where
    I: IntoIterator<Item = &'a Record>,
{
    let mut buf = Vec::with_capacity(256);
    records
        .into_iter()
        .try_fold(initial_register(), |reg, record| {
            buf.clear();
            record.write_aael(&mut buf)?;
            Ok(reg.extend(&sha384(&buf)))
        })
}

/// Check that sequence numbers run 0, 1, 2, ... and every record is in vouch's domain.
pub fn validate_sequence(records: &[Record]) -> Result<(), RecordError> {
    for (position, record) in records.iter().enumerate() {
        if record.seq != position as u64 {
            return Err(RecordError::OutOfSequence {
                position,
                seq: record.seq,
            });
        }
        if record.domain != DOMAIN {
            return Err(RecordError::Domain {
                seq: record.seq,
                domain: record.domain.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    pub(crate) fn arb_content() -> impl Strategy<Value = Value> {
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

    /// Logs of up to 12 records with any content (shared with the AAEL tests).
    pub(crate) fn arb_log() -> impl Strategy<Value = Vec<Record>> {
        prop::collection::vec(("[a-z.]{1,16}", arb_content()), 0..12).prop_map(|events| {
            events
                .into_iter()
                .enumerate()
                .map(|(i, (op, content))| Record::new(i as u64, op, content))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn replay_equals_register_after_any_sequence(log in arb_log()) {
            // A register extended event by event, as the daemon does, after the INIT line.
            let mut register = Digest384::ZERO.extend(&init_digest());
            for record in &log {
                register = register.extend(&record.digest().expect("digest"));
            }
            prop_assert_eq!(replay(&log).expect("replay"), register);
            prop_assert!(validate_sequence(&log).is_ok());
        }

        #[test]
        fn any_edit_to_any_record_is_detected(
            log in arb_log().prop_filter("non-empty", |l| !l.is_empty()),
            pick in any::<prop::sample::Index>(),
            field in 0u8..4,
            extra in "[a-z]{1,4}",
        ) {
            let register = replay(&log).expect("replay");
            let mut tampered = log.clone();
            let record = &mut tampered[pick.index(log.len())];
            match field {
                // A record's number is its position: a changed one is refused by the sequence
                // check, whatever the register says.
                0 => {
                    record.seq += 1;
                    prop_assert!(validate_sequence(&tampered).is_err());
                    return Ok(());
                }
                1 => record.domain.push_str(&extra),
                2 => record.op.push_str(&extra),
                _ => record.content = json!({"edited": extra, "was": record.content.clone()}),
            }
            prop_assert_ne!(replay(&tampered).expect("replay"), register);
        }

        #[test]
        fn direct_canonical_bytes_equal_the_generic_canonicalization(log in arb_log(), domain in ".{0,8}") {
            for mut record in log {
                record.domain = domain.clone();
                prop_assert_eq!(record.canonical_bytes().expect("direct"), to_canonical_vec(&record).expect("generic"));
            }
        }

        #[test]
        fn dropping_or_reordering_records_is_detected(log in arb_log().prop_filter("two or more", |l| l.len() >= 2)) {
            let register = replay(&log).expect("replay");
            prop_assert_ne!(replay(&log[..log.len() - 1]).expect("replay"), register);
            let mut swapped = log.clone();
            swapped.swap(0, 1);
            // The register covers what each record says, not its number: two records that
            // say the same thing swap to the same register, and the sequence check is what
            // refuses them.
            if log[0].digest().expect("digest") != log[1].digest().expect("digest") {
                prop_assert_ne!(replay(&swapped).expect("replay"), register);
            }
            prop_assert!(validate_sequence(&swapped).is_err());
        }
    }

    #[test]
    fn a_record_is_stored_as_canonical_json_and_measured_as_its_aael_line() {
        let r = Record::new(0, "container.start", json!({"id": "c1", "b": 2}));
        let bytes = r.canonical_bytes().expect("canonical");
        assert_eq!(
            String::from_utf8(bytes.clone()).expect("utf8"),
            r#"{"content":{"b":2,"id":"c1"},"domain":"vouch","op":"container.start","seq":0}"#
        );
        let line = r.aael_line().expect("line");
        assert_eq!(line, r#"vouch container.start {"b":2,"id":"c1"}"#);
        assert_eq!(r.digest().expect("digest"), sha384(line.as_bytes()));
        assert_eq!(
            init_line(&Digest384::ZERO),
            format!("INIT sha384/{}", "0".repeat(96))
        );
        assert_eq!(replay([]).expect("empty"), initial_register());
    }

    #[test]
    fn aael_content_is_printable_ascii_without_spaces_and_means_the_same() {
        let content = json!({"args": ["sh", "-c", "echo hi"], "name": "caf\u{e9} \u{1f600}\u{7f}", "tab": "\t"});
        let r = Record::new(0, "container.create", content.clone());
        let line = r.aael_line().expect("line");
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert!(line.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{line}");
        assert_eq!(
            parts[2],
            r#"{"args":["sh","-c","echo\u0020hi"],"name":"caf\u00e9\u0020\ud83d\ude00\u007f","tab":"\t"}"#
        );
        let back: Value = serde_json::from_str(parts[2]).expect("JSON");
        assert_eq!(back, content);
        for (domain, op) in [("vouch", "has space"), ("", "op"), ("vouch", "caf\u{e9}")] {
            let mut r = Record::new(3, op, json!({}));
            r.domain = domain.into();
            assert!(
                matches!(r.digest(), Err(RecordError::NotAael { seq: 3, .. })),
                "{domain:?} {op:?}"
            );
        }
    }

    #[test]
    fn validate_sequence_names_the_problem() {
        let mut log = vec![Record::new(0, "a", json!(1)), Record::new(2, "b", json!(2))];
        let err = validate_sequence(&log).expect_err("gap");
        assert_eq!(
            err.to_string(),
            "record at position 1 has sequence number 2"
        );
        log[1].seq = 1;
        log[1].domain = "other".into();
        assert!(validate_sequence(&log)
            .expect_err("domain")
            .to_string()
            .contains("domain"));
    }
}
