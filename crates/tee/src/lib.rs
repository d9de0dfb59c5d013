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

/// Support for tests in this workspace.
#[doc(hidden)]
pub mod testing {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A real TPM 2.0 simulator (`swtpm`) on loopback, stopped by PID when dropped.
    pub struct Swtpm {
        child: Child,
        pub tcti: String,
        _state: tempfile_dir::Dir,
    }

    mod tempfile_dir {
        /// A directory removed on drop (tests only; avoids a dependency of the library).
        pub struct Dir(pub std::path::PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// A free loopback port whose successor is free too: the swtpm TCTI expects the control
    /// channel on the next port.
    fn free_port_pair() -> Option<u16> {
        for _ in 0..50 {
            let a = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            let port = a.local_addr().ok()?.port();
            if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                return Some(port);
            }
        }
        None
    }

    impl Swtpm {
        /// Start swtpm, or return `None` (with the reason printed) where it is not installed;
        /// under `CI=true` a missing swtpm fails the test.
        pub fn start() -> Option<Swtpm> {
            if Command::new("swtpm").arg("--version").output().is_err() {
                assert_ne!(
                    std::env::var("CI").as_deref(),
                    Ok("true"),
                    "swtpm is not installed (scripts/deps installs it)"
                );
                eprintln!("SKIPPED: swtpm is not installed (scripts/deps installs it)");
                return None;
            }
            for _ in 0..5 {
                let port = free_port_pair()?;
                let ctrl = port + 1;
                let dir =
                    std::env::temp_dir().join(format!("vouch-swtpm-{}-{port}", std::process::id()));
                std::fs::create_dir_all(&dir).ok()?;
                let state = tempfile_dir::Dir(dir.clone());
                let mut child = Command::new("swtpm")
                    .args(["socket", "--tpm2", "--tpmstate"])
                    .arg(format!("dir={}", dir.display()))
                    .arg("--server")
                    .arg(format!("type=tcp,bindaddr=127.0.0.1,port={port}"))
                    .arg("--ctrl")
                    .arg(format!("type=tcp,bindaddr=127.0.0.1,port={ctrl}"))
                    .args(["--flags", "not-need-init,startup-clear"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn swtpm");
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                        return Some(Swtpm {
                            child,
                            tcti: format!("swtpm:host=127.0.0.1,port={port}"),
                            _state: state,
                        });
                    }
                    if child.try_wait().ok().flatten().is_some() {
                        break; // lost a port race: try others
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            panic!("swtpm did not start");
        }
    }

    impl Drop for Swtpm {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The evidence vector corpus: `$VOUCH_VECTORS`, else `../shared/vectors` beside the
    /// repository. Missing under `CI=true` is a failure; elsewhere callers skip and this says why.
    pub fn vectors() -> Option<PathBuf> {
        let dir = std::env::var_os("VOUCH_VECTORS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
            });
        if dir.join("README.md").is_file() {
            return Some(dir);
        }
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "vector corpus missing at {}",
            dir.display()
        );
        eprintln!(
            "SKIPPED: vector corpus not found at {} (set VOUCH_VECTORS)",
            dir.display()
        );
        None
    }
}

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
