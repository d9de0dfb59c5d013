//! Pulling images from OCI Distribution registries (through `oci-client`).
//!
//! The top-level manifest is fetched by tag or digest, hashed here (a registry's word for the
//! digest is not taken), and stored; an index is resolved to its linux/amd64 image; config and
//! layers stream into the content store, where size and digest are checked while writing and a
//! blob appears under its name only once complete and verified. Blobs already in the store are
//! not fetched again, so layers are shared by digest across images and a pull that failed part
//! way continues where it stopped. Nothing is buffered whole: memory stays bounded by the chunk
//! size whatever the layer size.

use std::io::{self, Read};

use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

use crate::digest::OciDigest;
use crate::layout::{load_manifest, BlobSource, LoadError};
use crate::oci::{self, Descriptor};
use crate::store::{ContentStore, ImageRecord, MAX_DOCUMENT};

/// Largest layer accepted from a registry.
const MAX_BLOB: u64 = 16 << 30;

const ACCEPTED: &[&str] = &[
    oci::MEDIA_MANIFEST,
    oci::MEDIA_INDEX,
    oci::MEDIA_DOCKER_MANIFEST,
    oci::MEDIA_DOCKER_LIST,
];

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registries (`host[:port]`) reached over plain HTTP instead of HTTPS.
    pub insecure_registries: Vec<String>,
    /// Basic credentials; anonymous (with bearer tokens when the registry asks) otherwise.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Per-read timeout: a registry that stalls longer fails the pull.
    pub timeout: Option<Duration>,
    /// Where OpenPGP simple signatures are kept (from `registries.d`).
    pub lookaside: crate::simplesign::Lookaside,
}

/// What a pull reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PullEvent {
    Resolved {
        digest: OciDigest,
    },
    Fetching {
        digest: OciDigest,
        size: u64,
    },
    /// Bytes of a layer received so far (reported about every MiB).
    Progress {
        digest: OciDigest,
        bytes: u64,
        size: u64,
    },
    Fetched {
        digest: OciDigest,
        size: u64,
    },
}

/// An attached layer's bytes and annotations.
type Attachment = (Vec<u8>, std::collections::BTreeMap<String, String>);

struct Registry<'a> {
    rt: tokio::runtime::Runtime,
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    timeout: Duration,
    progress: &'a (dyn Fn(PullEvent) + Sync),
}

/// A registry failure with its whole cause chain (transport errors keep the useful part, such as
/// "operation timed out", in their sources).
fn registry_err(what: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Invalid(format!("registry: {what}: {e}"))
}

fn chain_err(what: &str, e: &(dyn std::error::Error + 'static)) -> LoadError {
    registry_err(what, vouch_base::error_chain(e))
}

/// A blocking reader over the registry's byte stream.
struct StreamReader<'a> {
    rt: &'a tokio::runtime::Runtime,
    stream: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, io::Error>>,
    chunk: bytes::Bytes,
    timeout: Duration,
    ended: bool,
}

/// Counts bytes read and reports them about every MiB.
struct Counting<'a, R> {
    inner: R,
    read: u64,
    reported: u64,
    report: &'a dyn Fn(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read - self.reported >= 1 << 20 {
            self.reported = self.read;
            (self.report)(self.read);
        }
        Ok(n)
    }
}

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            if self.ended {
                return Ok(0);
            }
            let next = self
                .rt
                .block_on(async { tokio::time::timeout(self.timeout, self.stream.next()).await })
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the registry sent nothing for {:?}", self.timeout),
                    )
                })?;
            match next {
                None => {
                    // Never poll an ended stream again: the client library verifies the digest
                    // at the end, and would verify an empty remainder a second time.
                    self.ended = true;
                    return Ok(0);
                }
                Some(chunk) => self.chunk = chunk?,
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

impl Registry<'_> {
    fn manifest_bytes(&self, reference: &Reference) -> Result<Vec<u8>, LoadError> {
        let (bytes, _) = self
            .rt
            .block_on(
                self.client
                    .pull_manifest_raw(reference, &self.auth, ACCEPTED),
            )
            .map_err(|e| chain_err(&format!("manifest {reference}"), &e))?;
        if bytes.len() as u64 > MAX_DOCUMENT {
            return Err(LoadError::Invalid(format!(
                "the manifest of {reference} is larger than {MAX_DOCUMENT} bytes"
            )));
        }
        Ok(bytes.to_vec())
    }
}

impl Registry<'_> {
    /// A layer's HTTP body, counted for progress reports.
    fn layer_stream<'s>(
        &'s self,
        desc: &Descriptor,
        report: &'s dyn Fn(u64),
    ) -> Result<Counting<'s, StreamReader<'s>>, LoadError> {
        Ok(Counting {
            inner: self.blob_reader(&self.reference, &desc.digest, "blob")?,
            read: 0,
            reported: 0,
            report,
        })
    }

    /// A blob's HTTP body as a blocking reader.
    fn blob_reader(
        &self,
        reference: &Reference,
        digest: &OciDigest,
        what: &str,
    ) -> Result<StreamReader<'_>, LoadError> {
        let sized = self
            .rt
            .block_on(
                self.client
                    .pull_blob_stream(reference, digest.to_string().as_str()),
            )
            .map_err(|e| chain_err(&format!("{what} {digest}"), &e))?;
        Ok(StreamReader {
            rt: &self.rt,
            stream: sized.stream,
            chunk: bytes::Bytes::new(),
            timeout: self.timeout,
            ended: false,
        })
    }

    /// A small blob (config, attachment), read whole and checked against its digest.
    fn small_blob(
        &self,
        reference: &Reference,
        digest: &OciDigest,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, LoadError> {
        let mut data = Vec::new();
        self.blob_reader(reference, digest, what)?
            .take(limit + 1)
            .read_to_end(&mut data)
            .map_err(|e| registry_err(&format!("{what} {digest}"), e))?;
        if data.len() as u64 > limit {
            return Err(LoadError::Invalid(format!(
                "{what} {digest} is larger than {limit} bytes"
            )));
        }
        if OciDigest::from_sha256(Sha256::digest(&data).into()) != *digest {
            return Err(LoadError::Invalid(format!(
                "{what} {digest} does not match its digest"
            )));
        }
        Ok(data)
    }
}

impl BlobSource for Registry<'_> {
    /// Layers stream from the registry into the store and are unpacked in the same pass.
    fn fetch_layer(
        &self,
        store: &ContentStore,
        desc: &Descriptor,
        layer: &crate::store::LayerRecord,
    ) -> Result<(), LoadError> {
        if store.has_blob(&desc.digest) {
            store.ensure_layer(layer)?;
            return Ok(());
        }
        (self.progress)(PullEvent::Fetching {
            digest: desc.digest.clone(),
            size: desc.size,
        });
        let report = |bytes: u64| {
            (self.progress)(PullEvent::Progress {
                digest: desc.digest.clone(),
                bytes,
                size: desc.size,
            })
        };
        let reader = self.layer_stream(desc, &report)?;
        store.ingest_layer(layer, reader)?;
        (self.progress)(PullEvent::Fetched {
            digest: desc.digest.clone(),
            size: desc.size,
        });
        Ok(())
    }

    fn fetch(&self, store: &ContentStore, desc: &Descriptor) -> Result<(), LoadError> {
        let digest = desc.digest.to_string();
        let is_manifest = ACCEPTED.contains(&desc.media_type.as_str());
        if is_manifest {
            // Nested manifests (an index's entries) come from the manifest endpoint.
            let by_digest = self.reference.clone_with_digest(digest.clone());
            let bytes = self.manifest_bytes(&by_digest)?;
            store.ingest(
                &desc.digest,
                Some(desc.size),
                MAX_DOCUMENT,
                bytes.as_slice(),
            )?;
            return Ok(());
        }
        (self.progress)(PullEvent::Fetching {
            digest: desc.digest.clone(),
            size: desc.size,
        });
        let report = |bytes: u64| {
            (self.progress)(PullEvent::Progress {
                digest: desc.digest.clone(),
                bytes,
                size: desc.size,
            })
        };
        let reader = self.layer_stream(desc, &report)?;
        store.ingest(&desc.digest, Some(desc.size), MAX_BLOB, reader)?;
        (self.progress)(PullEvent::Fetched {
            digest: desc.digest.clone(),
            size: desc.size,
        });
        Ok(())
    }
}

/// The media type a manifest document declares (`mediaType`), or what its shape says.
fn media_type_of(doc: &[u8]) -> Result<String, LoadError> {
    let v: serde_json::Value = serde_json::from_slice(doc)
        .map_err(|e| LoadError::Invalid(format!("the registry's manifest is not JSON: {e}")))?;
    if let Some(m) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Ok(m.to_string());
    }
    Ok(if v.get("manifests").is_some() {
        oci::MEDIA_INDEX.to_string()
    } else {
        oci::MEDIA_MANIFEST.to_string()
    })
}

fn connect<'a>(
    reference: &str,
    opts: &PullOptions,
    progress: &'a (dyn Fn(PullEvent) + Sync),
) -> Result<Registry<'a>, LoadError> {
    let parsed: Reference = reference
        .parse()
        .map_err(|e| LoadError::Invalid(format!("invalid image reference {reference:?}: {e}")))?;
    let timeout = opts.timeout.unwrap_or(Duration::from_secs(30));
    let config = ClientConfig {
        protocol: if opts.insecure_registries.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(opts.insecure_registries.clone())
        },
        read_timeout: Some(timeout),
        connect_timeout: Some(timeout),
        ..Default::default()
    };
    let auth = match (&opts.username, &opts.password) {
        (Some(u), Some(p)) => RegistryAuth::Basic(u.clone(), p.clone()),
        (None, None) => RegistryAuth::Anonymous,
        _ => {
            return Err(LoadError::Invalid(
                "give both a user name and a password, or neither".into(),
            ))
        }
    };
    // Layers are fetched from several threads at once, each blocking on its own stream.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| registry_err("runtime", e))?;
    Ok(Registry {
        rt,
        client: Client::new(config),
        reference: parsed,
        auth,
        timeout,
        progress,
    })
}

/// The registry a reference names (`host[:port]` or `localhost` before the first `/`, as docker
/// decides it), or `None` for a short name such as `busybox` or `library/busybox`.
pub fn registry_host(reference: &str) -> Option<&str> {
    reference
        .split_once('/')
        .map(|(h, _)| h)
        .filter(|h| h.contains(['.', ':']) || *h == "localhost")
}

/// `registry/repository` of a reference, as signatures name it.
pub(crate) fn repository_of(reference: &Reference) -> String {
    format!("{}/{}", reference.registry(), reference.repository())
}

impl Registry<'_> {
    /// The manifest `reference` names, hashed here.
    fn resolve(&self) -> Result<(Vec<u8>, OciDigest), LoadError> {
        let top = self.manifest_bytes(&self.reference)?;
        let digest = OciDigest::from_sha256(Sha256::digest(&top).into());
        if let Some(pinned) = self.reference.digest() {
            if pinned != digest.to_string() {
                return Err(LoadError::Invalid(format!(
                    "the registry answered {} with a manifest whose digest is {digest}",
                    self.reference
                )));
            }
        }
        Ok((top, digest))
    }

    /// Layers of the artifact attached to `digest` under `tag` whose media type is `media_type`:
    /// (bytes, annotations), each checked against its digest. No artifact is an empty list.
    fn attachments(&self, tag: String, media_type: &str) -> Result<Vec<Attachment>, LoadError> {
        let att_ref = Reference::with_tag(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            tag.clone(),
        );
        let bytes = match self.rt.block_on(self.client.pull_manifest_raw(
            &att_ref,
            &self.auth,
            &[oci::MEDIA_MANIFEST, oci::MEDIA_DOCKER_MANIFEST],
        )) {
            Ok((b, _)) => b,
            // Nothing attached: the tag does not exist.
            Err(oci_client::errors::OciDistributionError::ImageManifestNotFoundError(_)) => {
                return Ok(Vec::new())
            }
            Err(oci_client::errors::OciDistributionError::RegistryError { envelope, .. })
                if envelope
                    .errors
                    .iter()
                    .any(|e| e.code == oci_client::errors::OciErrorCode::ManifestUnknown) =>
            {
                return Ok(Vec::new())
            }
            Err(e) => return Err(chain_err(&format!("attachment {tag}"), &e)),
        };
        let manifest: oci::Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| LoadError::Invalid(format!("attachment manifest {tag}: {e}")))?;
        let mut out = Vec::new();
        for layer in &manifest.layers {
            if layer.media_type != media_type {
                continue;
            }
            if layer.size > 1 << 20 {
                return Err(LoadError::Invalid(format!(
                    "attachment {} is larger than 1 MiB",
                    layer.digest
                )));
            }
            let data = self.small_blob(&att_ref, &layer.digest, 1 << 20, "attachment")?;
            out.push((data, layer.annotations.clone().unwrap_or_default()));
        }
        Ok(out)
    }

    /// Cosign signatures attached to `digest`: (payload, base64 signature) per signature layer.
    fn cosign_signatures(&self, digest: &OciDigest) -> Result<Vec<(Vec<u8>, String)>, LoadError> {
        Ok(self
            .attachments(
                crate::cosign::signature_tag(digest),
                crate::cosign::SIMPLE_SIGNING_MEDIA_TYPE,
            )?
            .into_iter()
            .filter_map(|(payload, ann)| {
                ann.get(crate::cosign::SIGNATURE_ANNOTATION)
                    .map(|s| (payload, s.clone()))
            })
            .collect())
    }

    /// The golden-value document attached to `digest`, if any.
    fn golden(&self, digest: &OciDigest) -> Result<Option<crate::golden::SignedGolden>, LoadError> {
        match self
            .attachments(crate::golden::tag(digest), crate::golden::MEDIA_TYPE)?
            .first()
        {
            Some((bytes, _)) => crate::golden::SignedGolden::parse(bytes)
                .map(Some)
                .map_err(|e| LoadError::Invalid(e.to_string())),
            None => Ok(None),
        }
    }

    /// Push a one-layer artifact under `tag` (replacing what the tag named).
    fn push_attachment(
        &self,
        tag: String,
        layers: Vec<oci_client::client::ImageLayer>,
    ) -> Result<(), LoadError> {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| OciDigest::from_sha256(Sha256::digest(&l.data).into()).to_string())
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "", "os": "", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .map_err(|e| registry_err("attachment config", e))?;
        let att_ref = Reference::with_tag(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            tag.clone(),
        );
        self.rt
            .block_on(self.client.push(
                &att_ref,
                &layers,
                oci_client::client::Config::new(config, oci::MEDIA_CONFIG.to_string(), None),
                &self.auth,
                None,
            ))
            .map_err(|e| chain_err(&format!("pushing {tag}"), &e))?;
        Ok(())
    }

    /// Manifest, config and layer diff ids of the linux/amd64 image `reference` names, without
    /// fetching any layer.
    fn inspect(&self) -> Result<ImageRecord, LoadError> {
        let (mut bytes, mut digest) = self.resolve()?;
        for _ in 0..2 {
            if media_type_of(&bytes)? != oci::MEDIA_INDEX
                && media_type_of(&bytes)? != oci::MEDIA_DOCKER_LIST
            {
                break;
            }
            let index: oci::Index = serde_json::from_slice(&bytes)
                .map_err(|e| LoadError::Invalid(format!("image index {digest}: {e}")))?;
            let pick = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .ok_or_else(|| {
                    LoadError::Invalid(format!("image index {digest} has no linux/amd64 image"))
                })?;
            bytes =
                self.manifest_bytes(&self.reference.clone_with_digest(pick.digest.to_string()))?;
            digest = OciDigest::from_sha256(Sha256::digest(&bytes).into());
            if digest != pick.digest {
                return Err(LoadError::Invalid(format!(
                    "manifest {} does not match its digest",
                    pick.digest
                )));
            }
        }
        let manifest: oci::Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| LoadError::Invalid(format!("manifest {digest}: {e}")))?;
        let config_bytes = self.small_blob(
            &self.reference,
            &manifest.config.digest,
            MAX_DOCUMENT,
            "config",
        )?;
        let config: oci::ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| LoadError::Invalid(format!("config {}: {e}", manifest.config.digest)))?;
        let c = config.config.unwrap_or_default();
        Ok(ImageRecord {
            names: vec![self.reference.whole()],
            manifest_digest: digest,
            config_digest: manifest.config.digest.clone(),
            layers: manifest
                .layers
                .iter()
                .zip(config.rootfs.diff_ids.iter())
                .map(|(l, d)| crate::store::LayerRecord {
                    digest: l.digest.clone(),
                    diff_id: d.clone(),
                    size: l.size,
                    compression: oci::layer_compression(&l.media_type)
                        .unwrap_or(oci::Compression::Gzip),
                })
                .collect(),
            defaults: crate::store::RuntimeDefaults {
                exec: c.exec_policy(),
                entrypoint: c.entrypoint.unwrap_or_default(),
                cmd: c.cmd.unwrap_or_default(),
                env: c.env.unwrap_or_default(),
                working_dir: c.working_dir.unwrap_or_default(),
                user: c.user.unwrap_or_default(),
            },
            size: manifest.layers.iter().map(|l| l.size).sum(),
            loaded_at: String::new(),
            verification: None,
            golden: None,
        })
    }
}

/// What `reference` is in its registry (manifest, config, diff ids), without fetching layers.
pub fn inspect(reference: &str, opts: &PullOptions) -> Result<ImageRecord, LoadError> {
    connect(reference, opts, &|_| {})?.inspect()
}

/// Attach a signed golden-value document to the image `reference` names (`sha256-<hex>.rv`).
/// The document must speak for that image's manifest digest.
pub fn push_golden(
    reference: &str,
    signed: &crate::golden::SignedGolden,
    manifest_digest: &OciDigest,
    opts: &PullOptions,
) -> Result<(), LoadError> {
    let reg = connect(reference, opts, &|_| {})?;
    let record = reg.inspect()?;
    if &record.manifest_digest != manifest_digest {
        return Err(LoadError::Invalid(format!(
            "the golden value is for {manifest_digest}, but {reference} is {}",
            record.manifest_digest
        )));
    }
    let data = serde_json::to_vec(signed).map_err(|e| registry_err("golden value", e))?;
    let (_, top) = reg.resolve()?;
    reg.push_attachment(
        crate::golden::tag(&top),
        vec![oci_client::client::ImageLayer::new(
            data,
            crate::golden::MEDIA_TYPE.to_string(),
            None,
        )],
    )
}

/// Sign the image `reference` names with a cosign key and attach the signature in its
/// repository (`sha256-<hex>.sig`), keeping signatures attached before. Returns the digest signed.
pub fn push_cosign_signature(
    reference: &str,
    key: &p256::ecdsa::SigningKey,
    opts: &PullOptions,
) -> Result<OciDigest, LoadError> {
    let reg = connect(reference, opts, &|_| {})?;
    let (_, digest) = reg.resolve()?;
    let payload = crate::cosign::payload(&repository_of(&reg.reference), &digest);
    let signature = crate::cosign::sign(key, &payload);
    let mut layers: Vec<oci_client::client::ImageLayer> = reg
        .cosign_signatures(&digest)?
        .into_iter()
        .filter(|(p, s)| !(p == &payload && s == &signature))
        .map(|(p, s)| sig_layer(p, s))
        .collect();
    layers.push(sig_layer(payload, signature));
    reg.push_attachment(crate::cosign::signature_tag(&digest), layers)?;
    Ok(digest)
}

fn sig_layer(payload: Vec<u8>, signature: String) -> oci_client::client::ImageLayer {
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(crate::cosign::SIGNATURE_ANNOTATION.to_string(), signature);
    oci_client::client::ImageLayer::new(
        payload,
        crate::cosign::SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
        Some(annotations),
    )
}

/// Pull `reference` (`[registry/]repository[:tag|@digest]`) into the store and add it to the
/// image index under that name. With a policy, the image must satisfy it before anything but
/// its manifest is fetched; the decision is kept with the image.
pub fn pull(
    store: &ContentStore,
    reference: &str,
    opts: &PullOptions,
    policy: Option<&crate::policy::ImagePolicy>,
    progress: &(dyn Fn(PullEvent) + Sync),
) -> Result<ImageRecord, LoadError> {
    let reg = connect(reference, opts, progress)?;
    let (top, digest) = reg.resolve()?;
    progress(PullEvent::Resolved {
        digest: digest.clone(),
    });
    let decision = match policy {
        Some(p) => Some(
            {
                let repository = repository_of(&reg.reference);
                let cosign = || reg.cosign_signatures(&digest);
                let simple = || {
                    opts.lookaside
                        .signatures(&repository, &digest)
                        .map_err(|e| LoadError::Invalid(e.to_string()))
                };
                p.check(
                    &repository,
                    &reg.reference.whole(),
                    &digest,
                    &crate::policy::SignatureSources {
                        cosign: &cosign,
                        simple: &simple,
                    },
                )
            }
            .map_err(LoadError::Policy)?,
        ),
        None => None,
    };
    let desc = Descriptor {
        media_type: media_type_of(&top)?,
        digest: digest.clone(),
        size: top.len() as u64,
        annotations: None,
        platform: None,
    };
    store.ingest(&digest, Some(desc.size), MAX_DOCUMENT, top.as_slice())?;
    let mut record = load_manifest(store, &reg, &desc, vec![reg.reference.whole()], 0)?;
    record.verification = decision;
    record.golden = reg.golden(&digest)?;
    Ok(store.put_image(record)?)
}
