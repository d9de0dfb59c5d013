//! TEE abstraction: the [`Attester`] and [`Verifier`] traits, the evidence format, the crash-safe
//! measurement [`journal`], and one module per backend.
//!
//! Backends: `sim` (software registers and key, for development; its evidence says `sim` and no
//! default policy accepts it). Hardware backends (tpm, tdx, snp) plug in behind the same traits.
//!
//! This crate must never accept `sim` evidence unless the caller asked for it explicitly.

pub mod akcert;
pub mod collateral;
pub mod dcap;
mod dcap_tcb;
pub mod evidence;
pub mod journal;
pub mod pem;
pub mod sim;
pub mod snp;
pub mod tcg;
pub mod tdx;
pub mod tpm;
pub mod tpm_device;
pub mod verify;

pub use evidence::{report_data_for, Evidence, TeeType};
pub use journal::{Journal, JournalError};
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
}

/// Claims a verifier extracted from a quote whose signature checked out.
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

/// The verifier side for one backend: checks a quote's signature and extracts its claims.
pub trait Verifier {
    fn tee(&self) -> TeeType;
    fn verify_quote(&self, quote: &[u8]) -> Result<QuoteClaims, VerifyError>;
}
