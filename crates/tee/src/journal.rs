//! The crash-safe measurement journal: an append-only event-log file bound to a TEE register.
//!
//! Append order: the journal notes which record it is about to write (its sequence number and
//! digest, in `<log>.pending`), writes the record to the log and syncs it, then extends the
//! register. A crash can leave a torn final line (never extended: it is cut off on open) or a
//! complete record the register has not seen. That record is extended on open only when it is
//! the one the journal noted: a record that something else appended while vouchd was stopped is
//! never measured; it is cut off (kept aside in `<log>.rejected`) and reported. Anything else is
//! divergence and is refused: vouchd must not run on a log that no longer matches its register.
//!
//! The note is not synced: the roll-forward only matters when the register survived the crash,
//! which hardware registers do only when the machine did not go down, and then the note is in
//! the page cache. After a power loss a record whose note was lost is cut off like a foreign
//! one, which is safe (it was never extended, so nothing it describes ran).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use vouch_measure::{decide_recovery, validate_sequence, Digest384, Record, RecordError, Recovery};

use crate::evidence::{report_data_for, Evidence, EVIDENCE_VERSION, SIM_WARNING};
use crate::{AttestError, Attester, TeeType};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot access event log {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("event log {path} line {line} is not a valid record")]
    BadLine {
        path: String,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("event log {path} is invalid")]
    Invalid {
        path: String,
        #[source]
        source: RecordError,
    },
    #[error("event log {path} replays to {replayed} but register {index} holds {register}; refusing to continue (the log or the register was changed outside vouch)")]
    Diverged {
        path: String,
        index: usize,
        replayed: String,
        register: String,
    },
    #[error("record cannot be measured")]
    Record(#[source] RecordError),
    #[error("TEE operation failed")]
    Tee(#[source] AttestError),
    #[error("the {0} TEE cannot present its evidence in Confidential Containers' form (sim, tdx and tpm can): use a vouch-kbs")]
    NoCocoForm(TeeType),
    #[error("the firmware's event log is invalid")]
    FirmwareLog(#[source] crate::tcg::TcgError),
    #[error("an earlier register extension failed; restart vouchd to recover the journal")]
    Poisoned,
}

/// What opening the journal had to repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes of a torn final line that were cut off.
    pub truncated_bytes: u64,
    /// Whether the last record had to be extended into the register.
    pub extended_last: bool,
    /// Whether the register was at zero with an empty log, and got the AAEL INIT line.
    pub initialised: bool,
    /// A complete last record that the journal was not writing (appended by something else):
    /// cut off, never extended, and kept aside in `<log>.rejected`.
    pub rejected_record: Option<u64>,
    pub records: usize,
}

/// `<seq as 16 hex digits> <digest as 96 hex digits>\n`: fixed length, so each note overwrites
/// the last whole.
fn intent_line(seq: u64, digest: &Digest384) -> Vec<u8> {
    format!("{seq:016x} {}\n", digest.to_hex()).into_bytes()
}

fn intent_path(log: &Path) -> PathBuf {
    log.with_extension("pending")
}

pub struct Journal {
    path: PathBuf,
    file: File,
    /// Where the record about to be written is noted (see the module documentation).
    intent: File,
    records: Vec<Record>,
    attester: Arc<dyn Attester>,
    index: usize,
    poisoned: bool,
}

impl Journal {
    /// Open (or create) the log at `path`, repair a crash, and check it against register `index`.
    pub fn open(
        path: &Path,
        attester: Arc<dyn Attester>,
        index: usize,
    ) -> Result<(Self, RecoveryReport), JournalError> {
        let io = |source| JournalError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut report = RecoveryReport::default();
        let complete = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(pos) => pos + 1,
            None => 0,
        };
        if complete < bytes.len() {
            // A torn final line: it was never synced completely, so it was never extended.
            report.truncated_bytes = (bytes.len() - complete) as u64;
            file.set_len(complete as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
            bytes.truncate(complete);
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let mut records = Vec::new();
        for (i, line) in bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let record: Record =
                serde_json::from_slice(line).map_err(|source| JournalError::BadLine {
                    path: path.display().to_string(),
                    line: i + 1,
                    source,
                })?;
            records.push(record);
        }
        validate_sequence(&records).map_err(|source| JournalError::Invalid {
            path: path.display().to_string(),
            source,
        })?;
        let intent_at = intent_path(path);
        let noted = std::fs::read(&intent_at).unwrap_or_default();
        let intent = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&intent_at)
            .map_err(|source| JournalError::Io {
                path: intent_at.display().to_string(),
                source,
            })?;
        let register = attester.register(index).map_err(JournalError::Tee)?;
        match decide_recovery(&records, &register).map_err(JournalError::Record)? {
            Recovery::InStep => {}
            Recovery::ExtendInit(d) => {
                attester.extend(index, &d).map_err(JournalError::Tee)?;
                report.initialised = true;
            }
            Recovery::ExtendLast(d) => {
                let last = records.len() as u64 - 1;
                if noted == intent_line(last, &d) {
                    attester.extend(index, &d).map_err(JournalError::Tee)?;
                    report.extended_last = true;
                } else {
                    // Not the record the journal was writing: never measured. Cut it off and
                    // keep it aside for whoever investigates.
                    let start = bytes[..bytes.len() - 1]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1);
                    let rejected_at = path.with_extension("rejected");
                    OpenOptions::new()
                        .append(true)
                        .create(true)
                        .mode(0o600)
                        .open(&rejected_at)
                        .and_then(|mut f| f.write_all(&bytes[start..]))
                        .map_err(|source| JournalError::Io {
                            path: rejected_at.display().to_string(),
                            source,
                        })?;
                    file.set_len(start as u64).map_err(io)?;
                    file.sync_all().map_err(io)?;
                    file.seek(SeekFrom::End(0)).map_err(io)?;
                    records.pop();
                    report.rejected_record = Some(last);
                }
            }
            Recovery::Diverged { replayed, register } => {
                return Err(JournalError::Diverged {
                    path: path.display().to_string(),
                    index,
                    replayed: replayed.to_hex(),
                    register: register.to_hex(),
                });
            }
        }
        report.records = records.len();
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                intent,
                records,
                attester,
                index,
                poisoned: false,
            },
            report,
        ))
    }

    /// Measure one event: write and sync the record, then extend the register.
    pub fn append(&mut self, op: &str, content: Value) -> Result<Record, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        let record = Record::new(self.records.len() as u64, op, content);
        let digest = record.digest().map_err(JournalError::Record)?;
        let mut line = record.canonical_bytes().map_err(JournalError::Record)?;
        line.push(b'\n');
        let io = |source| JournalError::Io {
            path: self.path.display().to_string(),
            source,
        };
        {
            use std::os::unix::fs::FileExt;
            self.intent
                .write_all_at(&intent_line(record.seq, &digest), 0)
                .map_err(io)?;
        }
        self.file.write_all(&line).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.records.push(record.clone());
        if let Err(e) = self.attester.extend(self.index, &digest) {
            // The log is now one record ahead of the register; only the open-time recovery may fix it.
            self.poisoned = true;
            return Err(JournalError::Tee(e));
        }
        Ok(record)
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn tee(&self) -> TeeType {
        self.attester.tee()
    }

    pub fn attestation_key(&self) -> Option<String> {
        self.attester.attestation_key()
    }

    pub fn register(&self) -> Result<Digest384, JournalError> {
        self.attester
            .register(self.index)
            .map_err(JournalError::Tee)
    }

    /// Every register of the TEE (0..4), for display; unreadable ones are errors.
    pub fn all_registers(&self) -> Vec<Result<Digest384, JournalError>> {
        (0..4)
            .map(|i| self.attester.register(i).map_err(JournalError::Tee))
            .collect()
    }

    /// Evidence for the current state, bound to `runtime_data`.
    pub fn evidence(&self, runtime_data: Value) -> Result<Evidence, JournalError> {
        let report_data = report_data_for(&runtime_data)
            .map_err(|e| JournalError::Record(RecordError::Canonical { seq: 0, source: e }))?;
        let quote = self
            .attester
            .quote(&report_data)
            .map_err(JournalError::Tee)?;
        let tee = self.attester.tee();
        Ok(Evidence {
            version: EVIDENCE_VERSION,
            tee,
            quote: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, quote),
            event_log: self.records.clone(),
            aa_eventlog: Some(
                vouch_measure::aael::to_text(&self.records).map_err(JournalError::Record)?,
            ),
            runtime_data,
            firmware_log: self
                .attester
                .firmware_log()
                .map(|b| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)),
            warning: (tee == TeeType::Sim).then(|| SIM_WARNING.to_string()),
        })
    }

    /// The primary evidence a Confidential Containers KBS (Trustee) reads, binding
    /// `runtime_data` (CoCo's `{additional-evidence, nonce, tee-pubkey}`): for the sim TEE,
    /// CoCo's unsigned sample evidence (development only, like the sim TEE); on TDX, the quote
    /// and the CCEL with this log appended as AAEL records on RTMR3.
    pub fn coco_evidence(&self, runtime_data: &Value) -> Result<Value, JournalError> {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let report_data = report_data_for(runtime_data)
            .map_err(|e| JournalError::Record(RecordError::Canonical { seq: 0, source: e }))?;
        match self.attester.tee() {
            TeeType::Sim => Ok(serde_json::json!({
                "svn": "1",
                "report_data": b64(report_data.as_bytes()),
            })),
            TeeType::Tdx => {
                let quote = self
                    .attester
                    .quote(&report_data)
                    .map_err(JournalError::Tee)?;
                let log = crate::coco::cc_eventlog(
                    self.attester.firmware_log().as_deref(),
                    &self.records,
                )?;
                Ok(serde_json::json!({"quote": b64(&quote), "cc_eventlog": b64(&log)}))
            }
            other => {
                let quote = self
                    .attester
                    .coco_quote(&report_data)
                    .map_err(JournalError::Tee)?
                    .ok_or(JournalError::NoCocoForm(other))?;
                serde_json::from_slice(&quote)
                    .map_err(|e| JournalError::Tee(AttestError::Device(format!("CoCo quote: {e}"))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimAttester;
    use serde_json::json;
    use vouch_measure::replay;

    fn open(dir: &Path) -> (Journal, RecoveryReport) {
        let sim = Arc::new(SimAttester::open(&dir.join("sim")).expect("sim"));
        Journal::open(&dir.join("events.log"), sim, crate::VOUCH_REGISTER).expect("open")
    }

    /// A first open extends the register with the AAEL INIT line (once): an empty log is then
    /// in step with it.
    #[test]
    fn a_first_open_extends_the_init_line_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, report) = open(dir.path());
        assert!(report.initialised);
        assert_eq!(
            j.register().expect("reg"),
            vouch_measure::initial_register()
        );
        drop(j);
        let (j, report) = open(dir.path());
        assert!(!report.initialised);
        assert_eq!(
            j.register().expect("reg"),
            vouch_measure::initial_register()
        );
    }

    #[test]
    fn append_then_reopen_is_in_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = open(dir.path());
        j.append("a", json!({"x": 1})).expect("append");
        j.append("b", json!({"x": 2})).expect("append");
        let reg = j.register().expect("reg");
        assert_eq!(reg, replay(j.records()).expect("replay"));
        drop(j);
        let (j, report) = open(dir.path());
        assert_eq!(
            report,
            RecoveryReport {
                truncated_bytes: 0,
                extended_last: false,
                initialised: false,
                rejected_record: None,
                records: 2
            }
        );
        assert_eq!(j.register().expect("reg"), reg);
    }

    #[test]
    fn crash_between_log_write_and_extend_is_rolled_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = open(dir.path());
        j.append("a", json!(1)).expect("append");
        drop(j);
        // Simulate the crash window: the journal noted the record, synced it, and never
        // extended the register.
        let r = Record::new(1, "b", json!(2));
        let mut line = r.canonical_bytes().expect("bytes");
        std::fs::write(
            dir.path().join("events.pending"),
            intent_line(1, &r.digest().expect("digest")),
        )
        .expect("note");
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("events.log"))
            .expect("open");
        f.write_all(&line).expect("write");
        drop(f);
        let (j, report) = open(dir.path());
        assert!(report.extended_last);
        assert_eq!(
            j.register().expect("reg"),
            replay(j.records()).expect("replay")
        );
        assert_eq!(j.records().len(), 2);
    }

    /// A complete record appended by something else while vouchd was stopped is never extended
    /// into the register: it is cut off and kept aside, and the log stays in step; a second
    /// one makes the log diverge, which is refused.
    #[test]
    fn records_appended_by_something_else_are_never_measured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = open(dir.path());
        j.append("a", json!(1)).expect("append");
        let reg = j.register().expect("reg");
        drop(j);
        let foreign = |seq: u64| {
            let mut line = Record::new(seq, "container.create", json!({"id": "forged"}))
                .canonical_bytes()
                .expect("bytes");
            line.push(b'\n');
            line
        };
        let log = dir.path().join("events.log");
        OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(&foreign(1)))
            .expect("append");
        let (j, report) = open(dir.path());
        assert_eq!(report.rejected_record, Some(1));
        assert!(!report.extended_last);
        assert_eq!(j.records().len(), 1);
        assert_eq!(
            j.register().expect("reg"),
            reg,
            "the foreign record was measured"
        );
        assert_eq!(
            std::fs::read(dir.path().join("events.rejected")).expect("kept aside"),
            foreign(1)
        );
        // The note of a record the journal did write does not cover another one.
        drop(j);
        let (mut j, _) = open(dir.path());
        j.append("b", json!(2)).expect("append");
        let reg = j.register().expect("reg");
        drop(j);
        OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(&foreign(2)))
            .expect("append");
        let (j, report) = open(dir.path());
        assert_eq!(report.rejected_record, Some(2));
        assert_eq!(j.register().expect("reg"), reg);
        drop(j);
        // Two foreign records: the log no longer matches the register at all.
        OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| {
                f.write_all(&foreign(2))?;
                f.write_all(&foreign(3))
            })
            .expect("append");
        let sim = Arc::new(SimAttester::open(&dir.path().join("sim")).expect("sim"));
        let err = Journal::open(&log, sim, crate::VOUCH_REGISTER)
            .err()
            .expect("must refuse");
        assert!(matches!(err, JournalError::Diverged { .. }), "{err}");
    }

    #[test]
    fn torn_final_line_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = open(dir.path());
        j.append("a", json!(1)).expect("append");
        drop(j);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("events.log"))
            .expect("open");
        f.write_all(br#"{"content":2,"dom"#).expect("write");
        drop(f);
        let (j, report) = open(dir.path());
        assert_eq!(report.truncated_bytes, 17);
        assert_eq!(j.records().len(), 1);
        assert_eq!(
            j.register().expect("reg"),
            replay(j.records()).expect("replay")
        );
    }

    #[test]
    fn edited_log_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = open(dir.path());
        j.append("image.verified", json!({"digest": "sha256:aa"}))
            .expect("append");
        j.append("container.create", json!({"id": "c"}))
            .expect("append");
        drop(j);
        let path = dir.path().join("events.log");
        let text = std::fs::read_to_string(&path)
            .expect("read")
            .replace("sha256:aa", "sha256:bb");
        std::fs::write(&path, text).expect("write");
        let sim = Arc::new(SimAttester::open(&dir.path().join("sim")).expect("sim"));
        let err = Journal::open(&path, sim, crate::VOUCH_REGISTER)
            .err()
            .expect("must refuse");
        assert!(matches!(err, JournalError::Diverged { .. }), "{err}");
    }
}
