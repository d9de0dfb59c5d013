//! vouch-testkit: what the workspace's tests share, and a dev-dependency only (no production
//! crate depends on it).
//!
//! - [`bins`]: the workspace's binaries, built from the current sources;
//! - [`corpus`]: the captured evidence corpus (`$VOUCH_VECTORS`);
//! - [`swtpm`]: a real TPM 2.0 simulator on loopback;
//! - [`harness`]: a private state directory with a real vouchd, the real CLI, OCI images built
//!   on the fly (hostile ones too), registries and KBSs on loopback.

pub mod bins;
pub mod containerd;
pub mod corpus;
pub mod harness;
pub mod swtpm;

pub use harness::*;
pub use swtpm::Swtpm;
