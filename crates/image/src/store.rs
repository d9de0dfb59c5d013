//! The content-addressed store: verified blobs, unpacked layers keyed by diff id, and the image
//! index. Blobs and layers appear under their final names only when complete and verified.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::OciDigest;
use crate::oci::Compression;
use crate::unpack::{unpack_layer, UnpackError, UnpackLimits};

/// Largest manifest, index or config document vouch reads.
pub(crate) const MAX_DOCUMENT: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image name {0:?} is not a valid reference: {grammar}", grammar = crate::reference::GRAMMAR)]
    InvalidName(String),
    #[error("cannot access the image store at {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("blob {expected} does not match its digest (content hashes to {actual})")]
    DigestMismatch {
        expected: OciDigest,
        actual: OciDigest,
    },
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        digest: OciDigest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} is larger than the limit of {limit} bytes")]
    BlobTooLarge { digest: OciDigest, limit: u64 },
    #[error("blob {0} is not in the store")]
    MissingBlob(OciDigest),
    #[error("cannot read blob {digest} from its source")]
    Source {
        digest: OciDigest,
        #[source]
        source: io::Error,
    },
    #[error(
        "layer {digest} unpacks to content with diff id {actual}, the image config says {expected}"
    )]
    DiffIdMismatch {
        digest: OciDigest,
        expected: OciDigest,
        actual: OciDigest,
    },
    #[error("layer {digest} is rejected")]
    Unpack {
        digest: OciDigest,
        #[source]
        source: UnpackError,
    },
    #[error("{0}-compressed layers are not supported yet")]
    UnsupportedCompression(&'static str),
    #[error("no such image: {0}")]
    NoSuchImage(String),
    #[error("image reference {reference:?} is ambiguous: it matches {count} images")]
    Ambiguous { reference: String, count: usize },
    #[error("image index {path} is corrupt")]
    Index {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What the image asks for by default when a container starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// The image's `io.vouch.exec` label: `deny` forbids exec into its containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: OciDigest,
    pub diff_id: OciDigest,
    pub size: u64,
    pub compression: Compression,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// References that name this image, like `busybox:latest`.
    pub names: Vec<String>,
    pub manifest_digest: OciDigest,
    pub config_digest: OciDigest,
    pub layers: Vec<LayerRecord>,
    pub defaults: RuntimeDefaults,
    /// Compressed size of all layers.
    pub size: u64,
    pub loaded_at: String,
    /// What the image policy decided when the image was pulled or loaded (none without a policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<crate::policy::Verification>,
    /// The signed golden-value document attached to the image in its registry, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden: Option<crate::golden::SignedGolden>,
}

impl ImageRecord {
    /// The short id shown to users (first 12 hex of the config digest, as docker does).
    pub fn id(&self) -> &str {
        self.config_digest.short()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct IndexFile {
    images: Vec<ImageRecord>,
}

/// Normalize a user reference: a name without a tag means `:latest`.
pub(crate) fn normalize_reference(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || reference.contains('@') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

pub struct ContentStore {
    root: PathBuf,
    limits: UnpackLimits,
    index_lock: Mutex<()>,
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for sub in ["blobs/sha256", "layers", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(|source| StoreError::Io {
                path: p.display().to_string(),
                source,
            })?;
        }
        // Leftovers of an interrupted ingest or unpack are never visible; remove them.
        let tmp = root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        Ok(ContentStore {
            root: root.to_path_buf(),
            limits: UnpackLimits::default(),
            index_lock: Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, d: &OciDigest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub(crate) fn layer_path(&self, diff_id: &OciDigest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    pub(crate) fn has_blob(&self, d: &OciDigest) -> bool {
        self.blob_path(d).is_file()
    }

    fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn temp_name(&self, prefix: &str) -> PathBuf {
        let mut r = [0u8; 8];
        let _ = getrandom::fill(&mut r);
        self.root
            .join("tmp")
            .join(format!("{prefix}-{}", hex::encode(r)))
    }

    /// A new private file in the store's temporary directory (removed at the next open if it is
    /// left behind), e.g. for an archive being uploaded.
    pub fn temp_file(&self, prefix: &str) -> Result<(PathBuf, File), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.temp_name(prefix);
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(Self::io_err(&path))?;
        Ok((path, f))
    }

    /// Stream a blob into the store, checking size and digest as it is written.
    pub(crate) fn ingest<R: Read>(
        &self,
        expected: &OciDigest,
        expected_size: Option<u64>,
        max_size: u64,
        mut reader: R,
    ) -> Result<(), StoreError> {
        if self.has_blob(expected) {
            // Still consume the stream so callers reading an archive stay in sync.
            io::copy(&mut reader, &mut io::sink()).map_err(Self::io_err(&self.root))?;
            return Ok(());
        }
        let tmp = self.temp_name("blob");
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(Self::io_err(&tmp))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut total: u64 = 0;
            loop {
                let n = reader.read(&mut buf).map_err(|source| StoreError::Source {
                    digest: expected.clone(),
                    source,
                })?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                if total > max_size || expected_size.is_some_and(|s| total > s) {
                    return Err(match expected_size {
                        Some(s) if total > s => StoreError::SizeMismatch {
                            digest: expected.clone(),
                            expected: s,
                            actual: total,
                        },
                        _ => StoreError::BlobTooLarge {
                            digest: expected.clone(),
                            limit: max_size,
                        },
                    });
                }
                hasher.update(&buf[..n]);
                f.write_all(&buf[..n]).map_err(Self::io_err(&tmp))?;
            }
            if let Some(s) = expected_size {
                if s != total {
                    return Err(StoreError::SizeMismatch {
                        digest: expected.clone(),
                        expected: s,
                        actual: total,
                    });
                }
            }
            let actual = OciDigest::from_sha256(hasher.finalize().into());
            if &actual != expected {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            f.sync_all().map_err(Self::io_err(&tmp))?;
            let dest = self.blob_path(expected);
            fs::rename(&tmp, &dest).map_err(Self::io_err(&dest))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Read a small document blob (manifest, config, index).
    pub(crate) fn read_document(&self, d: &OciDigest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        let f = File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(d.clone()),
            _ => StoreError::Io {
                path: p.display().to_string(),
                source: e,
            },
        })?;
        let mut out = Vec::new();
        f.take(MAX_DOCUMENT + 1)
            .read_to_end(&mut out)
            .map_err(Self::io_err(&p))?;
        if out.len() as u64 > MAX_DOCUMENT {
            return Err(StoreError::BlobTooLarge {
                digest: d.clone(),
                limit: MAX_DOCUMENT,
            });
        }
        Ok(out)
    }

    /// A fresh temporary directory for a layer being unpacked. A layer root is an ordinary image
    /// directory (a "./" entry may still set its mode).
    fn new_layer_dir(&self) -> Result<PathBuf, StoreError> {
        let tmp = self.temp_name("layer");
        fs::create_dir(&tmp).map_err(Self::io_err(&tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(Self::io_err(&tmp))?;
        Ok(tmp)
    }

    /// Decompress `compressed`, unpack it into `dir`, and return the diff id: SHA-256 of the whole
    /// decompressed stream, end-of-archive padding included.
    fn unpack_into(
        &self,
        layer: &LayerRecord,
        compressed: impl io::BufRead,
        dir: &Path,
    ) -> Result<OciDigest, StoreError> {
        let tar_err = |source: io::Error| StoreError::Unpack {
            digest: layer.digest.clone(),
            source: UnpackError::Tar(source),
        };
        let decompressed: Box<dyn Read + '_> = match layer.compression {
            Compression::None => Box::new(compressed),
            Compression::Gzip => Box::new(GzDecoder::new(compressed)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(compressed).map_err(tar_err)?)
            }
        };
        let mut hashing = HashingReader {
            inner: decompressed,
            hasher: Sha256::new(),
        };
        unpack_layer(&mut hashing, dir, &self.limits).map_err(|source| StoreError::Unpack {
            digest: layer.digest.clone(),
            source,
        })?;
        io::copy(&mut hashing, &mut io::sink()).map_err(tar_err)?;
        Ok(OciDigest::from_sha256(hashing.hasher.finalize().into()))
    }

    /// Move an unpacked layer into place. The same layer unpacked concurrently for another image
    /// may have won the race: then that one is kept.
    fn place_layer(tmp: &Path, dest: &Path) -> Result<(), StoreError> {
        match fs::rename(tmp, dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(tmp);
                Ok(())
            }
            Err(e) => Err(Self::io_err(dest)(e)),
        }
    }

    /// Stream a layer from `reader` into the store and unpack it in the same pass: the compressed
    /// bytes are written to the blob file and hashed as the decompressor reads them, the diff id
    /// is checked over the decompressed stream. Both appear under their names only when size,
    /// digest and diff id are right; otherwise neither does.
    pub(crate) fn ingest_layer<R: Read>(
        &self,
        layer: &LayerRecord,
        reader: R,
    ) -> Result<PathBuf, StoreError> {
        let dest = self.layer_path(&layer.diff_id);
        let blob_dest = self.blob_path(&layer.digest);
        if dest.is_dir() || blob_dest.exists() {
            // Half of it is here already: the plain paths handle that.
            self.ingest(&layer.digest, Some(layer.size), u64::MAX, reader)?;
            return self.ensure_layer(layer);
        }
        let blob_tmp = self.temp_name("blob");
        let dir_tmp = self.new_layer_dir()?;
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&blob_tmp)
                .map_err(Self::io_err(&blob_tmp))?;
            let mut tee = TeeReader {
                inner: reader,
                file: &mut file,
                hasher: Sha256::new(),
                total: 0,
                limit: layer.size,
            };
            let source_err = |source: io::Error| StoreError::Source {
                digest: layer.digest.clone(),
                source,
            };
            let unpacked = self.unpack_into(
                layer,
                io::BufReader::with_capacity(256 * 1024, &mut tee),
                &dir_tmp,
            );
            // Whatever follows the compressed stream is part of the blob too. When unpacking
            // failed, the rest is still read: wrong bytes are reported as what they are.
            let drained = io::copy(&mut tee, &mut io::sink());
            let (total, digest) = (
                tee.total,
                OciDigest::from_sha256(tee.hasher.finalize().into()),
            );
            let diff_id = match (unpacked, drained) {
                (Ok(d), Ok(_)) => d,
                (Err(e), Ok(_)) => {
                    if total == layer.size && digest != layer.digest {
                        return Err(StoreError::DigestMismatch {
                            expected: layer.digest.clone(),
                            actual: digest,
                        });
                    }
                    return Err(e);
                }
                (_, Err(e)) => return Err(source_err(e)),
            };
            if total != layer.size {
                return Err(StoreError::SizeMismatch {
                    digest: layer.digest.clone(),
                    expected: layer.size,
                    actual: total,
                });
            }
            if digest != layer.digest {
                return Err(StoreError::DigestMismatch {
                    expected: layer.digest.clone(),
                    actual: digest,
                });
            }
            if diff_id != layer.diff_id {
                return Err(StoreError::DiffIdMismatch {
                    digest: layer.digest.clone(),
                    expected: layer.diff_id.clone(),
                    actual: diff_id,
                });
            }
            file.sync_all().map_err(Self::io_err(&blob_tmp))?;
            fs::rename(&blob_tmp, &blob_dest).map_err(Self::io_err(&blob_dest))?;
            Self::place_layer(&dir_tmp, &dest)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&blob_tmp);
            let _ = fs::remove_dir_all(&dir_tmp);
        }
        result.map(|_| dest)
    }

    /// Unpack a layer blob (once) into `layers/<diff id>`, checking the diff id while unpacking.
    pub fn ensure_layer(&self, layer: &LayerRecord) -> Result<PathBuf, StoreError> {
        let dest = self.layer_path(&layer.diff_id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let blob = self.blob_path(&layer.digest);
        let file = File::open(&blob).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(layer.digest.clone()),
            _ => StoreError::Io {
                path: blob.display().to_string(),
                source: e,
            },
        })?;
        let tmp = self.new_layer_dir()?;
        let result = (|| {
            let actual = self.unpack_into(layer, io::BufReader::new(file), &tmp)?;
            if actual != layer.diff_id {
                return Err(StoreError::DiffIdMismatch {
                    digest: layer.digest.clone(),
                    expected: layer.diff_id.clone(),
                    actual,
                });
            }
            Self::place_layer(&tmp, &dest)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result.map(|_| dest)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn read_index(&self) -> Result<IndexFile, StoreError> {
        let p = self.index_path();
        match fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Index {
                path: p.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IndexFile::default()),
            Err(source) => Err(StoreError::Io {
                path: p.display().to_string(),
                source,
            }),
        }
    }

    fn write_index(&self, index: &IndexFile) -> Result<(), StoreError> {
        let p = self.index_path();
        let tmp = self.temp_name("index");
        let bytes = serde_json::to_vec_pretty(index).map_err(|source| StoreError::Index {
            path: p.display().to_string(),
            source,
        })?;
        let mut f = File::create(&tmp).map_err(Self::io_err(&tmp))?;
        f.write_all(&bytes).map_err(Self::io_err(&tmp))?;
        f.sync_all().map_err(Self::io_err(&tmp))?;
        fs::rename(&tmp, &p).map_err(Self::io_err(&p))
    }

    /// Add or update an image; its names move away from any other image that held them.
    pub fn put_image(&self, mut record: ImageRecord) -> Result<ImageRecord, StoreError> {
        // The last guard for every way in: only names of the reference grammar are kept.
        if let Some(bad) = record.names.iter().find(|n| !crate::reference::valid(n)) {
            return Err(StoreError::InvalidName(bad.clone()));
        }
        let _g = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = self.read_index()?;
        record.names = record
            .names
            .iter()
            .map(|n| normalize_reference(n))
            .collect();
        for other in index.images.iter_mut() {
            other.names.retain(|n| !record.names.contains(n));
        }
        if let Some(existing) = index
            .images
            .iter_mut()
            .find(|i| i.manifest_digest == record.manifest_digest)
        {
            let mut names: BTreeSet<String> = existing.names.drain(..).collect();
            names.extend(record.names.iter().cloned());
            record.names = names.into_iter().collect();
            // The same image reached under another name without a golden value keeps the one
            // it already has (the document speaks for the digest, whatever the name).
            if record.golden.is_none() {
                record.golden = existing.golden.take();
            }
            *existing = record.clone();
        } else {
            index.images.push(record.clone());
        }
        self.write_index(&index)?;
        Ok(record)
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let _g = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.read_index()?.images)
    }

    /// Find an image by name (`busybox`, `busybox:1`), digest (`sha256:...`) or id prefix.
    pub fn find(&self, reference: &str) -> Result<ImageRecord, StoreError> {
        let images = self.list()?;
        find_in(&images, reference).cloned()
    }

    /// Remove an image record and every blob and layer no other image uses.
    pub fn remove(&self, reference: &str) -> Result<ImageRecord, StoreError> {
        let _g = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = self.read_index()?;
        let target = find_in(&index.images, reference)?.clone();
        index
            .images
            .retain(|i| i.manifest_digest != target.manifest_digest);
        self.write_index(&index)?;
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        for i in &index.images {
            keep_blobs.insert(i.manifest_digest.clone());
            keep_blobs.insert(i.config_digest.clone());
            for l in &i.layers {
                keep_blobs.insert(l.digest.clone());
                keep_layers.insert(l.diff_id.clone());
            }
        }
        let mut drop_blobs = vec![target.manifest_digest.clone(), target.config_digest.clone()];
        drop_blobs.extend(target.layers.iter().map(|l| l.digest.clone()));
        for d in drop_blobs.into_iter().filter(|d| !keep_blobs.contains(d)) {
            let _ = fs::remove_file(self.blob_path(&d));
        }
        for l in target
            .layers
            .iter()
            .filter(|l| !keep_layers.contains(&l.diff_id))
        {
            // Move aside first so a half-removed layer is never visible under its name.
            let tmp = self.temp_name("rm");
            if fs::rename(self.layer_path(&l.diff_id), &tmp).is_ok() {
                let _ = fs::remove_dir_all(&tmp);
            }
        }
        Ok(target)
    }
}

fn find_in<'a>(images: &'a [ImageRecord], reference: &str) -> Result<&'a ImageRecord, StoreError> {
    let normalized = normalize_reference(reference);
    if let Some(i) = images
        .iter()
        .find(|i| i.names.iter().any(|n| n == &normalized || n == reference))
    {
        return Ok(i);
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hex = hex.to_ascii_lowercase();
        let matches: Vec<&ImageRecord> = images
            .iter()
            .filter(|i| {
                i.config_digest.hex().starts_with(&hex) || i.manifest_digest.hex().starts_with(&hex)
            })
            .collect();
        match matches.len() {
            0 => {}
            1 => return Ok(matches[0]),
            count => {
                return Err(StoreError::Ambiguous {
                    reference: reference.to_string(),
                    count,
                })
            }
        }
    }
    Err(StoreError::NoSuchImage(reference.to_string()))
}

/// Everything read through it is hashed, counted and written to a file.
struct TeeReader<'a, R> {
    inner: R,
    file: &'a mut File,
    hasher: Sha256,
    total: u64,
    limit: u64,
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.total > self.limit {
            return Err(io::Error::other(format!(
                "more bytes than the descriptor's {}",
                self.limit
            )));
        }
        self.hasher.update(&buf[..n]);
        self.file.write_all(&buf[..n])?;
        Ok(n)
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_checks_digest_and_leaves_nothing_on_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(dir.path()).expect("open");
        let good = OciDigest::sha256_of(b"hello");
        store
            .ingest(&good, Some(5), 1 << 20, &b"hello"[..])
            .expect("ingest");
        assert!(store.has_blob(&good));
        let claimed = OciDigest::sha256_of(b"other");
        let err = store
            .ingest(&claimed, None, 1 << 20, &b"hello"[..])
            .expect_err("mismatch");
        assert!(matches!(err, StoreError::DigestMismatch { .. }));
        assert!(!store.has_blob(&claimed));
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
        let err = store
            .ingest(&claimed, Some(3), 1 << 20, &b"other"[..])
            .expect_err("size");
        assert!(matches!(err, StoreError::SizeMismatch { .. }));
    }

    #[test]
    fn references_normalize() {
        assert_eq!(normalize_reference("bb"), "bb:latest");
        assert_eq!(
            normalize_reference("localhost:5000/bb"),
            "localhost:5000/bb:latest"
        );
        assert_eq!(normalize_reference("bb:1"), "bb:1");
    }
}
