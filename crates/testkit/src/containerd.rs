//! A real containerd for tests: its config, root, state and sockets in the test's directory,
//! `containerd-shim-vouch-v2` (built from the current sources) on its PATH, and vouchd's socket
//! in its environment (shims inherit it). Stopped by PID with the shims it started.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::run_bounded;

pub struct Containerd {
    child: Child,
    pub dir: PathBuf,
    pub address: PathBuf,
    pub config: PathBuf,
}

/// Whether containerd and ctr are installed (in CI they must be).
pub fn available() -> bool {
    let ok = Command::new("containerd").arg("--version").output().is_ok()
        && Command::new("ctr").arg("--version").output().is_ok();
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "containerd and ctr are needed (scripts/deps installs them)"
        );
        eprintln!("SKIPPED: containerd is not installed");
    }
    ok
}

impl Containerd {
    /// Start containerd in `dir` (with `extra` appended to its config), its shims talking to
    /// the vouchd at `vouchd_socket`. None when containerd is not installed.
    pub fn start(dir: &Path, vouchd_socket: &Path, extra: &str) -> Option<Containerd> {
        Self::launch(dir, vouchd_socket, false, extra)
    }

    /// Start containerd with its CRI plugin, as a node's kubelet talks to it: runtime handlers
    /// `vouch` (`io.containerd.vouch.v2`) and `runc` (the default), the sandbox image `localhost/pause:bb`, no CNI
    /// network (pods use the node's), and each of `plain_http_registries` (`HOST:PORT`)
    /// reached over plain HTTP.
    pub fn start_cri(
        dir: &Path,
        vouchd_socket: &Path,
        plain_http_registries: &[&str],
    ) -> Option<Containerd> {
        let cri = "    [plugins.\"io.containerd.grpc.v1.cri\"]";
        let mut extra = format!(
            "{cri}\n      sandbox_image = \"localhost/pause:bb\"\n      restrict_oom_score_adj = true\n      [plugins.\"io.containerd.grpc.v1.cri\".cni]\n        bin_dir = \"/usr/lib/cni\"\n        conf_dir = \"{cni}\"\n      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vouch]\n        runtime_type = \"io.containerd.vouch.v2\"\n      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n        runtime_type = \"io.containerd.runc.v2\"\n",
            cni = dir.join("cni").display(),
        );
        for r in plain_http_registries {
            extra.push_str(&format!(
                "      [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{r}\"]\n        endpoint = [\"http://{r}\"]\n"
            ));
        }
        Self::launch(dir, vouchd_socket, true, &extra)
    }

    /// The CRI's socket (containerd's own gRPC socket).
    pub fn cri_socket(&self) -> &Path {
        &self.address
    }

    fn launch(dir: &Path, vouchd_socket: &Path, cri: bool, extra: &str) -> Option<Containerd> {
        if !available() {
            return None;
        }
        let shim = crate::bins::path("containerd-shim-vouch-v2");
        let bin_dir = shim.parent().expect("bin dir").to_path_buf();
        std::fs::create_dir_all(dir).expect("containerd dir");
        let address = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [{disabled}]\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"{opt}\"\n{extra}",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = address.display(),
                opt = dir.join("opt").display(),
                disabled = if cri { "" } else { "\"io.containerd.grpc.v1.cri\"" },
            ),
        )
        .expect("containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .env("VOUCH_SOCKET", vouchd_socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("containerd");
        let c = Containerd {
            child,
            dir: dir.to_path_buf(),
            address,
            config,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if c.address.exists() && c.ctr(&["version"]).status.success() {
                return Some(c);
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Import an OCI image layout into containerd's `namespace`, its tags under `base_name`
    /// (`BASE:TAG`), as `ctr images import --base-name` does with the layout's archive.
    pub fn import_layout(&self, namespace: &str, layout: &Path, base_name: &str) {
        let tar = self
            .dir
            .join(format!("import-{}.tar", base_name.replace('/', "_")));
        let out = run_bounded(
            Command::new("tar")
                .arg("-C")
                .arg(layout)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
            Duration::from_secs(60),
        )
        .expect("tar");
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tar = tar.to_str().expect("utf8");
        let out = self.ctr(&[
            "-n",
            namespace,
            "images",
            "import",
            "--base-name",
            base_name,
            tar,
        ]);
        assert!(
            out.status.success(),
            "ctr images import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ctr --address ...`, bounded in time.
    pub fn ctr(&self, args: &[&str]) -> Output {
        run_bounded(
            self.ctr_command(args).stdin(Stdio::null()),
            Duration::from_secs(60),
        )
        .expect("ctr")
    }

    /// `ctr --address ...` to run as the caller wants (a terminal, stdin, in the background).
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.address).args(args);
        cmd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// The PIDs of the shims containerd started (from the `shim.pid` files in its state), each
    /// once.
    pub fn shim_pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let tasks = self.dir.join("state/io.containerd.runtime.v2.task");
        for ns in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            for c in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                if let Some(pid) = std::fs::read_to_string(c.path().join("shim.pid"))
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
                {
                    out.push(pid);
                }
            }
        }
        // A pod's containers share its shim: each bundle names it.
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let shims = self.shim_pids();
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in shims {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
