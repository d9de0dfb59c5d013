//! The `sim` backend: four software SHA-384 registers persisted on disk and an Ed25519 key created
//! at first start. Its quotes say `sim`; verifiers refuse them unless explicitly allowed.

use serde::{Deserialize, Serialize};
use vouch_measure::Digest384;

use crate::TeeType;

#[cfg(feature = "attest")]
mod attester;
#[cfg(feature = "verify")]
mod verifier;

#[cfg(feature = "attest")]
pub use attester::SimAttester;
#[cfg(feature = "verify")]
pub use verifier::SimVerifier;

pub(crate) const SIM_REGISTERS: usize = 4;

/// The signed part of a sim quote, carried as canonical JSON.
///
/// Wire format: `MAGIC (8) || body length (u32 BE) || body || Ed25519 signature (64)`, where the
/// signature covers everything before it. Verifiers check the signature over the bytes received,
/// then require the body to be canonical, so no two encodings of one quote exist.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimQuoteBody {
    pub version: u32,
    pub tee: TeeType,
    pub registers: Vec<Digest384>,
    pub report_data: Digest384,
    /// Hex Ed25519 public key of the sim instance.
    pub public_key: String,
}

pub(crate) const MAGIC: &[u8; 8] = b"VOUCHSIM";
/// Upper bound on a body: four registers, report data and a key take well under 1 KiB.
#[cfg(feature = "verify")]
pub(crate) const MAX_BODY: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::VerifyError;
    use crate::{Attester, Verifier};
    use std::fs;
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
