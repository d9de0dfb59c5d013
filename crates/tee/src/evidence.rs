//! The evidence format exchanged between vouchd and verifiers.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vouch_measure::{sha384, to_canonical_vec, CanonicalError, Digest384, Record};

/// The kind of TEE that produced a quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeType {
    /// Software-only development backend. Not hardware; rejected unless explicitly allowed.
    Sim,
    Tpm,
    Tdx,
    Snp,
    /// Confidential Containers' `sample` evidence: unsigned, so weaker than `sim` (anyone can
    /// write it); verified only where it is allowed explicitly, for development.
    Sample,
}

impl fmt::Display for TeeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TeeType::Sim => "sim",
            TeeType::Tpm => "tpm",
            TeeType::Tdx => "tdx",
            TeeType::Snp => "snp",
            TeeType::Sample => "sample",
        })
    }
}

/// Quote + event log + the runtime data the quote is bound to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Format version of this document.
    pub version: u32,
    pub tee: TeeType,
    /// Backend-specific quote bytes, hex encoded.
    pub quote: String,
    /// The vouch event log; replays to register [`crate::VOUCH_REGISTER`].
    pub event_log: Vec<Record>,
    /// The data bound into the quote: `report_data = SHA-384(canonical JSON of runtime_data)`.
    pub runtime_data: Value,
    /// The same event log as AAEL text (`INIT sha384/...` and `<domain> <op> <content>` lines),
    /// for readers of Confidential Containers' event log; it replays by AAEL's rules to the same
    /// register, and a verifier refuses evidence whose copy differs from `event_log`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aa_eventlog: Option<String>,
    /// The firmware's TCG2 event log (base64), e.g. the TDX CCEL; replays to the platform registers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_log: Option<String>,
    /// Present on evidence that is not hardware-backed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

pub(crate) const EVIDENCE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum EvidenceParseError {
    #[error("evidence is not one reading of its bytes")]
    Ambiguous(#[source] vouch_measure::StrictError),
    #[error("it is not in the evidence format")]
    Format(#[source] serde_json::Error),
}

impl Evidence {
    /// Read evidence from its JSON text, refusing a document with a key twice in any object (two
    /// readers could see two different evidences in it); the event log's numbers are held to one
    /// spelling when the log is canonicalized for its digest.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EvidenceParseError> {
        vouch_measure::check_unique_keys(bytes).map_err(EvidenceParseError::Ambiguous)?;
        serde_json::from_slice(bytes).map_err(EvidenceParseError::Format)
    }
}

/// The warning every `sim` evidence carries.
pub const SIM_WARNING: &str =
    "sim TEE: software registers and key, NOT hardware-backed; for development only";

/// `report_data = SHA-384(RFC 8785 JSON of runtime data)`, as in the CoCo KBS protocol.
pub fn report_data_for(runtime_data: &Value) -> Result<Digest384, CanonicalError> {
    Ok(sha384(&to_canonical_vec(runtime_data)?))
}

/// The key of the runtime data under which evidence fetched for one container names it.
pub const REQUESTER_KEY: &str = "requester";
