//! `vouch install containerd` on the configuration Debian's containerd package ships and on a
//! hand-written one, read back by the real containerd (`containerd config dump`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vouch_testkit::*;

fn vouch_cmd(args: &[&str]) -> std::process::Output {
    run_bounded(Command::new(vouch()).args(args), Duration::from_secs(30)).expect("vouch")
}

/// The vouch runtime as containerd itself reads `config`.
pub(crate) fn containerd_runtime_type(config: &Path) -> Option<String> {
    let out = run_bounded(
        Command::new("containerd")
            .arg("--config")
            .arg(config)
            .args(["config", "dump"]),
        Duration::from_secs(30),
    )
    .expect("containerd config dump");
    assert!(out.status.success(), "{}", stderr(&out));
    let dump = stdout(&out);
    let at = dump.find(".containerd.runtimes.vouch]")?;
    dump[at..]
        .lines()
        .find_map(|l| l.trim().strip_prefix("runtime_type = "))
        .map(|v| v.trim_matches('"').to_string())
}

#[test]
fn install_and_uninstall_containerd_keep_the_rest_of_the_file_and_containerd_reads_it() {
    let shipped = Path::new("/etc/containerd/config.toml");
    if !shipped.exists()
        || Command::new("containerd")
            .arg("--version")
            .output()
            .is_err()
    {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "containerd is missing (scripts/deps installs it)"
        );
        eprintln!("SKIPPED: containerd is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let hand = "# my node\nversion = 2\nroot = \"/var/lib/containerd\"   # data\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"runc\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n";
    let debian = std::fs::read_to_string(shipped).expect("read");
    for (name, original) in [("debian.toml", debian.as_str()), ("hand.toml", hand)] {
        let config = dir.path().join(name);
        std::fs::write(&config, original).expect("write");
        let c = config.to_str().expect("utf8");
        assert_eq!(containerd_runtime_type(&config), None, "{name}");

        // --dry-run prints the result and writes nothing.
        let out = vouch_cmd(&["install", "containerd", "--config", c, "--dry-run"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).starts_with(original));
        assert_eq!(std::fs::read_to_string(&config).expect("read"), original);

        let out = vouch_cmd(&["install", "containerd", "--config", c]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("restart containerd"),
            "{}",
            stderr(&out)
        );
        let installed = std::fs::read_to_string(&config).expect("read");
        assert!(installed.starts_with(original));
        assert_eq!(
            containerd_runtime_type(&config).as_deref(),
            Some("io.containerd.vouch.v2"),
            "{name}"
        );
        // Again: nothing changes, and --json says so.
        let out = vouch_cmd(&["install", "containerd", "--config", c, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["changed"], false, "{v}");
        assert_eq!(std::fs::read_to_string(&config).expect("read"), installed);

        let out = vouch_cmd(&["uninstall", "containerd", "--config", c]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            std::fs::read_to_string(&config).expect("read"),
            original,
            "{name}"
        );
        assert_eq!(containerd_runtime_type(&config), None);
    }

    // A config that names runtime vouch otherwise is left alone, with why.
    let other = dir.path().join("other.toml");
    let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vouch]\n  runtime_type = \"io.containerd.runc.v2\"\n";
    std::fs::write(&other, text).expect("write");
    let out = vouch_cmd(&[
        "install",
        "containerd",
        "--config",
        other.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already defines a runtime named vouch"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&other).expect("read"), text);

    // No file: created, and removed again.
    let fresh = dir.path().join("etc/containerd/config.toml");
    let f = fresh.to_str().expect("utf8");
    assert!(vouch_cmd(&["install", "containerd", "--config", f])
        .status
        .success());
    assert_eq!(
        containerd_runtime_type(&fresh).as_deref(),
        Some("io.containerd.vouch.v2")
    );
    assert!(vouch_cmd(&["uninstall", "containerd", "--config", f])
        .status
        .success());
    assert!(!fresh.exists());
}
