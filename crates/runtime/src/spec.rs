//! The OCI runtime configuration vouch generates, and the digest that is measured for it.

use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("no command given and the image defines none")]
    NoCommand,
    #[error("invalid environment variable {0:?}: expected KEY=VALUE")]
    BadEnv(String),
    #[error("invalid user {0:?}: use NAME, UID, NAME:GROUP or UID:GID")]
    BadUser(String),
    #[error("id {0} is out of range: user and group ids go from 0 to 4294967294 (4294967295 is -1 to the kernel)")]
    BadId(String),
    #[error("the image's {file} entry for {name:?} has id {id}, which is out of range (0 to 4294967294)")]
    BadEntryId {
        file: String,
        name: String,
        id: String,
    },
    #[error("no user {0:?} in the image's /etc/passwd")]
    NoSuchUser(String),
    #[error("no group {0:?} in the image's /etc/group")]
    NoSuchGroup(String),
    #[error("invalid memory size {0:?}: use a number with an optional b, k, m or g suffix")]
    BadMemory(String),
    #[error("invalid CPU count {0:?}: use a positive number such as 0.5 or 2")]
    BadCpus(String),
    #[error("the memory limit must be at least 6 MiB")]
    MemoryTooSmall,
    #[error("unknown capability {0:?}: use a name such as NET_RAW or CAP_NET_RAW, or ALL")]
    BadCapability(String),
    #[error("invalid {what} path {path:?}: an absolute path without '..'")]
    BadPath { what: &'static str, path: String },
    #[error("cannot serialize the runtime config")]
    Serialize,
    #[error("cannot build the runtime spec: {0}")]
    Build(String),
    #[error("the runtime config is not an OCI runtime spec: {0}")]
    BadConfig(String),
    #[error("invalid volume {spec:?}: {reason}")]
    BadVolume { spec: String, reason: String },
}

/// A named volume mounted into the container: `NAME:/PATH[:ro|:rw][,shared]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    /// The volume's directory on the daemon's side.
    pub source: std::path::PathBuf,
    pub target: String,
    pub readonly: bool,
    /// Created on first use writable by every user (0777, root's), as kubelet makes a pod's
    /// emptyDir, for containers that run as different users; otherwise the container's user's.
    pub shared: bool,
}

/// A read-only copy of a host file or directory (`/HOST/PATH:/PATH:ro`), made by vouchd when
/// the container is created (see [`crate::copies`]): the host path is not in the spec, the
/// digest of what was copied is (the `io.vouch.copies` annotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyMount {
    /// The host file or directory copied.
    pub source: std::path::PathBuf,
    /// The copy, on the container's copies tmpfs.
    pub dir: std::path::PathBuf,
    pub target: String,
    /// `sha384:<hex>` of what was copied ([`crate::copies::Copied::digest`]).
    pub digest: String,
}

/// What `-v` asks for: a named volume, or a read-only copy of a host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeArg {
    Named {
        name: String,
        target: String,
        readonly: bool,
        shared: bool,
    },
    Copy {
        source: std::path::PathBuf,
        target: String,
    },
}

/// An absolute, normalized path other than `/`.
fn clean_absolute(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Parse `NAME:/PATH[:ro|:rw]` (a named volume) or `/HOST/PATH:/PATH:ro` (a read-only copy of
/// a host file or directory, measured by its content; a host path is never shared writable).
pub fn parse_volume_arg(spec: &str) -> Result<VolumeArg, SpecError> {
    let Some(source) = spec.split(':').next().filter(|s| s.starts_with('/')) else {
        let (name, target, readonly, shared) = parse_volume(spec)?;
        return Ok(VolumeArg::Named {
            name,
            target,
            readonly,
            shared,
        });
    };
    let bad = |reason: &str| SpecError::BadVolume {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let target = match parts.as_slice() {
        [_, t, "ro"] => *t,
        [_, _] | [_, _, "rw"] => {
            return Err(bad(
                "a host path is given to a container only read-only, as a copy measured by its content (add :ro), or use a named volume for data the container writes",
            ))
        }
        [_, _, o] => return Err(bad(&format!("option {o:?} is not ro or rw"))),
        _ => return Err(bad("expected /HOST/PATH:/PATH:ro")),
    };
    if !clean_absolute(source) {
        return Err(bad(
            "the host path must be absolute and normalized, and not /",
        ));
    }
    check_target(target).map_err(bad)?;
    Ok(VolumeArg::Copy {
        source: source.into(),
        target: target.to_string(),
    })
}

/// Why a container path may not take a volume or a copy, if it may not.
fn check_target(target: &str) -> Result<(), &'static str> {
    if !clean_absolute(target) {
        return Err("the container path must be absolute and normalized, and not /");
    }
    if RESERVED_TARGETS
        .iter()
        .any(|r| target == *r || target.starts_with(&format!("{r}/")))
    {
        return Err("the container path is reserved by the runtime");
    }
    Ok(())
}

/// Paths a volume may not cover: the runtime's own mounts and the secrets directory.
const RESERVED_TARGETS: &[&str] = &["/proc", "/sys", "/dev", crate::secrets::MOUNT_POINT];

/// Parse `NAME:/PATH[:ro|:rw]` into (name, target, read-only).
pub fn parse_volume(spec: &str) -> Result<(String, String, bool, bool), SpecError> {
    let bad = |reason: &str| SpecError::BadVolume {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (name, target, options) = match parts.as_slice() {
        [n, t] => (*n, *t, None),
        [n, t, o] => (*n, *t, Some(*o)),
        _ => return Err(bad("expected NAME:/PATH[:ro|:rw]")),
    };
    let (mut readonly, mut mode, mut shared) = (false, false, false);
    for o in options.into_iter().flat_map(|o| o.split(',')) {
        match o {
            "ro" | "rw" if !mode => {
                (readonly, mode) = (o == "ro", true);
            }
            "shared" if !shared => shared = true,
            _ => return Err(bad(&format!("option {o:?} is not ro or rw (or shared)"))),
        }
    }
    if name.starts_with('/') || name.starts_with('.') {
        return Err(bad(
            "a host path is given to a container only read-only, as a copy measured by its content: an absolute /HOST/PATH:/PATH:ro",
        ));
    }
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !name_ok {
        return Err(bad(
            "the name must be letters, digits, '_', '.', '-', starting with a letter or digit",
        ));
    }
    check_target(target).map_err(bad)?;
    Ok((name.to_string(), target.to_string(), readonly, shared))
}

/// Resource limits, as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    pub pids_limit: Option<i64>,
    /// CPU quota in microseconds per 100 ms period.
    pub cpu_quota: Option<i64>,
}

/// A network namespace a container joins instead of one of its own, checked by vouchd.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedNetwork {
    /// Where the runtime opens it: the spec's namespace path (host-local, projected as
    /// `$JOINED`).
    pub path: std::path::PathBuf,
    /// What it is, measured as the `io.vouch.network` annotation: `container:ID` (the
    /// container whose own namespace it is) or `ns` (one vouchd did not make, such as a pod's).
    pub label: String,
    /// Its identity when vouchd checked it: the monitor starts the container in no other.
    pub id: crate::net::NamespaceId,
}

/// Everything needed to write a container's `config.json`.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub id: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the groups of the image's `/etc/group` that list the user).
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    /// The hostname was chosen for the workload (not the id's default): measured as the
    /// `io.vouch.hostname` annotation (the spec's `hostname` is projected away).
    pub hostname_measured: bool,
    pub host_network: bool,
    /// The network namespace joined instead of one of the container's own.
    pub joined_network: Option<JoinedNetwork>,
    pub resources: Resources,
    pub cgroup_parent: String,
    /// Secret references (`kbs://...`) delivered at `/secret`.
    pub secrets: Vec<String>,
    /// The host directory holding the secrets tmpfs, bind-mounted read-only at `/secret`.
    pub secrets_dir: Option<std::path::PathBuf>,
    pub volumes: Vec<Volume>,
    /// Read-only copies of host files and directories.
    pub copies: Vec<CopyMount>,
    /// Kernel parameters of the container's own namespaces (`linux.sysctl`), checked by vouchd.
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// A seccomp profile added to vouch's own (`--security-opt seccomp=FILE`, a pod's
    /// localhost or runtime/default profile): both filters apply, so it can only take
    /// syscalls away. Measured as the `io.vouch.seccomp` annotation; loaded right before the
    /// program, of the container's first process and of every exec'd one.
    pub seccomp_extra: Option<typed::LinuxSeccomp>,
    /// Published ports, relayed into the private network namespace by the monitor.
    pub publish: Vec<crate::net::PortMapping>,
    /// A terminal for the process (`process.terminal`): libcontainer makes a pty in the
    /// container's devpts and hands its master to the monitor.
    pub terminal: bool,
    /// The process's stdin stays open, fed through vouchd (docker's `-i`); measured as the
    /// annotation `io.vouch.stdin: open`.
    pub stdin: bool,
    /// The root filesystem mounted read-only (`root.readonly`).
    pub readonly_rootfs: bool,
    /// Capabilities removed from [`DEFAULT_CAPS`] (as `CAP_NAME`; `ALL` for every one).
    pub cap_drop: Vec<String>,
    /// Paths masked or made read-only beyond vouch's own.
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// The container's `/etc/resolv.conf`: the host file bound read-only over the image's, and
    /// its text, measured as the `io.vouch.resolv-conf` annotation.
    pub resolv_conf: Option<(std::path::PathBuf, String)>,
}

/// Docker's default capability set.
pub(crate) use vouch_base::DEFAULT_CAPS;

/// System calls the default seccomp profile never allows: the ones Docker's default profile
/// leaves out because they reach kernel-global state, load code into the kernel, or escape
/// namespaces (Docker allows some of them only with capabilities vouch never grants). Like
/// everything not in [`ALLOWED_SYSCALLS`], they fail with EPERM.
#[cfg(test)]
pub(crate) const BLOCKED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
];

/// System calls the default profile allows unconditionally (x86-64 names; names the kernel or
/// libseccomp does not know are skipped). Anything else is refused with EPERM, as in
/// Docker's default profile, so a system call added to the kernel later is refused until it is
/// reviewed. Besides these: `clone` without namespace flags, `clone3` answered with ENOSYS (so
/// that C libraries fall back to `clone`, whose flags a filter can see), `personality` with the
/// values Docker allows, and `socket` for every family but `AF_VSOCK` (which reaches the host of a
/// confidential VM).
pub(crate) const ALLOWED_SYSCALLS: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chroot",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_waitv",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "migrate_pages",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "modify_ldt",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_madvise",
    "process_mrelease",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// `clone(2)` flags that create namespaces: CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS,
/// CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET.
pub(crate) const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `personality(2)` values Docker's default profile allows: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26 | PER_LINUX32, and the query 0xffffffff.
pub(crate) const PERSONALITY_VALUES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `AF_VSOCK`: sockets to the hypervisor host.
const AF_VSOCK: u64 = 40;

pub(crate) const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub(crate) const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Combine image defaults with user overrides the way docker does.
pub fn resolve_command(
    entrypoint: &[String],
    image_cmd: &[String],
    user_cmd: &[String],
) -> Result<Vec<String>, SpecError> {
    let mut args = entrypoint.to_vec();
    if user_cmd.is_empty() {
        args.extend_from_slice(image_cmd);
    } else {
        args.extend_from_slice(user_cmd);
    }
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// Image environment overlaid with the user's; later keys win. PATH is set if nothing sets it.
pub fn merge_env(image_env: &[String], user_env: &[String]) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for e in image_env.iter().chain(user_env.iter()) {
        let (k, _) = e
            .split_once('=')
            .ok_or_else(|| SpecError::BadEnv(e.clone()))?;
        if k.is_empty() || k.contains('\0') {
            return Err(SpecError::BadEnv(e.clone()));
        }
        out.retain(|x| x.split_once('=').map(|(xk, _)| xk) != Some(k));
        out.push(e.clone());
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    Ok(out)
}

/// A numeric uid or gid: ASCII digits only. `None` when `s` is not a number (a name, then);
/// an error when it is one the kernel cannot take as an id: `u32::MAX` is `(uid_t)-1`, which
/// set*id calls read as "leave unchanged" (a container meant to run as 4294967295 would keep
/// running as root), and anything larger does not fit.
pub fn numeric_id(s: &str) -> Option<Result<u32, SpecError>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        s.parse::<u32>()
            .ok()
            .filter(|id| *id != u32::MAX)
            .ok_or_else(|| SpecError::BadId(s.to_string())),
    )
}

/// The id field of an image's `/etc/passwd` or `/etc/group` entry for `name` (a number, as
/// [`account_entry`] only returns such entries), refused when out of range.
fn entry_id(field: &str, file: &str, name: &str) -> Result<u32, SpecError> {
    match numeric_id(field) {
        Some(Ok(id)) => Ok(id),
        _ => Err(SpecError::BadEntryId {
            file: file.to_string(),
            name: name.to_string(),
            id: field.to_string(),
        }),
    }
}

/// Parse `UID`, `UID:GID` or `root`.
pub(crate) fn parse_user(user: &str) -> Result<(u32, u32), SpecError> {
    let bad = || SpecError::BadUser(user.to_string());
    let id = |s: &str| match s {
        "root" => Ok(0),
        _ => numeric_id(s).ok_or_else(bad)?,
    };
    match user {
        "" => Ok((0, 0)),
        _ => {
            let (u, g) = match user.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (user, None),
            };
            let uid = id(u)?;
            let gid = match g {
                Some(g) => id(g)?,
                None => uid,
            };
            Ok((uid, gid))
        }
    }
}

/// Whether a `--user` value names a user or group that must be looked up in the image.
pub fn user_needs_lookup(user: &str) -> bool {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let named = |s: &str| !s.is_empty() && s != "root" && numeric_id(s).is_none();
    named(u) || named(g)
}

/// A container's user: what `--user` resolves to in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// The entry for `name` in an account file (`name:x:id:...`): its id field and the field after
/// it (the primary gid in `/etc/passwd`, the members in `/etc/group`). A line whose id is not a
/// number is not an entry.
fn account_entry<'a>(text: Option<&'a str>, name: &str) -> Option<(&'a str, Option<&'a str>)> {
    text?.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3 && f[0] == name && numeric_id(f[2]).is_some())
            .then(|| (f[2], f.get(3).copied()))
    })
}

/// Resolve `NAME`, `UID`, `NAME:GROUP`, `UID:GID` (any mix) as docker does, with the image's
/// `/etc/passwd` and `/etc/group` texts: a user name gives its UID and, unless a group is
/// given, its primary GID and, as supplementary groups, every group that lists the name as a
/// member; a numeric UID without a group keeps the GID of the same number. Every id, from the
/// flag or from the image, must be one the kernel takes as an id ([`numeric_id`]).
pub fn resolve_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    if !user_needs_lookup(user) {
        let (uid, gid) = parse_user(user)?;
        return Ok(ResolvedUser {
            uid,
            gid,
            additional_gids: Vec::new(),
        });
    }
    let bad = || SpecError::BadUser(user.to_string());
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 256
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'))
    };
    let (uid, primary) = match numeric_id(u) {
        Some(n) => (n?, None),
        None if u == "root" => (0, Some(0)),
        None if valid_name(u) => {
            let (id, gid) =
                account_entry(passwd, u).ok_or_else(|| SpecError::NoSuchUser(u.into()))?;
            let primary = match gid {
                Some(g) if numeric_id(g).is_some() => Some(entry_id(g, "/etc/passwd", u)?),
                _ => None,
            };
            (entry_id(id, "/etc/passwd", u)?, primary)
        }
        None => return Err(bad()),
    };
    let gid = match g {
        None => primary.unwrap_or(uid),
        Some("root") => 0,
        Some(g) => match numeric_id(g) {
            Some(n) => n?,
            None if valid_name(g) => {
                let (id, _) =
                    account_entry(group, g).ok_or_else(|| SpecError::NoSuchGroup(g.into()))?;
                entry_id(id, "/etc/group", g)?
            }
            None => return Err(bad()),
        },
    };
    // Supplementary groups only in the implicit form, for a user known by name (as runc does).
    let mut additional_gids = Vec::new();
    if g.is_none() && numeric_id(u).is_none() && u != "root" {
        for line in group.unwrap_or_default().lines() {
            let f: Vec<&str> = line.split(':').collect();
            let member = f.len() >= 4 && f[3].split(',').any(|m| m.trim() == u);
            if !member || numeric_id(f[2]).is_none() {
                continue;
            }
            let id = entry_id(f[2], "/etc/group", f[0])?;
            if !additional_gids.contains(&id) {
                additional_gids.push(id);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// Resolve docker's `--group-add` values (group names from the image's `/etc/group`, or GIDs)
/// and append them to `gids`, each once.
pub fn add_groups(
    gids: &mut Vec<u32>,
    add: &[String],
    group: Option<&str>,
) -> Result<(), SpecError> {
    for g in add {
        let gid = match numeric_id(g) {
            Some(n) => n?,
            None if g == "root" => 0,
            None => {
                let (id, _) =
                    account_entry(group, g).ok_or_else(|| SpecError::NoSuchGroup(g.clone()))?;
                entry_id(id, "/etc/group", g)?
            }
        };
        if !gids.contains(&gid) {
            gids.push(gid);
        }
    }
    Ok(())
}

/// Capabilities to drop (docker's `--cap-drop`): each as `CAP_NAME`, or `ALL` alone.
pub fn parse_cap_drop(items: &[String]) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let upper = item.trim().to_ascii_uppercase();
        if upper == "ALL" {
            return Ok(vec!["ALL".into()]);
        }
        let name = upper.trim_start_matches("CAP_");
        name.parse::<oci_spec::runtime::Capability>()
            .map_err(|_| SpecError::BadCapability(item.clone()))?;
        let full = format!("CAP_{name}");
        if !out.contains(&full) {
            out.push(full);
        }
    }
    Ok(out)
}

/// A path to mask or make read-only in the container: absolute, no `..`.
pub fn check_container_path(what: &'static str, path: &str) -> Result<(), SpecError> {
    if !path.starts_with('/') || path.contains('\0') || path.split('/').any(|c| c == "..") {
        return Err(SpecError::BadPath {
            what,
            path: path.to_string(),
        });
    }
    Ok(())
}

/// Parse `512m`, `1g`, `1048576`, as docker's `--memory`.
pub fn parse_memory(s: &str) -> Result<u64, SpecError> {
    let bad = || SpecError::BadMemory(s.to_string());
    let lower = s.trim().to_ascii_lowercase();
    let (num, mult) = match lower.trim_end_matches('b').chars().last() {
        Some('k') => (&lower[..lower.find('k').ok_or_else(bad)?], 1u64 << 10),
        Some('m') => (&lower[..lower.find('m').ok_or_else(bad)?], 1 << 20),
        Some('g') => (&lower[..lower.find('g').ok_or_else(bad)?], 1 << 30),
        _ => (lower.trim_end_matches('b'), 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes < 6 << 20 {
        return Err(SpecError::MemoryTooSmall);
    }
    Ok(bytes)
}

/// Parse `--cpus 1.5` into a CFS quota per 100 ms period.
pub fn parse_cpus(s: &str) -> Result<i64, SpecError> {
    let v: f64 = s.parse().map_err(|_| SpecError::BadCpus(s.to_string()))?;
    if !(v.is_finite() && v > 0.0 && v <= 1024.0) {
        return Err(SpecError::BadCpus(s.to_string()));
    }
    Ok(((v * 100_000.0).round() as i64).max(1000))
}

/// The spec as libcontainer must be given it.
///
/// libcontainer 0.7 reads the operands of `SCMP_CMP_MASKED_EQ` the other way round from the OCI
/// runtime spec and runc: it takes `valueTwo` as the mask and `value` as the datum, where the
/// spec (and every profile written for runc or Docker) means `(arg & value) == valueTwo`. Given
/// as written, Docker's rule "clone only without namespace flags" becomes "clone always". This
/// swaps the two operands of every such comparison, which makes libcontainer enforce what the
/// spec says; it is the only difference between the measured spec and the file handed to
/// libcontainer. The test `seccomp_refuses_new_namespaces_from_inside_a_container` checks the
/// result from inside a container. Any spec goes through it, whoever built it.
pub(crate) fn for_libcontainer(mut spec: typed::Spec) -> Result<typed::Spec, SpecError> {
    let Some(linux) = spec.linux_mut().as_mut() else {
        return Ok(spec);
    };
    let Some(seccomp) = linux.seccomp().clone() else {
        return Ok(spec);
    };
    linux.set_seccomp(Some(seccomp_for_libcontainer(seccomp)?));
    Ok(spec)
}

/// A seccomp profile with the operands of its `SCMP_CMP_MASKED_EQ` comparisons swapped for
/// libcontainer (see [`for_libcontainer`]).
pub(crate) fn seccomp_for_libcontainer(
    mut seccomp: typed::LinuxSeccomp,
) -> Result<typed::LinuxSeccomp, SpecError> {
    if let Some(rules) = seccomp.syscalls().clone() {
        let rules = rules
            .into_iter()
            .map(|mut rule| {
                if let Some(args) = rule.args().clone() {
                    let args = args
                        .into_iter()
                        .map(swap_masked)
                        .collect::<Result<_, _>>()?;
                    rule.set_args(Some(args));
                }
                Ok(rule)
            })
            .collect::<Result<_, SpecError>>()?;
        seccomp.set_syscalls(Some(rules));
    }
    Ok(seccomp)
}

/// A `SCMP_CMP_MASKED_EQ` comparison with its operands swapped; any other as it is.
fn swap_masked(a: typed::LinuxSeccompArg) -> Result<typed::LinuxSeccompArg, SpecError> {
    if a.op() != typed::LinuxSeccompOperator::ScmpCmpMaskedEq {
        return Ok(a);
    }
    typed::LinuxSeccompArgBuilder::default()
        .index(a.index())
        .value(a.value_two().unwrap_or(0))
        .value_two(a.value())
        .op(a.op())
        .build()
        .map_err(oci_err)
}

/// Owned copies of a list of names.
fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// vouch's own paths, then each of `more` not among them.
fn with_more(own: &[&str], more: &[String]) -> Vec<String> {
    let mut out = strings(own);
    for m in more {
        if !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

/// Typed pieces of the runtime spec.
mod typed {
    pub use oci_spec::runtime::{
        Arch, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
        LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
        LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
        LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator,
        LinuxSyscall, LinuxSyscallBuilder, Mount, MountBuilder, PosixRlimitBuilder,
        PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
    };
}

pub use typed::Spec;

fn oci_err(e: oci_spec::OciSpecError) -> SpecError {
    SpecError::Build(e.to_string())
}

/// The default seccomp profile, typed.
pub fn seccomp() -> Result<typed::LinuxSeccomp, SpecError> {
    use typed::*;
    let rule = |names: &[&str], action: LinuxSeccompAction| {
        LinuxSyscallBuilder::default()
            .names(strings(names))
            .action(action)
    };
    let arg = |index: usize, value: u64, op: LinuxSeccompOperator| {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .value(value)
            .op(op)
    };
    let mut syscalls: Vec<LinuxSyscall> = vec![
        rule(ALLOWED_SYSCALLS, LinuxSeccompAction::ScmpActAllow)
            .build()
            .map_err(oci_err)?,
        // clone is allowed only when (flags & CLONE_NAMESPACE_FLAGS) == 0.
        rule(&["clone"], LinuxSeccompAction::ScmpActAllow)
            .args(vec![arg(
                0,
                CLONE_NAMESPACE_FLAGS,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
            )
            .value_two(0u64)
            .build()
            .map_err(oci_err)?])
            .build()
            .map_err(oci_err)?,
        // Its flags are in memory a filter cannot read: ENOSYS, so callers use clone.
        rule(&["clone3"], LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::ENOSYS as u32)
            .build()
            .map_err(oci_err)?,
        rule(&["socket"], LinuxSeccompAction::ScmpActAllow)
            .args(vec![arg(0, AF_VSOCK, LinuxSeccompOperator::ScmpCmpNe)
                .build()
                .map_err(oci_err)?])
            .build()
            .map_err(oci_err)?,
    ];
    for v in PERSONALITY_VALUES {
        syscalls.push(
            rule(&["personality"], LinuxSeccompAction::ScmpActAllow)
                .args(vec![arg(0, *v, LinuxSeccompOperator::ScmpCmpEq)
                    .build()
                    .map_err(oci_err)?])
                .build()
                .map_err(oci_err)?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        // 64-bit system calls only: a call through the i386 or x32 entry points matches no
        // architecture of the filter and kills the caller (libseccomp's bad-architecture
        // action). The compat surface is gone, and the filter is about a tenth as costly to
        // build at each start as one that also covers i386.
        .architectures(vec![Arch::ScmpArchX86_64])
        .syscalls(syscalls)
        .build()
        .map_err(oci_err)
}

fn mount(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<typed::Mount, SpecError> {
    typed::MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(strings(options))
        .build()
        .map_err(oci_err)
}

/// The mounts every container gets, before volumes and secrets.
fn base_mounts() -> Result<Vec<typed::Mount>, SpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ])
}

/// Annotation naming the secret references a container was started with (a JSON array): they
/// are delivered by vouchd, not by the runtime, and are measured with the spec.
pub(crate) const SECRETS_ANNOTATION: &str = "io.vouch.secrets";
/// Annotation naming the published ports (a JSON array of `IP:HOST->CONTAINER/tcp`): relayed
/// by the monitor, measured with the spec.
pub(crate) const PORTS_ANNOTATION: &str = "io.vouch.ports";
/// Annotation present (`open`) when the container's process takes input through vouchd: who
/// may write to it is part of what runs, so it is measured with the spec.
pub(crate) const STDIN_ANNOTATION: &str = "io.vouch.stdin";
/// Annotation naming the network namespace a container joined (`container:ID` or `ns`): the
/// namespace's path is host-local and projected away, what it is stays measured.
pub(crate) const NETWORK_ANNOTATION: &str = "io.vouch.network";
/// Annotation holding a hostname chosen for the workload (`--hostname`, a pod's): the spec's
/// own `hostname` is host-local and projected away, a chosen one is what the workload sees.
pub(crate) const HOSTNAME_ANNOTATION: &str = "io.vouch.hostname";
/// Annotation holding the text of the container's `/etc/resolv.conf` when vouchd gives it one
/// (the file is bound from the state directory; what it says is measured here).
pub(crate) const RESOLV_CONF_ANNOTATION: &str = "io.vouch.resolv-conf";
/// Annotation holding the digest of each read-only copy of a host path (a JSON object, the
/// container path to `sha384:<hex>`): the copy's place on the host is projected away, what was
/// copied is measured.
pub(crate) const COPIES_ANNOTATION: &str = "io.vouch.copies";
/// Annotation holding a seccomp profile added to vouch's own filter (its JSON): measured with
/// the spec, loaded by vouch's executor (see [`added_seccomp`]).
pub const SECCOMP_ANNOTATION: &str = "io.vouch.seccomp";

/// A seccomp profile added to vouch's own filter.
pub type AddedSeccomp = typed::LinuxSeccomp;

/// Check a seccomp profile given to be added to vouch's own: an OCI `LinuxSeccomp`. Added, it
/// can only refuse more (the kernel applies every filter and the strictest action wins), so
/// what is refused is only what would weaken something else or cannot work: a user-space
/// notifier (no listener is given one), and `SECCOMP_FILTER_FLAG_SPEC_ALLOW` (it turns off the
/// speculative store bypass mitigation).
pub fn check_added_seccomp(value: &serde_json::Value) -> Result<typed::LinuxSeccomp, String> {
    let profile: typed::LinuxSeccomp = serde_json::from_value(value.clone())
        .map_err(|e| format!("the seccomp profile is not an OCI seccomp profile: {e}"))?;
    if profile.listener_path().is_some() || profile.listener_metadata().is_some() {
        return Err(
            "the seccomp profile names a listener: vouch runs no user-space notifier".into(),
        );
    }
    let notify = profile.default_action() == typed::LinuxSeccompAction::ScmpActNotify
        || profile
            .syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == typed::LinuxSeccompAction::ScmpActNotify);
    if notify {
        return Err(
            "the seccomp profile uses SCMP_ACT_NOTIFY: vouch runs no user-space notifier".into(),
        );
    }
    if profile
        .flags()
        .iter()
        .flatten()
        .any(|f| *f == typed::LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow)
    {
        return Err("the seccomp profile asks for SECCOMP_FILTER_FLAG_SPEC_ALLOW, which turns off a speculative-execution mitigation".into());
    }
    Ok(profile)
}

/// The seccomp profile a container's spec adds to vouch's filter, as libcontainer must be
/// given it to load (see [`for_libcontainer`]); none if the spec adds none.
pub fn added_seccomp(spec: &typed::Spec) -> Result<Option<typed::LinuxSeccomp>, String> {
    let Some(text) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(SECCOMP_ANNOTATION))
    else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("the added seccomp profile is not JSON: {e}"))?;
    let profile = check_added_seccomp(&value)?;
    seccomp_for_libcontainer(profile)
        .map(Some)
        .map_err(|e| e.to_string())
}

impl ContainerSpec {
    fn namespaces(&self) -> Vec<typed::LinuxNamespaceType> {
        use typed::LinuxNamespaceType as T;
        let mut ns = vec![T::Pid, T::Ipc, T::Uts, T::Mount];
        if !self.host_network {
            ns.push(T::Network);
        }
        ns
    }

    /// The OCI runtime spec of this container: the one value that is both measured (through
    /// [`crate::projection`]) and handed to the runtime (through [`for_libcontainer`]).
    pub fn to_spec(&self) -> Result<typed::Spec, SpecError> {
        use typed::*;
        let drop_all = self.cap_drop.iter().any(|c| c == "ALL");
        let caps: std::collections::HashSet<Capability> = DEFAULT_CAPS
            .iter()
            .filter(|c| !drop_all && !self.cap_drop.iter().any(|d| d == *c))
            .map(|c| {
                c.trim_start_matches("CAP_")
                    .parse::<Capability>()
                    .map_err(|e| SpecError::Build(format!("{c}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let user = UserBuilder::default()
            .uid(self.uid)
            .gid(self.gid)
            .additional_gids(self.additional_gids.clone())
            .umask(0o022u32)
            .build()
            .map_err(oci_err)?;
        let mut process = ProcessBuilder::default()
            .terminal(self.terminal)
            .user(user)
            .args(self.args.clone())
            .env(self.env.clone())
            .cwd(if self.cwd.is_empty() {
                "/"
            } else {
                self.cwd.as_str()
            })
            .capabilities({
                let mut c = LinuxCapabilitiesBuilder::default()
                    .bounding(caps.clone())
                    .effective(caps.clone())
                    .permitted(caps)
                    .build()
                    .map_err(oci_err)?;
                // Not inherited across exec, no ambient set (the builder's defaults have some).
                c.set_inheritable(None);
                c.set_ambient(None);
                c
            })
            .rlimits(vec![PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(1024u64)
                .soft(1024u64)
                .build()
                .map_err(oci_err)?])
            .no_new_privileges(true)
            .build()
            .map_err(oci_err)?;
        process.set_console_size(None);
        let mut resources =
            LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .map_err(oci_err)?]);
        if let Some(m) = self.resources.memory_bytes {
            let limit = i64::try_from(m).map_err(|_| SpecError::BadMemory(m.to_string()))?;
            resources = resources.memory(
                LinuxMemoryBuilder::default()
                    .limit(limit)
                    .build()
                    .map_err(oci_err)?,
            );
        }
        if let Some(p) = self.resources.pids_limit {
            resources = resources.pids(
                LinuxPidsBuilder::default()
                    .limit(p)
                    .build()
                    .map_err(oci_err)?,
            );
        }
        if let Some(q) = self.resources.cpu_quota {
            resources = resources.cpu(
                LinuxCpuBuilder::default()
                    .quota(q)
                    .period(100_000u64)
                    .build()
                    .map_err(oci_err)?,
            );
        }
        let mut namespaces = Vec::new();
        for typ in self.namespaces() {
            let mut ns = LinuxNamespaceBuilder::default().typ(typ);
            if let (LinuxNamespaceType::Network, Some(joined)) = (typ, &self.joined_network) {
                ns = ns.path(joined.path.clone());
            }
            namespaces.push(ns.build().map_err(oci_err)?);
        }
        let mut mounts = base_mounts()?;
        for v in &self.volumes {
            let source = v.source.to_string_lossy();
            mounts.push(mount(
                &v.target,
                "bind",
                &source,
                &[
                    "rbind",
                    "nosuid",
                    "nodev",
                    if v.readonly { "ro" } else { "rw" },
                ],
            )?);
        }
        for c in &self.copies {
            mounts.push(mount(
                &c.target,
                "bind",
                &c.dir.to_string_lossy(),
                &["rbind", "ro", "nosuid", "nodev"],
            )?);
        }
        if let Some((file, _)) = &self.resolv_conf {
            mounts.push(mount(
                "/etc/resolv.conf",
                "bind",
                &file.to_string_lossy(),
                &["bind", "ro", "nosuid", "nodev", "noexec"],
            )?);
        }
        if let Some(dir) = &self.secrets_dir {
            mounts.push(mount(
                crate::secrets::MOUNT_POINT,
                "bind",
                &dir.to_string_lossy(),
                &["rbind", "ro", "nosuid", "nodev", "noexec"],
            )?);
        }
        let linux = LinuxBuilder::default()
            .cgroups_path(format!("{}/{}", self.cgroup_parent, self.id))
            .resources(resources.build().map_err(oci_err)?)
            .namespaces(namespaces)
            .masked_paths(with_more(MASKED_PATHS, &self.masked_paths))
            .readonly_paths(with_more(READONLY_PATHS, &self.readonly_paths))
            .seccomp(seccomp()?);
        let linux = if self.sysctls.is_empty() {
            linux
        } else {
            linux.sysctl(
                self.sysctls
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<std::collections::HashMap<_, _>>(),
            )
        }
        .build()
        .map_err(oci_err)?;
        let mut annotations = std::collections::HashMap::new();
        if !self.secrets.is_empty() {
            annotations.insert(
                SECRETS_ANNOTATION.to_string(),
                json!(self.secrets).to_string(),
            );
        }
        if !self.publish.is_empty() {
            let ports: Vec<String> = self.publish.iter().map(ToString::to_string).collect();
            annotations.insert(PORTS_ANNOTATION.to_string(), json!(ports).to_string());
        }
        if self.stdin {
            annotations.insert(STDIN_ANNOTATION.to_string(), "open".to_string());
        }
        if let Some(joined) = &self.joined_network {
            annotations.insert(NETWORK_ANNOTATION.to_string(), joined.label.clone());
        }
        if let Some((_, text)) = &self.resolv_conf {
            annotations.insert(RESOLV_CONF_ANNOTATION.to_string(), text.clone());
        }
        if let Some(profile) = &self.seccomp_extra {
            annotations.insert(
                SECCOMP_ANNOTATION.to_string(),
                serde_json::to_string(profile).map_err(|_| SpecError::Serialize)?,
            );
        }
        if !self.copies.is_empty() {
            let digests: std::collections::BTreeMap<&str, &str> = self
                .copies
                .iter()
                .map(|c| (c.target.as_str(), c.digest.as_str()))
                .collect();
            annotations.insert(COPIES_ANNOTATION.to_string(), json!(digests).to_string());
        }
        if self.hostname_measured {
            annotations.insert(HOSTNAME_ANNOTATION.to_string(), self.hostname.clone());
        }
        let mut spec = SpecBuilder::default()
            .version("1.0.2")
            .process(process)
            .root(
                RootBuilder::default()
                    .path("rootfs")
                    .readonly(self.readonly_rootfs)
                    .build()
                    .map_err(oci_err)?,
            )
            .hostname(self.hostname.clone())
            .mounts(mounts)
            .linux(linux)
            .build()
            .map_err(oci_err)?;
        spec.set_annotations((!annotations.is_empty()).then_some(annotations));
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only MASKED_EQ operands are swapped for libcontainer, every one of them, and nothing else.
    #[test]
    fn libcontainer_gets_masked_comparisons_swapped_and_nothing_else() {
        let spec = ContainerSpec {
            args: vec!["true".into()],
            ..Default::default()
        }
        .to_spec()
        .expect("spec");
        let handed = for_libcontainer(spec.clone()).expect("swap");
        let rules = |s: &Spec| {
            serde_json::to_value(s).expect("json")["linux"]["seccomp"]["syscalls"].clone()
        };
        let clone_rule = |s: &Spec| {
            rules(s)
                .as_array()
                .expect("rules")
                .iter()
                .find(|r| r["names"] == json!(["clone"]))
                .expect("clone rule")["args"][0]
                .clone()
        };
        assert_eq!(
            clone_rule(&spec),
            json!({"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"})
        );
        assert_eq!(
            clone_rule(&handed),
            json!({"index": 0, "value": 0, "valueTwo": CLONE_NAMESPACE_FLAGS, "op": "SCMP_CMP_MASKED_EQ"})
        );
        // Swapping twice gives the spec back; the other rules are untouched.
        assert_eq!(for_libcontainer(handed.clone()).expect("swap"), spec);
        let others = |s: &Spec| {
            rules(s)
                .as_array()
                .expect("rules")
                .iter()
                .filter(|r| r["names"] != json!(["clone"]))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(others(&handed), others(&spec));
        let mut a = serde_json::to_value(&handed).expect("json");
        let mut b = serde_json::to_value(&spec).expect("json");
        a["linux"]["seccomp"]["syscalls"] = json!([]);
        b["linux"]["seccomp"]["syscalls"] = json!([]);
        assert_eq!(a, b);
        // A masked comparison without valueTwo means datum 0.
        let custom: Spec =
            serde_json::from_value(json!({"ociVersion": "1.0.2", "linux": {"seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 1, "value": 8, "op": "SCMP_CMP_MASKED_EQ"},
                    {"index": 2, "value": 8, "op": "SCMP_CMP_EQ"}
                ]}]
            }}}))
            .expect("spec");
        assert_eq!(
            rules(&for_libcontainer(custom).expect("swap"))[0]["args"],
            json!([{"index": 1, "value": 0, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}, {"index": 2, "value": 8, "op": "SCMP_CMP_EQ"}])
        );
    }

    /// The complete profile is in the spec: nothing is both allowed outright and blocked or
    /// conditional, and the 32-bit interfaces are not architectures of the filter.
    #[test]
    fn the_seccomp_profile_is_complete_and_consistent() {
        let spec = ContainerSpec::default().to_spec().expect("spec");
        let v = serde_json::to_value(&spec).expect("json");
        let profile = &v["linux"]["seccomp"];
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], libc::EPERM);
        assert_eq!(profile["architectures"], json!(["SCMP_ARCH_X86_64"]));
        assert_eq!(profile["syscalls"][0]["names"], json!(ALLOWED_SYSCALLS));
        for name in ALLOWED_SYSCALLS {
            assert!(!BLOCKED_SYSCALLS.contains(name), "{name}");
            assert!(
                !["clone", "clone3", "personality", "socket", "socketcall"].contains(name),
                "{name}"
            );
        }
    }

    /// An added profile is measured as given and loaded as libcontainer reads it: a masked
    /// comparison's operands swapped, as in vouch's own filter.
    #[test]
    fn an_added_seccomp_profile_is_measured_as_given_and_loaded_as_libcontainer_reads_it() {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["clone"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 0x10000000u64, "valueTwo": 0x10000000u64, "op": "SCMP_CMP_MASKED_EQ"}]}],
        });
        let spec = ContainerSpec {
            args: vec!["true".into()],
            seccomp_extra: Some(check_added_seccomp(&profile).expect("profile")),
            ..Default::default()
        }
        .to_spec()
        .expect("spec");
        let text = &spec.annotations().as_ref().expect("annotations")[SECCOMP_ANNOTATION];
        let measured: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(measured["syscalls"][0]["args"][0]["value"], 0x10000000u64);
        assert_eq!(
            measured["syscalls"][0]["args"][0]["valueTwo"],
            0x10000000u64
        );
        let mut asymmetric = profile.clone();
        asymmetric["syscalls"][0]["args"][0]["valueTwo"] = json!(0);
        let spec = ContainerSpec {
            args: vec!["true".into()],
            seccomp_extra: Some(check_added_seccomp(&asymmetric).expect("profile")),
            ..Default::default()
        }
        .to_spec()
        .expect("spec");
        let loaded = added_seccomp(&spec).expect("added").expect("some");
        let arg = &loaded.syscalls().as_ref().expect("rules")[0]
            .args()
            .as_ref()
            .expect("args")[0];
        assert_eq!((arg.value(), arg.value_two()), (0, Some(0x10000000)));
        assert_eq!(
            added_seccomp(
                &ContainerSpec {
                    args: vec!["true".into()],
                    ..Default::default()
                }
                .to_spec()
                .expect("spec")
            ),
            Ok(None)
        );
    }

    #[test]
    fn volume_syntax_and_refusals() {
        assert_eq!(
            parse_volume("data:/var/lib/app"),
            Ok(("data".into(), "/var/lib/app".into(), false, false))
        );
        assert_eq!(
            parse_volume("data:/d:ro"),
            Ok(("data".into(), "/d".into(), true, false))
        );
        assert_eq!(
            parse_volume("data:/d:rw,shared"),
            Ok(("data".into(), "/d".into(), false, true))
        );
        assert_eq!(
            parse_volume("data:/d:shared"),
            Ok(("data".into(), "/d".into(), false, true))
        );
        for bad in [
            "/etc:/e",
            "./x:/e",
            "data",
            "data:/",
            "data:d",
            "data:/a/../b",
            "data:/a/",
            "data:/a//b",
            "data:/proc",
            "data:/sys/x",
            "data:/dev",
            "data:/secret",
            "data:/d:rx",
            "data:/d:ro,rw",
            "data:/d:shared,shared",
            "data:/d:",
            "data:/d:ro,",
            "-x:/d",
            "a/b:/d",
            "a:b:c:d",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn command_resolution() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve_command(&s(&["/bin/sh", "-c"]), &s(&["x"]), &[]).expect("cmd"),
            s(&["/bin/sh", "-c", "x"])
        );
        assert_eq!(
            resolve_command(&[], &s(&["sh"]), &s(&["echo", "hi"])).expect("cmd"),
            s(&["echo", "hi"])
        );
        assert_eq!(resolve_command(&[], &[], &[]), Err(SpecError::NoCommand));
    }

    #[test]
    fn env_merge_overrides_and_validates() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let env = merge_env(&s(&["PATH=/bin", "A=1"]), &s(&["A=2", "B=x=y"])).expect("env");
        assert_eq!(env, s(&["PATH=/bin", "A=2", "B=x=y"]));
        assert!(merge_env(&[], &s(&["NOEQUALS"])).is_err());
        assert!(merge_env(&[], &[]).expect("env")[0].starts_with("PATH="));
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_memory("64m"), Ok(64 << 20));
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("1GB"), Ok(1 << 30));
        assert_eq!(parse_memory("1k"), Err(SpecError::MemoryTooSmall));
        assert!(parse_memory("lots").is_err());
        assert_eq!(parse_cpus("1.5"), Ok(150_000));
        assert!(parse_cpus("-1").is_err());
        assert_eq!(parse_user("1000:100"), Ok((1000, 100)));
        assert_eq!(parse_user("1000"), Ok((1000, 1000)));
        assert!(parse_user("nobody").is_err());
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n\
                      app:x:1000:100::/home/app:/bin/sh\n";
        let group = "root:x:0:\nusers:x:100:\nnogroup:x:65533:\nwheel:x:10:root,app\n\
                     audio:x:29:nobody, app\nbad:x:zz:app\napps:x:2000:application\n";
        let r = |u: &str| {
            resolve_user(u, Some(passwd), Some(group)).map(|r| (r.uid, r.gid, r.additional_gids))
        };
        assert_eq!(r("nobody"), Ok((65534, 65534, vec![29])));
        assert_eq!(r("app"), Ok((1000, 100, vec![10, 29])));
        // An explicit group, or a numeric user, has no supplementary groups.
        assert_eq!(r("app:nogroup"), Ok((1000, 65533, vec![])));
        assert_eq!(r("1000:users"), Ok((1000, 100, vec![])));
        assert_eq!(r("app:7"), Ok((1000, 7, vec![])));
        assert_eq!(r("42"), Ok((42, 42, vec![])));
        assert_eq!(r("root"), Ok((0, 0, vec![])));
        assert_eq!(r("ghost"), Err(SpecError::NoSuchUser("ghost".into())));
        assert_eq!(
            r("app:ghosts"),
            Err(SpecError::NoSuchGroup("ghosts".into()))
        );
        assert_eq!(
            resolve_user("app", None, None),
            Err(SpecError::NoSuchUser("app".into()))
        );
        // --group-add: names from /etc/group, or numbers; each once.
        let mut gids = vec![10];
        assert_eq!(
            add_groups(
                &mut gids,
                &["audio".into(), "7".into(), "wheel".into()],
                Some(group)
            ),
            Ok(())
        );
        assert_eq!(gids, vec![10, 29, 7]);
        assert_eq!(
            add_groups(&mut gids, &["ghosts".into()], Some(group)),
            Err(SpecError::NoSuchGroup("ghosts".into()))
        );
        assert_eq!(
            add_groups(&mut gids, &["bad".into()], Some(group)),
            Err(SpecError::NoSuchGroup("bad".into()))
        );
        // No /etc/group: the primary group from /etc/passwd, nothing else.
        assert_eq!(
            resolve_user("app", Some(passwd), None).map(|r| r.additional_gids),
            Ok(vec![])
        );
        assert!(matches!(r("a/b"), Err(SpecError::BadUser(_))));
        // Ids the kernel reads as -1, or that do not fit, are refused wherever they come from.
        for user in [
            "4294967295",
            "0:4294967295",
            "4294967295:0",
            "4294967296",
            "99999999999",
            "app:4294967295",
        ] {
            assert_eq!(
                r(user),
                Err(SpecError::BadId(
                    user.rsplit(':')
                        .find(|p| p.len() > 9)
                        .expect("id")
                        .to_string()
                )),
                "{user}"
            );
        }
        // Numbers are digits only: a sign or a space makes a name, looked up (and not found).
        for user in ["+1", " 1"] {
            assert_eq!(r(user), Err(SpecError::BadUser(user.into())), "{user}");
        }
        assert_eq!(r("-1"), Err(SpecError::NoSuchUser("-1".into())));
        assert_eq!(r("1:-1"), Err(SpecError::NoSuchGroup("-1".into())));
        assert_eq!(r("0x1"), Err(SpecError::NoSuchUser("0x1".into())));
        for user in ["+1", "-1", "1:-1", " 1", "0x1"] {
            assert_eq!(
                parse_user(user),
                Err(SpecError::BadUser(user.into())),
                "{user}"
            );
        }
        let hostile_passwd = "big:x:4294967295:0::/:/bin/sh\nbiggid:x:7:4294967295::/:/bin/sh\n";
        let hostile_group = "wide:x:4294967295:\nmembers:x:4294967295:app\n";
        assert_eq!(
            resolve_user("big", Some(hostile_passwd), None),
            Err(SpecError::BadEntryId {
                file: "/etc/passwd".into(),
                name: "big".into(),
                id: "4294967295".into()
            })
        );
        assert_eq!(
            resolve_user("biggid", Some(hostile_passwd), None),
            Err(SpecError::BadEntryId {
                file: "/etc/passwd".into(),
                name: "biggid".into(),
                id: "4294967295".into()
            })
        );
        assert_eq!(
            resolve_user("0:wide", None, Some(hostile_group)),
            Err(SpecError::BadEntryId {
                file: "/etc/group".into(),
                name: "wide".into(),
                id: "4294967295".into()
            })
        );
        assert_eq!(
            resolve_user("app", Some(passwd), Some(hostile_group)),
            Err(SpecError::BadEntryId {
                file: "/etc/group".into(),
                name: "members".into(),
                id: "4294967295".into()
            })
        );
        let mut gids = Vec::new();
        assert_eq!(
            add_groups(&mut gids, &["4294967295".into()], None),
            Err(SpecError::BadId("4294967295".into()))
        );
        assert_eq!(
            add_groups(&mut gids, &["wide".into()], Some(hostile_group)),
            Err(SpecError::BadEntryId {
                file: "/etc/group".into(),
                name: "wide".into(),
                id: "4294967295".into()
            })
        );
        assert_eq!(
            parse_user("4294967294:4294967294"),
            Ok((4294967294, 4294967294))
        );
        // A line with a non-numeric id is not an entry.
        assert_eq!(
            resolve_user("bad", Some("bad:x:abc:1\n"), None).map(|r| r.uid),
            Err(SpecError::NoSuchUser("bad".into()))
        );
        assert!(
            !user_needs_lookup("1000:100") && !user_needs_lookup("root") && !user_needs_lookup("")
        );
        assert!(user_needs_lookup("nobody") && user_needs_lookup("1:users"));
    }
}
