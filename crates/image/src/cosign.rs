//! Cosign key-based image signatures, in the formats the sigstore ecosystem uses:
//!
//! - keys: an ECDSA P-256 private key as PKCS#8, encrypted with a key derived by scrypt and
//!   sealed with NaCl secretbox, in a PEM block `ENCRYPTED SIGSTORE PRIVATE KEY` (cosign's
//!   format, also read under its older name `ENCRYPTED COSIGN PRIVATE KEY`); the public key as a
//!   PEM `PUBLIC KEY` (SubjectPublicKeyInfo);
//! - signatures: a "simple signing" JSON payload naming the image's manifest digest, signed with
//!   ECDSA P-256/SHA-256 (DER, base64) and attached as a layer of an image tagged
//!   `sha256-<hex>.sig` in the image's repository, the signature in the layer annotation
//!   `dev.cosignproject.cosign/signature`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::digest::OciDigest;

pub(crate) const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub(crate) const SIMPLE_SIGNING_MEDIA_TYPE: &str =
    "application/vnd.dev.cosign.simplesigning.v1+json";
pub(crate) const PAYLOAD_TYPE: &str = "cosign container image signature";
const PRIVATE_PEM: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
const PRIVATE_PEM_OLD: &str = "ENCRYPTED COSIGN PRIVATE KEY";

#[derive(Debug, thiserror::Error)]
pub enum CosignError {
    #[error("not a cosign private key (expected a PEM block {PRIVATE_PEM})")]
    NotPrivateKey,
    #[error("the private key cannot be decrypted: wrong password, or the file is damaged")]
    Decrypt,
    #[error("the private key is malformed: {0}")]
    BadPrivateKey(String),
    #[error("not a P-256 public key in PEM (PUBLIC KEY): {0}")]
    BadPublicKey(String),
    #[error("the operating system's random number generator failed")]
    Random,
    #[error("signature payload is malformed: {0}")]
    BadPayload(String),
    #[error("signature payload is for {found}, not {expected}")]
    WrongImage { expected: String, found: String },
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

fn random<const N: usize>() -> Result<[u8; N], CosignError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| CosignError::Random)?;
    Ok(b)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The body of the first PEM block labelled `label`.
fn pem_decode(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = text[start..].find(&end)? + start;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    B64.decode(b64).ok()
}

fn derive(
    password: &[u8],
    salt: &[u8],
    p: &ScryptParams,
) -> Result<Zeroizing<[u8; 32]>, CosignError> {
    if !p.n.is_power_of_two()
        || p.n < 2
        || p.n > 1 << 20
        || p.r == 0
        || p.r > 32
        || p.p == 0
        || p.p > 16
    {
        return Err(CosignError::BadPrivateKey(
            "unreasonable scrypt parameters".into(),
        ));
    }
    let params = scrypt::Params::new(p.n.trailing_zeros() as u8, p.r, p.p)
        .map_err(|_| CosignError::BadPrivateKey("scrypt parameters".into()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, key.as_mut_slice())
        .map_err(|_| CosignError::BadPrivateKey("scrypt".into()))?;
    Ok(key)
}

/// A new key pair from the OS CSPRNG: (encrypted private key PEM, public key PEM).
pub fn generate(password: &[u8]) -> Result<(String, String), CosignError> {
    let secret = loop {
        let seed = Zeroizing::new(random::<32>()?);
        if let Ok(k) = p256::SecretKey::from_slice(seed.as_slice()) {
            break k;
        }
    };
    let pkcs8 = secret
        .to_pkcs8_der()
        .map_err(|e| CosignError::BadPrivateKey(e.to_string()))?;
    let params = ScryptParams {
        n: 32768,
        r: 8,
        p: 1,
    };
    let salt = random::<32>()?;
    let nonce = random::<24>()?;
    let key = derive(password, &salt, &params)?;
    let ciphertext = XSalsa20Poly1305::new(key.as_slice().into())
        .encrypt((&nonce).into(), pkcs8.as_bytes())
        .map_err(|_| CosignError::Decrypt)?;
    let sealed = Sealed {
        kdf: Kdf {
            name: "scrypt".into(),
            params,
            salt: B64.encode(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: B64.encode(nonce),
        },
        ciphertext: B64.encode(ciphertext),
    };
    let json =
        serde_json::to_vec(&sealed).map_err(|e| CosignError::BadPrivateKey(e.to_string()))?;
    Ok((
        pem_encode(PRIVATE_PEM, &json),
        public_pem(&VerifyingKey::from(&SigningKey::from(&secret)))?,
    ))
}

/// The public key as PEM `PUBLIC KEY`.
pub(crate) fn public_pem(key: &VerifyingKey) -> Result<String, CosignError> {
    let der = key
        .to_public_key_der()
        .map_err(|e| CosignError::BadPublicKey(e.to_string()))?;
    Ok(pem_encode("PUBLIC KEY", der.as_bytes()))
}

/// Decrypt a cosign private key.
pub fn decrypt_private(pem: &str, password: &[u8]) -> Result<SigningKey, CosignError> {
    let json = pem_decode(pem, PRIVATE_PEM)
        .or_else(|| pem_decode(pem, PRIVATE_PEM_OLD))
        .ok_or(CosignError::NotPrivateKey)?;
    let sealed: Sealed =
        serde_json::from_slice(&json).map_err(|e| CosignError::BadPrivateKey(e.to_string()))?;
    if sealed.kdf.name != "scrypt" || sealed.cipher.name != "nacl/secretbox" {
        return Err(CosignError::BadPrivateKey(format!(
            "{} with {} is not supported (scrypt with nacl/secretbox only)",
            sealed.kdf.name, sealed.cipher.name
        )));
    }
    let b64 = |s: &str, what: &str| {
        B64.decode(s)
            .map_err(|_| CosignError::BadPrivateKey(format!("{what} is not base64")))
    };
    let salt = b64(&sealed.kdf.salt, "salt")?;
    let nonce: [u8; 24] = b64(&sealed.cipher.nonce, "nonce")?
        .try_into()
        .map_err(|_| CosignError::BadPrivateKey("nonce must be 24 bytes".into()))?;
    let key = derive(password, &salt, &sealed.kdf.params)?;
    let plain = Zeroizing::new(
        XSalsa20Poly1305::new(key.as_slice().into())
            .decrypt(
                (&nonce).into(),
                b64(&sealed.ciphertext, "ciphertext")?.as_slice(),
            )
            .map_err(|_| CosignError::Decrypt)?,
    );
    let secret = p256::SecretKey::from_pkcs8_der(&plain)
        .map_err(|_| CosignError::BadPrivateKey("not a P-256 PKCS#8 key".into()))?;
    Ok(SigningKey::from(&secret))
}

/// Parse a PEM `PUBLIC KEY` (P-256).
pub fn parse_public(pem: &str) -> Result<VerifyingKey, CosignError> {
    VerifyingKey::from_public_key_pem(pem.trim())
        .map_err(|e| CosignError::BadPublicKey(e.to_string()))
}

/// `sha256:` fingerprint of a public key (SHA-256 of its SubjectPublicKeyInfo DER).
pub fn fingerprint(key: &VerifyingKey) -> String {
    let der = key
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// The tag a signature of `digest` is attached under.
pub(crate) fn signature_tag(digest: &OciDigest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// The simple-signing payload for `docker_reference` (registry/repository) at `digest`.
pub fn payload(docker_reference: &str, digest: &OciDigest) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    }))
    .unwrap_or_default()
}

/// Sign a payload: base64 of the DER ECDSA signature.
pub fn sign(key: &SigningKey, payload: &[u8]) -> String {
    let sig: Signature = key.sign(payload);
    B64.encode(sig.to_der().as_bytes())
}

/// Check one signature on a payload, and that the payload names `digest`. Returns the payload's
/// docker reference.
pub fn verify(
    key: &VerifyingKey,
    payload: &[u8],
    signature_b64: &str,
    digest: &OciDigest,
) -> Result<String, CosignError> {
    let raw = B64
        .decode(signature_b64.trim())
        .map_err(|_| CosignError::BadPayload("the signature is not base64".into()))?;
    let sig = Signature::from_der(&raw)
        .or_else(|_| Signature::from_slice(&raw))
        .map_err(|_| CosignError::BadPayload("the signature is not an ECDSA signature".into()))?;
    key.verify(payload, &sig).map_err(|_| {
        CosignError::BadPayload("the signature does not verify with this key".into())
    })?;
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| CosignError::BadPayload(format!("not JSON: {e}")))?;
    let critical = &v["critical"];
    if critical["type"] != PAYLOAD_TYPE {
        return Err(CosignError::BadPayload(format!(
            "type is {}, not {PAYLOAD_TYPE:?}",
            critical["type"]
        )));
    }
    let found = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if found != digest.to_string() {
        return Err(CosignError::WrongImage {
            expected: digest.to_string(),
            found: found.to_string(),
        });
    }
    Ok(critical["identity"]["docker-reference"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_signatures_verify_only_for_their_image_and_key() {
        let (private, public) = generate(b"pw").expect("generate");
        assert!(private.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        assert!(matches!(
            decrypt_private(&private, b"wrong"),
            Err(CosignError::Decrypt)
        ));
        let sk = decrypt_private(&private, b"pw").expect("decrypt");
        let vk = parse_public(&public).expect("public");
        assert_eq!(VerifyingKey::from(&sk), vk);
        let digest: OciDigest = format!("sha256:{}", "ab".repeat(32))
            .parse()
            .expect("digest");
        let p = payload("example.com/app", &digest);
        let sig = sign(&sk, &p);
        assert_eq!(
            verify(&vk, &p, &sig, &digest).expect("verify"),
            "example.com/app"
        );
        let other: OciDigest = format!("sha256:{}", "cd".repeat(32))
            .parse()
            .expect("digest");
        assert!(matches!(
            verify(&vk, &p, &sig, &other),
            Err(CosignError::WrongImage { .. })
        ));
        let (_, public2) = generate(b"x").expect("generate");
        assert!(verify(&parse_public(&public2).expect("pk"), &p, &sig, &digest).is_err());
        let mut tampered = p.clone();
        tampered[5] ^= 1;
        assert!(verify(&vk, &tampered, &sig, &digest).is_err());
        assert!(matches!(
            decrypt_private(&public, b"pw"),
            Err(CosignError::NotPrivateKey)
        ));
        assert_eq!(
            signature_tag(&digest),
            format!("sha256-{}.sig", "ab".repeat(32))
        );
    }
}
