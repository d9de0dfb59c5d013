//! `deploy/`: every manifest parses as the Kubernetes objects it claims to be, and the payload
//! image that scripts/payload builds installs vouch into a containerd config and uninstalls it
//! again, leaving the file exactly as it was.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde_json::Value;
use vouch_testkit::*;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every document of a manifest, as JSON.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy_dir().join(file)).expect(file);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).expect(file);
            serde_json::to_value(v).expect(file)
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// A document as its Kubernetes type; unknown fields are errors, as `kubectl --validate=strict`
/// makes them.
fn typed<T: DeserializeOwned + k8s_openapi::Resource>(doc: &Value) -> T {
    assert_eq!(doc["apiVersion"], T::API_VERSION, "{doc}");
    assert_eq!(doc["kind"], T::KIND, "{doc}");
    let mut unknown = Vec::new();
    let t: T = serde_ignored::deserialize(doc.clone(), |path| unknown.push(path.to_string()))
        .unwrap_or_else(|e| panic!("{} {}: {e}", T::KIND, doc["metadata"]["name"]));
    assert!(
        unknown.is_empty(),
        "{} has unknown fields {unknown:?}",
        T::KIND
    );
    t
}

#[test]
fn every_manifest_is_the_kubernetes_object_it_claims_to_be() {
    // A misspelt field is caught, as the API server's strict validation would.
    let misspelt = serde_json::json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": "x"}, "handler": "vouch", "schedulng": {}});
    assert!(std::panic::catch_unwind(|| typed::<RuntimeClass>(&misspelt)).is_err());
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(deploy_dir()).expect("deploy/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if !name.ends_with(".yaml") {
            continue;
        }
        for doc in documents(&name) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "Namespace" => drop(typed::<Namespace>(&doc)),
                "ServiceAccount" => drop(typed::<ServiceAccount>(&doc)),
                "ClusterRole" => {
                    let r: ClusterRole = typed(&doc);
                    // The installer may only read and label nodes.
                    let rules = r.rules.unwrap_or_default();
                    assert_eq!(rules.len(), 1);
                    assert_eq!(
                        rules[0].resources.as_deref(),
                        Some(&["nodes".to_string()][..])
                    );
                    assert_eq!(rules[0].verbs, ["get", "patch"]);
                }
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&doc)),
                "RuntimeClass" => {
                    let rc: RuntimeClass = typed(&doc);
                    assert_eq!(rc.handler, "vouch");
                    assert_eq!(rc.metadata.name.as_deref(), Some("vouch"));
                    let selector = rc
                        .scheduling
                        .and_then(|s| s.node_selector)
                        .expect("nodeSelector");
                    assert_eq!(
                        selector.get("vouch/attested").map(String::as_str),
                        Some("true")
                    );
                }
                "DaemonSet" => {
                    let ds: DaemonSet = typed(&doc);
                    let pod = ds.spec.template.spec.expect("pod");
                    let init = pod.init_containers.unwrap_or_default();
                    assert_eq!(
                        init[0].command.as_deref(),
                        Some(&["/opt/vouch/scripts/install.sh".to_string()][..])
                    );
                }
                "Deployment" => {
                    let d: Deployment = typed(&doc);
                    let spec = d.spec;
                    assert!(spec.replicas.unwrap_or(1) >= 2, "the KBS is replicated");
                    let pod = spec.template.spec.expect("pod");
                    let kbs = &pod.containers[0];
                    let args = kbs.args.clone().unwrap_or_default();
                    assert!(
                        args.iter().any(|a| a.starts_with("--tls-cert=")),
                        "{args:?}"
                    );
                    assert!(!args.iter().any(|a| a.contains("allow-sim")), "{args:?}");
                    let env = kbs.env.clone().unwrap_or_default();
                    assert!(env.iter().any(|e| e.name == "VOUCH_KBS_DATABASE"
                        && e.value_from
                            .as_ref()
                            .is_some_and(|v| v.secret_key_ref.is_some())));
                }
                "Service" => {
                    let s: Service = typed(&doc);
                    if s.metadata.name.as_deref() == Some("vouch-kbs") {
                        assert_eq!(
                            s.spec.and_then(|s| s.session_affinity).as_deref(),
                            Some("ClientIP")
                        );
                    }
                }
                "StatefulSet" => drop(typed::<StatefulSet>(&doc)),
                "CcRuntime" => {
                    // The operator's own type (a CRD): the fields it reads.
                    assert_eq!(doc["apiVersion"], "confidentialcontainers.org/v1beta1");
                    let config = &doc["spec"]["config"];
                    assert_eq!(doc["spec"]["runtimeName"], "vouch");
                    assert!(config["payloadImage"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()));
                    assert_eq!(config["installCmd"][0], "/opt/vouch/scripts/install.sh");
                    assert_eq!(config["uninstallCmd"][0], "/opt/vouch/scripts/uninstall.sh");
                    assert_eq!(config["runtimeClassNames"][0], "vouch");
                }
                other => panic!("{name}: a {other:?} that no test reads"),
            }
            seen.push(kind);
        }
    }
    for want in [
        "RuntimeClass",
        "DaemonSet",
        "Deployment",
        "Service",
        "StatefulSet",
        "CcRuntime",
    ] {
        assert!(
            seen.iter().any(|k| k == want),
            "no {want} in deploy/: {seen:?}"
        );
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = run_bounded(cmd, Duration::from_secs(300)).expect("run");
    assert!(out.status.success(), "{:?}: {}", cmd, stderr(&out));
    out
}

/// Run `scripts/SCRIPT` on the binaries the tests run, writing the OCI layout `layout` (tag
/// `test`); the binaries' directory.
fn build_image(script: &str, layout: &Path) -> PathBuf {
    let bin_dir = vouch().parent().expect("bin dir").to_path_buf();
    run(Command::new(deploy_dir().join("../scripts").join(script))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--out")
        .arg(layout)
        .args(["--tag", "test"]));
    bin_dir
}

/// The config of the one image in the OCI layout at `layout`.
fn image_config(layout: &Path) -> Value {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
            .expect("json");
    let blob = |digest: &str| -> Value {
        let hex = digest.strip_prefix("sha256:").expect("sha256");
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob"))
            .expect("json")
    };
    let manifest = blob(index["manifests"][0]["digest"].as_str().expect("manifest"));
    blob(manifest["config"]["digest"].as_str().expect("config"))
}

#[test]
fn the_payload_image_installs_vouch_into_containerds_config_and_uninstalls_it() {
    if !require_root("the_payload_image_installs_vouch_into_containerds_config_and_uninstalls_it") {
        return;
    }
    let shipped = Path::new("/etc/containerd/config.toml");
    if !shipped.exists() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "containerd is missing"
        );
        eprintln!("SKIPPED: containerd is not installed");
        return;
    }
    let env = TestEnv::new();
    let _d = env.start();
    let layout = env.path().join("payload");
    let bin_dir = build_image("payload", &layout);
    // An OCI layout whose image runs the install script.
    let config = image_config(&layout);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/opt/vouch/scripts/install.sh"])
    );
    let bundle = env.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:test", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    for f in [
        "opt/vouch/bin/vouchd",
        "opt/vouch/bin/vouch",
        "opt/vouch/bin/containerd-shim-vouch-v2",
        "opt/vouch/scripts/uninstall.sh",
        "opt/vouch/scripts/vouchd.service",
        "bin/sh",
    ] {
        assert!(rootfs.join(f).exists(), "{f} is not in the payload");
    }

    // The host: Debian's containerd config; systemd left alone (there is none to restart here).
    let host = env.path().join("host");
    let config_path = host.join("etc/containerd/config.toml");
    std::fs::create_dir_all(config_path.parent().expect("dir")).expect("dir");
    let original = std::fs::read(shipped).expect("config");
    std::fs::write(&config_path, &original).expect("write");
    let status = env.path().join("status");
    let script = |name: &str| {
        let mut c = Command::new("/bin/sh");
        c.arg(rootfs.join("opt/vouch/scripts").join(name))
            .env("VOUCH_HOST_ROOT", &host)
            .env("VOUCH_ARTIFACTS", rootfs.join("opt/vouch/bin"))
            .env("VOUCH_HOST_SYSTEMD", "false")
            .env("VOUCH_STATUS_DIR", &status)
            .env("VOUCH_SOCKET", env.socket());
        c
    };
    run(&mut script("install.sh"));
    for b in ["vouchd", "vouch", "containerd-shim-vouch-v2"] {
        assert_eq!(
            std::fs::read(host.join("usr/local/bin").join(b)).expect(b),
            std::fs::read(bin_dir.join(b)).expect(b),
            "{b}"
        );
    }
    assert_eq!(
        crate::containerd::containerd_runtime_type(&config_path).as_deref(),
        Some("io.containerd.vouch.v2")
    );
    // The node's labels: its TEE, and not attested: sim evidence verifies only with
    // --allow-sim, which a relying party does not give.
    assert_eq!(
        std::fs::read_to_string(status.join("tee")).expect("tee"),
        "sim"
    );
    assert_eq!(
        std::fs::read_to_string(status.join("attested")).expect("attested"),
        "false"
    );
    // Again: nothing changes.
    let installed = std::fs::read(&config_path).expect("config");
    run(&mut script("install.sh"));
    assert_eq!(std::fs::read(&config_path).expect("config"), installed);

    run(&mut script("uninstall.sh"));
    assert_eq!(std::fs::read(&config_path).expect("config"), original);
    for b in ["vouchd", "vouch", "containerd-shim-vouch-v2"] {
        assert!(!host.join("usr/local/bin").join(b).exists(), "{b} is left");
    }
}

/// deploy/kbs.yaml's image: scripts/kbs-image builds it as an OCI layout (vouch-kbs, the C
/// libraries it links, a nonroot user, no shell), and it runs: under vouch itself, as the
/// nonroot user the Deployment asks for.
#[test]
fn the_kbs_image_is_built_as_a_layout_and_runs_as_nonroot() {
    if !require_root("the_kbs_image_is_built_as_a_layout_and_runs_as_nonroot") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    let layout = env.path().join("kbs-image");
    build_image("kbs-image", &layout);
    let config = image_config(&layout);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/vouch-kbs"])
    );
    assert_eq!(config["config"]["User"], "65532:65532");
    // The manifest's image is the one deploy/kbs.yaml runs, with its user.
    let manifests = std::fs::read_to_string(deploy_dir().join("kbs.yaml")).expect("kbs.yaml");
    assert!(manifests.contains("image: vouch-kbs:") && manifests.contains("runAsUser: 65532"));

    d.ok(&[
        "image",
        "load",
        "-i",
        layout.to_str().expect("utf8"),
        "--name",
        "kbs",
    ]);
    let version = d.ok(&["run", "--rm", "kbs", "--version"]);
    assert!(version.starts_with("vouch-kbs "), "{version}");
    // It writes as its nonroot user where it may, and not where only root may.
    let out = d.ok(&["run", "--rm", "kbs", "keygen", "--out-dir", "/tmp"]);
    assert_eq!(out.trim(), "/tmp/admin.pub");
    let refused = d.vouch(&["run", "--rm", "kbs", "keygen", "--out-dir", "/etc"]);
    assert!(!refused.status.success(), "nonroot wrote to /etc");
    let said = stdout(&refused) + &stderr(&refused);
    assert!(
        said.contains("cannot create /etc/admin.key") && said.contains("Permission denied"),
        "{said}"
    );
}
