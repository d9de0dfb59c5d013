//! The checks of a create request that need nothing but the request: network mode, published
//! ports, volumes, resource limits. A pure function, so that every entry point (the REST API,
//! the Conker facade, a containerd shim) refuses the same requests with the same words.

use std::net::IpAddr;
use std::path::Path;

use vouch_api::CreateContainer;
use vouch_runtime::net::PortMapping;
use vouch_runtime::spec;

use crate::engine::EngineError;

/// The network namespace a request asks to join instead of one of its own.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Join {
    /// Another container's (`container:NAME`, docker's and podman's convention).
    Container(String),
    /// The namespace at a path (`ns:PATH`, podman's): a pod's, bind-mounted or `/proc/PID/ns/net`.
    Path(std::path::PathBuf),
}

/// What a request asks for, checked.
#[derive(Debug)]
pub(crate) struct Checked {
    pub host_network: bool,
    pub join: Option<Join>,
    pub publish: Vec<PortMapping>,
    pub volumes: Vec<spec::Volume>,
    /// A seccomp profile added to vouch's own.
    pub seccomp: Option<vouch_runtime::spec::AddedSeccomp>,
    /// Kernel parameters, keys with '.' separators.
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// Read-only copies of host paths: (host path, container path).
    pub copies: Vec<(std::path::PathBuf, String)>,
    pub memory_bytes: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cap_drop: Vec<String>,
}

/// Check a create request; `publish_address` is where a port published without an address
/// listens, `volumes_dir` where named volumes live.
pub(crate) fn check(
    req: &CreateContainer,
    publish_address: IpAddr,
    volumes_dir: &Path,
) -> Result<Checked, EngineError> {
    let mode = match req.network.as_deref() {
        None | Some("") => "none",
        Some(m) => m,
    };
    let (host_network, join) = match vouch_api::NetworkMode::parse(mode)
        .map_err(|e| EngineError::BadRequest(format!("unknown network mode {mode:?}: {e}")))?
    {
        vouch_api::NetworkMode::Own => (false, None),
        vouch_api::NetworkMode::Host => (true, None),
        vouch_api::NetworkMode::Container(name) => (false, Some(Join::Container(name))),
        vouch_api::NetworkMode::Path(path) => (false, Some(Join::Path(path.into()))),
    };
    let publish = req
        .publish
        .iter()
        .map(|p| {
            PortMapping::parse(p, publish_address)
                .map_err(|e| EngineError::BadRequest(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if host_network && !publish.is_empty() {
        return Err(EngineError::Refused {
            code: vouch_api::codes::PORTS_WITH_HOST_NETWORK,
            message: "published ports need the private network namespace; on the host's network the container's ports are the host's already".into(),
        });
    }
    if join.is_some() && !publish.is_empty() {
        return Err(EngineError::BadRequest(
            "published ports need a network namespace of the container's own; publish them on the container whose network it joins".into(),
        ));
    }
    for (i, p) in publish.iter().enumerate() {
        if publish[..i].iter().any(|q| {
            q.host_port == p.host_port
                && (q.host_ip == p.host_ip
                    || q.host_ip.is_unspecified()
                    || p.host_ip.is_unspecified())
        }) {
            return Err(EngineError::BadRequest(format!(
                "host port {} is published twice",
                p.host_port
            )));
        }
    }
    let mut volumes: Vec<spec::Volume> = Vec::new();
    let mut copies: Vec<(std::path::PathBuf, String)> = Vec::new();
    for v in &req.volumes {
        let arg = spec::parse_volume_arg(v)?;
        let target = match &arg {
            spec::VolumeArg::Named { target, .. } | spec::VolumeArg::Copy { target, .. } => target,
        };
        if volumes.iter().any(|o| o.target == *target) || copies.iter().any(|c| c.1 == *target) {
            return Err(EngineError::BadRequest(format!(
                "two volumes are mounted at {target}"
            )));
        }
        match arg {
            spec::VolumeArg::Named {
                name,
                target,
                readonly,
                shared,
            } => volumes.push(spec::Volume {
                source: volumes_dir.join(&name),
                name,
                target,
                readonly,
                shared,
            }),
            spec::VolumeArg::Copy { source, target } => copies.push((source, target)),
        }
    }
    let sysctls = sysctls(req, host_network, join.as_ref())?;
    let seccomp = match &req.seccomp {
        None => None,
        Some(v) => {
            if v.to_string().len() > 256 << 10 {
                return Err(EngineError::BadRequest(
                    "the seccomp profile is over 256 KiB".into(),
                ));
            }
            Some(vouch_runtime::spec::check_added_seccomp(v).map_err(EngineError::BadRequest)?)
        }
    };
    if let Some(h) = &req.hostname {
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if h.len() > 64 || !h.split('.').all(label_ok) {
            return Err(EngineError::BadRequest(format!(
                "invalid hostname {h:?}: labels of letters, digits and '-' joined by '.', at most 64 bytes"
            )));
        }
    }
    if let Some(text) = &req.resolv_conf {
        if text.len() > 4096
            || text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(EngineError::BadRequest(
                "invalid resolv.conf: at most 4096 bytes of text lines".into(),
            ));
        }
    }
    let cap_drop = spec::parse_cap_drop(&req.cap_drop)?;
    for p in &req.masked_paths {
        spec::check_container_path("masked", p)?;
    }
    for p in &req.readonly_paths {
        spec::check_container_path("read-only", p)?;
    }
    let memory_bytes = req.memory.as_deref().map(spec::parse_memory).transpose()?;
    let cpu_quota = req.cpus.as_deref().map(spec::parse_cpus).transpose()?;
    if let Some(p) = req.pids_limit {
        if p <= 0 {
            return Err(EngineError::Refused {
                code: vouch_api::codes::PIDS_LIMIT,
                message: format!("the pids limit must be positive, got {p}"),
            });
        }
    }
    Ok(Checked {
        host_network,
        join,
        publish,
        volumes,
        copies,
        sysctls,
        seccomp,
        memory_bytes,
        cpu_quota,
        cap_drop,
    })
}

/// The IPC namespace's kernel parameters (the container has its own IPC namespace).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The kernel parameters a request sets, checked: only those of namespaces the container does
/// not share with the host (its IPC namespace; `net.*` in a network namespace that is not the
/// host's, nor another vouch container's, which that container's own settings govern).
fn sysctls(
    req: &CreateContainer,
    host_network: bool,
    join: Option<&Join>,
) -> Result<std::collections::BTreeMap<String, String>, EngineError> {
    let mut out = std::collections::BTreeMap::new();
    for (key, value) in &req.sysctls {
        let k = key.replace('/', ".");
        let bad = |why: &str| EngineError::BadRequest(format!("sysctl {key}: {why}"));
        let shape = !k.is_empty()
            && k.len() <= 128
            && k.split('.').all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        if !shape {
            return Err(bad(
                "not a kernel parameter name (such as kernel.shm_rmid_forced)",
            ));
        }
        if value.is_empty()
            || value.len() > 256
            || value
                .bytes()
                .any(|b| !(b' '..=b'~').contains(&b) && b != b'\t')
        {
            return Err(bad(
                "the value must be one line of printable text, at most 256 bytes",
            ));
        }
        if k.starts_with("net.") {
            if host_network {
                return Err(bad(
                    "net.* parameters are the host's on the host's network: run the container on its own network to set them",
                ));
            }
            if matches!(join, Some(Join::Container(_))) {
                return Err(bad(
                    "the network namespace joined is another container's: set net.* parameters on that container",
                ));
            }
        } else if !(IPC_SYSCTLS.contains(&k.as_str()) || k.starts_with("fs.mqueue.")) {
            return Err(bad(
                "not a parameter of the container's own namespaces (vouch sets IPC ones, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, and net.*): the others are the host's",
            ));
        }
        if out.insert(k.clone(), value.clone()).is_some() {
            return Err(bad("given twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(change: impl FnOnce(&mut CreateContainer)) -> CreateContainer {
        let mut r = CreateContainer {
            image: "busybox".into(),
            ..Default::default()
        };
        change(&mut r);
        r
    }

    fn refusal(r: CreateContainer) -> String {
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        match check(&r, local, Path::new("/v")) {
            Err(e) => vouch_base::error_chain(&e),
            Ok(c) => panic!("accepted: {c:?}"),
        }
    }

    #[test]
    fn a_plain_request_asks_for_nothing_special() {
        let c = check(
            &req(|_| {}),
            "127.0.0.1".parse().expect("ip"),
            Path::new("/v"),
        )
        .expect("check");
        assert!(!c.host_network);
        assert!(c.publish.is_empty() && c.volumes.is_empty());
        assert_eq!((c.memory_bytes, c.cpu_quota), (None, None));
    }

    /// The parameters of the container's own namespaces pass, keys with '/' normalized; net.*
    /// in a pod's namespace (joined by path) too.
    #[test]
    fn namespaced_sysctls_are_taken() {
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        let c = check(
            &req(|r| {
                r.sysctls = [
                    ("kernel/shm_rmid_forced".into(), "1".into()),
                    ("fs.mqueue.msg_max".into(), "100".into()),
                    ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
                    ("kernel.sem".into(), "250\t32000 32 128".into()),
                ]
                .into()
            }),
            local,
            Path::new("/v"),
        )
        .expect("check");
        let keys: Vec<&str> = c.sysctls.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "fs.mqueue.msg_max",
                "kernel.sem",
                "kernel.shm_rmid_forced",
                "net.ipv4.ip_unprivileged_port_start"
            ]
        );
        let pod = check(
            &req(|r| {
                r.network = Some("ns:/proc/1/ns/net".into());
                r.sysctls = [("net.core.somaxconn".into(), "1024".into())].into();
            }),
            local,
            Path::new("/v"),
        )
        .expect("a pod's namespace");
        assert_eq!(pod.sysctls["net.core.somaxconn"], "1024");
    }

    #[test]
    fn what_a_request_asks_for_is_parsed() {
        let c = check(
            &req(|r| {
                r.network = Some("none".into());
                r.publish = vec!["8080:80".into(), "0.0.0.0:8443:443".into()];
                r.volumes = vec!["data:/data".into(), "cache:/cache:ro".into()];
                r.memory = Some("64m".into());
                r.cpus = Some("0.5".into());
                r.pids_limit = Some(10);
            }),
            "127.0.0.1".parse().expect("ip"),
            Path::new("/v"),
        )
        .expect("check");
        assert_eq!(c.publish.len(), 2);
        assert_eq!(c.publish[0].host_ip.to_string(), "127.0.0.1");
        assert_eq!(c.publish[1].host_ip.to_string(), "0.0.0.0");
        assert_eq!(c.volumes[0].source, Path::new("/v/data"));
        assert!(c.volumes[1].readonly);
        assert_eq!(c.memory_bytes, Some(64 << 20));
        assert!(c.cpu_quota.is_some());
        let c = check(
            &req(|r| r.network = Some("host".into())),
            "127.0.0.1".parse().expect("ip"),
            Path::new("/v"),
        )
        .expect("host");
        assert!(c.host_network);
        for (mode, join) in [
            ("container:web", Join::Container("web".into())),
            ("ns:/run/netns/pod", Join::Path("/run/netns/pod".into())),
        ] {
            let c = check(
                &req(|r| r.network = Some(mode.into())),
                "127.0.0.1".parse().expect("ip"),
                Path::new("/v"),
            )
            .expect(mode);
            assert!(!c.host_network);
            assert_eq!(c.join, Some(join));
        }
    }

    #[test]
    fn each_bad_request_is_refused_with_its_reason() {
        assert_eq!(
            refusal(req(|r| r.network = Some("bridge".into()))),
            "unknown network mode \"bridge\": use none, host, container:NAME or ns:/PATH"
        );
        for bad in ["", "-a", "a-", "a..b", "a_b", "a b", "a/b", &"x".repeat(65)] {
            assert!(
                refusal(req(|r| r.hostname = Some(bad.to_string())))
                    .starts_with(&format!("invalid hostname {bad:?}")),
                "{bad}"
            );
        }
        for good in ["db-1", "web-0.shop", "A1", &"x".repeat(63)] {
            check(
                &req(|r| r.hostname = Some(good.to_string())),
                "127.0.0.1".parse().expect("ip"),
                Path::new("/v"),
            )
            .expect(good);
        }
        for (r, says) in [
            (
                req(|r| r.cap_drop = vec!["NOPE".into()]),
                "unknown capability \"NOPE\"",
            ),
            (
                req(|r| r.masked_paths = vec!["relative".into()]),
                "invalid masked path \"relative\"",
            ),
            (
                req(|r| r.readonly_paths = vec!["/a/../etc".into()]),
                "invalid read-only path \"/a/../etc\"",
            ),
        ] {
            let got = refusal(r);
            assert!(got.contains(says), "{got}");
        }
        for bad in [
            "x".repeat(4097),
            "nameserver 1.1.1.1\0".into(),
            "a\rb".into(),
        ] {
            assert_eq!(
                refusal(req(|r| r.resolv_conf = Some(bad.clone()))),
                "invalid resolv.conf: at most 4096 bytes of text lines"
            );
        }
        let c = check(
            &req(|r| r.cap_drop = vec!["net_raw".into(), "CAP_CHOWN".into(), "NET_RAW".into()]),
            "127.0.0.1".parse().expect("ip"),
            Path::new("/v"),
        )
        .expect("cap drop");
        assert_eq!(c.cap_drop, ["CAP_NET_RAW", "CAP_CHOWN"]);
        let c = check(
            &req(|r| r.cap_drop = vec!["CHOWN".into(), "all".into()]),
            "127.0.0.1".parse().expect("ip"),
            Path::new("/v"),
        )
        .expect("all");
        assert_eq!(c.cap_drop, ["ALL"]);
        for bad in ["container:", "ns:", "ns:relative/path", "pod:x"] {
            assert!(
                refusal(req(|r| r.network = Some(bad.into())))
                    .starts_with(&format!("unknown network mode {bad:?}")),
                "{bad}"
            );
        }
        assert!(refusal(req(|r| {
            r.network = Some("container:web".into());
            r.publish = vec!["80:80".into()];
        }))
        .starts_with("published ports need a network namespace of the container's own"));
        assert!(refusal(req(|r| {
            r.network = Some("host".into());
            r.publish = vec!["80:80".into()];
        }))
        .starts_with("published ports need the private network namespace"));
        assert_eq!(
            refusal(req(|r| r.publish = vec!["8080:80".into(), "8080:81".into()])),
            "host port 8080 is published twice"
        );
        // An unspecified address overlaps every other.
        assert_eq!(
            refusal(req(
                |r| r.publish = vec!["127.0.0.1:8080:80".into(), "0.0.0.0:8080:81".into()]
            )),
            "host port 8080 is published twice"
        );
        assert_eq!(
            refusal(req(|r| r.volumes = vec!["a:/d".into(), "b:/d".into()])),
            "two volumes are mounted at /d"
        );
        assert_eq!(
            refusal(req(|r| r.pids_limit = Some(0))),
            "the pids limit must be positive, got 0"
        );
        for (r, says) in [
            (
                req(|r| r.memory = Some("lots".into())),
                "invalid memory size \"lots\"",
            ),
            (
                req(|r| r.cpus = Some("-1".into())),
                "invalid CPU count \"-1\"",
            ),
            (
                req(|r| r.publish = vec!["nope".into()]),
                "invalid published port \"nope\"",
            ),
            (
                req(|r| r.volumes = vec!["/host:/d".into()]),
                "a host path is given to a container only read-only",
            ),
            (
                req(|r| r.volumes = vec!["./host:/d:ro".into()]),
                "an absolute /HOST/PATH:/PATH:ro",
            ),
            (
                req(|r| r.volumes = vec!["/a/../etc:/d:ro".into()]),
                "the host path must be absolute and normalized",
            ),
            (
                req(|r| r.volumes = vec!["/etc:/proc/x:ro".into()]),
                "the container path is reserved",
            ),
            (
                req(|r| r.volumes = vec!["data:/d".into(), "/etc:/d:ro".into()]),
                "two volumes are mounted at /d",
            ),
            (
                req(|r| r.sysctls = [("kernel.hostname".into(), "x".into())].into()),
                "sysctl kernel.hostname: not a parameter of the container's own namespaces",
            ),
            (
                req(|r| r.sysctls = [("vm.overcommit_memory".into(), "1".into())].into()),
                "sysctl vm.overcommit_memory: not a parameter of the container's own namespaces",
            ),
            (
                req(|r| {
                    r.network = Some("host".into());
                    r.sysctls = [("net.ipv4.ip_forward".into(), "1".into())].into();
                }),
                "net.* parameters are the host's on the host's network",
            ),
            (
                req(|r| {
                    r.network = Some("container:web".into());
                    r.sysctls = [("net.core.somaxconn".into(), "1024".into())].into();
                }),
                "the network namespace joined is another container's",
            ),
            (
                req(|r| r.sysctls = [("kernel.sem".into(), "1\n2".into())].into()),
                "the value must be one line of printable text",
            ),
            (
                req(|r| r.sysctls = [("kernel/../sem".into(), "1".into())].into()),
                "not a kernel parameter name",
            ),
            (
                req(|r| {
                    r.sysctls = [
                        ("kernel.sem".into(), "1".into()),
                        ("kernel/sem".into(), "2".into()),
                    ]
                    .into()
                }),
                "given twice",
            ),
        ] {
            let got = refusal(r);
            assert!(got.contains(says), "{got}");
        }
    }
}
