//! A sealed in-memory copy of the running executable, for starting monitors (CVE-2019-5736).
//!
//! A container's first process is a fork of its monitor until it executes the container's
//! program; an image whose entrypoint is `#!/proc/self/exe` (with an ELF interpreter of its own)
//! would then run inside the monitor's executable and could keep a descriptor to it. When that
//! executable is vouchd's own file, a container could reach, and after vouchd exits overwrite,
//! the host's binary. vouchd therefore copies itself once, when it starts, into a memfd that is
//! sealed against every change (`F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`) and
//! starts every monitor from that copy (as runc and youki do): what a container can reach is an
//! anonymous, immutable file, never the host's inode. One copy serves all containers, so no
//! launch pays for it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The seals a copy must carry: nothing can change it, and no seal can be removed.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// `MFD_EXEC` (Linux 6.3): ask for an executable memfd even where `vm.memfd_noexec` would
/// make new memfds non-executable by default.
const MFD_EXEC: libc::c_uint = 0x0010;

/// A sealed copy of an executable, kept open for the life of the process.
#[derive(Debug)]
pub struct SealedExe {
    fd: OwnedFd,
}

impl SealedExe {
    /// Copy the file at `path` (opened once: the copy is of the inode opened) into a sealed
    /// memfd.
    pub(crate) fn copy_of(path: &std::path::Path) -> io::Result<Self> {
        let mut src = File::open(path)?;
        let name = c"vouchd";
        let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // SAFETY: a valid NUL-terminated name and flags; the result is checked below.
        let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
        if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // Kernels before 6.3 do not know MFD_EXEC; their memfds are executable.
            // SAFETY: as above.
            fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
        }
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut dst = File::from(fd);
        let copied = io::copy(&mut src, &mut dst)?;
        if copied != src.metadata()?.len() {
            return Err(io::Error::other(
                "the executable changed while it was copied",
            ));
        }
        let fd = OwnedFd::from(dst);
        // SAFETY: a live descriptor; F_ADD_SEALS takes an integer argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let sealed = SealedExe { fd };
        if sealed.seals()? & SEALS != SEALS {
            return Err(io::Error::other(
                "the executable's copy could not be sealed",
            ));
        }
        Ok(sealed)
    }

    /// The seals the copy carries.
    pub(crate) fn seals(&self) -> io::Result<libc::c_int> {
        // SAFETY: a live descriptor; F_GET_SEALS takes no argument.
        let s = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GET_SEALS) };
        if s < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(s)
        }
    }

    /// A path that executes the copy from this process (`/proc/self/fd/N`). The descriptor is
    /// close-on-exec: a process started from it does not inherit it.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// The sealed copy of this process's executable, made at the first call and kept for the
/// process's life.
pub fn current_exe() -> io::Result<&'static SealedExe> {
    static COPY: OnceLock<SealedExe> = OnceLock::new();
    if let Some(c) = COPY.get() {
        return Ok(c);
    }
    let copy = SealedExe::copy_of(std::path::Path::new("/proc/self/exe"))?;
    Ok(COPY.get_or_init(|| copy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    /// The copy runs, is another inode than the original, and cannot be written, grown,
    /// shrunk or unsealed.
    #[test]
    fn the_copy_runs_and_cannot_change() {
        let original = std::path::Path::new("/bin/true");
        let copy = SealedExe::copy_of(original).expect("copy");
        assert_eq!(copy.seals().expect("seals") & SEALS, SEALS);
        let status = std::process::Command::new(copy.path())
            .status()
            .expect("run the copy");
        assert!(status.success());
        let m = std::fs::metadata(copy.path()).expect("stat");
        let o = std::fs::metadata(original).expect("stat");
        assert_ne!((m.dev(), m.ino()), (o.dev(), o.ino()));
        assert_eq!(m.len(), o.len());
        // Opened for writing through /proc: the seal refuses every write.
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(copy.path())
            .expect("open");
        assert_eq!(
            w.write(b"x").map_err(|e| e.raw_os_error()),
            Err(Some(libc::EPERM))
        );
        assert!(w.set_len(1).is_err());
        // SAFETY: a live descriptor; an integer argument.
        let unseal = unsafe { libc::fcntl(copy.fd.as_raw_fd(), libc::F_ADD_SEALS, 0) };
        assert!(unseal < 0, "seals could still be changed");
    }
}
