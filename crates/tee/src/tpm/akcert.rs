//! Trusting a TPM attestation key through its certificate (as cloud vTPMs provision them, e.g.
//! Google's and Azure's), instead of pinning its fingerprint: the AK certificate must chain,
//! through intermediates the evidence carries, to a CA certificate the verifier trusts, every
//! certificate valid at the verification time, and the certificate's key must be the AK.
//!
//! Signatures: RSA PKCS#1 v1.5 (SHA-256/384/512) and ECDSA (P-256/SHA-256, P-384/SHA-384), by
//! `ring`. Issuers other than the trust anchors must be CA certificates.

use der::{Decode, Encode};
use x509_cert::Certificate;

use super::AkPublic;
use crate::asn1::der_tlv;

/// How deep a chain may be (leaf, intermediates, anchor).
const MAX_DEPTH: usize = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AkCertError {
    #[error("AK certificate {which}: {reason}")]
    Cert { which: String, reason: String },
    #[error("the AK certificate's key is not the attestation key that signed the quote")]
    KeyMismatch,
    #[error("the AK certificate ({subject}, issued by {issuer}) does not chain to a trusted CA")]
    Untrusted { subject: String, issuer: String },
}

fn cert_err(which: &str, reason: impl Into<String>) -> AkCertError {
    AkCertError::Cert {
        which: which.to_string(),
        reason: reason.into(),
    }
}

/// Certificates from PEM (any number of `CERTIFICATE` blocks) or one DER certificate.
pub fn parse_certs(bytes: &[u8]) -> Result<Vec<Vec<u8>>, AkCertError> {
    if bytes
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        let certs = crate::pem::certificates(bytes);
        for c in &certs {
            parse(c, "in the PEM file")?;
        }
        return Ok(certs);
    }
    Certificate::from_der(bytes).map_err(|e| cert_err("file", e.to_string()))?;
    Ok(vec![bytes.to_vec()])
}

fn parse(der_bytes: &[u8], which: &str) -> Result<Certificate, AkCertError> {
    Certificate::from_der(der_bytes).map_err(|e| cert_err(which, e.to_string()))
}

fn name(c: &Certificate) -> String {
    c.tbs_certificate().subject().to_string()
}

fn check_validity(c: &Certificate, which: &str, now: u64) -> Result<(), AkCertError> {
    let v = c.tbs_certificate().validity();
    let (from, to) = (
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    );
    if now < from || now > to {
        return Err(cert_err(
            which,
            format!("{} is not valid at {now} (valid {from}..{to})", name(c)),
        ));
    }
    Ok(())
}

/// Whether `issuer` is marked as a CA (basicConstraints cA = TRUE).
fn is_ca(issuer: &Certificate) -> bool {
    const BASIC_CONSTRAINTS: &str = "2.5.29.19";
    issuer
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .filter(|e| e.extn_id.to_string() == BASIC_CONSTRAINTS)
        .any(|e| {
            // BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, ... }
            der_tlv(e.extn_value.as_bytes()).is_some_and(|(tag, seq, _)| {
                tag == 0x30 && der_tlv(seq).is_some_and(|(t, v, _)| t == 0x01 && v == [0xff])
            })
        })
}

/// Whether `issuer`'s key made `cert`'s signature.
fn signed_by(cert: &Certificate, issuer: &Certificate) -> bool {
    use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
    const P256: &str = "1.2.840.10045.3.1.7";
    const P384: &str = "1.3.132.0.34";
    if cert.tbs_certificate().issuer() != issuer.tbs_certificate().subject() {
        return false;
    }
    let Ok(tbs) = cert.tbs_certificate().to_der() else {
        return false;
    };
    let Some(sig) = cert.signature().as_bytes() else {
        return false;
    };
    let spki = issuer.tbs_certificate().subject_public_key_info();
    let Some(key) = spki.subject_public_key.as_bytes() else {
        return false;
    };
    let key_alg = spki.algorithm.oid.to_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
        .map(|o| o.to_string());
    let alg: &dyn VerificationAlgorithm = match (
        cert.signature_algorithm().oid.to_string().as_str(),
        key_alg.as_str(),
        curve.as_deref(),
    ) {
        ("1.2.840.113549.1.1.11", "1.2.840.113549.1.1.1", _) => {
            &signature::RSA_PKCS1_2048_8192_SHA256
        }
        ("1.2.840.113549.1.1.12", "1.2.840.113549.1.1.1", _) => {
            &signature::RSA_PKCS1_2048_8192_SHA384
        }
        ("1.2.840.113549.1.1.13", "1.2.840.113549.1.1.1", _) => {
            &signature::RSA_PKCS1_2048_8192_SHA512
        }
        ("1.2.840.10045.4.3.2", "1.2.840.10045.2.1", Some(P256)) => {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        ("1.2.840.10045.4.3.3", "1.2.840.10045.2.1", Some(P256)) => {
            &signature::ECDSA_P256_SHA384_ASN1
        }
        ("1.2.840.10045.4.3.2", "1.2.840.10045.2.1", Some(P384)) => {
            &signature::ECDSA_P384_SHA256_ASN1
        }
        ("1.2.840.10045.4.3.3", "1.2.840.10045.2.1", Some(P384)) => {
            &signature::ECDSA_P384_SHA384_ASN1
        }
        _ => return false,
    };
    UnparsedPublicKey::new(alg, key).verify(&tbs, sig).is_ok()
}

/// Whether the certificate's subject key is the RSA attestation key.
fn key_is_ak(cert: &Certificate, ak: &AkPublic) -> bool {
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid.to_string() != "1.2.840.113549.1.1.1" {
        return false;
    }
    let Some(raw) = spki.subject_public_key.as_bytes() else {
        return false;
    };
    let Some((0x30, seq, _)) = der_tlv(raw) else {
        return false;
    };
    let Some((0x02, n, rest)) = der_tlv(seq) else {
        return false;
    };
    let Some((0x02, e, _)) = der_tlv(rest) else {
        return false;
    };
    let strip = |b: &[u8]| -> Vec<u8> {
        let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
        b[i..].to_vec()
    };
    let e_ak = ak.exponent.to_be_bytes();
    strip(n) == strip(&ak.modulus) && strip(e) == strip(&e_ak)
}

/// The DER certificate at the start of `raw`, as a TPM NV index holds one (sized generously,
/// with padding after it).
#[cfg(any(test, feature = "attest"))]
pub(crate) fn leading_certificate(raw: &[u8]) -> Option<&[u8]> {
    let (tag, _, rest) = der_tlv(raw)?;
    (tag == 0x30).then(|| &raw[..raw.len() - rest.len()])
}

/// Whether the certificate (DER) is for the attestation key `ak`.
pub fn certifies(leaf_der: &[u8], ak: &AkPublic) -> Result<(), AkCertError> {
    if key_is_ak(&parse(leaf_der, "leaf")?, ak) {
        Ok(())
    } else {
        Err(AkCertError::KeyMismatch)
    }
}

/// Check the AK certificate (DER) against trusted CA certificates (DER), with `intermediates`
/// as the evidence carries them, at unix time `now`. Returns the certificate's issuer chain,
/// leaf first, as names.
pub fn verify_ak_cert(
    leaf_der: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &[Vec<u8>],
    ak: &AkPublic,
    now: u64,
) -> Result<Vec<String>, AkCertError> {
    let leaf = parse(leaf_der, "leaf")?;
    if !key_is_ak(&leaf, ak) {
        return Err(AkCertError::KeyMismatch);
    }
    check_validity(&leaf, "leaf", now)?;
    // The leaf itself is trusted when it is one of the anchors (a pinned certificate).
    if anchors.iter().any(|a| a.as_slice() == leaf_der) {
        return Ok(vec![name(&leaf)]);
    }
    let anchors = anchors
        .iter()
        .map(|a| parse(a, "trust anchor"))
        .collect::<Result<Vec<_>, _>>()?;
    let intermediates = intermediates
        .iter()
        .map(|c| parse(c, "intermediate"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut path = vec![name(&leaf)];
    let mut current = leaf;
    for _ in 0..MAX_DEPTH {
        if let Some(anchor) = anchors.iter().find(|a| signed_by(&current, a)) {
            check_validity(anchor, "trust anchor", now)?;
            path.push(name(anchor));
            return Ok(path);
        }
        let Some(next) = intermediates
            .iter()
            .find(|i| is_ca(i) && signed_by(&current, i))
        else {
            break;
        };
        check_validity(next, "intermediate", now)?;
        path.push(name(next));
        current = next.clone();
    }
    Err(AkCertError::Untrusted {
        subject: path.first().cloned().unwrap_or_default(),
        issuer: current.tbs_certificate().issuer().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Google Cloud's certificate for a real vTPM's AK: its key is that AK, it is pinned when
    /// it is itself an anchor, and without its issuer it is not trusted.
    #[test]
    fn real_cloud_ak_certificate() {
        let Some(v) = vouch_testkit::corpus::vectors() else {
            return;
        };
        let dir = v.join("tpm/gce-vtpm-nonce9009");
        let cert = std::fs::read(dir.join("ak_cert.der")).expect("cert");
        let ak =
            super::super::parse_ak(&std::fs::read(dir.join("ak_pub.tpmt_public")).expect("ak"))
                .expect("parse");
        let now = 1_750_000_000;
        let path = verify_ak_cert(&cert, &[], std::slice::from_ref(&cert), &ak, now)
            .expect("pinned certificate");
        assert_eq!(path.len(), 1);
        let err = verify_ak_cert(&cert, &[], &[], &ak, now).expect_err("no anchor");
        match &err {
            AkCertError::Untrusted { issuer, .. } => {
                assert!(issuer.contains("tpm_ek_v1_cloud_host-signer"), "{err}")
            }
            other => panic!("{other}"),
        }
        // Another key, or before the certificate's time: refused, saying which.
        let mut other = ak.clone();
        other.modulus[10] ^= 1;
        assert_eq!(
            verify_ak_cert(&cert, &[], std::slice::from_ref(&cert), &other, now),
            Err(AkCertError::KeyMismatch)
        );
        let err = verify_ak_cert(&cert, &[], std::slice::from_ref(&cert), &ak, 1_600_000_000)
            .expect_err("not yet valid");
        assert!(err.to_string().contains("not valid at"), "{err}");
        // A damaged certificate is a parse error, never a panic.
        let mut bad = cert.clone();
        bad.truncate(bad.len() / 2);
        assert!(verify_ak_cert(&bad, &[], std::slice::from_ref(&cert), &ak, now).is_err());
        assert!(
            parse_certs(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
        assert_eq!(parse_certs(&cert).expect("der"), vec![cert.clone()]);
    }

    /// An NV index holds the certificate, then padding.
    #[test]
    fn certificates_in_padding() {
        let cert = [0x30, 0x82, 0x00, 0x03, 1, 2, 3];
        assert_eq!(
            leading_certificate(&[&cert[..], &[0xff; 9]].concat()),
            Some(&cert[..])
        );
        assert_eq!(leading_certificate(&[0x30, 0x02, 1]), None, "truncated");
        assert_eq!(leading_certificate(&[0xff; 8]), None, "never written");
        assert_eq!(leading_certificate(&[]), None);
    }
}
