//! End-to-end tests of the `vouch`, `vouchd` and `vouch-kbs` binaries, in one test binary (one
//! link of the whole dependency tree instead of one per file). Most need root: they start real
//! daemons, containers, registries and TPMs on loopback. The harness is `vouch-testkit`; it runs
//! the binaries `cargo build --workspace --bins` made, and refuses stale ones.

mod coco;
mod conker;
mod containerd;
mod cosign_peer;
mod crash;
mod cri;
mod cri_client;
mod deploy;
mod escape;
mod evidence;
mod exec;
mod golden;
mod hostile;
mod kbs;
mod network;
mod openpgp_peer;
mod registry;
mod registry_faults;
mod run;
mod shim;
mod tpm;
mod umoci;
