//! TEE abstraction: the [`Attester`] and [`Verifier`] traits, the evidence format, the crash-safe
//! measurement [`journal`], and one folder per backend.
//!
//! Backends, one cargo feature each: `sim` (software registers and key, for development; its
//! evidence says `sim` and no default policy accepts it), `tdx`, `tpm`, `snp`. Two more features
//! choose the sides: `attest` (the attesters and the journal: what vouchd needs inside the TEE)
//! and `verify` (the verifiers: what `vouch verify` and the KBS need). vouchd builds without
//! `verify` (no DCAP or certificate-chain code in the TEE); the KBS and the fuzz targets build
//! without `attest` (no libtss2).
//!
//! This crate must never accept `sim` evidence unless the caller asked for it explicitly.

#[cfg(not(any(feature = "attest", feature = "verify")))]
compile_error!(
    "vouch-tee needs feature `attest`, `verify`, or both: without them it has nothing to do"
);
#[cfg(not(any(feature = "sim", feature = "tdx", feature = "tpm", feature = "snp")))]
compile_error!("vouch-tee needs at least one TEE backend feature: `sim`, `tdx`, `tpm` or `snp`");
#[cfg(all(feature = "snp", not(feature = "verify")))]
compile_error!("the `snp` backend only verifies (an SNP guest attests through its vTPM: feature `tpm`); enable `verify` with it");

#[cfg(any(feature = "tpm", feature = "snp"))]
mod asn1;
pub mod coco;
pub mod evidence;
#[cfg(feature = "attest")]
pub mod journal;
pub mod pem;
#[cfg(feature = "attest")]
pub mod select;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(all(feature = "snp", feature = "verify"))]
pub mod snp;
pub mod tcg;
#[cfg(feature = "tdx")]
pub mod tdx;
#[cfg(feature = "tpm")]
pub mod tpm;
#[cfg(feature = "verify")]
pub mod verify;

pub use evidence::{report_data_for, Evidence, TeeType, REQUESTER_KEY};
#[cfg(feature = "attest")]
pub use journal::{Journal, JournalError};
#[cfg(feature = "attest")]
pub use select::{select, SelectError, Selected, TeeChoice, TeeOptions};
#[cfg(feature = "verify")]
pub use verify::{verify_evidence, LaunchedContainer, Verdict, VerifyError, VerifyOptions};

use vouch_measure::Digest384;

/// The register vouch extends with its event log (RTMR3 on TDX, register 3 of the sim).
pub const VOUCH_REGISTER: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("register index {0} does not exist on this TEE")]
    NoSuchRegister(usize),
    #[error("cannot persist TEE state at {path}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TEE state at {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("cannot read randomness from the operating system")]
    Random(#[source] getrandom::Error),
    #[error("TPM: {0}")]
    Device(String),
}

/// The TEE side: extends registers and produces signed quotes over them.
pub trait Attester: Send + Sync {
    fn tee(&self) -> TeeType;
    /// Extend register `index` with `digest`. Must be durable when it returns.
    fn extend(&self, index: usize, digest: &Digest384) -> Result<(), AttestError>;
    /// The current value of register `index`.
    fn register(&self, index: usize) -> Result<Digest384, AttestError>;
    /// A quote over all registers that binds `report_data`.
    fn quote(&self, report_data: &Digest384) -> Result<Vec<u8>, AttestError>;
    /// The firmware's event log (TCG2 format) when the TEE offers one, e.g. the TDX CCEL.
    fn firmware_log(&self) -> Option<Vec<u8>> {
        None
    }
    /// The key a verifier has to trust for this TEE's quotes, when it is not fixed by the
    /// hardware vendor's chain (TPM: the attestation key's fingerprint).
    fn attestation_key(&self) -> Option<String> {
        None
    }
    /// A quote in Confidential Containers' evidence form for this TEE (JSON), binding
    /// `report_data`, for a backend whose CoCo form is its quote alone (TPM); `None` otherwise.
    fn coco_quote(&self, _report_data: &Digest384) -> Result<Option<Vec<u8>>, AttestError> {
        Ok(None)
    }
}

/// Claims a verifier extracted from a quote whose signature checked out.
#[cfg(feature = "verify")]
#[derive(Debug, Clone)]
pub struct QuoteClaims {
    pub tee: TeeType,
    pub registers: Vec<Digest384>,
    pub report_data: Digest384,
    /// Who signed the quote (for `sim`: the hex public key).
    pub signer: String,
    /// TPM only: the quoted SHA-256 bank (platform PCRs and the application PCR), by index.
    pub tpm_sha256_pcrs: std::collections::BTreeMap<u32, Vec<u8>>,
    /// TPM only: the application PCR that is vouch's register.
    pub tpm_app_pcr: Option<u32>,
    /// The platform's own boot measurements, by name, lower-case hex: `mrtd` and `rtmr0` to
    /// `rtmr2` (TDX), `pcr0` to `pcr7` of the SHA-256 bank (TPM), `measurement` (SEV-SNP).
    /// Policies judge the boot chain on these before the vouch log.
    pub platform: std::collections::BTreeMap<String, String>,
}

/// The verifier side for one backend: checks a quote's signature and extracts its claims, and
/// the backend's own logs. [`verify::verify_evidence`] does the rest (binding, nonce, replay of
/// vouch's log) alike for every backend; [`verify::verifier_for`] picks the backend.
#[cfg(feature = "verify")]
pub trait Verifier {
    fn tee(&self) -> TeeType;
    fn verify_quote(&self, quote: &[u8]) -> Result<QuoteClaims, VerifyError>;
    /// Replay the firmware's event log (TCG2) against the quoted platform registers; the number
    /// of events. A backend without one ignores it.
    fn check_firmware_log(
        &self,
        _log: &[u8],
        _claims: &QuoteClaims,
    ) -> Result<Option<usize>, VerifyError> {
        Ok(None)
    }
    /// What the backend checks of vouch's log beyond the replay of its register (TPM: the
    /// application PCR's SHA-256 bank).
    fn check_event_log(
        &self,
        _log: &[vouch_measure::Record],
        _claims: &QuoteClaims,
    ) -> Result<(), VerifyError> {
        Ok(())
    }
}
