//! The processes a task owns, known by PID and start time so a reused PID is never taken for
//! them.

use super::*;

pub(super) fn read_report(child: &mut Child) -> Option<MonitorReport> {
    let stdout = child.stdout.take()?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).ok()?;
    serde_json::from_str(line.trim()).ok()
}

/// A process's start time (clock ticks since boot), field 22 of `/proc/PID/stat`.
pub(super) fn start_time(pid: i32) -> Option<u64> {
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
pub(super) fn process_is(pid: i32, start: Option<u64>) -> bool {
    process_alive(pid) && start.is_none_or(|s| start_time(pid) == Some(s))
}

/// Send `sig` to `pid` if it is still the process that started at `start`. A pidfd is taken
/// before the check: it holds on to the process that had the PID then, which, if the check
/// passes, is the one that started at `start` (a process alive at the check was alive at the
/// open), so the PID cannot be reused between the check and the signal. Kernels without pidfds
/// (before 5.3) get the check and `kill`.
pub(super) fn signal_process(pid: i32, start: Option<u64>, sig: Signal) -> bool {
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

pub(super) fn process_alive(pid: i32) -> bool {
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
