//! Compact JWTs, with exactly one algorithm accepted per use (no `alg` confusion):
//! attestation tokens are ES256 (P-256), signed by the KBS; admin tokens are EdDSA (Ed25519),
//! signed by the owner's admin key whose public half the KBS is configured with.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use vouch_base::clock::unix_secs as now;

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
    #[error("token names critical header parameters ({0}), which this KBS does not understand")]
    Critical(String),
    #[error("admin token has no issue time (iat)")]
    NoIssuedAt,
    #[error(
        "admin token is valid for {seconds} seconds; at most {MAX_ADMIN_LIFETIME} are accepted"
    )]
    Lifetime { seconds: u64 },
    #[error("admin token is not for this KBS: its audience must be {0:?}")]
    Audience(String),
}

/// Longest an admin token may be valid (from its `iat` to its `exp`, and from now to its `exp`):
/// a token that leaks is of use for an hour at most.
pub const MAX_ADMIN_LIFETIME: u64 = 3600;

/// The audience admin tokens name when the KBS is given none (`vouch-kbs serve
/// --admin-audience`): a token made for one KBS is refused by another with its own audience.
pub const DEFAULT_ADMIN_AUDIENCE: &str = "vouch-kbs";

/// How far the clocks of the token's maker and the KBS may differ.
const SKEW: u64 = 30;

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
    // Both parts are JSON with no key twice: two readers must not see two tokens.
    let json = |part: &str| -> Result<Value, TokenError> {
        let bytes = B64.decode(part).map_err(|_| TokenError::Malformed)?;
        vouch_measure::check_unique_keys(&bytes).map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
    };
    let header = json(h)?;
    let found = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if found != alg {
        return Err(TokenError::Algorithm(found.to_string()));
    }
    // RFC 7515: a recipient must refuse a token whose critical extensions it does not know,
    // and this KBS knows none.
    if let Some(crit) = header.get("crit") {
        return Err(TokenError::Critical(crit.to_string()));
    }
    let claims = json(b)?;
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

/// Verify an admin token against the configured Ed25519 public key: signed by it, not expired,
/// issued at most [`MAX_ADMIN_LIFETIME`] before it expires (and expiring no later than that from
/// now), and for `audience`.
pub(crate) fn verify_admin(
    key: &ed25519_dalek::VerifyingKey,
    token: &str,
    audience: &str,
) -> Result<Value, TokenError> {
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
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(TokenError::NoIssuedAt)?;
    let lifetime = exp.saturating_sub(iat);
    let remaining = exp.saturating_sub(now());
    if lifetime > MAX_ADMIN_LIFETIME || remaining > MAX_ADMIN_LIFETIME + SKEW {
        return Err(TokenError::Lifetime {
            seconds: lifetime.max(remaining),
        });
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::Audience(audience.to_string()));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es() -> Es256 {
        let k = vouch_kbs_client::jwe::generate_key().expect("key");
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
            verify_admin(&admin.verifying_key(), &t, DEFAULT_ADMIN_AUDIENCE),
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
        let vk = k.verifying_key();
        let aud = DEFAULT_ADMIN_AUDIENCE;
        let t = sign_admin(&k, &json!({"iat": now(), "exp": now() + 60, "aud": aud}));
        assert!(verify_admin(&vk, &t, aud).is_ok());
        let other = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
        assert_eq!(
            verify_admin(&other.verifying_key(), &t, aud),
            Err(TokenError::Signature)
        );
        assert_eq!(
            verify_admin(&vk, &sign_admin(&k, &json!({})), aud),
            Err(TokenError::NoExpiry)
        );
        // No issue time, a lifetime over the maximum, an expiry too far ahead.
        assert_eq!(
            verify_admin(
                &vk,
                &sign_admin(&k, &json!({"exp": now() + 60, "aud": aud})),
                aud
            ),
            Err(TokenError::NoIssuedAt)
        );
        let long = sign_admin(
            &k,
            &json!({"iat": now() - 10, "exp": now() + MAX_ADMIN_LIFETIME, "aud": aud}),
        );
        assert!(matches!(
            verify_admin(&vk, &long, aud),
            Err(TokenError::Lifetime { .. })
        ));
        let ahead = sign_admin(
            &k,
            &json!({"iat": now() + 86_400, "exp": now() + 86_400 + 60, "aud": aud}),
        );
        assert!(matches!(
            verify_admin(&vk, &ahead, aud),
            Err(TokenError::Lifetime { .. })
        ));
        let forever = sign_admin(&k, &json!({"iat": 0, "exp": u64::MAX, "aud": aud}));
        assert!(matches!(
            verify_admin(&vk, &forever, aud),
            Err(TokenError::Lifetime { .. })
        ));
        // The audience: missing, another KBS's, or in a list.
        for claims in [
            json!({"iat": now(), "exp": now() + 60}),
            json!({"iat": now(), "exp": now() + 60, "aud": "kbs-b"}),
            json!({"iat": now(), "exp": now() + 60, "aud": ["kbs-b"]}),
        ] {
            assert_eq!(
                verify_admin(&vk, &sign_admin(&k, &claims), aud),
                Err(TokenError::Audience(aud.into())),
                "{claims}"
            );
        }
        let listed = sign_admin(
            &k,
            &json!({"iat": now(), "exp": now() + 60, "aud": ["kbs-b", aud]}),
        );
        assert!(verify_admin(&vk, &listed, aud).is_ok());
        assert_eq!(
            verify_admin(&vk, &t, "kbs-b"),
            Err(TokenError::Audience("kbs-b".into()))
        );
    }

    /// A header that names critical extensions is refused (RFC 7515 section 4.1.11), and so is
    /// a header or a claim set with a key twice.
    #[test]
    fn critical_headers_and_duplicate_keys_are_refused() {
        use ed25519_dalek::Signer as _;
        let k = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let sign_raw = |header: &str, claims: &str| {
            let signed = format!("{}.{}", B64.encode(header), B64.encode(claims));
            format!(
                "{signed}.{}",
                B64.encode(k.sign(signed.as_bytes()).to_bytes())
            )
        };
        let claims = format!(
            r#"{{"iat":{},"exp":{},"aud":"{DEFAULT_ADMIN_AUDIENCE}"}}"#,
            now(),
            now() + 60
        );
        let good = sign_raw(r#"{"alg":"EdDSA","typ":"JWT"}"#, &claims);
        assert!(verify_admin(&k.verifying_key(), &good, DEFAULT_ADMIN_AUDIENCE).is_ok());
        let crit = sign_raw(r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#, &claims);
        assert!(matches!(
            verify_admin(&k.verifying_key(), &crit, DEFAULT_ADMIN_AUDIENCE),
            Err(TokenError::Critical(_))
        ));
        let twice = sign_raw(r#"{"alg":"EdDSA","alg":"EdDSA"}"#, &claims);
        assert_eq!(
            verify_admin(&k.verifying_key(), &twice, DEFAULT_ADMIN_AUDIENCE),
            Err(TokenError::Malformed)
        );
        let claims_twice = claims.replacen('{', r#"{"aud":"other","#, 1);
        let t = sign_raw(r#"{"alg":"EdDSA"}"#, &claims_twice);
        assert_eq!(
            verify_admin(&k.verifying_key(), &t, DEFAULT_ADMIN_AUDIENCE),
            Err(TokenError::Malformed)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_tokens_never_panic(t in ".{0,200}") {
            let admin = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
            proptest::prop_assert!(verify_admin(&admin.verifying_key(), &t, DEFAULT_ADMIN_AUDIENCE).is_err());
            let s = es();
            proptest::prop_assert!(Es256::verify(s.public_key(), &t).is_err());
        }
    }
}
