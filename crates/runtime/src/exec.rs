//! A process run inside a running container (`vouch exec`, containerd's Exec): its monitor, a
//! fresh single-threaded process like the container's own (libcontainer forks), joins the
//! container's namespaces and cgroup through libcontainer's tenant builder, relays the
//! process's output into its own log in the framed format, waits for it and writes its exit
//! record.
//!
//! libcontainer's tenant builder rebuilds the spec's `linux` section from namespaces and
//! cgroups alone, so an exec'd process would run without the container's seccomp filter: the
//! executor here loads the container's own filter (from its bundle's config.json, in the form
//! libcontainer reads) right before the program runs, after capabilities are dropped and
//! `no_new_privileges` is set, as for the container's first process. Without a user, cwd or
//! env of its own, the process takes the container's (docker's rule); libcontainer alone
//! would run it as root in `/`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{LinuxSeccomp, Spec};
use serde::{Deserialize, Serialize};

use crate::monitor::{self, ExitRecord, MonitorReport, GO};

/// What an exec runs: the request as vouchd resolved it, written to the exec's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecProcess {
    pub args: Vec<String>,
    /// `KEY=VALUE` entries over the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct ExecArgs {
    /// The container (libcontainer's id).
    pub container_id: String,
    pub runtime_root: PathBuf,
    /// The container's bundle: its config.json (libcontainer's form) gives the seccomp filter
    /// and the defaults.
    pub bundle: PathBuf,
    /// The exec's [`ExecProcess`] as JSON.
    pub process: PathBuf,
    pub log_path: PathBuf,
    pub exit_path: PathBuf,
}

/// Runs the program with the container's seccomp filter loaded first.
#[derive(Clone)]
struct Sealed {
    seccomp: Option<LinuxSeccomp>,
}

impl Executor for Sealed {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(filter) = &self.seccomp {
            libcontainer::seccomp::initialize_seccomp(filter).map_err(|e| {
                ExecutorError::Other(format!("cannot load the seccomp filter: {e}"))
            })?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

fn setup(args: &ExecArgs) -> Result<(i32, OwnedFd, OwnedFd), String> {
    let process: ExecProcess = serde_json::from_slice(
        &std::fs::read(&args.process).map_err(|e| format!("cannot read the process: {e}"))?,
    )
    .map_err(|e| format!("the exec's process is malformed: {e}"))?;
    let spec = Spec::load(args.bundle.join("config.json"))
        .map_err(|e| format!("cannot read the container's spec: {e}"))?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let base = spec.process().as_ref();
    let user = base.map(|p| p.user());
    let uid = process.uid.or_else(|| user.map(|u| u.uid()));
    let gid = process.gid.or_else(|| user.map(|u| u.gid()));
    let groups = if process.uid.is_some() || process.gid.is_some() {
        process.additional_gids.clone()
    } else {
        user.and_then(|u| u.additional_gids().clone())
            .unwrap_or_default()
    };
    let cwd = process
        .cwd
        .clone()
        .map(PathBuf::from)
        .or_else(|| base.map(|p| p.cwd().clone()));
    let env: HashMap<String, String> = process
        .env
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let (out_r, out_w) = monitor::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let (err_r, err_w) = monitor::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let devnull = File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
    let pid = ContainerBuilder::new(args.container_id.clone(), SyscallType::default())
        .with_root_path(&args.runtime_root)
        .map_err(|e| vouch_base::error_chain(&e))?
        .with_stdin(OwnedFd::from(devnull))
        .with_stdout(out_w)
        .with_stderr(err_w)
        .with_executor(Sealed { seccomp })
        .as_tenant()
        .with_container_args(process.args.clone())
        .with_env(env)
        .with_cwd(cwd)
        .with_user(uid)
        .with_group(gid)
        .with_additional_gids(groups)
        .with_detach(true)
        .build()
        .map_err(|e| vouch_base::error_chain(&e))?;
    Ok((pid.as_raw(), out_r, err_r))
}

/// Run an exec's monitor: wait for [`GO`], run the process, report, relay, wait, record.
/// Returns the monitor's exit code.
pub fn run(args: &ExecArgs) -> i32 {
    let mut go = [0u8; 1];
    match io::stdin().read(&mut go) {
        Ok(1) if go[0] == GO => {}
        _ => return 0,
    }
    let _ = nix::unistd::setsid();
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o022) };
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and no pointers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let (pid, out_r, err_r) = match setup(args) {
        Ok(v) => v,
        Err(error) => {
            monitor::report(&MonitorReport::Failed { error });
            return 1;
        }
    };
    monitor::report(&MonitorReport::Started { pid });
    monitor::close_report_pipe();
    let relayed = monitor::relay(out_r, err_r, &args.log_path);
    let (exit_code, signal) = monitor::wait_for(nix::unistd::Pid::from_raw(pid));
    monitor::reap_adopted();
    if let Err(e) = relayed {
        eprintln!("exec monitor: relaying output: {e}");
    }
    let record = ExitRecord {
        exit_code,
        signal,
        oom_killed: false,
        finished_at_ms: vouch_base::clock::unix_millis(),
    };
    if let Err(e) = monitor::write_exit(&args.exit_path, &record) {
        eprintln!("exec monitor: writing the exit record: {e}");
        return 1;
    }
    0
}

/// The exec's directory inside its container's: `execs/EXEC_ID`.
pub fn dir(container_dir: &Path, exec_id: &str) -> PathBuf {
    container_dir.join("execs").join(exec_id)
}
