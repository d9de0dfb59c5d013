//! The sim attester: registers in `registers.json`, the key in `key` (0600), written durably.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use vouch_measure::{to_canonical_vec, Digest384};

use super::{SimQuoteBody, MAGIC, SIM_REGISTERS};
use crate::{AttestError, Attester, TeeType};

#[derive(Serialize, Deserialize)]
struct RegisterFile {
    registers: Vec<Digest384>,
}

/// Software TEE. State lives in a directory: `key` (0600) and `registers.json`.
pub struct SimAttester {
    dir: PathBuf,
    key: SigningKey,
    registers: Mutex<Vec<Digest384>>,
}

impl SimAttester {
    /// Open the sim TEE in `dir`, creating its key (from the OS CSPRNG) and zeroed registers on
    /// first start.
    pub fn open(dir: &Path) -> Result<Self, AttestError> {
        let state_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| AttestError::State { path, source }
        };
        fs::create_dir_all(dir).map_err(state_err(dir))?;
        let key_path = dir.join("key");
        let key = match fs::read(&key_path) {
            Ok(bytes) => {
                let seed: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| AttestError::Corrupt {
                            path: key_path.display().to_string(),
                            reason: format!("expected 32 bytes, found {}", bytes.len()),
                        })?;
                SigningKey::from_bytes(&seed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(AttestError::Random)?;
                write_durably(&key_path, &seed, 0o600).map_err(state_err(&key_path))?;
                let key = SigningKey::from_bytes(&seed);
                seed.fill(0);
                key
            }
            Err(e) => return Err(state_err(&key_path)(e)),
        };
        let reg_path = dir.join("registers.json");
        let registers = match fs::read(&reg_path) {
            Ok(bytes) => {
                let file: RegisterFile =
                    serde_json::from_slice(&bytes).map_err(|e| AttestError::Corrupt {
                        path: reg_path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                if file.registers.len() != SIM_REGISTERS {
                    return Err(AttestError::Corrupt {
                        path: reg_path.display().to_string(),
                        reason: format!("expected {SIM_REGISTERS} registers"),
                    });
                }
                file.registers
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                vec![Digest384::ZERO; SIM_REGISTERS]
            }
            Err(e) => return Err(state_err(&reg_path)(e)),
        };
        Ok(SimAttester {
            dir: dir.to_path_buf(),
            key,
            registers: Mutex::new(registers),
        })
    }

    pub(crate) fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }
}

/// Write a file so that after a crash it holds either the old or the new content, never a mix.
fn write_durably(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl Attester for SimAttester {
    fn tee(&self) -> TeeType {
        TeeType::Sim
    }

    /// The sim key (hex), which verifiers pin with `--sim-key`.
    fn attestation_key(&self) -> Option<String> {
        Some(self.public_key_hex())
    }

    fn extend(&self, index: usize, digest: &Digest384) -> Result<(), AttestError> {
        let mut regs = self.registers.lock().unwrap_or_else(|p| p.into_inner());
        let current = *regs.get(index).ok_or(AttestError::NoSuchRegister(index))?;
        let mut next = regs.clone();
        next[index] = current.extend(digest);
        let path = self.dir.join("registers.json");
        let bytes = serde_json::to_vec(&RegisterFile {
            registers: next.clone(),
        })
        .map_err(|e| AttestError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        write_durably(&path, &bytes, 0o600).map_err(|source| AttestError::State {
            path: path.display().to_string(),
            source,
        })?;
        *regs = next;
        Ok(())
    }

    fn register(&self, index: usize) -> Result<Digest384, AttestError> {
        let regs = self.registers.lock().unwrap_or_else(|p| p.into_inner());
        regs.get(index)
            .copied()
            .ok_or(AttestError::NoSuchRegister(index))
    }

    fn quote(&self, report_data: &Digest384) -> Result<Vec<u8>, AttestError> {
        let registers = self
            .registers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let body = SimQuoteBody {
            version: 1,
            tee: TeeType::Sim,
            registers,
            report_data: *report_data,
            public_key: self.public_key_hex(),
        };
        let canonical = to_canonical_vec(&body).map_err(|e| AttestError::Corrupt {
            path: self.dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut out = Vec::with_capacity(8 + 4 + canonical.len() + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(canonical.len() as u32).to_be_bytes());
        out.extend_from_slice(&canonical);
        let signature = self.key.sign(&out);
        out.extend_from_slice(&signature.to_bytes());
        Ok(out)
    }
}
