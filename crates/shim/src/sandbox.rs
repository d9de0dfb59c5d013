//! A pod's sandbox: the CRI's pause container, which holds the pod's place (its namespaces,
//! for runc) while the pod lives. vouch's containers get their own hardened namespaces from
//! vouchd and do not join the sandbox's, so the pause image never runs: the shim forks a process
//! of its own that waits, with the pod's lifecycle (Start, Kill, Wait, Delete) as containerd
//! expects. It runs no code of the pod's, so nothing of it is measured; it ends when signalled,
//! and by itself if the shim dies (its pipe to the shim reads end-of-file).
//!
//! It is in the pod's network namespace (the one containerd made and CNI set up, named by the
//! sandbox's spec), so that `/proc/PID/ns/net` of the sandbox's PID, which containerd hands to
//! each of the pod's containers, is the pod's network: vouchd's containers join it there.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The network the sandbox's process is in.
pub(crate) enum PodNetwork {
    /// The node's (the pod's `hostNetwork`): the shim's own.
    Host,
    /// A new network namespace of its own.
    Own,
    /// The namespace open here (the pod's, as its spec names it).
    Join(std::fs::File),
}

/// The sandbox's waiting process.
pub(crate) struct Pause {
    pub(crate) pid: u32,
    /// On the node's network: the pod's containers are too.
    pub(crate) host_network: bool,
    /// Signals go through it: once the process is reaped, they fail instead of reaching a
    /// process that took its PID.
    pidfd: OwnedFd,
    /// The write end of the pipe the process reads: closed when the shim dies.
    _alive: OwnedFd,
}

impl Pause {
    /// Fork the waiting process, in `network`.
    pub(crate) fn spawn(network: PodNetwork) -> io::Result<Pause> {
        let (read, write) = pipe()?;
        // The child's word on its network: one byte, 0 or the errno of setns/unshare.
        let (status_read, status_write) = pipe()?;
        let host_network = matches!(network, PodNetwork::Host);
        let netns = match &network {
            PodNetwork::Join(f) => f.as_raw_fd(),
            _ => -1,
        };
        let own = matches!(network, PodNetwork::Own);
        // SAFETY: the child only makes async-signal-safe calls (setns, unshare, write,
        // sigprocmask, signal, prctl, close, read, _exit) before it ends, as a fork of a
        // multi-threaded process must.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: async-signal-safe calls on this process's own state only.
            unsafe {
                let r = if netns >= 0 {
                    libc::setns(netns, libc::CLONE_NEWNET)
                } else if own {
                    libc::unshare(libc::CLONE_NEWNET)
                } else {
                    0
                };
                let word: u8 = if r == 0 {
                    0
                } else {
                    (*libc::__errno_location()).clamp(1, 255) as u8
                };
                libc::write(status_write.as_raw_fd(), (&word as *const u8).cast(), 1);
                if r != 0 {
                    libc::_exit(127);
                }
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                for s in [
                    libc::SIGTERM,
                    libc::SIGINT,
                    libc::SIGHUP,
                    libc::SIGQUIT,
                    libc::SIGUSR1,
                    libc::SIGUSR2,
                    libc::SIGPIPE,
                ] {
                    libc::signal(s, libc::SIG_DFL);
                }
                libc::prctl(
                    libc::PR_SET_NAME,
                    c"vouch-pause".as_ptr() as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                // Nothing of the shim's stays open here (another sandbox's pipe would keep
                // that one waiting after its shim died).
                for fd in 3..4096 {
                    if fd != read.as_raw_fd() {
                        libc::close(fd);
                    }
                }
                let mut b = 0u8;
                loop {
                    // Nothing is ever written: end-of-file means the shim is gone.
                    if libc::read(read.as_raw_fd(), (&mut b as *mut u8).cast(), 1) >= 0 {
                        libc::_exit(0);
                    }
                }
            }
        }
        drop(read);
        drop(status_write);
        drop(network);
        let reap = |e: io::Error| {
            // SAFETY: signalling and reaping our own unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            Err(e)
        };
        let mut word = [0u8; 1];
        match io::Read::read(&mut std::fs::File::from(status_read), &mut word) {
            Ok(1) if word[0] == 0 => {}
            Ok(1) => {
                return reap(io::Error::other(format!(
                    "cannot enter the pod's network namespace: {}",
                    io::Error::from_raw_os_error(i32::from(word[0]))
                )))
            }
            Ok(_) => return reap(io::Error::other("the sandbox's process ended at its start")),
            Err(e) => return reap(e),
        }
        // SAFETY: pidfd_open takes a PID and flags; the child is ours and not yet reaped, so
        // the PID is its.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return reap(io::Error::last_os_error());
        }
        Ok(Pause {
            pid: pid as u32,
            host_network,
            // SAFETY: pidfd_open returned a new descriptor owned here alone.
            pidfd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            _alive: write,
        })
    }

    /// `/proc/PID/ns/net` of this process: the path containerd gives the pod's containers.
    pub(crate) fn netns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    /// Send `signal`; an error once the process has ended.
    pub(crate) fn signal(&self, signal: u32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a descriptor we own and no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Wait for the process to end: its exit status, 128 + the signal that killed it. The
    /// process is left a zombie (`WNOWAIT`) until [`Pause::reap`]: its PID cannot be reused
    /// while the sandbox exists, so the path `/proc/PID/ns/net` containerd gives the pod's
    /// containers never names another process's namespace (a zombie's cannot be opened).
    pub(crate) fn wait(pid: u32) -> u32 {
        loop {
            // SAFETY: siginfo_t is plain data; zero is a valid value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid on our own child, writing into `info`.
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if r == 0 {
                // SAFETY: waitid filled in a SIGCHLD siginfo, whose status is set.
                let status = unsafe { info.si_status() } as u32;
                return if info.si_code == libc::CLD_EXITED {
                    status
                } else {
                    128 + status
                };
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return 255;
            }
        }
    }

    /// Reap the process [`Pause::wait`] saw end (the sandbox is deleted). Idempotent.
    pub(crate) fn reap(pid: u32) {
        let mut status = 0;
        // SAFETY: waitpid on our own child without blocking.
        unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
    }
}

/// A pipe, both ends close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptors were just created and are owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_process_waits_until_signalled_and_reports_the_signal() {
        let p = Pause::spawn(PodNetwork::Host).expect("spawn");
        // It is alive and waiting.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(std::fs::metadata(format!("/proc/{}", p.pid)).is_ok());
        p.signal(libc::SIGTERM as u32).expect("signal");
        assert_eq!(Pause::wait(p.pid), 128 + libc::SIGTERM as u32);
        // Not reaped yet: its PID stays taken, and its namespace cannot be opened.
        assert!(std::fs::metadata(format!("/proc/{}", p.pid)).is_ok());
        assert!(std::fs::File::open(p.netns_path()).is_err());
        assert_eq!(Pause::wait(p.pid), 128 + libc::SIGTERM as u32);
        // Reaped: a signal now fails rather than reaching another process.
        Pause::reap(p.pid);
        assert!(std::fs::metadata(format!("/proc/{}", p.pid)).is_err());
        assert!(p.signal(libc::SIGKILL as u32).is_err());
    }

    /// The process is in the network it was given: the shim's, a new one, or one opened.
    #[test]
    fn the_pause_process_is_in_the_pods_network() {
        let ns = |pid: &str| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .expect("netns")
                .to_string_lossy()
                .into_owned()
        };
        let mine = ns("self");
        let host = Pause::spawn(PodNetwork::Host).expect("host");
        assert!(host.host_network);
        assert_eq!(ns(&host.pid.to_string()), mine);
        // A new namespace needs CAP_SYS_ADMIN: as root only.
        // SAFETY: geteuid takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let own = Pause::spawn(PodNetwork::Own).expect("own");
            assert!(!own.host_network);
            let theirs = ns(&own.pid.to_string());
            assert_ne!(theirs, mine);
            // Joined by path, as the pod's containers join the sandbox's.
            let file = std::fs::File::open(own.netns_path()).expect("open");
            let joined = Pause::spawn(PodNetwork::Join(file)).expect("join");
            assert_eq!(ns(&joined.pid.to_string()), theirs);
            for p in [own, joined] {
                p.signal(libc::SIGKILL as u32).expect("kill");
                Pause::wait(p.pid);
                Pause::reap(p.pid);
            }
        }
        // Not a namespace: the error says so, and no process is left.
        let file = std::fs::File::open("/proc/self/status").expect("file");
        let err = Pause::spawn(PodNetwork::Join(file)).err().expect("refused");
        assert!(
            err.to_string()
                .starts_with("cannot enter the pod's network namespace"),
            "{err}"
        );
        host.signal(libc::SIGKILL as u32).expect("kill");
        Pause::wait(host.pid);
        Pause::reap(host.pid);
    }

    #[test]
    fn the_pause_process_ends_when_its_shim_goes() {
        let p = Pause::spawn(PodNetwork::Host).expect("spawn");
        let pid = p.pid;
        // Dropping the handle closes the pipe's write end, as the shim's death would.
        drop(p);
        assert_eq!(Pause::wait(pid), 0);
        Pause::reap(pid);
    }
}
