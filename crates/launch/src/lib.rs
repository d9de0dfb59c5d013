//! vouch-launch: the measured launch path, for every entry point (vouchd's REST API, the Conker
//! facade, and next the containerd shim). A task engine that verifies, measures and runs
//! containers, with its task state machine ([`task`]), its pure request checks, its embedded
//! state (redb) and its metrics. No HTTP server here: the entry points wrap it.
//!
//! It must measure an image and a container's effective config before anything from them runs,
//! never log secrets, and never change a task's state outside the transition table.

pub mod config;
pub mod conker;
pub mod db;
pub mod engine;
pub mod metrics;
mod requests;
pub mod task;

pub use config::DaemonConfig;
pub use engine::{Engine, EngineError};
