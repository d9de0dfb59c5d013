//! Daemon configuration.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Root of all persistent state: database, image store, event log, TEE state, containers.
    pub state_dir: PathBuf,
    /// The unix socket the API listens on (created with mode 0600).
    pub socket: PathBuf,
    /// The vouchd executable, re-run as `vouchd monitor` for each container.
    pub exe: PathBuf,
    /// cgroup parent of every container, e.g. `/vouch`.
    pub cgroup_parent: String,
    /// Host address of published ports that name none.
    pub publish_address: std::net::IpAddr,
    /// Image policy (containers' `policy.json` format); none accepts every image.
    pub image_policy: Option<PathBuf>,
    /// How long a registry may stay silent (connect, or between reads) before a pull fails.
    pub registry_timeout: std::time::Duration,
    /// Public keys (PEM) trusted to sign golden-value documents.
    pub golden_keys: Vec<PathBuf>,
    /// Refuse launches without a golden value.
    pub require_golden: bool,
    /// `registries.d` directory: where OpenPGP signatures of each registry are kept.
    pub registries_d: PathBuf,
    /// Registries (`host[:port]`) always reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// CAs (PEM files) trusted for `kbss://` KBSs; none: the system's roots.
    pub kbs_cas: Vec<PathBuf>,
    /// How long one secret's whole exchange with its KBS may take.
    pub kbs_timeout: std::time::Duration,
    /// Which evidence KBSs are given, or how to tell (see [`vouch_kbs_client::FlavourChoice`]).
    pub kbs_flavour: vouch_kbs_client::FlavourChoice,
    /// Refuse every exec into a container (`--exec deny`).
    pub exec_denied: bool,
}

impl DaemonConfig {
    pub(crate) fn db_path(&self) -> PathBuf {
        self.state_dir.join("vouchd.redb")
    }
    pub(crate) fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }
    pub(crate) fn containers_dir(&self) -> PathBuf {
        self.state_dir.join("containers")
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.state_dir.join("runtime")
    }
    pub(crate) fn eventlog_path(&self) -> PathBuf {
        self.state_dir.join("measurements.log")
    }
    /// Named volumes, one directory each.
    pub(crate) fn volumes_dir(&self) -> PathBuf {
        self.state_dir.join("volumes")
    }
    pub fn tee_dir(&self) -> PathBuf {
        self.state_dir.join("tee")
    }
}
