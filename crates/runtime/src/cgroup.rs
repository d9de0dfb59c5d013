//! Tearing down what is left of a container whose monitor is gone: every process still in its
//! cgroups is killed, and the cgroups are removed, in every hierarchy (cgroup v1 controllers and
//! the v2 tree alike).

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Mount points of the cgroup hierarchies (v1 and v2) of this mount namespace.
fn hierarchies() -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let point = pre.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// The directories of `cgroup_path` (relative to each hierarchy's root, e.g. `/vouch/ID`).
fn dirs(cgroup_path: &str) -> Vec<PathBuf> {
    let rel = cgroup_path.trim_start_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Vec::new();
    }
    hierarchies()
        .into_iter()
        .map(|h| h.join(rel))
        .filter(|d| d.is_dir())
        .collect()
}

/// Whether a `/proc/PID/cgroup` text (`hierarchy:controllers:path` lines) puts the process in
/// the cgroup `rel` or below it in any hierarchy.
fn in_cgroup(proc_cgroup: &str, rel: &str) -> bool {
    proc_cgroup.lines().any(|l| {
        l.splitn(3, ':')
            .nth(2)
            .is_some_and(|p| p == rel || p.strip_prefix(rel).is_some_and(|r| r.starts_with('/')))
    })
}

/// Send SIGKILL to `pid` if it is still in the cgroup at `rel` or below it: a pidfd is taken
/// first, so that the check and the signal are about the same process.
fn kill_member(pid: i32, rel: &str) {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return;
    }
    // SAFETY: the descriptor was just returned to us and is owned by nothing else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let member =
        fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| in_cgroup(&c, rel));
    if member {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

/// Kill every process in the container's cgroups and remove them. Waits up to `timeout` for
/// the processes to be gone; what could not be removed is reported.
pub fn kill_and_remove(cgroup_path: &str, timeout: Duration) -> io::Result<()> {
    let rel = format!("/{}", cgroup_path.trim_start_matches('/'));
    let dirs = dirs(cgroup_path);
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = 0;
        for d in &dirs {
            // Children first: libcontainer puts the container's processes in the cgroup itself,
            // but a container could have made sub-cgroups where it was allowed to.
            for procs in walk_procs(d) {
                for pid in fs::read_to_string(&procs)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|p| p.trim().parse::<i32>().ok())
                {
                    left += 1;
                    kill_member(pid, &rel);
                }
            }
        }
        if left == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "{left} processes of cgroup {cgroup_path} did not die"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in &dirs {
        remove_tree(d)?;
    }
    Ok(())
}

/// The `cgroup.procs` files of `dir` and its sub-cgroups.
fn walk_procs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = vec![dir.join("cgroup.procs")];
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk_procs(&e.path()));
            }
        }
    }
    out
}

/// Remove a cgroup and its sub-cgroups (cgroup directories go with rmdir, deepest first).
fn remove_tree(dir: &std::path::Path) -> io::Result<()> {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_the_cgroup_and_below_it_only() {
        let rel = "/vouch/abc";
        assert!(in_cgroup("4:memory:/vouch/abc\n0::/", rel));
        assert!(in_cgroup("0::/vouch/abc/sub/deeper\n", rel));
        assert!(!in_cgroup("4:memory:/vouch/abcdef\n0::/vouch/ab", rel));
        assert!(!in_cgroup("4:memory:/other/vouch/abc\n", rel));
        assert!(!in_cgroup("", rel));
    }

    #[test]
    fn paths_that_are_not_a_container_cgroup_are_never_touched() {
        for bad in ["", "/", "/..", "/vouch/../..", "//x", "/vouch/./x"] {
            assert!(dirs(bad).is_empty(), "{bad}");
        }
        assert!(kill_and_remove("/vouch-test-does-not-exist/x", Duration::ZERO).is_ok());
    }
}
