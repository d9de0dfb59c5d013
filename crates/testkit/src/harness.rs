//! Test harness: a private state directory, a real vouchd on its own socket, the real vouch CLI,
//! and OCI images built on the fly (including hostile ones).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use crate::bins::{vouch, vouch_kbs, vouch_kbs_bench, vouchd};

/// These tests mount filesystems and create namespaces: they need root. CI runs as root; a
/// non-root developer run skips them and says so (and CI=true turns the skip into a failure).
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root, and CI must run every test");
    }
    eprintln!("SKIPPED {test}: needs root (mounts, namespaces, cgroups)");
    false
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> Self {
        TestEnv {
            dir: tempfile::Builder::new()
                .prefix("vouch-e2e-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("vouchd.sock")
    }

    /// Start vouchd on this environment's state and socket; waits until it answers.
    pub fn start(&self) -> Daemon {
        self.start_with(&["--tee", "sim"])
    }

    /// Start vouchd with these TEE arguments (`--tee ...` and its options).
    pub fn start_with(&self, tee_args: &[&str]) -> Daemon {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("vouchd.log"))
            .expect("log");
        let child = Command::new(vouchd())
            .arg("--state-dir")
            .arg(self.state())
            .arg("--socket")
            .arg(self.socket())
            .args(tee_args)
            .arg("--publish-address")
            .arg("127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vouchd");
        let mut d = Daemon {
            child: Some(child),
            socket: self.socket(),
            log: self.dir.path().join("vouchd.log"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&d.socket).is_ok() {
                break;
            }
            if let Some(status) = d
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                panic!(
                    "vouchd exited with {status}: {}",
                    fs::read_to_string(&d.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "vouchd did not start: {}",
                fs::read_to_string(&d.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Unmount anything left below the test directory so it can be removed.
        let root = self.dir.path().to_string_lossy().to_string();
        if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<String> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&root))
                .map(str::to_string)
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Run the vouch CLI against this daemon, bounded in time.
    pub fn vouch(&self, args: &[&str]) -> Output {
        vouch_with(&self.socket, args, &[])
    }

    pub fn vouch_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        vouch_with(&self.socket, args, env)
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.vouch(args);
        assert!(
            out.status.success(),
            "vouch {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("json output")
    }

    /// SIGKILL the daemon, as a crash would.
    /// Evidence for a fresh nonce (written to `dir/evidence.json`), verified by `vouch verify
    /// --allow-sim`, which must accept it; its report.
    pub fn attest_and_verify(&self, dir: &Path) -> String {
        let ev = dir.join("evidence.json");
        let ev = ev.to_str().expect("utf8");
        let mut nonce = [0u8; 16];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut nonce))
            .expect("urandom");
        let nonce = hex::encode(nonce);
        self.ok(&["attest", "--nonce", &nonce, "-o", ev]);
        let out = self.vouch(&["verify", ev, "--nonce", &nonce, "--allow-sim"]);
        assert!(
            out.status.success(),
            "the evidence does not verify: {}",
            stderr(&out)
        );
        stdout(&out)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Remove every container this daemon knows, then stop it by its PID.
        if let Ok(out) = run_bounded(
            Command::new(vouch())
                .arg("--socket")
                .arg(&self.socket)
                .args(["ps", "-aq"]),
            Duration::from_secs(10),
        ) {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = run_bounded(
                    Command::new(vouch())
                        .arg("--socket")
                        .arg(&self.socket)
                        .args(["rm", "-f", id]),
                    Duration::from_secs(20),
                );
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub fn vouch_with(socket: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(vouch());
    cmd.arg("--socket").arg(socket).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(&mut cmd, Duration::from_secs(120)).expect("vouch ran")
}

/// Run a command with a time limit; kills it (by PID) if it overruns.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let s = child.wait()?;
            eprintln!("command overran its {limit:?} limit and was killed");
            break s;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Run a command with `input` written to its stdin (then closed) and its stdout captured;
/// its stderr stays as the caller set it.
pub fn run_fed(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input).expect("write");
    child.wait_with_output().expect("wait")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// ---- image building ------------------------------------------------------------------------

/// A tar stream built entry by entry, with raw names so hostile entries can be written.
pub struct Layer {
    bytes: Vec<u8>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Self {
        Layer { bytes: Vec::new() }
    }

    pub fn entry(
        mut self,
        path: &str,
        kind: tar::EntryType,
        link: &str,
        mode: u32,
        data: &[u8],
        size_override: Option<u64>,
    ) -> Self {
        let mut h = tar::Header::new_ustar();
        h.as_mut_bytes()[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(size_override.unwrap_or(data.len() as u64));
        if !link.is_empty() {
            h.as_ustar_mut().expect("ustar").linkname[..link.len()]
                .copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        self.bytes.extend_from_slice(h.as_bytes());
        self.bytes.extend_from_slice(data);
        self.bytes
            .extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        self
    }

    pub fn dir(self, path: &str) -> Self {
        self.entry(path, tar::EntryType::Directory, "", 0o755, b"", None)
    }

    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.entry(path, tar::EntryType::Regular, "", mode, data, None)
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(path, tar::EntryType::Symlink, target, 0o777, b"", None)
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        self.bytes
    }
}

/// Debian's static busybox with the applets the tests use.
pub fn busybox_layer() -> Vec<u8> {
    let bb =
        fs::read("/bin/busybox").expect("/bin/busybox (apt package busybox-static) is required");
    let mut l = Layer::new()
        .dir("bin/")
        .file("bin/busybox", 0o755, &bb)
        .dir("tmp/")
        .dir("etc/");
    for applet in [
        "sh",
        "echo",
        "true",
        "false",
        "cat",
        "ls",
        "sleep",
        "env",
        "id",
        "stat",
        "mount",
        "hostname",
        "dd",
        "head",
        "seq",
        "wc",
        "sha256sum",
        "nc",
        "touch",
    ] {
        l = l.symlink(&format!("bin/{applet}"), "busybox");
    }
    l.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .finish()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}

/// The busybox image as an OCI layout at `layout` in the test's directory, named `bb`: the
/// layout and the image's manifest digest.
pub fn busybox_layout(env: &TestEnv) -> (PathBuf, String) {
    let layout = env.path().join("layout");
    let digest = write_layout(
        &layout,
        "bb",
        &[busybox_layer()],
        &["/bin/sh"],
        &["PATH=/bin"],
    );
    (layout, digest)
}

/// Write an OCI image layout at `dir` with the given (uncompressed) layers, gzip-compressed.
pub fn write_layout(
    dir: &Path,
    name: &str,
    layers: &[Vec<u8>],
    cmd: &[&str],
    env: &[&str],
) -> String {
    write_layout_with(dir, name, layers, cmd, env, false)
}

/// Write an image of these layers as a layout in the test's directory and load it into `d`
/// under `name`; returns the manifest digest.
pub fn load_layers(
    env: &TestEnv,
    d: &Daemon,
    name: &str,
    layers: &[Vec<u8>],
    cmd: &[&str],
    vars: &[&str],
) -> String {
    let layout = env.path().join(format!("layout-{name}"));
    let digest = write_layout(&layout, name, layers, cmd, vars);
    d.ok(&["image", "load", "-i", layout.to_str().expect("utf8")]);
    digest
}

/// Like [`write_layout`], with zstd-compressed layers when `zstd` is set.
pub fn write_layout_with(
    dir: &Path,
    name: &str,
    layers: &[Vec<u8>],
    cmd: &[&str],
    env: &[&str],
    zstd: bool,
) -> String {
    write_layout_labelled(dir, name, layers, cmd, env, zstd, &[])
}

/// Like [`write_layout_with`], the image's config carrying these labels.
pub fn write_layout_labelled(
    dir: &Path,
    name: &str,
    layers: &[Vec<u8>],
    cmd: &[&str],
    env: &[&str],
    zstd: bool,
    labels: &[(&str, &str)],
) -> String {
    let config = if labels.is_empty() {
        json!({"Cmd": cmd, "Env": env})
    } else {
        json!({"Cmd": cmd, "Env": env, "Labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()})
    };
    write_layout_config(dir, name, layers, zstd, config)
}

/// An OCI image layout at `dir` of these layers, its image config's `config` as given.
pub fn write_layout_config(
    dir: &Path,
    name: &str,
    layers: &[Vec<u8>],
    zstd: bool,
    image_config: Value,
) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("blobs");
    let put = |data: &[u8]| -> String {
        let h = sha256_hex(data);
        fs::write(blobs.join(&h), data).expect("blob");
        h
    };
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(l)));
        let (gz, media) = if zstd {
            (
                zstd::encode_all(l.as_slice(), 3).expect("zstd"),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            )
        } else {
            (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
        };
        let h = put(&gz);
        layer_descs
            .push(json!({"mediaType": media, "digest": format!("sha256:{h}"), "size": gz.len()}));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .expect("config");
    let ch = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{ch}"), "size": config.len()},
        "layers": layer_descs
    }))
    .expect("manifest");
    let mh = put(&manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{mh}"), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": name}
    }]});
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("index"),
    )
    .expect("index");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
    format!("sha256:{mh}")
}

/// A busybox image loaded into the daemon as `name`. Returns its manifest digest.
pub fn load_busybox(env: &TestEnv, d: &Daemon, name: &str) -> String {
    let dir = env.path().join(format!("img-{name}"));
    let digest = write_layout(&dir, name, &[busybox_layer()], &["/bin/sh"], &["PATH=/bin"]);
    d.ok(&[
        "image",
        "load",
        "-i",
        dir.to_str().expect("utf8"),
        "--name",
        name,
    ]);
    digest
}

/// The largest file in a directory (in an image layout or store: the layer blob).
pub fn largest_file(dir: &Path) -> PathBuf {
    fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .expect("a file")
        .path()
}

/// The evidence vector corpus (see [`crate::corpus::vectors`]); `None` means skip.
pub fn vectors(test: &str) -> Option<PathBuf> {
    let dir = crate::corpus::vectors();
    if dir.is_none() {
        eprintln!("SKIPPED {test}");
    }
    dir
}

/// Start `vouch-kbs serve --listen 127.0.0.1:0 ARGS`, logging to `log`; returns the child and the
/// address it printed once listening.
pub fn spawn_kbs(args: &[std::ffi::OsString], log: &Path) -> (Child, String) {
    let mut cmd = Command::new(vouch_kbs());
    cmd.arg("serve");
    if !args.iter().any(|a| a == "--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(log).expect("kbs log"))
        .spawn()
        .expect("spawn vouch-kbs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!(
                "vouch-kbs did not start: {line:?}: {}",
                fs::read_to_string(log).unwrap_or_default()
            )
        })
        .to_string();
    (child, addr)
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Connect to `addr` until it answers (bounded), and return all it sends.
pub fn read_from(addr: &str, limit: Duration) -> Result<String, String> {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    loop {
        let attempt = std::net::TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        match attempt {
            Ok(out) if !out.is_empty() => return Ok(out),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(_) => return Err("connected, but nothing was sent".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A real OCI registry (`docker-registry`) on a free loopback port, stopped by PID on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    root: PathBuf,
}

impl Registry {
    pub fn start(dir: &Path) -> Option<Registry> {
        Self::start_with_auth(dir, None)
    }

    /// A registry that accepts only bearer tokens from the issuer at `realm` (signed by the key
    /// of the certificate `cert`).
    pub fn start_with_token_auth(dir: &Path, realm: &str, cert: &Path) -> Option<Registry> {
        let section = format!(
            "auth:\n  token:\n    realm: {realm}\n    service: vouch-test-registry\n    issuer: vouch-test-issuer\n    rootcertbundle: {}\n",
            cert.display()
        );
        Self::start_configured(dir, Some(section))
    }

    /// A registry that requires HTTP basic authentication with `(user, password)`.
    pub fn start_with_auth(dir: &Path, auth: Option<(&str, &str)>) -> Option<Registry> {
        let section = auth.map(|(user, password)| {
            // bcrypt, as the registry's htpasswd wants it.
            let out = Command::new("python3")
                .args(["-c", "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))", password])
                .output()
                .expect("python3");
            let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(hash.starts_with("$2"), "no bcrypt here: {}", String::from_utf8_lossy(&out.stderr));
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
            format!("auth:\n  htpasswd:\n    realm: vouch-test\n    path: {}\n", htpasswd.display())
        });
        Self::start_configured(dir, section)
    }

    fn start_configured(dir: &Path, auth_section: Option<String>) -> Option<Registry> {
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
        let auth_section = auth_section.unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n{auth_section}http:\n  addr: 127.0.0.1:{port}\n",
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
    pub fn push(&self, layout: &Path, name: &str, repo: &str) {
        self.push_as(layout, name, repo, None)
    }

    pub fn push_as(&self, layout: &Path, name: &str, repo: &str, creds: Option<&str>) {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(creds.map(|c| format!("--dest-creds={c}")))
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

    pub fn blob_data(&self, digest: &str) -> PathBuf {
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

/// A plain web server (python3's http.server) on a free loopback port serving `dir`, stopped by
/// PID when dropped.
pub struct WebServer {
    child: Child,
    pub port: u16,
}

impl WebServer {
    /// Static files from `dir` (python3's http.server).
    pub fn serve(dir: &Path) -> WebServer {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(dir);
        WebServer::spawn(cmd, port)
    }

    /// A python3 script that serves on 127.0.0.1, given the port as its first argument.
    pub fn script(script: &Path, args: &[&std::ffi::OsStr]) -> WebServer {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(port.to_string()).args(args);
        WebServer::spawn(cmd, port)
    }

    fn spawn(mut cmd: Command, port: u16) -> WebServer {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the python3 server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        WebServer { child, port }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// No image is listed and no partial file is left in the image store.
pub fn store_is_clean(env: &TestEnv, d: &Daemon) {
    assert_eq!(d.json(&["image", "ls", "--json"]), serde_json::json!([]));
    let tmp: Vec<_> = std::fs::read_dir(env.state().join("images/tmp"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "partial files left: {tmp:?}");
}

/// Run the openssl command line in `dir`; it must succeed.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test PKI in `dir`: `NAME-ca.pem` (a self-signed P-256 CA) and `NAME.pem` / `NAME.key`, a
/// server certificate it issued for 127.0.0.1.
pub fn server_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    fs::create_dir_all(dir).expect("mkdir");
    let ca = format!("{name}-ca");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509", "-days", "30", "-keyout"];
    let ca_key = format!("{ca}.key");
    let ca_pem = format!("{ca}.pem");
    let ca_subj = format!("/CN=vouch test {ca}");
    args.extend([
        ca_key.as_str(),
        "-out",
        ca_pem.as_str(),
        "-subj",
        ca_subj.as_str(),
    ]);
    args.extend(ec);
    args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    openssl(dir, &args);
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let mut args = vec!["req", "-new", "-keyout", key.as_str(), "-out", csr.as_str()];
    args.extend(["-subj", "/CN=127.0.0.1"]);
    args.extend(ec);
    openssl(dir, &args);
    fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write");
    let ext = format!("{name}.ext");
    openssl(
        dir,
        &[
            "x509", "-req", "-in", &csr, "-CA", &ca_pem, "-CAkey", &ca_key, "-days", "30",
            "-extfile", &ext, "-out", &pem,
        ],
    );
    (dir.join(ca_pem), dir.join(pem), dir.join(key))
}
