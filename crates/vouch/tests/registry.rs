//! Pulling from a real OCI registry (`docker-registry` on loopback, images pushed with skopeo):
//! by tag and by digest, then run; and the refusals: a corrupted blob in the registry's storage,
//! an unknown tag, plain HTTP without --insecure-registry. A failed pull leaves nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Registry {
    child: Child,
    addr: String,
    root: PathBuf,
}

impl Registry {
    fn start(dir: &Path) -> Option<Registry> {
        if Command::new("docker-registry")
            .arg("--version")
            .output()
            .is_err()
            || Command::new("skopeo").arg("--version").output().is_err()
        {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "docker-registry and skopeo are needed (scripts/deps installs them)"
            );
            eprintln!("SKIPPED: docker-registry or skopeo is not installed");
            return None;
        }
        let port = free_port();
        let root = dir.join("registry-data");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                root.display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Registry { child, addr, root })
    }

    /// Push an OCI layout's image with skopeo (the manifest bytes are kept as they are).
    fn push(&self, layout: &Path, name: &str, repo: &str) {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{name}", layout.display()))
            .arg(format!("docker://{}/{repo}", self.addr))
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn store_blobs(env: &TestEnv) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.state().join("images/blobs/sha256"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn pull_by_tag_and_digest_then_run() {
    if !require_root("pull_by_tag_and_digest_then_run") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let layout = env.path().join("layout");
    let digest = write_layout(
        &layout,
        "bb",
        &[busybox_layer()],
        &["/bin/sh"],
        &["PATH=/bin"],
    );
    reg.push(&layout, "bb", "test/bb:latest");
    let d = env.start();
    let reference = format!("{}/test/bb:latest", reg.addr);

    let out = d.vouch(&["pull", "--insecure-registry", &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&digest), "{}", stdout(&out));
    let images = d.json(&["image", "ls", "--json"]);
    assert_eq!(images[0]["manifest_digest"], digest.as_str());
    assert_eq!(images[0]["names"][0], reference.as_str());
    assert_eq!(
        d.ok(&["run", "--rm", &reference, "echo", "from-the-registry"])
            .trim(),
        "from-the-registry"
    );

    // By digest: the same image, nothing fetched twice.
    let blobs = store_blobs(&env);
    let by_digest = format!("{}/test/bb@{digest}", reg.addr);
    assert_eq!(
        d.ok(&["image", "pull", "-q", "--insecure-registry", &by_digest])
            .trim(),
        digest
    );
    assert_eq!(store_blobs(&env), blobs);

    // An unknown tag, and HTTPS against a plain-HTTP registry: clear errors.
    let missing = d.vouch(&[
        "pull",
        "--insecure-registry",
        &format!("{}/test/bb:nope", reg.addr),
    ]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).to_lowercase().contains("manifest"),
        "{}",
        stderr(&missing)
    );
    let tls = d.vouch(&["pull", &reference]);
    assert!(!tls.status.success());
    assert!(stderr(&tls).contains("registry"), "{}", stderr(&tls));
}

#[test]
fn a_corrupted_blob_fails_the_pull_and_leaves_nothing() {
    if !require_root("a_corrupted_blob_fails_the_pull_and_leaves_nothing") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let layout = env.path().join("layout");
    write_layout(
        &layout,
        "bb",
        &[busybox_layer()],
        &["/bin/sh"],
        &["PATH=/bin"],
    );
    reg.push(&layout, "bb", "test/bb:latest");
    // Flip one byte of the layer as the registry stores it (same length, other content).
    let manifest: serde_json::Value = {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
                .expect("json");
        let m = index["manifests"][0]["digest"]
            .as_str()
            .expect("digest")
            .to_string();
        serde_json::from_slice(
            &std::fs::read(
                layout
                    .join("blobs/sha256")
                    .join(m.trim_start_matches("sha256:")),
            )
            .expect("manifest"),
        )
        .expect("json")
    };
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_string();
    let data = reg.blob_data(&layer);
    let mut bytes = std::fs::read(&data).expect("registry blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).expect("corrupt");

    let d = env.start();
    let out = d.vouch(&[
        "pull",
        "--insecure-registry",
        &format!("{}/test/bb:latest", reg.addr),
    ]);
    assert!(!out.status.success());
    // vouch's own check, or the client library's (it checks too, while streaming).
    let err = stderr(&out);
    assert!(
        err.contains(&layer)
            && (err.contains("does not match its digest") || err.contains("Invalid digest")),
        "{err}"
    );
    assert_eq!(d.json(&["image", "ls", "--json"]), serde_json::json!([]));
    assert!(
        !store_blobs(&env).contains(&layer.trim_start_matches("sha256:").to_string()),
        "the corrupt layer was kept"
    );
    let tmp: Vec<_> = std::fs::read_dir(env.state().join("images/tmp"))
        .map(|d| d.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "partial files left: {tmp:?}");
}
