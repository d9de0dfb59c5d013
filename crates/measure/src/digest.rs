//! SHA-384 digests, the unit of every register and record in vouch.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha384};

/// A SHA-384 digest, shown and serialized as 96 lower-case hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest384(pub [u8; 48]);

impl Digest384 {
    /// The all-zero value registers start from.
    pub const ZERO: Digest384 = Digest384([0u8; 48]);

    pub fn as_bytes(&self) -> &[u8; 48] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `SHA-384(self || digest)`: the extend operation of TDX RTMRs, TPM PCRs and the sim registers.
    pub fn extend(&self, digest: &Digest384) -> Digest384 {
        let mut h = Sha384::new();
        h.update(self.0);
        h.update(digest.0);
        Digest384(h.finalize().into())
    }
}

/// SHA-384 of a byte string.
pub fn sha384(data: &[u8]) -> Digest384 {
    Digest384(Sha384::digest(data).into())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestParseError {
    #[error("expected 96 hex characters for a SHA-384 digest, got {0}")]
    Length(usize),
    #[error("digest is not lower-case hexadecimal")]
    NotHex,
}

impl FromStr for Digest384 {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 96 {
            return Err(DigestParseError::Length(s.len()));
        }
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(DigestParseError::NotHex);
        }
        let mut out = [0u8; 48];
        hex::decode_to_slice(s, &mut out).map_err(|_| DigestParseError::NotHex)?;
        Ok(Digest384(out))
    }
}

impl fmt::Display for Digest384 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest384 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest384({})", self.to_hex())
    }
}

impl Serialize for Digest384 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest384 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha384_known_answer() {
        assert_eq!(
            sha384(b"abc").to_hex(),
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
        );
    }

    #[test]
    fn extend_is_hash_of_concatenation() {
        let a = sha384(b"a");
        let mut both = Vec::new();
        both.extend_from_slice(&Digest384::ZERO.0);
        both.extend_from_slice(&a.0);
        assert_eq!(Digest384::ZERO.extend(&a), sha384(&both));
    }

    #[test]
    fn parse_round_trip_and_errors() {
        let d = sha384(b"x");
        assert_eq!(d.to_hex().parse::<Digest384>(), Ok(d));
        assert_eq!("ab".parse::<Digest384>(), Err(DigestParseError::Length(2)));
        assert_eq!(
            "zz".repeat(48).parse::<Digest384>(),
            Err(DigestParseError::NotHex)
        );
        // One encoding per value: upper case is refused.
        assert_eq!(
            d.to_hex().to_uppercase().parse::<Digest384>(),
            Err(DigestParseError::NotHex)
        );
    }
}
