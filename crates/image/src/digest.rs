//! OCI content digests (`sha256:<64 hex>`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated `sha256:<hex>` digest. Other algorithms are refused with a clear error.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OciDigest {
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OciDigestError {
    #[error("digest {0:?} is not of the form sha256:<64 lower-case hex>")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (only sha256)")]
    Algorithm(String),
}

impl OciDigest {
    #[cfg(test)]
    pub(crate) fn sha256_of(data: &[u8]) -> Self {
        OciDigest {
            hex: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data)),
        }
    }

    pub(crate) fn from_sha256(bytes: [u8; 32]) -> Self {
        OciDigest {
            hex: hex::encode(bytes),
        }
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as container tools display image ids.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for OciDigest {
    type Err = OciDigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| OciDigestError::Malformed(s.to_string()))?;
        if alg != "sha256" {
            return Err(OciDigestError::Algorithm(alg.to_string()));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(OciDigestError::Malformed(s.to_string()));
        }
        Ok(OciDigest {
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for OciDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for OciDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl Serialize for OciDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OciDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let d = OciDigest::sha256_of(b"");
        assert_eq!(d.to_string().parse::<OciDigest>(), Ok(d.clone()));
        assert!(matches!(
            "sha512:00".parse::<OciDigest>(),
            Err(OciDigestError::Algorithm(_))
        ));
        assert!(matches!(
            "sha256:../../etc".parse::<OciDigest>(),
            Err(OciDigestError::Malformed(_))
        ));
        assert!(d
            .to_string()
            .to_uppercase()
            .replace("SHA256", "sha256")
            .parse::<OciDigest>()
            .is_err());
    }
}
