//! Request and response bodies.

use serde::{Deserialize, Serialize};

/// States of a task (a container's life in vouchd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    Pulling,
    Pulled,
    Verifying,
    Verified,
    Creating,
    Created,
    Starting,
    Running,
    Exited,
    Failed,
    Cancelled,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 11] = [
        TaskState::Pulling,
        TaskState::Pulled,
        TaskState::Verifying,
        TaskState::Verified,
        TaskState::Creating,
        TaskState::Created,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Exited,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// Whether the task has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Exited | TaskState::Failed | TaskState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pulling => "Pulling",
            TaskState::Pulled => "Pulled",
            TaskState::Verifying => "Verifying",
            TaskState::Verified => "Verified",
            TaskState::Creating => "Creating",
            TaskState::Created => "Created",
            TaskState::Starting => "Starting",
            TaskState::Running => "Running",
            TaskState::Exited => "Exited",
            TaskState::Failed => "Failed",
            TaskState::Cancelled => "Cancelled",
        }
    }
}

/// One entry of a task's event list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// RFC 3339 time.
    pub time: String,
    /// The state entered, or another action such as `StopRequested`.
    pub action: String,
    pub message: String,
}

/// An event as streamed by `/v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub event: TaskEvent,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateContainer {
    pub image: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Command; empty means the image's default.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Replaces the image's entrypoint (docker's `--entrypoint`); an empty list runs `cmd`
    /// alone, exactly as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` entries, overriding the image's.
    #[serde(default)]
    pub env: Vec<String>,
    /// Memory limit such as `64m`.
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub pids_limit: Option<i64>,
    /// CPU count such as `0.5`.
    #[serde(default)]
    pub cpus: Option<String>,
    /// `none` (default: private network namespace), `host`, `container:NAME` (another running
    /// container's namespace) or `ns:/PATH` (a network namespace by path, such as a pod's).
    #[serde(default)]
    pub network: Option<String>,
    /// The container's hostname (docker's `--hostname`; a CRI pod's): measured, as the
    /// workload sees it. By default the first 12 characters of its id, which are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// More groups for the container's process (docker's `--group-add`): names from the image's
    /// `/etc/group`, or GIDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// Remove the container once it has ended.
    #[serde(default)]
    pub auto_remove: bool,
    /// The caller follows the output and then waits (`vouch run` without `-d`): a container
    /// with `auto_remove` is then removed when that wait returns rather than as soon as it
    /// ends, so that a short-lived one is not gone before the caller asks for its output; if
    /// no wait comes, it is removed [`crate::ATTACH_HOLD_SECS`] seconds after its end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attach: bool,
    /// The Kubernetes pod the container belongs to (containerd's shim gives it, from the CRI's
    /// annotations); measured in its `container.create` record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// Create the container (verified, measured, its secrets delivered) and wait for a start
    /// request (`POST /v1/containers/{id}/start`) before its process runs: docker's `create`,
    /// and containerd's Create before Start. The create answers once the container is created.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_start: bool,
    /// With `wait_for_start`: a launch refused before it is created (the image policy, the
    /// golden values, a secret) is removed at once, its refusal staying in the log as its
    /// `container.failed` record. containerd's shim asks for it, so that a kubelet's retries
    /// leave no failed tasks behind.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_if_refused: bool,
    /// Secrets to fetch from a KBS with fresh evidence, as `kbs://HOST:PORT/REPO/TYPE/TAG`;
    /// each appears read-only at `/secret/REPO/TYPE/TAG`.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Ports to publish from the host, as `[IP:]HOST_PORT:CONTAINER_PORT[/tcp]` (docker's `-p`);
    /// the host address defaults to the daemon's `--publish-address`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Named volumes, as `NAME:/PATH[:ro|:rw]`; a volume is created empty on first use and kept
    /// until removed.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// A signed golden-value document (`vouch golden sign`) the launch must match; by default the
    /// one attached to the image in its registry, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden: Option<serde_json::Value>,
    /// A terminal for the container's process (docker's `-t`): a pty libcontainer makes in the
    /// container, its output all stdout; `process.terminal` in the measured spec.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// Keep the process's stdin open (docker's `-i`), fed by `POST
    /// /v1/containers/{id}/stdin`; measured (the spec's `io.vouch.stdin` annotation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// The terminal's first size; `POST /v1/containers/{id}/resize` changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    /// The root filesystem read-only (docker's `--read-only`; a pod's `readOnlyRootFilesystem`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Capabilities removed from the default set (docker's `--cap-drop`, `ALL` for every one).
    /// None is ever added to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// More paths masked or made read-only in the container, beyond vouch's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readonly_paths: Vec<String>,
    /// The container's `/etc/resolv.conf` (docker's `--dns`, `--dns-search`, `--dns-option`;
    /// a pod's DNS config): bound read-only over the image's, its text measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<String>,
    /// Kernel parameters of the container's own namespaces (docker's `--sysctl`, a pod's
    /// sysctls): IPC ones (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`) and,
    /// in a network namespace not the host's, `net.*`; measured in the spec's `linux.sysctl`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// A seccomp profile (OCI `linux.seccomp` form) added to vouch's own filter: both apply,
    /// so it only takes syscalls away (docker's `--security-opt seccomp=FILE`; a pod's
    /// localhost or RuntimeDefault profile); measured as the spec's `io.vouch.seccomp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<serde_json::Value>,
}

/// A Kubernetes pod and a container's name in it, as the CRI names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The CRI's sandbox id of the pod.
    pub sandbox_id: String,
    /// The container's name in the pod spec.
    pub container: String,
}

impl PodRef {
    /// Every field is short printable text without control characters (at most 253 bytes, a
    /// Kubernetes name's limit; a uid or sandbox id fits).
    pub fn is_valid(&self) -> bool {
        [
            &self.namespace,
            &self.name,
            &self.uid,
            &self.sandbox_id,
            &self.container,
        ]
        .iter()
        .all(|f| f.len() <= 253 && !f.chars().any(char::is_control))
            && !self.name.is_empty()
    }
}

/// A container as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_digest: String,
    pub command: Vec<String>,
    pub state: TaskState,
    pub created_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub pid: Option<i32>,
    /// SHA-384 of the measured runtime config.
    #[serde(default)]
    pub config_digest: Option<String>,
    pub auto_remove: bool,
    /// Published ports, as `IP:HOST->CONTAINER/tcp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Its network when not a namespace of its own: `host`, or the one it joined as measured
    /// (`container:ID`, the namespace's owner; `ns`, one vouchd did not make).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The Kubernetes pod it belongs to, when containerd's CRI started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// Its process has a terminal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// Its process's stdin is open, fed by `POST /v1/containers/{id}/stdin`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    pub events: Vec<TaskEvent>,
}

/// A container's runtime spec as measured: the projection of the spec its runtime was given
/// (see docs/DESIGN.md, "The measured runtime spec") and the digest its `container.create`
/// record holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeSpec {
    pub id: String,
    pub config_digest: String,
    pub spec: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitResponse {
    pub id: String,
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSummary {
    pub id: String,
    pub names: Vec<String>,
    pub manifest_digest: String,
    pub config_digest: String,
    pub size: u64,
    pub layers: usize,
}

/// A named volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    /// Ids (short) of the containers that mount it and have not ended.
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullImage {
    /// `[registry/]repository[:tag|@digest]`.
    pub reference: String,
    /// Reach the registry over plain HTTP (for loopback or trusted-network registries).
    #[serde(default)]
    pub insecure_registry: bool,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadImage {
    /// Path of an OCI archive (a regular file: .tar or .tar.gz) on the daemon's own host.
    pub path: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// Hex nonce chosen by the verifier.
    pub nonce: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub version: String,
    pub tee: String,
    pub hardware: bool,
    pub register_index: usize,
    pub register: String,
    pub records: usize,
    pub containers: usize,
    pub running: usize,
    pub images: usize,
    #[serde(default)]
    pub warning: Option<String>,
}

/// Every error response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Why, as a fixed name ([`crate::codes`]) a client can turn into a hint in its own terms
    /// (the message names no client's flags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The TEE vouchd measures into, and its registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeeInfo {
    pub tee: String,
    pub hardware: bool,
    /// The register vouch extends.
    pub register_index: usize,
    /// Register values in hex (RTMR0..3 on TDX), or an error text when unreadable.
    pub registers: Vec<String>,
    /// The key verifiers must pin for this TEE's quotes (TPM: `sha256:` fingerprint of the AK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_key: Option<String>,
    #[serde(default)]
    pub warning: Option<String>,
}

/// A process to run inside a running container: `vouch exec`, containerd's Exec. Measured as a
/// `container.exec` record before it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments, exactly (no shell).
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries over the container's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `UID[:GID]`; by default the container's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Supplementary group ids, with `user`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
    /// By default the container's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// A terminal for the process (its stdin, stdout and stderr; the output is all stdout).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// Keep the process's stdin open: fed by `POST /v1/execs/{id}/stdin`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// The terminal's first size; `POST /v1/execs/{id}/resize` changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
}

/// An exec'd process as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub id: String,
    /// The container's id.
    pub container: String,
    /// The process's PID on the host, once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub running: bool,
    /// Its exit status once it ended (128 + the signal that killed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// SHA-384 of the canonical JSON of the process as run (args, env, cwd, user, groups,
    /// tty), as its `container.exec` record has it.
    pub process_digest: String,
}

/// A create request's `network`, parsed: what vouchd and the CLI both read it as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// A network namespace of the container's own (`none`, or no mode).
    Own,
    /// The host's (`host`).
    Host,
    /// Another container's (`container:NAME`).
    Container(String),
    /// The namespace at a path (`ns:/PATH`).
    Path(String),
}

impl NetworkMode {
    /// Parse a `network` value; the error says which forms there are.
    pub fn parse(s: &str) -> Result<NetworkMode, String> {
        match s.split_once(':') {
            None if s == "none" => Ok(NetworkMode::Own),
            None if s == "host" => Ok(NetworkMode::Host),
            Some(("container", name)) if !name.is_empty() => {
                Ok(NetworkMode::Container(name.to_string()))
            }
            Some(("ns", path)) if path.starts_with('/') => Ok(NetworkMode::Path(path.to_string())),
            _ => Err("use none, host, container:NAME or ns:/PATH".into()),
        }
    }
}
