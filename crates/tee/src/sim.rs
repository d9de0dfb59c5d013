//! The `sim` backend: four software SHA-384 registers persisted on disk and an Ed25519 key created
//! at first start. Its quotes say `sim`; verifiers refuse them unless explicitly allowed.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use vouch_measure::{to_canonical_vec, Digest384};

use crate::verify::VerifyError;
use crate::{AttestError, Attester, QuoteClaims, TeeType, Verifier};

pub const SIM_REGISTERS: usize = 4;

/// The signed part of a sim quote, carried as canonical JSON.
///
/// Wire format: `MAGIC (8) || body length (u32 BE) || body || Ed25519 signature (64)`, where the
/// signature covers everything before it. Verifiers check the signature over the bytes received,
/// then require the body to be canonical, so no two encodings of one quote exist.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimQuoteBody {
    pub version: u32,
    pub tee: TeeType,
    pub registers: Vec<Digest384>,
    pub report_data: Digest384,
    /// Hex Ed25519 public key of the sim instance.
    pub public_key: String,
}

const MAGIC: &[u8; 8] = b"VOUCHSIM";
/// Upper bound on a body: four registers, report data and a key take well under 1 KiB.
const MAX_BODY: usize = 4096;

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

    pub fn public_key_hex(&self) -> String {
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

/// Verifies sim quotes. Optionally pins the sim instances' public keys (any of them).
#[derive(Default)]
pub struct SimVerifier {
    pub pinned_keys: Vec<String>,
}

/// The sim TEE key for `bytes`. Decompressing the point costs a field inversion, and a
/// verifier sees the same few keys (one per attesting host) again and again: valid keys are
/// kept, a bounded number of them.
fn verifying_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    const KEPT: usize = 1024;
    static KEYS: std::sync::LazyLock<Mutex<std::collections::HashMap<[u8; 32], VerifyingKey>>> =
        std::sync::LazyLock::new(Default::default);
    let keys = || KEYS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = keys().get(bytes) {
        return Some(*k);
    }
    // Decompressed outside the lock.
    let key = VerifyingKey::from_bytes(bytes).ok()?;
    let mut map = keys();
    if map.len() >= KEPT {
        map.clear();
    }
    map.insert(*bytes, key);
    Some(key)
}

impl Verifier for SimVerifier {
    fn tee(&self) -> TeeType {
        TeeType::Sim
    }

    fn verify_quote(&self, quote: &[u8]) -> Result<QuoteClaims, VerifyError> {
        let bad = |reason: String| VerifyError::MalformedQuote {
            tee: TeeType::Sim,
            reason,
        };
        if quote.len() < 8 + 4 + 64 || &quote[..8] != MAGIC {
            return Err(bad("not a vouch sim quote (bad magic or too short)".into()));
        }
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(&quote[8..12]);
        let body_len = u32::from_be_bytes(len_bytes) as usize;
        if body_len > MAX_BODY || quote.len() != 12 + body_len + 64 {
            return Err(bad(format!(
                "length field {body_len} does not match a quote of {} bytes",
                quote.len()
            )));
        }
        let (signed, sig_bytes) = quote.split_at(12 + body_len);
        let body_bytes = &signed[12..];
        let body: SimQuoteBody =
            serde_json::from_slice(body_bytes).map_err(|e| bad(format!("body: {e}")))?;
        let mut key_bytes = [0u8; 32];
        if body.public_key.len() != 64 || body.public_key.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("public key is not 32 lower-case hex bytes".into()));
        }
        hex::decode_to_slice(&body.public_key, &mut key_bytes)
            .map_err(|_| bad("public key is not 32 lower-case hex bytes".into()))?;
        let key = verifying_key(&key_bytes)
            .ok_or_else(|| bad("public key is not a valid Ed25519 point".into()))?;
        let sig_array: [u8; 64] = sig_bytes
            .try_into()
            .map_err(|_| bad("signature length".into()))?;
        key.verify_strict(signed, &Signature::from_bytes(&sig_array))
            .map_err(|_| VerifyError::BadSignature)?;
        if to_canonical_vec(&body).map_err(|e| bad(e.to_string()))? != body_bytes {
            return Err(bad("body is not canonical JSON".into()));
        }
        if body.tee != TeeType::Sim || body.version != 1 {
            return Err(bad(format!(
                "unsupported sim quote version {} for {}",
                body.version, body.tee
            )));
        }
        if body.registers.len() != SIM_REGISTERS {
            return Err(bad(format!(
                "expected {SIM_REGISTERS} registers, found {}",
                body.registers.len()
            )));
        }
        let quote_body = body;
        let pinned = self
            .pinned_keys
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&quote_body.public_key));
        if !self.pinned_keys.is_empty() && !pinned {
            return Err(VerifyError::UntrustedSigner {
                signer: quote_body.public_key,
            });
        }
        Ok(QuoteClaims {
            tee: TeeType::Sim,
            registers: quote_body.registers,
            report_data: quote_body.report_data,
            signer: quote_body.public_key,
            tpm_sha256_pcrs: Default::default(),
            tpm_app_pcr: None,
            // No boot chain: the sim TEE is development only.
            platform: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouch_measure::sha384;

    #[test]
    fn registers_and_key_persist_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = SimAttester::open(dir.path()).expect("open");
        a.extend(3, &sha384(b"x")).expect("extend");
        let key = a.public_key_hex();
        let reg = a.register(3).expect("reg");
        drop(a);
        let b = SimAttester::open(dir.path()).expect("reopen");
        assert_eq!(b.public_key_hex(), key);
        assert_eq!(b.register(3).expect("reg"), reg);
        assert_eq!(reg, Digest384::ZERO.extend(&sha384(b"x")));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn quote_verifies_and_tampering_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = SimAttester::open(dir.path()).expect("open");
        let rd = sha384(b"nonce");
        let q = a.quote(&rd).expect("quote");
        let claims = SimVerifier::default().verify_quote(&q).expect("verify");
        assert_eq!(claims.report_data, rd);
        // Every single-byte change anywhere in the quote is refused.
        for i in 0..q.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut t = q.clone();
                t[i] ^= flip;
                assert!(
                    SimVerifier::default().verify_quote(&t).is_err(),
                    "byte {i} ^ {flip:#x} accepted"
                );
            }
        }
        assert!(SimVerifier::default()
            .verify_quote(&q[..q.len() - 1])
            .is_err());
        // Pinning another key refuses it.
        let v = SimVerifier {
            pinned_keys: vec!["00".repeat(32)],
        };
        assert!(matches!(
            v.verify_quote(&q),
            Err(VerifyError::UntrustedSigner { .. })
        ));
    }

    #[test]
    fn corrupt_key_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("key"), b"short").expect("write");
        let err = SimAttester::open(dir.path()).err().expect("must fail");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
