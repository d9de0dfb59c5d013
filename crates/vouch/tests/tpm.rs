//! vouchd on a TPM (a real swtpm on loopback): containers measured into PCR 23, evidence that
//! `vouch verify` and `vouch-kbs` accept only with the attestation key pinned, and a secret
//! released to a container on that evidence.

mod common;

use std::process::Command;

use common::*;
use vouch_tee::testing::Swtpm;

const SECRET: &[u8] = b"tpm-bound-s3cret";

#[test]
fn containers_on_a_tpm_are_attested_and_get_their_secret() {
    if !require_root("containers_on_a_tpm_are_attested_and_get_their_secret") {
        return;
    }
    let Some(tpm) = Swtpm::start() else { return };
    let env = TestEnv::new();
    let d = env.start_with(&["--tee", "tpm", "--tpm-tcti", &tpm.tcti]);
    let info = d.json(&["tee", "info", "--json"]);
    assert_eq!(info["tee"], "tpm");
    assert_eq!(info["hardware"], true);
    let ak = info["attestation_key"]
        .as_str()
        .expect("attestation key")
        .to_string();
    assert!(ak.starts_with("sha256:") && ak.len() == 71, "{ak}");
    assert!(d.ok(&["tee", "info"]).contains(&format!("--tpm-ak {ak}")));

    load_busybox(&env, &d, "bb");
    assert_eq!(
        d.ok(&["run", "--rm", "bb", "echo", "measured"]).trim(),
        "measured"
    );

    // Evidence verifies offline with the key pinned, and says why without it.
    let ev = env.path().join("ev.json");
    d.ok(&[
        "attest",
        "--nonce",
        "00112233445566778899aabbccddeeff",
        "-o",
        ev.to_str().expect("utf8"),
    ]);
    let ev_path = ev.to_str().expect("utf8");
    let ok = d.vouch(&["verify", ev_path, "--tpm-ak", &ak, "--json"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let verdict: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("json");
    assert_eq!(verdict["tee"], "tpm");
    assert!(
        verdict["containers"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{verdict}"
    );
    let refused = d.vouch(&["verify", ev_path]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not trusted"),
        "{}",
        stderr(&refused)
    );

    // A KBS that pins the key releases the secret to the container.
    let admin = env.path().join("admin");
    assert!(Command::new(VOUCH_KBS)
        .args(["keygen", "--out-dir"])
        .arg(&admin)
        .status()
        .expect("keygen")
        .success());
    let args: Vec<std::ffi::OsString> = vec![
        "--state-dir".into(),
        env.path().join("kbs").into(),
        "--admin-key".into(),
        admin.join("admin.pub").into(),
        "--tpm-ak".into(),
        ak.clone().into(),
    ];
    let (mut kbs, addr) = spawn_kbs(&args, &env.path().join("kbs.log"));
    let secret_file = env.path().join("secret.bin");
    std::fs::write(&secret_file, SECRET).expect("write");
    let put = Command::new(VOUCH_KBS)
        .args(["resource", "set", "default/key/tpm", "--file"])
        .arg(&secret_file)
        .args(["--kbs", &addr, "--admin-key"])
        .arg(admin.join("admin.key"))
        .output()
        .expect("resource set");
    assert!(put.status.success(), "{}", stderr(&put));
    let url = format!("kbs://{addr}/default/key/tpm");
    let out = d.vouch(&[
        "run",
        "--rm",
        "--secret",
        &url,
        "bb",
        "cat",
        "/secret/default/key/tpm",
    ]);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(kbs.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = kbs.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, SECRET);
}
