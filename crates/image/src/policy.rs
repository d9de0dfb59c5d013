//! Image policy, in the format of containers' `policy.json` (what podman, skopeo and CRI-O read):
//! a `default` list of requirements and per-transport scopes. Every requirement in the list that
//! applies must be satisfied. Supported requirements: `insecureAcceptAnything`, `reject`,
//! `sigstoreSigned` with `keyPath` or `keyData` (cosign key-based signatures attached in the
//! registry), `signedBy` with `keyType: GPGKeys` (OpenPGP simple signing, signatures in the
//! lookaside store `registries.d` names), and vouch's own `vouchGoldenValue` (a launch needs a
//! matching signed golden value). Anything else is refused when the policy is loaded.
//!
//! Scopes for the `docker` transport are looked up from the most specific: `host/repo:tag`,
//! `host/repo`, then each parent namespace, then `host`; the `default` list applies otherwise.
//! Images loaded from an OCI layout use the `oci` transport's `""` scope, or `default`.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use p256::ecdsa::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::cosign;
use crate::digest::OciDigest;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the image policy {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the image policy is invalid: {0}")]
    Invalid(String),
    #[error("image policy (scope {scope}) rejects {image}")]
    Rejected { scope: String, image: String },
    #[error("image policy (scope {scope}) requires a signature by {keys}; {image} has {detail}")]
    Unsigned {
        scope: String,
        image: String,
        keys: String,
        detail: String,
    },
    #[error("cannot fetch the signatures of {image}: {reason}")]
    Fetch { image: String, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
enum RawRequirement {
    #[serde(rename = "insecureAcceptAnything")]
    Accept,
    #[serde(rename = "reject")]
    Reject,
    /// vouch's own: a launch of an image in this scope needs a signed golden value that matches.
    #[serde(rename = "vouchGoldenValue")]
    GoldenValue,
    #[serde(rename = "sigstoreSigned", rename_all = "camelCase")]
    SigstoreSigned {
        key_path: Option<String>,
        key_data: Option<String>,
        #[serde(default)]
        signed_identity: Option<serde_json::Value>,
    },
    #[serde(rename = "signedBy", rename_all = "camelCase")]
    SignedBy {
        #[serde(default)]
        key_type: Option<String>,
        key_path: Option<String>,
        key_data: Option<String>,
        #[serde(default)]
        signed_identity: Option<serde_json::Value>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Vec<RawRequirement>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<RawRequirement>>>,
}

#[derive(Debug, Clone)]
enum Requirement {
    Accept,
    Reject,
    GoldenValue,
    Signed {
        keys: Vec<(String, VerifyingKey)>,
        /// `matchRepository`; otherwise `matchRepoDigestOrExact` (the default).
        match_repository: bool,
    },
    GpgSigned {
        keys: crate::simplesign::GpgKeys,
        match_repository: bool,
    },
}

/// Where a requirement finds an image's signatures; each is asked only when needed.
pub struct SignatureSources<'a> {
    /// Cosign signatures attached in the registry: (payload, base64 signature).
    pub cosign: &'a dyn Fn() -> Result<Signatures, crate::layout::LoadError>,
    /// OpenPGP simple signatures from the lookaside store.
    pub simple: &'a dyn Fn() -> Result<Vec<Vec<u8>>, crate::layout::LoadError>,
}

/// Split a signed identity into (repository, tag, digest).
fn split_identity(id: &str) -> (&str, Option<&str>, Option<&str>) {
    if let Some((repo, digest)) = id.split_once('@') {
        return (repo, None, Some(digest));
    }
    let last_slash = id.rfind('/').map_or(0, |i| i + 1);
    match id[last_slash..].find(':') {
        Some(i) => (&id[..last_slash + i], Some(&id[last_slash + i + 1..]), None),
        None => (id, None, None),
    }
}

/// Whether a signature's identity matches the image (containers' identity rules).
fn identity_matches(
    identity: &str,
    repository: &str,
    reference: &str,
    digest: &OciDigest,
    match_repository: bool,
) -> bool {
    let (repo, tag, signed_digest) = split_identity(identity);
    if repo != repository {
        return false;
    }
    if match_repository {
        return true;
    }
    match (tag, signed_digest) {
        (Some(_), _) => identity == reference,
        (None, Some(d)) => d == digest.to_string(),
        (None, None) => true,
    }
}

/// What a policy decided for an image, kept with it and measured when it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// The scope whose requirements applied (`default` when none matched).
    pub scope: String,
    /// The requirement types that were satisfied.
    pub requirements: Vec<String>,
    /// Fingerprint of the key whose signature satisfied a signature requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// A launch needs a matching signed golden value (`vouchGoldenValue`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub golden_required: bool,
}

#[derive(Debug, Clone)]
pub struct ImagePolicy {
    default: Vec<Requirement>,
    docker: BTreeMap<String, Vec<Requirement>>,
    oci: Option<Vec<Requirement>>,
    /// SHA-256 of the policy file, to name it in measurements.
    pub digest: String,
}

type Signatures = Vec<(Vec<u8>, String)>;

impl ImagePolicy {
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path.parent().unwrap_or(Path::new("/")))
    }

    /// Parse a policy; relative `keyPath`s are taken from `base`.
    pub fn parse(text: &[u8], base: &Path) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            serde_json::from_slice(text).map_err(|e| PolicyError::Invalid(e.to_string()))?;
        let convert = |list: &[RawRequirement]| -> Result<Vec<Requirement>, PolicyError> {
            if list.is_empty() {
                return Err(PolicyError::Invalid(
                    "an empty requirement list is not allowed (use insecureAcceptAnything)".into(),
                ));
            }
            list.iter().map(|r| requirement(r, base)).collect()
        };
        let mut docker = BTreeMap::new();
        let mut oci = None;
        for (transport, scopes) in &raw.transports {
            for (scope, list) in scopes {
                let reqs = convert(list)?;
                match transport.as_str() {
                    "docker" => {
                        docker.insert(scope.clone(), reqs);
                    }
                    "oci" | "oci-archive" if scope.is_empty() => oci = Some(reqs),
                    other => {
                        return Err(PolicyError::Invalid(format!(
                            "transport {other:?} scope {scope:?} is not supported (docker scopes, and oci with scope \"\")"
                        )))
                    }
                }
            }
        }
        Ok(ImagePolicy {
            default: convert(&raw.default)?,
            docker,
            oci,
            digest: format!(
                "sha256:{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text))
            ),
        })
    }

    /// The requirements for `reference` (`host/repo[:tag|@digest]`, `repository` = `host/repo`).
    fn scope_for(&self, repository: &str, reference: &str) -> (String, &[Requirement]) {
        let mut candidates = vec![reference.to_string()];
        let mut cur = repository.to_string();
        loop {
            candidates.push(cur.clone());
            match cur.rsplit_once('/') {
                Some((parent, _)) => cur = parent.to_string(),
                None => break,
            }
        }
        for c in candidates {
            if let Some(r) = self.docker.get(&c) {
                return (c, r);
            }
        }
        ("default".into(), &self.default)
    }

    /// Decide for an image from a registry. `signatures` fetches its cosign signatures, only
    /// when a requirement needs them.
    pub fn check(
        &self,
        repository: &str,
        reference: &str,
        digest: &OciDigest,
        sources: &SignatureSources<'_>,
    ) -> Result<Verification, PolicyError> {
        let signatures = sources.cosign;
        let (scope, reqs) = self.scope_for(repository, reference);
        let mut verification = Verification {
            scope: scope.clone(),
            requirements: Vec::new(),
            signer: None,
            golden_required: false,
        };
        for r in reqs {
            match r {
                Requirement::GoldenValue => {
                    verification.requirements.push("vouchGoldenValue".into());
                    verification.golden_required = true;
                }
                Requirement::Accept => verification
                    .requirements
                    .push("insecureAcceptAnything".into()),
                Requirement::Reject => {
                    return Err(PolicyError::Rejected {
                        scope,
                        image: reference.into(),
                    })
                }
                Requirement::GpgSigned {
                    keys,
                    match_repository,
                } => {
                    let sigs = (sources.simple)().map_err(|e| PolicyError::Fetch {
                        image: reference.into(),
                        reason: e.to_string(),
                    })?;
                    let mut reasons = Vec::new();
                    let mut found = None;
                    for sig in &sigs {
                        match crate::simplesign::verify(sig, keys) {
                            Ok((payload, fp)) => {
                                match crate::simplesign::payload_identity(&payload, digest) {
                                    Ok(identity)
                                        if identity_matches(
                                            &identity,
                                            repository,
                                            reference,
                                            digest,
                                            *match_repository,
                                        ) =>
                                    {
                                        found = Some(fp);
                                        break;
                                    }
                                    Ok(identity) => {
                                        reasons.push(format!("a signature for {identity}"))
                                    }
                                    Err(e) => reasons.push(e),
                                }
                            }
                            Err(e) => reasons.push(e.to_string()),
                        }
                    }
                    match found {
                        Some(fp) => {
                            verification.requirements.push("signedBy".into());
                            verification.signer = Some(format!("openpgp:{fp}"));
                        }
                        None => {
                            reasons.sort();
                            reasons.dedup();
                            return Err(PolicyError::Unsigned {
                                scope,
                                image: reference.into(),
                                keys: keys.fingerprints().join(", "),
                                detail: if sigs.is_empty() {
                                    "no signature in the lookaside store".into()
                                } else {
                                    format!(
                                        "{} signature(s), none valid: {}",
                                        sigs.len(),
                                        reasons.join("; ")
                                    )
                                },
                            });
                        }
                    }
                }
                Requirement::Signed {
                    keys,
                    match_repository,
                } => {
                    let sigs = signatures().map_err(|e| PolicyError::Fetch {
                        image: reference.into(),
                        reason: e.to_string(),
                    })?;
                    let mut reasons = Vec::new();
                    let found = sigs.iter().find_map(|(payload, sig)| {
                        keys.iter().find_map(|(fp, key)| {
                            match cosign::verify(key, payload, sig, digest) {
                                Ok(identity)
                                    if identity_matches(
                                        &identity,
                                        repository,
                                        reference,
                                        digest,
                                        *match_repository,
                                    ) =>
                                {
                                    Some(fp.clone())
                                }
                                Ok(identity) => {
                                    reasons.push(format!("a signature for {identity}"));
                                    None
                                }
                                Err(e) => {
                                    reasons.push(e.to_string());
                                    None
                                }
                            }
                        })
                    });
                    match found {
                        Some(fp) => {
                            verification.requirements.push("sigstoreSigned".into());
                            verification.signer = Some(fp);
                        }
                        None => {
                            reasons.sort();
                            reasons.dedup();
                            return Err(PolicyError::Unsigned {
                                scope,
                                image: reference.into(),
                                keys: keys
                                    .iter()
                                    .map(|(f, _)| f.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                detail: if sigs.is_empty() {
                                    "no signature attached".into()
                                } else {
                                    format!(
                                        "{} signature(s), none valid: {}",
                                        sigs.len(),
                                        reasons.join("; ")
                                    )
                                },
                            });
                        }
                    }
                }
            }
        }
        Ok(verification)
    }

    /// Decide for an image loaded from an OCI layout (no signatures travel with it).
    pub fn check_local(&self, name: &str) -> Result<Verification, PolicyError> {
        let (scope, reqs) = match &self.oci {
            Some(r) => ("oci".to_string(), r.as_slice()),
            None => ("default".to_string(), self.default.as_slice()),
        };
        let none = || -> Result<Signatures, crate::layout::LoadError> { Ok(Vec::new()) };
        let none_simple = || -> Result<Vec<Vec<u8>>, crate::layout::LoadError> { Ok(Vec::new()) };
        let unsigned = OciDigest::from_sha256([0u8; 32]);
        let mut v = ImagePolicy {
            default: reqs.to_vec(),
            docker: BTreeMap::new(),
            oci: None,
            digest: self.digest.clone(),
        }
        .check(
            name,
            name,
            &unsigned,
            &SignatureSources {
                cosign: &none,
                simple: &none_simple,
            },
        )
        .map_err(|e| match e {
            PolicyError::Unsigned { scope, image, keys, .. } => PolicyError::Unsigned {
                scope,
                image,
                keys,
                detail: "no signatures: images loaded from a layout carry none (pull it from a registry)".into(),
            },
            other => other,
        })?;
        v.scope = scope;
        Ok(v)
    }
}

/// Whether a `signedIdentity` asks for `matchRepository` (else `matchRepoDigestOrExact`).
fn identity_kind(id: Option<&serde_json::Value>) -> Result<bool, PolicyError> {
    let Some(id) = id else { return Ok(false) };
    match id.get("type").and_then(|t| t.as_str()).unwrap_or("") {
        "matchRepository" => Ok(true),
        "matchRepoDigestOrExact" => Ok(false),
        kind => Err(PolicyError::Invalid(format!(
            "signedIdentity {kind:?} is not supported (matchRepository, matchRepoDigestOrExact)"
        ))),
    }
}

fn requirement(r: &RawRequirement, base: &Path) -> Result<Requirement, PolicyError> {
    Ok(match r {
        RawRequirement::Accept => Requirement::Accept,
        RawRequirement::Reject => Requirement::Reject,
        RawRequirement::GoldenValue => Requirement::GoldenValue,
        RawRequirement::SignedBy {
            key_type,
            key_path,
            key_data,
            signed_identity,
        } => {
            if key_type.as_deref() != Some("GPGKeys") {
                return Err(PolicyError::Invalid(format!(
                    "signedBy keyType {:?} is not supported (GPGKeys)",
                    key_type.as_deref().unwrap_or("")
                )));
            }
            let bytes = match (key_path, key_data) {
                (Some(p), None) => {
                    let path = base.join(p);
                    std::fs::read(&path).map_err(|source| PolicyError::Read {
                        path: path.display().to_string(),
                        source,
                    })?
                }
                (None, Some(d)) => base64::engine::general_purpose::STANDARD
                    .decode(d)
                    .map_err(|_| PolicyError::Invalid("keyData is not base64".into()))?,
                _ => {
                    return Err(PolicyError::Invalid(
                        "signedBy needs exactly one of keyPath and keyData".into(),
                    ))
                }
            };
            Requirement::GpgSigned {
                keys: crate::simplesign::GpgKeys::parse(&bytes)
                    .map_err(|e| PolicyError::Invalid(e.to_string()))?,
                match_repository: identity_kind(signed_identity.as_ref())?,
            }
        }
        RawRequirement::SigstoreSigned {
            key_path,
            key_data,
            signed_identity,
        } => {
            let match_repository = identity_kind(signed_identity.as_ref())?;
            let pem = match (key_path, key_data) {
                (Some(p), None) => {
                    let path = base.join(p);
                    std::fs::read_to_string(&path).map_err(|source| PolicyError::Read {
                        path: path.display().to_string(),
                        source,
                    })?
                }
                (None, Some(d)) => String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(d)
                        .map_err(|_| PolicyError::Invalid("keyData is not base64".into()))?,
                )
                .map_err(|_| PolicyError::Invalid("keyData is not a PEM key".into()))?,
                _ => {
                    return Err(PolicyError::Invalid(
                        "sigstoreSigned needs exactly one of keyPath and keyData".into(),
                    ))
                }
            };
            let key =
                cosign::parse_public(&pem).map_err(|e| PolicyError::Invalid(e.to_string()))?;
            Requirement::Signed {
                keys: vec![(cosign::fingerprint(&key), key)],
                match_repository,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_identities_match_as_containers_policy_says() {
        let d = OciDigest::from_sha256([7u8; 32]);
        let (repo, reference) = ("h:5000/team/app", "h:5000/team/app:1");
        assert!(identity_matches(
            "h:5000/team/app",
            repo,
            reference,
            &d,
            false
        ));
        assert!(identity_matches(
            "h:5000/team/app:1",
            repo,
            reference,
            &d,
            false
        ));
        assert!(!identity_matches(
            "h:5000/team/app:2",
            repo,
            reference,
            &d,
            false
        ));
        assert!(identity_matches(
            "h:5000/team/app:2",
            repo,
            reference,
            &d,
            true
        ));
        assert!(identity_matches(
            &format!("h:5000/team/app@{d}"),
            repo,
            reference,
            &d,
            false
        ));
        let other = OciDigest::from_sha256([8u8; 32]);
        assert!(!identity_matches(
            &format!("h:5000/team/app@{other}"),
            repo,
            reference,
            &d,
            false
        ));
        assert!(!identity_matches(
            "h:5000/team/other",
            repo,
            reference,
            &d,
            true
        ));
        assert!(!identity_matches("h:5000", repo, reference, &d, true));
    }

    #[test]
    fn scopes_from_most_specific_and_unsupported_requirements_refused() {
        let (_, public) = cosign::generate(b"p").expect("key");
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("k.pub"), &public).expect("write");
        let policy = br#"{
            "default": [{"type": "reject"}],
            "transports": {"docker": {
                "r.example/team": [{"type": "sigstoreSigned", "keyPath": "k.pub"}],
                "r.example/team/open": [{"type": "insecureAcceptAnything"}]
            }}
        }"#;
        let p = ImagePolicy::parse(policy, dir.path()).expect("parse");
        let digest = OciDigest::from_sha256([1u8; 32]);
        let none_cosign = || -> Result<Signatures, crate::layout::LoadError> { Ok(Vec::new()) };
        let none_simple = || -> Result<Vec<Vec<u8>>, crate::layout::LoadError> { Ok(Vec::new()) };
        let none = SignatureSources {
            cosign: &none_cosign,
            simple: &none_simple,
        };
        let v = p
            .check(
                "r.example/team/open",
                "r.example/team/open:1",
                &digest,
                &none,
            )
            .expect("open");
        assert_eq!(v.scope, "r.example/team/open");
        let err = p
            .check("r.example/team/app", "r.example/team/app:1", &digest, &none)
            .expect_err("unsigned");
        assert!(err.to_string().contains("no signature attached"), "{err}");
        assert!(matches!(
            p.check("other.example/x", "other.example/x:1", &digest, &none),
            Err(PolicyError::Rejected { .. })
        ));
        assert!(matches!(
            p.check_local("bb"),
            Err(PolicyError::Rejected { .. })
        ));
        for bad in [
            &br#"{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/nonexistent.gpg"}]}"#[..],
            br#"{"default": [{"type": "signedBy", "keyType": "X509Certificates", "keyPath": "/k"}]}"#,
            br#"{"default": []}"#,
            br#"{"default": [{"type": "sigstoreSigned"}]}"#,
            br#"{"default": [{"type": "insecureAcceptAnything"}], "extra": 1}"#,
            br#"{"default": [{"type": "insecureAcceptAnything"}], "transports": {"dir": {"": [{"type": "reject"}]}}}"#,
        ] {
            assert!(ImagePolicy::parse(bad, dir.path()).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
