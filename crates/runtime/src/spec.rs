//! The OCI runtime configuration vouch generates, and the digest that is measured for it.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("no command given and the image defines none")]
    NoCommand,
    #[error("invalid environment variable {0:?}: expected KEY=VALUE")]
    BadEnv(String),
    #[error("invalid user {0:?}: use NAME, UID, NAME:GROUP or UID:GID")]
    BadUser(String),
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
    #[error("cannot serialize the runtime config")]
    Serialize,
    #[error("invalid volume {spec:?}: {reason}")]
    BadVolume { spec: String, reason: String },
}

/// A named volume mounted into the container: `NAME:/PATH[:ro|:rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    /// The volume's directory on the daemon's side.
    pub source: std::path::PathBuf,
    pub target: String,
    pub readonly: bool,
}

/// Paths a volume may not cover: the runtime's own mounts and the secrets directory.
const RESERVED_TARGETS: &[&str] = &["/proc", "/sys", "/dev", crate::secrets::MOUNT_POINT];

/// Parse `NAME:/PATH[:ro|:rw]` into (name, target, read-only).
pub fn parse_volume(spec: &str) -> Result<(String, String, bool), SpecError> {
    let bad = |reason: &str| SpecError::BadVolume {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (name, target, readonly) = match parts.as_slice() {
        [n, t] => (*n, *t, false),
        [n, t, "ro"] => (*n, *t, true),
        [n, t, "rw"] => (*n, *t, false),
        [_, _, o] => return Err(bad(&format!("option {o:?} is not ro or rw"))),
        _ => return Err(bad("expected NAME:/PATH[:ro|:rw]")),
    };
    if name.starts_with('/') || name.starts_with('.') {
        return Err(bad(
            "only named volumes are supported: a directory of the daemon's host is not part of what is measured",
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
    let clean = target.starts_with('/')
        && target.len() > 1
        && !target.ends_with('/')
        && target[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !clean {
        return Err(bad(
            "the container path must be absolute and normalized, and not /",
        ));
    }
    if RESERVED_TARGETS
        .iter()
        .any(|r| target == *r || target.starts_with(&format!("{r}/")))
    {
        return Err(bad("the container path is reserved by the runtime"));
    }
    Ok((name.to_string(), target.to_string(), readonly))
}

/// Resource limits, as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    pub pids_limit: Option<i64>,
    /// CPU quota in microseconds per 100 ms period.
    pub cpu_quota: Option<i64>,
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
    pub host_network: bool,
    pub resources: Resources,
    pub cgroup_parent: String,
    /// Secret references (`kbs://...`) delivered at `/secret`.
    pub secrets: Vec<String>,
    /// The host directory holding the secrets tmpfs, bind-mounted read-only at `/secret`.
    pub secrets_dir: Option<std::path::PathBuf>,
    pub volumes: Vec<Volume>,
    /// Published ports, relayed into the private network namespace by the monitor.
    pub publish: Vec<crate::net::PortMapping>,
}

/// The part of the config that decides what runs and with which privileges. Its canonical JSON
/// digest goes into the `container.create` record; the values themselves never do (they may hold
/// secrets in environment variables).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EffectiveConfig {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
    pub capabilities: Vec<String>,
    pub mounts: Vec<Value>,
    pub namespaces: Vec<String>,
    pub resources: Resources,
    pub no_new_privileges: bool,
    pub seccomp: String,
    pub readonly_paths: Vec<String>,
    pub masked_paths: Vec<String>,
    /// Declared secret references; their values are never part of the config.
    pub secrets: Vec<String>,
    /// Published ports: what can reach the container from outside.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

/// Docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// System calls the default seccomp profile refuses with EPERM: the ones Docker's default profile
/// leaves out because they reach kernel-global state, load code into the kernel, or escape
/// namespaces. Everything else is allowed.
pub const BLOCKED_SYSCALLS: &[&str] = &[
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

pub const MASKED_PATHS: &[&str] = &[
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

pub const READONLY_PATHS: &[&str] = &[
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

/// Parse `UID`, `UID:GID` or `root`.
pub fn parse_user(user: &str) -> Result<(u32, u32), SpecError> {
    let bad = || SpecError::BadUser(user.to_string());
    match user {
        "" | "root" | "0" => Ok((0, 0)),
        _ => {
            let (u, g) = match user.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (user, None),
            };
            let uid: u32 = if u == "root" {
                0
            } else {
                u.parse().map_err(|_| bad())?
            };
            let gid: u32 = match g {
                Some("root") => 0,
                Some(g) => g.parse().map_err(|_| bad())?,
                None => uid,
            };
            Ok((uid, gid))
        }
    }
}

/// Whether a `--user` value names a user or group that must be looked up in the image.
pub fn user_needs_lookup(user: &str) -> bool {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let named = |s: &str| !s.is_empty() && s != "root" && s.parse::<u32>().is_err();
    named(u) || named(g)
}

/// A container's user: what `--user` resolves to in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolve `NAME`, `UID`, `NAME:GROUP`, `UID:GID` (any mix) as docker does, with the image's
/// `/etc/passwd` and `/etc/group` texts: a user name gives its UID and, unless a group is
/// given, its primary GID and, as supplementary groups, every group that lists the name as a
/// member; a numeric UID without a group keeps the GID of the same number.
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
    // name:x:uid:gid:... and name:x:gid:members
    let find = |text: Option<&str>, name: &str| -> Option<(u32, Option<u32>)> {
        text?.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 3 && f[0] == name).then(|| {
                let id = f[2].parse().ok()?;
                Some((id, f.get(3).and_then(|g| g.parse().ok())))
            })?
        })
    };
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 256
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'))
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) if u == "root" => (0, Some(0)),
        Err(_) if valid_name(u) => {
            let (uid, gid) = find(passwd, u).ok_or_else(|| SpecError::NoSuchUser(u.into()))?;
            (uid, gid)
        }
        Err(_) => return Err(bad()),
    };
    let gid = match g {
        None => primary.unwrap_or(uid),
        Some("root") => 0,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) if valid_name(g) => {
                find(group, g)
                    .ok_or_else(|| SpecError::NoSuchGroup(g.into()))?
                    .0
            }
            Err(_) => return Err(bad()),
        },
    };
    // Supplementary groups only in the implicit form, for a user known by name (as runc does).
    let mut additional_gids = Vec::new();
    if g.is_none() && u.parse::<u32>().is_err() && u != "root" {
        for line in group.unwrap_or_default().lines() {
            let f: Vec<&str> = line.split(':').collect();
            let member = f.len() >= 4 && f[3].split(',').any(|m| m.trim() == u);
            if let (true, Some(Ok(id))) = (member, f.get(2).map(|g| g.parse::<u32>())) {
                if !additional_gids.contains(&id) {
                    additional_gids.push(id);
                }
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
        let gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) if g == "root" => 0,
            Err(_) => group
                .unwrap_or_default()
                .lines()
                .find_map(|line| {
                    let f: Vec<&str> = line.split(':').collect();
                    (f.len() >= 3 && f[0] == g).then(|| f[2].parse::<u32>().ok())?
                })
                .ok_or_else(|| SpecError::NoSuchGroup(g.clone()))?,
        };
        if !gids.contains(&gid) {
            gids.push(gid);
        }
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

fn mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ]
}

impl ContainerSpec {
    fn namespaces(&self) -> Vec<String> {
        let mut ns = vec!["pid", "ipc", "uts", "mount"];
        if !self.host_network {
            ns.push("network");
        }
        ns.into_iter().map(str::to_string).collect()
    }

    /// Volume mounts as measured: by volume name, not by where the daemon keeps them.
    fn volume_mounts(&self, measured: bool) -> Vec<Value> {
        self.volumes
            .iter()
            .map(|v| {
                let mut options = vec!["rbind", "nosuid", "nodev"];
                options.push(if v.readonly { "ro" } else { "rw" });
                if measured {
                    json!({"destination": v.target, "type": "volume", "source": v.name, "options": options})
                } else {
                    json!({"destination": v.target, "type": "bind", "source": v.source, "options": options})
                }
            })
            .collect()
    }

    fn mounts_with_secrets(&self) -> Vec<Value> {
        let mut m = mounts();
        m.extend(self.volume_mounts(false));
        if let Some(dir) = &self.secrets_dir {
            m.push(json!({
                "destination": crate::secrets::MOUNT_POINT,
                "type": "bind",
                "source": dir,
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]
            }));
        }
        m
    }

    /// The measured view of this spec.
    pub fn effective(&self) -> EffectiveConfig {
        EffectiveConfig {
            args: self.args.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            user: format!("{}:{}", self.uid, self.gid),
            additional_gids: self.additional_gids.clone(),
            capabilities: DEFAULT_CAPS.iter().map(|c| c.to_string()).collect(),
            mounts: mounts()
                .into_iter()
                .chain(self.volume_mounts(true))
                .collect(),
            namespaces: self.namespaces(),
            resources: self.resources.clone(),
            no_new_privileges: true,
            seccomp: "vouch-default-v1".into(),
            readonly_paths: READONLY_PATHS.iter().map(|c| c.to_string()).collect(),
            masked_paths: MASKED_PATHS.iter().map(|c| c.to_string()).collect(),
            secrets: self.secrets.clone(),
            ports: self.publish.iter().map(ToString::to_string).collect(),
        }
    }

    /// The OCI runtime `config.json`.
    pub fn to_oci(&self) -> Value {
        let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
        let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
        if let Some(m) = self.resources.memory_bytes {
            resources["memory"] = json!({"limit": m});
        }
        if let Some(p) = self.resources.pids_limit {
            resources["pids"] = json!({"limit": p});
        }
        if let Some(q) = self.resources.cpu_quota {
            resources["cpu"] = json!({"quota": q, "period": 100_000});
        }
        let namespaces: Vec<Value> = self
            .namespaces()
            .into_iter()
            .map(|t| json!({"type": t}))
            .collect();
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": self.uid, "gid": self.gid, "additionalGids": self.additional_gids, "umask": 0o022},
                "args": self.args,
                "env": self.env,
                "cwd": if self.cwd.is_empty() { "/" } else { self.cwd.as_str() },
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": self.hostname,
            "mounts": self.mounts_with_secrets(),
            "linux": {
                "cgroupsPath": format!("{}/{}", self.cgroup_parent, self.id),
                "resources": resources,
                "namespaces": namespaces,
                "maskedPaths": MASKED_PATHS,
                "readonlyPaths": READONLY_PATHS,
                "seccomp": {
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                    "syscalls": [{"names": BLOCKED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_syntax_and_refusals() {
        assert_eq!(
            parse_volume("data:/var/lib/app"),
            Ok(("data".into(), "/var/lib/app".into(), false))
        );
        assert_eq!(
            parse_volume("data:/d:ro"),
            Ok(("data".into(), "/d".into(), true))
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
