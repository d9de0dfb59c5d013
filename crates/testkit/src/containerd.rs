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
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"{opt}\"\n{extra}",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = address.display(),
                opt = dir.join("opt").display(),
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

    /// `ctr --address ...`, bounded in time.
    pub fn ctr(&self, args: &[&str]) -> Output {
        run_bounded(
            Command::new("ctr")
                .arg("--address")
                .arg(&self.address)
                .args(args)
                .stdin(Stdio::null()),
            Duration::from_secs(60),
        )
        .expect("ctr")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// The PIDs of the shims containerd started (from the `shim.pid` files in its state).
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
