//! Containers' "simple signing" with OpenPGP keys, as podman, skopeo and CRI-O use it: a JSON
//! payload (`atomic container signature`) naming the image's manifest digest and reference, in an
//! OpenPGP signed message, kept in a lookaside store beside the registry:
//! `<lookaside>/<repository path>@sha256=<hex>/signature-<n>`. Which lookaside belongs to which
//! registry comes from `registries.d` YAML files (`docker:` per host or namespace, and
//! `default-docker:`).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use pgp::composed::{Deserializable, Message, MessageBuilder, SignedPublicKey, SignedSecretKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::types::{KeyDetails, Password};
use serde::Deserialize;

use crate::digest::OciDigest;

pub(crate) const PAYLOAD_TYPE: &str = "atomic container signature";
/// Signatures read per image, at most.
const MAX_SIGNATURES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SimpleSignError {
    #[error("not an OpenPGP key: {0}")]
    BadKey(String),
    #[error("not an OpenPGP signed message: {0}")]
    BadMessage(String),
    #[error("no trusted key made this signature")]
    NoTrustedKey,
    #[error("cannot read the registries.d configuration {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("lookaside {0} is not supported (file:// and http://; https:// is not yet)")]
    Unsupported(String),
    #[error("cannot read or write the lookaside store at {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Public keys trusted for `signedBy` requirements (an armored export or a binary keyring).
#[derive(Debug, Clone)]
pub struct GpgKeys(Vec<SignedPublicKey>);

impl GpgKeys {
    pub fn parse(bytes: &[u8]) -> Result<Self, SimpleSignError> {
        let bad = |e: pgp::errors::Error| SimpleSignError::BadKey(e.to_string());
        let keys: Vec<SignedPublicKey> = if bytes.starts_with(b"-----BEGIN PGP") {
            let (iter, _) = SignedPublicKey::from_armor_many(Cursor::new(bytes)).map_err(bad)?;
            iter.collect::<Result<_, _>>().map_err(bad)?
        } else {
            SignedPublicKey::from_bytes_many(Cursor::new(bytes))
                .map_err(bad)?
                .collect::<Result<_, _>>()
                .map_err(bad)?
        };
        if keys.is_empty() {
            return Err(SimpleSignError::BadKey("no public key in it".into()));
        }
        Ok(GpgKeys(keys))
    }

    /// Upper-case hex fingerprints of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|k| hex::encode_upper(k.fingerprint().as_bytes()))
            .collect()
    }
}

/// Check an OpenPGP signed message against the trusted keys (primary keys and their subkeys);
/// returns the signed payload and the primary fingerprint of the key that made it.
pub fn verify(signature: &[u8], keys: &GpgKeys) -> Result<(Vec<u8>, String), SimpleSignError> {
    let bad = |e: pgp::errors::Error| SimpleSignError::BadMessage(e.to_string());
    let message = Message::from_bytes(signature).map_err(bad)?;
    let mut message = message.decompress().map_err(bad)?;
    if !matches!(message, Message::Signed { .. }) {
        return Err(SimpleSignError::BadMessage(
            "the message is not signed".into(),
        ));
    }
    let payload = message
        .as_data_vec()
        .map_err(|e| SimpleSignError::BadMessage(e.to_string()))?;
    for key in &keys.0 {
        let fp = hex::encode_upper(key.fingerprint().as_bytes());
        if message.verify(key).is_ok()
            || key
                .public_subkeys
                .iter()
                .any(|sk| message.verify(sk).is_ok())
        {
            return Ok((payload, fp));
        }
    }
    Err(SimpleSignError::NoTrustedKey)
}

/// Sign `payload` with an armored OpenPGP secret key (its primary key).
pub fn sign(
    secret_armored: &[u8],
    passphrase: &str,
    payload: &[u8],
) -> Result<Vec<u8>, SimpleSignError> {
    let (key, _) = SignedSecretKey::from_armor_single(Cursor::new(secret_armored))
        .map_err(|e| SimpleSignError::BadKey(e.to_string()))?;
    let password = if passphrase.is_empty() {
        Password::empty()
    } else {
        Password::from(passphrase)
    };
    let mut builder = MessageBuilder::from_bytes("", payload.to_vec());
    builder.sign(&key.primary_key, password, HashAlgorithm::Sha256);
    builder
        .to_vec(rand::rngs::OsRng)
        .map_err(|e| SimpleSignError::Sign(e.to_string()))
}

/// The payload for `reference` (host/repository:tag) at `digest`.
pub fn payload(reference: &str, digest: &OciDigest) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": PAYLOAD_TYPE,
        },
        "optional": {"creator": concat!("vouch ", env!("CARGO_PKG_VERSION")), "timestamp": vouch_base::clock::unix_secs()},
    }))
    .unwrap_or_default()
}

/// The identity a payload claims, once its type and digest are checked.
pub(crate) fn payload_identity(payload: &[u8], digest: &OciDigest) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    let c = &v["critical"];
    if c["type"] != PAYLOAD_TYPE {
        return Err(format!(
            "payload type is {}, not {PAYLOAD_TYPE:?}",
            c["type"]
        ));
    }
    let found = c["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if found != digest.to_string() {
        return Err(format!("a signature for {found}, not {digest}"));
    }
    Ok(c["identity"]["docker-reference"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// A `registries.d` file. Keys may be present with nothing under them (`docker:` with every
/// entry commented out, as distributions ship it).
#[derive(Debug, Default, Deserialize)]
struct RegistriesFile {
    #[serde(default)]
    docker: Option<BTreeMap<String, Option<Entry>>>,
    #[serde(default, rename = "default-docker")]
    default_docker: Option<Entry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Entry {
    #[serde(default, alias = "sigstore")]
    lookaside: Option<String>,
    #[serde(default, rename = "lookaside-staging", alias = "sigstore-staging")]
    lookaside_staging: Option<String>,
    #[serde(default, rename = "use-sigstore-attachments")]
    _use_sigstore_attachments: Option<bool>,
}

/// Where the signatures of each registry live, from a `registries.d` directory.
#[derive(Debug, Clone, Default)]
pub struct Lookaside {
    docker: BTreeMap<String, Entry>,
    default: Option<Entry>,
}

impl Lookaside {
    /// Read every `*.yaml` file of `dir` (a missing directory configures nothing).
    pub fn load(dir: &Path) -> Result<Self, SimpleSignError> {
        let mut out = Lookaside::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(SimpleSignError::Config {
                    path: dir.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| SimpleSignError::Config {
                path: f.display().to_string(),
                reason: e.to_string(),
            })?;
            let parsed: RegistriesFile =
                serde_yaml::from_str(&text).map_err(|e| SimpleSignError::Config {
                    path: f.display().to_string(),
                    reason: e.to_string(),
                })?;
            for (scope, entry) in parsed.docker.unwrap_or_default() {
                if out
                    .docker
                    .insert(scope.clone(), entry.unwrap_or_default())
                    .is_some()
                {
                    return Err(SimpleSignError::Config {
                        path: f.display().to_string(),
                        reason: format!("scope {scope} is configured twice"),
                    });
                }
            }
            if let Some(d) = parsed.default_docker {
                out.default = Some(d);
            }
        }
        Ok(out)
    }

    /// The entry for `repository` (`host/path`): the longest configured scope that is it or
    /// one of its parents, else `default-docker`.
    fn entry(&self, repository: &str) -> Option<&Entry> {
        let mut cur = repository;
        loop {
            if let Some(e) = self.docker.get(cur) {
                return Some(e);
            }
            match cur.rsplit_once('/') {
                Some((parent, _)) => cur = parent,
                None => return self.default.as_ref(),
            }
        }
    }

    fn dir_of(url: &str) -> Result<PathBuf, SimpleSignError> {
        url.strip_prefix("file://")
            .map(PathBuf::from)
            .ok_or_else(|| SimpleSignError::Unsupported(url.to_string()))
    }

    /// `<dir>/<path>@sha256=<hex>` for `repository` (`host/path`).
    fn signature_dir(base: &Path, repository: &str, digest: &OciDigest) -> PathBuf {
        let path = repository.split_once('/').map_or(repository, |(_, p)| p);
        base.join(format!("{path}@sha256={}", digest.hex()))
    }

    /// The signatures stored for `repository` at `digest` (none when no lookaside applies).
    pub fn signatures(
        &self,
        repository: &str,
        digest: &OciDigest,
    ) -> Result<Vec<Vec<u8>>, SimpleSignError> {
        let Some(url) = self.entry(repository).and_then(|e| e.lookaside.clone()) else {
            return Ok(Vec::new());
        };
        if url.starts_with("http://") {
            let base =
                Self::signature_dir(Path::new(url.trim_end_matches('/')), repository, digest);
            let mut out = Vec::new();
            for n in 1..=MAX_SIGNATURES {
                let u = format!("{}/signature-{n}", base.display());
                match http_get(&u, 1 << 20).map_err(|reason| SimpleSignError::Config {
                    path: u.clone(),
                    reason,
                })? {
                    Some(b) => out.push(b),
                    None => break,
                }
            }
            return Ok(out);
        }
        let dir = Self::signature_dir(&Self::dir_of(&url)?, repository, digest);
        let mut out = Vec::new();
        for n in 1..=MAX_SIGNATURES {
            let p = dir.join(format!("signature-{n}"));
            match std::fs::read(&p) {
                Ok(b) if b.len() <= 1 << 20 => out.push(b),
                Ok(_) => {
                    return Err(SimpleSignError::Io {
                        path: p.display().to_string(),
                        source: std::io::Error::other("a signature larger than 1 MiB"),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(source) => {
                    return Err(SimpleSignError::Io {
                        path: p.display().to_string(),
                        source,
                    })
                }
            }
        }
        Ok(out)
    }

    /// Store a signature for `repository` at `digest` (in `lookaside-staging` when configured,
    /// else `lookaside`), after those already there. Returns the file written.
    pub fn store(
        &self,
        repository: &str,
        digest: &OciDigest,
        signature: &[u8],
    ) -> Result<PathBuf, SimpleSignError> {
        let entry = self
            .entry(repository)
            .ok_or_else(|| SimpleSignError::Config {
                path: "registries.d".into(),
                reason: format!("no lookaside is configured for {repository}"),
            })?;
        let url = entry
            .lookaside_staging
            .clone()
            .or_else(|| entry.lookaside.clone())
            .ok_or_else(|| SimpleSignError::Config {
                path: "registries.d".into(),
                reason: format!("no lookaside is configured for {repository}"),
            })?;
        let dir = Self::signature_dir(&Self::dir_of(&url)?, repository, digest);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| SimpleSignError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for n in 1..=MAX_SIGNATURES {
            let p = dir.join(format!("signature-{n}"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
            {
                Ok(mut f) => {
                    std::io::Write::write_all(&mut f, signature).map_err(io(&p))?;
                    return Ok(p);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&p)(e)),
            }
        }
        Err(SimpleSignError::Config {
            path: dir.display().to_string(),
            reason: format!("already {MAX_SIGNATURES} signatures"),
        })
    }
}

/// `GET http://HOST[:PORT]/PATH` with a time limit and a size limit: `Ok(None)` for 404.
/// Only plain HTTP (lookaside stores and reference documents on a trusted network; their content
/// is signed, so the transport need not be trusted).
pub fn http_get(url: &str, limit: u64) -> Result<Option<Vec<u8>>, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let sock = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    let timeout = std::time::Duration::from_secs(30);
    let stream =
        std::net::TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("{url}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let resp = vouch_api::client::exchange(stream, host, "GET", path, &[], None)
        .map_err(|e| format!("{url}: {e}"))?;
    let (status, body) =
        vouch_api::client::read_body_limited(resp, limit).map_err(|e| format!("{url}: {e}"))?;
    match status {
        200 => Ok(Some(body)),
        404 => Ok(None),
        other => Err(format!("{url}: HTTP {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_d_files_as_distributions_ship_them() {
        let dir = tempfile::tempdir().expect("tmp");
        // Every entry commented out, an entry with nothing under it, the old key names.
        std::fs::write(
            dir.path().join("default.yaml"),
            "docker:\n#  registry.example.com:\n#    lookaside: https://example.com/sigstore\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("more.yaml"),
            "docker:\n  empty.example:\n  r.example/team:\n    sigstore: file:///var/sigs\ndefault-docker:\n  lookaside: file:///var/default\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("ignored.txt"), "not: [yaml").expect("write");
        let l = Lookaside::load(dir.path()).expect("load");
        let d = OciDigest::from_sha256([5u8; 32]);
        assert_eq!(
            l.entry("r.example/team/app")
                .and_then(|e| e.lookaside.clone())
                .as_deref(),
            Some("file:///var/sigs")
        );
        assert_eq!(
            l.entry("other.example/x")
                .and_then(|e| e.lookaside.clone())
                .as_deref(),
            Some("file:///var/default")
        );
        assert_eq!(
            Lookaside::signature_dir(Path::new("/var/sigs"), "r.example/team/app", &d),
            PathBuf::from(format!("/var/sigs/team/app@sha256={}", d.hex()))
        );
        assert!(l
            .signatures("r.example/team/app", &d)
            .expect("none")
            .is_empty());
        assert!(Lookaside::load(Path::new("/nonexistent")).is_ok());
        std::fs::write(dir.path().join("bad.yaml"), "docker: [1, 2").expect("write");
        assert!(Lookaside::load(dir.path()).is_err());
    }
}
