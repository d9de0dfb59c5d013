//! TPM 2.0 quote verification: `TPMS_ATTEST` signed by an attestation key (`TPMT_PUBLIC`), with
//! the verifier's nonce as qualifying data and a digest of the quoted PCR values.
//!
//! Everything here parses untrusted, big-endian TPM structures with bounds checks. RSA keys use
//! RSASSA-PKCS1-v1_5, verified by constructing the expected encoding and comparing it byte for
//! byte with the signature raised to the public exponent.

use num_bigint::BigUint;
use serde::Serialize;

const TPM_GENERATED: u32 = 0xff54_4347;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_RSASSA: u16 = 0x0014;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TpmError {
    #[error("{what} is truncated at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("{what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("unsupported {what}: {value:#06x}")]
    Unsupported { what: &'static str, value: u16 },
    #[error("quote signature does not verify with the attestation key")]
    BadSignature,
    #[error("nonce mismatch: the quote carries {found}, expected {expected}")]
    Nonce { expected: String, found: String },
    #[error(
        "PCR digest mismatch: the quote signs {quoted}, the given PCR values hash to {computed}"
    )]
    PcrDigest { quoted: String, computed: String },
    #[error("PCR {index} ({bank}) is selected by the quote but its value was not given")]
    MissingPcr { index: u32, bank: &'static str },
}

struct Be<'a> {
    b: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Be<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Self {
        Be { b, pos: 0, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(TpmError::Truncated {
                what: self.what,
                offset: self.pos,
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, TpmError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TpmError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, TpmError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, TpmError> {
        let s = self.take(8)?;
        Ok(u64::from_be_bytes(s.try_into().map_err(|_| {
            TpmError::Truncated {
                what: self.what,
                offset: self.pos,
            }
        })?))
    }
    fn tpm2b(&mut self) -> Result<&'a [u8], TpmError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn end(&self) -> Result<(), TpmError> {
        if self.pos == self.b.len() {
            Ok(())
        } else {
            Err(TpmError::Malformed {
                what: self.what,
                reason: format!("{} trailing bytes", self.b.len() - self.pos),
            })
        }
    }
}

fn hash(alg: u16, data: &[u8]) -> Result<Vec<u8>, TpmError> {
    crate::tcg::hash(alg, &[data]).ok_or(TpmError::Unsupported {
        what: "hash algorithm",
        value: alg,
    })
}

pub fn bank_name(alg: u16) -> &'static str {
    match alg {
        crate::tcg::ALG_SHA1 => "sha1",
        crate::tcg::ALG_SHA256 => "sha256",
        crate::tcg::ALG_SHA384 => "sha384",
        crate::tcg::ALG_SHA512 => "sha512",
        _ => "unknown",
    }
}

/// DER DigestInfo prefixes for RSASSA-PKCS1-v1_5 (RFC 8017, section 9.2, note 1).
fn digest_info_prefix(alg: u16) -> Result<&'static [u8], TpmError> {
    Ok(match alg {
        crate::tcg::ALG_SHA1 => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
        crate::tcg::ALG_SHA256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        crate::tcg::ALG_SHA384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        crate::tcg::ALG_SHA512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
        other => {
            return Err(TpmError::Unsupported {
                what: "hash algorithm",
                value: other,
            })
        }
    })
}

/// An RSA attestation key from a `TPMT_PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkPublic {
    pub modulus: Vec<u8>,
    pub exponent: u32,
    pub scheme_hash: u16,
}

pub fn parse_ak(bytes: &[u8]) -> Result<AkPublic, TpmError> {
    let mut r = Be::new(bytes, "TPMT_PUBLIC");
    let kind = r.u16()?;
    if kind != TPM_ALG_RSA {
        return Err(TpmError::Unsupported {
            what: "key type (only RSA attestation keys yet)",
            value: kind,
        });
    }
    r.u16()?; // nameAlg
    r.u32()?; // objectAttributes
    r.tpm2b()?; // authPolicy
    let sym = r.u16()?;
    if sym != TPM_ALG_NULL {
        r.u16()?;
        r.u16()?;
    }
    let scheme = r.u16()?;
    let scheme_hash = if scheme != TPM_ALG_NULL {
        r.u16()?
    } else {
        crate::tcg::ALG_SHA256
    };
    if scheme != TPM_ALG_NULL && scheme != TPM_ALG_RSASSA {
        return Err(TpmError::Unsupported {
            what: "RSA scheme",
            value: scheme,
        });
    }
    let bits = r.u16()?;
    let exponent = match r.u32()? {
        0 => 65537,
        e => e,
    };
    let modulus = r.tpm2b()?.to_vec();
    r.end()?;
    if modulus.len() * 8 != bits as usize || !(2048..=4096).contains(&bits) {
        return Err(TpmError::Malformed {
            what: "TPMT_PUBLIC",
            reason: format!("{bits}-bit key with a {}-byte modulus", modulus.len()),
        });
    }
    Ok(AkPublic {
        modulus,
        exponent,
        scheme_hash,
    })
}

/// The DER SubjectPublicKeyInfo (rsaEncryption) of an RSA attestation key, as Confidential
/// Containers' TPM evidence carries it.
pub fn ak_spki(ak: &AkPublic) -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = body.len();
        if n < 0x80 {
            out.push(n as u8);
        } else if n < 0x100 {
            out.extend([0x81, n as u8]);
        } else {
            out.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        out.extend_from_slice(body);
        out
    }
    let uint = |b: &[u8]| {
        let b: Vec<u8> = b.iter().copied().skip_while(|x| *x == 0).collect();
        let mut v = Vec::with_capacity(b.len() + 1);
        if b.first().is_none_or(|x| x & 0x80 != 0) {
            v.push(0);
        }
        v.extend_from_slice(&b);
        tlv(0x02, &v)
    };
    let key = tlv(
        0x30,
        &[uint(&ak.modulus), uint(&ak.exponent.to_be_bytes())].concat(),
    );
    let algorithm = tlv(
        0x30,
        &[
            tlv(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    tlv(
        0x30,
        &[algorithm, tlv(0x03, &[&[0u8][..], &key].concat())].concat(),
    )
}

/// RSASSA-PKCS1-v1_5 verification by construct-and-compare.
fn rsa_pkcs1v15_verify(
    key: &AkPublic,
    hash_alg: u16,
    message: &[u8],
    sig: &[u8],
) -> Result<(), TpmError> {
    let k = key.modulus.len();
    if sig.len() != k {
        return Err(TpmError::BadSignature);
    }
    let n = BigUint::from_bytes_be(&key.modulus);
    let s = BigUint::from_bytes_be(sig);
    if s >= n {
        return Err(TpmError::BadSignature);
    }
    let m = s.modpow(&BigUint::from(key.exponent), &n).to_bytes_be();
    let mut em = vec![0u8; k - m.len()];
    em.extend_from_slice(&m);
    let digest = hash(hash_alg, message)?;
    let prefix = digest_info_prefix(hash_alg)?;
    let t_len = prefix.len() + digest.len();
    if k < t_len + 11 {
        return Err(TpmError::BadSignature);
    }
    let mut expected = vec![0x00, 0x01];
    expected.extend(std::iter::repeat_n(0xff, k - t_len - 3));
    expected.push(0x00);
    expected.extend_from_slice(prefix);
    expected.extend_from_slice(&digest);
    if em == expected {
        Ok(())
    } else {
        Err(TpmError::BadSignature)
    }
}

/// What a verified quote says.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TpmQuoteClaims {
    pub nonce: String,
    pub firmware_version: String,
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    /// (bank, PCR indexes) in quote order.
    pub selection: Vec<(String, Vec<u32>)>,
    pub pcr_digest: String,
}

struct Attest {
    extra_data: Vec<u8>,
    clock: u64,
    reset_count: u32,
    restart_count: u32,
    firmware: u64,
    selection: Vec<(u16, Vec<u32>)>,
    pcr_digest: Vec<u8>,
}

fn parse_attest(bytes: &[u8]) -> Result<Attest, TpmError> {
    let mut r = Be::new(bytes, "TPMS_ATTEST");
    let magic = r.u32()?;
    if magic != TPM_GENERATED {
        return Err(TpmError::Malformed {
            what: "TPMS_ATTEST",
            reason: format!("magic {magic:#010x} is not TPM_GENERATED"),
        });
    }
    let kind = r.u16()?;
    if kind != TPM_ST_ATTEST_QUOTE {
        return Err(TpmError::Unsupported {
            what: "attestation type (only quotes)",
            value: kind,
        });
    }
    r.tpm2b()?; // qualifiedSigner
    let extra_data = r.tpm2b()?.to_vec();
    let clock = r.u64()?;
    let reset_count = r.u32()?;
    let restart_count = r.u32()?;
    r.u8()?; // safe
    let firmware = r.u64()?;
    let count = r.u32()?;
    if count > 16 {
        return Err(TpmError::Malformed {
            what: "TPMS_ATTEST",
            reason: format!("{count} PCR selections"),
        });
    }
    let mut selection = Vec::new();
    for _ in 0..count {
        let alg = r.u16()?;
        let size = r.u8()? as usize;
        let bits = r.take(size)?;
        let mut idx = Vec::new();
        for (byte, b) in bits.iter().enumerate() {
            for bit in 0..8 {
                if b & (1 << bit) != 0 {
                    idx.push((byte * 8 + bit) as u32);
                }
            }
        }
        selection.push((alg, idx));
    }
    let pcr_digest = r.tpm2b()?.to_vec();
    r.end()?;
    Ok(Attest {
        extra_data,
        clock,
        reset_count,
        restart_count,
        firmware,
        selection,
        pcr_digest,
    })
}

/// Verify a quote: signature by `ak`, the nonce as qualifying data, and (when given) that the PCR
/// values hash to the quoted digest. `pcr_value(bank, index)` returns a PCR value.
pub fn verify_quote(
    attest: &[u8],
    signature: &[u8],
    ak: &AkPublic,
    nonce: Option<&[u8]>,
    pcr_value: Option<&dyn Fn(u16, u32) -> Option<Vec<u8>>>,
) -> Result<TpmQuoteClaims, TpmError> {
    let mut s = Be::new(signature, "TPMT_SIGNATURE");
    let sig_alg = s.u16()?;
    if sig_alg != TPM_ALG_RSASSA {
        return Err(TpmError::Unsupported {
            what: "signature algorithm",
            value: sig_alg,
        });
    }
    let sig_hash = s.u16()?;
    let sig = s.tpm2b()?;
    s.end()?;
    verify_quote_rsassa(attest, sig_hash, sig, ak, nonce, pcr_value)
}

/// [`verify_quote`] for a bare RSASSA-PKCS1-v1_5 signature (not wrapped in a
/// `TPMT_SIGNATURE`) with hash `sig_hash` (a TPM algorithm id), as Azure's vTPM evidence
/// carries it.
pub fn verify_quote_rsassa(
    attest: &[u8],
    sig_hash: u16,
    sig: &[u8],
    ak: &AkPublic,
    nonce: Option<&[u8]>,
    pcr_value: Option<&dyn Fn(u16, u32) -> Option<Vec<u8>>>,
) -> Result<TpmQuoteClaims, TpmError> {
    rsa_pkcs1v15_verify(ak, sig_hash, attest, sig)?;
    let a = parse_attest(attest)?;
    if let Some(nonce) = nonce {
        if a.extra_data != nonce {
            return Err(TpmError::Nonce {
                expected: hex::encode(nonce),
                found: hex::encode(&a.extra_data),
            });
        }
    }
    if let Some(get) = pcr_value {
        let mut concat = Vec::new();
        for (alg, idx) in &a.selection {
            for i in idx {
                concat.extend(get(*alg, *i).ok_or(TpmError::MissingPcr {
                    index: *i,
                    bank: bank_name(*alg),
                })?);
            }
        }
        // The PCR digest uses the signing scheme's hash, whatever the banks.
        let computed = hash(sig_hash, &concat)?;
        if computed != a.pcr_digest {
            return Err(TpmError::PcrDigest {
                quoted: hex::encode(&a.pcr_digest),
                computed: hex::encode(computed),
            });
        }
    }
    Ok(TpmQuoteClaims {
        nonce: hex::encode(&a.extra_data),
        firmware_version: format!("{:#018x}", a.firmware),
        clock: a.clock,
        reset_count: a.reset_count,
        restart_count: a.restart_count,
        selection: a
            .selection
            .iter()
            .map(|(alg, i)| (bank_name(*alg).to_string(), i.clone()))
            .collect(),
        pcr_digest: hex::encode(&a.pcr_digest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use vouch_testkit::corpus::vectors;

    fn load(dir: &std::path::Path, bank: &str) -> (Vec<u8>, Vec<u8>, BTreeMap<String, String>) {
        let f = |n: String| std::fs::read(dir.join(n)).expect("vector");
        let pcrs = serde_json::from_slice(&f(format!("quote_{bank}.pcrs.json"))).expect("pcrs");
        (
            f(format!("quote_{bank}.tpms_attest")),
            f(format!("quote_{bank}.tpmt_signature")),
            pcrs,
        )
    }

    #[test]
    fn gce_vtpm_quotes_verify_with_nonce_9009_only() {
        let Some(v) = vectors() else { return };
        let dir = v.join("tpm/gce-vtpm-nonce9009");
        let ak = parse_ak(&std::fs::read(dir.join("ak_pub.tpmt_public")).expect("ak"))
            .expect("parse ak");
        assert_eq!(ak.modulus.len(), 256);
        for bank in ["sha1", "sha256", "sha384"] {
            let (attest, sig, pcrs) = load(&dir, bank);
            let get =
                |_alg: u16, i: u32| pcrs.get(&i.to_string()).and_then(|h| hex::decode(h).ok());
            let claims = verify_quote(&attest, &sig, &ak, Some(&[0x90, 0x09]), Some(&get))
                .unwrap_or_else(|e| panic!("{bank}: {e}"));
            assert_eq!(claims.nonce, "9009");
            assert_eq!(claims.selection[0].0, bank);
            assert_eq!(claims.selection[0].1.len(), 24);
            // Another nonce.
            assert!(matches!(
                verify_quote(&attest, &sig, &ak, Some(&[0x90, 0x0a]), Some(&get)),
                Err(TpmError::Nonce { .. })
            ));
            // A PCR value that is not what was quoted.
            let wrong = |alg: u16, i: u32| {
                get(alg, i).map(|mut v| {
                    if i == 7 {
                        v[0] ^= 1
                    }
                    v
                })
            };
            assert!(matches!(
                verify_quote(&attest, &sig, &ak, Some(&[0x90, 0x09]), Some(&wrong)),
                Err(TpmError::PcrDigest { .. })
            ));
            // Any byte of the attest structure or of the signature.
            for i in 0..attest.len() {
                let mut t = attest.clone();
                t[i] ^= 0x01;
                assert!(
                    verify_quote(&t, &sig, &ak, Some(&[0x90, 0x09]), Some(&get)).is_err(),
                    "{bank}: attest byte {i}"
                );
            }
            for i in (0..sig.len()).step_by(7) {
                let mut t = sig.clone();
                t[i] ^= 0x01;
                assert!(
                    verify_quote(&attest, &t, &ak, Some(&[0x90, 0x09]), Some(&get)).is_err(),
                    "{bank}: signature byte {i}"
                );
            }
        }
        // Any byte of the key's modulus.
        let (attest, sig, _) = load(&dir, "sha256");
        let raw_ak = std::fs::read(dir.join("ak_pub.tpmt_public")).expect("ak");
        for i in (raw_ak.len() - 256..raw_ak.len()).step_by(5) {
            let mut t = raw_ak.clone();
            t[i] ^= 0x01;
            let ak2 = parse_ak(&t).expect("still parses");
            assert!(
                verify_quote(&attest, &sig, &ak2, Some(&[0x90, 0x09]), None).is_err(),
                "AK byte {i}"
            );
        }
        assert!(matches!(
            parse_ak(&raw_ak[..20]),
            Err(TpmError::Truncated { .. })
        ));
    }
}
