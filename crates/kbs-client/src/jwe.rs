//! JWE for KBS resources: `ECDH-ES+A256KW` key agreement with `A256GCM` content encryption
//! (RFC 7516 / RFC 7518), in the flattened JSON form of the KBS protocol's `Response`.
//!
//! The TEE generates an ephemeral P-256 key per request and sends its public half in the
//! attestation's runtime data, so the quote binds it; the KBS encrypts the resource to that key.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub(crate) const ALG: &str = "ECDH-ES+A256KW";
pub(crate) const ENC: &str = "A256GCM";

#[derive(Debug, thiserror::Error)]
pub enum JweError {
    #[error("TEE public key is not a P-256 EC JWK: {0}")]
    BadKey(String),
    #[error("unsupported JWE algorithm {alg}/{enc} (only {ALG}/{ENC})")]
    Unsupported { alg: String, enc: String },
    #[error("JWE is malformed: {0}")]
    Malformed(String),
    #[error("JWE does not decrypt with this key (wrong key or tampered ciphertext)")]
    Decrypt,
    #[error("the operating system's random number generator failed")]
    Random,
}

/// The flattened JWE fields, matching `kbs_types::Response`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Jwe {
    pub protected: String,
    pub encrypted_key: String,
    pub iv: String,
    pub ciphertext: String,
    pub tag: String,
}

fn random<const N: usize>() -> Result<[u8; N], JweError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| JweError::Random)?;
    Ok(b)
}

/// A fresh P-256 key from the OS CSPRNG.
pub fn generate_key() -> Result<SecretKey, JweError> {
    loop {
        let bytes = Zeroizing::new(random::<32>()?);
        if let Ok(k) = SecretKey::from_slice(bytes.as_slice()) {
            return Ok(k);
        }
    }
}

/// The public JWK of a P-256 key, as the KBS protocol's `tee-pubkey`.
pub fn public_jwk(key: &PublicKey) -> Value {
    let point = key.to_sec1_point(false);
    json!({
        "kty": "EC",
        "crv": "P-256",
        "alg": ALG,
        "x": B64.encode(point.x().map(|x| x.as_slice()).unwrap_or_default()),
        "y": B64.encode(point.y().map(|y| y.as_slice()).unwrap_or_default()),
    })
}

/// Parse a P-256 EC JWK.
pub fn parse_jwk(jwk: &Value) -> Result<PublicKey, JweError> {
    let field = |k: &str| {
        jwk.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| JweError::BadKey(format!("missing {k}")))
    };
    if field("kty")? != "EC" || field("crv")? != "P-256" {
        return Err(JweError::BadKey("kty must be EC and crv P-256".into()));
    }
    let x = B64
        .decode(field("x")?)
        .map_err(|_| JweError::BadKey("x is not base64url".into()))?;
    let y = B64
        .decode(field("y")?)
        .map_err(|_| JweError::BadKey("y is not base64url".into()))?;
    if x.len() != 32 || y.len() != 32 {
        return Err(JweError::BadKey("x and y must be 32 bytes".into()));
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    PublicKey::from_sec1_bytes(&sec1)
        .map_err(|_| JweError::BadKey("point is not on the curve".into()))
}

/// Concat KDF (NIST SP 800-56A) as RFC 7518 section 4.6.2 uses it, for a 256-bit key.
fn concat_kdf(z: &[u8], alg: &str) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    h.update((alg.len() as u32).to_be_bytes());
    h.update(alg.as_bytes());
    h.update(0u32.to_be_bytes()); // PartyUInfo: empty
    h.update(0u32.to_be_bytes()); // PartyVInfo: empty
    h.update(256u32.to_be_bytes()); // SuppPubInfo: key length in bits
    Zeroizing::new(h.finalize().into())
}

fn kek(secret: &SecretKey, public: &PublicKey) -> Zeroizing<[u8; 32]> {
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), public.as_affine());
    concat_kdf(shared.raw_secret_bytes().as_slice(), ALG)
}

/// Encrypt `plaintext` to the holder of `recipient`, with a fresh ephemeral key.
pub fn encrypt(recipient: &PublicKey, plaintext: &[u8]) -> Result<Jwe, JweError> {
    let ephemeral = EphemeralKey::generate()?;
    let header = json!({"alg": ALG, "enc": ENC, "epk": public_jwk(&ephemeral.public)});
    let kek = agree(ephemeral.private, recipient)?;
    let cek = Zeroizing::new(random::<32>()?);
    let mut wrapped = [0u8; 40];
    aes_kw::KwAes256::new((&*kek).into())
        .wrap_key(cek.as_slice(), &mut wrapped)
        .map_err(|e| JweError::Malformed(format!("key wrap: {e}")))?;
    let protected =
        B64.encode(serde_json::to_vec(&header).map_err(|e| JweError::Malformed(e.to_string()))?);
    let iv = random::<12>()?;
    let cipher = Aes256Gcm::new((&*cek).into());
    let mut sealed = cipher
        .encrypt(
            (&iv).into(),
            Payload {
                msg: plaintext,
                aad: protected.as_bytes(),
            },
        )
        .map_err(|_| JweError::Malformed("encryption failed".into()))?;
    let tag = sealed.split_off(sealed.len() - 16);
    Ok(Jwe {
        protected,
        encrypted_key: B64.encode(wrapped),
        iv: B64.encode(iv),
        ciphertext: B64.encode(&sealed),
        tag: B64.encode(tag),
    })
}

/// Decrypt a JWE with a (reusable) P-256 private key. The plaintext is zeroized when dropped.
pub fn decrypt(key: &SecretKey, jwe: &Jwe) -> Result<Zeroizing<Vec<u8>>, JweError> {
    open(jwe, |epk| Ok(kek(key, epk)))
}

/// The TEE's key for one resource fetch: fresh from the OS CSPRNG, its public half bound into
/// the evidence, consumed by the one decryption it exists for. Key agreement runs on `ring`
/// (several times faster than the portable P-256 arithmetic).
pub(crate) struct EphemeralKey {
    private: ring::agreement::EphemeralPrivateKey,
    public: PublicKey,
}

impl EphemeralKey {
    pub fn generate() -> Result<Self, JweError> {
        let rng = ring::rand::SystemRandom::new();
        let private =
            ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
                .map_err(|_| JweError::Random)?;
        let point = private.compute_public_key().map_err(|_| JweError::Random)?;
        let public = PublicKey::from_sec1_bytes(point.as_ref())
            .map_err(|_| JweError::BadKey("generated point".into()))?;
        Ok(EphemeralKey { private, public })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Decrypt the JWE sent to this key, consuming the key.
    pub fn decrypt(self, jwe: &Jwe) -> Result<Zeroizing<Vec<u8>>, JweError> {
        open(jwe, |epk| agree(self.private, epk))
    }
}

/// ECDH on `ring` with the peer's point, straight into the Concat KDF.
fn agree(
    private: ring::agreement::EphemeralPrivateKey,
    peer: &PublicKey,
) -> Result<Zeroizing<[u8; 32]>, JweError> {
    use ring::agreement::{agree_ephemeral, UnparsedPublicKey, ECDH_P256};
    let point = peer.to_sec1_point(false);
    agree_ephemeral(
        private,
        &UnparsedPublicKey::new(&ECDH_P256, point.as_bytes()),
        |z| concat_kdf(z, ALG),
    )
    .map_err(|_| JweError::BadKey("key agreement failed".into()))
}

/// Check the header, derive the KEK from its `epk`, unwrap the CEK and open the content.
fn open(
    jwe: &Jwe,
    derive: impl FnOnce(&PublicKey) -> Result<Zeroizing<[u8; 32]>, JweError>,
) -> Result<Zeroizing<Vec<u8>>, JweError> {
    let header: Value = serde_json::from_slice(
        &B64.decode(&jwe.protected)
            .map_err(|_| JweError::Malformed("protected header encoding".into()))?,
    )
    .map_err(|_| JweError::Malformed("protected header is not JSON".into()))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let enc = header
        .get("enc")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if alg != ALG || enc != ENC {
        return Err(JweError::Unsupported {
            alg: alg.to_string(),
            enc: enc.to_string(),
        });
    }
    let epk = parse_jwk(
        header
            .get("epk")
            .ok_or_else(|| JweError::Malformed("no epk".into()))?,
    )?;
    let kek = derive(&epk)?;
    let decode = |s: &str, what: &str| {
        B64.decode(s)
            .map_err(|_| JweError::Malformed(format!("{what} encoding")))
    };
    let wrapped = decode(&jwe.encrypted_key, "encrypted_key")?;
    let mut cek = Zeroizing::new([0u8; 32]);
    if wrapped.len() != 40 {
        return Err(JweError::Malformed("encrypted_key must be 40 bytes".into()));
    }
    aes_kw::KwAes256::new((&*kek).into())
        .unwrap_key(&wrapped, cek.as_mut_slice())
        .map_err(|_| JweError::Decrypt)?;
    let iv: [u8; 12] = decode(&jwe.iv, "iv")?
        .as_slice()
        .try_into()
        .map_err(|_| JweError::Malformed("iv must be 12 bytes".into()))?;
    let mut sealed = decode(&jwe.ciphertext, "ciphertext")?;
    let tag = decode(&jwe.tag, "tag")?;
    if tag.len() != 16 {
        return Err(JweError::Malformed("tag must be 16 bytes".into()));
    }
    sealed.extend_from_slice(&tag);
    let cipher = Aes256Gcm::new((&*cek).into());
    let plain = cipher
        .decrypt(
            (&iv).into(),
            Payload {
                msg: &sealed,
                aad: jwe.protected.as_bytes(),
            },
        )
        .map_err(|_| JweError::Decrypt)?;
    Ok(Zeroizing::new(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = generate_key().expect("key");
        let jwk = public_jwk(&key.public_key());
        let recipient = parse_jwk(&jwk).expect("jwk");
        let jwe = encrypt(&recipient, br#"{"password":"hunter2"}"#).expect("encrypt");
        assert_eq!(
            decrypt(&key, &jwe).expect("decrypt").as_slice(),
            br#"{"password":"hunter2"}"#
        );
        // Another key cannot open it.
        let other = generate_key().expect("key");
        assert!(matches!(decrypt(&other, &jwe), Err(JweError::Decrypt)));
        // Any change to ciphertext, tag, iv or header fails.
        for field in 0..4 {
            let mut t = jwe.clone();
            let s = match field {
                0 => &mut t.ciphertext,
                1 => &mut t.tag,
                2 => &mut t.iv,
                _ => &mut t.encrypted_key,
            };
            let mut raw = B64.decode(&*s).expect("b64");
            raw[0] ^= 1;
            *s = B64.encode(raw);
            assert!(decrypt(&key, &t).is_err(), "field {field} tamper accepted");
        }
    }

    #[test]
    fn ephemeral_keys_open_what_was_sent_to_them_and_nothing_else() {
        // encrypt() agrees on ring; the reusable-key test above opens with the portable P-256,
        // so the two implementations are checked against each other.
        let key = EphemeralKey::generate().expect("key");
        let recipient = parse_jwk(&public_jwk(key.public_key())).expect("jwk");
        let jwe = encrypt(&recipient, b"s3cret").expect("encrypt");
        let other = EphemeralKey::generate().expect("key");
        assert!(matches!(other.decrypt(&jwe), Err(JweError::Decrypt)));
        assert_eq!(key.decrypt(&jwe).expect("decrypt").as_slice(), b"s3cret");
    }

    #[test]
    fn concat_kdf_matches_rfc7518_appendix_c() {
        // RFC 7518 Appendix C: ECDH-ES with A128GCM, Z given, apu "Alice", apv "Bob".
        let z: [u8; 32] = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let mut h = Sha256::new();
        h.update(1u32.to_be_bytes());
        h.update(z);
        for part in [&b"A128GCM"[..], b"Alice", b"Bob"] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        h.update(128u32.to_be_bytes());
        let out: [u8; 32] = h.finalize().into();
        assert_eq!(B64.encode(&out[..16]), "VqqN6vgjbSBcIijNcacQGg");
        // And our KDF is that construction with empty party info and a 256-bit length.
        let ours = concat_kdf(&z, "A256KW");
        assert_ne!(ours.as_slice(), &out);
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(parse_jwk(&json!({"kty": "RSA"})).is_err());
        assert!(parse_jwk(&json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})).is_err());
        let zeros = B64.encode([0u8; 32]);
        assert!(parse_jwk(&json!({"kty": "EC", "crv": "P-256", "x": zeros, "y": zeros})).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_jwe_never_panics(
            a in ".{0,64}", b in ".{0,64}", c in ".{0,64}", d in ".{0,64}", e in ".{0,64}",
        ) {
            let key = generate_key().expect("key");
            let jwe = Jwe { protected: a, encrypted_key: b, iv: c, ciphertext: d, tag: e };
            proptest::prop_assert!(decrypt(&key, &jwe).is_err());
        }
    }
}
