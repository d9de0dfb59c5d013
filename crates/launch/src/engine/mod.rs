//! The task engine: one task per container, a persisted state machine with an event list, and
//! the measured launch path (`image.verified` -> `container.create` -> `container.start` ->
//! `container.exit`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use vouch_api::{
    Container, CreateContainer, EventMessage, ImageSummary, Info, TaskEvent, TaskState,
    WaitResponse,
};
use vouch_base::{clock, error_chain};
use vouch_image::{ContentStore, ImageRecord, LoadError, StoreError};
use vouch_kbs_client::SecretRef;
use vouch_runtime::copies::CopiesDir;
use vouch_runtime::monitor::{self, read_exit, ExitRecord, MonitorReport};
use vouch_runtime::rootfs::{Overlay, RootfsError};
use vouch_runtime::secrets::SecretsDir;
use vouch_runtime::spec::{self, ContainerSpec, JoinedNetwork, Resources, SpecError};
use vouch_tee::{Journal, JournalError, TeeType, VOUCH_REGISTER};

mod conker;
mod exec;
mod exit;
mod launch;
mod process;
mod reconcile;

use process::*;

use crate::config::DaemonConfig;
use crate::db::{Db, DbError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    #[error(
        "no such exec: {0} (vouchd forgets execs when it restarts or their container is removed)"
    )]
    NoSuchExec(String),
    #[error("container reference {0:?} is ambiguous; use more characters of the id")]
    AmbiguousContainer(String),
    #[error("container name {name:?} is already in use by container {id}")]
    NameInUse { name: String, id: String },
    #[error("container {0} is running: stop it first, or remove it by force")]
    Running(String),
    #[error("image {image} is used by container {container}; remove the container first")]
    ImageInUse { image: String, container: String },
    #[error("{0}")]
    BadRequest(String),
    /// A refusal with a code ([`vouch_api::codes`]) clients turn into their own hint.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("invalid container configuration")]
    Spec(#[from] SpecError),
    #[error("image store")]
    Store(#[from] StoreError),
    #[error("cannot load image")]
    Load(#[from] LoadError),
    #[error("measurement failed")]
    Journal(#[from] JournalError),
    #[error("state database")]
    Db(#[from] DbError),
    #[error("root filesystem")]
    Rootfs(#[from] RootfsError),
    #[error("secret {url}: KBS {kbs} refused or failed")]
    Secret {
        url: String,
        kbs: String,
        #[source]
        source: vouch_kbs_client::KbsClientError,
    },
    #[error("the task was cancelled")]
    Cancelled,
    #[error("a task already exists ({0}): DELETE it first")]
    TaskExists(String),
    #[error("container {id} failed to start: {reason}")]
    StartFailed { id: String, reason: String },
    #[error("a task cannot go from {} to {}", from.as_str(), to.as_str())]
    Transition { from: TaskState, to: TaskState },
    #[error("{0}")]
    Internal(String),
}

/// How many removed tasks keep their final view for late `wait` calls.
const REMOVED_KEPT: usize = 256;
/// The event recorded when a container is removed.
const REMOVED: &str = "Removed";
/// The event recorded when removing a --rm container after it ended failed.
const REMOVE_FAILED: &str = "RemoveFailed";

/// The inputs of one launch.
#[derive(Clone, Copy)]
struct Launch<'a> {
    golden: Option<&'a vouch_image::golden::SignedGolden>,
    id: &'a str,
    name: &'a str,
    reference: &'a str,
    image: &'a ImageRecord,
    spec: &'a ContainerSpec,
    secrets: &'a [SecretRef],
    gate: Option<&'a std::sync::mpsc::Receiver<()>>,
    /// The terminal's first size (columns, rows), when it has one.
    size: (u16, u16),
}

/// What an update does to a task's state: move it along the transition table, or leave it and
/// only record an event (the action named).
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    To(TaskState),
    Note(&'a str),
}

impl EngineError {
    /// The refusal's code for clients, when it has one.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            EngineError::Running(_) => Some(vouch_api::codes::CONTAINER_RUNNING),
            EngineError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl Step<'_> {
    /// The event's action: the new state's name, or the note's.
    fn action(&self) -> &str {
        match self {
            Step::To(s) => s.as_str(),
            Step::Note(a) => a,
        }
    }
}

/// What is persisted per task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub view: Container,
    /// Named volumes the container mounts.
    #[serde(default)]
    pub volumes: Vec<String>,
    pub monitor_pid: Option<i32>,
    /// Start times (clock ticks since boot) of the monitor and of the container's first process:
    /// a PID is theirs only while a process with that PID and start time exists, so a PID the
    /// kernel has given to another process since is never taken for them, nor signalled.
    #[serde(default)]
    pub monitor_start: Option<u64>,
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// The Conker request this task came from (secrets redacted), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conker: Option<Value>,
}

/// A recorded task waiting to be launched.
struct Pending {
    golden: Option<vouch_image::golden::SignedGolden>,
    id: String,
    name: String,
    reference: String,
    image: ImageRecord,
    spec: ContainerSpec,
    secrets: Vec<SecretRef>,
    auto_remove: bool,
    /// Created with `wait_for_start`: the start request comes through here.
    gate: Option<std::sync::mpsc::Receiver<()>>,
    size: (u16, u16),
}

pub struct Engine {
    cfg: DaemonConfig,
    db: Db,
    images: ContentStore,
    policy: Option<vouch_image::policy::ImagePolicy>,
    golden_keys: Vec<p256::ecdsa::VerifyingKey>,
    lookaside: vouch_image::simplesign::Lookaside,
    kbs_trust: vouch_kbs_client::KbsTrust,
    journal: Mutex<Journal>,
    tasks: Mutex<BTreeMap<String, TaskRecord>>,
    /// Latest view per task. Kept for a while after a task is removed, so a client that waits
    /// on an auto-removed container still learns how it ended.
    watchers: Mutex<HashMap<String, watch::Sender<Container>>>,
    /// Removed tasks whose watchers are still kept, oldest first (bounded by REMOVED_KEPT).
    removed: Mutex<std::collections::VecDeque<String>>,
    events: broadcast::Sender<EventMessage>,
    /// Serializes name checks and task insertion.
    create_lock: Mutex<()>,
    /// Tasks asked to stop launching.
    cancels: Mutex<std::collections::HashSet<String>>,
    /// Secret fetches in flight, by task: a cancel interrupts them at once.
    fetches: Mutex<HashMap<String, Arc<vouch_kbs_client::client::Interrupt>>>,
    /// What `/metrics` shows.
    metrics: crate::metrics::Metrics,
    /// `--rm` tasks created with `attach`: once ended they are removed by the wait that returns
    /// their end (or ATTACH_HOLD_SECS later), not at once, so an attached caller finds them.
    held: Mutex<std::collections::HashSet<String>>,
    /// Tasks created with `wait_for_start`, created and waiting: a start request sends on its
    /// gate; a cancel drops it.
    start_gates: Mutex<HashMap<String, std::sync::mpsc::SyncSender<()>>>,
    /// Processes exec'd into running containers, by exec id.
    execs: Mutex<HashMap<String, exec::ExecEntry>>,
}

/// Why a launch cancelled before its start ended, as its task and its `container.failed` say.
const CANCELLED_BEFORE_START: &str = "cancelled before the container started";

/// How long a forced removal or a stop waits for a launch it cancelled to wind down (it stops
/// at its next step; a fetch from a KBS is interrupted at once).
const LAUNCH_ABORT_WAIT: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Random hex from the OS CSPRNG (no fallback: a weaker source could make ids collide).
fn random_hex(bytes: usize) -> Result<String, EngineError> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| {
        EngineError::Internal(format!(
            "the operating system's random number generator failed: {e}"
        ))
    })?;
    Ok(hex::encode(b))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128
}

pub(crate) fn image_summary(r: &ImageRecord) -> ImageSummary {
    ImageSummary {
        id: r.id().to_string(),
        names: r.names.clone(),
        manifest_digest: r.manifest_digest.to_string(),
        config_digest: r.config_digest.to_string(),
        size: r.size,
        layers: r.layers.len(),
    }
}

impl Engine {
    /// Open all state, repair the journal after a crash, and reconcile containers that changed
    /// while vouchd was not running.
    pub fn open(
        cfg: DaemonConfig,
        attester: Arc<dyn vouch_tee::Attester>,
    ) -> Result<Arc<Self>, EngineError> {
        for d in [
            cfg.state_dir.clone(),
            cfg.containers_dir(),
            cfg.runtime_root(),
        ] {
            fs::create_dir_all(&d).map_err(|e| {
                EngineError::Internal(format!("cannot create {}: {e}", d.display()))
            })?;
        }
        let db = Db::open(&cfg.db_path())?;
        let images = ContentStore::open(&cfg.images_dir())?;
        let policy = match &cfg.image_policy {
            Some(p) => {
                let policy = vouch_image::policy::ImagePolicy::load(p)
                    .map_err(|e| EngineError::BadRequest(error_chain(&e)))?;
                tracing::info!(policy = %p.display(), digest = %policy.digest, "image policy enforced");
                Some(policy)
            }
            None => None,
        };
        let mut golden_keys = Vec::new();
        for p in &cfg.golden_keys {
            let pem = fs::read_to_string(p).map_err(|e| {
                EngineError::BadRequest(format!(
                    "cannot read golden-value key {}: {e}",
                    p.display()
                ))
            })?;
            golden_keys.push(vouch_image::cosign::parse_public(&pem).map_err(|e| {
                EngineError::BadRequest(format!("golden-value key {}: {e}", p.display()))
            })?);
        }
        let lookaside = vouch_image::simplesign::Lookaside::load(&cfg.registries_d)
            .map_err(|e| EngineError::BadRequest(error_chain(&e)))?;
        let kbs_trust = vouch_kbs_client::KbsTrust::from_ca_files(&cfg.kbs_cas)
            .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        let (journal, report) = Journal::open(&cfg.eventlog_path(), attester, VOUCH_REGISTER)?;
        if report.truncated_bytes > 0 || report.extended_last {
            tracing::warn!(
                truncated_bytes = report.truncated_bytes,
                extended_last = report.extended_last,
                "measurement log recovered after an interrupted write"
            );
        }
        if let Some(seq) = report.rejected_record {
            tracing::error!(
                record = seq,
                kept_in = %cfg.eventlog_path().with_extension("rejected").display(),
                "the measurement log ended with a record vouchd was not writing (appended while it was stopped); it was cut off and never measured"
            );
        }
        let mut tasks = BTreeMap::new();
        for t in db.all::<TaskRecord>()? {
            tasks.insert(t.view.id.clone(), t);
        }
        let (events, _) = broadcast::channel(1024);
        let engine = Arc::new(Engine {
            cfg,
            db,
            images,
            policy,
            golden_keys,
            lookaside,
            kbs_trust,
            journal: Mutex::new(journal),
            tasks: Mutex::new(tasks),
            watchers: Mutex::new(HashMap::new()),
            events,
            create_lock: Mutex::new(()),
            cancels: Mutex::new(Default::default()),
            fetches: Mutex::new(Default::default()),
            metrics: Default::default(),
            held: Mutex::new(Default::default()),
            removed: Mutex::new(Default::default()),
            start_gates: Mutex::new(Default::default()),
            execs: Mutex::new(Default::default()),
        });
        engine.reconcile();
        Ok(engine)
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.cfg
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.cfg.containers_dir().join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("container.log")
    }

    /// What is host-local about a launch, for the measured projection of its spec.
    fn host_local<'a>(&'a self, id: &'a str) -> vouch_runtime::projection::HostLocal<'a> {
        vouch_runtime::projection::HostLocal {
            root: &self.cfg.state_dir,
            id,
        }
    }

    /// The measured projection of a container's runtime spec, read back from the file the
    /// runtime was given, with its digest.
    pub fn runtime_spec(&self, reference: &str) -> Result<vouch_api::RuntimeSpec, EngineError> {
        let id = self.resolve(reference)?;
        let path = self.container_dir(&id).join("bundle").join("config.json");
        let bytes = fs::read(&path).map_err(|e| {
            EngineError::BadRequest(format!(
                "container {} has no runtime spec ({e}): it has not been created yet, or it has been cleaned up",
                &id[..12]
            ))
        })?;
        let measured =
            vouch_runtime::projection::Measured::of_config(&bytes, &self.host_local(&id))?;
        Ok(vouch_api::RuntimeSpec {
            id,
            config_digest: measured.digest,
            spec: measured.projection,
        })
    }

    fn exit_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("exit.json")
    }

    /// The socket a container's monitor takes its input on (with a terminal or stdin). Short:
    /// a socket's path has at most 107 bytes, and the container's directory is deep.
    pub(super) fn input_path(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("c").join(&id[..32.min(id.len())])
    }

    /// Make the private directory of the input socket `path` (of `what`: "a container's
    /// input", "an exec's input"), and refuse a path longer than a socket's address holds.
    pub(super) fn input_socket(&self, path: PathBuf, what: &str) -> Result<PathBuf, EngineError> {
        if let Some(parent) = path.parent() {
            std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
                .create(parent)
                .map_err(|e| {
                    EngineError::Internal(format!("cannot create {}: {e}", parent.display()))
                })?;
        }
        if path.as_os_str().len() > 100 {
            return Err(EngineError::Internal(format!(
                "vouchd's state directory {} is too deep for the socket of {what}",
                self.cfg.state_dir.display()
            )));
        }
        Ok(path)
    }

    /// Write a task to the state database; the caller decides what a failed write means.
    fn persist(&self, rec: &TaskRecord) -> Result<(), EngineError> {
        Ok(self.db.put(&rec.view.id, rec)?)
    }

    /// [`Self::update`] on a path that has no caller to hand a failed write to and must go on
    /// whatever the database says (the container runs or has ended, a failure is being
    /// recorded): the failed write is logged, the view comes from memory, and the task's next
    /// successful write makes it durable.
    fn update_anyway(
        &self,
        id: &str,
        step: Step<'_>,
        message: &str,
        change: impl FnOnce(&mut TaskRecord),
    ) -> Option<Container> {
        match self.update(id, step, message, change) {
            Ok(view) => view,
            Err(e) => {
                tracing::error!(id = %id, error = %error_chain(&e), "cannot update task");
                lock(&self.tasks).get(id).map(|r| r.view.clone())
            }
        }
    }

    /// Apply a change to a task in memory only, without an event: it reaches the database with
    /// the task's next update.
    fn modify(&self, id: &str, change: impl FnOnce(&mut TaskRecord)) {
        if let Some(rec) = lock(&self.tasks).get_mut(id) {
            change(rec);
        }
    }

    /// Apply a change to a task, add an event, persist, and notify watchers and subscribers.
    /// A state change is `Step::To`, checked against the transition table ([`crate::task`]);
    /// `change` sets the task's other fields, never its state.
    fn update(
        &self,
        id: &str,
        step: Step<'_>,
        message: &str,
        change: impl FnOnce(&mut TaskRecord),
    ) -> Result<Option<Container>, EngineError> {
        let rec = {
            let mut tasks = lock(&self.tasks);
            let Some(rec) = tasks.get_mut(id) else {
                return Ok(None);
            };
            let from = rec.view.state;
            if let Step::To(to) = step {
                if !crate::task::allowed(from, to) {
                    return Err(EngineError::Transition { from, to });
                }
            }
            change(rec);
            rec.view.state = match step {
                Step::To(to) => to,
                Step::Note(_) => from,
            };
            self.record_event(&mut rec.view, step.action(), message);
            rec.clone()
        };
        // Watchers see the state the task is in, whether or not it could be written.
        self.notify_watchers(&rec.view);
        self.persist(&rec)?;
        Ok(Some(rec.view))
    }

    /// Add an event to a task's view and broadcast it.
    fn record_event(&self, view: &mut Container, action: &str, message: &str) {
        let event = TaskEvent {
            time: clock::rfc3339_millis(),
            action: action.to_string(),
            message: message.to_string(),
        };
        view.events.push(event.clone());
        let _ = self.events.send(EventMessage {
            id: view.id.clone(),
            name: view.name.clone(),
            event,
        });
    }

    /// Give the task's watchers (waits, followed logs) its current view.
    fn notify_watchers(&self, view: &Container) {
        if let Some(w) = lock(&self.watchers).get(&view.id) {
            w.send_replace(view.clone());
        }
    }

    fn set_state(
        &self,
        id: &str,
        state: TaskState,
        message: &str,
    ) -> Result<Option<Container>, EngineError> {
        self.update(id, Step::To(state), message, |_| {})
    }

    fn fail(&self, id: &str, reason: &str) {
        self.update_anyway(id, Step::To(TaskState::Failed), reason, |r| {
            r.view.error = Some(reason.to_string());
            r.view.finished_at = Some(clock::rfc3339_millis());
        });
    }

    /// Measure one record; returns its sequence number.
    fn measure(&self, op: &str, content: Value) -> Result<u64, EngineError> {
        Ok(lock(&self.journal).append(op, content)?.seq)
    }

    /// Find a task by full id, name, or unique id prefix.
    pub fn resolve(&self, reference: &str) -> Result<String, EngineError> {
        let tasks = lock(&self.tasks);
        if tasks.contains_key(reference) {
            return Ok(reference.to_string());
        }
        if let Some(t) = tasks.values().find(|t| t.view.name == reference) {
            return Ok(t.view.id.clone());
        }
        let matches: Vec<&String> = tasks
            .keys()
            .filter(|k| !reference.is_empty() && k.starts_with(reference))
            .collect();
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(EngineError::NoSuchContainer(reference.to_string())),
            _ => Err(EngineError::AmbiguousContainer(reference.to_string())),
        }
    }

    pub fn get(&self, reference: &str) -> Result<Container, EngineError> {
        let id = self.resolve(reference)?;
        lock(&self.tasks)
            .get(&id)
            .map(|t| t.view.clone())
            .ok_or(EngineError::NoSuchContainer(reference.to_string()))
    }

    /// The socket a running container's monitor takes its input on (stdin, terminal resizes),
    /// with the container: it must have been created with a terminal or stdin.
    pub fn container_input(&self, reference: &str) -> Result<(PathBuf, Container), EngineError> {
        let view = self.get(reference)?;
        if !view.tty && !view.stdin {
            return Err(EngineError::BadRequest(format!(
                "container {} has no stdin and no terminal: create it with stdin or tty (vouch run -i, -t)",
                &view.id[..12]
            )));
        }
        if view.state != TaskState::Running {
            return Err(EngineError::BadRequest(format!(
                "container {} is not running ({})",
                &view.id[..12],
                view.state.as_str()
            )));
        }
        Ok((self.input_path(&view.id), view))
    }

    pub fn list(&self, all: bool) -> Vec<Container> {
        let mut v: Vec<Container> = lock(&self.tasks)
            .values()
            .filter(|t| all || !t.view.state.is_final())
            .map(|t| t.view.clone())
            .collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        v
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<EventMessage> {
        self.events.subscribe()
    }

    pub fn all_events(&self) -> Vec<EventMessage> {
        let mut out: Vec<EventMessage> = lock(&self.tasks)
            .values()
            .flat_map(|t| {
                t.view.events.iter().map(|e| EventMessage {
                    id: t.view.id.clone(),
                    name: t.view.name.clone(),
                    event: e.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.event.time.cmp(&b.event.time));
        out
    }

    /// A receiver that always holds the task's latest view.
    pub fn watch(&self, reference: &str) -> Result<watch::Receiver<Container>, EngineError> {
        let mut watchers = lock(&self.watchers);
        if let Some(w) = watchers.get(reference) {
            return Ok(w.subscribe());
        }
        let id = self.resolve(reference)?;
        if let Some(w) = watchers.get(&id) {
            return Ok(w.subscribe());
        }
        let view = self.get(&id)?;
        let (tx, rx) = watch::channel(view);
        watchers.insert(id, tx);
        Ok(rx)
    }

    pub async fn wait(self: &Arc<Self>, reference: &str) -> Result<WaitResponse, EngineError> {
        let mut rx = self.watch(reference)?;
        // A container started with --rm is waited for until its removal has been attempted, so
        // that a caller who returns from the wait never still sees it listed; one held for an
        // attached caller is removed here, by the first wait that sees it ended.
        let view = rx
            .wait_for(|c| {
                c.state.is_final()
                    && (!c.auto_remove
                        || lock(&self.held).contains(&c.id)
                        || c.events
                            .last()
                            .is_some_and(|e| e.action == REMOVED || e.action == REMOVE_FAILED))
            })
            .await
            .map(|c| c.clone())
            .map_err(|_| EngineError::Internal("container watch closed".into()))?;
        if view.auto_remove && lock(&self.held).contains(&view.id) {
            let engine = Arc::clone(self);
            let id = view.id.clone();
            tokio::task::spawn_blocking(move || engine.release_hold(&id))
                .await
                .map_err(|e| EngineError::Internal(format!("removal task failed: {e}")))?;
        }
        Ok(WaitResponse {
            id: view.id,
            state: view.state,
            exit_code: view.exit_code,
            oom_killed: view.oom_killed,
            error: view.error,
        })
    }

    pub fn info(&self) -> Result<Info, EngineError> {
        let journal = lock(&self.journal);
        let tee = journal.tee();
        let tasks = lock(&self.tasks);
        Ok(Info {
            version: env!("CARGO_PKG_VERSION").to_string(),
            tee: tee.to_string(),
            hardware: tee != TeeType::Sim,
            register_index: VOUCH_REGISTER,
            register: journal.register()?.to_hex(),
            records: journal.records().len(),
            containers: tasks.len(),
            running: tasks
                .values()
                .filter(|t| t.view.state == TaskState::Running)
                .count(),
            images: self.images.list()?.len(),
            warning: (tee == TeeType::Sim).then(|| vouch_tee::evidence::SIM_WARNING.to_string()),
        })
    }

    pub fn tee_info(&self) -> vouch_api::TeeInfo {
        let journal = lock(&self.journal);
        let tee = journal.tee();
        vouch_api::TeeInfo {
            tee: tee.to_string(),
            hardware: tee != TeeType::Sim,
            register_index: VOUCH_REGISTER,
            registers: journal
                .all_registers()
                .into_iter()
                .map(|r| {
                    r.map(|d| d.to_hex())
                        .unwrap_or_else(|e| format!("unavailable: {}", error_chain(&e)))
                })
                .collect(),
            attestation_key: journal.attestation_key(),
            warning: (tee == TeeType::Sim).then(|| vouch_tee::evidence::SIM_WARNING.to_string()),
        }
    }

    pub fn attest(&self, nonce: &str) -> Result<Value, EngineError> {
        let ok = nonce.len() >= 16
            && nonce.len() <= 128
            && nonce.len() % 2 == 0
            && nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(EngineError::BadRequest(
                "nonce must be 8 to 64 bytes of lower-case hex".into(),
            ));
        }
        let started = Instant::now();
        let evidence = lock(&self.journal).evidence(json!({"nonce": nonce}))?;
        self.metrics.attestation.observe(started.elapsed());
        serde_json::to_value(&evidence).map_err(|e| EngineError::Internal(e.to_string()))
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        let mut by_state: BTreeMap<&'static str, (TaskState, u64)> = BTreeMap::new();
        for t in lock(&self.tasks).values() {
            by_state
                .entry(t.view.state.as_str())
                .or_insert((t.view.state, 0))
                .1 += 1;
        }
        let tasks: Vec<(TaskState, u64)> = by_state.into_values().collect();
        let records = lock(&self.journal).records().len() as u64;
        self.metrics.render(&tasks, records)
    }

    // ---- images -----------------------------------------------------------------------------

    pub fn images(&self) -> Result<Vec<ImageSummary>, EngineError> {
        Ok(self.images.list()?.iter().map(image_summary).collect())
    }

    /// Load the images of an archive the client uploaded (a file in the store's temporary
    /// directory, removed afterwards).
    pub fn load_uploaded(
        &self,
        archive: &Path,
        name: Option<&str>,
    ) -> Result<Vec<ImageSummary>, EngineError> {
        let r = self.load_from(archive, name, name.unwrap_or(""), "the uploaded archive");
        let _ = fs::remove_file(archive);
        r
    }

    /// Load the images of an archive on the daemon's own host (`vouch image load
    /// --daemon-path`): a regular file only, its last component never followed, opened without
    /// blocking, and loaded through the descriptor opened.
    pub fn load_host_archive(
        &self,
        path: &str,
        name: Option<&str>,
    ) -> Result<Vec<ImageSummary>, EngineError> {
        let (_file, via) = vouch_image::layout::open_host_archive(Path::new(path))?;
        self.load_from(&via, name, name.unwrap_or(path), path)
    }

    fn load_from(
        &self,
        source: &Path,
        name: Option<&str>,
        scope: &str,
        label: &str,
    ) -> Result<Vec<ImageSummary>, EngineError> {
        if let Some(n) = name {
            vouch_image::reference::check("image name", n).map_err(EngineError::BadRequest)?;
        }
        let decision = match &self.policy {
            Some(p) => Some(
                p.check_local(scope)
                    .map_err(|e| EngineError::Load(LoadError::Policy(e)))?,
            ),
            None => None,
        };
        let mut loaded = vouch_image::layout::load_labeled(&self.images, source, name, label)?;
        if decision.is_some() {
            for r in loaded.iter_mut() {
                r.verification = decision.clone();
                *r = self.images.put_image(r.clone())?;
            }
        }
        Ok(loaded.iter().map(image_summary).collect())
    }

    /// A private file for an archive being uploaded.
    pub fn upload_file(&self) -> Result<(PathBuf, fs::File), EngineError> {
        Ok(self.images.temp_file("upload")?)
    }

    /// Pull an image from a registry into the store.
    pub fn pull_image(
        &self,
        req: &vouch_api::PullImage,
        progress: &(dyn Fn(vouch_image::registry::PullEvent) + Sync),
    ) -> Result<ImageSummary, EngineError> {
        let reference = req.reference.trim();
        vouch_image::reference::check("image reference", reference)
            .map_err(EngineError::BadRequest)?;
        let registry = vouch_image::registry::registry_host(reference)
            .unwrap_or("docker.io")
            .to_string();
        let opts = vouch_image::registry::PullOptions {
            insecure_registries: {
                let mut list = self.cfg.insecure_registries.clone();
                if req.insecure_registry {
                    list.push(registry);
                }
                list
            },
            username: req.username.clone(),
            password: req.password.clone(),
            timeout: Some(self.cfg.registry_timeout),
            lookaside: self.lookaside.clone(),
        };
        tracing::info!(reference, "pulling");
        let record = vouch_image::registry::pull(
            &self.images,
            reference,
            &opts,
            self.policy.as_ref(),
            &progress,
        )?;
        tracing::info!(reference, digest = %record.manifest_digest, "pulled");
        Ok(image_summary(&record))
    }

    // ---- volumes -----------------------------------------------------------------------------

    /// Containers that mount volume `name` and have not ended.
    fn volume_users(&self, name: &str) -> Vec<String> {
        lock(&self.tasks)
            .values()
            .filter(|t| !t.view.state.is_final() && t.volumes.iter().any(|v| v == name))
            .map(|t| t.view.id[..12].to_string())
            .collect()
    }

    pub fn volumes(&self) -> Result<Vec<vouch_api::Volume>, EngineError> {
        let dir = self.cfg.volumes_dir();
        let mut names: Vec<String> = match fs::read_dir(&dir) {
            Ok(d) => d
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(EngineError::Internal(format!("cannot list volumes: {e}"))),
        };
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| vouch_api::Volume {
                used_by: self.volume_users(&name),
                name,
            })
            .collect())
    }

    pub fn remove_volume(&self, name: &str) -> Result<vouch_api::Volume, EngineError> {
        let (valid, _, _, _) = spec::parse_volume(&format!("{name}:/v"))
            .map_err(|_| EngineError::BadRequest(format!("invalid volume name {name:?}")))?;
        let path = self.cfg.volumes_dir().join(&valid);
        if !path.is_dir() {
            return Err(EngineError::BadRequest(format!("no such volume: {name}")));
        }
        let used_by = self.volume_users(&valid);
        if !used_by.is_empty() {
            return Err(EngineError::BadRequest(format!(
                "volume {name} is used by container {}; remove the container first",
                used_by.join(", ")
            )));
        }
        fs::remove_dir_all(&path)
            .map_err(|e| EngineError::Internal(format!("cannot remove volume {name}: {e}")))?;
        Ok(vouch_api::Volume {
            name: valid,
            used_by,
        })
    }

    pub fn remove_image(&self, reference: &str) -> Result<ImageSummary, EngineError> {
        let image = self.images.find(reference)?;
        let digest = image.manifest_digest.to_string();
        if let Some(t) = lock(&self.tasks)
            .values()
            .find(|t| t.view.image_digest == digest && !t.view.state.is_final())
        {
            return Err(EngineError::ImageInUse {
                image: reference.to_string(),
                container: t.view.id[..12].to_string(),
            });
        }
        Ok(image_summary(&self.images.remove(reference)?))
    }

    // ---- the launch path ----------------------------------------------------------------------
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), EngineError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| EngineError::Internal(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(data)
        .map_err(|e| EngineError::Internal(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests;
