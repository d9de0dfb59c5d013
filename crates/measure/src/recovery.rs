//! Deciding how to bring a log and its register back in step after a crash.
//!
//! The append path writes and syncs a record before it extends the register. A crash can therefore
//! leave the register exactly one record behind the log, never ahead of it. Given the durable log
//! and the register read back from the TEE, [`decide_recovery`] says what to do.

use crate::digest::Digest384;
use crate::eventlog::{Record, RecordError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The register equals the replay of the whole log.
    InStep,
    /// The log is empty and the register still zero: extend it with the AAEL INIT line's digest
    /// (a first start, or a crash before that first extension).
    ExtendInit(Digest384),
    /// The last record reached the log but not the register: extend the register with this digest.
    ExtendLast(Digest384),
    /// Neither the whole log nor the log without its last record replays to the register.
    /// The log or the register was changed outside vouch; nothing can be repaired automatically.
    Diverged {
        replayed: Digest384,
        register: Digest384,
    },
}

/// Decide how to recover, given the durable log and the current register value.
pub fn decide_recovery(records: &[Record], register: &Digest384) -> Result<Recovery, RecordError> {
    if records.is_empty() && *register == Digest384::ZERO {
        return Ok(Recovery::ExtendInit(crate::eventlog::init_digest()));
    }
    let mut full = crate::eventlog::initial_register();
    let mut before_last = full;
    let mut last_digest = None;
    for record in records {
        let d = record.digest()?;
        before_last = full;
        full = full.extend(&d);
        last_digest = Some(d);
    }
    if &full == register {
        return Ok(Recovery::InStep);
    }
    if let Some(d) = last_digest {
        if &before_last == register {
            return Ok(Recovery::ExtendLast(d));
        }
    }
    Ok(Recovery::Diverged {
        replayed: full,
        register: *register,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::replay;
    use serde_json::json;

    fn log(n: u64) -> Vec<Record> {
        (0..n)
            .map(|i| Record::new(i, "op", json!({"i": i})))
            .collect()
    }

    #[test]
    fn in_step_after_full_replay() {
        let l = log(3);
        assert_eq!(
            decide_recovery(&l, &replay(&l).expect("replay")).expect("decide"),
            Recovery::InStep
        );
        assert_eq!(
            decide_recovery(&[], &crate::eventlog::initial_register()).expect("decide"),
            Recovery::InStep
        );
    }

    #[test]
    fn one_behind_extends_the_last_record() {
        let l = log(3);
        let reg = replay(&l[..2]).expect("replay");
        let d = l[2].digest().expect("digest");
        assert_eq!(
            decide_recovery(&l, &reg).expect("decide"),
            Recovery::ExtendLast(d)
        );
        assert_eq!(reg.extend(&d), replay(&l).expect("replay"));
    }

    #[test]
    fn two_behind_or_foreign_value_diverges() {
        let l = log(3);
        let reg = replay(&l[..1]).expect("replay");
        assert!(matches!(
            decide_recovery(&l, &reg).expect("decide"),
            Recovery::Diverged { .. }
        ));
        // A register with no log at all.
        let reg = replay(&l).expect("replay");
        assert!(matches!(
            decide_recovery(&[], &reg).expect("decide"),
            Recovery::Diverged { .. }
        ));
        // A log whose register was never extended, not even with the INIT line.
        assert!(matches!(
            decide_recovery(&l, &Digest384::ZERO).expect("decide"),
            Recovery::Diverged { .. }
        ));
    }

    /// A first start (or a crash before the first extension): an empty log and a zero register
    /// get the INIT line's digest, which brings them in step.
    #[test]
    fn an_empty_log_at_zero_extends_the_init_line() {
        let Recovery::ExtendInit(d) = decide_recovery(&[], &Digest384::ZERO).expect("decide")
        else {
            panic!("expected ExtendInit")
        };
        assert_eq!(Digest384::ZERO.extend(&d), replay([]).expect("replay"));
    }
}
