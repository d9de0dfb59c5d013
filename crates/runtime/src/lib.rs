//! Container lifecycle on libcontainer: the OCI runtime config vouch generates (Docker-like
//! defaults: capabilities, seccomp, masked paths, no new privileges), the overlay root
//! filesystem, the log format, and the per-container monitor process.
//!
//! The monitor is a separate, single-threaded process per container (like conmon or a
//! containerd shim): libcontainer forks, which is unsafe from a multi-threaded daemon, and a
//! container must outlive a daemon crash with its exit status still recorded.

pub mod cgroup;
pub mod copies;
pub mod exec;
mod input;
pub use vouch_base::logframe;
pub mod monitor;
pub mod net;
pub mod projection;
pub mod rootfs;
pub mod sealed;
pub mod secrets;
pub mod spec;

pub use monitor::{ExitRecord, MonitorArgs, MonitorReport};
pub use spec::{ContainerSpec, Resources, Spec, SpecError};
