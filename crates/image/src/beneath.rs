//! File system operations relative to an open directory, never through a path that a symlink
//! could redirect: every name is one path component, opened with `O_NOFOLLOW`, and every change
//! of metadata is made on a descriptor of the object itself (or with `AT_SYMLINK_NOFOLLOW`).
//!
//! This is what the layer unpacker and the secrets writer build on: a hostile layer that
//! replaces a directory with a symlink to a host file can then only ever change the symlink.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

fn cname(name: &OsStr) -> io::Result<CString> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.contains(&b'/') || bytes == b"." || bytes == b".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a single path component",
        ));
    }
    CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Open a directory by absolute or relative path (the starting point: the caller's own
/// directory, which it trusts), refusing a symlink as its last component.
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path; the returned descriptor is checked and owned below.
    let fd = check(unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn openat_raw(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let n = cname(name)?;
    // SAFETY: `dir` is a live descriptor, `n` a valid single-component name; the result is
    // checked and owned below.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    })?;
    // SAFETY: `fd` was just returned by openat and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open the directory `name` in `dir`; a symlink (`ELOOP`) or a non-directory (`ENOTDIR`) fails.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    openat_raw(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Create the regular file `name` in `dir` (it must not exist) for writing.
pub(crate) fn create_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    openat_raw(
        dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )
    .map(File::from)
}

/// Open `name` in `dir` for reading without following a symlink and without blocking (a FIFO
/// opens at once); used to reach the object itself, to change its metadata.
pub(crate) fn open_object(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    openat_raw(dir, name, libc::O_RDONLY | libc::O_NONBLOCK, 0).map(File::from)
}

/// What is at `name` in `dir`, without following a symlink; `None` when nothing is.
pub fn stat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<libc::stat>> {
    let n = cname(name)?;
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a live directory descriptor, a valid name, and a writable `stat` for the result.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            n.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(rc) {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `stat` of an open descriptor.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a live descriptor and a writable `stat` for the result.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// Create the directory `name` in `dir` (mode before the umask).
pub fn mkdir(dir: BorrowedFd<'_>, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let n = cname(name)?;
    // SAFETY: a live directory descriptor and a valid name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode) }).map(drop)
}

/// Create a device or FIFO node `name` in `dir`.
pub fn mknod(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    let n = cname(name)?;
    // SAFETY: a live directory descriptor and a valid name.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), n.as_ptr(), mode, dev) }).map(drop)
}

/// Create the symlink `name` in `dir` pointing at `target` (never followed here).
pub fn symlink(dir: BorrowedFd<'_>, name: &OsStr, target: &Path) -> io::Result<()> {
    let n = cname(name)?;
    let t = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated target and name, a live directory descriptor.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) }).map(drop)
}

/// Make `name` in `dir` a hard link to `src_name` in `src_dir` (a symlink is linked itself,
/// never its target).
pub fn link(
    src_dir: BorrowedFd<'_>,
    src_name: &OsStr,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    let s = cname(src_name)?;
    let n = cname(name)?;
    // SAFETY: two live directory descriptors and two valid names; flags 0: no following.
    check(unsafe {
        libc::linkat(
            src_dir.as_raw_fd(),
            s.as_ptr(),
            dir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// Remove the non-directory `name` from `dir`.
pub fn unlink(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let n = cname(name)?;
    // SAFETY: a live directory descriptor and a valid name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), 0) }).map(drop)
}

/// Remove `name` from `dir` whatever it is; a directory with everything in it, descending
/// through descriptors only (a symlink inside is removed, never followed).
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match stat(dir, name)? {
        None => Ok(()),
        Some(st) if is_dir(&st) => {
            let sub = open_dir(dir, name)?;
            for child in list(sub.try_clone()?)? {
                remove_all(borrow(&sub), &child)?;
            }
            let n = cname(name)?;
            // SAFETY: a live directory descriptor and a valid name.
            check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), libc::AT_REMOVEDIR) })
                .map(drop)
        }
        Some(_) => unlink(dir, name),
    }
}

/// The names in an open directory (without `.` and `..`). Consumes the descriptor.
pub fn list(dir: OwnedFd) -> io::Result<Vec<std::ffi::OsString>> {
    use std::os::fd::IntoRawFd;
    let mut d = nix::dir::Dir::from_fd(dir.into_raw_fd()).map_err(io::Error::from)?;
    let mut out = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name: &CStr = entry.file_name();
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            out.push(OsStr::from_bytes(b).to_os_string());
        }
    }
    Ok(out)
}

pub fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

/// Owner of an open object.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: a live descriptor and plain integer ids.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// Owner of `name` in `dir`, not following a symlink (a symlink's own owner is changed).
pub(crate) fn lchown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let n = cname(name)?;
    // SAFETY: a live directory descriptor, a valid name, plain integer ids.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            n.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Mode of an open object.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: a live descriptor and a mode.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

fn times(mtime: i64) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [ts, ts]
}

/// Access and modification time of an open object.
pub(crate) fn futimes(fd: BorrowedFd<'_>, mtime: i64) -> io::Result<()> {
    let ts = times(mtime);
    // SAFETY: a live descriptor and a pointer to two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

/// Times of `name` in `dir`, not following a symlink.
pub(crate) fn lutimes_at(dir: BorrowedFd<'_>, name: &OsStr, mtime: i64) -> io::Result<()> {
    let n = cname(name)?;
    let ts = times(mtime);
    // SAFETY: a live directory descriptor, a valid name, a pointer to two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            n.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Set an extended attribute on an open object.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a live descriptor, a valid name, and a pointer/length pair of a live slice.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// The normal components of a relative path (the caller has refused `..` and absolute paths).
pub fn components(rel: &Path) -> impl Iterator<Item = &OsStr> {
    rel.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n),
        _ => None,
    })
}

/// Walk from `root` down the directories of `rel`, each opened with `O_NOFOLLOW`: a symlink or
/// a non-directory anywhere on the way fails. Nothing is created.
pub(crate) fn walk(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let mut cur = root.try_clone_to_owned()?;
    for c in components(rel) {
        cur = open_dir(borrow(&cur), c)?;
    }
    Ok(cur)
}
