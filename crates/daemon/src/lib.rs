//! vouchd: the in-TEE daemon. A task engine that verifies, measures and runs containers, its
//! embedded state (redb), and the REST API on a unix socket.
//!
//! vouchd is the one privileged process inside the trust boundary. It must measure an image and a
//! container's effective config before anything from them runs, never log secrets, and never
//! listen on a network socket without authentication (it listens only on a 0600 unix socket).

pub mod config;
pub mod conker;
pub mod db;
pub mod engine;
pub mod metrics;
mod requests;
pub mod server;
pub mod task;

pub use config::DaemonConfig;
pub use engine::{Engine, EngineError};
