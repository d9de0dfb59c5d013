//! Golden values: a signed reference document per image digest saying what the image is (manifest
//! and config digests, layer diff ids) and how it may run (entrypoint and command, whether other
//! arguments are allowed, which environment variables may be set). vouchd compares a launch with
//! it before anything runs and measures the document's digest.
//!
//! A document is signed with a cosign key (ECDSA P-256) and travels as a small JSON envelope: in a
//! file, or attached to the image in its registry under the tag `sha256-<hex>.rv`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::OciDigest;
use crate::store::ImageRecord;

pub(crate) const SCHEMA: &str = "vouch.golden.v1";
pub(crate) const MEDIA_TYPE: &str = "application/vnd.vouch.golden.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error("golden value document is malformed: {0}")]
    Malformed(String),
    #[error("golden value document is signed by {0}, which is not a trusted golden-value key")]
    UntrustedKey(String),
    #[error("golden value document's signature does not verify")]
    BadSignature,
}

/// The reference document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Golden {
    pub schema: String,
    /// `registry/repository` the document speaks for (informational).
    pub image: String,
    pub manifest_digest: OciDigest,
    pub config_digest: OciDigest,
    /// Layer diff ids, in order.
    pub layers: Vec<OciDigest>,
    /// The program the container must run: its arguments start with these.
    pub entrypoint: Vec<String>,
    /// The default arguments after the entrypoint.
    pub cmd: Vec<String>,
    /// Whether arguments other than `cmd` may follow the entrypoint.
    #[serde(default)]
    pub allow_args: bool,
    /// Environment variable names a container may have (beyond none at all).
    pub env_keys: Vec<String>,
    /// The measured digest of the container's whole runtime spec (`config_digest` of its
    /// `container.create` record): when set, a launch must have exactly this spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_digest: Option<String>,
    /// The measured projection of that spec (`vouch golden create --spec-from`), so that a
    /// verifier can read what the digest pins and recompute it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
}

/// A signed document: the exact bytes signed travel with the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedGolden {
    /// The document's JSON, base64.
    pub payload: String,
    /// ECDSA P-256/SHA-256 over the payload bytes, DER, base64.
    pub signature: String,
    /// Fingerprint of the signing key (`sha256:` of its SubjectPublicKeyInfo).
    pub key: String,
}

impl Golden {
    /// A document for an image as the store knows it; `env_keys` defaults to the image's own.
    pub fn for_image(image: &str, record: &ImageRecord, allow_args: bool) -> Golden {
        let mut env_keys: Vec<String> = record
            .defaults
            .env
            .iter()
            .filter_map(|e| e.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        // vouch sets PATH when the image does not.
        env_keys.push("PATH".into());
        env_keys.sort();
        env_keys.dedup();
        Golden {
            schema: SCHEMA.into(),
            image: image.into(),
            manifest_digest: record.manifest_digest.clone(),
            config_digest: record.config_digest.clone(),
            layers: record.layers.iter().map(|l| l.diff_id.clone()).collect(),
            entrypoint: record.defaults.entrypoint.clone(),
            cmd: record.defaults.cmd.clone(),
            allow_args,
            env_keys,
            spec_digest: None,
            spec: None,
        }
    }

    /// Pin the runtime spec: its measured projection, and the digest recomputed from it.
    pub fn pin_spec(&mut self, projection: serde_json::Value) -> Result<(), GoldenError> {
        let digest = vouch_measure::canonical_sha384(&projection)
            .map_err(|e| GoldenError::Malformed(format!("spec: {e}")))?;
        self.spec_digest = Some(digest);
        self.spec = Some(projection);
        Ok(())
    }

    /// The runtime spec digest the document pins, recomputed from its `spec` when it has one
    /// (which must then agree with its `spec_digest`).
    pub fn pinned_spec_digest(&self) -> Result<Option<String>, GoldenError> {
        let stated = match &self.spec_digest {
            Some(d) => {
                let hex = d.strip_prefix("sha384:").unwrap_or_default();
                if hex.parse::<vouch_measure::Digest384>().is_err() {
                    return Err(GoldenError::Malformed(format!(
                        "spec_digest {d:?} is not sha384: and 96 lowercase hex digits"
                    )));
                }
                Some(d.clone())
            }
            None => None,
        };
        let Some(spec) = &self.spec else {
            return Ok(stated);
        };
        let computed = vouch_measure::canonical_sha384(spec)
            .map_err(|e| GoldenError::Malformed(format!("spec: {e}")))?;
        match stated {
            Some(d) if d != computed => Err(GoldenError::Malformed(format!(
                "its spec has digest {computed}, not its spec_digest {d}"
            ))),
            _ => Ok(Some(computed)),
        }
    }

    /// What differs between the pinned runtime spec and a launch's (its `digest`, and its
    /// `projection` to say where they differ when the document has one to compare with).
    pub fn spec_differences(&self, digest: &str, projection: &serde_json::Value) -> Vec<String> {
        let expected = match self.pinned_spec_digest() {
            Ok(Some(d)) => d,
            Ok(None) => return Vec::new(),
            Err(e) => return vec![e.to_string()],
        };
        if expected == digest {
            return Vec::new();
        }
        let mut msg =
            format!("the runtime spec digest is {digest}, the golden value says {expected}");
        if let Some(want) = &self.spec {
            if let Some(at) = first_difference(want, projection, String::new()) {
                msg.push_str(&format!(" (they differ first at {at})"));
            }
        }
        vec![msg]
    }

    pub fn sign(&self, key: &SigningKey) -> SignedGolden {
        let payload = serde_json::to_vec(self).unwrap_or_default();
        let sig: Signature = key.sign(&payload);
        SignedGolden {
            payload: B64.encode(&payload),
            signature: B64.encode(sig.to_der().as_bytes()),
            key: crate::cosign::fingerprint(key.verifying_key()),
        }
    }

    /// What differs between this document and a launch of `image` with `args` and `env`.
    pub fn differences(&self, image: &ImageRecord, args: &[String], env: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        if self.manifest_digest != image.manifest_digest {
            out.push(format!(
                "manifest digest is {}, the golden value says {}",
                image.manifest_digest, self.manifest_digest
            ));
        }
        if self.config_digest != image.config_digest {
            out.push(format!(
                "config digest is {}, the golden value says {}",
                image.config_digest, self.config_digest
            ));
        }
        let layers: Vec<&OciDigest> = image.layers.iter().map(|l| &l.diff_id).collect();
        if layers != self.layers.iter().collect::<Vec<_>>() {
            out.push(format!(
                "layers are {} diff ids that differ from the golden value's {}",
                layers.len(),
                self.layers.len()
            ));
        }
        if !args.starts_with(&self.entrypoint) {
            out.push(format!(
                "the command {args:?} does not start with the entrypoint {:?}",
                self.entrypoint
            ));
        } else if !self.allow_args && args[self.entrypoint.len()..] != self.cmd[..] {
            out.push(format!(
                "the arguments {:?} are not the golden value's {:?}",
                &args[self.entrypoint.len()..],
                self.cmd
            ));
        }
        for e in env {
            let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
            if !self.env_keys.iter().any(|k| k == key) {
                out.push(format!("environment variable {key} is not allowed"));
            }
        }
        out
    }
}

impl SignedGolden {
    /// SHA-256 of the envelope's canonical form, as measured.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    /// Check the signature against the trusted keys and return the document.
    pub fn open(&self, trusted: &[VerifyingKey]) -> Result<Golden, GoldenError> {
        let key = trusted
            .iter()
            .find(|k| crate::cosign::fingerprint(k) == self.key)
            .ok_or_else(|| GoldenError::UntrustedKey(self.key.clone()))?;
        let payload = B64
            .decode(&self.payload)
            .map_err(|_| GoldenError::Malformed("payload is not base64".into()))?;
        let sig = B64
            .decode(&self.signature)
            .ok()
            .and_then(|s| Signature::from_der(&s).ok())
            .ok_or_else(|| {
                GoldenError::Malformed("signature is not a DER ECDSA signature".into())
            })?;
        key.verify(&payload, &sig)
            .map_err(|_| GoldenError::BadSignature)?;
        let doc: Golden =
            serde_json::from_slice(&payload).map_err(|e| GoldenError::Malformed(e.to_string()))?;
        if doc.schema != SCHEMA {
            return Err(GoldenError::Malformed(format!(
                "schema {:?} is not {SCHEMA}",
                doc.schema
            )));
        }
        doc.pinned_spec_digest()?;
        Ok(doc)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, GoldenError> {
        serde_json::from_slice(bytes).map_err(|e| GoldenError::Malformed(e.to_string()))
    }
}

/// The JSON pointer of the first place where two values differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => first_difference(p, q, here),
                    _ => Some(here),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) => (0..x.len().max(y.len())).find_map(|i| {
            let here = format!("{at}/{i}");
            match (x.get(i), y.get(i)) {
                (Some(p), Some(q)) => first_difference(p, q, here),
                _ => Some(here),
            }
        }),
        _ if a == b => None,
        _ => Some(if at.is_empty() { "/".into() } else { at }),
    }
}

/// The tag a golden value for `digest` is attached under.
pub fn tag(digest: &OciDigest) -> String {
    format!("sha256-{}.rv", digest.hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LayerRecord, RuntimeDefaults};

    fn record() -> ImageRecord {
        ImageRecord {
            names: vec!["r/app:1".into()],
            manifest_digest: OciDigest::from_sha256([1; 32]),
            config_digest: OciDigest::from_sha256([2; 32]),
            layers: vec![LayerRecord {
                digest: OciDigest::from_sha256([3; 32]),
                diff_id: OciDigest::from_sha256([4; 32]),
                size: 1,
                compression: crate::oci::Compression::Gzip,
            }],
            defaults: RuntimeDefaults {
                entrypoint: vec!["/app".into()],
                cmd: vec!["serve".into()],
                env: vec!["PATH=/bin".into()],
                working_dir: String::new(),
                user: String::new(),
                exec: None,
            },
            size: 1,
            loaded_at: "0".into(),
            verification: None,
            golden: None,
        }
    }

    #[test]
    fn signed_documents_open_with_their_key_and_name_every_difference() {
        let (private, public) = crate::cosign::generate(b"p").expect("key");
        let sk = crate::cosign::decrypt_private(&private, b"p").expect("sk");
        let vk = crate::cosign::parse_public(&public).expect("vk");
        let rec = record();
        let signed = Golden::for_image("r/app", &rec, false).sign(&sk);
        let g = signed.open(&[vk]).expect("open");
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(g
            .differences(&rec, &args(&["/app", "serve"]), &args(&["PATH=/bin"]))
            .is_empty());
        let d = g.differences(&rec, &args(&["/bin/sh"]), &args(&["SECRET=x"]));
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].contains("entrypoint") && d[1].contains("SECRET"),
            "{d:?}"
        );
        assert_eq!(g.differences(&rec, &args(&["/app", "debug"]), &[]).len(), 1);
        let mut other = rec.clone();
        other.config_digest = OciDigest::from_sha256([9; 32]);
        assert!(g.differences(&other, &args(&["/app", "serve"]), &[])[0].contains("config digest"));
        // Another key, a changed payload: refused.
        let (_, public2) = crate::cosign::generate(b"q").expect("key");
        let vk2 = crate::cosign::parse_public(&public2).expect("vk");
        assert!(matches!(
            signed.open(&[vk2]),
            Err(GoldenError::UntrustedKey(_))
        ));
        let mut tampered = signed.clone();
        let mut doc = g.clone();
        doc.allow_args = true;
        tampered.payload = B64.encode(serde_json::to_vec(&doc).expect("json"));
        assert!(matches!(
            tampered.open(&[vk]),
            Err(GoldenError::BadSignature)
        ));
    }
}
