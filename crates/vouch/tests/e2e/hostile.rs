//! Hostile images: every rejection names the offending entry, the host is untouched, and
//! nothing half-unpacked becomes visible in the store.

use std::fs;
use std::path::Path;

use tar::EntryType;
use vouch_testkit::*;

fn files_under(p: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_layers_are_rejected_with_the_entry_named() {
    if !require_root("hostile_layers_are_rejected_with_the_entry_named") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    // A directory outside the store that an escaping entry would write into.
    let outside = env.path().join("outside");
    fs::create_dir(&outside).expect("outside");
    let outside_s = outside.to_str().expect("utf8").to_string();
    let huge = 100u64 << 30;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "path traversal",
            Layer::new()
                .file("../../../../escape-traversal", 0o644, b"x")
                .finish(),
            "../../../../escape-traversal",
        ),
        (
            "absolute path",
            Layer::new()
                .file(&format!("{outside_s}/abs-file"), 0o644, b"x")
                .finish(),
            "abs-file",
        ),
        (
            "absolute symlink written through",
            Layer::new()
                .symlink("hop", &outside_s)
                .file("hop/pwned", 0o644, b"x")
                .finish(),
            "hop/pwned",
        ),
        (
            "relative symlink out of the root",
            Layer::new().symlink("up", "../../../../..").finish(),
            "up",
        ),
        (
            "hardlink out",
            Layer::new()
                .entry(
                    "hl",
                    EntryType::Link,
                    "../../../../etc/passwd",
                    0o644,
                    b"",
                    None,
                )
                .finish(),
            "hl",
        ),
        (
            "char device",
            Layer::new()
                .entry("dev/kmsg", EntryType::Char, "", 0o600, b"", None)
                .finish(),
            "dev/kmsg",
        ),
        (
            "block device",
            Layer::new()
                .entry("dev/sda", EntryType::Block, "", 0o600, b"", None)
                .finish(),
            "dev/sda",
        ),
        (
            "huge entry",
            Layer::new()
                .entry("huge.bin", EntryType::Regular, "", 0o644, b"", Some(huge))
                .finish(),
            "huge.bin",
        ),
    ];
    for (i, (what, layer, entry)) in cases.into_iter().enumerate() {
        let dir = env.path().join(format!("hostile-{i}"));
        // A good first layer, then the hostile one: the good one may stay, the hostile one must not.
        write_layout(
            &dir,
            &format!("hostile{i}"),
            &[busybox_layer(), layer],
            &["/bin/sh"],
            &[],
        );
        let out = d.vouch(&["image", "load", "-i", dir.to_str().expect("utf8")]);
        assert_eq!(
            out.status.code(),
            Some(125),
            "{what}: hostile image was accepted"
        );
        let err = stderr(&out);
        assert!(
            err.contains(entry),
            "{what}: error does not name {entry:?}: {err}"
        );
        assert_eq!(
            err.lines().count(),
            1,
            "{what}: one clear line expected: {err}"
        );
        assert_eq!(
            files_under(&outside),
            Vec::<String>::new(),
            "{what}: wrote outside the store"
        );
        assert_eq!(
            files_under(&env.state().join("images/tmp")),
            Vec::<String>::new(),
            "{what}: left a partial unpack"
        );
    }
    // Nothing escaped anywhere near the state directory either.
    for p in [
        env.path().join("escape-traversal"),
        env.state().join("escape-traversal"),
        Path::new("/escape-traversal").to_path_buf(),
    ] {
        assert!(!p.exists(), "{} was created", p.display());
    }
    assert_eq!(d.json(&["image", "ls", "--json"]), serde_json::json!([]));
    // Only the shared good layer was unpacked; no hostile layer became visible.
    assert_eq!(files_under(&env.state().join("images/layers")).len(), 1);
}

#[test]
fn corrupted_layouts_fail_cleanly() {
    if !require_root("corrupted_layouts_fail_cleanly") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    // A blob whose bytes do not match its digest.
    let dir = env.path().join("corrupt");
    write_layout(&dir, "c", &[busybox_layer()], &["/bin/sh"], &[]);
    let blobs = dir.join("blobs/sha256");
    let biggest = largest_file(&blobs);
    let mut bytes = fs::read(&biggest).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&biggest, bytes).expect("write");
    let out = d.vouch(&["image", "load", "-i", dir.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("does not match its digest"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        files_under(&env.state().join("images/tmp")),
        Vec::<String>::new()
    );
    // Not a layout at all.
    let out = d.vouch(&["image", "load", "-i", env.path().to_str().expect("utf8")]);
    assert!(
        stderr(&out).contains("not an OCI image layout"),
        "{}",
        stderr(&out)
    );
    // A diff id that does not match the layer content.
    let dir2 = env.path().join("diffid");
    write_layout(&dir2, "d", &[busybox_layer()], &["/bin/sh"], &[]);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir2.join("index.json")).expect("index")).expect("json");
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir2.join("blobs/sha256").join(&mdigest)).expect("m"))
            .expect("json");
    let cdigest = manifest["config"]["digest"]
        .as_str()
        .expect("cfg")
        .trim_start_matches("sha256:")
        .to_string();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(dir2.join("blobs/sha256").join(&cdigest)).expect("cfg"))
            .expect("json");
    cfg["rootfs"]["diff_ids"][0] = serde_json::json!(format!("sha256:{}", "0".repeat(64)));
    let forged = serde_json::to_vec(&cfg).expect("cfg");
    // Rewrite the config under its new digest and point the manifest at it.
    let new_c = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&forged));
    fs::write(dir2.join("blobs/sha256").join(&new_c), &forged).expect("cfg");
    let mut manifest = manifest;
    manifest["config"]["digest"] = serde_json::json!(format!("sha256:{new_c}"));
    manifest["config"]["size"] = serde_json::json!(forged.len());
    let mbytes = serde_json::to_vec(&manifest).expect("m");
    let new_m = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&mbytes));
    fs::write(dir2.join("blobs/sha256").join(&new_m), &mbytes).expect("m");
    let mut index = index;
    index["manifests"][0]["digest"] = serde_json::json!(format!("sha256:{new_m}"));
    index["manifests"][0]["size"] = serde_json::json!(mbytes.len());
    fs::write(
        dir2.join("index.json"),
        serde_json::to_vec(&index).expect("i"),
    )
    .expect("i");
    let out = d.vouch(&["image", "load", "-i", dir2.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("diff id"), "{}", stderr(&out));
    assert_eq!(d.json(&["image", "ls", "--json"]), serde_json::json!([]));
}

#[test]
fn store_corrupted_after_load_fails_the_launch_and_leaves_no_monitor() {
    if !require_root("store_corrupted_after_load_fails_the_launch_and_leaves_no_monitor") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    // Drop the unpacked layer and damage its blob: the launch must re-unpack, and that fails.
    let layers = env.state().join("images/layers");
    for e in fs::read_dir(&layers).expect("layers").flatten() {
        fs::remove_dir_all(e.path()).expect("rm layer");
    }
    let blobs = env.state().join("images/blobs/sha256");
    let biggest = largest_file(&blobs);
    let mut bytes = fs::read(&biggest).expect("read");
    bytes.truncate(bytes.len() / 2);
    fs::write(&biggest, bytes).expect("write");
    let out = d.vouch(&["run", "--name", "broken", "bb", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let c = d.json(&["inspect", "broken"]);
    assert_eq!(c[0]["state"], "Failed");
    assert!(
        c[0]["error"].as_str().expect("error").contains("layer"),
        "{}",
        c[0]["error"]
    );
    // No monitor of this daemon is left running.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let state = env.state().to_string_lossy().to_string();
    for p in fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(cmd) = fs::read(p.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            assert!(
                !(cmd.contains(" monitor ") && cmd.contains(&state)),
                "stray monitor: {cmd}"
            );
        }
    }
    assert_eq!(
        files_under(&layers),
        Vec::<String>::new(),
        "a partial layer became visible"
    );
}

/// Mode, owner, times and content of a host file, and what a directory holds.
fn host_state(file: &Path, dir: &Path) -> (u32, u32, u32, i64, Vec<u8>, u32, Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(file).expect("host file");
    let d = fs::symlink_metadata(dir).expect("host dir");
    (
        m.mode(),
        m.uid(),
        m.gid(),
        m.mtime(),
        fs::read(file).expect("read"),
        d.mode(),
        files_under(dir),
    )
}

/// Layers that make a path a directory (mode 01777) and then replace it with a symlink, or a
/// hard link to a symlink, to a host file or directory, in one layer and across two; loaded
/// from a layout and pulled from a real registry: the images load (their links stay links),
/// and the host file and directory keep every bit of their metadata.
#[test]
fn replaced_directories_never_change_host_files_through_load_or_pull() {
    if !require_root("replaced_directories_never_change_host_files_through_load_or_pull") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let host_dir = env.path().join("host-etc");
    fs::create_dir(&host_dir).expect("host dir");
    fs::set_permissions(&host_dir, fs::Permissions::from_mode(0o750)).expect("chmod");
    let host_file = host_dir.join("shadow");
    fs::write(&host_file, b"root:!:19000::::::\n").expect("host file");
    fs::set_permissions(&host_file, fs::Permissions::from_mode(0o640)).expect("chmod");
    let before = host_state(&host_file, &host_dir);
    let file = host_file.to_str().expect("utf8");
    let dir = host_dir.to_str().expect("utf8");
    let dir_mode =
        |path: &str| Layer::new().entry(path, EntryType::Directory, "", 0o1777, b"", None);
    let images: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "same-layer",
            vec![busybox_layer(), dir_mode("d/").symlink("d", file).finish()],
        ),
        (
            "hard-link",
            vec![
                busybox_layer(),
                dir_mode("h/")
                    .symlink("s", file)
                    .entry("h", EntryType::Link, "s", 0o777, b"", None)
                    .finish(),
            ],
        ),
        (
            "nested",
            vec![
                busybox_layer(),
                dir_mode("a/")
                    .entry("a/host-etc/", EntryType::Directory, "", 0o777, b"", None)
                    .symlink("a", env.path().to_str().expect("utf8"))
                    .finish(),
            ],
        ),
        (
            "two-layers",
            vec![
                busybox_layer(),
                dir_mode("d/").finish(),
                Layer::new()
                    .file(".wh.d", 0o644, b"")
                    .symlink("d", dir)
                    .finish(),
            ],
        ),
    ];
    let d = env.start();
    for (name, layers) in &images {
        let layout = env.path().join(format!("layout-{name}"));
        write_layout(&layout, name, layers, &["/bin/sh"], &[]);
        d.ok(&["image", "load", "-i", layout.to_str().expect("utf8")]);
        assert_eq!(
            host_state(&host_file, &host_dir),
            before,
            "{name}: load changed the host"
        );
    }
    // The link is a link in the container, and the container cannot reach the host file.
    let out = d.vouch(&[
        "run",
        "--rm",
        "same-layer",
        "sh",
        "-c",
        "readlink /d; cat /d 2>&1 || true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("{file}\n")),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("root:!"), "{}", stdout(&out));
    // The same images through a real registry: removed, then pulled (unpacked again).
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    for (name, _) in &images {
        let layout = env.path().join(format!("layout-{name}"));
        reg.push(&layout, name, &format!("hostile/{name}:1"));
        d.ok(&["image", "rm", name]);
        let reference = format!("{}/hostile/{name}:1", reg.addr);
        let out = d.vouch(&["pull", "--insecure-registry", &reference]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(
            host_state(&host_file, &host_dir),
            before,
            "{name}: pull changed the host"
        );
    }
}

/// An image whose directories are links out of its root (absolute, and a relative one to
/// such a link; links up through `..` out of the root are refused at load): a copy and a named
/// volume mounted beneath them land inside the container's root, never on the host's paths the
/// links name; where the path does not exist in the root, the start fails and the host is
/// untouched.
#[test]
fn mount_targets_beneath_an_images_links_stay_in_its_root() {
    if !require_root("mount_targets_beneath_an_images_links_stay_in_its_root") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    let outside = env.path().join("outside");
    fs::create_dir(&outside).expect("outside");
    let outside_s = outside.to_string_lossy().into_owned();
    load_layers(
        &env,
        &d,
        "links",
        &[
            busybox_layer(),
            Layer::new()
                .symlink("tmplink", "/tmp")
                .symlink("hop", "tmplink")
                .symlink("abs", &outside_s)
                .finish(),
        ],
        &["/bin/sh"],
        &["PATH=/bin"],
    );
    let conf = env.path().join("conf");
    fs::create_dir(&conf).expect("conf");
    fs::write(conf.join("f"), "copied").expect("f");
    let probe = format!("vouch-probe-{}", std::process::id());
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/tmplink/{probe}-copy:ro", conf.display()),
        "-v",
        &format!("data:/hop/{probe}-vol"),
        "links",
        "sh",
        "-c",
        &format!("cat /tmp/{probe}-copy/f; echo; ls -d /tmp/{probe}-copy /tmp/{probe}-vol"),
    ]);
    // Inside the container the links resolve in its root: both are under its own /tmp.
    assert_eq!(
        out,
        format!("copied\n/tmp/{probe}-copy\n/tmp/{probe}-vol\n")
    );
    for name in ["copy", "vol"] {
        let host = Path::new("/tmp").join(format!("{probe}-{name}"));
        assert!(
            !host.exists(),
            "a mount landed on the host at {}",
            host.display()
        );
    }
    // A link to a path the root does not have: the start fails, the host's is untouched.
    let out = d.vouch(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/abs/copy:ro", conf.display()),
        "links",
        "true",
    ]);
    assert!(
        !out.status.success(),
        "mounted through a link to a missing path"
    );
    assert_eq!(
        files_under(&outside),
        Vec::<String>::new(),
        "a mount landed on the host"
    );
}
