//! Loading images from an OCI image layout, as a directory or a tar archive (optionally gzip).

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use crate::digest::OciDigest;
use crate::oci::{self, Descriptor, ImageConfig, Index, Manifest};
use crate::store::{
    ContentStore, ImageRecord, LayerRecord, RuntimeDefaults, StoreError, MAX_DOCUMENT,
};

/// Largest single blob accepted from an archive.
const MAX_BLOB: u64 = 16 << 30;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not an OCI image layout (no oci-layout file)")]
    NotLayout(String),
    #[error("{path} is not valid JSON for {what}")]
    Json {
        path: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Policy(crate::policy::PolicyError),
}

fn json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    path: &str,
    what: &'static str,
) -> Result<T, LoadError> {
    serde_json::from_slice(bytes).map_err(|source| LoadError::Json {
        path: path.to_string(),
        what,
        source,
    })
}

/// Open an archive that lies on the daemon's own host, for [`load`]: the last component is
/// never followed if it is a symlink, the open never blocks (a FIFO or a device is refused, not
/// waited on), and only a regular file is accepted. Returns a path that reaches exactly the file
/// opened (`/proc/self/fd/N`, valid while the returned descriptor lives), so nothing that
/// renames or replaces the original path afterwards changes what is loaded.
pub fn open_host_archive(path: &Path) -> Result<(File, PathBuf), LoadError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| LoadError::Io {
        path: path.display().to_string(),
        source,
    };
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err)?;
    if !f.metadata().map_err(io_err)?.is_file() {
        return Err(LoadError::Invalid(format!(
            "{} is not a regular file: only an archive (.tar, .tar.gz) on the daemon's host is loaded by path",
            path.display()
        )));
    }
    let via = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    Ok((f, via))
}

/// Load every image of an OCI layout at `source` (directory, `.tar` or `.tar.gz`).
/// `name` overrides the image's `org.opencontainers.image.ref.name`.
pub fn load(
    store: &ContentStore,
    source: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageRecord>, LoadError> {
    load_labeled(store, source, name, &source.display().to_string())
}

/// [`load`], calling the source `label` in errors (an uploaded archive is not its temporary
/// file's path to the client).
pub fn load_labeled(
    store: &ContentStore,
    source: &Path,
    name: Option<&str>,
    label: &str,
) -> Result<Vec<ImageRecord>, LoadError> {
    let io_err = |source_err| LoadError::Io {
        path: label.to_string(),
        source: source_err,
    };
    let meta = fs::metadata(source).map_err(io_err)?;
    let index_bytes = if meta.is_dir() {
        let layout = source.join("oci-layout");
        if !layout.is_file() {
            return Err(LoadError::NotLayout(label.to_string()));
        }
        read_limited(&source.join("index.json"))?
    } else {
        ingest_archive(store, source, label)?
    };
    let index: Index = json(&index_bytes, "index.json", "an OCI image index")?;
    if index.manifests.is_empty() {
        return Err(LoadError::Invalid("index.json lists no images".into()));
    }
    if name.is_some() && index.manifests.len() > 1 {
        return Err(LoadError::Invalid(format!(
            "the layout holds {} images; a name can only be given when it holds one",
            index.manifests.len()
        )));
    }
    let dir_source = meta.is_dir().then(|| source.to_path_buf());
    let mut loaded = Vec::new();
    for desc in &index.manifests {
        let ref_name = desc
            .annotations
            .as_ref()
            .and_then(|a| a.get(oci::ANNOTATION_REF_NAME))
            .cloned();
        let names: Vec<String> = name.map(str::to_string).or(ref_name).into_iter().collect();
        let record = load_manifest(store, &LayoutDir(dir_source.as_deref()), desc, names, 0)?;
        loaded.push(store.put_image(record)?);
    }
    Ok(loaded)
}

fn read_limited(path: &Path) -> Result<Vec<u8>, LoadError> {
    let f = File::open(path).map_err(|source| LoadError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    f.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut out)
        .map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
    if out.len() as u64 > MAX_DOCUMENT {
        return Err(LoadError::Invalid(format!(
            "{} is larger than {MAX_DOCUMENT} bytes",
            path.display()
        )));
    }
    Ok(out)
}

/// Where the blobs of an image come from: each is put into the store (verified against its
/// descriptor) unless it is there already.
pub(crate) trait BlobSource: Sync {
    fn fetch(&self, store: &ContentStore, desc: &Descriptor) -> Result<(), LoadError>;

    /// Make a layer's blob and unpacked directory present. By default the blob is fetched, then
    /// unpacked; a source that streams can do both in one pass.
    fn fetch_layer(
        &self,
        store: &ContentStore,
        desc: &Descriptor,
        layer: &LayerRecord,
    ) -> Result<(), LoadError> {
        if !store.has_blob(&desc.digest) {
            self.fetch(store, desc)?;
        }
        store.ensure_layer(layer)?;
        Ok(())
    }
}

/// The blobs of an OCI layout directory, or (`None`) those an archive already put in the store.
struct LayoutDir<'a>(Option<&'a Path>);

impl BlobSource for LayoutDir<'_> {
    fn fetch(&self, store: &ContentStore, desc: &Descriptor) -> Result<(), LoadError> {
        let Some(dir) = self.0 else {
            return Err(LoadError::Invalid(format!(
                "blob {} is missing from the archive",
                desc.digest
            )));
        };
        let path = dir.join("blobs/sha256").join(desc.digest.hex());
        let f = File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => {
                LoadError::Invalid(format!("blob {} is missing from the layout", desc.digest))
            }
            _ => LoadError::Io {
                path: path.display().to_string(),
                source,
            },
        })?;
        store.ingest(&desc.digest, Some(desc.size), MAX_BLOB, BufReader::new(f))?;
        Ok(())
    }
}

fn ensure_blob(
    store: &ContentStore,
    source: &dyn BlobSource,
    desc: &Descriptor,
) -> Result<(), LoadError> {
    if store.has_blob(&desc.digest) {
        return Ok(());
    }
    source.fetch(store, desc)
}

/// Store the image `desc` names (an index is resolved to its linux/amd64 image), verify and
/// unpack its layers, and return its record (not yet added to the image index).
pub(crate) fn load_manifest(
    store: &ContentStore,
    dir: &dyn BlobSource,
    desc: &Descriptor,
    names: Vec<String>,
    depth: u32,
) -> Result<ImageRecord, LoadError> {
    ensure_blob(store, dir, desc)?;
    let bytes = store.read_document(&desc.digest)?;
    let media = desc.media_type.as_str();
    let where_ = desc.digest.to_string();
    if media == oci::MEDIA_INDEX || media == oci::MEDIA_DOCKER_LIST {
        if depth > 2 {
            return Err(LoadError::Invalid("image indexes nest too deeply".into()));
        }
        let nested: Index = json(&bytes, &where_, "an OCI image index")?;
        let pick = nested
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .ok_or_else(|| {
                LoadError::Invalid(format!("image index {where_} has no linux/amd64 image"))
            })?;
        return load_manifest(store, dir, pick, names, depth + 1);
    }
    if !media.is_empty() && media != oci::MEDIA_MANIFEST && media != oci::MEDIA_DOCKER_MANIFEST {
        return Err(LoadError::Invalid(format!(
            "unsupported manifest media type {media:?}"
        )));
    }
    let manifest: Manifest = json(&bytes, &where_, "an OCI image manifest")?;
    if manifest.schema_version != 2 {
        return Err(LoadError::Invalid(format!(
            "manifest {where_} has schema version {}, expected 2",
            manifest.schema_version
        )));
    }
    ensure_blob(store, dir, &manifest.config)?;
    let config_bytes = store.read_document(&manifest.config.digest)?;
    let config: ImageConfig = json(
        &config_bytes,
        &manifest.config.digest.to_string(),
        "an OCI image config",
    )?;
    if config.os != "linux" || config.architecture != "amd64" {
        return Err(LoadError::Invalid(format!(
            "image is for {}/{}; this machine runs linux/amd64",
            config.os, config.architecture
        )));
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(LoadError::Invalid(format!(
            "image config lists {} diff ids for {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    let mut layers = Vec::new();
    for (layer, diff_id) in manifest.layers.iter().zip(config.rootfs.diff_ids.iter()) {
        let compression = oci::layer_compression(&layer.media_type).ok_or_else(|| {
            LoadError::Invalid(format!(
                "layer {} has unsupported media type {:?}",
                layer.digest, layer.media_type
            ))
        })?;
        layers.push(LayerRecord {
            digest: layer.digest.clone(),
            diff_id: diff_id.clone(),
            size: layer.size,
            compression,
        });
    }
    // Fetch and unpack the layers a few at a time: they are independent until the overlay
    // stacks them, and decompression is the cost that more cores divide.
    let mut work: Vec<(&Descriptor, &LayerRecord)> = Vec::new();
    for (desc, rec) in manifest.layers.iter().zip(layers.iter()) {
        if !work.iter().any(|(d, _)| d.digest == desc.digest) {
            work.push((desc, rec));
        }
    }
    parallel(&work, |(desc, rec)| dir.fetch_layer(store, desc, rec))?;
    let c = config.config.unwrap_or_default();
    let defaults = RuntimeDefaults {
        exec: c.exec_policy(),
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        user: c.user.unwrap_or_default(),
    };
    Ok(ImageRecord {
        names,
        manifest_digest: desc.digest.clone(),
        config_digest: manifest.config.digest.clone(),
        size: layers.iter().map(|l| l.size).sum(),
        layers,
        defaults,
        loaded_at: vouch_base::clock::unix_secs().to_string(),
        verification: None,
        golden: None,
    })
}

/// Work on at most this many layers at once.
const PARALLEL_LAYERS: usize = 4;

/// Run `f` on every item, up to [`PARALLEL_LAYERS`] at a time; the first error wins (the others
/// still finish, so nothing is left half-written).
fn parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> Result<(), LoadError> + Sync,
) -> Result<(), LoadError> {
    if items.len() <= 1 {
        return items.iter().try_for_each(&f);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(), LoadError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PARALLEL_LAYERS.min(items.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Ok(());
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(item) = items.get(i) else { break };
                        if let Err(e) = f(item) {
                            if out.is_ok() {
                                out = Err(e);
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(LoadError::Invalid("a layer worker panicked".into())))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Stream an archive once: blobs go into the store (verified), `index.json` is returned.
fn ingest_archive(store: &ContentStore, path: &Path, label: &str) -> Result<Vec<u8>, LoadError> {
    let io_err = |source| LoadError::Io {
        path: label.to_string(),
        source,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(io_err)?;
    drop(f);
    let f = BufReader::new(File::open(path).map_err(io_err)?);
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut archive = tar::Archive::new(reader);
    let mut index = None;
    let mut saw_layout = false;
    for (entries_seen, entry) in archive.entries().map_err(io_err)?.enumerate() {
        // Never the tar error's own text: it quotes header bytes, and the file may be
        // anything (an archive is only what it claims to be once it parses).
        let entry = entry.map_err(|_| {
            LoadError::Invalid(format!(
                "{label} is not a valid tar archive (entry {} is damaged or not a tar header)",
                entries_seen + 1
            ))
        })?;
        let raw: PathBuf = entry.path().map_err(io_err)?.into_owned();
        let rel: PathBuf = raw
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        if raw.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(LoadError::Invalid(format!(
                "archive entry {:?} contains '..'",
                raw.display()
            )));
        }
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            continue;
        }
        let rel_str = rel.to_string_lossy().into_owned();
        if rel_str == "oci-layout" {
            saw_layout = true;
        } else if rel_str == "index.json" {
            let mut buf = Vec::new();
            entry
                .take(MAX_DOCUMENT + 1)
                .read_to_end(&mut buf)
                .map_err(io_err)?;
            if buf.len() as u64 > MAX_DOCUMENT {
                return Err(LoadError::Invalid("index.json is too large".into()));
            }
            index = Some(buf);
        } else if let Some(hex) = rel_str.strip_prefix("blobs/sha256/") {
            let digest: OciDigest = format!("sha256:{hex}").parse().map_err(|_| {
                LoadError::Invalid(format!(
                    "archive entry {rel_str:?} is not named by a sha256 digest"
                ))
            })?;
            let size = entry.header().size().map_err(io_err)?;
            store.ingest(&digest, Some(size), MAX_BLOB, entry)?;
        }
    }
    if !saw_layout {
        return Err(LoadError::NotLayout(label.to_string()));
    }
    index.ok_or_else(|| LoadError::Invalid(format!("{label} has no index.json")))
}
