//! A task's end: `container.exit` (or its failure), stop, removal, and the signals in between.

use super::*;

impl Engine {
    /// Unmount a container's root filesystem and secrets tmpfs.
    pub(super) fn release_mounts(&self, id: &str) {
        let dir = self.container_dir(id);
        let _ = Overlay::for_container(&dir).unmount();
        SecretsDir::for_container(&dir).unmount();
        CopiesDir::for_container(&dir).unmount();
    }

    /// Record how a container ended (measured), and clean up its root filesystem.
    pub(super) fn finish(
        self: &Arc<Self>,
        id: &str,
        exit: Option<ExitRecord>,
        unknown_reason: &str,
    ) {
        self.finish_measured(id, exit, unknown_reason, false)
    }

    /// [`Engine::finish`] for a task found unfinished at a restart: the crash may have come
    /// between its `container.exit` record and the task's update, so the record is looked for
    /// first (only here: no other path can have written it).
    pub(super) fn finish_recovered(
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

    pub(super) fn finish_measured(
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
        let view = self.update_anyway(id, Step::To(TaskState::Exited), &message, |r| {
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
    pub(super) fn release_hold(&self, id: &str) {
        if lock(&self.held).remove(id) && lock(&self.tasks).contains_key(id) {
            self.auto_remove(id);
        }
    }

    pub(super) fn signal(&self, id: &str, sig: Signal) {
        let target = lock(&self.tasks)
            .get(id)
            .and_then(|t| Some((t.view.pid?, t.pid_start)));
        if let Some((pid, start)) = target {
            // Only the container's own process: not another that has its PID by now.
            signal_process(pid, start, sig);
        }
    }

    pub(super) fn is_final(&self, id: &str) -> bool {
        lock(&self.tasks)
            .get(id)
            .is_none_or(|t| t.view.state.is_final())
    }

    pub(super) fn wait_final(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_final(id) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.is_final(id)
    }

    /// Send `signal` to a running container's process (docker's `kill`); a container that
    /// has not started yet is cancelled instead, as a stop would. Blocking.
    pub fn kill(&self, reference: &str, signal: i32) -> Result<Container, EngineError> {
        let id = self.resolve(reference)?;
        let sig = Signal::try_from(signal)
            .map_err(|_| EngineError::BadRequest(format!("{signal} is not a signal")))?;
        if self.launching(&id) {
            if let Some(gone) = self.abort_launch(&id)? {
                return Ok(gone);
            }
            return self.get(&id);
        }
        if self.is_final(&id) {
            return Err(EngineError::BadRequest(format!(
                "container {} is not running",
                &id[..12]
            )));
        }
        self.update_anyway(&id, Step::Note("Killed"), sig.as_str(), |_| {});
        self.signal(&id, sig);
        self.get(&id)
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
                Step::Note("StopRequested"),
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

    /// Remove a container started with --rm once it has ended; a failure is logged and
    /// recorded as an event, which also releases anyone waiting for the removal.
    pub(super) fn auto_remove(&self, id: &str) {
        if let Err(e) = self.remove_task(id) {
            let reason = error_chain(&e);
            tracing::warn!(id = %id, error = %reason, "cannot auto-remove container");
            self.update_anyway(
                id,
                Step::Note(REMOVE_FAILED),
                &format!("cannot remove: {reason}"),
                |_| {},
            );
        }
    }

    pub(super) fn remove_task(&self, id: &str) -> Result<Container, EngineError> {
        self.forget_execs(id);
        let dir = self.container_dir(id);
        Overlay::for_container(&dir).unmount()?;
        SecretsDir::for_container(&dir).unmount();
        CopiesDir::for_container(&dir).unmount();
        // The input sockets of a monitor that did not end by itself (killed).
        let input = self.input_path(id);
        let _ = fs::remove_file(vouch_runtime::monitor::console_socket(&input));
        let _ = fs::remove_file(input);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| {
                EngineError::Internal(format!("cannot remove {}: {e}", dir.display()))
            })?;
        }
        // The task leaves the database, then the table, before watchers hear "Removed", so a
        // waiter that wakes on it never finds the container still listed; a failed delete
        // leaves it listed (and removable again), never gone from memory but back after a
        // restart.
        if !lock(&self.tasks).contains_key(id) {
            return Err(EngineError::NoSuchContainer(id.to_string()));
        }
        self.db.delete(id)?;
        let mut rec = lock(&self.tasks)
            .remove(id)
            .ok_or_else(|| EngineError::NoSuchContainer(id.to_string()))?;
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
