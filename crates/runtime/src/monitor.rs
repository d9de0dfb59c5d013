//! The per-container monitor process.
//!
//! vouchd starts one monitor per container (`vouchd monitor ...`) as soon as a launch begins, so
//! its start-up overlaps the verification and measurement work; the monitor waits for the byte
//! [`GO`] on its stdin (end of file instead means the launch was abandoned). It then creates and starts
//! the container with libcontainer from a fresh single-threaded process, reports the outcome on
//! its stdout (one JSON line), relays the container's stdout/stderr into the log file, waits for
//! the container, records OOM kills, deletes the container, and writes the exit record
//! atomically. It keeps running if vouchd dies, so the exit status is never lost.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::logframe::{write_frame, STDERR, STDOUT};
use crate::net::{self, PortMapping};

#[derive(Debug, Clone)]
pub struct MonitorArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime_root: PathBuf,
    pub log_path: PathBuf,
    pub exit_path: PathBuf,
    /// The container's cgroup path relative to each hierarchy root, e.g. `/vouch/ID`.
    pub cgroup_path: String,
    /// The container has a network namespace of its own: bring its loopback interface up.
    pub private_net: bool,
    /// The network namespace vouchd checked for a container that joins one: the container
    /// is started only if that is the namespace its process is in.
    pub joined_network: Option<crate::net::NamespaceId>,
    /// Host ports relayed into the container's network namespace.
    pub publish: Vec<PortMapping>,
    /// The process has a terminal (its spec's `process.terminal`): libcontainer's init makes
    /// the pty and sends its master on the console socket, `ATTACH.tty`.
    pub terminal: bool,
    /// The process's stdin is open, fed through the attach socket.
    pub stdin: bool,
    /// Where the monitor takes the process's input (with `terminal` or `stdin`).
    pub attach: Option<PathBuf>,
    /// The terminal's first size (columns, rows; 0 for 80x24).
    pub size: (u16, u16),
}

/// The console socket of a container whose input is at `attach`.
pub fn console_socket(attach: &Path) -> PathBuf {
    attach.with_extension("tty")
}

/// The byte vouchd sends on the monitor's stdin once the bundle is ready and measured.
pub const GO: u8 = b'g';

/// The single line a monitor prints on stdout once the container is running (or failed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum MonitorReport {
    Started { pid: i32 },
    Failed { error: String },
}

/// How a container ended. Written atomically to the exit file by the monitor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitRecord {
    /// Exit status; 128 + signal number when killed by a signal, as shells report it.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at_ms: u64,
}

pub(crate) fn report(r: &MonitorReport) {
    let mut line =
        serde_json::to_vec(r).unwrap_or_else(|_| b"{\"failed\":{\"error\":\"report\"}}".to_vec());
    line.push(b'\n');
    let mut out = io::stdout().lock();
    let _ = out.write_all(&line);
    let _ = out.flush();
}

/// Point fd 1 at /dev/null so the daemon sees EOF on the report pipe.
pub(crate) fn close_report_pipe() {
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: dup2 on two valid descriptors; fd 1 is replaced atomically.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Wait for [`GO`] on stdin (false: end of file, the launch was abandoned), then become what
/// a monitor runs as: a session of its own, umask 022, the subreaper of what it starts.
pub(crate) fn await_go() -> bool {
    let mut go = [0u8; 1];
    match io::stdin().read(&mut go) {
        Ok(1) if go[0] == GO => {}
        _ => return false,
    }
    let _ = nix::unistd::setsid();
    // vouchd runs with umask 077; what libcontainer creates in the container (mount points,
    // device nodes) needs the conventional 022, as a container runtime started from a shell has.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o022) };
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and no pointers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    true
}

/// Run the monitor. Returns the process exit code.
pub fn run(args: &MonitorArgs) -> i32 {
    if !await_go() {
        // The launch was abandoned before the container was started.
        return 0;
    }
    let unlink = args.attach.clone().map(crate::input::Unlink);

    let setup = (|| -> Result<_, String> {
        // Listening before the process exists, so that no input sent once it runs is lost.
        let listener = match &args.attach {
            Some(path) if args.terminal || args.stdin => Some(
                crate::input::listen(path)
                    .map_err(|e| format!("cannot listen for the container's input: {e}"))?,
            ),
            _ => None,
        };
        // libcontainer loads the container's own filter; a profile its spec adds is loaded by
        // vouch's executor right before the program.
        let spec = oci_spec::runtime::Spec::load(args.bundle.join("config.json"))
            .map_err(|e| format!("cannot read the container's spec: {e}"))?;
        let builder = ContainerBuilder::new(args.id.clone(), SyscallType::default())
            .with_root_path(&args.runtime_root)
            .map_err(|e| vouch_base::error_chain(&e))?
            .with_executor(crate::exec::Sealed {
                seccomp: crate::spec::added_seccomp(&spec)?.into_iter().collect(),
                tty: false,
            });
        if args.terminal {
            let Some(attach) = &args.attach else {
                return Err("a terminal needs an attach socket".into());
            };
            let path = console_socket(attach);
            let console = crate::input::listen(&path)
                .map_err(|e| format!("cannot listen for the container's terminal: {e}"))?;
            let unlink_console = crate::input::Unlink(path.clone());
            let mut container = builder
                .with_console_socket(Some(&path))
                .as_init(&args.bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
                .map_err(|e| vouch_base::error_chain(&e))?;
            let master =
                crate::input::receive_console(&console, std::time::Duration::from_secs(10));
            drop(unlink_console);
            let master = match master {
                Ok(m) => File::from(m),
                Err(e) => {
                    let _ = container.delete(true);
                    return Err(format!("cannot take the container's terminal: {e}"));
                }
            };
            crate::input::set_size(&master, args.size.0, args.size.1);
            let output = master
                .try_clone()
                .map_err(|e| format!("cannot dup the terminal: {e}"))?;
            let input = crate::input::Input::Tty {
                master,
                stdin: args.stdin,
            };
            return Ok((
                container,
                vec![(OwnedFd::from(output), STDOUT)],
                listener.map(|l| (l, input)),
            ));
        }
        let (out_r, out_w) = pipe().map_err(|e| format!("cannot create stdout pipe: {e}"))?;
        let (err_r, err_w) = pipe().map_err(|e| format!("cannot create stderr pipe: {e}"))?;
        let (stdin, input) = if args.stdin {
            let (r, w) = pipe().map_err(|e| format!("cannot create stdin pipe: {e}"))?;
            (r, Some(crate::input::Input::Pipe(File::from(w))))
        } else {
            let devnull =
                File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
            (OwnedFd::from(devnull), None)
        };
        let container = builder
            .with_stdin(stdin)
            .with_stdout(out_w)
            .with_stderr(err_w)
            .as_init(&args.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| vouch_base::error_chain(&e))?;
        Ok((
            container,
            vec![(out_r, STDOUT), (err_r, STDERR)],
            listener.zip(input),
        ))
    })();
    let (mut container, outputs, input) = match setup {
        Ok(v) => v,
        Err(error) => {
            report(&MonitorReport::Failed { error });
            return 1;
        }
    };
    // The container's process exists now, waiting to be started: set up its network first, so
    // the loopback interface is up and published ports are bound before its program runs.
    let network = match (container.pid(), args.joined_network) {
        (Some(pid), Some(checked)) => joined_check(pid, checked).map(|()| None),
        (Some(pid), None) if args.private_net => network_setup(pid, &args.publish),
        _ => Ok(None),
    };
    let network = match network {
        Ok(n) => n,
        Err(error) => {
            report(&MonitorReport::Failed { error });
            let _ = container.delete(true);
            return 1;
        }
    };
    if let Err(e) = container.start() {
        report(&MonitorReport::Failed {
            error: vouch_base::error_chain(&e),
        });
        let _ = container.delete(true);
        return 1;
    }
    let Some(pid) = container.pid() else {
        report(&MonitorReport::Failed {
            error: "container started without a pid".into(),
        });
        let _ = container.delete(true);
        return 1;
    };
    if let Some((ns, listeners)) = network {
        net::relay(listeners, ns);
    }
    if let Some((listener, input)) = input {
        crate::input::serve(listener, input);
    }
    report(&MonitorReport::Started { pid: pid.as_raw() });
    close_report_pipe();

    let relay_result = relay_streams(outputs, &args.log_path);
    let status = wait_for(pid);
    reap_adopted();
    let oom = oom_kills(&args.cgroup_path) > 0;
    let _ = container.refresh_status();
    if let Err(e) = container.delete(true) {
        eprintln!(
            "monitor: deleting container {}: {}",
            args.id,
            vouch_base::error_chain(&e)
        );
    }
    if let Err(e) = relay_result {
        eprintln!("monitor: relaying output of {}: {e}", args.id);
    }
    let (exit_code, signal) = status;
    let record = ExitRecord {
        exit_code,
        signal,
        oom_killed: oom && signal == Some(libc::SIGKILL),
        finished_at_ms: vouch_base::clock::unix_millis(),
    };
    drop(unlink);
    if let Err(e) = write_exit(&args.exit_path, &record) {
        eprintln!("monitor: writing exit record for {}: {e}", args.id);
        return 1;
    }
    0
}

type Network = (File, Vec<(PortMapping, std::net::TcpListener)>);

/// The container's process is in the network namespace vouchd checked (and measured as
/// joined), not in one that took its path since.
fn joined_check(pid: Pid, checked: crate::net::NamespaceId) -> Result<(), String> {
    let now = crate::net::network_namespace_of(&pid.to_string())?;
    if now != checked {
        return Err(
            "the network namespace the container was to join changed after vouchd checked it"
                .into(),
        );
    }
    Ok(())
}

/// Loopback up in the container's namespace, published ports bound on the host.
fn network_setup(pid: Pid, publish: &[PortMapping]) -> Result<Option<Network>, String> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| format!("cannot open the container's network namespace: {e}"))?;
    net::loopback_up(&ns).map_err(|e| format!("cannot bring up the loopback interface: {e}"))?;
    let listeners = net::bind(publish)?;
    Ok(Some((ns, listeners)))
}

pub(crate) fn wait_for(pid: Pid) -> (i32, Option<i32>) {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return (code, None),
            Ok(WaitStatus::Signaled(_, sig, _)) => return (128 + sig as i32, Some(sig as i32)),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return (255, None),
        }
    }
}

/// Reap any processes re-parented to this subreaper.
pub(crate) fn reap_adopted() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

pub(crate) fn write_exit(path: &Path, record: &ExitRecord) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Read an exit record, if the monitor wrote one.
pub fn read_exit(path: &Path) -> Option<ExitRecord> {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Number of OOM kills in the container's memory cgroup (v1 or v2).
fn oom_kills(cgroup_path: &str) -> u64 {
    let rel = cgroup_path.trim_start_matches('/');
    let candidates = [
        (
            format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
            "oom_kill ",
        ),
        (format!("/sys/fs/cgroup/{rel}/memory.events"), "oom_kill "),
    ];
    for (path, key) in candidates {
        if let Ok(text) = fs::read_to_string(&path) {
            for line in text.lines() {
                if let Some(v) = line.strip_prefix(key) {
                    return v.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    0
}

/// Copy each descriptor into the log as its stream until each reaches end of file (or, for a
/// terminal's master side, EIO once the process's side is closed).
pub(crate) fn relay_streams(fds: Vec<(OwnedFd, u8)>, log_path: &Path) -> io::Result<()> {
    let mut log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(log_path)?;
    let mut streams: Vec<(File, u8, bool)> = fds
        .into_iter()
        .map(|(fd, stream)| (File::from(fd), stream, true))
        .collect();
    let mut buf = vec![0u8; 64 * 1024];
    while streams.iter().any(|s| s.2) {
        let mut fds: Vec<libc::pollfd> = streams
            .iter()
            .map(|(f, _, open)| libc::pollfd {
                fd: if *open { f.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live, correctly sized array of pollfd structs for the whole call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (i, pfd) in fds.iter().enumerate() {
            if pfd.fd < 0 || pfd.revents == 0 {
                continue;
            }
            let (file, stream, open) = &mut streams[i];
            match file.read(&mut buf) {
                Ok(0) => *open = false,
                Ok(n) => write_frame(&mut log, *stream, &buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => *open = false,
            }
        }
    }
    Ok(())
}
