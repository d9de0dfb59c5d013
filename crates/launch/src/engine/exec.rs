//! Processes run inside a running container (`vouch exec`, containerd's Exec). Each is measured
//! as a `container.exec` record before it runs, naming its container and the digest of its
//! process (args, env, cwd, user, groups, tty), so a verifier sees every process that entered
//! a container after its start. An exec runs under a monitor of its own (`vouchd exec-monitor`,
//! from the sealed copy), which joins the container with its seccomp filter, capabilities and
//! `no_new_privileges`, and keeps the output and the exit status.
//!
//! Exec can be forbidden by the node (`vouchd --exec deny`) and by the image (its label
//! `io.vouch.exec=deny`, covered by its digest and signature). The exec table is in memory: a
//! vouchd restart forgets execs (their processes run on under their monitors; the records stay
//! in the log).

use super::*;
use std::os::unix::fs::DirBuilderExt;
use vouch_api::{Exec, ExecRequest};
use vouch_runtime::exec::ExecProcess;

/// At most this many execs are remembered; ended ones are forgotten first.
const EXECS_KEPT: usize = 1024;

pub(crate) struct ExecEntry {
    container: String,
    dir: PathBuf,
    pid: i32,
    start: Option<u64>,
    digest: String,
    tty: bool,
    /// The monitor's input socket, when the process has a stdin or a terminal.
    attach: Option<PathBuf>,
    /// The exit status once it ended.
    end: watch::Sender<Option<i32>>,
}

impl ExecEntry {
    fn view(&self, id: &str) -> Exec {
        let end = *self.end.borrow();
        Exec {
            id: id.to_string(),
            container: self.container.clone(),
            pid: Some(self.pid),
            running: end.is_none(),
            exit_code: end,
            process_digest: self.digest.clone(),
            tty: self.tty,
            stdin: self.attach.is_some(),
        }
    }
}

/// The first 12 characters of an id, as messages show it.
fn short(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(i, _)| &id[..i])
}

fn no_nul(what: &str, s: &str) -> Result<(), EngineError> {
    if s.contains('\0') {
        return Err(EngineError::BadRequest(format!(
            "the exec's {what} contains a NUL byte"
        )));
    }
    Ok(())
}

/// `UID[:GID]`, digits only (`(uid_t)-1` means "unchanged" to the kernel, so it is refused).
fn parse_user(user: &str) -> Result<(u32, Option<u32>), EngineError> {
    let id = |s: &str| -> Result<u32, EngineError> {
        s.parse::<u32>()
            .ok()
            .filter(|n| *n != u32::MAX && s.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                EngineError::BadRequest(format!(
                    "exec user {user:?} must be UID or UID:GID in digits (names are not looked up for exec)"
                ))
            })
    };
    match user.split_once(':') {
        Some((u, g)) => Ok((id(u)?, Some(id(g)?))),
        None => Ok((id(user)?, None)),
    }
}

/// The process an exec request asks for, checked.
pub(crate) fn process_of(req: &ExecRequest) -> Result<ExecProcess, EngineError> {
    if req.cmd.is_empty() || req.cmd[0].is_empty() {
        return Err(EngineError::BadRequest(
            "an exec needs a command: give the program and its arguments".into(),
        ));
    }
    if !req.tty && (req.cols.is_some() || req.rows.is_some()) {
        return Err(EngineError::BadRequest(
            "a terminal size needs a terminal (tty)".into(),
        ));
    }
    for a in &req.cmd {
        no_nul("command", a)?;
    }
    for e in &req.env {
        no_nul("environment", e)?;
        if !e.contains('=') || e.starts_with('=') {
            return Err(EngineError::BadRequest(format!(
                "exec environment entry {e:?} must be KEY=VALUE"
            )));
        }
    }
    if let Some(w) = &req.workdir {
        no_nul("working directory", w)?;
        if !w.starts_with('/') {
            return Err(EngineError::BadRequest(format!(
                "exec working directory {w:?} must be an absolute path"
            )));
        }
    }
    let (uid, gid) = match &req.user {
        Some(u) => {
            let (u, g) = parse_user(u)?;
            (Some(u), Some(g.unwrap_or(u)))
        }
        None if !req.additional_gids.is_empty() => {
            return Err(EngineError::BadRequest(
                "exec groups need a user: give UID[:GID] too".into(),
            ))
        }
        None => (None, None),
    };
    Ok(ExecProcess {
        args: req.cmd.clone(),
        env: req.env.clone(),
        cwd: req.workdir.clone(),
        uid,
        gid,
        additional_gids: req.additional_gids.clone(),
        tty: req.tty,
        stdin: req.stdin,
        cols: req.cols.unwrap_or(0),
        rows: req.rows.unwrap_or(0),
    })
}

/// The digest `container.exec` names: SHA-384 of the canonical JSON of the process as asked
/// (the container's defaults fill in what it leaves out, and those are in the container's
/// measured spec).
pub(crate) fn process_digest(p: &ExecProcess, tty: bool) -> Result<String, EngineError> {
    vouch_measure::canonical::canonical_sha384(&json!({
        "args": p.args,
        "env": p.env,
        "cwd": p.cwd,
        "uid": p.uid,
        "gid": p.gid,
        "additional_gids": p.additional_gids,
        "tty": tty,
    }))
    .map_err(|e| EngineError::Internal(format!("exec digest: {e}")))
}

impl Engine {
    /// Run a process in a running container; answers once it runs. Blocking.
    pub fn exec(&self, reference: &str, req: &ExecRequest) -> Result<Exec, EngineError> {
        let id = self.resolve(reference)?;
        let view = self.get(&id)?;
        if self.cfg.exec_denied {
            return Err(EngineError::Refused {
                code: vouch_api::codes::EXEC_DENIED,
                message: "exec is denied on this node (vouchd --exec deny)".into(),
            });
        }
        if view.state != TaskState::Running || view.pid.is_none() {
            return Err(EngineError::BadRequest(format!(
                "container {} is {}, not running: exec needs a running container",
                &id[..12],
                view.state.as_str()
            )));
        }
        let image = self.images.find(&view.image_digest).map_err(|_| {
            EngineError::BadRequest(format!(
                "cannot read the exec policy of container {}'s image {}",
                &id[..12],
                view.image_digest
            ))
        })?;
        if let Some(policy) = image.defaults.exec.as_deref().filter(|p| *p != "allow") {
            return Err(EngineError::Refused {
                code: vouch_api::codes::EXEC_DENIED,
                message: format!(
                    "exec is denied by the image {} (its label {}={policy})",
                    view.image,
                    vouch_image::oci::EXEC_LABEL
                ),
            });
        }
        let process = process_of(req)?;
        let digest = process_digest(&process, req.tty)?;
        let exec_id = random_hex(32)?;
        let dir = vouch_runtime::exec::dir(&self.container_dir(&id), &exec_id);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                EngineError::Internal(format!("cannot create the exec's directory: {e}"))
            })?;
        write_private(
            &dir.join("process.json"),
            &serde_json::to_vec(&process).map_err(|e| EngineError::Internal(e.to_string()))?,
        )?;
        let monitor_log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("monitor.log"))
            .map_err(|e| {
                EngineError::Internal(format!("cannot open the exec's monitor log: {e}"))
            })?;
        // Short: a socket's path has at most 107 bytes, and the exec's own directory is deep.
        let attach = if req.tty || req.stdin {
            let path = self.cfg.state_dir.join("x").join(&exec_id[..32]);
            Some(self.input_socket(path, "an exec's input")?)
        } else {
            None
        };
        let mut child = Command::new(&self.cfg.exe)
            .arg0("vouchd")
            .arg("exec-monitor")
            .args(
                attach
                    .iter()
                    .flat_map(|a| [std::ffi::OsStr::new("--attach"), a.as_os_str()]),
            )
            .arg("--container-id")
            .arg(&id)
            .arg("--runtime-root")
            .arg(self.cfg.runtime_root())
            .arg("--bundle")
            .arg(self.container_dir(&id).join("bundle"))
            .arg("--process")
            .arg(dir.join("process.json"))
            .arg("--log")
            .arg(dir.join("exec.log"))
            .arg("--exit-file")
            .arg(dir.join("exit.json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(monitor_log))
            .spawn()
            .map_err(|e| EngineError::Internal(format!("cannot run the exec's monitor: {e}")))?;
        // Measured before the process exists: a verifier sees every exec that could have run.
        let measured = self.measure(
            "container.exec",
            json!({"id": id, "exec_id": exec_id, "process_digest": digest, "tty": req.tty}),
        );
        let go = measured.is_ok()
            && child
                .stdin
                .take()
                .is_some_and(|mut s| s.write_all(&[monitor::GO]).is_ok());
        if !go {
            let _ = child.kill();
            let _ = child.wait();
            measured?;
            return Err(EngineError::Internal(
                "the exec's monitor went away before it started".into(),
            ));
        }
        match read_report(&mut child) {
            Some(MonitorReport::Started { pid }) => {
                let (end, _) = watch::channel(None);
                let entry = ExecEntry {
                    container: id.clone(),
                    dir: dir.clone(),
                    pid,
                    start: start_time(pid),
                    digest,
                    tty: req.tty,
                    attach,
                    end: end.clone(),
                };
                let view = entry.view(&exec_id);
                {
                    let mut execs = lock(&self.execs);
                    if execs.len() >= EXECS_KEPT {
                        let ended: Vec<String> = execs
                            .iter()
                            .filter(|(_, e)| e.end.borrow().is_some())
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in ended {
                            execs.remove(&k);
                        }
                    }
                    execs.insert(exec_id.clone(), entry);
                }
                let exit_path = dir.join("exit.json");
                std::thread::spawn(move || {
                    let _ = child.wait();
                    let code = read_exit(&exit_path).map_or(255, |r| r.exit_code);
                    // send_replace: the value is kept even when no one follows it yet.
                    end.send_replace(Some(code));
                });
                Ok(view)
            }
            Some(MonitorReport::Failed { error }) => {
                let _ = child.wait();
                Err(EngineError::BadRequest(format!(
                    "cannot run the exec in container {}: {error}",
                    &id[..12]
                )))
            }
            None => {
                let _ = child.wait();
                Err(EngineError::Internal(
                    "the exec's monitor ended without a report (see its monitor.log)".into(),
                ))
            }
        }
    }

    fn exec_entry<T>(
        &self,
        exec_id: &str,
        f: impl FnOnce(&ExecEntry) -> T,
    ) -> Result<T, EngineError> {
        lock(&self.execs)
            .get(exec_id)
            .map(f)
            .ok_or_else(|| EngineError::NoSuchExec(exec_id.to_string()))
    }

    pub fn exec_get(&self, exec_id: &str) -> Result<Exec, EngineError> {
        self.exec_entry(exec_id, |e| e.view(exec_id))
    }

    /// Follows the exec's end (its exit status).
    pub fn exec_watch(&self, exec_id: &str) -> Result<watch::Receiver<Option<i32>>, EngineError> {
        self.exec_entry(exec_id, |e| e.end.subscribe())
    }

    /// The exec's output, in the framed log format.
    pub fn exec_log_path(&self, exec_id: &str) -> Result<PathBuf, EngineError> {
        self.exec_entry(exec_id, |e| e.dir.join("exec.log"))
    }

    /// The socket the exec's monitor takes its input on, if it has a stdin or a terminal.
    pub fn exec_input(&self, exec_id: &str) -> Result<PathBuf, EngineError> {
        let (attach, ended) =
            self.exec_entry(exec_id, |e| (e.attach.clone(), e.end.borrow().is_some()))?;
        match attach {
            _ if ended => Err(EngineError::BadRequest(format!(
                "exec {} has ended",
                short(exec_id)
            ))),
            Some(a) => Ok(a),
            None => Err(EngineError::BadRequest(format!(
                "exec {} has no stdin and no terminal: run it with stdin or tty",
                short(exec_id)
            ))),
        }
    }

    pub fn exec_kill(&self, exec_id: &str, signal: i32) -> Result<Exec, EngineError> {
        let sig = Signal::try_from(signal)
            .map_err(|_| EngineError::BadRequest(format!("{signal} is not a signal")))?;
        let (pid, start, ended) =
            self.exec_entry(exec_id, |e| (e.pid, e.start, e.end.borrow().is_some()))?;
        if ended || !signal_process(pid, start, sig) {
            return Err(EngineError::BadRequest(format!(
                "exec {} is not running",
                short(exec_id)
            )));
        }
        self.exec_get(exec_id)
    }

    /// Forget the execs of a removed container.
    pub(crate) fn forget_execs(&self, container: &str) {
        lock(&self.execs).retain(|_, e| e.container != container);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cmd: &[&str]) -> ExecRequest {
        ExecRequest {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_exec_request_is_checked_before_anything_runs() {
        let bad = |r: ExecRequest, want: &str| {
            let e = process_of(&r).expect_err("refused").to_string();
            assert!(e.contains(want), "{e}");
        };
        bad(req(&[]), "needs a command");
        bad(req(&[""]), "needs a command");
        bad(req(&["/bin/sh", "a\0b"]), "NUL byte");
        bad(
            ExecRequest {
                cols: Some(80),
                ..req(&["sh"])
            },
            "needs a terminal",
        );
        bad(
            ExecRequest {
                env: vec!["NOEQ".into()],
                ..req(&["sh"])
            },
            "KEY=VALUE",
        );
        bad(
            ExecRequest {
                env: vec!["=x".into()],
                ..req(&["sh"])
            },
            "KEY=VALUE",
        );
        bad(
            ExecRequest {
                workdir: Some("rel".into()),
                ..req(&["sh"])
            },
            "absolute",
        );
        bad(
            ExecRequest {
                user: Some("root".into()),
                ..req(&["sh"])
            },
            "UID or UID:GID",
        );
        bad(
            ExecRequest {
                user: Some("4294967295".into()),
                ..req(&["sh"])
            },
            "UID or UID:GID",
        );
        bad(
            ExecRequest {
                user: Some("+1".into()),
                ..req(&["sh"])
            },
            "UID or UID:GID",
        );
        bad(
            ExecRequest {
                additional_gids: vec![10],
                ..req(&["sh"])
            },
            "need a user",
        );
        let p = process_of(&ExecRequest {
            user: Some("1000".into()),
            ..req(&["id"])
        })
        .expect("ok");
        assert_eq!((p.uid, p.gid), (Some(1000), Some(1000)));
        let p = process_of(&ExecRequest {
            user: Some("1000:10".into()),
            ..req(&["id"])
        })
        .expect("ok");
        assert_eq!((p.uid, p.gid), (Some(1000), Some(10)));
    }

    #[test]
    fn the_process_digest_covers_every_field() {
        let base = process_of(&req(&["id"])).expect("ok");
        let d = process_digest(&base, false).expect("digest");
        assert!(d.starts_with("sha384:"));
        let mut changed = Vec::new();
        for p in [
            ExecProcess {
                args: vec!["id".into(), "-u".into()],
                ..base.clone()
            },
            ExecProcess {
                env: vec!["A=b".into()],
                ..base.clone()
            },
            ExecProcess {
                cwd: Some("/tmp".into()),
                ..base.clone()
            },
            ExecProcess {
                uid: Some(0),
                ..base.clone()
            },
            ExecProcess {
                gid: Some(0),
                ..base.clone()
            },
            ExecProcess {
                additional_gids: vec![1],
                ..base.clone()
            },
        ] {
            changed.push(process_digest(&p, false).expect("digest"));
        }
        changed.push(process_digest(&base, true).expect("digest"));
        for c in &changed {
            assert_ne!(*c, d);
        }
        assert_eq!(process_digest(&base, false).expect("digest"), d);
    }
}
