//! The measured launch path: checks, `image.verified`, the bundle and its projection,
//! `container.create`, secrets from the KBS, the monitor, `container.start`.

use super::*;

impl Engine {
    /// A launch that fails after its `container.create` was measured, and before any start,
    /// ends in the log too (`container.failed`), so a verifier does not take it for running.
    pub(super) fn measure_failure(&self, id: &str, reason: &str) {
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

    /// Create and start a container. Blocking: call from a blocking thread.
    /// Create and start a container. Blocking: call from a blocking thread.
    pub fn create(self: &Arc<Self>, req: CreateContainer) -> Result<Container, EngineError> {
        let pending = self.begin(req, None)?;
        self.run(pending)
    }

    /// Validate and record the task, then launch it in the background; returns at once.
    pub(crate) fn create_detached(
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
    pub(super) fn begin(
        self: &Arc<Self>,
        req: CreateContainer,
        conker: Option<Value>,
    ) -> Result<Pending, EngineError> {
        // Everything that can be checked without side effects is checked first.
        let crate::requests::Checked {
            host_network,
            join,
            publish,
            volumes,
            copies,
            sysctls,
            seccomp,
            memory_bytes,
            cpu_quota,
            cap_drop,
        } = crate::requests::check(&req, self.cfg.publish_address, &self.cfg.volumes_dir())?;
        let secrets = req
            .secrets
            .iter()
            .map(|url| {
                SecretRef::parse(url, &self.kbs_trust)
                    .map(|mut r| {
                        r.client = r
                            .client
                            .with_round_trip(self.cfg.kbs_timeout)
                            .with_flavour(self.cfg.kbs_flavour);
                        r
                    })
                    .map_err(|e| EngineError::BadRequest(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let joined_network = join.map(|j| self.joined_network(j)).transpose()?;
        // A namespace that is another vouch container's own, however it was named (by path
        // too): its net.* parameters are that container's, as measured in its spec.
        if let Some(j) = joined_network
            .as_ref()
            .filter(|j| j.label.starts_with("container:"))
        {
            if let Some(key) = sysctls.keys().find(|k| k.starts_with("net.")) {
                return Err(EngineError::BadRequest(format!(
                    "sysctl {key}: the network namespace joined is another container's ({}): set net.* parameters on that container",
                    &j.label["container:".len()..]
                )));
            }
        }
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
        // docker's `--entrypoint`: the image's entrypoint and its default command give way.
        let args = match &req.entrypoint {
            Some(entrypoint) => spec::resolve_command(entrypoint, &[], &req.cmd)?,
            None => {
                spec::resolve_command(&image.defaults.entrypoint, &image.defaults.cmd, &req.cmd)?
            }
        };
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

        if let Some(pod) = &req.pod {
            if !pod.is_valid() {
                return Err(EngineError::BadRequest(
                    "the pod reference must be short text without control characters, with a pod name".into(),
                ));
            }
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
                state: crate::task::INITIAL,
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
                network: match &joined_network {
                    Some(j) => Some(j.label.clone()),
                    None => host_network.then(|| "host".to_string()),
                },
                pod: req.pod.clone(),
                tty: req.tty,
                stdin: req.stdin,
                events: vec![TaskEvent {
                    time: now,
                    action: crate::task::INITIAL.as_str().into(),
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
            hostname: req.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
            hostname_measured: req.hostname.is_some(),
            host_network,
            joined_network,
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
            copies: {
                let dir = CopiesDir::for_container(&self.container_dir(&id));
                copies
                    .into_iter()
                    .enumerate()
                    .map(|(i, (source, target))| spec::CopyMount {
                        source,
                        dir: dir.entry(i),
                        target,
                        digest: String::new(),
                    })
                    .collect()
            },
            sysctls,
            seccomp_extra: seccomp,
            publish,
            terminal: req.tty,
            stdin: req.stdin,
            readonly_rootfs: req.read_only,
            cap_drop,
            masked_paths: req.masked_paths.clone(),
            readonly_paths: req.readonly_paths.clone(),
            resolv_conf: req
                .resolv_conf
                .clone()
                .map(|text| (self.container_dir(&id).join("resolv.conf"), text)),
        };
        let gate = req.wait_for_start.then(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            lock(&self.start_gates).insert(id.clone(), tx);
            rx
        });
        Ok(Pending {
            golden,
            id,
            name,
            reference: req.image,
            image,
            spec,
            secrets,
            auto_remove: req.auto_remove,
            gate,
            size: (req.cols.unwrap_or(0), req.rows.unwrap_or(0)),
        })
    }

    /// Launch a recorded task; on failure (or cancellation) record why and clean up.
    /// The network namespace a request joins, checked: a network namespace, not vouchd's
    /// own (that is `--network host`, said as such), and for `container:NAME` that running
    /// container's. Its identity goes to the monitor, which starts the container in no other.
    fn joined_network(&self, join: crate::requests::Join) -> Result<JoinedNetwork, EngineError> {
        use crate::requests::Join;
        let (path, owner) = match join {
            Join::Path(path) => (path, None),
            Join::Container(reference) => {
                let id = self.resolve(&reference)?;
                let (pid, start, state) = lock(&self.tasks)
                    .get(&id)
                    .map(|t| (t.view.pid, t.pid_start, t.view.state))
                    .ok_or_else(|| EngineError::NoSuchContainer(reference.clone()))?;
                let pid = pid.filter(|_| state == TaskState::Running).ok_or_else(|| {
                    EngineError::BadRequest(format!(
                        "container {reference} is not running ({}): start it before joining its network",
                        state.as_str()
                    ))
                })?;
                (
                    PathBuf::from(format!("/proc/{pid}/ns/net")),
                    Some((reference, pid, start)),
                )
            }
        };
        let ns = vouch_runtime::net::network_namespace(&path).map_err(EngineError::BadRequest)?;
        if let Some((reference, pid, start)) = &owner {
            // Still that container's process after the open: the namespace opened was its.
            if !process_is(*pid, *start) {
                return Err(EngineError::BadRequest(format!(
                    "container {reference} stopped while its network was being joined"
                )));
            }
        }
        let own =
            vouch_runtime::net::network_namespace_of("self").map_err(EngineError::Internal)?;
        if ns == own {
            let what = match &owner {
                Some((reference, ..)) => format!("the network of container {reference}"),
                None => format!("the network namespace {}", path.display()),
            };
            return Err(EngineError::BadRequest(format!(
                "{what} is the host's: ask for --network host to share the host's network"
            )));
        }
        // Measured as its owner, however it was named (by path, or through a container that
        // joined it): a verifier of that container sees who shares its network.
        let label = match self.network_owner(ns) {
            Some(id) => format!("container:{id}"),
            None => "ns".to_string(),
        };
        Ok(JoinedNetwork {
            path,
            label,
            id: ns,
        })
    }

    /// The running container whose own network namespace (made for it by vouchd) is `ns`.
    fn network_owner(&self, ns: vouch_runtime::net::NamespaceId) -> Option<String> {
        let candidates: Vec<(String, i32, Option<u64>)> = lock(&self.tasks)
            .values()
            .filter(|t| t.view.state == TaskState::Running && t.view.network.is_none())
            .filter_map(|t| Some((t.view.id.clone(), t.view.pid?, t.pid_start)))
            .collect();
        candidates.into_iter().find_map(|(id, pid, start)| {
            let theirs = vouch_runtime::net::network_namespace_of(&pid.to_string()).ok()?;
            (theirs == ns && process_is(pid, start)).then_some(id)
        })
    }

    pub(super) fn run(self: &Arc<Self>, p: Pending) -> Result<Container, EngineError> {
        let id = p.id.clone();
        let launch = Launch {
            golden: p.golden.as_ref(),
            id: &p.id,
            name: &p.name,
            reference: &p.reference,
            image: &p.image,
            spec: &p.spec,
            secrets: &p.secrets,
            gate: p.gate.as_ref(),
            size: p.size,
        };
        let result = self.launch(&launch);
        lock(&self.start_gates).remove(&id);
        let cancel_requested = lock(&self.cancels).remove(&id);
        match result {
            Ok(view) => {
                self.metrics.launches.inc("started");
                Ok(view)
            }
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
                self.metrics
                    .launches
                    .inc(if cancelled { "cancelled" } else { "failed" });
                if !cancelled {
                    self.metrics.failures.inc(crate::metrics::reason(&e));
                }
                if cancelled {
                    self.update_anyway(
                        &id,
                        Step::To(TaskState::Cancelled),
                        CANCELLED_BEFORE_START,
                        |r| {
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
                    // A refusal keeps its code, so the client can say what to do.
                    EngineError::Refused { code, .. } => EngineError::Refused {
                        code,
                        message: format!(
                            "container {} failed to start: {}",
                            &id[..12],
                            error_chain(&e)
                        ),
                    },
                    other => EngineError::StartFailed {
                        id: id[..12].to_string(),
                        reason: error_chain(&other),
                    },
                })
            }
        }
    }

    /// Create a container and wait until it is created (verified, measured, secrets
    /// delivered), its process held for [`Engine::start`]: the create half of docker's
    /// create/start, and containerd's Create. A launch that fails answers its failure.
    pub async fn create_held(
        self: &Arc<Self>,
        mut req: CreateContainer,
    ) -> Result<Container, EngineError> {
        req.wait_for_start = true;
        let remove_if_refused = req.remove_if_refused;
        let engine = Arc::clone(self);
        let pending = tokio::task::spawn_blocking(move || engine.begin(req, None))
            .await
            .map_err(|e| EngineError::Internal(format!("create: {e}")))??;
        let id = pending.id.clone();
        let mut watch = self.watch(&id)?;
        let engine = Arc::clone(self);
        let launch = std::thread::spawn(move || engine.run(pending));
        loop {
            let state = watch.borrow_and_update().state;
            if state == TaskState::Created {
                return self.get(&id);
            }
            if state.is_final() {
                break;
            }
            if watch.changed().await.is_err() {
                break;
            }
        }
        // Ended before it was created: the launch's own error says why.
        let result = match tokio::task::spawn_blocking(move || launch.join()).await {
            Ok(Ok(Err(e))) => Err(e),
            _ => self.get(&id),
        };
        if remove_if_refused {
            let engine = Arc::clone(self);
            let _ = tokio::task::spawn_blocking(move || engine.remove(&id, true)).await;
            return Err(result.err().unwrap_or_else(|| {
                EngineError::BadRequest("the launch ended before it was created".into())
            }));
        }
        result
    }

    /// Start a container created with `wait_for_start`; answers once it runs (or failed to).
    /// Blocking.
    pub fn start(&self, reference: &str) -> Result<Container, EngineError> {
        let id = self.resolve(reference)?;
        let Some(gate) = lock(&self.start_gates).remove(&id) else {
            let view = self.get(&id)?;
            return Err(EngineError::BadRequest(format!(
                "container {} is {}, not created and waiting for a start",
                &id[..12],
                view.state.as_str()
            )));
        };
        let _ = gate.send(());
        let deadline = Instant::now() + LAUNCH_ABORT_WAIT;
        while Instant::now() < deadline {
            let view = self.get(&id)?;
            if view.pid.is_some() || view.state.is_final() {
                return Ok(view);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(EngineError::Internal(format!(
            "container {} did not start within {}s",
            &id[..12],
            LAUNCH_ABORT_WAIT.as_secs()
        )))
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
            Step::Note("CancelRequested"),
            "the launch stops at its next step",
            |_| {},
        )?;
        self.get(&id)
    }

    /// Make a launch stop: at its next step, and at once if it is waiting on a KBS or for its
    /// start.
    pub(super) fn cancel_launch(&self, id: &str) {
        lock(&self.cancels).insert(id.to_string());
        lock(&self.start_gates).remove(id);
        if let Some(i) = lock(&self.fetches).get(id) {
            i.interrupt();
        }
    }

    /// Cancel a task that is still launching and wait (bounded) for the launch to wind down.
    /// Returns the task's last view when it is gone meanwhile (cancelled and removed: `--rm`).
    pub(super) fn abort_launch(&self, id: &str) -> Result<Option<Container>, EngineError> {
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
    pub(super) fn launching(&self, id: &str) -> bool {
        lock(&self.tasks)
            .get(id)
            .is_some_and(|t| !t.view.state.is_final() && t.view.pid.is_none())
    }

    pub(super) fn check_cancel(&self, id: &str) -> Result<(), EngineError> {
        if lock(&self.cancels).contains(id) {
            Err(EngineError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Spawn the monitor, verify and prepare (both measured), then let the monitor start the
    /// container and record what it reports.
    pub(super) fn launch(self: &Arc<Self>, launch: &Launch<'_>) -> Result<Container, EngineError> {
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
        let attach = if launch.spec.terminal || launch.spec.stdin {
            Some(self.input_socket(self.input_path(id), "a container's input")?)
        } else {
            None
        };
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
            .args(
                (!launch.spec.host_network && launch.spec.joined_network.is_none())
                    .then_some("--private-net"),
            )
            .args(
                launch
                    .spec
                    .joined_network
                    .iter()
                    .flat_map(|j| ["--netns".to_string(), format!("{}:{}", j.id.0, j.id.1)]),
            )
            .args(
                launch
                    .spec
                    .publish
                    .iter()
                    .flat_map(|p| ["--publish".to_string(), p.to_arg()]),
            )
            .args(launch.spec.terminal.then_some("--tty"))
            .args(launch.spec.stdin.then_some("--stdin"))
            .args(
                attach
                    .iter()
                    .flat_map(|a| [std::ffi::OsStr::new("--attach"), a.as_os_str()]),
            )
            .args(
                launch
                    .spec
                    .terminal
                    .then(|| {
                        [
                            "--cols".to_string(),
                            launch.size.0.to_string(),
                            "--rows".to_string(),
                            launch.size.1.to_string(),
                        ]
                    })
                    .into_iter()
                    .flatten(),
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

        // Created with `wait_for_start`: created and measured, the process waits for a start
        // request (or a cancel, which drops the gate).
        if let Some(gate) = launch.gate {
            if gate.recv().is_err() {
                drop(child.stdin.take());
                let _ = child.wait();
                return Err(EngineError::Cancelled);
            }
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
                        Step::To(TaskState::Running),
                        &format!("running as pid {pid}"),
                        |r| {
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
    pub(super) fn prepare(&self, launch: &Launch<'_>, bundle: &Path) -> Result<(), EngineError> {
        let Launch {
            golden,
            id,
            name,
            reference,
            image,
            spec,
            secrets,
            gate: _,
            size: _,
        } = *launch;
        // The copies are made first: what they hold is in the spec that is measured.
        let mut spec = spec.clone();
        self.make_copies(id, &mut spec.copies)?;
        let spec = &spec;
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
                return Err(EngineError::Refused {
                    code: vouch_api::codes::GOLDEN_REQUIRED,
                    message: format!(
                        "NOT verified: no golden value for {}, and this vouchd requires one",
                        image.manifest_digest
                    ),
                })
            }
            None => Value::Null,
            Some(_) if self.golden_keys.is_empty() => {
                return Err(EngineError::BadRequest(
                    "NOT verified: a golden value came with this image, but this vouchd trusts no golden-value key".into(),
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
        if let Some((file, text)) = &spec.resolv_conf {
            // Read by the container's user through the bind mount: world-readable, as
            // /etc/resolv.conf is (its directory stays vouchd's alone).
            write_private(file, text.as_bytes())?;
            fs::set_permissions(file, fs::Permissions::from_mode(0o644)).map_err(|e| {
                EngineError::Internal(format!("cannot set the mode of {}: {e}", file.display()))
            })?;
        }
        let config_digest = runtime_spec.measured.digest.clone();
        let mut create = json!({
            "id": id,
            "name": name,
            "image": reference,
            "image_digest": image.manifest_digest.to_string(),
            "config_digest": config_digest,
        });
        if let Some(pod) = self.get(id).ok().and_then(|v| v.pod) {
            create["pod"] = json!(pod);
        }
        let create_seq = self.measure("container.create", create)?;
        self.check_cancel(id)?;
        if !secrets.is_empty() {
            self.deliver_secrets(id, create_seq, spec, secrets)?;
        }
        let message = format!("runtime config measured ({config_digest})");
        self.update(id, Step::To(TaskState::Created), &message, |r| {
            r.view.config_digest = Some(config_digest);
        })?;
        Ok(())
    }

    /// Copy each host path a container is given read-only onto its copies tmpfs, and note what
    /// was copied: the digests go into its measured spec.
    pub(super) fn make_copies(
        &self,
        id: &str,
        copies: &mut [spec::CopyMount],
    ) -> Result<(), EngineError> {
        if copies.is_empty() {
            return Ok(());
        }
        let dir = CopiesDir::for_container(&self.container_dir(id));
        dir.mount()
            .map_err(|e| EngineError::Internal(format!("cannot mount the copies tmpfs: {e}")))?;
        let mut budget = vouch_runtime::copies::Budget::default();
        for c in copies.iter_mut() {
            let copied = vouch_runtime::copies::copy(&c.source, &c.dir, &mut budget)
                .map_err(|e| EngineError::BadRequest(e.to_string()))?;
            tracing::info!(id = %id, source = %c.source.display(), target = %c.target, digest = %copied.digest, bytes = copied.bytes, "host path copied");
            c.digest = copied.digest;
        }
        Ok(())
    }

    /// Create a named volume on first use: an empty directory owned by the container's user.
    pub(super) fn ensure_volume(
        &self,
        v: &spec::Volume,
        uid: u32,
        gid: u32,
    ) -> Result<(), EngineError> {
        let fail = |e: std::io::Error| {
            EngineError::Internal(format!("cannot create volume {}: {e}", v.name))
        };
        fs::create_dir_all(self.cfg.volumes_dir()).map_err(fail)?;
        match fs::create_dir(&v.source) {
            Ok(()) if v.shared => {
                fs::set_permissions(&v.source, fs::Permissions::from_mode(0o777)).map_err(fail)?;
                tracing::info!(volume = %v.name, "volume created, writable by every user");
                Ok(())
            }
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
    pub(super) fn deliver_secrets(
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

    pub(super) fn fetch_secrets(
        &self,
        id: &str,
        create_seq: u64,
        spec: &ContainerSpec,
        secrets: &[SecretRef],
        dir: &SecretsDir,
        interrupt: &Arc<vouch_kbs_client::client::Interrupt>,
    ) -> Result<(), EngineError> {
        let tee = match lock(&self.journal).tee() {
            TeeType::Sim | TeeType::Sample => kbs_types::Tee::Sample,
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
            let started = Instant::now();
            let flavour = std::cell::Cell::new(None);
            let fetched = client.get_resource_interruptible(
                tee,
                path,
                |binding| {
                    let quoted = Instant::now();
                    let evidence = match binding.flavour {
                        vouch_kbs_client::KbsFlavour::Vouch => {
                            let mut runtime_data = binding.runtime_data.clone();
                            runtime_data[vouch_tee::REQUESTER_KEY] =
                                json!({"id": id, "create_seq": create_seq});
                            lock(&self.journal)
                                .evidence(runtime_data)
                                .map_err(|e| error_chain(&e))
                                .and_then(|e| serde_json::to_value(&e).map_err(|e| e.to_string()))
                        }
                        // A CoCo KBS (Trustee) reads CoCo's evidence, which names no requester:
                        // what it releases is bound to the TEE, not to this container.
                        vouch_kbs_client::KbsFlavour::Coco => lock(&self.journal)
                            .coco_evidence(&binding.runtime_data)
                            .map_err(|e| error_chain(&e)),
                    }?;
                    flavour.set(Some(binding.flavour));
                    self.metrics.attestation.observe(quoted.elapsed());
                    Ok(evidence)
                },
                interrupt,
            );
            self.metrics.kbs_round_trip.observe(started.elapsed());
            self.metrics.kbs_round_trips.inc(match &fetched {
                Ok(_) => "released",
                Err(vouch_kbs_client::KbsClientError::Cancelled) => "cancelled",
                Err(vouch_kbs_client::KbsClientError::Refused { .. }) => "refused",
                Err(_) => "error",
            });
            let value = fetched.map_err(|source| match source {
                vouch_kbs_client::KbsClientError::Cancelled => EngineError::Cancelled,
                source => EngineError::Secret {
                    url: url.clone(),
                    kbs: client.addr().to_string(),
                    source,
                },
            })?;
            dir.write(target, &value, spec.uid, spec.gid)
                .map_err(|e| EngineError::Internal(format!("cannot write secret {path}: {e}")))?;
            let bound = match flavour.get() {
                Some(vouch_kbs_client::KbsFlavour::Coco) => {
                    " (a Confidential Containers KBS: its evidence names no container, so the secret is bound to the TEE)"
                }
                _ => "",
            };
            self.update(
                id,
                Step::Note("SecretFetched"),
                &format!("{url} from KBS {}{bound}", client.addr()),
                |_| {},
            )?;
        }
        Ok(())
    }

    /// `/etc/NAME` of an image's root filesystem (`passwd`, `group`), as the top-most layer that
    /// has it says, or `None` where no layer has it or a layer deletes it. Only regular files
    /// are read, through real directories: a link in an image never leads out of it.
    pub(super) fn image_etc_file(
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
}
