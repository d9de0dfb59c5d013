//! The kubelet's path: containerd's CRI plugin (a real containerd 1.6) driven over gRPC with a
//! CRI client, runtime handler `vouch`. A pod's sandbox is the shim's own; its containers are
//! vouchd tasks, pulled, verified and measured by vouchd with their pod's names.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;
use vouch_testkit::containerd::Containerd;
use vouch_testkit::*;

/// A CRI client on containerd's socket, each call bounded in time.
struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    fn connect(socket: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let channel = rt
            .block_on(crate::cri_client::channel(socket))
            .expect("connect to the CRI");
        Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }

    fn call<T, F>(&self, f: F) -> Result<T, tonic::Status>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(120), f).await })
            .map_err(|_| tonic::Status::deadline_exceeded("the CRI call took over 120 s"))?
            .map(tonic::Response::into_inner)
    }

    fn rs(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    fn is(&self) -> ImageServiceClient<Channel> {
        self.images.clone()
    }

    /// Pull as the kubelet does; the image's id, which the kubelet then names the image by.
    fn pull(&self, image: &str) -> String {
        self.call(self.is().pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .unwrap_or_else(|e| panic!("PullImage {image}: {e}"))
        .image_ref
    }

    /// RunPodSandbox with runtime handler `vouch`: the sandbox's id.
    fn run_pod(&self, config: &PodSandboxConfig, c: &Containerd) -> String {
        self.call(self.rs().run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "vouch".into(),
        }))
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log()))
        .pod_sandbox_id
    }

    /// StopPodSandbox, then RemovePodSandbox, as the kubelet ends a pod.
    fn end_pod(&self, sandbox: &str, c: &Containerd) {
        self.call(self.rs().stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: sandbox.into(),
        }))
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", c.log()));
        self.call(self.rs().remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: sandbox.into(),
        }))
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", c.log()));
    }

    fn container_state(&self, id: &str) -> ContainerStatus {
        self.call(self.rs().container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }))
        .expect("ContainerStatus")
        .status
        .expect("status")
    }
}

fn pod_config(name: &str, logs: &Path) -> PodSandboxConfig {
    crate::cri_client::pod_config("shop", name, Some(logs))
}

fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        envs: vec![KeyValue {
            key: "GREETING".into(),
            value: "hello from cri".into(),
        }],
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

/// A node's containerd with its CRI, its shims talking to the test's vouchd, `reg` reached
/// over plain HTTP, and the pause image (the busybox layout) in its `k8s.io` namespace (the
/// CRI needs one; vouch's shim never runs it); a CRI client on it. None when containerd is not
/// installed.
fn node(env: &TestEnv, reg: &Registry) -> Option<(Containerd, Cri)> {
    let c = Containerd::start_cri(
        &env.path().join("containerd"),
        &env.socket(),
        &[reg.addr.as_str()],
    )?;
    c.import_layout("k8s.io", &env.path().join("layout"), "localhost/pause");
    let cri = Cri::connect(c.cri_socket());
    Some((c, cri))
}

/// What a pod's test runs against: a registry holding busybox as `app/bb:1`, a vouchd that
/// pulls from it, a node (containerd with its CRI) and a client, the image pulled as the
/// kubelet does (`image_id`, what the kubelet names it by), and a directory for the pods' logs.
struct Pod {
    _reg: Registry,
    d: Daemon,
    c: Containerd,
    cri: Cri,
    image_id: String,
    logs: std::path::PathBuf,
}

/// A [`Pod`] node in `env`; None when a part is not installed.
fn pod_node(env: &TestEnv) -> Option<Pod> {
    let reg = Registry::start(env.path())?;
    let (layout, _) = busybox_layout(env);
    reg.push(&layout, "bb", "app/bb:1");
    let image = format!("{}/app/bb:1", reg.addr);
    let d = env.start_with(&["--tee", "sim", "--insecure-registry", &reg.addr]);
    let (c, cri) = node(env, &reg)?;
    let image_id = cri.pull(&image);
    let logs = env.path().join("pod-logs");
    std::fs::create_dir_all(&logs).expect("logs");
    Some(Pod {
        _reg: reg,
        d,
        c,
        cri,
        image_id,
        logs,
    })
}

/// The lines a container wrote, as the CRI's log file has them (`TIME STREAM F LINE`).
fn log_lines(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, ' ');
            let (_time, stream, _tag, text) = (f.next()?, f.next()?, f.next()?, f.next()?);
            Some((stream.to_string(), text.to_string()))
        })
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A pod through the kubelet's calls: its sandbox, a container pulled, verified and measured
/// by vouchd, its output in the CRI's log, stopped and removed; the node's evidence then lists
/// the container with its pod, and verifies. Nothing is left: no vouchd task, no shim.
#[test]
fn a_pod_runs_through_the_cri_measured_with_its_names() {
    if !require_root("a_pod_runs_through_the_cri_measured_with_its_names") {
        return;
    }
    let env = TestEnv::new();
    let Some(Pod {
        _reg,
        d,
        c,
        cri,
        image_id,
        logs,
    }) = pod_node(&env)
    else {
        return;
    };
    assert!(image_id.starts_with("sha256:"), "{image_id}");

    let config = pod_config("web-0", &logs);
    let sandbox = cri.run_pod(&config, &c);
    let status = cri
        .call(cri.rs().pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: false,
        }))
        .expect("PodSandboxStatus")
        .status
        .expect("status");
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(status.runtime_handler, "vouch");
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the pod");

    // The kubelet names the image by the id PullImage returned.
    let created = cri
        .call(cri.rs().create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container_config(
                "app",
                &image_id,
                &[
                    "/bin/sh",
                    "-c",
                    "echo $GREETING; echo to-err >&2; exec sleep 60",
                ],
            )),
            sandbox_config: Some(config.clone()),
        }))
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", c.log()))
        .container_id;
    assert_eq!(
        cri.container_state(&created).state,
        ContainerState::ContainerCreated as i32
    );
    cri.call(cri.rs().start_container(StartContainerRequest {
        container_id: created.clone(),
    }))
    .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", c.log()));
    assert_eq!(
        cri.container_state(&created).state,
        ContainerState::ContainerRunning as i32
    );
    // The pod's containers share its shim.
    assert_eq!(c.shim_pids(), shims);
    let log_file = logs.join("app/0.log");
    wait_for(
        "the container's output in the CRI's log",
        Duration::from_secs(20),
        || log_lines(&log_file).len() >= 2,
    );
    let mut lines = log_lines(&log_file);
    lines.sort();
    assert_eq!(
        lines,
        [
            ("stderr".to_string(), "to-err".to_string()),
            ("stdout".to_string(), "hello from cri".to_string())
        ]
    );
    // ExecSync, as `kubectl exec` without a terminal: output, exit code, measured.
    let exec = cri
        .call(cri.rs().exec_sync(ExecSyncRequest {
            container_id: created.clone(),
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo from exec $GREETING; echo exec-err >&2; exit 3".into(),
            ],
            timeout: 20,
        }))
        .unwrap_or_else(|e| panic!("ExecSync: {e}\n{}", c.log()));
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout),
        "from exec hello from cri\n"
    );
    assert_eq!(String::from_utf8_lossy(&exec.stderr), "exec-err\n");
    assert_eq!(exec.exit_code, 3);
    // ContainerStats: the container's cgroup, through the shim's Stats.
    let stats = cri
        .call(cri.rs().container_stats(ContainerStatsRequest {
            container_id: created.clone(),
        }))
        .unwrap_or_else(|e| panic!("ContainerStats: {e}\n{}", c.log()))
        .stats
        .expect("stats");
    let memory = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(memory > 0, "working set {memory}");
    assert!(stats
        .cpu
        .is_some_and(|c| c.usage_core_nano_seconds.is_some()));
    // UpdateContainerResources: refused with the reason, the limits being measured.
    let refused = cri
        .call(
            cri.rs()
                .update_container_resources(UpdateContainerResourcesRequest {
                    container_id: created.clone(),
                    linux: Some(LinuxContainerResources {
                        memory_limit_in_bytes: 100 << 20,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
        )
        .expect_err("an update is refused");
    assert!(
        refused
            .message()
            .contains("vouch measures a container's resources with its spec at its create"),
        "{}",
        refused.message()
    );
    // It is a vouchd task, listed with the rest.
    let vouch_name = format!("k8s.io--{created}");
    let ps: serde_json::Value = serde_json::from_str(&d.ok(&["ps", "--json"])).expect("ps");
    assert!(
        ps.as_array()
            .is_some_and(|a| a.iter().any(|c| c["name"] == vouch_name.as_str())),
        "{ps}"
    );

    cri.call(cri.rs().stop_container(StopContainerRequest {
        container_id: created.clone(),
        timeout: 2,
    }))
    .unwrap_or_else(|e| panic!("StopContainer: {e}\n{}", c.log()));
    let stopped = cri.container_state(&created);
    assert_eq!(stopped.state, ContainerState::ContainerExited as i32);
    // sleep, the container's first process, ignores SIGTERM: the CRI's SIGKILL after the
    // timeout ends it.
    assert_eq!(stopped.exit_code, 137);
    cri.call(cri.rs().remove_container(RemoveContainerRequest {
        container_id: created.clone(),
    }))
    .expect("RemoveContainer");
    cri.end_pod(&sandbox, &c);
    wait_for("the pod's shim to end", Duration::from_secs(20), || {
        !shims.iter().any(|p| pid_alive(*p))
    });
    assert_eq!(d.ok(&["ps", "-aq"]), "");

    // The node's evidence: the container's life, with its pod, replays and verifies.
    let log = d.ok(&["attest", "--format", "aael"]);
    let ops: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&vouch_name) || l.contains(&created))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(ops.contains(&"container.create"), "{log}");
    let create = log
        .lines()
        .find(|l| l.contains("container.create") && l.contains(&vouch_name))
        .expect("create record");
    assert!(
        create.contains(&format!(
            r#""pod":{{"container":"app","name":"web-0","namespace":"shop","sandbox_id":"{sandbox}","uid":"uid-web-0"}}"#
        )),
        "{create}"
    );
    let id = create
        .split("\"id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("id");
    let life: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(id))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        life,
        [
            "image.verified",
            "container.create",
            "container.start",
            "container.exec",
            "container.exit"
        ]
    );
    let verdict = d.attest_and_verify(env.path());
    assert!(
        verdict.contains(&format!(
            "pod:           shop/web-0 container app (sandbox {sandbox})"
        )),
        "{verdict}"
    );
}

/// Under an image policy that requires signatures, an unsigned image fails to start with
/// vouch's reason (what `kubectl describe` shows), and nothing is left: no vouchd task, no
/// record, and once the kubelet removes the container, nothing in the CRI.
#[test]
fn an_unsigned_image_fails_to_start_with_the_policys_reason() {
    if !require_root("an_unsigned_image_fails_to_start_with_the_policys_reason") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let (layout, _) = busybox_layout(&env);
    reg.push(&layout, "bb", "app/bb:1");
    let image = format!("{}/app/bb:1", reg.addr);
    let plain = env.start();
    let (key, _) = crate::registry::keygen(&env, &plain, "release");
    drop(plain);
    let policy = crate::registry::signature_policy(&env, &format!("{}/app", reg.addr), &key);
    let d = env.start_with(&[
        "--tee",
        "sim",
        "--insecure-registry",
        &reg.addr,
        "--image-policy",
        policy.to_str().expect("utf8"),
    ]);
    let Some((c, cri)) = node(&env, &reg) else {
        return;
    };
    // containerd's own pull takes it (containerd does not judge images for vouch).
    let image_id = cri.pull(&image);
    let before = d.ok(&["attest", "--format", "aael"]);
    let logs = env.path().join("pod-logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let config = pod_config("refused-0", &logs);
    let sandbox = cri.run_pod(&config, &c);
    // containerd's CRI makes the task (the shim's Create) at StartContainer: that is where
    // vouchd is first asked, and refuses.
    let created = cri
        .call(cri.rs().create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container_config("app", &image_id, &["/bin/true"])),
            sandbox_config: Some(config),
        }))
        .expect("CreateContainer");
    let refused = cri
        .call(cri.rs().start_container(StartContainerRequest {
            container_id: created.container_id.clone(),
        }))
        .expect_err("an unsigned image is refused");
    assert!(
        refused.message().contains("no signature attached"),
        "{}",
        refused.message()
    );
    // The kubelet's view: the container did not start, and why.
    let status = cri.container_state(&created.container_id);
    assert_eq!(status.state, ContainerState::ContainerExited as i32);
    assert_eq!(status.reason, "StartError");
    assert!(
        status.message.contains("no signature attached"),
        "{}",
        status.message
    );
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    assert_eq!(d.ok(&["attest", "--format", "aael"]), before);
    cri.call(cri.rs().remove_container(RemoveContainerRequest {
        container_id: created.container_id,
    }))
    .expect("RemoveContainer");
    let listed = cri
        .call(
            cri.rs()
                .list_containers(ListContainersRequest { filter: None }),
        )
        .expect("ListContainers");
    assert!(listed.containers.is_empty(), "{listed:?}");
    cri.end_pod(&sandbox, &c);
}

/// A CNI bridge of a test's own (its name and subnet from the test's PID, its addresses kept
/// in the test's directory), deleted when dropped.
struct Bridge(String);

impl Bridge {
    /// Write the CNI configuration containerd's CRI reads from `conf_dir`.
    fn configure(conf_dir: &Path, data_dir: &Path) -> Bridge {
        let pid = std::process::id();
        let name = format!("vouch{:05x}", pid & 0xfffff);
        let subnet = format!("10.231.{}.0/24", pid % 250);
        std::fs::create_dir_all(conf_dir).expect("cni dir");
        let conf = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "vouch-test",
            "plugins": [{
                "type": "bridge",
                "bridge": name,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "dataDir": data_dir,
                },
            }],
        });
        std::fs::write(conf_dir.join("10-vouch-test.conflist"), conf.to_string()).expect("conf");
        Bridge(name)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// An HTTP GET of `/` at `addr`: the response's body.
fn http_get(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(5),
    )
    .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string())
}

/// A pod with a network of its own (containerd's namespace, set up by a real CNI bridge): the
/// sandbox's process is in it, and each of the pod's vouchd containers joins it, so they share
/// one loopback and the pod's address, which the node reaches; their measured specs say they
/// joined a namespace vouchd did not make. A pod on the node's network has its containers on
/// the host's, as runc's handler does, measured without a network namespace.
#[test]
fn a_pods_containers_share_its_network_and_a_node_network_pod_is_on_the_hosts() {
    if !require_root("a_pods_containers_share_its_network_and_a_node_network_pod_is_on_the_hosts") {
        return;
    }
    let env = TestEnv::new();
    let _bridge = Bridge::configure(
        &env.path().join("containerd/cni"),
        &env.path().join("cni-addresses"),
    );
    let Some(Pod {
        _reg,
        d,
        c,
        cri,
        image_id,
        logs,
    }) = pod_node(&env)
    else {
        return;
    };
    let mut config = pod_config("net-0", &logs);
    if let Some(ns) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.network = NamespaceMode::Pod as i32;
    }
    config.hostname = "net-0-host".into();
    if let Some(linux) = config.linux.as_mut() {
        linux.sysctls = [
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
            (
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "80".to_string(),
            ),
        ]
        .into();
    }
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["shop.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let sandbox = cri.run_pod(&config, &c);
    let ip = cri
        .call(cri.rs().pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: false,
        }))
        .expect("PodSandboxStatus")
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    assert!(ip.starts_with("10.231."), "the pod's address: {ip:?}");
    let start = |name: &str, command: &[&str], config: &PodSandboxConfig, sandbox: &str| {
        let id = cri
            .call(cri.rs().create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.into(),
                config: Some(container_config(name, &image_id, command)),
                sandbox_config: Some(config.clone()),
            }))
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", c.log()))
            .container_id;
        cri.call(cri.rs().start_container(StartContainerRequest {
            container_id: id.clone(),
        }))
        .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", c.log()));
        id
    };
    let web = start(
        "web",
        &[
            "/bin/sh",
            "-c",
            "mkdir -p /tmp/www && echo pod-network > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        ],
        &config,
        &sandbox,
    );
    let probe = start("probe", &["/bin/sleep", "60"], &config, &sandbox);
    // The probe reaches web's listener on its own loopback: one network namespace.
    let exec = cri
        .call(cri.rs().exec_sync(ExecSyncRequest {
            container_id: probe.clone(),
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                "for i in $(seq 100); do wget -q -O - http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1".into(),
            ],
            timeout: 30,
        }))
        .unwrap_or_else(|e| panic!("ExecSync: {e}\n{}", c.log()));
    assert_eq!(
        (
            exec.exit_code,
            String::from_utf8_lossy(&exec.stdout).as_ref()
        ),
        (0, "pod-network\n"),
        "{}",
        String::from_utf8_lossy(&exec.stderr)
    );
    // The pod's hostname, as its containers see it under runc's handler.
    let named = cri
        .call(cri.rs().exec_sync(ExecSyncRequest {
            container_id: probe.clone(),
            cmd: vec!["/bin/hostname".into()],
            timeout: 10,
        }))
        .expect("ExecSync hostname");
    assert_eq!(String::from_utf8_lossy(&named.stdout), "net-0-host\n");
    // The pod's kernel parameters, in each container's namespaces; not the host's.
    let sysctls = cri
        .call(cri.rs().exec_sync(ExecSyncRequest {
            container_id: probe.clone(),
            cmd: vec![
                "/bin/cat".into(),
                "/proc/sys/kernel/shm_rmid_forced".into(),
                "/proc/sys/net/ipv4/ip_unprivileged_port_start".into(),
            ],
            timeout: 10,
        }))
        .expect("ExecSync sysctls");
    assert_eq!(String::from_utf8_lossy(&sysctls.stdout), "1\n80\n");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .expect("host's")
            .trim(),
        "1024"
    );
    // The pod's DNS config, as the CRI wrote it for the sandbox.
    let resolv = cri
        .call(cri.rs().exec_sync(ExecSyncRequest {
            container_id: probe.clone(),
            cmd: vec!["/bin/cat".into(), "/etc/resolv.conf".into()],
            timeout: 10,
        }))
        .expect("ExecSync resolv.conf");
    let resolv = String::from_utf8_lossy(&resolv.stdout).into_owned();
    for line in [
        "nameserver 10.96.0.10",
        "search shop.svc.cluster.local",
        "options ndots:5",
    ] {
        assert!(resolv.lines().any(|l| l == line), "{resolv}");
    }
    // The node reaches the pod at the address CNI gave it.
    assert_eq!(
        http_get(&format!("{ip}:8080")).as_deref(),
        Ok("pod-network\n")
    );
    // The pod's namespace, not the host's, for both; measured as joined.
    let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("netns");
    let pid_of = |id: &str| {
        d.json(&["inspect", &format!("k8s.io--{id}")])[0]["pid"]
            .as_i64()
            .expect("pid")
            .to_string()
    };
    assert_ne!(netns(&pid_of(&web)), netns("self"));
    assert_eq!(netns(&pid_of(&web)), netns(&pid_of(&probe)));
    for id in [&web, &probe] {
        let spec = d.json(&["inspect", "--spec", &format!("k8s.io--{id}")]);
        assert_eq!(spec[0]["spec"]["annotations"]["io.vouch.network"], "ns");
        assert_eq!(
            spec[0]["spec"]["linux"]["sysctl"]["kernel.shm_rmid_forced"],
            "1"
        );
        assert_eq!(
            spec[0]["spec"]["annotations"]["io.vouch.hostname"],
            "net-0-host"
        );
        assert_eq!(
            spec[0]["spec"]["annotations"]["io.vouch.resolv-conf"],
            resolv.as_str()
        );
    }
    cri.end_pod(&sandbox, &c);

    // A pod on the node's network: its container is on the host's, measured as such.
    let config = pod_config("node-net-0", &logs);
    let sandbox = cri.run_pod(&config, &c);
    let on_host = start("app", &["/bin/sleep", "60"], &config, &sandbox);
    assert_eq!(netns(&pid_of(&on_host)), netns("self"));
    let spec = d.json(&["inspect", "--spec", &format!("k8s.io--{on_host}")]);
    let spec = &spec[0]["spec"];
    assert!(
        spec["annotations"].get("io.vouch.network").is_none(),
        "{spec}"
    );
    assert!(
        !spec["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .any(|n| n["type"] == "network"),
        "{spec}"
    );
    cri.end_pod(&sandbox, &c);
    wait_for(
        "the pods' containers to go",
        Duration::from_secs(20),
        || d.ok(&["ps", "-aq"]).is_empty(),
    );
}

/// The client side of the kubelet's streaming protocol over a WebSocket, as `kubectl exec` and
/// `kubectl attach` speak it through the API server: `v4.channel.k8s.io`, each binary frame's
/// first byte its channel (0 stdin, 1 stdout, 2 stderr, 3 the status, 4 terminal resizes).
struct Stream {
    socket: std::net::TcpStream,
    buffered: Vec<u8>,
}

impl Stream {
    /// Open the stream at `url` (`http://HOST:PORT/PATH`, as the CRI's Exec and Attach answer).
    fn open(url: &str) -> Stream {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").expect("an http URL");
        let (addr, path) = rest.split_at(rest.find('/').expect("a path"));
        let mut socket = std::net::TcpStream::connect(addr).expect("the streaming server");
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        write!(
            socket,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dm91Y2gtc3RyZWFtLXRlc3Q=\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
        )
        .expect("handshake");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            socket
                .read_exact(&mut byte)
                .expect("the handshake's answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("v4.channel.k8s.io"), "{head}");
        Stream {
            socket,
            buffered: Vec::new(),
        }
    }

    /// Send `data` on `channel`, as a masked binary frame.
    fn send(&mut self, channel: u8, data: &[u8]) {
        use std::io::Write;
        let mut payload = vec![channel];
        payload.extend_from_slice(data);
        let mut frame = vec![0x82u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        let mask = [0x5a, 0x17, 0xc3, 0x9e];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.socket.write_all(&frame).expect("send");
    }

    /// The next data frame: (channel, bytes); None once the server closed the stream.
    fn receive(&mut self) -> Option<(u8, Vec<u8>)> {
        use std::io::Read;
        loop {
            let mut head = [0u8; 2];
            self.socket.read_exact(&mut head).ok()?;
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.socket.read_exact(&mut b).ok()?;
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.socket.read_exact(&mut b).ok()?;
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; len as usize];
            self.socket.read_exact(&mut payload).ok()?;
            match head[0] & 0x0f {
                8 => return None,
                1 | 2 if !payload.is_empty() => {
                    let channel = payload.remove(0);
                    return Some((channel, payload));
                }
                _ => {}
            }
        }
    }

    /// Everything until the status (channel 3): the output (channels 1 and 2) and the status.
    fn finish(&mut self, mut seen: impl FnMut(&[u8], &mut Stream)) -> (Vec<u8>, String) {
        let mut status = String::new();
        while let Some((channel, data)) = self.receive() {
            match channel {
                1 | 2 => {
                    self.buffered.extend_from_slice(&data);
                    let all = self.buffered.clone();
                    seen(&all, self);
                }
                3 => status.push_str(&String::from_utf8_lossy(&data)),
                _ => {}
            }
            if !status.is_empty() {
                break;
            }
        }
        (self.buffered.clone(), status)
    }
}

/// `kubectl exec -it` and `kubectl attach -it`: the CRI's Exec and Attach answer a URL on
/// containerd's streaming server, and the stream behind it reaches the container through the
/// shim: a terminal that takes the client's size and its resizes, stdin, the exit code in the
/// status; the exec measured with its terminal.
#[test]
fn kubectl_exec_and_attach_reach_the_container_through_the_streaming_server() {
    if !require_root("kubectl_exec_and_attach_reach_the_container_through_the_streaming_server") {
        return;
    }
    let env = TestEnv::new();
    let Some(Pod {
        _reg,
        d,
        c,
        cri,
        image_id,
        logs,
    }) = pod_node(&env)
    else {
        return;
    };
    let config = pod_config("term-0", &logs);
    let sandbox = cri.run_pod(&config, &c);
    // A container with a terminal and stdin, as `kubectl run -it` makes one.
    let mut app = container_config("app", &image_id, &["/bin/sh"]);
    app.tty = true;
    app.stdin = true;
    let id = cri
        .call(cri.rs().create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(app),
            sandbox_config: Some(config.clone()),
        }))
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", c.log()))
        .container_id;
    cri.call(cri.rs().start_container(StartContainerRequest {
        container_id: id.clone(),
    }))
    .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", c.log()));

    // kubectl exec -it: a shell on a terminal of the client's size, resized, its exit code.
    let url = cri
        .call(cri.rs().exec(ExecRequest {
            container_id: id.clone(),
            cmd: vec!["/bin/sh".into()],
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        }))
        .unwrap_or_else(|e| panic!("Exec: {e}\n{}", c.log()))
        .url;
    let mut exec = Stream::open(&url);
    exec.send(4, br#"{"Width":101,"Height":31}"#);
    exec.send(0, b"[ -t 0 ] && echo TTY-YES; stty size\n");
    let mut resized = false;
    let mut exited = false;
    let (out, status) = exec.finish(|all, s| {
        let text = String::from_utf8_lossy(all);
        if !resized && text.contains("31 101") {
            resized = true;
            s.send(4, br#"{"Width":120,"Height":40}"#);
            s.send(0, b"stty size\n");
        } else if resized && !exited && text.contains("40 120") {
            exited = true;
            s.send(0, b"exit 7\n");
        }
    });
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("TTY-YES"), "{text}");
    assert!(text.contains("40 120"), "{text}");
    assert!(
        status.contains("NonZeroExitCode") && status.contains(r#""message":"7""#),
        "{status}"
    );
    // Measured: a container.exec of the container, with its terminal.
    let log = d.ok(&["attest", "--format", "aael"]);
    let vouch_id = d.json(&["inspect", &format!("k8s.io--{id}")])[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(
        log.lines().any(|l| l.contains("container.exec")
            && l.contains(&vouch_id)
            && l.contains(r#""tty":true"#)),
        "{log}"
    );

    // A program that is not there: ExecSync fails at once with the reason (containerd's Wait
    // and Delete of the exec return, rather than holding the call until containerd gives up
    // on them after a minute), and so does a container's Start, as runc's handler does.
    let asked = Instant::now();
    let missing = cri
        .call(cri.rs().exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["/no/such/program".into()],
            timeout: 10,
        }))
        .expect_err("a missing program");
    assert!(
        missing.message().contains("'/no/such/program' not found"),
        "{}",
        missing.message()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "ExecSync of a missing program took {:?}",
        asked.elapsed()
    );
    let broken = cri
        .call(cri.rs().create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container_config("broken", &image_id, &["/no/such/program"])),
            sandbox_config: Some(config.clone()),
        }))
        .expect("CreateContainer")
        .container_id;
    let asked = Instant::now();
    let refused = cri
        .call(cri.rs().start_container(StartContainerRequest {
            container_id: broken.clone(),
        }))
        .expect_err("a missing program does not start");
    assert!(
        refused.message().contains("'/no/such/program' not found"),
        "{}",
        refused.message()
    );
    assert!(asked.elapsed() < Duration::from_secs(30));
    let status = cri.container_state(&broken);
    assert_eq!(status.state, ContainerState::ContainerExited as i32);
    assert_eq!(status.reason, "StartError");
    assert!(
        status.message.contains("'/no/such/program' not found"),
        "{}",
        status.message
    );
    cri.call(cri.rs().remove_container(RemoveContainerRequest {
        container_id: broken.clone(),
    }))
    .expect("RemoveContainer of the one that did not start");

    // A pod's securityContext: what tightens vouch's own is taken (a read-only root,
    // capabilities dropped), a capability added is refused with the reason.
    let secured = |name: &str, drop: &[&str], add: &[&str]| {
        let mut container = container_config(name, &image_id, &["/bin/sleep", "60"]);
        container.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                readonly_rootfs: true,
                capabilities: Some(Capability {
                    drop_capabilities: drop.iter().map(|c| c.to_string()).collect(),
                    add_capabilities: add.iter().map(|c| c.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        cri.call(cri.rs().create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container),
            sandbox_config: Some(config.clone()),
        }))
        .expect("CreateContainer")
        .container_id
    };
    let tight = secured("tight", &["NET_RAW"], &[]);
    cri.call(cri.rs().start_container(StartContainerRequest {
        container_id: tight.clone(),
    }))
    .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", c.log()));
    let status = cri
        .call(cri.rs().exec_sync(ExecSyncRequest {
            container_id: tight.clone(),
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                "grep CapBnd /proc/self/status; touch /x || echo read-only".into(),
            ],
            timeout: 10,
        }))
        .expect("ExecSync");
    let out = String::from_utf8_lossy(&status.stdout);
    let bnd = out
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).expect("hex"))
        .expect("CapBnd");
    assert_eq!(bnd & (1 << 13), 0, "NET_RAW dropped: {out}");
    assert_ne!(bnd & (1 << 5), 0, "KILL kept: {out}");
    assert!(out.contains("read-only"), "{out}");
    let wide = secured("wide", &[], &["SYS_ADMIN"]);
    let refused = cri
        .call(cri.rs().start_container(StartContainerRequest {
            container_id: wide.clone(),
        }))
        .expect_err("a capability added is refused");
    assert!(
        refused
            .message()
            .contains("vouch grants no capability beyond docker's default set, and this container asks for CAP_SYS_ADMIN"),
        "{}",
        refused.message()
    );
    for id in [&tight, &wide] {
        let _ = cri.call(cri.rs().stop_container(StopContainerRequest {
            container_id: id.to_string(),
            timeout: 0,
        }));
        cri.call(cri.rs().remove_container(RemoveContainerRequest {
            container_id: id.to_string(),
        }))
        .expect("RemoveContainer");
    }

    // kubectl attach -it: the container's own shell, through containerd's hold of its I/O.
    let url = cri
        .call(cri.rs().attach(AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        }))
        .unwrap_or_else(|e| panic!("Attach: {e}\n{}", c.log()))
        .url;
    let mut attach = Stream::open(&url);
    attach.send(4, br#"{"Width":90,"Height":20}"#);
    attach.send(0, b"stty size\n");
    let mut done = false;
    let (out, _status) = attach.finish(|all, s| {
        if !done && String::from_utf8_lossy(all).contains("20 90") {
            done = true;
            s.send(0, b"exit 5\n");
        }
    });
    assert!(String::from_utf8_lossy(&out).contains("20 90"));
    wait_for("the attached shell to end", Duration::from_secs(20), || {
        cri.container_state(&id).state == ContainerState::ContainerExited as i32
    });
    assert_eq!(cri.container_state(&id).exit_code, 5);
    cri.call(cri.rs().remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    }))
    .expect("RemoveContainer");
    cri.end_pod(&sandbox, &c);
}

/// A pod's volumes as kubelet hands them to containerd (host paths under its root): an
/// emptyDir is a vouchd volume of the pod's, shared by its containers and removed with its
/// sandbox; a configMap (kubelet's atomic-writer layout) is a read-only copy measured by its
/// content; a writable hostPath fails the container's start, saying why.
#[test]
fn a_pods_empty_dir_is_shared_its_config_map_copied_and_a_host_path_refused() {
    if !require_root("a_pods_empty_dir_is_shared_its_config_map_copied_and_a_host_path_refused") {
        return;
    }
    use std::os::unix::fs::symlink;
    let env = TestEnv::new();
    let Some(Pod {
        _reg,
        d,
        c,
        cri,
        image_id,
        logs,
    }) = pod_node(&env)
    else {
        return;
    };
    let config = pod_config("vol-0", &logs);
    let uid = config.metadata.as_ref().expect("metadata").uid.clone();
    let volumes = env.path().join(format!("kubelet/pods/{uid}/volumes"));
    let cache = volumes.join("kubernetes.io~empty-dir/cache");
    std::fs::create_dir_all(&cache).expect("emptyDir");
    let conf = volumes.join("kubernetes.io~configmap/conf");
    let version = conf.join("..2026_12_04_21_00_00.123456789");
    std::fs::create_dir_all(&version).expect("configMap");
    std::fs::write(version.join("app.conf"), "port = 8080\n").expect("key");
    symlink("..2026_12_04_21_00_00.123456789", conf.join("..data")).expect("..data");
    symlink("..data/app.conf", conf.join("app.conf")).expect("key link");
    let mount = |host: &Path, at: &str, readonly: bool| Mount {
        container_path: at.into(),
        host_path: host.to_string_lossy().into_owned(),
        readonly,
        ..Default::default()
    };
    // An image declaring a VOLUME (as postgres's does): containerd binds a directory of its
    // own there, which is not the host's to give; the image's directory serves (vouchd does not
    // create a VOLUME directory the image lacks).
    let with_volume = env.path().join("layout-volume");
    write_layout_config(
        &with_volume,
        "vol",
        &[
            busybox_layer(),
            Layer::new()
                .dir("var")
                .dir("var/lib")
                .dir("var/lib/data")
                .finish(),
        ],
        false,
        serde_json::json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "Volumes": {"/var/lib/data": {}}}),
    );
    _reg.push(&with_volume, "vol", "app/vol:1");
    let volume_image = cri.pull(&format!("{}/app/vol:1", _reg.addr));
    let sandbox = cri.run_pod(&config, &c);
    let create_as =
        |image: &str, name: &str, command: &[&str], mounts: Vec<Mount>, user: Option<i64>| {
            let mut container = container_config(name, image, command);
            container.mounts = mounts;
            if let Some(uid) = user {
                container.linux = Some(LinuxContainerConfig {
                    security_context: Some(LinuxContainerSecurityContext {
                        run_as_user: Some(Int64Value { value: uid }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            cri.call(cri.rs().create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(container),
                sandbox_config: Some(config.clone()),
            }))
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", c.log()))
            .container_id
        };
    let create = |name: &str, command: &[&str], mounts: Vec<Mount>| {
        create_as(&image_id, name, command, mounts, None)
    };
    let start = |id: &str| {
        cri.call(cri.rs().start_container(StartContainerRequest {
            container_id: id.into(),
        }))
    };
    let writer = create_as(
        &volume_image,
        "writer",
        &[
            "/bin/sh",
            "-c",
            "cat /etc/conf/app.conf > /cache/note; echo kept > /var/lib/data/f; exec sleep 60",
        ],
        vec![
            mount(&cache, "/cache", false),
            mount(&conf, "/etc/conf", true),
        ],
        None,
    );
    start(&writer).unwrap_or_else(|e| panic!("StartContainer writer: {e}\n{}", c.log()));
    // Another user: the emptyDir is writable by every user, as kubelet makes it.
    let reader = create_as(
        &image_id,
        "reader",
        &["/bin/sleep", "60"],
        vec![mount(&cache, "/data", false)],
        Some(1000),
    );
    start(&reader).unwrap_or_else(|e| panic!("StartContainer reader: {e}\n{}", c.log()));
    // The reader sees what the writer wrote: one volume.
    let exec = cri
        .call(cri.rs().exec_sync(ExecSyncRequest {
            container_id: reader.clone(),
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                "for i in $(seq 100); do [ -s /data/note ] && cat /data/note && echo \"by $(id -u)\" > /data/mine && exec cat /data/mine; sleep 0.1; done; exit 1".into(),
            ],
            timeout: 30,
        }))
        .unwrap_or_else(|e| panic!("ExecSync: {e}\n{}", c.log()));
    assert_eq!(
        (
            exec.exit_code,
            String::from_utf8_lossy(&exec.stdout).as_ref()
        ),
        (0, "port = 8080\nby 1000\n"),
        "{}",
        String::from_utf8_lossy(&exec.stderr)
    );
    let data = cri
        .call(cri.rs().exec_sync(ExecSyncRequest {
            container_id: writer.clone(),
            cmd: vec!["/bin/cat".into(), "/var/lib/data/f".into()],
            timeout: 10,
        }))
        .expect("ExecSync data");
    assert_eq!(String::from_utf8_lossy(&data.stdout), "kept\n");
    // Not kubelet's directory: vouchd's volume (the host's emptyDir stays empty).
    assert_eq!(std::fs::read_dir(&cache).expect("cache").count(), 0);
    let volume = format!("pod-{uid}-cache");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.state().join("volumes").join(&volume))
        .expect("the pod's volume")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o777);
    let listed = d.json(&["volume", "ls", "--json"]);
    let entry = listed
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == volume.as_str())
        .unwrap_or_else(|| panic!("no {volume} in {listed}"));
    assert_eq!(entry["used_by"].as_array().map(Vec::len), Some(2));
    // Measured: the configMap by the digest of what the container reads (kubelet's
    // bookkeeping entries and its time stamp are not part of it), the emptyDir by name.
    let spec = d.json(&["inspect", "--spec", &format!("k8s.io--{writer}")]);
    let copies: serde_json::Value = serde_json::from_str(
        spec[0]["spec"]["annotations"]["io.vouch.copies"]
            .as_str()
            .expect("copies annotation"),
    )
    .expect("copies");
    let want = d.ok(&["volume", "digest", &conf.to_string_lossy()]);
    assert_eq!(copies["/etc/conf"], want.trim());
    let mounts = spec[0]["spec"]["mounts"].as_array().expect("mounts");
    assert!(
        mounts.iter().any(|m| m["destination"] == "/cache"
            && m["source"] == format!("$ROOT/volumes/{volume}").as_str()),
        "{mounts:?}"
    );
    // A writable host path: refused at start, with the reason the kubelet shows.
    let host = env.path().join("host-data");
    std::fs::create_dir_all(&host).expect("host dir");
    let refused = create(
        "hostpath",
        &["/bin/true"],
        vec![mount(&host, "/data", false)],
    );
    let err = start(&refused).expect_err("a writable host path is refused");
    assert!(
        err.message().contains(&format!(
            "vouch shares no host directory writable with a container (its content would not be measured), and this one mounts {} at /data",
            host.display()
        )),
        "{}",
        err.message()
    );
    for id in [&writer, &reader, &refused] {
        let _ = cri.call(cri.rs().stop_container(StopContainerRequest {
            container_id: id.to_string(),
            timeout: 1,
        }));
        cri.call(cri.rs().remove_container(RemoveContainerRequest {
            container_id: id.to_string(),
        }))
        .expect("RemoveContainer");
    }
    cri.end_pod(&sandbox, &c);
    // The pod's emptyDir goes with it.
    let listed = d.json(&["volume", "ls", "--json"]);
    assert!(
        !listed.to_string().contains(&volume),
        "the pod's volume outlived it: {listed}"
    );
}
