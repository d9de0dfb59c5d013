//! A container's secrets: a private tmpfs (never on disk), files 0400 owned by the container's
//! user, bind-mounted read-only at `/secret` in the container, unmounted when the container ends.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Where secrets appear inside the container.
pub const MOUNT_POINT: &str = "/secret";
/// Upper bound on all of one container's secrets.
const TMPFS_SIZE: &str = "4m";

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
        let data = format!("size={TMPFS_SIZE},mode=0500,uid={uid},gid={gid}");
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
    pub fn write(&self, rel: &str, data: &[u8], uid: u32, gid: u32) -> io::Result<()> {
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

    /// Unmount (dropping the contents with the tmpfs). Idempotent.
    pub fn unmount(&self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }

    pub fn is_mounted(&self) -> bool {
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return false;
        };
        let p = self.path.to_string_lossy();
        info.lines().any(|l| l.split(' ').nth(4) == Some(&p))
    }
}
