//! A real TPM 2.0 simulator for tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real TPM 2.0 simulator (`swtpm`) on loopback, stopped by PID when dropped.
pub struct Swtpm {
    child: Child,
    pub tcti: String,
    _state: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// The simulator's state directory, removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A free loopback port whose successor is free too: the swtpm TCTI expects the control
/// channel on the next port.
fn free_port_pair() -> Option<u16> {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        let port = a.local_addr().ok()?.port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Some(port);
        }
    }
    None
}

impl Swtpm {
    /// Start swtpm, or return `None` (with the reason printed) where it is not installed;
    /// under `CI=true` a missing swtpm fails the test.
    pub fn start() -> Option<Swtpm> {
        if Command::new("swtpm").arg("--version").output().is_err() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "swtpm is not installed (scripts/deps installs it)"
            );
            eprintln!("SKIPPED: swtpm is not installed (scripts/deps installs it)");
            return None;
        }
        for _ in 0..5 {
            let port = free_port_pair()?;
            let ctrl = port + 1;
            let dir =
                std::env::temp_dir().join(format!("vouch-swtpm-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).ok()?;
            let state = tempfile_dir::Dir(dir.clone());
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", dir.display()))
                .arg("--server")
                .arg(format!("type=tcp,bindaddr=127.0.0.1,port={port}"))
                .arg("--ctrl")
                .arg(format!("type=tcp,bindaddr=127.0.0.1,port={ctrl}"))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn swtpm");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Swtpm {
                        child,
                        tcti: format!("swtpm:host=127.0.0.1,port={port}"),
                        _state: state,
                    });
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // lost a port race: try others
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start");
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
