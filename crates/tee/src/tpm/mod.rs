//! The TPM 2.0 backend: vouch's register is one application PCR, quotes are signed by an
//! attestation key (AK) that a verifier pins or trusts through its certificate.
//!
//! - [`quote`] parses and checks `TPMS_ATTEST` / `TPMT_SIGNATURE` (pure Rust, no TSS library);
//! - [`akcert`] reads and checks AK certificates;
//! - `device` (feature `attest`) is the attester, through `tss-esapi` (which needs libtss2);
//! - the verifier of vouch evidence from a TPM (feature `verify`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use vouch_measure::Digest384;

pub mod akcert;
#[cfg(feature = "attest")]
pub mod device;
pub mod quote;
#[cfg(feature = "verify")]
pub(crate) mod verifier;

#[cfg(feature = "attest")]
pub use device::TpmAttester;
pub use quote::{
    ak_spki, bank_name, parse_ak, verify_quote, verify_quote_rsassa, AkPublic, TpmError,
    TpmQuoteClaims,
};
#[cfg(feature = "verify")]
pub(crate) use verifier::TpmVerifier;
#[cfg(feature = "verify")]
pub use verifier::{check_tpm_event_log, check_tpm_firmware_log};

/// The application PCR used unless configured otherwise (resettable, not used by firmware).
pub const DEFAULT_PCR: u8 = 23;
/// Where the attestation key is kept.
pub const AK_HANDLE: u32 = 0x8101_0023;
/// Where the kernel exposes the firmware's TCG2 event log.
#[cfg(feature = "attest")]
pub(crate) const FIRMWARE_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// The platform PCRs quoted with the application PCR (SHA-256 bank), for the firmware log.
#[cfg(feature = "attest")]
pub(crate) const PLATFORM_PCRS: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// A TPM quote as vouch carries it in evidence (the `quote` field holds its JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TpmQuote {
    /// The application PCR that is vouch's register.
    pub pcr: u8,
    /// `TPMS_ATTEST`, base64.
    pub attest: String,
    /// `TPMT_SIGNATURE`, base64.
    pub signature: String,
    /// The attestation key's `TPMT_PUBLIC`, base64.
    pub ak: String,
    /// The attestation key's certificate (DER, base64), when one was provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ak_cert: Option<String>,
    /// Intermediate CA certificates between the AK certificate and a root (DER, base64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ak_chain: Vec<String>,
    /// Quoted PCR values by bank (`sha256`, `sha384`) and index, hex.
    pub pcrs: BTreeMap<String, BTreeMap<u32, String>>,
}

/// The fingerprint an attestation key is pinned by: `sha256:` and the hex SHA-256 of its
/// `TPMT_PUBLIC`.
pub fn ak_fingerprint(tpmt_public: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(tpmt_public)))
}

/// The fingerprint of an attestation key given as a DER SubjectPublicKeyInfo, as Confidential
/// Containers' TPM evidence carries it: `sha256:HEX` of those bytes (not of the `TPMT_PUBLIC`,
/// so it differs from [`ak_fingerprint`] for the same key; pin the one the KBS names).
pub fn spki_fingerprint(spki_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(spki_der)))
}

/// The SHA-256 bank's digest for a record: SHA-256 of its SHA-384 digest.
pub(crate) fn sha256_bank_digest(d: &Digest384) -> [u8; 32] {
    Sha256::digest(d.as_bytes()).into()
}
