//! An image built by a tool vouch did not write (umoci, via scripts/sample-image) loads from its
//! archive and runs.

use std::path::Path;
use std::process::Command;

use vouch_testkit::*;

#[test]
fn umoci_built_archive_loads_and_runs() {
    if !require_root("umoci_built_archive_loads_and_runs") {
        return;
    }
    if Command::new("umoci").arg("--version").output().is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "umoci is missing; scripts/deps installs it"
        );
        eprintln!(
            "SKIPPED umoci_built_archive_loads_and_runs: umoci is not installed (run scripts/deps)"
        );
        return;
    }
    let env = TestEnv::new();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/sample-image");
    let out = Command::new(&script)
        .arg(env.path())
        .output()
        .expect("sample-image");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = env.path().join("busybox-oci.tar");
    let d = env.start();
    let loaded = d.ok(&["image", "load", "-i", archive.to_str().expect("utf8")]);
    assert!(
        loaded.starts_with("Loaded image: busybox:latest (sha256:"),
        "{loaded}"
    );
    assert_eq!(d.ok(&["run", "--rm", "busybox", "uname", "-m"]), "x86_64\n");
    // The image's default command is /bin/sh; with no command it runs that and exits.
    let out = d.vouch(&["run", "--rm", "busybox"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
