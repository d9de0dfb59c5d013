//! The container root filesystem: image layers as read-only overlay lower directories, one
//! private upper directory per container.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot prepare {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("overlay mount at {target} failed (lower layers: {layers})")]
    Mount {
        target: String,
        layers: usize,
        #[source]
        source: nix::Error,
    },
    #[error("an image needs at least one layer")]
    NoLayers,
    #[error("layer path {0} contains a character overlayfs cannot take (',' or ':')")]
    BadPath(String),
}

/// Paths of one container's overlay.
pub struct Overlay {
    pub rootfs: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl Overlay {
    pub fn for_container(dir: &Path) -> Self {
        Overlay {
            rootfs: dir.join("bundle/rootfs"),
            upper: dir.join("upper"),
            work: dir.join("work"),
        }
    }

    /// Mount `layers` (bottom first, as in the image manifest) under a fresh upper directory.
    pub fn mount(&self, layers: &[PathBuf]) -> Result<(), RootfsError> {
        if layers.is_empty() {
            return Err(RootfsError::NoLayers);
        }
        for d in [&self.rootfs, &self.upper, &self.work] {
            fs::create_dir_all(d).map_err(|source| RootfsError::Io {
                path: d.display().to_string(),
                source,
            })?;
        }
        // The upper directory gives the container's `/` its owner and mode: make it 0755 whatever
        // the daemon's umask, or non-root container users could not reach anything.
        fs::set_permissions(&self.upper, fs::Permissions::from_mode(0o755)).map_err(|source| {
            RootfsError::Io {
                path: self.upper.display().to_string(),
                source,
            }
        })?;
        let mut lower = String::new();
        for l in layers.iter().rev() {
            let s = l.to_string_lossy();
            if s.contains(',') || s.contains(':') {
                return Err(RootfsError::BadPath(s.into_owned()));
            }
            if !lower.is_empty() {
                lower.push(':');
            }
            lower.push_str(&s);
        }
        let data = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            self.upper.display(),
            self.work.display()
        );
        mount(
            Some("overlay"),
            &self.rootfs,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|source| RootfsError::Mount {
            target: self.rootfs.display().to_string(),
            layers: layers.len(),
            source,
        })
    }

    /// Unmount (if mounted). Idempotent.
    pub fn unmount(&self) -> Result<(), RootfsError> {
        match umount2(&self.rootfs, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
            Err(source) => Err(RootfsError::Mount {
                target: self.rootfs.display().to_string(),
                layers: 0,
                source,
            }),
        }
    }
}
