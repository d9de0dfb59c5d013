//! The measured projection of an OCI runtime spec.
//!
//! What is measured for a container (`config_digest` in its `container.create` record) is the
//! SHA-384 of the RFC 8785 canonical JSON of this projection of the very spec that runs. The
//! projection applies to any spec, whoever built it (vouchd, or containerd through a shim):
//!
//! 1. The spec is serialized as the OCI runtime spec says (camelCase keys).
//! 2. Removed, because they are host-local and say nothing about the workload:
//!    `root.path` (where the bundle's root filesystem lies), `linux.cgroupsPath` (where the
//!    host accounts for it) and `hostname` (by default its id; a hostname chosen for the
//!    workload, such as a pod's, vouchd measures in the `io.vouch.hostname` annotation).
//! 3. Mount sources under the daemon's state directory are written relative to it, as
//!    `$ROOT/...`, and a path component equal to the container's id as `$ID`: a volume is
//!    `$ROOT/volumes/NAME` and the secrets directory `$ROOT/containers/$ID/secrets` on every
//!    launch. Any other source (a host path bound in by a foreign spec) stays as it is.
//! 4. Capability sets (`process.capabilities.*`) are sets: sorted.
//! 5. The path of a namespace the container joins (`linux.namespaces[].path`: a
//!    `/proc/PID/ns/net` or a bind mount, host-local) is written as `$JOINED`; which namespace
//!    it is, vouchd measures in the `io.vouch.network` annotation (`container:ID` or `ns`).
//!
//! Everything else is in: args, env, cwd, user and groups, umask, capabilities, rlimits,
//! `noNewPrivileges`, the complete seccomp profile, namespaces, mounts with their options,
//! devices, masked and read-only paths, resources, sysctls, hooks, annotations (vouch records
//! secret references and published ports there), and any field a later spec version adds.

use std::path::Path;

use serde_json::Value;

use crate::spec::{for_libcontainer, Spec, SpecError};

/// Stands for the daemon's state directory in a projected mount source.
pub(crate) const ROOT_PLACEHOLDER: &str = "$ROOT";
/// Stands for the container's id in a projected mount source.
pub(crate) const ID_PLACEHOLDER: &str = "$ID";
/// Stands for the path of a namespace the container joins (host-local: a `/proc/PID/ns/...`
/// or a bind mount); what it joined is measured in the `io.vouch.network` annotation.
pub(crate) const JOINED_PLACEHOLDER: &str = "$JOINED";
/// The fields the projection removes, as JSON pointers.
pub const REMOVED: &[&str] = &["/root/path", "/linux/cgroupsPath", "/hostname"];

/// What is host-local about one launch.
#[derive(Debug, Clone, Copy)]
pub struct HostLocal<'a> {
    /// The daemon's state directory.
    pub root: &'a Path,
    /// The container's id.
    pub id: &'a str,
}

/// The projection of `spec`, as a JSON value (documented in the module).
pub(crate) fn project(spec: &Spec, host: &HostLocal<'_>) -> Result<Value, SpecError> {
    let mut v = serde_json::to_value(spec).map_err(|_| SpecError::Serialize)?;
    for pointer in REMOVED {
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        if let Some(Value::Object(o)) = v.pointer_mut(parent) {
            o.remove(key);
        }
    }
    if let Some(Value::Array(mounts)) = v.get_mut("mounts") {
        for m in mounts {
            if let Some(Value::String(source)) = m.get_mut("source") {
                if let Some(rel) = Path::new(source.as_str())
                    .strip_prefix(host.root)
                    .ok()
                    .filter(|_| source.starts_with('/'))
                {
                    let mut out = String::from(ROOT_PLACEHOLDER);
                    for c in rel.components() {
                        out.push('/');
                        let c = c.as_os_str().to_string_lossy();
                        out.push_str(if c == host.id { ID_PLACEHOLDER } else { &c });
                    }
                    *source = out;
                }
            }
        }
    }
    if let Some(Value::Array(namespaces)) = v.pointer_mut("/linux/namespaces") {
        for ns in namespaces {
            if let Some(path) = ns.get_mut("path") {
                *path = Value::String(JOINED_PLACEHOLDER.into());
            }
        }
    }
    if let Some(Value::Object(caps)) = v.pointer_mut("/process/capabilities") {
        for set in caps.values_mut() {
            if let Value::Array(items) = set {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    Ok(v)
}

/// `sha384:<hex>` of the canonical JSON of a projection.
pub(crate) fn digest_of(projection: &Value) -> Result<String, SpecError> {
    vouch_measure::canonical_sha384(projection).map_err(|_| SpecError::Serialize)
}

/// The measured digest of `spec`.
pub fn digest(spec: &Spec, host: &HostLocal<'_>) -> Result<String, SpecError> {
    digest_of(&project(spec, host)?)
}

/// A spec as measured: its projection and that projection's digest.
#[derive(Debug, Clone)]
pub struct Measured {
    pub projection: Value,
    pub digest: String,
}

impl Measured {
    pub fn of(spec: &Spec, host: &HostLocal<'_>) -> Result<Measured, SpecError> {
        let projection = project(spec, host)?;
        let digest = digest_of(&projection)?;
        Ok(Measured { projection, digest })
    }

    /// The spec a `config.json` written by [`prepare`] says, as measured: what vouchd shows of
    /// a container, and what a verifier or a test recomputes from the file libcontainer was
    /// given (libcontainer's reading of masked comparisons undone).
    pub fn of_config(config_json: &[u8], host: &HostLocal<'_>) -> Result<Measured, SpecError> {
        let handed: Spec =
            serde_json::from_slice(config_json).map_err(|e| SpecError::BadConfig(e.to_string()))?;
        Measured::of(&for_libcontainer(handed)?, host)
    }
}

/// A spec ready to run: the `config.json` bytes handed to the runtime and the spec as
/// measured, both from the one value.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub config_json: Vec<u8>,
    pub measured: Measured,
}

/// Prepare `spec` for libcontainer: the bytes of the file it reads and the spec they say, as
/// measured (see [`for_libcontainer`] for the one rewriting between them).
pub fn prepare(spec: &Spec, host: &HostLocal<'_>) -> Result<Prepared, SpecError> {
    let measured = Measured::of(spec, host)?;
    let config_json = serde_json::to_vec_pretty(&for_libcontainer(spec.clone())?)
        .map_err(|_| SpecError::Serialize)?;
    Ok(Prepared {
        config_json,
        measured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ContainerSpec, Resources, Volume};
    use serde_json::json;

    const ROOT: &str = "/var/lib/vouch";
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn host() -> HostLocal<'static> {
        HostLocal {
            root: Path::new(ROOT),
            id: ID,
        }
    }

    fn full_spec() -> ContainerSpec {
        ContainerSpec {
            id: ID.into(),
            args: vec!["/bin/app".into(), "--serve".into()],
            env: vec!["PATH=/bin".into(), "MODE=prod".into()],
            cwd: "/srv".into(),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10, 20],
            hostname: ID[..12].into(),
            hostname_measured: false,
            host_network: false,
            joined_network: None,
            resources: Resources {
                memory_bytes: Some(64 << 20),
                pids_limit: Some(100),
                cpu_quota: Some(50_000),
            },
            cgroup_parent: "vouch".into(),
            secrets: vec!["kbs://127.0.0.1:8080/default/key/one".into()],
            secrets_dir: Some(format!("{ROOT}/containers/{ID}/secrets").into()),
            volumes: vec![Volume {
                name: "data".into(),
                source: format!("{ROOT}/volumes/data").into(),
                target: "/data".into(),
                readonly: false,
                shared: false,
            }],
            copies: vec![crate::spec::CopyMount {
                source: "/etc/app".into(),
                dir: format!("{ROOT}/containers/{ID}/copies/0").into(),
                target: "/etc/app".into(),
                digest: format!("sha384:{}", "ab".repeat(48)),
            }],
            sysctls: [("kernel.shm_rmid_forced".to_string(), "1".to_string())].into(),
            seccomp_extra: Some(
                crate::spec::check_added_seccomp(&json!({
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}],
                }))
                .expect("profile"),
            ),
            publish: vec![crate::net::PortMapping::parse(
                "8080:80",
                std::net::IpAddr::from([127, 0, 0, 1]),
            )
            .expect("port")],
            terminal: true,
            stdin: true,
            readonly_rootfs: true,
            cap_drop: vec!["CAP_NET_RAW".into()],
            masked_paths: vec!["/proc/secret-place".into()],
            readonly_paths: vec!["/proc/other-place".into()],
            resolv_conf: Some((
                format!("{ROOT}/containers/{ID}/resolv.conf").into(),
                "nameserver 10.96.0.10\nsearch shop.svc.cluster.local\n".into(),
            )),
        }
    }

    /// Every leaf of the serialized spec, as a JSON pointer.
    fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    leaves(
                        x,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    )
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for (i, x) in a.iter().enumerate() {
                    leaves(x, format!("{at}/{i}"), out)
                }
            }
            _ => out.push(at),
        }
    }

    /// A different value of the same type at `pointer`, or None where the type has no other
    /// value that still parses (then the enclosing array element is dropped instead).
    fn mutate(v: &Value, pointer: &str) -> Option<Spec> {
        let mut m = v.clone();
        let leaf = m.pointer_mut(pointer)?;
        *leaf = match leaf.take() {
            Value::Bool(b) => json!(!b),
            Value::Number(n) => json!(n.as_u64().map(|x| x ^ 1).unwrap_or(7)),
            Value::String(s) => json!(format!("{s}x")),
            Value::Null => json!(1),
            Value::Array(_) => json!([]),
            Value::Object(_) => json!({}),
        };
        if let Ok(spec) = serde_json::from_value(m.clone()) {
            return Some(spec);
        }
        // An enumeration: another of its values.
        const OTHERS: &[&str] = &[
            "SCMP_ACT_KILL",
            "SCMP_ACT_LOG",
            "SCMP_ARCH_X86",
            "SCMP_CMP_GT",
            "RLIMIT_CORE",
            "CAP_SYS_ADMIN",
            "cgroup",
        ];
        OTHERS.iter().find_map(|o| {
            *m.pointer_mut(pointer)? = json!(o);
            serde_json::from_value(m.clone()).ok()
        })
    }

    /// The spec without the array element that holds `pointer`.
    fn drop_element(v: &Value, pointer: &str) -> Option<Spec> {
        let segments: Vec<&str> = pointer.split('/').collect();
        let at = segments.iter().rposition(|s| s.parse::<usize>().is_ok())?;
        let parent = segments[..at].join("/");
        let index: usize = segments[at].parse().ok()?;
        let mut m = v.clone();
        m.pointer_mut(&parent)?.as_array_mut()?.remove(index);
        serde_json::from_value(m).ok()
    }

    /// Changing any field in the projection changes the digest; changing a removed field does
    /// not. Every leaf of a spec that uses every feature vouch sets is tried.
    #[test]
    fn every_projected_field_changes_the_digest() {
        let joined = crate::spec::JoinedNetwork {
            path: "/proc/4242/ns/net".into(),
            label: format!("container:{ID}"),
            id: (4, 4026531840),
        };
        for (host_network, joined_network, chosen) in [
            (false, None, false),
            (true, None, true),
            (false, Some(joined), false),
        ] {
            let mut cs = full_spec();
            cs.host_network = host_network;
            cs.joined_network = joined_network;
            if chosen {
                cs.hostname = "db-1".into();
                cs.hostname_measured = true;
            }
            let spec = cs.to_spec().expect("spec");
            let base = digest(&spec, &host()).expect("digest");
            let v = serde_json::to_value(&spec).expect("json");
            let mut all = Vec::new();
            leaves(&v, String::new(), &mut all);
            assert!(all.len() > 400, "{} leaves", all.len());
            let mut tried = 0;
            for pointer in &all {
                let removed = REMOVED.iter().any(|r| pointer == r)
                    || (pointer.starts_with("/linux/namespaces/") && pointer.ends_with("/path"));
                let changed = mutate(&v, pointer)
                    .filter(|s| s != &spec)
                    .or_else(|| drop_element(&v, pointer))
                    .unwrap_or_else(|| panic!("no mutation of {pointer} parses"));
                let d = digest(&changed, &host()).expect("digest");
                if removed {
                    assert_eq!(d, base, "{pointer} is host-local and not measured");
                } else {
                    assert_ne!(d, base, "{pointer} changed but the digest did not");
                }
                tried += 1;
            }
            assert_eq!(tried, all.len());
        }
    }

    /// What the projection leaves out, and how it writes host paths.
    #[test]
    fn host_local_fields_are_removed_and_state_paths_relative() {
        let spec = full_spec().to_spec().expect("spec");
        let p = project(&spec, &host()).expect("projection");
        assert!(p.pointer("/root/path").is_none());
        assert_eq!(p.pointer("/root/readonly"), Some(&json!(true)));
        assert!(p.pointer("/linux/cgroupsPath").is_none());
        assert!(p.get("hostname").is_none());
        let sources: Vec<&str> = p["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter_map(|m| m["source"].as_str())
            .collect();
        assert!(sources.contains(&"$ROOT/volumes/data"), "{sources:?}");
        assert!(
            sources.contains(&"$ROOT/containers/$ID/secrets"),
            "{sources:?}"
        );
        assert!(
            sources.contains(&"$ROOT/containers/$ID/resolv.conf"),
            "{sources:?}"
        );
        assert!(
            sources.contains(&"$ROOT/containers/$ID/copies/0"),
            "{sources:?}"
        );
        assert!(!p.to_string().contains(ID), "the id appears nowhere");
        // Two launches of the same workload measure the same, whatever their ids.
        let other = "f".repeat(64);
        let mut cs = full_spec();
        cs.id = other.clone();
        cs.hostname = other[..12].into();
        cs.secrets_dir = Some(format!("{ROOT}/containers/{other}/secrets").into());
        if let Some((file, _)) = cs.resolv_conf.as_mut() {
            *file = format!("{ROOT}/containers/{other}/resolv.conf").into();
        }
        cs.copies[0].dir = format!("{ROOT}/containers/{other}/copies/0").into();
        let d2 = digest(
            &cs.to_spec().expect("spec"),
            &HostLocal {
                root: Path::new(ROOT),
                id: &other,
            },
        )
        .expect("digest");
        assert_eq!(d2, digest(&spec, &host()).expect("digest"));
        // A source outside the state directory (a prefix that is not a path prefix) stays.
        let mut cs = full_spec();
        cs.volumes[0].source = format!("{ROOT}-other/volumes/data").into();
        let p = project(&cs.to_spec().expect("spec"), &host()).expect("projection");
        assert!(p.to_string().contains("/var/lib/vouch-other/volumes/data"));
        // Secret references and published ports are measured through the annotations.
        assert_eq!(
            p["annotations"][crate::spec::SECRETS_ANNOTATION],
            json!(json!(["kbs://127.0.0.1:8080/default/key/one"]).to_string())
        );
        assert_eq!(
            p["annotations"][crate::spec::PORTS_ANNOTATION],
            json!(json!(["127.0.0.1:8080->80/tcp"]).to_string())
        );
    }

    /// A joined network namespace: the runtime is given its path, the measurement says what
    /// it is (the annotation) and not where it happened to be (the path is host-local).
    #[test]
    fn a_joined_network_is_measured_by_what_it_is_not_where() {
        let with = |path: &str, label: &str| {
            let mut cs = full_spec();
            cs.joined_network = Some(crate::spec::JoinedNetwork {
                path: path.into(),
                label: label.into(),
                id: (4, 1),
            });
            cs.to_spec().expect("spec")
        };
        let spec = with("/proc/4242/ns/net", "container:abc");
        let net = |v: &Value| {
            v["linux"]["namespaces"]
                .as_array()
                .expect("namespaces")
                .iter()
                .find(|n| n["type"] == "network")
                .cloned()
                .expect("network namespace")
        };
        assert_eq!(
            net(&serde_json::to_value(&spec).expect("json"))["path"],
            "/proc/4242/ns/net"
        );
        let p = project(&spec, &host()).expect("projection");
        assert_eq!(net(&p)["path"], "$JOINED");
        assert_eq!(p["annotations"]["io.vouch.network"], "container:abc");
        let d = |s: &Spec| digest(s, &host()).expect("digest");
        assert_eq!(d(&spec), d(&with("/proc/7/ns/net", "container:abc")));
        assert_ne!(d(&spec), d(&with("/proc/4242/ns/net", "container:def")));
        assert_ne!(d(&spec), d(&full_spec().to_spec().expect("spec")));
        assert!(full_spec()
            .to_spec()
            .expect("spec")
            .annotations()
            .as_ref()
            .is_some_and(|a| !a.contains_key("io.vouch.network")));
    }

    /// The file handed to libcontainer says the spec that was hashed: recomputing the digest
    /// from its bytes gives the measured one, and the only rewriting on the way is the swap of
    /// masked-comparison operands.
    #[test]
    fn libcontainer_is_handed_the_value_that_was_hashed() {
        let spec = full_spec().to_spec().expect("spec");
        let prepared = prepare(&spec, &host()).expect("prepare");
        assert_eq!(
            prepared.measured.digest,
            digest(&spec, &host()).expect("digest")
        );
        assert_eq!(
            Measured::of_config(&prepared.config_json, &host())
                .expect("digest")
                .digest,
            prepared.measured.digest
        );
        let handed: Spec = serde_json::from_slice(&prepared.config_json).expect("parse");
        assert_eq!(for_libcontainer(handed.clone()).expect("swap"), spec);
        assert_ne!(handed, spec, "the masked comparison is swapped in the file");
    }

    /// The capability sets are measured in one order whatever order a spec lists them in.
    #[test]
    fn capability_order_does_not_change_the_digest() {
        let spec = full_spec().to_spec().expect("spec");
        let mut v = serde_json::to_value(&spec).expect("json");
        let caps = v["process"]["capabilities"]["bounding"]
            .as_array_mut()
            .expect("caps");
        caps.reverse();
        let reordered: Spec = serde_json::from_value(v).expect("parse");
        assert_eq!(
            digest(&reordered, &host()).expect("digest"),
            digest(&spec, &host()).expect("digest")
        );
    }
}
