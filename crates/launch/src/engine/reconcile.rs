//! After a restart: tasks the database holds are followed (running containers), finished
//! (their monitor recorded an exit), or failed (a launch that vouchd's end interrupted).

use super::*;

impl Engine {
    /// After a restart: finish tasks whose container ended while vouchd was down, follow the
    /// ones still running, and tear down the ones a crash interrupted mid-launch (their monitor
    /// and any process of theirs killed, secrets wiped, mounts released). `--rm` tasks that
    /// ended are removed, and whatever a container that is not running still had mounted (a
    /// crash between any two steps of the way out) is released, so that no secret, mount,
    /// process or stale task outlives a crash.
    pub(super) fn reconcile(self: &Arc<Self>) {
        // Execs are not kept across a restart: their input sockets are no one's now.
        if let Ok(entries) = fs::read_dir(self.cfg.state_dir.join("x")) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
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
    pub(super) fn abort_interrupted(&self, t: &TaskRecord) {
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

    pub(super) fn poll_orphan(
        self: Arc<Self>,
        id: &str,
        monitor_pid: i32,
        monitor_start: Option<u64>,
    ) {
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
}
