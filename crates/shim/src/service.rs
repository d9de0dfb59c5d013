//! The shim's two faces: the `start`/`delete` actions containerd runs it with, and the Task
//! service it then serves, each call a vouchd API call.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use containerd_shim as shim;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{EnumOrUnknown, MessageDyn, MessageField};
use containerd_shim_protos::ttrpc::{self, Code};
use containerd_shim_protos::types::task::ProcessInfo;
use containerd_shim_protos::{api, topics};
use shim::publisher::RemotePublisher;
use shim::{ExitSignal, TtrpcContext, TtrpcResult};
use vouch_api::{Client, ClientError, Container, Exec, ExecRequest, WaitResponse};
use vouch_base::logframe::{FrameDecoder, STDERR, STDOUT};

use crate::sandbox::{Pause, PodNetwork};
use crate::spec;

/// The file in a bundle that names the vouchd container of containerd's, for the `delete`
/// action that cleans up after a shim that died.
const VOUCH_ID_FILE: &str = "vouch-container-id";
/// In a sandbox's bundle: its pod's uid, whose emptyDir volumes go with the sandbox.
const POD_UID_FILE: &str = "vouch-pod-uid";

/// Remove the emptyDir volumes of the pod `uid` from vouchd (its sandbox is deleted: kubelet
/// removes an emptyDir with its pod). A volume still in use stays, and is logged.
fn remove_pod_volumes(client: &Client, uid: &str) {
    let prefix = spec::pod_volume_prefix(uid);
    let Ok(list) = client.call::<Vec<vouch_api::Volume>>("GET", "/v1/volumes", None::<&()>) else {
        return;
    };
    for v in list.iter().filter(|v| v.name.starts_with(&prefix)) {
        if let Err(e) = client.call::<vouch_api::Volume>(
            "DELETE",
            &format!("/v1/volumes/{}", v.name),
            None::<&()>,
        ) {
            eprintln!("vouch: cannot remove the pod's volume {}: {e}", v.name);
        }
    }
}

fn client() -> Client {
    Client::new(
        std::env::var_os(vouch_api::SOCKET_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(vouch_api::DEFAULT_SOCKET)),
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn status(code: Code, message: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

/// A vouchd answer as containerd's status: its message, which `ctr` and `kubectl describe`
/// show, with a code containerd maps to its own errors.
fn from_vouchd(e: ClientError) -> ttrpc::Error {
    let code = match &e {
        ClientError::Api { status: 404, .. } => Code::NOT_FOUND,
        ClientError::Api { status: 409, .. } => Code::FAILED_PRECONDITION,
        ClientError::Api {
            status: 400..=499, ..
        } => Code::FAILED_PRECONDITION,
        ClientError::NotRunning { .. } | ClientError::PermissionDenied { .. } => Code::UNAVAILABLE,
        _ => Code::INTERNAL,
    };
    status(code, format!("vouch: {e}"))
}

/// A kill vouchd refused: a process that already ended is what containerd calls not found.
fn kill_error(e: ClientError) -> ttrpc::Error {
    match e {
        ClientError::Api { ref message, .. } if message.contains("is not running") => {
            status(Code::NOT_FOUND, "process already finished")
        }
        other => from_vouchd(other),
    }
}

fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// What the `delete` action answers after the serving shim died: its vouchd container (named
/// in the bundle) is removed, so it does not outlive its shim unseen.
pub(crate) fn delete_after_crash(bundle: &Path) -> api::DeleteResponse {
    if let Ok(id) = std::fs::read_to_string(bundle.join(VOUCH_ID_FILE)) {
        let _ = client().call::<Container>(
            "DELETE",
            &format!("/v1/containers/{}?force=true", id.trim()),
            None::<&()>,
        );
        let _ = std::fs::remove_file(bundle.join(VOUCH_ID_FILE));
    }
    if let Ok(uid) = std::fs::read_to_string(bundle.join(POD_UID_FILE)) {
        remove_pod_volumes(&client(), uid.trim());
        let _ = std::fs::remove_file(bundle.join(POD_UID_FILE));
    }
    api::DeleteResponse {
        exit_status: 137,
        exited_at: MessageField::some(now()),
        ..Default::default()
    }
}

/// How a task ended: containerd's exit status and time.
#[derive(Clone)]
struct Ended {
    status: u32,
    at: Timestamp,
}

/// One container of this shim.
struct Task {
    /// vouchd's id; empty for the pod's sandbox, which is the shim's own.
    vouch_id: String,
    /// The pod's sandbox (the CRI's pause container): its waiting process, once started.
    sandbox: Option<Option<Arc<Pause>>>,
    /// The network the sandbox's spec asks for (its process enters it at Start).
    sandbox_network: spec::Network,
    /// The hostname its spec gives: a sandbox's is its pod's, which its containers take.
    hostname: Option<String>,
    /// The kernel parameters its spec sets: a sandbox's are its pod's, which its containers
    /// take.
    sysctls: std::collections::BTreeMap<String, String>,
    bundle: String,
    stdin: String,
    stdout: String,
    stderr: String,
    /// The copy of `stdin` into vouchd, while it runs (see [`feed_stdin`]).
    feeding: Option<Feeding>,
    pid: u32,
    /// Set once, when the container ended; Wait blocks on it.
    ended: Arc<(Mutex<Option<Ended>>, Condvar)>,
    /// Processes exec'd into it, by containerd's exec id.
    execs: HashMap<String, ExecProc>,
}

/// A process containerd exec'd into one of this shim's containers: a vouchd exec, measured
/// as `container.exec` when it starts.
struct ExecProc {
    request: ExecRequest,
    /// containerd's FIFO for the process's stdin, if it has one.
    stdin: String,
    stdout: String,
    stderr: String,
    /// vouchd's exec id, once started.
    vouch_id: Option<String>,
    feeding: Option<Feeding>,
    pid: u32,
    ended: Arc<(Mutex<Option<Ended>>, Condvar)>,
}

impl Task {
    fn ended(&self) -> Option<Ended> {
        lock(&self.ended.0).clone()
    }
}

impl ExecProc {
    fn ended(&self) -> Option<Ended> {
        lock(&self.ended.0).clone()
    }
}

/// Record how a task (or, with an exec id, an exec'd process) ended, for Wait, and tell
/// containerd.
fn finish(
    ended: &(Mutex<Option<Ended>>, Condvar),
    publisher: &RemotePublisher,
    namespace: &str,
    (container_id, id): (String, String),
    pid: u32,
    code: u32,
) {
    let at = now();
    {
        let mut e = lock(&ended.0);
        if e.is_some() {
            return;
        }
        *e = Some(Ended {
            status: code,
            at: at.clone(),
        });
    }
    ended.1.notify_all();
    let _ = publisher.publish(
        ttrpc::context::with_timeout(0),
        topics::TASK_EXIT_EVENT_TOPIC,
        namespace,
        Box::new(TaskExit {
            container_id,
            id,
            pid,
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        }),
    );
}

pub(crate) struct Tasks {
    client: Client,
    namespace: String,
    exit: Arc<ExitSignal>,
    publisher: Arc<RemotePublisher>,
    tasks: Mutex<HashMap<String, Task>>,
}

impl Tasks {
    pub(crate) fn new(namespace: &str, exit: Arc<ExitSignal>, publisher: RemotePublisher) -> Self {
        Tasks {
            client: client(),
            namespace: namespace.to_string(),
            exit,
            publisher: Arc::new(publisher),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let _ = self.publisher.publish(
            ttrpc::context::with_timeout(0),
            topic,
            &self.namespace,
            event,
        );
    }

    fn with_task<T>(&self, id: &str, f: impl FnOnce(&mut Task) -> T) -> TtrpcResult<T> {
        let mut tasks = lock(&self.tasks);
        let task = tasks
            .get_mut(id)
            .ok_or_else(|| status(Code::NOT_FOUND, format!("container {id} not found")))?;
        Ok(f(task))
    }

    /// vouchd's network mode for a container whose spec asks for `network`: the host's, one of
    /// its own, or the namespace at a path. A CRI container's path must be its pod sandbox's
    /// (`/proc/PID/ns/net` of the sandbox's process in this shim, still running: a PID the
    /// kernel has given to another process since names another namespace): the pod's network,
    /// or, for a pod on the node's network, the host's.
    fn network_of(
        &self,
        oci: &serde_json::Value,
        network: &spec::Network,
    ) -> TtrpcResult<Option<String>> {
        let path = match network {
            spec::Network::Host => return Ok(Some("host".into())),
            spec::Network::Own => return Ok(None),
            spec::Network::Join(path) => path,
        };
        let Some(sandbox) = spec::annotation(oci, spec::CRI_SANDBOX_ID) else {
            return Ok(Some(format!("ns:{path}")));
        };
        let tasks = lock(&self.tasks);
        let pause = match tasks
            .get(sandbox)
            .map(|t| (&t.sandbox, lock(&t.ended.0).is_some()))
        {
            Some((Some(Some(p)), false)) => Arc::clone(p),
            Some((Some(_), true)) => {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!(
                    "the pod's sandbox {sandbox} has ended: its containers cannot join its network"
                ),
                ))
            }
            _ => {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("the pod's sandbox {sandbox} is not running in this shim"),
                ))
            }
        };
        if pause.netns_path() != *path {
            return Err(status(
                Code::INVALID_ARGUMENT,
                format!(
                    "the container's network namespace {path} is not its pod's ({})",
                    pause.netns_path()
                ),
            ));
        }
        Ok(Some(if pause.host_network {
            "host".into()
        } else {
            format!("ns:{path}")
        }))
    }

    /// The container as vouchd reports it once it is reachable again (bounded), if it runs.
    fn after_restart(&self, vouch_id: &str) -> TtrpcResult<Container> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match self.client.call::<Container>(
                "GET",
                &format!("/v1/containers/{vouch_id}"),
                None::<&()>,
            ) {
                Ok(c) if c.pid.is_some() => return Ok(c),
                Ok(c) => {
                    return Err(status(
                        Code::FAILED_PRECONDITION,
                        format!(
                            "vouchd restarted during the start, and the container is {}: {}",
                            c.state.as_str(),
                            c.error.unwrap_or_default()
                        ),
                    ))
                }
                Err(e) if unreachable(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(RECONNECT)
                }
                Err(e) => return Err(from_vouchd(e)),
            }
        }
    }

    /// Create the container in vouchd, pulling vouch's own verified copy of its image first
    /// when vouchd has none (containerd's pull is not used: what runs is what vouchd pulled,
    /// checked against its image policy). A launch vouchd refuses is removed by vouchd
    /// (`remove_if_refused`): the refusal stays in the log (its `container.failed` record) and
    /// reaches containerd, and a kubelet's retries leave no failed tasks behind.
    fn create_pulling(&self, create: &vouch_api::CreateContainer) -> TtrpcResult<Container> {
        let attempt = || {
            self.client
                .call::<Container>("POST", "/v1/containers", Some(create))
        };
        let result = match attempt() {
            Err(ClientError::Api { message, .. })
                if message.starts_with("no such image") && spec::names_registry(&create.image) =>
            {
                let pull = vouch_api::PullImage {
                    reference: create.image.clone(),
                    ..Default::default()
                };
                self.client
                    .call::<serde_json::Value>("POST", "/v1/images/pull", Some(&pull))
                    .map_err(|e| {
                        status(
                            Code::FAILED_PRECONDITION,
                            format!("vouch: cannot pull {}: {e}", create.image),
                        )
                    })?;
                attempt()
            }
            other => other,
        };
        result.map_err(from_vouchd)
    }

    fn with_exec<T>(
        &self,
        id: &str,
        exec_id: &str,
        f: impl FnOnce(&mut ExecProc) -> T,
    ) -> TtrpcResult<T> {
        self.with_task(id, |t| t.execs.get_mut(exec_id).map(f))?
            .ok_or_else(|| status(Code::NOT_FOUND, format!("exec {exec_id} not found")))
    }

    /// Start an exec'd process: vouchd measures it (`container.exec`) and runs it; its output
    /// goes to containerd's FIFOs, its end to Wait and containerd.
    fn start_exec(&self, id: &str, exec_id: &str) -> TtrpcResult<api::StartResponse> {
        let container = self.with_task(id, |t| t.vouch_id.clone())?;
        let (request, stdin, stdout, stderr, ended, started) =
            self.with_exec(id, exec_id, |e| {
                (
                    e.request.clone(),
                    e.stdin.clone(),
                    e.stdout.clone(),
                    e.stderr.clone(),
                    Arc::clone(&e.ended),
                    e.vouch_id.is_some(),
                )
            })?;
        if started {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("exec {exec_id} was started already"),
            ));
        }
        let exec: Exec = self
            .client
            .call(
                "POST",
                &format!("/v1/containers/{container}/exec"),
                Some(&request),
            )
            .map_err(|e| {
                never_started(&ended, &stdin, &stdout, &stderr);
                from_vouchd(e)
            })?;
        let pid = exec.pid.unwrap_or(0).max(0) as u32;
        self.with_exec(id, exec_id, |e| {
            e.vouch_id = Some(exec.id.clone());
            e.pid = pid;
        })?;
        let output = relay(
            self.client.clone(),
            format!("/v1/execs/{}/logs", exec.id),
            stdout,
            stderr,
        );
        if !stdin.is_empty() {
            let feeding = feed_stdin(
                self.client.clone(),
                format!("/v1/execs/{}/stdin", exec.id),
                stdin,
            );
            self.with_exec(id, exec_id, |e| e.feeding = Some(feeding))?;
        }
        let client = self.client.clone();
        let publisher = Arc::clone(&self.publisher);
        let namespace = self.namespace.clone();
        let ids = (id.to_string(), exec_id.to_string());
        let vouch_exec = exec.id.clone();
        std::thread::spawn(move || {
            let done =
                client.call::<Exec>("POST", &format!("/v1/execs/{vouch_exec}/wait"), None::<&()>);
            let _ = output.join();
            let code = done
                .ok()
                .and_then(|e| e.exit_code)
                .map(|c| c.clamp(0, 255) as u32)
                .unwrap_or(255);
            finish(&ended, &publisher, &namespace, ids, pid, code);
        });
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Box::new(TaskExecStarted {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                pid,
                ..Default::default()
            }),
        );
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn exec_state(&self, id: &str, exec_id: &str) -> TtrpcResult<api::StateResponse> {
        let bundle = self.with_task(id, |t| t.bundle.clone())?;
        self.with_exec(id, exec_id, |e| {
            let ended = e.ended();
            let state = match (&ended, e.vouch_id.is_some()) {
                (Some(_), _) => api::Status::STOPPED,
                (None, false) => api::Status::CREATED,
                (None, true) => api::Status::RUNNING,
            };
            api::StateResponse {
                id: exec_id.to_string(),
                bundle,
                pid: e.pid,
                status: EnumOrUnknown::new(state),
                stdin: e.stdin.clone(),
                stdout: e.stdout.clone(),
                stderr: e.stderr.clone(),
                terminal: e.request.tty,
                exec_id: exec_id.to_string(),
                exit_status: ended.as_ref().map_or(0, |x| x.status),
                exited_at: ended.map_or_else(MessageField::none, |x| MessageField::some(x.at)),
                ..Default::default()
            }
        })
    }

    fn kill_exec(&self, id: &str, exec_id: &str, signal: u32) -> TtrpcResult<api::Empty> {
        let (vouch_exec, ended) =
            self.with_exec(id, exec_id, |e| (e.vouch_id.clone(), e.ended()))?;
        let Some(vouch_exec) = vouch_exec.filter(|_| ended.is_none()) else {
            return Err(status(Code::NOT_FOUND, "process already finished"));
        };
        self.client
            .call::<Exec>(
                "POST",
                &format!("/v1/execs/{vouch_exec}/kill?signal={signal}"),
                None::<&()>,
            )
            .map_err(kill_error)?;
        Ok(api::Empty::new())
    }

    fn delete_exec(&self, id: &str, exec_id: &str) -> TtrpcResult<api::DeleteResponse> {
        let (pid, started, ended) =
            self.with_exec(id, exec_id, |e| (e.pid, e.vouch_id.is_some(), e.ended()))?;
        if started && ended.is_none() {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("exec {exec_id} is running: kill it first"),
            ));
        }
        self.with_task(id, |t| t.execs.remove(exec_id))?;
        let ended = ended.unwrap_or(Ended {
            status: 0,
            at: now(),
        });
        Ok(api::DeleteResponse {
            pid,
            exit_status: ended.status,
            exited_at: MessageField::some(ended.at),
            ..Default::default()
        })
    }

    /// Start the pod's sandbox: its waiting process, reaped by a thread that then records
    /// its end.
    fn start_sandbox(
        &self,
        id: &str,
        started: bool,
        ended: Arc<(Mutex<Option<Ended>>, Condvar)>,
    ) -> TtrpcResult<api::StartResponse> {
        if started || lock(&ended.0).is_some() {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("sandbox {id} was started already"),
            ));
        }
        // A sandbox that cannot start ends here, as a container does (see `never_started`).
        let failed = |code: Code, message: String| {
            never_started(&ended, "", "", "");
            status(code, message)
        };
        let network = match self.with_task(id, |t| t.sandbox_network.clone())? {
            spec::Network::Host => PodNetwork::Host,
            spec::Network::Own => PodNetwork::Own,
            spec::Network::Join(path) => {
                PodNetwork::Join(spec::open_nonblocking(&path).map_err(|e| {
                    failed(
                        Code::FAILED_PRECONDITION,
                        format!("cannot open the pod's network namespace {path}: {e}"),
                    )
                })?)
            }
        };
        let pause = Arc::new(Pause::spawn(network).map_err(|e| {
            failed(
                Code::INTERNAL,
                format!("cannot start the pod's sandbox process: {e}"),
            )
        })?);
        let pid = pause.pid;
        self.with_task(id, |t| {
            t.pid = pid;
            t.sandbox = Some(Some(Arc::clone(&pause)));
        })?;
        let publisher = Arc::clone(&self.publisher);
        let namespace = self.namespace.clone();
        let task = id.to_string();
        std::thread::spawn(move || {
            let code = Pause::wait(pid);
            finish(
                &ended,
                &publisher,
                &namespace,
                (task.clone(), task),
                pid,
                code,
            );
        });
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: id.to_string(),
                pid,
                ..Default::default()
            }),
        );
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }
}

/// How long the shim waits between attempts to reach a vouchd that is restarting.
const RECONNECT: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether an error means vouchd is (for now) unreachable, not that it refused.
fn unreachable(e: &ClientError) -> bool {
    !matches!(e, ClientError::Api { .. })
}

/// Copy a container's log stream (vouchd's framed stdout/stderr) into containerd's FIFOs until
/// the container ends. A vouchd that restarts meanwhile is reconnected to, the stream taken up
/// where it was cut (its byte offset), so no output is lost or repeated.
/// A process whose Start failed: ended (status 255, as runc's shim has it), so that
/// containerd's Wait, which it called before the Start, returns and its Delete does not wait for
/// an exit that never comes; and its FIFOs released.
fn never_started(ended: &(Mutex<Option<Ended>>, Condvar), stdin: &str, stdout: &str, stderr: &str) {
    {
        let mut e = lock(&ended.0);
        if e.is_none() {
            *e = Some(Ended {
                status: 255,
                at: now(),
            });
        }
    }
    ended.1.notify_all();
    release_fifos(stdin, stdout, stderr);
}

/// Open and close a process's FIFOs once, for a process that will never use them: containerd's
/// copies (reading stdout and stderr, writing stdin) see their end instead of waiting for it.
fn release_fifos(stdin: &str, stdout: &str, stderr: &str) {
    use std::os::unix::fs::OpenOptionsExt as _;
    for (path, write) in [(stdout, true), (stderr, true), (stdin, false)] {
        if !path.is_empty() {
            // Non-blocking: an open fails at once where nobody holds the other end.
            let _ = OpenOptions::new()
                .read(!write)
                .write(write)
                .custom_flags(libc::O_NONBLOCK)
                .open(path);
        }
    }
}

fn relay(client: Client, logs: String, stdout: String, stderr: String) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let open = |path: &str| -> Option<File> {
            (!path.is_empty())
                .then(|| OpenOptions::new().write(true).open(path).ok())
                .flatten()
        };
        let mut out = open(&stdout);
        let mut err = if stderr == stdout {
            None
        } else {
            open(&stderr)
        };
        let mut dec = FrameDecoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset: u64 = 0;
        loop {
            let resp = match client.stream("GET", &format!("{logs}?follow=true&offset={offset}")) {
                Ok(r) => r,
                Err(e) if unreachable(&e) => {
                    std::thread::sleep(RECONNECT);
                    continue;
                }
                Err(_) => return,
            };
            let mut body = resp.body;
            loop {
                let n = match body.read(&mut buf) {
                    // The stream's end: the container ended and all it wrote was sent.
                    Ok(0) => return,
                    Ok(n) => n,
                    // Cut off (vouchd went away): take it up again from here.
                    Err(_) => break,
                };
                offset += n as u64;
                dec.push(&buf[..n]);
                while let Ok(Some((stream, data))) = dec.next_frame() {
                    let target = match stream {
                        STDOUT => out.as_mut(),
                        STDERR => err.as_mut().or(out.as_mut()),
                        _ => None,
                    };
                    if let Some(f) = target {
                        // A reader that went away loses the rest of the output, not the
                        // container.
                        if f.write_all(&data).is_err() {
                            if stream == STDOUT {
                                out = None;
                            } else {
                                err = None;
                            }
                        }
                    }
                }
            }
            std::thread::sleep(RECONNECT);
        }
    })
}

/// A copy of containerd's stdin FIFO into vouchd: its sender is dropped when the copy ends.
type Feeding = std::sync::mpsc::Receiver<()>;

/// containerd's CloseIO: the end of a process's stdin at `path`. The copy from the FIFO ends
/// by itself once containerd closes its side, and then closes the process's stdin after the
/// last byte: it is given a moment, so that no input still on its way is cut off by a close
/// that overtakes it; only a copy that does not end (containerd keeps its side open) is cut.
fn close_stdin(client: &Client, path: &str, feeding: Option<Feeding>) {
    if let Some(f) = feeding {
        if f.recv_timeout(std::time::Duration::from_secs(2))
            != Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        {
            return;
        }
    }
    // An empty stdin request: its end is the end of the process's stdin.
    let _ = client.upload_stream::<serde_json::Value>(path, std::io::empty());
}

/// Copy containerd's stdin FIFO into a process's stdin (vouchd's `/stdin`, streamed) until
/// containerd closes it.
fn feed_stdin(client: Client, path: String, fifo: String) -> Feeding {
    let (done, feeding) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _done = done;
        // Blocks until containerd opens its side.
        let Ok(input) = File::open(&fifo) else {
            return;
        };
        let _ = client.upload_stream::<serde_json::Value>(&path, input);
    });
    feeding
}

/// The container's end as vouchd reports it, waiting through vouchd restarts (its monitor keeps
/// the container and its exit status while vouchd is down). None if vouchd no longer knows it.
fn wait_end(client: &Client, vouch_id: &str) -> Option<WaitResponse> {
    loop {
        match client.call::<WaitResponse>(
            "POST",
            &format!("/v1/containers/{vouch_id}/wait"),
            None::<&()>,
        ) {
            Ok(w) => return Some(w),
            Err(e) if unreachable(&e) => std::thread::sleep(RECONNECT),
            Err(_) => return None,
        }
    }
}

impl shim::Task for Tasks {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if lock(&self.tasks).contains_key(&req.id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("container {} already exists in this shim", req.id),
            ));
        }
        let bundle = Path::new(&req.bundle);
        let config = std::fs::read(bundle.join("config.json")).map_err(|e| {
            status(
                Code::INVALID_ARGUMENT,
                format!("cannot read the bundle's config.json: {e}"),
            )
        })?;
        let oci: serde_json::Value = serde_json::from_slice(&config).map_err(|e| {
            status(
                Code::INVALID_ARGUMENT,
                spec::SpecError::Json(e.to_string()).to_string(),
            )
        })?;
        let network =
            spec::network(&oci).map_err(|e| status(Code::INVALID_ARGUMENT, e.to_string()))?;
        let sysctls =
            spec::sysctls(&oci).map_err(|e| status(Code::INVALID_ARGUMENT, e.to_string()))?;
        let (vouch_id, sandbox) = if spec::is_sandbox(&oci) {
            if let Some(uid) = spec::annotation(&oci, spec::CRI_SANDBOX_UID) {
                let _ = std::fs::write(bundle.join(POD_UID_FILE), uid);
            }
            (String::new(), Some(None))
        } else {
            let mut create = spec::request(&oci, &spec::vouch_name(&self.namespace, &req.id))
                .map_err(|e| status(Code::FAILED_PRECONDITION, e.to_string()))?;
            create.network = self.network_of(&oci, &network)?;
            // The pod's hostname, as its containers share the sandbox's UTS namespace under
            // runc: the container's spec's own if it has one, else its sandbox's.
            create.hostname = spec::hostname(&oci).or_else(|| {
                let sandbox = spec::annotation(&oci, spec::CRI_SANDBOX_ID)?;
                lock(&self.tasks).get(sandbox)?.hostname.clone()
            });
            // The pod's kernel parameters (on its sandbox's spec, as they are set on the
            // namespaces runc's containers share with the sandbox), then the container's own.
            if let Some(sandbox) = spec::annotation(&oci, spec::CRI_SANDBOX_ID) {
                if let Some(t) = lock(&self.tasks).get(sandbox) {
                    create.sysctls = t.sysctls.clone();
                }
            }
            create.sysctls.extend(sysctls.clone());
            // The spec's `process.terminal` is what is measured and what runs: the task's
            // I/O must be of the same kind.
            if create.tty != req.terminal {
                return Err(status(
                    Code::INVALID_ARGUMENT,
                    format!(
                        "the task asks for {} but its spec's process.terminal is {}",
                        if req.terminal {
                            "a terminal"
                        } else {
                            "no terminal"
                        },
                        create.tty
                    ),
                ));
            }
            create.stdin = !req.stdin.is_empty();
            let created = self.create_pulling(&create)?;
            // For the `delete` action, should this shim die.
            let _ = std::fs::write(bundle.join(VOUCH_ID_FILE), &created.id);
            (created.id, None)
        };
        // A sandbox's are its pod's, which its containers take; a container's are in its request.
        let sysctls = if sandbox.is_some() {
            sysctls
        } else {
            Default::default()
        };
        lock(&self.tasks).insert(
            req.id.clone(),
            Task {
                vouch_id,
                sandbox,
                sandbox_network: network,
                hostname: spec::hostname(&oci),
                sysctls,
                bundle: req.bundle.clone(),
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                feeding: None,
                pid: 0,
                ended: Arc::new((Mutex::new(None), Condvar::new())),
                execs: HashMap::new(),
            },
        );
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid: 0,
                ..Default::default()
            }),
        );
        Ok(api::CreateTaskResponse {
            pid: 0,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        if !req.exec_id.is_empty() {
            return self.start_exec(&req.id, &req.exec_id);
        }
        let (vouch_id, stdin, stdout, stderr, ended, sandbox) = self.with_task(&req.id, |t| {
            (
                t.vouch_id.clone(),
                t.stdin.clone(),
                t.stdout.clone(),
                t.stderr.clone(),
                Arc::clone(&t.ended),
                t.sandbox.clone(),
            )
        })?;
        if let Some(pause) = sandbox {
            return self.start_sandbox(&req.id, pause.is_some(), ended);
        }
        let started: Container = match self.client.call(
            "POST",
            &format!("/v1/containers/{vouch_id}/start"),
            None::<&()>,
        ) {
            Ok(c) => c,
            // vouchd went away before it answered: once it is back, the container says
            // whether it started.
            Err(e) if unreachable(&e) => self.after_restart(&vouch_id).inspect_err(|_| {
                never_started(&ended, &stdin, &stdout, &stderr);
            })?,
            Err(e) => {
                never_started(&ended, &stdin, &stdout, &stderr);
                return Err(from_vouchd(e));
            }
        };
        // A process that could not be started (its program missing, say) is an error of the
        // Start, as runc's is: containerd and `kubectl describe` show the reason.
        if started.pid.is_none() && started.state == vouch_api::TaskState::Failed {
            never_started(&ended, &stdin, &stdout, &stderr);
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!(
                    "vouch: {}",
                    started
                        .error
                        .as_deref()
                        .unwrap_or("the container failed to start")
                ),
            ));
        }
        let pid = started.pid.unwrap_or(0).max(0) as u32;
        self.with_task(&req.id, |t| t.pid = pid)?;
        if !stdin.is_empty() {
            let feeding = feed_stdin(
                self.client.clone(),
                format!("/v1/containers/{vouch_id}/stdin"),
                stdin,
            );
            self.with_task(&req.id, |t| t.feeding = Some(feeding))?;
        }
        let output = relay(
            self.client.clone(),
            format!("/v1/containers/{vouch_id}/logs"),
            stdout,
            stderr,
        );
        // The waiter: once the container ends and its output is all relayed, the exit is
        // known to Wait and to containerd.
        let client = self.client.clone();
        let publisher = Arc::clone(&self.publisher);
        let namespace = self.namespace.clone();
        let id = req.id.clone();
        std::thread::spawn(move || {
            let done = wait_end(&client, &vouch_id);
            let _ = output.join();
            let code = done
                .and_then(|w| w.exit_code)
                .map(|c| c.clamp(0, 255) as u32)
                .unwrap_or(255);
            finish(&ended, &publisher, &namespace, (id.clone(), id), pid, code);
        });
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: req.id,
                pid,
                ..Default::default()
            }),
        );
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        if !req.exec_id.is_empty() {
            return self.exec_state(&req.id, &req.exec_id);
        }
        self.with_task(&req.id, |t| {
            let ended = t.ended();
            let state = match (&ended, t.pid) {
                (Some(_), _) => api::Status::STOPPED,
                (None, 0) => api::Status::CREATED,
                (None, _) => api::Status::RUNNING,
            };
            api::StateResponse {
                id: req.id.clone(),
                bundle: t.bundle.clone(),
                pid: t.pid,
                status: EnumOrUnknown::new(state),
                stdin: t.stdin.clone(),
                stdout: t.stdout.clone(),
                stderr: t.stderr.clone(),
                terminal: false,
                exit_status: ended.as_ref().map_or(0, |e| e.status),
                exited_at: ended.map_or_else(MessageField::none, |e| MessageField::some(e.at)),
                ..Default::default()
            }
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        if !req.exec_id.is_empty() {
            return self.kill_exec(&req.id, &req.exec_id, req.signal);
        }
        let (vouch_id, ended, sandbox, done) = self.with_task(&req.id, |t| {
            (
                t.vouch_id.clone(),
                t.ended(),
                t.sandbox.clone(),
                Arc::clone(&t.ended),
            )
        })?;
        if ended.is_some() {
            return Err(status(Code::NOT_FOUND, "process already finished"));
        }
        match sandbox {
            Some(Some(pause)) => {
                return pause
                    .signal(req.signal)
                    .map(|()| api::Empty::new())
                    .map_err(|_| status(Code::NOT_FOUND, "process already finished"));
            }
            // A sandbox that never started ends with the signal, as runc's created init would.
            Some(None) => {
                finish(
                    &done,
                    &self.publisher,
                    &self.namespace,
                    (req.id.clone(), req.id),
                    0,
                    128 + req.signal.min(127),
                );
                return Ok(api::Empty::new());
            }
            None => {}
        }
        self.client
            .call::<Container>(
                "POST",
                &format!("/v1/containers/{vouch_id}/kill?signal={}", req.signal),
                None::<&()>,
            )
            .map_err(kill_error)?;
        Ok(api::Empty::new())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            return self.delete_exec(&req.id, &req.exec_id);
        }
        let (vouch_id, pid, ended, bundle, sandbox) = self.with_task(&req.id, |t| {
            (
                t.vouch_id.clone(),
                t.pid,
                t.ended(),
                t.bundle.clone(),
                t.sandbox.is_some(),
            )
        })?;
        if pid != 0 && ended.is_none() {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is running: kill it first", req.id),
            ));
        }
        // A created container that never started is cancelled by the forced removal.
        if !sandbox {
            self.client
                .call::<Container>(
                    "DELETE",
                    &format!("/v1/containers/{vouch_id}?force={}", pid == 0),
                    None::<&()>,
                )
                .map_err(from_vouchd)?;
        }
        let _ = std::fs::remove_file(Path::new(&bundle).join(VOUCH_ID_FILE));
        if sandbox {
            if pid != 0 {
                // Kept a zombie until now, so that its PID was not reused meanwhile.
                Pause::reap(pid);
            }
            let uid_file = Path::new(&bundle).join(POD_UID_FILE);
            if let Ok(uid) = std::fs::read_to_string(&uid_file) {
                remove_pod_volumes(&self.client, uid.trim());
                let _ = std::fs::remove_file(uid_file);
            }
        }
        lock(&self.tasks).remove(&req.id);
        let ended = ended.unwrap_or(Ended {
            status: 0,
            at: now(),
        });
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                id: req.id,
                pid,
                exit_status: ended.status,
                exited_at: MessageField::some(ended.at.clone()),
                ..Default::default()
            }),
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: ended.status,
            exited_at: MessageField::some(ended.at),
            ..Default::default()
        })
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let ended = if req.exec_id.is_empty() {
            self.with_task(&req.id, |t| Arc::clone(&t.ended))?
        } else {
            self.with_exec(&req.id, &req.exec_id, |e| Arc::clone(&e.ended))?
        };
        let mut guard = lock(&ended.0);
        while guard.is_none() {
            guard = ended.1.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
        let e = guard.clone().unwrap_or(Ended {
            status: 255,
            at: now(),
        });
        Ok(api::WaitResponse {
            exit_status: e.status,
            exited_at: MessageField::some(e.at),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let pids = self.with_task(&req.id, |t| {
            std::iter::once(t.pid)
                .chain(
                    t.execs
                        .values()
                        .filter(|e| e.ended().is_none())
                        .map(|e| e.pid),
                )
                .filter(|p| *p != 0)
                .collect::<Vec<_>>()
        })?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    /// The cgroup metrics of the container's process (containerd's `ctr task metrics`, the
    /// CRI's ContainerStats): v2's where the unified hierarchy is mounted, v1's otherwise.
    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let (pid, ended) = self.with_task(&req.id, |t| (t.pid, Arc::clone(&t.ended)))?;
        if pid == 0 || lock(&ended.0).is_some() {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is not running: it has no metrics", req.id),
            ));
        }
        let failed = |e: shim::Error| {
            status(
                Code::INTERNAL,
                format!("cannot read the cgroup of container {}: {e}", req.id),
            )
        };
        let cgroup = shim::cgroup::get_cgroup(pid).map_err(failed)?;
        let metrics: Box<dyn MessageDyn> =
            if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                Box::new(shim::cgroup::collect_metrics_v2(&cgroup).map_err(failed)?)
            } else {
                Box::new(shim::cgroup::collect_metrics(&cgroup).map_err(failed)?)
            };
        Ok(api::StatsResponse {
            stats: MessageField::some(shim::util::convert_to_any(metrics).map_err(failed)?),
            ..Default::default()
        })
    }

    /// Refused: a container's resources are in its measured spec, so they do not change after
    /// its create (a verifier would otherwise see limits that no longer hold).
    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        self.with_task(&req.id, |_| ())?;
        Err(status(
            Code::FAILED_PRECONDITION,
            format!(
                "container {}: vouch measures a container's resources with its spec at its create, so they do not change while it runs; recreate it with the new resources",
                req.id
            ),
        ))
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        if req.exec_id.is_empty() {
            let (vouch_id, stdin, feeding) = self.with_task(&req.id, |t| {
                let feeding = if req.stdin { t.feeding.take() } else { None };
                (t.vouch_id.clone(), !t.stdin.is_empty(), feeding)
            })?;
            if stdin && req.stdin && !vouch_id.is_empty() {
                close_stdin(
                    &self.client,
                    &format!("/v1/containers/{vouch_id}/stdin"),
                    feeding,
                );
            }
            return Ok(api::Empty::new());
        }
        let (vouch_exec, feeding) = self.with_exec(&req.id, &req.exec_id, |e| {
            let feeding = if req.stdin { e.feeding.take() } else { None };
            (e.vouch_id.clone(), feeding)
        })?;
        if let Some(vouch_exec) = vouch_exec.filter(|_| req.stdin) {
            close_stdin(
                &self.client,
                &format!("/v1/execs/{vouch_exec}/stdin"),
                feeding,
            );
        }
        Ok(api::Empty::new())
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let pid = lock(&self.tasks).get(&req.id).map_or(0, |t| t.pid);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // The shim serves its pod's containers: it goes when the last is deleted.
        if lock(&self.tasks).is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let process = req.spec.as_ref().map(|a| a.value.as_slice()).unwrap_or(&[]);
        let mut request = spec::exec_request(process, !req.stdin.is_empty())
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("exec {}: {e}", req.exec_id)))?;
        request.tty |= req.terminal;
        self.with_task(&req.id, |t| {
            if t.sandbox.is_some() {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    "a pod's sandbox runs no processes: exec into one of its containers",
                ));
            }
            if t.execs.contains_key(&req.exec_id) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("exec {} already exists", req.exec_id),
                ));
            }
            t.execs.insert(
                req.exec_id.clone(),
                ExecProc {
                    request,
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    vouch_id: None,
                    feeding: None,
                    pid: 0,
                    ended: Arc::new((Mutex::new(None), Condvar::new())),
                },
            );
            Ok(())
        })??;
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id,
                exec_id: req.exec_id,
                ..Default::default()
            }),
        );
        Ok(api::Empty::new())
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        if req.width == 0 || req.height == 0 || req.width > 65535 || req.height > 65535 {
            return Err(status(
                Code::INVALID_ARGUMENT,
                "a terminal size of 0 or over 65535",
            ));
        }
        if req.exec_id.is_empty() {
            let vouch_id = self.with_task(&req.id, |t| t.vouch_id.clone())?;
            if vouch_id.is_empty() {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("{} is a pod sandbox: it has no terminal", req.id),
                ));
            }
            self.client
                .call::<Container>(
                    "POST",
                    &format!(
                        "/v1/containers/{vouch_id}/resize?cols={}&rows={}",
                        req.width, req.height
                    ),
                    None::<&()>,
                )
                .map_err(from_vouchd)?;
            return Ok(api::Empty::new());
        }
        let (vouch_exec, tty) = self.with_exec(&req.id, &req.exec_id, |e| {
            (e.vouch_id.clone(), e.request.tty)
        })?;
        let Some(vouch_exec) = vouch_exec.filter(|_| tty) else {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("exec {} has no terminal running", req.exec_id),
            ));
        };
        self.client
            .call::<Exec>(
                "POST",
                &format!(
                    "/v1/execs/{vouch_exec}/resize?cols={}&rows={}",
                    req.width, req.height
                ),
                None::<&()>,
            )
            .map_err(from_vouchd)?;
        Ok(api::Empty::new())
    }
}
