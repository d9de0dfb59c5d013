//! Read-only copies of host files and directories (`-v /host/dir:/path:ro`; a pod's configMap,
//! secret, downwardAPI and projected volumes), measured by what was copied.
//!
//! A container never sees a host directory itself: its content would not be measured and the
//! host could change it under a running container. vouchd copies it instead, at create, onto a
//! private tmpfs (a Kubernetes Secret's files are never written to disk), and the digest of
//! exactly what it copied is in the measured spec. The copy follows links only where they stay
//! within what is copied (opened with `RESOLVE_BENEATH`, so a link or a rename racing the copy
//! cannot lead it out), takes files, directories and such links (a device, FIFO or socket is
//! refused), keeps modes (without set-id bits) and owners, and is bounded in size and entries.
//! A directory in kubelet's atomic-writer layout (a `..data` link) is copied as the container
//! would read it: its `..`-prefixed bookkeeping entries are left out, so the digest does not
//! depend on the time kubelet wrote it.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::Serialize;
use sha2::{Digest, Sha384};

/// Upper bound on all of one container's copies, in bytes (the tmpfs's size).
pub const COPIES_BYTES: u64 = 16 << 20;
/// Upper bound on the entries (files, directories) of all of one container's copies.
pub const COPIES_ENTRIES: usize = 4096;
/// How deep a copied tree may go.
const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cannot copy {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("cannot copy {path}: a link in it leads outside what is copied, or loops (a copy follows links only within it)")]
    Escapes { path: String },
    #[error("cannot copy {path}: it is a {kind}, and a copy holds only files, directories and links within it")]
    Kind { path: String, kind: &'static str },
    #[error("cannot copy {path}: a name in it is not UTF-8")]
    Name { path: String },
    #[error("cannot copy {path}: over {what} (a container's copies are at most {} MiB in {COPIES_ENTRIES} entries, {MAX_DEPTH} levels deep)", COPIES_BYTES >> 20)]
    TooBig { path: String, what: &'static str },
}

/// One entry of a copy, as measured: `path` relative to the copy's root (`""` for the root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `sha384:<hex>` of a file's content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha384: Option<String>,
}

/// What a copy holds, and its digest: `sha384:<hex>` of the canonical JSON of its entries
/// (sorted by path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub entries: Vec<Entry>,
    pub digest: String,
    pub bytes: u64,
}

/// How much of the bounds the copies made so far have used.
#[derive(Debug, Default, Clone, Copy)]
pub struct Budget {
    pub bytes: u64,
    pub entries: usize,
}

/// The digest a copy of `source` would be measured with (nothing is written).
pub fn digest(source: &Path) -> Result<Copied, CopyError> {
    walk(source, None, &mut Budget::default())
}

/// Copy `source` (a file or a directory) to `dest` (which must not exist), within `budget`.
pub fn copy(source: &Path, dest: &Path, budget: &mut Budget) -> Result<Copied, CopyError> {
    walk(source, Some(dest), budget)
}

fn walk(source: &Path, dest: Option<&Path>, budget: &mut Budget) -> Result<Copied, CopyError> {
    let shown = source.display().to_string();
    let io_err = |e: io::Error| CopyError::Io {
        path: shown.clone(),
        source: e,
    };
    // The root itself is what the caller named: followed if it is a link.
    let root = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(source)
        .map_err(io_err)?;
    let root = OwnedFd::from(root);
    let kubelet = nix::sys::stat::fstatat(
        Some(root.as_raw_fd()),
        "..data",
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFLNK);
    let mut w = Walker {
        root,
        shown: shown.clone(),
        dest,
        kubelet,
        entries: Vec::new(),
        bytes: 0,
        budget,
    };
    w.visit(String::new(), 0)?;
    let mut entries = w.entries;
    let bytes = w.bytes;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let value = serde_json::to_value(&entries).map_err(|e| io_err(io::Error::other(e)))?;
    let digest = vouch_measure::canonical_sha384(&value)
        .map_err(|e| io_err(io::Error::other(e.to_string())))?;
    Ok(Copied {
        entries,
        digest,
        bytes,
    })
}

struct Walker<'a> {
    root: OwnedFd,
    shown: String,
    dest: Option<&'a Path>,
    kubelet: bool,
    entries: Vec<Entry>,
    bytes: u64,
    budget: &'a mut Budget,
}

/// Open `rel` beneath `root`, following links only while they stay beneath it.
fn open_beneath(root: &OwnedFd, rel: &str, flags: i32) -> io::Result<OwnedFd> {
    if rel.is_empty() {
        // The root itself, which may be a file: opened again through its descriptor.
        let extra = if flags & libc::O_PATH != 0 {
            0
        } else {
            libc::O_NOCTTY
        };
        return OpenOptions::new()
            .read(true)
            .custom_flags(flags | extra)
            .open(format!("/proc/self/fd/{}", root.as_raw_fd()))
            .map(OwnedFd::from);
    }
    let path = CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain data; zero is a valid value for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // openat2 takes nothing but O_CLOEXEC and O_DIRECTORY beside O_PATH.
    let extra = if flags & libc::O_PATH != 0 {
        0
    } else {
        libc::O_NOCTTY
    };
    how.flags = (flags | libc::O_CLOEXEC | extra) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the path is a valid C string and `how` a valid open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "directory",
        libc::S_IFREG => "file",
        libc::S_IFLNK => "link",
        libc::S_IFIFO => "FIFO",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "special file",
    }
}

impl Walker<'_> {
    fn path_of(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.shown.clone()
        } else {
            format!("{}/{rel}", self.shown.trim_end_matches('/'))
        }
    }

    fn io(&self, rel: &str, e: io::Error) -> CopyError {
        let path = self.path_of(rel);
        match e.raw_os_error() {
            Some(libc::EXDEV) | Some(libc::ELOOP) => CopyError::Escapes { path },
            _ => CopyError::Io { path, source: e },
        }
    }

    fn count(&mut self, rel: &str, bytes: u64) -> Result<(), CopyError> {
        self.budget.entries += 1;
        self.budget.bytes += bytes;
        self.bytes += bytes;
        if self.budget.entries > COPIES_ENTRIES {
            return Err(CopyError::TooBig {
                path: self.path_of(rel),
                what: "the entry limit",
            });
        }
        if self.budget.bytes > COPIES_BYTES {
            return Err(CopyError::TooBig {
                path: self.path_of(rel),
                what: "the size limit",
            });
        }
        Ok(())
    }

    fn visit(&mut self, rel: String, depth: usize) -> Result<(), CopyError> {
        if depth > MAX_DEPTH {
            return Err(CopyError::TooBig {
                path: self.path_of(&rel),
                what: "the depth limit",
            });
        }
        // O_PATH first: nothing is opened for reading until it is known to be a file or a
        // directory (opening a device or a FIFO can have effects of its own).
        let at = open_beneath(&self.root, &rel, libc::O_PATH).map_err(|e| self.io(&rel, e))?;
        let st = nix::sys::stat::fstat(at.as_raw_fd()).map_err(|e| self.io(&rel, e.into()))?;
        let target = self.dest.map(|d| {
            if rel.is_empty() {
                d.to_path_buf()
            } else {
                d.join(&rel)
            }
        });
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                self.count(&rel, 0)?;
                let dir = open_beneath(&self.root, &rel, libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(|e| self.io(&rel, e))?;
                same_inode(&dir, &st).map_err(|e| self.io(&rel, e))?;
                if let Some(t) = &target {
                    fs::create_dir(t).map_err(|e| self.io(&rel, e))?;
                }
                let mut names = Vec::new();
                let listed = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(dir))
                    .map_err(|e| self.io(&rel, io::Error::from(e)))?;
                for e in listed {
                    let e = e.map_err(|e| self.io(&rel, io::Error::from(e)))?;
                    let name = e.file_name().to_bytes();
                    if name == b"." || name == b".." {
                        continue;
                    }
                    let Ok(name) = std::str::from_utf8(name) else {
                        return Err(CopyError::Name {
                            path: self.path_of(&rel),
                        });
                    };
                    // kubelet's atomic writer keeps its versions and its `..data` link under
                    // names starting with `..` (no key may): they are not what the container
                    // reads.
                    if rel.is_empty() && self.kubelet && name.starts_with("..") {
                        continue;
                    }
                    names.push(name.to_string());
                }
                names.sort();
                for name in names {
                    let child = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    self.visit(child, depth + 1)?;
                }
                self.done(target.as_deref(), rel, "dir", &st, None)?;
            }
            libc::S_IFREG => {
                self.count(&rel, st.st_size.max(0) as u64)?;
                let file = open_beneath(&self.root, &rel, libc::O_RDONLY | libc::O_NONBLOCK)
                    .map_err(|e| self.io(&rel, e))?;
                same_inode(&file, &st).map_err(|e| self.io(&rel, e))?;
                let mut out = match &target {
                    Some(t) => Some(
                        OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(t)
                            .map_err(|e| self.io(&rel, e))?,
                    ),
                    None => None,
                };
                let mut hash = Sha384::new();
                let mut file = fs::File::from(file);
                let mut buf = vec![0u8; 64 << 10];
                let mut read = 0u64;
                loop {
                    let n = file.read(&mut buf).map_err(|e| self.io(&rel, e))?;
                    if n == 0 {
                        break;
                    }
                    read += n as u64;
                    // A file that grows while it is copied is bounded by what it was.
                    if read > st.st_size.max(0) as u64 {
                        self.count(&rel, n as u64)?;
                    }
                    hash.update(&buf[..n]);
                    if let Some(o) = &mut out {
                        o.write_all(&buf[..n]).map_err(|e| self.io(&rel, e))?;
                    }
                }
                let digest = format!("sha384:{}", hex::encode(hash.finalize()));
                self.done(target.as_deref(), rel, "file", &st, Some(digest))?;
            }
            other => {
                return Err(CopyError::Kind {
                    path: self.path_of(&rel),
                    kind: kind_of(other),
                })
            }
        }
        Ok(())
    }

    /// An entry copied: its copy given the source's owner and mode (set-id bits dropped), and
    /// noted as measured.
    fn done(
        &mut self,
        target: Option<&Path>,
        rel: String,
        kind: &'static str,
        st: &nix::sys::stat::FileStat,
        sha384: Option<String>,
    ) -> Result<(), CopyError> {
        let (mode, uid, gid) = (st.st_mode & 0o777, st.st_uid, st.st_gid);
        if let Some(t) = target {
            std::os::unix::fs::lchown(t, Some(uid), Some(gid)).map_err(|e| self.io(&rel, e))?;
            fs::set_permissions(t, fs::Permissions::from_mode(mode))
                .map_err(|e| self.io(&rel, e))?;
        }
        self.entries.push(Entry {
            path: rel,
            kind,
            mode,
            uid,
            gid,
            sha384,
        });
        Ok(())
    }
}

/// The descriptor opened for reading is the entry that was looked at (not one renamed in
/// between).
fn same_inode(fd: &OwnedFd, st: &nix::sys::stat::FileStat) -> io::Result<()> {
    let now = nix::sys::stat::fstat(fd.as_raw_fd())?;
    if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) {
        Ok(())
    } else {
        Err(io::Error::other("it changed while it was copied"))
    }
}

/// A container's copies: a private tmpfs under its state directory, one entry per copy
/// (`0`, `1`, ...), each bound read-only into the container.
pub struct CopiesDir {
    pub path: PathBuf,
}

impl CopiesDir {
    pub fn for_container(dir: &Path) -> Self {
        CopiesDir {
            path: dir.join("copies"),
        }
    }

    /// Where copy `index` goes.
    pub fn entry(&self, index: usize) -> PathBuf {
        self.path.join(index.to_string())
    }

    /// Mount the tmpfs (mode 0700: only the bind mounts reach into it).
    pub fn mount(&self) -> io::Result<()> {
        fs::create_dir_all(&self.path)?;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o700))?;
        // Room for the directories beside the files' bytes, which the budget bounds.
        let data = format!(
            "size={},nr_inodes={},mode=0700",
            COPIES_BYTES + (COPIES_ENTRIES as u64) * 4096,
            COPIES_ENTRIES + 16
        );
        mount(
            Some("tmpfs"),
            &self.path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(io::Error::from)?;
        if !is_tmpfs(&self.path) {
            return Err(io::Error::other("the copies tmpfs is not mounted"));
        }
        Ok(())
    }

    /// Zero and remove the copies (a Kubernetes Secret's among them), then unmount. Idempotent.
    pub fn unmount(&self) {
        if is_tmpfs(&self.path) {
            crate::secrets::wipe(&self.path);
        }
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, text: &str, mode: u32) {
        fs::write(path, text).expect("write");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("mode");
    }

    /// kubelet's atomic writer: `..<time>/KEY` files, `..data -> ..<time>`, `KEY -> ..data/KEY`.
    fn kubelet_dir(root: &Path, stamp: &str, keys: &[(&str, &str)]) {
        fs::create_dir_all(root).expect("root");
        let version = root.join(format!("..{stamp}"));
        fs::create_dir(&version).expect("version");
        for (k, v) in keys {
            write(&version.join(k), v, 0o644);
            symlink(format!("..data/{k}"), root.join(k)).expect("key link");
        }
        symlink(format!("..{stamp}"), root.join("..data")).expect("data link");
    }

    /// A configMap's digest is what the container reads (its keys and their text), not when
    /// kubelet wrote it; the copy has exactly those files, with their modes.
    #[test]
    fn a_kubelet_volume_is_copied_as_the_container_reads_it() {
        let t = tempfile::tempdir().expect("tmp");
        let keys = [("app.conf", "port = 8080\n"), ("motd", "hello\n")];
        kubelet_dir(&t.path().join("a"), "2026_12_04_21_00_00.1", &keys);
        kubelet_dir(&t.path().join("b"), "2026_12_04_22_30_00.7", &keys);
        let a = digest(&t.path().join("a")).expect("a");
        let b = digest(&t.path().join("b")).expect("b");
        assert_eq!(a.digest, b.digest);
        let paths: Vec<(&str, &str)> = a
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.kind))
            .collect();
        assert_eq!(paths, [("", "dir"), ("app.conf", "file"), ("motd", "file")]);
        assert_eq!(a.bytes, 18);
        // Other content, another digest.
        kubelet_dir(
            &t.path().join("c"),
            "x",
            &[("app.conf", "port = 9090\n"), ("motd", "hello\n")],
        );
        assert_ne!(digest(&t.path().join("c")).expect("c").digest, a.digest);
        // A mode is part of it.
        fs::set_permissions(
            t.path().join("a/..2026_12_04_21_00_00.1/motd"),
            fs::Permissions::from_mode(0o600),
        )
        .expect("mode");
        assert_ne!(digest(&t.path().join("a")).expect("a").digest, b.digest);

        let dest = t.path().join("copy");
        let mut budget = Budget::default();
        let copied = copy(&t.path().join("b"), &dest, &mut budget).expect("copy");
        assert_eq!(copied.digest, b.digest);
        assert_eq!(
            fs::read_to_string(dest.join("app.conf")).expect("read"),
            "port = 8080\n"
        );
        assert!(fs::symlink_metadata(dest.join("app.conf"))
            .expect("meta")
            .is_file());
        assert!(!dest.join("..data").exists());
        // What was copied digests the same as its source.
        assert_eq!(digest(&dest).expect("dest").digest, b.digest);
        assert_eq!((budget.entries, budget.bytes), (3, 18));
    }

    /// A link that leads out of the tree (absolute, or up through `..`), a FIFO, a device: the
    /// copy is refused naming the entry, and reads nothing beyond it.
    #[test]
    fn a_copy_never_leaves_its_tree_nor_reads_a_special_file() {
        let t = tempfile::tempdir().expect("tmp");
        fs::write(t.path().join("outside"), "host secret").expect("outside");
        let tree = t.path().join("tree");
        fs::create_dir(&tree).expect("tree");
        write(&tree.join("ok"), "fine", 0o644);
        for (name, target) in [
            ("abs", t.path().join("outside")),
            ("up", PathBuf::from("../outside")),
        ] {
            let l = tree.join(name);
            symlink(&target, &l).expect("link");
            match digest(&tree) {
                Err(CopyError::Escapes { path }) => {
                    assert!(path.ends_with(&format!("tree/{name}")), "{path}")
                }
                other => panic!("{name}: {other:?}"),
            }
            fs::remove_file(&l).expect("rm");
        }
        // A link within is followed: its target's content is copied as a file.
        symlink("ok", tree.join("alias")).expect("alias");
        let d = digest(&tree).expect("inside");
        assert_eq!(d.entries[1].path, "alias");
        assert_eq!(d.entries[1].sha384, d.entries[2].sha384);
        // A FIFO is refused without being opened for reading (which would block).
        nix::unistd::mkfifo(
            &tree.join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .expect("fifo");
        match digest(&tree) {
            Err(CopyError::Kind { path, kind }) => {
                assert!(path.ends_with("tree/pipe"), "{path}");
                assert_eq!(kind, "FIFO");
            }
            other => panic!("fifo: {other:?}"),
        }
        fs::remove_file(tree.join("pipe")).expect("rm");
        // A dangling link names the entry.
        symlink("nowhere", tree.join("dangling")).expect("dangling");
        match digest(&tree) {
            Err(CopyError::Io { path, .. }) => assert!(path.ends_with("tree/dangling"), "{path}"),
            other => panic!("dangling: {other:?}"),
        }
        // The root may itself be a link (the caller named it) or a file.
        fs::remove_file(tree.join("dangling")).expect("rm");
        symlink(&tree, t.path().join("via")).expect("via");
        assert_eq!(digest(&t.path().join("via")).expect("via").digest, d.digest);
        let one = digest(&tree.join("ok")).expect("file");
        assert_eq!(one.entries.len(), 1);
        assert_eq!(
            (one.entries[0].path.as_str(), one.entries[0].kind),
            ("", "file")
        );
    }

    /// The bounds hold across all of a container's copies, not each alone.
    #[test]
    fn copies_are_bounded_together() {
        let t = tempfile::tempdir().expect("tmp");
        let tree = t.path().join("tree");
        fs::create_dir(&tree).expect("tree");
        for i in 0..10 {
            fs::write(tree.join(format!("f{i}")), "x").expect("f");
        }
        let mut budget = Budget {
            bytes: 0,
            entries: COPIES_ENTRIES - 5,
        };
        match copy(&tree, &t.path().join("c"), &mut budget) {
            Err(CopyError::TooBig { what, .. }) => assert_eq!(what, "the entry limit"),
            other => panic!("{other:?}"),
        }
        let mut budget = Budget {
            bytes: COPIES_BYTES - 5,
            entries: 0,
        };
        match copy(&tree, &t.path().join("d"), &mut budget) {
            Err(CopyError::TooBig { what, .. }) => assert_eq!(what, "the size limit"),
            other => panic!("{other:?}"),
        }
        // Set-id bits are not kept.
        fs::set_permissions(tree.join("f0"), fs::Permissions::from_mode(0o4755)).expect("suid");
        let d = digest(&tree).expect("digest");
        assert_eq!(
            d.entries.iter().find(|e| e.path == "f0").expect("f0").mode,
            0o755
        );
    }
}
