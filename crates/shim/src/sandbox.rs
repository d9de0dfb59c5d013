//! A pod's sandbox: the CRI's pause container, which holds the pod's place (its namespaces,
//! for runc) while the pod lives. vouch's containers get their own hardened namespaces from
//! vouchd and do not join the sandbox's, so the pause image never runs: the shim forks a process
//! of its own that waits, with the pod's lifecycle (Start, Kill, Wait, Delete) as containerd
//! expects. It runs no code of the pod's, so nothing of it is measured; it ends when signalled,
//! and by itself if the shim dies (its pipe to the shim reads end-of-file).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The sandbox's waiting process.
pub(crate) struct Pause {
    pub(crate) pid: u32,
    /// Signals go through it: once the process is reaped, they fail instead of reaching a
    /// process that took its PID.
    pidfd: OwnedFd,
    /// The write end of the pipe the process reads: closed when the shim dies.
    _alive: OwnedFd,
}

impl Pause {
    /// Fork the waiting process.
    pub(crate) fn spawn() -> io::Result<Pause> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptors were just created and are owned here alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only makes async-signal-safe calls (sigprocmask, signal, prctl,
        // close, read, _exit) before it ends, as a fork of a multi-threaded process must.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: async-signal-safe calls on this process's own state only.
            unsafe {
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
        // SAFETY: pidfd_open takes a PID and flags; the child is ours and not yet reaped, so
        // the PID is its.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: signalling and reaping our own unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(e);
        }
        Ok(Pause {
            pid: pid as u32,
            // SAFETY: pidfd_open returned a new descriptor owned here alone.
            pidfd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            _alive: write,
        })
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

    /// Wait for the process to end: its exit status, 128 + the signal that killed it.
    pub(crate) fn wait(pid: u32) -> u32 {
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child, writing its status into `status`.
            let r = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
            if r == pid as i32 {
                break;
            }
            if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return 255;
            }
        }
        if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status) as u32
        } else {
            libc::WEXITSTATUS(status) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_process_waits_until_signalled_and_reports_the_signal() {
        let p = Pause::spawn().expect("spawn");
        // It is alive and waiting.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(std::fs::metadata(format!("/proc/{}", p.pid)).is_ok());
        p.signal(libc::SIGTERM as u32).expect("signal");
        assert_eq!(Pause::wait(p.pid), 128 + libc::SIGTERM as u32);
        // Reaped: a signal now fails rather than reaching another process.
        assert!(p.signal(libc::SIGKILL as u32).is_err());
    }

    #[test]
    fn the_pause_process_ends_when_its_shim_goes() {
        let p = Pause::spawn().expect("spawn");
        let pid = p.pid;
        // Dropping the handle closes the pipe's write end, as the shim's death would.
        drop(p);
        assert_eq!(Pause::wait(pid), 0);
    }
}
