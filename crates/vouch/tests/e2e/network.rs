//! Networking of the private namespace and named volumes: loopback, published ports relayed from
//! the host, a network namespace joined (another container's, one by path), volumes kept across
//! containers, read-only mounts, host paths given as measured copies, and the refusals.

use std::time::Duration;

use vouch_testkit::*;

#[test]
fn loopback_works_inside_the_private_namespace() {
    if !require_root("loopback_works_inside_the_private_namespace") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let out = d.ok(&[
        "run",
        "--rm",
        "bb",
        "sh",
        "-c",
        "nc -l -p 9000 -e echo over-loopback & sleep 0.3; nc 127.0.0.1 9000",
    ]);
    assert_eq!(out.trim(), "over-loopback");
}

#[test]
fn published_ports_reach_the_container_and_only_while_it_runs() {
    if !require_root("published_ports_reach_the_container_and_only_while_it_runs") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let id = d.ok(&[
        "run", "-d", "-p", &publish, "bb", "nc", "-ll", "-p", "8080", "-e", "echo", "hello",
    ]);
    let id = id.trim();
    let addr = format!("127.0.0.1:{port}");
    // Every connection is relayed, not just the first.
    for _ in 0..3 {
        assert_eq!(
            read_from(&addr, Duration::from_secs(10))
                .expect("relayed")
                .trim(),
            "hello"
        );
    }
    let inspect = d.json(&["inspect", id]);
    assert_eq!(
        inspect[0]["ports"],
        serde_json::json!([format!("127.0.0.1:{port}->8080/tcp")])
    );

    // The same host port cannot be published twice: the second launch fails and says why.
    let second = d.vouch(&["run", "-p", &publish, "bb", "true"]);
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("already in use"),
        "{}",
        stderr(&second)
    );

    d.ok(&["stop", "-t", "1", id]);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "port still open after stop"
    );

    // Published ports are part of the measured config.
    let a = d.ok(&[
        "run",
        "-d",
        "-p",
        &format!("127.0.0.1:{}:1", free_port()),
        "bb",
        "true",
    ]);
    let b = d.ok(&["run", "-d", "bb", "true"]);
    let digest = |id: &str| {
        d.ok(&["wait", id.trim()]);
        d.json(&["inspect", id.trim()])[0]["config_digest"].clone()
    };
    assert!(digest(&a).is_string());
    assert_ne!(digest(&a), digest(&b));
}

/// docker's `--network container:NAME` and podman's `ns:PATH`: a container joins another's
/// network namespace (its loopback, its listeners), measured as what it joined and not where
/// that lay; the host's namespace by path, a container on the host's network, a file that is
/// not a namespace, a container that is not running and published ports are each refused with
/// their reason, and leave no container behind.
#[test]
fn a_container_joins_anothers_network_measured_never_the_hosts_unasked() {
    if !require_root("a_container_joins_anothers_network_measured_never_the_hosts_unasked") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let web = d.ok(&[
        "run", "-d", "--name", "web", "-p", &publish, "bb", "nc", "-ll", "-p", "8080", "-e",
        "echo", "from-web",
    ]);
    let web = web.trim();
    let addr = format!("127.0.0.1:{port}");
    // Listening (through its published port) before anyone joins.
    assert_eq!(
        read_from(&addr, Duration::from_secs(10))
            .expect("web")
            .trim(),
        "from-web"
    );
    // On web's network, its listener is on this container's loopback too.
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "container:web",
        "bb",
        "nc",
        "127.0.0.1",
        "8080",
    ]);
    assert_eq!(out.trim(), "from-web");
    // The same namespace by path.
    let pid = d.json(&["inspect", "web"])[0]["pid"].as_i64().expect("pid");
    let by_path = format!("ns:/proc/{pid}/ns/net");
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        &by_path,
        "bb",
        "nc",
        "127.0.0.1",
        "8080",
    ]);
    assert_eq!(out.trim(), "from-web");
    // Its net.* parameters are web's, however its namespace is named.
    for network in ["container:web", by_path.as_str()] {
        let out = d.vouch(&[
            "run",
            "--rm",
            "--network",
            network,
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=0",
            "bb",
            "true",
        ]);
        assert!(
            !out.status.success(),
            "{network}: net.* set in web's namespace"
        );
        assert!(
            stderr(&out).contains("the network namespace joined is another container's"),
            "{network}: {}",
            stderr(&out)
        );
    }

    // Really web's namespace, and measured as such: the annotation names web, the path is
    // host-local and projected away; a second join measures the same.
    let netns = |pid: i64| std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("netns");
    let joined = d.ok(&[
        "run",
        "-d",
        "--network",
        "container:web",
        "bb",
        "sleep",
        "30",
    ]);
    let joined = joined.trim();
    let joined_pid = d.json(&["inspect", joined])[0]["pid"]
        .as_i64()
        .expect("pid");
    assert_eq!(netns(joined_pid), netns(pid));
    let spec = d.json(&["inspect", "--spec", joined]);
    let spec = &spec[0]["spec"];
    assert_eq!(
        spec["annotations"]["io.vouch.network"],
        format!("container:{web}"),
        "{spec}"
    );
    let net: Vec<&serde_json::Value> = spec["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter(|n| n["type"] == "network")
        .collect();
    assert_eq!(net.len(), 1, "{spec}");
    assert_eq!(net[0]["path"], "$JOINED", "{spec}");
    assert_eq!(
        d.json(&["inspect", joined])[0]["network"],
        format!("container:{web}")
    );
    // However it is named (by path, through a container that joined it), the namespace is
    // measured as its owner's, so web's verifier sees who shares its network; and a second
    // join measures the same.
    let again = d.ok(&[
        "run",
        "-d",
        "--network",
        "container:web",
        "bb",
        "sleep",
        "30",
    ]);
    let by_path = d.ok(&["run", "-d", "--network", &by_path, "bb", "sleep", "30"]);
    let through = d.ok(&[
        "run",
        "-d",
        "--network",
        &format!("container:{joined}"),
        "bb",
        "sleep",
        "30",
    ]);
    let digest = |id: &str| d.json(&["inspect", id.trim()])[0]["config_digest"].clone();
    for other in [&again, &by_path, &through] {
        assert_eq!(digest(joined), digest(other));
        let spec = d.json(&["inspect", "--spec", other.trim()]);
        assert_eq!(
            spec[0]["spec"]["annotations"]["io.vouch.network"],
            format!("container:{web}")
        );
    }
    let own = d.ok(&["run", "-d", "bb", "sleep", "30"]);
    assert_ne!(digest(joined), digest(&own));

    // The refusals.
    d.ok(&["create", "--name", "idle", "bb", "true"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "on-host",
        "--network",
        "host",
        "bb",
        "sleep",
        "30",
    ]);
    let before = d
        .json(&["ps", "-a", "--json"])
        .as_array()
        .expect("ps")
        .len();
    // A FIFO nobody writes to: refused at once, not waited on.
    let fifo_path = env.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo_path)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let fifo = format!("ns:{}", fifo_path.display());
    for (network, extra, want) in [
        ("container:nope", None, "no such container: nope"),
        (
            "container:idle",
            None,
            "container idle is not running (Created): start it before joining its network",
        ),
        (
            "container:on-host",
            None,
            "the network of container on-host is the host's: ask for --network host to share the host's network",
        ),
        (
            "ns:/proc/self/ns/net",
            None,
            "the network namespace /proc/self/ns/net is the host's",
        ),
        (
            "ns:/etc/hostname",
            None,
            "/etc/hostname is not a network namespace",
        ),
        (fifo.as_str(), None, "is not a network namespace"),
        (
            "ns:/nonexistent",
            None,
            "cannot open the network namespace /nonexistent",
        ),
        (
            "container:web",
            Some("-p"),
            "published ports need a network namespace of the container's own",
        ),
        ("bridge", None, "use none, host, container:NAME or ns:/PATH"),
    ] {
        let mut args = vec!["run", "--rm", "--network", network];
        if extra.is_some() {
            args.extend(["-p", "127.0.0.1:1:1"]);
        }
        args.extend(["bb", "true"]);
        let out = d.vouch(&args);
        assert!(!out.status.success(), "{network} accepted");
        assert!(stderr(&out).contains(want), "{network}: {}", stderr(&out));
    }
    assert_eq!(
        d.json(&["ps", "-a", "--json"])
            .as_array()
            .expect("ps")
            .len(),
        before,
        "a refused request left a container"
    );
}

/// docker's `--hostname`: what the container sees, and measured (the default, the id's first
/// 12 characters, is not); a name that is not a hostname is refused.
#[test]
fn a_chosen_hostname_is_what_the_container_sees_and_is_measured() {
    if !require_root("a_chosen_hostname_is_what_the_container_sees_and_is_measured") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let id = d.ok(&[
        "run",
        "-d",
        "--hostname",
        "db-1",
        "bb",
        "sh",
        "-c",
        "hostname; sleep 30",
    ]);
    let id = id.trim();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.ok(&["logs", id]).trim() != "db-1" {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            d.ok(&["logs", id])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let spec = d.json(&["inspect", "--spec", id]);
    assert_eq!(spec[0]["spec"]["annotations"]["io.vouch.hostname"], "db-1");
    let plain = d.ok(&["run", "-d", "bb", "sleep", "30"]);
    let spec = d.json(&["inspect", "--spec", plain.trim()]);
    assert!(spec[0]["spec"]["annotations"]
        .get("io.vouch.hostname")
        .is_none());
    let digest = |id: &str| d.json(&["inspect", id])[0]["config_digest"].clone();
    let other = d.ok(&[
        "run",
        "-d",
        "--hostname",
        "db-2",
        "bb",
        "sh",
        "-c",
        "hostname; sleep 30",
    ]);
    assert_ne!(digest(id), digest(other.trim()));
    let out = d.vouch(&["run", "--rm", "--hostname", "no_underscores", "bb", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid hostname \"no_underscores\""),
        "{}",
        stderr(&out)
    );
}

/// docker's `--dns`, `--dns-search`, `--dns-option`: the container's /etc/resolv.conf, bound
/// read-only over the image's (readable by any user, on a read-only root too), its text
/// measured.
#[test]
fn dns_flags_give_the_container_its_resolv_conf_measured() {
    if !require_root("dns_flags_give_the_container_its_resolv_conf_measured") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let dns = [
        "--dns",
        "10.0.0.53",
        "--dns",
        "fd00::53",
        "--dns-search",
        "shop.example",
        "--dns-option",
        "ndots:2",
    ];
    let want = "nameserver 10.0.0.53\nnameserver fd00::53\nsearch shop.example\noptions ndots:2\n";
    let mut args = vec!["run", "-d", "--read-only", "--user", "1000:1000"];
    args.extend(dns);
    args.extend(["bb", "sleep", "30"]);
    let id = d.ok(&args);
    let id = id.trim();
    assert_eq!(d.ok(&["exec", id, "cat", "/etc/resolv.conf"]), want);
    let out = d.vouch(&[
        "exec",
        "-u",
        "0",
        id,
        "sh",
        "-c",
        "echo x > /etc/resolv.conf",
    ]);
    assert!(!out.status.success(), "resolv.conf is written to");
    let spec = d.json(&["inspect", "--spec", id]);
    assert_eq!(spec[0]["spec"]["annotations"]["io.vouch.resolv-conf"], want);
    assert!(spec[0]["spec"]["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .any(|m| m["destination"] == "/etc/resolv.conf"
            && m["source"] == "$ROOT/containers/$ID/resolv.conf"));
    let out = d.vouch(&["run", "--rm", "--dns-search", "two words", "bb", "true"]);
    assert!(
        stderr(&out).contains("--dns-search and --dns-option take one word each"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_port_and_volume_requests_are_refused_clearly() {
    if !require_root("bad_port_and_volume_requests_are_refused_clearly") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    for (args, want) in [
        (vec!["-p", "80"], "expected [IP:]HOST_PORT:CONTAINER_PORT"),
        (vec!["-p", "0:80"], "1-65535"),
        (vec!["-p", "8080:80/udp"], "tcp only"),
        (
            vec!["-p", "8080:80", "--network", "host"],
            "private network namespace; on the host's network the container's ports are the host's already (drop -p, or run without --network host)",
        ),
        (vec!["--pids-limit", "0"], "(give --pids-limit a positive number)"),
        (
            vec!["-p", "127.0.0.1:9:1", "-p", "127.0.0.1:9:2"],
            "published twice",
        ),
        (
            vec!["-v", "/etc:/host-etc"],
            "a host path is given to a container only read-only, as a copy measured by its content (add :ro)",
        ),
        (vec!["-v", "v1:relative"], "absolute"),
        (vec!["-v", "v1:/proc/x"], "reserved"),
        (vec!["-v", "v1:/secret"], "reserved"),
        (vec!["-v", "../x:/d"], "only read-only"),
        (vec!["-v", "/no/such/dir:/d:ro"], "cannot copy /no/such/dir: No such file"),
        (vec!["-v", "v1:/d:rx"], "not ro or rw"),
        (vec!["-v", "v1:/d", "-v", "v2:/d"], "two volumes"),
    ] {
        let mut full = vec!["run", "--rm"];
        full.extend(args.iter().copied());
        full.extend(["bb", "true"]);
        let out = d.vouch(&full);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    assert!(
        !env.state().join("volumes").join("v1").exists(),
        "a refused request created a volume"
    );
}

#[test]
fn named_volumes_outlive_containers_and_mount_read_only_on_request() {
    if !require_root("named_volumes_outlive_containers_and_mount_read_only_on_request") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "bb",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "-v",
            "data:/srv/d:ro",
            "bb",
            "cat",
            "/srv/d/f"
        ])
        .trim(),
        "kept"
    );
    let ro = d.vouch(&[
        "run",
        "--rm",
        "-v",
        "data:/data:ro",
        "bb",
        "touch",
        "/data/g",
    ]);
    refused_read_only(&ro, "a read-only volume");
    // Listed with who uses them; removal is refused while a container runs with one.
    let id = d.ok(&["run", "-d", "-v", "data:/data", "bb", "sleep", "60"]);
    let vols = d.json(&["volume", "ls", "--json"]);
    assert_eq!(vols[0]["name"], "data");
    assert_eq!(vols[0]["used_by"][0], &id.trim()[..12]);
    let busy = d.vouch(&["volume", "rm", "data"]);
    assert!(!busy.status.success());
    assert!(
        stderr(&busy).contains("is used by container"),
        "{}",
        stderr(&busy)
    );
    d.ok(&["rm", "-f", id.trim()]);
    d.ok(&["volume", "rm", "data"]);
    assert!(!env.state().join("volumes/data").exists());
    assert!(!d.vouch(&["volume", "rm", "data"]).status.success());
    assert!(!d.vouch(&["volume", "rm", "../x"]).status.success());
    // A new volume belongs to the container's user, so a non-root container can use it.
    d.ok(&[
        "run",
        "--rm",
        "-u",
        "1000:1000",
        "-v",
        "mine:/data",
        "bb",
        "touch",
        "/data/ok",
    ]);
    assert!(env.state().join("volumes/mine/ok").exists());
}

/// All of a container's copy mounts (the copies tmpfs of a state dir), from this process's
/// mount table.
fn copies_mounts(env: &TestEnv) -> Vec<String> {
    let state = env.state().to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|p| p.starts_with(&state) && p.ends_with("/copies"))
        .collect()
}

/// `-v HOST_PATH:/PATH:ro`: the container gets a copy of a host directory or file, made at
/// create, measured by its content (what `vouch volume digest` prints), read-only for every
/// user, not changed by a later change on the host, and gone with the container. A link out of
/// the tree, a FIFO: refused, naming the entry, leaving nothing mounted.
#[test]
fn a_host_path_is_given_read_only_as_a_copy_measured_by_its_content() {
    if !require_root("a_host_path_is_given_read_only_as_a_copy_measured_by_its_content") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let conf = env.path().join("conf");
    std::fs::create_dir_all(conf.join("sub")).expect("conf");
    std::fs::write(conf.join("app.conf"), "port = 8080\n").expect("app.conf");
    std::fs::write(conf.join("sub/key"), "only for 1000\n").expect("key");
    std::fs::set_permissions(conf.join("sub/key"), std::fs::Permissions::from_mode(0o600))
        .expect("mode");
    std::os::unix::fs::chown(conf.join("sub/key"), Some(1000), Some(1000)).expect("chown");
    std::os::unix::fs::symlink("app.conf", conf.join("alias")).expect("alias");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o755)).expect("mode");
    let one = env.path().join("one.conf");
    std::fs::write(&one, "single file\n").expect("one");
    let want = d.ok(&["volume", "digest", &conf.to_string_lossy()]);
    let want = want.trim();
    assert!(
        want.starts_with("sha384:") && want.len() == 7 + 96,
        "{want}"
    );
    let listed = d.json(&["volume", "digest", "--json", &conf.to_string_lossy()]);
    assert_eq!(listed["digest"], want);
    let paths: Vec<&str> = listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["", "alias", "app.conf", "sub", "sub/key"]);

    let id = d.ok(&[
        "run",
        "-d",
        "--user",
        "1000:1000",
        "-v",
        &format!("{}:/etc/app:ro", conf.display()),
        "-v",
        &format!("{}:/etc/one.conf:ro", one.display()),
        "bb",
        "sleep",
        "60",
    ]);
    let id = id.trim();
    assert_eq!(
        d.ok(&[
            "exec",
            id,
            "cat",
            "/etc/app/app.conf",
            "/etc/app/alias",
            "/etc/app/sub/key",
            "/etc/one.conf"
        ]),
        "port = 8080\nport = 8080\nonly for 1000\nsingle file\n"
    );
    // Owners and modes are the host's: root may not read 1000's 0600 key as another user.
    let other = d.vouch(&["exec", "-u", "2000", id, "cat", "/etc/app/sub/key"]);
    assert!(!other.status.success(), "another user read a 0600 file");
    for user in ["1000", "0"] {
        let w = d.vouch(&[
            "exec",
            "-u",
            user,
            id,
            "sh",
            "-c",
            "echo x > /etc/app/app.conf",
        ]);
        refused_read_only(&w, &format!("the copy, as user {user}"));
    }
    // A copy: the host's later change does not reach the container.
    std::fs::write(conf.join("app.conf"), "port = 9090\n").expect("change");
    assert_eq!(
        d.ok(&["exec", id, "cat", "/etc/app/app.conf"]),
        "port = 8080\n"
    );
    // Measured: the digest of what was copied, the copy's place projected; no host path.
    let spec = d.json(&["inspect", "--spec", id]);
    let copies: serde_json::Value = serde_json::from_str(
        spec[0]["spec"]["annotations"]["io.vouch.copies"]
            .as_str()
            .expect("copies annotation"),
    )
    .expect("copies json");
    assert_eq!(copies["/etc/app"], want);
    assert_eq!(
        copies["/etc/one.conf"],
        d.json(&["volume", "digest", "--json", &one.to_string_lossy()])["digest"]
    );
    let mounts = spec[0]["spec"]["mounts"].as_array().expect("mounts");
    let app = mounts
        .iter()
        .find(|m| m["destination"] == "/etc/app")
        .expect("the copy's mount");
    assert_eq!(app["source"], "$ROOT/containers/$ID/copies/0");
    assert!(
        !spec.to_string().contains(&*conf.to_string_lossy()),
        "the host path is measured"
    );
    assert_eq!(copies_mounts(&env).len(), 1);
    d.ok(&["rm", "-f", id]);
    assert!(
        copies_mounts(&env).is_empty(),
        "the copies outlived the container"
    );

    // Refusals name the entry and leave nothing behind.
    std::os::unix::fs::symlink("/etc/shadow", conf.join("shadow")).expect("link");
    let out = d.vouch(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/etc/app:ro", conf.display()),
        "bb",
        "true",
    ]);
    assert!(!out.status.success(), "a link out of the tree was copied");
    assert!(
        stderr(&out).contains(&format!(
            "cannot copy {}/shadow: a link in it leads outside what is copied",
            conf.display()
        )),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(conf.join("shadow")).expect("rm");
    nix::unistd::mkfifo(
        &conf.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("fifo");
    let out = d.vouch(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/etc/app:ro", conf.display()),
        "bb",
        "true",
    ]);
    assert!(
        stderr(&out).contains("pipe: it is a FIFO, and a copy holds only files"),
        "{}",
        stderr(&out)
    );
    assert!(
        copies_mounts(&env).is_empty(),
        "a refused copy left its tmpfs mounted"
    );
}

/// docker's `--sysctl`: parameters of the container's own namespaces, set in them (the host's
/// stay), measured in the spec; the host's parameters, and net.* on the host's network, refused.
#[test]
fn sysctls_of_the_containers_own_namespaces_are_set_and_measured() {
    if !require_root("sysctls_of_the_containers_own_namespaces_are_set_and_measured") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    let host = |p: &str| {
        std::fs::read_to_string(p)
            .expect("host's")
            .trim()
            .to_string()
    };
    let host_shm = host("/proc/sys/kernel/shm_rmid_forced");
    let host_port = host("/proc/sys/net/ipv4/ip_unprivileged_port_start");
    let id = d.ok(&[
        "run",
        "-d",
        "--sysctl",
        "kernel.shm_rmid_forced=1",
        "--sysctl",
        "net/ipv4/ip_unprivileged_port_start=80",
        "--sysctl",
        "fs.mqueue.msg_max=64",
        "bb",
        "sleep",
        "30",
    ]);
    let id = id.trim();
    assert_eq!(
        d.ok(&[
            "exec",
            id,
            "cat",
            "/proc/sys/kernel/shm_rmid_forced",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
            "/proc/sys/fs/mqueue/msg_max",
        ]),
        "1\n80\n64\n"
    );
    assert_eq!(host("/proc/sys/kernel/shm_rmid_forced"), host_shm);
    assert_eq!(
        host("/proc/sys/net/ipv4/ip_unprivileged_port_start"),
        host_port
    );
    let spec = d.json(&["inspect", "--spec", id]);
    assert_eq!(
        spec[0]["spec"]["linux"]["sysctl"],
        serde_json::json!({
            "kernel.shm_rmid_forced": "1",
            "net.ipv4.ip_unprivileged_port_start": "80",
            "fs.mqueue.msg_max": "64",
        })
    );
    let plain = d.ok(&["run", "-d", "bb", "sleep", "30"]);
    assert_ne!(
        d.json(&["inspect", id])[0]["config_digest"],
        d.json(&["inspect", plain.trim()])[0]["config_digest"]
    );
    for (args, want) in [
        (
            vec!["--sysctl", "kernel.hostname=x"],
            "sysctl kernel.hostname: not a parameter of the container's own namespaces",
        ),
        (
            vec!["--sysctl", "vm.swappiness=1"],
            "sysctl vm.swappiness: not a parameter of the container's own namespaces",
        ),
        (
            vec!["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"],
            "net.* parameters are the host's on the host's network",
        ),
        (
            vec!["--sysctl", "kernel.sem"],
            "--sysctl \"kernel.sem\": expected KEY=VALUE",
        ),
    ] {
        let mut full = vec!["run", "--rm"];
        full.extend(args.iter().copied());
        full.extend(["bb", "true"]);
        let out = d.vouch(&full);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}

/// A write the container's program was refused because the file system is read-only (the
/// message may come on either stream).
fn refused_read_only(out: &std::process::Output, what: &str) {
    assert!(!out.status.success(), "wrote to {what}");
    assert!(
        stdout(out).contains("Read-only file system")
            || stderr(out).contains("Read-only file system"),
        "{what}: {}",
        stderr(out)
    );
}
