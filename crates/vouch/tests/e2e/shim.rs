//! `containerd-shim-vouch-v2` under a real containerd 1.6: `ctr run --runtime
//! io.containerd.vouch.v2` runs the container as a vouchd task, measured like `vouch run`'s.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use vouch_testkit::containerd::Containerd;
use vouch_testkit::*;

const RUNTIME: &str = "io.containerd.vouch.v2";

/// The busybox image in vouchd (as `bb`) and in containerd (as `localhost/bb:bb`).
fn images(env: &TestEnv, d: &Daemon, c: &Containerd) {
    load_busybox(env, d, "bb");
    c.import_layout("default", &env.path().join("img-bb"), "localhost/bb");
}

/// The lifecycle records of vouchd's log for its container `id`.
fn records_of(d: &Daemon, id: &str) -> Vec<String> {
    d.ok(&["attest", "--format", "aael"])
        .lines()
        .filter(|l| l.contains(id))
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .collect()
}

fn task_status(c: &Containerd, id: &str) -> Option<String> {
    let out = c.ctr(&["task", "ls"]);
    stdout(&out)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2).map(String::from))
}

#[test]
fn ctr_runs_a_container_through_vouchd_measured() {
    if !require_root("ctr_runs_a_container_through_vouchd_measured") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    let Some(c) = Containerd::start(&env.path().join("containerd"), &env.socket(), "") else {
        return;
    };
    images(&env, &d, &c);

    // Output, stderr and the exit code reach ctr; the container is vouchd's, named by its id,
    // its pod (the CRI's annotations, given by hand here) in its create record.
    let out = c.ctr(&[
        "run",
        "--runtime",
        RUNTIME,
        "--annotation",
        "io.vouch.image=bb",
        "--annotation",
        "io.kubernetes.cri.sandbox-name=web-0",
        "--annotation",
        "io.kubernetes.cri.sandbox-namespace=shop",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=0123abcd",
        "--annotation",
        "io.kubernetes.cri.container-name=nginx",
        "localhost/bb:bb",
        "c1",
        "/bin/sh",
        "-c",
        "echo hello from ctr; echo to-err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{} {}", stderr(&out), c.log());
    assert_eq!(stdout(&out), "hello from ctr\n");
    assert_eq!(stderr(&out), "to-err\n");
    // `ctr run` deletes the task when it ends, and with it vouchd's container; the log keeps
    // the records of its life, under its id.
    assert!(!d.vouch(&["inspect", "c1"]).status.success());
    let log = d.ok(&["attest", "--format", "aael"]);
    let id = log
        .lines()
        .find(|l| l.contains("container.create") && l.contains("\"name\":\"c1\""))
        .and_then(|l| l.split("\"id\":\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no create record of c1: {log}"))
        .to_string();
    assert_eq!(
        records_of(&d, &id),
        [
            "image.verified",
            "container.create",
            "container.start",
            "container.exit"
        ]
    );
    assert!(
        log.lines().any(|l| l.contains("container.exit")
            && l.contains(&id)
            && l.contains("\"exit_code\":3")),
        "{log}"
    );
    let create = log
        .lines()
        .find(|l| l.contains("container.create") && l.contains(&id))
        .expect("create record");
    assert!(
        create.contains(r#""pod":{"container":"nginx","name":"web-0","namespace":"shop","sandbox_id":"0123abcd"}"#),
        "{create}"
    );
    let verdict = d.attest_and_verify(env.path());
    assert!(
        verdict.contains("pod:           shop/web-0 container nginx (sandbox 0123abcd)"),
        "{verdict}"
    );
    c.ctr(&["container", "rm", "c1"]);

    // Detached, then killed: ctr sees it run with vouchd's pid, then stop with 137.
    let out = c.ctr(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--annotation",
        "io.vouch.image=bb",
        "localhost/bb:bb",
        "c2",
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{} {}", stderr(&out), c.log());
    assert_eq!(task_status(&c, "c2").as_deref(), Some("RUNNING"));
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "containerd knows c2's shim: {shims:?}");
    let v = d.json(&["inspect", "c2"]);
    let pid = v[0]["pid"].as_i64().expect("pid");
    let listed = stdout(&c.ctr(&["task", "ls"]));
    assert!(
        listed.contains(&format!("c2 {pid} ")) || listed.contains(&pid.to_string()),
        "{listed}"
    );
    // ctr task metrics: the cgroup of c2's container (its one process, sleep).
    let out = c.ctr(&["task", "metrics", "--format", "json", "c2"]);
    assert!(out.status.success(), "{} {}", stderr(&out), c.log());
    let metrics: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("metrics json");
    assert_eq!(metrics["pids"]["current"], 1, "{metrics}");
    assert!(
        metrics["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0
            || metrics["memory"]["usage"].as_u64().unwrap_or(0) > 0,
        "{metrics}"
    );
    // ctr task exec: output, stderr, exit code; measured as container.exec of c2's vouchd
    // container.
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "c2",
        "/bin/sh",
        "-c",
        "echo exec-out; echo exec-err >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{} {}", stderr(&out), c.log());
    assert_eq!(stdout(&out), "exec-out\n");
    assert_eq!(stderr(&out), "exec-err\n");
    let c2 = v[0]["id"].as_str().expect("id").to_string();
    assert!(records_of(&d, &c2).contains(&"container.exec".to_string()));
    // ctr task exec -t from a terminal: containerd's Exec with a terminal, its stdin FIFO and
    // ResizePty reach vouchd's exec.
    let ctr = c.ctr_command(&["task", "exec", "-t", "--exec-id", "e2", "c2", "/bin/sh"]);
    let (mut child, master) = crate::exec::in_terminal(ctr, 111, 33);
    let mut input = master.try_clone().expect("dup");
    let seen = crate::exec::gather(master.try_clone().expect("dup"));
    input
        .write_all(b"[ -t 0 ] && echo TTY-YES; stty size\n")
        .expect("write");
    crate::exec::wait_for_text(&seen, "TTY-YES", || {});
    crate::exec::wait_for_text(&seen, "33 111", || {});
    crate::exec::resize(&master, 120, 40);
    crate::exec::wait_for_text(&seen, "40 120", || {
        let _ = input.write_all(b"stty size\n");
    });
    input.write_all(b"exit 5\n").expect("write");
    assert_eq!(
        crate::exec::wait_bounded(&mut child).code(),
        Some(5),
        "{:?}",
        seen.lock().expect("lock")
    );
    // A running task cannot be deleted.
    assert!(!c.ctr(&["task", "delete", "c2"]).status.success());
    let out = c.ctr(&["task", "kill", "-s", "SIGKILL", "c2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    while task_status(&c, "c2").as_deref() != Some("STOPPED") {
        assert!(Instant::now() < deadline, "{:?}", task_status(&c, "c2"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.json(&["inspect", "c2"])[0]["exit_code"], 137);
    // containerd's delete removes it from vouchd too.
    assert!(c.ctr(&["task", "delete", "c2"]).status.success());
    assert!(!d.vouch(&["inspect", "c2"]).status.success());
    c.ctr(&["container", "rm", "c2"]);

    // ctr run --rm: nothing is left in vouchd or containerd.
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--annotation",
        "io.vouch.image=bb",
        "localhost/bb:bb",
        "c3",
        "true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    // Every shim is gone once its container is deleted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shims
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(Instant::now() < deadline, "c2's shim {shims:?} outlived c2");
        std::thread::sleep(Duration::from_millis(50));
    }

    // ctr run's stdin reaches the container's own process, its end closes it.
    let mut ctr = c.ctr_command(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--annotation",
        "io.vouch.image=bb",
        "localhost/bb:bb",
        "c4",
        "/bin/sh",
        "-c",
        "cat; echo done",
    ]);
    let out = run_fed(&mut ctr, b"fed by ctr\n");
    assert!(out.status.success(), "{}", c.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fed by ctr\ndone\n");

    // ctr run -t from a terminal: the container's own process gets one (libcontainer's, in
    // the container), with containerd's ResizePty, and the exit code comes back.
    let ctr = c.ctr_command(&[
        "run",
        "-t",
        "--rm",
        "--runtime",
        RUNTIME,
        "--annotation",
        "io.vouch.image=bb",
        "localhost/bb:bb",
        "c5",
        "/bin/sh",
    ]);
    let (mut child, master) = crate::exec::in_terminal(ctr, 111, 33);
    let mut input = master.try_clone().expect("dup");
    let seen = crate::exec::gather(master.try_clone().expect("dup"));
    crate::exec::wait_for_text(&seen, "# ", || {});
    input
        .write_all(b"[ -t 0 ] && echo TTY-YES; stty size\n")
        .expect("write");
    crate::exec::wait_for_text(&seen, "TTY-YES", || {});
    crate::exec::wait_for_text(&seen, "33 111", || {});
    crate::exec::resize(&master, 120, 40);
    crate::exec::wait_for_text(&seen, "40 120", || {
        let _ = input.write_all(b"stty size\n");
    });
    input.write_all(b"exit 6\n").expect("write");
    assert_eq!(
        crate::exec::wait_bounded(&mut child).code(),
        Some(6),
        "{:?} {}",
        seen.lock().expect("lock"),
        c.log()
    );
    // Measured with its terminal.
    let log = d.ok(&["attest", "--format", "aael"]);
    assert!(log.contains("\"name\":\"c5\""), "{log}");
    assert_eq!(d.ok(&["ps", "-aq"]), "");
}

/// What vouchd refuses, containerd reports with vouchd's reason, and nothing is left: no task
/// in vouchd, no record in its log beyond the refusal.
#[test]
fn a_refused_create_reaches_ctr_with_its_reason_and_leaves_nothing() {
    if !require_root("a_refused_create_reaches_ctr_with_its_reason_and_leaves_nothing") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    let Some(c) = Containerd::start(&env.path().join("containerd"), &env.socket(), "") else {
        return;
    };
    images(&env, &d, &c);
    let before = d.ok(&["attest", "--format", "aael"]).lines().count();
    let out = c.ctr(&[
        "run",
        "--runtime",
        RUNTIME,
        "--annotation",
        "io.vouch.image=missing",
        "localhost/bb:bb",
        "r1",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such image: missing"),
        "{}",
        stderr(&out)
    );
    // No image named at all: what to do.
    let out = c.ctr(&["run", "--runtime", RUNTIME, "localhost/bb:bb", "r2", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--annotation io.vouch.image=REF"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    assert_eq!(
        d.ok(&["attest", "--format", "aael"]).lines().count(),
        before
    );
}

/// vouchd killed with SIGKILL while a container runs under containerd: the shim waits for it to
/// come back, and ctr gets all the output (none lost, none twice) and the real exit code. The
/// shim killed with SIGKILL: containerd's cleanup removes the vouchd task, so the container does
/// not outlive its shim unseen. The log replays to the register after both.
#[test]
fn vouchd_or_the_shim_killed_mid_life_leave_a_consistent_state() {
    if !require_root("vouchd_or_the_shim_killed_mid_life_leave_a_consistent_state") {
        return;
    }
    let env = TestEnv::new();
    let mut d = env.start();
    let Some(c) = Containerd::start(&env.path().join("containerd"), &env.socket(), "") else {
        return;
    };
    images(&env, &d, &c);
    let mut run = c.ctr_command(&[
        "run",
        "--runtime",
        RUNTIME,
        "--annotation",
        "io.vouch.image=bb",
        "localhost/bb:bb",
        "k1",
        "sh",
        "-c",
        "trap 'echo after; exit 5' USR1; echo before; while :; do sleep 0.05; done",
    ]);
    run.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = run.spawn().expect("ctr run");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Started as containerd sees it (the shim's Start answered), and printing.
    while task_status(&c, "k1").as_deref() != Some("RUNNING")
        || d.vouch(&["logs", "k1"]).stdout != b"before\n"
    {
        assert!(Instant::now() < deadline, "k1 did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let d = env.start();
    // The container ran on while vouchd was down; now it is told to finish.
    d.ok(&["kill", "-s", "USR1", "k1"]);
    let out = child.wait_with_output().expect("ctr run");
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");
    c.ctr(&["container", "rm", "k1"]);

    let out = c.ctr(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--annotation",
        "io.vouch.image=bb",
        "localhost/bb:bb",
        "k2",
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = d.json(&["inspect", "k2"])[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.vouch(&["inspect", "k2"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "k2 outlived its shim: {}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(task_status(&c, "k2").as_deref(), Some("RUNNING"));
    let _ = c.ctr(&["task", "delete", "k2"]);
    assert!(c.ctr(&["container", "rm", "k2"]).status.success());
    let log = d.ok(&["attest", "--format", "aael"]);
    assert!(
        log.lines()
            .any(|l| l.contains("container.exit") && l.contains(&id)),
        "the killed container's end is measured: {log}"
    );
    // The log replays.
    d.attest_and_verify(env.path());
}
