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
use vouch_runtime::monitor::{self, read_exit, ExitRecord, MonitorReport};
use vouch_runtime::rootfs::{Overlay, RootfsError};
use vouch_runtime::secrets::SecretsDir;
use vouch_runtime::spec::{self, ContainerSpec, Resources, SpecError};
use vouch_tee::{Journal, JournalError, TeeType, VOUCH_REGISTER};

use crate::config::DaemonConfig;
use crate::db::{Db, DbError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    #[error("container reference {0:?} is ambiguous; use more characters of the id")]
    AmbiguousContainer(String),
    #[error("container name {name:?} is already in use by container {id}")]
    NameInUse { name: String, id: String },
    #[error("container {0} is running: stop it first, or remove it with --force")]
    Running(String),
    #[error("image {image} is used by container {container}; remove the container first")]
    ImageInUse { image: String, container: String },
    #[error("{0}")]
    BadRequest(String),
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
}

/// What is persisted per task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
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
    /// `--rm` tasks created with `attach`: once ended they are removed by the wait that returns
    /// their end (or ATTACH_HOLD_SECS later), not at once, so an attached caller finds them.
    held: Mutex<std::collections::HashSet<String>>,
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

pub fn image_summary(r: &ImageRecord) -> ImageSummary {
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
            held: Mutex::new(Default::default()),
            removed: Mutex::new(Default::default()),
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

    /// A launch that fails after its `container.create` was measured, and before any start,
    /// ends in the log too (`container.failed`), so a verifier does not take it for running.
    fn measure_failure(&self, id: &str, reason: &str) {
        // The container's last lifecycle record: only a `container.create` calls for one.
        let last = lock(&self.journal)
            .records()
            .iter()
            .rev()
            .filter(|r| r.content.get("id").and_then(Value::as_str) == Some(id))
            .map(|r| r.op.clone())
            .find(|op| {
                matches!(
                    op.as_str(),
                    "container.create" | "container.start" | "container.exit" | "container.failed"
                )
            });
        if last.as_deref() != Some("container.create") {
            return;
        }
        let reason: String = reason.chars().take(512).collect();
        if let Err(e) = self.measure("container.failed", json!({"id": id, "reason": reason})) {
            tracing::error!(id = %id, error = %error_chain(&e), "cannot measure a failed launch");
        }
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

    /// After a restart: finish tasks whose container ended while vouchd was down, follow the
    /// ones still running, and tear down the ones a crash interrupted mid-launch (their monitor
    /// and any process of theirs killed, secrets wiped, mounts released). `--rm` tasks that
    /// ended are removed, and whatever a container that is not running still had mounted (a
    /// crash between any two steps of the way out) is released, so that no secret, mount,
    /// process or stale task outlives a crash.
    fn reconcile(self: &Arc<Self>) {
        let tasks: Vec<TaskRecord> = lock(&self.tasks).values().cloned().collect();
        for t in tasks {
            let id = t.view.id.clone();
            if t.view.state.is_final() {
                if t.view.auto_remove {
                    self.auto_remove(&id);
                } else {
                    self.release_mounts(&id);
                }
                continue;
            }
            if let Some(exit) = read_exit(&self.exit_path(&id)) {
                self.finish_recovered(&id, Some(exit), "ended while vouchd was not running");
                continue;
            }
            match (t.view.state, t.monitor_pid) {
                (TaskState::Running, Some(mpid)) if process_is(mpid, t.monitor_start) => {
                    tracing::info!(id = %id, "following a container that kept running across a vouchd restart");
                    let engine = Arc::clone(self);
                    let start = t.monitor_start;
                    std::thread::spawn(move || engine.poll_orphan(&id, mpid, start));
                }
                (TaskState::Running, _) => self.finish_recovered(
                    &id,
                    None,
                    "its monitor died while vouchd was not running",
                ),
                _ => self.abort_interrupted(&t),
            }
        }
        // Container directories no task owns any more (a crash in the middle of a removal).
        let known: std::collections::HashSet<String> = lock(&self.tasks).keys().cloned().collect();
        if let Ok(dirs) = fs::read_dir(self.cfg.containers_dir()) {
            for d in dirs.flatten() {
                let name = d.file_name().to_string_lossy().into_owned();
                if known.contains(&name) {
                    continue;
                }
                self.release_mounts(&name);
                if let Err(e) = fs::remove_dir_all(d.path()) {
                    tracing::warn!(dir = %d.path().display(), error = %e, "cannot remove a leftover container directory");
                }
            }
        }
    }

    /// A launch that a crash interrupted: kill its monitor and anything in the container's
    /// cgroups (the container may have been started just before the crash), wipe its secrets,
    /// release its mounts and its runtime state, record it as failed, and remove it if `--rm`.
    fn abort_interrupted(&self, t: &TaskRecord) {
        let id = &t.view.id;
        if let Some(mpid) = t.monitor_pid {
            signal_process(mpid, t.monitor_start, Signal::SIGKILL);
        }
        if let Err(e) = vouch_runtime::cgroup::kill_and_remove(
            &format!("{}/{}", self.cfg.cgroup_parent, id),
            Duration::from_secs(5),
        ) {
            tracing::warn!(id = %id, error = %e, "cannot clean up the cgroups of an interrupted launch");
        }
        self.release_mounts(id);
        let state = self.cfg.runtime_root().join(id);
        if state.exists() {
            let _ = fs::remove_dir_all(&state);
        }
        let why = "interrupted by a vouchd restart before the container started";
        self.measure_failure(id, why);
        self.fail(id, why);
        if t.view.auto_remove {
            self.auto_remove(id);
        }
    }

    fn poll_orphan(self: Arc<Self>, id: &str, monitor_pid: i32, monitor_start: Option<u64>) {
        loop {
            if let Some(exit) = read_exit(&self.exit_path(id)) {
                self.finish(id, Some(exit), "");
                return;
            }
            if !process_is(monitor_pid, monitor_start) {
                let exit = read_exit(&self.exit_path(id));
                self.finish(id, exit, "its monitor ended without an exit record");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // ---- task state -------------------------------------------------------------------------

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
        action: &str,
        message: &str,
        change: impl FnOnce(&mut TaskRecord),
    ) -> Option<Container> {
        match self.update(id, action, message, change) {
            Ok(view) => view,
            Err(e) => {
                tracing::error!(id = %id, error = %error_chain(&e), "cannot persist task");
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
    fn update(
        &self,
        id: &str,
        action: &str,
        message: &str,
        change: impl FnOnce(&mut TaskRecord),
    ) -> Result<Option<Container>, EngineError> {
        let rec = {
            let mut tasks = lock(&self.tasks);
            let Some(rec) = tasks.get_mut(id) else {
                return Ok(None);
            };
            change(rec);
            self.record_event(&mut rec.view, action, message);
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
        self.update(id, state.as_str(), message, |r| r.view.state = state)
    }

    fn fail(&self, id: &str, reason: &str) {
        self.update_anyway(id, TaskState::Failed.as_str(), reason, |r| {
            r.view.state = TaskState::Failed;
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
        let evidence = lock(&self.journal).evidence(json!({"nonce": nonce}))?;
        serde_json::to_value(&evidence).map_err(|e| EngineError::Internal(e.to_string()))
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
        let (valid, _, _) = spec::parse_volume(&format!("{name}:/v"))
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

    /// Create and start a container. Blocking: call from a blocking thread.
    /// Create and start a container. Blocking: call from a blocking thread.
    pub fn create(self: &Arc<Self>, req: CreateContainer) -> Result<Container, EngineError> {
        let pending = self.begin(req, None)?;
        self.run(pending)
    }

    /// Validate and record the task, then launch it in the background; returns at once.
    pub fn create_detached(
        self: &Arc<Self>,
        req: CreateContainer,
        conker: Option<Value>,
    ) -> Result<Container, EngineError> {
        let pending = self.begin(req, conker)?;
        let view = self.get(&pending.id)?;
        let engine = Arc::clone(self);
        std::thread::spawn(move || {
            let _ = engine.run(pending);
        });
        Ok(view)
    }

    /// Check everything that can be checked without side effects, then record the task.
    fn begin(
        self: &Arc<Self>,
        req: CreateContainer,
        conker: Option<Value>,
    ) -> Result<Pending, EngineError> {
        // Everything that can be checked without side effects is checked first.
        let crate::requests::Checked {
            host_network,
            publish,
            volumes,
            memory_bytes,
            cpu_quota,
        } = crate::requests::check(&req, self.cfg.publish_address, &self.cfg.volumes_dir())?;
        let secrets = req
            .secrets
            .iter()
            .map(|url| {
                SecretRef::parse(url, &self.kbs_trust)
                    .map(|mut r| {
                        r.client = r.client.with_round_trip(self.cfg.kbs_timeout);
                        r
                    })
                    .map_err(|e| EngineError::BadRequest(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        vouch_image::reference::check("image reference", &req.image)
            .map_err(EngineError::BadRequest)?;
        let image = self.images.find(&req.image).map_err(|e| match e {
            StoreError::NoSuchImage(r) => EngineError::BadRequest(format!(
                "no such image: {r} (load it first with `vouch image load`)"
            )),
            other => EngineError::Store(other),
        })?;
        let golden = match &req.golden {
            Some(v) => Some(
                serde_json::from_value::<vouch_image::golden::SignedGolden>(v.clone())
                    .map_err(|e| EngineError::BadRequest(format!("golden value: {e}")))?,
            ),
            None => image.golden.clone(),
        };
        let args =
            spec::resolve_command(&image.defaults.entrypoint, &image.defaults.cmd, &req.cmd)?;
        let env = spec::merge_env(&image.defaults.env, &req.env)?;
        let user = req
            .user
            .clone()
            .unwrap_or_else(|| image.defaults.user.clone());
        // The image's account files, read only when a name is to be looked up.
        let group_names = req.group_add.iter().any(|g| spec::numeric_id(g).is_none());
        let (passwd, group) = if spec::user_needs_lookup(&user) || group_names {
            (
                self.image_etc_file(&image, "passwd")?,
                self.image_etc_file(&image, "group")?,
            )
        } else {
            (None, None)
        };
        let mut resolved = spec::resolve_user(&user, passwd.as_deref(), group.as_deref())?;
        spec::add_groups(
            &mut resolved.additional_gids,
            &req.group_add,
            group.as_deref(),
        )?;
        let cwd = req
            .workdir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| image.defaults.working_dir.clone());
        if !cwd.is_empty() && !cwd.starts_with('/') {
            return Err(EngineError::BadRequest(format!(
                "working directory {cwd:?} must be absolute"
            )));
        }

        let id = random_hex(32)?;
        let name = {
            let _g = lock(&self.create_lock);
            let name = match &req.name {
                Some(n) if !valid_name(n) => {
                    return Err(EngineError::BadRequest(format!(
                        "invalid container name {n:?}: use letters, digits, '_', '.', '-', starting with a letter or digit"
                    )))
                }
                Some(n) => n.clone(),
                None => format!("vouch-{}", &id[..8]),
            };
            if let Some(t) = lock(&self.tasks).values().find(|t| t.view.name == name) {
                return Err(EngineError::NameInUse {
                    name,
                    id: t.view.id[..12].to_string(),
                });
            }
            let now = clock::rfc3339_millis();
            let view = Container {
                id: id.clone(),
                name: name.clone(),
                image: req.image.clone(),
                image_digest: image.manifest_digest.to_string(),
                command: args.clone(),
                state: TaskState::Verifying,
                created_at: now.clone(),
                started_at: None,
                finished_at: None,
                exit_code: None,
                oom_killed: false,
                error: None,
                pid: None,
                config_digest: None,
                auto_remove: req.auto_remove,
                ports: publish.iter().map(ToString::to_string).collect(),
                events: vec![TaskEvent {
                    time: now,
                    action: TaskState::Verifying.as_str().into(),
                    message: format!("checking image {}", image.manifest_digest),
                }],
            };
            let rec = TaskRecord {
                view,
                volumes: volumes.iter().map(|v| v.name.clone()).collect(),
                monitor_pid: None,
                monitor_start: None,
                pid_start: None,
                conker,
            };
            lock(&self.tasks).insert(id.clone(), rec.clone());
            if req.auto_remove && req.attach {
                lock(&self.held).insert(id.clone());
            }
            // A task that cannot be written is not created: nothing has been measured or
            // started for it yet.
            if let Err(e) = self.persist(&rec) {
                lock(&self.tasks).remove(&id);
                lock(&self.held).remove(&id);
                return Err(e);
            }
            name
        };

        let spec = ContainerSpec {
            id: id.clone(),
            args,
            env,
            cwd,
            uid: resolved.uid,
            gid: resolved.gid,
            additional_gids: resolved.additional_gids,
            hostname: id[..12].to_string(),
            host_network,
            resources: Resources {
                memory_bytes,
                pids_limit: req.pids_limit,
                cpu_quota,
            },
            cgroup_parent: self.cfg.cgroup_parent.clone(),
            secrets: req.secrets.clone(),
            secrets_dir: (!secrets.is_empty())
                .then(|| SecretsDir::for_container(&self.container_dir(&id)).path),
            volumes,
            publish,
        };
        Ok(Pending {
            golden,
            id,
            name,
            reference: req.image,
            image,
            spec,
            secrets,
            auto_remove: req.auto_remove,
        })
    }

    /// Launch a recorded task; on failure (or cancellation) record why and clean up.
    fn run(self: &Arc<Self>, p: Pending) -> Result<Container, EngineError> {
        let id = p.id.clone();
        let launch = Launch {
            golden: p.golden.as_ref(),
            id: &p.id,
            name: &p.name,
            reference: &p.reference,
            image: &p.image,
            spec: &p.spec,
            secrets: &p.secrets,
        };
        let result = self.launch(&launch);
        let cancel_requested = lock(&self.cancels).remove(&id);
        match result {
            Ok(view) => Ok(view),
            Err(e) => {
                self.release_mounts(&id);
                // A step interrupted by a cancel request counts as cancelled, whatever it returned.
                let cancelled = cancel_requested || matches!(e, EngineError::Cancelled);
                let why = if cancelled {
                    CANCELLED_BEFORE_START.to_string()
                } else {
                    error_chain(&e)
                };
                self.measure_failure(&id, &why);
                if cancelled {
                    self.update_anyway(
                        &id,
                        TaskState::Cancelled.as_str(),
                        CANCELLED_BEFORE_START,
                        |r| {
                            r.view.state = TaskState::Cancelled;
                            r.view.finished_at = Some(clock::rfc3339_millis());
                        },
                    );
                } else {
                    self.fail(&id, &why);
                }
                if p.auto_remove {
                    lock(&self.held).remove(&id);
                    self.auto_remove(&id);
                }
                Err(match e {
                    EngineError::StartFailed { .. } | EngineError::Cancelled => e,
                    other => EngineError::StartFailed {
                        id: id[..12].to_string(),
                        reason: error_chain(&other),
                    },
                })
            }
        }
    }

    /// The most recent task created through the Conker API: its view, the request it came from,
    /// and whether a cancel was requested.
    pub fn conker_task(&self) -> Option<(Container, Value, bool)> {
        let tasks = lock(&self.tasks);
        let t = tasks
            .values()
            .filter(|t| t.conker.is_some())
            .max_by(|a, b| a.view.created_at.cmp(&b.view.created_at))?;
        let cancel = lock(&self.cancels).contains(&t.view.id);
        Some((t.view.clone(), t.conker.clone()?, cancel))
    }

    /// Create the one Conker task, replacing an ended one. Returns at once; the launch goes on.
    pub fn conker_create(
        self: &Arc<Self>,
        req: &crate::conker::ConkerRequest,
    ) -> Result<Container, EngineError> {
        let create = crate::conker::to_create(req)?;
        if let Some((c, _, _)) = self.conker_task() {
            if !c.state.is_final() {
                return Err(EngineError::TaskExists(c.id[..12].to_string()));
            }
            self.remove(&c.id, true)?;
        }
        let view = self.create_detached(create, Some(crate::conker::redacted(req)))?;
        if let Some(secs) = req.image_info.max_execution_time.filter(|s| *s > 0) {
            // Conker's MaxExecutionTime: stop the container once it has run that long.
            let engine = Arc::clone(self);
            let id = view.id.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(secs));
                if engine.get(&id).is_ok_and(|c| c.state == TaskState::Running) {
                    engine.update_anyway(
                        &id,
                        "MaxExecutionTime",
                        &format!("ran for {secs}s; stopping"),
                        |_| {},
                    );
                    let _ = engine.stop(&id, Duration::from_secs(10));
                }
            });
        }
        Ok(view)
    }

    /// Ask a task that has not started its container yet to stop launching.
    pub fn cancel(&self, reference: &str) -> Result<Container, EngineError> {
        let id = self.resolve(reference)?;
        let view = self.get(&id)?;
        if view.state.is_final() {
            return Err(EngineError::BadRequest(format!(
                "task {} has already ended ({})",
                &id[..12],
                view.state.as_str()
            )));
        }
        if view.state == TaskState::Running {
            return Err(EngineError::Running(id[..12].to_string()));
        }
        self.cancel_launch(&id);
        self.update(
            &id,
            "CancelRequested",
            "the launch stops at its next step",
            |_| {},
        )?;
        self.get(&id)
    }

    /// Make a launch stop: at its next step, and at once if it is waiting on a KBS.
    fn cancel_launch(&self, id: &str) {
        lock(&self.cancels).insert(id.to_string());
        if let Some(i) = lock(&self.fetches).get(id) {
            i.interrupt();
        }
    }

    /// Cancel a task that is still launching and wait (bounded) for the launch to wind down.
    /// Returns the task's last view when it is gone meanwhile (cancelled and removed: `--rm`).
    fn abort_launch(&self, id: &str) -> Result<Option<Container>, EngineError> {
        let view = self.get(id)?;
        self.cancel_launch(id);
        self.wait_final(id, LAUNCH_ABORT_WAIT);
        if !lock(&self.tasks).contains_key(id) {
            return Ok(Some(view));
        }
        if self.launching(id) {
            return Err(EngineError::Internal(format!(
                "container {} is still launching {}s after its launch was cancelled; try again",
                &id[..12],
                LAUNCH_ABORT_WAIT.as_secs()
            )));
        }
        Ok(None)
    }

    /// Whether the task is still launching (not started, not ended).
    fn launching(&self, id: &str) -> bool {
        lock(&self.tasks)
            .get(id)
            .is_some_and(|t| !t.view.state.is_final() && t.view.pid.is_none())
    }

    fn check_cancel(&self, id: &str) -> Result<(), EngineError> {
        if lock(&self.cancels).contains(id) {
            Err(EngineError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Spawn the monitor, verify and prepare (both measured), then let the monitor start the
    /// container and record what it reports.
    fn launch(self: &Arc<Self>, launch: &Launch<'_>) -> Result<Container, EngineError> {
        let id = launch.id;
        let dir = self.container_dir(id);
        let bundle = dir.join("bundle");
        fs::create_dir_all(&bundle).map_err(|e| {
            EngineError::Internal(format!("cannot create {}: {e}", bundle.display()))
        })?;
        let short = id[..12].to_string();
        let monitor_log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("monitor.log"))
            .map_err(|e| EngineError::Internal(format!("cannot open monitor log: {e}")))?;
        // The monitor starts now so its start-up overlaps the work below; it waits for GO.
        let mut child = Command::new(&self.cfg.exe)
            .arg0("vouchd")
            .arg("monitor")
            .arg("--id")
            .arg(id)
            .arg("--bundle")
            .arg(&bundle)
            .arg("--runtime-root")
            .arg(self.cfg.runtime_root())
            .arg("--log")
            .arg(self.log_path(id))
            .arg("--exit-file")
            .arg(self.exit_path(id))
            .arg("--cgroup-path")
            .arg(format!("{}/{}", self.cfg.cgroup_parent, id))
            .args(if launch.spec.host_network {
                None
            } else {
                Some("--private-net")
            })
            .args(
                launch
                    .spec
                    .publish
                    .iter()
                    .flat_map(|p| ["--publish".to_string(), p.to_arg()]),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(monitor_log))
            .spawn()
            .map_err(|e| EngineError::StartFailed {
                id: short.clone(),
                reason: format!("cannot run the monitor: {e}"),
            })?;
        // Known from now on, so that a restart after a crash can stop it. It is persisted with
        // the next state change, which comes before GO is sent: until GO a monitor ends by
        // itself when vouchd does (its stdin closes), so a crash before that leaves nothing.
        let mpid = child.id() as i32;
        self.modify(id, |r| {
            r.monitor_pid = Some(mpid);
            r.monitor_start = start_time(mpid);
        });
        if let Err(e) = self.prepare(launch, &bundle) {
            // Closing its stdin without GO makes the monitor exit without starting anything.
            drop(child.stdin.take());
            let _ = child.wait();
            return Err(e);
        }

        if let Err(e) = self.check_cancel(id) {
            drop(child.stdin.take());
            let _ = child.wait();
            return Err(e);
        }
        if let Err(e) = self.set_state(id, TaskState::Starting, "starting the container") {
            drop(child.stdin.take());
            let _ = child.wait();
            return Err(e);
        }
        let sent = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(&[monitor::GO]));
        if !matches!(sent, Some(Ok(()))) {
            let _ = child.wait();
            return Err(EngineError::StartFailed {
                id: short,
                reason: "the monitor ended before the start".into(),
            });
        }
        match read_report(&mut child) {
            Some(MonitorReport::Started { pid }) => {
                self.measure("container.start", json!({"id": id, "pid": pid}))?;
                // The container runs from here on, whatever the database says.
                let view = self
                    .update_anyway(
                        id,
                        TaskState::Running.as_str(),
                        &format!("running as pid {pid}"),
                        |r| {
                            r.view.state = TaskState::Running;
                            r.view.pid = Some(pid);
                            r.view.started_at = Some(clock::rfc3339_millis());
                            r.monitor_pid = Some(mpid);
                            r.monitor_start = start_time(mpid);
                            r.pid_start = start_time(pid);
                        },
                    )
                    .ok_or_else(|| EngineError::NoSuchContainer(id.to_string()))?;
                let engine = Arc::clone(self);
                let id = id.to_string();
                std::thread::spawn(move || {
                    let _ = child.wait();
                    let exit = read_exit(&engine.exit_path(&id));
                    engine.finish(&id, exit, "the monitor ended without an exit record");
                });
                Ok(view)
            }
            Some(MonitorReport::Failed { error }) => {
                let _ = child.wait();
                Err(EngineError::StartFailed {
                    id: short,
                    reason: error,
                })
            }
            None => {
                let _ = child.wait();
                let log = fs::read_to_string(dir.join("monitor.log")).unwrap_or_default();
                let last = log.lines().last().unwrap_or("no output").to_string();
                Err(EngineError::StartFailed {
                    id: short,
                    reason: format!("the monitor exited early: {last}"),
                })
            }
        }
    }

    /// Verify the image and create the bundle, measuring both before anything runs.
    fn prepare(&self, launch: &Launch<'_>, bundle: &Path) -> Result<(), EngineError> {
        let Launch {
            golden,
            id,
            name,
            reference,
            image,
            spec,
            secrets,
        } = *launch;
        let runtime_spec =
            vouch_runtime::projection::prepare(&spec.to_spec()?, &self.host_local(id))?;
        // Golden values: the launch must be what the signed reference document allows.
        let policy_wants_golden = image
            .verification
            .as_ref()
            .is_some_and(|v| v.golden_required);
        let golden_value = match golden {
            None if policy_wants_golden => {
                return Err(EngineError::BadRequest(format!(
                    "NOT verified: the image policy requires a golden value for {}, and there is none",
                    image.manifest_digest
                )))
            }
            None if self.cfg.require_golden => {
                return Err(EngineError::BadRequest(format!(
                    "NOT verified: no golden value for {} (attach one with `vouch golden sign --push`, or pass --golden)",
                    image.manifest_digest
                )))
            }
            None => Value::Null,
            Some(_) if self.golden_keys.is_empty() => {
                return Err(EngineError::BadRequest(
                    "NOT verified: a golden value came with this image, but vouchd trusts no golden-value key (--golden-key)".into(),
                ))
            }
            Some(signed) => {
                let doc = signed
                    .open(&self.golden_keys)
                    .map_err(|e| EngineError::BadRequest(format!("NOT verified: {e}")))?;
                let mut differences = doc.differences(image, &spec.args, &spec.env);
                differences.extend(doc.spec_differences(
                    &runtime_spec.measured.digest,
                    &runtime_spec.measured.projection,
                ));
                if !differences.is_empty() {
                    return Err(EngineError::BadRequest(format!(
                        "NOT verified: {}",
                        differences.join("; ")
                    )));
                }
                json!({"digest": signed.digest(), "signer": signed.key})
            }
        };
        // Verify: the image policy's decision, then layers present and intact in the store
        // (digests were checked when the image came in).
        let (signer, policy) = match (&self.policy, &image.verification) {
            (None, _) => (Value::Null, json!("no image policy configured")),
            (Some(_), None) => {
                return Err(EngineError::BadRequest(format!(
                    "image {reference} was not checked against the image policy (it came in before the policy was set); pull or load it again"
                )))
            }
            (Some(p), Some(v)) => (
                json!(v.signer),
                json!({"digest": p.digest, "scope": v.scope, "requirements": v.requirements}),
            ),
        };
        let mut layer_dirs = Vec::new();
        for layer in &image.layers {
            layer_dirs.push(self.images.ensure_layer(layer)?);
        }
        self.measure(
            "image.verified",
            json!({
                "id": id,
                "image": reference,
                "image_digest": image.manifest_digest.to_string(),
                "config_digest": image.config_digest.to_string(),
                "layers": image.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
                "signer": signer,
                "golden_value": golden_value,
                "policy": policy,
            }),
        )?;
        self.set_state(
            id,
            TaskState::Verified,
            &format!(
                "image {} verified against its digests",
                image.manifest_digest
            ),
        )?;

        // Create: overlay rootfs, volumes, config.json, measured effective config.
        self.set_state(id, TaskState::Creating, "preparing the root filesystem")?;
        for v in &spec.volumes {
            self.ensure_volume(v, spec.uid, spec.gid)?;
        }
        Overlay::for_container(&self.container_dir(id)).mount(&layer_dirs)?;
        // One spec value: its projection is measured, and the same value is what libcontainer
        // reads (the digest was computed before the file is written).
        write_private(&bundle.join("config.json"), &runtime_spec.config_json)?;
        let config_digest = runtime_spec.measured.digest.clone();
        let create_seq = self.measure(
            "container.create",
            json!({
                "id": id,
                "name": name,
                "image": reference,
                "image_digest": image.manifest_digest.to_string(),
                "config_digest": config_digest,
            }),
        )?;
        self.check_cancel(id)?;
        if !secrets.is_empty() {
            self.deliver_secrets(id, create_seq, spec, secrets)?;
        }
        let message = format!("runtime config measured ({config_digest})");
        self.update(id, TaskState::Created.as_str(), &message, |r| {
            r.view.state = TaskState::Created;
            r.view.config_digest = Some(config_digest);
        })?;
        Ok(())
    }

    /// Create a named volume on first use: an empty directory owned by the container's user.
    fn ensure_volume(&self, v: &spec::Volume, uid: u32, gid: u32) -> Result<(), EngineError> {
        let fail = |e: std::io::Error| {
            EngineError::Internal(format!("cannot create volume {}: {e}", v.name))
        };
        fs::create_dir_all(self.cfg.volumes_dir()).map_err(fail)?;
        match fs::create_dir(&v.source) {
            Ok(()) => {
                fs::set_permissions(&v.source, fs::Permissions::from_mode(0o755)).map_err(fail)?;
                std::os::unix::fs::chown(&v.source, Some(uid), Some(gid)).map_err(fail)?;
                tracing::info!(volume = %v.name, "volume created");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(fail(e)),
        }
    }

    /// Fetch each declared secret with fresh evidence (which already shows this container's
    /// `container.create`, and names this container, by id and the sequence number of that
    /// record, in the runtime data the quote binds), write it to the container's tmpfs, and
    /// measure which were delivered.
    fn deliver_secrets(
        &self,
        id: &str,
        create_seq: u64,
        spec: &ContainerSpec,
        secrets: &[SecretRef],
    ) -> Result<(), EngineError> {
        let dir = SecretsDir::for_container(&self.container_dir(id));
        dir.mount(spec.uid, spec.gid)
            .map_err(|e| EngineError::Internal(format!("cannot mount the secrets tmpfs: {e}")))?;
        let interrupt = vouch_kbs_client::client::Interrupt::new();
        lock(&self.fetches).insert(id.to_string(), interrupt.clone());
        // A cancel that came before the fetch was registered.
        if lock(&self.cancels).contains(id) {
            interrupt.interrupt();
        }
        let fetched = self.fetch_secrets(id, create_seq, spec, secrets, &dir, &interrupt);
        lock(&self.fetches).remove(id);
        fetched?;
        self.measure(
            "secret.fetched",
            json!({"id": id, "resources": secrets.iter().map(|s| s.url.as_str()).collect::<Vec<_>>()}),
        )?;
        Ok(())
    }

    fn fetch_secrets(
        &self,
        id: &str,
        create_seq: u64,
        spec: &ContainerSpec,
        secrets: &[SecretRef],
        dir: &SecretsDir,
        interrupt: &Arc<vouch_kbs_client::client::Interrupt>,
    ) -> Result<(), EngineError> {
        let tee = match lock(&self.journal).tee() {
            TeeType::Sim => kbs_types::Tee::Sample,
            TeeType::Tpm => kbs_types::Tee::Tpm,
            TeeType::Tdx => kbs_types::Tee::Tdx,
            TeeType::Snp => kbs_types::Tee::Snp,
        };
        for SecretRef {
            url,
            client,
            path,
            target,
        } in secrets
        {
            let value = client
                .get_resource_interruptible(
                    tee,
                    path,
                    |mut runtime_data| {
                        runtime_data[vouch_tee::REQUESTER_KEY] =
                            json!({"id": id, "create_seq": create_seq});
                        let evidence = lock(&self.journal)
                            .evidence(runtime_data)
                            .map_err(|e| error_chain(&e))?;
                        serde_json::to_value(&evidence).map_err(|e| e.to_string())
                    },
                    interrupt,
                )
                .map_err(|source| match source {
                    vouch_kbs_client::KbsClientError::Cancelled => EngineError::Cancelled,
                    source => EngineError::Secret {
                        url: url.clone(),
                        kbs: client.addr().to_string(),
                        source,
                    },
                })?;
            dir.write(target, &value, spec.uid, spec.gid)
                .map_err(|e| EngineError::Internal(format!("cannot write secret {path}: {e}")))?;
            self.update(
                id,
                "SecretFetched",
                &format!("{url} from KBS {}", client.addr()),
                |_| {},
            )?;
        }
        Ok(())
    }

    /// Unmount a container's root filesystem and secrets tmpfs.
    fn release_mounts(&self, id: &str) {
        let dir = self.container_dir(id);
        let _ = Overlay::for_container(&dir).unmount();
        SecretsDir::for_container(&dir).unmount();
    }

    /// Record how a container ended (measured), and clean up its root filesystem.
    fn finish(self: &Arc<Self>, id: &str, exit: Option<ExitRecord>, unknown_reason: &str) {
        self.finish_measured(id, exit, unknown_reason, false)
    }

    /// [`Engine::finish`] for a task found unfinished at a restart: the crash may have come
    /// between its `container.exit` record and the task's update, so the record is looked for
    /// first (only here: no other path can have written it).
    fn finish_recovered(
        self: &Arc<Self>,
        id: &str,
        exit: Option<ExitRecord>,
        unknown_reason: &str,
    ) {
        let measured = lock(&self.journal).records().iter().rev().any(|r| {
            r.op == "container.exit" && r.content.get("id").and_then(Value::as_str) == Some(id)
        });
        self.finish_measured(id, exit, unknown_reason, measured)
    }

    fn finish_measured(
        self: &Arc<Self>,
        id: &str,
        exit: Option<ExitRecord>,
        unknown_reason: &str,
        exit_measured: bool,
    ) {
        let current = match lock(&self.tasks).get(id) {
            Some(t) => t.view.clone(),
            None => return,
        };
        if current.state.is_final() {
            return;
        }
        let content = match &exit {
            Some(e) => {
                json!({"id": id, "exit_code": e.exit_code, "signal": e.signal, "oom_killed": e.oom_killed})
            }
            None => json!({"id": id, "exit_code": Value::Null, "status": "unknown"}),
        };
        if !exit_measured {
            if let Err(e) = self.measure("container.exit", content) {
                tracing::error!(id = %id, error = %error_chain(&e), "cannot measure container exit");
            }
        }
        self.release_mounts(id);
        let message = match &exit {
            Some(e) if e.oom_killed => format!(
                "killed by the kernel OOM killer (memory limit), exit code {}",
                e.exit_code
            ),
            Some(e) => match e.signal {
                // SIGSYS comes from the seccomp profile: say what it refused.
                Some(libc::SIGSYS) => format!(
                    "killed by signal {} (SIGSYS: a system call through the 32-bit or x32 interface, which containers do not have), exit code {}",
                    libc::SIGSYS,
                    e.exit_code
                ),
                Some(sig) => format!("killed by signal {sig}, exit code {}", e.exit_code),
                None => format!("exited with code {}", e.exit_code),
            },
            None => format!("exit status unknown: {unknown_reason}"),
        };
        let finished = exit
            .as_ref()
            .map(|e| clock::rfc3339_from_millis(e.finished_at_ms))
            .unwrap_or_else(clock::rfc3339_millis);
        let view = self.update_anyway(id, TaskState::Exited.as_str(), &message, |r| {
            r.view.state = TaskState::Exited;
            r.view.exit_code = exit.as_ref().map(|e| e.exit_code);
            r.view.oom_killed = exit.as_ref().is_some_and(|e| e.oom_killed);
            r.view.finished_at = Some(finished);
            if exit.is_none() {
                r.view.error = Some(message.clone());
            }
        });
        if view.is_some_and(|v| v.auto_remove) {
            if lock(&self.held).contains(id) {
                let engine = Arc::clone(self);
                let id = id.to_string();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(vouch_api::ATTACH_HOLD_SECS));
                    engine.release_hold(&id);
                });
            } else {
                self.auto_remove(id);
            }
        }
    }

    /// Remove an ended `--rm` task held for its attached caller, once: the wait that returns
    /// its end and the fallback timer both come here, and only the first removes it (and not at
    /// all if an explicit removal came first).
    fn release_hold(&self, id: &str) {
        if lock(&self.held).remove(id) && lock(&self.tasks).contains_key(id) {
            self.auto_remove(id);
        }
    }

    fn signal(&self, id: &str, sig: Signal) {
        let target = lock(&self.tasks)
            .get(id)
            .and_then(|t| Some((t.view.pid?, t.pid_start)));
        if let Some((pid, start)) = target {
            // Only the container's own process: not another that has its PID by now.
            signal_process(pid, start, sig);
        }
    }

    fn is_final(&self, id: &str) -> bool {
        lock(&self.tasks)
            .get(id)
            .is_none_or(|t| t.view.state.is_final())
    }

    fn wait_final(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_final(id) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.is_final(id)
    }

    /// SIGTERM, then SIGKILL after `timeout`. Blocking.
    pub fn stop(&self, reference: &str, timeout: Duration) -> Result<Container, EngineError> {
        let id = self.resolve(reference)?;
        if self.launching(&id) {
            // Nothing runs yet: the launch is cancelled, and the stop waits for that.
            if let Some(gone) = self.abort_launch(&id)? {
                return Ok(gone);
            }
        }
        if !self.is_final(&id) {
            self.update_anyway(
                &id,
                "StopRequested",
                &format!("SIGTERM, SIGKILL after {}s", timeout.as_secs()),
                |_| {},
            );
            self.signal(&id, Signal::SIGTERM);
            if !self.wait_final(&id, timeout) {
                self.signal(&id, Signal::SIGKILL);
                if !self.wait_final(&id, Duration::from_secs(10)) {
                    return Err(EngineError::Internal(format!(
                        "container {} did not stop after SIGKILL",
                        &id[..12]
                    )));
                }
            }
        }
        self.get(&id)
    }

    /// Remove a container. Blocking.
    pub fn remove(&self, reference: &str, force: bool) -> Result<Container, EngineError> {
        let id = self.resolve(reference)?;
        if !self.is_final(&id) {
            if !force {
                return Err(EngineError::Running(id[..12].to_string()));
            }
            if self.launching(&id) {
                // A launch always gives way to a forced removal: it is cancelled (a fetch from
                // a KBS is interrupted at once), and the removal waits for it to wind down.
                if let Some(gone) = self.abort_launch(&id)? {
                    return Ok(gone);
                }
            }
            self.signal(&id, Signal::SIGKILL);
            if !self.wait_final(&id, Duration::from_secs(10)) {
                return Err(EngineError::Internal(format!(
                    "container {} did not stop after SIGKILL",
                    &id[..12]
                )));
            }
        }
        self.remove_task(&id)
    }

    /// `/etc/NAME` of an image's root filesystem (`passwd`, `group`), as the top-most layer that
    /// has it says, or `None` where no layer has it or a layer deletes it. Only regular files
    /// are read, through real directories: a link in an image never leads out of it.
    fn image_etc_file(
        &self,
        image: &ImageRecord,
        name: &str,
    ) -> Result<Option<String>, EngineError> {
        use std::io::Read as _;
        const LIMIT: u64 = 1 << 20;
        for layer in image.layers.iter().rev() {
            let dir = self.images.ensure_layer(layer)?;
            let etc = dir.join("etc");
            let Ok(meta) = fs::symlink_metadata(&etc) else {
                continue;
            };
            if !meta.is_dir() {
                // A file, a link or a whiteout in place of /etc: nothing below it counts.
                return Ok(None);
            }
            let path = etc.join(name);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => {
                    let mut text = String::new();
                    fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&path)
                        .and_then(|f| f.take(LIMIT).read_to_string(&mut text))
                        .map_err(|e| {
                            EngineError::BadRequest(format!("the image's /etc/{name}: {e}"))
                        })?;
                    return Ok(Some(text));
                }
                // A link, a device or a whiteout (char device 0:0): not a readable file, and
                // it hides the layers below.
                Ok(_) => return Ok(None),
                Err(_) => {}
            }
            if vouch_image::unpack::is_opaque(&etc) {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Remove a container started with --rm once it has ended; a failure is logged and
    /// recorded as an event, which also releases anyone waiting for the removal.
    fn auto_remove(&self, id: &str) {
        if let Err(e) = self.remove_task(id) {
            let reason = error_chain(&e);
            tracing::warn!(id = %id, error = %reason, "cannot auto-remove container");
            self.update_anyway(
                id,
                REMOVE_FAILED,
                &format!("cannot remove: {reason}"),
                |_| {},
            );
        }
    }

    fn remove_task(&self, id: &str) -> Result<Container, EngineError> {
        let dir = self.container_dir(id);
        Overlay::for_container(&dir).unmount()?;
        SecretsDir::for_container(&dir).unmount();
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| {
                EngineError::Internal(format!("cannot remove {}: {e}", dir.display()))
            })?;
        }
        // The task leaves the table and the database before watchers hear "Removed", so a
        // waiter that wakes on it never finds the container still listed.
        let mut rec = lock(&self.tasks)
            .remove(id)
            .ok_or_else(|| EngineError::NoSuchContainer(id.to_string()))?;
        self.db.delete(id)?;
        self.record_event(&mut rec.view, REMOVED, "container removed");
        self.notify_watchers(&rec.view);
        let view = rec.view;
        let mut removed = lock(&self.removed);
        removed.push_back(id.to_string());
        while removed.len() > REMOVED_KEPT {
            if let Some(old) = removed.pop_front() {
                lock(&self.watchers).remove(&old);
            }
        }
        Ok(view)
    }
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

fn read_report(child: &mut Child) -> Option<MonitorReport> {
    let stdout = child.stdout.take()?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).ok()?;
    serde_json::from_str(line.trim()).ok()
}

/// A process's start time (clock ticks since boot), field 22 of `/proc/PID/stat`.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether `pid` is alive and, when `start` is known, is still the process that started then.
fn process_is(pid: i32, start: Option<u64>) -> bool {
    process_alive(pid) && start.is_none_or(|s| start_time(pid) == Some(s))
}

/// Send `sig` to `pid` if it is still the process that started at `start`. A pidfd is taken
/// before the check: it holds on to the process that had the PID then, which, if the check
/// passes, is the one that started at `start` (a process alive at the check was alive at the
/// open), so the PID cannot be reused between the check and the signal. Kernels without pidfds
/// (before 5.3) get the check and `kill`.
fn signal_process(pid: i32, start: Option<u64>, sig: Signal) -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let no_pidfd = std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS);
        return no_pidfd && process_is(pid, start) && kill(Pid::from_raw(pid), sig).is_ok();
    }
    // SAFETY: the descriptor was just returned to us and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !process_is(pid, start) {
        return false;
    }
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

fn process_alive(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => {
            // A zombie still answers kill(0); treat it as gone.
            !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        }
        Err(nix::Error::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PID counts as a recorded process only with that process's start time.
    #[test]
    fn processes_are_known_by_pid_and_start_time() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = child.id() as i32;
        let start = start_time(pid).expect("start time");
        assert!(process_is(pid, Some(start)));
        assert!(process_is(pid, None));
        // The same PID with another start time is another process.
        assert!(!process_is(pid, Some(start + 1)));
        let me = std::process::id() as i32;
        assert_ne!(start_time(me), None);
        let _ = child.kill();
        let _ = child.wait();
        assert!(!process_is(pid, Some(start)));
        assert_eq!(start_time(i32::MAX), None);
    }

    /// A signal reaches the recorded process, and never a process with another start time.
    #[test]
    fn signals_reach_only_the_recorded_process() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = child.id() as i32;
        let start = start_time(pid).expect("start time");
        assert!(!signal_process(pid, Some(start + 1), Signal::SIGTERM));
        assert!(
            process_is(pid, Some(start)),
            "signalled a process with another start time"
        );
        assert!(signal_process(pid, Some(start), Signal::SIGTERM));
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(!signal_process(pid, Some(start), Signal::SIGTERM));
    }
}
