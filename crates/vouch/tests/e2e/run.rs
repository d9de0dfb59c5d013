//! `vouch run` and the container lifecycle against a real vouchd.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use vouch_testkit::*;

#[test]
fn run_echo_prints_output_and_exits_zero() {
    if !require_root("run_echo_prints_output_and_exits_zero") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let out = d.vouch(&["run", "--rm", "bb", "echo", "hello", "from", "vouch"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello from vouch\n");
    // --rm leaves nothing behind.
    assert_eq!(d.ok(&["ps", "-aq"]), "");
}

#[test]
fn exit_code_and_stderr_propagate() {
    if !require_root("exit_code_and_stderr_propagate") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let out = d.vouch(&[
        "run",
        "--name",
        "failing",
        "bb",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 42",
    ]);
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(stdout(&out), "to-out\n");
    assert_eq!(stderr(&out), "to-err\n");
    let c = d.json(&["inspect", "failing"]);
    assert_eq!(c[0]["exit_code"], 42);
    assert_eq!(c[0]["state"], "Exited");
    let actions: Vec<&str> = c[0]["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        [
            "Verifying",
            "Verified",
            "Creating",
            "Created",
            "Starting",
            "Running",
            "Exited"
        ]
    );
    // Logs are kept after exit, split by stream.
    let logs = d.vouch(&["logs", "failing"]);
    assert_eq!(stdout(&logs), "to-out\n");
    assert_eq!(stderr(&logs), "to-err\n");
}

#[test]
fn environment_from_flags_file_and_image() {
    if !require_root("environment_from_flags_file_and_image") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let file = env.path().join("vars.env");
    std::fs::write(&file, "# comment\nFROM_FILE=yes\n\nOVERRIDE=file\n").expect("env file");
    let out = d.vouch_env(
        &[
            "run",
            "--rm",
            "-e",
            "A=1",
            "-e",
            "OVERRIDE=flag",
            "-e",
            "PASSED",
            "--env-file",
            file.to_str().expect("utf8"),
            "bb",
            "env",
        ],
        &[("PASSED", "from-shell")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "A=1",
        "FROM_FILE=yes",
        "OVERRIDE=flag",
        "PASSED=from-shell",
        "PATH=/bin",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "{want} missing from:\n{text}"
        );
    }
    assert!(!text.contains("OVERRIDE=file"));
}

#[test]
fn memory_limit_is_enforced_and_oom_recorded() {
    if !require_root("memory_limit_is_enforced_and_oom_recorded") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    // Doubling a shell string quickly exceeds 16 MiB.
    let out = d.vouch(&[
        "run",
        "--name",
        "hog",
        "-m",
        "16m",
        "bb",
        "sh",
        "-c",
        "x=aaaaaaaa; while true; do x=$x$x; done",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(stderr(&out).contains("OOM"), "{}", stderr(&out));
    let c = d.json(&["inspect", "hog"]);
    assert_eq!(c[0]["oom_killed"], true);
    let last = c[0]["events"]
        .as_array()
        .expect("events")
        .last()
        .expect("event")["message"]
        .as_str()
        .expect("msg")
        .to_string();
    assert!(last.contains("OOM"), "{last}");
    // The same program with enough memory is not killed by OOM: a bounded variant exits normally.
    let ok = d.vouch(&[
        "run",
        "--rm",
        "-m",
        "64m",
        "bb",
        "sh",
        "-c",
        "x=a; for i in 1 2 3 4 5 6 7 8 9 10; do x=$x$x; done; echo ${#x}",
    ]);
    assert_eq!(stdout(&ok), "1024\n", "{}", stderr(&ok));
}

#[test]
fn pids_limit_is_enforced() {
    if !require_root("pids_limit_is_enforced") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let script = "for i in $(seq 20); do sleep 5 & done; echo started; kill $(jobs -p)";
    let limited = d.vouch(&["run", "--rm", "--pids-limit", "5", "bb", "sh", "-c", script]);
    assert!(!limited.status.success());
    assert!(
        stderr(&limited).contains("can't fork"),
        "{}",
        stderr(&limited)
    );
    assert!(!stdout(&limited).contains("started"));
    let unlimited = d.vouch(&["run", "--rm", "bb", "sh", "-c", script]);
    assert!(unlimited.status.success(), "{}", stderr(&unlimited));
    assert_eq!(stdout(&unlimited), "started\n");
}

#[test]
fn network_is_private_by_default_and_host_on_request() {
    if !require_root("network_is_private_by_default_and_host_on_request") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let private = d.ok(&["run", "--rm", "bb", "cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = private
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap_or("").trim())
        .collect();
    assert_eq!(ifaces, ["lo"], "{private}");
    let host = d.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "bb",
        "cat",
        "/proc/net/dev",
    ]);
    let host_ifaces = std::fs::read_to_string("/proc/net/dev").expect("host net");
    assert_eq!(host.lines().count(), host_ifaces.lines().count());
}

#[test]
fn hardening_setuid_stripped_no_mount_no_new_privileges() {
    if !require_root("hardening_setuid_stripped_no_mount_no_new_privileges") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    let bb = std::fs::read("/bin/busybox").expect("busybox");
    let extra = Layer::new()
        .dir("usr/")
        .file("usr/suid", 0o6755, &bb)
        .finish();
    let dir = env.path().join("img");
    write_layout(
        &dir,
        "hard",
        &[busybox_layer(), extra],
        &["/bin/sh"],
        &["PATH=/bin"],
    );
    d.ok(&["image", "load", "-i", dir.to_str().expect("utf8")]);
    assert_eq!(
        d.ok(&["run", "--rm", "hard", "stat", "-c", "%a", "/usr/suid"]),
        "755\n"
    );
    let m = d.vouch(&[
        "run", "--rm", "hard", "mount", "-t", "tmpfs", "none", "/tmp",
    ]);
    assert!(
        !m.status.success(),
        "mount inside the container must be refused"
    );
    let status = d.ok(&["run", "--rm", "hard", "cat", "/proc/self/status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Seccomp:") && l.ends_with('2')),
        "{status}"
    );
    // CAP_SYS_ADMIN (bit 21) is not in the bounding set.
    let capbnd = status
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .expect("CapBnd");
    let bits =
        u64::from_str_radix(capbnd.split_whitespace().nth(1).expect("hex"), 16).expect("hex");
    assert_eq!(bits & (1 << 21), 0, "{capbnd}");
    assert_eq!(
        d.ok(&["run", "--rm", "--user", "1000:1000", "hard", "id", "-u"]),
        "1000\n"
    );
}

/// docker's `--read-only` and `--cap-drop`: settings that only tighten vouch's own, measured
/// with the spec, and holding for a process exec'd later too; `--cap-add` is refused, since no
/// capability beyond the default set is ever granted.
#[test]
fn read_only_and_cap_drop_tighten_the_container_measured_and_cap_add_is_refused() {
    if !require_root("read_only_and_cap_drop_tighten_the_container_measured_and_cap_add_is_refused")
    {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let bits = |status: &str, field: &str| {
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("{field} in {status}"));
        u64::from_str_radix(line.split_whitespace().nth(1).expect("hex"), 16).expect("hex")
    };
    const NET_RAW: u64 = 1 << 13;
    const CHOWN: u64 = 1;
    let plain = d.ok(&["run", "--rm", "bb", "cat", "/proc/self/status"]);
    assert_ne!(bits(&plain, "CapBnd:") & NET_RAW, 0);
    let id = d.ok(&[
        "run",
        "-d",
        "--read-only",
        "--cap-drop",
        "net_raw",
        "--cap-drop",
        "CAP_CHOWN",
        "bb",
        "sleep",
        "30",
    ]);
    let id = id.trim();
    // Neither the container's process nor an exec'd one holds them.
    let exec_status = d.ok(&["exec", id, "cat", "/proc/self/status"]);
    let first_status = d.ok(&["exec", id, "cat", "/proc/1/status"]);
    for status in [&exec_status, &first_status] {
        for field in ["CapBnd:", "CapEff:", "CapPrm:"] {
            let b = bits(status, field);
            assert_eq!(b & (NET_RAW | CHOWN), 0, "{field} {b:x}");
        }
        assert_eq!(
            bits(status, "CapBnd:"),
            bits(&plain, "CapBnd:") & !(NET_RAW | CHOWN)
        );
    }
    // The root filesystem is read-only; /tmp of the image too (no tmpfs is added).
    let out = d.vouch(&["exec", id, "touch", "/new-file"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    // Measured: the spec says both.
    let spec = d.json(&["inspect", "--spec", id]);
    let spec = &spec[0]["spec"];
    assert_eq!(spec["root"]["readonly"], true, "{spec}");
    let bounding: Vec<&str> = spec["process"]["capabilities"]["bounding"]
        .as_array()
        .expect("bounding")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert!(!bounding.contains(&"CAP_NET_RAW") && !bounding.contains(&"CAP_CHOWN"));
    assert!(bounding.contains(&"CAP_KILL"), "{bounding:?}");
    // ALL: none at all.
    let none = d.ok(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "bb",
        "cat",
        "/proc/self/status",
    ]);
    assert_eq!(bits(&none, "CapBnd:"), 0);
    // No capability is added, and bad names say what is wrong.
    let out = d.vouch(&["run", "--rm", "--cap-add", "SYS_ADMIN", "bb", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "--cap-add SYS_ADMIN: vouch grants no capability beyond docker's default set"
        ),
        "{}",
        stderr(&out)
    );
    let out = d.vouch(&["run", "--rm", "--cap-drop", "NOPE", "bb", "true"]);
    assert!(
        stderr(&out).contains("unknown capability \"NOPE\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn detached_container_stop_and_remove() {
    if !require_root("detached_container_stop_and_remove") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let id = d
        .ok(&["run", "-d", "--name", "sleeper", "bb", "sleep", "300"])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    let running = d.json(&["ps", "--json"]);
    assert_eq!(running[0]["state"], "Running");
    let dup = d.vouch(&["run", "-d", "--name", "sleeper", "bb", "true"]);
    assert_eq!(dup.status.code(), Some(125));
    assert!(stderr(&dup).contains("already in use"), "{}", stderr(&dup));
    let busy = d.vouch(&["rm", "sleeper"]);
    assert!(!busy.status.success());
    assert!(stderr(&busy).contains("is running"), "{}", stderr(&busy));
    d.ok(&["stop", "-t", "1", &id[..12]]);
    let c = d.json(&["inspect", "sleeper"]);
    assert_eq!(c[0]["state"], "Exited");
    assert_eq!(c[0]["exit_code"], 137);
    assert!(
        d.ok(&["ps"]).lines().count() == 1,
        "only the header remains"
    );
    d.ok(&["rm", "sleeper"]);
    let gone = d.vouch(&["inspect", "sleeper"]);
    assert!(
        stderr(&gone).contains("no such container"),
        "{}",
        stderr(&gone)
    );
    assert!(!env.state().join("containers").join(&id).exists());
}

#[test]
fn clear_errors_for_common_mistakes() {
    if !require_root("clear_errors_for_common_mistakes") {
        return;
    }
    let env = TestEnv::new();
    // Daemon not running.
    let out = vouch_with(&env.socket(), &["ps"], &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("is it running"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1);
    let d = env.start();
    // Socket is private to its owner.
    let mode = std::fs::metadata(&d.socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // Unknown image.
    let out = d.vouch(&["run", "--rm", "nosuch", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("no such image: nosuch"),
        "{}",
        stderr(&out)
    );
    // Bad flag values.
    load_busybox(&env, &d, "bb");
    let out = d.vouch(&["run", "--rm", "-m", "lots", "bb", "true"]);
    assert!(
        stderr(&out).contains("invalid memory size"),
        "{}",
        stderr(&out)
    );
    let out = d.vouch(&["run", "--rm", "-e", "=x", "bb", "true"]);
    assert!(stderr(&out).contains("name is empty"), "{}", stderr(&out));
    let out = d.vouch(&["run", "--rm", "--frobnicate", "bb"]);
    assert_eq!(out.status.code(), Some(2));
    // A missing binary in the image fails the task with the reason.
    let out = d.vouch(&["run", "--name", "nobin", "bb", "/bin/does-not-exist"]);
    assert_eq!(out.status.code(), Some(125));
    let c = d.json(&["inspect", "nobin"]);
    assert_eq!(c[0]["state"], "Failed");
    assert!(
        c[0]["error"]
            .as_str()
            .expect("error")
            .contains("does-not-exist"),
        "{}",
        c[0]["error"]
    );
    // The API serves its OpenAPI document and refuses malformed bodies with JSON errors.
    let client = vouch_api::Client::new(&d.socket);
    let doc: serde_json::Value = client
        .call("GET", "/v1/openapi.json", None::<&()>)
        .expect("openapi");
    assert_eq!(doc["openapi"], "3.0.3");
    let resp = client
        .send("POST", "/v1/containers", Some(b"{not json"))
        .expect("send");
    assert_eq!(resp.status, 400);
    let err = client
        .call::<serde_json::Value>(
            "POST",
            "/v1/containers",
            Some(&serde_json::json!({"image": "bb", "bogus": 1})),
        )
        .expect_err("unknown fields are refused");
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn cpu_and_memory_limits_reach_the_cgroup() {
    if !require_root("cpu_and_memory_limits_reach_the_cgroup") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let id = d
        .ok(&[
            "run",
            "-d",
            "--cpus",
            "0.5",
            "-m",
            "32m",
            "--pids-limit",
            "50",
            "bb",
            "sleep",
            "60",
        ])
        .trim()
        .to_string();
    let read = |controller: &str, file: &str| {
        let v1 = format!("/sys/fs/cgroup/{controller}/vouch/{id}/{file}");
        std::fs::read_to_string(&v1)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| panic!("{v1}: {e}"))
    };
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(read("pids", "pids.max"), "50");
    d.ok(&["rm", "-f", &id]);
    // The cgroup goes with the container.
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/cpu/vouch/{id}")).exists());
}

#[test]
fn logs_follow_streams_until_exit_and_events_are_listed() {
    if !require_root("logs_follow_streams_until_exit_and_events_are_listed") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "bb",
        "sh",
        "-c",
        "echo one; sleep 1; echo two >&2; echo three",
    ]);
    let started = std::time::Instant::now();
    let out = d.vouch(&["logs", "-f", "talker"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one\nthree\n");
    assert_eq!(stderr(&out), "two\n");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "logs -f returned before the container ended"
    );
    let events = d.ok(&["events", "--json"]);
    let actions: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|e| e["name"] == "talker")
        .map(|e| e["action"].as_str().expect("action").to_string())
        .collect();
    assert_eq!(actions.first().map(String::as_str), Some("Verifying"));
    assert_eq!(actions.last().map(String::as_str), Some("Exited"));
}

#[test]
fn images_list_and_remove_unless_in_use() {
    if !require_root("images_list_and_remove_unless_in_use") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    let digest = load_busybox(&env, &d, "bb");
    let list = d.json(&["image", "ls", "--json"]);
    assert_eq!(list[0]["names"][0], "bb:latest");
    assert_eq!(list[0]["manifest_digest"], digest.as_str());
    // By id prefix too.
    let id = list[0]["id"].as_str().expect("id").to_string();
    d.ok(&["run", "-d", "--name", "user", &id[..8], "sleep", "60"]);
    let busy = d.vouch(&["image", "rm", "bb"]);
    assert!(!busy.status.success());
    assert!(
        stderr(&busy).contains("is used by container"),
        "{}",
        stderr(&busy)
    );
    d.ok(&["rm", "-f", "user"]);
    d.ok(&["image", "rm", "bb"]);
    assert_eq!(d.json(&["image", "ls", "--json"]), serde_json::json!([]));
    assert_eq!(
        std::fs::read_dir(env.state().join("images/layers"))
            .expect("layers")
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(env.state().join("images/blobs/sha256"))
            .expect("blobs")
            .count(),
        0
    );
    let missing = d.vouch(&["image", "rm", "bb"]);
    assert!(
        stderr(&missing).contains("no such image"),
        "{}",
        stderr(&missing)
    );
}

/// `--user` takes names, as docker does, looked up in the image's own /etc/passwd and /etc/group
/// (the top-most layer that has them); a link in the image never makes the host's files count.
#[test]
fn user_names_come_from_the_image() {
    if !require_root("user_names_come_from_the_image") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    let accounts = Layer::new()
        .dir("etc/")
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:100::/tmp:/bin/sh\n",
        )
        .file(
            "etc/group",
            0o644,
            b"root:x:0:\nusers:x:100:\nstaff:x:50:\nwheel:x:10:root,app\naudio:x:29:app\n",
        )
        .finish();
    let dir = env.path().join("img");
    write_layout(
        &dir,
        "accounts",
        &[busybox_layer(), accounts],
        &["/bin/sh"],
        &["PATH=/bin"],
    );
    d.ok(&["image", "load", "-i", dir.to_str().expect("utf8")]);
    let ids = |user: &str| {
        d.ok(&[
            "run",
            "--rm",
            "--user",
            user,
            "accounts",
            "sh",
            "-c",
            "echo $(id -u):$(id -g):$(id -G)",
        ])
    };
    // A named user also gets the groups that list it as a member; an explicit group or a
    // numeric user does not, as with docker.
    assert_eq!(ids("app"), "1000:100:100 10 29\n");
    assert_eq!(ids("app:staff"), "1000:50:50\n");
    assert_eq!(ids("1000:users"), "1000:100:100\n");
    // docker's --group-add: names from the image's /etc/group, or GIDs.
    let out = d.ok(&[
        "run",
        "--rm",
        "--user",
        "1000:users",
        "--group-add",
        "audio",
        "--group-add",
        "4242",
        "accounts",
        "id",
        "-G",
    ]);
    assert_eq!(out, "100 29 4242\n");
    let out = d.vouch(&["run", "--rm", "--group-add", "ghosts", "accounts", "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ghosts"), "{}", stderr(&out));
    let out = d.vouch(&["run", "--rm", "--user", "ghost", "accounts", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no user \"ghost\" in the image's /etc/passwd"),
        "{}",
        stderr(&out)
    );

    // An image whose /etc/passwd is a link to the host's: the host's users are not the image's.
    let linked = Layer::new()
        .dir("etc/")
        .symlink("etc/passwd", "/etc/passwd")
        .finish();
    let dir = env.path().join("img-linked");
    write_layout(
        &dir,
        "linked",
        &[busybox_layer(), linked],
        &["/bin/sh"],
        &["PATH=/bin"],
    );
    d.ok(&["image", "load", "-i", dir.to_str().expect("utf8")]);
    let out = d.vouch(&["run", "--rm", "--user", "daemon", "linked", "true"]);
    assert!(
        !out.status.success(),
        "a host user was found through a link"
    );
    assert!(
        stderr(&out).contains("no user \"daemon\""),
        "{}",
        stderr(&out)
    );
}

/// `vouch run --rm` without `-d` asks for the output after the create call returns: a container
/// that has already ended by then must still be there, and go only once its end is collected.
#[test]
fn an_attached_rm_container_waits_for_its_caller_before_going() {
    if !require_root("an_attached_rm_container_waits_for_its_caller_before_going") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let client = vouch_api::Client::new(&d.socket);
    let create = |attach: bool| -> String {
        let c: serde_json::Value = client
            .call(
                "POST",
                "/v1/containers",
                Some(&serde_json::json!({
                    "image": "bb", "cmd": ["echo", "early"], "auto_remove": true, "attach": attach
                })),
            )
            .expect("create");
        c["id"].as_str().expect("id").to_string()
    };
    let state = |id: &str| -> Option<String> {
        client
            .call::<serde_json::Value>("GET", &format!("/v1/containers/{id}"), None::<&()>)
            .ok()
            .map(|c| c["state"].as_str().unwrap_or_default().to_string())
    };
    let until = |what: &str, limit: Duration, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "{what} within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let held = create(true);
    let unheld = create(false);
    let abandoned = create(true);
    until(
        "the unattached --rm container removed",
        Duration::from_secs(20),
        &|| state(&unheld).is_none(),
    );
    until("the attached one ended", Duration::from_secs(20), &|| {
        state(&held).as_deref() == Some("Exited")
    });
    // Ended, and still there for its caller: its output, then its end.
    assert_eq!(d.ok(&["logs", &held]), "early\n");
    let done: serde_json::Value = client
        .call("POST", &format!("/v1/containers/{held}/wait"), None::<&()>)
        .expect("wait");
    assert_eq!(done["exit_code"], 0, "{done}");
    // The wait returns only once the container is gone.
    assert_eq!(state(&held), None, "removed when its wait returned");
    // A caller that never waits (interrupted) leaves it for a bounded time only.
    assert!(
        state(&abandoned).is_some(),
        "kept for a while for its caller"
    );
    until(
        "the abandoned attached container removed",
        Duration::from_secs(vouch_api::ATTACH_HOLD_SECS + 20),
        &|| state(&abandoned).is_none(),
    );
    assert_eq!(d.ok(&["ps", "-aq"]), "");
}

/// A launch that fails after its `container.create` was measured ends in the log as failed:
/// the verifier shows it as such, with full digests, rather than as running forever.
#[test]
fn a_launch_that_fails_after_create_is_measured_as_failed() {
    if !require_root("a_launch_that_fails_after_create_is_measured_as_failed") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    // Nothing listens there: the secret fetch, which comes after container.create, fails.
    let secret = format!("kbs://127.0.0.1:{}/default/key/one", free_port());
    let out = d.vouch(&["run", "--name", "nokbs", "--secret", &secret, "bb", "true"]);
    assert!(!out.status.success(), "ran without its secret");
    let ok = d.ok(&["run", "--name", "fine", "bb", "true"]);
    assert_eq!(ok, "");
    let ev = env.path().join("ev.json");
    let ev = ev.to_str().expect("utf8");
    d.ok(&["attest", "-o", ev]);
    let evidence: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ev).expect("ev")).expect("json");
    let ops: Vec<&str> = evidence["event_log"]
        .as_array()
        .expect("log")
        .iter()
        .filter_map(|r| r["op"].as_str())
        .collect();
    assert!(ops.contains(&"container.failed"), "{ops:?}");
    let v = d.json(&["verify", ev, "--allow-sim", "--json"]);
    assert_eq!(v["nonce_required"], false);
    let states: Vec<(&str, &str)> = v["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("-"),
                c["state"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(states, [("nokbs", "failed"), ("fine", "exited")]);
    let failed = &v["containers"][0];
    assert!(
        failed["failure"]
            .as_str()
            .is_some_and(|f| f.contains("127.0.0.1")),
        "{failed}"
    );
    // The human form: full digests, and the failure.
    let text = d.ok(&["verify", ev, "--allow-sim"]);
    let config = failed["config_digest"].as_str().expect("digest");
    assert_eq!(config.len(), "sha384:".len() + 96);
    assert!(text.contains(&format!("config digest: {config}")), "{text}");
    assert!(
        text.contains(&format!(
            "image digest:  {}",
            failed["image_digest"].as_str().expect("digest")
        )),
        "{text}"
    );
    assert!(text.contains("FAILED to launch: "), "{text}");
    assert!(text.contains("exited with code 0"), "{text}");
}

#[test]
fn metrics_count_launches_failures_and_attestations() {
    if !require_root("metrics_count_launches_failures_and_attestations") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    assert!(d.vouch(&["run", "--rm", "bb", "true"]).status.success());
    let failed = d.vouch(&["run", "--rm", "bb", "/no/such/program"]);
    assert!(!failed.status.success(), "a missing program cannot start");
    let nonce = "00112233445566778899aabbccddeeff";
    assert!(d.vouch(&["attest", "--nonce", nonce]).status.success());
    let resp = vouch_api::client::Client::new(env.socket())
        .send("GET", "/metrics", None)
        .expect("GET /metrics");
    let (status, body) = vouch_api::client::read_body_limited(resp, 1 << 20).expect("body");
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{text}");
    for line in [
        "vouch_launches_total{outcome=\"started\"} 1\n",
        "vouch_launches_total{outcome=\"failed\"} 1\n",
        "vouch_launch_failures_total{reason=\"start\"} 1\n",
        "vouch_attestation_seconds_count 1\n",
        "# TYPE vouch_kbs_round_trips_total counter\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The two launches measured create, start, exit and a failure: the log has records.
    let records: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("vouch_event_log_records "))
        .and_then(|n| n.parse().ok())
        .expect("event log gauge");
    assert!(records >= 5, "{records} records");
}

/// docker's create/start/kill: a created container is verified and measured (its create
/// record in the log) while its process waits; start runs it; kill signals it (by name or
/// number); --entrypoint replaces the image's; what cannot be started says why.
#[test]
fn create_then_start_then_kill() {
    if !require_root("create_then_start_then_kill") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    // PID 1 of a container ignores signals it has no handler for: this one handles TERM.
    let id = d.ok(&[
        "create",
        "--name",
        "held",
        "bb",
        "sh",
        "-c",
        "trap 'exit 7' TERM; echo started; while :; do sleep 0.1; done",
    ]);
    let id = id.trim();
    let c = d.json(&["inspect", "held"]);
    assert_eq!(c[0]["state"], "Created", "{c}");
    assert!(c[0]["pid"].is_null(), "nothing runs before the start: {c}");
    assert!(c[0]["config_digest"].is_string(), "measured at create: {c}");
    // The log has its create record, and no start record yet.
    let mine = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(id))
            .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
            .collect()
    };
    let log = d.ok(&["attest", "--format", "aael"]);
    assert_eq!(mine(&log), ["image.verified", "container.create"], "{log}");
    // A second start is refused by name; so is a start of a running container.
    assert_eq!(d.ok(&["start", "held"]).trim(), "held");
    let out = d.vouch(&["start", "held"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not created and waiting for a start"),
        "{}",
        stderr(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.ok(&["logs", "held"]).contains("started") {
        assert!(Instant::now() < deadline, "the started container prints");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = d.vouch(&["kill", "-s", "NOPE", "held"]);
    assert!(stderr(&out).contains("is not a signal"), "{}", stderr(&out));
    assert_eq!(d.ok(&["kill", "-s", "TERM", "held"]).trim(), "held");
    let out = d.vouch(&["wait", "held"]);
    assert_eq!(
        stdout(&out).trim(),
        "7",
        "the TERM handler's exit code: {} {}",
        stderr(&out),
        d.json(&["inspect", "held"])
    );
    let log = d.ok(&["attest", "--format", "aael"]);
    assert_eq!(
        mine(&log),
        [
            "image.verified",
            "container.create",
            "container.start",
            "container.exit"
        ],
        "{log}"
    );
    let out = d.vouch(&["kill", "held"]);
    assert!(stderr(&out).contains("is not running"), "{}", stderr(&out));
    d.ok(&["rm", id]);

    // A created container that is removed never runs: its launch is cancelled.
    d.ok(&[
        "create",
        "--name",
        "never",
        "bb",
        "sh",
        "-c",
        "echo must-not-run",
    ]);
    d.ok(&["rm", "-f", "never"]);
    let out = d.vouch(&["inspect", "never"]);
    assert!(!out.status.success());
    // --entrypoint: the image's entrypoint and default command give way.
    let out = d.vouch(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/echo",
        "bb",
        "via",
        "entrypoint",
    ]);
    assert_eq!(stdout(&out), "via entrypoint\n", "{}", stderr(&out));
    let out = d.vouch(&["run", "--rm", "--entrypoint", "", "bb", "echo", "alone"]);
    assert_eq!(stdout(&out), "alone\n", "{}", stderr(&out));
    let out = d.vouch(&["create", "--rm", "bb"]);
    assert!(stderr(&out).contains("--rm and --detach are for `vouch run`"));
}
