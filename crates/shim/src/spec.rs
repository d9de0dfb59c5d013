//! What vouch takes from the OCI spec containerd hands over: the image the container is of, its
//! process (args, env, cwd, user, groups) and its network (the host's, its own, or its pod's).
//! Its mounts become vouch's own: a pod's emptyDir a named volume of the pod's, any other
//! read-only bind (configMap, secret, projected, downwardAPI, a read-only hostPath) a copy
//! measured by its content; a writable host path is refused. The rest of containerd's spec
//! (other namespaces, capabilities, cgroups, devices) is not taken: vouch builds its own
//! hardened spec, and measures that.

use serde_json::Value;
use vouch_api::CreateContainer;

/// The annotation the CRI plugin puts the pod's image name in.
pub(crate) const CRI_IMAGE: &str = "io.kubernetes.cri.image-name";
/// The annotation that names the image otherwise (`ctr run --annotation io.vouch.image=REF`).
pub(crate) const VOUCH_IMAGE: &str = "io.vouch.image";
/// The CRI's container type: `sandbox` (the pod's pause container) or `container`.
pub(crate) const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The pod a CRI container belongs to: its shim is the pod's.
pub(crate) const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The pod's name, namespace and uid, and the container's name in it, as the CRI names them.
const CRI_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const CRI_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub(crate) const CRI_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";

/// The pod of a container the CRI started, from its annotations.
pub(crate) fn pod(spec: &Value) -> Option<vouch_api::PodRef> {
    let text = |k: &str| annotation(spec, k).unwrap_or_default().to_string();
    let name = annotation(spec, CRI_SANDBOX_NAME)?;
    Some(vouch_api::PodRef {
        namespace: text(CRI_SANDBOX_NAMESPACE),
        name: name.to_string(),
        uid: text(CRI_SANDBOX_UID),
        sandbox_id: text(CRI_SANDBOX_ID),
        container: text(CRI_CONTAINER_NAME),
    })
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SpecError {
    Json(String),
    NoImage,
    Field(&'static str),
    /// Capabilities beyond the default set.
    Capabilities(Vec<String>),
    /// The resolv.conf containerd names cannot be read.
    ResolvConf(String),
    /// A writable bind of a host path (source, destination).
    HostMount(String, String),
    /// A mount of a kind vouch does not give a container (type, destination).
    Mount(String, String),
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::Json(e) => write!(f, "the bundle's config.json is not an OCI spec: {e}"),
            SpecError::NoImage => write!(
                f,
                "vouch runs images from its own verified store and this container names none: give it with the annotation {VOUCH_IMAGE}=REF (ctr run --annotation {VOUCH_IMAGE}=REF; the CRI sets {CRI_IMAGE})"
            ),
            SpecError::Field(what) => write!(f, "the OCI spec's {what} is malformed"),
            SpecError::ResolvConf(e) => write!(f, "cannot read the container's resolv.conf: {e}"),
            SpecError::HostMount(source, destination) => write!(
                f,
                "vouch shares no host directory writable with a container (its content would not be measured), and this one mounts {source} at {destination}: mount it read-only (it is then copied, measured by its content), or use an emptyDir for data the container writes"
            ),
            SpecError::Mount(kind, destination) => write!(
                f,
                "vouch gives a container no {kind} mount at {destination}: use a volume (an emptyDir, or a read-only configMap, secret or hostPath)"
            ),
            SpecError::Capabilities(extra) => write!(
                f,
                "vouch grants no capability beyond docker's default set, and this container asks for {} (a privileged container asks for all): drop them from its securityContext",
                extra.join(", ")
            ),
        }
    }
}

/// The annotations of an OCI spec.
pub(crate) fn annotation<'a>(spec: &'a Value, key: &str) -> Option<&'a str> {
    spec.get("annotations")?.get(key)?.as_str()
}

/// Whether an image reference names its registry, as docker decides it (`host.domain/...`,
/// `host:port/...`, `localhost/...`): vouchd can then pull it. The CRI's image names always do.
pub(crate) fn names_registry(reference: &str) -> bool {
    match reference.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// Whether `spec` is a pod's sandbox (the CRI's pause container), which the shim holds itself.
pub(crate) fn is_sandbox(spec: &Value) -> bool {
    annotation(spec, CRI_CONTAINER_TYPE) == Some("sandbox")
}

/// What vouch takes of an OCI process (a container's, or an exec's).
struct Process {
    terminal: bool,
    args: Vec<String>,
    env: Vec<String>,
    cwd: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    groups: Vec<u32>,
}

/// An array of strings of an OCI spec (absent or null: none); `what` names it in the error.
fn strings(v: Option<&Value>, what: &'static str) -> Result<Vec<String>, SpecError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(String::from).ok_or(SpecError::Field(what)))
            .collect(),
        Some(_) => Err(SpecError::Field(what)),
    }
}

fn process_of(process: &Value) -> Result<Process, SpecError> {
    let args = strings(process.get("args"), "process.args")?;
    if args.is_empty() {
        return Err(SpecError::Field("process.args (empty)"));
    }
    let env = strings(process.get("env"), "process.env")?;
    let cwd = process
        .get("cwd")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty() && *c != "/")
        .map(String::from);
    let id = |v: Option<&Value>, what: &'static str| -> Result<Option<u32>, SpecError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or(SpecError::Field(what)),
        }
    };
    let user = process.get("user");
    let uid = id(user.and_then(|u| u.get("uid")), "process.user.uid")?;
    let gid = id(user.and_then(|u| u.get("gid")), "process.user.gid")?;
    let groups = match user.and_then(|u| u.get("additionalGids")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|g| {
                g.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or(SpecError::Field("process.user.additionalGids"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(SpecError::Field("process.user.additionalGids")),
    };
    Ok(Process {
        terminal: process.get("terminal").and_then(Value::as_bool) == Some(true),
        args,
        env,
        cwd,
        uid,
        gid,
        groups,
    })
}

/// The vouchd exec request for containerd's Exec, from its OCI process (JSON); `stdin` when
/// containerd gives the process a stdin.
pub(crate) fn exec_request(
    process: &[u8],
    stdin: bool,
) -> Result<vouch_api::ExecRequest, SpecError> {
    let process: Value =
        serde_json::from_slice(process).map_err(|e| SpecError::Json(e.to_string()))?;
    if !process.is_object() {
        return Err(SpecError::Json(
            "the exec's process is not a JSON object".into(),
        ));
    }
    let p = process_of(&process)?;
    let uid = p.uid.unwrap_or(0);
    let gid = p.gid.unwrap_or(0);
    Ok(vouch_api::ExecRequest {
        cmd: p.args,
        env: p.env,
        user: Some(format!("{uid}:{gid}")),
        additional_gids: p.groups.into_iter().filter(|g| *g != gid).collect(),
        workdir: p.cwd,
        tty: p.terminal,
        stdin,
        ..Default::default()
    })
}

/// What of containerd's security settings vouch takes: only what tightens its own (a read-only
/// root, capabilities dropped, more paths masked or read-only); a capability beyond the default
/// set is refused, never granted.
struct Tightening {
    resolv_conf: Option<String>,
    read_only: bool,
    cap_drop: Vec<String>,
    masked_paths: Vec<String>,
    readonly_paths: Vec<String>,
}

/// Open a path containerd's spec names for reading, without waiting on it whatever it names (a
/// FIFO) and never as a controlling terminal.
pub(crate) fn open_nonblocking(path: &str) -> std::io::Result<std::fs::File> {
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        std::fs::OpenOptions::new().read(true),
        libc::O_NONBLOCK | libc::O_NOCTTY,
    )
    .open(path)
}

/// The text of the file containerd binds at `/etc/resolv.conf` (the pod's DNS config, which
/// the CRI writes for the sandbox), if its spec has one: vouchd gives the container the same
/// text, measured. containerd names the file; it is read here, at most 4 KiB.
fn resolv_conf(spec: &Value) -> Result<Option<String>, SpecError> {
    let Some(Value::Array(mounts)) = spec.get("mounts") else {
        return Ok(None);
    };
    let Some(source) = mounts
        .iter()
        .find(|m| m.get("destination").and_then(Value::as_str) == Some("/etc/resolv.conf"))
        .and_then(|m| m.get("source").and_then(Value::as_str))
    else {
        return Ok(None);
    };
    // A regular file only.
    let file =
        open_nonblocking(source).map_err(|e| SpecError::ResolvConf(format!("{source}: {e}")))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(SpecError::ResolvConf(format!("{source} is not a file")));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, 4097), &mut text)
        .map_err(|e| SpecError::ResolvConf(format!("{source}: {e}")))?;
    if text.len() > 4096 {
        return Err(SpecError::ResolvConf(format!("{source} is over 4 KiB")));
    }
    Ok(Some(text))
}

/// Mounts containerd's spec has that vouch's own spec provides itself: the kernel filesystems
/// and /dev, the sandbox's /dev/shm, containerd's /etc/hosts and /etc/hostname, kubelet's
/// termination log, and the resolv.conf taken above.
const OWN_MOUNTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
    "/run",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev/termination-log",
];

/// The named volume a pod's emptyDir is to vouch, if `source` is one of the pod `pod_uid`'s:
/// kubelet's `<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>` (kubelet's root is
/// configurable; the uid must be the container's own pod's, so a hostPath naming another
/// pod's emptyDir is a host path, refused).
pub(crate) fn empty_dir_volume(source: &str, pod_uid: &str) -> Option<String> {
    let parts: Vec<&str> = source.strip_prefix('/')?.split('/').collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return None;
    }
    let [.., "pods", uid, "volumes", "kubernetes.io~empty-dir", name] = parts.as_slice() else {
        return None;
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    (!pod_uid.is_empty() && *uid == pod_uid && label(uid) && label(name))
        .then(|| pod_volume(uid, name))
}

/// Whether `source` is a directory containerd's CRI made for one of an image's `VOLUME`s
/// (`<root>/io.containerd.grpc.v1.cri/containers/<id>/volumes/<name>`, empty or a copy of the
/// image's content there): not taken, the image's own directory in vouch's root filesystem
/// serves (written to in the container's overlay, as that volume would be for the container's
/// life). Taking nothing from the host, it needs no check of whose it is.
fn is_image_volume(source: &str) -> bool {
    let parts: Vec<&str> = source.split('/').collect();
    matches!(
        parts.as_slice(),
        [.., "io.containerd.grpc.v1.cri", "containers", id, "volumes", name]
            if !id.is_empty() && !name.is_empty() && *name != ".." && *id != ".."
    )
}

/// The name of a pod's emptyDir among vouchd's volumes: `pod-<uid>-<name>`.
pub(crate) fn pod_volume(uid: &str, name: &str) -> String {
    format!("{}{name}", pod_volume_prefix(uid))
}

/// What the names of a pod's volumes start with; they are removed with its sandbox.
pub(crate) fn pod_volume_prefix(uid: &str) -> String {
    format!("pod-{uid}-")
}

/// vouchd's volumes (`NAME:/PATH[:ro]`, `/HOST/PATH:/PATH:ro`) for the mounts of `spec`.
fn volumes(spec: &Value) -> Result<Vec<String>, SpecError> {
    let mounts = match spec.get("mounts") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(m)) => m,
        Some(_) => return Err(SpecError::Field("mounts")),
    };
    let pod_uid = annotation(spec, CRI_SANDBOX_UID).unwrap_or_default();
    let mut out = Vec::new();
    for m in mounts {
        let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default();
        let destination = text("destination");
        if destination.is_empty() {
            return Err(SpecError::Field("mounts[].destination"));
        }
        if OWN_MOUNTS.contains(&destination) {
            continue;
        }
        let options = strings(m.get("options"), "mounts[].options")?;
        let bind = text("type") == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        if !bind {
            return Err(SpecError::Mount(
                text("type").to_string(),
                destination.to_string(),
            ));
        }
        let source = text("source");
        if is_image_volume(source) {
            continue;
        }
        let readonly = options.iter().any(|o| o == "ro");
        if let Some(volume) = empty_dir_volume(source, pod_uid) {
            // Writable by every user, as kubelet makes an emptyDir: a pod's containers may
            // run as different users.
            let mode = if readonly { ":ro,shared" } else { ":rw,shared" };
            out.push(format!("{volume}:{destination}{mode}"));
        } else if readonly {
            out.push(format!("{source}:{destination}:ro"));
        } else {
            return Err(SpecError::HostMount(
                source.to_string(),
                destination.to_string(),
            ));
        }
    }
    Ok(out)
}

fn tightening(spec: &Value) -> Result<Tightening, SpecError> {
    let read_only = match spec.pointer("/root/readonly") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(SpecError::Field("root.readonly")),
    };
    // The bounding set caps every other: what it lacks, the process cannot hold. No
    // capabilities at all is none of them.
    let cap_drop = match spec.pointer("/process/capabilities") {
        None | Some(Value::Null) => vec!["ALL".to_string()],
        Some(caps) => {
            let bounding = strings(caps.get("bounding"), "process.capabilities.bounding")?;
            let mut extra: Vec<String> = bounding
                .iter()
                .filter(|c| !vouch_base::DEFAULT_CAPS.contains(&c.as_str()))
                .cloned()
                .collect();
            if !extra.is_empty() {
                extra.sort();
                return Err(SpecError::Capabilities(extra));
            }
            let dropped: Vec<String> = vouch_base::DEFAULT_CAPS
                .iter()
                .filter(|c| !bounding.iter().any(|b| b == *c))
                .map(|c| c.to_string())
                .collect();
            if dropped.len() == vouch_base::DEFAULT_CAPS.len() {
                vec!["ALL".to_string()]
            } else {
                dropped
            }
        }
    };
    Ok(Tightening {
        resolv_conf: resolv_conf(spec)?,
        read_only,
        cap_drop,
        masked_paths: strings(spec.pointer("/linux/maskedPaths"), "linux.maskedPaths")?,
        readonly_paths: strings(spec.pointer("/linux/readonlyPaths"), "linux.readonlyPaths")?,
    })
}

/// The vouchd create request for the container of `spec`, named `name`: created and held
/// until containerd's Start.
pub(crate) fn request(spec: &Value, name: &str) -> Result<CreateContainer, SpecError> {
    if !spec.is_object() {
        return Err(SpecError::Json("not a JSON object".into()));
    }
    // The CRI's own annotation first: it is the image the kubelet asked containerd for, where
    // io.vouch.image could come through from a pod's annotations.
    let image = annotation(spec, CRI_IMAGE)
        .or_else(|| annotation(spec, VOUCH_IMAGE))
        .filter(|s| !s.is_empty())
        .ok_or(SpecError::NoImage)?;
    let process = spec.get("process").ok_or(SpecError::Field("process"))?;
    let Process {
        terminal,
        args,
        env,
        cwd,
        uid,
        gid,
        groups,
    } = process_of(process)?;
    // The primary group is given; supplementary groups the spec lists too (without the primary
    // one, which vouch adds itself).
    let Tightening {
        resolv_conf,
        read_only,
        cap_drop,
        masked_paths,
        readonly_paths,
    } = tightening(spec)?;
    let primary = gid.unwrap_or(0).to_string();
    let group_add = groups
        .into_iter()
        .map(|g| g.to_string())
        .filter(|g| *g != primary)
        .collect();
    Ok(CreateContainer {
        image: image.to_string(),
        name: Some(name.to_string()),
        entrypoint: Some(Vec::new()),
        cmd: args,
        env,
        workdir: cwd,
        user: Some(format!("{}:{}", uid.unwrap_or(0), gid.unwrap_or(0))),
        group_add,
        pod: pod(spec),
        wait_for_start: true,
        remove_if_refused: true,
        tty: terminal,
        read_only,
        cap_drop,
        masked_paths,
        readonly_paths,
        resolv_conf,
        volumes: volumes(spec)?,
        // A pod's seccomp profile (localhost, RuntimeDefault: containerd puts it in the spec)
        // is added to vouch's own filter, which always applies: it can only tighten. None
        // (unconfined) leaves vouch's alone.
        seccomp: match spec.pointer("/linux/seccomp") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => return Err(SpecError::Field("linux.seccomp")),
        },
        ..Default::default()
    })
}

/// The network an OCI spec asks for, as its `linux.namespaces` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Network {
    /// No network namespace: the host's (ctr run --net-host; a CRI pod on the node's network).
    Host,
    /// A network namespace of its own.
    Own,
    /// The network namespace at a path (a CRI pod's, containerd's `/proc/PID/ns/net` of the
    /// pod's sandbox; ctr run --with-ns network:PATH).
    Join(String),
}

/// The kernel parameters `spec` sets (`linux.sysctl`): a pod's are on its sandbox's spec.
pub(crate) fn sysctls(
    spec: &Value,
) -> Result<std::collections::BTreeMap<String, String>, SpecError> {
    match spec.pointer("/linux/sysctl") {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| (k.clone(), v.to_string()))
                    .ok_or(SpecError::Field("linux.sysctl"))
            })
            .collect(),
        Some(_) => Err(SpecError::Field("linux.sysctl")),
    }
}

/// The hostname `spec` gives, if any.
pub(crate) fn hostname(spec: &Value) -> Option<String> {
    spec.get("hostname")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// The network of `spec`.
pub(crate) fn network(spec: &Value) -> Result<Network, SpecError> {
    let namespaces = match spec.pointer("/linux/namespaces") {
        None | Some(Value::Null) => return Ok(Network::Host),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(SpecError::Field("linux.namespaces")),
    };
    let Some(net) = namespaces
        .iter()
        .find(|n| n.get("type") == Some(&"network".into()))
    else {
        return Ok(Network::Host);
    };
    match net.get("path") {
        None | Some(Value::Null) => Ok(Network::Own),
        Some(Value::String(p)) if p.is_empty() => Ok(Network::Own),
        Some(Value::String(p)) if p.starts_with('/') => Ok(Network::Join(p.clone())),
        Some(_) => Err(SpecError::Field("network namespace's path")),
    }
}

/// The vouch name of containerd's container `id` in `namespace`: vouch names are one flat
/// space, containerd's ids are unique per namespace. containerd allows no two separators in a
/// row in either, so `--` between them cannot be read two ways.
pub(crate) fn vouch_name(namespace: &str, id: &str) -> String {
    if namespace == "default" {
        id.to_string()
    } else {
        format!("{namespace}--{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(change: impl FnOnce(&mut Value)) -> Value {
        let mut s = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 1000, "gid": 1000, "additionalGids": [1000, 10]},
                "args": ["/bin/sh", "-c", "echo hi"],
                "env": ["PATH=/bin", "A=b"],
                "cwd": "/work",
            },
            "root": {"path": "rootfs"},
            "annotations": {VOUCH_IMAGE: "localhost/bb:bb"},
            "mounts": [
                {"destination": "/proc", "source": "proc", "type": "proc"},
                {"destination": "/etc/hosts", "source": "/run/c/hosts", "type": "bind", "options": ["rbind", "rw"]},
            ],
            "linux": {"namespaces": [{"type": "pid"}]},
        });
        change(&mut s);
        s
    }

    #[test]
    fn the_process_comes_from_containerds_spec_and_nothing_else() {
        let r = request(&spec(|_| {}), "c1").expect("request");
        assert_eq!(r.image, "localhost/bb:bb");
        assert_eq!(r.name.as_deref(), Some("c1"));
        // Exactly the args: the image's entrypoint gives way.
        assert_eq!(r.entrypoint, Some(Vec::new()));
        assert_eq!(r.cmd, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(r.env, ["PATH=/bin", "A=b"]);
        assert_eq!(r.workdir.as_deref(), Some("/work"));
        assert_eq!(r.user.as_deref(), Some("1000:1000"));
        assert_eq!(r.group_add, ["10"]);
        assert!(r.wait_for_start);
        // The kernel filesystems and containerd's own files of its spec are not in the request:
        // vouch's spec has its own.
        let text = serde_json::to_string(&r).expect("json");
        assert!(
            !text.contains("/run/c/hosts") && !text.contains("rbind"),
            "{text}"
        );
        assert!(r.volumes.is_empty());
        // The CRI's annotation names the image too, and wins when both are there (a pod's own
        // annotations may reach the spec; the CRI's is what the kubelet asked for).
        let cri = spec(|s| s["annotations"] = json!({CRI_IMAGE: "docker.io/library/bb:1"}));
        assert_eq!(
            request(&cri, "c").expect("cri").image,
            "docker.io/library/bb:1"
        );
        let both = spec(|s| s["annotations"][CRI_IMAGE] = json!("docker.io/library/bb:1"));
        assert_eq!(
            request(&both, "c").expect("both").image,
            "docker.io/library/bb:1"
        );
        // cwd "/" and no user: defaults.
        let plain = spec(|s| {
            s["process"]["cwd"] = json!("/");
            s["process"]
                .as_object_mut()
                .expect("process")
                .remove("user");
        });
        let r = request(&plain, "c").expect("plain");
        assert_eq!((r.workdir, r.user.as_deref()), (None, Some("0:0")));
    }

    #[test]
    fn only_what_tightens_vouchs_security_is_taken_and_no_capability_is_added() {
        let default: Vec<&str> = vouch_base::DEFAULT_CAPS.to_vec();
        let with_caps = |bounding: Vec<&str>| {
            spec(|s| {
                s["process"]["capabilities"] = json!({"bounding": bounding, "effective": bounding})
            })
        };
        let r = request(&with_caps(default.clone()), "c").expect("default");
        assert!(r.cap_drop.is_empty() && !r.read_only);
        // Dropped from the default set, in its order.
        let fewer: Vec<&str> = default
            .iter()
            .copied()
            .filter(|c| *c != "CAP_NET_RAW" && *c != "CAP_CHOWN")
            .collect();
        let r = request(&with_caps(fewer), "c").expect("fewer");
        assert_eq!(r.cap_drop, ["CAP_CHOWN", "CAP_NET_RAW"]);
        // None at all, or no capabilities object: every one dropped.
        assert_eq!(
            request(&with_caps(vec![]), "c").expect("none").cap_drop,
            ["ALL"]
        );
        assert_eq!(
            request(&spec(|_| {}), "c").expect("absent").cap_drop,
            ["ALL"]
        );
        // More than the default set: refused, naming them.
        let mut more = default.clone();
        more.extend(["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]);
        let err = request(&with_caps(more), "c").expect_err("more");
        assert_eq!(
            err,
            SpecError::Capabilities(vec!["CAP_NET_ADMIN".into(), "CAP_SYS_ADMIN".into()])
        );
        assert!(err
            .to_string()
            .contains("asks for CAP_NET_ADMIN, CAP_SYS_ADMIN"));
        // A read-only root, more masked and read-only paths.
        let r = request(
            &spec(|s| {
                s["root"]["readonly"] = json!(true);
                s["linux"]["maskedPaths"] = json!(["/proc/kcore", "/secret-place"]);
                s["linux"]["readonlyPaths"] = json!(["/proc/sys"]);
            }),
            "c",
        )
        .expect("tight");
        assert!(r.read_only);
        assert_eq!(r.masked_paths, ["/proc/kcore", "/secret-place"]);
        assert_eq!(r.readonly_paths, ["/proc/sys"]);
        // A seccomp profile is handed on, to be added to vouch's.
        let profile = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}]});
        let r = request(&spec(|s| s["linux"]["seccomp"] = profile.clone()), "c").expect("seccomp");
        assert_eq!(r.seccomp, Some(profile));
        assert_eq!(request(&spec(|_| {}), "c").expect("none").seccomp, None);
        for bad in [
            spec(|s| s["linux"]["seccomp"] = json!("unconfined")),
            spec(|s| s["root"]["readonly"] = json!("yes")),
            spec(|s| s["linux"]["maskedPaths"] = json!("/x")),
            spec(|s| s["process"]["capabilities"] = json!({"bounding": "CAP_KILL"})),
        ] {
            assert!(matches!(request(&bad, "c"), Err(SpecError::Field(_))));
        }
    }

    /// The pod's resolv.conf: the text of the file containerd binds there; a FIFO or a
    /// directory is refused at once, not waited on.
    #[test]
    fn the_resolv_conf_is_the_text_of_the_file_containerd_binds() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("resolv.conf");
        std::fs::write(&file, "nameserver 10.96.0.10\n").expect("write");
        let with = |source: &std::path::Path| {
            spec(|s| {
                s["mounts"] =
                    json!([{"destination": "/etc/resolv.conf", "source": source, "type": "bind"}])
            })
        };
        assert_eq!(
            request(&with(&file), "c")
                .expect("file")
                .resolv_conf
                .as_deref(),
            Some("nameserver 10.96.0.10\n")
        );
        assert_eq!(request(&spec(|_| {}), "c").expect("none").resolv_conf, None);
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        for bad in [fifo.as_path(), dir.path()] {
            let err = request(&with(bad), "c")
                .expect_err("not a file")
                .to_string();
            assert!(err.ends_with("is not a file"), "{err}");
        }
        std::fs::write(&file, "#".repeat(4097)).expect("write");
        let err = request(&with(&file), "c").expect_err("big").to_string();
        assert!(err.ends_with("is over 4 KiB"), "{err}");
    }

    #[test]
    fn the_network_comes_from_the_specs_namespaces() {
        let with = |ns: Value| spec(|s| s["linux"]["namespaces"] = ns);
        assert_eq!(network(&spec(|_| {})), Ok(Network::Host));
        assert_eq!(
            network(&spec(|s| {
                s.as_object_mut().expect("spec").remove("linux");
            })),
            Ok(Network::Host)
        );
        assert_eq!(
            network(&with(json!([{"type": "pid"}, {"type": "network"}]))),
            Ok(Network::Own)
        );
        assert_eq!(
            network(&with(
                json!([{"type": "network", "path": "/proc/42/ns/net"}])
            )),
            Ok(Network::Join("/proc/42/ns/net".into()))
        );
        for bad in [
            json!({"type": "network"}),
            json!([{"type": "network", "path": "relative"}]),
            json!([{"type": "network", "path": 7}]),
        ] {
            assert!(matches!(network(&with(bad)), Err(SpecError::Field(_))));
        }
    }

    #[test]
    fn the_pod_comes_from_the_cris_annotations() {
        assert_eq!(request(&spec(|_| {}), "c").expect("ctr").pod, None);
        let cri = spec(|s| {
            s["annotations"] = json!({
                CRI_IMAGE: "docker.io/library/bb:1",
                CRI_CONTAINER_TYPE: "container",
                CRI_SANDBOX_ID: "0123abcd",
                "io.kubernetes.cri.sandbox-name": "web-0",
                "io.kubernetes.cri.sandbox-namespace": "shop",
                "io.kubernetes.cri.sandbox-uid": "5f0c-11",
                "io.kubernetes.cri.container-name": "nginx",
            })
        });
        assert_eq!(
            request(&cri, "c").expect("cri").pod,
            Some(vouch_api::PodRef {
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: "5f0c-11".into(),
                sandbox_id: "0123abcd".into(),
                container: "nginx".into(),
            })
        );
    }

    #[test]
    fn what_vouch_cannot_run_is_refused_saying_what_to_do() {
        let err = |s: Value| request(&s, "c").expect_err("refused");
        assert_eq!(
            err(spec(|s| s["annotations"] = json!({}))),
            SpecError::NoImage
        );
        assert!(SpecError::NoImage
            .to_string()
            .contains("--annotation io.vouch.image=REF"));
        assert_eq!(
            err(spec(|s| s["process"]["args"] = json!([]))),
            SpecError::Field("process.args (empty)")
        );
        assert_eq!(
            err(spec(|s| s["process"]["args"] = json!(["/bin/sh", 3]))),
            SpecError::Field("process.args")
        );
        assert_eq!(
            err(spec(|s| s["process"]["user"]["uid"] = json!(-1))),
            SpecError::Field("process.user.uid")
        );
        assert_eq!(
            err(spec(|s| s["process"]["user"]["uid"] = json!(1u64 << 40))),
            SpecError::Field("process.user.uid")
        );
        assert_eq!(
            err(spec(|s| {
                s.as_object_mut().expect("spec").remove("process");
            })),
            SpecError::Field("process")
        );
        assert!(matches!(err(json!([1])), SpecError::Json(_)));
    }

    #[test]
    fn an_exec_takes_the_process_containerd_gives() {
        let p = json!({
            "terminal": false,
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [1000, 10]},
            "args": ["/bin/sh", "-c", "id"],
            "env": ["PATH=/bin"],
            "cwd": "/work",
            "capabilities": {"bounding": ["CAP_SYS_ADMIN"]},
        });
        let r = exec_request(p.to_string().as_bytes(), false).expect("exec");
        assert!(!r.tty && !r.stdin);
        assert_eq!(r.cmd, ["/bin/sh", "-c", "id"]);
        assert_eq!(r.env, ["PATH=/bin"]);
        assert_eq!(r.user.as_deref(), Some("1000:1000"));
        assert_eq!(r.additional_gids, [10]);
        assert_eq!(r.workdir.as_deref(), Some("/work"));
        // Capabilities are not taken: the container's own apply (vouchd's exec keeps them).
        assert!(!serde_json::to_string(&r)
            .expect("json")
            .contains("CAP_SYS_ADMIN"));
        let tty = exec_request(
            json!({"args": ["sh"], "terminal": true})
                .to_string()
                .as_bytes(),
            true,
        )
        .expect("tty");
        assert!(tty.tty && tty.stdin);
        let err = |v: Value| exec_request(v.to_string().as_bytes(), false).expect_err("refused");
        assert_eq!(
            err(json!({"args": []})),
            SpecError::Field("process.args (empty)")
        );
        assert!(matches!(err(json!("sh")), SpecError::Json(_)));
        assert!(matches!(
            exec_request(b"not json", false).expect_err("refused"),
            SpecError::Json(_)
        ));
    }

    #[test]
    fn only_a_reference_that_names_its_registry_is_pulled() {
        assert!(names_registry("docker.io/library/busybox:latest"));
        assert!(names_registry("127.0.0.1:5000/app/bb:1"));
        assert!(names_registry("localhost/bb:bb"));
        assert!(!names_registry("bb"));
        assert!(!names_registry("library/busybox"));
    }

    #[test]
    fn the_cris_pause_container_is_told_apart() {
        assert!(is_sandbox(&spec(|s| s["annotations"]
            [CRI_CONTAINER_TYPE] =
            json!("sandbox"))));
        assert!(!is_sandbox(&spec(|s| s["annotations"]
            [CRI_CONTAINER_TYPE] =
            json!("container"))));
        assert!(!is_sandbox(&spec(|_| {})));
    }

    #[test]
    fn names_are_unique_across_namespaces() {
        assert_eq!(vouch_name("default", "web"), "web");
        assert_eq!(vouch_name("k8s.io", "abc"), "k8s.io--abc");
        // Names containerd accepts (one separator between alphanumerics) do not collide.
        assert_ne!(vouch_name("a", "b.c"), vouch_name("a.b", "c"));
        assert_ne!(vouch_name("a-b", "c"), vouch_name("a", "b-c"));
    }

    /// A pod's emptyDir is a volume of its own pod's, any read-only bind a measured copy; a
    /// writable host path, another pod's emptyDir, a mount of another kind: refused, naming it.
    #[test]
    fn a_pods_volumes_become_vouchs_and_a_writable_host_path_is_refused() {
        let uid = "0f6c3a2e-8d1b-4c7e-9a55-3b2d1e0f9a11";
        let other = "9a9a9a9a-8d1b-4c7e-9a55-3b2d1e0f9a11";
        let kubelet = "/var/lib/kubelet/pods";
        let with = |mounts: Value| {
            spec(|s| {
                s["annotations"][CRI_SANDBOX_UID] = json!(uid);
                s["mounts"] = mounts;
            })
        };
        let empty = format!("{kubelet}/{uid}/volumes/kubernetes.io~empty-dir/cache");
        let config = format!("{kubelet}/{uid}/volumes/kubernetes.io~configmap/conf");
        let r = request(
            &with(json!([
                {"destination": "/cache", "source": empty, "type": "bind", "options": ["rbind", "rprivate", "rw"]},
                {"destination": "/ro-cache", "source": empty, "type": "bind", "options": ["rbind", "ro"]},
                {"destination": "/etc/conf", "source": config, "type": "bind", "options": ["rbind", "rprivate", "ro"]},
                {"destination": "/dev/shm", "source": "/run/sandbox/shm", "type": "bind", "options": ["rbind"]},
                {"destination": "/var/lib/data", "source": "/var/lib/containerd/io.containerd.grpc.v1.cri/containers/3f2a/volumes/9b1c", "type": "bind", "options": ["rbind", "rw"]},
            ])),
            "c",
        )
        .expect("volumes");
        assert_eq!(
            r.volumes,
            [
                format!("pod-{uid}-cache:/cache:rw,shared"),
                format!("pod-{uid}-cache:/ro-cache:ro,shared"),
                format!("{config}:/etc/conf:ro"),
            ]
        );
        // A writable host path, and an emptyDir path of another pod (a hostPath can name
        // one), or with no pod at all (ctr run --mount): refused.
        for (source, pod) in [
            ("/srv/data".to_string(), uid),
            (
                format!("{kubelet}/{other}/volumes/kubernetes.io~empty-dir/cache"),
                uid,
            ),
            (
                format!("{kubelet}/{uid}/volumes/kubernetes.io~empty-dir/../../x"),
                uid,
            ),
            (empty.clone(), ""),
        ] {
            let s = spec(|s| {
                s["annotations"][CRI_SANDBOX_UID] = json!(pod);
                s["mounts"] = json!([{"destination": "/d", "source": source, "type": "bind", "options": ["rbind", "rw"]}]);
            });
            let err = request(&s, "c").expect_err(&source);
            assert_eq!(err, SpecError::HostMount(source.clone(), "/d".into()));
            assert!(
                err.to_string()
                    .contains(&format!("mounts {source} at /d: mount it read-only")),
                "{err}"
            );
        }
        // A mount of another kind at a path of the workload's.
        let err = request(
            &with(json!([{"destination": "/scratch", "source": "tmpfs", "type": "tmpfs"}])),
            "c",
        )
        .expect_err("tmpfs");
        assert_eq!(err, SpecError::Mount("tmpfs".into(), "/scratch".into()));
        assert!(matches!(
            request(&with(json!({"a": 1})), "c"),
            Err(SpecError::Field("mounts"))
        ));
    }

    /// A spec's kernel parameters, as they are; malformed ones refused.
    #[test]
    fn a_specs_sysctls_are_read() {
        let s = spec(|s| s["linux"]["sysctl"] = json!({"kernel.shm_rmid_forced": "1"}));
        assert_eq!(
            sysctls(&s).expect("sysctls"),
            [("kernel.shm_rmid_forced".to_string(), "1".to_string())].into()
        );
        assert!(sysctls(&spec(|_| {})).expect("none").is_empty());
        for bad in [json!({"kernel.sem": 1}), json!(["kernel.sem"])] {
            let s = spec(|s| s["linux"]["sysctl"] = bad);
            assert_eq!(sysctls(&s), Err(SpecError::Field("linux.sysctl")));
        }
    }
}
