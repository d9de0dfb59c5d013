//! A container's secrets: a private tmpfs (never on disk), files 0400 owned by the container's
//! user, bind-mounted read-only at `/secret` in the container, unmounted when the container ends.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Where secrets appear inside the container.
pub(crate) const MOUNT_POINT: &str = "/secret";
/// Upper bound on all of one container's secrets, in bytes (so on any one secret file too).
const TMPFS_BYTES: u64 = 4 << 20;

pub struct SecretsDir {
    pub path: PathBuf,
}

impl SecretsDir {
    pub fn for_container(dir: &Path) -> Self {
        SecretsDir {
            path: dir.join("secrets"),
        }
    }

    /// Mount the tmpfs, owned by the container's user (mode 0500).
    pub fn mount(&self, uid: u32, gid: u32) -> io::Result<()> {
        fs::create_dir_all(&self.path)?;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o700))?;
        let data = format!("size={TMPFS_BYTES},mode=0500,uid={uid},gid={gid}");
        mount(
            Some("tmpfs"),
            &self.path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(data.as_str()),
        )
        .map_err(io::Error::from)
    }

    /// Write one secret at a relative path such as `repo/type/tag` (file 0400, directories 0500).
    /// Only ever onto the tmpfs: if it is not mounted there, nothing is written.
    pub fn write(&self, rel: &str, data: &[u8], uid: u32, gid: u32) -> io::Result<()> {
        if !self.is_tmpfs() {
            return Err(io::Error::other(
                "the secrets tmpfs is not mounted; a secret is never written to disk",
            ));
        }
        let rel = Path::new(rel);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "secret path must be relative without '..'",
            ));
        }
        let mut dir = self.path.clone();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                dir.push(c);
                match fs::create_dir(&dir) {
                    Ok(()) => {
                        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
                        fs::set_permissions(&dir, fs::Permissions::from_mode(0o500))?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let file = self.path.join(rel);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&file)?;
        f.write_all(data)?;
        std::os::unix::fs::chown(&file, Some(uid), Some(gid))?;
        Ok(())
    }

    /// Overwrite every secret with zeros and remove it, then unmount. The zeros come first: a
    /// tmpfs lives on while any mount of it does (a container's own bind mount, say), and its
    /// pages must not hold the plaintext meanwhile. Idempotent.
    pub fn unmount(&self) {
        wipe(&self.path);
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }

    /// Whether the secrets directory is the tmpfs (not the disk under it).
    fn is_tmpfs(&self) -> bool {
        nix::sys::statfs::statfs(&self.path)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
    }

    #[cfg(test)]
    pub(crate) fn is_mounted(&self) -> bool {
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return false;
        };
        let p = self.path.to_string_lossy();
        info.lines().any(|l| l.split(' ').nth(4) == Some(&p))
    }
}

/// Zero and remove every file under `dir` (never following a link), then its directories.
pub(crate) fn wipe(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            wipe(&path);
            let _ = fs::remove_dir(&path);
        } else {
            if meta.is_file() {
                if let Ok(mut f) = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                {
                    let zeros = vec![0u8; meta.len().min(TMPFS_BYTES) as usize];
                    let _ = f.write_all(&zeros);
                }
            }
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Secrets are written only onto the tmpfs; unmounting zeroes and removes them first, so a
    /// second mount of the same tmpfs (as a container holds) sees nothing.
    #[test]
    fn secrets_live_only_on_the_tmpfs_and_are_wiped() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root to mount a tmpfs");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SecretsDir::for_container(dir.path());
        fs::create_dir_all(&s.path).expect("dir");
        let err = s
            .write("a/b/c", b"plaintext", 0, 0)
            .expect_err("written to disk");
        assert!(err.to_string().contains("never written to disk"), "{err}");
        assert_eq!(fs::read_dir(&s.path).expect("list").count(), 0);
        s.mount(0, 0).expect("mount");
        s.write("a/b/c", b"plaintext", 0, 0).expect("write");
        // A second mount of the same tmpfs, as a container's bind mount is.
        let other = dir.path().join("other");
        fs::create_dir(&other).expect("other");
        mount(
            Some(&s.path),
            &other,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind");
        s.unmount();
        assert!(!s.is_mounted());
        assert_eq!(
            fs::read_dir(&other).expect("list").count(),
            0,
            "secret left in the tmpfs"
        );
        let _ = umount2(&other, MntFlags::MNT_DETACH);
    }
}
