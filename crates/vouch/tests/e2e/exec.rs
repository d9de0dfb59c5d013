//! `vouch exec`: a process run inside a running container, measured as `container.exec` before
//! it runs, with the container's seccomp filter, capabilities, user and namespaces.

use vouch_testkit::*;

fn exec_records(d: &Daemon, id: &str) -> Vec<serde_json::Value> {
    let ev = d.ok(&["attest", "--format", "aael"]);
    ev.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("container.exec"))
        .filter_map(|l| l.split_once(" {").map(|(_, j)| format!("{{{j}")))
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
        .filter(|v| v["id"] == id)
        .collect()
}

/// The field `name` of /proc/self/status as a process sees it.
fn status_field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn an_exec_runs_inside_the_container_sealed_as_its_process_and_measured_first() {
    if !require_root("an_exec_runs_inside_the_container_sealed_as_its_process_and_measured_first") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let id = d
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--user",
            "1000:1000",
            "bb",
            "/bin/sh",
            "-c",
            "cat /proc/self/status /proc/self/limits; exec sleep 60",
        ])
        .trim()
        .to_string();

    // Output, stderr and the exit code come back.
    let out = d.vouch(&[
        "exec",
        "web",
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");

    // The container's user by default; another when asked. Its PID namespace: PID 1 is the
    // container's own process.
    assert_eq!(d.ok(&["exec", "web", "id", "-u"]).trim(), "1000");
    assert_eq!(d.ok(&["exec", "-u", "0:0", "web", "id", "-u"]).trim(), "0");
    assert_eq!(
        d.ok(&["exec", "web", "cat", "/proc/1/cmdline"]),
        "sleep\u{0}60\u{0}"
    );
    assert_eq!(
        d.ok(&[
            "exec",
            "-e",
            "GREETING=hi",
            "-w",
            "/tmp",
            "web",
            "/bin/sh",
            "-c",
            "echo $GREETING $PWD"
        ]),
        "hi /tmp\n"
    );

    // Sealed like the container's first process: the same seccomp filter (mode 2), the same
    // capability sets, no new privileges, even as root.
    let first = d.ok(&["logs", "web"]);
    let exec = d.ok(&["exec", "-u", "0:0", "web", "cat", "/proc/self/status"]);
    assert_eq!(status_field(&exec, "Seccomp"), "2", "{exec}");
    assert_eq!(status_field(&exec, "NoNewPrivs"), "1", "{exec}");
    for f in ["CapBnd", "Seccomp", "NoNewPrivs"] {
        assert_eq!(status_field(&exec, f), status_field(&first, f), "{f}");
    }
    // And the same resource limits (the container's 1024 open files, not the monitor's).
    let limits = d.ok(&["exec", "-u", "0:0", "web", "cat", "/proc/self/limits"]);
    let open_files = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("Max open files"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no open-file limit in {text}"))
    };
    assert_eq!(open_files(&limits), open_files(&first));
    assert_eq!(open_files(&limits), "Max open files 1024 1024 files");
    // A call the filter refuses is refused for the exec'd process too (unshare needs
    // namespace flags on clone/unshare, which the filter denies).
    let denied = d.vouch(&["exec", "-u", "0:0", "web", "unshare", "-n", "true"]);
    assert!(!denied.status.success(), "unshare was allowed");

    // An exec that ended before anyone asked how: its end is kept for the wait that comes later.
    let detached = d
        .ok(&["exec", "-d", "web", "/bin/sh", "-c", "exit 6"])
        .trim()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (tx, rx) = std::sync::mpsc::channel();
    let socket = env.socket();
    std::thread::spawn(move || {
        let done: Result<vouch_api::Exec, _> = vouch_api::Client::new(socket).call(
            "POST",
            &format!("/v1/execs/{detached}/wait"),
            None::<&()>,
        );
        let _ = tx.send(done.map(|e| e.exit_code));
    });
    let waited = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the wait for an exec that had ended never returned");
    assert_eq!(waited.expect("wait"), Some(6));

    // Every exec is in the log before it ran, by its process's digest; the digest is the
    // canonical JSON of the process as asked.
    let records = exec_records(&d, &id);
    assert_eq!(records.len(), 9, "{records:?}");
    let want = vouch_measure::canonical::canonical_sha384(&serde_json::json!({
        "args": ["id", "-u"], "env": [], "cwd": null, "uid": null, "gid": null,
        "additional_gids": [], "tty": false,
    }))
    .expect("digest");
    assert_eq!(records[1]["process_digest"], want.as_str());
    assert_eq!(records[1]["tty"], false);

    // vouch verify lists them with their container.
    let verdict = d.attest_and_verify(env.path());
    assert_eq!(
        verdict.matches("      exec:          sha384:").count(),
        9,
        "{verdict}"
    );
    assert!(
        verdict.contains(&format!("      exec:          {want} (record ")),
        "{verdict}"
    );

    // What exec refuses, it says, and nothing is measured for it.
    let before = exec_records(&d, &id).len();
    for (args, want) in [
        (vec!["exec", "-u", "root", "web", "id"], "UID or UID:GID"),
        (vec!["exec", "-w", "tmp", "web", "pwd"], "absolute path"),
        (vec!["exec", "nosuch", "true"], "no such container: nosuch"),
    ] {
        let out = d.vouch(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    // A program that does not exist fails the exec, after its record (it could have run).
    let missing = d.vouch(&["exec", "web", "/no/such/program"]);
    assert!(!missing.status.success());
    assert_eq!(exec_records(&d, &id).len(), before + 1);
    d.ok(&["stop", "-t", "0", "web"]);
    let stopped = d.vouch(&["exec", "web", "true"]);
    assert!(
        stderr(&stopped).contains("not running"),
        "{}",
        stderr(&stopped)
    );
    assert_eq!(exec_records(&d, &id).len(), before + 1);
}

/// The node (`vouchd --exec deny`) and the image (its label `io.vouch.exec=deny`) can each
/// forbid exec; the refusal names which, and nothing is measured.
#[test]
fn exec_is_refused_where_the_node_or_the_image_forbids_it() {
    if !require_root("exec_is_refused_where_the_node_or_the_image_forbids_it") {
        return;
    }
    let env = TestEnv::new();
    let mut d = env.start();
    load_busybox(&env, &d, "bb");
    let sealed = env.path().join("img-sealed");
    write_layout_labelled(
        &sealed,
        "sealed",
        &[busybox_layer()],
        &["/bin/sh"],
        &["PATH=/bin"],
        false,
        &[("io.vouch.exec", "deny")],
    );
    d.ok(&[
        "image",
        "load",
        "-i",
        sealed.to_str().expect("utf8"),
        "--name",
        "sealed",
    ]);
    d.ok(&["run", "-d", "--name", "open", "bb", "sleep", "60"]);
    d.ok(&["run", "-d", "--name", "closed", "sealed", "sleep", "60"]);
    let records = |d: &Daemon| {
        d.ok(&["attest", "--format", "aael"])
            .lines()
            .filter(|l| l.contains("container.exec"))
            .count()
    };
    assert_eq!(d.ok(&["exec", "open", "echo", "ok"]), "ok\n");
    let out = d.vouch(&["exec", "closed", "echo", "no"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("exec is denied by the image sealed (its label io.vouch.exec=deny)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(records(&d), 1);
    d.kill9();

    // The node's flag: vouchd restarted with --exec deny (its containers run on).
    let d = env.start_with(&["--tee", "sim", "--exec", "deny"]);
    let out = d.vouch(&["exec", "open", "echo", "no"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("exec is denied on this node (vouchd --exec deny)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(records(&d), 1);
    d.ok(&["rm", "-f", "open", "closed"]);
}

/// Everything read from a terminal's master side, gathered by a thread.
pub(crate) fn gather(master: std::fs::File) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::Read;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let out = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut master = master;
        let mut buf = [0u8; 4096];
        // EIO once the last of the terminal's other side is closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.lock()
                .expect("lock")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    seen
}

pub(crate) fn wait_for_text(seen: &std::sync::Mutex<String>, want: &str, mut again: impl FnMut()) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut next = std::time::Instant::now();
    while !seen.lock().expect("lock").contains(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {want:?} in {:?}",
            seen.lock().expect("lock")
        );
        if std::time::Instant::now() >= next {
            again();
            next = std::time::Instant::now() + std::time::Duration::from_millis(500);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `vouch exec -i` feeds stdin and closes it at its end; `-it` gives the process a terminal of
/// the caller's size that follows the caller's resizes, with the exit code coming back.
#[test]
fn exec_feeds_stdin_and_gives_a_terminal_that_follows_the_callers() {
    use std::io::Write;
    use std::process::Command;
    if !require_root("exec_feeds_stdin_and_gives_a_terminal_that_follows_the_callers") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    d.ok(&["run", "-d", "--name", "web", "bb", "sleep", "60"]);
    let socket = env.socket();
    let vouch_at = |args: &[&str]| {
        let mut c = Command::new(vouch());
        c.arg("--socket").arg(&socket).args(args);
        c
    };

    // -i: what is written reaches the process; the end of input ends `cat`.
    let out = run_fed(
        &mut vouch_at(&["exec", "-i", "web", "/bin/sh", "-c", "cat; echo done"]),
        b"hello\nworld\n",
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\ndone\n");

    // -it needs a terminal here; -t alone does not (as docker's).
    let out = d.vouch(&["exec", "-it", "web", "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a TTY"), "{}", stderr(&out));
    let out = d.ok(&[
        "exec",
        "-t",
        "web",
        "/bin/sh",
        "-c",
        "[ -t 1 ] && echo TTY-YES",
    ]);
    assert_eq!(out, "TTY-YES\r\n", "a terminal's output (onlcr)");

    // -it from a terminal of 111 columns and 33 rows.
    let (mut child, master) = in_terminal(vouch_at(&["exec", "-it", "web", "/bin/sh"]), 111, 33);
    let mut input = master.try_clone().expect("dup");
    let seen = gather(master.try_clone().expect("dup"));
    input
        .write_all(b"[ -t 0 ] && echo TTY-YES; stty size\n")
        .expect("write");
    wait_for_text(&seen, "TTY-YES", || {});
    wait_for_text(&seen, "33 111", || {});
    // The caller's terminal is resized: SIGWINCH reaches vouch, which resizes the process's.
    resize(&master, 120, 40);
    wait_for_text(&seen, "40 120", || {
        let _ = input.write_all(b"stty size\n");
    });
    input.write_all(b"exit 3\n").expect("write");
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(3), "{:?}", seen.lock().expect("lock"));
    // Each was measured, with its terminal.
    let log = d.ok(&["attest", "--format", "aael"]);
    assert!(
        log.lines()
            .any(|l| l.contains("container.exec") && l.contains("\"tty\":true")),
        "{log}"
    );
}

/// Run `cmd` with a new terminal of `cols` x `rows` as its stdin, stdout, stderr and
/// controlling terminal, as from a shell; the child and the terminal's master side.
pub(crate) fn in_terminal(
    mut cmd: std::process::Command,
    cols: u16,
    rows: u16,
) -> (std::process::Child, std::fs::File) {
    use std::os::unix::process::CommandExt;
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    cmd.stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    // SAFETY: setsid and TIOCSCTTY between fork and exec: async-signal-safe calls that make the
    // terminal the child's controlling terminal, as a shell's would be.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn in a terminal");
    // The parent's copies of the other side go with `cmd`.
    drop(cmd);
    (child, std::fs::File::from(pty.master))
}

/// Resize a terminal from its master side (its session's foreground gets SIGWINCH).
pub(crate) fn resize(master: &std::fs::File, cols: u16, rows: u16) {
    use std::os::fd::AsRawFd;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ on our master with a winsize that lives across the call.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(r, 0);
}

/// The child's exit status, within 15 seconds.
pub(crate) fn wait_bounded(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the command in a terminal did not end");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `vouch run -i` feeds the container's own process stdin; `-t` gives it a terminal that libcontainer
/// makes inside the container (its `process.terminal`, measured), of the caller's size and
/// following it; `-dit` keeps a shell waiting on its terminal; the API refuses input to a
/// container created without stdin.
#[test]
fn run_gives_the_containers_process_stdin_and_a_terminal_measured() {
    use std::io::Write;
    use std::process::Command;
    if !require_root("run_gives_the_containers_process_stdin_and_a_terminal_measured") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let socket = env.socket();
    let vouch_at = |args: &[&str]| {
        let mut c = Command::new(vouch());
        c.arg("--socket").arg(&socket).args(args);
        c
    };

    // -i: what is written reaches the process; the end of input ends `cat`.
    let out = run_fed(
        &mut vouch_at(&["run", "--rm", "-i", "bb", "/bin/sh", "-c", "cat; echo done"]),
        b"hello\nworld\n",
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\ndone\n");

    // Without -i the process's stdin is empty, whatever this one holds.
    let out = d.ok(&["run", "--rm", "bb", "/bin/sh", "-c", "cat; echo end"]);
    assert_eq!(out, "end\n");

    // -it needs a terminal here; -t alone does not.
    let out = d.vouch(&["run", "--rm", "-it", "bb", "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a TTY"), "{}", stderr(&out));
    let out = d.ok(&[
        "run",
        "--rm",
        "-t",
        "bb",
        "/bin/sh",
        "-c",
        "[ -t 0 ] && [ -t 1 ] && tty && stty size && [ /dev/console -ef /dev/pts/0 ] && echo console",
    ]);
    // The first terminal of the container's own devpts, also its /dev/console (as runc's).
    assert_eq!(out, "/dev/pts/0\r\n24 80\r\nconsole\r\n");

    // -it from a terminal of 111 columns and 33 rows: the container's process is a session
    // leader with it as its controlling terminal (job control works: `sh` reads it).
    let (mut child, master) = in_terminal(
        vouch_at(&["run", "--rm", "-it", "--name", "t", "bb", "/bin/sh"]),
        111,
        33,
    );
    let mut input = master.try_clone().expect("dup");
    let seen = gather(master.try_clone().expect("dup"));
    wait_for_text(&seen, "# ", || {});
    input
        .write_all(b"[ -t 0 ] && echo TTY-YES; stty size\n")
        .expect("write");
    wait_for_text(&seen, "TTY-YES", || {});
    wait_for_text(&seen, "33 111", || {});
    resize(&master, 120, 40);
    wait_for_text(&seen, "40 120", || {
        let _ = input.write_all(b"stty size\n");
    });
    // Its measured spec says it has a terminal and open stdin.
    let spec = d.json(&["inspect", "--spec", "t"]);
    let spec = &spec[0]["spec"];
    assert_eq!(spec["process"]["terminal"], true, "{spec}");
    assert_eq!(spec["annotations"]["io.vouch.stdin"], "open", "{spec}");
    input.write_all(b"exit 3\n").expect("write");
    let status = wait_bounded(&mut child);
    assert_eq!(status.code(), Some(3), "{:?}", seen.lock().expect("lock"));

    // The same container without them is measured differently.
    let plain = d.ok(&["run", "-d", "--name", "plain", "bb", "sleep", "30"]);
    let plain_spec = d.json(&["inspect", "--spec", "plain"]);
    assert_eq!(plain_spec[0]["spec"]["process"]["terminal"], false);
    assert!(plain_spec[0]["spec"]["annotations"]
        .get("io.vouch.stdin")
        .is_none());

    // -dit: a shell on a terminal nobody types into waits, as docker's `run -dit` does; its
    // terminal can still be resized and fed through the API.
    let sh = d.ok(&["run", "-dit", "--name", "sh", "bb", "/bin/sh"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(d.json(&["inspect", "sh"])[0]["state"], "Running");
    let client = vouch_api::Client::new(&socket);
    let resized: Result<vouch_api::Container, _> = client.call(
        "POST",
        &format!("/v1/containers/{}/resize?cols=90&rows=20", sh.trim()),
        None::<&()>,
    );
    assert!(resized.is_ok(), "{resized:?}");
    let fed: Result<vouch_api::Container, _> = client.upload_stream(
        &format!("/v1/containers/{}/stdin", sh.trim()),
        &b"stty size > /tmp/size; exit 4\n"[..],
    );
    assert!(fed.is_ok(), "{fed:?}");
    assert_eq!(
        d.ok(&["wait", "sh"]).trim(),
        "4",
        "the shell read what was fed to its terminal"
    );

    // Input for a container created without stdin or terminal is refused by name.
    let refused: Result<vouch_api::Container, _> =
        client.upload_stream(&format!("/v1/containers/{}/stdin", plain.trim()), &b"x"[..]);
    let err = refused.expect_err("no stdin").to_string();
    assert!(err.contains("has no stdin and no terminal"), "{err}");
    let refused: Result<vouch_api::Container, _> = client.call(
        "POST",
        &format!("/v1/containers/{}/resize?cols=90&rows=20", plain.trim()),
        None::<&()>,
    );
    let err = refused.expect_err("no terminal").to_string();
    assert!(err.contains("has no stdin and no terminal"), "{err}");
    d.ok(&["rm", "-f", "plain", "sh"]);
}
