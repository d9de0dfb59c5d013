//! The vouchd REST API: wire types, the route table, the OpenAPI document, and a small blocking
//! client over the daemon's unix socket.
//!
//! The route table [`ROUTES`] is the single list both the server and the OpenAPI document are
//! checked against, so the document cannot drift from what the daemon serves.

pub mod client;
pub mod openapi;
pub mod types;

pub use client::{Client, ClientError};
pub use types::*;

/// Longest stop timeout (seconds) the API takes: a stop holds a thread of the daemon while it
/// waits, so the wait is bounded.
pub const MAX_STOP_TIMEOUT: u64 = 3600;

/// Longest Conker MaxExecutionTime (seconds): a year.
pub const MAX_EXECUTION_TIME: u64 = 365 * 24 * 3600;

/// How long (seconds) an ended `auto_remove` container created with `attach` is kept for the
/// wait that removes it, when no wait comes (the caller was interrupted).
pub const ATTACH_HOLD_SECS: u64 = 30;

/// Default location of the daemon socket.
pub const DEFAULT_SOCKET: &str = "/run/vouch/vouchd.sock";
/// Environment variable that overrides the socket path for the CLI.
pub const SOCKET_ENV: &str = "VOUCH_SOCKET";

/// The codes of refusals a client may want to explain in its own terms ([`ErrorBody::code`]).
pub mod codes {
    /// The container is running: stop it first, or remove it by force.
    pub const CONTAINER_RUNNING: &str = "container-running";
    /// Published ports were asked for a container on the host's network.
    pub const PORTS_WITH_HOST_NETWORK: &str = "ports-with-host-network";
    /// A pids limit that is not positive.
    pub const PIDS_LIMIT: &str = "pids-limit";
    /// vouchd requires a golden value and the launch has none.
    pub const GOLDEN_REQUIRED: &str = "golden-required";
    /// Exec is forbidden here: by the node (`vouchd --exec deny`) or the image's label.
    pub const EXEC_DENIED: &str = "exec-denied";
}

/// Every route vouchd serves: (method, path template, summary).
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/v1/openapi.json", "This OpenAPI document"),
    (
        "get",
        "/metrics",
        "Prometheus metrics: launches, failures by reason, attestation latency, KBS round trips, tasks by state",
    ),
    (
        "get",
        "/v1/info",
        "Daemon version, TEE and measurement state",
    ),
    (
        "get",
        "/v1/containers",
        "List containers (query all=true includes stopped ones)",
    ),
    (
        "post",
        "/v1/containers",
        "Create and start a container (a task)",
    ),
    (
        "get",
        "/v1/containers/{id}",
        "Inspect a container, with its events",
    ),
    (
        "delete",
        "/v1/containers/{id}",
        "Remove a container (query force=true stops it first)",
    ),
    (
        "get",
        "/v1/containers/{id}/spec",
        "The measured projection of the container's runtime spec, with its digest",
    ),
    (
        "get",
        "/v1/containers/{id}/logs",
        "Container output as a multiplexed stream (query follow=true; offset= a byte offset into the stream, to take it up again)",
    ),
    (
        "post",
        "/v1/containers/{id}/wait",
        "Wait until a container ends; returns its exit status",
    ),
    (
        "post",
        "/v1/containers/{id}/start",
        "Start a container created with wait_for_start (created and measured, its process held)",
    ),
    (
        "post",
        "/v1/containers/{id}/kill",
        "Send a signal to a container's process: signal= a number or a name such as SIGTERM (default SIGKILL)",
    ),
    (
        "post",
        "/v1/containers/{id}/stop",
        "Stop a container: SIGTERM, then SIGKILL after timeout seconds",
    ),
    (
        "post",
        "/v1/containers/{id}/exec",
        "Run a process in a running container (measured as container.exec first); answers once it runs",
    ),
    (
        "post",
        "/v1/containers/{id}/stdin",
        "Feed the stdin of a container created with stdin: the request body, streamed as it comes (chunked); its end closes stdin",
    ),
    (
        "post",
        "/v1/containers/{id}/resize",
        "Resize the terminal of a container created with tty: cols= and rows=",
    ),
    ("get", "/v1/execs/{id}", "Inspect an exec'd process"),
    (
        "get",
        "/v1/execs/{id}/logs",
        "An exec'd process's output as a multiplexed stream (query follow=true)",
    ),
    (
        "post",
        "/v1/execs/{id}/wait",
        "Wait until an exec'd process ends; returns it with its exit status",
    ),
    (
        "post",
        "/v1/execs/{id}/stdin",
        "Feed an exec'd process's stdin: the request body, streamed as it comes (chunked); its end closes stdin",
    ),
    (
        "post",
        "/v1/execs/{id}/resize",
        "Resize an exec'd process's terminal: cols= and rows=",
    ),
    (
        "post",
        "/v1/execs/{id}/kill",
        "Send a signal to an exec'd process: signal= a number or a name (default SIGKILL)",
    ),
    (
        "get",
        "/v1/events",
        "Lifecycle events of all containers (query follow=true streams NDJSON)",
    ),
    ("get", "/v1/images", "List images"),
    (
        "post",
        "/v1/images/load",
        "Load images from an OCI archive (tar or tar.gz) sent as the request body (query name=NAME)",
    ),
    (
        "post",
        "/v1/images/load-path",
        "Load images from an OCI archive that is a regular file on the daemon's own host",
    ),
    (
        "post",
        "/v1/images/pull",
        "Pull an image from an OCI registry (digests verified while streaming)",
    ),
    ("delete", "/v1/images/{reference}", "Remove an image"),
    (
        "get",
        "/v1/volumes",
        "List named volumes and the containers that use them",
    ),
    (
        "delete",
        "/v1/volumes/{name}",
        "Remove a named volume and its content (refused while a container uses it)",
    ),
    (
        "post",
        "/v1/attest",
        "Evidence for the current state, bound to a nonce",
    ),
];
