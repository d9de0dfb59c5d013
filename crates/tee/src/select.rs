//! Which backend measures and quotes: `auto` finds the hardware (TDX, then a TPM) and falls back
//! to `sim`, which is not hardware and says so. The binaries map their `--tee` flag to
//! [`TeeChoice`] and log the [`Note`]s; the choice itself is made here, for every entry point.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{AttestError, Attester};

/// The backend asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeeChoice {
    Auto,
    Sim,
    Tdx,
    Tpm,
    Snp,
}

impl TeeChoice {
    /// The names the choice is given by, `auto` first.
    pub const NAMES: [&'static str; 5] = ["auto", "sim", "tpm", "tdx", "snp"];
}

impl std::str::FromStr for TeeChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => TeeChoice::Auto,
            "sim" => TeeChoice::Sim,
            "tdx" => TeeChoice::Tdx,
            "tpm" => TeeChoice::Tpm,
            "snp" => TeeChoice::Snp,
            other => {
                return Err(format!(
                    "unknown TEE backend {other:?} (auto, sim, tpm, tdx)"
                ))
            }
        })
    }
}

impl std::fmt::Display for TeeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TeeChoice::Auto => "auto",
            TeeChoice::Sim => "sim",
            TeeChoice::Tdx => "tdx",
            TeeChoice::Tpm => "tpm",
            TeeChoice::Snp => "snp",
        })
    }
}

/// What the backends need besides the choice.
#[derive(Debug, Clone, Default)]
pub struct TeeOptions {
    /// The sim backend's state directory (its key and registers).
    pub sim_dir: PathBuf,
    /// How to reach the TPM (a TCTI); none: the kernel's resource manager, if there is one.
    pub tpm_tcti: Option<String>,
    /// The application PCR vouch extends.
    pub tpm_pcr: u8,
    /// The attestation key's certificate and intermediates (DER), carried with every quote.
    pub tpm_ak_certs: Vec<Vec<u8>>,
    /// Or the NV index of the TPM that holds the AK certificate (DER).
    pub tpm_ak_cert_nv: Option<u32>,
}

/// Something for the log about the choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Info(String),
    Warn(String),
}

/// The backend chosen, and what to log about it.
pub struct Selected {
    pub attester: Arc<dyn Attester>,
    pub notes: Vec<Note>,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("no TDX quote interface here (needs /sys/kernel/config/tsm/report, and either the RTMR3 file under /sys/class/misc/tdx_guest/measurements or /dev/tdx_guest)")]
    NoTdx,
    #[error("no TPM found (/dev/tpmrm0); give its TCTI")]
    NoTpm,
    #[error("SEV-SNP has no registers a guest can extend at run time, so an SNP guest attests through its vTPM: choose the tpm backend (or auto), with the AK certificate its provider issues")]
    SnpHasNoRegisters,
    #[error("the {0} TEE backend is not in this build")]
    NotInThisBuild(TeeChoice),
    #[error("NV index {0:#x} does not hold a DER certificate")]
    NoCertificateInNv(u32),
    #[error(transparent)]
    Attest(#[from] AttestError),
}

/// Open the backend `choice` names.
pub fn select(choice: TeeChoice, opts: &TeeOptions) -> Result<Selected, SelectError> {
    let _ = opts;
    let mut notes: Vec<Note> = Vec::new();
    #[cfg(feature = "tdx")]
    {
        let tdx = crate::tdx::TdxAttester::detect;
        match choice {
            TeeChoice::Tdx => {
                let t = tdx().ok_or(SelectError::NoTdx)?;
                return Ok(Selected {
                    attester: Arc::new(t),
                    notes,
                });
            }
            TeeChoice::Auto => {
                if let Some(t) = tdx() {
                    notes.push(Note::Info(
                        "TDX detected: measuring into RTMR3, quotes through configfs-tsm".into(),
                    ));
                    return Ok(Selected {
                        attester: Arc::new(t),
                        notes,
                    });
                }
            }
            _ => {}
        }
    }
    #[cfg(feature = "tpm")]
    {
        use crate::tpm::TpmAttester;
        let tcti = || opts.tpm_tcti.clone().or_else(TpmAttester::detect);
        let found = match choice {
            TeeChoice::Tpm => Some(tcti().ok_or(SelectError::NoTpm)?),
            TeeChoice::Auto => tcti(),
            _ => None,
        };
        if let Some(tcti) = found {
            let t = open_tpm(&tcti, opts, &mut notes)?;
            return Ok(Selected {
                attester: Arc::new(t),
                notes,
            });
        }
    }
    match choice {
        TeeChoice::Snp => return Err(SelectError::SnpHasNoRegisters),
        TeeChoice::Auto | TeeChoice::Sim => {}
        other => return Err(SelectError::NotInThisBuild(other)),
    }
    #[cfg(feature = "sim")]
    {
        if choice == TeeChoice::Auto {
            notes.push(Note::Warn(if std::path::Path::new("/dev/sev-guest").exists() {
                "SEV-SNP guest without a vTPM: SNP has no registers a guest can extend at run time, so vouch needs the guest's vTPM (none found); using the sim TEE".into()
            } else {
                "no TEE hardware detected; using the sim TEE".into()
            }));
        }
        notes.push(Note::Warn(crate::evidence::SIM_WARNING.into()));
        let sim = crate::sim::SimAttester::open(&opts.sim_dir)?;
        Ok(Selected {
            attester: Arc::new(sim),
            notes,
        })
    }
    #[cfg(not(feature = "sim"))]
    {
        let _ = notes;
        Err(SelectError::NotInThisBuild(TeeChoice::Sim))
    }
}

#[cfg(feature = "tpm")]
fn open_tpm(
    tcti: &str,
    opts: &TeeOptions,
    notes: &mut Vec<Note>,
) -> Result<crate::tpm::TpmAttester, SelectError> {
    let mut t = crate::tpm::TpmAttester::open(tcti, opts.tpm_pcr)?;
    if !opts.tpm_ak_certs.is_empty() {
        t = t.with_ak_certs(&opts.tpm_ak_certs)?;
        notes.push(Note::Info(format!(
            "TPM: the attestation key's certificate ({} certificates) goes with every quote",
            opts.tpm_ak_certs.len()
        )));
    }
    if let Some(index) = opts.tpm_ak_cert_nv {
        let raw = t.nv_read(index)?;
        let cert = crate::tpm::akcert::leading_certificate(&raw)
            .ok_or(SelectError::NoCertificateInNv(index))?;
        t = t.with_ak_certs(&[cert.to_vec()])?;
        notes.push(Note::Info(format!(
            "TPM: the attestation key's certificate (from NV index {index:#x}) goes with every quote"
        )));
    }
    notes.push(Note::Info(format!(
        "TPM {tcti}: measuring into PCR {} (SHA-384 and SHA-256 banks); verifiers pin the attestation key {}",
        opts.tpm_pcr,
        t.ak_fingerprint()
    )));
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for name in TeeChoice::NAMES {
            let c: TeeChoice = name.parse().expect("known");
            assert_eq!(c.to_string(), name);
        }
        assert!("sgx".parse::<TeeChoice>().is_err());
    }

    #[test]
    fn snp_is_refused_with_the_reason() {
        let err = select(TeeChoice::Snp, &TeeOptions::default())
            .err()
            .expect("snp cannot measure");
        assert!(matches!(err, SelectError::SnpHasNoRegisters), "{err}");
    }

    #[test]
    fn tdx_is_refused_where_there_is_none() {
        if std::path::Path::new("/sys/kernel/config/tsm/report").exists() {
            eprintln!("SKIPPED: this machine may be a TDX guest");
            return;
        }
        let err = select(TeeChoice::Tdx, &TeeOptions::default())
            .err()
            .expect("no TDX here");
        assert!(matches!(err, SelectError::NoTdx), "{err}");
    }

    #[test]
    fn sim_is_chosen_and_says_it_is_not_hardware() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = TeeOptions {
            sim_dir: dir.path().join("sim"),
            ..Default::default()
        };
        let s = select(TeeChoice::Sim, &opts).expect("sim");
        assert_eq!(s.attester.tee(), crate::TeeType::Sim);
        assert_eq!(
            s.notes,
            vec![Note::Warn(crate::evidence::SIM_WARNING.into())]
        );
    }
}
