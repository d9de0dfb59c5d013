//! Safe unpacking of one layer tar into an empty directory, in overlayfs format.
//!
//! Rules, each failure naming the offending entry:
//! - paths are relative and never contain `..`; absolute paths are refused;
//! - nothing is written through a symlink: every parent of an entry must be a real directory;
//! - relative symlinks may not climb above the layer root; absolute symlink targets are kept, as
//!   they resolve inside the container's root at run time (vouch itself never follows them);
//! - hard links must point at an entry already unpacked in this layer;
//! - character and block devices are refused; so are entries over the size limits;
//! - setuid and setgid bits are dropped;
//! - whiteouts become overlayfs whiteouts (`.wh.NAME` -> char device 0:0 `NAME`,
//!   `.wh..wh..opq` -> `trusted.overlay.opaque=y` on the directory).

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tar::EntryType;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Limits that bound the work a hostile layer can cause.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    pub max_entry_size: u64,
    pub max_total_size: u64,
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_entry_size: 8 << 30,
            max_total_size: 64 << 30,
            max_entries: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?}: {reason}")]
    Refused { entry: String, reason: String },
    #[error("layer entry {entry:?} is a device node; device nodes are not allowed in images")]
    DeviceNode { entry: String },
    #[error("layer entry {entry:?} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error("layer holds more than {limit} bytes in all")]
    TotalTooLarge { limit: u64 },
    #[error("layer holds more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("layer entry {entry:?} has unsupported type {kind}")]
    Unsupported { entry: String, kind: String },
    #[error("layer entry {entry:?} could not be written")]
    Io {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("layer is not a valid tar stream")]
    Tar(#[source] io::Error),
}

fn refused(entry: &str, reason: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

/// Turn an archive path into clean relative components, refusing anything that could escape.
fn clean_path(entry: &str, raw: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for comp in raw.components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(refused(entry, "path contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(entry, "absolute path"))
            }
        }
    }
    Ok(out)
}

/// Ensure every parent of `rel` under `root` is a real directory, creating missing ones.
fn prepare_parents(root: &Path, rel: &Path, entry: &str) -> Result<(), UnpackError> {
    let mut cur = root.to_path_buf();
    let parent = match rel.parent() {
        Some(p) => p,
        None => return Ok(()),
    };
    for comp in parent.components() {
        cur.push(comp);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(
                    entry,
                    format!(
                        "parent {:?} is a symlink; writing through symlinks is not allowed",
                        strip(root, &cur)
                    ),
                ))
            }
            Ok(_) => {
                return Err(refused(
                    entry,
                    format!("parent {:?} is not a directory", strip(root, &cur)),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|source| UnpackError::Io {
                    entry: entry.to_string(),
                    source,
                })?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)).map_err(|source| {
                    UnpackError::Io {
                        entry: entry.to_string(),
                        source,
                    }
                })?;
            }
            Err(source) => {
                return Err(UnpackError::Io {
                    entry: entry.to_string(),
                    source,
                })
            }
        }
    }
    Ok(())
}

fn strip(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Remove whatever is at `path` (not following symlinks) so an entry can replace it.
fn clear(path: &Path, entry: &str, keep_dir: bool) -> Result<(), UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => {
            if keep_dir {
                return Ok(());
            }
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|source| UnpackError::Io {
        entry: entry.to_string(),
        source,
    })
}

/// Whether a relative symlink target, resolved from the link's directory, stays inside the root.
fn relative_target_stays_inside(link_rel: &Path, target: &Path) -> bool {
    let mut depth: i64 = link_rel
        .parent()
        .map(|p| p.components().count() as i64)
        .unwrap_or(0);
    for comp in target.components() {
        match comp {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    true
}

/// Whether an unpacked layer's directory is opaque (hides the same directory in lower layers).
pub fn is_opaque(dir: &Path) -> bool {
    let (Ok(p), Ok(n)) = (
        CString::new(dir.as_os_str().as_bytes()),
        CString::new("trusted.overlay.opaque"),
    ) else {
        return false;
    };
    let mut value = [0u8; 2];
    // SAFETY: both names are valid NUL-terminated strings that outlive the call, and the buffer
    // pointer/length pair describes a live, writable array.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call, and the value
    // pointer/length pair describes a live slice.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

struct DirMeta {
    path: PathBuf,
    mode: u32,
    mtime: i64,
}

/// Unpack a layer tar from `reader` into `dest`, an empty directory that the caller renames
/// into place on success (and removes on failure).
pub fn unpack_layer<R: Read>(
    reader: R,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    let mut dirs: Vec<DirMeta> = Vec::new();
    for item in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = item.map_err(UnpackError::Tar)?;
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw_path = entry.path().map_err(UnpackError::Tar)?.into_owned();
        let name = raw_path.display().to_string();
        let header_size = entry.header().size().map_err(UnpackError::Tar)?;
        if header_size > limits.max_entry_size {
            return Err(UnpackError::TooLarge {
                entry: name,
                size: header_size,
                limit: limits.max_entry_size,
            });
        }
        stats.bytes = stats.bytes.saturating_add(header_size);
        if stats.bytes > limits.max_total_size {
            return Err(UnpackError::TotalTooLarge {
                limit: limits.max_total_size,
            });
        }
        let rel = clean_path(&name, &raw_path)?;
        if rel.as_os_str().is_empty() {
            // The layer root itself ("./"): only its mode and mtime apply.
            if entry.header().entry_type() == EntryType::Directory {
                let mode = entry.header().mode().map_err(UnpackError::Tar)? & 0o1777;
                let mtime = entry.header().mtime().map_err(UnpackError::Tar)? as i64;
                dirs.push(DirMeta {
                    path: dest.to_path_buf(),
                    mode,
                    mtime,
                });
            }
            continue;
        }
        prepare_parents(dest, &rel, &name)?;
        let target = dest.join(&rel);
        let io_err = |source| UnpackError::Io {
            entry: name.clone(),
            source,
        };

        // Whiteouts are identified by name, whatever their tar type.
        let file_name = rel
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if file_name == OPAQUE_MARKER {
            let dir = target.parent().unwrap_or(dest);
            set_xattr(dir, "trusted.overlay.opaque", b"y").map_err(io_err)?;
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(refused(&name, "malformed whiteout"));
            }
            let wpath = target.with_file_name(hidden);
            clear(&wpath, &name, false)?;
            mknod(&wpath, SFlag::S_IFCHR, Mode::empty(), 0).map_err(|e| io_err(e.into()))?;
            continue;
        }

        let header = entry.header();
        let mode = header.mode().map_err(UnpackError::Tar)? & 0o1777; // drop setuid and setgid
        let uid = header.uid().map_err(UnpackError::Tar)?;
        let gid = header.gid().map_err(UnpackError::Tar)?;
        let mtime = header.mtime().map_err(UnpackError::Tar)? as i64;
        let kind = header.entry_type();
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                clear(&target, &name, false)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(io_err)?;
                let copied = io::copy(&mut (&mut entry).take(header_size), &mut file)
                    .map_err(UnpackError::Tar)?;
                if copied != header_size {
                    return Err(UnpackError::Tar(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("entry {name:?} is truncated"),
                    )));
                }
                drop(file);
                finish(&target, uid, gid, Some(mode), mtime).map_err(io_err)?;
            }
            EntryType::Directory => {
                clear(&target, &name, true)?;
                if !target.exists() {
                    fs::create_dir(&target).map_err(io_err)?;
                }
                std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32))
                    .map_err(io_err)?;
                dirs.push(DirMeta {
                    path: target,
                    mode,
                    mtime,
                });
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(UnpackError::Tar)?
                    .ok_or_else(|| refused(&name, "symlink without a target"))?
                    .into_owned();
                if link.is_relative() && !relative_target_stays_inside(&rel, &link) {
                    return Err(refused(
                        &name,
                        format!(
                            "symlink target {:?} points outside the image root",
                            link.display()
                        ),
                    ));
                }
                clear(&target, &name, false)?;
                std::os::unix::fs::symlink(&link, &target).map_err(io_err)?;
                finish(&target, uid, gid, None, mtime).map_err(io_err)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(UnpackError::Tar)?
                    .ok_or_else(|| refused(&name, "hard link without a target"))?
                    .into_owned();
                let link_rel = clean_path(&name, &link).map_err(|_| {
                    refused(
                        &name,
                        format!(
                            "hard link target {:?} points outside the layer",
                            link.display()
                        ),
                    )
                })?;
                prepare_parents(dest, &link_rel, &name).map_err(|_| {
                    refused(
                        &name,
                        format!(
                            "hard link target {:?} is reached through a symlink",
                            link.display()
                        ),
                    )
                })?;
                let source = dest.join(&link_rel);
                match fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    Ok(_) => return Err(refused(&name, "hard link to a directory")),
                    Err(_) => {
                        return Err(refused(
                            &name,
                            format!("hard link target {:?} is not in this layer", link.display()),
                        ))
                    }
                }
                clear(&target, &name, false)?;
                fs::hard_link(&source, &target).map_err(io_err)?;
            }
            EntryType::Char | EntryType::Block => {
                return Err(UnpackError::DeviceNode { entry: name })
            }
            EntryType::Fifo => {
                clear(&target, &name, false)?;
                mknod(&target, SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0)
                    .map_err(|e| io_err(e.into()))?;
                finish(&target, uid, gid, Some(mode), mtime).map_err(io_err)?;
            }
            other => {
                return Err(UnpackError::Unsupported {
                    entry: name,
                    kind: format!("{other:?}"),
                })
            }
        }
    }
    // Directory modes last, deepest first, so a read-only directory does not block its children.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
    for d in dirs {
        let name = strip(dest, &d.path);
        fs::set_permissions(&d.path, fs::Permissions::from_mode(d.mode)).map_err(|source| {
            UnpackError::Io {
                entry: name.clone(),
                source,
            }
        })?;
        set_mtime(&d.path, d.mtime).map_err(|source| UnpackError::Io {
            entry: name,
            source,
        })?;
    }
    Ok(stats)
}

fn set_mtime(path: &Path, mtime: i64) -> io::Result<()> {
    let ts = TimeSpec::new(mtime, 0);
    utimensat(None, path, &ts, &ts, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

/// Ownership, mode (never for symlinks; ownership first because chown clears mode bits) and mtime.
fn finish(path: &Path, uid: u64, gid: u64, mode: Option<u32>, mtime: i64) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid as u32), Some(gid as u32))?;
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    set_mtime(path, mtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Build a tar by hand so hostile headers can be written exactly.
    struct TarBuilder(Vec<u8>);

    impl TarBuilder {
        fn new() -> Self {
            TarBuilder(Vec::new())
        }
        fn entry(
            mut self,
            path: &str,
            kind: EntryType,
            link: &str,
            mode: u32,
            data: &[u8],
        ) -> Self {
            let mut h = tar::Header::new_ustar();
            h.as_mut_bytes()[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            if !link.is_empty() {
                h.as_ustar_mut().expect("ustar").linkname[..link.len()]
                    .copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            self.0.extend_from_slice(h.as_bytes());
            self.0.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.0.extend(std::iter::repeat_n(0u8, pad));
            self
        }
        fn file(self, path: &str, data: &[u8]) -> Self {
            self.entry(path, EntryType::Regular, "", 0o644, data)
        }
        fn finish(mut self) -> Vec<u8> {
            self.0.extend(std::iter::repeat_n(0u8, 1024));
            self.0
        }
    }

    fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<UnpackStats, UnpackError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = unpack_layer(bytes, dir.path(), &UnpackLimits::default());
        (dir, r)
    }

    #[test]
    fn ordinary_layer_unpacks_with_modes_and_links() {
        let tar = TarBuilder::new()
            .entry("./bin/", EntryType::Directory, "", 0o755, b"")
            .entry("bin/busybox", EntryType::Regular, "", 0o4755, b"ELF")
            .entry("bin/sh", EntryType::Symlink, "busybox", 0o777, b"")
            .entry("bin/abs", EntryType::Symlink, "/bin/busybox", 0o777, b"")
            .entry("bin/hard", EntryType::Link, "bin/busybox", 0o755, b"")
            .entry("etc/ro/", EntryType::Directory, "", 0o555, b"")
            .file("etc/ro/f", b"x")
            .finish();
        let (dir, r) = unpack(&tar);
        r.expect("unpack");
        let bb = fs::metadata(dir.path().join("bin/busybox")).expect("meta");
        assert_eq!(bb.mode() & 0o7777, 0o755, "setuid must be stripped");
        assert_eq!(
            fs::read_link(dir.path().join("bin/sh")).expect("link"),
            Path::new("busybox")
        );
        assert_eq!(
            bb.ino(),
            fs::metadata(dir.path().join("bin/hard"))
                .expect("meta")
                .ino()
        );
        assert_eq!(fs::read(dir.path().join("etc/ro/f")).expect("read"), b"x");
        assert_eq!(
            fs::metadata(dir.path().join("etc/ro"))
                .expect("meta")
                .mode()
                & 0o777,
            0o555
        );
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let tar = TarBuilder::new()
            .file("etc/.wh.passwd", b"")
            .file("var/.wh..wh..opq", b"")
            .finish();
        let (dir, r) = unpack(&tar);
        r.expect("unpack");
        let m = fs::symlink_metadata(dir.path().join("etc/passwd")).expect("whiteout");
        use std::os::unix::fs::FileTypeExt;
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert!(is_opaque(&dir.path().join("var")));
        assert!(!is_opaque(&dir.path().join("etc")));
        assert!(!is_opaque(&dir.path().join("no-such-dir")));
    }

    fn assert_refused(tar: Vec<u8>, entry: &str) {
        let (dir, r) = unpack(&tar);
        let err = r.expect_err("hostile layer accepted");
        let msg = err.to_string();
        assert!(msg.contains(entry), "error {msg:?} does not name {entry:?}");
        drop(dir);
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        assert_refused(
            TarBuilder::new().file("../../escape", b"x").finish(),
            "../../escape",
        );
        assert_refused(
            TarBuilder::new().file("/etc/evil", b"x").finish(),
            "/etc/evil",
        );
        assert_refused(
            TarBuilder::new()
                .entry("up", EntryType::Symlink, "../../..", 0o777, b"")
                .finish(),
            "up",
        );
        assert_refused(
            TarBuilder::new()
                .entry("link", EntryType::Symlink, "/tmp", 0o777, b"")
                .file("link/pwned", b"x")
                .finish(),
            "link/pwned",
        );
        assert_refused(
            TarBuilder::new()
                .entry("h", EntryType::Link, "../../etc/shadow", 0o644, b"")
                .finish(),
            "h",
        );
        assert_refused(
            TarBuilder::new()
                .entry("dev/sda", EntryType::Block, "", 0o600, b"")
                .finish(),
            "dev/sda",
        );
        assert_refused(
            TarBuilder::new()
                .entry("dev/mem", EntryType::Char, "", 0o600, b"")
                .finish(),
            "dev/mem",
        );
    }

    #[test]
    fn oversized_entry_is_refused_before_reading() {
        // A header claiming 1 TiB with no data behind it.
        let mut h = tar::Header::new_ustar();
        h.set_path("huge").expect("path");
        h.set_size(1 << 40);
        h.set_entry_type(EntryType::Regular);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(0u8, 1024));
        let (_dir, r) = unpack(&bytes);
        assert!(
            matches!(r, Err(UnpackError::TooLarge { ref entry, .. }) if entry == "huge"),
            "{r:?}"
        );
    }

    #[test]
    fn truncated_entry_is_an_error() {
        let mut tar = TarBuilder::new().file("f", &[7u8; 2000]).finish();
        tar.truncate(512 + 1000);
        let (_dir, r) = unpack(&tar);
        assert!(r.is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Arbitrary bytes, and a valid layer with bytes changed, end in an error or a clean
        /// unpack inside the directory: never a panic, never a write outside.
        #[test]
        fn arbitrary_and_mutated_layers_never_panic(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 1..6),
        ) {
            let (_d, _) = unpack(&noise);
            let mut tar = TarBuilder::new().entry("a/", EntryType::Directory, "", 0o755, b"").file("a/f", b"data").finish();
            for (at, v) in &edits {
                let i = at.index(tar.len());
                tar[i] = *v;
            }
            let outside = tempfile::tempdir().expect("outside");
            let dir = outside.path().join("layer");
            std::fs::create_dir(&dir).expect("dir");
            let _ = unpack_layer(tar.as_slice(), &dir, &UnpackLimits::default());
            let siblings: Vec<_> = std::fs::read_dir(outside.path()).expect("read").flatten().map(|e| e.file_name()).collect();
            proptest::prop_assert_eq!(siblings, vec![std::ffi::OsString::from("layer")]);
        }
    }
}
