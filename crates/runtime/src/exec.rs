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
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{LinuxSeccomp, Spec};
use serde::{Deserialize, Serialize};

use crate::monitor::{self, ExitRecord, MonitorReport};

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
    /// A terminal: the process's stdin, stdout and stderr are a pty's, its controlling
    /// terminal; the output is all stdout.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open, fed through the attach socket.
    #[serde(default)]
    pub stdin: bool,
    /// The terminal's first size (columns, rows).
    #[serde(default)]
    pub cols: u16,
    #[serde(default)]
    pub rows: u16,
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
    /// Where the monitor listens for the process's input (stdin, resizes) when it has any.
    pub attach: Option<PathBuf>,
}

/// Runs the program with seccomp filters loaded first (an exec'd process's: the container's
/// own and the profile its spec adds; a container's first process, whose own filter
/// libcontainer loads: the added one), and, for a terminal, with its stdin as the controlling
/// terminal of its session.
#[derive(Clone)]
pub(crate) struct Sealed {
    pub(crate) seccomp: Vec<LinuxSeccomp>,
    pub(crate) tty: bool,
}

impl Executor for Sealed {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if self.tty {
            // libcontainer's init has made the process a session leader already (setsid).
            // SAFETY: TIOCSCTTY on fd 0 (the pty's side this process was given) with 0: take
            // it as the controlling terminal, without stealing one another session has.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
                return Err(ExecutorError::Other(format!(
                    "cannot take the terminal: {}",
                    io::Error::last_os_error()
                )));
            }
        }
        for filter in &self.seccomp {
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

use crate::input::Input;

/// What runs: the process's PID, its output (descriptor, stream) and its input, if any.
type Running = (i32, Vec<(OwnedFd, u8)>, Option<Input>);

fn setup(args: &ExecArgs) -> Result<Running, String> {
    let process: ExecProcess = serde_json::from_slice(
        &std::fs::read(&args.process).map_err(|e| format!("cannot read the process: {e}"))?,
    )
    .map_err(|e| format!("the exec's process is malformed: {e}"))?;
    let spec = Spec::load(args.bundle.join("config.json"))
        .map_err(|e| format!("cannot read the container's spec: {e}"))?;
    let mut seccomp: Vec<LinuxSeccomp> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().clone())
        .into_iter()
        .collect();
    seccomp.extend(crate::spec::added_seccomp(&spec)?);
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
    let pipe = || monitor::pipe().map_err(|e| format!("cannot create a pipe: {e}"));
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("cannot dup: {e}"));
    let (stdin, stdout, stderr, outputs, input) = if process.tty {
        let size = nix::pty::Winsize {
            ws_row: if process.rows == 0 { 24 } else { process.rows },
            ws_col: if process.cols == 0 { 80 } else { process.cols },
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None)
            .map_err(|e| format!("cannot open a terminal: {e}"))?;
        let outputs = vec![(dup(&pty.master)?, crate::logframe::STDOUT)];
        let input = Some(Input::Tty {
            master: File::from(pty.master),
            stdin: true,
        });
        (
            dup(&pty.slave)?,
            dup(&pty.slave)?,
            pty.slave,
            outputs,
            input,
        )
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin, input) = if process.stdin {
            let (r, w) = pipe()?;
            (r, Some(Input::Pipe(File::from(w))))
        } else {
            let devnull =
                File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
            (OwnedFd::from(devnull), None)
        };
        let outputs = vec![
            (out_r, crate::logframe::STDOUT),
            (err_r, crate::logframe::STDERR),
        ];
        (stdin, out_w, err_w, outputs, input)
    };
    let pid = ContainerBuilder::new(args.container_id.clone(), SyscallType::default())
        .with_root_path(&args.runtime_root)
        .map_err(|e| vouch_base::error_chain(&e))?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .with_executor(Sealed {
            seccomp,
            tty: process.tty,
        })
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
    Ok((pid.as_raw(), outputs, input))
}

/// Run an exec's monitor: wait for [`monitor::GO`], run the process, report, relay, wait, record.
/// Returns the monitor's exit code.
pub fn run(args: &ExecArgs) -> i32 {
    if !monitor::await_go() {
        return 0;
    }
    let unlink = args.attach.clone().map(crate::input::Unlink);
    // Listening before the process runs, so input sent as soon as it started is not lost.
    let listener = match &args.attach {
        Some(path) => match crate::input::listen(path) {
            Ok(l) => Some(l),
            Err(e) => {
                monitor::report(&MonitorReport::Failed {
                    error: format!("cannot listen for the exec's input: {e}"),
                });
                return 1;
            }
        },
        None => None,
    };
    let (pid, outputs, input) = match setup(args) {
        Ok(v) => v,
        Err(error) => {
            monitor::report(&MonitorReport::Failed { error });
            return 1;
        }
    };
    if let (Some(listener), Some(input)) = (listener, input) {
        crate::input::serve(listener, input);
    }
    monitor::report(&MonitorReport::Started { pid });
    monitor::close_report_pipe();
    let relayed = monitor::relay_streams(outputs, &args.log_path);
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
    drop(unlink);
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
