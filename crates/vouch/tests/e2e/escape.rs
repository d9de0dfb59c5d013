//! A container trying to get out through the runtime itself: the runtime binary reached
//! through `/proc/self/exe` (CVE-2019-5736), and the kernel surface of new user namespaces.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use vouch_testkit::*;

/// A stand-in for `ld-linux-x86-64.so.2` with no C library: it reports what `/proc/self/exe`
/// is (its link text, device and inode) and whether it can be opened for writing.
const FAKE_LD_SO: &str = r#"
typedef unsigned long u64;
static long sys(long n, long a, long b, long c) {
    long r;
    __asm__ volatile ("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static long len(const char *s) { long n = 0; while (s[n]) n++; return n; }
static void put(const char *s) { sys(1, 1, (long)s, len(s)); }
static void putn(u64 v) {
    char b[24]; int i = 23; b[i] = 0;
    do { b[--i] = '0' + v % 10; v /= 10; } while (v);
    put(b + i);
}
struct kstat { u64 dev, ino, nlink; unsigned mode, uid, gid, pad; u64 rdev; long size, blksize, blocks; u64 t[6]; long unused[3]; };
void _start(void) {
    char link[256];
    long n = sys(89, (long)"/proc/self/exe", (long)link, 255);
    if (n < 0) n = 0;
    link[n] = 0;
    struct kstat st;
    long r = sys(4, (long)"/proc/self/exe", (long)&st, 0);
    put("exe "); put(link);
    put(" dev "); putn(r == 0 ? st.dev : 0);
    put(" ino "); putn(r == 0 ? st.ino : 0);
    put("\n");
    sys(60, 0, 0, 0);
}
"#;

/// Compile a C program with no C library (gcc is part of the build tool chain).
fn compile_static(dir: &Path, name: &str, source: &str) -> Option<PathBuf> {
    let src = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&src, source).expect("source");
    let out = Command::new("gcc")
        .args([
            "-static",
            "-nostdlib",
            "-no-pie",
            "-O1",
            "-fno-stack-protector",
            "-fno-builtin",
            "-mgeneral-regs-only",
            "-o",
        ])
        .arg(&bin)
        .arg(&src)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(bin),
        other => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "gcc is needed to build the test's ELF interpreter: {other:?}"
            );
            eprintln!("SKIPPED: gcc cannot build a static program here: {other:?}");
            None
        }
    }
}

/// An entrypoint `#!/proc/self/exe` with the image's own ELF interpreter makes the kernel run
/// whatever executable the container's first process came from, with the image's code in it:
/// that must be the sealed copy vouchd made of itself, never the host's vouchd file.
#[test]
fn the_runtime_binary_is_never_reachable_from_a_container() {
    if !require_root("the_runtime_binary_is_never_reachable_from_a_container") {
        return;
    }
    let env = TestEnv::new();
    let Some(fake_ld) = compile_static(env.path(), "fake-ld", FAKE_LD_SO) else {
        return;
    };
    let ld = std::fs::read(&fake_ld).expect("fake ld.so");
    let d = env.start();
    load_layers(
        &env,
        &d,
        "exe",
        &[
            busybox_layer(),
            Layer::new()
                .dir("lib64/")
                .file("lib64/ld-linux-x86-64.so.2", 0o755, &ld)
                .file("evil", 0o755, b"#!/proc/self/exe\n")
                .finish(),
        ],
        &["/evil"],
        &[],
    );
    let out = d.vouch(&["run", "--rm", "exe"]);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("exe "))
        .unwrap_or_else(|| panic!("the interpreter did not run: {text} {}", stderr(&out)));
    // "exe LINK dev N ino N" (the link text may hold spaces: "/memfd:vouchd (deleted)").
    let rest = line.strip_prefix("exe ").expect("exe");
    let (link, numbers) = rest.rsplit_once(" dev ").expect("dev");
    let (dev, ino) = numbers.split_once(" ino ").expect("ino");
    let host = std::fs::metadata(vouchd()).expect("vouchd");
    assert_ne!(
        (
            dev.parse::<u64>().expect("dev"),
            ino.parse::<u64>().expect("ino")
        ),
        (host.dev(), host.ino()),
        "the container ran inside the host's vouchd binary ({link})"
    );
    assert!(
        link.starts_with("/memfd:vouchd"),
        "the container's first process came from {link}, not the sealed copy"
    );
}

/// Raw system calls from inside a container, each reported as `NAME ok` or `NAME errno N`.
const SYSCALL_PROBE: &str = r#"
typedef unsigned long u64;
static long sys(long n, long a, long b, long c, long d, long e) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    __asm__ volatile ("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8) : "rcx", "r11", "memory");
    return r;
}
static long len(const char *s) { long n = 0; while (s[n]) n++; return n; }
static void put(const char *s) { sys(1, 1, (long)s, len(s), 0, 0); }
static void putn(u64 v) {
    char b[24]; int i = 23; b[i] = 0;
    do { b[--i] = '0' + v % 10; v /= 10; } while (v);
    put(b + i);
}
static void report(const char *name, long r) {
    put(name);
    if (r >= 0) put(" ok\n"); else { put(" errno "); putn(-r); put("\n"); }
}
/* A child made by clone exits at once; the parent reaps it. */
static void clone_with(const char *name, long flags) {
    long r = sys(56, flags | 17, 0, 0, 0, 0);
    if (r == 0) sys(60, 0, 0, 0, 0, 0);
    if (r > 0) sys(61, r, 0, 0, 0, 0);
    report(name, r);
}
void _start(void) {
    clone_with("fork", 0);
    clone_with("thread-flags", 0x00100000 | 0x01000000 | 0x00200000);
    clone_with("clone-newuser", 0x10000000);
    clone_with("clone-newns", 0x00020000);
    clone_with("clone-newnet", 0x40000000);
    clone_with("clone-newpid", 0x20000000);
    clone_with("clone-newuts", 0x04000000);
    clone_with("clone-newipc", 0x08000000);
    clone_with("clone-newcgroup", 0x02000000);
    u64 args[11] = {0x10000000, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0};
    long r = sys(435, (long)args, 88, 0, 0, 0);
    if (r == 0) sys(60, 0, 0, 0, 0, 0);
    report("clone3-newuser", r);
    args[0] = 0;
    r = sys(435, (long)args, 88, 0, 0, 0);
    if (r == 0) sys(60, 0, 0, 0, 0, 0);
    report("clone3-plain", r);
    report("unshare-newuser", sys(272, 0x10000000, 0, 0, 0, 0));
    report("personality-query", sys(135, 0xffffffff, 0, 0, 0, 0));
    report("personality-linux", sys(135, 0, 0, 0, 0, 0));
    report("personality-no-aslr", sys(135, 0x0040000, 0, 0, 0, 0));
    report("socket-inet", sys(41, 2, 1, 0, 0, 0));
    report("socket-vsock", sys(41, 40, 1, 0, 0, 0));
    report("keyctl", sys(250, 0, 0, 0, 0, 0));
    report("getpid", sys(39, 0, 0, 0, 0, 0));
    sys(60, 0, 0, 0, 0, 0);
}
"#;

/// A system call through the i386 entry point (`int 0x80`: a 32-bit `clone` with
/// CLONE_NEWUSER) or the x32 one (`getpid` with the x32 bit): the process must not survive it.
const COMPAT_PROBE: &str = r#"
static long len(const char *s) { long n = 0; while (s[n]) n++; return n; }
static void put(const char *s) {
    long r;
    __asm__ volatile ("syscall" : "=a"(r) : "a"(1), "D"(1), "S"((long)s), "d"(len(s)) : "rcx", "r11", "memory");
}
void _start(void) {
    long r;
    put("before\n");
#ifdef X32
    __asm__ volatile ("syscall" : "=a"(r) : "a"(0x40000000L | 39) : "rcx", "r11", "memory");
#else
    __asm__ volatile ("int $0x80" : "=a"(r) : "a"(120), "b"(0x10000000 | 17), "c"(0), "d"(0), "S"(0), "D"(0) : "memory");
#endif
    put("survived\n");
    __asm__ volatile ("syscall" : : "a"(60), "D"(0) : "rcx", "r11", "memory");
}
"#;

/// Docker's default-profile semantics from inside a container: no new namespaces by clone (any
/// namespace flag), clone3 answered with ENOSYS, unshare refused, only Docker's personality
/// values, no vsock sockets; ordinary forks, threads and sockets work. The 32-bit and x32 system
/// call entry points are not available at all: a call through them kills the caller.
#[test]
fn seccomp_refuses_new_namespaces_from_inside_a_container() {
    if !require_root("seccomp_refuses_new_namespaces_from_inside_a_container") {
        return;
    }
    let env = TestEnv::new();
    let Some(probe) = compile_static(env.path(), "probe", SYSCALL_PROBE) else {
        return;
    };
    let probe = std::fs::read(&probe).expect("probe");
    let d = env.start();
    load_layers(
        &env,
        &d,
        "probe",
        &[
            busybox_layer(),
            Layer::new().file("probe", 0o755, &probe).finish(),
        ],
        &["/probe"],
        &[],
    );
    let out = d.vouch(&["run", "--rm", "probe"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let result = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    let eperm = format!("errno {}", libc::EPERM);
    for ok in [
        "fork",
        "thread-flags",
        "personality-query",
        "personality-linux",
        "socket-inet",
        "getpid",
    ] {
        assert_eq!(result(ok), "ok", "{ok}: {text}");
    }
    for refused in [
        "clone-newuser",
        "clone-newns",
        "clone-newnet",
        "clone-newpid",
        "clone-newuts",
        "clone-newipc",
        "clone-newcgroup",
        "unshare-newuser",
        "personality-no-aslr",
        "socket-vsock",
        "keyctl",
    ] {
        assert_eq!(result(refused), eperm, "{refused}: {text}");
    }
    let enosys = format!("errno {}", libc::ENOSYS);
    assert_eq!(result("clone3-newuser"), enosys, "{text}");
    assert_eq!(result("clone3-plain"), enosys, "{text}");
    // Ordinary programs still run: busybox forks a pipeline.
    let out = d.vouch(&["run", "--rm", "probe", "sh", "-c", "echo a | cat; id -u"]);
    assert_eq!(stdout(&out), "a\n0\n", "{}", stderr(&out));
    // The compat entry points kill the caller (SIGSYS: exit status 128 + 31).
    for (name, define) in [("compat-i386", ""), ("compat-x32", "#define X32\n")] {
        let Some(bin) = compile_static(env.path(), name, &format!("{define}{COMPAT_PROBE}")) else {
            return;
        };
        load_layers(
            &env,
            &d,
            name,
            &[
                busybox_layer(),
                Layer::new()
                    .file("probe", 0o755, &std::fs::read(&bin).expect("probe"))
                    .finish(),
            ],
            &["/probe"],
            &[],
        );
        let out = d.vouch(&["run", "--name", name, name]);
        assert_eq!(stdout(&out), "before\n", "{name}: {}", stderr(&out));
        assert_eq!(out.status.code(), Some(128 + libc::SIGSYS), "{name}");
        // The task says why it died.
        let ended = d.json(&["inspect", name])[0]["events"]
            .as_array()
            .and_then(|e| e.last().cloned())
            .expect("events");
        assert!(
            ended["message"].as_str().is_some_and(
                |m| m.contains("SIGSYS: a system call through the 32-bit or x32 interface")
            ),
            "{ended}"
        );
        d.ok(&["rm", name]);
    }
}

/// User and group ids that the kernel reads as -1 (or that overflow) never reach it: from the
/// flags, and from the image's own /etc/passwd and /etc/group, the launch is refused before
/// anything runs, instead of running as root while the measured config names another user.
#[test]
fn out_of_range_ids_are_refused_before_anything_runs() {
    if !require_root("out_of_range_ids_are_refused_before_anything_runs") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_layers(
        &env,
        &d,
        "ids",
        &[
            busybox_layer(),
            Layer::new()
                .file(
                    "etc/passwd",
                    0o644,
                    b"root:x:0:0:root:/root:/bin/sh\nbig:x:4294967295:0::/:/bin/sh\n",
                )
                .file("etc/group", 0o644, b"root:x:0:\nwide:x:4294967295:\n")
                .finish(),
        ],
        &["/bin/sh"],
        &[],
    );
    for (args, says) in [
        (
            vec!["--user", "4294967295"],
            "id 4294967295 is out of range",
        ),
        (
            vec!["--user", "0:4294967295"],
            "id 4294967295 is out of range",
        ),
        (
            vec!["--user", "4294967296"],
            "id 4294967296 is out of range",
        ),
        (
            vec!["--group-add", "4294967295"],
            "id 4294967295 is out of range",
        ),
        (
            vec!["--user", "big"],
            "/etc/passwd entry for \"big\" has id 4294967295",
        ),
        (
            vec!["--user", "0:wide"],
            "/etc/group entry for \"wide\" has id 4294967295",
        ),
        (
            vec!["--group-add", "wide"],
            "/etc/group entry for \"wide\" has id 4294967295",
        ),
    ] {
        let mut run = vec!["run", "--rm"];
        run.extend(&args);
        run.extend(["ids", "id", "-u"]);
        let out = d.vouch(&run);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stdout(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}: something ran");
    }
    // Nothing was launched, so nothing was measured as launched.
    assert_eq!(d.json(&["ps", "-a", "--json"]), serde_json::json!([]));
    // The largest valid id runs as itself.
    let out = d.vouch(&[
        "run",
        "--rm",
        "--user",
        "4294967294:4294967294",
        "ids",
        "id",
        "-u",
    ]);
    assert_eq!(stdout(&out), "4294967294\n", "{}", stderr(&out));
}

/// Terminal escapes and line breaks from outside are shown, never obeyed: an image name that is
/// not a reference is refused when the layout is loaded; an image's command with escape
/// sequences is listed escaped by `vouch ps`; evidence whose log names containers with escapes
/// and line breaks (as a hostile vouchd could write) gets one escaped row each from
/// `vouch verify`.
#[test]
fn untrusted_text_never_reaches_the_terminal_raw() {
    if !require_root("untrusted_text_never_reaches_the_terminal_raw") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    for (i, name) in ["evil\u{1b}[2K", "two\nlines", "\u{202e}gnp", "sp ace"]
        .iter()
        .enumerate()
    {
        let layout = env.path().join(format!("layout-name-{i}"));
        write_layout(&layout, name, &[busybox_layer()], &["/bin/true"], &[]);
        let out = d.vouch(&["image", "load", "-i", layout.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(125), "{name:?} accepted");
        let err = stderr(&out);
        assert!(err.contains("is not a valid reference"), "{err}");
        assert!(
            !err.contains('\u{1b}') && !err.contains('\u{202e}'),
            "{err:?}"
        );
        assert_eq!(err.lines().count(), 1, "{err:?}");
    }
    assert_eq!(d.json(&["image", "ls", "--json"]), serde_json::json!([]));
    // A valid name, a hostile command.
    load_layers(
        &env,
        &d,
        "cmd",
        &[busybox_layer()],
        &["sleep", "30\u{1b}[2K\u{1b}[1A"],
        &[],
    );
    d.vouch(&["run", "-d", "--name", "esc", "cmd"]);
    let ps = d.ok(&["ps", "-a"]);
    assert!(!ps.contains('\u{1b}'), "{ps:?}");
    assert!(ps.contains("\\u001b"), "{ps:?}");
    d.ok(&["rm", "-f", "esc"]);

    // Evidence from a hostile daemon: names with escapes and line breaks.
    let dir = env.path().join("hostile-tee");
    let sim =
        std::sync::Arc::new(vouch_tee::sim::SimAttester::open(&dir.join("sim")).expect("sim"));
    let (mut j, _) = vouch_tee::Journal::open(&dir.join("log"), sim, vouch_tee::VOUCH_REGISTER)
        .expect("journal");
    j.append(
        "container.create",
        serde_json::json!({"id": "c1\u{1b}[1A", "name": "x\u{1b}[2K\n    c2  fake-row  sha256:ok  0", "image": "\u{202e}img",
               "image_digest": "sha256:aa\r", "config_digest": "sha384:00"}),
    )
    .expect("append");
    let nonce = "00112233445566778899aabbccddeeff";
    let ev = j
        .evidence(serde_json::json!({"nonce": nonce}))
        .expect("evidence");
    let path = env.path().join("hostile-evidence.json");
    std::fs::write(&path, serde_json::to_vec(&ev).expect("json")).expect("write");
    let out = d.vouch(&[
        "verify",
        path.to_str().expect("utf8"),
        "--nonce",
        nonce,
        "--allow-sim",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for raw in ['\u{1b}', '\u{202e}', '\r'] {
        assert!(!text.contains(raw), "raw {raw:?} in {text:?}");
    }
    assert!(
        !text.contains("\n    c2  fake-row"),
        "a row was injected: {text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("\\u001b")).count(),
        1,
        "one escaped container row: {text}"
    );
}

/// `vouch image load` sends the archive over the socket (a layout directory as a tar made on
/// the fly, an archive file, or stdin); the daemon opens a path of its own host only when told
/// to with --daemon-path, and then only a regular file, without following a link or waiting
/// on a FIFO; what it reports about a file that is not an archive never quotes the file.
#[test]
fn image_load_streams_and_the_daemon_opens_no_client_path() {
    if !require_root("image_load_streams_and_the_daemon_opens_no_client_path") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    let (layout, digest) = busybox_layout(&env);
    // A directory, sent as a tar.
    let out = d.ok(&[
        "image",
        "load",
        "-i",
        layout.to_str().expect("utf8"),
        "--name",
        "from-dir",
    ]);
    assert!(out.contains(&digest), "{out}");
    // An archive file, and the same archive on stdin.
    let archive = env.path().join("bb.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    d.ok(&[
        "image",
        "load",
        "-i",
        archive.to_str().expect("utf8"),
        "--name",
        "from-file",
    ]);
    let out = run_fed(
        Command::new(vouch())
            .arg("--socket")
            .arg(env.socket())
            .args(["image", "load", "--name", "from-stdin"])
            .stderr(std::process::Stdio::piped()),
        &std::fs::read(&archive).expect("read"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = d.json(&["image", "ls", "--json"])[0]["names"]
        .as_array()
        .expect("names")
        .iter()
        .map(|n| n.as_str().expect("name").to_string())
        .collect();
    for n in ["from-dir", "from-file", "from-stdin"] {
        assert!(
            names.contains(&format!("{n}:latest")),
            "{n} missing from {names:?}"
        );
    }
    // Nothing on stdin: said as such, before anything is sent.
    let out = d.vouch(&["image", "load"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("stdin is empty"), "{}", stderr(&out));
    // The daemon's own files, by path: only with --daemon-path, and never read out.
    let secret = env.path().join("shadow");
    std::fs::write(&secret, "root:$6$SECRETHASH:19000:0:99999:7:::\n").expect("write");
    let out = d.vouch(&[
        "image",
        "load",
        "--daemon-path",
        secret.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("not a valid tar archive"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("SECRETHASH") && !stderr(&out).contains("root:"),
        "{}",
        stderr(&out)
    );
    let fifo = env.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
    let link = env.path().join("link.tar");
    std::os::unix::fs::symlink(&archive, &link).expect("link");
    for (p, says) in [
        (fifo.as_path(), "not a regular file"),
        (layout.as_path(), "not a regular file"),
        (link.as_path(), "symbolic links"),
    ] {
        let started = std::time::Instant::now();
        let out = d.vouch(&["image", "load", "--daemon-path", p.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(125), "{}", p.display());
        assert!(
            stderr(&out).contains(says),
            "{}: {}",
            p.display(),
            stderr(&out)
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{} hung",
            p.display()
        );
    }
    // A regular archive on the daemon's host loads by path.
    let out = d.ok(&[
        "image",
        "load",
        "--daemon-path",
        archive.to_str().expect("utf8"),
        "--name",
        "from-host",
    ]);
    assert!(out.contains(&digest), "{out}");
    // A client that still sends a path as JSON to the streaming endpoint gets nothing opened.
    let resp = vouch_api::Client::new(env.socket())
        .send(
            "POST",
            "/v1/images/load",
            Some(br#"{"path":"/etc/shadow"}"#),
        )
        .expect("send");
    let (status, body) = vouch_api::client::read_body_limited(resp, 1 << 16).expect("body");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("the uploaded archive is not a valid tar archive"),
        "{body}"
    );
    assert!(
        !body.contains("images/tmp"),
        "the store's own path was shown: {body}"
    );
}

/// Every duration that comes in is bounded: a stop timeout of 2^64-1 seconds is refused with a
/// reason (it used to panic the handler), so is an hour and a second, and the daemon keeps
/// serving; a Conker MaxExecutionTime beyond a year is refused; the CLI refuses such values
/// before asking.
#[test]
fn every_duration_from_outside_is_bounded() {
    if !require_root("every_duration_from_outside_is_bounded") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let id = d.ok(&["run", "-d", "bb", "sleep", "30"]).trim().to_string();
    let client = vouch_api::Client::new(env.socket());
    for t in ["18446744073709551615", "3601", "-1", "1e3"] {
        let resp = client
            .send(
                "POST",
                &format!("/v1/containers/{id}/stop?timeout={t}"),
                None,
            )
            .expect("send");
        let (status, body) = vouch_api::client::read_body_limited(resp, 1 << 16).expect("body");
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "timeout={t}: {body}");
        assert!(body.contains("from 0 to 3600"), "{body}");
    }
    assert_eq!(d.json(&["inspect", &id])[0]["state"], "Running");
    let out = d.vouch(&["stop", "-t", "99999", &id]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    d.ok(&["stop", "-t", "0", &id]);
    let conker = serde_json::json!({
        "Name": "long", "ImageInfo": {"ImageName": "bb", "MaxExecutionTime": 10u64 << 40},
    });
    let resp = client
        .send(
            "POST",
            "/sw/api/v1/container",
            Some(conker.to_string().as_bytes()),
        )
        .expect("send");
    let (status, body) = vouch_api::client::read_body_limited(resp, 1 << 16).expect("body");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("MaxExecutionTime"), "{body}");
}

/// `--security-opt seccomp=FILE`: the profile is added to vouch's filter, never put in its
/// place. Both apply to the container's first process and to an exec'd one (two filters); what
/// the profile refuses is refused, what vouch's refuses stays refused though the profile allows
/// everything else; the profile is measured. Unconfined, a notifier, the flag that turns off a
/// speculative-execution mitigation: refused.
#[test]
fn an_added_seccomp_profile_only_takes_syscalls_away() {
    if !require_root("an_added_seccomp_profile_only_takes_syscalls_away") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let profile = env.path().join("no-chmod.json");
    let write = |path: &std::path::Path, v: serde_json::Value| {
        std::fs::write(path, v.to_string()).expect("profile")
    };
    write(
        &profile,
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["chmod", "fchmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
        }),
    );
    let opt = format!("seccomp={}", profile.display());
    let script = "exec 2>&1; touch /tmp/f; chmod 600 /tmp/f && echo chmod-ok; unshare -n true && echo unshare-ok; grep Seccomp_filters /proc/self/status; sleep 30";
    let id = d.ok(&[
        "run",
        "-d",
        "--security-opt",
        &opt,
        "--security-opt",
        "no-new-privileges",
        "bb",
        "sh",
        "-c",
        script,
    ]);
    let id = id.trim();
    let logs = (0..100)
        .find_map(|_| {
            let l = d.ok(&["logs", id]);
            if l.contains("Seccomp_filters") {
                Some(l)
            } else {
                std::thread::sleep(std::time::Duration::from_millis(50));
                None
            }
        })
        .expect("the container's output");
    assert!(
        !logs.contains("chmod-ok"),
        "the added profile did not apply: {logs}"
    );
    assert!(logs.contains("Operation not permitted"), "{logs}");
    assert!(
        !logs.contains("unshare-ok"),
        "vouch's filter was replaced: {logs}"
    );
    assert!(logs.contains("Seccomp_filters:\t2"), "{logs}");
    // An exec'd process: both filters too.
    let exec = d.vouch(&[
        "exec",
        id,
        "sh",
        "-c",
        "chmod 600 /tmp/f && echo chmod-ok; grep Seccomp_filters /proc/self/status",
    ]);
    let text = format!("{}{}", stdout(&exec), stderr(&exec));
    assert!(
        !text.contains("chmod-ok") && text.contains("Seccomp_filters:\t2"),
        "{text}"
    );
    // Without it, chmod works and one filter is loaded.
    let plain = d.ok(&[
        "run",
        "--rm",
        "bb",
        "sh",
        "-c",
        "touch /tmp/f; chmod 600 /tmp/f && echo chmod-ok; grep Seccomp_filters /proc/self/status",
    ]);
    assert!(
        plain.contains("chmod-ok") && plain.contains("Seccomp_filters:\t1"),
        "{plain}"
    );
    // Measured.
    let spec = d.json(&["inspect", "--spec", id]);
    let added: serde_json::Value = serde_json::from_str(
        spec[0]["spec"]["annotations"]["io.vouch.seccomp"]
            .as_str()
            .expect("the added profile"),
    )
    .expect("json");
    assert_eq!(added["syscalls"][0]["names"][0], "chmod");
    // Refusals.
    let notify = env.path().join("notify.json");
    write(
        &notify,
        serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
    );
    let spec_allow = env.path().join("spec-allow.json");
    write(
        &spec_allow,
        serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}),
    );
    let broken = env.path().join("broken.json");
    write(
        &broken,
        serde_json::json!({"defaultAction": "SCMP_ACT_MAYBE"}),
    );
    for (opt, want) in [
        (
            "seccomp=unconfined".to_string(),
            "vouch's seccomp filter always applies",
        ),
        (
            format!("seccomp={}", notify.display()),
            "uses SCMP_ACT_NOTIFY: vouch runs no user-space notifier",
        ),
        (
            format!("seccomp={}", spec_allow.display()),
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        ),
        (
            format!("seccomp={}", broken.display()),
            "the seccomp profile is not an OCI seccomp profile",
        ),
        (
            "apparmor=unconfined".to_string(),
            "vouch takes seccomp=FILE and no-new-privileges",
        ),
    ] {
        let out = d.vouch(&["run", "--rm", "--security-opt", &opt, "bb", "true"]);
        assert!(!out.status.success(), "{opt} accepted");
        assert!(stderr(&out).contains(want), "{opt}: {}", stderr(&out));
    }
}
