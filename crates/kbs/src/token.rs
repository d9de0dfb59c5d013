//! Compact JWTs, with exactly one algorithm accepted per use (no `alg` confusion):
//! attestation tokens are ES256 (P-256), signed by the KBS; admin tokens are EdDSA (Ed25519),
//! signed by the owner's admin key whose public half the KBS is configured with.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not a compact JWT")]
    Malformed,
    #[error("token algorithm {0:?} is not accepted here")]
    Algorithm(String),
    #[error("token signature does not verify")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token has no expiry")]
    NoExpiry,
    #[error("the token signing key is not a usable P-256 key")]
    Key,
}

pub fn now() -> u64 {
    vouch_tee::unix_now()
}

fn encode_parts(alg: &str, claims: &Value) -> String {
    let header = B64.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
    let body = B64.encode(claims.to_string());
    format!("{header}.{body}")
}

/// Split and decode a token, checking its algorithm; returns (signed part, claims, signature).
fn decode(token: &str, alg: &str) -> Result<(String, Value, Vec<u8>), TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(b), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Value = serde_json::from_slice(&B64.decode(h).map_err(|_| TokenError::Malformed)?)
        .map_err(|_| TokenError::Malformed)?;
    let found = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if found != alg {
        return Err(TokenError::Algorithm(found.to_string()));
    }
    let claims: Value = serde_json::from_slice(&B64.decode(b).map_err(|_| TokenError::Malformed)?)
        .map_err(|_| TokenError::Malformed)?;
    let sig = B64.decode(s).map_err(|_| TokenError::Malformed)?;
    Ok((format!("{h}.{b}"), claims, sig))
}

fn check_times(claims: &Value) -> Result<(), TokenError> {
    let t = now();
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(TokenError::NoExpiry)?;
    if t >= exp {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64) {
        if t + 30 < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    Ok(())
}

/// ES256 signer and verifier for attestation tokens, on `ring` (the portable P-256 arithmetic is
/// several times slower, and a token is signed on every attestation).
pub struct Es256 {
    pair: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl Es256 {
    /// A signer from a P-256 private scalar (big-endian, 32 bytes).
    pub fn from_scalar(scalar: &[u8]) -> Result<Self, TokenError> {
        let secret = p256::SecretKey::from_slice(scalar).map_err(|_| TokenError::Key)?;
        let public =
            p256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&secret.public_key(), false);
        let rng = ring::rand::SystemRandom::new();
        let pair = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            scalar,
            public.as_bytes(),
            &rng,
        )
        .map_err(|_| TokenError::Key)?;
        Ok(Es256 { pair, rng })
    }

    /// The public key as an uncompressed SEC1 point.
    pub fn public_key(&self) -> &[u8] {
        ring::signature::KeyPair::public_key(&self.pair).as_ref()
    }

    pub fn sign(&self, claims: &Value) -> Result<String, TokenError> {
        let signed = encode_parts("ES256", claims);
        let sig = self
            .pair
            .sign(&self.rng, signed.as_bytes())
            .map_err(|_| TokenError::Key)?;
        Ok(format!("{signed}.{}", B64.encode(sig.as_ref())))
    }

    /// Verify a token against an uncompressed SEC1 public key.
    pub fn verify(public: &[u8], token: &str) -> Result<Value, TokenError> {
        let (signed, claims, sig) = decode(token, "ES256")?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public)
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        check_times(&claims)?;
        Ok(claims)
    }
}

/// Sign an admin token with the owner's Ed25519 key.
pub fn sign_admin(key: &ed25519_dalek::SigningKey, claims: &Value) -> String {
    use ed25519_dalek::Signer as _;
    let signed = encode_parts("EdDSA", claims);
    format!(
        "{signed}.{}",
        B64.encode(key.sign(signed.as_bytes()).to_bytes())
    )
}

/// Verify an admin token against the configured Ed25519 public key.
pub fn verify_admin(key: &ed25519_dalek::VerifyingKey, token: &str) -> Result<Value, TokenError> {
    let (signed, claims, sig) = decode(token, "EdDSA")?;
    let sig: [u8; 64] = sig
        .as_slice()
        .try_into()
        .map_err(|_| TokenError::Signature)?;
    key.verify_strict(
        signed.as_bytes(),
        &ed25519_dalek::Signature::from_bytes(&sig),
    )
    .map_err(|_| TokenError::Signature)?;
    check_times(&claims)?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es() -> Es256 {
        let k = crate::jwe::generate_key().expect("key");
        Es256::from_scalar(&k.to_bytes()).expect("signer")
    }

    #[test]
    fn es256_round_trip_expiry_and_tamper() {
        let s = es();
        let t = s
            .sign(&json!({"sub": "x", "exp": now() + 60}))
            .expect("sign");
        assert_eq!(
            Es256::verify(s.public_key(), &t).expect("verify")["sub"],
            "x"
        );
        let expired = s.sign(&json!({"exp": now() - 1})).expect("sign");
        assert_eq!(
            Es256::verify(s.public_key(), &expired),
            Err(TokenError::Expired)
        );
        let mut bytes = t.into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("utf8");
        assert!(Es256::verify(s.public_key(), &tampered).is_err());
        assert!(Es256::verify(
            es().public_key(),
            &s.sign(&json!({"exp": now() + 60})).expect("sign")
        )
        .is_err());
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        let s = es();
        let t = s.sign(&json!({"exp": now() + 60})).expect("sign");
        let admin = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        assert_eq!(
            verify_admin(&admin.verifying_key(), &t),
            Err(TokenError::Algorithm("ES256".into()))
        );
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none"}"#),
            B64.encode(r#"{"exp":99999999999}"#)
        );
        assert_eq!(
            Es256::verify(s.public_key(), &none),
            Err(TokenError::Algorithm("none".into()))
        );
    }

    #[test]
    fn admin_tokens() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let t = sign_admin(&k, &json!({"exp": now() + 60}));
        assert!(verify_admin(&k.verifying_key(), &t).is_ok());
        let other = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
        assert_eq!(
            verify_admin(&other.verifying_key(), &t),
            Err(TokenError::Signature)
        );
        assert_eq!(
            verify_admin(&k.verifying_key(), &sign_admin(&k, &json!({}))),
            Err(TokenError::NoExpiry)
        );
    }
}
