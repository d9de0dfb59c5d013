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

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::beneath::{self, borrow};

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

/// A directory entry whose mode and mtime are applied once the layer is complete (a read-only
/// directory must not block its children), to the very directory the entry created: found again
/// by its path through real directories and recognised by device and inode.
struct PendingDir {
    mode: u32,
    mtime: i64,
    dev: u64,
    ino: u64,
}

/// The state of one layer being unpacked: the layer root, the parent directory of the previous
/// entry (entries of one directory usually come together), and the directories whose metadata
/// is still to be applied.
struct Unpacker {
    root: OwnedFd,
    /// The last parent directory walked to, by its path relative to the root.
    parent: Option<(PathBuf, OwnedFd)>,
    pending: BTreeMap<PathBuf, PendingDir>,
}

fn io_error(entry: &str) -> impl Fn(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        entry: entry.to_string(),
        source,
    }
}

/// A uid or gid from a tar header as the kernel takes it: `u32::MAX` means "leave unchanged" to
/// chown, and anything larger would wrap, so both are refused rather than silently becoming root.
fn tar_id(entry: &str, what: &str, id: u64) -> Result<u32, UnpackError> {
    u32::try_from(id)
        .ok()
        .filter(|i| *i != u32::MAX)
        .ok_or_else(|| refused(entry, format!("{what} {id} is out of range")))
}

impl Unpacker {
    fn new(dest: &Path) -> Result<Self, UnpackError> {
        let root = beneath::open_root(dest).map_err(io_error("."))?;
        Ok(Unpacker {
            root,
            parent: None,
            pending: BTreeMap::new(),
        })
    }

    /// The directory that holds `rel`, reached from the root through real directories only
    /// (missing ones are created, mode 0755); a symlink or a file on the way refuses the entry.
    fn parent_of(&mut self, rel: &Path, entry: &str) -> Result<BorrowedFd<'_>, UnpackError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if self.parent.as_ref().is_none_or(|(p, _)| p != parent) {
            let mut cur = self.root.try_clone().map_err(io_error(entry))?;
            let mut walked = PathBuf::new();
            for c in beneath::components(parent) {
                walked.push(c);
                cur = match beneath::open_dir(borrow(&cur), c) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        beneath::mkdir(borrow(&cur), c, 0o755).map_err(io_error(entry))?;
                        let fd = beneath::open_dir(borrow(&cur), c).map_err(io_error(entry))?;
                        beneath::fchmod(borrow(&fd), 0o755).map_err(io_error(entry))?;
                        fd
                    }
                    Err(e) => {
                        let what = match beneath::stat(borrow(&cur), c) {
                            Ok(Some(st)) if beneath::is_symlink(&st) => {
                                "is a symlink; writing through symlinks is not allowed"
                            }
                            Ok(Some(st)) if !beneath::is_dir(&st) => "is not a directory",
                            _ => return Err(io_error(entry)(e)),
                        };
                        return Err(refused(
                            entry,
                            format!("parent {:?} {what}", walked.display().to_string()),
                        ));
                    }
                };
            }
            self.parent = Some((parent.to_path_buf(), cur));
        }
        match &self.parent {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(io_error(entry)(io::Error::other("no parent directory"))),
        }
    }

    /// Remove whatever is at `rel` (never following a symlink) so an entry can take its place;
    /// a directory is kept when `keep_dir`. A removed directory takes the pending metadata of
    /// everything under it along, and the cached parent with it.
    fn clear(
        &mut self,
        rel: &Path,
        name: &OsStr,
        keep_dir: bool,
        entry: &str,
    ) -> Result<(), UnpackError> {
        let parent = self.parent_of(rel, entry)?;
        let Some(st) = beneath::stat(parent, name).map_err(io_error(entry))? else {
            return Ok(());
        };
        if beneath::is_dir(&st) {
            if keep_dir {
                return Ok(());
            }
            beneath::remove_all(parent, name).map_err(io_error(entry))?;
            self.forget_under(rel);
            // The cached parent may have been inside what was removed.
            self.parent = None;
        } else {
            beneath::unlink(parent, name).map_err(io_error(entry))?;
        }
        Ok(())
    }

    /// Drop the pending metadata of `rel` and of everything below it.
    fn forget_under(&mut self, rel: &Path) {
        let doomed: Vec<PathBuf> = self
            .pending
            .range(rel.to_path_buf()..)
            .take_while(|(k, _)| k.starts_with(rel))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.pending.remove(&k);
        }
    }

    /// Apply directory modes and times, deepest first, each to the directory its entry made.
    fn finish_dirs(self) -> Result<(), UnpackError> {
        let mut dirs: Vec<(PathBuf, PendingDir)> = self.pending.into_iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, d) in dirs {
            let entry = rel.display().to_string();
            // A directory that is no longer there (or no longer the same object) has no
            // metadata left to receive: nothing is applied by path.
            let Ok(fd) = beneath::walk(borrow(&self.root), &rel) else {
                continue;
            };
            let st = beneath::fstat(borrow(&fd)).map_err(io_error(&entry))?;
            if st.st_dev != d.dev || st.st_ino != d.ino {
                continue;
            }
            beneath::fchmod(borrow(&fd), d.mode).map_err(io_error(&entry))?;
            beneath::futimes(borrow(&fd), d.mtime).map_err(io_error(&entry))?;
        }
        Ok(())
    }

    fn remember_dir(
        &mut self,
        rel: &Path,
        fd: BorrowedFd<'_>,
        mode: u32,
        mtime: i64,
        entry: &str,
    ) -> Result<(), UnpackError> {
        let st = beneath::fstat(fd).map_err(io_error(entry))?;
        self.pending.insert(
            rel.to_path_buf(),
            PendingDir {
                mode,
                mtime,
                dev: st.st_dev,
                ino: st.st_ino,
            },
        );
        Ok(())
    }
}

/// Owner, mode and time of an object just created, through its own descriptor.
fn finish_object(fd: BorrowedFd<'_>, uid: u32, gid: u32, mode: u32, mtime: i64) -> io::Result<()> {
    // Ownership first: chown clears mode bits.
    beneath::fchown(fd, uid, gid)?;
    beneath::fchmod(fd, mode)?;
    beneath::futimes(fd, mtime)
}

/// Unpack a layer tar from `reader` into `dest`, an empty directory that the caller renames
/// into place on success (and removes on failure).
///
/// Every change is made relative to descriptors of real directories reached from `dest` with
/// `O_NOFOLLOW` at each component, and metadata goes to the object an entry created (its own
/// descriptor, or `AT_SYMLINK_NOFOLLOW`): a later entry that replaces a path with a symlink or
/// a hard link can never redirect a change to anything else, inside the layer or out of it.
pub fn unpack_layer<R: Read>(
    reader: R,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    let mut u = Unpacker::new(dest)?;
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
        let header = entry.header();
        let mode = header.mode().map_err(UnpackError::Tar)? & 0o1777; // drop setuid and setgid
        let mtime = header.mtime().map_err(UnpackError::Tar)? as i64;
        let kind = header.entry_type();
        let Some(file_name) = rel.file_name().map(OsStr::to_os_string) else {
            // The layer root itself ("./"): only its mode and mtime apply.
            if kind == EntryType::Directory {
                let root = u.root.try_clone().map_err(io_error(&name))?;
                u.remember_dir(Path::new(""), borrow(&root), mode, mtime, &name)?;
            }
            continue;
        };
        let fname = file_name.to_string_lossy().into_owned();

        // Whiteouts are identified by name, whatever their tar type.
        if fname == OPAQUE_MARKER {
            let parent = u.parent_of(&rel, &name)?;
            beneath::fsetxattr(parent, "trusted.overlay.opaque", b"y").map_err(io_error(&name))?;
            continue;
        }
        if let Some(hidden) = fname.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(refused(&name, "malformed whiteout"));
            }
            let hidden_rel = rel.with_file_name(hidden);
            let hidden = OsStr::new(hidden);
            u.clear(&hidden_rel, hidden, false, &name)?;
            let parent = u.parent_of(&hidden_rel, &name)?;
            beneath::mknod(parent, hidden, libc::S_IFCHR, 0).map_err(io_error(&name))?;
            continue;
        }

        let uid = tar_id(&name, "uid", header.uid().map_err(UnpackError::Tar)?)?;
        let gid = tar_id(&name, "gid", header.gid().map_err(UnpackError::Tar)?)?;
        let file_name = file_name.as_os_str();
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                u.clear(&rel, file_name, false, &name)?;
                let parent = u.parent_of(&rel, &name)?;
                let mut file = beneath::create_file(parent, file_name).map_err(io_error(&name))?;
                let copied = io::copy(&mut (&mut entry).take(header_size), &mut file)
                    .map_err(UnpackError::Tar)?;
                if copied != header_size {
                    return Err(UnpackError::Tar(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("entry {name:?} is truncated"),
                    )));
                }
                finish_object(file.as_fd(), uid, gid, mode, mtime).map_err(io_error(&name))?;
            }
            EntryType::Directory => {
                u.clear(&rel, file_name, true, &name)?;
                let parent = u.parent_of(&rel, &name)?;
                let fd = match beneath::open_dir(parent, file_name) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        beneath::mkdir(parent, file_name, 0o700).map_err(io_error(&name))?;
                        beneath::open_dir(parent, file_name).map_err(io_error(&name))?
                    }
                    Err(e) => return Err(io_error(&name)(e)),
                };
                beneath::fchown(borrow(&fd), uid, gid).map_err(io_error(&name))?;
                // Usable while the layer is unpacked; the entry's own mode comes at the end.
                beneath::fchmod(borrow(&fd), 0o755).map_err(io_error(&name))?;
                u.remember_dir(&rel, borrow(&fd), mode, mtime, &name)?;
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
                u.clear(&rel, file_name, false, &name)?;
                let parent = u.parent_of(&rel, &name)?;
                beneath::symlink(parent, file_name, &link).map_err(io_error(&name))?;
                beneath::lchown_at(parent, file_name, uid, gid).map_err(io_error(&name))?;
                beneath::lutimes_at(parent, file_name, mtime).map_err(io_error(&name))?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(UnpackError::Tar)?
                    .ok_or_else(|| refused(&name, "hard link without a target"))?
                    .into_owned();
                let outside = || {
                    refused(
                        &name,
                        format!(
                            "hard link target {:?} points outside the layer",
                            link.display()
                        ),
                    )
                };
                let link_rel = clean_path(&name, &link).map_err(|_| outside())?;
                let Some(src_name) = link_rel.file_name().map(OsStr::to_os_string) else {
                    return Err(outside());
                };
                if link_rel == rel {
                    return Err(refused(&name, "hard link to itself"));
                }
                if link_rel.starts_with(&rel) {
                    return Err(refused(
                        &name,
                        "hard link replaces a directory that holds its target",
                    ));
                }
                let not_here = || {
                    refused(
                        &name,
                        format!("hard link target {:?} is not in this layer", link.display()),
                    )
                };
                let src_dir = beneath::walk(
                    borrow(&u.root),
                    link_rel.parent().unwrap_or(Path::new("")),
                )
                .map_err(|_| {
                    refused(
                        &name,
                        format!(
                            "hard link target {:?} is reached through a symlink or is not in this layer",
                            link.display()
                        ),
                    )
                })?;
                match beneath::stat(borrow(&src_dir), &src_name).map_err(io_error(&name))? {
                    Some(st) if !beneath::is_dir(&st) => {}
                    Some(_) => return Err(refused(&name, "hard link to a directory")),
                    None => return Err(not_here()),
                }
                u.clear(&rel, file_name, false, &name)?;
                let parent = u.parent_of(&rel, &name)?;
                beneath::link(borrow(&src_dir), &src_name, parent, file_name)
                    .map_err(io_error(&name))?;
            }
            EntryType::Char | EntryType::Block => {
                return Err(UnpackError::DeviceNode { entry: name })
            }
            EntryType::Fifo => {
                u.clear(&rel, file_name, false, &name)?;
                let parent = u.parent_of(&rel, &name)?;
                beneath::mknod(parent, file_name, libc::S_IFIFO | 0o600, 0)
                    .map_err(io_error(&name))?;
                let fifo = beneath::open_object(parent, file_name).map_err(io_error(&name))?;
                finish_object(fifo.as_fd(), uid, gid, mode, mtime).map_err(io_error(&name))?;
            }
            other => {
                return Err(UnpackError::Unsupported {
                    entry: name,
                    kind: format!("{other:?}"),
                })
            }
        }
    }
    u.finish_dirs()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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

    /// A host file and a host directory that hostile layers aim at, with everything about them
    /// that an unpack could change.
    struct Host {
        _dir: tempfile::TempDir,
        file: PathBuf,
        sub: PathBuf,
    }

    #[derive(Debug, PartialEq)]
    struct Snapshot {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: i64,
        content: Vec<u8>,
        sub_mode: u32,
        sub_mtime: i64,
        sub_entries: Vec<std::ffi::OsString>,
    }

    impl Host {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("host");
            let file = dir.path().join("shadow");
            fs::write(&file, b"host secret").expect("write");
            fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).expect("chmod");
            std::os::unix::fs::chown(&file, Some(0), Some(42)).expect("chown");
            let sub = dir.path().join("etc");
            fs::create_dir(&sub).expect("sub");
            fs::set_permissions(&sub, fs::Permissions::from_mode(0o750)).expect("chmod");
            let t = nix::sys::time::TimeSpec::new(1_000_000, 0);
            for p in [&file, &sub] {
                nix::sys::stat::utimensat(
                    None,
                    p.as_path(),
                    &t,
                    &t,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .expect("times");
            }
            Host {
                _dir: dir,
                file,
                sub,
            }
        }

        fn snapshot(&self) -> Snapshot {
            let m = fs::symlink_metadata(&self.file).expect("file");
            let s = fs::symlink_metadata(&self.sub).expect("sub");
            let mut sub_entries: Vec<_> = fs::read_dir(&self.sub)
                .expect("list")
                .flatten()
                .map(|e| e.file_name())
                .collect();
            sub_entries.sort();
            Snapshot {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                content: fs::read(&self.file).expect("read"),
                sub_mode: s.mode(),
                sub_mtime: s.mtime(),
                sub_entries,
            }
        }
    }

    /// One tar entry of a test corpus: path, type, link target, mode.
    type Spec = (String, EntryType, String, u32);

    fn dir_entry(path: &str, mode: u32) -> Spec {
        (path.to_string(), EntryType::Directory, String::new(), mode)
    }

    fn link_entry(path: &str, kind: EntryType, target: &str) -> Spec {
        (path.to_string(), kind, target.to_string(), 0o777)
    }

    /// Every order in which a hostile layer first makes a path one kind of object and then
    /// another (directory, then symlink or hard link to a host object; nested directories whose
    /// parent is replaced; whiteouts then recreation; the layer root): the host file and the
    /// host directory keep their mode, owner, times and content, and nothing appears in them.
    #[test]
    fn replaced_entries_never_change_anything_outside() {
        let host = Host::new();
        let before = host.snapshot();
        let file = host.file.to_str().expect("utf8").to_string();
        let sub = host.sub.to_str().expect("utf8").to_string();
        use EntryType::{Link, Regular, Symlink};
        let reg = |p: &str, mode: u32| (p.to_string(), Regular, String::new(), mode);
        let corpus: Vec<(&str, Vec<Spec>)> = vec![
            (
                "directory, then a symlink to a host file",
                vec![dir_entry("d/", 0o1777), link_entry("d", Symlink, &file)],
            ),
            (
                "directory, then a symlink to a host directory",
                vec![dir_entry("d/", 0o777), link_entry("d", Symlink, &sub)],
            ),
            (
                "directory, then a hard link to a symlink to a host file",
                vec![
                    link_entry("s", Symlink, &file),
                    dir_entry("d/", 0o1777),
                    link_entry("d", Link, "s"),
                ],
            ),
            (
                "nested directory, then its parent replaced by a symlink",
                vec![
                    dir_entry("a/", 0o755),
                    dir_entry("a/etc/", 0o777),
                    link_entry(
                        "a",
                        Symlink,
                        host.file.parent().expect("parent").to_str().expect("utf8"),
                    ),
                ],
            ),
            (
                "REFUSED nested directory, parent replaced by a symlink, child recreated",
                vec![
                    dir_entry("a/etc/", 0o777),
                    link_entry(
                        "a",
                        Symlink,
                        host.file.parent().expect("parent").to_str().expect("utf8"),
                    ),
                    dir_entry("a/etc/", 0o777),
                ],
            ),
            (
                "directory, then a whiteout, then a symlink",
                vec![
                    dir_entry("d/", 0o1777),
                    reg(".wh.d", 0o644),
                    link_entry("d", Symlink, &file),
                ],
            ),
            (
                "directory, then an opaque marker inside, then the directory replaced",
                vec![
                    dir_entry("d/", 0o1777),
                    reg("d/.wh..wh..opq", 0o644),
                    link_entry("d", Symlink, &sub),
                ],
            ),
            (
                "file, then a directory, then a symlink",
                vec![
                    reg("d", 0o4777),
                    dir_entry("d/", 0o1777),
                    link_entry("d", Symlink, &file),
                ],
            ),
            (
                "directory twice, then a symlink",
                vec![
                    dir_entry("d/", 0o700),
                    dir_entry("d/", 0o1777),
                    link_entry("d", Symlink, &file),
                ],
            ),
            (
                "a symlink to a host file, then a directory over it, then a file in it",
                vec![
                    link_entry("d", Symlink, &file),
                    dir_entry("d/", 0o1777),
                    reg("d/x", 0o644),
                ],
            ),
            (
                "a hard link to a symlink, then a file entry over the hard link",
                vec![
                    link_entry("s", Symlink, &file),
                    link_entry("h", Link, "s"),
                    reg("h", 0o777),
                ],
            ),
            (
                "the layer root, then a symlink named like it",
                vec![dir_entry("./", 0o1777), link_entry("./x", Symlink, &file)],
            ),
            (
                "a fifo, then a symlink over it",
                vec![
                    ("p".to_string(), EntryType::Fifo, String::new(), 0o666),
                    link_entry("p", Symlink, &file),
                ],
            ),
        ];
        for (what, entries) in corpus {
            let mut tar = TarBuilder::new();
            for (path, kind, link, mode) in &entries {
                tar = tar.entry(path, *kind, link, *mode, b"");
            }
            let (dir, r) = unpack(&tar.finish());
            assert_eq!(host.snapshot(), before, "{what}: the host changed");
            if let Some(what) = what.strip_prefix("REFUSED ") {
                // Writing through the symlink is refused, naming the entry.
                let err = r.expect_err(what);
                assert!(
                    matches!(&err, UnpackError::Refused { entry, reason } if entry == "a/etc/" && reason.contains("symlink")),
                    "{what}: {err}"
                );
                continue;
            }
            r.unwrap_or_else(|e| panic!("{what}: {e}"));
            // What stays in the layer is the last entry's kind, and it is a link, not a copy.
            let (last, kind, target, _) = entries.last().expect("entries");
            let last = dir.path().join(last.trim_end_matches('/'));
            let m = fs::symlink_metadata(&last).unwrap_or_else(|e| panic!("{what}: {e}"));
            match kind {
                Symlink => assert_eq!(
                    fs::read_link(&last).expect("link"),
                    Path::new(target),
                    "{what}"
                ),
                EntryType::Directory => assert!(m.is_dir(), "{what}"),
                _ => {}
            }
        }
    }

    /// The same, across two layers unpacked one after the other (as a pull does): a directory
    /// in the first and a symlink in its place in the second change only their own layers.
    #[test]
    fn replacements_across_layers_change_nothing_outside() {
        let host = Host::new();
        let before = host.snapshot();
        let file = host.file.to_str().expect("utf8").to_string();
        let first = TarBuilder::new()
            .entry("d/", EntryType::Directory, "", 0o1777, b"")
            .entry("e/", EntryType::Directory, "", 0o777, b"")
            .finish();
        let second = TarBuilder::new()
            .entry("d", EntryType::Symlink, &file, 0o777, b"")
            .entry(".wh.e", EntryType::Regular, "", 0o644, b"")
            .entry("e", EntryType::Symlink, &file, 0o777, b"")
            .entry("e2/", EntryType::Directory, "", 0o1777, b"")
            .entry("e2", EntryType::Link, "d", 0o777, b"")
            .finish();
        let (d1, r1) = unpack(&first);
        r1.expect("first");
        let (d2, r2) = unpack(&second);
        r2.expect("second");
        assert_eq!(host.snapshot(), before);
        assert_eq!(
            fs::metadata(d1.path().join("d")).expect("d").mode() & 0o7777,
            0o1777
        );
        assert!(fs::symlink_metadata(d2.path().join("e2"))
            .expect("e2")
            .file_type()
            .is_symlink());
    }

    /// Ids the kernel would take as "unchanged" (u32::MAX) or that do not fit are refused.
    #[test]
    fn out_of_range_ids_are_refused() {
        for (uid, gid) in [
            (u64::from(u32::MAX), 0),
            (0, u64::from(u32::MAX)),
            (1 << 32, 0),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_path("f").expect("path");
            h.set_entry_type(EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_cksum();
            let mut bytes = h.as_bytes().to_vec();
            bytes.extend(std::iter::repeat_n(0u8, 1024));
            let (_d, r) = unpack(&bytes);
            let err = r.expect_err("id accepted");
            assert!(
                matches!(&err, UnpackError::Refused { entry, reason } if entry == "f" && reason.contains("out of range")),
                "{err}"
            );
        }
    }

    /// Directory modes apply to the directory itself, after its children were written, and a
    /// later entry for the same directory wins.
    #[test]
    fn directory_metadata_lands_on_the_directory() {
        let tar = TarBuilder::new()
            .entry("ro/", EntryType::Directory, "", 0o700, b"")
            .entry("ro/", EntryType::Directory, "", 0o555, b"")
            .file("ro/f", b"x")
            .entry("./", EntryType::Directory, "", 0o750, b"")
            .finish();
        let (dir, r) = unpack(&tar);
        r.expect("unpack");
        let m = fs::metadata(dir.path().join("ro")).expect("ro");
        assert_eq!(m.mode() & 0o7777, 0o555);
        assert_eq!(m.mtime(), 1_700_000_000);
        assert_eq!(
            fs::metadata(dir.path()).expect("root").mode() & 0o7777,
            0o750
        );
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
