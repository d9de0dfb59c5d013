//! Pure measurement primitives shared by the in-TEE daemon and every verifier.
//!
//! This crate computes digests, register extensions, event-log records in RFC 8785 canonical JSON,
//! replay, and the crash-recovery decision for a log and its register. It must never perform I/O:
//! both sides of an attestation compute replay with exactly this code, so it stays deterministic.

pub mod aael;
pub mod canonical;
pub mod digest;
pub mod eventlog;
pub mod recovery;
pub mod strict;

pub use canonical::{canonical_sha384, canonicalize, to_canonical_vec, CanonicalError};
pub use digest::{sha384, Digest384, DigestParseError};
pub use eventlog::{
    init_digest, initial_register, replay, validate_sequence, Record, RecordError, DOMAIN,
};
pub use recovery::{decide_recovery, Recovery};
pub use strict::{check_unique_keys, StrictError};
