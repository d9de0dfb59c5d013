//! The sim verifier: the Ed25519 signature over the bytes received, then a canonical body.

use std::sync::Mutex;

use ed25519_dalek::{Signature, VerifyingKey};
use vouch_measure::to_canonical_vec;

use super::{SimQuoteBody, MAGIC, MAX_BODY, SIM_REGISTERS};
use crate::verify::VerifyError;
use crate::{QuoteClaims, TeeType, Verifier};

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
