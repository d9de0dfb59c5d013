//! vouchd's REST API on a unix socket, over the launch library (`vouch-launch`).
//!
//! vouchd is the one privileged process inside the trust boundary. It never listens on a
//! network socket (only on a 0600 unix socket); every request goes to the launch library, which
//! measures an image and a container's effective config before anything from them runs.

pub mod server;
